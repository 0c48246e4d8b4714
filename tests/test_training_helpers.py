"""Tests of the pieces the scripts share: training windows, the length-grouped sampler, the evaluation collator and
the ranking evaluation beside the popularity baseline."""

import numpy as np
import pytest
import torch

from hf_interest import InterestConfig, InterestForNextItemPrediction
from hf_interest.data import DataCollatorForInterest
from hf_interest.metrics import PopularityRecommender, RankingAccumulator
from hf_interest.training import EvalCollator, LengthGroupedSampler, evaluate_next_item, window_starts
from hf_interest.training.arguments import (
    FULL_SOFTMAX_MAX_ITEMS,
    SMALL_LOG_WINDOWS,
    TrainArguments,
    resolve_loss_type,
    resolve_train_batch,
)
from hf_interest.training.data import count_train_windows
from hf_interest.training.tasks import (
    CATEGORY_START_STD,
    item_category_weights,
    item_table_start,
    start_item_bias_at_popularity,
    start_item_table_at_categories,
)


@pytest.mark.parametrize("window", [2, 3, 5, 11])
def test_windows_cover_every_transition_exactly_once(window):
    lengths = np.array([1, 2, 3, 4, 5, 10, 11, 12, 37])
    rows, starts, stops = window_starts(lengths, window)
    assert ((stops - starts) <= window).all() and (starts >= 0).all()
    for row, length in enumerate(lengths):
        transitions = []
        for start, stop in zip(starts[rows == row], stops[rows == row]):
            transitions += [(t, t + 1) for t in range(start, stop - 1)]
        assert sorted(transitions) == [(t, t + 1) for t in range(length - 1)], (row, length)
        # the newest window always ends at the last event: what the model reads at inference
        assert stops[rows == row].max() == length


def test_windows_reject_a_window_without_a_label():
    with pytest.raises(ValueError, match="at least 2 events"):
        window_starts(np.array([5]), 1)


def test_length_grouped_sampler_is_a_seeded_permutation_per_epoch():
    lengths = list(np.random.default_rng(0).integers(1, 200, size=103))
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, group_batches=4)
    first = list(sampler)
    assert sorted(first) == list(range(103))
    assert list(sampler) == first  # same epoch, same order (what a resumed run relies on)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(103)) and second != first
    again = LengthGroupedSampler(lengths, batch_size=8, seed=3, group_batches=4)
    again.set_epoch(1)
    assert list(again) == second

    # batches are length-grouped: padding is far below what a random order gives
    def padding(order):
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(max(lengths[j] for j in b) * len(b) - sum(lengths[j] for j in b) for b in batches)

    random_order = list(np.random.default_rng(1).permutation(103))
    assert padding(second) < 0.5 * padding(random_order)


def test_eval_collator_adds_the_whole_history_as_seen():
    collator = EvalCollator(DataCollatorForInterest(max_length=2, mode="eval", return_time_gaps=False))
    batch = collator([{"input_ids": [5, 6, 7], "labels": 9}, {"input_ids": [8], "labels": 4}])
    assert batch["input_ids"].tolist() == [[6, 7], [0, 8]]  # truncated to the newest 2 events
    assert batch["seen"].tolist() == [[5, 6, 7], [0, 0, 8]]  # but every earlier item counts as seen
    assert batch["labels"].tolist() == [9, 4]


