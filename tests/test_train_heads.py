"""The click-prediction and interest-forecasting heads: `hub_scripts/train.py --task click|forecast` run in-process on
tiny data (seconds each), and `hf_interest.heads` checked against the synthetic generator's own events.

The forecasting evaluation is checked position by position: every (row, event_index) it returns is mapped back to
the generator's events (`user_major`, `user_offsets`) and the next-k category mix is recomputed there, without the
collator or `next_k_category_targets`.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from datasets import Dataset
from tiny import tiny_config, tiny_train_args

from hf_interest import InterestForClickPrediction, InterestForInterestForecasting, ItemTokenizer
from hf_interest.data import DataCollatorForInterest, SyntheticConfig, encode_sequences, generate_synthetic_interests
from hf_interest.heads import (
    category_prior,
    category_weight_matrix,
    evaluate_forecast,
    format_forecast_table,
    tune_forecast_baselines,
    whole_sequences,
)
from hf_interest.hub import prepare_upload_folder
from hf_interest.training import DataArguments, TrainArguments, check_arguments, load_data
from hf_interest_cli.commands import train_main

FORECAST_K = 3
METRIC_KEYS = {"cross_entropy", "kl_divergence", "top_category_accuracy", "n"}


def _train(*args: str) -> tuple[dict, str]:
    """One run of train.py's `main` in this process, its printed log captured."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        results = train_main(list(args))
    return results, log.getvalue()


