"""Splits of per-user sequences into train / validation / test, without leaking the future.

Three protocols, each a small frozen dataclass:

- `LeaveOneOutSplit` (the default, as in SASRec, Kang & McAuley 2018, and BERT4Rec): per user, events sorted by
  (timestamp, file order); the last event is the test target, the one before it the validation target, the rest
  is the training sequence.
- `TemporalSplit`: a global cutoff in time. Training sequences hold the events before the cutoff; test targets are
  events at or after it (the first per user, or all of them). This is the protocol that does not let a model see
  the future of *other* users either (Ji et al., "A Critical Study on Data Leakage in Recommender System Offline
  Evaluation", TOIS 2023).
- `UserSplit`: users are divided at random (seeded) into train / validation / test users; held-out users are
  evaluated on their last event (or on every event) given their own earlier events.

Rows of the validation and test splits carry the history up to the target and the target itself: `item_ids`
(and `timestamps`, `ratings`, ...) are the events strictly before the target in the (time, file order) sort, and
`target_item_id`, `target_timestamp` (and `target_rating`, ...) describe the target. No event after a target can
reach its input. Training rows are whole training sequences; next-item labels come from shifting them.

Everything is built from index ranges with numpy and Arrow `take`: no Python loop over events or users.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import concat_ranges, list_column, selection
from .cleaning import Events


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Leave-one-out by time: last event -> test, previous -> validation, the rest -> train.

    Users with two events get a test row but no validation row; users with one event appear in train only. Both
    are counted in the report.

    Args:
        validation: Whether to hold out the second-to-last event for validation.
    """

    validation: bool = True

    def describe(self) -> str:
        """One line for the report."""
        if self.validation:
            return "leave-one-out by time (last event = test target, previous = validation target)"
        return "leave-one-out by time (last event = test target, no validation)"


@dataclass(frozen=True)
class TemporalSplit:
    """Global temporal cutoff: train before `test_start`, test targets at or after it.

    Args:
        test_start: Cutoff time: unix seconds, a `datetime` (naive means UTC) or ISO 8601 text.
        validation_start: Optional earlier cutoff; training then stops there, and events in
            `[validation_start, test_start)` are validation targets.
        targets: "first" (the first event of each user in the period, default) or "all" (every event in the period
            is a target, with all of the user's earlier events as history).
        max_history: Keep at most this many of the newest history events in evaluation rows.
        min_history: Targets with fewer earlier events than this are skipped (and counted): a user with no events
            before the cutoff cannot be evaluated by a sequence model.
    """

    test_start: int | float | str | datetime
    validation_start: int | float | str | datetime | None = None
    targets: str = "first"
    max_history: int | None = None
    min_history: int = 1

    def __post_init__(self):
        if self.targets not in ("first", "all"):
            raise ValueError(f"TemporalSplit.targets must be 'first' or 'all', got {self.targets!r}.")
        _check_history(self)
        test_start = to_seconds(self.test_start)  # raises on an unreadable time
        if self.validation_start is not None and to_seconds(self.validation_start) >= test_start:
            raise ValueError(
                f"TemporalSplit.validation_start ({self.validation_start}) must be before test_start "
                f"({self.test_start})."
            )

    def describe(self) -> str:
        """One line for the report."""
        test = _iso(to_seconds(self.test_start))
        if self.validation_start is None:
            return f"temporal: train before {test}, test targets from {test} ({self.targets})"
        val = _iso(to_seconds(self.validation_start))
        return (
            f"temporal: train before {val}, validation targets in [{val}, {test}), test from {test} ({self.targets})"
        )


