"""Explanations: which past events drove a recommendation, a click score or an interest forecast, and whether that
is true.

The model keeps no user embedding: a user *is* their history. "The same user without these events" is therefore
one exact forward pass over the remaining events (their time gaps recomputed from their own timestamps), not an
approximation, and every explanation here can be checked by re-running the model:

- `explain(model, tokenizer, history, ...)` attributes the explained score to each past event with one of `METHODS`:
  - `"integrated_gradients"`: Sundararajan et al., 2017 (https://arxiv.org/abs/1703.01365), with captum, along the
    straight path from zero item vectors (the padding item) to the history's item vectors; positions, time gaps and
    the attention mask stay as they are. The attributions of an event are summed over the hidden units, so they
    add up to `score(history) - score(zero items)` up to the integral's error (`diagnostics["completeness_gap"]`).
  - `"leave_one_out"`: `score(history) - score(history without event j)`, one pass per event, batched.
  - `"interest_weights"`: the model's own weights at the last step: the long-term event weights, the short-term
    window weights and the gate g between them, mixed as the model mixes the parts (`g * long + (1 - g) * short`).
  - `"attention"`: the last transformer layer's attention from the last event, averaged over heads.
  - `"recency"` and `"random"`: the baselines every method is compared with by the same code.
- `counterfactual(...)`: the smallest set of the user's own events (found greedily, as PRINCE does, Ghazimatin et
  al., 2020, https://arxiv.org/abs/1911.08378) whose removal changes the top-1 recommendation (or the top forecast
  category, or the click decision), verified by re-running the model through its public API.
- `faithfulness(...)`: deletion and insertion curves, comprehensiveness and sufficiency (DeYoung et al., 2020,
  "ERASER", https://arxiv.org/abs/1911.03429) and the share of draws where deleting the top-k events lowers the score
  more than deleting k random ones; the numbers are computed in `hf_interest.metrics.faithfulness`.
- `category_attributions(...)`: the attributions of an explanation summed by the categories of the events.

What is explained: for a next-item model, the logit of an item after the history (by default the top-1
recommendation, seen items excluded); for a click model, the click logit of a candidate item; for a forecasting
model, the log-probability of a category among the next events (by default the most likely one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .metrics.faithfulness import curve_auc, faithfulness_summary

METHODS = ("integrated_gradients", "leave_one_out", "interest_weights", "attention", "recency", "random")
"""Attribution methods of `explain`; the last two are baselines."""

HEADS = ("next_item", "click", "forecast")


@dataclass
class Explanation(ModelOutput):
    """
    Why a model gave one history its score, event by event.

    Args:
        attributions (`torch.FloatTensor` of shape `(num_events,)`): one number per past event, oldest first; higher
            means the event raised the explained score more.
        events (`list` of `dict`): the events, oldest first: `item_id` (raw id), `timestamp` (or None), `position`
            (0 = oldest) and `attribution`.
        target (`str`): what is explained: a raw item id (next item, click) or a category name (forecast).
        target_index (`int`): its vocabulary or category index.
        score (`float`): the explained score with the whole history (a logit, or a log-probability for a forecast).
        method (`str`): one of `METHODS`.
        head (`str`): `"next_item"`, `"click"` or `"forecast"`.
        diagnostics (`dict`): the method's own numbers (e.g. the integrated-gradients completeness gap, the gate).
    """

    attributions: torch.FloatTensor | None = None
    events: list | None = None
    target: str | None = None
    target_index: int | None = None
    score: float | None = None
    method: str | None = None
    head: str | None = None
    diagnostics: dict | None = None

    def top(self, k: int = 3) -> list[dict]:
        """The `k` events with the highest attributions, highest first (ties: newest first)."""
        return _top_events(self.events, k)


def _top_events(events: list[dict], k: int) -> list[dict]:
    """The `k` events with the highest attributions, highest first (ties: newest first)."""
    return sorted(events, key=lambda event: (event["attribution"], event["position"]), reverse=True)[:k]


@dataclass
class Counterfactual(ModelOutput):
    """
    The smallest set of the user's own events (found greedily) whose removal changes the model's decision.

    Args:
        removed (`list` of `dict`): the removed events (`item_id`, `timestamp`, `position`), in the order removed;
            empty with `found=False` when no set of at most `max_size` events changes the decision.
        found (`bool`): whether the decision changed.
        verified (`bool`): whether re-running the model (for a next-item model, `recommend` itself) on the history
            without the removed events gives a different decision.
        original (`str`): the decision with the whole history (top-1 raw item id, top category, or "click"/"no click").
        new (`str`): the decision without the removed events (None when not found).
        size (`int`): `len(removed)`.
    """

    removed: list | None = None
    found: bool | None = None
    verified: bool | None = None
    original: str | None = None
    new: str | None = None
    size: int | None = None


# ----------------------------------------------------------------------------------------------------------------
# The explained score of each head, as a function of the history's item vectors.


class _Scorer:
    """The explained score of one head: `vectors(ids)` gives the item vectors integrated gradients interpolates;
    `full(...)` the scores of every candidate (items, categories) or of the given click candidates."""

    head = ""

    def __init__(self, model):
        self.model = model
        self.config = model.config

    def vectors(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.item_representations(input_ids)

    def backbone(self, vectors, attention_mask, timestamps, **kwargs):
        return self.model.model(
            inputs_embeds=vectors, attention_mask=attention_mask, timestamps=timestamps, return_dict=True, **kwargs
        )

    def scores(self, vectors, input_ids, attention_mask, timestamps, targets) -> torch.Tensor:
        """`(B, K)`: the explained score of each of the `K` targets of each row."""
        return self.full(vectors, input_ids, attention_mask, timestamps, targets).gather(1, targets)

    def probabilities(self, vectors, input_ids, attention_mask, timestamps, targets) -> torch.Tensor:
        raise NotImplementedError

    def decisions(self, full: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
        if excluded is not None:
            full = full.masked_fill(excluded, float("-inf"))
        return full.argmax(dim=1)

    def margins(self, full: torch.Tensor, decision: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
        """How far each row's decision is ahead of the best other choice (negative: it changed)."""
        chosen = full.gather(1, decision[:, None])[:, 0]
        others = full.scatter(1, decision[:, None], float("-inf"))
        if excluded is not None:
            others = others.masked_fill(excluded, float("-inf"))
        return chosen - others.amax(dim=1)


