"""Crash-safe training: SIGKILL at named points, then `--resume_from_checkpoint latest` gives the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_train_args

ROOT = Path(__file__).resolve().parents[1]
ARGS = tiny_train_args(40, 8, 4, "--early_stopping_patience", "10")


def _train(output_dir: Path, *extra: str, fault: str | None = None, token: str | None = None, args=ARGS):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    env.pop("HF_INTEREST_FAULT_INJECTION", None)
    if fault:
        env["HF_INTEREST_FAULT_INJECTION"] = fault
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, str(ROOT / "hub_scripts" / "train.py"), *args, "--output_dir", str(output_dir), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference") / "run"
    run = _train(folder)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((folder / "eval_results.json").read_text()), (folder / "model.safetensors").read_bytes()


def _strip(history):
    return [
        {k: v for k, v in row.items() if not k.endswith("seconds") and not k.startswith("peak_rss")} for row in history
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["best_write@1", "train_step@2", "evaluation@3", "checkpoint_write@2", "final_write@4"],
)
def test_kill_then_resume_gives_the_uninterrupted_result(reference, tmp_path, fault):
    expected, expected_weights = reference
    folder = tmp_path / "run"
    killed = _train(folder, fault=fault)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert not (folder / "eval_results.json").exists()
    checkpoints = folder / "checkpoints"
    epoch = int(fault.split("@")[1])
    complete = sorted(p.name for p in checkpoints.glob("epoch_*")) if checkpoints.exists() else []
    if fault.startswith("checkpoint_write"):
        # the checkpoint being written is a temporary folder; the previous one is intact
        assert (checkpoints / f".epoch_{epoch}.tmp").is_dir()
        assert (
            f"epoch_{epoch}" not in complete and (checkpoints / f"epoch_{epoch - 1}" / "trainer_state.json").is_file()
        )
    resumed = _train(folder, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = json.loads((folder / "eval_results.json").read_text())
    assert got["test"] == expected["test"]
    assert got["validation"] == expected["validation"]
    assert _strip(got["training"]["history"]) == _strip(expected["training"]["history"])
    assert (folder / "model.safetensors").read_bytes() == expected_weights
    assert not list(checkpoints.glob(".*.tmp")) and not list(checkpoints.glob("*.old"))


HEAD_ARGS = {
    "click": tiny_train_args(40, 8, 3, "--task", "click", "--click_labels", "sampled"),
    "forecast": tiny_train_args(40, 8, 3, "--task", "forecast"),
}


@pytest.mark.slow
@pytest.mark.parametrize(("task", "fault"), [("click", "train_step@2"), ("forecast", "checkpoint_write@2")])
def test_a_head_run_killed_then_resumed_gives_the_uninterrupted_result(tmp_path, task, fault):
    """The heads train through the same loop: checkpoints, atomic writes and resume hold for them too."""
    reference = tmp_path / "reference"
    run = _train(reference, args=HEAD_ARGS[task])
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "run"
    killed = _train(folder, fault=fault, args=HEAD_ARGS[task])
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert not (folder / "eval_results.json").exists()
    resumed = _train(folder, "--resume_from_checkpoint", "latest", args=HEAD_ARGS[task])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout
    expected = json.loads((reference / "eval_results.json").read_text())
    got = json.loads((folder / "eval_results.json").read_text())
    assert got["task"] == expected["task"] == {"click": "click-prediction", "forecast": "interest-forecasting"}[task]
    assert got["test"] == expected["test"] and got["validation"] == expected["validation"]
    assert _strip(got["training"]["history"]) == _strip(expected["training"]["history"])
    assert (folder / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert not list((folder / "checkpoints").glob(".*.tmp"))


def test_resume_after_early_stopping_goes_straight_to_the_test(tmp_path):
    folder = tmp_path / "run"
    first = _train(folder, "--early_stopping_patience", "1", "--num_train_epochs", "30")
    assert first.returncode == 0, first.stderr[-2000:]
    done = json.loads((folder / "eval_results.json").read_text())
    assert done["training"]["epochs_run"] < 30
    (folder / "eval_results.json").unlink()
    again = _train(
        folder, "--early_stopping_patience", "1", "--num_train_epochs", "30", "--resume_from_checkpoint", "latest"
    )
    assert again.returncode == 0, again.stderr[-2000:]
    redone = json.loads((folder / "eval_results.json").read_text())
    assert redone["training"]["epochs_run"] == done["training"]["epochs_run"]  # no extra epoch was trained
    assert redone["test"] == done["test"]


def test_run_and_dry_run_push_never_contain_the_token(tmp_path):
    secret = "hf_tOkEn0123456789SECRETvalue"
    folder = tmp_path / "run"
    run = _train(folder, "--num_train_epochs", "1", token=secret)
    assert run.returncode == 0, run.stderr[-2000:]
    push = subprocess.run(
        [sys.executable, "-m", "hf_interest_cli", "push", str(folder), "--repo_id", "acme/x", "--dry_run",
         str(tmp_path / "upload")],
        capture_output=True, text=True, env={**os.environ, "HF_TOKEN": secret}, timeout=300,
    )  # fmt: skip
    assert push.returncode == 0, push.stderr[-2000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    for text in (run.stdout, run.stderr, push.stdout, push.stderr):
        assert secret not in text
