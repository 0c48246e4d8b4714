"""Readers: raw behaviour logs in their many shapes -> one Arrow table with canonical column names.

Every reader returns a `RawLog`: a `pyarrow.Table` whose columns are renamed to `user`, `item` and, when present,
`timestamp`, `event_type`, `rating`, `session`, plus the item and user side tables it found, and a `Provenance` to
turn a row index back into "file, row, line" for error messages. Cleaning, ordering and splitting happen later
(`hf_interest.data.cleaning`, `hf_interest.data.splits`); readers only read and check what only they can check
(missing columns, empty files, bytes that are not UTF-8, malformed rows, id columns of mixed types).

Formats: CSV/TSV, Parquet (a file, or a directory of shards as Spark or Dask write them, hive partitions included),
JSON Lines, RecBole atomic files (`.inter` + `.item`/`.user`, typed `name:type` headers), Amazon Reviews JSON Lines
(2018 and 2023 field names), and in-memory tables (`pyarrow.Table`, `pandas.DataFrame`, `datasets.Dataset`).
MovieLens as GroupLens ships it lives in `hf_interest.data.movielens`.

All reading is done by Arrow's multi-threaded C++ readers; only error paths look at bytes from Python.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ._arrow import (
    Provenance,
    drop_empty_strings,
    fill_empty_lists,
    first_line,
    format_values,
    is_valid_utf8,
    natural_key,
    open_stream,
    read_all_bytes,
    utf8_error_location,
)
from .columns import ColumnMapping, ItemColumns, resolve_columns, resolve_item_columns

FORMATS = ("csv", "tsv", "parquet", "jsonl", "recbole", "movielens", "amazon")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_ID_FIELDS = ("user", "item", "event_type", "session")


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


# ----------------------------------------------------------------------------------------------------------------
# Small shared pieces


def _strip_compression(name: str) -> str:
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
        raise FileNotFoundError(f"{p}: no such file or directory.")
    if p.is_file() and p.stat().st_size == 0:
        raise ValueError(f"{p}: the file is empty (0 bytes); it holds no events.")
    return p


def infer_format(path: str | os.PathLike) -> str:
    """Guess the format of a behaviour log from its name (or, for a directory, from the files in it).

    Args:
        path: File or directory.

    Returns:
        One of `FORMATS`.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory.")
    if p.is_dir():
        names = {child.name for child in p.iterdir()}
        if any(name.endswith(".inter") for name in names):
            return "recbole"
        if {"u.data", "ratings.dat"} & names or {"ratings.csv", "movies.csv"} <= names:
            return "movielens"
        if _parquet_files(p):
            return "parquet"
        raise FileNotFoundError(
            f"{p}: the directory holds no behaviour log I recognise (Parquet shards, a RecBole .inter file, or "
            f"MovieLens files). Found: {format_values(sorted(names), 20)}."
        )
    name = _strip_compression(p.name.lower())
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


def _rename_canonical(table: pa.Table, resolved: dict[str, str]) -> pa.Table:
    return pa.table({canonical: table.column(source) for canonical, source in resolved.items()})


