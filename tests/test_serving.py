"""Serving (`hf_interest.serving`): the ONNX export against torch, the Inference Endpoints handler, chunked top-k."""

import ast
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from test_interest_heads import NUM_ITEMS, build
from transformers import pipeline

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.modeling_interest import time_gap_buckets
from hf_interest.serving import OnnxRecommender, RequestError, chunked_top_k, export_onnx, recommend_chunked
from hf_interest_cli import main

ITEMS = [f"i{index}" for index in range(NUM_ITEMS - 3)]
MAX_LENGTH = 24  # tiny_config's max_position_embeddings


def _model(kind: str):
    if kind == "id":
        return build(InterestForNextItemPrediction, num_hidden_layers=2)
    if kind == "hstu":  # relative biases large enough that a graph ignoring time or position would rank otherwise
        model = build(InterestForNextItemPrediction, num_hidden_layers=2, block_type="hstu")
        with torch.no_grad():
            for layer in model.model.layers:
                layer.time_bias.weight.normal_(0.0, 1.0)
                layer.position_bias.weight.normal_(0.0, 1.0)
        return model
    if kind == "residual":  # large enough that serving without it would rank otherwise
        model = build(InterestForNextItemPrediction, num_hidden_layers=2, item_output_residual=True)
        with torch.no_grad():
            model.item_output_residual.weight.normal_(0.0, 0.5)
        return model
    if kind == "cosine":  # cosine scores: a graph scoring by the dot product would rank otherwise
        model = build(InterestForNextItemPrediction, num_hidden_layers=2, item_score_temperature=0.05)
        with torch.no_grad():
            model.model.item_embeddings.weight.mul_(
                torch.rand(NUM_ITEMS, 1, generator=torch.Generator().manual_seed(3)) * 5
            )
        return model
    if kind == "prior":  # a transition prior strong enough to reorder the top items
        model = build(InterestForNextItemPrediction, num_hidden_layers=2, item_transition_prior=True,
                      transition_prior_successors=4)  # fmt: skip
        generator = torch.Generator().manual_seed(11)
        model.set_transition_counts(
            torch.randint(3, NUM_ITEMS, (300,), generator=generator),
            torch.randint(3, NUM_ITEMS, (300,), generator=generator),
        )
        with torch.no_grad():
            model.transition_prior.weight.fill_(1.5)
        return model
    model = build(InterestForNextItemPrediction, item_representation="id+text", text_embedding_size=8)
    generator = torch.Generator().manual_seed(5)
    texts = torch.randn(NUM_ITEMS, 8, generator=generator)
    texts[:3] = 0
    model.set_item_text_embeddings(texts)
    return model.eval()


@pytest.fixture(scope="module", params=["id", "id+text", "hstu", "prior"])
def exported(request, tmp_path_factory):
    model, tokenizer = _model(request.param), ItemTokenizer.from_items(ITEMS)
    folder = tmp_path_factory.mktemp(f"onnx_{request.param.replace('+', '_')}")
    result = export_onnx(model, tokenizer, folder, max_top_k=12)
    return model, tokenizer, folder, result


