"""A config.json must describe the weights beside it: every field that shapes what the model computes is checked on load
(recorded in the safetensors header, and read off the tensors' shapes), and `hf-interest info` flags a mismatch."""

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny import TINY
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from hf_interest import InterestConfig, InterestForInterestForecasting, InterestForNextItemPrediction, InterestModel
from hf_interest.checkpoint_interest import WEIGHT_FIELDS_METADATA_KEY, checkpoint_problems, read_weights_header
from hf_interest_cli import main

CONFIG = {**TINY, "num_items": 23, "num_hidden_layers": 2}


def _randomised(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)  # so that any change of architecture changes the outputs
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("integrity") / "model"
    _randomised(InterestForNextItemPrediction(InterestConfig(**CONFIG))).save_pretrained(folder)
    return folder


BATCH = {
    "input_ids": torch.tensor([[0, 0, 5, 9, 4, 11], [7, 3, 8, 20, 6, 10]]),
    "attention_mask": torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]),
    "timestamps": torch.tensor([[0, 0, 100, 500, 9000, 9100], [10, 70, 4000, 4001, 80000, 90000]]),
}


def _logits(model):
    with torch.no_grad():
        return model(**BATCH).logits


def _edited_copy(saved, tmp_path, **changes):
    folder = tmp_path / "edited"
    shutil.copytree(saved, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _without_recorded_fields(folder):
    """The weights as a checkpoint saved before the fields were recorded: the same tensors, plain metadata."""
    save_file(load_file(folder / "model.safetensors"), folder / "model.safetensors", metadata={"format": "pt"})


def test_save_records_the_weight_fields(saved):
    with safe_open(str(saved / "model.safetensors"), framework="pt") as handle:
        recorded = json.loads(handle.metadata()[WEIGHT_FIELDS_METADATA_KEY])
    config = InterestConfig.from_pretrained(saved)
    assert recorded == {name: getattr(config, name) for name in InterestConfig.weight_fields}
    reloaded = InterestForNextItemPrediction.from_pretrained(saved).eval()
    assert torch.equal(_logits(reloaded), _logits(_randomised(InterestForNextItemPrediction(config))))


@pytest.mark.parametrize("layers", [3, 1])
def test_a_layer_more_or_less_in_config_is_an_error(saved, tmp_path, layers):
    # Before: 3 loaded with a random third layer, 1 silently ignored the stored second one.
    folder = _edited_copy(saved, tmp_path, num_hidden_layers=layers)
    with pytest.raises(
        ValueError, match=rf"num_hidden_layers is {layers} in config\.json but the weights were saved with 2"
    ):
        AutoModelForCausalLM.from_pretrained(folder)
    _without_recorded_fields(folder)  # an older checkpoint: the tensors' shapes still say how many layers there are
    with pytest.raises(ValueError, match=rf"num_hidden_layers is {layers} in config\.json but the weights hold 2"):
        AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"num_attention_heads": 4}, "num_attention_heads"),  # same shapes, other outputs: only the record tells
        ({"short_term_window": 3}, "short_term_window"),
        ({"layer_norm_eps": 1e-5}, "layer_norm_eps"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"use_time_gaps": False}, "use_time_gaps"),
        ({"long_term_interest": False}, "long_term_interest"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"num_time_buckets": 16}, "num_time_buckets"),
    ],
)
def test_every_weight_field_is_checked(saved, tmp_path, changes, field):
    folder = _edited_copy(saved, tmp_path, **changes)
    with pytest.raises(ValueError, match=rf"{field} is .* in config\.json but the weights"):
        InterestForNextItemPrediction.from_pretrained(folder)


def test_fields_read_off_the_shapes_without_a_record(saved, tmp_path):
    for changes, field in (({"use_time_gaps": False}, "use_time_gaps"), ({"short_term_interest": False}, "short_term_interest"),
                           ({"max_position_embeddings": 20}, "max_position_embeddings")):  # fmt: skip
        folder = _edited_copy(saved, tmp_path, **changes)
        _without_recorded_fields(folder)
        with pytest.raises(ValueError, match=rf"{field} is .* in config\.json but the weights hold"):
            InterestForNextItemPrediction.from_pretrained(folder)