def _hand_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC as the share of (positive, negative) pairs ranked right, ties counting half."""
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


# --task forecast ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forecast") / "run"
    args = tiny_train_args(60, 16, 2, "--task", "forecast", "--primary_category_only", "true")
    results, log = _train(*args, "--forecast_horizon", str(FORECAST_K), "--output_dir", str(folder))
    return {"folder": folder, "results": results, "log": log}


def test_forecast_run_writes_results_beside_the_baseline(forecast_run):
    folder, results = forecast_run["folder"], forecast_run["results"]
    stored = json.loads((folder / "eval_results.json").read_text())
    assert stored == json.loads(json.dumps(results))  # what main returns is what it wrote
    assert stored["task"] == "interest-forecasting"
    assert stored["dataset"]["name"] == "synthetic" and stored["dataset"]["split"].startswith("by users")
    for split in ("test", "validation"):
        block = stored[split]
        for name in ("model", "recent_mix"):
            assert set(block[name]) == METRIC_KEYS, (split, name)
            assert np.isfinite(block[name]["cross_entropy"]) and block[name]["cross_entropy"] > 0
            # KL = cross-entropy - entropy of the targets >= 0, and never above the cross-entropy
            assert 0 <= block[name]["kl_divergence"] <= block[name]["cross_entropy"] + 1e-9
            assert 0 <= block[name]["top_category_accuracy"] <= 1
        assert block["model"]["n"] == block["recent_mix"]["n"] > 0  # both scored on the same positions
        assert block["protocol"].startswith(f"split={split};")
        assert f"has {FORECAST_K} later events" in block["protocol"]
    training = stored["training"]
    assert training["metric_for_best_model"] == "cross_entropy" and training["higher_is_better"] is False
    assert training["epochs_run"] == 2 and training["best_epoch"] in (1, 2)
    assert training["best_validation_cross_entropy"] == min(h["cross_entropy"] for h in training["history"])
    # the printed table is the stored test results, headed by the protocol
    assert format_forecast_table(stored["test"]) in forecast_run["log"]


def test_forecast_run_folder_loads_with_one_hot_category_weights(forecast_run):
    folder = forecast_run["folder"]
    model = InterestForInterestForecasting.from_pretrained(folder)
    tokenizer = ItemTokenizer.from_pretrained(folder)
    names = model.config.category_names
    assert model.config.forecast_horizon == FORECAST_K and names == sorted(names)
    assert model.config.num_categories == len(names) == 16  # every synthetic category has items
    weights = model.item_category_weights.numpy()
    special = tokenizer.num_special_tokens
    assert weights.shape == (len(tokenizer), len(names))
    assert not weights[:special].any()
    # --primary_category_only: each real item's row is one-hot on the generator's primary category of that item
    generated = generate_synthetic_interests(num_users=60, num_items=30, seed=0)
    expected = np.zeros_like(weights)
    for row, item in enumerate(tokenizer.items, start=special):
        primary = generated.category_names[generated.primary_category_index[int(item)]]
        expected[row, names.index(primary)] = 1.0
    np.testing.assert_array_equal(weights, expected)
    card = (folder / "README.md").read_text()
    assert "InterestForInterestForecasting" in card and "interest-forecasting" in card
    assert "recent category mix" in card


def test_forecast_run_test_metrics_are_reproduced_from_the_saved_folder(forecast_run):
    folder = forecast_run["folder"]
    stored = json.loads((folder / "eval_results.json").read_text())["test"]
    model = InterestForInterestForecasting.from_pretrained(folder)
    tokenizer = ItemTokenizer.from_pretrained(folder)
    data_args = DataArguments(dataset="synthetic", synthetic_num_users=60, synthetic_num_items=30, max_length=24)
    data = load_data(data_args, task="forecast")
    encoded, unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    assert unknown == 0
    collator = DataCollatorForInterest(
        pad_token_id=tokenizer.pad_token_id, max_length=24, mode="train", return_time_gaps=False
    )
    weights = model.item_category_weights.numpy()
    prior = category_prior(encoded["train"]["input_ids"], weights)
    # the baseline's window and smoothing are tuned on the validation users, as train.py does
    baselines = tune_forecast_baselines(whole_sequences(encoded["validation"]), collator, weights, prior, FORECAST_K)
    window, smoothing = baselines["recent_mix"]
    assert f"the last {window:g} events smoothed {smoothing:g}" in stored["protocol"]
    decay, concentration = baselines["decayed_mix"]
    assert f"decayed {decay:g} per event with {concentration:g} pseudo-events" in stored["protocol"]
    evaluation = evaluate_forecast(
        model, whole_sequences(encoded["test"]), collator, prior, split="test", baselines=baselines
    )
    assert evaluation.metrics["protocol"] == stored["protocol"]
    for name in ("model", "recent_mix", "decayed_mix"):
        assert evaluation.metrics[name]["n"] == stored[name]["n"]
        for key in ("cross_entropy", "kl_divergence", "top_category_accuracy"):
            assert evaluation.metrics[name][key] == pytest.approx(stored[name][key], abs=1e-5), (name, key)


# --task click ---------------------------------------------------------------------------------------------------------


def _check_click_block(block: dict, positives: int, negatives: int) -> None:
    assert block["positives"] == positives and block["negatives"] == negatives
    for name in ("model", "popularity_lr"):
        values = block[name]
        assert 0.0 <= values["auc"] <= 1.0, name
        assert np.isfinite(values["log_loss"]) and values["log_loss"] > 0, name
        assert values["num_examples"] == positives + negatives, name
        assert values["positive_rate"] == pytest.approx(positives / (positives + negatives)), name
    assert block["protocol"].startswith("split=test;")


@pytest.fixture(scope="module")
def click_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("click") / "run"
    args = tiny_train_args(40, 16, 2, "--task", "click", "--click_labels", "sampled", "--click_negatives", "2")
    results, log = _train(*args, "--click_hidden_size", "8", "--output_dir", str(folder))
    return {"folder": folder, "results": results, "log": log}


def test_click_with_sampled_labels_on_synthetic(click_run):
    folder, results, log = click_run["folder"], click_run["results"], click_run["log"]
    assert results["task"] == "click-prediction"
    assert results["dataset"]["split"].startswith("leave-one-out")
    # leave-one-out: one test row per user, its target the positive, 2 sampled negatives beside it
    _check_click_block(results["test"], positives=40, negatives=80)
    assert results["test"]["labels"] == "the next item against 2 sampled negative(s)"
    training = results["training"]
    assert training["metric_for_best_model"] == "auc" and training["higher_is_better"] is True
    assert training["best_validation_auc"] == max(h["auc"] for h in training["history"])
    assert json.loads((folder / "eval_results.json").read_text()) == json.loads(json.dumps(results))
    model = InterestForClickPrediction.from_pretrained(folder)
    assert model.config.click_hidden_size == 8 and model.config.num_items == len(ItemTokenizer.from_pretrained(folder))
    assert "InterestForClickPrediction" in (folder / "README.md").read_text()
    assert "logistic regression on pop." in log


def _rated_log(num_users: int = 30, events: int = 8, num_items: int = 20) -> pd.DataFrame:
    """A log with ratings: items drawn by a skewed popularity, ratings 1-5, times increasing within each user."""
    rng = np.random.default_rng(7)
    popularity = 1.0 / np.arange(1, num_items + 1)
    rows = []
    for user in range(num_users):
        items = rng.choice(num_items, size=events, p=popularity / popularity.sum())
        ratings = rng.integers(1, 6, size=events).astype(float)
        start = 1_700_000_000 + 1000 * user
        rows += [
            (f"u{user}", f"i{item}", start + 60 * t, rating) for t, (item, rating) in enumerate(zip(items, ratings))
        ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_click_with_ratings_on_a_rated_log(tmp_path, file_format):
    frame = _rated_log()
    path = tmp_path / f"ratings.{file_format}"
    if file_format == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    folder = tmp_path / "run"
    results, _ = _train(
        "--dataset", str(path), "--task", "click", "--click_labels", "ratings", "--click_threshold", "4",
        "--hidden_size", "16", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size", "32",
        "--click_hidden_size", "8", "--max_length", "12", "--per_device_train_batch_size", "16",
        "--num_train_epochs", "2", "--report_to", "none", "--output_dir", str(folder),
    )  # fmt: skip
    # the test target of each user is their last event: a click when it is rated 4 or more
    last = frame.groupby("user_id", sort=False).tail(1)
    clicks = int((last["rating"] >= 4).sum())
    assert 0 < clicks < len(last)  # both classes present, so the AUCs mean something
    _check_click_block(results["test"], positives=clicks, negatives=len(last) - clicks)
    assert results["test"]["labels"] == "click = rating >= 4"
    # the popularity baseline is monotone in the target item's training count (events before the last two per user)
    train_events = frame.groupby("user_id", sort=False).head(len(frame) // frame["user_id"].nunique() - 2)
    counts = train_events["item_id"].value_counts()
    scores = last["item_id"].map(counts).fillna(0).to_numpy(dtype=float)
    auc = _hand_auc(scores, (last["rating"] >= 4).to_numpy().astype(int))
    stored = results["test"]["popularity_lr"]["auc"]
    assert min(abs(stored - auc), abs(stored - (1 - auc))) < 1e-9


def test_click_with_ratings_on_data_without_ratings_says_what_to_do(tmp_path):
    args = tiny_train_args(40, 16, 1, "--task", "click", "--click_labels", "ratings")
    with pytest.raises(ValueError, match=r"needs a rating column.*--click_labels sampled"):
        _train(*args, "--output_dir", str(tmp_path / "run"))


# check_arguments ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["click", "forecast"])
@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("init_from", "x", "--init_from"),
        ("lora_r", 4, "--lora_r"),
        ("targets_from", "2024-06-01", "--targets_from"),
        ("text_encoder_lora_r", 2, "--text_encoder_lora_r"),
    ],
)
def test_heads_refuse_next_item_only_flags(task, field, value, flag):
    train_args = TrainArguments(task=task, **{field: value})
    with pytest.raises(ValueError, match=rf"--task {task} trains a head from scratch; {flag}\b"):
        check_arguments(DataArguments(), train_args)


def test_heads_refuse_exclude_items_and_name_every_flag_given():
    data_args = DataArguments(exclude_items_file=__file__)  # any file that exists
    train_args = TrainArguments(task="click", init_from="x", lora_r=2)
    with pytest.raises(ValueError, match=r"--init_from, --lora_r, --exclude_items_file apply to next-item"):
        check_arguments(data_args, train_args)


def test_unknown_task_and_click_labels_are_refused():
    with pytest.raises(ValueError, match=r"--task must be one of \['next-item', 'click', 'forecast'\], got 'ranking'"):
        TrainArguments(task="ranking")
    with pytest.raises(ValueError, match=r"--click_labels must be one of \['ratings', 'sampled'\], got 'stars'"):
        DataArguments(click_labels="stars")
    # next-item keeps every update flag; the heads accept a plain run
    check_arguments(DataArguments(), TrainArguments(targets_from="2024-06-01"))
    check_arguments(DataArguments(), TrainArguments(task="forecast"))


@pytest.mark.parametrize("flags", [("--lora_r", "4"), ("--init_from", "no/such/folder")])
def test_main_reports_the_task_conflict_first(tmp_path, flags):
    with pytest.raises(ValueError, match="--task click trains a head from scratch"):
        _train(*tiny_train_args(40, 16, 1, "--task", "click", *flags), "--output_dir", str(tmp_path / "run"))


# category_weight_matrix -----------------------------------------------------------------------------------------------

ITEMS = {"item_id": ["a", "b", "c", "d", "e"], "categories": [["x", "y"], [], ["y"], None, "z"]}  # "z": one name
LIST_ITEMS = {**ITEMS, "categories": [["x", "y"], [], ["y"], None, ["z"]]}  # Arrow needs one type per column


def test_category_weights_split_equally_and_count_items_without_one():
    vocabulary = ["c", "a", "b", "d", "e", "f"]  # f is not in the items table: no category either
    weights, names, without = category_weight_matrix(ITEMS, vocabulary)
    assert names == ["x", "y", "z"]
    expected = [[0, 1, 0], [0.5, 0.5, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]]
    np.testing.assert_array_equal(weights, np.asarray(expected, dtype=np.float32))
    assert weights.dtype == np.float32 and without == 3  # b (empty list), d (null), f (not in the table)
    primary, names, without = category_weight_matrix(ITEMS, vocabulary, primary_only=True)
    np.testing.assert_array_equal(primary[1], [1, 0, 0])  # a: its first category only
    np.testing.assert_array_equal(np.delete(primary, 1, axis=0), np.delete(weights, 1, axis=0))
    assert without == 3


def test_category_weights_with_a_tokenizer_and_a_dataset():
    tokenizer = ItemTokenizer.from_items(["e", "a", "b"])
    special = tokenizer.num_special_tokens
    weights, names, without = category_weight_matrix(Dataset.from_dict(LIST_ITEMS), tokenizer)
    assert weights.shape == (special + 3, 3) and not weights[:special].any()
    by_item = {item: weights[special + k] for k, item in enumerate(tokenizer.items)}
    np.testing.assert_array_equal(by_item["a"], [0.5, 0.5, 0])
    np.testing.assert_array_equal(by_item["e"], [0, 0, 1])
    assert not by_item["b"].any() and without == 1
    # duplicated category names count once; numbers as ids and names are matched as text
    weights, names, _ = category_weight_matrix({"item_id": [1, 2], "categories": [["x", "x", "y"], [3]]}, ["2", "1"])
    assert names == ["3", "x", "y"]
    np.testing.assert_array_equal(weights, np.asarray([[1, 0, 0], [0, 0.5, 0.5]], dtype=np.float32))


def test_category_weights_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"needs 'item_id' and 'genres'"):
        category_weight_matrix(ITEMS, ["a"], column="genres")
    with pytest.raises(ValueError, match=r"needs 'item_id' and 'genres'"):
        category_weight_matrix(Dataset.from_dict(LIST_ITEMS), ["a"], column="genres")
    with pytest.raises(ValueError, match=r"No item has a category in column 'categories'"):
        category_weight_matrix({"item_id": ["a"], "categories": [[]]}, ["a"])


def test_category_weights_from_a_pandas_table():
    frame = pd.DataFrame({"item_id": ["a", "b"], "categories": [["x", "y"], ["y"]]})
    frame = pd.read_parquet(_to_parquet_bytes(frame))  # list cells come back as numpy arrays
    weights, names, _ = category_weight_matrix(frame, ["a", "b"])
    np.testing.assert_array_equal(weights, np.asarray([[0.5, 0.5], [0, 1]], dtype=np.float32))


def _to_parquet_bytes(frame: pd.DataFrame) -> io.BytesIO:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    buffer.seek(0)
    return buffer


# whole_sequences and evaluate_forecast against the generator -----------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    config = SyntheticConfig(num_users=80, num_items=40, num_categories=6, min_events=3, max_events=30, seed=5)
    generated = generate_synthetic_interests(config)
    data = generated.to_behavior_data(split="by_user")
    tokenizer = ItemTokenizer.from_items(data.item_ids)
    encoded, unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    assert unknown == 0
    weights, names, without = category_weight_matrix(data.items, tokenizer, primary_only=True)
    assert without == 0 and names == sorted(generated.category_names)
    torch.manual_seed(0)
    config = tiny_config(
        num_items=len(tokenizer), max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id,
        num_categories=len(names), category_names=names, forecast_horizon=FORECAST_K,
    )  # fmt: skip
    model = InterestForInterestForecasting(config).eval()
    model.set_item_category_weights(torch.from_numpy(weights))
    return {"generated": generated, "data": data, "tokenizer": tokenizer, "encoded": encoded, "model": model,
            "weights": weights, "names": names, "sequences": whole_sequences(encoded["test"])}  # fmt: skip


def _user_rows(generated, user: int) -> np.ndarray:
    """Rows of `generated.events` of one user, in the user's order."""
    return generated.user_major[generated.user_offsets[user] : generated.user_offsets[user + 1]]


