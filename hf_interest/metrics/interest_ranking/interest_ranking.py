"""`evaluate` metric module: full-ranking HR@K, NDCG@K and MRR@K for next-item recommendation.

Load it with `evaluate.load(hf_interest.metrics.RANKING_METRIC_PATH)`. `evaluate` copies this file into its module
cache and imports it from there, so it must stay self-contained: it imports only evaluate, datasets and numpy (one
import per line, because evaluate scans the import lines) and never `hf_interest`. It implements in numpy the same
definition as `hf_interest.metrics.ranking.ranks_from_scores`; the tests check that both give the same numbers.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Full-ranking metrics for next-item recommendation with one held-out target per user (leave-one-out).

Each user is scored against the whole item catalogue (no sampled negatives). Items in `ignore_index` (special tokens
such as pad/unk/mask) are never candidates; with `exclude_seen=True` (the default) the items of the user's history
`seen` are removed from the ranking as well. Then

    rank = number of candidate items scoring strictly higher than the target (0 = top),

so ties count in the target's favour. A target that is itself in `seen` (a repeat) is removed with the history, as
serving with `exclude_seen` never returns it: its rank is the number of items, a miss at every K, and
`targets_in_history` counts such users. Every candidate score and the target's score must be finite: a NaN compares
False with everything and would fake a perfect hit, so non-finite scores raise a ValueError.

From the ranks: HR@K (hit rate, equal to Recall@K with one target) is the share of users with rank < K; NDCG@K is the
mean of 1 / log2(rank + 2) over users with rank < K (0 otherwise); MRR@K is the mean of 1 / (rank + 1) over users with
rank < K (0 otherwise).

Two configurations: the default one takes `seen` as a keyword argument of `compute`; `config_name="with_seen"` makes
`seen` an input column, so it can also be given to `add_batch` (e.g. in distributed evaluation).
"""

_CITATION = """\
@article{jarvelin2002cumulated,
  title={Cumulated gain-based evaluation of IR techniques},
  author={J{\\"a}rvelin, Kalervo and Kek{\\"a}l{\\"a}inen, Jaana},
  journal={ACM Transactions on Information Systems},
  volume={20},
  number={4},
  pages={422--446},
  year={2002}
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `list` of `float`): One score per item index for every user, shape (num_users, num_items).
        Every row must have the same length.
    references (`list` of `int`): The held-out target item index of every user.
    seen (`list` of `list` of `int`, *optional*): Item indices of every user's input history (rows may differ in
        length). Negative values and ids in `ignore_index` may be used as padding. Required when `exclude_seen=True`.
        A keyword argument of `compute`, or an input column with `config_name="with_seen"`.
    exclude_seen (`bool`, defaults to `True`): Remove the history items from the ranking; a target among them is a
        miss.
    k_values (`list` of `int`, defaults to `[5, 10, 20]`): Cut-offs K.
    ignore_index (`list` of `int`, *optional*): Item indices that are never candidates (e.g. `[0, 1, 2]`).
Returns:
    `hr@K`, `ndcg@K`, `mrr@K` (`float`, averaged over users) for every K, `num_users` (`int`) and, with
    `exclude_seen=True`, `targets_in_history` (`int`: users whose target was in `seen`, counted as misses).
Examples:
    >>> import evaluate
    >>> from hf_interest.metrics import RANKING_METRIC_PATH
    >>> metric = evaluate.load(RANKING_METRIC_PATH)
    >>> scores = [[0.0, 0.0, 0.9, 0.5, 0.1, 0.7], [0.0, 0.0, 0.2, 0.8, 0.6, 0.4]]
    >>> results = metric.compute(predictions=scores, references=[3, 5], seen=[[2], [3, 0]], ignore_index=[0, 1],
    ...                          k_values=[1, 2])
    >>> results["hr@1"], results["hr@2"], results["num_users"]
    (0.0, 1.0, 2)
"""


