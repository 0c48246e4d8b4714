"""Forecast targets, metrics and the recent-mix baseline: tiny cases by hand, loop references, bad inputs."""

import numpy as np
import pytest
import torch

from hf_interest.metrics import (
    decayed_category_mix,
    forecast_metrics,
    next_k_category_mix,
    recent_category_mix,
)

PAD = -100
# Three items over K = 2 categories: one-hot, one-hot, and an item with both categories (equal shares).
WEIGHTS = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])


def loop_targets(item_rows, weights, k, pad=PAD):
    """Reference: the next-k mean, one position at a time."""
    B, T = item_rows.shape
    targets, full = np.zeros((B, T, weights.shape[1])), np.zeros((B, T), dtype=bool)
    for b in range(B):
        for t in range(T):
            later = item_rows[b, t + 1 : t + k + 1]
            if item_rows[b, t] != pad and len(later) == k and (later != pad).all():
                full[b, t] = True
                targets[b, t] = weights[later].mean(axis=0)
    return targets, full


def loop_recent_mix(item_rows, weights, window, smoothing, prior, pad=PAD):
    """Reference: the smoothed mean of the last `window` real events, one position at a time."""
    B, T = item_rows.shape
    out = np.zeros((B, T, weights.shape[1]))
    for b in range(B):
        for t in range(T):
            recent = [i for i in item_rows[b, max(0, t - window + 1) : t + 1] if i != pad]
            mix = weights[recent].mean(axis=0) if recent else prior
            out[b, t] = (1 - smoothing) * mix + smoothing * prior
    return out


def random_rows(rng, batch, length, num_items, pad=PAD):
    """Left-padded rows of random lengths, with a few masked-out events in the middle."""
    rows = rng.integers(0, num_items, (batch, length))
    lengths = rng.integers(0, length + 1, batch)
    rows[np.arange(length)[None, :] < (length - lengths)[:, None]] = pad
    rows[rng.random((batch, length)) < 0.05] = pad
    return rows


def test_targets_by_hand():
    rows = np.array([[0, 1, 2, 0], [PAD, PAD, 1, 1]])
    targets, full = next_k_category_mix(rows, WEIGHTS, k=2)
    assert targets.shape == (2, 4, 2) and full.shape == (2, 4)
    # Row 0: t=0 averages items 1, 2; t=1 averages items 2, 0; t=2 and t=3 have fewer than 2 later events.
    np.testing.assert_array_equal(full, [[True, True, False, False], [False, False, False, False]])
    np.testing.assert_allclose(targets[0, 0], [0.25, 0.75])
    np.testing.assert_allclose(targets[0, 1], [0.75, 0.25])
    assert (targets[~full] == 0).all()  # no partial targets
    targets, full = next_k_category_mix(rows, WEIGHTS, k=1)
    # With k = 1 the target is the next item's weights; padding positions have none, even before a real event.
    np.testing.assert_array_equal(full, [[True, True, True, False], [False, False, True, False]])
    np.testing.assert_allclose(targets[0, :3], WEIGHTS[[1, 2, 0]])
    np.testing.assert_allclose(targets[1, 2], [0.0, 1.0])
    # A masked-out event in the middle breaks every window that contains it.
    _, full = next_k_category_mix(np.array([[0, PAD, 1, 1, 2]]), WEIGHTS, k=2)
    np.testing.assert_array_equal(full, [[False, False, True, False, False]])
    # Any pad value works, e.g. the collator's pad_token_id 0 on vocabulary indices 1..3.
    shifted = np.vstack([[0.0, 0.0], WEIGHTS])
    targets_0, full_0 = next_k_category_mix(np.where(rows == PAD, 0, rows + 1), shifted, k=2, pad=0)
    targets_ref, full_ref = next_k_category_mix(rows, WEIGHTS, k=2)
    np.testing.assert_array_equal(full_0, full_ref)
    np.testing.assert_allclose(targets_0, targets_ref)


def test_targets_match_the_loop():
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.full(4, 0.5), 30)
    rows = random_rows(rng, 16, 25, 30)
    for k in (1, 3, 7, 25, 30):
        targets, full = next_k_category_mix(rows, weights, k)
        ref_targets, ref_full = loop_targets(rows, weights, k)
        np.testing.assert_array_equal(full, ref_full)
        np.testing.assert_allclose(targets, ref_targets, atol=1e-12)
        np.testing.assert_allclose(targets[full].sum(axis=1), 1.0)
    assert not next_k_category_mix(rows, weights, 25)[1].any()  # T = 25: nobody has 25 later events
    # Torch inputs give the same result.
    targets_t, full_t = next_k_category_mix(torch.from_numpy(rows), torch.from_numpy(weights), 3)
    np.testing.assert_allclose(targets_t, next_k_category_mix(rows, weights, 3)[0])