@dataclass(frozen=True)
class UserSplit:
    """Split by users: held-out users are evaluated on their own sequences.

    Users are shuffled with `seed` in the order of their ids (so the split does not depend on file order); users
    with too few events to form a target stay in train.

    Args:
        validation_fraction: Fraction of (eligible) users held out for validation.
        test_fraction: Fraction of (eligible) users held out for test.
        seed: Seed of the shuffle.
        targets: "last" (each held-out user's last event, default) or "all" (every event with enough history).
        max_history: Keep at most this many of the newest history events in evaluation rows.
        min_history: Minimum earlier events for a target.
    """

    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    targets: str = "last"
    max_history: int | None = None
    min_history: int = 1

    def __post_init__(self):
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"UserSplit.{name} must be in [0, 1), got {value!r}.")
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError("UserSplit.validation_fraction + test_fraction must leave some users for training.")
        if self.targets not in ("last", "all"):
            raise ValueError(f"UserSplit.targets must be 'last' or 'all', got {self.targets!r}.")
        _check_history(self)

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"by users (seed {self.seed}): {self.validation_fraction:.0%} validation, {self.test_fraction:.0%} test "
            f"users, targets = {self.targets} event(s) of each held-out user"
        )


SplitSpec = LeaveOneOutSplit | TemporalSplit | UserSplit


def _check_history(split) -> None:
    if split.min_history < 1:
        raise ValueError(f"{type(split).__name__}.min_history must be at least 1, got {split.min_history!r}.")
    if split.max_history is not None and split.max_history < split.min_history:
        raise ValueError(
            f"{type(split).__name__}.max_history must be at least min_history, got {split.max_history!r}."
        )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def to_seconds(value: int | float | str | datetime) -> float:
    """Unix seconds from seconds, a `datetime` (naive means UTC) or ISO 8601 text.

    Args:
        value: The time.

    Returns:
        Unix seconds.
    """
    if isinstance(value, bool):
        raise ValueError(f"Not a time: {value!r}.")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"Cannot read {value!r} as a time; use unix seconds or ISO 8601 text.") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    raise ValueError(f"Cannot read {value!r} as a time; use unix seconds, a datetime or ISO 8601 text.")


def parse_split(split) -> SplitSpec | None:
    """Accept a split object, a name ("leave_one_out", "loo", "by_user") or `None` (no split).

    Args:
        split: What the user passed.

    Returns:
        A split object, or `None` for "all events in one `train` split".
    """
    if split is None or isinstance(split, (LeaveOneOutSplit, TemporalSplit, UserSplit)):
        return split
    if isinstance(split, str):
        name = split.lower().replace("-", "_")
        if name in ("leave_one_out", "loo"):
            return LeaveOneOutSplit()
        if name in ("user", "users", "by_user"):
            return UserSplit()
        if name == "none":
            return None
        if name == "temporal":
            raise ValueError("A temporal split needs a cutoff: pass split=TemporalSplit(test_start=...).")
    raise ValueError(
        f"Unknown split {split!r}; pass 'leave_one_out', 'by_user', None, or a LeaveOneOutSplit / TemporalSplit / "
        f"UserSplit object."
    )


@dataclass
class SplitResult:
    """Arrow tables of each split, plus what the report needs.

    Args:
        tables: `{split name: table}`.
        train_item_counts: Number of training events of each item code.
        counts: `{split name: {"rows": ..., "events": ..., ...}}`.
        notes: Skipped targets and similar facts.
        description: One line describing the protocol.
    """

    tables: dict[str, pa.Table]
    train_item_counts: np.ndarray
    counts: dict[str, dict[str, int]]
    notes: list[str]
    description: str


