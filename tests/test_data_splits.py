"""Splits: each protocol's rows are exactly what it promises, and no event after a target reaches its input."""

import numpy as np
import pandas as pd
import pytest

from hf_interest.data import CleaningConfig, LeaveOneOutSplit, TemporalSplit, UserSplit, load_behaviors


def random_log(seed: int, n: int = 3000, users: int = 60, time_range: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "user_id": rng.integers(0, users, n).astype(str),
            "item_id": rng.integers(0, 90, n).astype(str),
            "timestamp": rng.integers(10_000, 10_000 + time_range, n),
            "rating": rng.integers(1, 6, n).astype(float),
        }
    )
    # A few users with 1 and 2 events, for the edge cases of leave-one-out.
    extra = pd.DataFrame(
        {"user_id": ["solo", "pair", "pair"], "item_id": ["a", "b", "c"], "timestamp": [10_050, 10_010, 10_020]}
    )
    return pd.concat([df, extra.assign(rating=3.0)], ignore_index=True)


def full_sequences(df: pd.DataFrame) -> dict:
    ordered = df.sort_values(["user_id", "timestamp"], kind="stable")
    return {
        u: (g["item_id"].tolist(), g["timestamp"].tolist(), g["rating"].tolist())
        for u, g in ordered.groupby("user_id", sort=False)
    }


def load(df, split, **kwargs):
    return load_behaviors(df, cleaning=CleaningConfig(deduplicate=False), split=split, **kwargs)


def check_eval_rows(rows, full, max_history=None):
    """Every evaluation row: the history is the events right before the target, and nothing after it."""
    positions = []
    for row in rows:
        items, times, ratings = full[row["user_id"]]
        history = len(row["item_ids"])
        # Find the target's position: the first position after a history that matches exactly.
        candidates = [
            p
            for p in range(history, len(items))
            if items[p] == row["target_item_id"]
            and times[p] == row["target_timestamp"]
            and items[p - history : p] == row["item_ids"]
            and times[p - history : p] == row["timestamps"]
        ]
        assert candidates, row
        p = candidates[0]
        if max_history is None:
            assert p == history  # the whole prefix
        else:
            assert history == min(p, max_history)
        assert all(t <= row["target_timestamp"] for t in row["timestamps"])
        assert row["ratings"] == ratings[p - history : p] and row["target_rating"] == ratings[p]
        positions.append((row["user_id"], p))
    return positions


def test_leave_one_out():
    df = random_log(0)
    full = full_sequences(df)
    data = load(df, LeaveOneOutSplit())
    train = {r["user_id"]: r for r in data.sequences["train"].to_list()}
    val = {r["user_id"]: r for r in data.sequences["validation"].to_list()}
    test = {r["user_id"]: r for r in data.sequences["test"].to_list()}
    assert set(train) == set(full)
    for user, (items, times, _) in full.items():
        n = len(items)
        if n >= 3:
            assert train[user]["item_ids"] == items[:-2] and train[user]["timestamps"] == times[:-2]
            assert val[user]["item_ids"] == items[:-2] and val[user]["target_item_id"] == items[-2]
            assert test[user]["item_ids"] == items[:-1] and test[user]["target_item_id"] == items[-1]
            assert test[user]["target_timestamp"] == times[-1]
    # Edge cases: a single event stays in train; two events give train + test, no validation row.
    assert train["solo"]["item_ids"] == ["a"] and "solo" not in val and "solo" not in test
    assert train["pair"]["item_ids"] == ["b"] and "pair" not in val
    assert test["pair"]["item_ids"] == ["b"] and test["pair"]["target_item_id"] == "c"
    check_eval_rows(data.sequences["validation"].to_list(), full)
    check_eval_rows(data.sequences["test"].to_list(), full)
    report = str(data.report)
    assert "validation: 2 users with fewer than 3 events have no row" in report
    assert "test: 1 users with a single event appear in train only" in report


def test_leave_one_out_shares_the_training_columns_with_validation():
    df = random_log(1).query("user_id not in ['solo', 'pair']")
    data = load(df, LeaveOneOutSplit())
    train = data.sequences["train"].data.column("item_ids").chunk(0)
    val = data.sequences["validation"].data.column("item_ids").chunk(0)
    assert train.values.buffers()[2].address == val.values.buffers()[2].address  # same memory, no copy
    without_validation = load(df, LeaveOneOutSplit(validation=False))
    assert set(without_validation.sequences) == {"train", "test"}
    row = without_validation.sequences["train"][0]
    test = without_validation.sequences["test"][0]
    assert test["item_ids"] == row["item_ids"]


