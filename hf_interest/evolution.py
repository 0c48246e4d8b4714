"""Interest trajectories: the interest state after every event, how far it drifts, and what it predicts over time.

```python
from hf_interest.evolution import interest_trajectory, interest_drift, category_interests, plot_category_interests

row = data.sequences["test"][0]
trajectory = interest_trajectory(model, tokenizer, row["item_ids"], row["timestamps"])  # states (T, hidden_size)
drift = interest_drift(trajectory, window=20)           # cosine distance between consecutive 20-event windows
categories = dict(zip(data.items["item_id"], data.items["categories"]))
interests = category_interests(model, tokenizer, trajectory, categories)  # (T, num_categories), rows sum to 1
plot_category_interests(interests, "trajectory.png", drift=drift)
```

The backbone is causal (SASRec, Kang & McAuley, 2018, https://arxiv.org/abs/1808.09781): its state after event t,
u_t = f(u_{t-1}, x_t), reads the first t events only, so one forward pass over a history gives the whole trajectory
u_1..u_T. Histories longer than `max_position_embeddings` are read from their newest events, as `recommend` does;
the trajectory says how many older events were left out.

Drift is the cosine distance between the mean states of two windows of the trajectory (by event count or by time).
Its reference is the same events in a random order (`shuffled_trajectories`): the drift a model shows when the order
of the events carries no information. A category-interest distribution is the next-item distribution at each step,
its mass summed per item category.

`interest_vectors` (a user's last or mean state, used by `hf_interest.groups`) lives here too: it is a pooled
trajectory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

NO_CATEGORY = "(no category)"


def _backbone(model):
    """The `InterestModel` inside a head model (or the model itself)."""
    return model.model if hasattr(model, "model") and hasattr(model.model, "item_embeddings") else model


def headless_pyplot():
    """matplotlib's pyplot on a non-interactive backend, with a clear error when the `plot` extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("Plots need matplotlib: pip install 'hf-interest[plot]'.") from error
    return plt


