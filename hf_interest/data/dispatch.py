"""One entry point for every format: `read_log` (behaviour logs) and `read_side_table` (item and user tables) pick
the reader from the format or the path.

The readers themselves live in `readers` (CSV/TSV, Parquet, JSON Lines, Amazon Reviews, RecBole atomic files,
in-memory tables) and `movielens` (the GroupLens layouts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from .columns import ColumnMapping
from .movielens import read_movielens
from .paths import missing_path_message
from .readers.amazon import detect_amazon, read_amazon_log
from .readers.base import FORMATS, RawLog, check_file, infer_format, strip_compression
from .readers.delimited import guess_delimiter, header_names, read_csv_log, read_delimited
from .readers.jsonl import read_json_lines, read_jsonl_log
from .readers.memory import read_memory_log, table_from_memory
from .readers.parquet import read_parquet_any, read_parquet_log
from .readers.recbole import read_recbole_log, read_recbole_table


def read_log(
    source,
    *,
    format: str | None = None,
    columns: ColumnMapping | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
) -> RawLog:
    """Read a behaviour log in any supported format.

    Args:
        source: Path to a file or directory, or an in-memory table.
        format: One of `FORMATS`; inferred from the path when `None` (JSON Lines with Amazon Reviews fields is read
            as "amazon").
        columns: Column mapping (detected when `None`).
        encoding: Text encoding of CSV/TSV files.
        delimiter: Field separator for CSV/TSV (default "," and tab).

    Returns:
        The raw log.
    """
    mapping = ColumnMapping.from_any(columns)
    if not isinstance(source, (str, os.PathLike)):
        return read_memory_log(source, mapping)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(missing_path_message(path))
    if format is not None and format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; choose one of {list(FORMATS)}.")
    fmt = format or infer_format(path)
    if fmt in ("csv", "tsv"):
        note = None
        if delimiter is None:  # a header without the usual separator says which one it uses
            delimiter, note = guess_delimiter(check_file(path), "," if fmt == "csv" else "\t", encoding)
        raw = read_csv_log(check_file(path), mapping, delimiter, encoding, fmt.upper())
        if note:
            raw.notes.append(note)
        return raw
    if fmt == "parquet":
        return read_parquet_log(path, mapping)
    if fmt == "jsonl":
        if columns is None and detect_amazon(check_file(path)) is not None:
            return read_amazon_log(path, mapping)
        return read_jsonl_log(check_file(path), mapping)
    if fmt == "amazon":
        return read_amazon_log(path, mapping)
    if fmt == "recbole":
        return read_recbole_log(path, mapping)
    return read_movielens(path, mapping)


def read_side_table(source, kind: str, id_columns: Sequence[str] = ()) -> tuple[pa.Table, str]:
    """Read an item or user side table from a file (CSV/TSV/Parquet/JSONL/RecBole `.item`/`.user`) or a table.

    Args:
        source: Path, `pyarrow.Table`, `pandas.DataFrame` or `datasets.Dataset`.
        kind: "items" or "users", for messages.
        id_columns: Names (case-insensitive) that may hold the id; in CSV/TSV they are read as text, so that
            "0042" stays "0042" as it does in the behaviour log.

    Returns:
        `(table, source name)`.
    """
    if not isinstance(source, (str, os.PathLike)):
        return table_from_memory(source, kind), f"<{kind} table>"
    path = check_file(source)
    name = strip_compression(path.name.lower())
    if name.endswith((".item", ".user")):
        table, _ = read_recbole_table(path)
        return table, str(path)
    fmt = infer_format(path)
    if fmt == "parquet":
        return read_parquet_any(path), str(path)
    if fmt == "jsonl":
        return read_json_lines(path), str(path)
    if fmt in ("csv", "tsv"):
        delimiter = "," if fmt == "csv" else "\t"
        names = header_names(path, delimiter, "utf-8")
        wanted = {c.lower() for c in id_columns}
        types = {n: pa.string() for n in names if n.lower() in wanted}
        return read_delimited(path, delimiter=delimiter, include=names, column_types=types), str(path)
    raise ValueError(f"{path}: cannot read a {kind} table in format {fmt!r}; use CSV, TSV, Parquet or JSON Lines.")