def _collator(tokenizer, max_length: int) -> DataCollatorForInterest:
    return DataCollatorForInterest(
        pad_token_id=tokenizer.pad_token_id, max_length=max_length, mode="train", return_time_gaps=False
    )


def test_whole_sequences_are_each_held_out_users_full_sequence(synthetic):
    generated, tokenizer, sequences = synthetic["generated"], synthetic["tokenizer"], synthetic["sequences"]
    vocab = tokenizer.get_vocab()
    items, times = generated.events.column("item_id").to_numpy(), generated.events.column("timestamp").to_numpy()
    test = synthetic["encoded"]["test"]
    assert len(sequences) == len(test) > 0
    for row, sequence in zip(test, sequences):
        rows = _user_rows(generated, int(row["user_id"]))
        assert sequence["user_id"] == row["user_id"]
        assert sequence["input_ids"] == [vocab[str(i)] for i in items[rows]]
        assert sequence["timestamps"] == times[rows].tolist()
        assert sequence["input_ids"][:-1] == row["input_ids"] and sequence["input_ids"][-1] == row["labels"]


def test_whole_sequences_without_timestamps():
    dataset = Dataset.from_dict({"user_id": ["u", "v"], "input_ids": [[4, 5], [6]], "labels": [7, 8]})
    assert whole_sequences(dataset) == [
        {"user_id": "u", "input_ids": [4, 5, 7]},
        {"user_id": "v", "input_ids": [6, 8]},
    ]


