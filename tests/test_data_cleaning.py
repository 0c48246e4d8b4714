"""Cleaning steps, their counts, and the stable (user, time, file order) ordering, against plain reference code."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_interest.data import CleaningConfig, load_behaviors
from hf_interest.data.cleaning import duplicate_mask, k_core, stable_order


def random_log(seed: int, n: int = 2000, users: int = 50, items: int = 80, time_range: int = 40) -> pd.DataFrame:
    """A log with many equal timestamps (small time range) in random row order."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, users, n).astype(str),
            "item_id": rng.integers(0, items, n),
            "timestamp": rng.integers(1_000, 1_000 + time_range, n),
            "rating": rng.integers(1, 6, n).astype(float),
            "event_type": rng.choice(["click", "view", "buy"], n),
        }
    )


def reference_sequences(df: pd.DataFrame) -> dict:
    ordered = df.sort_values(["user_id", "timestamp"], kind="stable")  # ties keep row order
    return {
        user: (group["item_id"].astype(str).tolist(), group["timestamp"].tolist())
        for user, group in ordered.groupby("user_id", sort=False)
    }


def loaded_sequences(data) -> dict:
    return {r["user_id"]: (r["item_ids"], r["timestamps"]) for r in data.sequences["train"].to_list()}


@pytest.mark.parametrize("seed", range(3))
def test_ordering_is_stable_by_time_then_file_order(seed):
    df = random_log(seed)
    data = load_behaviors(df, cleaning=CleaningConfig(deduplicate=False), split=None)
    assert loaded_sequences(data) == reference_sequences(df)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 300),
    users=st.integers(1, 40),
    time_bits=st.sampled_from([1, 4, 20, 40, 62]),
    presorted=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_stable_order_matches_lexsort(n, users, time_bits, presorted, seed):
    # Small and huge time spans exercise the one-pass (user, time, row) packing and the two-pass fallbacks.
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, n).astype(np.int32)
    key = rng.integers(0, 2**time_bits, n, dtype=np.uint64) if time_bits < 64 else None
    if presorted:
        key = np.sort(key)
    perm, sorted_users, sorted_key = stable_order(user, users, key)
    expected = np.lexsort((np.arange(n), key, user))
    got = np.arange(n) if perm is None else perm
    np.testing.assert_array_equal(got, expected)
    if sorted_users is not None:
        np.testing.assert_array_equal(sorted_users, user[expected])
    if sorted_key is not None:
        np.testing.assert_array_equal(sorted_key, key[expected])


def test_stable_order_without_time_and_when_already_sorted():
    user = np.array([2, 0, 1, 0, 2], dtype=np.int32)
    perm, sorted_users, _ = stable_order(user, 3, None)
    np.testing.assert_array_equal(perm, [1, 3, 2, 0, 4])
    np.testing.assert_array_equal(sorted_users, [0, 0, 1, 2, 2])
    assert stable_order(np.array([0, 0, 1], dtype=np.int32), 2, np.array([1, 2, 0], dtype=np.uint32)) == (
        None,
        None,
        None,
    )


def test_deduplicate_matches_pandas_and_keeps_first():
    df = random_log(7, n=3000, users=10, items=5, time_range=5)
    columns = ["user_id", "item_id", "timestamp", "rating", "event_type"]
    deduplicated = df.drop_duplicates(columns, keep="first")
    assert len(deduplicated) < len(df)  # the log really has duplicates
    data = load_behaviors(df, split=None)
    step = data.report.step("deduplicate")
    assert (step.events_before, step.events_after) == (len(df), len(deduplicated))
    assert loaded_sequences(data) == reference_sequences(deduplicated)
    # Events differing only in a field other than the item are not duplicates.
    df2 = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "a"], "timestamp": [1, 1], "rating": [1.0, 2.0]})
    assert load_behaviors(df2, split=None).report.events == 2
    df2["rating"] = [np.nan, np.nan]  # two missing ratings are equal
    assert load_behaviors(df2, split=None).report.events == 1


def test_duplicate_mask_direct():
    users = np.array([0, 0, 0, 0, 1], dtype=np.int32)
    key = np.array([1, 1, 1, 2, 1], dtype=np.uint32)
    items = np.array([5, 6, 5, 5, 5], dtype=np.int32)
    np.testing.assert_array_equal(duplicate_mask([items], users, key), [False, False, True, False, False])
    assert duplicate_mask([items], users, np.array([1, 2, 3, 4, 5], dtype=np.uint32)) is None


