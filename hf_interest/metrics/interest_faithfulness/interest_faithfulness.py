"""`evaluate` metric module: faithfulness of event attributions (deletion / insertion AUC, comprehensiveness,
sufficiency).

Load it with `evaluate.load(hf_interest.metrics.FAITHFULNESS_METRIC_PATH)`. `evaluate` copies this file into its module
cache and imports it from there, so it must stay self-contained: it imports only evaluate, datasets and numpy (one
import per line, because evaluate scans the import lines) and never `hf_interest`. The numbers are those of
`hf_interest.metrics.faithfulness`; the tests check both against each other.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Faithfulness of explanations that attribute a model's score to the events of a history. For each explanation, what the
model gave when events were removed or kept (`hf_interest.explain.faithfulness` runs the model):

- deletion_curve: the explained item's probability as the events are removed, highest attribution first, at evenly
  spaced points from none to all removed; its area (trapezoid rule, x from 0 to 1) is `deletion_auc`, lower is better.
- insertion_curve: the probability as the events are added to an empty history in the same order; `insertion_auc`,
  higher is better.
- comprehensiveness: score(all events) - score(without the top-k events), higher is better.
- sufficiency: score(all events) - score(the top-k events alone), lower is better.
Every number is the mean over explanations.
"""

_CITATION = """\
@inproceedings{deyoung2020eraser,
  title={ERASER: A Benchmark to Evaluate Rationalized NLP Models},
  author={DeYoung, Jay and Jain, Sarthak and Rajani, Nazneen Fatema and others},
  booktitle={ACL},
  year={2020}
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    deletion_curve (`list` of `list` of `float`): one deletion curve per explanation.
    insertion_curve (`list` of `list` of `float`): one insertion curve per explanation.
    comprehensiveness (`list` of `float`): one value per explanation.
    sufficiency (`list` of `float`): one value per explanation.
Returns:
    `deletion_auc`, `insertion_auc`, `comprehensiveness`, `sufficiency` (`float`), `num_explanations` (`int`).
Examples:
    >>> import evaluate
    >>> from hf_interest.metrics import FAITHFULNESS_METRIC_PATH
    >>> metric = evaluate.load(FAITHFULNESS_METRIC_PATH)
    >>> results = metric.compute(deletion_curve=[[0.4, 0.1, 0.0]], insertion_curve=[[0.0, 0.3, 0.4]],
    ...                          comprehensiveness=[1.5], sufficiency=[0.2])
    >>> round(results["deletion_auc"], 4), round(results["insertion_auc"], 4)
    (0.15, 0.25)
"""


def _auc(curve):
    values = np.asarray(curve, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("A curve needs at least one point.")
    if not np.isfinite(values).all():
        raise ValueError("A curve holds NaN or infinite values.")
    if values.size == 1:
        return float(values[0])
    return float(((values[1:] + values[:-1]) / 2).mean())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InterestFaithfulness(evaluate.Metric):
    """Deletion and insertion AUC, comprehensiveness and sufficiency of event attributions."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "deletion_curve": datasets.Sequence(datasets.Value("float64")),
                    "insertion_curve": datasets.Sequence(datasets.Value("float64")),
                    "comprehensiveness": datasets.Value("float64"),
                    "sufficiency": datasets.Value("float64"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1911.03429", "https://arxiv.org/abs/1806.07421"],
        )

    def _compute(self, deletion_curve, insertion_curve, comprehensiveness, sufficiency):
        if len(deletion_curve) == 0:
            raise ValueError("No explanations to evaluate: deletion_curve is empty.")
        return {
            "deletion_auc": float(np.mean([_auc(curve) for curve in deletion_curve])),
            "insertion_auc": float(np.mean([_auc(curve) for curve in insertion_curve])),
            "comprehensiveness": float(np.mean(np.asarray(comprehensiveness, dtype=np.float64))),
            "sufficiency": float(np.mean(np.asarray(sufficiency, dtype=np.float64))),
            "num_explanations": len(deletion_curve),
        }
