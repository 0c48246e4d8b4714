"""Cleaning and ordering: a raw log -> integer-coded events sorted by (user, time, file order), with a report.

Steps, in this order, each optional and counted in the `DataReport`:

1. drop rows with a missing user or item (an empty string counts as missing);
2. deduplicate identical events (same user, item, timestamp and every other mapped field), keeping the first;
3. filter by rating (keep `rating >= min_rating`) and by event type (keep the listed types);
4. iterative k-core: drop users with fewer than `min_user_events` events and items with fewer than
   `min_item_events`, repeatedly, until both hold (each removal can break the other condition);
5. cap each user's sequence at `max_events_per_user`, keeping the newest events.

Ordering is per user by (timestamp, original row order) with a stable sort: many logs have equal timestamps
(MovieLens-100K: about half of consecutive events of a user), and ties keep file order. The sort is done once, on
integer codes packed into 64-bit keys (`numpy.sort`, which is vectorised), never with a Python loop over events.

Timestamps become unix seconds (`int64`). Integers are read in `ColumnMapping.timestamp_unit`; floats keep
sub-second order; Arrow timestamps and dates are converted; text is parsed as ISO 8601 (with or without a zone) or
with `ColumnMapping.timestamp_format`. Missing, unparseable, negative and absurd (after 2100-01-01) timestamps are
errors that name the row and the value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import as_array, first_failing_index, format_values
from .columns import TIMESTAMP_UNITS
from .readers import RawLog, ids_to_strings

# 2100-01-01T00:00:00Z. Later timestamps are almost always milliseconds read as seconds.
MAX_TIMESTAMP_SECONDS = 4_102_444_800

_NUMERIC_TEXT = r"^\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*$"
_ISO_TEXT = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)?$"
_ZONED_TEXT = r"[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)$"


@dataclass
class CleaningConfig:
    """Which cleaning steps to run. Every step is reported with counts, also when it is off.

    Args:
        drop_missing: Drop rows whose user or item is missing or empty. When `False`, such a row is an error.
        deduplicate: Drop events identical to an earlier one (same user, item, timestamp and every other mapped
            field). Skipped (and reported so) when the log has no timestamps: repeats are then indistinguishable
            from re-consumption.
        min_rating: Keep only events with `rating >= min_rating` (events without a rating are dropped).
        event_types: Keep only events whose event type is in this list.
        min_user_events: k-core threshold for users (0 or 1: off).
        min_item_events: k-core threshold for items (0 or 1: off).
        max_events_per_user: Keep only each user's newest events, at most this many (applied after k-core, so it
            can leave an item below `min_item_events`; the report shows the counts).
    """

    drop_missing: bool = True
    deduplicate: bool = True
    min_rating: float | None = None
    event_types: Sequence[str] | None = None
    min_user_events: int = 0
    min_item_events: int = 0
    max_events_per_user: int | None = None

    def __post_init__(self):
        for name in ("min_user_events", "min_item_events"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"CleaningConfig.{name} must be a non-negative integer, got {value!r}.")
        if self.max_events_per_user is not None and (
            not isinstance(self.max_events_per_user, (int, np.integer)) or self.max_events_per_user < 1
        ):
            raise ValueError(
                f"CleaningConfig.max_events_per_user must be a positive integer or None, got "
                f"{self.max_events_per_user!r}."
            )
        if isinstance(self.event_types, str):
            raise ValueError(
                f"CleaningConfig.event_types must be a list of event types, got the string {self.event_types!r}; "
                f"write event_types=[{self.event_types!r}]."
            )
        if self.event_types is not None and len(self.event_types) == 0:
            raise ValueError("CleaningConfig.event_types is empty, which would drop every event; use None for all.")


@dataclass
class CleaningStep:
    """One line of the cleaning report.

    Args:
        name: The step.
        enabled: Whether it ran.
        events_before: Events entering the step.
        events_after: Events leaving it.
        users: Distinct users after the step.
        items: Distinct items after the step.
        detail: What exactly the step did (thresholds, iterations, ...).
    """

    name: str
    enabled: bool
    events_before: int
    events_after: int
    users: int
    items: int
    detail: str = ""

    @property
    def removed(self) -> int:
        """Events removed by this step."""
        return self.events_before - self.events_after


@dataclass
class DataReport:
    """Counts of every loading step, readable with `print(report)`.

    Args:
        source: What was read.
        columns: `{canonical field: source column}` used.
        steps: The cleaning steps, the first being the raw read.
        split: Description of the split protocol.
        splits: `{split name: {"rows": ..., "events": ..., "targets": ...}}`.
        notes: Everything else a user should know (detected format, skipped rows of the split, side tables...).
    """

    source: str
    columns: dict[str, str]
    steps: list[CleaningStep] = field(default_factory=list)
    split: str = ""
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def raw_events(self) -> int:
        """Events read, before any cleaning (rows with a missing id included)."""
        return self.steps[0].events_after

    @property
    def raw_users(self) -> int:
        """Distinct users read, before any filtering (among rows that have both a user and an item)."""
        return self.steps[0].users

    @property
    def raw_items(self) -> int:
        """Distinct items read, before any filtering (among rows that have both a user and an item)."""
        return self.steps[0].items

    @property
    def events(self) -> int:
        """Events left after cleaning."""
        return self.steps[-1].events_after

    @property
    def users(self) -> int:
        """Users left after cleaning."""
        return self.steps[-1].users

    @property
    def items(self) -> int:
        """Items left after cleaning."""
        return self.steps[-1].items

    def step(self, name: str) -> CleaningStep:
        """The step called `name` (see `str(report)` for the names)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"No step {name!r}; steps are {[s.name for s in self.steps]}.")

    def to_dict(self) -> dict:
        """The report as plain Python data (for JSON / logging)."""
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"Behaviour data from {self.source}"]
        lines.append("columns: " + ", ".join(f"{k} <- {v!r}" for k, v in self.columns.items()))
        lines.append(f"{'step':<24}{'events':>12}{'removed':>10}{'users':>10}{'items':>10}  detail")
        for s in self.steps:
            if not s.enabled:
                lines.append(f"{s.name:<24}{'off':>12}{'':>10}{'':>10}{'':>10}  {s.detail}".rstrip())
                continue
            removed = "-" if s.name == "read" else f"{s.removed:,}"
            lines.append(
                f"{s.name:<24}{s.events_after:>12,}{removed:>10}{s.users:>10,}{s.items:>10,}  {s.detail}".rstrip()
            )
        if self.split:
            lines.append(f"split: {self.split}")
            for name, counts in self.splits.items():
                extra = "".join(f"  {k} {v:,}" for k, v in counts.items() if k not in ("rows", "events"))
                lines.append(f"  {name:<12}{counts['rows']:>10,} rows{counts['events']:>12,} events{extra}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


@dataclass
class Events:
    """Cleaned events as integer codes, sorted by (user, time, file order). Internal to the data layer.

    Per-event arrays are stored compactly (times as offsets from `time_base`, `uint32` when they fit) because
    every byte here is held while the splits are built; use `order_key()` and `seconds()` to read times.

    Args:
        counts: Number of events of each user code (users own consecutive runs of events, in code order).
        items: Item code of each event (dense in `[0, len(item_ids))`).
        time_offset: Event time minus `time_base`, in `1 / key_per_second` seconds, or `None` without time.
        time_base: Time of the earliest event.
        key_per_second: Units of the time key per second.
        ratings: Rating of each event (`float32`, NaN when missing), or `None`.
        event_codes: Event-type code of each event, or `None`.
        session_codes: Session code of each event, or `None`.
        user_ids: Raw user id of each user code.
        item_ids: Raw item id of each item code.
        event_names: Event type of each event code.
        session_names: Session id of each session code.
    """

    counts: np.ndarray
    items: np.ndarray
    time_offset: np.ndarray | None
    time_base: int
    key_per_second: int
    ratings: np.ndarray | None
    event_codes: np.ndarray | None
    session_codes: np.ndarray | None
    user_ids: pa.Array
    item_ids: pa.Array
    event_names: pa.Array | None
    session_names: pa.Array | None
    starts: np.ndarray = field(init=False)

    def __post_init__(self):
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.starts = np.zeros(len(self.counts), dtype=np.int64)
        np.cumsum(self.counts[:-1], out=self.starts[1:])

    @property
    def num_events(self) -> int:
        """Number of events."""
        return len(self.items)

    @property
    def has_time(self) -> bool:
        """Whether the events have timestamps."""
        return self.time_offset is not None

    @property
    def users(self) -> np.ndarray:
        """User code of each event (computed on demand: it is only needed by some splits)."""
        return np.repeat(np.arange(len(self.counts), dtype=np.int32), self.counts)

    def order_key(self, selection: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Exact event times (`int64`, `key_per_second` units) of the selected events."""
        if self.time_offset is None:
            raise ValueError("These events have no timestamps.")
        return np.add(self.time_offset[selection], self.time_base, dtype=np.int64)

    def seconds(self, selection: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Unix seconds (`int64`) of the selected events."""
        key = self.order_key(selection)
        if self.key_per_second != 1:
            np.floor_divide(key, self.key_per_second, out=key)
        return key


# ----------------------------------------------------------------------------------------------------------------
# Ids


def encode_ids(column: pa.Array | pa.ChunkedArray, name: str, source: str) -> tuple[np.ndarray, pa.Array]:
    """Integer codes for a null-free id column, and the raw ids (as strings) of the codes.

    Integer ids within a compact range take a direct-addressing path (no hashing; codes follow numeric order);
    anything else is dictionary-encoded by Arrow (codes follow first appearance).

    Args:
        column: The id column, without nulls.
        name: Column name, for messages.
        source: Source name, for messages.

    Returns:
        `(codes, ids)`: `int32` codes, one per row, and a string array with the id of each code.
    """
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    typ = column.type
    if pa.types.is_dictionary(typ):
        column = column.cast(typ.value_type)
        typ = typ.value_type
    if pa.types.is_floating(typ):
        if pc.all(pc.equal(column, pc.floor(column))).as_py() is False:
            raise ValueError(f"{source}: id column {name!r} holds non-integer numbers; ids must be integers or text.")
        column = pc.cast(column, pa.int64())
        typ = pa.int64()
    if pa.types.is_integer(typ) and len(column) > 0:
        bounds = pc.min_max(column)
        lo, hi = int(bounds["min"].as_py()), int(bounds["max"].as_py())
        limit = max(2 * len(column), 1 << 20)  # direct addressing only for compact ranges (memory: 5 bytes/slot)
        if hi - lo < limit:
            shift = lo if (lo < 0 or lo > limit) else 0  # small non-negative ids index directly, unshifted
            # Chunk by chunk (zero-copy views of the Arrow buffers): no combined copy of the column.
            chunks = [c.to_numpy(zero_copy_only=False) for c in column.chunks]
            if shift:
                chunks = [c - shift for c in chunks]
            present = np.zeros(hi - shift + 1, dtype=bool)
            for chunk in chunks:
                present[chunk] = True
            dense = np.cumsum(present, dtype=np.int32)
            dense -= 1
            codes = np.empty(len(column), dtype=np.int32)
            offset = 0
            for chunk in chunks:
                np.take(dense, chunk, out=codes[offset : offset + len(chunk)])
                offset += len(chunk)
            ids = pc.cast(pa.array(np.flatnonzero(present) + shift), pa.string())
            return codes, ids
    array = as_array(column)
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_integer(typ)):
        ids_to_strings(array.slice(0, 1), name, source)  # raises the right message for other types
    encoded = pc.dictionary_encode(array)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return codes, ids_to_strings(encoded.dictionary, name, source)


def _missing(column: pa.ChunkedArray) -> np.ndarray | None:
    mask = pc.is_null(column, nan_is_null=True)  # a NaN id (pandas' missing integer) is missing too
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        mask = pc.or_(mask, pc.fill_null(pc.equal(column, ""), False))
    if not pc.any(mask).as_py():
        return None
    return mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else as_array(mask).to_numpy(False)


# ----------------------------------------------------------------------------------------------------------------
# Timestamps


def _first_index(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def parse_timestamps(
    column: pa.ChunkedArray | pa.Array, unit: str, fmt: str | None, locate: Callable[[int], str]
) -> tuple[np.ndarray, int]:
    """Exact, sortable event times from a timestamp column of any supported type.

    Args:
        column: The timestamp column (rows already aligned with `locate`).
        unit: Unit of numeric timestamps ("s", "ms", "us", "ns").
        fmt: `strptime` format for text timestamps, or `None` for ISO 8601 / numeric text.
        locate: Maps a row index of `column` to a readable location.

    Returns:
        `(key, key_per_second)`: an `int64` array ordering events exactly as the source does, and its resolution;
        unix seconds are `key // key_per_second`.

    Raises:
        ValueError: A timestamp is missing, unparseable, negative or after 2100-01-01; the message names the row
            and the value.
    """
    array = as_array(column)
    if array.null_count:
        i = _first_index(array.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(
            f"{locate(i)}: missing timestamp. Fill it in or remove the row, or load without time ordering with "
            f"columns=ColumnMapping(timestamp=False)."
        )
    typ = array.type
    if pa.types.is_dictionary(typ):
        array, typ = array.cast(typ.value_type), typ.value_type
    factor = TIMESTAMP_UNITS[unit]
    if pa.types.is_integer(typ):
        key, per_second = array.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), factor
    elif pa.types.is_floating(typ):
        values = array.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values)
        if bad.any():
            i = _first_index(bad)
            raise ValueError(f"{locate(i)}: timestamp {_show(values[i])} is not a number.")
        _check_range(values / factor, values, unit, locate)
        # Keep sub-second order: microseconds.
        key, per_second = np.round(values * (1_000_000 / factor)).astype(np.int64), 1_000_000
    elif pa.types.is_timestamp(typ):
        key, per_second = array.cast(pa.int64()).to_numpy(zero_copy_only=False), TIMESTAMP_UNITS[typ.unit]
    elif pa.types.is_date32(typ):
        key, per_second = array.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64) * 86_400, 1
    elif pa.types.is_date64(typ):
        key, per_second = array.cast(pa.int64()).to_numpy(zero_copy_only=False), 1_000
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return _parse_text_timestamps(array.cast(pa.string()), unit, fmt, locate)
    else:
        raise ValueError(f"The timestamp column has type {typ}; expected integers, floats, dates, timestamps or text.")
    _check_range(np.floor_divide(key, per_second), key, unit if per_second == factor else None, locate)
    return key, per_second


