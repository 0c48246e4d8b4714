"""Tests of the CPU training kernels (`hf_interest.training.kernels`) that training applies to the plain model:
`FastCPUDropout` (a cheaper CPU dropout mask) and `ExcludedCrossEntropy` (the fused full-softmax loss with excluded
items). Each must behave exactly as the plain PyTorch code of the model file it replaces, up to the documented
rounding of the dropout rate; a patched model must train, save and load as the plain one."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_config
from torch import nn

from hf_interest import InterestForNextItemPrediction
from hf_interest.training.kernels import (
    ExcludedCrossEntropy,
    FastCPUDropout,
    apply_cpu_training_kernels,
    fused_masked_cross_entropy,
)

ROOT = Path(__file__).resolve().parents[1]


def test_dropout_is_the_identity_in_eval_mode_and_at_zero_rate():
    x = torch.randn(4, 5, 6)
    dropout = FastCPUDropout(0.3).eval()
    assert dropout(x) is x
    assert FastCPUDropout(0.0).train()(x) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_rates_outside_zero_one(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastCPUDropout(p)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_rate_scale_and_every_16_bit_slice(p):
    torch.manual_seed(0)
    count = 3 * 400_000
    out = FastCPUDropout(p).train()(torch.ones(count))
    threshold = round(p * 65536)
    keep_prob = 1 - threshold / 65536
    assert abs(threshold / 65536 - p) < 1e-5
    dropped = out == 0
    # kept elements are scaled by exactly 1 / keep probability, so the expectation is unchanged
    assert torch.allclose(out[~dropped], torch.full_like(out[~dropped], 1 / keep_prob))
    # element i uses 16-bit slice i % 3 of a 64-bit word: each slice must drop at the rate (a slice taken from the
    # word's top bits, whose sign bit is always 0 after random_(), would never drop)
    for slice_index in range(3):
        rate = dropped[slice_index::3].double().mean().item()
        sigma = math.sqrt(p * (1 - p) / (count / 3))
        assert abs(rate - threshold / 65536) < 5 * sigma, (slice_index, rate)
    # neighbours (same word and the next) are independent: the joint drop rate is the product
    both = (dropped[:-1] & dropped[1:]).double().mean().item()
    assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / count)


def test_dropout_is_reproducible_by_seed_and_gradient_uses_the_same_mask():
    x = torch.randn(7, 11, 13, requires_grad=True)
    dropout = FastCPUDropout(0.25).train()
    torch.manual_seed(3)
    first = dropout(x)
    torch.manual_seed(3)
    second = dropout(x)
    torch.manual_seed(4)
    third = dropout(x)
    assert torch.equal(first, second)
    assert not torch.equal(first, third)
    first.sum().backward()
    scale = 65536 / (65536 - round(0.25 * 65536))
    expected = torch.where(first != 0, torch.full_like(x, scale), torch.zeros_like(x))
    assert torch.allclose(x.grad, expected)


def test_dropout_handles_non_contiguous_and_odd_sized_inputs():
    torch.manual_seed(0)
    x = torch.randn(5, 8, 3).transpose(0, 1)  # 120 elements, not contiguous
    out = FastCPUDropout(0.5).train()(x)
    assert out.shape == x.shape
    kept = out != 0
    assert torch.allclose(out[kept], 2 * x[kept])
    assert FastCPUDropout(0.5).train()(torch.randn(0, 4)).shape == (0, 4)
    assert FastCPUDropout(0.5).train()(torch.ones(1)).shape == (1,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_excluded_cross_entropy_equals_masked_cross_entropy(dtype):
    torch.manual_seed(0)
    rows, items, width = 37, 50, 8
    hidden = torch.randn(rows, width, dtype=dtype, requires_grad=True)
    weight = torch.randn(items, width, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, items, (rows,))
    excluded = torch.rand(rows, items) < 0.3
    excluded[torch.arange(rows), targets] = False
    row_weights = torch.rand(rows, dtype=dtype)

    expected = F.cross_entropy((hidden @ weight.T).masked_fill(excluded, float("-inf")), targets, reduction="none")
    (expected * row_weights).sum().backward()
    expected_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    logits = hidden @ weight.T
    losses, overwritten = ExcludedCrossEntropy.apply(logits, targets, excluded)
    (losses * row_weights).sum().backward()
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(losses, expected, atol=tolerance)
    assert torch.allclose(hidden.grad, expected_grads[0], atol=tolerance)
    assert torch.allclose(weight.grad, expected_grads[1], atol=tolerance)
    # the documented side effect: the logits tensor now holds the masked values
    assert overwritten.data_ptr() == logits.data_ptr() and torch.isinf(logits.detach()[excluded]).all()


def test_excluded_cross_entropy_gradcheck_with_a_broadcast_mask():
    torch.manual_seed(1)
    hidden = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64)
    targets = torch.tensor([3, 4, 5, 6, 7, 8])
    excluded = torch.arange(9) < 3  # (N,): special tokens only, broadcast over rows

    def losses(h):
        return ExcludedCrossEntropy.apply(h @ weight.T, targets, excluded)[0]

    assert torch.autograd.gradcheck(losses, (hidden,))


@pytest.mark.parametrize("kernels", [False, True])
def test_model_loss_and_gradients_equal_the_unfused_reference(kernels):
    """The model's full-softmax loss with loss_exclude_seen, plain and with the fused kernel applied, against the loss
    written out with F.cross_entropy."""
    torch.manual_seed(0)
    config = tiny_config(num_items=40, hidden_dropout_prob=0.0)
    model = InterestForNextItemPrediction(config).train()
    if kernels:
        assert apply_cpu_training_kernels(model) == {"dropout": 2, "loss": 1}  # the embeddings' and the layer's
        assert model.masked_cross_entropy is fused_masked_cross_entropy
    input_ids = torch.randint(3, 40, (3, 12))
    input_ids[0, :4] = 0  # left padding
    input_ids[1, 5] = input_ids[1, 2]  # a repeated item: seen before its second occurrence
    labels = torch.cat([input_ids[:, 1:], torch.randint(3, 40, (3, 1))], dim=1)
    labels[0, :4] = -100
    attention_mask = (input_ids != 0).long()
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    logits = model.item_head(hidden).float()  # (B, T, N)
    seen = torch.zeros(3, 12, 40, dtype=torch.bool)
    for row in range(3):
        for t in range(12):
            seen[row, t, input_ids[row, : t + 1]] = True
    seen[..., :3] = True  # special tokens are never candidates
    labelled = labels >= 3
    labelled &= ~seen.gather(2, labels.clamp(min=0)[..., None])[..., 0]  # a repeat target leaves the loss
    assert (labels >= 3).sum() > labelled.sum()  # the batch has one
    reference = F.cross_entropy(logits.masked_fill(seen, float("-inf"))[labelled], labels[labelled])
    reference.backward()
    assert torch.allclose(loss, reference, atol=1e-6)
    for name, grad in grads.items():
        assert torch.allclose(grad, model.get_parameter(name).grad, atol=1e-6), name


def test_patched_model_trains_like_the_plain_one_and_saves_a_plain_model(tmp_path):
    """The kernels change how a step is computed, not what the model is: the same seed gives the same loss at
    dropout 0 and the same eval outputs; a checkpoint saved from a patched model loads as the plain model."""
    config = tiny_config(num_items=40, num_hidden_layers=2, hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    plain = InterestForNextItemPrediction(config).train()
    torch.manual_seed(0)
    patched = InterestForNextItemPrediction(config).train()
    patched_count = apply_cpu_training_kernels(patched)
    assert patched_count["dropout"] == sum(isinstance(m, nn.Dropout) for m in plain.modules()) > 0
    assert all(type(m) is FastCPUDropout for m in patched.modules() if isinstance(m, nn.Dropout))
    input_ids = torch.randint(3, 40, (4, 12))
    labels = torch.cat([input_ids[:, 1:], torch.randint(3, 40, (4, 1))], dim=1)
    for model in (plain, patched):
        model(input_ids=input_ids, labels=labels).loss.backward()
    for (name, a), b in zip(plain.named_parameters(), patched.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    patched.save_pretrained(tmp_path)
    reloaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    assert not any(type(m) is FastCPUDropout for m in reloaded.modules())
    assert "masked_cross_entropy" not in vars(reloaded)
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=input_ids).logits, patched.eval()(input_ids=input_ids).logits)
    # only what was asked for is patched
    only_dropout = InterestForNextItemPrediction(config)
    assert apply_cpu_training_kernels(only_dropout, loss=False)["loss"] == 0
    assert "masked_cross_entropy" not in vars(only_dropout)


def test_step_benchmark_times_every_variant():
    """benchmarks/benchmark_step.py swaps the kernels in and out of one model: every variant gets a row."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "benchmark_step.py"), "--dataset", "synthetic", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for variant in ("reference (", "+ FastCPUDropout", "+ fused loss", "+ keep freed memory", "last position only"):
        assert variant in run.stdout, variant


@pytest.mark.parametrize("long_term,short_term", [(True, True), (False, False), (True, False), (False, True)])
@pytest.mark.parametrize("masked", [True, False])
def test_states_to_keep_gives_the_states_of_the_full_pass(long_term, short_term, masked):
    """Evaluation and recommend run the last layer for the last positions only: the states must not change."""
    torch.manual_seed(0)
    config = tiny_config(num_items=30, num_hidden_layers=2, long_term_interest=long_term,
                         short_term_interest=short_term, short_term_window=3)  # fmt: skip
    model = InterestForNextItemPrediction(config).eval()
    input_ids = torch.randint(3, 30, (4, 12))
    attention_mask = None
    if masked:
        input_ids[0, :5] = 0  # left padding
        input_ids[1, :11] = 0  # one event
        input_ids[2, :] = 0  # nothing
        attention_mask = (input_ids != 0).long()
    timestamps = torch.cumsum(torch.randint(0, 10_000, (4, 12)), dim=1)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "timestamps": timestamps}
    with torch.no_grad():
        full = model.model(**inputs)
        for keep in (1, 3, 11):
            part = model.model(**inputs, states_to_keep=keep)
            assert part.last_hidden_state.shape == (4, keep, 16)
            assert torch.allclose(part.last_hidden_state, full.last_hidden_state[:, -keep:], atol=1e-5)
            for name in ("long_term_interest", "short_term_interest", "interest_gate"):
                if getattr(full, name) is not None:
                    assert torch.allclose(getattr(part, name), getattr(full, name)[:, -keep:], atol=1e-5), name
        # 0 and anything >= seq_len: every position
        assert torch.equal(model.model(**inputs, states_to_keep=12).last_hidden_state, full.last_hidden_state)
        logits = model(**inputs, logits_to_keep=1).logits
        assert torch.allclose(logits[:, -1], model(**inputs).logits[:, -1], atol=1e-5)
        attentions = model.model(**inputs, states_to_keep=2, output_attentions=True).attentions
        full_attentions = model.model(**inputs, output_attentions=True).attentions
        assert torch.allclose(attentions[-1], full_attentions[-1][:, :, -2:], atol=1e-6)
    with pytest.raises(ValueError, match="states_to_keep"):
        model.model(**inputs, states_to_keep=-1)


def test_recommend_reads_the_same_state_as_the_full_pass():
    torch.manual_seed(0)
    config = tiny_config(num_items=30, num_hidden_layers=2)
    model = InterestForNextItemPrediction(config).eval()
    input_ids = torch.randint(3, 30, (3, 12))
    input_ids[0, :4] = 0
    recommended = model.recommend(input_ids, top_k=5, exclude_seen=False)
    with torch.no_grad():
        scores = model(input_ids=input_ids, attention_mask=(input_ids != 0).long()).logits[:, -1]
    scores[:, :3] = float("-inf")
    expected_scores, expected_items = scores.topk(5, dim=1)
    assert torch.equal(recommended.item_ids, expected_items)
    assert torch.allclose(recommended.scores, expected_scores, atol=1e-5)
