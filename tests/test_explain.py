"""Explanations (`hf_interest.explain`): every method checked against the model it explains."""

import copy
import json

import evaluate
import pytest
import torch
from test_interest_heads import NUM_ITEMS, build, tiny_config
from transformers import pipeline

from hf_interest import (
    InterestForClickPrediction,
    InterestForInterestForecasting,
    InterestForNextItemPrediction,
    ItemTokenizer,
)
from hf_interest import explain as explain_module
from hf_interest.explain import (
    METHODS,
    category_attributions,
    counterfactual,
    explain,
    explain_recommendations,
    faithfulness,
    interest_weights,
)
from hf_interest.metrics import FAITHFULNESS_METRIC_PATH, curve_auc, faithfulness_summary
from hf_interest_cli import main

ITEMS = [f"i{index}" for index in range(NUM_ITEMS - 3)]
HISTORY = ["i3", "i7", "i1", "i12", "i5", "i9", "i14", "i2", "i11", "i6"]
TIMES = [1_600_000_000 + 3600 * step * step for step in range(len(HISTORY))]
NUM_CATEGORIES = 4


@pytest.fixture(scope="module")
def tokenizer():
    return ItemTokenizer.from_items(ITEMS)


def _scaled(model, seed=3):
    """Moves every weight away from its initialisation, so that scores depend on the history in earnest."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def next_item():
    return _scaled(build(InterestForNextItemPrediction, num_hidden_layers=2))


@pytest.fixture(scope="module")
def next_item_prior():
    """A next-item model with a transition prior: its scores also depend on which event is the newest."""
    model = build(InterestForNextItemPrediction, num_hidden_layers=2, item_transition_prior=True)
    generator = torch.Generator().manual_seed(4)
    model.set_transition_counts(
        torch.randint(3, NUM_ITEMS, (400,), generator=generator),
        torch.randint(3, NUM_ITEMS, (400,), generator=generator),
    )
    return _scaled(model)


@pytest.fixture(scope="module")
def click():
    return _scaled(build(InterestForClickPrediction))


@pytest.fixture(scope="module")
def forecast():
    model = build(
        InterestForInterestForecasting,
        num_categories=NUM_CATEGORIES,
        category_names=["news", "sport", "music", "film"],
    )
    weights = torch.zeros(NUM_ITEMS, NUM_CATEGORIES)
    weights[3:, :] = torch.nn.functional.one_hot(torch.arange(NUM_ITEMS - 3) % NUM_CATEGORIES, NUM_CATEGORIES).float()
    model.set_item_category_weights(weights)
    return _scaled(model)


def _logit(model, tokenizer, items, times, target):
    """The next-item logit of `target` after `items`, straight from the model's forward."""
    ids = torch.tensor([tokenizer.encode_items(items)])
    kwargs = {"timestamps": torch.tensor([times])} if times is not None else {}
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits[0, -1]
    return float(logits[tokenizer.encode_items([target])[0]])


# --- what each method says is what the model does ----------------------------------------------------------------


@pytest.mark.parametrize("head", ["next_item", "next_item_prior", "click", "forecast"])
def test_integrated_gradients_add_up_to_the_score_change(head, request, tokenizer):
    model = request.getfixturevalue(head)
    head = head.removesuffix("_prior")
    target = "i4" if head == "click" else None
    result = explain(model, tokenizer, HISTORY, TIMES, target=target, method="integrated_gradients")
    diagnostics = result.diagnostics
    assert result.head == head
    assert diagnostics["relative_completeness_gap"] <= 1e-2
    assert float(result.attributions.sum()) == pytest.approx(diagnostics["score_change"], rel=1e-2, abs=1e-4)
    assert abs(diagnostics["score_change"]) > 1e-3  # the history matters, so the check above checks something
    assert result.score - diagnostics["baseline_score"] == pytest.approx(diagnostics["score_change"], abs=1e-5)


def test_integrated_gradients_baseline_is_the_model_on_zero_item_vectors(next_item, tokenizer):
    result = explain(next_item, tokenizer, HISTORY, TIMES, method="integrated_gradients")
    ids = torch.tensor([tokenizer.encode_items(HISTORY)])
    with torch.no_grad():
        zeros = torch.zeros(1, len(HISTORY), next_item.config.hidden_size)
        state = next_item.model(inputs_embeds=zeros, timestamps=torch.tensor([TIMES])).last_hidden_state[:, -1]
        baseline = next_item.item_logits(state)[0, result.target_index]
    assert ids.shape[1] == len(result.attributions)
    assert result.diagnostics["baseline_score"] == pytest.approx(float(baseline), abs=1e-5)


