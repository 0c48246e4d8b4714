"""Click-prediction data: ratings in `DataCollatorForInterest`, `DataCollatorForClick` (ratings and sampled labels),
and the logistic-regression-on-popularity baseline, checked against hand-computed cases and plain reference code."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from hf_interest.data import DataCollatorForClick, DataCollatorForInterest, load_behaviors
from hf_interest.data.click import click_label_counts, uniform_excluding
from hf_interest.metrics import PopularityClickBaseline

NAN = float("nan")

TRAIN = [
    {"input_ids": [5, 6, 7, 8], "timestamps": [10, 20, 35, 35], "ratings": [5.0, 3.0, 4.0, 2.0]},
    {"input_ids": [9, 4], "timestamps": [100, 160], "ratings": [1.0, 4.5]},
    {"input_ids": [3], "timestamps": [7], "ratings": [4.0]},
]
EVAL = [
    {"input_ids": [4, 5, 6], "timestamps": [1, 2, 3], "labels": 7, "target_rating": 4.0},
    {"input_ids": [8], "timestamps": [9], "labels": 3, "target_rating": 2.5},
]


def as_lists(tensor: torch.Tensor) -> list:
    """Tensor -> nested lists with NAN replaced by None, so NAN positions compare equal."""
    return [[None if math.isnan(v) else v for v in row] for row in tensor.tolist()]


# DataCollatorForInterest(return_ratings=True) ---------------------------------------------------------------------


def test_label_ratings_are_aligned_with_labels_and_nan_at_padding():
    batch = DataCollatorForInterest(return_ratings=True)(TRAIN)
    assert batch["label_ratings"].dtype == torch.float32 and batch["label_ratings"].shape == (3, 3)
    assert batch["labels"].tolist() == [[6, 7, 8], [-100, -100, 4], [-100, -100, -100]]
    # the rating of the label event: ratings[1:] of each row, left-padded with NAN like the labels with -100
    assert as_lists(batch["label_ratings"]) == [[3.0, 4.0, 2.0], [None, None, 4.5], [None, None, None]]


def test_label_ratings_follow_truncation():
    batch = DataCollatorForInterest(return_ratings=True, max_length=2)(TRAIN)
    # row 0 keeps events 6, 7, 8 (ratings 3, 4, 2): inputs 6, 7, labels 7, 8, label ratings 4, 2
    assert batch["input_ids"].tolist()[0] == [6, 7] and batch["labels"].tolist()[0] == [7, 8]
    assert as_lists(batch["label_ratings"]) == [[4.0, 2.0], [None, 4.5], [None, None]]
    batch = DataCollatorForInterest(return_ratings=True, max_length=1)(TRAIN)
    assert batch["labels"].tolist() == [[8], [4], [-100]]
    assert as_lists(batch["label_ratings"]) == [[2.0], [4.5], [None]]


def test_target_ratings_in_eval_mode():
    batch = DataCollatorForInterest(mode="eval", return_ratings=True, max_length=2)(EVAL)
    assert batch["target_ratings"].dtype == torch.float32
    assert batch["target_ratings"].tolist() == [4.0, 2.5]
    assert batch["labels"].tolist() == [7, 3] and "label_ratings" not in batch


def test_ratings_option_off_changes_nothing():
    for mode, features in (("train", TRAIN), ("eval", EVAL)):
        plain = DataCollatorForInterest(mode=mode, max_length=2)(features)
        rated = DataCollatorForInterest(mode=mode, max_length=2, return_ratings=True)(features)
        assert set(rated) - set(plain) == {"label_ratings" if mode == "train" else "target_ratings"}
        for key, value in plain.items():
            assert torch.equal(value, rated[key]), key


def test_ratings_errors_name_the_feature():
    unrated = [TRAIN[0], {"input_ids": [1, 2], "timestamps": [1, 2]}]
    with pytest.raises(ValueError, match=r"'ratings'.*feature 1 has none"):
        DataCollatorForInterest(return_ratings=True)(unrated)
    with pytest.raises(ValueError, match=r"'target_rating'.*feature 0 has none"):
        DataCollatorForInterest(mode="eval", return_ratings=True)([{"input_ids": [1], "labels": 4}])
    with pytest.raises(ValueError, match="Feature 0 has 2 input_ids but 1 ratings"):
        DataCollatorForInterest(return_ratings=True)([{"input_ids": [1, 2], "ratings": [4.0]}])
    # a missing rating (an Arrow null) is NAN, never a crash
    batch = DataCollatorForInterest(return_ratings=True)([{"input_ids": [3, 4, 5], "ratings": [1.0, None, 5.0]}])
    assert as_lists(batch["label_ratings"]) == [[None, 5.0]]


# DataCollatorForClick, ratings ----------------------------------------------------------------------------------


def test_ratings_mode_thresholds_the_label_rating():
    collate = DataCollatorForClick(click_threshold=4.0)
    batch = collate(TRAIN)
    assert set(batch) == {"input_ids", "attention_mask", "timestamps", "time_gaps", "candidate_ids", "click_labels"}
    assert batch["candidate_ids"].dtype == torch.int64 and batch["click_labels"].dtype == torch.float32
    assert batch["candidate_ids"].shape == batch["click_labels"].shape == (3, 3, 1)
    # label ratings [[3, 4, 2], [-, -, 4.5], [-, -, -]]; 4.0 itself is a click
    assert batch["candidate_ids"][..., 0].tolist() == [[6, 7, 8], [0, 0, 4], [0, 0, 0]]
    assert batch["click_labels"][..., 0].tolist() == [[0, 1, 0], [-100, -100, 1], [-100, -100, -100]]
    assert batch["input_ids"].tolist() == DataCollatorForInterest()(TRAIN)["input_ids"].tolist()
    assert click_label_counts(batch) == {"positives": 2, "negatives": 2, "ignored": 5}
    lenient = DataCollatorForClick(click_threshold=2.5, max_length=2)(TRAIN)
    assert lenient["click_labels"][..., 0].tolist() == [[1, 0], [-100, 1], [-100, -100]]  # ratings 4, 2 / 4.5
    assert DataCollatorForClick(return_time_gaps=False)(TRAIN).keys().isdisjoint({"time_gaps", "labels"})


def test_ratings_mode_ignores_missing_ratings_and_ignored_labels_and_counts_them():
    features = [{"input_ids": [5, 1, 6, 7], "ratings": [5.0, 5.0, NAN, 4.0]}]
    collate = DataCollatorForClick(ignore_label_ids=(1,))
    batch = collate(features)
    # labels 1 (ignored id), 6 (rating missing), 7 (rating 4): only the last is labelled
    assert batch["candidate_ids"][..., 0].tolist() == [[0, 0, 7]]
    assert batch["click_labels"][..., 0].tolist() == [[-100, -100, 1]]
    assert collate.num_missing_ratings == 1
    collate(features)
    assert collate.num_missing_ratings == 2  # counted over calls


def test_ratings_mode_eval_shapes():
    collate = DataCollatorForClick(mode="eval", click_threshold=3.0)
    batch = collate([*EVAL, {"input_ids": [4, 9], "labels": 5, "target_rating": NAN}])
    assert batch["candidate_ids"].tolist() == [[7], [3], [0]]
    assert batch["click_labels"].tolist() == [[1.0], [0.0], [-100.0]]
    assert batch["input_ids"].shape == (3, 3) and collate.num_missing_ratings == 1


# DataCollatorForClick, sampled ----------------------------------------------------------------------------------


def random_features(seed: int, rows: int = 24, num_items: int = 40, special: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"input_ids": rng.integers(special, num_items, rng.integers(1, 15)).tolist()} for _ in range(rows)
    ]  # some rows of a single event (nothing to label), repeated items within rows


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_sampled_negatives_are_real_unseen_items_and_never_the_positive(mode):
    num_items, k = 40, 6
    features = random_features(0)
    if mode == "eval":
        features = [{**f, "labels": 3 + (7 * i) % 37} for i, f in enumerate(features)]
    collate = DataCollatorForClick(
        mode=mode, label_source="sampled", num_items=num_items, num_negatives=k, seed=0, max_length=8
    )
    batch = collate(features)
    candidates, labels = batch["candidate_ids"], batch["click_labels"]
    shape = (len(features), batch["input_ids"].shape[1], 1 + k) if mode == "train" else (len(features), 1 + k)
    assert candidates.shape == labels.shape == shape
    base = DataCollatorForInterest(mode=mode, max_length=8)(features)
    positives = base["labels"]
    if mode == "train":
        valid = positives != -100
        assert torch.equal(candidates[..., 0], torch.where(valid, positives, 0))
        assert torch.equal(labels[..., 0], torch.where(valid, 1.0, -100.0))
    else:
        assert candidates[:, 0].tolist() == positives.tolist() and (labels[:, 0] == 1).all()
    negatives, negative_labels = candidates[..., 1:], labels[..., 1:]
    assert collate.num_unreplaced_negatives == 0  # 37 real items, at most 9 seen: always replaceable
    for row in range(len(features)):
        window = set(base["input_ids"][row].tolist()) | set(np.atleast_1d(positives[row].numpy()).tolist())
        row_negatives = negatives[row].reshape(-1, k)
        row_positives = np.atleast_1d(positives[row].numpy())
        row_labels = negative_labels[row].reshape(-1, k)
        for position, (pos, drawn, lab) in enumerate(zip(row_positives, row_negatives.tolist(), row_labels)):
            if pos == -100:  # padding: nothing drawn, all ignored
                assert drawn == [0] * k and (lab == -100).all(), (row, position)
                continue
            assert (lab == 0).all()
            assert all(3 <= item < num_items for item in drawn)  # never a special token
            assert pos not in drawn and window.isdisjoint(drawn), (row, position, drawn, window)


def test_sampled_negatives_are_deterministic_by_seed_and_call():
    features = random_features(1)

    def draws(seed, calls=2):
        collate = DataCollatorForClick(label_source="sampled", num_items=40, num_negatives=3, seed=seed)
        return [collate(features)["candidate_ids"] for _ in range(calls)]

    first, second = draws(7), draws(7)
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # same seed, same calls: same negatives
    assert not torch.equal(first[0], first[1])  # the call counter moves the stream on
    assert not torch.equal(draws(8)[0], first[0])
    # uniform over the real items not seen: every one of them is drawn somewhere in a large batch
    many = DataCollatorForClick(label_source="sampled", num_items=40, num_negatives=50, seed=0)(features)
    drawn = set(many["candidate_ids"][..., 1:].unique().tolist()) - {0}
    assert drawn == set(range(3, 40))


def test_negatives_may_repeat_history_only_when_allowed():
    features = [{"input_ids": [3, 4, 5, 6, 7, 8]}]  # 6 of 7 real items seen; the positive changes per position
    loose = DataCollatorForClick(
        label_source="sampled", num_items=10, num_negatives=200, seed=0, exclude_seen_negatives=False
    )(features)
    positives, negatives = loose["candidate_ids"][..., :1], loose["candidate_ids"][..., 1:]
    assert (negatives != positives).all()  # never the positive itself
    assert set(negatives.unique().tolist()) == set(range(3, 10))  # seen items allowed
    strict = DataCollatorForClick(label_source="sampled", num_items=10, num_negatives=200, seed=0)(features)
    assert set(strict["candidate_ids"][..., 1:].unique().tolist()) == {9}  # the only unseen real item


def test_uniform_excluding_is_exact_and_uniform():
    excluded = torch.tensor([[5, 2, 5, 9, 0, -100], [3, 3, 3, 3, 3, 3], [2, 3, 4, 5, 6, 7], [7, 6, 8, 4, 11, 2]])
    draws = uniform_excluding(excluded, 40000, low=2, high=8, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (4, 40000) and draws.dtype == torch.int64
    for row, values in enumerate(excluded.tolist()):
        allowed = sorted(set(range(2, 8)) - set(values))
        if not allowed:  # every value excluded
            assert (draws[row] == -1).all()
            continue
        frequencies = torch.bincount(draws[row], minlength=8)[2:8].double() / 40000
        expected = torch.tensor([1 / len(allowed) if v in allowed else 0.0 for v in range(2, 8)], dtype=torch.float64)
        assert torch.allclose(frequencies, expected, atol=0.01), (row, frequencies)
    assert set(draws[3].tolist()) == {3, 5}


def test_unreplaceable_negatives_are_ignored_and_counted():
    # the user saw every real item (3, 4, 5): no negative exists
    collate = DataCollatorForClick(label_source="sampled", num_items=6, num_negatives=2, seed=0)
    batch = collate([{"input_ids": [3, 4, 5]}, {"input_ids": [4, 5]}])
    assert batch["candidate_ids"].tolist() == [[[4, 0, 0], [5, 0, 0]], [[0, 0, 0], [5, 3, 3]]]
    assert batch["click_labels"].tolist() == [
        [[1, -100, -100], [1, -100, -100]],
        [[-100, -100, -100], [1, 0, 0]],
    ]
    assert collate.num_unreplaced_negatives == 4
    assert click_label_counts(batch) == {"positives": 3, "negatives": 2, "ignored": 7}


# Errors ---------------------------------------------------------------------------------------------------------


def test_clear_errors():
    unrated = [TRAIN[0], {"input_ids": [1, 2]}]
    with pytest.raises(
        ValueError, match=r"feature 1 has none: the log has no rating column\. Use label_source='sampled'"
    ):
        DataCollatorForClick()(unrated)
    with pytest.raises(ValueError, match="the log has no rating column"):
        DataCollatorForClick(mode="eval")([{"input_ids": [1], "labels": 4}])
    with pytest.raises(ValueError, match="needs num_items"):
        DataCollatorForClick(label_source="sampled")
    for bad in (NAN, float("inf"), "4", None):
        with pytest.raises(ValueError, match="click_threshold must be a finite number"):
            DataCollatorForClick(click_threshold=bad)
    with pytest.raises(ValueError, match="label_source must be 'ratings' or 'sampled'"):
        DataCollatorForClick(label_source="views")
    with pytest.raises(ValueError, match="mode must be 'train' or 'eval'"):
        DataCollatorForClick(mode="test")
    with pytest.raises(ValueError, match="no real item"):
        DataCollatorForClick(label_source="sampled", num_items=3)
    with pytest.raises(ValueError, match="num_negatives must be a positive int"):
        DataCollatorForClick(label_source="sampled", num_items=10, num_negatives=0)
    with pytest.raises(ValueError, match="holds item index 12 but num_items=10"):
        DataCollatorForClick(label_source="sampled", num_items=10)([{"input_ids": [4, 12]}])
    with pytest.raises(ValueError, match="other values"):
        click_label_counts(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="no 'click_labels'"):
        click_label_counts({"labels": torch.zeros(1)})


# From a raw log --------------------------------------------------------------------------------------------------

LOG = pd.DataFrame(
    {
        "user_id": ["a"] * 6 + ["b"] * 5,
        "item_id": ["x", "y", "z", "w", "y", "v", "z", "x", "w", "v", "y"],
        "timestamp": [1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14],
        "rating": [5.0, 2.0, 4.0, 3.5, 4.0, 1.0, 4.5, 3.0, 5.0, 2.0, 4.0],
    }
)


def test_from_a_rated_log_through_load_behaviors_and_encode():
    data = load_behaviors(LOG.sample(frac=1.0, random_state=0))  # row order must not matter
    vocab = {item: k + 3 for k, item in enumerate(data.item_ids)}
    encoded, unknown = data.encode(vocab)
    assert unknown == 0
    collate = DataCollatorForClick(max_length=3, click_threshold=4.0)
    loader = torch.utils.data.DataLoader(
        encoded["train"].with_format(columns=["input_ids", "timestamps", "ratings"]), batch_size=2, collate_fn=collate
    )
    batch = next(iter(loader))
    # reference: leave-one-out leaves the first 4 (a) / 3 (b) events for training; keep the newest 4 of them,
    # label events are events 2..; click = rating >= 4
    rows = {}
    for user, events in LOG.sort_values(["user_id", "timestamp"]).groupby("user_id"):
        train = events.iloc[:-2].iloc[-4:]
        rows[user] = (
            [vocab[i] for i in train["item_id"].iloc[1:]],
            (train["rating"].iloc[1:] >= 4.0).astype(float).tolist(),
        )
    users = encoded["train"]["user_id"]
    for row, user in enumerate(users):
        items, clicks = rows[user]
        width = batch["candidate_ids"].shape[1]
        pad = width - len(items)
        assert batch["candidate_ids"][row, :, 0].tolist() == [0] * pad + items
        assert batch["click_labels"][row, :, 0].tolist() == [-100.0] * pad + clicks
    # the test split: the target and its rating
    evaluate = DataCollatorForClick(mode="eval")(encoded["test"].to_list())
    last = LOG.sort_values("timestamp").groupby("user_id").tail(1).set_index("user_id")
    for row, user in enumerate(encoded["test"]["user_id"]):
        assert evaluate["candidate_ids"][row].tolist() == [vocab[last.loc[user, "item_id"]]]
        assert evaluate["click_labels"][row].tolist() == [float(last.loc[user, "rating"] >= 4.0)]
    # the same log without its rating column: ratings mode says what to do, sampled mode works
    unrated = load_behaviors(LOG.drop(columns="rating"))
    encoded, _ = unrated.encode(vocab)
    with pytest.raises(ValueError, match="the log has no rating column. Use label_source='sampled'"):
        DataCollatorForClick()(encoded["train"].to_list())
    sampled = DataCollatorForClick(label_source="sampled", num_items=len(vocab) + 3, seed=0)(
        encoded["train"].to_list()
    )
    assert sampled["candidate_ids"].shape[-1] == 2


# Popularity click baseline ----------------------------------------------------------------------------------------


def item_counts(num_items: int = 60) -> np.ndarray:
    """Train counts spread over three orders of magnitude (0 for the 3 special tokens)."""
    rng = np.random.default_rng(123)
    return np.concatenate([np.zeros(3), np.floor(np.exp(rng.uniform(0, 7, num_items - 3)))])


def popularity_clicks(counts: np.ndarray, seed: int, n: int = 20000):
    """Clicks that depend on popularity only: p = sigmoid(-2 + 0.8 log1p(count)); some slots ignored."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, len(counts), (n // 20, 4, 5))  # (B, T, C) like a click batch
    p = 1 / (1 + np.exp(-(-2.0 + 0.8 * np.log1p(counts[ids]))))
    labels = (rng.random(ids.shape) < p).astype(np.float32)
    ignored = rng.random(ids.shape) < 0.1
    labels[ignored], ids[ignored] = -100.0, 0
    return ids, labels


