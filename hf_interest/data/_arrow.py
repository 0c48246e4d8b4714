"""Small vectorised helpers shared by the data modules (internal).

Everything here works on whole columns (numpy arrays or Arrow arrays); nothing loops over events in Python. The
few Python loops left are over files, batches or bisection steps, never over rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Largest number of list values put in one Arrow chunk. Offsets of `list<string>` are int32, so a chunk must hold
# fewer than 2**31 values *and* fewer than 2**31 bytes of string data; see `chunk_rows`.
_MAX_CHUNK_VALUES = 1 << 27


@dataclass
class Provenance:
    """Where the rows of a raw table came from, to turn a row index into a place a user can open.

    Args:
        label: Name of the source (a file path, or "DataFrame").
        files: For a table concatenated from several files, `(path, number_of_rows)` in reading order.
        header_lines: Lines before the first data row in a text file (1 for a CSV header), or `None` when the
            source has no lines (Parquet, in-memory tables).
    """

    label: str
    files: list[tuple[str, int]] = field(default_factory=list)
    header_lines: int | None = None

    def locate(self, row: int) -> str:
        """Describe the 0-based row `row` of the raw table, e.g. "ratings.csv, row 17 (line 18)".

        Args:
            row: 0-based index into the table as read.

        Returns:
            A human readable location: file, 1-based data row and, for text files, the line number.
        """
        label, local = self.label, int(row)
        if self.files:
            ends = np.cumsum([n for _, n in self.files])
            k = int(np.searchsorted(ends, local, side="right"))
            k = min(k, len(self.files) - 1)
            label = self.files[k][0]
            local -= int(ends[k] - self.files[k][1])
        where = f"{label}, row {local + 1}"
        if self.header_lines is not None:
            where += f" (line {local + 1 + self.header_lines})"
        return where


def natural_key(text: str) -> list:
    """Sort key that orders "part.2" before "part.10" (Dask names its shards without zero padding)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def open_stream(path: str | os.PathLike) -> pa.NativeFile:
    """Open a file for reading, decompressing .gz/.bz2/.zst/.lz4 transparently (from the extension)."""
    return pa.input_stream(str(path), compression="detect")


def read_all_bytes(path: str | os.PathLike) -> bytes:
    """Whole (decompressed) content of a file; used on error paths only, to locate a bad byte or line."""
    with open_stream(path) as stream:
        return stream.read()


def first_line(path: str | os.PathLike, max_bytes: int = 1 << 20) -> bytes:
    """First line of a (possibly compressed) text file, without its line ending; b"" for an empty file."""
    with open_stream(path) as stream:
        head = stream.read(max_bytes)
    line = head.split(b"\n", 1)[0]
    return line.rstrip(b"\r")


def utf8_error_location(path: str | os.PathLike) -> str | None:
    """Find the first byte of `path` that is not valid UTF-8.

    Args:
        path: The file to check (decompressed if compressed).

    Returns:
        "line L, byte offset O (bytes ...)" for the first invalid sequence, or `None` when the file is valid UTF-8.
    """
    data = read_all_bytes(path)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return f"line {line}, byte offset {err.start} (bytes {data[err.start : err.start + 4]!r})"
    return None