@pytest.mark.parametrize("with_times", [True, False])
@pytest.mark.parametrize("model_name", ["next_item", "next_item_prior"])
def test_leave_one_out_is_the_model_without_that_event(model_name, request, tokenizer, with_times):
    next_item = request.getfixturevalue(model_name)
    times = TIMES if with_times else None
    result = explain(next_item, tokenizer, HISTORY, times, method="leave_one_out")
    full = _logit(next_item, tokenizer, HISTORY, times, result.target)
    assert result.score == pytest.approx(full, abs=1e-5)
    for position in range(len(HISTORY)):
        items = HISTORY[:position] + HISTORY[position + 1 :]
        kept_times = times[:position] + times[position + 1 :] if with_times else None
        without = _logit(next_item, tokenizer, items, kept_times, result.target)
        assert float(result.attributions[position]) == pytest.approx(full - without, abs=1e-5)


def test_leave_one_out_recomputes_the_time_gaps(next_item, tokenizer):
    """Removing an event closes its gap: the next event's gap is measured from the event before, as if the removed
    one had never happened; reading it as 'gap unknown' would give another (wrong) number."""
    result = explain(next_item, tokenizer, HISTORY, TIMES, method="leave_one_out")
    position = 4
    ids = torch.tensor([tokenizer.encode_items(HISTORY)])
    ids[0, position] = next_item.config.pad_token_id
    mask = torch.ones_like(ids)
    mask[0, position] = 0
    with torch.no_grad():
        # the event masked out where it was: positions skip it, but the next event's gap is "unknown" (bucket 0)
        masked = next_item(input_ids=ids, attention_mask=mask, timestamps=torch.tensor([TIMES]))
    masked_score = float(masked.logits[0, -1, result.target_index])
    recomputed = _logit(
        next_item, tokenizer, HISTORY[:position] + HISTORY[position + 1 :], TIMES[:position] + TIMES[position + 1 :],
        result.target,
    )  # fmt: skip
    assert float(result.attributions[position]) == pytest.approx(result.score - recomputed, abs=1e-5)
    assert abs(masked_score - recomputed) > 1e-4


