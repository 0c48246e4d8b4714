"""Quality against a known optimum (#37): the synthetic world's item-to-item structure, its exact next-item law (the
oracle), and the two baselines that need no training, all scored by the library's evaluation code."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny import tiny_config

from hf_interest import ItemTokenizer
from hf_interest.data import SyntheticConfig, encode_sequences, generate_synthetic_interests
from hf_interest.heads import category_weight_matrix
from hf_interest.metrics import (
    HistoryCategoryRecommender,
    PopularityRecommender,
    RankingAccumulator,
    TransitionRecommender,
    synthetic_oracle_scores,
)
from hf_interest.training.evaluation import eval_dataloader, evaluate_next_item

WORLD = {"num_users": 400, "num_items": 60, "num_categories": 6, "min_events": 10, "max_events": 30, "seed": 7}


@pytest.fixture(scope="module")
def world():
    synthetic = generate_synthetic_interests(SyntheticConfig(**WORLD, successor_probability=0.4))
    data = synthetic.to_behavior_data()
    tokenizer = ItemTokenizer.from_items(data.item_ids)
    encoded, unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    assert unknown == 0
    return synthetic, data, tokenizer, encoded


def test_successors_change_nothing_when_off_and_are_followed_when_on(world):
    synthetic, *_ = world
    plain = generate_synthetic_interests(SyntheticConfig(**WORLD))
    assert plain.successors is None and plain.successor_weights is None
    assert synthetic.successors.shape == (WORLD["num_items"], 3)
    assert not (synthetic.successors == np.arange(WORLD["num_items"])[:, None]).any()  # never an item's own
    np.testing.assert_allclose(synthetic.successor_weights, np.array([1, 1 / 2, 1 / 3]) / (11 / 6))
    # about 40% of the events after a user's first follow the previous item's successors (plus chance hits)
    events = synthetic.events.to_pandas().sort_values(["user_id", "step"])
    previous = events.groupby("user_id")["item_id"].shift()
    later = events[previous.notna()]
    followed = [item in synthetic.successors[int(prev)] for item, prev in zip(later["item_id"], previous.dropna())]
    assert 0.4 < np.mean(followed) < 0.5
    again = generate_synthetic_interests(SyntheticConfig(**WORLD, successor_probability=0.4))
    assert again.events.equals(synthetic.events)  # deterministic
    with pytest.raises(ValueError, match="successor_probability"):
        SyntheticConfig(successor_probability=1.5)
    with pytest.raises(ValueError, match="k = 1 only"):
        synthetic.next_k_category_probs(3)


def test_the_next_item_law_is_consistent_and_matches_sampled_outcomes():
    synthetic = generate_synthetic_interests(
        SyntheticConfig(**(WORLD | {"num_users": 3000}), successor_probability=0.4)
    )
    test = synthetic.to_behavior_data().sequences["test"]
    probs = synthetic.next_item_probs(test)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    # its category marginal is the category ground truth the generator writes while it draws
    by_category = np.zeros((len(test), WORLD["num_categories"]))
    np.add.at(by_category.T, synthetic.primary_category_index, probs.T)
    np.testing.assert_allclose(by_category, synthetic.target_category_probs(test), atol=1e-5)
    # Sampled outcomes: under the true law, E[P(target)] = sum_i P_i^2 for each row; the mean over 3,000 users must
    # agree within 4 standard errors. The law without the successor part (the regime alone) fails it.
    targets = np.asarray(test["target_item_id"], dtype=np.int64)
    observed = probs[np.arange(len(test)), targets]
    expected = (probs**2).sum(axis=1)
    spread = math.sqrt(np.var(observed) / len(test))
    assert abs(observed.mean() - expected.mean()) < 4 * spread
    regime_only = replace(synthetic, successors=None).next_item_probs(test)  # the same latent state, no successors
    assert abs(regime_only[np.arange(len(test)), targets].mean() - (regime_only**2).sum(axis=1).mean()) > 4 * spread
    assert np.log(observed).mean() > np.log(regime_only[np.arange(len(test)), targets]).mean() + 0.3
    other = generate_synthetic_interests(SyntheticConfig(**(WORLD | {"num_users": 3000, "seed": 8})))
    with pytest.raises(ValueError, match="not prefixes of these generated events"):
        synthetic.next_item_probs(other.to_behavior_data().sequences["test"])


def _brute_force_ndcg(scores: torch.Tensor, targets, histories, k=10) -> float:
    """NDCG@k by sorting each row: the target's place among the items that are not special and not seen, ties counted
    in the target's favour (the protocol's strict rank); a target already in the history is removed with it: 0."""
    total = 0.0
    for row, target, history in zip(scores.tolist(), targets, histories):
        excluded = set(history) | {0, 1, 2}
        if target in excluded:
            continue
        above = sum(1 for item, score in enumerate(row) if item not in excluded and score > row[target])
        total += 1 / math.log2(above + 2) if above < k else 0.0
    return total / len(targets)


def _oracle(synthetic, data, tokenizer, encoded, batch=64):
    test, rows = data.sequences["test"], encoded["test"]
    accumulator = RankingAccumulator((5, 10), exclude_seen=True, ignore_index=range(3))
    all_scores = []
    for start in range(0, len(test), batch):
        stop = min(start + batch, len(test))
        scores = synthetic_oracle_scores(synthetic, test, tokenizer.get_vocab(), start, stop)
        chunk = rows.select(range(start, stop))
        width = max(len(h) for h in chunk["input_ids"])
        seen = torch.tensor([[0] * (width - len(h)) + list(h) for h in chunk["input_ids"]])
        accumulator.update(scores, torch.tensor(chunk["labels"]), seen)
        all_scores.append(scores)
    return accumulator.compute(), torch.cat(all_scores)


def test_the_oracle_ndcg_is_the_brute_force_one(world):
    synthetic, data, tokenizer, encoded = world
    metrics, scores = _oracle(synthetic, data, tokenizer, encoded)
    histories = encoded["test"]["input_ids"]
    targets = encoded["test"]["labels"]
    assert metrics["ndcg@10"] == pytest.approx(_brute_force_ndcg(scores, targets, histories), abs=1e-12)
    assert any(t in h for t, h in zip(targets, histories, strict=True))  # repeat targets are checked too


def _baselines(encoded, tokenizer, data):
    popularity = PopularityRecommender.from_sequences(
        encoded["train"]["input_ids"], num_items=len(tokenizer), ignore_index=range(3)
    )
    weights, _, _ = category_weight_matrix(data.items, tokenizer, primary_only=True)
    transitions = TransitionRecommender.from_sequences(encoded["train"]["input_ids"], len(tokenizer), popularity)
    return popularity, {"history_category": HistoryCategoryRecommender(weights, popularity), "transition": transitions}


def test_baselines_score_what_they_say():
    tokenizer = ItemTokenizer.from_items(["a", "b", "c", "d"])  # indices 3..6
    popularity = PopularityRecommender([0, 0, 0, 5, 1, 1, 2])
    transitions = TransitionRecommender.from_sequences([[3, 4, 3, 4, 3, 5], [6, 4]], 7, popularity)
    batch = torch.tensor([[0, 3], [5, 3], [0, 0]]), torch.tensor([[0, 1], [1, 1], [0, 0]])
    scores = transitions(*batch)
    assert (
        scores[0].argmax() == 4 and scores[0, 4] >= 2 and scores[0, 5] >= 1 > scores[0, 6]
    )  # after a: b twice, c once
    assert torch.equal(scores[0], scores[1])  # only the newest item counts
    assert scores[2].argmax() == 3  # an empty history: popularity
    weights = np.zeros((7, 2))
    weights[[3, 4], 0] = 1.0  # a, b in category 0
    weights[[5, 6], 1] = 1.0  # c, d in category 1
    mix = HistoryCategoryRecommender(weights, popularity)(torch.tensor([[5, 5, 3]]), torch.ones(1, 3))
    # mix: category 0 (1 + 1) / (3 + 2), category 1 (2 + 1) / 5; item share within its category by training counts
    expected = [0, 0, 0, 0.4 * 5 / 6, 0.4 * 1 / 6, 0.6 * 1 / 3, 0.6 * 2 / 3]
    np.testing.assert_allclose(mix[0, 3:].numpy(), expected[3:], atol=1e-5)
    del tokenizer


@pytest.mark.slow
def test_the_oracle_beats_every_model_and_baseline(world, tmp_path):
    """On a small world with drift, switches and successors: the oracle (which knows the latent regime) above a
    trained model, the transition and history-category baselines and popularity, all by the same evaluation code."""
    from hf_interest import InterestForNextItemPrediction
    from hf_interest.data import DataCollatorForInterest

    synthetic, data, tokenizer, encoded = world
    oracle, _ = _oracle(synthetic, data, tokenizer, encoded)
    popularity, baselines = _baselines(encoded, tokenizer, data)
    torch.manual_seed(0)
    model = InterestForNextItemPrediction(
        tiny_config(num_items=len(tokenizer), hidden_size=32, intermediate_size=64, max_position_embeddings=32)
    )  # fmt: skip
    collator = DataCollatorForInterest(pad_token_id=0, max_length=32, mode="train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = encoded["train"].select_columns(["input_ids", "timestamps"]).to_list()
    model.train()
    for _ in range(15):
        for start in range(0, len(rows), 32):
            loss = model(**collator(rows[start : start + 32])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    loader = eval_dataloader(encoded["test"], tokenizer.pad_token_id, 32, 128)
    results = evaluate_next_item(model, loader, popularity, "test", baselines=baselines)["exclude_seen"]
    ndcg = {name: results[name]["ndcg@10"] for name in ("model", "popularity", *baselines)}
    assert all(value < oracle["ndcg@10"] for value in ndcg.values()), (ndcg, oracle["ndcg@10"])
    assert ndcg["transition"] > ndcg["popularity"] and ndcg["model"] > ndcg["popularity"], ndcg