BASELINE_WINDOW, SMOOTHING = 5, 0.2  # not k: the baseline's window and the horizon are separate settings
DECAY, CONCENTRATION = 0.8, 2.0


def _evaluate(synthetic, max_length: int, batch_size: int = 128):
    model, tokenizer, weights = synthetic["model"], synthetic["tokenizer"], synthetic["weights"]
    prior = category_prior(synthetic["encoded"]["train"]["input_ids"], weights)
    collator = _collator(tokenizer, max_length)
    evaluation = evaluate_forecast(
        model, synthetic["sequences"], collator, prior, batch_size=batch_size,
        baselines={"recent_mix": (BASELINE_WINDOW, SMOOTHING), "decayed_mix": (DECAY, CONCENTRATION)},
    )  # fmt: skip
    return evaluation, prior


def _next_k_by_hand(synthetic, users: np.ndarray, event_index: np.ndarray, k: int) -> np.ndarray:
    """The category mix of events e+1 .. e+k of each user, read from the generator's events."""
    generated, names = synthetic["generated"], synthetic["names"]
    category = generated.events.column("category").to_numpy(zero_copy_only=False)
    out = np.zeros((len(users), len(names)))
    for n, (user, e) in enumerate(zip(users, event_index)):
        rows = _user_rows(generated, int(user))
        assert e >= 0 and e + k < len(rows), (user, e)
        for name in category[rows[e + 1 : e + k + 1]]:
            out[n, names.index(name)] += 1.0 / k
    return out