def _batch(batch: int, length: int, seed: int):
    """Left-padded histories of different lengths (row 0 full), with increasing times."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, NUM_ITEMS, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        attention_mask[row, : (row * 3) % length] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    timestamps = (
        1_600_000_000 + torch.randint(1, 10**6, (batch, length), generator=generator).cumsum(1)
    ) * attention_mask
    return input_ids, attention_mask, timestamps


@pytest.mark.parametrize("batch", [1, 4, 7])
@pytest.mark.parametrize("length", [3, 12, MAX_LENGTH])
@pytest.mark.parametrize("with_times", [True, False])
def test_onnxruntime_matches_recommend(exported, batch, length, with_times):
    model, _, folder, _ = exported
    recommender = OnnxRecommender(str(folder))
    input_ids, attention_mask, timestamps = _batch(batch, length, seed=batch * 100 + length)
    expected = model.recommend(
        input_ids, attention_mask, timestamps if with_times else None, top_k=10, exclude_seen=True
    )
    excluded = input_ids.masked_fill(attention_mask == 0, 0)
    scores, items = recommender.run(
        input_ids.numpy(), attention_mask.numpy(), timestamps.numpy(), np.full(batch, with_times), excluded.numpy(), 10
    )
    assert (items == expected.item_ids.numpy()).all()
    finite = np.isfinite(expected.scores.numpy())
    assert np.abs(scores[finite] - expected.scores.numpy()[finite]).max() <= 1e-4


def test_export_checks_itself(exported):
    _, _, folder, result = exported
    assert result["max_abs_diff"] <= 1e-4 and result["top10_equal"]
    config = json.loads((folder / "onnx_config.json").read_text())
    assert config["max_length"] == MAX_LENGTH and config["max_top_k"] == 12
    assert json.loads((folder / "item_vocab.json").read_text())[3:] == ITEMS


def test_raw_ids_in_raw_ids_out(exported):
    model, tokenizer, folder, _ = exported
    recommender = OnnxRecommender(str(folder))
    histories = [["i3", "i7", "i1"], ["i5"], (ITEMS * 2)[:30]]  # the last is longer than the model reads: newest kept
    times = [[10, 20, 30], [5], list(range(30))]
    result = recommender.recommend(histories, times, top_k=5, exclude_items=["i2"])
    for history, stamps, row in zip(histories, times, result):
        encoded = tokenizer([history], timestamps=[stamps], return_tensors="pt")
        excluded = tokenizer.encode_items(["i2"])
        expected = model.recommend(**encoded, top_k=5, exclude_items=excluded)
        eligible = [index for index in expected.item_ids[0].tolist() if index >= 0]  # -1: no item left
        assert [entry["item_id"] for entry in row] == tokenizer.decode_items(eligible)
        assert [entry["rank"] for entry in row] == list(range(1, len(eligible) + 1))
        assert "i2" not in [entry["item_id"] for entry in row]
    assert len(result[0]) == 5 and result[2] == []  # every item of the catalogue is in the last history's newest 24


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"input_ids": [[-1, 4]]}, "outside the vocabulary"),
        ({"input_ids": [[3, NUM_ITEMS]]}, "outside the vocabulary"),
        ({"excluded_ids": [[NUM_ITEMS + 5]]}, "outside the vocabulary"),
        ({"input_ids": [[3.5, 4.0]]}, "integer indices"),
        ({"top_k": 0}, "between 1 and 12"),
        ({"top_k": 13}, "between 1 and 12"),
        ({"input_ids": [[3 + step % 10 for step in range(MAX_LENGTH + 1)]]}, f"At most {MAX_LENGTH} events"),
    ],
)
def test_indices_are_checked_before_the_graph(exported, arguments, message):
    recommender = OnnxRecommender(str(exported[2]))
    input_ids = np.asarray(arguments.get("input_ids", [[3, 4]]))
    inputs = {
        "input_ids": input_ids,
        "attention_mask": np.ones(input_ids.shape, dtype=np.int64),
        "timestamps": np.zeros(input_ids.shape, dtype=np.int64),
        "has_timestamps": np.zeros(input_ids.shape[0], dtype=bool),
        "excluded_ids": np.asarray(arguments.get("excluded_ids", [[0]])),
    }
    with pytest.raises(RequestError, match=message):
        recommender.run(**inputs, top_k=arguments.get("top_k", 5))


def test_time_gap_bucket_ids_are_the_timestamps_path():
    model = _model("id")
    input_ids, attention_mask, timestamps = _batch(4, 12, seed=3)
    buckets = time_gap_buckets(timestamps, attention_mask, model.config.num_time_buckets)
    with torch.no_grad():
        direct = model.model(input_ids, attention_mask, timestamps).last_hidden_state
        given = model.model(input_ids, attention_mask, time_gap_bucket_ids=buckets).last_hidden_state
        unknown = model.model(input_ids, attention_mask, time_gap_bucket_ids=torch.zeros_like(buckets))
        without = model.model(input_ids, attention_mask).last_hidden_state
    torch.testing.assert_close(direct, given)
    torch.testing.assert_close(unknown.last_hidden_state, without)
    with pytest.raises(ValueError, match="time_gap_bucket_ids"):
        model.model(input_ids, attention_mask, time_gap_bucket_ids=buckets + 100)


# --- the Inference Endpoints handler ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint(tiny_run, tmp_path_factory):
    """The repository `push --with_handler` writes, and its handler.py imported as the toolkit imports it."""
    folder = tmp_path_factory.mktemp("endpoint") / "repo"
    assert main(["push", str(tiny_run), "--repo_id", "org/model", "--with_handler", "--dry_run", str(folder)]) == 0
    spec = importlib.util.spec_from_file_location("handler", folder / "handler.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler_under_test"] = module
    spec.loader.exec_module(module)
    return folder, module.EndpointHandler(path=str(folder))


def test_pushed_repository_holds_the_handler(endpoint):
    folder, _ = endpoint
    for name in ("handler.py", "requirements.txt", "model.onnx", "onnx_config.json", "item_vocab.json", "README.md"):
        assert (folder / name).is_file(), name
    pins = (folder / "requirements.txt").read_text().split()
    assert any(p.startswith("onnxruntime==") for p in pins) and any(p.startswith("numpy==") for p in pins)


def test_handler_imports_only_numpy_onnxruntime_and_the_standard_library(endpoint):
    tree = ast.parse((endpoint[0] / "handler.py").read_text())
    modules = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    modules |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules <= {"__future__", "json", "logging", "os", "collections", "numpy", "onnxruntime"}, modules


def test_handler_answers_as_the_pipeline(endpoint, tiny_run):
    _, handler = endpoint
    recommender = pipeline("next-item-recommendation", model=str(tiny_run))
    items = list(recommender.tokenizer.items)
    history, times = items[:6], [1_700_000_000 + 600 * step for step in range(6)]
    single = handler({"inputs": {"items": history, "timestamps": times}, "parameters": {"top_k": 5}})
    expected = recommender({"items": history, "timestamps": times}, top_k=5)
    assert [r["item_id"] for r in single] == [r["item_id"] for r in expected]
    assert [r["score"] for r in single] == pytest.approx([r["score"] for r in expected], abs=1e-4)
    batch = handler(
        {"inputs": [items[:3], items[4:9]], "parameters": {"exclude_seen": False, "exclude_items": [items[10]]}}
    )
    for history, answer in zip([items[:3], items[4:9]], batch):
        reference = recommender(history, top_k=10, exclude_seen=False, exclude_items=[items[10]])
        assert [r["item_id"] for r in answer] == [r["item_id"] for r in reference]
    json.dumps(batch)  # the answer is JSON
    empty = handler({"inputs": [], "parameters": {"top_k": 3}})  # no events: the item bias, a popularity prior
    assert [r["item_id"] for r in empty] == [r["item_id"] for r in recommender([], top_k=3)]


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ([1, 2], 'JSON object with "inputs"'),
        ({"input": ["x"]}, 'JSON object with "inputs"'),
        ({"inputs": "i3 i4"}, "a history"),
        ({"inputs": ["nope", "also-not"]}, "2 item ids are not in this model's vocabulary"),
        ({"inputs": [[None]]}, "raw item id"),
        ({"inputs": {"items": ["x"], "times": [1]}}, "'items'"),
        ({"inputs": {"items": ["a", "b"], "timestamps": [1]}}, "one time"),
        ({"inputs": {"items": ["a", "b"], "timestamps": [2.5, 3]}}, "integer seconds"),
        ({"inputs": {"items": ["a", "b"], "timestamps": [5, 1]}}, "must not decrease"),
        ({"inputs": ["a"], "parameters": {"top_k": -1}}, "top_k"),
        ({"inputs": ["a"], "parameters": {"top_k": "5"}}, "top_k must be an integer"),
        ({"inputs": ["a"], "parameters": {"exclude_seen": "yes"}}, "exclude_seen"),
        ({"inputs": ["a"], "parameters": {"exclude_items": "b"}}, "exclude_items"),
        ({"inputs": ["a"], "parameters": {"temperature": 1}}, "Unknown parameters"),
        ({"inputs": ["a"], "extra": 1}, "Unknown request keys"),
    ],
)
def test_handler_refuses_bad_requests_clearly(endpoint, request_body, message):
    _, handler = endpoint
    known = handler.recommender.items[3]
    if isinstance(request_body, dict) and "inputs" in request_body:
        request_body = json.loads(
            json.dumps(request_body).replace('"a"', json.dumps(known)).replace('"b"', json.dumps(known))
        )
    with pytest.raises(ValueError, match=message):
        handler(request_body)


def test_cli_export(tiny_run, tmp_path, capsys):
    assert main(["export", "onnx", str(tiny_run), "--output", str(tmp_path / "onnx"), "--with_handler"]) == 0
    printed = capsys.readouterr().out
    assert "top-10 identical" in printed and "handler.py" in printed and "model.onnx" in printed


# --- top-k over a large catalogue -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [7, 64, 1000, 5000])
def test_chunked_top_k_is_the_full_top_k(chunk_size):
    generator = torch.Generator().manual_seed(0)
    states, vectors = torch.randn(33, 16, generator=generator), torch.randn(3001, 16, generator=generator)
    bias = torch.randn(3001, generator=generator)
    excluded = torch.zeros(3001, dtype=torch.bool)
    excluded[:3] = True
    excluded[torch.randint(0, 3001, (100,), generator=generator)] = True
    full = (states @ vectors.T + bias).masked_fill(excluded, float("-inf"))
    expected_scores, expected_items = torch.topk(full, 10, dim=1)
    scores, items = chunked_top_k(states, vectors, bias, k=10, chunk_size=chunk_size, excluded=excluded)
    assert torch.equal(items, expected_items)
    torch.testing.assert_close(scores, expected_scores)


def test_chunked_top_k_with_many_equal_scores_returns_the_top_scores():
    generator = torch.Generator().manual_seed(1)
    states = torch.ones(5, 4)
    vectors = torch.randint(0, 3, (500, 4), generator=generator).float()  # many equal scores
    full = states @ vectors.T
    scores, items = chunked_top_k(states, vectors, k=10, chunk_size=37)
    torch.testing.assert_close(scores, torch.topk(full, 10, dim=1).values)  # exactly the top-10 scores
    torch.testing.assert_close(full.gather(1, items), scores)  # each returned item has its score
    assert all(len(set(row)) == 10 for row in items.tolist())  # no item twice


@pytest.mark.parametrize("kind", ["id", "id+text", "residual", "prior", "cosine"])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommend_chunked_is_recommend(kind, exclude_seen):
    model = _model(kind)
    input_ids, attention_mask, timestamps = _batch(5, 12, seed=7)
    for top_k in (1, 5, 17):  # 17: every item, so the empty slots (-1, -inf) match too
        expected = model.recommend(
            input_ids, attention_mask, timestamps, top_k=top_k, exclude_seen=exclude_seen, exclude_items=[4, 9]
        )
        chunked = recommend_chunked(
            model, input_ids, attention_mask, timestamps, top_k=top_k, exclude_seen=exclude_seen, exclude_items=[4, 9],
            chunk_size=3,
        )  # fmt: skip
        assert torch.equal(chunked.item_ids, expected.item_ids)
        torch.testing.assert_close(chunked.scores, expected.scores)


def test_a_model_with_the_output_residual_exports_and_matches(tmp_path):
    """`item_output_residual` (the default with the sampled softmax): the ONNX graph scores with it, as `recommend`."""
    from tiny import tiny_config

    tokenizer = ItemTokenizer.from_items([f"i{k}" for k in range(40)])
    torch.manual_seed(0)
    model = InterestForNextItemPrediction(tiny_config(num_items=len(tokenizer), item_output_residual=True)).eval()
    with torch.no_grad():
        model.item_output_residual.weight.normal_(0.0, 0.5)  # so that a graph without it would rank otherwise
    report = export_onnx(model, tokenizer, tmp_path / "onnx", check=True)
    assert report["top10_equal"] and report["max_abs_diff"] < 1e-4


def test_a_model_with_cosine_scores_exports_and_matches(tmp_path):
    """`item_score_temperature`: the ONNX graph scores by the cosine over the temperature, as `recommend`."""
    model, tokenizer = _model("cosine").eval(), ItemTokenizer.from_items(ITEMS)
    report = export_onnx(model, tokenizer, tmp_path / "onnx", check=True)
    assert report["top10_equal"] and report["max_abs_diff"] < 1e-4
    recommender = OnnxRecommender(str(tmp_path / "onnx"))
    input_ids, attention_mask, timestamps = _batch(4, 12, seed=9)
    expected = model.recommend(input_ids, attention_mask, timestamps, top_k=5, exclude_seen=True)
    excluded = input_ids.masked_fill(attention_mask == 0, 0)
    scores, items = recommender.run(
        input_ids.numpy(), attention_mask.numpy(), timestamps.numpy(), np.full(4, True), excluded.numpy(), 5
    )
    assert (items == expected.item_ids.numpy()).all()
    assert np.abs(scores - expected.scores.numpy()).max() <= 1e-4
