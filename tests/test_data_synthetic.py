"""The drifting-interest generator: deterministic, shaped as promised, and its ground truth is the true law."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from hf_interest.data import SyntheticConfig, TemporalSplit, generate_synthetic_interests


def test_same_seed_same_data_other_seed_other_data():
    a = generate_synthetic_interests(SyntheticConfig.small(seed=1))
    b = generate_synthetic_interests(SyntheticConfig.small(seed=1))
    c = generate_synthetic_interests(SyntheticConfig.small(seed=2))
    assert a.events.equals(b.events) and a.items.equals(b.items)
    np.testing.assert_array_equal(a.next_category_probs, b.next_category_probs)
    assert not a.events.equals(c.events)


def test_shapes_and_defaults():
    config = SyntheticConfig()
    assert (config.num_users, config.num_items, config.num_categories) == (1000, 500, 16)
    assert (config.min_events, config.max_events) == (20, 100)
    data = generate_synthetic_interests(SyntheticConfig.small())
    n = data.events.num_rows
    lengths = np.bincount(data.events.column("user_id").to_numpy(), minlength=64)
    assert lengths.min() >= 6 and lengths.max() <= 16 and lengths.sum() == n
    assert data.next_category_probs.shape == (n, 6) and data.next_category_probs.dtype == np.float32
    np.testing.assert_allclose(data.next_category_probs.sum(axis=1), 1.0, atol=1e-5)
    times = data.events.column("timestamp").to_numpy()
    assert (np.diff(times) >= 0).all()  # global time order
    items = data.items.to_pylist()
    assert len(items) == 48 and all(item["categories"][0] == item["primary_category"] for item in items)
    assert len({item["primary_category"] for item in items}) == 6  # every category has items
    assert items[0]["title"] and items[0]["text"].startswith("A ")
    events = data.events.to_pylist()
    primary = {item["item_id"]: item["primary_category"] for item in items}
    assert all(e["category"] == primary[e["item_id"]] for e in events)
    assert generate_synthetic_interests(SyntheticConfig.small(ground_truth=False)).next_category_probs is None
    assert generate_synthetic_interests(num_users=5, num_items=20, num_categories=4).events.num_rows >= 100


def test_interests_drift_and_switch():
    still = generate_synthetic_interests(SyntheticConfig.small(drift_rate=0.0, switch_probability=0.0))
    moving = generate_synthetic_interests(SyntheticConfig.small(drift_rate=0.1, switch_probability=0.2))

    def change(data):
        # Mean total-variation distance between the predicted category laws at consecutive steps of a user.
        probs = data.next_category_probs[data.user_major]
        users = data.events.column("user_id").to_numpy()[data.user_major]
        same = users[1:] == users[:-1]
        return np.abs(probs[1:] - probs[:-1]).sum(axis=1)[same].mean() / 2

    assert change(still) < 1e-6
    assert change(moving) > 0.05


def test_ground_truth_is_the_law_of_the_next_category():
    # Calibration: over many events, the next category is drawn from the predicted law. For each category,
    # the average predicted probability equals the observed frequency, and so it does within probability bins.
    data = generate_synthetic_interests(SyntheticConfig(num_users=800, num_items=60, num_categories=5, seed=5))
    order = data.user_major
    users = data.events.column("user_id").to_numpy()[order]
    category = pc.index_in(data.events.column("category"), value_set=pa.array(data.category_names)).to_numpy()[order]
    probs = data.next_category_probs[order]
    has_next = users[1:] == users[:-1]
    predicted = probs[:-1][has_next]
    observed = np.eye(5)[category[1:][has_next]]
    assert len(predicted) > 20_000
    np.testing.assert_allclose(predicted.mean(axis=0), observed.mean(axis=0), atol=0.01)
    p, o = predicted.ravel(), observed.ravel()
    for lo, hi in [(0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.0)]:
        inside = (p >= lo) & (p < hi)
        assert abs(p[inside].mean() - o[inside].mean()) < 0.02
    # And it is informative: its log-likelihood beats the marginal frequencies by a wide margin.
    gt_ll = np.log((predicted * observed).sum(axis=1)).mean()
    marginal_ll = np.log((observed.mean(axis=0) * observed).sum(axis=1)).mean()
    assert gt_ll > marginal_ll + 0.3


def test_through_the_loader_and_target_probs():
    data = generate_synthetic_interests(SyntheticConfig.small(seed=3))
    loaded = data.to_behavior_data()
    assert loaded.report.raw_events == data.events.num_rows
    assert loaded.report.events == data.events.num_rows  # nothing dropped: no ties within a user
    items = {r["item_id"]: r for r in loaded.items.to_list()}
    assert all(item["categories"] for item in items.values())
    test = loaded.sequences["test"]
    probs = data.target_category_probs(test)
    assert probs.shape == (test.num_rows, 6)
    # By hand for the first row: the law after the user's second-to-last event.
    row = test[0]
    user = int(row["user_id"])
    rows_of_user = data.user_major[data.user_offsets[user] : data.user_offsets[user + 1]]
    np.testing.assert_array_equal(probs[0], data.next_category_probs[rows_of_user[len(row["item_ids"]) - 1]])
    target_category = items[row["target_item_id"]]["categories"][0]
    assert data.events.column("category")[int(rows_of_user[len(row["item_ids"])])].as_py() == target_category
    # Works for temporal splits too (histories are whole prefixes).
    cutoff = int(pc.min(data.events.column("timestamp")).as_py()) + 40 * 86400
    temporal = data.to_behavior_data(split=TemporalSplit(test_start=cutoff, targets="all"))
    assert data.target_category_probs(temporal.sequences["test"]).shape[0] == temporal.sequences["test"].num_rows


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="min_events"):
        SyntheticConfig(min_events=10, max_events=5)
    with pytest.raises(ValueError, match="switch_probability"):
        SyntheticConfig(switch_probability=1.5)
    with pytest.raises(ValueError, match="ground_truth=False"):
        generate_synthetic_interests(SyntheticConfig.small(ground_truth=False)).target_category_probs(None)
