"""Shared fixtures: one tiny run trained through the real CLI, reused by the publishing, pipeline and CLI tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import TEXT_ENCODER_SIZE, tiny_train_args

TINY_RUN_ARGS = tiny_train_args(users=40, batch_size=16, epochs=2)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in two pytest-xdist workers, one per core: each worker and the runs it starts use one
    # thread (two threads each would put four spinning threads on two cores). Set before torch reads it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The fast tier (`make test-fast`: `pytest -m "not slow"`) leaves out what trains through the scripts, runs a notebook,
# drives a browser or times a benchmark: these modules whole, and these tests by name. CI runs everything.
SLOW_MODULES = {
    "test_crash_safety", "test_evolution", "test_hub", "test_lora_training", "test_notebook", "test_notebook_evolution",
    "test_pipeline_cli", "test_privacy", "test_serving", "test_serving_parity", "test_space", "test_space_browser",
    "test_spark_sequences", "test_text_encoder_lora", "test_text_tower", "test_train_heads", "test_train_script",
}  # fmt: skip
SLOW_TESTS = {
    "test_item_table_benchmark_measures_every_cell", "test_step_benchmark_times_every_variant", "test_no_abbreviations",
    "test_pipeline_and_cli_warn_without_timestamps", "test_checkpoint_loads_with_remote_code_without_the_package",
}  # fmt: skip


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__ in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path_factory, monkeypatch):
    """Each test gets its own XDG_CONFIG_HOME (where `forget` keeps its default key) and no forget key from the
    environment: no test reads or writes the real ~/.config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("HF_INTEREST_FORGET_KEY", raising=False)
    monkeypatch.delenv("HF_INTEREST_FORGET_KEY_FILE", raising=False)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder written by `hf-interest train` on tiny synthetic data (seconds)."""
    folder = tmp_path_factory.mktemp("tiny_run") / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "hf_interest_cli", "train", *TINY_RUN_ARGS, "--output_dir", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert (folder / "eval_results.json").is_file()
    return folder


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory) -> str:
    """A randomly initialised 1-layer BERT with the all-MiniLM-L6-v2 tokenizer: a fast stand-in for any AutoModel."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hf_interest.text_encoding import resolve_text_encoder

    folder = tmp_path_factory.mktemp("tiny_text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder(None))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_ENCODER_SIZE,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
