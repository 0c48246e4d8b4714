"""Item vocabulary order, train counts, and the vectorised encoder that feeds the model."""

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import DatasetDict

from hf_interest import ItemTokenizer
from hf_interest.data import encode_sequences, item_vocabulary, load_behaviors


def small_data():
    df = pd.DataFrame(
        {
            "user_id": ["u"] * 5 + ["v"] * 4 + ["w"] * 3,
            "item_id": ["b", "a", "c", "b", "z", "a", "b", "a", "y", "b", "c", "x"],
            "timestamp": list(range(12)),
        }
    )
    return load_behaviors(df)


def test_vocabulary_order_is_train_count_then_id():
    data = small_data()
    # train: u -> b a c, v -> a b, w -> b ; targets/validation items y, z, x, ... appear with count 0
    ids, counts = item_vocabulary(data.sequences)
    assert ids[:3] == ["b", "a", "c"] and list(counts[:3]) == [3, 2, 1]
    assert ids[3:] == sorted(ids[3:]) and set(ids[3:]) == {"x", "y", "z"} and not counts[3:].any()
    assert data.item_ids == ids
    np.testing.assert_array_equal(data.item_counts, counts)
    assert data.items["item_id"][:] == ids


def test_encode_sequences_adds_input_ids_and_labels():
    data = small_data()
    vocab = {item: k + 3 for k, item in enumerate(data.item_ids)}
    encoded, unknown = encode_sequences(data.sequences, vocab, unk_id=1)
    assert unknown == 0
    for name, dataset in encoded.items():
        for row in dataset.to_list():
            assert row["input_ids"] == [vocab[i] for i in row["item_ids"]]
            if name != "train":
                assert row["labels"] == vocab[row["target_item_id"]]
        assert dataset.features["input_ids"].feature.dtype == "int64"
    assert "labels" not in encoded["train"].column_names
    assert encoded["test"].features["labels"].dtype == "int64"


def test_unknown_items_are_counted_not_fatal():
    data = small_data()
    vocab = {"b": 3, "a": 4}
    encoded, unknown = data.encode(vocab, unk_id=1)
    flat = [i for split in data.sequences.values() for seq in split["item_ids"][:] for i in seq]
    targets = [t for name in ("validation", "test") for t in data.sequences[name]["target_item_id"][:]]
    assert unknown == sum(i not in vocab for i in flat + targets)
    assert encoded["train"][0]["input_ids"] == [3, 4, 1]


def test_encode_works_on_select_views_and_sliced_lists():
    data = small_data()
    view = DatasetDict({"test": data.sequences["test"].select([2, 0])})
    vocab = {item: k + 3 for k, item in enumerate(data.item_ids)}
    encoded, _ = encode_sequences(view, vocab, 1)
    assert encoded["test"]["user_id"][:] == [
        data.sequences["test"][2]["user_id"],
        data.sequences["test"][0]["user_id"],
    ]
    assert encoded["test"][0]["input_ids"] == [vocab[i] for i in data.sequences["test"][2]["item_ids"]]


def test_item_tokenizer_builds_from_the_item_list():
    data = small_data()
    tokenizer = ItemTokenizer.from_items(data.item_ids)
    vocab = tokenizer.get_vocab()
    assert vocab[data.item_ids[0]] == 3  # [PAD], [UNK], [MASK] first
    encoded, unknown = data.encode(vocab, unk_id=tokenizer.unk_token_id)
    assert unknown == 0
    row = encoded["test"][0]
    assert tokenizer.decode_items(row["input_ids"]) == row["item_ids"]


def test_items_table_is_aligned_and_typed():
    data = small_data()
    assert data.items.features["categories"].feature.dtype == "string"
    assert data.items.features["train_count"].dtype == "int64"
    assert pa.types.is_string(data.items.data.schema.field("text").type)
