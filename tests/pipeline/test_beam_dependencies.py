"""The TFX package for Beam, built once per TFX install (pipeline/beam_dependencies.py)."""
import os
import tarfile

from tfx.utils import dependency_utils

from pipeline import beam_dependencies
from pipeline.configs import load_config

DIRECT = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def test_names_dependency_follows_tfx_rule():
    assert not beam_dependencies.names_dependency(DIRECT)
    for flag in ("--extra_package=/x.tar.gz", "--setup_file=./setup.py",
                 "--requirements_file=req.txt", "--sdk_container_image=img:1"):
        assert beam_dependencies.names_dependency(DIRECT + [flag]), flag


def test_tfx_package_is_built_once_and_leaves_no_build_behind(tmp_path, monkeypatch):
    builds = []
    real = dependency_utils.build_ephemeral_package

    def recorded():
        builds.append(real())
        return builds[-1]

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", recorded)
    path = beam_dependencies.tfx_package(str(tmp_path))
    assert len(builds) == 1 and path.startswith(str(tmp_path))
    assert not os.path.exists(builds[0]), "the 42 MB temporary build is removed"
    with tarfile.open(path) as sdist:
        names = sdist.getnames()
    assert any(n.endswith("tfx/utils/dependency_utils.py") for n in names), names[:5]
    assert [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".partial")] == []

    assert beam_dependencies.tfx_package(str(tmp_path)) == path
    assert len(builds) == 1, "the second call reads the kept package"


def test_args_with_the_package_make_tfx_build_nothing(tmp_path, monkeypatch):
    args = beam_dependencies.with_tfx_package(DIRECT, str(tmp_path))
    assert args[:2] == DIRECT and args[2].startswith("--extra_package=" + str(tmp_path))

    def no_build():
        raise AssertionError("TFX rebuilt its package although the args name one")

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", no_build)
    assert dependency_utils.make_beam_dependency_flags(args) == args
    own = DIRECT + ["--setup_file=./setup.py"]
    assert beam_dependencies.with_tfx_package(own, str(tmp_path)) == own


def test_only_a_local_run_carries_the_package(tmp_path, monkeypatch):
    from pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
    monkeypatch.setenv("SHOPREC_CACHE_DIR", str(tmp_path))
    cfg = load_config()

    def transform_args(pipeline):
        transform = next(c for c in pipeline.components if c.id == "Transform")
        return list(transform.executor_spec.beam_pipeline_args)

    local = transform_args(create_pipeline(cfg, local_run=True))
    assert [a for a in local if a.startswith("--extra_package=" + str(tmp_path))], local
    compiled = transform_args(create_pipeline(cfg))
    assert not [a for a in compiled if a.startswith("--extra_package")], compiled
