"""Per-user sequences from Parquet shards, read with `datasets` streaming and split across processes.

A log too large for one machine is grouped by Apache Spark (`hub_scripts/spark_sequences.py`) into shards of one
row per user (`user_id`, `item_ids`, `timestamps`, events in time order) and a `sequences.json` manifest with the
cleaning counts. This module reads them back without holding them: `datasets.load_dataset(..., streaming=True)`
gives an `IterableDataset`, `datasets.distributed.split_dataset_by_node` gives each training process its own shards,
and the leave-one-out split is made row by row, so that it is the in-memory loader's (`load_behaviors`,
`LeaveOneOutSplit`): the last event is the test target, the one before it the validation target, the rest the
training sequence; a user with two events has a test row and no validation row, one with a single event is in train
only.

    splits = stream_sequence_splits("shards/", rank=accelerator.process_index, world_size=accelerator.num_processes)
    for row in splits["train"]: ...            # {"user_id", "item_ids", "timestamps"}
    for row in splits["test"]: ...             # also "target_item_id", "target_timestamp"
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

__all__ = [
    "SEQUENCES_MANIFEST",
    "is_sequence_shards",
    "leave_one_out_items",
    "read_sequence_shards",
    "stream_sequence_splits",
    "train_length",
]

SEQUENCES_MANIFEST = "sequences.json"
_FORMAT = "hf_interest.sequences/1"


def is_sequence_shards(path) -> bool:
    """Whether `path` is a folder written by `hub_scripts/spark_sequences.py` (it holds `sequences.json`)."""
    return Path(path).is_dir() and (Path(path) / SEQUENCES_MANIFEST).is_file()


def read_sequence_shards(path) -> tuple[list[str], dict]:
    """The shard files (sorted) and the manifest of a sequence-shard folder, checked."""
    folder = Path(path)
    manifest_path = folder / SEQUENCES_MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {SEQUENCES_MANIFEST}: it is not a folder written by hub_scripts/spark_sequences.py. "
            "Run that script on the log, or pass the log itself (load_behaviors reads Parquet shards of events)."
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != _FORMAT:
        raise ValueError(f"{manifest_path}: format {manifest.get('format')!r}, expected {_FORMAT!r}.")
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder} holds {SEQUENCES_MANIFEST} but no *.parquet shard.")
    return files, manifest


def train_length(n):
    """Events of a whole sequence of `n` (int or array) that `LeaveOneOutSplit` trains on: `n - 2` from 3 events on
    (the last two are the test and validation targets), 1 of 2 (the last is the test target), the one of 1."""
    return np.where(n >= 3, n - 2, np.where(n == 2, 1, n))


def leave_one_out_items(items: pa.ListArray) -> tuple[np.ndarray, np.ndarray, pa.Array, pa.Array]:
    """
    For a column of whole sequences: each row's length, its leave-one-out training length (`n - 2` from 3 events on,
    1 for 2 events, all of 1 event), all items, and the items of the training parts; with Arrow, no loop over rows.
    """
    n = items.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    keep = train_length(n)
    values = items.flatten()  # the rows' events, from offsets[0] on (a sliced array's offsets need not start at 0)
    offsets = items.offsets.to_numpy()
    position = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], n)  # index within its row
    return n, keep, values, values.filter(pa.array(position < np.repeat(keep, n)))


def _train_row(row: dict) -> dict:
    keep = int(train_length(len(row["item_ids"])))
    return {"user_id": row["user_id"], "item_ids": row["item_ids"][:keep], "timestamps": row["timestamps"][:keep]}


def _target_row(row: dict, back: int) -> dict:
    """The row whose target is the user's event `back` places from the end (1: the last), its history before it."""
    n = len(row["item_ids"])
    return {
        "user_id": row["user_id"],
        "item_ids": row["item_ids"][: n - back],
        "timestamps": row["timestamps"][: n - back],
        "target_item_id": row["item_ids"][n - back],
        "target_timestamp": row["timestamps"][n - back],
    }


def stream_sequence_splits(path, rank: int = 0, world_size: int = 1) -> dict:
    """
    Leave-one-out splits of a sequence-shard folder as streaming datasets, this process's part only.

    Args:
        path: a folder written by `hub_scripts/spark_sequences.py`.
        rank (`int`): this process's index (`accelerator.process_index`).
        world_size (`int`): the number of processes (`accelerator.num_processes`). With a number of shards that is
            a multiple of it, each process reads whole shards; otherwise every process reads every shard and keeps
            its share of the rows (`split_dataset_by_node`).

    Returns:
        `{"train", "validation", "test"}` -> `datasets.IterableDataset`, with the columns of `load_behaviors`'s
        splits (`user_id`, `item_ids`, `timestamps`, and `target_item_id`, `target_timestamp` in the evaluation
        splits); plus `"manifest"`: the cleaning counts written by Spark.
    """
    from datasets import load_dataset
    from datasets.distributed import split_dataset_by_node

    files, manifest = read_sequence_shards(path)
    stream = load_dataset("parquet", data_files=files, split="train", streaming=True)
    if world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    columns = ["user_id", "item_ids", "timestamps"]
    train = stream.map(_train_row).filter(lambda row: len(row["item_ids"]) > 0).select_columns(columns)
    validation = stream.filter(lambda row: len(row["item_ids"]) >= 3).map(lambda row: _target_row(row, 2))
    test = stream.filter(lambda row: len(row["item_ids"]) >= 2).map(lambda row: _target_row(row, 1))
    return {"train": train, "validation": validation, "test": test, "manifest": manifest}
