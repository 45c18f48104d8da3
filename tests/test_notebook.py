"""The walkthrough notebook (examples/walkthrough.ipynb) runs top to bottom on the toy refusing model.

``MECHREFUSAL_WRITE_NOTEBOOK=1 python -m pytest tests/test_notebook.py`` also writes the executed notebook
back to examples/, so its committed outputs are those of this run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "walkthrough.ipynb"
KERNEL = "mechrefusal-test"

# The toy model's sizes: everything else in the notebook is what the embedded model runs with.
TOY_SIZES = dict(
    n_train=64,
    n_val=16,
    n_test=24,
    max_new_tokens=8,
    max_kl=1.0,
    search_max_kl=1.0,
    search_min_induce=0.0,
    dtype="float32",
    train_examples=48,
    train_steps=12,
    train_batch=8,
    lr=2e-3,
    train_layers="all",
)


def kernel_spec(directory: Path) -> Path:
    """A kernel spec that runs this interpreter (the venv's), whatever `python3` kernel is installed."""
    spec = directory / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return directory


@pytest.fixture(scope="module")
def executed(toy_dir, tmp_path_factory):
    """The notebook executed on the toy model, in a fresh directory, with a fresh MECHREFUSAL_HOME."""
    tmp = tmp_path_factory.mktemp("notebook")
    workdir = tmp / "work"
    workdir.mkdir()
    environment = {
        "JUPYTER_PATH": str(kernel_spec(tmp / "jupyter")),
        "MECHREFUSAL_MODEL": str(toy_dir),
        "MECHREFUSAL_HOME": str(tmp / "home"),
        "MECHREFUSAL_WALKTHROUGH": json.dumps(TOY_SIZES),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "BROWSER_PATH": str(tmp / "no-chromium"),  # PNG figures are test_analyze's business
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # A probe cell, removed again before the notebook is written: which package the kernel imported.
    notebook.cells.append(nbformat.v4.new_code_cell("print('mechrefusal from', mechrefusal.__file__)"))
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        client = nbclient.NotebookClient(
            notebook, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(workdir)}}
        )
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    probe = notebook.cells.pop()
    if os.environ.get("MECHREFUSAL_WRITE_NOTEBOOK"):
        write_back(notebook, toy_dir)
    return notebook, probe, workdir


def text(cell) -> str:
    """The text a code cell printed or showed."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def write_back(notebook, toy_dir) -> None:
    """Save the executed notebook to examples/ without run-specific paths and timings."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if "outputs" in cell:  # tqdm's note that ipywidgets is missing is this kernel's business
            cell.outputs = [o for o in cell.outputs if "IProgress not found" not in o.get("text", "")]
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                output.text = output.text.replace(str(toy_dir), "<toy model>")
            elif "data" in output:
                output.data = {key: value.replace(str(toy_dir), "<toy model>") for key, value in output.data.items()}
    nbformat.write(notebook, NOTEBOOK)


def test_the_notebook_runs_without_errors_on_the_kernel_of_this_checkout(executed):
    notebook, probe, _ = executed
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert all(cell.execution_count for cell in notebook.cells if cell.cell_type == "code")
    assert f"mechrefusal from {ROOT / 'mechrefusal'}" in text(probe)


def test_the_notebook_finds_a_direction_whose_ablation_removes_refusal(executed):
    notebook, _, _ = executed
    outputs = "\n".join(text(cell) for cell in notebook.cells)
    assert "4 layers, d_model 64" in outputs  # the toy, not the embedded model
    assert "direction: layer " in outputs and "passed the filters: True" in outputs
    table = next(text(cell) for cell in notebook.cells if "direction ablated" in text(cell))
    rows = {line[:22].strip(): [float(x) for x in line[22:].split()] for line in table.splitlines()[1:3]}
    plain, ablated = rows["no intervention"], rows["direction ablated"]  # harmful score, rate, harmless ...
    assert plain[1] > 0.6 and ablated[1] < 0.2 and plain[0] - ablated[0] > 3


def test_the_notebook_trains_and_analyses_a_checkpoint(executed):
    notebook, _, workdir = executed
    rounds = workdir / "runs" / "walkthrough" / "fail-closed"
    assert sorted(path.name for path in rounds.iterdir()) == ["round-0", "round-1"]
    report = json.loads((workdir / "runs" / "walkthrough" / "report" / "report.json").read_text())
    assert [entry["role"] for entry in report["models"]] == ["model", "compare"]
    outputs = "\n".join(text(cell) for cell in notebook.cells)
    assert "saved directions: [('dim'" in outputs and "wall time" in outputs
    last = [cell for cell in notebook.cells if cell.cell_type == "code"][-1]
    assert "'directions_to_break'" in text(last) and "'fail_closed'" in text(last)
