"""Tests of the item vocabulary: encoding, left padding and truncation, unknown items, decoding, save/load."""

import json

import pytest
import torch
from transformers import AutoTokenizer

import hf_interest  # noqa: F401  (registers AutoTokenizer)
from hf_interest import ItemTokenizer


@pytest.fixture
def tokenizer():
    return ItemTokenizer.from_items(["a", "b", "c", 42, "d"], model_max_length=4)


def test_vocabulary_layout(tokenizer):
    assert tokenizer.get_vocab() == {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "a": 3, "b": 4, "c": 5, "42": 6, "d": 7}
    assert len(tokenizer) == tokenizer.vocab_size == 8
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.mask_token_id) == (0, 1, 2)
    assert tokenizer.items == ["a", "b", "c", "42", "d"]
    assert tokenizer.padding_side == "left" and tokenizer.truncation_side == "left"


def test_single_history_and_batch_are_left_padded(tokenizer):
    single = tokenizer(["a", "b"])
    assert single["input_ids"] == [[3, 4]] and single["attention_mask"] == [[1, 1]]
    batch = tokenizer([["a", "b", "c"], ["d"], []], timestamps=[[1, 2, 3], [9], []], return_tensors="pt")
    assert batch["input_ids"].tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert batch["timestamps"].tolist() == [[1, 2, 3], [0, 0, 9], [0, 0, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_truncation_keeps_the_newest_events_only_when_asked(tokenizer):
    history, times = ["a", "b", "c", "42", "d", "a"], [1, 2, 3, 4, 5, 6]
    whole = tokenizer([history], timestamps=[times])  # every event: recommend excludes all of them
    assert whole["input_ids"] == [[3, 4, 5, 6, 7, 3]] and whole["timestamps"] == [times]
    out = tokenizer([history], timestamps=[times], truncation=True)
    assert out["input_ids"] == [[5, 6, 7, 3]]  # model_max_length=4: the last four
    assert out["timestamps"] == [[3, 4, 5, 6]]
    assert tokenizer([["a", "b", "c"]], max_length=2)["input_ids"] == [[4, 5]]


def test_unknown_items_map_to_unk_and_are_counted(tokenizer):
    assert tokenizer.num_unknown_items == 0
    out = tokenizer([["a", "zzz", "yyy"], [42]])
    assert out["input_ids"] == [[3, 1, 1], [0, 0, 6]]  # ints are looked up by their string form
    assert tokenizer.num_unknown_items == 2
    assert tokenizer.encode_items(["nope"]) == [1]
    assert tokenizer.num_unknown_items == 3


def test_decode_items(tokenizer):
    assert tokenizer.decode_items([3, 6, 0, 1, -1]) == ["a", "42"]
    assert tokenizer.decode_items(torch.tensor([7, 1]), skip_special_tokens=False) == ["d", "[UNK]"]
    assert tokenizer.batch_decode_items(torch.tensor([[3, 4], [5, -1]])) == [["a", "b"], ["c"]]
    with pytest.raises(ValueError, match="outside the item vocabulary"):
        tokenizer.decode_items([99])


def test_add_items_keeps_existing_indices(tokenizer):
    before = tokenizer.get_vocab()
    assert tokenizer.add_items(["e", "a", "f", "e"]) == 2
    after = tokenizer.get_vocab()
    assert {k: after[k] for k in before} == before
    assert after["e"] == 8 and after["f"] == 9 and len(tokenizer) == 10


def test_save_and_load_with_auto_tokenizer(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    vocab = json.loads((tmp_path / "item_vocab.json").read_text())
    assert vocab == ["[PAD]", "[UNK]", "[MASK]", "a", "b", "c", "42", "d"]
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, ItemTokenizer)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.model_max_length == 4 and loaded.padding_side == "left"
    assert loaded([["b", "c"], ["a"]])["input_ids"] == tokenizer([["b", "c"], ["a"]])["input_ids"]


def test_bad_vocabularies_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="appears twice"):
        ItemTokenizer.from_items(["a", "a"])
    with pytest.raises(ValueError, match="clash with the special tokens"):
        ItemTokenizer.from_items(["a", "[PAD]"])
    bad = tmp_path / "item_vocab.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        ItemTokenizer(vocab_file=str(bad))
    bad.write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(ValueError, match="must start with the special tokens"):
        ItemTokenizer(vocab_file=str(bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ItemTokenizer(vocab_file=str(tmp_path / "missing.json"))


def test_bad_calls_are_clear_errors(tokenizer):
    with pytest.raises(ValueError, match="single string"):
        tokenizer("a b")
    with pytest.raises(ValueError, match="same shape"):
        tokenizer([["a", "b"]], timestamps=[[1]])
    with pytest.raises(TypeError, match="unexpected arguments"):
        tokenizer([["a"]], padding="max_length")
