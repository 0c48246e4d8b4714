"""Click-prediction metrics: the torch implementation, the `evaluate` module and scikit-learn agree."""

import os

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from hf_interest.metrics import CLICK_METRIC_PATH, click_metrics, group_auc, log_loss, roc_auc


@pytest.fixture(scope="module")
def click_metric(tmp_path_factory):
    evaluate = pytest.importorskip("evaluate")
    cache_dir = str(tmp_path_factory.mktemp("evaluate_cache"))
    default = evaluate.load(CLICK_METRIC_PATH, cache_dir=cache_dir, keep_in_memory=True)
    with_groups = evaluate.load(CLICK_METRIC_PATH, "with_groups", cache_dir=cache_dir, keep_in_memory=True)
    return default, with_groups


def random_case(seed: int, n: int = 600):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    # informative but noisy scores, rounded so that many of them tie
    probs = torch.sigmoid(labels * 0.8 + torch.randn(n, generator=g)).mul(25).round().div(25)
    groups = torch.randint(0, 40, (n,), generator=g)
    return probs.double(), labels, groups


def sklearn_gauc(probs, labels, groups):
    total = weight = 0
    for g in np.unique(groups):
        member = groups == g
        if 0 < labels[member].sum() < member.sum():
            total += roc_auc_score(labels[member], probs[member]) * member.sum()
            weight += member.sum()
    return total / weight


def test_hand_computed_case():
    # positives 0.9 and 0.6, negatives 0.2 and 0.6: pairs (0.9>0.2, 0.9>0.6, 0.6>0.2, 0.6=0.6) -> 3.5 / 4
    probs, labels = torch.tensor([0.9, 0.2, 0.6, 0.6]), torch.tensor([1, 0, 0, 1])
    assert roc_auc(probs, labels) == pytest.approx(0.875)
    expected_loss = -(np.log(0.9) + np.log(0.8) + np.log(0.4) + np.log(0.6)) / 4
    assert log_loss(probs, labels) == pytest.approx(expected_loss)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_evaluate_and_sklearn_agree(click_metric, seed):
    probs, labels, groups = random_case(seed)
    default, with_groups = click_metric
    ours = click_metrics(probs, labels, groups)
    assert 0.55 < ours["auc"] < 0.95  # informative, not degenerate
    assert ours["auc"] == pytest.approx(roc_auc_score(labels.numpy(), probs.numpy()), abs=1e-12)
    assert ours["log_loss"] == pytest.approx(sk_log_loss(labels.numpy(), probs.numpy()), abs=1e-9)
    assert ours["gauc"] == pytest.approx(sklearn_gauc(probs.numpy(), labels.numpy(), groups.numpy()), abs=1e-12)

    from_module = default.compute(predictions=probs.tolist(), references=labels.tolist(), groups=groups.tolist())
    for key in ("auc", "log_loss", "gauc", "positive_rate"):
        assert from_module[key] == pytest.approx(ours[key], abs=1e-12), key
    assert from_module["num_examples"] == ours["num_examples"] == len(labels)
    assert from_module["gauc_groups"] == ours["gauc_groups"]

    for start in range(0, len(labels), 250):  # add_batch, groups as a column
        stop = start + 250
        with_groups.add_batch(
            predictions=probs[start:stop].tolist(), references=labels[start:stop].tolist(), groups=groups[start:stop]
        )
    batched = with_groups.compute()
    assert batched["gauc"] == pytest.approx(ours["gauc"], abs=1e-12)
    assert batched["auc"] == pytest.approx(ours["auc"], abs=1e-12)


def test_group_auc_skips_one_class_groups():
    probs = torch.tensor([0.9, 0.1, 0.8, 0.7, 0.3])
    labels = torch.tensor([1, 0, 1, 1, 0])
    groups = torch.tensor([0, 0, 1, 1, 2])  # group 1 only positives, group 2 only negatives
    gauc, used = group_auc(probs, labels, groups)
    assert (gauc, used) == (1.0, 1)


@pytest.mark.parametrize(
    "probs, labels, message",
    [
        ([0.5, float("nan")], [0, 1], "NaN or infinite"),
        ([0.5, 1.5], [0, 1], "sigmoid"),
        ([0.5, 0.4], [0, 2], "0 or 1"),
        ([0.5, 0.4], [1, 1], "both classes"),
        ([0.5], [0, 1], "same number"),
    ],
)
def test_bad_input_is_refused(probs, labels, message):
    with pytest.raises(ValueError, match=message):
        click_metrics(torch.tensor(probs), torch.tensor(labels))


def test_module_refuses_logits(click_metric):
    default, _ = click_metric
    with pytest.raises(ValueError, match="sigmoid"):
        default.compute(predictions=[2.0, -1.0], references=[1, 0])


def test_click_module_is_self_contained():
    from evaluate.loading import get_imports

    imports = get_imports(os.path.join(CLICK_METRIC_PATH, "interest_click.py"))
    # never hf_interest (evaluate copies the file into its cache); scikit-learn gives the AUC and the log loss
    assert {name for kind, name, *_ in imports} == {"datasets", "evaluate", "numpy", "sklearn"}
