"""Runs a notebook of this folder top to bottom, as a user would, with its parameters set:
the tests (tests/notebooks/) and the record of the Colab notebook's run
(``python -m benchmarks.colab_notebook``) call ``run``.

The kernel is this interpreter (``sys.executable``) through a kernelspec written to a
temporary folder, so the run needs no installed kernelspec and always uses the environment
under test, whatever ``jupyter kernelspec list`` says. Parameters are injected as a cell after
the one tagged ``parameters`` (papermill's convention), so the committed notebook stays as
users see it.
"""
import json
import os
import sys
import tempfile
import time
from typing import Mapping, Optional

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
KERNEL_NAME = "shoprec-notebook-run"


def with_parameters(notebook, parameters: Mapping[str, object]):
    """``notebook`` with a cell setting ``parameters`` after its ``parameters`` cell."""
    index = next((i for i, cell in enumerate(notebook.cells)
                  if "parameters" in cell.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    source = "# injected parameters\n" + "".join(
        f"{name} = {value!r}\n" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)
    return notebook


def _kernel_manager(kernel_dir: str, env: Mapping[str, str]):
    # pylint: disable=import-outside-toplevel
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = os.path.join(kernel_dir, KERNEL_NAME)
    os.makedirs(spec_dir, exist_ok=True)
    with open(os.path.join(spec_dir, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                            "{connection_file}"],
                   "display_name": "shoprec (this interpreter)", "language": "python",
                   "env": dict(env)}, f)
    specs = KernelSpecManager(kernel_dirs=[kernel_dir])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def run(path: str, parameters: Optional[Mapping[str, object]] = None,
        timeout: int = 900, cwd: Optional[str] = None):
    """Executes the notebook at ``path`` with ``parameters``; returns (executed notebook,
    seconds). A failing cell raises nbclient's CellExecutionError (its traceback in the
    message). The kernel imports this checkout first (PYTHONPATH), with the environment the
    Makefile sets for TensorFlow."""
    from nbclient import NotebookClient  # pylint: disable=import-outside-toplevel

    notebook = with_parameters(nbformat.read(path, as_version=4), parameters or {})
    env = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH"))
                                         if p)}
    with tempfile.TemporaryDirectory(prefix="shoprec-kernel-") as kernel_dir:
        client = NotebookClient(notebook, timeout=timeout,
                                km=_kernel_manager(kernel_dir, env),
                                resources={"metadata": {"path": cwd or HERE}})
        started = time.perf_counter()
        client.execute()
    return notebook, time.perf_counter() - started


def outputs_text(notebook) -> str:
    """Every stream and text output of the executed cells, in order."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)