@pytest.mark.parametrize("max_length", [12, 32])  # 12: long sequences are cut to their newest events
def test_forecast_positions_map_to_the_generators_events(synthetic, max_length):
    evaluation, prior = _evaluate(synthetic, max_length, batch_size=3)  # several batches: rows offset per batch
    sequences, k = synthetic["sequences"], FORECAST_K
    assert f"the last {BASELINE_WINDOW} events smoothed {SMOOTHING:g}" in evaluation.metrics["protocol"]
    users = np.asarray([int(sequences[r]["user_id"]) for r in evaluation.rows])
    pairs = set(zip(evaluation.rows.tolist(), evaluation.event_index.tolist()))
    assert len(pairs) == len(evaluation.rows) > 0
    np.testing.assert_allclose(
        evaluation.targets, _next_k_by_hand(synthetic, users, evaluation.event_index, k), atol=1e-6
    )
    # forecasts and baseline are distributions; the metrics are the cross-entropy of these rows
    np.testing.assert_allclose(evaluation.predictions.sum(axis=1), 1.0, atol=1e-5)
    for forecast in evaluation.baselines.values():
        np.testing.assert_allclose(forecast.sum(axis=1), 1.0, atol=1e-9)
    ce = -(evaluation.targets * np.log(evaluation.predictions)).sum(axis=1).mean()
    assert evaluation.metrics["model"]["cross_entropy"] == pytest.approx(ce, rel=1e-5)
    assert evaluation.metrics["model"]["n"] == evaluation.metrics["recent_mix"]["n"] == len(evaluation.rows)
    # the baseline at event e: (1 - s) * the category mix of events e-w+1 .. e + s * prior, where that window is read
    generated, names = synthetic["generated"], synthetic["names"]
    category = generated.events.column("category").to_numpy(zero_copy_only=False)
    checked = 0
    recent = evaluation.baselines["recent_mix"]
    for n, (row, e) in enumerate(zip(evaluation.rows, evaluation.event_index)):
        whole = len(sequences[row]["input_ids"])
        first_read = max(0, whole - (max_length + 1))  # the collator keeps the newest max_length + 1 events
        start = max(0, e - BASELINE_WINDOW + 1)
        if start < first_read:
            continue  # that window starts before the events the collator kept
        rows = _user_rows(generated, users[n])[start : e + 1]
        mix = np.zeros(len(names))
        for name in category[rows]:
            mix[names.index(name)] += 1.0 / len(rows)
        np.testing.assert_allclose(recent[n], (1 - SMOOTHING) * mix + SMOOTHING * prior, atol=1e-9)
        checked += 1
    assert checked > len(evaluation.rows) // 2
    # the same positions and forecasts with one batch (other padding lengths)
    single, _ = _evaluate(synthetic, max_length, batch_size=128)
    np.testing.assert_array_equal(single.rows, evaluation.rows)
    np.testing.assert_array_equal(single.event_index, evaluation.event_index)
    np.testing.assert_allclose(single.predictions, evaluation.predictions, atol=1e-5)


