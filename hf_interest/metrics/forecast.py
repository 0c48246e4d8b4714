"""Interest forecasting: next-k category targets, forecast metrics, and the "recent category mix" baseline.

An interest forecast, made from the interest state after event `t`, is a distribution over the `K` item categories
for the user's next `k` events. Its empirical target is

    q_t = (1 / k) * sum_{j=1..k} W[item of event t + j]

with `W` the `(num_items, K)` item -> category weights (an item with several categories spreads its weight equally;
one-hot for single-category items). Positions with fewer than `k` later events have no full target and are left out
of evaluation (`full` says which are in). Scores are the cross-entropy `-sum q log p`, the KL divergence
`KL(q || p) = CE - H(q)`, and whether the forecast's top category is one of the target's top categories.

The baseline a forecast must beat is "the next events look like the recent ones": the mean category weights of the
last `window` events up to `t`, smoothed towards a prior (`recent_category_mix`).

Everything here is numpy on CPU, vectorised over `(B, T)` with cumulative sums; torch tensors are accepted as inputs
(they are detached and copied to the CPU) and results are numpy arrays.
"""

from __future__ import annotations

import numpy as np

ROW_SUM_TOLERANCE = 1e-4
"""How far a row of probabilities may sum from 1 (float32 softmax outputs sum to 1 within about 1e-6)."""


def _to_numpy(array, name: str) -> np.ndarray:
    """A numpy view or copy of a numpy array, a torch tensor (any device) or a nested sequence."""
    if hasattr(array, "detach"):  # torch tensor; avoids importing torch here
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of numbers: {error}") from error


def _check_item_rows(item_rows, num_items: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    rows = _to_numpy(item_rows, "item_rows")
    if rows.ndim != 2:
        raise ValueError(f"item_rows must be a (B, T) array of category-weight row indices, got shape {rows.shape}.")
    if not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"item_rows must hold integers (row indices of category_weights), got dtype {rows.dtype}.")
    real = rows != pad
    bad = real & ((rows < 0) | (rows >= num_items))
    if bad.any():
        b, t = np.argwhere(bad)[0]
        raise ValueError(
            f"item_rows holds {int(bad.sum())} indices outside category_weights' {num_items} rows (first at "
            f"[{b}, {t}]: {int(rows[b, t])}); pass vocabulary indices, and mark padding with pad={pad}."
        )
    return rows, real


def _check_category_weights(category_weights) -> np.ndarray:
    weights = _to_numpy(category_weights, "category_weights").astype(np.float64, copy=False)
    if weights.ndim != 2 or weights.shape[1] == 0:
        raise ValueError(f"category_weights must be a (num_items, K) array with K >= 1, got shape {weights.shape}.")
    if not np.isfinite(weights).all():
        raise ValueError(f"category_weights holds {int((~np.isfinite(weights)).sum())} NaN or infinite values.")
    if (weights < 0).any():
        raise ValueError(f"category_weights holds {int((weights < 0).sum())} negative values; weights must be >= 0.")
    return weights


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _window_sums(values: np.ndarray, start_offset: int, stop_offset: int) -> np.ndarray:
    """For every t, the sum of `values[:, t + start_offset : t + stop_offset + 1]` along axis 1 (clipped to [0, T))."""
    T = values.shape[1]
    cum = np.zeros((values.shape[0], T + 1) + values.shape[2:], dtype=np.float64)
    np.cumsum(values, axis=1, out=cum[:, 1:])
    t = np.arange(T)
    lo = np.clip(t + start_offset, 0, T)
    hi = np.clip(t + stop_offset + 1, 0, T)
    return cum[:, hi] - cum[:, lo]


