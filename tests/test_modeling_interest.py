"""Tests of the model contract: shapes, save/load (with and without remote code), causality, padding, init, recommend,
peft LoRA and transformers.Trainer. Tiny configs, CPU, seconds."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny import tiny_config
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

import hf_interest
from hf_interest import (
    DEFAULT_LORA_TARGET_MODULES,
    InterestConfig,
    InterestForNextItemPrediction,
    InterestModel,
    ItemTokenizer,
)
from hf_interest.modeling_interest import relative_time_buckets, time_gap_buckets
from hf_interest.training.arguments import lora_targets


class InterestModelTester:
    """Builds a tiny config and random inputs, in the manner of transformers' ModelTester classes."""

    def __init__(
        self, batch_size=3, seq_len=7, num_items=50, hidden_size=16, num_hidden_layers=2, num_heads=2, block_type=None
    ):
        self.batch_size, self.seq_len, self.block_type = batch_size, seq_len, block_type
        self.num_items, self.hidden_size, self.num_hidden_layers = num_items, hidden_size, num_hidden_layers
        self.num_heads = num_heads

    def get_config(self, **overrides) -> InterestConfig:
        kwargs = {
            "num_items": self.num_items,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_heads,
            "max_position_embeddings": 20,
            "num_time_buckets": 16,
        }
        if self.block_type is not None:
            kwargs["block_type"] = self.block_type
        kwargs.update(overrides)
        return tiny_config(**kwargs)

    def prepare_inputs(self, seed=0):
        generator = torch.Generator().manual_seed(seed)
        input_ids = torch.randint(3, self.num_items, (self.batch_size, self.seq_len), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, :3] = 0  # a left-padded row
        attention_mask[2, :] = 0  # a fully padded row
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
        gaps = torch.randint(0, 10**6, (self.batch_size, self.seq_len), generator=generator)
        timestamps = (1_600_000_000 + gaps.cumsum(dim=1)).masked_fill(attention_mask == 0, 0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "timestamps": timestamps}


@pytest.fixture(params=[None, "hstu"], ids=["transformer", "hstu"])
def tester(request):
    """Every test that takes `tester` runs for both `block_type`s (None: the config's default)."""
    return InterestModelTester(block_type=request.param)


def _eval_model(cls, config, seed=0):
    torch.manual_seed(seed)
    return cls(config).eval()


# --- shapes -----------------------------------------------------------------------------------------------------


def test_backbone_output_shapes(tester):
    config = tester.get_config()
    model = _eval_model(InterestModel, config)
    inputs = tester.prepare_inputs()
    out = model(**inputs, output_hidden_states=True, output_attentions=True)
    B, T, H = tester.batch_size, tester.seq_len, tester.hidden_size
    assert out.last_hidden_state.shape == (B, T, H)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (B, T, H) for h in out.hidden_states)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.attentions) == config.num_hidden_layers
    assert all(a.shape == (B, config.num_attention_heads, T, T) for a in out.attentions)
    later_or_padding = ~torch.ones(T, T, dtype=torch.bool).tril() | (inputs["attention_mask"] == 0)[:, None, None, :]
    later_or_padding &= ~torch.eye(T, dtype=torch.bool)  # every position may attend to itself
    for weights in out.attentions:
        assert (weights.masked_select(later_or_padding) == 0).all()
        if config.block_type == "transformer":  # probabilities over real keys sum to one for every row
            torch.testing.assert_close(weights.sum(-1), torch.ones(B, config.num_attention_heads, T))
    as_tuple = model(**inputs, return_dict=False)
    assert torch.equal(as_tuple[0], model(**inputs).last_hidden_state)