def test_category_prior_is_the_training_users_category_frequencies(synthetic):
    generated, names, data = synthetic["generated"], synthetic["names"], synthetic["data"]
    category = generated.events.column("category").to_numpy(zero_copy_only=False)
    train_users = [int(u) for u in data.sequences["train"]["user_id"]]
    counts = np.zeros(len(names))
    for user in train_users:
        for name in category[_user_rows(generated, user)]:
            counts[names.index(name)] += 1
    prior = category_prior(synthetic["encoded"]["train"]["input_ids"], synthetic["weights"])
    np.testing.assert_allclose(prior, counts / counts.sum(), atol=1e-12)


def test_every_position_with_k_later_events_is_evaluated_when_sequences_fit(synthetic):
    evaluation, _ = _evaluate(synthetic, max_length=32)  # longer than every sequence: nothing cut
    lengths = np.asarray([len(s["input_ids"]) for s in synthetic["sequences"]])
    assert lengths.max() <= 31
    assert len(evaluation.rows) == int(np.maximum(lengths - FORECAST_K, 0).sum())


def test_positions_beyond_max_length_are_counted_and_stated(synthetic):
    evaluation, _ = _evaluate(synthetic, max_length=12)
    lengths = np.asarray([len(s["input_ids"]) for s in synthetic["sequences"]])
    assert lengths.max() > 13  # some sequences are longer than the collator keeps
    qualifying = int(np.maximum(lengths - FORECAST_K, 0).sum())
    not_read = evaluation.metrics["positions_not_read"]
    assert not_read > 0 and len(evaluation.rows) + not_read == qualifying
    assert f"{not_read:,} positions older than the newest 12 events were not scored" in evaluation.metrics["protocol"]


