"""Interest trajectories: states equal the forward pass and are causal, drift windows, category interests, plot, CLI."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from tiny import tiny_config

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import generate_synthetic_interests
from hf_interest.evolution import (
    NO_CATEGORY,
    InterestTrajectory,
    category_distribution,
    category_interests,
    drift_by_window,
    interest_drift,
    interest_trajectories,
    interest_trajectory,
    plot_category_interests,
    shuffled_trajectories,
)
from hf_interest_cli import main

ITEMS = [f"i{k}" for k in range(20)]
MAX_LEN = 12


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    config = tiny_config(num_items=len(ITEMS) + 3, num_hidden_layers=2, max_position_embeddings=MAX_LEN,
                         hidden_dropout_prob=0.3, initializer_range=0.5)  # fmt: skip
    model = InterestForNextItemPrediction(config)  # left in train mode: the functions must switch to eval
    return model, ItemTokenizer.from_items(ITEMS)


def _history(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    items = [ITEMS[i] for i in rng.integers(0, len(ITEMS), n)]
    times = (1_000_000 + np.cumsum(rng.integers(0, 5000, n))).tolist()
    return items, times


def _forward_states(model, tokenizer, items, times):
    batch = tokenizer([items], timestamps=[times], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        head = model(**batch).last_hidden_state[0]
        backbone = model.model(**batch).last_hidden_state[0]
    model.train()
    return head.numpy(), backbone.numpy()


def test_trajectory_is_the_forward_pass(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items, times = _history(9)
    trajectory = interest_trajectory(model, tokenizer, items, times, user_id=7)
    head, backbone = _forward_states(model, tokenizer, items, times)
    assert trajectory.states.shape == (9, 16) and trajectory.states.dtype == np.float32
    np.testing.assert_allclose(trajectory.states, head, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trajectory.states, backbone, rtol=1e-5, atol=1e-6)
    assert trajectory.item_ids == items and trajectory.timestamps.tolist() == times
    assert trajectory.input_ids.tolist() == tokenizer.encode_items(items)
    assert trajectory.positions.tolist() == list(range(9)) and trajectory.user_id == "7"
    assert model.training  # the caller's mode is restored
    # the backbone alone gives the same trajectory
    np.testing.assert_allclose(interest_trajectory(model.model, tokenizer, items, times).states, trajectory.states)


def test_state_after_event_t_ignores_later_events(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items, times = _history(10, seed=1)
    full = interest_trajectory(model, tokenizer, items, times)
    for t in range(len(items)):
        prefix = interest_trajectory(model, tokenizer, items[: t + 1], times[: t + 1])
        np.testing.assert_allclose(prefix.states, full.states[: t + 1], rtol=1e-5, atol=1e-6)
    other_items, other_times = _history(10, seed=2)
    changed = interest_trajectory(
        model, tokenizer, items[:6] + other_items[6:], times[:6] + [t + 99 for t in times[6:]]
    )
    np.testing.assert_allclose(changed.states[:6], full.states[:6], rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed.states[6:], full.states[6:], atol=1e-3)


def test_long_histories_keep_the_newest_events_and_unknown_items_are_counted(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items, times = _history(MAX_LEN + 3, seed=3)
    items[-2] = "never-seen"
    trajectory = interest_trajectory(model, tokenizer, items, times)
    assert len(trajectory) == MAX_LEN and trajectory.num_truncated == 3 and trajectory.num_unknown == 1
    assert trajectory.item_ids == items[3:] and trajectory.positions.tolist() == list(range(3, MAX_LEN + 3))
    assert trajectory.input_ids[-2] == tokenizer.unk_token_id
    head, _ = _forward_states(model, tokenizer, items[3:], times[3:])
    np.testing.assert_allclose(trajectory.states, head, rtol=1e-5, atol=1e-6)


def test_batched_trajectories_equal_one_by_one(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    histories = [_history(n, seed=n) for n in (5, 0, 9, 14, 2)]
    batched = interest_trajectories(
        model, tokenizer, [h for h, _ in histories], [t for _, t in histories], user_ids=list("abcde"), batch_size=2
    )
    assert [t.user_id for t in batched] == list("abcde")
    assert [len(t) for t in batched] == [5, 0, 9, MAX_LEN, 2] and batched[1].states.shape == (0, 16)
    for (items, times), trajectory in zip(histories, batched):
        single = interest_trajectory(model, tokenizer, items, times)
        np.testing.assert_allclose(trajectory.states, single.states, rtol=1e-5, atol=1e-5)
        assert trajectory.num_truncated == single.num_truncated and trajectory.item_ids == single.item_ids
    with pytest.raises(ValueError, match="timestamps has 1 rows for 2 histories"):
        interest_trajectories(model, tokenizer, [["i1"], ["i2"]], [[1]])
    with pytest.raises(ValueError, match="timestamps has 1 values for 2 events"):
        interest_trajectory(model, tokenizer, ["i1", "i2"], [1])
    with pytest.raises(ValueError, match="single string"):
        interest_trajectory(model, tokenizer, "i1")


def _hand_made(states, times=None, offset=0):
    n = len(states)
    return InterestTrajectory(
        states=np.asarray(states, dtype=np.float32), item_ids=[f"i{k}" for k in range(n)],
        input_ids=np.arange(n) + 3, timestamps=None if times is None else np.asarray(times), num_truncated=offset,
    )  # fmt: skip


E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_drift_by_event_windows():
    trajectory = _hand_made([E1] * 3 + [E2] * 3 + [[1.0, 1.0]] * 2, times=list(range(0, 80, 10)), offset=4)
    drift = interest_drift(trajectory, window=3)
    assert drift.unit == "events" and drift.size == 3 and len(drift) == 3
    assert drift.num_events.tolist() == [3, 3, 2]  # the last window keeps the remainder
    assert drift.starts.tolist() == [4, 7, 10] and drift.ends.tolist() == [7, 10, 12]  # positions in the history
    assert drift.start_times.tolist() == [0, 30, 60] and drift.end_times.tolist() == [20, 50, 70]
    assert np.isnan(drift.drift[0])
    np.testing.assert_allclose(drift.drift[1:], [1.0, 1 - 1 / np.sqrt(2)])
    np.testing.assert_allclose(drift.drift_from_first, [0.0, 1.0, 1 - 1 / np.sqrt(2)])
    np.testing.assert_allclose(drift.means, [E1, E2, [1.0, 1.0]])
    same = interest_drift(_hand_made([E1] * 6), window=2)
    np.testing.assert_allclose(same.drift[1:], 0.0, atol=1e-7)


def test_drift_by_time_windows_skips_and_counts_empty_windows():
    times = [100, 110, 150, 420, 430, 460, 480]  # windows of 100 s from t=100: [100,200) [400,500); 2 empty between
    trajectory = _hand_made([E1] * 3 + [E2] * 4, times=times)
    drift = interest_drift(trajectory, window_seconds=100)
    assert drift.unit == "seconds" and drift.empty_windows == 2
    assert drift.num_events.tolist() == [3, 4] and drift.starts.tolist() == [0, 3] and drift.ends.tolist() == [3, 7]
    assert drift.start_times.tolist() == [100, 400] and drift.end_times.tolist() == [200, 500]
    np.testing.assert_allclose(drift.drift[1], 1.0)


@pytest.mark.parametrize(
    "kwargs, trajectory, message",
    [
        ({}, _hand_made([E1]), "exactly one"),
        ({"window": 2, "window_seconds": 5}, _hand_made([E1]), "exactly one"),
        ({"window": 0}, _hand_made([E1]), "window must be a positive integer"),
        ({"window_seconds": 10}, _hand_made([E1]), "needs timestamps"),
        ({"window_seconds": 10}, _hand_made([E1, E2], times=[5, 1]), "not sorted"),
        ({"window": 2}, _hand_made(np.zeros((0, 2))), "no events"),
    ],
)
def test_drift_bad_input(kwargs, trajectory, message):
    with pytest.raises(ValueError, match=message):
        interest_drift(trajectory, **kwargs)


def test_drift_by_window_averages_users():
    a = interest_drift(_hand_made([E1] * 2 + [E2] * 2 + [E1] * 2), window=2)  # drift 1, 1
    b = interest_drift(_hand_made([E1] * 4), window=2)  # drift 0
    rows = drift_by_window([a, b])
    assert [r["users"] for r in rows] == [2, 2, 1]
    assert np.isnan(rows[0]["drift"]) and rows[1]["drift"] == pytest.approx(0.5) and rows[2]["drift"] == 1.0
    assert rows[2]["drift_from_first"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="same window"):
        drift_by_window([a, interest_drift(_hand_made([E1] * 4), window=3)])


def test_shuffled_trajectories_keep_the_events_and_times(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items, times = _history(MAX_LEN + 2, seed=4)
    trajectory = interest_trajectory(model, tokenizer, items, times)
    first, second = shuffled_trajectories(model, tokenizer, [trajectory, trajectory], seed=0)
    again = shuffled_trajectories(model, tokenizer, [trajectory, trajectory], seed=0)[0]
    assert sorted(first.item_ids) == sorted(trajectory.item_ids) and first.item_ids != second.item_ids
    assert first.timestamps.tolist() == trajectory.timestamps.tolist() and first.num_truncated == 2
    assert first.item_ids == again.item_ids
    np.testing.assert_allclose(first.states, interest_trajectory(model, tokenizer, first.item_ids, times[2:]).states)


def test_category_distribution_splits_items_with_several_categories():
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]])
    out, names, without = category_distribution(probs, ["a", "b", "c", "d"], {"a": ["X"], "b": ["X", "Y"], "c": []})
    assert names == ["X", "Y", NO_CATEGORY] and without == 2  # c has none, d is missing from the mapping
    np.testing.assert_allclose(out, [[0.2, 0.1, 0.7], [1.0, 0.0, 0.0]])
    out, names, without = category_distribution(np.array([0.5, 0.5]), ["a", "b"], {"a": "X", "b": ["Y", "Y"]})
    assert names == ["X", "Y"] and without == 0 and out.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="3 columns for 2 item_ids"):
        category_distribution(np.ones(3), ["a", "b"], {})


def test_category_interests_sum_the_next_item_distribution(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items, times = _history(8, seed=5)
    trajectory = interest_trajectory(model, tokenizer, items, times, user_id="u")
    # one category per item: the category distribution is the next-item distribution itself
    own = {item: [item] for item in ITEMS}
    interests = category_interests(model, tokenizer, trajectory, own)
    assert interests.probs.shape == (8, len(ITEMS)) and interests.categories == sorted(ITEMS)
    np.testing.assert_allclose(interests.probs.sum(1), 1.0, atol=1e-9)
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer([items], timestamps=[times], return_tensors="pt")).logits[0, :, 3:]
    model.train()
    expected = logits.softmax(-1).double().numpy()
    order = [interests.categories.index(item) for item in ITEMS]
    np.testing.assert_allclose(interests.probs[:, order], expected, rtol=1e-5, atol=1e-7)
    assert interests.top(0, n=1)[0][0] == ITEMS[int(expected[0].argmax())]

    unseen = category_interests(model, tokenizer, trajectory, own, exclude_seen=True)
    np.testing.assert_allclose(unseen.probs.sum(1), 1.0, atol=1e-9)
    for t in range(8):
        seen_columns = [unseen.categories.index(item) for item in set(items[: t + 1])]
        assert np.all(unseen.probs[t, seen_columns] == 0)  # seen up to and including event t: no mass
        later = [unseen.categories.index(item) for item in set(items[t + 1 :]) - set(items[: t + 1])]
        assert np.all(unseen.probs[t, later] > 0)  # seen only later: still a candidate at step t

    # coarse categories, one item in two of them, the rest without: rows still sum to 1
    coarse = {item: ["even" if k % 2 == 0 else "odd"] for k, item in enumerate(ITEMS[:10])}
    coarse["i0"] = ["even", "zero"]
    grouped = category_interests(model, tokenizer, trajectory, coarse)
    assert grouped.categories == ["even", "odd", "zero", NO_CATEGORY] and grouped.items_without_category == 10
    np.testing.assert_allclose(grouped.probs.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(grouped.probs[:, 2], expected[:, 0] / 2, rtol=1e-5)
    np.testing.assert_allclose(grouped.probs[:, 3], expected[:, 10:].sum(1), rtol=1e-5)


def test_category_interests_bad_input(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items, times = _history(5, seed=6)
    trajectory = interest_trajectory(model, tokenizer, items, times)
    with pytest.raises(ValueError, match="next-item head"):
        category_interests(model.model, tokenizer, trajectory, {})
    torch.manual_seed(1)
    other = InterestForNextItemPrediction(model.config)
    with pytest.raises(ValueError, match="not computed by this model"):
        category_interests(other, tokenizer, trajectory, {})
    with pytest.raises(ValueError, match="no events"):
        category_interests(model, tokenizer, interest_trajectory(model, tokenizer, []), {})


def test_plot_category_interests(model_and_tokenizer, tmp_path):
    pytest.importorskip("matplotlib")
    model, tokenizer = model_and_tokenizer
    items, times = _history(10, seed=7)
    trajectory = interest_trajectory(model, tokenizer, items, times, user_id="u1")
    interests = category_interests(model, tokenizer, trajectory, {item: [f"c{k % 5}"] for k, item in enumerate(ITEMS)})
    drift = interest_drift(trajectory, window=3)
    fig = plot_category_interests(interests, tmp_path / "t.png", top=2, drift=drift, drift_reference=drift.drift)
    assert (tmp_path / "t.png").stat().st_size > 5000 and len(fig.axes) == 2
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 3 and labels[-1] == "other"
    top_two = [interests.categories[c] for c in np.argsort(-interests.probs.mean(0))[:2]]
    assert labels[:2] == top_two
    fig = plot_category_interests(interests, tmp_path / "time.png", x="time")
    assert (tmp_path / "time.png").is_file() and len(fig.axes) == 1
    with pytest.raises(ValueError, match="top"):
        plot_category_interests(interests, top=0)
    no_times = category_interests(model, tokenizer, interest_trajectory(model, tokenizer, items), {})
    with pytest.raises(ValueError, match="needs timestamps"):
        plot_category_interests(no_times, x="time")


def test_cli_trajectory(tiny_run, tmp_path, capsys):
    data = generate_synthetic_interests(num_users=40, num_items=30, seed=0).to_behavior_data()
    user = str(data.sequences["test"]["user_id"][0])
    events = len(data.sequences["test"][0]["item_ids"]) + 1
    args = ["trajectory", str(tiny_run), "--dataset", "synthetic", "--synthetic_num_users", "40"]
    args += ["--synthetic_num_items", "30", "--user", user, "--window", "5", "--permutations", "3"]
    assert main([*args, "--output", str(tmp_path / "traj.png")]) == 0
    text = capsys.readouterr().out
    assert f"user {user} of synthetic: {events} events" in text and "shuffled" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["window", "events"])
    read = min(events, 24)  # the tiny run reads at most 24 events
    table = [line.split() for line in lines[header + 1 : header + 1 + -(-read // 5)]]
    assert [int(row[0]) for row in table] == list(range(len(table)))
    assert sum(int(row[1]) for row in table) == read
    assert table[0][-3:-1] == ["-", "-"] and all(0 <= float(row[-3]) <= 2 for row in table[1:])
    assert "after event" in text and "popularity (share of training events)" in text
    assert (tmp_path / "traj.png").stat().st_size > 5000

    assert main([*args[:-6], "--user", "no-such-user"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-interest trajectory: error: --user no-such-user is not in the test split")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_trajectory_time_windows_from_a_log(tiny_run, tmp_path, capsys):
    log = tmp_path / "events.parquet"
    pq.write_table(generate_synthetic_interests(num_users=40, num_items=30, seed=0).events, log)
    user = str(generate_synthetic_interests(num_users=40, num_items=30, seed=0).events["user_id"][0])
    argv = ["trajectory", str(tiny_run), "--dataset", str(log), "--user", user, "--window_seconds", "86400"]
    assert main([*argv, "--permutations", "2"]) == 0
    text = capsys.readouterr().out
    assert "windows of 86400 s" in text and "category interests" in text
    assert main([*argv, "--window", "3"]) == 2
    assert "not both" in capsys.readouterr().err


def test_peft_adapted_model_trajectory_and_head(model_and_tokenizer):
    peft = pytest.importorskip("peft")
    from hf_interest import DEFAULT_LORA_TARGET_MODULES

    base, tokenizer = model_and_tokenizer
    model = InterestForNextItemPrediction(base.config)
    model.load_state_dict(base.state_dict())
    items, times = _history(7, seed=8)
    own = {item: [item] for item in ITEMS}
    before = category_interests(model, tokenizer, interest_trajectory(model, tokenizer, items, times), own)
    config = peft.LoraConfig(
        target_modules=DEFAULT_LORA_TARGET_MODULES, modules_to_save=["item_head"], init_lora_weights=False
    )
    adapted = peft.get_peft_model(model, config)
    with torch.no_grad():  # the trained copy of the head differs from the base head
        adapted.base_model.model.item_head.modules_to_save["default"].bias.add_(torch.randn(len(ITEMS) + 3))
    trajectory = interest_trajectory(adapted, tokenizer, items, times)
    interests = category_interests(adapted, tokenizer, trajectory, own)
    adapted.eval()
    with torch.no_grad():
        output = adapted(**tokenizer([items], timestamps=[times], return_tensors="pt"))
    np.testing.assert_allclose(trajectory.states, output.last_hidden_state[0].numpy(), rtol=1e-5, atol=1e-6)
    order = [interests.categories.index(item) for item in ITEMS]
    expected = output.logits[0, :, 3:].double().softmax(-1).numpy()
    np.testing.assert_allclose(interests.probs[:, order], expected, rtol=1e-5, atol=1e-9)
    assert not np.allclose(interests.probs, before.probs, atol=1e-3)  # LoRA and the saved head copy took effect