def test_head_output_shapes_and_loss(tester):
    config = tester.get_config(loss_exclude_seen=False)  # plain softmax (test_loss_exclude_seen.py: the other)
    model = _eval_model(InterestForNextItemPrediction, config)
    inputs = tester.prepare_inputs()
    labels = torch.randint(3, config.num_items, (tester.batch_size, tester.seq_len))
    labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)
    out = model(**inputs, labels=labels)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.logits.shape == (tester.batch_size, tester.seq_len, config.num_items)
    assert out.last_hidden_state.shape == (tester.batch_size, tester.seq_len, config.hidden_size)
    assert model(**inputs, logits_to_keep=1).logits.shape == (tester.batch_size, 1, config.num_items)
    assert model(**inputs).loss is None
    loss_only_last = model(**inputs, labels=labels, logits_to_keep=1).loss
    torch.testing.assert_close(loss_only_last, out.loss)  # the loss does not depend on logits_to_keep
    # a 1-D tensor lists the positions (transformers' convention); an empty one, what training passes, keeps none
    positions = torch.tensor([0, tester.seq_len - 2])
    torch.testing.assert_close(model(**inputs, logits_to_keep=positions).logits, out.logits[:, positions])
    none_kept = model(**inputs, labels=labels, logits_to_keep=torch.empty(0, dtype=torch.long))
    assert none_kept.logits.shape == (tester.batch_size, 0, config.num_items)
    torch.testing.assert_close(none_kept.loss, out.loss)

    # the loss is the mean cross-entropy over labelled positions, special columns excluded
    labelled = labels >= 3
    expected = torch.nn.functional.cross_entropy(out.logits[labelled][:, 3:], labels[labelled] - 3)
    torch.testing.assert_close(out.loss, expected)

    as_tuple = model(**inputs, labels=labels, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.loss)
    assert torch.equal(as_tuple[1], out.logits)


def test_one_dimensional_labels_score_the_last_real_position(tester):
    config = tester.get_config()
    model = _eval_model(InterestForNextItemPrediction, config)
    inputs = tester.prepare_inputs()
    inputs["attention_mask"][2, -2:] = 1  # give the padded row two events
    inputs["input_ids"][2, -2:] = torch.tensor([5, 6])
    targets = torch.tensor([7, 8, 9])
    full = torch.full((tester.batch_size, tester.seq_len), -100)
    full[:, -1] = targets
    torch.testing.assert_close(model(**inputs, labels=targets).loss, model(**inputs, labels=full).loss)


def test_all_ignored_labels_give_zero_loss_with_gradient(tester):
    model = InterestForNextItemPrediction(tester.get_config())
    inputs = tester.prepare_inputs()
    labels = torch.full((tester.batch_size, tester.seq_len), -100)
    loss = model(**inputs, labels=labels).loss
    assert loss.item() == 0.0
    loss.backward()  # a graph exists, so a training loop does not crash on such a batch


# --- save / load ------------------------------------------------------------------------------------------------


def _tiny_checkpoint(tmp_path, tester):
    config = tester.get_config()
    model = _eval_model(InterestForNextItemPrediction, config, seed=1)
    tokenizer = ItemTokenizer.from_items([f"item-{i}" for i in range(config.num_items - 3)])
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, folder


def test_checkpoint_folder_layout(tmp_path, tester):
    _, _, folder = _tiny_checkpoint(tmp_path, tester)
    files = set(os.listdir(folder))
    expected = {
        "config.json",
        "model.safetensors",
        "configuration_interest.py",
        "checkpoint_interest.py",
        "modeling_interest.py",
        "tokenization_interest.py",
        "tokenizer_config.json",
        "item_vocab.json",
    }
    assert expected <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "interest"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_interest.InterestConfig",
        "AutoModel": "modeling_interest.InterestModel",
        "AutoModelForCausalLM": "modeling_interest.InterestForNextItemPrediction",
    }
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][0] == "tokenization_interest.ItemTokenizer"

    # The modeling file imports nothing from the project except its configuration and the checkpoint checks, both
    # relatively (transformers ships relative imports with the remote code); those import only the configuration.
    def project_imports(name):
        source = (folder / name).read_text()
        return [
            line
            for line in source.splitlines()
            if line.startswith(("from .", "import hf_interest", "from hf_interest"))
        ]

    assert project_imports("modeling_interest.py") == [
        "from .checkpoint_interest import InterestCheckpointMixin",
        "from .configuration_interest import InterestConfig",
    ]
    assert project_imports("checkpoint_interest.py") == ["from .configuration_interest import InterestConfig"]
    assert project_imports("configuration_interest.py") == []


def test_save_load_round_trip_gives_identical_outputs(tmp_path, tester):
    model, tokenizer, folder = _tiny_checkpoint(tmp_path, tester)
    inputs = tester.prepare_inputs()
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(loaded) is InterestForNextItemPrediction
    assert loaded.item_head.weight is loaded.model.item_embeddings.weight  # still tied after loading
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    backbone = AutoModel.from_pretrained(folder).eval()
    assert type(backbone) is InterestModel
    assert torch.equal(backbone(**inputs).last_hidden_state, model(**inputs).last_hidden_state)
    assert type(AutoConfig.from_pretrained(folder)) is InterestConfig
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(loaded_tokenizer) is ItemTokenizer
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()


