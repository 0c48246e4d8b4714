"""Click-prediction metrics: ROC AUC and log loss (scikit-learn's `roc_auc_score` / `log_loss` on checked inputs),
and group AUC (the AUC within each user, in one vectorised pass; scikit-learn has no GAUC).

Used by the training loop; `interest_click` (the `evaluate` module in this package) computes the same with the same
scikit-learn functions, and the tests check that both agree.
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


def roc_auc(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """
    Area under the ROC curve (`sklearn.metrics.roc_auc_score`): the chance that a random positive scores above a random
    negative, ties counting one half. Raises a `ValueError` when only one class is present (AUC is undefined).
    """
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 (scikit-learn is slow to import)

    scores, labels = _check(probabilities, labels)
    num_pos = int(labels.sum())
    num_neg = labels.numel() - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError(f"AUC needs both classes, got {num_pos} positives and {num_neg} negatives.")
    return float(roc_auc_score(labels.numpy(), scores.numpy()))


def log_loss(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean binary cross-entropy (`sklearn.metrics.log_loss`: probabilities clipped to the float64 machine epsilon)."""
    from sklearn.metrics import log_loss as sklearn_log_loss  # noqa: PLC0415

    probs, labels = _check(probabilities, labels)
    return float(sklearn_log_loss(labels.numpy(), probs.numpy(), labels=[0, 1]))


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