def test_interest_weights_rebuild_the_models_own_parts(next_item, tokenizer):
    ids = torch.tensor([tokenizer.encode_items(HISTORY)])
    times = torch.tensor([TIMES])
    weights = interest_weights(next_item, ids, timestamps=times)
    module = next_item.model.long_short_term
    with torch.no_grad():
        output = next_item.model(input_ids=ids, timestamps=times)
        items = next_item.model.item_representations(ids)
        heads = module.num_heads
        long_values = module.long_term_value(items).reshape(1, len(HISTORY), heads, -1)
        short_values = module.short_term_value(items).reshape(1, len(HISTORY), heads, -1)
    long_term = torch.einsum("bth,bthd->bhd", weights["long_term_heads"], long_values).flatten(1)
    short_term = torch.einsum("bth,bthd->bhd", weights["short_term_heads"], short_values).flatten(1)
    torch.testing.assert_close(long_term, output.long_term_interest[:, -1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(short_term, output.short_term_interest[:, -1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(weights["gate"], output.interest_gate[:, -1])
    window = next_item.config.short_term_window
    assert weights["short_term"][0, :-window].abs().sum() == 0
    assert weights["long_term"].sum() == pytest.approx(1.0, abs=1e-5)
    gate = float(weights["gate"][0])
    torch.testing.assert_close(weights["mixed"], gate * weights["long_term"] + (1 - gate) * weights["short_term"])


def test_interest_weights_ignore_left_padding(next_item, tokenizer):
    ids = torch.tensor([tokenizer.encode_items(HISTORY)])
    times = torch.tensor([TIMES])
    padded_ids = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    padded_times = torch.cat([torch.zeros(1, 5, dtype=torch.long), times], dim=1)
    mask = (padded_ids != 0).long()
    plain = interest_weights(next_item, ids, timestamps=times)
    padded = interest_weights(next_item, padded_ids, mask, padded_times)
    for key in ("long_term", "short_term", "mixed"):
        torch.testing.assert_close(padded[key][:, 5:], plain[key], rtol=1e-5, atol=1e-6)
        assert padded[key][:, :5].abs().sum() == 0


@pytest.mark.parametrize("method", [m for m in METHODS if m != "random"])
def test_a_batch_gives_what_each_history_gives_alone(next_item, tokenizer, method):
    histories = [HISTORY, HISTORY[:4], HISTORY[3:]]
    times = [TIMES, TIMES[:4], TIMES[3:]]
    together = explain(next_item, tokenizer, histories, times, method=method)
    for history, time, result in zip(histories, times, together):
        alone = explain(next_item, tokenizer, history, time, method=method)
        assert result.target == alone.target
        torch.testing.assert_close(result.attributions, alone.attributions, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["integrated_gradients", "leave_one_out"])
def test_small_chunks_give_the_same_attributions(next_item, tokenizer, method, monkeypatch):
    """A large catalogue cuts the passes into chunks of rows (`ROWS_TIMES_CANDIDATES`): the results do not move."""
    whole = explain(next_item, tokenizer, [HISTORY, HISTORY[2:]], [TIMES, TIMES[2:]], method=method)
    monkeypatch.setattr(explain_module, "ROWS_TIMES_CANDIDATES", 3 * NUM_ITEMS)  # three rows per pass
    chunked = explain(next_item, tokenizer, [HISTORY, HISTORY[2:]], [TIMES, TIMES[2:]], method=method)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a.attributions, b.attributions, rtol=1e-4, atol=1e-5)


def test_a_peft_model_is_explained_through_its_adapters(next_item, tokenizer):
    from peft import LoraConfig, get_peft_model

    from hf_interest import DEFAULT_LORA_TARGET_MODULES

    base = explain(next_item, tokenizer, HISTORY, TIMES, method="leave_one_out")
    peft_model = get_peft_model(
        copy.deepcopy(next_item), LoraConfig(r=2, target_modules=DEFAULT_LORA_TARGET_MODULES, init_lora_weights=False)
    )
    adapted = explain(peft_model, tokenizer, HISTORY, TIMES, method="leave_one_out", target=base.target)
    merged = explain(
        peft_model.merge_and_unload(), tokenizer, HISTORY, TIMES, method="leave_one_out", target=base.target
    )
    torch.testing.assert_close(adapted.attributions, merged.attributions, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(adapted.attributions, base.attributions)  # the adapters are not zero: they count


def test_explaining_puts_the_model_in_eval_mode_and_is_deterministic(tokenizer):
    model = _scaled(build(InterestForNextItemPrediction, hidden_dropout_prob=0.5)).train()
    first = explain(model, tokenizer, HISTORY, TIMES, method="integrated_gradients")
    assert not model.training
    second = explain(model, tokenizer, HISTORY, TIMES, method="integrated_gradients")
    torch.testing.assert_close(first.attributions, second.attributions, rtol=0, atol=0)


def test_top_events_and_explanation_fields(next_item, tokenizer):
    result = explain(next_item, tokenizer, HISTORY, TIMES, method="leave_one_out")
    assert [event["item_id"] for event in result.events] == HISTORY
    assert [event["timestamp"] for event in result.events] == TIMES
    top = result.top(3)
    assert [event["attribution"] for event in top] == sorted(result.attributions.tolist(), reverse=True)[:3]
    recommended = next_item.recommend(torch.tensor([tokenizer.encode_items(HISTORY)]), top_k=1)
    assert result.target == tokenizer.decode_items(recommended.item_ids[0].tolist())[0]
    cut = explain(next_item, tokenizer, HISTORY, TIMES, method="leave_one_out", top_k=2)
    assert cut.events == top[:2]


def test_forecast_target_and_category_attributions(forecast, tokenizer):
    result = explain(forecast, tokenizer, HISTORY, TIMES, method="leave_one_out")
    probabilities = forecast.forecast(
        torch.tensor([tokenizer.encode_items(HISTORY)]), timestamps=torch.tensor([TIMES])
    )
    assert result.target == forecast.config.category_names[int(probabilities.argmax())]
    by_category = category_attributions(
        result, forecast.item_category_weights, tokenizer, forecast.config.category_names
    )
    assert sum(by_category.values()) == pytest.approx(float(result.attributions.sum()), abs=1e-5)
    assert list(by_category.values()) == sorted(by_category.values(), reverse=True)
    named = explain(forecast, tokenizer, HISTORY, TIMES, target="music", method="leave_one_out")
    assert named.target == "music" and named.target_index == 2


# --- counterfactuals --------------------------------------------------------------------------------------------


def test_counterfactual_changes_the_top1_when_rerun(next_item, tokenizer):
    result = counterfactual(next_item, tokenizer, HISTORY, TIMES)
    assert result.found and result.verified and result.size == len(result.removed) >= 1
    removed = {event["position"] for event in result.removed}
    kept = [position for position in range(len(HISTORY)) if position not in removed]
    ids = torch.tensor([[tokenizer.encode_items(HISTORY)[p] for p in kept]])
    times = torch.tensor([[TIMES[p] for p in kept]])
    seen = tokenizer.encode_items(HISTORY)
    before = next_item.recommend(torch.tensor([seen]), timestamps=torch.tensor([TIMES]), top_k=1)
    after = next_item.recommend(ids, timestamps=times, top_k=1, exclude_seen=False, exclude_items=seen)
    assert tokenizer.decode_items(before.item_ids[0].tolist())[0] == result.original
    assert tokenizer.decode_items(after.item_ids[0].tolist())[0] == result.new != result.original


@pytest.mark.parametrize("head", ["click", "forecast"])
def test_counterfactual_for_the_other_heads(head, request, tokenizer):
    model = request.getfixturevalue(head)
    result = counterfactual(model, tokenizer, HISTORY, TIMES, target="i4" if head == "click" else None)
    if result.found:
        assert result.verified and result.new != result.original
    else:
        assert result.size == 0 and result.removed == []


@pytest.mark.parametrize("seed", range(4))
def test_a_tie_is_not_a_change_of_the_top1(tokenizer, seed):
    """A freshly initialised model scores an empty history by its item bias, zero for every item: all items tie. Which
    one `recommend` returns then is arbitrary, so removing a one-event history must not count as changing the top-1."""
    torch.manual_seed(seed)
    model = InterestForNextItemPrediction(tiny_config()).eval()
    assert model.item_head.bias.abs().max() == 0
    history = [ITEMS[seed + 5]]
    result = counterfactual(model, tokenizer, history, TIMES[:1])
    assert not result.found and result.size == 0 and result.removed == []


def test_counterfactual_reports_not_found_within_the_limit(next_item, tokenizer):
    result = counterfactual(next_item, tokenizer, HISTORY, TIMES, max_size=0)
    assert not result.found and not result.verified and result.size == 0


# --- faithfulness -----------------------------------------------------------------------------------------------


def test_curve_auc_and_summary():
    assert curve_auc([1.0, 0.0]) == pytest.approx(0.5)
    assert curve_auc([0.4, 0.1, 0.0]) == pytest.approx((0.25 + 0.05) / 2)
    assert curve_auc([0.7]) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="NaN"):
        curve_auc([0.1, float("nan")])
    summary = faithfulness_summary([[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 0.0]], [1.0, 3.0], [0.0, 1.0])
    assert summary == {
        "deletion_auc": pytest.approx(0.5),
        "insertion_auc": pytest.approx(0.25),
        "comprehensiveness": pytest.approx(2.0),
        "sufficiency": pytest.approx(0.5),
        "num_explanations": 2,
    }


def test_faithfulness_curves_are_the_models_probabilities(next_item, tokenizer, tmp_path):
    explanations = explain(next_item, tokenizer, [HISTORY, HISTORY[:6]], [TIMES, TIMES[:6]], method="leave_one_out")
    checked = faithfulness(next_item, tokenizer, explanations, [HISTORY, HISTORY[:6]], [TIMES, TIMES[:6]], k=3)
    ids = torch.tensor([tokenizer.encode_items(HISTORY)])
    with torch.no_grad():
        logits = next_item(input_ids=ids, timestamps=torch.tensor([TIMES])).logits[0, -1]
        logits[: next_item.config.num_special_tokens] = float("-inf")
        full_probability = float(logits.softmax(dim=0)[explanations[0].target_index])
    deletion, insertion = checked["deletion_curves"][0], checked["insertion_curves"][0]
    assert deletion[0] == pytest.approx(full_probability, rel=1e-5)
    assert insertion[-1] == pytest.approx(full_probability, rel=1e-5)
    assert deletion[-1] == pytest.approx(insertion[0], rel=1e-5)  # both: the empty history
    assert len(deletion) == len(HISTORY) + 1
    # comprehensiveness at 3 of leave-one-out's top 3, checked by removing them by hand
    top = {event["position"] for event in explanations[0].top(3)}
    kept = [p for p in range(len(HISTORY)) if p not in top]
    without = _logit(
        next_item, tokenizer, [HISTORY[p] for p in kept], [TIMES[p] for p in kept], explanations[0].target
    )
    assert checked["per_history"]["comprehensiveness"][0] == pytest.approx(explanations[0].score - without, abs=1e-5)
    assert 0.0 <= checked["beats_random"] <= 1.0
    # the evaluate module gives the library's numbers
    metric = evaluate.load(FAITHFULNESS_METRIC_PATH, cache_dir=str(tmp_path), keep_in_memory=True)
    from_module = metric.compute(
        deletion_curve=checked["deletion_curves"],
        insertion_curve=checked["insertion_curves"],
        comprehensiveness=checked["per_history"]["comprehensiveness"],
        sufficiency=checked["per_history"]["sufficiency"],
    )
    for key in ("deletion_auc", "insertion_auc", "comprehensiveness", "sufficiency"):
        assert from_module[key] == pytest.approx(checked[key], rel=1e-9)


def test_leave_one_out_beats_the_random_explainer_on_deletion(next_item, tokenizer):
    histories = [HISTORY, HISTORY[2:], HISTORY[:8], HISTORY[1:9]]
    times = [TIMES, TIMES[2:], TIMES[:8], TIMES[1:9]]
    scores = {}
    for method in ("leave_one_out", "random"):
        explanations = explain(next_item, tokenizer, histories, times, method=method)
        scores[method] = faithfulness(next_item, tokenizer, explanations, histories, times, seed=1)[
            "comprehensiveness"
        ]
    assert scores["leave_one_out"] > scores["random"]


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "kwargs", "message"),
    [
        (["i3", "nope", "i5"], {}, "not in the model's vocabulary .*'nope'"),
        ([], {}, "empty"),
        ("i3 i5", {}, "list of raw item ids"),
        (["i3", "[PAD]"], {}, "not in the model's vocabulary"),
        (["i3", "i5"], {"timestamps": [1]}, "1 timestamps for 2 items"),
        (["i3", "i5"], {"timestamps": [5, 1]}, "must not decrease"),
        (["i3", "i5"], {"timestamps": ["x", 1]}, "integer seconds"),
        (["i3", "i5"], {"method": "shap"}, "Unknown method 'shap'"),
        (["i3", "i5"], {"target": "zzz"}, "target item 'zzz'"),
        (["i3", "i5"], {"top_k": 0}, "top_k"),
    ],
)
def test_bad_input_is_a_clear_error(next_item, tokenizer, history, kwargs, message):
    with pytest.raises(ValueError, match=message):
        explain(next_item, tokenizer, history, **kwargs)


def test_click_needs_a_target_and_a_batch_names_the_bad_history(click, next_item, tokenizer):
    with pytest.raises(ValueError, match="pass target="):
        explain(click, tokenizer, HISTORY)
    with pytest.raises(ValueError, match="history 1: .*'nope'"):
        explain(next_item, tokenizer, [HISTORY, ["nope"]])


# --- pipeline, command line, model card -------------------------------------------------------------------------


def test_pipeline_explain_adds_the_top_events(tiny_run):
    recommender = pipeline("next-item-recommendation", model=str(tiny_run))
    tokenizer, model = recommender.tokenizer, recommender.model
    history = list(tokenizer.items)[:6]
    times = [1_700_000_000 + 600 * step for step in range(6)]
    plain = recommender({"items": history, "timestamps": times}, top_k=3)
    out = recommender({"items": history, "timestamps": times}, top_k=3, explain=True, explain_top_k=2)
    assert [r["item_id"] for r in out] == [r["item_id"] for r in plain]
    for entry in out:
        expected = explain(model, tokenizer, history, times, target=entry["item_id"], method="leave_one_out").top(2)
        assert entry["because"] == expected
    gradients = recommender(history, top_k=2, explain=True, explain_method="integrated_gradients")
    assert all(len(entry["because"]) == 3 for entry in gradients)
    with pytest.raises(ValueError, match="explain_method"):
        recommender(history, explain=True, explain_method="nope")
    by_items = explain_recommendations(model, tokenizer, history, times, items=[r["item_id"] for r in out], top_k=2)
    assert by_items == [entry["because"] for entry in out]


def test_cli_explain_table_json_and_plot(tiny_run, tmp_path, capsys):
    tokenizer = ItemTokenizer.from_pretrained(tiny_run)
    history = list(tokenizer.items)[:8]
    times = [str(1_700_000_000 + 900 * step) for step in range(8)]
    png = tmp_path / "why.png"
    argv = ["explain", str(tiny_run), "--history", *history, "--timestamps", *times, "--top_k", "3"]
    assert main([*argv, "--output", str(png)]) == 0
    table = capsys.readouterr().out
    assert "explained: item" in table and "attribution" in table and "counterfactual" in table
    # titles come from the run's own data, as the Space shows them (no --item_titles needed)
    from hf_interest.space import item_info, load_run_data

    titles = {item: info["title"] for item, info in item_info(load_run_data(tiny_run)).items()}
    assert all(titles[item] in table for item in history if f" {item} " in table)
    assert sum(titles[item] in table for item in history) >= 3
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*argv, "--json", "--method", "integrated_gradients"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "integrated_gradients" and len(result["events"]) == 3
    assert all(event["title"] == titles[event["item_id"]] for event in result["events"])
    assert result["diagnostics"]["relative_completeness_gap"] <= 1e-2
    if result["counterfactual"]["found"]:
        assert result["counterfactual"]["verified"]
    assert main(["explain", str(tiny_run), "--history", history[0], "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_model_card_says_how_to_explain(tiny_run):
    card = (tiny_run / "README.md").read_text()
    assert "## Explanations" in card and "hf-interest explain" in card and "explain=True" in card


def test_a_history_longer_than_the_model_reads_is_explained_over_its_newest_events(next_item, tokenizer):
    """#33: the events explained are the newest max_position_embeddings (what the model scored), and the top-1 and the
    counterfactual's check exclude every event given, as recommend and evaluation do."""
    newest = next_item.config.max_position_embeddings
    # the six oldest events are items found only in the part the model does not read; three items are never seen
    history = ITEMS[:6] + [ITEMS[6 + step % 8] for step in range(newest)]
    times = [1_600_000_000 + 60 * step for step in range(len(history))]
    long = explain(next_item, tokenizer, history, times)
    short = explain(next_item, tokenizer, history[-newest:], times[-newest:], target=long.target)
    assert [event["item_id"] for event in long.events] == history[-newest:]
    torch.testing.assert_close(long.attributions, short.attributions)
    assert long.diagnostics["events_given"] == len(history) and long.diagnostics["events_read"] == newest
    assert long.target not in history  # the six oldest items stay seen
    served = next_item.recommend(**tokenizer([history], timestamps=[times], return_tensors="pt"), top_k=1)
    assert tokenizer.decode_items(served.item_ids[0].tolist()) == [long.target]
    found = counterfactual(next_item, tokenizer, history, times)
    assert found.new is None or found.new not in history


def test_time_axis_labels_read_as_time():
    from datetime import datetime, timezone

    from hf_interest.explain import time_axis_format

    start = datetime(1997, 12, 4, 15, 55, 0, tzinfo=timezone.utc)
    seconds = time_axis_format(start, start.replace(second=49))
    assert seconds == ("%H:%M:%S", "time (UTC, 1997-12-04)")
    assert f"{start.replace(second=49):{seconds[0]}}" == "15:55:49"  # not matplotlib's "55:49.000000"
    assert time_axis_format(start, start.replace(hour=23))[0] == "%b %d %H:%M"
    assert time_axis_format(start, datetime(1998, 3, 1, tzinfo=timezone.utc)) == ("%Y-%m-%d", "date (UTC)")
