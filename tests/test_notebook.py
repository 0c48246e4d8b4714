"""Executes notebooks/quickstart.ipynb end to end (small settings, CPU) and checks what it leaves behind."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit it cleared"
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    work = tmp_path / "quickstart_run"
    results = json.loads((work / "model" / "eval_results.json").read_text())
    assert results["test"]["exclude_seen"]["protocol"]["ranking"] == "full ranking"
    assert (work / "training_curve.png").stat().st_size > 1000
    assert {"README.md", "model.safetensors", "config.json"} <= {p.name for p in (work / "upload").iterdir()}
    # the recommend cell's output lists 5 items, none of them in the user's history
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "'rank': 5" in text and "popularity (baseline)" in text
