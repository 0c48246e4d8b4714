"""Executes notebooks/interest_evolution.ipynb on MovieLens-100K (small settings, CPU) and checks what it leaves."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "interest_evolution.ipynb"
FIGURES = ("category_interests.png", "interest_gate.png", "forecast.png", "groups.png", "migration.png")
RUNS = {"next_item": "next-item-recommendation", "forecast": "interest-forecasting", "click": "click-prediction"}


def _printed(notebook) -> str:
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    return "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_interest_evolution_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    # The notebook's models are tiny (hidden 32, one layer): one thread runs them as fast as two on an idle 2-core
    # machine, and several times faster when the machine is busy (threads waiting on each other).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit it cleared"
    assert all(cell.get("execution_count") is None for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    work = tmp_path / "interest_evolution_run"

    for name in FIGURES:
        assert (work / name).stat().st_size > 1000, name
    for folder, task in RUNS.items():
        results = json.loads((work / folder / "eval_results.json").read_text())
        assert results["task"] == task
        assert results["dataset"]["name"] == "movielens-100k"
    click = json.loads((work / "click" / "eval_results.json").read_text())["test"]
    assert 0.0 <= click["model"]["auc"] <= 1.0 and 0.0 <= click["popularity_lr"]["auc"] <= 1.0
    assert {"groups.safetensors", "groups.json"} <= {p.name for p in (work / "groups").iterdir()}

    text = _printed(notebook)
    # the gate of every step the model read, each in [0, 1]
    gate_lines = [line for line in text.splitlines() if line.startswith("gate values: ")]
    assert len(gate_lines) == 1, "the gate cell prints its values once"
    gates = json.loads(gate_lines[0].removeprefix("gate values: "))
    assert len(gates) == 50  # the user has more events than max_length 50: every position is a real event
    assert all(0.0 <= g <= 1.0 for g in gates)
    assert "task: next-item-recommendation" in text and "popularity (baseline)" in text
    assert "recent category mix" in text and "logistic regression on pop." in text
