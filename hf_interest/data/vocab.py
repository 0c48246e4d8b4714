"""The item vocabulary seen from the data side: its order, train counts, and vectorised encoding of sequences.

The vocabulary itself (`ItemTokenizer`, saved with the model) lives in `hf_interest.tokenization_interest`; the
data layer only decides the *order* of the real items and turns id strings into indices in bulk:

- order: by descending number of training events, then by id (byte order of the UTF-8 text), so the most
  popular items get the smallest indices and the order is the same on every run and every machine;
- `item_vocabulary(dataset_dict)` returns that list and the counts, from any sequence `DatasetDict` (also one
  loaded from the Hub), covering every item that occurs in any split (an item seen only as a test target still
  gets an index, with a train count of 0);
- `encode_sequences(dataset_dict, vocab, unk_id)` adds `input_ids` (and `labels` on evaluation splits) with one
  Arrow hash lookup over the flattened lists; unknown ids become `unk_id` and are counted, never crashed on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable

from ._arrow import offsets_from_lengths

logger = logging.getLogger(__name__)

TARGET_COLUMN = "target_item_id"


def vocabulary_order(item_ids: pa.Array, counts: np.ndarray) -> np.ndarray:
    """Order of items in the vocabulary: descending `counts`, ties by id.

    Args:
        item_ids: Raw item ids (strings).
        counts: Training events of each item.

    Returns:
        Indices into `item_ids`, in vocabulary order.
    """
    table = pa.table({"id": item_ids, "count": pa.array(np.asarray(counts, dtype=np.int64))})
    return pc.sort_indices(table, sort_keys=[("count", "descending"), ("id", "ascending")]).to_numpy()


def dataset_table(dataset: Dataset) -> pa.Table:
    """The Arrow table behind a `datasets.Dataset`, with any `select`/`shuffle` indices applied."""
    if dataset._indices is not None:  # a select()/shuffle() view: materialise it once
        dataset = dataset.flatten_indices()
    return dataset.data.table


def make_dataset(table: pa.Table, split: str | None = None) -> Dataset:
    """Wrap an Arrow table as a `datasets.Dataset` without copying or hashing the data.

    `datasets` would otherwise fingerprint an in-memory table by hashing all of it (about a second per 10 million
    events); a random fingerprint is what it uses itself for transforms it cannot hash.

    Args:
        table: The table.
        split: Split name recorded in the dataset info.

    Returns:
        The dataset.
    """
    return Dataset(InMemoryTable(table), split=split, fingerprint=generate_random_fingerprint())


def _flat_values(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.chunked_array([pc.list_flatten(chunk) for chunk in column.chunks], type=column.type.value_type)


def item_vocabulary(dataset_dict: DatasetDict, train_split: str = "train") -> tuple[list[str], np.ndarray]:
    """Item ids in vocabulary order, and their training counts, from a sequence `DatasetDict`.

    Args:
        dataset_dict: Sequences with `item_ids` (and `target_item_id` on evaluation splits).
        train_split: Split whose events are counted.

    Returns:
        `(item_ids, counts)`: every item occurring in any split, by descending train count then id, and the
        train count of each (`int64`, aligned).
    """
    pieces = []
    for _name, dataset in dataset_dict.items():
        table = dataset_table(dataset)
        pieces.extend(_flat_values(table.column("item_ids")).chunks)
        if TARGET_COLUMN in table.column_names:
            pieces.extend(table.column(TARGET_COLUMN).chunks)
    all_ids = pc.unique(pa.chunked_array(pieces, type=pa.string())) if pieces else pa.array([], pa.string())
    counts = np.zeros(len(all_ids), dtype=np.int64)
    if train_split in dataset_dict:
        train_values = _flat_values(dataset_table(dataset_dict[train_split]).column("item_ids"))
        if len(train_values):
            value_counts = pc.value_counts(train_values)
            where = pc.index_in(value_counts.field("values"), value_set=all_ids).to_numpy()
            counts[where] = value_counts.field("counts").to_numpy()
    order = vocabulary_order(all_ids, counts)
    return all_ids.take(pa.array(order)).to_pylist(), counts[order]


def _lookup(
    values: pa.Array | pa.ChunkedArray, keys: pa.Array, ids: np.ndarray, unk_id: int
) -> tuple[np.ndarray, int]:
    index = pc.index_in(values, value_set=keys)
    unknown = index.null_count
    index = pc.fill_null(index, -1)
    index = index.to_numpy() if isinstance(index, pa.Array) else index.combine_chunks().to_numpy()
    out = np.where(index >= 0, ids[np.maximum(index, 0)], unk_id).astype(np.int64)
    return out, unknown


def encode_sequences(
    dataset_dict: DatasetDict, vocab: Mapping[str, int], unk_id: int, *, label_column: str = "labels"
) -> tuple[DatasetDict, int]:
    """Add vocabulary indices to every split: `input_ids` from `item_ids`, and `labels` from `target_item_id`.

    Lists are flattened, looked up with one Arrow hash join (`pyarrow.compute.index_in`) and rebuilt with the same
    offsets, so this runs at Arrow speed whatever the number of events.

    Args:
        dataset_dict: Sequences as produced by `load_behaviors`.
        vocab: Raw item id -> index (e.g. `tokenizer.get_vocab()`).
        unk_id: Index for ids not in `vocab` (the tokenizer's [UNK], 1).
        label_column: Name of the label column added on splits with a target.

    Returns:
        `(encoded, n_unknown)`: a new `DatasetDict` with `input_ids` (`list<int64>`) and, on evaluation splits,
        `labels` (`int64`), and the number of item ids (history events and targets, all splits) that were not in
        `vocab` and became `unk_id`.
    """
    if not isinstance(unk_id, (int, np.integer)):
        raise ValueError(f"unk_id must be an integer index, got {unk_id!r}.")
    keys = pa.array([str(k) for k in vocab], type=pa.string())
    try:
        ids = np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))
    except (TypeError, ValueError):
        raise ValueError("vocab must map item ids to integer indices.") from None
    encoded, total_unknown = {}, 0
    for name, dataset in dataset_dict.items():
        table = dataset_table(dataset)
        if "item_ids" not in table.column_names:
            raise ValueError(f"Split {name!r} has no 'item_ids' column (columns: {table.column_names}).")
        chunks = []
        for chunk in table.column("item_ids").chunks:
            lengths = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy()
            flat, unknown = _lookup(pc.list_flatten(chunk), keys, ids, unk_id)
            total_unknown += unknown
            chunks.append(pa.ListArray.from_arrays(pa.array(offsets_from_lengths(lengths)), pa.array(flat)))
        column = pa.chunked_array(chunks, type=pa.list_(pa.int64()))
        table = _set_column(table, "input_ids", column)
        if TARGET_COLUMN in table.column_names:
            labels, unknown = _lookup(table.column(TARGET_COLUMN), keys, ids, unk_id)
            total_unknown += unknown
            table = _set_column(table, label_column, pa.array(labels))
        encoded[name] = make_dataset(table, split=name)
    if total_unknown:
        logger.warning(
            "encode_sequences: %d item ids are not in the vocabulary and were mapped to %d.", total_unknown, unk_id
        )
    return DatasetDict(encoded), total_unknown


def _set_column(table: pa.Table, name: str, column) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.schema.get_field_index(name), name, column)
    return table.append_column(name, column)