def _state_batches(
    model,
    tokenizer,
    histories: Sequence[Sequence],
    timestamps: Sequence[Sequence[int]] | None,
    batch_size: int,
    output: str = "last_hidden_state",
) -> Iterator[tuple[int, dict, torch.Tensor]]:
    """
    Runs the backbone over the histories in batches, in eval mode and without gradients (the model's mode is restored
    afterwards). Yields `(start, batch, states)`: the first row's index, the tokenizer's left-padded batch (newest
    `max_position_embeddings` events) and the states `(B, T, hidden_size)`, zero at padded positions.
    """
    if timestamps is not None and len(timestamps) != len(histories):
        raise ValueError(
            f"timestamps has {len(timestamps)} rows for {len(histories)} histories: give one per history."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    backbone = _backbone(model)
    was_training = backbone.training
    backbone.eval()
    try:
        device = next(backbone.parameters()).device
        max_length = backbone.config.max_position_embeddings
        hidden_size = backbone.config.hidden_size
        for start in range(0, len(histories), batch_size):
            chunk = [list(h) for h in histories[start : start + batch_size]]
            times = None if timestamps is None else [list(t) for t in timestamps[start : start + batch_size]]
            batch = tokenizer(chunk, timestamps=times, max_length=max_length, return_tensors="pt").to(device)
            if batch["input_ids"].shape[1] == 0:  # every history of the chunk is empty
                yield start, batch, torch.zeros(len(chunk), 0, hidden_size)
                continue
            with torch.no_grad():
                states = getattr(backbone(**batch), output).float()  # (B, T, H)
            yield start, batch, states
    finally:
        backbone.train(was_training)


def interest_vectors(
    model,
    tokenizer,
    histories: Sequence[Sequence],
    timestamps: Sequence[Sequence[int]] | None = None,
    pooling: str = "last",
    batch_size: int = 256,
) -> np.ndarray:
    """
    One interest vector per history: the backbone's state after the last event, the mean state over the history, or
    the long-term interest after the last event (models with `config.long_term_interest`: the attention-pooled
    profile of the whole history, steadier than the last state).

    Args:
        model: `InterestModel` or `InterestForNextItemPrediction`.
        tokenizer: the model's `ItemTokenizer` (histories are raw item ids, oldest first; the newest
            `max_position_embeddings` events are read).
        histories: one list of raw item ids per user.
        timestamps (*optional*): event times in integer seconds, shaped like `histories`.
        pooling (`str`): `"last"`, `"mean"` or `"long_term"`.
        batch_size (`int`): users per forward pass.

    Returns:
        `np.ndarray` of shape `(num_users, hidden_size)`, float32. An empty history gives the zero vector.
    """
    if pooling not in ("last", "mean", "long_term"):
        raise ValueError(f"pooling must be 'last', 'mean' or 'long_term', got {pooling!r}.")
    config = _backbone(model).config
    if pooling == "long_term" and not config.long_term_interest:
        raise ValueError("pooling='long_term' needs a model trained with long_term_interest=True.")
    output = "long_term_interest" if pooling == "long_term" else "last_hidden_state"
    out = np.zeros((len(histories), config.hidden_size), dtype=np.float32)
    for start, batch, states in _state_batches(model, tokenizer, histories, timestamps, batch_size, output):
        if states.shape[1] == 0:
            continue
        mask = batch["attention_mask"].unsqueeze(-1).float()
        if pooling in ("last", "long_term"):
            pooled = states[:, -1] * mask[:, -1]  # left padding: the newest event is the last column
        else:
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out[start : start + len(states)] = pooled.cpu().numpy()
    return out


@dataclass
class InterestTrajectory:
    """
    A user's interest state after every event read.

    Attributes:
        states: `(T, hidden_size)` float32: `states[t]` is u_t, the backbone's state after event `t` of the events
            read (it depends on those events up to `t` only).
        item_ids: the raw item ids of the `T` events read, oldest first.
        input_ids: `(T,)` their vocabulary indices (`[UNK]` for items the vocabulary does not know).
        timestamps: `(T,)` their times in integer seconds, or `None` when none were given.
        num_truncated: older events not read: the history was longer than `max_position_embeddings`, and the newest
            events are read, as `recommend` does.
        num_unknown: events read whose item is not in the vocabulary (they enter the model as `[UNK]`).
        user_id: the user, when known.
    """

    states: np.ndarray
    item_ids: list[str]
    input_ids: np.ndarray
    timestamps: np.ndarray | None = None
    num_truncated: int = 0
    num_unknown: int = 0
    user_id: str | None = None

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def positions(self) -> np.ndarray:
        """`(T,)` the index of each event read in the user's whole history (0 is their first event)."""
        return np.arange(self.num_truncated, self.num_truncated + len(self), dtype=np.int64)


def interest_trajectories(
    model,
    tokenizer,
    histories: Sequence[Sequence],
    timestamps: Sequence[Sequence[int]] | None = None,
    user_ids: Sequence | None = None,
    batch_size: int = 64,
) -> list[InterestTrajectory]:
    """
    The interest trajectories of many users, in batched forward passes (see `interest_trajectory`).

    Args:
        model: `InterestModel` or `InterestForNextItemPrediction` (put into eval mode for the call, then restored).
        tokenizer: the model's `ItemTokenizer`.
        histories: one list of raw item ids per user, oldest first.
        timestamps (*optional*): event times in integer seconds, shaped like `histories`.
        user_ids (*optional*): aligned with `histories`, recorded in the trajectories.
        batch_size (`int`): users per forward pass.

    Returns:
        a list of `InterestTrajectory`, aligned with `histories`.
    """
    if user_ids is not None and len(user_ids) != len(histories):
        raise ValueError(f"user_ids has {len(user_ids)} entries for {len(histories)} histories: give one per history.")
    unk = tokenizer.unk_token_id
    trajectories = []
    for start, batch, states in _state_batches(model, tokenizer, histories, timestamps, batch_size):
        states = states.cpu().numpy()
        for row in range(len(states)):
            index = start + row
            history = [str(item) for item in histories[index]]
            length = int(batch["attention_mask"][row].sum()) if states.shape[1] else 0
            width = states.shape[1]
            input_ids = batch["input_ids"][row, width - length :].cpu().numpy().astype(np.int64)
            times = None
            if timestamps is not None:
                times = batch["timestamps"][row, width - length :].cpu().numpy().astype(np.int64)
            trajectories.append(
                InterestTrajectory(
                    states=np.ascontiguousarray(states[row, width - length :], dtype=np.float32),
                    item_ids=history[len(history) - length :],
                    input_ids=input_ids,
                    timestamps=times,
                    num_truncated=len(history) - length,
                    num_unknown=int((input_ids == unk).sum()),
                    user_id=None if user_ids is None else str(user_ids[index]),
                )
            )
    return trajectories


def interest_trajectory(
    model, tokenizer, history: Sequence, timestamps: Sequence[int] | None = None, user_id=None
) -> InterestTrajectory:
    """
    The interest state after every event of one user's history: one forward pass of the causal backbone.

    `states[t]` equals the backbone's `last_hidden_state` at event `t` of a forward pass over the same history, and
    does not depend on the events after `t`. A history longer than `max_position_embeddings` is read from its newest
    `max_position_embeddings` events (`num_truncated` says how many older ones were left out); unknown items are
    read as `[UNK]` and counted in `num_unknown`.

    Args:
        model: `InterestModel` or `InterestForNextItemPrediction`.
        tokenizer: the model's `ItemTokenizer`.
        history: raw item ids, oldest first.
        timestamps (*optional*): their times in integer seconds.
        user_id (*optional*): recorded in the trajectory.

    Returns:
        `InterestTrajectory`.
    """
    if isinstance(history, str):
        raise ValueError("history must be a list of raw item ids, got a single string: wrap it, [item_id].")
    if timestamps is not None and len(timestamps) != len(history):
        raise ValueError(f"timestamps has {len(timestamps)} values for {len(history)} events: give one per event.")
    return interest_trajectories(
        model,
        tokenizer,
        [list(history)],
        None if timestamps is None else [list(timestamps)],
        user_ids=None if user_id is None else [user_id],
    )[0]


def shuffled_trajectories(
    model, tokenizer, trajectories: Sequence[InterestTrajectory], seed: int = 0, batch_size: int = 64
) -> list[InterestTrajectory]:
    """
    The reference for drift: the trajectories of the same events in a random order, each event's time kept in its
    place (so the time windows and time gaps do not change, only which item came when). Drift measured on these is
    what the model shows when the order of the events carries no information.

    Args:
        model, tokenizer: the model the trajectories came from.
        trajectories: the trajectories to shuffle (repeat one to draw several permutations of it).
        seed (`int`): seed of the permutations (one generator, so repeated trajectories get different orders).
        batch_size (`int`): users per forward pass.

    Returns:
        a list of `InterestTrajectory`, aligned with `trajectories`, over the events they read (`num_truncated`
        carried over).
    """
    rng = np.random.default_rng(seed)
    histories, times = [], []
    for trajectory in trajectories:
        order = rng.permutation(len(trajectory))
        histories.append([trajectory.item_ids[i] for i in order])
        times.append(None if trajectory.timestamps is None else trajectory.timestamps.tolist())
    has_times = [t is not None for t in times]
    if any(has_times) and not all(has_times):
        raise ValueError("Either every trajectory or none must have timestamps to shuffle them in one batch.")
    shuffled = interest_trajectories(
        model,
        tokenizer,
        histories,
        times if all(has_times) and times else None,
        user_ids=[t.user_id for t in trajectories],
        batch_size=batch_size,
    )
    for original, new in zip(trajectories, shuffled):
        new.num_truncated = original.num_truncated
    return shuffled


@dataclass
class InterestDrift:
    """
    How far a trajectory's mean interest state moves from window to window.

    Attributes:
        unit: `"events"` (windows of `size` consecutive events) or `"seconds"` (windows of `size` seconds).
        size: the window size in events or seconds.
        starts, ends: `(W,)` each window's events are those at positions `starts[w] <= p < ends[w]` of the user's
            whole history (see `InterestTrajectory.positions`).
        num_events: `(W,)` events per window. With event windows the last one may be shorter than `size`.
        start_times, end_times: `(W,)` with time windows, the window `[start, end)` in seconds; with event windows,
            the times of the first and the last event of the window; `None` without timestamps.
        drift: `(W,)` cosine distance between the mean state of window `w` and of window `w - 1` (NaN for the first):
            0 when they point the same way, 1 when orthogonal, at most 2.
        drift_from_first: `(W,)` cosine distance between the mean state of window `w` and of the first window.
        means: `(W, hidden_size)` the mean state of each window.
        empty_windows: time windows with no event between the first and the last event; they have no mean state,
            so they are left out and the drift of the next window is measured from the last window with events.
        user_id: the user, when known.
    """

    unit: str
    size: int
    starts: np.ndarray
    ends: np.ndarray
    num_events: np.ndarray
    start_times: np.ndarray | None
    end_times: np.ndarray | None
    drift: np.ndarray
    drift_from_first: np.ndarray
    means: np.ndarray
    empty_windows: int = 0
    user_id: str | None = None

    def __len__(self) -> int:
        return len(self.drift)


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return 1.0 - (a * b).sum(1) / norms


def interest_drift(
    trajectory: InterestTrajectory, window: int | None = None, window_seconds: int | None = None
) -> InterestDrift:
    """
    Cuts a trajectory into consecutive windows and measures the cosine distance between their mean interest states.

    Give exactly one of `window` (consecutive windows of that many events from the first event read; the last one
    keeps the remainder) and `window_seconds` (consecutive windows of that many seconds from the first event's time;
    windows with no event are left out and counted in `empty_windows`).

    Args:
        trajectory: from `interest_trajectory`.
        window (`int`, *optional*): events per window.
        window_seconds (`int`, *optional*): seconds per window (needs timestamps).

    Returns:
        `InterestDrift`.
    """
    if (window is None) == (window_seconds is None):
        raise ValueError("Give exactly one of window (events per window) or window_seconds (seconds per window).")
    size = window if window is not None else window_seconds
    name = "window" if window is not None else "window_seconds"
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{name} must be a positive integer, got {size!r}.")
    if len(trajectory) == 0:
        raise ValueError("The trajectory has no events: drift needs at least one event.")
    times = trajectory.timestamps
    if window is not None:
        bounds = np.arange(0, len(trajectory), window)
        ends = np.minimum(bounds + window, len(trajectory))
        empty = 0
        start_times = None if times is None else times[bounds]
        end_times = None if times is None else times[ends - 1]
    else:
        if times is None:
            raise ValueError("window_seconds needs timestamps: build the trajectory with timestamps, or use window.")
        if np.any(np.diff(times) < 0):
            raise ValueError("The trajectory's timestamps are not sorted: sort the history by time first.")
        grid = (times - times[0]) // window_seconds  # the window of each event
        used, bounds = np.unique(grid, return_index=True)
        ends = np.append(bounds[1:], len(trajectory))
        empty = int(used[-1] + 1 - len(used))
        start_times = times[0] + used * window_seconds
        end_times = start_times + window_seconds
    means = np.stack([trajectory.states[s:e].mean(0) for s, e in zip(bounds, ends)]).astype(np.float32)
    drift = np.full(len(means), np.nan)
    drift[1:] = _cosine_distance(means[1:], means[:-1])
    from_first = _cosine_distance(means, means[:1])
    from_first[0] = 0.0
    return InterestDrift(
        unit="events" if window is not None else "seconds",
        size=int(size),
        starts=bounds.astype(np.int64) + trajectory.num_truncated,
        ends=ends.astype(np.int64) + trajectory.num_truncated,
        num_events=(ends - bounds).astype(np.int64),
        start_times=start_times,
        end_times=end_times,
        drift=drift,
        drift_from_first=from_first,
        means=means,
        empty_windows=empty,
        user_id=trajectory.user_id,
    )


def drift_by_window(drifts: Sequence[InterestDrift]) -> list[dict]:
    """
    Averages drift over users, window by window (window `w` is each user's `w`-th window).

    Args:
        drifts: from `interest_drift`, one per user, with the same windowing.

    Returns:
        one dict per window index: `window`, `users` (users with that window), `drift` (mean over them; NaN for
        window 0), `drift_std`, `drift_from_first`.
    """
    if not drifts:
        raise ValueError("drifts is empty: give one InterestDrift per user.")
    if len({(d.unit, d.size) for d in drifts}) > 1:
        raise ValueError("The drifts use different windows: measure every user with the same window.")
    rows = []
    for w in range(max(len(d) for d in drifts)):
        drift = np.array([d.drift[w] for d in drifts if len(d) > w])
        from_first = np.array([d.drift_from_first[w] for d in drifts if len(d) > w])
        rows.append(
            {
                "window": w,
                "users": len(drift),
                "drift": float(drift.mean()) if w else float("nan"),
                "drift_std": float(drift.std()) if w else float("nan"),
                "drift_from_first": float(from_first.mean()),
            }
        )
    return rows


def category_distribution(
    item_probs: np.ndarray | torch.Tensor, item_ids: Sequence, item_categories: Mapping
) -> tuple[np.ndarray, list[str], int]:
    """
    Sums a distribution over items into one over their categories. An item with several categories gives each an
    equal share of its mass; an item without any (or missing from `item_categories`) gives its mass to
    `"(no category)"`, a column present only when such items exist, so rows still sum to what they summed to.

    Args:
        item_probs: `(..., num_items)` probabilities, aligned with `item_ids`.
        item_ids: the raw item id of each column.
        item_categories: raw item id -> list of categories (a single string is one category), e.g.
            `dict(zip(data.items["item_id"], data.items["categories"]))`.

    Returns:
        `(probs, categories, num_items_without_category)`: `probs` is `(..., num_categories)` float64, columns in
        the order of `categories` (sorted by name, `"(no category)"` last).
    """
    item_probs = torch.as_tensor(np.asarray(item_probs) if not torch.is_tensor(item_probs) else item_probs)
    if item_probs.shape[-1] != len(item_ids):
        raise ValueError(f"item_probs has {item_probs.shape[-1]} columns for {len(item_ids)} item_ids.")
    lists = []
    for item in item_ids:
        categories = item_categories.get(str(item), item_categories.get(item))
        if isinstance(categories, str):
            categories = [categories]
        lists.append(list(dict.fromkeys(str(c) for c in (categories or []))))
    names = sorted({c for cats in lists for c in cats})
    without = sum(1 for cats in lists if not cats)
    if without:
        names.append(NO_CATEGORY)
    column = {name: i for i, name in enumerate(names)}
    item_index, category_index, weight = [], [], []
    for i, cats in enumerate(lists):
        cats = cats or [NO_CATEGORY]
        for c in cats:
            item_index.append(i)
            category_index.append(column[c])
            weight.append(1.0 / len(cats))
    probs = item_probs.to(torch.float64)
    shares = probs[..., item_index] * torch.tensor(weight, dtype=torch.float64, device=probs.device)  # (..., nnz)
    out = torch.zeros(*probs.shape[:-1], len(names), dtype=torch.float64, device=probs.device)
    out.index_add_(out.dim() - 1, torch.tensor(category_index, device=probs.device), shares)
    return out.cpu().numpy(), names, without


@dataclass
class CategoryInterests:
    """
    A user's predicted interest in each category after every event.

    Attributes:
        probs: `(T, num_categories)`: `probs[t, c]` is the next-item probability mass (after event `t`) on items of
            category `c`; rows sum to 1.
        categories: the column names.
        positions, item_ids, timestamps: of the events, from the trajectory.
        exclude_seen: whether items seen up to each step were removed from the next-item distribution.
        items_without_category: vocabulary items with no category (their mass is in `"(no category)"`).
        user_id: the user, when known.
    """

    probs: np.ndarray
    categories: list[str]
    positions: np.ndarray
    item_ids: list[str]
    timestamps: np.ndarray | None = None
    exclude_seen: bool = False
    items_without_category: int = 0
    user_id: str | None = None

    def top(self, step: int = -1, n: int = 3) -> list[tuple[str, float]]:
        """The `n` categories with the most mass after event `step` (default: the last), with their mass."""
        row = self.probs[step]
        return [(self.categories[c], float(row[c])) for c in np.argsort(-row, kind="stable")[:n]]


@torch.no_grad()
def category_interests(
    model,
    tokenizer,
    trajectory: InterestTrajectory,
    item_categories: Mapping,
    exclude_seen: bool = False,
) -> CategoryInterests:
    """
    The predicted category-interest distribution after every event of a trajectory: the next-item distribution
    (softmax of the model's next-item logits over the real items, special tokens left out) with its mass summed per
    category (see `category_distribution`: an item with several categories splits its mass equally).

    The logits come from the model's own forward pass over the trajectory's events, so any head (tied, LoRA-adapted,
    or replaced through peft's `modules_to_save`) is used as it is for recommending.

    Args:
        model: `InterestForNextItemPrediction` (a model with a next-item head), the one the trajectory came from.
        tokenizer: its `ItemTokenizer` (maps vocabulary columns back to raw item ids).
        trajectory: from `interest_trajectory`.
        item_categories: raw item id -> list of categories, e.g. `dict(zip(items["item_id"], items["categories"]))`
            (an items table with those columns is accepted too).
        exclude_seen (`bool`, defaults to `False`): by default every item keeps its mass, seen ones included: the
            question is what the user is interested in, and a seen item still says so. With `True`, the items seen
            up to each step are removed and the rest renormalised: the distribution the recommender ranks from.

    Returns:
        `CategoryInterests`, rows summing to 1.
    """
    if hasattr(item_categories, "column_names"):  # an items table
        if not {"item_id", "categories"} <= set(item_categories.column_names):
            raise ValueError("item_categories as a table needs item_id and categories columns (BehaviorData.items).")
        item_categories = dict(zip(map(str, item_categories["item_id"]), item_categories["categories"]))
    if not isinstance(item_categories, Mapping):
        raise ValueError("item_categories must map raw item ids to lists of categories.")
    if len(trajectory) == 0:
        raise ValueError("The trajectory has no events: there is no prediction to describe.")
    device = next(model.parameters()).device
    input_ids = torch.as_tensor(trajectory.input_ids, device=device)[None, :]  # (1, T)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if trajectory.timestamps is not None:
        inputs["timestamps"] = torch.as_tensor(trajectory.timestamps, device=device)[None, :]
    was_training = model.training
    model.eval()
    try:
        output = model(**inputs, return_dict=True)
    finally:
        model.train(was_training)
    logits = getattr(output, "logits", None)
    if logits is None:
        raise ValueError(
            "category_interests needs a model with a next-item head (InterestForNextItemPrediction), not the backbone."
        )
    if not torch.allclose(output.last_hidden_state[0].float().cpu(), torch.from_numpy(trajectory.states), atol=1e-3):
        raise ValueError("The trajectory was not computed by this model: build it with the same model.")
    logits = logits[0].float()  # (T, N)
    if logits.shape[-1] != len(tokenizer):
        raise ValueError(
            f"The model scores {logits.shape[-1]} items but the tokenizer has {len(tokenizer)}: use the model's own "
            "item vocabulary."
        )
    if not torch.isfinite(logits).all():
        raise ValueError("The model's next-item logits contain NaN or inf: check the model and its inputs.")
    num_special = tokenizer.num_special_tokens
    if exclude_seen:
        seen = torch.zeros_like(logits, dtype=torch.bool)
        seen[torch.arange(len(logits)), input_ids[0]] = True
        seen = seen.cumsum(0) > 0  # seen up to and including each step
        logits = logits.masked_fill(seen, float("-inf"))
    logits = logits[:, num_special:]
    if torch.isinf(logits).all(dim=1).any():
        raise ValueError("Every item was seen by some step: there is no unseen item left; use exclude_seen=False.")
    item_probs = logits.double().softmax(dim=-1)  # (T, N - special), float64 so that rows sum to 1 to 1e-12
    probs, categories, without = category_distribution(item_probs, tokenizer.items, item_categories)
    return CategoryInterests(
        probs=probs,
        categories=categories,
        positions=trajectory.positions,
        item_ids=list(trajectory.item_ids),
        timestamps=trajectory.timestamps,
        exclude_seen=exclude_seen,
        items_without_category=without,
        user_id=trajectory.user_id,
    )


def _utc(seconds) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc)


