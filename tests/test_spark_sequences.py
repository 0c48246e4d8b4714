"""Spark -> Parquet sequence shards -> `datasets` streaming -> training on 2 processes, against the in-memory path.

A small messy log (missing ids, empty ids, exact duplicates, ties in time, a user with one event and one with two) is
grouped by `hub_scripts/spark_sequences.py` in Spark local mode; the streamed leave-one-out splits, read whole or as
two processes' parts (`split_dataset_by_node`), must be `load_behaviors`'s splits row for row, and a 2-process
`accelerate launch` training run on the shards must see the in-memory path's windows, vocabulary and users.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_interest.data import load_behaviors
from hf_interest.data.sequence_shards import read_sequence_shards, stream_sequence_splits
from hf_interest.training import window_starts

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("pyspark", reason="pip install 'hf-interest[spark]' (in the test extras)")
if shutil.which("java") is None:
    pytest.fail(
        "pyspark needs Java 17+ on PATH; scripts/setup_env.sh installs it (apt-get install default-jre-headless)"
    )

SPLITS = ("train", "validation", "test")
MODEL = ["--hidden_size", "16", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size", "32"]


@pytest.fixture(scope="module")
def log_and_shards(tmp_path_factory):
    base = tmp_path_factory.mktemp("spark")
    rng = np.random.default_rng(0)
    n = 3000
    users = rng.integers(0, 120, n).astype(str).astype(object)
    items = rng.integers(0, 300, n).astype(str).astype(object)
    times = 1_600_000_000 + rng.integers(0, 400, n) * 3600  # about 7 events per hour slot: many ties in time
    users[5], items[7], items[9] = None, None, ""
    table = pa.table({"user_id": users.tolist(), "item_id": items.tolist(), "timestamp": times})
    extra = pa.table({"user_id": ["solo", "pair", "pair"], "item_id": ["1", "2", "3"],
                      "timestamp": [1_600_000_000, 1_600_000_000, 1_600_000_100]})  # fmt: skip
    log = base / "log.parquet"
    pq.write_table(pa.concat_tables([table, table.slice(0, 50), extra]), log)  # 50 rows twice
    shards = base / "shards"
    run = subprocess.run(
        [sys.executable, str(ROOT / "hub_scripts" / "spark_sequences.py"), str(log), "--output_dir", str(shards),
         "--num_shards", "4", "--master", "local[2]", "--shuffle_partitions", "4"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return log, shards


def test_streamed_splits_are_the_in_memory_splits_whole_and_per_process(log_and_shards):
    log, shards = log_and_shards
    data = load_behaviors(log)
    files, manifest = read_sequence_shards(shards)
    assert len(files) == 4
    # the cleaning counts Spark wrote are the in-memory loader's
    assert manifest["events_read"] == data.report.raw_events == 3053
    assert manifest["dropped_missing_user_or_item"] == data.report.step("drop missing user/item").removed == 6
    assert manifest["dropped_duplicates"] == data.report.step("deduplicate").removed == 47
    assert (manifest["events"], manifest["users"], manifest["items"]) == (
        data.report.events, data.report.users, data.report.items
    )  # fmt: skip
    for world_size in (1, 2):
        streamed = {split: [] for split in SPLITS}
        parts = []
        for rank in range(world_size):
            splits = stream_sequence_splits(shards, rank, world_size)
            part = {split: list(splits[split]) for split in SPLITS}
            parts.append({row["user_id"] for row in part["train"]})
            for split in SPLITS:
                streamed[split] += part[split]
        if world_size == 2:  # each process has its own users, and some
            assert parts[0] and parts[1] and not parts[0] & parts[1]
        for split in SPLITS:
            in_memory = data.sequences[split].to_list()
            assert len(streamed[split]) == len(in_memory) == data.report.splits[split]["rows"]
            by_user = {row["user_id"]: row for row in streamed[split]}
            assert by_user == {row["user_id"]: row for row in in_memory}, split  # histories, times, targets
    # the edge cases are there: one event (train only), two events (test, no validation)
    assert "solo" not in {r["user_id"] for r in data.sequences["test"].to_list()}
    assert "pair" not in {r["user_id"] for r in data.sequences["validation"].to_list()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(argv, launcher=()):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "ACCELERATE_USE_CPU": "1"}
    run = subprocess.run([*launcher, str(ROOT / "hub_scripts" / "train.py"), *argv], capture_output=True, text=True,
                         env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-4000:]
    return run


def test_two_processes_train_on_the_streamed_shards_like_the_in_memory_path(log_and_shards, tmp_path):
    log, shards = log_and_shards
    # the sampled softmax, so lazy item-table updates: sparse gradients all-reduced by gloo under torch's Join
    common = [*MODEL, "--max_length", "24", "--per_device_train_batch_size", "16", "--num_train_epochs", "2",
              "--report_to", "none", "--loss_type", "sampled_softmax", "--num_negative_samples", "8"]  # fmt: skip
    streamed, in_memory = tmp_path / "streamed", tmp_path / "in_memory"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", str(_free_port())]  # fmt: skip
    run = _train(["--dataset", str(shards), "--output_dir", str(streamed), *common], launcher=launch)
    _train(["--dataset", str(log), "--output_dir", str(in_memory), *common], launcher=[sys.executable])
    assert "sequence shards, streamed" in run.stdout

    got = json.loads((streamed / "eval_results.json").read_text())
    expected = json.loads((in_memory / "eval_results.json").read_text())
    assert got["training"]["num_processes"] == 2
    assert got["training"]["item_table_updates"] == expected["training"]["item_table_updates"] == "lazy"
    per_process = got["training"]["train_windows_per_process"]
    assert len(per_process) == 2 and min(per_process) > 0
    # every training window of the in-memory path, each read by one process
    data = load_behaviors(log)
    lengths = np.array([len(x) for x in data.sequences["train"]["item_ids"]])
    assert sum(per_process) == expected["training"]["train_windows"] == len(window_starts(lengths, 25)[0])
    # the same vocabulary (order included) and the same evaluated users
    assert (streamed / "item_vocab.json").read_text() == (in_memory / "item_vocab.json").read_text()
    for split in ("validation", "test"):
        for variant in ("exclude_seen", "include_seen"):
            mine, theirs = got[split][variant], expected[split][variant]
            assert mine["model"]["num_users"] == theirs["model"]["num_users"] == data.report.splits[split]["rows"]
            # popularity is fitted on the training events and ranks every user: equal only if both are the same
            # (up to the order of the float sums over users)
            assert mine["popularity"] == pytest.approx(theirs["popularity"], rel=1e-12)
    assert len(got["training"]["history"]) == 2