def test_no_full_window_says_what_to_do(synthetic):
    sequences = [{"user_id": "0", "input_ids": [5, 6, 7]}]  # 2 inputs: no position has 3 later events
    prior = np.full(len(synthetic["names"]), 1.0 / len(synthetic["names"]))
    with pytest.raises(ValueError, match="No position of the test sequences has 3 later events"):
        evaluate_forecast(synthetic["model"], sequences, _collator(synthetic["tokenizer"], 12), prior)


def test_a_forecasting_run_prepares_for_the_hub_with_its_own_card(forecast_run, tmp_path):
    upload = prepare_upload_folder(forecast_run["folder"], tmp_path / "upload", repo_id="org/forecast")
    card = (tmp_path / "upload" / "README.md").read_text()
    assert "AutoModelForTokenClassification.from_pretrained('org/forecast')  # InterestForInterestForecasting" in card
    test = forecast_run["results"]["test"]
    assert f"{test['model']['cross_entropy']:.4f}" in card and f"{test['recent_mix']['cross_entropy']:.4f}" in card
    assert {"model.safetensors", "config.json", "eval_results.json", "README.md"} <= set(upload.files)
    reloaded = InterestForInterestForecasting.from_pretrained(tmp_path / "upload")
    assert reloaded.config.num_categories == len(reloaded.config.category_names)


def test_evaluate_script_names_a_head_checkpoint_and_where_its_results_are(forecast_run):
    from hf_interest_cli.commands import evaluate_main

    with pytest.raises(ValueError, match="InterestForInterestForecasting checkpoint.*eval_results.json"):
        evaluate_main([str(forecast_run["folder"])])
    assert forecast_run["results"]["arguments"]["train"]["task"] == "forecast"


