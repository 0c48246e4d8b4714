"""One entry point for every log format: `read_log` picks the reader from the format or the path.

The readers themselves live in `readers` (CSV/TSV, Parquet, JSON Lines, Amazon Reviews, RecBole atomic files,
in-memory tables) and `movielens` (the GroupLens layouts).
"""

from __future__ import annotations

import os
from pathlib import Path

from .columns import ColumnMapping
from .movielens import read_movielens
from .readers import (
    FORMATS,
    RawLog,
    _read_amazon_log,
    _read_csv_log,
    _read_jsonl_log,
    _read_memory_log,
    _read_parquet_log,
    _read_recbole_log,
    check_file,
    detect_amazon,
    infer_format,
)


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
        return _read_memory_log(source, mapping)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory.")
    if format is not None and format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; choose one of {list(FORMATS)}.")
    fmt = format or infer_format(path)
    if fmt in ("csv", "tsv"):
        return _read_csv_log(
            check_file(path), mapping, delimiter or ("," if fmt == "csv" else "\t"), encoding, fmt.upper()
        )
    if fmt == "parquet":
        return _read_parquet_log(path, mapping)
    if fmt == "jsonl":
        if columns is None and detect_amazon(check_file(path)) is not None:
            return _read_amazon_log(path, mapping)
        return _read_jsonl_log(check_file(path), mapping)
    if fmt == "amazon":
        return _read_amazon_log(path, mapping)
    if fmt == "recbole":
        return _read_recbole_log(path, mapping)
    return read_movielens(path, mapping)
