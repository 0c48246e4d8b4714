"""Shared pieces of the readers: the `RawLog` every reader returns, format detection, id columns as text, and
canonical item and user side tables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .._arrow import (
    Provenance,
    drop_empty_strings,
    fill_empty_lists,
    format_values,
    natural_key,
    utf8_error_location,
)
from ..paths import missing_path_message

FORMATS = ("csv", "tsv", "parquet", "jsonl", "recbole", "movielens", "amazon")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
ID_FIELDS = ("user", "item", "event_type", "session")


@dataclass
class RawLog:
    """A behaviour log as read, before cleaning.

    Args:
        table: Events with canonical column names (`user`, `item`, and optionally `timestamp`, `event_type`,
            `rating`, `session`), in file order.
        source: What was read, for the report.
        provenance: Maps a row index of `table` to a readable location.
        columns: `{canonical name: source column}` actually used.
        timestamp_unit: Unit of numeric timestamps.
        timestamp_format: `strptime` format of textual timestamps, if any.
        items: Item side table (`item_id`, `title`, `categories`, `description`, attributes...) or `None`.
        users: User side table (`user_id`, attributes...) or `None`.
        notes: Things the reader decided that a user should know (detected format, encoding, ...).
    """

    table: pa.Table
    source: str
    provenance: Provenance
    columns: dict[str, str]
    timestamp_unit: str = "s"
    timestamp_format: str | None = None
    items: pa.Table | None = None
    users: pa.Table | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_columns(
        cls, table: pa.Table, resolved: dict[str, str], mapping, source: str, provenance: Provenance, **fields
    ) -> RawLog:
        """The log of the `resolved` columns of `table` (`{canonical name: source column}`), renamed to their canonical
        names, with the timestamp settings of the column `mapping`; `fields` set the rest (`notes`, ...)."""
        return cls(
            table=pa.table({canonical: table.column(column) for canonical, column in resolved.items()}),
            source=source,
            provenance=provenance,
            columns=resolved,
            timestamp_unit=mapping.timestamp_unit,
            timestamp_format=mapping.timestamp_format,
            **fields,
        )


# ----------------------------------------------------------------------------------------------------------------
# Small shared pieces


def strip_compression(name: str) -> str:
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_file(path: str | os.PathLike) -> Path:
    """Check that `path` exists and is a non-empty file.

    Args:
        path: The file.

    Returns:
        The path as a `Path`.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is empty (0 bytes).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(missing_path_message(p))
    if p.is_file() and p.stat().st_size == 0:
        raise ValueError(f"{p}: the file is empty (0 bytes); it holds no events.")
    return p


def parquet_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if any(part.startswith(("_", ".")) for part in rel):
            continue  # _SUCCESS, _metadata, _common_metadata, .crc files, hidden folders
        if path.is_file() and path.name.lower().endswith(_PARQUET_SUFFIXES):
            files.append(path)
    return sorted(files, key=lambda f: natural_key(str(f.relative_to(root))))