def next_k_category_mix(item_rows, category_weights, k: int, pad: int = -100) -> tuple[np.ndarray, np.ndarray]:
    """The empirical category mix of the next `k` events after every position.

    Alignment: `item_rows[b, t]` is the item of event `t` of sequence `b` (its row in `category_weights`, i.e. the
    vocabulary index), so the target at `t` belongs to the interest state *after* event `t` and averages the items at
    `t + 1 .. t + k` of the same row: `targets[b, t] = mean_j category_weights[item_rows[b, t + j]]`, `j = 1..k`.
    With left-padded model inputs (`DataCollatorForInterest`'s `input_ids`), pass them with `pad=pad_token_id`: the
    newest event is at `T - 1`, which never has a full target inside the batch.

    Args:
        item_rows: `(B, T)` integer row indices into `category_weights`, `pad` where there is no event.
        category_weights: `(num_items, K)` non-negative weights, each item's row summing to 1 (one-hot for a single
            category, equal shares for several); the row of an item without categories sums to 0, and targets that
            include it then sum to less than 1, which `forecast_metrics` rejects.
        k: The horizon, at least 1.
        pad: The value of `item_rows` that marks padding (and any masked-out event).

    Returns:
        `(targets, full)`: `targets` `(B, T, K)` float64 and `full` `(B, T)` bool. `full[b, t]` is True when
        position `t` holds an event and so do all of `t + 1 .. t + k` (inside the row, none of them `pad`); `targets`
        is the mean above there and 0 elsewhere (no partial targets: a row of zeros is visibly not a distribution).
    """
    k = _check_positive_int(k, "k")
    weights = _check_category_weights(category_weights)
    rows, real = _check_item_rows(item_rows, weights.shape[0], pad)
    per_event = weights[np.where(real, rows, 0)] * real[..., None]  # (B, T, K), zero at padding
    sums = _window_sums(per_event, 1, k)  # (B, T, K): events t+1 .. t+k
    counts = _window_sums(real.astype(np.float64), 1, k)  # (B, T)
    full = real & (counts == k)
    targets = np.where(full[..., None], sums / k, 0.0)
    return targets, full


def _check_probability_rows(probs, name: str, atol: float) -> np.ndarray:
    probs = _to_numpy(probs, name).astype(np.float64, copy=False)
    if probs.ndim != 2:
        raise ValueError(f"{name} must be a (N, K) array of probabilities, got shape {probs.shape}.")
    if not np.isfinite(probs).all():
        raise ValueError(
            f"{name} holds {int((~np.isfinite(probs)).sum())} NaN or infinite values; fix them before evaluating."
        )
    if (probs < 0).any():
        raise ValueError(
            f"{name} holds {int((probs < 0).sum())} negative values (min {probs.min()}); pass probabilities "
            "(e.g. softmax of the logits), not logits."
        )
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > atol
    if off.any():
        first = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"{int(off.sum())} rows of {name} do not sum to 1 within {atol} (first: row {first} sums to "
            f"{sums[first]}); pass normalised distributions, and keep only positions with a full target."
        )
    return probs


def forecast_metrics(pred_probs, target_probs, eps: float = 1e-12, atol: float = ROW_SUM_TOLERANCE) -> dict:
    """Score category forecasts against target category distributions, row by row, averaged over rows.

    Args:
        pred_probs: `(N, K)` forecast distributions `p`.
        target_probs: `(N, K)` target distributions `q` (e.g. `targets[full]` of `next_k_category_mix`).
        eps: Forecast probabilities are clipped below at `eps` inside the logarithm (a zero where the target has
            mass would otherwise give an infinite loss).
        atol: How far a row may sum from 1.

    Returns:
        `cross_entropy`: mean of `-sum_c q_c log p_c`; `kl_divergence`: mean of `KL(q || p) = sum_c q_c log(q_c / p_c)`
        with `0 log 0 = 0` (so it equals `cross_entropy` minus the mean entropy of `q`, with the same clipping);
        `top_category_accuracy`: the share of rows whose forecast argmax (first one on ties) is one of the target's
        maximal categories (ties in `q` within 1e-9 all count); `n`: the number of rows.
    """
    p = _check_probability_rows(pred_probs, "pred_probs", atol)
    q = _check_probability_rows(target_probs, "target_probs", atol)
    if p.shape != q.shape:
        raise ValueError(f"pred_probs and target_probs must have the same shape, got {p.shape} and {q.shape}.")
    if p.shape[0] == 0:
        raise ValueError("No rows to evaluate: pred_probs is empty (no position had a full target?).")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}.")
    log_p = np.log(np.maximum(p, eps))
    cross_entropy = -(q * log_p).sum(axis=1)
    q_log_q = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    kl = q_log_q.sum(axis=1) + cross_entropy
    top = np.argmax(p, axis=1)
    hit = q[np.arange(len(q)), top] >= q.max(axis=1) - 1e-9
    return {
        "cross_entropy": float(cross_entropy.mean()),
        "kl_divergence": float(kl.mean()),
        "top_category_accuracy": float(hit.mean()),
        "n": int(len(q)),
    }


