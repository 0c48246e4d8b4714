"""Faster CPU training kernels, applied to a plain model by training (the way Liger Kernel patches a transformers
model): the model file stays plain PyTorch, which is what a Hub user reads as remote code.

- `FastCPUDropout` replaces `nn.Dropout`: PyTorch's CPU dropout draws one Bernoulli number per element from the
  global generator, serially; on a small model that is a fifth of a training step. Here one 64-bit random word gives
  three 16-bit uniforms, so the generator runs a third as often.
- `fused_masked_cross_entropy` replaces the model's `masked_cross_entropy` (the full-softmax loss with excluded
  items): one pass fewer over the largest tensor of a step, and a backward straight from the saved log-probabilities.
- `keep_freed_memory_for_reuse` makes glibc's malloc keep freed memory for the next step.

`apply_cpu_training_kernels(model)` applies the first two; `tests/test_training_kernels.py` checks each against the
plain code. `benchmarks/benchmark_step.py` measures what each one is worth.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn


class FastCPUDropout(nn.Dropout):
    """
    Inverted dropout, as `nn.Dropout`, with a cheaper random mask on CPU.

    One 64-bit random word gives three 16-bit uniforms (the low 48 bits; `random_` leaves the top bit of an int64 at
    zero). An element is dropped with probability `round(p * 65536) / 65536` (within 8e-6 of `p`) and the kept ones
    are scaled by the exact inverse of the keep probability, so the expectation is unchanged. Draws come from the
    global generator: `torch.manual_seed` makes them reproducible. Other devices use `nn.Dropout`'s own path.

    Args:
        p (`float`): probability of dropping an element, in [0, 1).
    """

    _LOW_START = 0 if sys.byteorder == "little" else 1  # the first of the three int16 views of the low 48 bits

    def __init__(self, p: float):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}.")
        super().__init__(p)
        self.threshold = round(p * 65536)  # drop when the unsigned 16-bit draw is below this
        self.scale = 65536 / (65536 - self.threshold)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return hidden_states
        if hidden_states.device.type != "cpu":
            return super().forward(hidden_states)
        count = hidden_states.numel()
        words = torch.empty((count + 2) // 3, dtype=torch.int64).random_()
        start = self._LOW_START
        draws = words.view(torch.int16).view(-1, 4)[:, start : start + 3].reshape(-1)[:count]  # signed 16 bit
        keep = draws.view(hidden_states.shape) >= self.threshold - 32768
        return hidden_states * (keep.to(hidden_states.dtype) * self.scale)


class ExcludedCrossEntropy(torch.autograd.Function):
    """
    Per-row cross-entropy of `logits` `(M, N)` against `targets` `(M,)` with the entries where `excluded` (a bool
    tensor broadcastable to `(M, N)`) is True left out of the softmax: the values and gradients of
    `F.cross_entropy(logits.masked_fill(excluded, -inf), targets, reduction="none")`. The backward pass is
    `softmax - one_hot` from the saved log-probabilities (excluded entries have probability zero, so they need no
    mask), where autograd would fill a dense zero one-hot, run the log-softmax backward and then mask again.

    `logits` is overwritten with the masked values (hence `mark_dirty`): pass a fresh tensor nothing else reads, such
    as the output of the output projection. The second output is that tensor, not differentiable.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor):
        logits.masked_fill_(excluded, float("-inf"))
        log_probs = torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(log_probs, targets)
        ctx.mark_dirty(logits)
        ctx.mark_non_differentiable(logits)
        return -log_probs.gather(1, targets[:, None]).squeeze(1), logits

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor, _grad_logits):
        log_probs, targets = ctx.saved_tensors
        grad = log_probs.exp()
        rows = torch.arange(targets.numel(), device=grad.device)
        grad[rows, targets] -= 1.0
        return grad.mul_(grad_losses[:, None]), None, None


def fused_masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """The model's `masked_cross_entropy`, fused and in place (`ExcludedCrossEntropy`); `logits` is overwritten."""
    return ExcludedCrossEntropy.apply(logits, targets, excluded)[0]


def reference_masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor):
    """The plain PyTorch loss the fused kernel must equal (the model file's own `masked_cross_entropy`)."""
    return F.cross_entropy(logits.masked_fill(excluded, float("-inf")), targets, reduction="none")


def apply_cpu_training_kernels(model: nn.Module, dropout: bool = True, loss: bool = True) -> dict[str, int]:
    """
    Swaps the faster CPU kernels into a plain model, in place, for training. Weights, outputs in evaluation, saving
    and loading are unchanged; a model loaded with `from_pretrained` is plain again.

    Args:
        model: an hf_interest model (before a peft wrapper is added).
        dropout (`bool`): replace every `nn.Dropout` with `FastCPUDropout` of the same rate.
        loss (`bool`): give every module with a `masked_cross_entropy` the fused kernel.

    Returns:
        `{"dropout": n, "loss": m}`: how many modules were patched.
    """
    patched = {"dropout": 0, "loss": 0}
    for module in list(model.modules()):
        if dropout:
            for name, child in list(module.named_children()):
                if type(child) is nn.Dropout:
                    setattr(module, name, FastCPUDropout(child.p).train(child.training))
                    patched["dropout"] += 1
        if loss and callable(getattr(module, "masked_cross_entropy", None)):
            module.masked_cross_entropy = fused_masked_cross_entropy
            patched["loss"] += 1
    return patched


def keep_freed_memory_for_reuse(heap_keep_bytes: int = 1 << 30) -> bool:
    """
    Makes glibc's malloc serve large blocks from its heap and keep freed memory for reuse, for CPU training.

    A training step allocates and frees the same large tensors every time (the `(positions, items)` logits of the
    full softmax, its gradient); by default glibc maps every block over its mmap threshold (at most 32 MiB) fresh
    from the kernel and unmaps it on free, so each step pays a page fault per 4 KiB of them. With mmap off
    (`M_MMAP_MAX=0`) and the heap trimmed only above `heap_keep_bytes` (`M_TRIM_THRESHOLD`), freed blocks are reused
    by the next step. The process keeps up to its peak memory (plus `heap_keep_bytes`) instead of returning it. These
    are the settings of the environment variables `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`; when either is
    set, the environment wins and nothing is changed.

    Returns:
        `True` when applied; `False` where the environment sets malloc already, or the C library is not glibc.
    """
    import ctypes
    import platform

    if "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, int(heap_keep_bytes)))