def test_evaluate_next_item_scores_model_and_baseline_with_the_same_code():
    torch.manual_seed(0)
    model = InterestForNextItemPrediction(InterestConfig(num_items=30, hidden_size=8, max_position_embeddings=10))
    model.eval()
    rows = [{"input_ids": list(np.random.default_rng(i).integers(3, 30, size=4)), "labels": 3 + i} for i in range(9)]
    loader = torch.utils.data.DataLoader(
        rows, batch_size=4, collate_fn=EvalCollator(DataCollatorForInterest(max_length=10, mode="eval"))
    )
    counts = np.arange(30, dtype=float)
    popularity = PopularityRecommender(counts)
    results = evaluate_next_item(model, loader, popularity, "test", use_timestamps=False)  # rows have no times
    for variant, exclude in (("exclude_seen", True), ("include_seen", False)):
        block = results[variant]
        assert block["protocol"]["exclude_seen"] is exclude and block["protocol"]["split"] == "test"
        # recompute both rows by hand with the accumulator
        for name in ("model", "popularity"):
            accumulator = RankingAccumulator(exclude_seen=exclude, ignore_index=[0, 1, 2], split="test")
            for batch in loader:
                with torch.no_grad():
                    scores = (
                        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, -1]
                        if name == "model"
                        else popularity.full_sort_scores(len(batch["labels"]))
                    )
                accumulator.update(scores, batch["labels"], batch["seen"])
            assert block[name] == accumulator.compute()
    assert results["exclude_seen"]["model"]["num_users"] == 9


@pytest.mark.parametrize(
    "asked,num_items,chosen,said",
    [
        ("auto", FULL_SOFTMAX_MAX_ITEMS, "full_softmax", "at most"),
        ("auto", FULL_SOFTMAX_MAX_ITEMS + 1, "sampled_softmax", "over"),
        ("full_softmax", 10 * FULL_SOFTMAX_MAX_ITEMS, "full_softmax", "--loss_type full_softmax"),
        ("sampled_softmax", 10, "sampled_softmax", "--loss_type sampled_softmax"),
    ],
)
def test_auto_loss_switches_to_the_sampled_softmax_above_the_threshold_and_says_why(asked, num_items, chosen, said):
    loss, why = resolve_loss_type(asked, num_items)
    assert loss == chosen
    assert why.startswith(f"loss: {chosen}") and said in why


def test_counted_windows_are_the_windows_the_loader_trains_on():
    from datasets import Dataset

    lengths = [1, 2, 3, 4, 5, 10, 11, 12, 37]
    split = Dataset.from_dict({"item_ids": [[f"i{t}" for t in range(n)] for n in lengths]})
    for max_length in (1, 2, 4, 10):
        assert count_train_windows(split, max_length) == len(window_starts(np.array(lengths), max_length + 1)[0])
    # a select() view counts its own rows, not the table under it
    assert count_train_windows(split.select([8]), 4) == len(window_starts(np.array([37]), 5)[0]) == 9


@pytest.mark.parametrize(
    "given,windows,expected,said",
    [
        ({}, SMALL_LOG_WINDOWS - 1, (8, 2e-3), "the small-log batch"),
        ({}, SMALL_LOG_WINDOWS, (64, 1e-3), "the default"),
        ({}, None, (64, 1e-3), "the default"),  # streamed or SISA shards: not counted
        ({"task": "click"}, 100, (64, 1e-3), "next-item training from scratch"),
        ({"task": "forecast"}, 100, (64, 1e-3), "next-item training from scratch"),
        ({"dp_noise_multiplier": 1.0}, 100, (64, 1e-3), "without DP-SGD"),
        ({"init_from": "runs/base"}, 100, (64, 1e-3), "next-item training from scratch"),
        # a value given wins, and the other field keeps the large-log default: one meaning per flag
        ({"per_device_train_batch_size": 32}, 100, (32, 1e-3), "the default"),
        ({"learning_rate": 5e-4}, 100, (8, 5e-4), "the small-log batch"),
    ],
)
def test_batch_and_learning_rate_follow_the_logs_training_windows_where_left_out(given, windows, expected, said):
    args = TrainArguments(output_dir="runs/x", report_to="none", **given)
    resolved, why = resolve_train_batch(args, windows)
    assert (resolved.per_device_train_batch_size, resolved.learning_rate) == expected
    assert why.startswith(f"batch: {expected[0]} windows per device and step") and said in why
    assert (args.per_device_train_batch_size, args.learning_rate) == (given.get("per_device_train_batch_size"),
                                                                     given.get("learning_rate"))  # fmt: skip
    # both given: nothing to resolve, nothing said
    fixed = TrainArguments(output_dir="runs/x", per_device_train_batch_size=32, learning_rate=3e-3)
    assert resolve_train_batch(fixed, 10) == (fixed, None)