REMOTE_LOAD = """
import json, sys
sys.modules["hf_interest"] = None  # prove the head loads from the checkpoint's own code
import torch
import transformers
model = getattr(transformers, sys.argv[2]).from_pretrained(sys.argv[1], trust_remote_code=True).eval()
inputs = {key: torch.tensor(value) for key, value in json.loads(sys.argv[3]).items()}
with torch.no_grad():
    logits = model(**inputs).logits
print(json.dumps({"class": type(model).__module__ + "." + type(model).__name__, "logits": logits.tolist()}))
"""


@pytest.mark.parametrize(
    ("run", "auto_class", "head"),
    [
        ("click_run", "AutoModelForSequenceClassification", InterestForClickPrediction),
        ("forecast_run", "AutoModelForTokenClassification", InterestForInterestForecasting),
    ],
)
def test_a_published_head_loads_with_its_auto_class_and_remote_code(run, auto_class, head, request, tmp_path):
    upload = prepare_upload_folder(request.getfixturevalue(run)["folder"], tmp_path / "upload", repo_id="org/head")
    auto_map = json.loads((upload.path / "config.json").read_text())["auto_map"]
    assert auto_map[auto_class] == f"modeling_interest.{head.__name__}"
    assert "AutoModelForCausalLM" not in auto_map  # it would load the backbone under an untrained next-item head
    assert f"{auto_class}.from_pretrained('org/head')" in (upload.path / "README.md").read_text()

    local = getattr(transformers, auto_class).from_pretrained(upload.path).eval()  # with the package: no remote code
    assert type(local) is head
    inputs = {"input_ids": [[3, 4, 5, 6], [0, 0, 7, 8]], "attention_mask": [[1, 1, 1, 1], [0, 0, 1, 1]]}
    if head is InterestForClickPrediction:
        inputs["candidate_ids"] = [[5, 9], [10, 4]]
    with torch.no_grad():
        expected = local(**{key: torch.tensor(value) for key, value in inputs.items()}).logits
    remote = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(upload.path), auto_class, json.dumps(inputs)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")},
        timeout=300,
    )
    assert remote.returncode == 0, remote.stderr[-3000:]
    out = json.loads(remote.stdout.strip().splitlines()[-1])
    assert out["class"].endswith(head.__name__) and not out["class"].startswith("hf_interest")
    torch.testing.assert_close(torch.tensor(out["logits"]), expected)


@pytest.mark.parametrize("max_length", [12, 32])  # 12: most sequences are longer than the model reads
def test_forecast_serves_what_evaluation_scored(synthetic, max_length):
    """#33: `model.forecast` on a user's events up to position e gives the distribution evaluation scored at e, for
    every position of a sequence the model reads whole. Of a longer sequence, evaluation scores one window (its newest
    max_length + 1 events) and a position's history starts at the window, so it reads fewer events than serving on the
    user's history up to it would (README states it); those positions are counted, not compared."""
    model = synthetic["model"]
    model.config.max_position_embeddings = max_length  # what a model trained with --max_length reads
    try:
        evaluation, _ = _evaluate(synthetic, max_length)
        sequences = synthetic["sequences"]
        checked = {"whole": 0, "window": 0}
        for prediction, row, event in zip(evaluation.predictions, evaluation.rows, evaluation.event_index):
            sequence = sequences[row]
            length = len(sequence["input_ids"])
            kind = "whole" if length <= max_length + 1 else "window"
            checked[kind] += 1
            if kind == "window":
                continue
            history = sequence["input_ids"][: event + 1]
            times = sequence["timestamps"][: event + 1]
            served = model.forecast(torch.tensor([history]), timestamps=torch.tensor([times]))[0]
            np.testing.assert_allclose(served.detach().numpy(), prediction, rtol=1e-5, atol=1e-6)
        assert checked["whole"] > 0 and (checked["window"] > 0) == (max_length < 30)
    finally:
        model.config.max_position_embeddings = 32
