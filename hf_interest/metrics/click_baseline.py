"""The "logistic-regression-on-popularity" baseline for click prediction: the sanity floor beside every AUC.

`PopularityClickBaseline` predicts the click probability of a candidate item from one feature, `log1p` of the
item's number of training events, with a scikit-learn `LogisticRegression`. It knows nothing of the user: a click
model must beat it to show that it learned something about interests rather than about which items are popular. It
is fitted on the training click labels (`DataCollatorForClick`, ignored slots left out) and evaluated on the same
candidates as the model, with the same `click_metrics` (see `ARCHITECTURE.md`, "Evaluation protocol").

```python
baseline = PopularityClickBaseline().fit(item_counts, train_candidate_ids, train_click_labels)
probabilities = baseline.predict_proba(test_candidate_ids)   # same shape as the candidates
```
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PopularityClickBaseline"]

IGNORE_LABEL = -100.0


def _numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on an accelerator
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(value).__name__}.") from None


class PopularityClickBaseline:
    """Logistic regression of click on `log1p(train count of the candidate item)`: the popularity click baseline.

    Args:
        C (`float`, defaults to 1.0): Inverse L2 regularisation strength of `sklearn.linear_model.LogisticRegression`.
        max_iter (`int`, defaults to 1000): Iterations of its `lbfgs` solver.

    Attributes (after `fit`):
        item_counts_ (`np.ndarray` of shape `(N,)`, float64): Training-event count of every vocabulary index.
        model_ (`LogisticRegression`): The fitted model, one feature.
        coef_ (`float`), intercept_ (`float`): Its weight on `log1p(count)` and its bias: `p = sigmoid(coef_ *
            log1p(count) + intercept_)`.
        item_probabilities_ (`np.ndarray` of shape `(N,)`): The click probability of every vocabulary index.
        num_examples_ (`int`), num_ignored_ (`int`): Candidates used for fitting, and those left out (label -100).
    """

    def __init__(self, *, C: float = 1.0, max_iter: int = 1000):
        try:
            strength = float(C)
        except (TypeError, ValueError):
            strength = np.nan
        if not np.isfinite(strength) or strength <= 0:
            raise ValueError(f"C must be a positive finite number, got {C!r}.")
        self.C = strength
        self.max_iter = int(max_iter)
        self.item_counts_: np.ndarray | None = None
        self.model_ = None

    @staticmethod
    def _counts(item_counts) -> np.ndarray:
        counts = _numpy(item_counts, "item_counts").astype(np.float64)
        if counts.ndim != 1 or counts.size == 0:
            raise ValueError(
                f"item_counts must be a non-empty 1-D array (one train count per vocabulary index, special tokens "
                f"included), got shape {counts.shape}."
            )
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise ValueError("item_counts must be finite and non-negative.")
        return counts

    def _check_ids(self, candidate_ids, name: str = "candidate_ids") -> np.ndarray:
        ids = _numpy(candidate_ids, name)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} must hold integer item indices, got dtype {ids.dtype}.")
        ids = ids.astype(np.int64)
        num_items = len(self.item_counts_)
        if ids.size and (ids.min() < 0 or ids.max() >= num_items):
            raise ValueError(
                f"{name} holds indices outside [0, {num_items}) (min {ids.min()}, max {ids.max()}): item_counts must "
                "have one entry per vocabulary index (len(tokenizer), special tokens included)."
            )
        return ids

    def features(self, candidate_ids) -> np.ndarray:
        """The single feature of each candidate.

        Args:
            candidate_ids: Item indices, any shape.

        Returns:
            `np.ndarray` of the same shape, float64: `log1p(train count)` of each candidate.
        """
        self._require_fit()
        return np.log1p(self.item_counts_)[self._check_ids(candidate_ids)]

    def fit(self, item_counts, candidate_ids, click_labels) -> PopularityClickBaseline:
        """Fit the logistic regression on the labelled candidates.

        Args:
            item_counts: `(N,)` training-event count of every vocabulary index (the caller builds it, e.g. zeros for
                the special tokens followed by `BehaviorData.item_counts`).
            candidate_ids: Candidate item indices, any shape (e.g. `(B, T, C)` of `DataCollatorForClick`).
            click_labels: Same shape: 1.0 click, 0.0 no click, -100.0 ignored (left out, counted in `num_ignored_`).

        Returns:
            `self`.

        Raises:
            ValueError: Mismatched shapes, labels other than 1/0/-100, indices outside `item_counts`, or a single
                class among the labelled candidates.
        """
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 (scikit-learn is slow to import)

        self.item_counts_ = self._counts(item_counts)
        ids = self._check_ids(candidate_ids)
        labels = _numpy(click_labels, "click_labels").astype(np.float64)
        if labels.shape != ids.shape:
            raise ValueError(
                f"candidate_ids and click_labels must have the same shape, got {ids.shape} and {labels.shape}."
            )
        known = (labels == 0) | (labels == 1) | (labels == IGNORE_LABEL)
        if not known.all():
            bad = labels[~known]
            raise ValueError(
                f"click_labels must be 1.0, 0.0 or -100.0 (ignored); {bad.size} are not (e.g. {bad[:5].tolist()})."
            )
        kept = labels != IGNORE_LABEL
        y = labels[kept].astype(np.int64)
        num_pos = int(y.sum())
        if num_pos == 0 or num_pos == y.size:
            raise ValueError(
                f"Fitting needs both clicks and non-clicks, got {num_pos} clicks and {y.size - num_pos} non-clicks "
                f"among {y.size} labelled candidates ({int((~kept).sum())} ignored)."
            )
        x = np.log1p(self.item_counts_)[ids[kept]][:, None]  # (n, 1)
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(x, y)
        self.coef_ = float(self.model_.coef_[0, 0])
        self.intercept_ = float(self.model_.intercept_[0])
        self.item_probabilities_ = self.model_.predict_proba(np.log1p(self.item_counts_)[:, None])[:, 1]
        self.num_examples_ = int(y.size)
        self.num_ignored_ = int((~kept).sum())
        return self

    def predict_proba(self, candidate_ids) -> np.ndarray:
        """Click probability of each candidate.

        Args:
            candidate_ids: Item indices, any shape. Ignored slots (pad id) get a probability too; mask them with the
                click labels as for the model.

        Returns:
            `np.ndarray` of the same shape, float64 in (0, 1).
        """
        self._require_fit()
        return self.item_probabilities_[self._check_ids(candidate_ids)]

    def _require_fit(self) -> None:
        if self.model_ is None:
            raise ValueError(
                "PopularityClickBaseline is not fitted yet; call fit(item_counts, candidate_ids, labels)."
            )