def test_popularity_baseline_learns_popularity_and_matches_sklearn():
    counts = item_counts()
    ids, labels = popularity_clicks(counts, seed=0)
    baseline = PopularityClickBaseline().fit(counts, torch.as_tensor(ids), torch.as_tensor(labels))
    kept = labels != -100
    assert baseline.num_examples_ == kept.sum() and baseline.num_ignored_ == (~kept).sum()
    assert baseline.coef_ == pytest.approx(0.8, abs=0.15) and baseline.intercept_ == pytest.approx(-2.0, abs=0.6)
    # scikit-learn on the same single feature, computed here directly
    reference = LogisticRegression(C=1.0, max_iter=1000).fit(np.log1p(counts[ids[kept]])[:, None], labels[kept])
    test_ids, test_labels = popularity_clicks(counts, seed=1)
    probabilities = baseline.predict_proba(test_ids)
    assert probabilities.shape == test_ids.shape
    expected = reference.predict_proba(np.log1p(counts[test_ids.reshape(-1)])[:, None])[:, 1].reshape(test_ids.shape)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-10)
    np.testing.assert_allclose(
        probabilities, 1 / (1 + np.exp(-(baseline.coef_ * np.log1p(counts[test_ids]) + baseline.intercept_)))
    )
    test_kept = test_labels != -100
    auc = roc_auc_score(test_labels[test_kept], probabilities[test_kept])
    true_p = 1 / (1 + np.exp(-(-2.0 + 0.8 * np.log1p(counts[test_ids[test_kept]]))))
    assert auc > 0.65 and auc == pytest.approx(roc_auc_score(test_labels[test_kept], true_p), abs=1e-9)
    # monotone in the count: more popular, more likely clicked
    order = np.argsort(counts, kind="stable")
    assert np.all(np.diff(baseline.predict_proba(order)) >= 0)
    distinct = np.unique(counts, return_index=True)[1]  # one item per distinct count, by increasing count
    assert np.all(np.diff(baseline.predict_proba(distinct)) > 0)
    assert baseline.predict_proba(int(np.argmax(counts))) > baseline.predict_proba(0)


