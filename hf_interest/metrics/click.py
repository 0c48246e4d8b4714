"""Click-prediction metrics in torch: ROC AUC (ties averaged), log loss, and group AUC (per user).

One definition, used by the training loop; `interest_click` (the `evaluate` module in this package) is its numpy twin
and the tests check that both agree with each other and with scikit-learn's `roc_auc_score` / `log_loss`.
"""

from __future__ import annotations

import torch


def _check(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probabilities = torch.as_tensor(probabilities).detach().reshape(-1).double().cpu()
    labels = torch.as_tensor(labels).detach().reshape(-1).cpu()
    if probabilities.numel() != labels.numel():
        raise ValueError(
            f"probabilities and labels must have the same number of examples, got {probabilities.numel()} and "
            f"{labels.numel()}."
        )
    if probabilities.numel() == 0:
        raise ValueError("No examples to evaluate: probabilities is empty.")
    if not torch.isfinite(probabilities).all():
        bad = int((~torch.isfinite(probabilities)).sum())
        raise ValueError(f"{bad} probabilities are NaN or infinite; fix the model output before evaluating.")
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError(
            f"probabilities must lie in [0, 1], got min/max {probabilities.min().item()}/{probabilities.max().item()}; "
            "pass torch.sigmoid(logits) rather than logits."
        )
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {torch.unique(labels)[:10].tolist()}.")
    return probabilities, labels.long()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of `values` (1-D), tied values sharing the mean of their ranks (scipy's `rankdata` 'average')."""
    unique, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # rank of the last member of each tie group
    return (ends - (counts.double() - 1) / 2)[inverse]


def roc_auc(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """
    Area under the ROC curve as the Mann-Whitney statistic: the chance that a random positive scores above a random
    negative, ties counting one half. Raises a `ValueError` when only one class is present (AUC is undefined).
    """
    scores, labels = _check(probabilities, labels)
    num_pos = int(labels.sum())
    num_neg = labels.numel() - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError(f"AUC needs both classes, got {num_pos} positives and {num_neg} negatives.")
    ranks = average_ranks(scores)
    return float((ranks[labels == 1].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def log_loss(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps] with eps the float64 machine epsilon."""
    probs, labels = _check(probabilities, labels)
    eps = torch.finfo(torch.float64).eps
    probs = probs.clamp(eps, 1 - eps)
    return float(-(labels * probs.log() + (1 - labels) * (1 - probs).log()).mean())


def group_auc(probabilities: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> tuple[float, int]:
    """
    GAUC: the AUC within each group (user), averaged with weights equal to the group's number of examples, over the
    groups that hold both classes. Returns `(gauc, num_groups_used)`; groups with one class only are skipped (they
    have no AUC) and the count of used groups says how many remained.
    """
    scores, labels = _check(probabilities, labels)
    groups = torch.as_tensor(groups).reshape(-1).cpu()
    if groups.numel() != labels.numel():
        raise ValueError(f"groups must have one entry per example ({labels.numel()}), got {groups.numel()}.")
    # Average ranks within each group in one pass: sort by (group, score), tie groups are equal (group, score) keys.
    _, group_index = torch.unique(groups, return_inverse=True)
    unique_scores, dense = torch.unique(scores, return_inverse=True)
    keys, key_index, key_counts = torch.unique(
        group_index * unique_scores.numel() + dense, return_inverse=True, return_counts=True
    )
    sizes = torch.bincount(group_index).double()
    group_start = sizes.cumsum(0) - sizes  # examples in the groups before each group
    within = key_counts.cumsum(0).double() - (key_counts.double() - 1) / 2 - group_start[keys // unique_scores.numel()]
    ranks = within[key_index]
    num_pos = torch.bincount(group_index, weights=labels.double(), minlength=sizes.numel())
    num_neg = sizes - num_pos
    positive_rank_sums = torch.bincount(group_index, weights=ranks * labels, minlength=sizes.numel())
    usable = (num_pos > 0) & (num_neg > 0)
    if not usable.any():
        raise ValueError("Group AUC needs at least one group with both positives and negatives.")
    aucs = (positive_rank_sums[usable] - num_pos[usable] * (num_pos[usable] + 1) / 2) / (
        num_pos[usable] * num_neg[usable]
    )
    return float((aucs * sizes[usable]).sum() / sizes[usable].sum()), int(usable.sum())


def click_metrics(probabilities: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None) -> dict:
    """AUC, log loss, the positive rate and the number of examples (and GAUC when `groups` is given)."""
    probs, labels_ = _check(probabilities, labels)
    results = {
        "auc": roc_auc(probs, labels_),
        "log_loss": log_loss(probs, labels_),
        "positive_rate": float(labels_.double().mean()),
        "num_examples": int(labels_.numel()),
    }
    if groups is not None:
        results["gauc"], results["gauc_groups"] = group_auc(probs, labels_, groups)
    return results
