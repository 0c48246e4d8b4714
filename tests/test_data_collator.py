"""`DataCollatorForInterest`: shapes, left padding, truncation, shifted labels, time features, eval batches."""

import pytest
import torch

from hf_interest.data import DataCollatorForInterest, SyntheticConfig, generate_synthetic_interests

TRAIN = [
    {"input_ids": [5, 6, 7, 8], "timestamps": [10, 20, 35, 35], "user_id": "u"},
    {"input_ids": [9, 4], "timestamps": [100, 160]},
    {"input_ids": [3], "timestamps": [7]},
]


def test_train_batch_shapes_padding_and_shifted_labels():
    batch = DataCollatorForInterest(mode="train")(TRAIN)
    assert set(batch) == {"input_ids", "attention_mask", "timestamps", "time_gaps", "labels"}
    for value in batch.values():
        assert value.shape == (3, 3) and value.dtype == torch.int64
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 9], [0, 0, 0]]
    assert batch["labels"].tolist() == [[6, 7, 8], [-100, -100, 4], [-100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert batch["timestamps"].tolist() == [[10, 20, 35], [0, 0, 100], [0, 0, 0]]
    assert batch["time_gaps"].tolist() == [[0, 10, 15], [0, 0, 0], [0, 0, 0]]


def test_truncation_keeps_the_newest_events_and_true_gaps():
    collate = DataCollatorForInterest(mode="train", max_length=2)
    batch = collate(TRAIN)
    assert batch["input_ids"].tolist()[0] == [6, 7]  # kept events 6, 7, 8 -> inputs 6, 7, labels 7, 8
    assert batch["labels"].tolist()[0] == [7, 8]
    assert batch["time_gaps"].tolist()[0] == [10, 15]  # the gap of 6 comes from the truncated event 5
    eval_batch = DataCollatorForInterest(mode="eval", max_length=2)(
        [
            {"input_ids": [1, 2, 3], "timestamps": [1, 2, 4], "labels": 9},
            {"input_ids": [4], "labels": 8, "timestamps": [3]},
        ]
    )
    assert eval_batch["input_ids"].tolist() == [[2, 3], [0, 4]]
    assert eval_batch["time_gaps"].tolist() == [[1, 2], [0, 0]]


def test_eval_batch_shape():
    features = [
        {"input_ids": [4, 5, 6], "timestamps": [1, 2, 3], "labels": 7},
        {"input_ids": [8], "timestamps": [9], "labels": 3},
    ]
    batch = DataCollatorForInterest(mode="eval", pad_token_id=0)(features)
    assert batch["input_ids"].shape == (2, 3) and batch["labels"].shape == (2,)
    assert batch["input_ids"].tolist() == [[4, 5, 6], [0, 0, 8]]
    assert batch["labels"].tolist() == [7, 3]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="needs a 'labels'"):
        DataCollatorForInterest(mode="eval")([{"input_ids": [1]}])


def test_options():
    batch = DataCollatorForInterest(pad_to_multiple_of=8, pad_token_id=0, return_time_gaps=False)(TRAIN)
    assert batch["input_ids"].shape == (3, 8) and "time_gaps" not in batch
    batch = DataCollatorForInterest(ignore_label_ids=(1,))([{"input_ids": [5, 1, 6]}])
    assert batch["labels"].tolist() == [[-100, 6]]
    assert batch["timestamps"].tolist() == [[0, 0]]  # no times in the features: zeros
    with pytest.raises(ValueError, match="no 'input_ids'"):
        DataCollatorForInterest()([{"item_ids": ["a"]}])
    with pytest.raises(ValueError, match="aligned"):
        DataCollatorForInterest()([{"input_ids": [1, 2], "timestamps": [1]}])


def test_collates_encoded_synthetic_splits_with_a_dataloader():
    data = generate_synthetic_interests(SyntheticConfig.small()).to_behavior_data()
    vocab = {item: k + 3 for k, item in enumerate(data.item_ids)}
    encoded, unknown = data.encode(vocab, unk_id=1)
    assert unknown == 0
    loader = torch.utils.data.DataLoader(
        encoded["train"].with_format(columns=["input_ids", "timestamps"]),
        batch_size=16,
        collate_fn=DataCollatorForInterest(max_length=10),
    )
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (16, 10) and batch["labels"].shape == (16, 10)
    valid = batch["labels"] != -100
    assert torch.equal(valid, batch["attention_mask"].bool())
    eval_loader = torch.utils.data.DataLoader(
        encoded["test"], batch_size=8, collate_fn=DataCollatorForInterest(mode="eval", max_length=10)
    )
    batch = next(iter(eval_loader))
    assert batch["labels"].shape == (8,) and batch["input_ids"].shape[0] == 8