def test_popularity_baseline_errors():
    counts = np.array([0, 0, 0, 5, 10], dtype=float)
    ids = np.array([[3, 4], [4, 3]])
    with pytest.raises(ValueError, match="not fitted"):
        PopularityClickBaseline().predict_proba(ids)
    with pytest.raises(ValueError, match="both clicks and non-clicks"):
        PopularityClickBaseline().fit(counts, ids, np.array([[1, 1], [1, -100]]))
    with pytest.raises(ValueError, match="must be 1.0, 0.0 or -100.0"):
        PopularityClickBaseline().fit(counts, ids, np.array([[1, 0], [0.5, 0]]))
    with pytest.raises(ValueError, match="same shape"):
        PopularityClickBaseline().fit(counts, ids, np.array([1, 0]))
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        PopularityClickBaseline().fit(counts, ids + 2, np.array([[1, 0], [0, 1]]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        PopularityClickBaseline().fit(counts[None], ids, np.array([[1, 0], [0, 1]]))
    fitted = PopularityClickBaseline().fit(counts, ids, np.array([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        fitted.predict_proba([7])
    with pytest.raises(ValueError, match="C must be a positive"):
        PopularityClickBaseline(C=0)


def test_sampled_negatives_in_dataloader_workers_are_reproducible_and_change_per_epoch():
    features = random_features(2, rows=16)
    collate = DataCollatorForClick(label_source="sampled", num_items=40, num_negatives=2, seed=3)
    loader = torch.utils.data.DataLoader(features, batch_size=4, collate_fn=collate, num_workers=2)

    def epoch():
        return torch.cat([batch["candidate_ids"].flatten() for batch in loader])

    torch.manual_seed(0)
    first, second = epoch(), epoch()
    torch.manual_seed(0)
    assert torch.equal(epoch(), first)  # same torch seed, same negatives
    assert not torch.equal(first, second)  # fresh workers each epoch still draw new negatives
