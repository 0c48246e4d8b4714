"""Faithfulness of explanations: numbers computed from what the model gave when events were removed or kept.

The model runs live in `hf_interest.explain.faithfulness`; this module only reduces what they gave, so that every
explainer (and the random and recency baselines) is scored by the same code, and the `evaluate` module
`interest_faithfulness` (`FAITHFULNESS_METRIC_PATH`) computes the same numbers.

- Deletion curve (Petsiuk et al., 2018, "RISE", https://arxiv.org/abs/1806.07421): the explained item's probability as
  the events are removed, highest attribution first; its area over x = the deleted fraction from 0 to 1 (trapezoid
  rule on evenly spaced points). Lower is better: a faithful explanation names first the events whose loss hurts most.
- Insertion curve: the probability as the events are added to an empty history in the same order; higher is better.
- Comprehensiveness and sufficiency at k (DeYoung et al., 2020, "ERASER", https://arxiv.org/abs/1911.03429):
  score(all) - score(without the top k), higher is better; score(all) - score(the top k alone), lower is better.
- Beats random: the share of draws of k random events whose deletion lowers the score less than deleting the top k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def curve_auc(curve: Sequence[float]) -> float:
    """Area under a curve given at evenly spaced points of x in [0, 1] (the trapezoid rule); one point: its value."""
    values = np.asarray(curve, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("A curve needs at least one point.")
    if not np.isfinite(values).all():
        raise ValueError("A curve holds NaN or infinite values.")
    if values.size == 1:
        return float(values[0])
    return float(((values[1:] + values[:-1]) / 2).mean())


def faithfulness_summary(
    deletion_curves: Sequence[Sequence[float]],
    insertion_curves: Sequence[Sequence[float]] | None = None,
    comprehensiveness: Sequence[float] | None = None,
    sufficiency: Sequence[float] | None = None,
    beats_random: Sequence[float] | None = None,
) -> dict[str, float]:
    """
    Means over explanations: `deletion_auc`, and, when given, `insertion_auc`, `comprehensiveness`, `sufficiency`,
    `beats_random`, plus `num_explanations`.
    """
    if len(deletion_curves) == 0:
        raise ValueError("No explanations to summarise: deletion_curves is empty.")
    results = {"deletion_auc": float(np.mean([curve_auc(curve) for curve in deletion_curves]))}
    if insertion_curves is not None:
        if len(insertion_curves) != len(deletion_curves):
            raise ValueError("insertion_curves must have one curve per explanation, as deletion_curves has.")
        results["insertion_auc"] = float(np.mean([curve_auc(curve) for curve in insertion_curves]))
    for name, values in (
        ("comprehensiveness", comprehensiveness),
        ("sufficiency", sufficiency),
        ("beats_random", beats_random),
    ):
        if values is not None:
            values = np.asarray(values, dtype=np.float64)
            if values.size != len(deletion_curves):
                raise ValueError(f"{name} must have one value per explanation ({len(deletion_curves)}).")
            results[name] = float(values.mean())
    results["num_explanations"] = len(deletion_curves)
    return results


__all__ = ["curve_auc", "faithfulness_summary"]
