"""Data preparation and evaluation for the interest-forecasting and click-prediction heads.

- `category_weight_matrix`: item -> category weights aligned with a vocabulary (the forecasting head's buffer).
- `whole_sequences`: the full sequences (history + target) of an evaluation split, for evaluating at every position.
- `evaluate_forecast`: the forecasting head against the "repeat the recent category mix" baseline, on every position
  with a full window of k later events, with the same metrics (`hf_interest.metrics.forecast_metrics`).
- `evaluate_click`: AUC / log loss of the click head beside the logistic regression on popularity.

`hub_scripts/train.py --task forecast|click` uses these; so do the benchmarks and the notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .metrics import click_metrics, decayed_category_mix, forecast_metrics, recent_category_mix

NO_CATEGORY_NOTE = "items without a category have zero rows and add nothing to a target"


def category_weight_matrix(items, vocabulary, column: str = "categories", primary_only: bool = False):
    """
    The item -> category weights of a vocabulary: row i spreads weight 1 equally over the categories of item i
    (special tokens and items without a category: zero rows).

    Args:
        items: the items table (`BehaviorData.items`, a `datasets.Dataset`, or a mapping of columns) with `item_id`
            and `column` (a list of category names per item).
        vocabulary: an `ItemTokenizer` (special tokens first) or a list of raw item ids in vocabulary order.
        column (`str`): the categories column.
        primary_only (`bool`): use only the first category of each item (its primary one, e.g. for the synthetic
            data, whose events draw an item of their category by its primary category).

    Returns:
        `(weights, names, num_without)`: `weights` `(len(vocabulary), C)` float32, `names` the C category names
        (sorted), `num_without` the number of real items without a category.
    """
    if hasattr(items, "column_names"):
        if column not in items.column_names or "item_id" not in items.column_names:
            raise ValueError(f"The items table needs 'item_id' and {column!r}; it has {items.column_names}.")
        item_ids, categories = items["item_id"], items[column]
    else:
        if column not in items or "item_id" not in items:
            raise ValueError(f"The items table needs 'item_id' and {column!r}; it has {sorted(items)}.")
        item_ids, categories = items["item_id"], items[column]
    by_item = {}
    for item, cats in zip(item_ids, categories):
        cats = [] if cats is None else [cats] if isinstance(cats, str) else list(cats)  # lists, arrays, tuples
        by_item[str(item)] = cats[:1] if primary_only else list(dict.fromkeys(str(c) for c in cats))
    if hasattr(vocabulary, "num_special_tokens") and hasattr(vocabulary, "items"):
        special, vocab_items = vocabulary.num_special_tokens, [str(i) for i in vocabulary.items]
    else:
        special, vocab_items = 0, [str(i) for i in vocabulary]
    names = sorted({str(c) for cats in by_item.values() for c in cats})
    column_of = {name: j for j, name in enumerate(names)}
    weights = np.zeros((special + len(vocab_items), len(names)), dtype=np.float32)
    without = 0
    for row, item in enumerate(vocab_items, start=special):
        cats = by_item.get(item) or []
        if not cats:
            without += 1
            continue
        weights[row, [column_of[str(c)] for c in cats]] = 1.0 / len(cats)
    if not names:
        raise ValueError(f"No item has a category in column {column!r}: give the items table their categories.")
    return weights, names, without


def whole_sequences(dataset) -> list[dict]:
    """
    The whole sequence of every row of an encoded evaluation split: history then target, as training rows
    (`input_ids`, `timestamps` when present) for `DataCollatorForInterest(mode="train")`, plus `user_id`.
    """
    columns = dataset.column_names
    rows = []
    for row in dataset.select_columns(
        [c for c in ("user_id", "input_ids", "timestamps", "labels", "target_timestamp") if c in columns]
    ).to_list():
        out = {"user_id": row.get("user_id"), "input_ids": list(row["input_ids"]) + [int(row["labels"])]}
        if row.get("timestamps") is not None and row.get("target_timestamp") is not None:
            out["timestamps"] = list(row["timestamps"]) + [int(row["target_timestamp"])]
        rows.append(out)
    return rows


@dataclass
class ForecastEvaluation:
    """
    Per-position results of `evaluate_forecast` (positions with a full window only).

    Args:
        metrics: `{"model": {...}, "recent_mix": {...}, "protocol": str}` (cross-entropy, KL, top-category accuracy).
        predictions: `(N, C)` the model's forecasts.
        targets: `(N, C)` the empirical category distributions of the next k events.
        baselines: `{name: (N, C)}` each baseline's forecasts (`FORECAST_BASELINES`).
        rows: `(N,)` the row of the evaluated sequence.
        event_index: `(N,)` the index, in that user's whole sequence, of the event after which the forecast is made.
    """

    metrics: dict
    predictions: np.ndarray
    targets: np.ndarray
    baselines: dict
    rows: np.ndarray
    event_index: np.ndarray


def forecast_protocol(split: str, k: int, baselines: Mapping[str, tuple[float, float]]) -> str:
    """The one line printed with every forecasting result."""
    (window, smoothing), (decay, concentration) = baselines["recent_mix"], baselines["decayed_mix"]
    return (
        f"split={split}; after every event (within the newest max_length the model reads) of each held-out sequence "
        f"that has {k} later events, the forecast of the category distribution of those {k} events; cross-entropy "
        f"and KL to their empirical distribution, top-category accuracy; baselines (parameters tuned on validation): "
        f"the category mix of the last {window:g} events smoothed {smoothing:g} toward the training category prior, "
        f"and category counts decayed {decay:g} per event with {concentration:g} pseudo-events of that prior; "
        f"{NO_CATEGORY_NOTE}"
    )


@torch.no_grad()
def evaluate_forecast(
    model,
    sequences: Sequence[Mapping],
    collator,
    prior: np.ndarray,
    split: str = "test",
    batch_size: int = 128,
    baselines: Mapping[str, tuple[float, float]] | None = None,
    use_timestamps: bool = True,
) -> ForecastEvaluation:
    """
    Evaluates an `InterestForInterestForecasting` on whole held-out sequences, at every position with `k` later
    events (k = `config.forecast_horizon`), beside the baselines of `FORECAST_BASELINES`.

    Args:
        model: the forecasting model (its `item_category_weights` define the targets).
        sequences: rows from `whole_sequences`.
        collator: a `DataCollatorForInterest(mode="train")` (inputs `s[:-1]`, labels `s[1:]`, newest `max_length`).
        prior: `(C,)` the training category distribution, which the baselines are smoothed toward.
        split: the split name, for the protocol.
        batch_size: sequences per forward pass.
        baselines: the parameters of each baseline of `FORECAST_BASELINES` (from `tune_forecast_baselines`); default:
            the recent mix of the last k events smoothed 0.1, and decayed counts (0.9, 1.0).
        use_timestamps: pass timestamps to the model.

    Returns:
        A [`ForecastEvaluation`].
    """
    config = model.config
    k = config.forecast_horizon
    baselines = dict(baselines or {"recent_mix": (k, 0.1), "decayed_mix": (0.9, 1.0)})
    weights = model.item_category_weights.float().cpu()
    was_training = model.training
    model.eval()
    out = {name: [] for name in ("predictions", "targets", "rows", "event_index", *baselines)}
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        # targets of the next k events; the baselines read the items at positions <= t (item of event t at t)
        batch, targets, full, item_rows = _batch_targets(chunk, collator, weights, k)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if use_timestamps and "timestamps" in chunk[0]:
            inputs["timestamps"] = batch["timestamps"]
        device = model.device
        logits = model(**{key: value.to(device) for key, value in inputs.items()}).logits.float().cpu()
        seq_len = batch["labels"].shape[1]
        lengths = batch["attention_mask"].sum(dim=1).numpy()
        whole = np.asarray([len(row["input_ids"]) for row in chunk])
        # Position p holds input event (whole - 1 - n) + (p - (T - n)) of the whole sequence, n = real inputs.
        positions = np.arange(seq_len)[None, :]
        event_index = (whole - 1 - lengths)[:, None] + positions - (seq_len - lengths)[:, None]
        full_np = full.numpy()
        out["predictions"].append(logits.softmax(dim=-1).numpy()[full_np])
        out["targets"].append(targets.numpy()[full_np])
        for name, (a, b) in baselines.items():
            forecast = FORECAST_BASELINES[name][0](item_rows.numpy(), weights.numpy(), a, b, prior)
            out[name].append(np.asarray(forecast)[full_np])
        out["rows"].append((start + np.nonzero(full_np)[0]).astype(np.int64))
        out["event_index"].append(event_index[full_np].astype(np.int64))
    model.train(was_training)
    arrays = {name: np.concatenate(values) if values else np.zeros((0,)) for name, values in out.items()}
    if len(arrays["targets"]) == 0:
        raise ValueError(
            f"No position of the {split} sequences has {k} later events: use a smaller forecast_horizon or longer "
            "sequences."
        )
    # The collator keeps the newest max_length + 1 events of a sequence: positions before them are not scored.
    lengths = np.asarray([len(row["input_ids"]) for row in sequences])
    kept = lengths if collator.max_length is None else np.minimum(lengths, collator.max_length + 1)
    not_read = int(np.maximum(0, lengths - np.maximum(k, kept)).sum())
    protocol = forecast_protocol(split, k, baselines)
    if not_read:
        protocol += f"; {not_read:,} positions older than the newest {collator.max_length} events were not scored"
    metrics = {
        "model": forecast_metrics(arrays["predictions"], arrays["targets"]),
        **{name: forecast_metrics(arrays[name], arrays["targets"]) for name in baselines},
        "baseline_parameters": {name: list(values) for name, values in baselines.items()},
        "positions_not_read": not_read,
        "protocol": protocol,
    }
    return ForecastEvaluation(
        metrics=metrics,
        predictions=arrays["predictions"],
        targets=arrays["targets"],
        baselines={name: arrays[name] for name in baselines},
        rows=arrays["rows"],
        event_index=arrays["event_index"],
    )


FORECAST_BASELINES = {
    # name: (function of (item_rows, weights, a, b, prior), grid of (a, b), how the parameters are printed)
    "recent_mix": (
        recent_category_mix,
        [(w, s) for w in (1, 2, 5, 10, 20, 50) for s in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)],
    ),
    "decayed_mix": (
        decayed_category_mix,
        [(d, c) for d in (0.5, 0.7, 0.8, 0.9, 0.95, 0.98) for c in (0.5, 1, 2, 4, 8)],
    ),
}
"""The forecasting baselines: the recent category mix (parameters: window, smoothing) and decayed category counts
with a Dirichlet prior (decay, concentration), each tuned on validation over its grid."""


def _batch_targets(sequences, collator, category_weights, k):
    """Collates whole sequences and returns `(batch, next-k targets, full-window mask, item rows for baselines)`."""
    from .modeling_interest import next_k_category_targets

    batch = collator([{key: value for key, value in row.items() if key != "user_id"} for row in sequences])
    weights = torch.as_tensor(category_weights, dtype=torch.float32)
    targets, num_events = next_k_category_targets(batch["labels"], weights, k)
    full = (num_events == k) & (targets.sum(dim=-1) > 0)
    item_rows = torch.where(batch["attention_mask"].bool(), batch["input_ids"], torch.full_like(batch["labels"], -100))
    return batch, targets, full, item_rows


def tune_forecast_baselines(
    sequences: Sequence[Mapping], collator, category_weights: np.ndarray, prior: np.ndarray, k: int
) -> dict[str, tuple[float, float]]:
    """
    Picks each forecasting baseline's parameters (`FORECAST_BASELINES`) with the lowest cross-entropy on (validation)
    sequences, so the model is compared with the best version of each baseline, not an arbitrary one.

    Returns:
        `{name: (parameter a, parameter b)}`, e.g. `{"recent_mix": (window, smoothing), "decayed_mix": (decay,
        concentration)}`.
    """
    _, targets, full, item_rows = _batch_targets(sequences, collator, category_weights, k)
    full = full.numpy()
    if not full.any():
        raise ValueError(f"No position of the tuning sequences has {k} later events.")
    chosen = {}
    for name, (function, grid) in FORECAST_BASELINES.items():
        scores = {}
        for a, b in grid:
            forecast = np.asarray(function(item_rows.numpy(), category_weights, a, b, prior))
            scores[(a, b)] = forecast_metrics(forecast[full], targets.numpy()[full])["cross_entropy"]
        chosen[name] = min(scores, key=scores.get)
    return chosen


def category_prior(train_input_ids: Sequence[Sequence[int]], weights: np.ndarray) -> np.ndarray:
    """The category distribution of the training events (the baseline's smoothing target)."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in train_input_ids]) if train_input_ids else []
    mass = np.asarray(weights)[flat].sum(axis=0) if len(flat) else np.zeros(weights.shape[1])
    if mass.sum() <= 0:
        return np.full(weights.shape[1], 1.0 / weights.shape[1])
    return mass / mass.sum()


def format_forecast_table(metrics: Mapping, oracle: Mapping | None = None) -> str:
    """The forecasting results beside the baseline (and the oracle, where known), headed by the protocol."""
    rows = [("model", metrics["model"]), ("recent category mix", metrics["recent_mix"])]
    if "decayed_mix" in metrics:
        rows.append(("decayed category counts", metrics["decayed_mix"]))
    if oracle is not None:
        rows.append(("oracle (generator truth)", oracle))
    lines = [
        f"protocol: {metrics['protocol']}",
        f"{'':26s} {'cross-entropy':>13s} {'KL':>8s} {'top-1 acc':>9s} {'positions':>9s}",
    ]
    for name, values in rows:
        lines.append(
            f"{name:26s} {values['cross_entropy']:13.4f} {values['kl_divergence']:8.4f} "
            f"{values['top_category_accuracy']:9.4f} {values['n']:9d}"
        )
    return "\n".join(lines)


@torch.no_grad()
def format_head_results(task: str, results: dict) -> str:
    """The test results of a head beside its baseline, headed by the protocol."""
    if task == "forecast":
        return format_forecast_table(results)
    lines = [
        f"protocol: {results['protocol']}; labels: {results.get('labels', '')}",
        f"{'':28s} {'AUC':>7s} {'log loss':>9s} {'examples':>9s} {'click rate':>10s}",
    ]
    for name, key in (("model", "model"), ("logistic regression on pop.", "popularity_lr")):
        values = results[key]
        lines.append(
            f"{name:28s} {values['auc']:7.4f} {values['log_loss']:9.4f} {values['num_examples']:9d} "
            f"{values['positive_rate']:10.4f}"
        )
    return "\n".join(lines)


def evaluate_click(model, dataloader, baseline, split: str = "test", use_timestamps: bool = True) -> dict:
    """
    Click metrics (AUC, log loss) of an `InterestForClickPrediction` on a `DataCollatorForClick(mode="eval")`
    dataloader, beside the logistic regression on popularity (`PopularityClickBaseline`) on the same candidates.

    Returns:
        `{"model": {...}, "popularity_lr": {...}, "protocol": str, "positives": int, "negatives": int}`.
    """
    was_training = model.training
    model.eval()
    probabilities, labels, candidates = [], [], []
    for batch in dataloader:
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "candidate_ids")}
        if use_timestamps and "timestamps" in batch:
            inputs["timestamps"] = batch["timestamps"]
        inputs = {key: value.to(model.device) for key, value in inputs.items()}
        probabilities.append(model(**inputs).probabilities.float().cpu())
        labels.append(batch["click_labels"].float())
        candidates.append(batch["candidate_ids"])
    model.train(was_training)
    per_row = int(candidates[0].shape[-1])
    probs = torch.cat([p.reshape(-1) for p in probabilities])
    label = torch.cat([y.reshape(-1) for y in labels])
    cands = torch.cat([c.reshape(-1) for c in candidates])
    keep = label != -100
    probs, label, cands = probs[keep], label[keep], cands[keep]
    base = torch.as_tensor(baseline.predict_proba(cands.numpy()), dtype=torch.float64)
    return {
        "model": click_metrics(probs.double(), label),
        "popularity_lr": click_metrics(base, label),
        "protocol": (
            f"split={split}; "
            + (
                "one candidate per evaluation row (the target event's item)"
                if per_row == 1
                else f"{per_row} candidates per evaluation row (the target event's item and {per_row - 1} sampled "
                "negatives)"
            )
            + ", scored after the user's whole history; AUC over all candidates (ties count half) and log loss"
        ),
        "positives": int(label.sum()),
        "negatives": int((label == 0).sum()),
    }


__all__ = [
    "ForecastEvaluation",
    "category_prior",
    "category_weight_matrix",
    "evaluate_click",
    "evaluate_forecast",
    "format_forecast_table",
    "format_head_results",
    "FORECAST_BASELINES",
    "tune_forecast_baselines",
    "forecast_protocol",
    "whole_sequences",
]