def _show(value) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _check_range(seconds: np.ndarray, raw: np.ndarray, unit: str | None, locate: Callable[[int], str]) -> None:
    if len(seconds) == 0:
        return
    low = seconds < 0
    if low.any():
        i = _first_index(low)
        raise ValueError(
            f"{locate(i)}: timestamp {_show(raw[i])} is negative (before 1970). Timestamps must be unix times; check "
            f"the column and its unit."
        )
    high = seconds > MAX_TIMESTAMP_SECONDS
    if high.any():
        i = _first_index(high)
        hint = ""
        if unit is not None:
            for bigger in ("ms", "us", "ns"):
                scale = TIMESTAMP_UNITS[bigger] // TIMESTAMP_UNITS[unit]
                if scale > 1 and float(np.max(seconds)) / scale <= MAX_TIMESTAMP_SECONDS:
                    hint = f" It looks like {bigger}: pass columns=ColumnMapping(..., timestamp_unit={bigger!r})."
                    break
        raise ValueError(
            f"{locate(i)}: timestamp {_show(raw[i])} is after 2100-01-01 when read in {unit or 'its unit'}; that is "
            f"not a plausible event time.{hint}"
        )


def _parse_text_timestamps(
    array: pa.Array, unit: str, fmt: str | None, locate: Callable[[int], str]
) -> tuple[np.ndarray, int]:
    if fmt is not None:
        parsed = pc.strptime(array, format=fmt, unit="us", error_is_null=True)
        if parsed.null_count:
            i = _first_index(parsed.is_null().to_numpy(zero_copy_only=False))
            raise ValueError(f"{locate(i)}: timestamp {array[i].as_py()!r} does not match the format {fmt!r}.")
        key = parsed.cast(pa.int64()).to_numpy(zero_copy_only=False)
        _check_range(np.floor_divide(key, 1_000_000), key, None, locate)
        return key, 1_000_000
    numeric = pc.match_substring_regex(array, _NUMERIC_TEXT)
    if pc.all(numeric).as_py():
        as_float = pc.cast(pc.utf8_trim_whitespace(array), pa.float64())
        if pc.all(pc.equal(as_float, pc.floor(as_float))).as_py():
            return parse_timestamps(pc.cast(as_float, pa.int64()), unit, None, locate)
        return parse_timestamps(as_float, unit, None, locate)
    iso = pc.match_substring_regex(array, _ISO_TEXT).to_numpy(zero_copy_only=False)
    number = numeric.to_numpy(zero_copy_only=False)
    if not iso.all():
        bad = ~(iso | number)
        i = _first_index(bad if bad.any() else number)
        why = "" if bad.any() else " (a number, while other rows hold dates)"
        raise ValueError(
            f"{locate(i)}: cannot parse the timestamp {array[i].as_py()!r}{why}. Timestamps must be numbers (unix "
            f"time, see ColumnMapping.timestamp_unit) or ISO 8601 text; for other text pass "
            f"columns=ColumnMapping(..., timestamp_format='%d/%m/%Y %H:%M')."
        )
    zoned = pc.match_substring_regex(array, _ZONED_TEXT).to_numpy(zero_copy_only=False)
    key = np.empty(len(array), dtype=np.int64)
    for mask, target in ((zoned, pa.timestamp("us", tz="UTC")), (~zoned, pa.timestamp("us"))):
        if not mask.any():
            continue
        rows = np.flatnonzero(mask)
        subset = array.take(pa.array(rows)) if not mask.all() else array
        try:
            key[rows] = subset.cast(target).cast(pa.int64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            j = first_failing_index(subset, lambda a, t=target: a.cast(t))
            i = int(rows[j if j is not None else 0])
            raise ValueError(
                f"{locate(i)}: cannot parse the timestamp {array[i].as_py()!r} (not a valid ISO 8601 date/time)."
            ) from None
    _check_range(np.floor_divide(key, 1_000_000), key, None, locate)
    return key, 1_000_000


# ----------------------------------------------------------------------------------------------------------------
# Ordering


def _sorted(values: np.ndarray) -> bool:
    return bool((values[1:] >= values[:-1]).all())


def stable_order(
    users: np.ndarray, num_users: int, key: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Sort events by (user, key, original position), stably.

    Keys are packed into unsigned 64-bit integers that end with the original position, so an ordinary (fast,
    vectorised) `numpy.sort` gives exactly the stable order. When user, time and position do not fit in 64 bits
    together, two passes are made: by (time, position), then by (user, position in the first pass); the first
    pass is skipped when the log is already in time order, as logs usually are.

    Args:
        users: Dense user codes.
        num_users: Number of user codes.
        key: Non-negative event times (offsets from the earliest), or `None` to sort by user only.

    Returns:
        `(perm, sorted_users, sorted_key)`: the permutation (`int64`), the users in sorted order, and the keys in
        sorted order when they came out of the packed sort for free (else `None`: gather them with `perm`).
        `(None, None, None)` when the events are already sorted.
    """
    n = len(users)
    if n < 2:
        return None, None, None
    if _sorted(users):
        if key is None:
            return None, None, None
        same_user = users[1:] == users[:-1]
        if bool((key[1:][same_user] >= key[:-1][same_user]).all()):
            return None, None, None
    row_bits = int(n - 1).bit_length()
    row_mask = np.uint64((1 << row_bits) - 1)
    user_bits = max(1, int(num_users - 1).bit_length())

    def sort_packed(high: np.ndarray) -> np.ndarray:
        packed = high.astype(np.uint64)
        packed <<= np.uint64(row_bits)
        packed |= np.arange(n, dtype=np.uint64)
        packed.sort()
        return packed

    def split_packed(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        high = packed >> np.uint64(row_bits)
        packed &= row_mask
        return packed.view(np.int64), high

    if key is None:
        perm, high = split_packed(sort_packed(users))
        return perm, high.astype(np.int32), None
    key_bits = max(1, int(key.max()).bit_length())
    if user_bits + key_bits + row_bits <= 64:
        combined = users.astype(np.uint64)
        combined <<= np.uint64(key_bits)
        combined |= key
        perm, high = split_packed(sort_packed(combined))
        del combined
        sorted_key = (high & np.uint64((1 << key_bits) - 1)).astype(key.dtype)
        high >>= np.uint64(key_bits)
        return perm, high.astype(np.int32), sorted_key
    if _sorted(key):
        first = None  # already in time order: pass 1 is the identity
    elif key_bits + row_bits <= 64:
        first, _ = split_packed(sort_packed(key))
    else:
        first = np.argsort(key, kind="stable")
    second, high = split_packed(sort_packed(users if first is None else users[first]))
    return (second if first is None else first[second]), high.astype(np.int32), None


def duplicate_mask(arrays: list[np.ndarray], users: np.ndarray, key: np.ndarray) -> np.ndarray | None:
    """Mark events identical to an earlier one; events must be sorted by (user, key, position).

    Only events sharing (user, time) with a neighbour can be duplicates, so only those (usually few) are sorted
    again, by (run, item, other fields, position), and compared with their predecessor.

    Args:
        arrays: Per-event fields that must also be equal (item codes, ratings, event codes, ...).
        users: Sorted user codes.
        key: Event times, sorted within users.

    Returns:
        A boolean mask of the duplicates to drop (the first occurrence is kept), or `None` if there are none.
    """
    tie = (users[1:] == users[:-1]) & (key[1:] == key[:-1])
    if not tie.any():
        return None
    in_tie = np.zeros(len(users), dtype=bool)
    in_tie[1:] |= tie
    in_tie[:-1] |= tie
    run = np.cumsum(np.concatenate(([True], ~tie)))
    rows = np.flatnonzero(in_tie)
    subsets = [a[rows] for a in arrays]
    sortable = [np.nan_to_num(s, nan=np.inf) if s.dtype.kind == "f" else s for s in subsets]
    order = np.lexsort([rows, *reversed(sortable), run[rows]])
    same = run[rows][order][1:] == run[rows][order][:-1]
    for s in subsets:
        a = s[order]
        equal = a[1:] == a[:-1]
        if a.dtype.kind == "f":
            equal |= np.isnan(a[1:]) & np.isnan(a[:-1])
        same &= equal
    if not same.any():
        return None
    dup = np.zeros(len(users), dtype=bool)
    dup[rows[order[1:][same]]] = True
    return dup


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> tuple[np.ndarray | None, int]:
    """Iterative k-core filter.

    Args:
        users: User code of each event.
        items: Item code of each event.
        min_user: Minimum events per user.
        min_item: Minimum events per item.

    Returns:
        `(keep, iterations)`: a boolean mask of the events kept (`None` if all are), and the number of passes.
    """
    index = np.arange(len(users))
    u, i = users, items
    iterations = 0
    while True:
        iterations += 1
        ok = np.ones(len(u), dtype=bool)
        if min_user > 1:
            ok &= np.bincount(u)[u] >= min_user
        if min_item > 1:
            ok &= np.bincount(i)[i] >= min_item
        if ok.all():
            break
        index, u, i = index[ok], u[ok], i[ok]
    if len(index) == len(users):
        return None, iterations
    keep = np.zeros(len(users), dtype=bool)
    keep[index] = True
    return keep, iterations


# ----------------------------------------------------------------------------------------------------------------
# The pipeline


class _Columns:
    """Per-event arrays that move together through the cleaning steps."""

    names = ("users", "items", "time_offset", "ratings", "event_codes", "session_codes")

    def __init__(self, **arrays):
        for name in self.names:
            setattr(self, name, arrays.get(name))

    def apply(self, index: np.ndarray, skip: tuple[str, ...] = ()) -> None:
        for name in self.names:
            value = getattr(self, name)
            if value is not None and name not in skip:
                setattr(self, name, value[index])

    def __len__(self) -> int:
        return len(self.users)


def _optional_codes(table: pa.Table, name: str, source: str) -> tuple[np.ndarray | None, pa.Array | None]:
    if name not in table.column_names:
        return None, None
    column = ids_to_strings(table.column(name), name, source)
    encoded = pc.dictionary_encode(as_array(column), null_encoding="encode")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32), encoded.dictionary


def _ratings(column: pa.ChunkedArray, locate: Callable[[int], str]) -> np.ndarray:
    array = as_array(column)
    typ = array.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        try:
            array = array.cast(pa.float64())
        except pa.ArrowInvalid:
            i = first_failing_index(array, lambda a: a.cast(pa.float64()))
            raise ValueError(f"{locate(i or 0)}: rating {array[i or 0].as_py()!r} is not a number.") from None
    elif pa.types.is_boolean(typ) or pa.types.is_null(typ):
        array = array.cast(pa.float64())
    elif not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
        raise ValueError(f"The rating column has type {typ}; expected numbers.")
    return pc.fill_null(array.cast(pa.float32()), float("nan")).to_numpy(zero_copy_only=False)


def _compact_times(key: np.ndarray) -> tuple[np.ndarray, int]:
    """Times as non-negative offsets from the earliest, in `uint32` when they fit (halves the sort's gathers)."""
    base = int(key.min())
    out = np.empty(len(key), dtype=np.uint32 if int(key.max()) - base < 2**32 else np.uint64)
    np.subtract(key, base, out=out, casting="unsafe")
    return out, base


def _compact_integer_times(column: pa.ChunkedArray, unit: str) -> tuple[np.ndarray, int, int] | None:
    """Fast path for the common case of integer timestamps in range: compact offsets built chunk by chunk.

    Returns `None` (so that `parse_timestamps` handles it, with its error messages) for other types, nulls, or
    values out of range.
    """
    if not pa.types.is_integer(column.type) or column.null_count or len(column) == 0:
        return None
    per_second = TIMESTAMP_UNITS[unit]
    bounds = pc.min_max(column)
    lo, hi = int(bounds["min"].as_py()), int(bounds["max"].as_py())
    if lo < 0 or hi // per_second > MAX_TIMESTAMP_SECONDS:
        return None
    out = np.empty(len(column), dtype=np.uint32 if hi - lo < 2**32 else np.uint64)
    offset = 0
    for chunk in column.chunks:
        np.subtract(chunk.to_numpy(zero_copy_only=False), lo, out=out[offset : offset + len(chunk)], casting="unsafe")
        offset += len(chunk)
    return out, lo, per_second


def prepare_events(raw: RawLog, config: CleaningConfig | None = None) -> tuple[Events, DataReport]:
    """Clean and order a raw log.

    Args:
        raw: The log as read. Its `table` is consumed (set to `None`) so that its memory is freed early.
        config: Cleaning steps (defaults: drop missing ids, deduplicate, nothing else).

    Returns:
        `(events, report)`: sorted, integer-coded events and the report of every step.

    Raises:
        ValueError: Empty input, bad ids or timestamps, or no events left after cleaning.
    """
    config = config or CleaningConfig()
    table, source, locate_raw = raw.table, raw.source, raw.provenance.locate
    raw.table = None  # released as soon as its columns are coded, to keep peak memory low
    report = DataReport(source=source, columns=dict(raw.columns), notes=list(raw.notes))
    total = table.num_rows
    if total == 0:
        names = [raw.columns.get(name, name) for name in table.column_names]  # the file's own names
        raise ValueError(f"{source}: the source has columns {names} but no rows; there are no events.")

    # 1. Missing user/item ---------------------------------------------------------------------------------------
    missing = None
    for name in ("user", "item"):
        mask = _missing(table.column(name))
        if mask is not None:
            if not config.drop_missing:
                i = _first_index(mask)
                raise ValueError(
                    f"{locate_raw(i)}: missing {name} id. Fill it in, or pass "
                    f"cleaning=CleaningConfig(drop_missing=True) to drop such rows (they are counted in the report)."
                )
            missing = mask if missing is None else (missing | mask)
    rows = None
    if missing is not None:
        rows = np.flatnonzero(~missing)
        table = table.take(pa.array(rows))
        if table.num_rows == 0:
            raise ValueError(f"{source}: every one of the {total:,} rows has a missing user or item id.")

    def locate(i: int) -> str:
        return locate_raw(int(rows[i]) if rows is not None else int(i))

    users, user_ids = encode_ids(table.column("user"), raw.columns["user"], source)
    items, item_ids = encode_ids(table.column("item"), raw.columns["item"], source)
    report.steps.append(CleaningStep("read", True, total, total, len(user_ids), len(item_ids)))
    report.steps.append(
        CleaningStep(
            "drop missing user/item",
            config.drop_missing,
            total,
            table.num_rows,
            len(user_ids),
            len(item_ids),
            "rows whose user or item is null or empty" if config.drop_missing else "",
        )
    )

    # Times, ratings, event types, sessions -----------------------------------------------------------------------
    time_offset, time_base, per_second = None, 0, 1
    if "timestamp" in table.column_names:
        compact = _compact_integer_times(table.column("timestamp"), raw.timestamp_unit)
        if compact is not None:
            time_offset, time_base, per_second = compact
        else:  # any other type, or a value out of range: the general parser (which names the bad row)
            key, per_second = parse_timestamps(
                table.column("timestamp"), raw.timestamp_unit, raw.timestamp_format, locate
            )
            time_offset, time_base = _compact_times(key)
            del key
    else:
        report.notes.append("no timestamp column: events keep file order; the output has no `timestamps` column")
    ratings = _ratings(table.column("rating"), locate) if "rating" in table.column_names else None
    event_codes, event_names = _optional_codes(table, "event_type", source)
    session_codes, session_names = _optional_codes(table, "session", source)
    del table
    # The raw table is gone; hand its memory back to the OS now rather than whenever the allocator decides, so
    # that it does not add to the peak of the sort below.
    pa.default_memory_pool().release_unused()

    # Stable sort by (user, time, file order) --------------------------------------------------------------------
    perm, sorted_users, sorted_time = stable_order(users, len(user_ids), time_offset)
    cols = _Columns(
        users=users,
        items=items,
        time_offset=time_offset,
        ratings=ratings,
        event_codes=event_codes,
        session_codes=session_codes,
    )
    del users, items, time_offset, ratings, event_codes, session_codes
    if perm is not None:
        cols.users = sorted_users
        skip = ("users",)
        if sorted_time is not None:
            cols.time_offset, skip = sorted_time, ("users", "time_offset")
        cols.apply(perm, skip=skip)
        del perm, sorted_users, sorted_time

    user_counts = np.bincount(cols.users, minlength=len(user_ids))
    item_counts = np.bincount(cols.items, minlength=len(item_ids))

    def record(name: str, enabled: bool, before: int, detail: str = "") -> None:
        nonlocal user_counts, item_counts
        if len(cols) != before:  # recount only when the step removed something
            user_counts = np.bincount(cols.users, minlength=len(user_ids))
            item_counts = np.bincount(cols.items, minlength=len(item_ids))
        users_left, items_left = int(np.count_nonzero(user_counts)), int(np.count_nonzero(item_counts))
        report.steps.append(CleaningStep(name, enabled, before, len(cols), users_left, items_left, detail))

    def drop(mask_keep: np.ndarray | None) -> None:
        if mask_keep is not None and not mask_keep.all():
            cols.apply(np.flatnonzero(mask_keep))

    # 2. Deduplicate -----------------------------------------------------------------------------------------------
    before = len(cols)
    if config.deduplicate and cols.time_offset is not None:
        fields = [a for a in (cols.items, cols.ratings, cols.event_codes, cols.session_codes) if a is not None]
        dup = duplicate_mask(fields, cols.users, cols.time_offset)
        drop(None if dup is None else ~dup)
        record("deduplicate", True, before, "identical user, item, time and other fields; first kept")
    else:
        why = "no timestamps: repeats cannot be told from re-consumption" if config.deduplicate else ""
        record("deduplicate", False, before, why)

    # 3. Filters ---------------------------------------------------------------------------------------------------
    before = len(cols)
    if config.min_rating is not None:
        if cols.ratings is None:
            raise ValueError(
                f"{source}: CleaningConfig.min_rating={config.min_rating} needs a rating column, but none is mapped "
                f"(columns used: {raw.columns}). Name it with columns=ColumnMapping(rating=...)."
            )
        drop(cols.ratings >= config.min_rating)
        record("filter rating", True, before, f"rating >= {config.min_rating}")
    else:
        record("filter rating", False, before)
    before = len(cols)
    if config.event_types is not None:
        if cols.event_codes is None:
            raise ValueError(
                f"{source}: CleaningConfig.event_types needs an event type column, but none is mapped "
                f"(columns used: {raw.columns}). Name it with columns=ColumnMapping(event_type=...)."
            )
        wanted = pa.array([str(t) for t in config.event_types], type=pa.string())
        found = pc.fill_null(pc.is_in(event_names, value_set=wanted), False).to_numpy(zero_copy_only=False)
        absent = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=event_names)))
        if len(absent):
            report.notes.append(
                f"event types {absent.to_pylist()} do not occur in the data (found: "
                f"{format_values(event_names.to_pylist(), 20)})"
            )
        drop(found[cols.event_codes])
        record("filter event types", True, before, f"keep {list(config.event_types)}")
    else:
        record("filter event types", False, before)

    # 4. k-core ----------------------------------------------------------------------------------------------------
    before = len(cols)
    if config.min_user_events > 1 or config.min_item_events > 1:
        keep, iterations = k_core(cols.users, cols.items, config.min_user_events, config.min_item_events)
        drop(keep)
        detail = f"users >= {config.min_user_events}, items >= {config.min_item_events}; {iterations} passes"
        record("k-core", True, before, detail)
    else:
        record("k-core", False, before)

    # 5. Cap per user ----------------------------------------------------------------------------------------------
    before = len(cols)
    if config.max_events_per_user is not None and len(cols):
        # Drop the oldest events of long users: a mask that is False on the first `count - cap` events of each.
        excess = np.maximum(user_counts - config.max_events_per_user, 0)
        if excess.any():
            segments = np.stack([excess, user_counts - excess], axis=1).ravel()
            pattern = np.tile(np.array([False, True]), len(user_counts))
            drop(np.repeat(pattern, segments))
        record("cap per user", True, before, f"newest {config.max_events_per_user} events kept")
    else:
        record("cap per user", False, before)

    if len(cols) == 0:
        raise ValueError(
            f"{source}: no events are left after cleaning. Loosen the filters (min_rating, event_types, "
            f"min_user_events, min_item_events).\n{report}"
        )

    # Dense codes for what is left (users stay in code order: the remapping is monotonic).
    used_users = user_counts > 0
    if not used_users.all():
        user_ids = user_ids.take(pa.array(np.flatnonzero(used_users)))
        user_counts = user_counts[used_users]
    used_items = item_counts > 0
    if not used_items.all():
        cols.items = (np.cumsum(used_items, dtype=np.int32) - 1)[cols.items]
        item_ids = item_ids.take(pa.array(np.flatnonzero(used_items)))

    events = Events(
        counts=user_counts,
        items=cols.items.astype(np.int32, copy=False),
        time_offset=cols.time_offset,
        time_base=time_base,
        key_per_second=per_second,
        ratings=cols.ratings,
        event_codes=cols.event_codes,
        session_codes=cols.session_codes,
        user_ids=user_ids,
        item_ids=item_ids,
        event_names=event_names,
        session_names=session_names,
    )
    return events, report
