"""Bad input gets a clear `ValueError` / `FileNotFoundError` that says where and what to do, never a raw traceback
from pandas or Arrow."""

import gzip
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_interest.data import (
    CleaningConfig,
    ColumnMapping,
    DataCollatorForInterest,
    LeaveOneOutSplit,
    SyntheticConfig,
    TemporalSplit,
    UserSplit,
    load_behaviors,
)


def raises(exc_type, match, source, **kwargs):
    """Load `source` expecting `exc_type`; also check that no Arrow/pandas exception is shown as its cause."""
    with pytest.raises(exc_type, match=match) as info:
        load_behaviors(source, **kwargs)
    err = info.value
    shown = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    assert not isinstance(shown, (pa.ArrowException, pd.errors.ParserError)), f"raw error shown: {shown!r}"
    return str(err)


def write(path, text: str):
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------------------------
# Missing files and columns


def test_missing_file_and_empty_directory(tmp_path):
    raises(FileNotFoundError, "no such file", tmp_path / "nope.csv")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "_SUCCESS").write_text("")
    raises(FileNotFoundError, "holds no behaviour log", tmp_path / "shards")
    raises(FileNotFoundError, "no Parquet files", tmp_path / "shards", format="parquet")


def test_missing_columns_are_named_with_the_columns_found(tmp_path):
    path = write(tmp_path / "e.csv", "visitor,product,ts\n1,2,3\n")
    message = raises(ValueError, "no user column found", path)
    assert "'visitor'" in message and "'product'" in message and "'ts'" in message
    message = raises(ValueError, "names 'userid' as the user column", path, columns={"user": "userid"})
    assert "'visitor'" in message
    message = raises(
        ValueError,
        "names 'stamp' as the timestamp column",
        path,
        columns={"timestamp": "stamp", "user": "visitor", "item": "product"},
    )
    assert "Columns found" in message
    with pytest.raises(ValueError, match="Unknown column mapping keys"):
        load_behaviors(path, columns={"usr": "visitor"})


def test_missing_column_in_parquet_and_jsonl(tmp_path):
    pq.write_table(pa.table({"user_id": [1], "ts": [3]}), tmp_path / "e.parquet")
    raises(ValueError, "no item column found.*'user_id'", tmp_path / "e.parquet")
    path = write(tmp_path / "e.jsonl", '{"user_id": 1, "timestamp": 3}\n')
    raises(ValueError, "no item column found", path)


# --------------------------------------------------------------------------------------------------------------
# Timestamps


def test_unparseable_timestamp_names_row_and_value(tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,c,yesterday\n")
    message = raises(ValueError, "row 3 \\(line 4\\).*'yesterday'", path)
    assert "timestamp_format" in message
    path = write(tmp_path / "f.csv", "user_id,item_id,timestamp\nu,a,2020-01-01\nu,b,2020-13-45\n")
    raises(ValueError, "row 2 .*'2020-13-45'", path)
    path = write(tmp_path / "g.csv", "user_id,item_id,timestamp\nu,a,01/02/2020\nu,b,31/31/2020\n")
    raises(ValueError, "row 2 .*'31/31/2020' does not match", path, columns=ColumnMapping(timestamp_format="%d/%m/%Y"))


def test_missing_timestamp_is_an_error_with_the_row(tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,\n")
    raises(ValueError, "row 2 \\(line 3\\): missing timestamp", path)


def test_negative_and_absurd_timestamps(tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,-5\n")
    raises(ValueError, "row 2 .*-5 is negative", path)
    path = write(tmp_path / "f.csv", "user_id,item_id,timestamp\nu,a,1588687728923\n")
    message = raises(ValueError, "row 1 .*after 2100", path)
    assert "timestamp_unit='ms'" in message
    df = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [float("nan")]})
    raises(ValueError, "missing timestamp", df)
    df = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [-1.5]})
    raises(ValueError, "negative", df)
    path = write(tmp_path / "g.csv", "user_id,item_id,timestamp\nu,a,1960-01-01T00:00:00Z\n")
    raises(ValueError, "negative", path)