def test_sharding_names_the_engines_that_split_the_model():
    """Under these the weight average is off and the saved model is gathered first (both checked on a GPU)."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from hf_interest.training.checkpointing import sharding

    assert sharding(SimpleNamespace(distributed_type=DistributedType.FSDP)) == "FSDP"
    assert sharding(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)) == "DEEPSPEED"
    assert sharding(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)) is None
    assert sharding(SimpleNamespace(distributed_type=DistributedType.NO)) is None


def test_item_bias_starts_at_log_popularity_so_a_new_model_ranks_by_popularity():
    """--item_bias_init popularity (the default): b_i = log(1 + count_i), centred; an untrained model's top items are
    then popularity's, where a zero bias leaves them to the random embeddings."""
    torch.manual_seed(0)
    num_items = 200
    counts = np.zeros(num_items)
    counts[3:] = np.round(1e6 * 0.7 ** np.arange(num_items - 3))  # special tokens 0..2 count 0
    model = InterestForNextItemPrediction(
        InterestConfig(num_items=num_items, hidden_size=16, max_position_embeddings=8)
    )
    zero_start = model.item_head.bias.detach().clone()
    model.eval()
    history = torch.tensor([[5, 9, 40, 7]])
    with torch.no_grad():
        before = (model(input_ids=history).logits[0, -1, 3:].topk(10).indices + 3).tolist()
    start_item_bias_at_popularity(model, counts)
    prior = np.log1p(counts)
    np.testing.assert_allclose(model.item_head.bias.detach().double().numpy(), prior - prior.mean(), atol=1e-6)
    assert torch.equal(zero_start, torch.zeros(num_items))

    with torch.no_grad():
        after = (model(input_ids=history).logits[0, -1, 3:].topk(10).indices + 3).tolist()
    assert after == list(range(3, 13)) != before  # the 10 most counted items, in order; not so from a zero bias
    with pytest.raises(ValueError, match="item_counts has shape"):
        start_item_bias_at_popularity(model, counts[:-1])


def test_item_table_starts_at_category_vectors_shared_by_the_items_of_a_category():
    """--item_table_init categories: each row gains the mean of its categories' vectors (drawn from the seed alone),
    so items of one category share a direction; rows without a category (specials, padding) are unchanged, the tied
    output side reads the same table, and the global random stream is not touched."""
    num_items, categories = 60, 4
    model = InterestForNextItemPrediction(
        InterestConfig(num_items=num_items, hidden_size=32, max_position_embeddings=8, pad_token_id=0)
    )
    before = model.get_input_embeddings().weight.detach().clone()
    weights = torch.zeros(num_items, categories)
    weights[3:, :] = torch.nn.functional.one_hot(torch.arange(3, num_items) % categories, categories).float()
    weights[5] = torch.tensor([0.5, 0.5, 0.0, 0.0])  # an item of two categories: the mean of their vectors
    torch.manual_seed(7)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(7)
    start_item_table_at_categories(model, weights, seed=3)
    assert torch.equal(torch.rand(1), expected_next_draw)
    added = model.get_input_embeddings().weight.detach() - before
    assert torch.equal(added[:3], torch.zeros(3, 32))  # specials and the padding row
    centroids = torch.randn(categories, 32, generator=torch.Generator().manual_seed(3)) * CATEGORY_START_STD
    torch.testing.assert_close(added[4], centroids[0])  # item i is of category i % 4
    torch.testing.assert_close(added[7], centroids[3])
    torch.testing.assert_close(added[5], (centroids[0] + centroids[1]) / 2)
    assert torch.equal(model.item_head.weight, model.get_input_embeddings().weight)  # tied: scored by category too
    # items of a category are now closer to each other than to other categories' items
    table = torch.nn.functional.normalize(model.get_input_embeddings().weight.detach()[3:], dim=-1)
    same = (torch.arange(3, num_items) % categories)[:, None] == (torch.arange(3, num_items) % categories)[None, :]
    cosine = table @ table.T
    assert cosine[same & ~torch.eye(num_items - 3, dtype=torch.bool)].mean() > cosine[~same].mean() + 0.3
    with pytest.raises(ValueError, match="weights has 59 rows"):
        start_item_table_at_categories(model, weights[1:], seed=3)