class _NextItemScorer(_Scorer):
    head = "next_item"

    def full(self, vectors, input_ids, attention_mask, timestamps, targets=None) -> torch.Tensor:
        states = self.backbone(vectors, attention_mask, timestamps, states_to_keep=1).last_hidden_state[:, -1]
        # left padded: the last column is the newest event kept (the transition prior's row, if the model has one)
        logits = self.model.item_logits(states, previous_items=input_ids[:, -1]).float()
        logits[:, : self.config.num_special_tokens] = float("-inf")
        return logits

    def probabilities(self, vectors, input_ids, attention_mask, timestamps, targets) -> torch.Tensor:
        full = self.full(vectors, input_ids, attention_mask, timestamps)
        return full.softmax(dim=1).gather(1, targets)


class _ForecastScorer(_Scorer):
    head = "forecast"

    def vectors(self, input_ids: torch.Tensor) -> torch.Tensor:
        categories = self.model.item_category_weights[input_ids]
        return self.model.model.item_representations(input_ids) + self.model.category_input(
            categories.to(self.model.category_input.weight.dtype)
        )

    def full(self, vectors, input_ids, attention_mask, timestamps, targets=None) -> torch.Tensor:
        output = self.model(
            input_ids=input_ids, attention_mask=attention_mask, timestamps=timestamps, inputs_embeds=vectors
        )
        return output.logits[:, -1].float()  # log-probabilities of the categories

    def probabilities(self, vectors, input_ids, attention_mask, timestamps, targets) -> torch.Tensor:
        return self.full(vectors, input_ids, attention_mask, timestamps).exp().gather(1, targets)


class _ClickScorer(_Scorer):
    head = "click"

    def full(self, vectors, input_ids, attention_mask, timestamps, targets) -> torch.Tensor:
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            timestamps=timestamps,
            candidate_ids=targets,
            inputs_embeds=vectors,
        )
        return output.logits.float()  # (B, K), one column per candidate

    def scores(self, vectors, input_ids, attention_mask, timestamps, targets) -> torch.Tensor:
        return self.full(vectors, input_ids, attention_mask, timestamps, targets)

    def probabilities(self, vectors, input_ids, attention_mask, timestamps, targets) -> torch.Tensor:
        return torch.sigmoid(self.full(vectors, input_ids, attention_mask, timestamps, targets))

    def decisions(self, full, excluded):
        return (full[:, 0] > 0).long()

    def margins(self, full, decision, excluded):
        return torch.where(decision.bool(), full[:, 0], -full[:, 0])


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _scorer(model) -> _Scorer:
    model = _unwrap(model)
    if hasattr(model, "recommend"):
        return _NextItemScorer(model)
    if hasattr(model, "forecast"):
        return _ForecastScorer(model)
    if hasattr(model, "click_mlp_in"):
        return _ClickScorer(model)
    raise TypeError(
        f"explain needs an interest model with a head (next item, click or forecast), got {type(model).__name__}."
    )


# ----------------------------------------------------------------------------------------------------------------
# Histories in, rows of sub-histories out.


@dataclass
class _History:
    """One user's history as the model reads it (the newest `max_position_embeddings` events): vocabulary indices and
    timestamps, oldest first; `seen_ids`, the items of every event given, which a recommendation excludes."""

    raw_items: list[str]
    input_ids: torch.Tensor  # (T,)
    timestamps: torch.Tensor | None  # (T,)
    seen_ids: torch.Tensor  # (events given,)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    def event(self, position: int) -> dict:
        time = int(self.timestamps[position]) if self.timestamps is not None else None
        return {"item_id": self.raw_items[position], "timestamp": time, "position": position}

    def events(self, attributions: torch.Tensor) -> list[dict]:
        times = self.timestamps.tolist() if self.timestamps is not None else [None] * self.length
        return [
            {"item_id": item, "timestamp": time, "position": position, "attribution": float(value)}
            for position, (item, time, value) in enumerate(zip(self.raw_items, times, attributions.tolist()))
        ]


