"""`evaluate` metric module: ROC AUC, log loss and group AUC for click prediction.

Load it with `evaluate.load(hf_interest.metrics.CLICK_METRIC_PATH)`. `evaluate` copies this file into its module cache
and imports it from there, so it must stay self-contained: it imports only evaluate, datasets, numpy and scikit-learn
(one import per line, because evaluate scans the import lines) and never `hf_interest`. AUC and log loss are
scikit-learn's, as in `hf_interest.metrics.click`; the tests check both against each other.
"""

import datasets
import evaluate
import numpy as np
import sklearn.metrics

_DESCRIPTION = """\
Metrics for click (CTR) prediction: one predicted click probability and one 0/1 label per example.

- AUC: area under the ROC curve (scikit-learn's `roc_auc_score`: the chance that a random positive scores above a
  random negative, ties counting one half).
- log loss: mean binary cross-entropy (scikit-learn's `log_loss`, probabilities clipped to the float64 machine
  epsilon).
- GAUC (with `groups`, e.g. user ids): the AUC within each group, averaged with weights equal to the group's number
  of examples, over the groups holding both classes (`gauc_groups` says how many).
Probabilities must be finite and in [0, 1] (pass sigmoid(logits)); labels must be 0 or 1.
"""

_CITATION = """\
@inproceedings{zhou2018din,
  title={Deep Interest Network for Click-Through Rate Prediction},
  author={Zhou, Guorui and Zhu, Xiaoqiang and Song, Chenru and others},
  booktitle={KDD},
  year={2018}
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `float`): Predicted click probability of every example, in [0, 1].
    references (`list` of `int`): 0/1 label of every example.
    groups (`list` of `int`, *optional*): Group (user) of every example; adds `gauc` and `gauc_groups`. A keyword
        argument of `compute`, or an input column with `config_name="with_groups"`.
Returns:
    `auc`, `log_loss`, `positive_rate` (`float`), `num_examples` (`int`), and `gauc` (`float`) / `gauc_groups` (`int`)
    when groups are given.
Examples:
    >>> import evaluate
    >>> from hf_interest.metrics import CLICK_METRIC_PATH
    >>> metric = evaluate.load(CLICK_METRIC_PATH)
    >>> results = metric.compute(predictions=[0.9, 0.2, 0.6, 0.6], references=[1, 0, 0, 1])
    >>> results["auc"], results["num_examples"]
    (0.875, 4)
"""


def _auc(scores, labels):
    num_pos = int(labels.sum())
    num_neg = labels.size - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError(f"AUC needs both classes, got {num_pos} positives and {num_neg} negatives.")
    return float(sklearn.metrics.roc_auc_score(labels, scores))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InterestClick(evaluate.Metric):
    """ROC AUC, log loss and group AUC for click prediction."""

    def _info(self):
        features = {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
        if self.config_name == "with_groups":
            features["groups"] = datasets.Value("int64")
        elif self.config_name != "default":
            raise ValueError(f"Unknown config_name {self.config_name!r}: use 'default' or 'with_groups'.")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
            reference_urls=["https://arxiv.org/abs/1706.06978"],
        )

    def _compute(self, predictions, references, groups=None):
        scores = np.asarray(predictions, dtype=np.float64).reshape(-1)
        labels = np.asarray(references, dtype=np.int64).reshape(-1)
        if scores.size == 0:
            raise ValueError("No examples to evaluate: predictions is empty.")
        if not np.isfinite(scores).all():
            raise ValueError(f"{int((~np.isfinite(scores)).sum())} predictions are NaN or infinite.")
        if scores.min() < 0 or scores.max() > 1:
            raise ValueError(
                f"predictions must be probabilities in [0, 1], got min/max {scores.min()}/{scores.max()}; "
                "pass sigmoid(logits) rather than logits."
            )
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"references must be 0 or 1, got values {np.unique(labels)[:10].tolist()}.")
        results = {
            "auc": _auc(scores, labels),
            "log_loss": float(sklearn.metrics.log_loss(labels, scores, labels=[0, 1])),
            "positive_rate": float(labels.mean()),
            "num_examples": int(labels.size),
        }
        if groups is not None:
            groups = np.asarray(groups).reshape(-1)
            if groups.size != labels.size:
                raise ValueError(f"groups must have one entry per example ({labels.size}), got {groups.size}.")
            total, weight, used = 0.0, 0, 0
            order = np.argsort(groups, kind="stable")
            boundaries = np.flatnonzero(np.diff(groups[order])) + 1
            for member in np.split(order, boundaries):
                group_labels = labels[member]
                if 0 < group_labels.sum() < group_labels.size:
                    total += _auc(scores[member], group_labels) * group_labels.size
                    weight += group_labels.size
                    used += 1
            if used == 0:
                raise ValueError("Group AUC needs at least one group with both positives and negatives.")
            results["gauc"] = total / weight
            results["gauc_groups"] = used
        return results