def test_evaluation_targets_equal_the_training_targets_on_full_windows():
    # Two implementations on purpose: the head trains with `next_k_category_targets` (torch, in modeling_interest.py,
    # which must stand alone for trust_remote_code, and it also trains on partial windows at the end of a row); the
    # metrics and baselines use `next_k_category_mix` (numpy, full windows only). Where a window is full they must
    # agree exactly, with the head's next-item labels being the items shifted by one.
    from hf_interest.modeling_interest import next_k_category_targets

    rng = np.random.default_rng(3)
    weights = rng.dirichlet(np.full(5, 0.5), 40)
    rows = random_rows(rng, 12, 30, 40)
    labels = np.full_like(rows, PAD)
    labels[:, :-1] = rows[:, 1:]  # labels[b, t] = the item of event t + 1, as DataCollatorForInterest builds them
    labels[rows == PAD] = PAD  # no label where there is no event
    for k in (1, 4, 9):
        eval_targets, full = next_k_category_mix(rows, weights, k)
        train_targets, num_events = next_k_category_targets(torch.from_numpy(labels), torch.from_numpy(weights), k)
        assert full.any()
        np.testing.assert_array_equal(num_events.numpy()[full], k)
        np.testing.assert_allclose(train_targets.numpy()[full], eval_targets[full], atol=1e-12)


def test_metrics_by_hand():
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    q = np.array([[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
    out = forecast_metrics(p, q)
    ce = [-np.log(0.5), -(0.5 * np.log(0.9) + 0.5 * np.log(0.1)), -np.log(0.2)]
    kl = [np.log(1 / 0.5), 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1), np.log(1 / 0.2)]
    assert out["n"] == 3
    assert out["cross_entropy"] == pytest.approx(np.mean(ce), abs=1e-12)
    assert out["kl_divergence"] == pytest.approx(np.mean(kl), abs=1e-12)
    # Row 0: p ties, argmax is category 0, q's maximum. Row 1: q ties, any argmax counts. Row 2: a miss.
    assert out["top_category_accuracy"] == pytest.approx(2 / 3)
    # A perfect forecast has KL 0 and CE = entropy of q; a zero where q has mass is clipped at eps.
    same = forecast_metrics(q, q)
    assert same["kl_divergence"] == pytest.approx(0.0, abs=1e-12)
    assert same["cross_entropy"] == pytest.approx(np.log(2) / 3, abs=1e-12)
    clipped = forecast_metrics(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]), eps=1e-12)
    assert clipped["cross_entropy"] == pytest.approx(-np.log(1e-12))
    assert clipped["top_category_accuracy"] == 0.0


def test_kl_is_cross_entropy_minus_entropy():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(6), 200)
    q = rng.dirichlet(np.full(6, 0.3), 200)
    q[:50] = np.eye(6)[rng.integers(0, 6, 50)]  # some one-hot targets (0 log 0 = 0)
    out = forecast_metrics(p, q)
    entropy = -np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(axis=1).mean()
    assert out["kl_divergence"] == pytest.approx(out["cross_entropy"] - entropy, abs=1e-10)
    assert out["kl_divergence"] > 0
    torch_out = forecast_metrics(torch.from_numpy(p).float(), torch.from_numpy(q).float())
    assert torch_out["cross_entropy"] == pytest.approx(out["cross_entropy"], rel=1e-5)


