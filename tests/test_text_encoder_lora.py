"""Tests of joint training of the item text encoder with LoRA (hf_interest.text_tower): gradients reach the adapters
and the model only, the buffer after the final refresh is a fresh encoding with the adapted encoder (also through the
saved adapter), the checkpoint loads and serves without the encoder, and the training script's flags."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TEXT_ENCODER_SIZE, tiny_config, tiny_train_args

from hf_interest import InterestConfig, InterestForNextItemPrediction
from hf_interest.text_encoding import encode_item_texts, encode_texts
from hf_interest.text_tower import (
    JointTextEncoderTraining,
    add_text_encoder_lora,
    load_adapted_text_encoder,
    tokenize_item_texts,
)

ROOT = Path(__file__).resolve().parents[1]
TEXT_SIZE = TEXT_ENCODER_SIZE  # the tiny_text_encoder fixture's width
NUM_ITEMS = 12
WORDS = ["space", "opera", "crime", "snow", "comedy", "war", "love", "robot", "ghost"]
# special tokens (0-2) and item 11 have no text: they keep zero rows and are never encoded
TEXTS = [None, None, None] + [f"{WORDS[i % 9]} {WORDS[(2 * i) % 9]} story {i}" for i in range(8)] + [None]


def build(tiny_text_encoder, representation="text", **joint_kwargs):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    config = tiny_config(
        num_items=NUM_ITEMS,
        max_position_embeddings=8,
        item_representation=representation,
        text_embedding_size=TEXT_SIZE,
        text_encoder=tiny_text_encoder,
    )
    model = InterestForNextItemPrediction(config)
    model.set_item_text_embeddings(encode_item_texts(TEXTS, encoder=tiny_text_encoder, show_progress=False))
    tokenizer = AutoTokenizer.from_pretrained(tiny_text_encoder)
    # init_lora_weights=False: B is not zero, so the adapted encoder differs from the base from the start
    encoder = add_text_encoder_lora(AutoModel.from_pretrained(tiny_text_encoder), r=2, init_lora_weights=False)
    joint = JointTextEncoderTraining(model, encoder, tokenize_item_texts(TEXTS, tokenizer), **joint_kwargs)
    return joint, tokenizer


def batch():
    input_ids = torch.tensor([[0, 3, 4, 5], [6, 7, 11, 8]])
    labels = torch.tensor([[-100, 4, 5, 9], [7, 11, 8, 10]])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": labels}


@pytest.mark.parametrize("representation", ["text", "id+text"])
def test_gradients_reach_the_adapters_and_the_model_only(tiny_text_encoder, representation):
    joint, _ = build(tiny_text_encoder, representation)
    joint.train()
    cached = joint.model.model.item_text_embeddings.clone()
    joint(**batch()).loss.backward()
    lora = {n: p for n, p in joint.encoder.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values()), "every adapter gets a gradient"
    frozen = [(n, p) for n, p in joint.encoder.named_parameters() if "lora_" not in n]
    assert frozen and all(not p.requires_grad and p.grad is None for _, p in frozen)
    assert joint.model.model.text_projection.weight.grad.abs().sum() > 0  # the model trains as before
    # the batch's items with text (3-10; 11 has none) were re-encoded into the cache; the others are untouched
    moved = (joint.model.model.item_text_embeddings - cached).abs().sum(1) > 0
    assert moved.nonzero().squeeze(1).tolist() == list(range(3, 11))
    assert torch.equal(joint.model.model.item_text_embeddings[11], torch.zeros(TEXT_SIZE))


def test_max_items_per_step_bounds_the_items_re_encoded(tiny_text_encoder):
    joint, _ = build(tiny_text_encoder, max_items_per_step=3)
    joint.train()
    cached = joint.model.model.item_text_embeddings.clone()
    joint(**batch()).loss.backward()
    assert int(((joint.model.model.item_text_embeddings - cached).abs().sum(1) > 0).sum()) == 3


def test_eval_mode_is_the_models_forward_and_the_buffer_is_restored(tiny_text_encoder):
    joint, _ = build(tiny_text_encoder)
    joint.eval()
    with torch.no_grad():
        torch.testing.assert_close(joint(**batch()).logits, joint.model(**batch()).logits)
    joint.train()
    buffer = joint.model.model.item_text_embeddings
    joint(**batch())
    assert joint.model.model.item_text_embeddings is buffer  # the swapped-in table does not stay
    assert not buffer.requires_grad


def test_refresh_is_a_fresh_encoding_and_the_checkpoint_serves_without_the_encoder(tiny_text_encoder, tmp_path):
    joint, tokenizer = build(tiny_text_encoder, "id+text")
    joint.train()
    optimizer = torch.optim.AdamW([p for p in joint.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        joint(**batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    before = joint.model.model.item_text_embeddings.clone()
    refreshed = joint.refresh_item_text_embeddings()
    assert refreshed is joint.model.model.item_text_embeddings
    assert not torch.allclose(refreshed, before)  # the last step's rows were one update behind
    # a fresh encoding with the adapted encoder, by the inference code path
    fresh = encode_item_texts(TEXTS, encoder=joint.encoder, tokenizer=tokenizer, show_progress=False)
    torch.testing.assert_close(refreshed, fresh, rtol=1e-5, atol=1e-6)
    # and it differs from the base encoder's: the adapters changed the embeddings
    assert not torch.allclose(refreshed, encode_item_texts(TEXTS, encoder=tiny_text_encoder, show_progress=False))

    joint.model.save_pretrained(tmp_path / "model")
    joint.save_adapter(tmp_path / "model" / "text_encoder_adapter", tokenizer)
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path / "model").eval()
    assert not any("encoder" in key for key in loaded.state_dict())  # nothing of the encoder in the model
    torch.testing.assert_close(loaded.model.item_text_embeddings, refreshed)
    joint.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch()).logits, joint.model(**batch()).logits)
    # the saved adapter encodes new texts as the trained encoder does
    encoder, adapter_tokenizer = load_adapted_text_encoder(tmp_path / "model" / "text_encoder_adapter")
    new = ["robot crime story 99", "snow"]
    torch.testing.assert_close(
        encode_texts(new, encoder=encoder, tokenizer=adapter_tokenizer, show_progress=False),
        encode_texts(new, encoder=joint.encoder, tokenizer=tokenizer, show_progress=False),
        rtol=1e-5,
        atol=1e-6,
    )


def test_bad_input_is_refused(tiny_text_encoder):
    from transformers import AutoModel, AutoTokenizer

    with pytest.raises(ValueError, match="no Linear module named"):
        add_text_encoder_lora(AutoModel.from_pretrained(tiny_text_encoder), target_modules=("q_proj",))
    with pytest.raises(ValueError, match="r must be a positive integer"):
        add_text_encoder_lora(AutoModel.from_pretrained(tiny_text_encoder), r=0)
    joint, tokenizer = build(tiny_text_encoder)
    with pytest.raises(ValueError, match="one text per vocabulary index"):
        JointTextEncoderTraining(joint.model, joint.encoder, tokenize_item_texts(TEXTS[:-1], tokenizer))
    id_only = InterestForNextItemPrediction(InterestConfig(num_items=NUM_ITEMS, hidden_size=16, num_hidden_layers=1))
    with pytest.raises(ValueError, match="no text tower"):
        JointTextEncoderTraining(id_only, joint.encoder, tokenize_item_texts(TEXTS, tokenizer))
    with pytest.raises(ValueError, match="a loaded encoder needs its tokenizer"):
        encode_texts(["x"], encoder=joint.encoder)
    with pytest.raises(ValueError, match="no item has a text"):
        tokenize_item_texts([None, None], AutoTokenizer.from_pretrained(tiny_text_encoder))


def test_train_script_text_encoder_lora(tmp_path, tiny_text_encoder):
    out = tmp_path / "run"
    args = tiny_train_args(
        40,
        16,
        2,
        "--item_representation",
        "id+text",
        "--text_encoder",
        tiny_text_encoder,
        "--text_encoder_lora_r",
        "2",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "hub_scripts" / "train.py"), *args, "--output_dir", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "text encoder LoRA r=2" in run.stdout
    adapter = out / "text_encoder_adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer_config.json").is_file()
    # the saved buffer is the adapted encoder's encoding of the items (the best epoch's adapter is the one saved)
    from hf_interest import ItemTokenizer
    from hf_interest.text_encoding import item_texts
    from hf_interest.training import DataArguments, load_data

    data = load_data(DataArguments(dataset="synthetic", synthetic_num_users=40, synthetic_num_items=30, max_length=24))
    model = InterestForNextItemPrediction.from_pretrained(out)
    tokenizer = ItemTokenizer.from_pretrained(out)
    encoder, encoder_tokenizer = load_adapted_text_encoder(adapter)
    fresh = encode_item_texts(item_texts(data.items, tokenizer), encoder=encoder, tokenizer=encoder_tokenizer)
    torch.testing.assert_close(model.model.item_text_embeddings, fresh, rtol=1e-5, atol=1e-6)
    base = encode_item_texts(item_texts(data.items, tokenizer), encoder=tiny_text_encoder, show_progress=False)
    assert not torch.allclose(model.model.item_text_embeddings, base, atol=1e-6)