def test_category_start_needs_categories_and_says_so():
    """An items table without a categories column, or none at all, is a clear error naming the flag."""
    from types import SimpleNamespace

    from datasets import Dataset

    from hf_interest.tokenization_interest import ItemTokenizer
    from hf_interest.training.arguments import DataArguments

    tokenizer = ItemTokenizer.from_items(["a", "b"])
    for items in (None, Dataset.from_dict({"item_id": ["a", "b"], "title": ["A", "B"]})):
        with pytest.raises(ValueError, match="--item_table_init categories needs the items' categories"):
            item_category_weights(SimpleNamespace(items=items), tokenizer, DataArguments())
    with_categories = Dataset.from_dict({"item_id": ["a", "b"], "categories": [["x"], ["x", "y"]]})
    weights, names, without = item_category_weights(SimpleNamespace(items=with_categories), tokenizer, DataArguments())
    assert names == ["x", "y"] and without == 0
    assert weights[tokenizer.convert_tokens_to_ids("b")].tolist() == [0.5, 0.5]
    # auto: a categories column without any category (a plain log's items) keeps the random start, without an error;
    # with categories and few events per item it starts from them; explicit 'categories' without any is an error
    config, few = InterestConfig(num_items=len(tokenizer)), SimpleNamespace(item_counts=np.array([0, 0, 0, 2, 3]))
    empty = SimpleNamespace(items=Dataset.from_dict({"item_id": ["a", "b"], "categories": [[], []]}))
    assert item_table_start("auto", empty, tokenizer, DataArguments(), config, few) == (None, "")
    with pytest.raises(ValueError, match="--item_table_init categories: No item has a category"):
        item_table_start("categories", empty, tokenizer, DataArguments(), config, few)
    found, why = item_table_start(
        "auto", SimpleNamespace(items=with_categories), tokenizer, DataArguments(), config, few
    )
    assert found[1] == ["x", "y"] and "2.5 training events per item, under 50" in why
    many = SimpleNamespace(item_counts=np.array([0, 0, 0, 50, 60]))  # 55 per item: MovieLens-100K has 58
    found, why = item_table_start(
        "auto", SimpleNamespace(items=with_categories), tokenizer, DataArguments(), config, many
    )
    assert found is None and "55.0 training events per item, at least 50" in why


def test_curve_benchmark_reads_best_and_ninety_percent_times_from_the_runs_history(tmp_path):
    """benchmarks/benchmark_curve.py: cumulative training seconds per epoch, the best, 90% of it, budgets."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    history = [(0.05, 10.0), (0.10, 10.0), (0.09, 10.0), (0.12, 10.0), (0.11, 10.0)]  # (validation, seconds)
    run = tmp_path / "run"
    run.mkdir()
    training = {"metric_for_best_model": "ndcg@10", "history": [{"ndcg@10": v, "seconds": s} for v, s in history]}
    (run / "eval_results.json").write_text(json.dumps({"training": training}))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark_curve.py"
    out = subprocess.run([sys.executable, str(script), f"new={run}", "--at", "15", "25"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    # best 0.12 at epoch 4 after 40 s; 90% of it (0.108) first at epoch 4 too; by 15 s 0.05, by 25 s 0.10
    assert "| new | 0.1200 | 4 | 40.0 | 40.0 | 0.0500 | 0.1000 |" in out
    bad = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True)
    assert bad.returncode == 2 and "NAME=RUN_FOLDER" in bad.stderr
