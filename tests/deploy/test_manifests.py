"""deploy/k8s: every document validates against the Kubernetes schemas bundled by
kubernetes-validate (strict: an unknown or misspelt field fails), offline; and the wiring
between the objects holds (selectors, Services, probes, resources, Secrets, volumes, the
TF Serving configs equal to serving/tfserving/'s)."""
from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"      # the oldest version the manifests must run on
MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def _applied() -> list[dict]:
    """The objects `kubectl apply -k deploy/k8s` creates (the kustomization's resources)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [d for name in kustomization["resources"] for d in _documents(name)]


def _by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _applied() if d["kind"] == kind}


def _pod(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", MANIFESTS)
@pytest.mark.parametrize("version", [KUBERNETES_VERSION, kubernetes_validate.latest_version()])
def test_every_document_validates_against_the_kubernetes_schemas(name, version):
    documents = _documents(name)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_refuses_a_misspelt_field():
    """The check above can fail: a typo in a probe is caught offline."""
    api = _by_kind("Deployment")["shoprec-api"]
    container = _pod(api)["containers"][0]
    broken = {**container, "readinessProbe": {"httpGet": {"path": "/readyz", "prot": 8000}}}
    document = {**api, "spec": {**api["spec"], "template": {
        **api["spec"]["template"], "spec": {**_pod(api), "containers": [broken]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_applies_every_manifest_but_the_secrets_example():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        n for n in MANIFESTS if n != "secrets.example.yaml")
    assert not [d for d in _applied() if d["kind"] == "Secret"], "secrets stay out of git"


def test_services_select_their_pods_and_name_container_ports():
    workloads = {**_by_kind("Deployment"), **_by_kind("StatefulSet")}
    services = _by_kind("Service")
    assert set(services) == {"tfserving", "shoprec-api", "redis"}
    for name, service in services.items():
        selector = service["spec"]["selector"]
        pods = [w for w in workloads.values()
                if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, name
        assert pods[0]["spec"]["selector"]["matchLabels"].items() <= \
            pods[0]["spec"]["template"]["metadata"]["labels"].items()
        ports = {p["name"] for c in _pod(pods[0])["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name


def test_every_container_has_probes_and_resources():
    for name, workload in {**_by_kind("Deployment"), **_by_kind("StatefulSet")}.items():
        for container in _pod(workload)["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name


def test_the_api_probes_readyz_for_traffic_and_healthz_for_liveness():
    api = _by_kind("Deployment")["shoprec-api"]
    assert api["spec"]["replicas"] >= 2, "replicas share the Redis store"
    container = _pod(api)["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # the port opens after startup_wait_s (60 s) at most: the startup probe covers more
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > 60


def test_the_api_reads_its_keys_from_a_secret_folder_and_shares_redis():
    api = _by_kind("Deployment")["shoprec-api"]
    pod = _pod(api)
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    keys_file = Path(env["SHOPREC_API_KEYS_FILE"]["value"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    mount = mounts[str(keys_file.parent)]                      # a folder, not a subPath
    assert "subPath" not in mount and mount["readOnly"]
    volume = {v["name"]: v for v in pod["volumes"]}[mount["name"]]
    assert volume["secret"]["secretName"] == "shoprec-api-keys"
    example = {d["metadata"]["name"]: d for d in _documents("secrets.example.yaml")}
    assert keys_file.name in example["shoprec-api-keys"]["stringData"]
    # the Redis password: from the Secret, expanded into the store URL by Kubernetes
    password = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["name"] == "shoprec-redis" and password["key"] in example[
        "shoprec-redis"]["stringData"]
    names = list(env)
    assert names.index("REDIS_PASSWORD") < names.index("SHOPREC_EVENT_STORE")
    assert env["SHOPREC_EVENT_STORE"]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
    assert env["SHOPREC_TFSERVING_GRPC"]["value"] == "tfserving:8500"
    assert "/data/shop" in container["command"] and "/data/shop" in mounts


def test_every_mounted_volume_and_claim_exists():
    claims = set(_by_kind("PersistentVolumeClaim"))
    config_maps = set(_by_kind("ConfigMap"))
    for name, workload in {**_by_kind("Deployment"), **_by_kind("StatefulSet")}.items():
        pod = _pod(workload)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in workload["spec"].get(
            "volumeClaimTemplates", [])}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (name, mount)
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps


def _config_text(text: str) -> list[str]:
    """A TF Serving text config without comments and blank lines, spaces normalised."""
    lines = (re.sub(r"#.*", "", line).strip() for line in text.splitlines())
    return [" ".join(line.split()) for line in lines if line]


def test_tfserving_runs_the_repository_configs_from_the_model_volume():
    config = _by_kind("ConfigMap")["tfserving-config"]["data"]
    for name in ("models.config", "batching.config", "monitoring.config"):
        repository = (ROOT / "serving" / "tfserving" / name).read_text()
        assert _config_text(config[name]) == _config_text(repository), name
    deployment = _by_kind("Deployment")["tfserving"]
    container = _pod(deployment)["containers"][0]
    assert container["image"].startswith("tensorflow/serving:2.16")
    flags = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        folder, _, file = flags[flag].rpartition("/")
        assert folder == mounts["config"] and file in config
    assert mounts["models"] == "/models"      # models.config's base paths
    probes = [container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe")]
    assert probes == ["/v1/models/ranking", "/v1/models/retrieval"]


def test_tfserving_and_redis_admit_only_the_api():
    policies = _by_kind("NetworkPolicy")
    targets = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]:
               p["spec"]["ingress"] for p in policies.values()}
    assert set(targets) == {"tfserving", "redis"}
    for ingress in targets.values():
        assert [f["podSelector"]["matchLabels"] for rule in ingress for f in rule["from"]] == [
            {"app.kubernetes.io/name": "shoprec-api"}]
