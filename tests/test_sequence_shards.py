"""Sequence-shard folders without Spark: hand-written shards stream into leave-one-out splits, and a folder that is
not one, or whose shards disagree with its manifest, is refused with a message that says what to do."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_interest.data.sequence_shards import is_sequence_shards, read_sequence_shards, stream_sequence_splits
from hf_interest.training.streaming import StreamingSequences

ROWS = {
    "user_id": ["a", "b", "c"],
    "item_ids": [["1", "2", "3", "4"], ["5", "6"], ["7"]],
    "timestamps": [[1, 2, 3, 4], [1, 2], [5]],
}


def _write(folder, rows=ROWS, events=7, shards=2):
    folder.mkdir()
    table = pa.table(rows)
    for i in range(shards):
        pq.write_table(table.slice(i * 2, 2), folder / f"part-{i:05d}.parquet")
    manifest = {"format": "hf_interest.sequences/1", "source": "hand", "events_read": events + 1,
                "dropped_missing_user_or_item": 1, "dropped_duplicates": 0, "events": events, "users": 3,
                "items": 7, "num_shards": shards, "columns": {"user": "u", "item": "i", "timestamp": "t"}}  # fmt: skip
    (folder / "sequences.json").write_text(json.dumps(manifest))
    return folder


def test_leave_one_out_row_by_row(tmp_path):
    folder = _write(tmp_path / "shards")
    assert is_sequence_shards(folder) and not is_sequence_shards(tmp_path)
    splits = stream_sequence_splits(folder)
    assert list(splits["train"]) == [
        {"user_id": "a", "item_ids": ["1", "2"], "timestamps": [1, 2]},
        {"user_id": "b", "item_ids": ["5"], "timestamps": [1]},
        {"user_id": "c", "item_ids": ["7"], "timestamps": [5]},
    ]
    assert [(r["user_id"], r["item_ids"], r["target_item_id"]) for r in splits["validation"]] == [
        ("a", ["1", "2"], "3")
    ]
    assert [(r["user_id"], r["item_ids"], r["target_item_id"], r["target_timestamp"]) for r in splits["test"]] == [
        ("a", ["1", "2", "3"], "4", 4),
        ("b", ["5"], "6", 2),
    ]
    data = StreamingSequences(folder, 0, 1)
    assert data.report.splits["train"] == {"rows": 3, "events": 4}
    assert data.report.splits["test"] == {"rows": 2, "events": 4, "targets": 2}
    # vocabulary: descending training count, ties by id; items seen only as targets come last
    assert data.item_ids[:4] == ["1", "2", "5", "7"] and sorted(data.item_ids[4:]) == ["3", "4", "6"]


def test_a_folder_without_a_manifest_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="spark_sequences.py"):
        read_sequence_shards(tmp_path)


def test_shards_that_disagree_with_the_manifest_are_refused(tmp_path):
    folder = _write(tmp_path / "shards", events=9)
    with pytest.raises(ValueError, match="a shard is missing or extra"):
        StreamingSequences(folder, 0, 1)


def test_training_items_of_a_sliced_column():
    """The counting pass reads Arrow batches that may be slices: positions are taken from the slice's own start."""
    from hf_interest.data.sequence_shards import leave_one_out_items

    column = pa.array([["x"], ["1", "2", "3", "4"], ["5", "6"], ["7"]]).slice(1)
    n, keep, values, train = leave_one_out_items(column)
    assert n.tolist() == [4, 2, 1] and keep.tolist() == [2, 1, 1]
    assert values.to_pylist() == ["1", "2", "3", "4", "5", "6", "7"]
    assert train.to_pylist() == ["1", "2", "5", "7"]
