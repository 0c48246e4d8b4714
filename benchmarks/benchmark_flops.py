"""FLOPs per training event against what this machine's matrix multiply can do, at 1 and 2 threads.

    python benchmarks/benchmark_flops.py                                  # MovieLens-100K, train.py's defaults
    python benchmarks/benchmark_flops.py -- --block_type hstu             # train.py's model flags after --
    python benchmarks/benchmark_flops.py --threads 1 2 --steps 30

The model is train.py's (its defaults, or the model flags given after `--`), the batches are train.py's (its windows,
length-grouped, `--per_device_train_batch_size` among the flags). One training step is forward, backward and AdamW,
as `benchmark_step.py` runs it. Printed:

- the floating-point operations of one epoch's steps, counted by `torch.utils.flop_counter.FlopCounterMode` (matrix
  products; the attention of `scaled_dot_product_attention`, which the counter does not see on CPU, is added as
  2 x 2 x batch x queries x keys x hidden size forward and twice that backward), per training event (a target the
  loss scores), the share of the full softmax's output layer, and the share of positions that are padding;
- per thread count: the median seconds of a step over `--steps` steps, training events per second, the FLOP rate
  that gives, the median rate of a 1024 x 1024 x 1024 float32 matrix multiply (`torch.mm`) at the same thread count,
  and their ratio (the model FLOPs utilisation against this machine's own matmul).

Timings are wall clock on this machine, medians, not asserted anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict

import torch
from torch.utils.flop_counter import FlopCounterMode

from hf_interest import InterestConfig, InterestForNextItemPrediction, ItemTokenizer
from hf_interest.training import load_data, next_item_dataloaders, resolve_train_batch_for_log
from hf_interest.training.arguments import (
    resolve_item_output_residual,
    resolve_item_transition_prior,
    resolve_loss_type,
)
from hf_interest.training.kernels import apply_cpu_training_kernels
from hf_interest.training.tasks import start_transition_prior, training_transitions
from hf_interest_cli.commands import parse_train_arguments


def matmul_rate(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """Median float32 FLOP/s of a `size`-cubed `torch.mm` at `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times)


def attention_flops(model, batch) -> int:
    """Forward FLOPs of the softmax attention products (QK^T and AV) the counter misses on CPU."""
    config = model.config
    if config.block_type != "transformer":
        return 0  # the HSTU layer's products are plain matmuls, which the counter sees
    batch_size, seq_len = batch["input_ids"].shape
    per_layer = 2 * 2 * batch_size * seq_len * seq_len * config.hidden_size  # heads x head size = hidden size
    layers = config.num_hidden_layers - 1  # the last layer queries the positions the loss reads
    return per_layer * layers + 2 * 2 * batch_size * seq_len * seq_len * config.hidden_size


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20, help="Training steps timed per thread count.")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="train.py flags after --.")
    args = parser.parse_args(argv)
    flags = [a for a in args.train_args if a != "--"]
    data_args, model_args, train_args = parse_train_arguments(["--output_dir", "/tmp/unused", *flags])

    torch.manual_seed(0)
    data = load_data(data_args, "next-item")
    # train.py's batch size and learning rate for this log (resolve_train_batch)
    train_args, why = resolve_train_batch_for_log(data.sequences["train"], data_args.max_length, train_args)
    print(why or "batch and learning rate: as given")
    tokenizer = ItemTokenizer.from_items(data.item_ids, model_max_length=data_args.max_length)
    loaders, popularity, _ = next_item_dataloaders(data, tokenizer, data_args, train_args)
    batches = list(loaders["train"])
    loss_type = resolve_loss_type(model_args.loss_type, len(tokenizer))[0]
    residual = resolve_item_output_residual(model_args, loss_type)[0]
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
    apply_cpu_training_kernels(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_args.learning_rate)

    def step(batch) -> None:
        model(**batch, logits_to_keep=torch.empty(0, dtype=torch.long)).loss.backward()  # the loss only, as training
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()

    # FLOPs over one epoch's batches (they differ in length: the grouping), per training event.
    counted, output_layer = 0, 0
    for batch in batches:
        with FlopCounterMode(display=False) as counter:
            step(batch)
        counted += counter.get_total_flops() + 3 * attention_flops(model, batch)
        # the full softmax's output layer: u_t . e_i for every scored event and item, forward and its two backward products
        scored = int((batch["labels"] >= tokenizer.num_special_tokens).sum())
        output_layer += 3 * 2 * scored * config.hidden_size * config.num_items
    events = sum(int((b["labels"] >= tokenizer.num_special_tokens).sum()) for b in batches)
    positions = sum(b["input_ids"].numel() for b in batches)
    padding = 1 - sum(int(b["attention_mask"].sum()) for b in batches) / positions
    per_event = counted / events
    print(
        f"\n{data_args.dataset}: {len(batches)} steps per epoch, {events:,} training events, {positions:,} positions "
        f"({100 * padding:.1f}% padding); model flags {flags or '(defaults)'}; block {config.block_type}"
    )
    print(
        f"training FLOPs per event (forward + backward): {per_event / 1e6:.2f} M ({counted / 1e9:.1f} GFLOP per epoch)"
    )
    if config.loss_type == "full_softmax":
        print(
            f"  of which the full softmax's output layer (every training event x every item): {output_layer / counted:.1%}"
        )

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in batches[:3]:
            step(batch)  # warm-up
        times, step_events = [], []
        for index in range(args.steps):
            batch = batches[index % len(batches)]
            started = time.perf_counter()
            step(batch)
            times.append(time.perf_counter() - started)
            step_events.append(int((batch["labels"] >= tokenizer.num_special_tokens).sum()))
        seconds_per_event = statistics.median(t / e for t, e in zip(times, step_events, strict=True))
        achieved = per_event / seconds_per_event
        peak = matmul_rate(threads)
        rows.append(
            {
                "threads": threads,
                "step_s": statistics.median(times),
                "events_per_s": 1 / seconds_per_event,
                "achieved_gflops": achieved / 1e9,
                "matmul_gflops": peak / 1e9,
                "utilisation": achieved / peak,
            }
        )
    header = (
        f"{'threads':>7}  {'s/step (median)':>15}  {'events/s':>9}  {'GFLOP/s':>8}  {'matmul GFLOP/s':>14}  {'MFU':>6}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        print(
            f"{row['threads']:>7}  {row['step_s']:>15.3f}  {row['events_per_s']:>9,.0f}  {row['achieved_gflops']:>8.2f}"
            f"  {row['matmul_gflops']:>14.1f}  {row['utilisation']:>6.1%}"
        )
    return {"flops_per_event": per_event, "padding": padding, "rows": rows}


if __name__ == "__main__":
    main()
