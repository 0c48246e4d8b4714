"""RecBole atomic files: `.inter` logs and `.item` / `.user` side tables with typed `name:type` headers."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .._arrow import (
    Provenance,
    drop_empty_strings,
    first_line,
)
from ..columns import ColumnMapping, ItemColumns, resolve_columns, resolve_item_columns
from .base import RawLog, canonical_items, canonical_users, check_file, decode_header
from .delimited import read_delimited

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
    text = decode_header(first_line(check_file(path)), path, "utf-8")
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


def read_recbole_log(path: Path, mapping: ColumnMapping) -> RawLog:
    if path.is_dir():
        inter = sorted(path.glob("*.inter"))
        if not inter:
            raise FileNotFoundError(f"{path}: no RecBole .inter file in this directory.")
        path = inter[0]
    names, types = recbole_header(check_file(path))
    resolved = resolve_columns(mapping, names, str(path))
    table, _ = read_recbole_table(path, list(resolved.values()))
    log = RawLog.from_columns(table, resolved, mapping, str(path), Provenance(str(path), header_lines=1))
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