def plot_category_interests(
    result: CategoryInterests,
    path: str | Path | None = None,
    top: int = 8,
    x: str = "event",
    drift: InterestDrift | None = None,
    drift_reference: np.ndarray | None = None,
    title: str | None = None,
):
    """
    Stacked area of a user's predicted category interests over their events: the `top` categories with the most
    mean mass, the rest summed as "other". With `drift`, a panel below shows the drift of each window (at its last
    event), and `drift_reference` (e.g. the mean drift of shuffled trajectories) as a dashed line.

    Args:
        result: from `category_interests`.
        path (*optional*): where to save a PNG.
        top (`int`): categories shown by name.
        x (`str`): `"event"` (the event's number in the user's history) or `"time"` (needs timestamps).
        drift (*optional*): from `interest_drift` on the same trajectory.
        drift_reference (*optional*): `(W,)` reference drift per window.
        title (*optional*): the figure title.

    Returns:
        the matplotlib `Figure`.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}.")
    if x not in ("event", "time"):
        raise ValueError(f"x must be 'event' or 'time', got {x!r}.")
    if x == "time" and result.timestamps is None:
        raise ValueError("x='time' needs timestamps: build the trajectory with timestamps, or use x='event'.")
    if drift is not None and (drift.starts[0] != result.positions[0] or drift.ends[-1] != result.positions[-1] + 1):
        raise ValueError("drift and result come from different trajectories: measure both on the same one.")
    if drift_reference is not None and (drift is None or len(drift_reference) != len(drift)):
        raise ValueError("drift_reference needs a drift and one value per drift window.")
    plt = headless_pyplot()
    mean = result.probs.mean(0)
    order = np.argsort(-mean, kind="stable")
    shown = [c for c in order if result.categories[c] != NO_CATEGORY][:top]
    rest = np.ones(len(result.categories), dtype=bool)
    rest[shown] = False
    layers = [result.probs[:, c] for c in shown]
    labels = [result.categories[c] for c in shown]
    if rest.any():
        layers.append(result.probs[:, rest].sum(1))
        labels.append("other")
    if x == "event":
        xs = result.positions + 1
    else:
        xs = [_utc(t) for t in result.timestamps]

    rows = 2 if drift is not None else 1
    fig, axes = plt.subplots(
        rows, 1, figsize=(9, 4.5 if rows == 1 else 6), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [3, 1][:rows]},
    )  # fmt: skip
    ax = axes[0, 0]
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(shown))] + ["0.8"] * (len(layers) - len(shown))
    ax.stackplot(xs, *layers, labels=labels, colors=colors, alpha=0.9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("next-item mass per category")
    seen = "seen items excluded" if result.exclude_seen else "seen items kept"
    user = f"user {result.user_id}: " if result.user_id is not None else ""
    ax.set_title(title or f"{user}predicted category interests after each event ({seen})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if drift is not None:
        dax = axes[1, 0]
        last = drift.ends - 1  # the window's last event, as a position in the history
        if x == "event":
            dx = last + 1
        else:
            if drift.end_times is None:
                raise ValueError("x='time' needs a drift measured on a trajectory with timestamps.")
            index = np.searchsorted(result.positions, last)
            dx = [_utc(result.timestamps[i]) for i in index]
        dax.plot(dx, drift.drift, "o-", color="C3", label="drift from the previous window")
        if drift_reference is not None:
            dax.plot(dx, drift_reference, "x--", color="0.4", label="same events, shuffled order")
        for start in drift.starts[1:]:  # window boundaries, in both panels
            where = start + 0.5 if x == "event" else _utc(result.timestamps[np.searchsorted(result.positions, start)])
            for panel in (ax, dax):
                panel.axvline(where, color="0.3", linewidth=0.8, linestyle=":")
        dax.set_ylabel("cosine distance")
        dax.set_ylim(bottom=0)
        dax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        unit = "events" if drift.unit == "events" else "s"
        dax.set_title(f"drift of the mean interest state, windows of {drift.size} {unit}", fontsize=9)
    axes[-1, 0].set_xlabel("event number in the user's history" if x == "event" else "time (UTC)")
    if x == "time":
        fig.autofmt_xdate()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


__all__ = [
    "NO_CATEGORY",
    "CategoryInterests",
    "InterestDrift",
    "InterestTrajectory",
    "category_distribution",
    "category_interests",
    "drift_by_window",
    "interest_drift",
    "interest_trajectories",
    "interest_trajectory",
    "interest_vectors",
    "plot_category_interests",
    "shuffled_trajectories",
]
