"""Ranking metrics and the popularity baseline for next-item recommendation.

- `ranks_from_scores` / `ranking_metrics_from_ranks` / `RankingAccumulator`: full-ranking HR@K, NDCG@K, MRR@K in torch
  (see `ranking.py` for the protocol: strict ranks, `exclude_seen`, finite scores only).
- `PopularityRecommender`: the most-popular baseline, scored by the same code; `HistoryCategoryRecommender` and
  `TransitionRecommender`: the history's category mix and first-order transitions, two more baselines without
  training; `synthetic_oracle_scores`: the known optimum of the synthetic world.
- `format_results_table`: results beside the baseline, headed by the protocol.
- `RANKING_METRIC_PATH`: the same metric as an `evaluate` module, `evaluate.load(RANKING_METRIC_PATH)`.
- `click_metrics` / `roc_auc` / `log_loss` / `group_auc`: click-prediction metrics in torch, and `CLICK_METRIC_PATH`,
  their `evaluate` module.
- `curve_auc` / `faithfulness_summary`: faithfulness of explanations (deletion / insertion AUC, comprehensiveness,
  sufficiency), and `FAITHFULNESS_METRIC_PATH`, their `evaluate` module.
"""

from pathlib import Path

from .baselines import HistoryCategoryRecommender, TransitionRecommender, synthetic_oracle_scores
from .click import click_metrics, group_auc, log_loss, roc_auc
from .click_baseline import PopularityClickBaseline
from .faithfulness import curve_auc, faithfulness_summary
from .forecast import decayed_category_mix, forecast_metrics, next_k_category_mix, recent_category_mix
from .popularity import PopularityRecommender
from .ranking import (
    DEFAULT_KS,
    RANK_DEFINITION,
    RankingAccumulator,
    format_protocol,
    format_results_table,
    ranking_metrics_from_ranks,
    ranking_protocol,
    ranks_from_scores,
    ranks_under_both_protocols,
    user_sample_description,
    user_sample_error_bound,
)

RANKING_METRIC_PATH: str = str(Path(__file__).resolve().parent / "interest_ranking")
"""Directory of the `interest_ranking` `evaluate` module; pass it to `evaluate.load`."""

CLICK_METRIC_PATH: str = str(Path(__file__).resolve().parent / "interest_click")
"""Directory of the `interest_click` `evaluate` module (AUC, log loss, GAUC); pass it to `evaluate.load`."""

FAITHFULNESS_METRIC_PATH: str = str(Path(__file__).resolve().parent / "interest_faithfulness")
"""Directory of the `interest_faithfulness` `evaluate` module (explanations); pass it to `evaluate.load`."""

__all__ = [
    "CLICK_METRIC_PATH",
    "FAITHFULNESS_METRIC_PATH",
    "DEFAULT_KS",
    "RANKING_METRIC_PATH",
    "RANK_DEFINITION",
    "HistoryCategoryRecommender",
    "PopularityClickBaseline",
    "PopularityRecommender",
    "TransitionRecommender",
    "synthetic_oracle_scores",
    "RankingAccumulator",
    "click_metrics",
    "curve_auc",
    "faithfulness_summary",
    "forecast_metrics",
    "format_protocol",
    "format_results_table",
    "group_auc",
    "log_loss",
    "decayed_category_mix",
    "next_k_category_mix",
    "ranking_metrics_from_ranks",
    "ranking_protocol",
    "ranks_from_scores",
    "ranks_under_both_protocols",
    "user_sample_description",
    "user_sample_error_bound",
    "recent_category_mix",
    "roc_auc",
]