def _decode_header(raw: bytes, path: Path, encoding: str) -> str:
    try:
        return raw.decode("utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding)
    except UnicodeDecodeError:
        where = utf8_error_location(path)
        raise ValueError(
            f"{path}: the file is not valid {encoding} text ({where}). Re-encode it as UTF-8 "
            f"(e.g. `iconv -f latin1 -t utf-8`) or pass encoding='latin-1'."
        ) from None


def _arrow_message(err: Exception) -> str:
    return str(err).split("\n")[0]


# ----------------------------------------------------------------------------------------------------------------
# Delimited text (CSV / TSV / RecBole atomic files)


def read_delimited(
    path: str | os.PathLike,
    *,
    delimiter: str,
    encoding: str = "utf-8",
    column_names: list[str] | None = None,
    skip_rows: int = 0,
    include: list[str] | None = None,
    column_types: dict[str, pa.DataType] | None = None,
    quoting: bool = True,
    label: str = "CSV",
) -> pa.Table:
    """Read delimited text with Arrow, turning every Arrow failure into a `ValueError` that says where and why.

    Args:
        path: The file (compressed files are decompressed by extension).
        delimiter: Field separator (one character).
        encoding: Text encoding of the file.
        column_names: Names to give the columns instead of reading them from a header line.
        skip_rows: Lines to skip before the data (1 to skip a header replaced by `column_names`).
        include: Columns to read (others are skipped, which saves time and memory).
        column_types: Arrow types to force (ids are forced to strings, keeping leading zeros).
        quoting: Whether `"` quotes fields; off for formats that never quote (RecBole, MovieLens).
        label: Name of the format, for messages.

    Returns:
        The table.
    """
    path = check_file(path)
    bad_rows: list = []

    def on_invalid(row):
        bad_rows.append(row)
        return "error"

    read_options = pacsv.ReadOptions(
        encoding=encoding, use_threads=True, column_names=column_names or [], skip_rows=skip_rows
    )
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter, quote_char='"' if quoting else False, invalid_row_handler=on_invalid
    )
    convert_options = pacsv.ConvertOptions(
        include_columns=include or [],
        column_types=column_types or {},
        strings_can_be_null=True,
        null_values=[""],
        true_values=["true", "True"],
        false_values=["false", "False"],
    )
    try:
        with open_stream(path) as stream:
            table = pacsv.read_csv(
                stream, read_options=read_options, parse_options=parse_options, convert_options=convert_options
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        message = _arrow_message(err)
        if "Empty CSV file" in message:
            raise ValueError(f"{path}: the file is empty; it holds no events.") from None
        if "UTF8" in message or "UTF-8" in message:
            where = utf8_error_location(path) if encoding.lower().replace("-", "") == "utf8" else None
            raise ValueError(
                f"{path}: the file is not valid UTF-8 text ({where or message}). Re-encode it as UTF-8 "
                f"(e.g. `iconv -f latin1 -t utf-8`) or pass encoding='latin-1'."
            ) from None
        if bad_rows:
            row = bad_rows[0]
            where = f"row {row.number}" if row.number is not None else _find_line(path, row.text, encoding)
            raise ValueError(
                f"{path}: malformed {label}: {where} has {row.actual_columns} fields where the header has "
                f"{row.expected_columns} (text: {row.text[:200]!r}). Fix or remove that row, or check the delimiter "
                f"({delimiter!r})."
            ) from None
        raise ValueError(f"{path}: could not read the file as {label}: {message}") from None
    _reject_duplicate_names(table.column_names, path)
    for name in table.column_names:
        typ = table.column(name).type
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            where = utf8_error_location(path)
            raise ValueError(
                f"{path}: column {name!r} is not valid UTF-8 text ({where}). Re-encode the file as UTF-8 "
                f"(e.g. `iconv -f latin1 -t utf-8`) or pass encoding='latin-1'."
            )
    return table


def _find_line(path: Path, text: str, encoding: str) -> str:
    """ "line N" of the first line equal to `text` (error path: Arrow's threaded reader does not number rows)."""
    try:
        lines = read_all_bytes(path).decode(encoding).splitlines()
        return f"line {lines.index(text) + 1}"
    except (ValueError, UnicodeDecodeError):
        return "a row"


def _header_names(path: Path, delimiter: str, encoding: str, quoting: bool = True) -> list[str]:
    text = _decode_header(first_line(path), path, encoding)
    reader = csv.reader([text], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    return [name.strip() for name in next(reader, [])]


def _reject_duplicate_names(names: list[str], path: Path) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"{path}: the header names {duplicates} more than once, so which column holds them is ambiguous. "
            "Rename the duplicate columns in the file."
        )


def _read_csv_log(path: Path, mapping: ColumnMapping, delimiter: str, encoding: str, label: str) -> RawLog:
    names = _header_names(path, delimiter, encoding)
    _reject_duplicate_names(names, path)
    resolved = resolve_columns(mapping, names, str(path))
    types = {resolved[k]: pa.string() for k in _ID_FIELDS if k in resolved}
    table = read_delimited(
        path, delimiter=delimiter, encoding=encoding, include=list(resolved.values()), column_types=types, label=label
    )
    return RawLog(
        table=_rename_canonical(table, resolved),
        source=str(path),
        provenance=Provenance(str(path), header_lines=1),
        columns=resolved,
        timestamp_unit=mapping.timestamp_unit,
        timestamp_format=mapping.timestamp_format,
    )


# ----------------------------------------------------------------------------------------------------------------
# Parquet: one file, or a directory of shards (Spark `part-*.parquet` + `_SUCCESS`, Dask `part.N.parquet`, hive
# partitions `key=value/`).


def _parquet_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if any(part.startswith(("_", ".")) for part in rel):
            continue  # _SUCCESS, _metadata, _common_metadata, .crc files, hidden folders
        if path.is_file() and path.name.lower().endswith(_PARQUET_SUFFIXES):
            files.append(path)
    return sorted(files, key=lambda f: natural_key(str(f.relative_to(root))))


def _read_parquet_log(path: Path, mapping: ColumnMapping) -> RawLog:
    if path.is_dir():
        files = _parquet_files(path)
        if not files:
            raise FileNotFoundError(
                f"{path}: the directory holds no Parquet files (*.parquet); files starting with '_' or '.' "
                f"(_SUCCESS, _metadata, .crc) are ignored."
            )
    else:
        files = [check_file(path)]
    schemas = []
    for f in files:
        if f.stat().st_size == 0:
            raise ValueError(f"{f}: the file is empty (0 bytes); it is not a Parquet file.")
        try:
            schemas.append(pq.read_schema(f))
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{f}: not a readable Parquet file ({_arrow_message(err)}).") from None
    partition_fields: pa.Schema | None = None
    if path.is_dir():
        probe = pads.dataset(
            [str(f) for f in files], format="parquet", partitioning="hive", partition_base_dir=str(path)
        )
        file_names = set().union(*(s.names for s in schemas))
        partition_fields = pa.schema([fld for fld in probe.schema if fld.name not in file_names])
    found = list(dict.fromkeys([n for s in schemas for n in s.names] + (partition_fields or pa.schema([])).names))
    resolved = resolve_columns(mapping, found, str(path))
    needed = list(resolved.values())
    # Shards must agree on the type of every column we read: a user id that is an integer in one shard and text in
    # another is ambiguous ("7" vs 7), so say which files disagree instead of letting Arrow fail mid-scan.
    fields_out = []
    for name in needed:
        if partition_fields is not None and name in partition_fields.names:
            fields_out.append(partition_fields.field(name))
            continue
        typed = [(f, s.field(name).type) for f, s in zip(files, schemas) if name in s.names]
        try:
            merged = pa.unify_schemas([pa.schema([(name, t)]) for _, t in typed], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            first_file, first_type = typed[0]
            other_file, other_type = next((f, t) for f, t in typed if t != first_type)
            raise ValueError(
                f"{path}: column {name!r} has mixed types across shards: {first_type} in {first_file} but "
                f"{other_type} in {other_file}. Rewrite the shards with one type for this column (ids as text)."
            ) from None
        if len(typed) < len(files):
            missing = next(f for f, s in zip(files, schemas) if name not in s.names)
            raise ValueError(f"{missing}: column {name!r} is missing from this shard (present in {typed[0][0]}).")
        fields_out.append(merged.field(name))
    try:
        if path.is_dir():
            dataset = pads.dataset(
                [str(f) for f in files],
                format="parquet",
                partitioning="hive",
                partition_base_dir=str(path),
                schema=pa.schema(fields_out),
            )
            table = dataset.to_table(columns=needed)
        else:
            table = pq.read_table(files[0], columns=needed)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as err:
        raise ValueError(f"{path}: could not read the Parquet data: {_arrow_message(err)}") from None
    counts = [(str(f), pq.ParquetFile(f).metadata.num_rows) for f in files] if len(files) > 1 else []
    return RawLog(
        table=_rename_canonical(table, resolved),
        source=str(path),
        provenance=Provenance(str(files[0]) if len(files) == 1 else str(path), files=counts),
        columns=resolved,
        timestamp_unit=mapping.timestamp_unit,
        timestamp_format=mapping.timestamp_format,
        notes=[f"read {len(files)} Parquet shards"] if len(files) > 1 else [],
    )


# ----------------------------------------------------------------------------------------------------------------
# JSON Lines (and Amazon Reviews, a JSON Lines dialect)


def _locate_json_error(path: Path, parse_options: pajson.ParseOptions) -> int | None:
    """1-based line of the first JSON line that makes the file unreadable, found by bisecting over prefixes."""
    lines = read_all_bytes(path).split(b"\n")

    def fails(k: int) -> bool:
        try:
            pajson.read_json(io.BytesIO(b"\n".join(lines[:k])), parse_options=parse_options)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return True
        return False

    lo, hi = 0, len(lines)
    if not fails(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return hi


def read_json_lines(path: str | os.PathLike, parse_options: pajson.ParseOptions | None = None) -> pa.Table:
    """Read a JSON Lines file with Arrow, with errors that name the line and field.

    Args:
        path: The file (compressed files are decompressed by extension).
        parse_options: Arrow JSON parse options (explicit schema etc.).

    Returns:
        The table.
    """
    path = check_file(path)
    head = first_line(path).lstrip()
    if head.startswith(b"["):
        raise ValueError(
            f"{path}: the file is a JSON array, not JSON Lines (one object per line). Convert it, e.g. "
            f"`jq -c '.[]' in.json > out.jsonl`."
        )
    parse_options = parse_options or pajson.ParseOptions(newlines_in_values=False)
    try:
        with open_stream(path) as stream:
            table = pajson.read_json(stream, parse_options=parse_options)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        message = _arrow_message(err)
        if "Empty JSON file" in message:
            raise ValueError(f"{path}: the file is empty; it holds no events.") from None
        line = _locate_json_error(path, parse_options)
        where = f"line {line}" if line is not None else "a line"
        changed = re.search(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)", message)
        if changed:
            name, before, after = changed.groups()
            raise ValueError(
                f"{path}: field {name!r} has mixed types: {before} in earlier lines, {after} at {where}. An id must "
                f"be written the same way on every line (all numbers or all strings)."
            ) from None
        raise ValueError(f"{path}: could not parse JSON Lines at {where}: {message}") from None
    if table.num_rows == 0:
        raise ValueError(f"{path}: the file holds no JSON objects; it has no events.")
    for name in table.column_names:
        column = table.column(name)
        if (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) and not is_valid_utf8(column):
            where = utf8_error_location(path)
            raise ValueError(
                f"{path}: field {name!r} holds bytes that are not valid UTF-8 ({where}). JSON must be UTF-8; "
                f"re-encode the file (e.g. `iconv -f latin1 -t utf-8`)."
            )
    return table


def _read_jsonl_log(path: Path, mapping: ColumnMapping) -> RawLog:
    table = read_json_lines(path)
    resolved = resolve_columns(mapping, table.column_names, str(path))
    return RawLog(
        table=_rename_canonical(table, resolved),
        source=str(path),
        provenance=Provenance(str(path), header_lines=0),
        columns=resolved,
        timestamp_unit=mapping.timestamp_unit,
        timestamp_format=mapping.timestamp_format,
    )


# Amazon Reviews: 2018 (McAuley lab, "reviewerID"/"asin"/"overall"/"unixReviewTime" in seconds) and 2023
# ("user_id"/"parent_asin"/"rating"/"timestamp" in milliseconds). Only the fields used are parsed (explicit schema,
# other fields ignored), so the free-form nested fields ("style", "images") cannot break the read.
AMAZON_2018 = {"user": "reviewerID", "item": "asin", "timestamp": "unixReviewTime", "rating": "overall"}
AMAZON_2023 = {"user": "user_id", "item": "parent_asin", "timestamp": "timestamp", "rating": "rating"}
_AMAZON_TYPES = {"user": pa.string(), "item": pa.string(), "timestamp": pa.int64(), "rating": pa.float64()}


def detect_amazon(path: Path) -> str | None:
    """Which Amazon Reviews release a JSON Lines file looks like ("2018", "2023"), from its first line, or `None`."""
    try:
        keys = set(json.loads(first_line(path).decode("utf-8")))
    except (ValueError, UnicodeDecodeError, TypeError):
        return None
    if {"reviewerID", "asin"} <= keys:
        return "2018"
    if {"user_id", "rating", "timestamp"} <= keys and ({"parent_asin", "asin"} & keys):
        return "2023"
    return None


def _read_amazon_log(path: Path, mapping: ColumnMapping) -> RawLog:
    path = check_file(path)
    version = detect_amazon(path)
    if version is None:
        raise ValueError(
            f"{path}: not an Amazon Reviews file: the first line lacks the 2018 fields (reviewerID, asin, "
            f"overall, unixReviewTime) and the 2023 fields (user_id, parent_asin, rating, timestamp)."
        )
    defaults = dict(AMAZON_2018 if version == "2018" else AMAZON_2023)
    if version == "2023" and "parent_asin" not in json.loads(first_line(path).decode("utf-8")):
        defaults["item"] = "asin"
    resolved = {}
    for name, default in defaults.items():
        requested = getattr(mapping, name)
        if requested is False:
            continue
        resolved[name] = requested if isinstance(requested, str) else default
    for name in ("event_type", "session"):
        if isinstance(getattr(mapping, name), str):
            resolved[name] = getattr(mapping, name)
    schema = pa.schema([(src, _AMAZON_TYPES.get(name, pa.string())) for name, src in resolved.items()])
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False)
    table = read_json_lines(path, options)
    unit = mapping.timestamp_unit if mapping.timestamp_unit != "s" else ("ms" if version == "2023" else "s")
    return RawLog(
        table=_rename_canonical(table, resolved),
        source=str(path),
        provenance=Provenance(str(path), header_lines=0),
        columns=resolved,
        timestamp_unit=unit,
        notes=[f"Amazon Reviews {version} field names; timestamps in {unit}"],
    )


AMAZON_META_2018 = {
    "asin": pa.string(),
    "title": pa.string(),
    "category": pa.list_(pa.string()),
    "description": pa.list_(pa.string()),
    "brand": pa.string(),
    "main_cat": pa.string(),
}
AMAZON_META_2023 = {
    "parent_asin": pa.string(),
    "title": pa.string(),
    "main_category": pa.string(),
    "categories": pa.list_(pa.string()),
    "description": pa.list_(pa.string()),
    "features": pa.list_(pa.string()),
    "store": pa.string(),
}


def read_amazon_items(path: str | os.PathLike) -> pa.Table:
    """Read Amazon Reviews item metadata (2018 `meta_*.json(.gz)` or 2023 `meta_*.jsonl(.gz)`).

    Args:
        path: The metadata file.

    Returns:
        The canonical item table: `item_id`, `title`, `categories`, `description` (description and, for 2023,
        features joined with spaces), and the brand/store/main category as attributes.
    """
    path = check_file(path)
    keys = set(json.loads(first_line(path).decode("utf-8")))
    spec = AMAZON_META_2023 if "parent_asin" in keys else AMAZON_META_2018
    options = pajson.ParseOptions(
        explicit_schema=pa.schema(list(spec.items())), unexpected_field_behavior="ignore", newlines_in_values=False
    )
    table = read_json_lines(path, options)
    item = "parent_asin" if "parent_asin" in spec else "asin"
    categories = "categories" if "categories" in spec else "category"
    description = pc.fill_null(pc.binary_join(table.column("description"), " "), "")
    if "features" in spec:
        features = pc.fill_null(pc.binary_join(table.column("features"), " "), "")
        description = pc.utf8_trim_whitespace(pc.binary_join_element_wise(description, features, " "))
    description = pc.if_else(pc.equal(description, ""), None, description)
    attributes = [n for n in table.column_names if n not in (item, "title", categories, "description", "features")]
    return pa.table(
        {
            "item_id": table.column(item),
            "title": table.column("title"),
            "categories": fill_empty_lists(table.column(categories)),
            "description": description,
            **{name: table.column(name) for name in attributes},
        }
    )


# ----------------------------------------------------------------------------------------------------------------
# RecBole atomic files: tab-separated, first line `name:type` with type in token, token_seq, float, float_seq.
# `.inter` holds interactions, `.item`/`.user` side information (https://recbole.io/docs/user_guide/data/atomic_files.html).

_RECBOLE_TYPES = {"token": pa.string(), "float": pa.float64(), "token_seq": pa.string(), "float_seq": pa.string()}


def recbole_header(path: Path) -> tuple[list[str], list[str]]:
    """Names and RecBole types of the columns of an atomic file, from its `name:type` header.

    Args:
        path: A `.inter`, `.item` or `.user` file.

    Returns:
        `(names, types)`.
    """
    text = _decode_header(first_line(check_file(path)), path, "utf-8")
    names, types = [], []
    for position, entry in enumerate(text.split("\t"), start=1):
        name, sep, typ = entry.strip().rpartition(":")
        if not sep or typ not in _RECBOLE_TYPES:
            raise ValueError(
                f"{path}: header field {position} is {entry!r}; a RecBole atomic file header is tab-separated "
                f"`name:type` with type in {list(_RECBOLE_TYPES)}."
            )
        names.append(name)
        types.append(typ)
    return names, types


def read_recbole_table(path: Path, columns: list[str] | None = None) -> tuple[pa.Table, dict[str, str]]:
    """Read a RecBole atomic file with its declared types (`token_seq`/`float_seq` become lists).

    Args:
        path: The atomic file.
        columns: Columns to read (all when `None`).

    Returns:
        `(table, {column: recbole type})`.
    """
    names, types = recbole_header(path)
    kinds = dict(zip(names, types))
    include = columns or names
    table = read_delimited(
        path,
        delimiter="\t",
        column_names=names,
        skip_rows=1,
        include=include,
        column_types={n: _RECBOLE_TYPES[kinds[n]] for n in include},
        quoting=False,
        label="RecBole atomic file",
    )
    if table.num_rows == 0:
        raise ValueError(f"{path}: the file has a header but no rows.")
    return table, kinds


def _split_tokens(column: pa.ChunkedArray, separator: str = " ") -> pa.ChunkedArray:
    parts = pc.split_pattern(column, separator)
    flat = pc.list_flatten(parts)
    return drop_empty_strings(parts) if pc.any(pc.equal(flat, "")).as_py() else parts


def _read_recbole_log(path: Path, mapping: ColumnMapping) -> RawLog:
    if path.is_dir():
        inter = sorted(path.glob("*.inter"))
        if not inter:
            raise FileNotFoundError(f"{path}: no RecBole .inter file in this directory.")
        path = inter[0]
    names, types = recbole_header(check_file(path))
    resolved = resolve_columns(mapping, names, str(path))
    table, _ = read_recbole_table(path, list(resolved.values()))
    log = RawLog(
        table=_rename_canonical(table, resolved),
        source=str(path),
        provenance=Provenance(str(path), header_lines=1),
        columns=resolved,
        timestamp_unit=mapping.timestamp_unit,
        timestamp_format=mapping.timestamp_format,
    )
    item_file, user_file = path.with_suffix(".item"), path.with_suffix(".user")
    if item_file.exists():
        log.items = read_recbole_items(item_file, resolved["item"])
        log.notes.append(f"item side information from {item_file.name}")
    if user_file.exists():
        log.users = read_recbole_users(user_file, resolved["user"])
        log.notes.append(f"user attributes from {user_file.name}")
    return log


def read_recbole_items(path: str | os.PathLike, item_field: str = "item_id") -> pa.Table:
    """Read a RecBole `.item` file into the canonical item table.

    The title is the first of `title`/`movie_title`/`name` present (a `token_seq` kept as its text); categories
    come from `categories`/`genre`/`class` (split on spaces, RecBole's sequence separator); other `token_seq`
    columns become lists and the rest stay attributes.

    Args:
        path: The `.item` file.
        item_field: Name of the item id field (as in the `.inter` file).

    Returns:
        The canonical item table.
    """
    path = Path(path)
    table, kinds = read_recbole_table(path)
    mapping = ItemColumns(item=item_field if item_field in table.column_names else None, category_separator=" ")
    resolved = resolve_item_columns(mapping, table.column_names, str(path))
    for name, kind in kinds.items():
        if name in resolved.values():
            continue
        if kind == "token_seq":
            table = table.set_column(table.schema.get_field_index(name), name, _split_tokens(table.column(name)))
        elif kind == "float_seq":
            parts = _split_tokens(table.column(name))
            table = table.set_column(table.schema.get_field_index(name), name, parts.cast(pa.list_(pa.float64())))
    return canonical_items(table, resolved, " ", str(path))


def read_recbole_users(path: str | os.PathLike, user_field: str = "user_id") -> pa.Table:
    """Read a RecBole `.user` file: `user_id` (string) plus the other fields as attributes.

    Args:
        path: The `.user` file.
        user_field: Name of the user id field.

    Returns:
        The user table.
    """
    path = Path(path)
    table, _ = read_recbole_table(path)
    if user_field not in table.column_names:
        raise ValueError(f"{path}: no {user_field!r} field; fields found: {table.column_names}.")
    return canonical_users(table, user_field, str(path))


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
    name = _strip_compression(path.name.lower())
    if name.endswith((".item", ".user")):
        table, _ = read_recbole_table(path)
        return table, str(path)
    fmt = infer_format(path)
    if fmt == "parquet":
        return _read_parquet_any(path), str(path)
    if fmt == "jsonl":
        return read_json_lines(path), str(path)
    if fmt in ("csv", "tsv"):
        delimiter = "," if fmt == "csv" else "\t"
        names = _header_names(path, delimiter, "utf-8")
        wanted = {c.lower() for c in id_columns}
        types = {n: pa.string() for n in names if n.lower() in wanted}
        return read_delimited(path, delimiter=delimiter, include=names, column_types=types), str(path)
    raise ValueError(f"{path}: cannot read a {kind} table in format {fmt!r}; use CSV, TSV, Parquet or JSON Lines.")


def _read_parquet_any(path: Path) -> pa.Table:
    files = _parquet_files(path) if path.is_dir() else [path]
    try:
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
        raise ValueError(f"{path}: could not read the Parquet data: {_arrow_message(err)}") from None


# ----------------------------------------------------------------------------------------------------------------
# In-memory tables


def table_from_memory(source, label: str = "table") -> pa.Table:
    """Arrow table from a `pyarrow.Table`, `pandas.DataFrame`, `datasets.Dataset` or `polars.DataFrame`.

    Args:
        source: The in-memory table.
        label: Name for messages.

    Returns:
        A `pyarrow.Table` (zero-copy where the source allows).
    """
    if isinstance(source, pa.Table):
        return source
    if hasattr(source, "data") and hasattr(source.data, "table") and hasattr(source, "features"):  # datasets
        return source.data.table
    if hasattr(source, "to_arrow") and not hasattr(source, "iloc"):  # polars
        return source.to_arrow()
    if hasattr(source, "iloc"):  # pandas
        try:
            return pa.Table.from_pandas(source, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            bad = _mixed_pandas_column(source)
            if bad is not None:
                raise ValueError(f"DataFrame {label}: {bad}") from None
            raise ValueError(f"DataFrame {label}: cannot convert to Arrow: {_arrow_message(err)}") from None
    raise ValueError(
        f"Cannot read {label} from an object of type {type(source).__name__}; pass a path, a pyarrow.Table, a "
        f"pandas.DataFrame or a datasets.Dataset."
    )


def _mixed_pandas_column(frame) -> str | None:
    # Error path only: find an object column holding values of several Python types (e.g. 7 and "7").
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        kinds = column.dropna().map(lambda v: type(v).__name__)
        if kinds.nunique() > 1:
            first_kind = kinds.iloc[0]
            other = kinds[kinds != first_kind]
            row = int(np.flatnonzero((column.notna()).to_numpy())[0])
            pos = int(frame.index.get_loc(other.index[0]))
            return (
                f"column {name!r} has mixed types: {first_kind} (row {row + 1}: {column.iloc[row]!r}) and "
                f"{other.iloc[0]} (row {pos + 1}: {column.iloc[pos]!r}). Make the column one type "
                f"(e.g. df[{name!r}] = df[{name!r}].astype(str))."
            )
    return None


def _read_memory_log(source, mapping: ColumnMapping) -> RawLog:
    table = table_from_memory(source, "events")
    resolved = resolve_columns(mapping, table.column_names, "table")
    for name in ("user", "item"):
        column = table.column(resolved[name])
        if column.type == pa.null():
            raise ValueError(f"table: the {name} column {resolved[name]!r} holds only missing values.")
    return RawLog(
        table=_rename_canonical(table, resolved),
        source=f"<{type(source).__name__}>",
        provenance=Provenance("table"),
        columns=resolved,
        timestamp_unit=mapping.timestamp_unit,
        timestamp_format=mapping.timestamp_format,
    )