def _encode_history(tokenizer, config, history, timestamps, index: int | None = None) -> _History:
    where = f"history {index}" if index is not None else "the history"
    if isinstance(history, Mapping):
        if "items" not in history:
            raise ValueError(f"{where}: a history dict needs an 'items' key (and optionally 'timestamps').")
        history, timestamps = history["items"], history.get("timestamps", timestamps)
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise ValueError(f"{where} must be a list of raw item ids (oldest first), got {type(history).__name__}.")
    items = [str(item) for item in history]
    if not items:
        raise ValueError(f"{where} is empty: there are no past events to explain a score by.")
    vocabulary = tokenizer.get_vocab()
    unknown = [item for item in items if item not in vocabulary or vocabulary[item] < config.num_special_tokens]
    if unknown:
        shown = ", ".join(repr(item) for item in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ValueError(
            f"{where}: {len(unknown)} of {len(items)} items are not in the model's vocabulary ({shown}). An event the "
            "model reads as [UNK] cannot be explained as that item: remove it, or add the item first "
            "(model.add_items with its text, for a text-tower model)."
        )
    input_ids = torch.tensor([vocabulary[item] for item in items], dtype=torch.long)
    times = None
    if timestamps is not None:
        if len(timestamps) != len(items):
            raise ValueError(f"{where}: {len(timestamps)} timestamps for {len(items)} items; give one per event.")
        try:
            times = torch.tensor([int(value) for value in timestamps], dtype=torch.long)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: timestamps must be integer seconds ({error}).") from None
        if (times[1:] < times[:-1]).any():
            raise ValueError(f"{where}: timestamps must not decrease; list the events oldest first.")
    # The model reads the newest max_len events, so those are what is explained; every event given stays seen.
    newest = config.max_position_embeddings
    kept_times = times[-newest:] if times is not None else None
    return _History(items[-newest:], input_ids[-newest:], kept_times, seen_ids=input_ids)


def _sub_histories(histories: list[_History], keeps: list[torch.Tensor], pad_id: int, device) -> tuple:
    """
    Rows of sub-histories: `keeps[u]` `(R_u, T_u)` says which of user u's events each row keeps. The kept events move
    to the right end (left padding) in their order, with their own timestamps, so the time gaps and positions are
    recomputed as if the removed events had never happened. Returns `(input_ids, attention_mask, timestamps)`.
    """
    width = max(max(int(keep.sum(dim=1).max()) if keep.numel() else 0 for keep in keeps), 1)
    ids_rows, mask_rows, time_rows = [], [], []
    with_times = all(history.timestamps is not None for history in histories)
    for history, keep in zip(histories, keeps):
        keep = keep.bool()
        rows = keep.shape[0]
        order = keep.long().argsort(dim=1, stable=True)
        mask = keep.gather(1, order)
        ids = history.input_ids.expand(rows, -1).gather(1, order).masked_fill(~mask, pad_id)
        pad = max(width - history.length, 0)
        ids_rows.append(torch.nn.functional.pad(ids, (pad, 0), value=pad_id)[:, -width:])
        mask_rows.append(torch.nn.functional.pad(mask, (pad, 0), value=False)[:, -width:])
        if with_times:
            times = history.timestamps.expand(rows, -1).gather(1, order).masked_fill(~mask, 0)
            time_rows.append(torch.nn.functional.pad(times, (pad, 0), value=0)[:, -width:])
    timestamps = torch.cat(time_rows).to(device) if with_times else None
    return torch.cat(ids_rows).to(device), torch.cat(mask_rows).long().to(device), timestamps


ROWS_TIMES_CANDIDATES = 1 << 24
"""At most this many rows x candidates of scores at once (64 MiB of float32): a chunk of sub-histories, or of
integrated-gradients steps, is cut so that a large catalogue never needs a larger score matrix."""


def _candidates(scorer) -> int:
    if scorer.head == "next_item":
        return scorer.config.num_items
    return scorer.config.num_categories if scorer.head == "forecast" else 1


def _chunk_rows(scorer) -> int:
    return max(1, min(256, ROWS_TIMES_CANDIDATES // _candidates(scorer)))


@torch.no_grad()
def _over_rows(scorer, histories, keeps, targets, function) -> torch.Tensor:
    """`function(vectors, input_ids, attention_mask, timestamps, targets)` on every sub-history row of every user,
    in chunks; `targets[u]` `(1, K)` are user u's targets. Returns the rows' results, concatenated, on the CPU."""
    input_ids, attention_mask, timestamps = _sub_histories(
        histories, keeps, scorer.config.pad_token_id, _device(scorer.model)
    )
    row_targets = torch.cat([target.expand(keep.shape[0], -1) for keep, target in zip(keeps, targets)])
    row_targets = row_targets.to(input_ids.device)
    values, chunk_size = [], _chunk_rows(scorer)
    for start in range(0, input_ids.shape[0], chunk_size):
        window = slice(start, start + chunk_size)
        ids, mask = input_ids[window], attention_mask[window]
        times = timestamps[window] if timestamps is not None else None
        values.append(function(scorer.vectors(ids), ids, mask, times, row_targets[window]).float().cpu())
    return torch.cat(values)


def _row_values(scorer, histories, keeps, targets, what="scores") -> torch.Tensor:
    """`(rows, K)`: the explained scores (or probabilities) of each user's targets on each sub-history row."""
    function = scorer.scores if what == "scores" else scorer.probabilities
    return _over_rows(scorer, histories, keeps, targets, function)


def _row_full(scorer, histories, keeps, targets) -> torch.Tensor:
    """`(rows, C)`: the scores of every candidate on each sub-history row (the click head: of the targets)."""
    return _over_rows(scorer, histories, keeps, targets, scorer.full)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _all_kept(history: _History) -> torch.Tensor:
    return torch.ones(1, history.length, dtype=torch.bool)


# ----------------------------------------------------------------------------------------------------------------
# Targets.


def _excluded_for(scorer, history: _History) -> torch.Tensor | None:
    """`(1, C)` candidates never chosen: special tokens and (next item) the history's own items."""
    if scorer.head != "next_item":
        return None
    excluded = torch.zeros(1, scorer.config.num_items, dtype=torch.bool)
    excluded[0, : scorer.config.num_special_tokens] = True
    excluded[0, history.seen_ids] = True
    return excluded


def _resolve_target(scorer, tokenizer, history: _History, target) -> tuple[int, str]:
    config = scorer.config
    if scorer.head == "forecast":
        names = list(getattr(config, "category_names", None) or [str(c) for c in range(config.num_categories)])
        if target is None:
            full = _row_full(scorer, [history], [_all_kept(history)], [torch.zeros(1, 1, dtype=torch.long)])
            index = int(full[0].argmax())
            return index, names[index]
        if str(target) in names:
            return names.index(str(target)), str(target)
        if isinstance(target, int) and 0 <= target < len(names):
            return target, names[target]
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise ValueError(f"Unknown forecast category {target!r}: use one of {shown} (or its index).")
    if target is None:
        if scorer.head == "click":
            raise ValueError("A click model explains the click score of a candidate: pass target=<raw item id>.")
        full = _row_full(scorer, [history], [_all_kept(history)], [torch.zeros(1, 1, dtype=torch.long)])
        full = full.masked_fill(_excluded_for(scorer, history), float("-inf"))
        if not torch.isfinite(full.max()):
            raise ValueError("Every item of the vocabulary is in the history: there is no recommendation to explain.")
        index = int(full[0].argmax())
        return index, tokenizer.decode_items([index])[0]
    vocabulary = tokenizer.get_vocab()
    index = vocabulary.get(str(target))
    if index is None or index < config.num_special_tokens:
        raise ValueError(f"The target item {str(target)!r} is not in the model's vocabulary.")
    return index, str(target)


# ----------------------------------------------------------------------------------------------------------------
# Methods.


def _leave_one_out(scorer, histories, targets) -> list[torch.Tensor]:
    keeps = [torch.cat([_all_kept(h), ~torch.eye(h.length, dtype=torch.bool)]) for h in histories]
    values = _row_values(scorer, histories, keeps, targets)
    result, start = [], 0
    for history in histories:
        rows = values[start : start + history.length + 1]
        start += history.length + 1
        result.append(rows[0] - rows[1:])  # (T, K): how much each event's removal lowers each target's score
    return result


def _padded(scorer, histories):
    """One left-padded batch of whole histories: `(input_ids, attention_mask, timestamps)`."""
    return _sub_histories(
        histories, [_all_kept(h) for h in histories], scorer.config.pad_token_id, _device(scorer.model)
    )


def _integrated_gradients(scorer, histories, targets, n_steps: int, internal_batch_size: int | None):
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        raise ImportError(
            "method='integrated_gradients' needs captum: pip install 'hf-interest[explain]' (or captum>=0.8)."
        ) from None
    input_ids, attention_mask, timestamps = _padded(scorer, histories)
    target_ids = torch.stack([target[0, :1] for target in targets]).to(input_ids.device)  # (B, 1)

    def forward(vectors, ids, mask, times, wanted):
        return scorer.scores(vectors, ids, mask, times, wanted)[:, 0]

    with torch.no_grad():
        vectors = scorer.vectors(input_ids)
        baseline = torch.zeros_like(vectors)
        full_scores = forward(vectors, input_ids, attention_mask, timestamps, target_ids)
        base_scores = forward(baseline, input_ids, attention_mask, timestamps, target_ids)
    args = (input_ids, attention_mask, timestamps, target_ids)
    if internal_batch_size is None:  # all steps of all users at once, unless the score matrix would be large
        internal_batch_size = max(1, min(n_steps * len(histories), ROWS_TIMES_CANDIDATES // _candidates(scorer)))
    attributions, delta = IntegratedGradients(forward).attribute(
        vectors,
        baselines=baseline,
        additional_forward_args=args,
        n_steps=n_steps,
        method="gausslegendre",
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    per_event = attributions.sum(dim=-1).detach().float().cpu()  # (B, W)
    result, diagnostics = [], []
    for row, history in enumerate(histories):
        change = float(full_scores[row] - base_scores[row])
        gap = abs(float(delta[row]))
        result.append(per_event[row, -history.length :][:, None])
        diagnostics.append(
            {
                "baseline_score": float(base_scores[row]),
                "score_change": change,
                "completeness_gap": gap,
                "relative_completeness_gap": gap / max(abs(change), 1e-12),
                "n_steps": n_steps,
            }
        )
    return result, diagnostics


class _CaptureInputs:
    """A forward pre-hook that keeps the arguments of the long/short-term module's last call."""

    def __init__(self, module):
        self.arguments = None
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, module, arguments):
        self.arguments = arguments

    def remove(self):
        self.handle.remove()


def interest_weights(model, input_ids, attention_mask=None, timestamps=None) -> dict:
    """
    The model's own weights over the events at the last step of each (left-padded) history: the long-term event
    weights (over all events), the short-term window weights (over the last `short_term_window` events), both
    averaged over heads, and the gate g between the parts.

    Returns:
        `dict` with `long_term` and `short_term` `(B, T)` (zeros where the part is off or outside the window),
        `gate` `(B,)` (None without both parts), `mixed` `(B, T)`: `g * long_term + (1 - g) * short_term`, or the
        one part the model has; and the weights of every head, `long_term_heads` / `short_term_heads` `(B, T, heads)`:
        the model's long-term part at the last step is, head by head, `sum_j long_term_heads[:, j, h] * value_h(x_j)`.
    """
    model = _unwrap(model)
    backbone = model.model
    module = backbone.long_short_term
    if module is None:
        raise ValueError(
            "method='interest_weights' needs a model with long_term_interest or short_term_interest: this one has "
            "neither. Use 'attention', 'leave_one_out' or 'integrated_gradients'."
        )
    scorer = _scorer(model)
    capture = _CaptureInputs(module)
    try:
        with torch.no_grad():
            vectors = scorer.vectors(input_ids)
            output = scorer.backbone(vectors, attention_mask, timestamps)
    finally:
        capture.remove()
    causal_states, items, mask = capture.arguments
    batch_size, seq_len, hidden = items.shape
    real = mask.bool() if mask is not None else torch.ones(batch_size, seq_len, dtype=torch.bool, device=items.device)
    heads = module.num_heads
    long_heads = torch.zeros(batch_size, seq_len, heads, device=items.device)
    short_heads = torch.zeros(batch_size, seq_len, heads, device=items.device)
    with torch.no_grad():  # the model's own weights, from the module's public methods (the math its forward uses)
        if hasattr(module, "long_term_query"):
            key = module.split_heads(module.long_term_key(items))  # (B, T, nh, hd)
            scores = module.long_term_scores(key, module.long_term_query, real)
            long_heads = torch.nan_to_num(scores.softmax(dim=1))  # (B, T, nh); an empty row: zeros
        if hasattr(module, "short_term_query"):
            window = min(module.window, seq_len)
            weights, _ = module.short_term_weights(causal_states[:, -1:], items, real)  # (B, 1, nh, window)
            short_heads[:, -window:] = weights[:, 0, :, -window:].transpose(1, 2).float()  # (B, w, nh)
    long_term, short_term = long_heads.mean(dim=-1), short_heads.mean(dim=-1)
    gate = output.interest_gate[:, -1].float() if output.interest_gate is not None else None
    if gate is not None:
        mixed = gate[:, None] * long_term + (1 - gate[:, None]) * short_term
    else:
        mixed = long_term if hasattr(module, "long_term_query") else short_term
    return {
        "long_term": long_term.cpu(),
        "short_term": short_term.cpu(),
        "gate": gate.cpu() if gate is not None else None,
        "mixed": mixed.cpu(),
        "long_term_heads": long_heads.cpu(),
        "short_term_heads": short_heads.cpu(),
    }


def _attention(scorer, histories):
    input_ids, attention_mask, timestamps = _padded(scorer, histories)
    with torch.no_grad():
        output = scorer.backbone(scorer.vectors(input_ids), attention_mask, timestamps, output_attentions=True)
    last = output.attentions[-1][:, :, -1].mean(dim=1).float().cpu()  # (B, W): the last event's query
    return [last[row, -history.length :][:, None] for row, history in enumerate(histories)]


def _interest_weights(scorer, histories):
    input_ids, attention_mask, timestamps = _padded(scorer, histories)
    weights = interest_weights(scorer.model, input_ids, attention_mask, timestamps)
    result, diagnostics = [], []
    for row, history in enumerate(histories):
        width = history.length
        result.append(weights["mixed"][row, -width:][:, None])
        diagnostics.append(
            {
                "long_term_weights": weights["long_term"][row, -width:].tolist(),
                "short_term_weights": weights["short_term"][row, -width:].tolist(),
                "gate": float(weights["gate"][row]) if weights["gate"] is not None else None,
            }
        )
    return result, diagnostics


def _baseline(method: str, history: _History, generator: torch.Generator) -> torch.Tensor:
    if method == "recency":
        return torch.arange(1, history.length + 1, dtype=torch.float)[:, None] / history.length
    return torch.rand(history.length, 1, generator=generator)


def _attributions(scorer, histories, targets, method, n_steps=64, internal_batch_size=None, seed=0):
    """Per user `(T, K)` attributions (one column per target; methods that do not depend on the target repeat it)."""
    diagnostics = [{} for _ in histories]
    if method == "leave_one_out":
        values = _leave_one_out(scorer, histories, targets)
    elif method == "integrated_gradients":
        values, diagnostics = _integrated_gradients(scorer, histories, targets, n_steps, internal_batch_size)
    elif method == "interest_weights":
        values, diagnostics = _interest_weights(scorer, histories)
    elif method == "attention":
        values = _attention(scorer, histories)
    elif method in ("recency", "random"):
        generator = torch.Generator().manual_seed(seed)
        values = [_baseline(method, history, generator) for history in histories]
    else:
        raise ValueError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
    return values, diagnostics


# ----------------------------------------------------------------------------------------------------------------
# The public calls.


def _prepare(model, tokenizer, history, timestamps):
    if isinstance(history, Mapping) or (
        isinstance(history, Sequence)
        and not isinstance(history, (str, bytes))
        and (len(history) == 0 or not isinstance(history[0], (Mapping, list, tuple)))
    ):
        single, batch, times = True, [history], [timestamps]
    else:
        single, batch = False, list(history)
        times = list(timestamps) if timestamps is not None else [None] * len(batch)
        if len(times) != len(batch):
            raise ValueError(f"{len(times)} timestamp lists for {len(batch)} histories; give one per history.")
        if not batch:
            raise ValueError("No histories to explain.")
    model = _unwrap(model)
    if model.training:
        model.eval()
    scorer = _scorer(model)
    model.check_vocabulary(tokenizer)
    histories = [
        _encode_history(tokenizer, model.config, entry, time, None if single else index)
        for index, (entry, time) in enumerate(zip(batch, times))
    ]
    return single, scorer, histories


def explain(
    model,
    tokenizer,
    history,
    timestamps=None,
    target=None,
    method: str = "leave_one_out",
    top_k: int | None = None,
    n_steps: int = 64,
    internal_batch_size: int | None = None,
    seed: int = 0,
):
    """
    Attributes a model's score after a history to each past event.

    Args:
        model: an interest model with a head (`InterestForNextItemPrediction`, `InterestForClickPrediction`,
            `InterestForInterestForecasting`), a peft model around one, or one loaded with `trust_remote_code`. It is
            put in eval mode.
        tokenizer: its `ItemTokenizer`.
        history: raw item ids, oldest first; a dict `{"items": [...], "timestamps": [...]}`; or a list of either
            (a batch: one `Explanation` per history, computed in shared batches). A history longer than the model
            reads is explained over its newest `max_position_embeddings` events (what the model scores), and every
            event given still counts as seen when the top-1 is chosen (`diagnostics` says how many were read).
        timestamps: integer seconds, one per event (a list of lists for a batch); without them a time-gap model
            reads "gap unknown", as it does when serving without times.
        target: what to explain: a raw item id (default for a next-item model: its top-1 recommendation, seen
            items excluded; required for a click model) or a category name (forecast; default: the most likely).
        method: one of `METHODS` (default `"leave_one_out"`: exact, no dependency).
        top_k: keep only the `top_k` highest attributed events in `events` (default: all).
        n_steps: integration steps of integrated gradients (Gauss-Legendre).
        internal_batch_size: rows per integrated-gradients pass (default: all steps of all histories at once, cut so
            that no pass scores more than `ROWS_TIMES_CANDIDATES` rows x items).
        seed: seed of the `"random"` baseline.

    Returns:
        an [`Explanation`] (a list of them for a batch).

    Raises:
        ValueError: an empty history, an item the vocabulary does not know, timestamps of the wrong length or order,
            an unknown method or target.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    single, scorer, histories = _prepare(model, tokenizer, history, timestamps)
    targets, names = [], []
    for entry in histories:
        index, name = _resolve_target(scorer, tokenizer, entry, target)
        targets.append(torch.tensor([[index]]))
        names.append(name)
    values, diagnostics = _attributions(scorer, histories, targets, method, n_steps, internal_batch_size, seed)
    full_scores = _row_values(scorer, histories, [_all_kept(h) for h in histories], targets)[:, 0]
    explanations = []
    for entry, value, extra, target_tensor, name, score in zip(
        histories, values, diagnostics, targets, names, full_scores.tolist()
    ):
        attributions = value[:, 0].float()
        events = entry.events(attributions)
        result = Explanation(
            attributions=attributions,
            events=events,
            target=name,
            target_index=int(target_tensor[0, 0]),
            score=score,
            method=method,
            head=scorer.head,
            diagnostics={**extra, "events_given": int(entry.seen_ids.numel()), "events_read": entry.length},
        )
        if top_k is not None:
            result.events = result.top(top_k)
        explanations.append(result)
    return explanations[0] if single else explanations


def explain_recommendations(model, tokenizer, history, timestamps=None, items=None, method="leave_one_out", top_k=3):
    """
    The top `top_k` events behind each of several recommended items of one history (e.g. a pipeline's top-10),
    computed in shared passes: leave-one-out scores every target from the same T passes.

    Returns:
        `list` of `list` of event dicts, one list per item of `items` (raw ids), highest attribution first.
    """
    _, scorer, histories = _prepare(model, tokenizer, history, timestamps)
    if scorer.head != "next_item":
        raise ValueError("explain_recommendations explains a next-item model's recommendations.")
    vocabulary = tokenizer.get_vocab()
    indices = [vocabulary[str(item)] for item in items]
    if method == "leave_one_out":
        values = _leave_one_out(scorer, histories, [torch.tensor([indices])])[0]
    else:
        columns = []
        for index in indices:
            value, _ = _attributions(scorer, histories, [torch.tensor([[index]])], method)
            columns.append(value[0][:, 0])
        values = torch.stack(columns, dim=1)
    explained = []
    for column in range(len(indices)):
        events = histories[0].events(values[:, column])
        explained.append(_top_events(events, top_k))
    return explained


def _decision_name(scorer, tokenizer, decision: int) -> str:
    if scorer.head == "next_item":
        return tokenizer.decode_items([decision])[0]
    if scorer.head == "click":
        return "click" if decision else "no click"
    names = getattr(scorer.config, "category_names", None)
    return names[decision] if names else str(decision)


def counterfactual(model, tokenizer, history, timestamps=None, target=None, max_size: int | None = None):
    """
    The smallest set of the user's own events whose removal changes the model's decision, found greedily: at each
    step the event whose removal most lowers the decision's lead over the best alternative is removed (one batched
    pass over the remaining events), until the decision changes. The result is then verified by re-running the model:
    a next-item model through `recommend` itself, with the original history's items still excluded (they stay seen:
    the question is which events made the model pick this item, not which removed item becomes eligible again).

    Decisions: next item: the top-1 recommendation; forecast: the most likely category; click: whether the click
    probability of `target` (required) is above 0.5. A decision changes when another choice scores strictly higher
    (a tie with the original is not a change: which of two tied items is "the top-1" is arbitrary).

    Returns:
        a [`Counterfactual`] (a list of them for a batch); `found=False` when removing up to `max_size` events (default:
        all but none) never changes the decision.
    """
    single, scorer, histories = _prepare(model, tokenizer, history, timestamps)
    results = []
    for entry in histories:
        if scorer.head == "click":
            index, _ = _resolve_target(scorer, tokenizer, entry, target)
            candidate = torch.tensor([[index]])
        else:
            candidate = torch.zeros(1, 1, dtype=torch.long)
        excluded = _excluded_for(scorer, entry)
        full = _row_full(scorer, [entry], [_all_kept(entry)], [candidate])
        decision = scorer.decisions(full, excluded)
        keep = torch.ones(entry.length, dtype=torch.bool)
        removed, new = [], None
        limit = entry.length if max_size is None else min(max_size, entry.length)
        for _ in range(limit):
            remaining = keep.nonzero()[:, 0]
            rows = keep.expand(len(remaining), -1).clone()
            rows[torch.arange(len(remaining)), remaining] = False
            full_rows = _row_full(scorer, [entry], [rows], [candidate])
            margins = scorer.margins(full_rows, decision.expand(len(remaining)), excluded)
            best = int(margins.argmin())
            keep[remaining[best]] = False
            removed.append(int(remaining[best]))
            if float(margins[best]) < 0:  # strictly behind another choice now; a tie is not a change
                new = int(scorer.decisions(full_rows[best : best + 1], excluded))
                break
        result = Counterfactual(
            removed=[entry.event(position) for position in removed] if new is not None else [],
            found=new is not None,
            original=_decision_name(scorer, tokenizer, int(decision)),
            new=_decision_name(scorer, tokenizer, new) if new is not None else None,
            size=len(removed) if new is not None else 0,
            verified=False,
        )
        if new is not None:
            result.verified = _verify(scorer, tokenizer, entry, keep, int(decision), candidate, excluded)
        results.append(result)
    return results[0] if single else results


def _verify(scorer, tokenizer, entry, keep, decision, candidate, excluded) -> bool:
    """Re-runs the model on the history without the removed events: does the decision differ?"""
    ids = entry.input_ids[keep]
    times = entry.timestamps[keep] if entry.timestamps is not None else None
    model = scorer.model
    if scorer.head == "next_item":
        seen = entry.seen_ids.tolist()
        output = model.recommend(
            ids[None] if ids.numel() else torch.full((1, 1), scorer.config.pad_token_id),
            timestamps=times[None] if times is not None and ids.numel() else None,
            top_k=1,
            exclude_seen=False,
            exclude_items=sorted(set(seen)),
        )
        return int(output.item_ids[0, 0]) != decision
    full = _row_full(scorer, [entry], [keep[None]], [candidate])
    return int(scorer.decisions(full, excluded)) != decision


# ----------------------------------------------------------------------------------------------------------------
# Faithfulness.


def _curve_points(length: int, num_points: int) -> list[int]:
    """How many events are deleted (or inserted) at each point of a curve: 0 .. length, at most `num_points`."""
    if length + 1 <= num_points:
        return list(range(length + 1))
    return sorted({round(step * length / (num_points - 1)) for step in range(num_points)})


def faithfulness(
    model, tokenizer, explanations, history, timestamps=None, k: int = 3, num_random: int = 10, num_points: int = 21,
    seed: int = 0,
) -> dict:  # fmt: skip
    """
    Checks explanations against the model: for each history and its explanation (same order),

    - the deletion curve: the explained item's probability (softmax over the catalogue; sigmoid for a click; the
      category's probability for a forecast) as the events are removed highest attribution first, at up to
      `num_points` points from none to all; the insertion curve: the same as they are added to an empty history,
      in their time order; their areas (`curve_auc`, x from 0 to 1: deletion lower is better, insertion higher);
    - comprehensiveness: score(history) - score(history without the top-k events); sufficiency: score(history) -
      score(the top-k events alone) (explained scores: logits or log-probabilities);
    - against `num_random` draws of k random events: the share of draws where deleting the top-k lowers the score
      more (ties count one half).

    Returns:
        `dict`: the means over histories (`faithfulness_summary`: `deletion_auc`, `insertion_auc`, `comprehensiveness`,
        `sufficiency`, `beats_random`, `num_explanations`), `k`, the curves (`deletion_curves`, `insertion_curves`) and
        the other numbers of each history (`per_history`).
    """
    single, scorer, histories = _prepare(model, tokenizer, history, timestamps)
    if single:
        explanations = [explanations]
    if len(explanations) != len(histories):
        raise ValueError(f"{len(explanations)} explanations for {len(histories)} histories; give one per history.")
    generator = torch.Generator().manual_seed(seed)
    deletion, insertion, comprehensive, sufficient, beats = [], [], [], [], []
    for entry, explanation in zip(histories, explanations):
        if len(explanation.attributions) != entry.length:
            raise ValueError("An explanation does not match its history (different number of events).")
        target = torch.tensor([[explanation.target_index]])
        order = sorted(range(entry.length), key=lambda j: (float(explanation.attributions[j]), j), reverse=True)
        points = _curve_points(entry.length, num_points)
        delete_rows, insert_rows = [], []
        for count in points:
            gone = torch.zeros(entry.length, dtype=torch.bool)
            gone[order[:count]] = True
            delete_rows.append(~gone)
            insert_rows.append(gone)
        top = min(k, entry.length)
        without_top = torch.ones(entry.length, dtype=torch.bool)
        without_top[order[:top]] = False
        random_rows = []
        for _ in range(num_random):
            row = torch.ones(entry.length, dtype=torch.bool)
            row[torch.randperm(entry.length, generator=generator)[:top]] = False
            random_rows.append(row)
        rows = torch.stack(delete_rows + insert_rows)
        probabilities = _row_values(scorer, [entry], [rows], [target], what="probabilities")[:, 0]
        deletion.append(probabilities[: len(points)].tolist())
        insertion.append(probabilities[len(points) :].tolist())
        score_rows = torch.stack([torch.ones(entry.length, dtype=torch.bool), without_top, ~without_top, *random_rows])
        scores = _row_values(scorer, [entry], [score_rows], [target])[:, 0]
        comprehensive.append(float(scores[0] - scores[1]))
        sufficient.append(float(scores[0] - scores[2]))
        top_drop, random_drops = scores[0] - scores[1], scores[0] - scores[3:]
        beats.append(float(((top_drop > random_drops).float() + 0.5 * (top_drop == random_drops).float()).mean()))
    results = faithfulness_summary(deletion, insertion, comprehensive, sufficient, beats)
    results["deletion_curves"], results["insertion_curves"] = deletion, insertion
    results["per_history"] = {"comprehensiveness": comprehensive, "sufficiency": sufficient, "beats_random": beats}
    results["k"] = k
    return results


def category_attributions(explanation: Explanation, item_category_weights, tokenizer, category_names=None) -> dict:
    """
    The attributions of an explanation summed by the categories of the events (an item with n categories gives
    1/n of its attribution to each): which categories of past events drove the score.

    Args:
        explanation: an [`Explanation`] with all its events (not cut with `top_k`).
        item_category_weights: `(num_items, num_categories)` rows summing to 1 (or 0), e.g. the forecasting model's
            buffer or `hf_interest.evolution.category_weight_matrix`.
        tokenizer: the model's `ItemTokenizer`.
        category_names: names of the categories (default: their indices).

    Returns:
        `{category: attribution}`, largest first, categories with no event left out.
    """
    weights = torch.as_tensor(item_category_weights, dtype=torch.float)
    if len(explanation.events) != len(explanation.attributions):
        raise ValueError("category_attributions needs the explanation's every event: call explain without top_k.")
    indices = torch.tensor(tokenizer.encode_items([event["item_id"] for event in explanation.events]))
    per_category = (weights[indices] * explanation.attributions[:, None].float()).sum(dim=0)
    present = weights[indices].sum(dim=0) > 0
    names = list(category_names) if category_names is not None else [str(c) for c in range(weights.shape[1])]
    pairs = [(names[c], float(per_category[c])) for c in range(weights.shape[1]) if present[c]]
    return dict(sorted(pairs, key=lambda pair: pair[1], reverse=True))


def plot_explanation(explanation: Explanation, path, titles: Mapping | None = None, label_top: int = 5) -> None:
    """
    Saves a PNG: the history's events on a time axis (event number without timestamps), each a stem coloured by its
    attribution (red raised the score, blue lowered it), the `label_top` highest named. Needs matplotlib
    (`pip install 'hf-interest[plot]'`).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import TwoSlopeNorm
    except ImportError:
        raise ImportError("plot_explanation needs matplotlib: pip install 'hf-interest[plot]'.") from None
    from datetime import datetime, timezone

    titles = dict(titles or {})
    events = sorted(explanation.events, key=lambda event: event["position"])
    values = [event["attribution"] for event in events]
    timed = all(event["timestamp"] is not None for event in events)
    if timed:
        x = [datetime.fromtimestamp(int(event["timestamp"]), tz=timezone.utc) for event in events]
    else:
        x = [event["position"] + 1 for event in events]
    bound = max(max(abs(value) for value in values), 1e-12)
    norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    colours = plt.get_cmap("coolwarm")(norm(values))
    figure, axis = plt.subplots(figsize=(10, 3.8))
    axis.vlines(x, 0, values, colors=colours, linewidth=2)
    axis.scatter(x, values, c=values, cmap="coolwarm", norm=norm, s=28, zorder=3)
    axis.axhline(0, color="0.6", linewidth=0.8)
    for event in sorted(events, key=lambda e: e["attribution"], reverse=True)[:label_top]:
        name = titles.get(event["item_id"], event["item_id"])
        position = x[events.index(event)]
        axis.annotate(str(name)[:28], (position, event["attribution"]), textcoords="offset points", xytext=(0, 6),
                      ha="center", fontsize=7)  # fmt: skip
    target = titles.get(explanation.target, explanation.target)
    axis.set_title(f"Why {target}: {explanation.method.replace('_', ' ')} attribution of each past event", fontsize=10)
    axis.set_ylabel("attribution")
    figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="coolwarm"), ax=axis, label="attribution")
    if timed:
        from matplotlib.dates import DateFormatter

        pattern, label = time_axis_format(min(x), max(x))
        axis.xaxis.set_major_formatter(DateFormatter(pattern, tz=timezone.utc))
        axis.set_xlabel(label)
        figure.autofmt_xdate()
    else:
        axis.set_xlabel("event")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def time_axis_format(first, last) -> tuple[str, str]:
    """
    How a time axis from `first` to `last` (datetimes, UTC) is labelled so a person reads it: dates over days,
    day and hour:minute over hours, hour:minute:second within an hour (with the date in the axis label); never
    matplotlib's fallback of minutes and microseconds.

    Returns:
        `(strftime pattern of the ticks, axis label)`.
    """
    span = (last - first).total_seconds()
    if span > 3 * 86400:
        return "%Y-%m-%d", "date (UTC)"
    if span > 3 * 3600:
        return "%b %d %H:%M", "time (UTC)"
    return "%H:%M:%S", f"time (UTC, {first:%Y-%m-%d})"


__all__ = [
    "HEADS",
    "METHODS",
    "Counterfactual",
    "Explanation",
    "category_attributions",
    "counterfactual",
    "curve_auc",
    "explain",
    "explain_recommendations",
    "faithfulness",
    "interest_weights",
    "plot_explanation",
    "time_axis_format",
]
