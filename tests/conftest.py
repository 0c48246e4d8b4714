"""Shared fixtures: one tiny run trained through the real CLI, reused by the publishing, pipeline and CLI tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_train_args

TINY_RUN_ARGS = tiny_train_args(users=40, batch_size=16, epochs=2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder written by `hf-interest train` on tiny synthetic data (seconds)."""
    folder = tmp_path_factory.mktemp("tiny_run") / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "hf_interest.cli", "train", *TINY_RUN_ARGS, "--output_dir", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert (folder / "eval_results.json").is_file()
    return folder