@pytest.mark.parametrize("targets", ["first", "all"])
@pytest.mark.parametrize("with_validation", [False, True])
def test_temporal_split(targets, with_validation):
    df = random_log(2)
    full = full_sequences(df)
    test_start, validation_start = 10_150, (10_100 if with_validation else None)
    split = TemporalSplit(test_start=test_start, validation_start=validation_start, targets=targets)
    data = load(df, split)
    train_end = validation_start or test_start
    # Train: exactly each user's events before the (first) cutoff.
    for row in data.sequences["train"].to_list():
        items, times, _ = full[row["user_id"]]
        k = sum(t < train_end for t in times)
        assert row["item_ids"] == items[:k] and max(row["timestamps"]) < train_end
    periods = {"test": (test_start, float("inf"))}
    if with_validation:
        periods["validation"] = (validation_start, test_start)
    else:
        assert "validation" not in data.sequences
    for name, (lo, hi) in periods.items():
        rows = data.sequences[name].to_list()
        assert all(lo <= r["target_timestamp"] < hi for r in rows)
        positions = check_eval_rows(rows, full)
        expected = []
        for user, (_, times, _) in full.items():
            inside = [p for p, t in enumerate(times) if lo <= t < hi and p >= 1]
            if targets == "first":
                first = next((p for p, t in enumerate(times) if lo <= t < hi), None)
                inside = [first] if first is not None and first >= 1 else []
            expected += [(user, p) for p in inside]
        assert sorted(positions) == sorted(expected)


def test_temporal_split_with_max_history_and_text_cutoff():
    df = random_log(3)
    full = full_sequences(df)
    data = load(df, TemporalSplit(test_start="1970-01-01T02:49:10Z", targets="all", max_history=5))  # 10150 s
    rows = data.sequences["test"].to_list()
    assert rows and all(len(r["item_ids"]) <= 5 for r in rows)
    check_eval_rows(rows, full, max_history=5)
    skipped = [n for n in data.report.notes if n.startswith("test:")]
    assert all("fewer than 1 earlier events" in n for n in skipped)


@pytest.mark.parametrize("targets", ["last", "all"])
def test_user_split(targets):
    df = random_log(4)
    full = full_sequences(df)
    split = UserSplit(validation_fraction=0.2, test_fraction=0.25, seed=3, targets=targets)
    data = load(df, split)
    train_users = set(data.sequences["train"]["user_id"][:])
    val_users = set(data.sequences["validation"]["user_id"][:])
    test_users = set(data.sequences["test"]["user_id"][:])
    assert not (train_users & val_users) and not (train_users & test_users) and not (val_users & test_users)
    assert train_users | val_users | test_users == set(full)
    eligible = [u for u, s in full.items() if len(s[0]) >= 2]
    assert len(test_users) == round(0.25 * len(eligible)) and len(val_users) == round(0.2 * len(eligible))
    assert "solo" in train_users  # too short to evaluate
    for row in data.sequences["train"].to_list():
        assert row["item_ids"] == full[row["user_id"]][0]
    for name in ("validation", "test"):
        positions = check_eval_rows(data.sequences[name].to_list(), full)
        if targets == "last":
            assert all(p == len(full[u][0]) - 1 for u, p in positions)
        else:
            assert len(positions) == sum(len(full[u][0]) - 1 for u in {u for u, _ in positions})
    # The split depends on the seed and the user ids, not on the order of the rows.
    shuffled = load(df.sample(frac=1.0, random_state=0), split)
    assert set(shuffled.sequences["test"]["user_id"][:]) == test_users
    other = load(df, UserSplit(validation_fraction=0.2, test_fraction=0.25, seed=4, targets=targets))
    assert set(other.sequences["test"]["user_id"][:]) != test_users


def test_no_split_keeps_whole_sequences():
    df = random_log(5)
    data = load(df, None)
    assert list(data.sequences) == ["train"]
    assert {r["user_id"]: r["item_ids"] for r in data.sequences["train"].to_list()} == {
        u: s[0] for u, s in full_sequences(df).items()
    }


def test_split_counts_in_report():
    df = random_log(6)
    data = load(df, LeaveOneOutSplit())
    for name, dataset in data.sequences.items():
        counts = data.report.splits[name]
        assert counts["rows"] == dataset.num_rows
        assert counts["events"] == sum(len(x) for x in dataset["item_ids"][:])
    # Items are counted on the training split only (the popularity baseline must not see test targets).
    train_items = pd.Series([i for seq in data.sequences["train"]["item_ids"][:] for i in seq]).value_counts()
    counts = dict(zip(data.item_ids, data.item_counts))
    assert all(counts[item] == c for item, c in train_items.items())
    assert sum(data.item_counts) == data.report.splits["train"]["events"]
