"""TFX's own code for Beam workers, built once per TFX install (docs/DESIGN.md, "Pipeline").

Every Beam-based TFX executor (ExampleGen, StatisticsGen, Transform, the Evaluators, ...) adds
``--extra_package=<TFX sdist>`` to its Beam args when they name no dependency of their own
(``tfx.utils.dependency_utils.make_beam_dependency_flags``), so that workers on other machines
can import TFX. It builds that sdist anew for every component of every run: ~1.3 s and a
42 MB copy of the TFX install in a temporary folder that is never removed (seven per
sample-shop run and re-run). A local run (``tfx_pipeline.run_local``,
``beam_runners.run_data_pipeline``) builds it once per TFX install, keeps it in
``cache_root()/tfx_package/``, and passes that file to every component: what TFX would pass,
without the rebuilds and the leftovers. Args that already name a dependency (a shop's
``--setup_file``, ``--sdk_container_image``, ...) are left as they are, as TFX leaves them.
A compiled Kubeflow pipeline gets no local path: its components build their own, as before.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import List, Optional, Sequence

from trainer.config import cache_root

# The Beam options by which TFX considers the dependencies named (make_beam_dependency_flags).
DEPENDENCY_OPTIONS = ("extra_packages", "setup_file", "requirements_file",
                      "worker_harness_container_image", "sdk_container_image")


def names_dependency(beam_args: Sequence[str]) -> bool:
    """Whether `beam_args` already give the workers their code (TFX then adds nothing)."""
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
    options = PipelineOptions(flags=list(beam_args)).get_all_options()
    return any(options.get(name) for name in DEPENDENCY_OPTIONS)


def tfx_package(cache_dir: Optional[str] = None) -> str:
    """The path of the TFX sdist TFX would build for Beam (``build_ephemeral_package``), built
    on first use per TFX version and install folder and kept under `cache_dir` (default
    ``cache_root()/tfx_package``). Written to a temporary name and renamed, so concurrent runs
    never read half a file; the build's temporary copy of TFX is removed."""
    import tfx  # pylint: disable=import-outside-toplevel
    from tfx.utils import dependency_utils  # pylint: disable=import-outside-toplevel
    install = os.path.dirname(os.path.abspath(tfx.__file__))
    key = hashlib.sha256(install.encode("utf-8")).hexdigest()[:12]
    folder = os.path.join(cache_dir or os.path.join(cache_root(), "tfx_package"),
                          f"{tfx.__version__}-{key}")
    path = os.path.join(folder, f"tfx_ephemeral-{tfx.__version__}.tar.gz")
    if os.path.isfile(path):
        return path
    built = dependency_utils.build_ephemeral_package()
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".partial", delete=False) as out:
            with open(built, "rb") as source:
                shutil.copyfileobj(source, out)
        os.replace(out.name, path)
    finally:
        _remove_build(built)
    return path


def _remove_build(sdist: str) -> None:
    """Removes the temporary folder build_ephemeral_package made: <mkdtemp>/build/tfx/dist/<sdist>."""
    dist = os.path.dirname(sdist)
    tfx_dir = os.path.dirname(dist)
    build = os.path.dirname(tfx_dir)
    if (os.path.basename(dist), os.path.basename(tfx_dir), os.path.basename(build)) == (
            "dist", "tfx", "build"):
        shutil.rmtree(os.path.dirname(build), ignore_errors=True)


def with_tfx_package(beam_args: Sequence[str], cache_dir: Optional[str] = None) -> List[str]:
    """`beam_args` plus ``--extra_package=<tfx_package()>`` unless they name a dependency."""
    if names_dependency(beam_args):
        return list(beam_args)
    return list(beam_args) + [f"--extra_package={tfx_package(cache_dir)}"]