def _events_and_prior(item_rows, category_weights, prior, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The checked inputs of a baseline: each event's category weights `(B, T, K)` (zero at padding), the mask of
    real events `(B, T)` and the prior `(K,)`."""
    weights = _check_category_weights(category_weights)
    prior = _check_probability_rows(_to_numpy(prior, "prior").reshape(1, -1), "prior", ROW_SUM_TOLERANCE)[0]
    if prior.shape[0] != weights.shape[1]:
        raise ValueError(f"prior must have K = {weights.shape[1]} entries (one per category), got {prior.shape[0]}.")
    rows, real = _check_item_rows(item_rows, weights.shape[0], pad)
    return weights[np.where(real, rows, 0)] * real[..., None], real, prior


def recent_category_mix(
    item_rows, category_weights, window: int, smoothing: float, prior, pad: int = -100
) -> np.ndarray:
    """The "repeat the recent category mix" forecast: `(1 - smoothing) * mix_t + smoothing * prior`.

    `mix_t` is the mean of `category_weights` over the events at positions `t - window + 1 .. t` of the same row
    that are not `pad` (fewer than `window` near the start of a sequence); where that window holds no event (e.g. a
    padding position) `mix_t` is `prior`. Alignment is that of `next_k_category_mix`: the forecast at `t` uses
    events up to and including `t`, and is scored against `targets[b, t]`.

    Args:
        item_rows: `(B, T)` integer row indices into `category_weights`, `pad` where there is no event.
        category_weights: `(num_items, K)` non-negative item -> category weights.
        window: How many recent events to average, at least 1.
        smoothing: Weight of the prior in `[0, 1]`; any positive value keeps every category possible (with a prior
            that has no zero), so the cross-entropy stays finite.
        prior: `(K,)` distribution, e.g. the category frequencies of the training events.
        pad: The value of `item_rows` that marks padding.

    Returns:
        `(B, T, K)` float64 forecasts; rows sum to 1 where the weights of the averaged items do.
    """
    window = _check_positive_int(window, "window")
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing!r}.")
    per_event, real, prior = _events_and_prior(item_rows, category_weights, prior, pad)
    sums = _window_sums(per_event, -(window - 1), 0)
    counts = _window_sums(real.astype(np.float64), -(window - 1), 0)[..., None]  # (B, T, 1)
    mix = np.where(counts > 0, sums / np.maximum(counts, 1.0), prior)
    return (1.0 - smoothing) * mix + smoothing * prior


def decayed_category_mix(item_rows, category_weights, decay: float, concentration: float, prior, pad: int = -100):
    """A Bayesian-flavoured forecast: exponentially decayed category counts with a Dirichlet prior.

    `p_t = (c_t + concentration * prior) / (sum(c_t) + concentration)` with `c_t = decay * c_{t-1} + w(item_t)`: every
    past event counts, the older ones less (`decay` per event), and `concentration` pseudo-events of the prior keep
    every category possible. It is the posterior mean of a category distribution that drifts slowly, a stronger
    reference than the fixed window of `recent_category_mix`. Same alignment and arguments as `recent_category_mix`.

    Returns:
        `(B, T, K)` float64 forecasts.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay!r}.")
    if not concentration > 0:
        raise ValueError(f"concentration must be positive, got {concentration!r}.")
    per_event, real, prior = _events_and_prior(item_rows, category_weights, prior, pad)
    counts = np.zeros((per_event.shape[0], per_event.shape[2]))  # (B, K)
    out = np.empty_like(per_event)
    for t in range(per_event.shape[1]):  # a loop over time steps, vectorised over rows and categories
        counts = decay * counts + per_event[:, t]
        out[:, t] = (counts + concentration * prior) / (counts.sum(axis=1, keepdims=True) + concentration)
    return out