def infer_format(path: str | os.PathLike) -> str:
    """Guess the format of a behaviour log from its name (or, for a directory, from the files in it).

    Args:
        path: File or directory.

    Returns:
        One of `FORMATS`.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(missing_path_message(p))
    if p.is_dir():
        names = {child.name for child in p.iterdir()}
        if any(name.endswith(".inter") for name in names):
            return "recbole"
        if {"u.data", "ratings.dat"} & names or {"ratings.csv", "movies.csv"} <= names:
            return "movielens"
        if parquet_files(p):
            return "parquet"
        raise FileNotFoundError(
            f"{p}: the directory holds no behaviour log I recognise (Parquet shards, a RecBole .inter file, or "
            f"MovieLens files). Found: {format_values(sorted(names), 20)}."
        )
    name = strip_compression(p.name.lower())
    if name in ("u.data", "ratings.dat"):
        return "movielens"
    suffix = Path(name).suffix
    by_suffix = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
    by_suffix.update({".inter": "recbole"} | dict.fromkeys(_PARQUET_SUFFIXES, "parquet"))
    if suffix in by_suffix:
        return by_suffix[suffix]
    raise ValueError(f"{p}: cannot tell the format from the file name; pass format= one of {list(FORMATS)}.")


def ids_to_strings(column: pa.Array | pa.ChunkedArray, name: str, source: str) -> pa.Array | pa.ChunkedArray:
    """Raw ids as strings: integers as their decimal text, integral floats likewise, text unchanged.

    Args:
        column: An id column.
        name: Column name, for messages.
        source: Source name, for messages.

    Returns:
        A string column with the same nulls.
    """
    typ = column.type
    if pa.types.is_dictionary(typ):
        column = column.cast(typ.value_type)
        typ = typ.value_type
    if pa.types.is_string(typ):
        return column
    if pa.types.is_large_string(typ) or pa.types.is_null(typ):
        return column.cast(pa.string())
    if pa.types.is_integer(typ):
        return pc.cast(column, pa.string())
    if pa.types.is_floating(typ):
        if pc.all(pc.equal(column, pc.floor(column))).as_py() not in (True, None):
            raise ValueError(f"{source}: id column {name!r} holds non-integer numbers; ids must be integers or text.")
        return pc.cast(pc.cast(column, pa.int64()), pa.string())
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        raise ValueError(f"{source}: id column {name!r} holds bytes that are not valid UTF-8 text.")
    raise ValueError(f"{source}: id column {name!r} has type {typ}; ids must be integers or text.")


def rename_canonical(table: pa.Table, resolved: dict[str, str]) -> pa.Table:
    return pa.table({canonical: table.column(source) for canonical, source in resolved.items()})


def decode_header(raw: bytes, path: Path, encoding: str) -> str:
    try:
        return raw.decode("utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding)
    except UnicodeDecodeError:
        where = utf8_error_location(path)
        raise ValueError(
            f"{path}: the file is not valid {encoding} text ({where}). Re-encode it as UTF-8 "
            f"(e.g. `iconv -f latin1 -t utf-8`) or pass encoding='latin-1'."
        ) from None


def arrow_message(err: Exception) -> str:
    return str(err).split("\n")[0]


# ----------------------------------------------------------------------------------------------------------------
# Side tables


def split_categories(column: pa.ChunkedArray, separator: str | None) -> pa.ChunkedArray:
    """Categories as `list<string>`: list columns are kept, text is split on `separator` and trimmed.

    Args:
        column: The categories column.
        separator: Separator for text; `None` picks "|" if any value contains "|", else "," if any value contains
            ",", else each value is one category.

    Returns:
        A `list<string>` column without nulls (empty lists instead).
    """
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return fill_empty_lists(column)
    text = pc.cast(column, pa.string())
    if separator is None:
        if pc.any(pc.match_substring(text, "|")).as_py():
            separator = "|"
        elif pc.any(pc.match_substring(text, ",")).as_py():
            separator = ","
    if separator is None:
        parts = pc.split_pattern(text, "\x00")  # one category per value
    else:
        parts = pc.split_pattern(text, separator)
    parts = pa.chunked_array(
        [pa.ListArray.from_arrays(c.offsets, pc.utf8_trim_whitespace(c.flatten())) for c in parts.chunks]
        if parts.num_chunks
        else [],
        type=pa.list_(pa.string()),
    )
    return drop_empty_strings(fill_empty_lists(parts))


def canonical_items(table: pa.Table, resolved: dict[str, str], separator: str | None, source: str) -> pa.Table:
    """Bring an item table to the canonical columns `item_id`, `title`, `categories`, `description`, attributes.

    Args:
        table: The item table as read.
        resolved: `{"item": ..., "title": ..., "categories": ..., "text": ...}` (see `resolve_item_columns`).
        separator: Category separator for text categories (`None`: detect).
        source: Source name, for messages.

    Returns:
        The canonical item table; attributes keep their names and types.
    """
    n = table.num_rows
    columns = {"item_id": ids_to_strings(table.column(resolved["item"]), resolved["item"], source)}
    if "title" in resolved:
        title = table.column(resolved["title"])
        columns["title"] = pc.binary_join(title, " ") if pa.types.is_list(title.type) else pc.cast(title, pa.string())
    else:
        columns["title"] = pa.nulls(n, pa.string())
    if "categories" in resolved:
        columns["categories"] = split_categories(table.column(resolved["categories"]), separator)
    else:
        columns["categories"] = fill_empty_lists(pa.nulls(n, pa.list_(pa.string())))
    if "text" in resolved:
        text = table.column(resolved["text"])
        columns["description"] = (
            pc.binary_join(text, " ") if pa.types.is_list(text.type) else pc.cast(text, pa.string())
        )
    else:
        columns["description"] = pa.nulls(n, pa.string())
    used = set(resolved.values())
    reserved = set(columns) | {"text", "train_count"}
    for name in table.column_names:
        if name not in used:
            columns[name if name not in reserved else f"{name}_attribute"] = table.column(name)
    return pa.table(columns)


def canonical_users(table: pa.Table, user_column: str, source: str) -> pa.Table:
    """User table with `user_id` (string) first and the other columns as attributes.

    Args:
        table: The user table as read.
        user_column: Name of its user id column.
        source: Source name, for messages.

    Returns:
        The canonical user table.
    """
    columns = {"user_id": ids_to_strings(table.column(user_column), user_column, source)}
    for name in table.column_names:
        if name != user_column:
            columns[name if name != "user_id" else "user_id_attribute"] = table.column(name)
    return pa.table(columns)