def test_item_output_residual_starts_as_the_tied_model_and_scores_with_the_summed_table(tmp_path, tester):
    """`item_output_residual`: zero at the start (the tied model's scores), then u . (e_i + r_i) + b_i everywhere the
    model scores items: the logits, the output vectors serving and the sampled softmax read, and after a reload."""
    torch.manual_seed(3)
    plain = InterestForNextItemPrediction(tester.get_config()).eval()
    torch.manual_seed(3)
    model = InterestForNextItemPrediction(tester.get_config(item_output_residual=True)).eval()
    assert model.item_output_residual.weight.abs().max() == 0
    assert model.item_head.weight is model.model.item_embeddings.weight  # still tied
    inputs = tester.prepare_inputs()
    torch.testing.assert_close(model(**inputs).logits, plain(**inputs).logits)
    with torch.no_grad():
        model.item_output_residual.weight.normal_(0.0, 0.5)
    states = model(**inputs).last_hidden_state
    items = torch.arange(model.config.num_items)
    vectors = model.output_item_vectors(items)
    torch.testing.assert_close(vectors, model.model.item_embeddings.weight + model.item_output_residual.weight)
    torch.testing.assert_close(model.item_logits(states), states @ vectors.T + model.item_head.bias)  # many states
    one = states[:1, -1]  # one state: the two-product path
    torch.testing.assert_close(model.item_logits(one), one @ vectors.T + model.item_head.bias)
    assert not torch.allclose(model(**inputs).logits, plain(**inputs).logits)
    model.save_pretrained(tmp_path)
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    assert loaded.config.item_output_residual and loaded.item_head.weight is loaded.model.item_embeddings.weight
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("representation", ["id", "id+text"])
def test_item_score_temperature_scores_by_the_cosine_everywhere(tmp_path, tester, representation):
    """`item_score_temperature`: cos(u_t, r_i) / t + b_i in the logits, the output vectors serving and the sampled
    softmax read, and after a reload; the lengths of the states no longer move the scores."""
    text = {"item_representation": "id+text", "text_embedding_size": 8} if representation == "id+text" else {}
    model = _eval_model(InterestForNextItemPrediction, tester.get_config(item_score_temperature=0.1, **text))
    if text:
        model.set_item_text_embeddings(
            torch.randn(model.config.num_items, 8, generator=torch.Generator().manual_seed(2))
        )
    inputs = tester.prepare_inputs()
    states = model(**inputs).last_hidden_state
    items = torch.arange(model.config.num_items)
    raw = model.model.item_embeddings.weight.clone()
    if text:
        raw = raw + model.model.text_representations()
    vectors = model.output_item_vectors(items)
    real = slice(3, None)  # the special tokens' rows are zero (padding) or untrained; never scored
    torch.testing.assert_close(vectors[real], raw[real] / raw[real].norm(dim=-1, keepdim=True))
    expected = torch.nn.functional.cosine_similarity(states[..., None, :], raw[real], dim=-1) / 0.1
    torch.testing.assert_close(
        model.item_logits(states)[..., real], expected + model.item_head.bias[real], atol=2e-5, rtol=1e-5
    )
    torch.testing.assert_close(model.item_logits(states * 7.0), model.item_logits(states), atol=2e-5, rtol=1e-5)
    assert model.item_logits(states).abs().max() <= 1 / 0.1 + model.item_head.bias.abs().max() + 1e-4
    # the sampled softmax scores its candidates as item_logits does: with every item as a negative, the same loss
    labels = torch.randint(
        3, model.config.num_items, (tester.batch_size, tester.seq_len), generator=torch.Generator().manual_seed(4)
    )
    labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)
    labels[0, 0] = -100  # the first position has no history
    full = model(**inputs, labels=labels).loss
    model.config.loss_type, model.config.loss_exclude_seen = "sampled_softmax", False
    model.config.num_negative_samples = 20000  # uniform with replacement: every item many times over
    torch.manual_seed(0)
    sampled = model(**inputs, labels=labels).loss
    model.config.loss_type, model.config.loss_exclude_seen, model.config.num_negative_samples = (
        "full_softmax",
        False,
        1024,
    )
    full_all = model(**inputs, labels=labels).loss  # the full softmax over every item, seen ones too
    offset = torch.log(torch.tensor(20000.0 / (model.config.num_items - 3)))
    assert abs((sampled - offset) - full_all) < 0.05 * full_all.abs() + 0.05
    model.config.loss_exclude_seen = True
    assert torch.equal(model(**inputs, labels=labels).loss, full)
    model.save_pretrained(tmp_path)
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    assert loaded.config.item_score_temperature == 0.1
    torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def test_item_score_temperature_is_checked():
    for wrong in (-0.1, "0.1", True):
        with pytest.raises(ValueError, match="item_score_temperature"):
            tiny_config(item_score_temperature=wrong)