def test_row_numbers_point_into_the_right_shard(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    pq.write_table(
        pa.table({"user_id": ["u"] * 3, "item_id": ["a"] * 3, "timestamp": [1, 2, 3]}), root / "part-0.parquet"
    )
    pq.write_table(
        pa.table({"user_id": ["u"] * 2, "item_id": ["a"] * 2, "timestamp": [4, -1]}), root / "part-1.parquet"
    )
    raises(ValueError, "part-1.parquet, row 2: timestamp -1 is negative", root)


# --------------------------------------------------------------------------------------------------------------
# Bytes and structure


def test_non_utf8_csv_names_the_line(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b"user_id,item_id,timestamp\nu,a,1\nu,caf\xe9,2\n")
    message = raises(ValueError, "not valid UTF-8.*line 3", path)
    assert "encoding='latin-1'" in message
    data = load_behaviors(path, encoding="latin-1", split=None)
    assert data.sequences["train"][0]["item_ids"] == ["a", "café"]


def test_non_utf8_jsonl_names_the_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        b'{"user_id": "u", "item_id": "a", "timestamp": 1}\n{"user_id": "u", "item_id": "caf\xe9", "timestamp": 2}\n'
    )
    raises(ValueError, "not valid UTF-8.*line 2", path)


def test_non_utf8_header(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b"user_id,it\xe9m,timestamp\nu,a,1\n")
    raises(ValueError, "not valid utf-8 text.*line 1", path)


