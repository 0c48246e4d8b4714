"""Benchmark the cost of a training epoch, one speed change at a time, interleaved in one process.

    python benchmarks/benchmark_step.py                 # MovieLens-100K, train.py defaults, 5 rounds
    python benchmarks/benchmark_step.py --rounds 9 --dataset synthetic

The same model trains on the same batches (train.py's windows, length-grouped order of epoch 0) through a plain
PyTorch loop (forward, backward, clipping, AdamW). Each round runs one epoch per variant, in turn, so that the
machine's drift falls on every variant alike; the table gives the median seconds per epoch of each variant and its
ratio to the reference. The variants add one change each:

1. reference: the plain model file (`nn.Dropout`, the loss as `F.cross_entropy` over masked logits), glibc's
   malloc as it comes (blocks over 32 MiB mapped fresh at every allocation);
2. + `FastCPUDropout` (hf_interest.training.kernels: three 16-bit draws per 64-bit random word);
3. + the fused loss (`fused_masked_cross_entropy`);
4. + `keep_freed_memory_for_reuse` (malloc keeps freed memory): what training does on CPU.

A second table times a validation pass (the backbone over every validation user's history, eval mode, no
gradients) with every position computed and with the last layer for the last position only (`states_to_keep=1`,
what evaluation and `recommend` use), interleaved the same way.

Switching malloc back inside a process is approximate (mmap threshold 32 MiB, the steady state of glibc's dynamic
threshold, and a trim). Timings are wall clock on this machine, not asserted anywhere.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from dataclasses import asdict

import torch
from torch import nn

from hf_interest import InterestConfig, InterestForNextItemPrediction, ItemTokenizer
from hf_interest.training import (
    DataArguments,
    ModelArguments,
    TrainArguments,
    load_data,
    next_item_dataloaders,
    resolve_train_batch_for_log,
)
from hf_interest.training.arguments import (
    resolve_item_output_residual,
    resolve_item_transition_prior,
    resolve_loss_type,
)
from hf_interest.training.kernels import FastCPUDropout, fused_masked_cross_entropy, keep_freed_memory_for_reuse
from hf_interest.training.tasks import start_transition_prior, training_transitions


def default_malloc() -> None:
    libc = ctypes.CDLL(None)
    libc.mallopt(-4, 65536)  # M_MMAP_MAX: glibc's default
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: the most its dynamic threshold reaches
    libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD: twice that, as glibc sets it
    libc.malloc_trim(0)


VARIANTS = {
    "reference (F.dropout, unfused loss, malloc as is)": (False, False, False),
    "+ FastCPUDropout": (True, False, False),
    "+ fused loss": (True, True, False),
    "+ keep freed memory (as training runs on CPU)": (True, True, True),
}


def apply_variant(model, dropout: bool, loss: bool, memory: bool, can_tune_malloc: bool) -> None:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            wanted = FastCPUDropout if dropout else nn.Dropout
            if isinstance(child, nn.Dropout) and type(child) is not wanted:
                setattr(module, name, wanted(child.p).train(child.training))
    if loss:
        model.masked_cross_entropy = fused_masked_cross_entropy
    else:
        model.__dict__.pop("masked_cross_entropy", None)  # back to the model file's own loss
    if can_tune_malloc:
        keep_freed_memory_for_reuse() if memory else default_malloc()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="movielens-100k", help="As train.py's --dataset.")
    parser.add_argument("--rounds", type=int, default=5, help="Epochs per variant (interleaved).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data_args, model_args, train_args = DataArguments(dataset=args.dataset), ModelArguments(), TrainArguments()
    data = load_data(data_args, "next-item")
    # train.py's batch size and learning rate for this log (resolve_train_batch)
    train_args, why = resolve_train_batch_for_log(data.sequences["train"], data_args.max_length, train_args)
    print(why or "batch and learning rate: as given")
    tokenizer = ItemTokenizer.from_items(data.item_ids, model_max_length=data_args.max_length)
    loaders, popularity, _ = next_item_dataloaders(data, tokenizer, data_args, train_args)
    batches = list(loaders["train"])
    eval_batches = list(loaders["validation"])
    loss_type = resolve_loss_type(model_args.loss_type, len(tokenizer))[0]
    residual = resolve_item_output_residual(model_args, loss_type)[0]  # train.py's default for this loss
    prior = resolve_item_transition_prior(model_args, None)[0]  # off unless given: train.py measures the log first
    config = InterestConfig(
        num_items=len(tokenizer),
        max_position_embeddings=data_args.max_length,
        pad_token_id=tokenizer.pad_token_id,
        **(
            asdict(model_args)
            | {"loss_type": loss_type, "item_output_residual": residual, "item_transition_prior": prior}
        ),
    )
    model = InterestForNextItemPrediction(config).train()
    if prior:  # given on: filled from the training split's pairs, as train.py fills it
        print(start_transition_prior(model, training_transitions(data, tokenizer, popularity)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_args.learning_rate)
    can_tune_malloc = keep_freed_memory_for_reuse()  # False off glibc: the last row then equals the third

    def epoch() -> float:
        started = time.perf_counter()
        for batch in batches:
            model(**batch, logits_to_keep=1).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        return time.perf_counter() - started

    apply_variant(model, True, True, True, can_tune_malloc)
    epoch()  # warm-up, not counted
    times = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, flags in VARIANTS.items():
            apply_variant(model, *flags, can_tune_malloc)
            times[name].append(epoch())
    apply_variant(model, True, True, True, can_tune_malloc)

    @torch.no_grad()
    def validation_pass(states_to_keep: int) -> float:
        model.eval()
        started = time.perf_counter()
        for batch in eval_batches:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "timestamps") if k in batch}
            model.model(**inputs, states_to_keep=states_to_keep)
        model.train()
        return time.perf_counter() - started

    eval_variants = {"every position (states_to_keep=0)": 0, "last position only (states_to_keep=1)": 1}
    eval_times = {name: [] for name in eval_variants}
    for _ in range(args.rounds):
        for name, keep in eval_variants.items():
            eval_times[name].append(validation_pass(keep))

    positions = sum(int((b["labels"] >= tokenizer.num_special_tokens).sum()) for b in batches)
    print(
        f"\n{args.dataset}: {len(batches)} steps, {positions:,} training targets per epoch; train.py's model "
        f"defaults; {torch.get_num_threads()} threads; {args.rounds} rounds, variants interleaved"
        + ("" if can_tune_malloc else "; malloc not tunable here (not glibc)")
    )
    reference = statistics.median(times[next(iter(VARIANTS))])
    header = f"{'variant':<52}  {'s/epoch (median)':>16}  {'x reference':>11}  {'targets/s':>9}  all epochs (s)"
    print(header + "\n" + "-" * len(header))
    summary = {}
    for name, values in times.items():
        median = statistics.median(values)
        summary[name] = {"median_seconds": median, "ratio": median / reference, "seconds": values}
        print(
            f"{name:<52}  {median:>16.2f}  {median / reference:>11.2f}  {positions / median:>9,.0f}  "
            + " ".join(f"{v:.2f}" for v in values)
        )
    users = sum(len(b["input_ids"]) for b in eval_batches)
    print(f"\nvalidation pass, backbone only: {users:,} users, {len(eval_batches)} batches")
    header = f"{'variant':<52}  {'s/pass (median)':>16}  {'x every position':>16}  all passes (s)"
    print(header + "\n" + "-" * len(header))
    every = statistics.median(eval_times[next(iter(eval_variants))])
    for name, values in eval_times.items():
        median = statistics.median(values)
        summary[f"validation: {name}"] = {"median_seconds": median, "ratio": median / every, "seconds": values}
        print(f"{name:<52}  {median:>16.3f}  {median / every:>16.2f}  " + " ".join(f"{v:.3f}" for v in values))
    return summary


if __name__ == "__main__":
    main()
