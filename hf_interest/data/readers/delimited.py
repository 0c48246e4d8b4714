"""Delimited text: CSV and TSV logs (Arrow's CSV reader), with error messages that name the file, line and column."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from .._arrow import (
    Provenance,
    first_line,
    open_stream,
    read_all_bytes,
    utf8_error_location,
)
from ..columns import ColumnMapping, resolve_columns
from .base import ID_FIELDS, RawLog, arrow_message, check_file, decode_header

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
        message = arrow_message(err)
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


def header_names(path: Path, delimiter: str, encoding: str, quoting: bool = True) -> list[str]:
    text = decode_header(first_line(path), path, encoding)
    reader = csv.reader([text], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    return [name.strip() for name in next(reader, [])]


def _reject_duplicate_names(names: list[str], path: Path) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"{path}: the header names {duplicates} more than once, so which column holds them is ambiguous. "
            "Rename the duplicate columns in the file."
        )


def guess_delimiter(path: Path, default: str, encoding: str = "utf-8") -> tuple[str, str | None]:
    """
    The field separator of a CSV/TSV file: `default` when its header holds it, else the separator the header does
    hold (`;`, tab, `|` or `,`, the most frequent). Returns `(delimiter, note)`, the note saying so when guessed.
    """
    header = decode_header(first_line(path), path, encoding)
    if default in header:
        return default, None
    counts = {c: header.count(c) for c in (",", "\t", ";", "|") if c != default}
    guess = max(counts, key=counts.get)
    if not counts[guess]:
        return default, None
    return guess, f"read as {guess!r}-separated: the header has no {default!r} but {counts[guess]} {guess!r}"


def read_csv_log(path: Path, mapping: ColumnMapping, delimiter: str, encoding: str, label: str) -> RawLog:
    names = header_names(path, delimiter, encoding)
    _reject_duplicate_names(names, path)
    resolved = resolve_columns(mapping, names, str(path))
    types = {resolved[k]: pa.string() for k in ID_FIELDS if k in resolved}
    table = read_delimited(
        path, delimiter=delimiter, encoding=encoding, include=list(resolved.values()), column_types=types, label=label
    )
    return RawLog.from_columns(table, resolved, mapping, str(path), Provenance(str(path), header_lines=1))