def test_recent_mix_by_hand_and_against_the_loop():
    prior = np.array([0.25, 0.75])
    rows = np.array([[PAD, 0, 1, 2]])
    mix = recent_category_mix(rows, WEIGHTS, window=2, smoothing=0.0, prior=prior)
    np.testing.assert_allclose(mix[0], [prior, [1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
    smoothed = recent_category_mix(rows, WEIGHTS, window=2, smoothing=0.2, prior=prior)
    np.testing.assert_allclose(smoothed[0, 1], [0.8 + 0.05, 0.15])
    rng = np.random.default_rng(2)
    weights = rng.dirichlet(np.full(5, 0.5), 40)
    rows = random_rows(rng, 12, 30, 40)
    prior = rng.dirichlet(np.ones(5))
    for window in (1, 4, 30, 50):
        for smoothing in (0.0, 0.1, 1.0):
            ours = recent_category_mix(rows, weights, window, smoothing, prior)
            np.testing.assert_allclose(ours, loop_recent_mix(rows, weights, window, smoothing, prior), atol=1e-12)
    np.testing.assert_allclose(recent_category_mix(rows, weights, 3, 0.1, prior).sum(axis=-1), 1.0)


def test_rejects_bad_inputs():
    rows = np.array([[0, 1, 2]])
    with pytest.raises(ValueError, match="outside category_weights"):
        next_k_category_mix(np.array([[0, 3]]), WEIGHTS, 1)
    with pytest.raises(ValueError, match="outside category_weights"):
        next_k_category_mix(np.array([[0, -1]]), WEIGHTS, 1)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        next_k_category_mix(np.array([0, 1]), WEIGHTS, 1)
    with pytest.raises(ValueError, match="integers"):
        next_k_category_mix(rows.astype(float), WEIGHTS, 1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        next_k_category_mix(rows, WEIGHTS, 0)
    with pytest.raises(ValueError, match="negative"):
        next_k_category_mix(rows, -WEIGHTS, 1)
    with pytest.raises(ValueError, match="NaN"):
        next_k_category_mix(rows, np.full((3, 2), np.nan), 1)
    q = np.array([[1.0, 0.0]])
    with pytest.raises(ValueError, match="same shape"):
        forecast_metrics(np.array([[0.5, 0.5], [0.5, 0.5]]), q)
    with pytest.raises(ValueError, match="same shape"):
        forecast_metrics(np.array([[0.2, 0.3, 0.5]]), q)
    with pytest.raises(ValueError, match="negative"):
        forecast_metrics(np.array([[1.5, -0.5]]), q)
    with pytest.raises(ValueError, match="NaN or infinite"):
        forecast_metrics(np.array([[np.nan, 1.0]]), q)
    with pytest.raises(ValueError, match="NaN or infinite"):
        forecast_metrics(q, np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="do not sum to 1"):
        forecast_metrics(np.array([[2.0, 3.0]]), q)  # logits, not probabilities
    with pytest.raises(ValueError, match="target_probs do not sum to 1"):
        forecast_metrics(q, np.array([[0.0, 0.0]]))  # e.g. a non-full position's zero target
    with pytest.raises(ValueError, match="empty"):
        forecast_metrics(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        forecast_metrics(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    prior = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="window"):
        recent_category_mix(rows, WEIGHTS, 0, 0.1, prior)
    with pytest.raises(ValueError, match="smoothing"):
        recent_category_mix(rows, WEIGHTS, 2, 1.5, prior)
    with pytest.raises(ValueError, match="K = 2"):
        recent_category_mix(rows, WEIGHTS, 2, 0.1, np.ones(3) / 3)
    with pytest.raises(ValueError, match="prior do not sum to 1"):
        recent_category_mix(rows, WEIGHTS, 2, 0.1, np.array([0.5, 0.6]))


def test_decayed_mix_against_the_recursion_by_hand():
    rng = np.random.default_rng(3)
    weights = np.eye(4)[rng.integers(0, 4, 20)] * 0.5 + np.eye(4)[rng.integers(0, 4, 20)] * 0.5
    rows = random_rows(rng, 6, 15, 20)
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    out = decayed_category_mix(rows, weights, 0.8, 2.0, prior)
    for b in range(rows.shape[0]):
        counts = np.zeros(4)
        for t in range(rows.shape[1]):
            counts = 0.8 * counts + (weights[rows[b, t]] if rows[b, t] != PAD else 0.0)
            np.testing.assert_allclose(out[b, t], (counts + 2.0 * prior) / (counts.sum() + 2.0), atol=1e-12)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-12)
    # decay 0 keeps only the current event; decay 1 counts every event alike
    last = decayed_category_mix(rows, weights, 0.0, 1e-9, prior)
    real = rows != PAD
    np.testing.assert_allclose(last[real], weights[rows[real]], atol=1e-6)
    with pytest.raises(ValueError, match="decay"):
        decayed_category_mix(rows, weights, 1.5, 1.0, prior)
    with pytest.raises(ValueError, match="concentration"):
        decayed_category_mix(rows, weights, 0.5, 0.0, prior)
