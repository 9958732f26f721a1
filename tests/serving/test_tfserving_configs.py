"""serving/tfserving/: the files the stock TF Serving image runs with parse as the protos
TF Serving reads (deploy/docker-compose.yml and deploy/k8s wire them to the Pusher's output:
tests/deploy)."""
import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2

from serving.standin.model_config import load_model_config

HERE = os.path.dirname(os.path.abspath(__file__))
TFSERVING = os.path.join(os.path.dirname(os.path.dirname(HERE)), "serving", "tfserving")
F = descriptor_pb2.FieldDescriptorProto


def _messages():
    """BatchingParameters and MonitoringConfig (TF Serving protos the pip package lacks),
    with the field names and types of session_bundle_config.proto / monitoring_config.proto."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (wrappers_pb2.DESCRIPTOR,):
        pool.AddSerializedFile(dependency.serialized_pb)
    fd = descriptor_pb2.FileDescriptorProto(name="tfserving_test.proto", package="t",
                                            syntax="proto3",
                                            dependency=["google/protobuf/wrappers.proto"])

    def message(name, fields):
        m = fd.message_type.add(name=name)
        for number, (field, kind, type_name, label) in enumerate(fields, 1):
            m.field.add(name=field, number=number, type=kind, type_name=type_name, label=label)

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    int64 = (F.TYPE_MESSAGE, ".google.protobuf.Int64Value", opt)
    message("BatchingParameters", [
        ("max_batch_size",) + int64, ("batch_timeout_micros",) + int64,
        ("max_enqueued_batches",) + int64, ("num_batch_threads",) + int64,
        ("thread_pool_name", F.TYPE_MESSAGE, ".google.protobuf.StringValue", opt),
        ("allowed_batch_sizes", F.TYPE_INT64, None, rep),
        ("pad_variable_length_inputs", F.TYPE_BOOL, None, opt)])
    message("PrometheusConfig", [("enable", F.TYPE_BOOL, None, opt),
                                 ("path", F.TYPE_STRING, None, opt)])
    message("MonitoringConfig", [("prometheus_config", F.TYPE_MESSAGE, ".t.PrometheusConfig",
                                  opt)])
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"t.{name}"))
            for name in ("BatchingParameters", "MonitoringConfig")}


def read(name):
    with open(os.path.join(TFSERVING, name)) as f:
        return f.read()


def test_models_config_serves_retrieval_and_ranking_from_pusher_output():
    models = load_model_config(os.path.join(TFSERVING, "models.config"),
                               base_path_mapping={"/models": "serving_models"})
    assert [(m.name, m.base_path, m.policy, m.num_versions) for m in models] == [
        ("retrieval", "serving_models/retrieval", "latest", 2),
        ("ranking", "serving_models/ranking", "latest", 2)]


def test_batching_config_is_sized_for_cpu():
    params = text_format.Parse(read("batching.config"), _messages()["BatchingParameters"]())
    assert params.num_batch_threads.value >= 1
    assert 0 <= params.batch_timeout_micros.value <= 10_000  # the CPU guide's range
    assert 1 <= params.max_batch_size.value <= 1024
    assert params.max_enqueued_batches.value >= params.num_batch_threads.value


def test_monitoring_config_enables_prometheus():
    config = text_format.Parse(read("monitoring.config"), _messages()["MonitoringConfig"]())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"