def is_valid_utf8(array: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every string in `array` is valid UTF-8 (Arrow's JSON reader does not check this itself)."""
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def first_failing_index(array: pa.Array, convert: Callable[[pa.Array], object]) -> int | None:
    """Index of the first element of `array` for which `convert` raises, found by bisection.

    Used on error paths to point at the row that broke a whole-column conversion: about 2N elements are converted
    in total, all in Arrow, instead of one Python call per row.

    Args:
        array: The column that failed to convert.
        convert: A whole-array conversion that raises `pa.ArrowInvalid` (or `ValueError`) on bad input.

    Returns:
        The 0-based index of the first bad element, or `None` if the whole array converts.
    """

    def fails(lo: int, hi: int) -> bool:
        try:
            convert(array.slice(lo, hi - lo))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            return True
        return False

    lo, hi = 0, len(array)
    if hi == 0 or not fails(lo, hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(lo, mid):
            hi = mid
        else:
            lo = mid
    return lo


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate the integer ranges `[starts[i], starts[i] + lengths[i])` without a Python loop.

    Args:
        starts: First index of each range.
        lengths: Length of each range (non-negative).

    Returns:
        An int64 array of `lengths.sum()` indices.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.asarray(starts, dtype=np.int64) - (ends - lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(shift, lengths)


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """List offsets (int32, length n+1) from list lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets.astype(np.int32)


def chunk_rows(lengths: np.ndarray, max_value_bytes: int = 1) -> list[tuple[int, int]]:
    """Split rows into consecutive chunks whose list values fit one Arrow chunk with int32 offsets.

    Args:
        lengths: Number of list values of each row.
        max_value_bytes: Upper bound on the bytes of one value (the longest string of a dictionary), so that
            string data also stays under 2**31 bytes per chunk.

    Returns:
        `(first_row, end_row)` pairs covering all rows; a single pair in all but huge datasets.
    """
    n = len(lengths)
    limit = min(_MAX_CHUNK_VALUES, (2**31 - 1) // max(1, int(max_value_bytes)))
    if n == 0:
        return [(0, 0)]
    total = int(np.sum(lengths))
    if total <= limit:
        return [(0, n)]
    cum = np.cumsum(lengths)
    bounds, start = [], 0
    while start < n:
        base = cum[start - 1] if start else 0
        end = int(np.searchsorted(cum, base + limit, side="right"))
        end = max(end, start + 1)  # one row longer than the limit still gets its own chunk
        bounds.append((start, end))
        start = end
    return bounds


def max_string_bytes(dictionary: pa.Array) -> int:
    """Length in bytes of the longest string of a (small) dictionary array."""
    if len(dictionary) == 0:
        return 1
    return int(pc.max(pc.binary_length(dictionary)).as_py() or 1)


def list_column(
    lengths: np.ndarray, flat: np.ndarray, dictionary: pa.Array | None = None, value_type: pa.DataType | None = None
) -> pa.ChunkedArray:
    """Build a `list<...>` column whose row i holds the next `lengths[i]` entries of `flat`.

    Args:
        lengths: Number of elements of each row.
        flat: The elements of all rows, row after row (`lengths.sum()` of them): values, or codes into
            `dictionary`.
        dictionary: Optional Arrow array the codes index into (e.g. id strings).
        value_type: Arrow type of the elements when built from values.

    Returns:
        A chunked `list<...>` column (one chunk unless the data exceeds int32 offsets).
    """
    chunks = []
    max_bytes = max_string_bytes(dictionary) if dictionary is not None else 8
    cum = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cum[1:])
    for lo, hi in chunk_rows(lengths, max_bytes):
        picked = flat[cum[lo] : cum[hi]]
        values = dictionary.take(pa.array(picked)) if dictionary is not None else pa.array(picked, type=value_type)
        offsets = pa.array(offsets_from_lengths(lengths[lo:hi]))
        chunks.append(pa.ListArray.from_arrays(offsets, values))
    return pa.chunked_array(chunks, type=pa.list_(chunks[0].type.value_type))


def selection(starts: np.ndarray, lengths: np.ndarray, total: int) -> np.ndarray:
    """Select the ranges `[starts[i], starts[i] + lengths[i])` of `total` events.

    Ranges that are increasing and disjoint (one history per user) give a boolean mask, built with one
    `numpy.repeat` and applied by compressing, which is much cheaper than gathering; overlapping ranges give
    gather indices.

    Args:
        starts: First index of each range.
        lengths: Length of each range.
        total: Number of events.

    Returns:
        A boolean mask of length `total`, or `int64` indices.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(starts) == 0:
        return np.zeros(total, dtype=bool)
    ends = starts + lengths
    if not (starts[1:] >= ends[:-1]).all():
        return concat_ranges(starts, lengths)
    segments = np.empty(2 * len(starts) + 1, dtype=np.int64)
    segments[0] = starts[0]
    segments[2:-1:2] = starts[1:] - ends[:-1]
    segments[-1] = total - ends[-1]
    segments[1::2] = lengths
    pattern = np.zeros(len(segments), dtype=bool)
    pattern[1::2] = True
    return np.repeat(pattern, segments)


def as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous Arrow array from a possibly chunked column."""
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return column.chunk(0)
        if column.num_chunks == 0:
            return pa.array([], type=column.type)
        return column.combine_chunks()
    return column


def format_values(values: Sequence, limit: int = 10) -> str:
    """Short, readable list of values for error messages."""
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def fill_empty_lists(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """`list<string>` column with empty lists instead of null lists (elements cast to string).

    Args:
        column: A list column.

    Returns:
        The column, without null lists.
    """
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    chunks = []
    for chunk in column.chunks:
        lengths = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy()
        offsets = np.zeros(len(chunk) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = pc.list_flatten(chunk)
        values = values if values.type == pa.string() else pc.cast(values, pa.string())
        chunks.append(pa.ListArray.from_arrays(pa.array(offsets), values))
    return pa.chunked_array(chunks, type=pa.list_(pa.string()))


def drop_empty_strings(lists: pa.ChunkedArray) -> pa.ChunkedArray:
    """Remove empty strings from the lists of a `list<string>` column (e.g. left by splitting "a||b").

    Args:
        lists: The column.

    Returns:
        The column with the same rows and nulls, without "" elements.
    """
    chunks = []
    for chunk in lists.chunks:
        flat = chunk.flatten()
        keep = pc.not_equal(flat, "")
        parent = pc.list_parent_indices(chunk)
        lengths = np.bincount(parent.to_numpy()[keep.to_numpy(zero_copy_only=False)], minlength=len(chunk))
        offsets = np.zeros(len(chunk) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        chunks.append(pa.ListArray.from_arrays(pa.array(offsets), flat.filter(keep), mask=chunk.is_null()))
    return pa.chunked_array(chunks, type=lists.type)