def test_empty_files(tmp_path):
    for name in ("e.csv", "e.jsonl", "e.parquet", "e.inter"):
        (tmp_path / name).write_bytes(b"")
        raises(ValueError, "empty", tmp_path / name)
    raises(ValueError, "empty", write(tmp_path / "blank.jsonl", "\n\n"))
    raises(ValueError, "no rows", write(tmp_path / "header.csv", "user_id,item_id,timestamp\n"))
    pq.write_table(
        pa.table({"user_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string())}), tmp_path / "z.parquet"
    )
    raises(ValueError, "no rows", tmp_path / "z.parquet")
    (tmp_path / "g.csv.gz").write_bytes(gzip.compress(b""))
    raises(ValueError, "empty", tmp_path / "g.csv.gz")


def test_malformed_csv_row(tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,1\nu,b\n")
    raises(ValueError, "malformed CSV: line 3 has 2 fields where the header has 3 \\(text: 'u,b'\\)", path)


def test_broken_json_line_is_located(tmp_path):
    path = write(
        tmp_path / "e.jsonl", '{"user_id": "u", "item_id": "a", "timestamp": 1}\n{"user_id": "u", "item_id"\n'
    )
    raises(ValueError, "line 2", path)
    path = write(tmp_path / "arr.json", '[{"user_id": "u", "item_id": "a", "timestamp": 1}]')
    raises(ValueError, "JSON array, not JSON Lines", path)


def test_not_a_parquet_file(tmp_path):
    path = write(tmp_path / "e.parquet", "user_id,item_id\n")
    raises(ValueError, "not a readable Parquet file", path)


def test_unknown_format(tmp_path):
    path = write(tmp_path / "e.xyz", "x")
    raises(ValueError, "cannot tell the format", path)
    raises(ValueError, "Unknown format", path, format="excel")


# --------------------------------------------------------------------------------------------------------------
# Ids


def test_mixed_id_types_in_jsonl(tmp_path):
    lines = [json.dumps({"user_id": k, "item_id": "a", "timestamp": k}) for k in range(2000)]
    lines.append(json.dumps({"user_id": "u-x", "item_id": "a", "timestamp": 1}))
    path = write(tmp_path / "e.jsonl", "\n".join(lines) + "\n")
    raises(ValueError, "field 'user_id' has mixed types: number in earlier lines, string at line 2001", path)


def test_mixed_id_types_across_parquet_shards(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": ["a", "b"]}), root / "part-0.parquet")
    pq.write_table(pa.table({"user_id": ["x"], "item_id": ["c"]}), root / "part-1.parquet")
    message = raises(ValueError, "column 'user_id' has mixed types across shards", root)
    assert "part-0.parquet" in message and "part-1.parquet" in message


def test_mixed_id_types_in_a_dataframe(tmp_path):
    df = pd.DataFrame({"user_id": [1, "u2", 3], "item_id": ["a", "b", "c"], "timestamp": [1, 2, 3]})
    raises(ValueError, "column 'user_id' has mixed types: int .*row 1.*str .*row 2", df)


def test_fractional_and_unsupported_ids(tmp_path):
    raises(ValueError, "non-integer numbers", pd.DataFrame({"user_id": [1.5], "item_id": [1], "timestamp": [1]}))
    # Integral floats (pandas' integers with NaN) are fine and read as integers.
    data = load_behaviors(
        pd.DataFrame({"user_id": [1.0, 2.0], "item_id": [3.0, 3.0], "timestamp": [1, 2]}), split=None
    )
    assert data.sequences["train"]["user_id"][:] == ["1", "2"]
    raises(ValueError, "ids must be integers or text", pa.table({"user_id": [[1]], "item_id": [1], "timestamp": [1]}))


def test_missing_ids_are_counted_or_rejected(tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,1\n,b,2\nu,,3\nv,c,4\n")
    data = load_behaviors(path, split=None)
    step = data.report.step("drop missing user/item")
    assert (step.events_before, step.events_after, step.removed) == (4, 2, 2)
    raises(ValueError, "row 2 \\(line 3\\): missing user id", path, cleaning=CleaningConfig(drop_missing=False))
    everything_missing = write(tmp_path / "f.csv", "user_id,item_id,timestamp\n,b,2\n")
    raises(ValueError, "every one of the 1 rows has a missing user or item", everything_missing)


# --------------------------------------------------------------------------------------------------------------
# Cleaning that leaves nothing, and bad settings


def test_dataset_left_empty_by_filtering(tmp_path):
    df = pd.DataFrame(
        {"user_id": ["u", "u", "v"], "item_id": ["a", "b", "a"], "timestamp": [1, 2, 3], "rating": [1, 2, 3]}
    )
    message = raises(ValueError, "no events are left after cleaning", df, cleaning=CleaningConfig(min_rating=5))
    assert "filter rating" in message  # the report is part of the message
    raises(ValueError, "no events are left", df, cleaning=CleaningConfig(min_user_events=5))
    raises(ValueError, "needs an event type column", df, cleaning=CleaningConfig(event_types=["buy"]))
    raises(ValueError, "needs a rating column", df.drop(columns="rating"), cleaning=CleaningConfig(min_rating=1))


def test_bad_settings():
    with pytest.raises(ValueError, match="min_user_events"):
        CleaningConfig(min_user_events=-1)
    with pytest.raises(ValueError, match="event_types must be a list"):
        CleaningConfig(event_types="click")
    with pytest.raises(ValueError, match="max_events_per_user"):
        CleaningConfig(max_events_per_user=0)
    with pytest.raises(ValueError, match="timestamp_unit"):
        ColumnMapping(timestamp_unit="days")
    with pytest.raises(ValueError, match="validation_start .* must be before test_start"):
        TemporalSplit(test_start=10, validation_start=20)
    with pytest.raises(ValueError, match="targets must be 'first' or 'all'"):
        TemporalSplit(test_start=10, targets="last")
    with pytest.raises(ValueError, match="must leave some users"):
        UserSplit(validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="Cannot read 'soon' as a time"):
        TemporalSplit(test_start="soon")
    with pytest.raises(ValueError, match="num_items"):
        SyntheticConfig(num_items=3, num_categories=5)
    with pytest.raises(ValueError, match="mode must be"):
        DataCollatorForInterest(mode="test")
    df = pd.DataFrame({"user_id": ["u"], "item_id": ["a"]})
    raises(ValueError, "needs a cutoff", df, split="temporal")
    raises(ValueError, "Unknown split", df, split="random")
    raises(ValueError, "needs timestamps", df, split=TemporalSplit(test_start=5))
    assert load_behaviors(df, split=LeaveOneOutSplit()).sequences["train"].num_rows == 1