def test_training_only_fields_may_change(saved, tmp_path):
    folder = _edited_copy(
        saved, tmp_path, hidden_dropout_prob=0.0, loss_type="sampled_softmax", num_negative_samples=7
    )
    assert torch.equal(_logits(InterestForNextItemPrediction.from_pretrained(folder).eval()),
                       _logits(InterestForNextItemPrediction.from_pretrained(saved).eval()))  # fmt: skip


def test_other_classes_and_heads_still_load(saved, tmp_path):
    backbone = AutoModel.from_pretrained(saved)  # the head's weights are left behind, as intended
    assert isinstance(backbone, InterestModel)
    click = AutoModelForSequenceClassification.from_pretrained(saved)  # a new click head on a trained backbone
    assert torch.equal(click.model.layers[1].ffn_in.weight, backbone.layers[1].ffn_in.weight)
    forecasting = InterestForInterestForecasting(InterestConfig(**CONFIG, num_categories=4))
    forecasting.save_pretrained(tmp_path / "forecast")
    assert InterestForInterestForecasting.from_pretrained(tmp_path / "forecast").config.num_categories == 4
    backbone.save_pretrained(tmp_path / "backbone")  # a backbone checkpoint under the next-item head: the head is new
    InterestForNextItemPrediction.from_pretrained(tmp_path / "backbone")


def test_a_missing_tensor_of_the_same_architecture_is_an_error(saved, tmp_path):
    folder = _edited_copy(saved, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["item_head.bias"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    shapes, metadata = read_weights_header([folder / "model.safetensors"])
    problems = checkpoint_problems(
        InterestForNextItemPrediction, InterestConfig.from_pretrained(folder), shapes, metadata
    )
    assert problems == ["missing from the weights: item_head.bias"]
    with pytest.raises(ValueError, match="missing from the weights: item_head.bias"):
        InterestForNextItemPrediction.from_pretrained(folder)


def test_info_flags_a_config_that_does_not_match(saved, tmp_path, capsys):
    assert main(["info", str(saved)]) == 0
    assert "config.json matches model.safetensors" in capsys.readouterr().out
    folder = _edited_copy(saved, tmp_path, num_hidden_layers=3)
    assert main(["info", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == [
        "num_hidden_layers is 3 in config.json but the weights were saved with 2"
    ]
    assert main(["info", str(folder)]) == 0
    assert "PROBLEM: config.json does not describe model.safetensors" in capsys.readouterr().out


# Every field of the config, mutated at random: the checkpoint either loads and computes exactly what it computed, or
# loading fails with an error that names the field.
_FIELD_VALUES = {
    bool: st.booleans(),
    int: st.integers(min_value=-1, max_value=40),
    float: st.sampled_from([0.0, 1e-5, 1e-6, 0.1, 0.5, 0.99, 1.5, -0.1]),
    str: st.sampled_from(["gelu", "relu", "silu", "id", "text", "id+text", "full_softmax", "sampled_softmax", "x"]),
}
_DEFAULTS = InterestConfig(**CONFIG).to_dict()
_FIELDS = sorted(
    name for name in InterestConfig.__init__.__code__.co_varnames[1:] if name in _DEFAULTS and name != "kwargs"
)


@st.composite
def _mutation(draw):
    name = draw(st.sampled_from(_FIELDS))
    current = _DEFAULTS[name]
    kind = type(current) if current is not None else draw(st.sampled_from([int, str]))
    value = draw(st.one_of(st.none(), _FIELD_VALUES[kind])) if current is None else draw(_FIELD_VALUES[kind])
    return name, value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=_mutation())
def test_property_config_mutations_load_identically_or_name_the_field(saved, tmp_path, mutation):
    name, value = mutation
    folder = _edited_copy(saved, tmp_path, **{name: value})
    try:
        model = InterestForNextItemPrediction.from_pretrained(folder).eval()
    except ValueError as error:
        assert name in str(error), f"{name}={value!r}: {error}"
        return
    assert torch.equal(_logits(model), _logits(InterestForNextItemPrediction.from_pretrained(saved).eval())), (
        f"{name}={value!r} loaded with other outputs and no error"
    )