def test_rating_and_event_filters_are_counted():
    df = random_log(1)
    config = CleaningConfig(deduplicate=False, min_rating=4, event_types=["click", "buy", "share"])
    data = load_behaviors(df, cleaning=config, split=None)
    after_rating = df[df.rating >= 4]
    after_event = after_rating[after_rating.event_type.isin(["click", "buy"])]
    assert data.report.step("filter rating").events_after == len(after_rating)
    assert data.report.step("filter event types").events_after == len(after_event)
    assert data.report.step("filter event types").users == after_event.user_id.nunique()
    assert loaded_sequences(data) == reference_sequences(after_event)
    assert "event types ['share'] do not occur" in str(data.report)


def reference_k_core(df: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    while True:
        user_counts = df.user_id.map(df.user_id.value_counts())
        item_counts = df.item_id.map(df.item_id.value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            return df
        df = df[keep]


@pytest.mark.parametrize("min_user,min_item", [(33, 0), (0, 30), (20, 25), (45, 45)])
def test_iterative_k_core_matches_reference(min_user, min_item):
    df = random_log(3, n=3000, users=80, items=120)
    expected = reference_k_core(df, min_user, min_item)
    config = CleaningConfig(deduplicate=False, min_user_events=min_user, min_item_events=min_item)
    if expected.empty:
        with pytest.raises(ValueError, match="no events are left"):
            load_behaviors(df, cleaning=config, split=None)
        return
    data = load_behaviors(df, cleaning=config, split=None)
    step = data.report.step("k-core")
    assert step.events_after == len(expected) < len(df)
    assert (step.users, step.items) == (expected.user_id.nunique(), expected.item_id.nunique())
    assert loaded_sequences(data) == reference_sequences(expected)
    assert len(data.items) == expected.item_id.nunique()


def test_k_core_needs_several_passes():
    # Removing item "z" (1 event) leaves user "b" with 1 event, which must then go too.
    users = np.array([0, 0, 1, 1, 2, 2], dtype=np.int32)  # a a b b c c
    items = np.array([0, 1, 0, 2, 0, 1], dtype=np.int32)  # item 2 ("z") once
    keep, passes = k_core(users, items, 2, 2)
    np.testing.assert_array_equal(keep, [True, True, False, False, True, True])
    assert passes == 3


def test_cap_keeps_the_newest_events():
    df = pd.DataFrame({"user_id": ["u"] * 5 + ["v"], "item_id": list("abcdef"), "timestamp": [5, 1, 4, 2, 3, 1]})
    data = load_behaviors(df, cleaning=CleaningConfig(max_events_per_user=3), split=None)
    assert loaded_sequences(data)["u"] == (["e", "c", "a"], [3, 4, 5])
    assert loaded_sequences(data)["v"] == (["f"], [1])
    step = data.report.step("cap per user")
    assert (step.events_before, step.events_after, step.items) == (6, 4, 4)


def test_report_lists_every_step_with_counts():
    df = random_log(5, n=500)
    data = load_behaviors(df, cleaning=CleaningConfig(min_user_events=3))
    report = data.report
    names = [s.name for s in report.steps]
    assert names == [
        "read", "drop missing user/item", "deduplicate", "filter rating", "filter event types", "k-core",
        "cap per user",
    ]  # fmt: skip
    assert report.raw_events == 500 and report.raw_users == df.user_id.nunique()
    assert report.raw_items == df.item_id.nunique()
    text = str(report)
    for name in names:
        assert name in text
    assert "filter rating                    off" in text
    assert f"{report.raw_events:>12,}" in text
    assert set(report.splits) == {"train", "validation", "test"}
    assert report.splits["test"]["targets"] == data.sequences["test"].num_rows
    as_dict = report.to_dict()
    assert as_dict["steps"][0]["events_after"] == 500 and as_dict["split"].startswith("leave-one-out")
    assert str(data) == text
    with pytest.raises(KeyError):
        report.step("nope")


def test_string_and_integer_ids_give_the_same_sequences():
    df = random_log(11)
    as_int = load_behaviors(df.assign(user_id=df.user_id.astype(int)), split=None)
    as_str = load_behaviors(df.assign(item_id=df.item_id.astype(str)), split=None)
    assert loaded_sequences(as_int) == loaded_sequences(as_str)
    # Huge, sparse integer ids take the hashing path; still decimal strings.
    sparse = df.assign(item_id=df.item_id.astype(np.int64) * 10**15)
    expected = {u: ([str(int(i) * 10**15) for i in s[0]], s[1]) for u, s in loaded_sequences(as_int).items()}
    assert loaded_sequences(load_behaviors(sparse, split=None)) == expected