def _history_columns(
    events: Events, users: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[dict[str, pa.Array | pa.ChunkedArray], np.ndarray]:
    """Columns of rows whose histories are the sorted events `[starts, starts + lengths)`; also the item codes."""
    chosen = selection(starts, lengths, events.num_events)
    lengths = np.asarray(lengths, dtype=np.int64)
    items = events.items[chosen]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {"user_id": events.user_ids.take(pa.array(users))}
    columns["item_ids"] = list_column(lengths, items, events.item_ids)
    if events.has_time:
        columns["timestamps"] = list_column(lengths, events.seconds(chosen), value_type=pa.int64())
    if events.ratings is not None:
        columns["ratings"] = list_column(lengths, events.ratings[chosen], value_type=pa.float32())
    if events.event_codes is not None:
        columns["event_types"] = list_column(lengths, events.event_codes[chosen], events.event_names)
    if events.session_codes is not None:
        columns["session_ids"] = list_column(lengths, events.session_codes[chosen], events.session_names)
    return columns, items


def _target_columns(events: Events, targets: np.ndarray) -> dict[str, pa.Array]:
    """`target_*` columns describing the target events."""
    columns = {"target_item_id": events.item_ids.take(pa.array(events.items[targets]))}
    if events.has_time:
        columns["target_timestamp"] = pa.array(events.seconds(targets), type=pa.int64())
    if events.ratings is not None:
        columns["target_rating"] = pa.array(events.ratings[targets], type=pa.float32())
    if events.event_codes is not None:
        columns["target_event_type"] = events.event_names.take(pa.array(events.event_codes[targets]))
    if events.session_codes is not None:
        columns["target_session_id"] = events.session_names.take(pa.array(events.session_codes[targets]))
    return columns


def _eval_table(
    events: Events, users: np.ndarray, targets: np.ndarray, min_history: int, max_history: int | None
) -> tuple[pa.Table, int]:
    """Rows for target events: the history is all earlier events of the user (the newest `max_history`)."""
    position = targets - events.starts[users]
    ok = position >= min_history
    skipped = int(np.count_nonzero(~ok))
    users, targets, position = users[ok], targets[ok], position[ok]
    length = position if max_history is None else np.minimum(position, max_history)
    columns, _ = _history_columns(events, users, targets - length, length)
    columns.update(_target_columns(events, targets))
    return pa.table(columns), skipped


def _at_or_after(events: Events, seconds: float) -> np.ndarray:
    """Mask of the events at or after a time, compared on the compact time offsets."""
    threshold = int(np.ceil(seconds * events.key_per_second)) - events.time_base
    if threshold <= 0:
        return np.ones(events.num_events, dtype=bool)
    if threshold > int(np.iinfo(events.time_offset.dtype).max):
        return np.zeros(events.num_events, dtype=bool)
    return events.time_offset >= np.asarray(threshold, dtype=events.time_offset.dtype)


def _counts(table: pa.Table) -> dict[str, int]:
    lengths = sum(int(pc.sum(c.value_lengths()).as_py() or 0) for c in table.column("item_ids").chunks)
    return {"rows": table.num_rows, "events": lengths}


def build_splits(events: Events, split: SplitSpec | None) -> SplitResult:
    """Build the split tables from cleaned, sorted events.

    Args:
        events: Cleaned events.
        split: The protocol, or `None` to put every whole sequence in `train`.

    Returns:
        The split tables and their counts.
    """
    n, s = events.counts, events.starts
    all_users = np.arange(len(n), dtype=np.int64)
    tables: dict[str, pa.Table] = {}
    notes: list[str] = []
    train_items = np.zeros(0, dtype=np.int32)

    def add_train(users: np.ndarray, lengths: np.ndarray) -> dict:
        nonlocal train_items
        keep = lengths > 0
        columns, train_items = _history_columns(events, users[keep], s[users[keep]], lengths[keep])
        tables["train"] = pa.table(columns)
        return columns

    def add_eval(name: str, users: np.ndarray, targets: np.ndarray, split_spec) -> None:
        min_history = getattr(split_spec, "min_history", 1)
        table, skipped = _eval_table(events, users, targets, min_history, getattr(split_spec, "max_history", None))
        tables[name] = table
        if skipped:
            notes.append(f"{name}: {skipped:,} targets skipped (fewer than {min_history} earlier events)")

    if split is None:
        add_train(all_users, n)
        description = "none (every sequence in train)"
    elif isinstance(split, LeaveOneOutSplit):
        if split.validation:
            train_columns = add_train(all_users, np.where(n >= 3, n - 2, np.where(n == 2, 1, n)))
            val_users = all_users[n >= 3]
            if len(val_users) == len(all_users):
                # Every user has >= 3 events: validation histories *are* the training sequences. Share the Arrow
                # columns instead of building them again (no copy, no memory).
                columns = dict(train_columns)
                columns.update(_target_columns(events, s + n - 2))
                tables["validation"] = pa.table(columns)
            else:
                add_eval("validation", val_users, s[val_users] + n[val_users] - 2, split)
                notes.append(
                    f"validation: {len(all_users) - len(val_users):,} users with fewer than 3 events have no row"
                )
        else:
            add_train(all_users, np.where(n >= 2, n - 1, n))
        test_users = all_users[n >= 2]
        add_eval("test", test_users, s[test_users] + n[test_users] - 1, split)
        if len(test_users) < len(all_users):
            notes.append(f"test: {len(all_users) - len(test_users):,} users with a single event appear in train only")
        description = split.describe()
    elif isinstance(split, TemporalSplit):
        if not events.has_time:
            raise ValueError("A TemporalSplit needs timestamps, but the log has no timestamp column.")
        test_from = _at_or_after(events, to_seconds(split.test_start))
        val_from = None
        if split.validation_start is not None:
            val_from = _at_or_after(events, to_seconds(split.validation_start))
        train_end = test_from if val_from is None else val_from
        # Per user, events are in time order, so the events before the cutoff are a prefix.
        before = np.add.reduceat(~train_end, s, dtype=np.int64) if events.num_events else np.zeros(0, np.int64)
        add_train(all_users, np.where(n > 0, before, 0))
        users_of_events = events.users
        periods = [("test", test_from)]
        if val_from is not None:
            periods.insert(0, ("validation", val_from & ~test_from))
        for name, inside in periods:
            if split.targets == "first":
                # The first event of each user inside the period: an in-period event whose predecessor is not.
                first = inside.copy()
                first[1:] &= ~(inside[:-1] & (users_of_events[1:] == users_of_events[:-1]))
                inside = first
            targets = np.flatnonzero(inside)
            add_eval(name, users_of_events[targets].astype(np.int64), targets, split)
            if not len(targets):
                notes.append(f"{name}: no events in the period")
        description = split.describe()
    elif isinstance(split, UserSplit):
        eligible = n >= split.min_history + 1
        by_id = pc.sort_indices(events.user_ids).to_numpy()
        candidates = by_id[eligible[by_id]]
        shuffled = candidates[np.random.default_rng(split.seed).permutation(len(candidates))]
        n_test = int(round(split.test_fraction * len(shuffled)))
        n_val = int(round(split.validation_fraction * len(shuffled)))
        test_users = np.sort(shuffled[:n_test])
        val_users = np.sort(shuffled[n_test : n_test + n_val])
        role = np.zeros(len(n), dtype=np.int8)
        role[test_users], role[val_users] = 2, 1
        train_users = all_users[role == 0]
        add_train(train_users, n[train_users])
        for name, users in (("validation", val_users), ("test", test_users)):
            if name == "validation" and split.validation_fraction == 0:
                continue
            if split.targets == "last":
                targets, target_users = s[users] + n[users] - 1, users
            else:
                targets = concat_ranges(s[users], n[users])
                target_users = np.repeat(users, n[users])
            add_eval(name, target_users, targets, split)
        if not eligible.all():
            notes.append(f"{int(np.count_nonzero(~eligible)):,} users with too few events to evaluate stay in train")
        description = split.describe()
    else:
        raise ValueError(f"Unknown split {split!r}.")

    train_item_counts = np.bincount(train_items, minlength=len(events.item_ids)).astype(np.int64)
    counts = {}
    for name, table in tables.items():
        counts[name] = _counts(table)
        if name != "train":
            counts[name]["targets"] = table.num_rows
    return SplitResult(tables, train_item_counts, counts, notes, description)
