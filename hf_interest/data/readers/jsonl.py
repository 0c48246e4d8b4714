"""JSON Lines logs (Arrow's JSON reader; the line of a broken record is found by bisection)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson

from .._arrow import (
    Provenance,
    first_line,
    is_valid_utf8,
    open_stream,
    read_all_bytes,
    utf8_error_location,
)
from ..columns import ColumnMapping, resolve_columns
from .base import RawLog, arrow_message, check_file

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
        message = arrow_message(err)
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


def read_jsonl_log(path: Path, mapping: ColumnMapping) -> RawLog:
    table = read_json_lines(path)
    resolved = resolve_columns(mapping, table.column_names, str(path))
    return RawLog.from_columns(table, resolved, mapping, str(path), Provenance(str(path), header_lines=0))