def _ranks(scores, targets, seen, exclude_seen, ignore_index):
    """Numpy twin of `hf_interest.metrics.ranking.ranks_from_scores`; returns an int64 array of ranks."""
    if scores.ndim != 2:
        raise ValueError(f"predictions must be a (num_users, num_items) table of scores, got shape {scores.shape}.")
    batch_size, num_items = scores.shape
    if targets.shape != (batch_size,):
        raise ValueError(f"references must hold one target per user ({batch_size}), got shape {targets.shape}.")
    if batch_size == 0:
        raise ValueError("No users to evaluate: predictions is empty.")
    if targets.min() < 0 or targets.max() >= num_items:
        raise ValueError(f"references must lie in [0, {num_items}), got min/max {targets.min()}/{targets.max()}.")
    ignore = np.asarray([] if ignore_index is None else list(ignore_index), dtype=np.int64).reshape(-1)
    if ignore.size and (ignore.min() < 0 or ignore.max() >= num_items):
        raise ValueError(f"ignore_index values must lie in [0, {num_items}), got {ignore.tolist()}.")
    if ignore.size and np.isin(targets, ignore).any():
        bad = int(np.isin(targets, ignore).sum())
        raise ValueError(
            f"{bad} reference(s) are in ignore_index {ignore.tolist()}: a special token cannot be a target."
        )

    rows = np.arange(batch_size)
    candidate = np.ones((batch_size, num_items), dtype=bool)
    candidate[:, ignore] = False
    if exclude_seen:
        if seen is None:
            raise ValueError(
                "exclude_seen=True needs `seen` (each user's history item indices), or exclude_seen=False."
            )
        if len(seen) != batch_size:
            raise ValueError(f"seen must have one row per user ({batch_size}), got {len(seen)}.")
        items = [np.asarray(s, dtype=np.int64).reshape(-1) for s in seen]
        lengths = [len(s) for s in items]
        cols = np.concatenate(items) if sum(lengths) else np.empty(0, dtype=np.int64)
        if cols.size and cols.max() >= num_items:
            raise ValueError(f"seen holds item index {cols.max()} but predictions only have {num_items} columns.")
        cols = np.where(cols < 0, num_items, cols)  # negative padding goes to a discarded extra column
        seen_mask = np.zeros((batch_size, num_items + 1), dtype=bool)
        seen_mask[np.repeat(rows, lengths), cols] = True
        candidate &= ~seen_mask[:, :num_items]
    removed = ~candidate[rows, targets]  # a repeat target, removed with the history: not ranked, a miss

    target_scores = scores[rows, targets]
    bad_rows = (~np.isfinite(scores) & candidate).any(axis=1) | (~np.isfinite(target_scores) & ~removed)
    if bad_rows.any():
        bad_idx = np.flatnonzero(bad_rows)
        raise ValueError(
            f"{bad_idx.size} of {batch_size} rows have non-finite scores (NaN or +/-inf) among the candidate items or "
            f"at the target (first bad rows: {bad_idx[:10].tolist()}). A NaN compares False with everything and would "
            "fake a perfect hit; fix the model output, or put the special tokens that hold -inf in ignore_index."
        )
    ranks = ((scores > target_scores[:, None]) & candidate).sum(axis=1).astype(np.int64)
    return np.where(removed, num_items, ranks)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InterestRanking(evaluate.Metric):
    """Full-ranking HR@K / NDCG@K / MRR@K with strict-rank ties and optional exclusion of seen items."""

    def _info(self):
        features = {
            "predictions": datasets.Sequence(datasets.Value("float32")),
            "references": datasets.Value("int64"),
        }
        if self.config_name == "with_seen":
            features["seen"] = datasets.Sequence(datasets.Value("int64"))
        elif self.config_name != "default":
            raise ValueError(f"Unknown config_name {self.config_name!r}: use 'default' or 'with_seen'.")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
            reference_urls=["https://doi.org/10.1145/582415.582418"],
        )

    def _compute(self, predictions, references, seen=None, exclude_seen=True, k_values=(5, 10, 20), ignore_index=None):
        ks = [int(k) for k in k_values]
        if not ks or any(k <= 0 for k in ks):
            raise ValueError(f"k_values must be a non-empty list of positive integers, got {k_values!r}.")
        lengths = {len(p) for p in predictions}
        if len(lengths) > 1:
            raise ValueError(
                f"Every row of predictions must score the same catalogue; got row lengths {sorted(lengths)}."
            )
        # float32 is what the input column stores; comparing in float32 matches the torch implementation exactly.
        scores = np.asarray(predictions, dtype=np.float32)
        targets = np.asarray(references, dtype=np.int64).reshape(-1)
        ranks = _ranks(scores, targets, seen, exclude_seen, ignore_index).astype(np.float64)

        results = {}
        hits = {k: ranks < k for k in ks}
        for k in ks:
            results[f"hr@{k}"] = float(hits[k].mean())
        for k in ks:
            results[f"ndcg@{k}"] = float(np.where(hits[k], 1.0 / np.log2(ranks + 2.0), 0.0).mean())
        for k in ks:
            results[f"mrr@{k}"] = float(np.where(hits[k], 1.0 / (ranks + 1.0), 0.0).mean())
        results["num_users"] = int(ranks.size)
        if exclude_seen:
            results["targets_in_history"] = int((ranks >= scores.shape[1]).sum())
        return results
