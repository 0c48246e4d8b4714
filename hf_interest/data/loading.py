"""`load_behaviors`: any raw behaviour log -> per-user, time-ordered sequences as a `datasets.DatasetDict`.

```python
from hf_interest.data import load_behaviors, CleaningConfig, TemporalSplit

data = load_behaviors("events.parquet", columns={"user": "visitorid", "item": "itemid"},
                      cleaning=CleaningConfig(min_user_events=5, min_item_events=5))
print(data.report)            # counts of every step
data.sequences["train"]       # user_id, item_ids, timestamps, ...
data.items                    # item_id, title, categories, text, train_count, ... in vocabulary order
```

The pipeline is read (`readers`) -> clean and sort (`cleaning`) -> split (`splits`) -> align side information
(this module). The result is a `BehaviorData`; its `items` table is in vocabulary order (descending train count,
then id), ready to build the `ItemTokenizer` from and to feed a text encoder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict

from ._arrow import as_array, drop_empty_strings, fill_empty_lists, first_line
from .cleaning import CleaningConfig, DataReport, Events, prepare_events
from .columns import ITEM_CANDIDATES, USER_CANDIDATES, ColumnMapping, ItemColumns, resolve_item_columns
from .dispatch import read_log, read_side_table
from .readers import canonical_items, canonical_users, detect_amazon, read_amazon_items
from .splits import SplitSpec, build_splits, parse_split
from .vocab import encode_sequences, make_dataset, vocabulary_order


@dataclass
class BehaviorData:
    """Everything `load_behaviors` produces.

    Args:
        sequences: Splits "train", "validation", "test" (as configured) of per-user sequences: `user_id`,
            `item_ids`, `timestamps` (unix seconds; absent when the log has no time), optional `ratings`,
            `event_types`, `session_ids`; evaluation rows add `target_item_id`, `target_timestamp` (and
            `target_rating`, ...).
        items: One row per item, in vocabulary order: `item_id`, `title`, `categories` (list), `text` (title,
            categories and description in one string for a text encoder), `train_count`, `description`, and any
            attributes of the source.
        users: One row per user (`user_id` and attributes), when the source has user attributes; else `None`.
        report: Counts of every step; `print(data.report)`.
    """

    sequences: DatasetDict
    items: Dataset
    users: Dataset | None
    report: DataReport

    @property
    def item_ids(self) -> list[str]:
        """Raw item ids in vocabulary order (build the `ItemTokenizer` from this)."""
        return self.items.with_format("arrow")["item_id"].to_pylist()  # respects a select/filter of the rows

    @property
    def item_counts(self) -> np.ndarray:
        """Training events of each item, aligned with `item_ids` (the popularity baseline)."""
        return self.items.with_format("arrow")["train_count"].to_numpy()

    def encode(self, vocab, unk_id: int = 1) -> tuple[DatasetDict, int]:
        """`encode_sequences(self.sequences, vocab, unk_id)`: add `input_ids` and `labels`.

        Args:
            vocab: Raw item id -> index.
            unk_id: Index of unknown items.

        Returns:
            `(encoded DatasetDict, number of unknown item ids)`.
        """
        return encode_sequences(self.sequences, vocab, unk_id)

    def __str__(self) -> str:
        return str(self.report)


def _compose_text(title: pa.ChunkedArray, categories: pa.ChunkedArray, description: pa.ChunkedArray) -> pa.Array:
    """Per item: title, "Categories: a, b" and description joined with ". "; missing parts are left out, and the
    text is null when all are missing."""
    n = len(title)
    has_categories = pc.greater(pc.list_value_length(categories), 0)
    category_text = pc.if_else(
        has_categories, pc.binary_join_element_wise("Categories: ", pc.binary_join(categories, ", "), ""), ""
    )
    # Rows of [title, categories, description] with the missing parts removed, joined with ". ". (Arrow's
    # binary_join_element_wise(null_handling="skip") drops rows whose parts are all null, so it is not used.)
    parts = [pc.fill_null(as_array(p).cast(pa.string()), "") for p in (title, category_text, description)]
    interleaved = pa.concat_arrays(parts).take(pa.array((np.arange(3)[None, :] * n + np.arange(n)[:, None]).ravel()))
    lists = pa.ListArray.from_arrays(pa.array(np.arange(0, 3 * n + 1, 3, dtype=np.int32)), interleaved)
    text = pc.binary_join(drop_empty_strings(pa.chunked_array([lists])), ". ")
    return _empty_to_null(text)


def _empty_to_null(text: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.if_else(pc.equal(text, ""), None, text)


def align_items(item_ids: pa.Array, counts: np.ndarray, side: pa.Table | None, report: DataReport) -> pa.Table:
    """The item table in vocabulary order, with side information joined on `item_id`.

    Args:
        item_ids: Raw ids of the items of the cleaned log.
        counts: Training events of each (aligned with `item_ids`).
        side: Canonical item side table, or `None`.
        report: Notes about unmatched and duplicate ids are added here.

    Returns:
        `item_id`, `title`, `categories`, `text`, `train_count`, `description`, attributes.
    """
    order = vocabulary_order(item_ids, counts)
    ids = item_ids.take(pa.array(order))
    n = len(ids)
    if side is None:
        side = pa.table(
            {
                "item_id": pa.array([], pa.string()),
                "title": pa.array([], pa.string()),
                "categories": pa.array([], pa.list_(pa.string())),
                "description": pa.array([], pa.string()),
            }
        )
    side_ids = as_array(side.column("item_id"))
    unique_side = pc.unique(side_ids)
    if len(unique_side) < len(side_ids):
        report.notes.append(
            f"items: {len(side_ids) - len(unique_side):,} repeated item ids in the side table; the first row of each "
            f"is used"
        )
    where = pc.index_in(ids, value_set=side_ids)
    matched = side.take(where)
    without = where.null_count
    if len(side_ids):
        if without:
            report.notes.append(f"items: {without:,} of {n:,} items have no side information (title, categories)")
        unused = int(pc.sum(pc.invert(pc.is_in(unique_side, value_set=ids))).as_py() or 0)
        if unused:
            report.notes.append(f"items: {unused:,} items of the side table do not occur in the cleaned log (ignored)")
    title = _empty_to_null(matched.column("title"))
    categories = fill_empty_lists(matched.column("categories"))  # items without side information: []
    description = _empty_to_null(matched.column("description"))
    columns = {
        "item_id": ids,
        "title": title,
        "categories": categories,
        "text": _compose_text(title, categories, description),
        "train_count": pa.array(np.asarray(counts)[order].astype(np.int64)),
        "description": description,
    }
    for name in matched.column_names:
        if name not in columns and name != "item_id":
            columns[name] = matched.column(name)
    return pa.table(columns)


def align_users(user_ids: pa.Array, side: pa.Table, report: DataReport) -> pa.Table:
    """User attributes aligned with the users of the cleaned log (in their sequence order).

    Args:
        user_ids: Raw ids of the users of the cleaned log.
        side: Canonical user table (`user_id` + attributes).
        report: Notes about unmatched users are added here.

    Returns:
        `user_id` + attributes, one row per user.
    """
    where = pc.index_in(user_ids, value_set=as_array(side.column("user_id")))
    if where.null_count:
        report.notes.append(f"users: {where.null_count:,} of {len(user_ids):,} users have no attributes")
    matched = side.take(where)
    columns = {"user_id": user_ids}
    columns.update({name: matched.column(name) for name in matched.column_names if name != "user_id"})
    return pa.table(columns)


def _read_items(items, item_columns) -> pa.Table:
    if isinstance(items, (str, os.PathLike)):
        path = Path(items)
        if item_columns is None and path.is_file() and detect_amazon_meta(path):
            return read_amazon_items(path)
    mapping = ItemColumns.from_any(item_columns)
    id_columns = [mapping.item] if isinstance(mapping.item, str) else list(ITEM_CANDIDATES)
    table, source = read_side_table(items, "items", id_columns)
    resolved = resolve_item_columns(mapping, table.column_names, source)
    return canonical_items(table, resolved, mapping.category_separator, source)


def detect_amazon_meta(path: Path) -> bool:
    """Whether a JSON Lines file looks like Amazon Reviews item metadata (2018 or 2023)."""
    name = path.name.lower()
    if not any(s in name for s in (".json", ".jsonl", ".ndjson")):
        return False
    if detect_amazon(path) is not None:
        return False
    try:
        keys = set(json.loads(first_line(path).decode("utf-8")))
    except (ValueError, UnicodeDecodeError, TypeError):
        return False
    return bool({"asin", "parent_asin"} & keys) and bool({"title", "category", "categories", "main_category"} & keys)


def _read_users(users) -> pa.Table:
    table, source = read_side_table(users, "users", USER_CANDIDATES)
    lower = {name.lower(): name for name in table.column_names}
    column = next((lower[c] for c in USER_CANDIDATES if c in lower), None)
    if column is None:
        raise ValueError(
            f"{source}: no user id column in the user table; columns found: {table.column_names}. Name it `user_id`."
        )
    return canonical_users(table, column, source)


def build_behavior_data(
    events: Events,
    report: DataReport,
    split: SplitSpec | None,
    items: pa.Table | None = None,
    users: pa.Table | None = None,
) -> BehaviorData:
    """Split cleaned events and wrap everything as a `BehaviorData`.

    Args:
        events: Cleaned, sorted events.
        report: The cleaning report (split counts are added).
        split: The split protocol.
        items: Canonical item side table.
        users: Canonical user side table.

    Returns:
        The loaded data.
    """
    result = build_splits(events, split)
    report.split = result.description
    report.splits = result.counts
    report.notes.extend(result.notes)
    sequences = DatasetDict({name: make_dataset(table, split=name) for name, table in result.tables.items()})
    item_table = align_items(events.item_ids, result.train_item_counts, items, report)
    user_table = None if users is None else make_dataset(align_users(events.user_ids, users, report))
    return BehaviorData(sequences=sequences, items=make_dataset(item_table), users=user_table, report=report)


def load_behaviors(
    source,
    *,
    format: str | None = None,
    columns: ColumnMapping | dict | None = None,
    cleaning: CleaningConfig | None = None,
    split: SplitSpec | str | None = "leave_one_out",
    items=None,
    item_columns: ItemColumns | dict | None = None,
    users=None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
) -> BehaviorData:
    """Load a behaviour log into per-user, time-ordered sequences with honest splits.

    Args:
        source: A file or directory (CSV, TSV, Parquet file or shard directory, JSON Lines, RecBole `.inter`,
            MovieLens files as GroupLens ships them, Amazon Reviews JSON Lines; compressed files are fine), or an
            in-memory `pyarrow.Table` / `pandas.DataFrame` / `datasets.Dataset`.
        format: "csv", "tsv", "parquet", "jsonl", "recbole", "movielens" or "amazon"; inferred when `None`.
        columns: Which columns hold user, item, timestamp and the optional event type, rating, session
            (`ColumnMapping` or a dict with its field names); common names are detected when not given.
        cleaning: Cleaning steps (`CleaningConfig`); by default rows with missing ids are dropped and identical
            events deduplicated, both counted in the report.
        split: `LeaveOneOutSplit()` (default, also "leave_one_out"), `TemporalSplit(...)`, `UserSplit(...)`
            ("by_user"), or `None` for a single `train` split of whole sequences.
        items: Item side information (file or table) when the source does not bring its own (RecBole `.item`,
            MovieLens `u.item`/`movies.dat`/`movies.csv` are found automatically). Amazon metadata files are
            recognised.
        item_columns: Column names of `items` (`ItemColumns` or dict); detected when `None`.
        users: User attributes (file or table) with a `user_id` column, when the source does not bring them.
        encoding: Text encoding of CSV/TSV input.
        delimiter: Field separator of CSV/TSV input.

    Returns:
        A `BehaviorData` with `sequences`, `items`, `users` and `report`.

    Raises:
        FileNotFoundError: The source does not exist (or a directory holds no recognisable files).
        ValueError: Missing columns, unparseable or implausible timestamps, bad bytes, empty input, mixed id types,
            or nothing left after cleaning; the message says where and what to do.
    """
    split = parse_split(split)
    raw = read_log(source, format=format, columns=columns, encoding=encoding, delimiter=delimiter)
    item_table = _read_items(items, item_columns) if items is not None else raw.items
    user_table = _read_users(users) if users is not None else raw.users
    raw.items = raw.users = None
    events, report = prepare_events(raw, cleaning)  # releases raw.table once its columns are coded
    return build_behavior_data(events, report, split, item_table, user_table)