def test_item_output_residual_needs_the_tied_id_table():
    for refused in ({"tie_word_embeddings": False}, {"item_representation": "text", "text_embedding_size": 8}):
        with pytest.raises(ValueError, match="item_output_residual"):
            tiny_config(item_output_residual=True, **refused)
    with pytest.raises(ValueError, match="item_output_residual must be True or False"):
        tiny_config(item_output_residual="yes")


def test_untied_head_round_trip(tmp_path, tester):
    config = tester.get_config(tie_word_embeddings=False)
    model = _eval_model(InterestForNextItemPrediction, config)
    assert model.item_head.weight is not model.model.item_embeddings.weight
    model.save_pretrained(tmp_path)
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    inputs = tester.prepare_inputs()
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_interest"] = None  # any `import hf_interest` now raises ImportError
    try:
        import hf_interest  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("hf_interest is still importable")
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    folder, inputs_path, out_path = sys.argv[1:4]
    inputs = torch.load(inputs_path, weights_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    backbone = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert "hf_interest" not in type(model).__module__, type(model).__module__
    # the checkpoint checks came with the model file (a relative import transformers ships) and run on load
    mixin = [c for c in type(model).__mro__ if c.__name__ == "InterestCheckpointMixin"]
    assert mixin and mixin[0].__module__.endswith("checkpoint_interest"), [c.__module__ for c in type(model).__mro__]
    assert "hf_interest" not in mixin[0].__module__, mixin[0].__module__
    recs = model.recommend(**tokenizer([["item-1", "item-2"]], return_tensors="pt"), top_k=3)
    torch.save(
        {
            "logits": model(**inputs).logits,
            "states": backbone(**inputs).last_hidden_state,
            "classes": [type(model).__name__, type(backbone).__name__, type(tokenizer).__name__],
            "recommended": tokenizer.batch_decode_items(recs.item_ids),
        },
        out_path,
    )
    """
)


def test_checkpoint_loads_with_remote_code_without_the_package(tmp_path, tester):
    model, tokenizer, folder = _tiny_checkpoint(tmp_path, tester)
    inputs = tester.prepare_inputs()
    torch.save(inputs, tmp_path / "inputs.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    # Run from an empty directory so the repository checkout is not on sys.path either.
    run = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert result["classes"] == ["InterestForNextItemPrediction", "InterestModel", "ItemTokenizer"]
    assert torch.equal(result["logits"], model(**inputs).logits)
    assert torch.equal(result["states"], model.model(**inputs).last_hidden_state)
    expected = model.recommend(**tokenizer([["item-1", "item-2"]], return_tensors="pt"), top_k=3)
    assert result["recommended"] == tokenizer.batch_decode_items(expected.item_ids)


# --- causality and padding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_timestamps", [True, False])
def test_changing_a_later_event_never_changes_earlier_states(tester, use_timestamps):
    model = _eval_model(InterestModel, tester.get_config())
    inputs = tester.prepare_inputs()
    if not use_timestamps:
        inputs.pop("timestamps")
    before = model(**inputs).last_hidden_state
    for position in range(3, tester.seq_len):  # row 1 is real from column 3 on
        changed = {k: v.clone() for k, v in inputs.items()}
        changed["input_ids"][:2, position] = (changed["input_ids"][:2, position] + 1 - 3) % (tester.num_items - 3) + 3
        if use_timestamps:
            changed["timestamps"][:2, position:] += 12345  # a later event moves in time too
        after = model(**changed).last_hidden_state
        assert torch.equal(after[:2, :position], before[:2, :position])
        assert not torch.allclose(after[:2, position], before[:2, position])


def test_extra_left_padding_changes_nothing_at_real_positions(tester):
    model = _eval_model(InterestModel, tester.get_config())
    inputs = tester.prepare_inputs()
    extra = 5
    padded = {k: torch.nn.functional.pad(v, (extra, 0), value=0) for k, v in inputs.items()}
    short = model(**inputs).last_hidden_state
    long = model(**padded).last_hidden_state
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(long[:, extra:][real], short[real], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(long).all()
    assert (long[:, :extra] == 0).all()  # padded positions carry no state


def test_fully_padded_rows_are_finite_in_training_mode_too(tester):
    model = InterestForNextItemPrediction(tester.get_config()).train()
    inputs = tester.prepare_inputs()
    inputs = {k: torch.zeros_like(v) for k, v in inputs.items()}
    out = model(**inputs, output_hidden_states=True)
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(h).all() for h in out.hidden_states)


def test_fused_and_explicit_attention_agree(tester):
    model = _eval_model(InterestModel, tester.get_config())
    inputs = tester.prepare_inputs()
    fused = model(**inputs).last_hidden_state
    explicit = model(**inputs, output_attentions=True).last_hidden_state
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    no_mask = {"input_ids": inputs["input_ids"][:1], "timestamps": inputs["timestamps"][:1]}
    torch.testing.assert_close(
        model(**no_mask).last_hidden_state, model(**no_mask, output_attentions=True).last_hidden_state
    )


def test_time_gap_buckets():
    ts = torch.tensor([[0, 100, 100, 101, 103, 2**40, 2**40 - 5]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1]])
    buckets = time_gap_buckets(ts, mask, num_buckets=32)
    # pad, first real (no previous), gap 0, gap 1 -> 2+0, gap 2 -> 2+1, huge -> capped 31, negative -> 1
    assert buckets.tolist() == [[0, 0, 1, 2, 3, 31, 1]]
    assert time_gap_buckets(ts, None, 32)[0, 1].item() == 2 + 6  # gap 100 s: floor(log2(100)) = 6


def test_timestamps_change_the_states(tester):
    model = _eval_model(InterestModel, tester.get_config())
    inputs = tester.prepare_inputs()
    with_time = model(**inputs).last_hidden_state
    without = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    assert not torch.allclose(with_time[0, 1:], without[0, 1:])
    no_time_model = _eval_model(InterestModel, tester.get_config(use_time_gaps=False))
    assert no_time_model.time_gap_embeddings is None
    assert torch.isfinite(no_time_model(**inputs).last_hidden_state).all()


# --- initialisation ---------------------------------------------------------------------------------------------


def test_init_weights_reaches_every_parameter(tester):
    config = tester.get_config(initializer_range=1e-10)
    for cls in (InterestModel, InterestForNextItemPrediction):
        model = cls(config)
        for name, param in model.named_parameters():
            # With a tiny std every initialised weight's mean rounds to 0 and layer-norm weights to 1; PyTorch's own
            # defaults (N(0, 1) embeddings, kaiming-uniform linears) would not.
            mean = ((param.data.mean() * 1e9).round() / 1e9).item()
            assert mean in (0.0, 1.0), f"{cls.__name__}.{name} was not initialised by _init_weights (mean {mean})"


def test_padding_row_of_item_embeddings_is_zero(tester):
    model = InterestModel(tester.get_config())
    assert (model.item_embeddings.weight[0] == 0).all()


# --- recommend --------------------------------------------------------------------------------------------------


def test_recommend_excludes_seen_and_special_items(tester):
    config = tester.get_config(num_items=12)
    model = _eval_model(InterestForNextItemPrediction, config)
    input_ids = torch.tensor([[0, 0, 3, 4, 5], [6, 7, 8, 9, 10], [0, 0, 0, 0, 0]])
    out = model.recommend(input_ids, top_k=20)  # more than there are candidates
    assert out.item_ids.shape == out.scores.shape == (3, config.num_items - 3)
    for row, history in zip(out.item_ids.tolist(), input_ids.tolist()):
        returned = [i for i in row if i != -1]
        assert not set(returned) & set(history)  # never a seen item (nor padding)
        assert all(i >= 3 for i in returned)  # never a special token
        assert len(returned) == len(set(returned))
        assert len(returned) == config.num_items - 3 - len(set(history) - {0})  # empty slots are -1
    assert (out.scores[out.item_ids == -1] == float("-inf")).all()
    assert out.scores[1].isfinite().sum() == 4  # 9 real items, 5 seen
    # scores are sorted, best first
    finite = out.scores[0][out.scores[0].isfinite()]
    assert torch.equal(finite, finite.sort(descending=True).values)


def test_recommend_without_exclusion_ranks_by_logits(tester):
    config = tester.get_config()
    model = _eval_model(InterestForNextItemPrediction, config)
    inputs = tester.prepare_inputs()
    out = model.recommend(**inputs, top_k=5, exclude_seen=False)
    logits = model(**inputs).logits[:, -1]
    logits[:, :3] = float("-inf")
    expected = logits.topk(5, dim=1)
    torch.testing.assert_close(out.scores, expected.values)
    assert torch.equal(out.item_ids, expected.indices)
    excluded = model.recommend(**inputs, top_k=5, exclude_seen=False, exclude_items=expected.indices[0, :2].tolist())
    assert not set(excluded.item_ids[0].tolist()) & set(expected.indices[0, :2].tolist())


def test_recommend_handles_untrusted_inputs(tester):
    config = tester.get_config()
    model = _eval_model(InterestForNextItemPrediction, config)
    # an empty history is scored by the item bias alone
    with torch.no_grad():
        model.item_head.bias.copy_(torch.arange(config.num_items, dtype=torch.float))
    out = model.recommend(torch.zeros(2, 0, dtype=torch.long), top_k=3)
    assert out.item_ids.tolist() == [[49, 48, 47], [49, 48, 47]]
    # a history longer than the model reads keeps its newest events
    long = torch.randint(3, config.num_items, (1, config.max_position_embeddings + 10))
    torch.testing.assert_close(
        model.recommend(long, exclude_seen=False).scores,
        model.recommend(long[:, -config.max_position_embeddings :], exclude_seen=False).scores,
    )
    # right padding gives what left padding gives
    left = model.recommend(torch.tensor([[0, 0, 5, 6, 7]]))
    right = model.recommend(torch.tensor([[5, 6, 7, 0, 0]]), attention_mask=torch.tensor([[1, 1, 1, 0, 0]]))
    torch.testing.assert_close(left.scores, right.scores)
    with pytest.raises(ValueError, match="integer item indices"):
        model.recommend(torch.rand(1, 4))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.recommend(torch.tensor([[3, config.num_items]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.recommend(torch.tensor([[3, -5]]))
    with pytest.raises(ValueError, match="top_k"):
        model.recommend(torch.tensor([[3, 4]]), top_k=0)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.recommend(torch.tensor([[3, 4]]), attention_mask=torch.tensor([[1, 1, 1]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=long)
    assert model.training is False


def test_recommend_restores_training_mode(tester):
    model = InterestForNextItemPrediction(tester.get_config()).train()
    inputs = tester.prepare_inputs()
    first = model.recommend(**inputs).scores
    assert model.training
    torch.testing.assert_close(first, model.recommend(**inputs).scores)  # no dropout inside recommend


# --- losses -----------------------------------------------------------------------------------------------------


def test_sampled_softmax_with_log_q_correction_estimates_the_full_softmax(tester):
    torch.manual_seed(0)
    config = tester.get_config(
        loss_type="sampled_softmax",
        num_negative_samples=20000,
        hidden_dropout_prob=0.0,
        loss_exclude_seen=False,  # the estimator alone; tests/test_loss_exclude_seen.py checks the seen mask
    )
    model = InterestForNextItemPrediction(config).eval()
    with torch.no_grad():  # spread the logits so the softmax is far from uniform
        model.model.item_embeddings.weight.mul_(200)
    inputs = tester.prepare_inputs()
    labels = torch.randint(3, config.num_items, (tester.batch_size, tester.seq_len))
    labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)
    full = InterestForNextItemPrediction._next_item_loss.__get__(model)
    model.config.loss_type = "full_softmax"
    full_loss = full(model(**inputs).last_hidden_state, labels, None, inputs["input_ids"]).item()
    model.config.loss_type = "sampled_softmax"
    counts = torch.arange(config.num_items, dtype=torch.float) ** 2  # a skewed sampling distribution
    model.set_negative_sampling_distribution(counts, power=1.0)
    corrected = model(**inputs, labels=labels).loss.item()
    log_q = model.negative_sampling_log_q
    model.negative_sampling_log_q = None
    uniform = model(**inputs, labels=labels).loss.item()
    # Sampling with replacement from q and correcting by -log q estimates log-sum-exp over the catalogue up to the
    # constant log(num_samples); compare after removing it.
    offset = torch.log(torch.tensor(float(config.num_negative_samples))).item()
    assert abs(corrected - offset - full_loss) < 0.15 * abs(full_loss) + 0.1
    uniform_offset = offset - torch.log(torch.tensor(float(config.num_items - 3))).item()
    assert abs(uniform - uniform_offset - full_loss) < 0.15 * abs(full_loss) + 0.1
    # without the correction, sampling from a skewed q gives a biased estimate
    model.negative_sampling_log_q = log_q
    weight, bias = model.item_head.weight, model.item_head.bias
    assert weight.requires_grad and bias.requires_grad
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    assert model.model.item_embeddings.weight.grad is not None
    with pytest.raises(ValueError, match="item_counts must have shape"):
        model.set_negative_sampling_distribution(torch.ones(3))


def test_num_items_in_batch_scales_a_summed_loss(tester):
    model = _eval_model(InterestForNextItemPrediction, tester.get_config())
    inputs = tester.prepare_inputs()
    labels = torch.randint(3, tester.num_items, (tester.batch_size, tester.seq_len))
    labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)
    mean = model(**inputs, labels=labels).loss
    # the positions that count: labelled, and (loss_exclude_seen) not a repeat of an item the history has read
    repeat = model.target_seen_before(inputs["input_ids"], labels) if model.config.loss_exclude_seen else False
    count = int(((labels >= 3) & ~repeat).sum())
    summed = model(**inputs, labels=labels, num_items_in_batch=2 * count).loss
    torch.testing.assert_close(summed, mean / 2)


# --- config -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hidden_size", 10, "hidden_size"),
        ("num_items", 2, "num_items"),
        ("hidden_dropout_prob", 1.5, "hidden_dropout_prob"),
        ("loss_type", "bpr", "loss_type"),
        ("num_time_buckets", 2, "num_time_buckets"),
        ("pad_token_id", 7, "pad_token_id"),
        ("hidden_act", "tanh", "hidden_act"),
        ("num_hidden_layers", 0, "num_hidden_layers"),
    ],
)
def test_config_validation_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        InterestConfig(**{field: value, "num_attention_heads": 2 if field != "hidden_size" else 3})


def test_config_round_trip_and_alias(tmp_path):
    config = InterestConfig(num_items=77, hidden_size=32, use_time_gaps=False)
    assert config.vocab_size == 77
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, InterestConfig)
    assert {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in config.to_dict().items() if k != "_name_or_path"
    }


# --- peft and Trainer -------------------------------------------------------------------------------------------


def test_lora_trains_only_adapters_and_merges_exactly(tester):
    from peft import LoraConfig, get_peft_model

    config = tester.get_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base = _eval_model(InterestForNextItemPrediction, config)
    before = {name: p.detach().clone() for name, p in base.named_parameters()}
    targets = lora_targets(",".join(DEFAULT_LORA_TARGET_MODULES), config.block_type)  # train.py's default
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(base, lora)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    # every default target exists in the model
    wrapped = {name.split(".")[-1] for name, _ in model.named_modules() if hasattr(_, "lora_A")}
    assert wrapped == set(targets)

    inputs = tester.prepare_inputs()
    labels = torch.randint(3, config.num_items, (tester.batch_size, tester.seq_len))
    labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    for name, param in model.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, before[name.replace(".base_layer", "")]), f"{name} changed"
    adapted = model(**inputs).logits
    merged = model.merge_and_unload()
    assert type(merged) is InterestForNextItemPrediction
    torch.testing.assert_close(merged(**inputs).logits, adapted, rtol=1e-4, atol=1e-5)


def test_transformers_trainer_runs_two_steps(tmp_path, tester):
    from transformers import Trainer, TrainingArguments

    config = tester.get_config()
    model = InterestForNextItemPrediction(config)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(8):
        ids = torch.randint(3, config.num_items, (tester.seq_len + 1,), generator=generator)
        rows.append(
            {
                "input_ids": ids[:-1],
                "attention_mask": torch.ones(tester.seq_len, dtype=torch.long),
                "labels": ids[1:],
            }
        )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    before = [p.detach().clone() for p in model.model.layers[0].parameters()]
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    result = trainer.train()
    assert result.global_step == 2
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not any(torch.equal(b, p) for b, p in zip(before, model.model.layers[0].parameters(), strict=True))


def test_gradient_checkpointing_gives_the_same_gradients(tester):
    config = tester.get_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    inputs = tester.prepare_inputs()
    labels = torch.randint(3, config.num_items, (tester.batch_size, tester.seq_len))
    grads = []
    for checkpointing in (False, True):
        model = _eval_model(InterestForNextItemPrediction, config).train()
        if checkpointing:
            # transformers 5 renamed gradient_checkpointing_enable; accept either
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            assert model.model.gradient_checkpointing
        model(**inputs, labels=labels).loss.backward()
        grads.append([p.grad.clone() for p in model.model.layers[0].parameters()])
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(plain, checkpointed)


def test_package_registers_auto_classes():
    config = InterestConfig(num_items=20, hidden_size=8, num_attention_heads=2)
    assert type(AutoModel.from_config(config)) is InterestModel
    assert type(AutoModelForCausalLM.from_config(config)) is InterestForNextItemPrediction
    assert hf_interest.__version__


# --- the HSTU-style layer ---------------------------------------------------------------------------------------


def test_hstu_layer_equals_its_formula_event_by_event():
    """`block_type="hstu"`: each state is x_t + W_o(LN(sum_j silu(q_t.k_j/sqrt(d) + p[t-j] + tau[b(t,j)]) v_j / n_t)
    * u_t) over the n_t real events j <= t, written out with loops over events and heads."""
    from hf_interest.modeling_interest import InterestHSTULayer, log2_buckets

    tester = InterestModelTester(block_type="hstu")
    config = tester.get_config(hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    layer = InterestHSTULayer(config).eval()
    with torch.no_grad():  # biases large enough to matter
        layer.position_bias.weight.normal_(0.0, 1.0)
        layer.time_bias.weight.normal_(0.0, 1.0)
    inputs = tester.prepare_inputs()
    mask, timestamps = inputs["attention_mask"], inputs["timestamps"]
    hidden = torch.randn(tester.batch_size, tester.seq_len, config.hidden_size)
    model = InterestModel(config).eval()
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    distance = (position_ids[:, :, None] - position_ids[:, None, :]).clamp(0, config.max_position_embeddings - 1)
    relative = (distance, relative_time_buckets(timestamps, config.num_time_buckets))
    T = tester.seq_len
    attn_mask = torch.ones(T, T, dtype=torch.bool).tril() & (mask.bool()[:, None, None, :] | torch.eye(T).bool())
    with torch.no_grad():
        out, weights = layer(hidden, attn_mask, True, 0, relative)
        heads, d = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        for b in range(tester.batch_size):
            for t in range(T):
                if not mask[b, t]:
                    continue
                u, v, q, k = torch.nn.functional.silu(layer.projection(layer.input_layer_norm(hidden[b]))).split(
                    config.hidden_size, -1
                )
                keys = [j for j in range(t + 1) if mask[b, j]]
                context = torch.zeros(config.hidden_size)
                for h in range(heads):
                    part = slice(h * d, (h + 1) * d)
                    for j in keys:
                        distance = int(position_ids[b, t] - position_ids[b, j])
                        bucket = int(log2_buckets(timestamps[b, t] - timestamps[b, j], config.num_time_buckets))
                        score = q[t, part] @ k[j, part] / d**0.5
                        score = score + layer.position_bias.weight[distance, h] + layer.time_bias.weight[bucket, h]
                        weight = torch.nn.functional.silu(score) / len(keys)
                        torch.testing.assert_close(weights[b, h, t, j], weight)
                        context[part] += weight * v[j, part]
                expected = hidden[b, t] + layer.attention_output(layer.attention_layer_norm(context) * u[t])
                torch.testing.assert_close(out[b, t], expected, rtol=1e-4, atol=1e-5)
    assert model.layers[0].__class__ is InterestHSTULayer


def test_hstu_relative_time_buckets_and_checkpoint_field(tmp_path):
    timestamps = torch.tensor([[0, 100, 100, 164]])
    buckets = relative_time_buckets(timestamps, num_buckets=32)
    assert buckets[0, 3].tolist() == [2 + 7, 2 + 6, 2 + 6, 1]  # 164 s, 64 s, 64 s, 0 s
    assert buckets[0, 0].tolist() == [1, 1, 1, 1]  # later events (masked by causality): as a negative gap
    tester = InterestModelTester(block_type="hstu")
    model = InterestModel(tester.get_config()).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.time_bias.weight.normal_(0.0, 1.0)
    inputs = tester.prepare_inputs()
    given = model(**inputs).last_hidden_state
    buckets = relative_time_buckets(inputs["timestamps"], model.config.num_time_buckets)
    no_times = {k: v for k, v in inputs.items() if k != "timestamps"}
    gaps = time_gap_buckets(inputs["timestamps"], inputs["attention_mask"], model.config.num_time_buckets)
    assert torch.equal(
        model(**no_times, time_gap_bucket_ids=gaps, relative_time_bucket_ids=buckets).last_hidden_state, given
    )
    without = model(**no_times).last_hidden_state
    assert not torch.allclose(without[0], given[0])
    assert torch.equal(
        model(**no_times, relative_time_bucket_ids=torch.zeros_like(buckets)).last_hidden_state, without
    )
    with pytest.raises(ValueError, match="relative_time_bucket_ids must have shape"):
        model(**no_times, relative_time_bucket_ids=buckets[:, :2])
    model = InterestForNextItemPrediction(InterestModelTester(block_type="hstu").get_config())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "block_type": "transformer"}))
    with pytest.raises(ValueError, match="block_type"):
        InterestForNextItemPrediction.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="block_type must be one of"):
        tiny_config(block_type="mamba")
