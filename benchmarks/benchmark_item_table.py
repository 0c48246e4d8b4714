"""What one training step costs as the catalogue grows, with dense and with lazy item-table updates.

The model alone, without data: the default architecture (`ModelArguments`), the sampled softmax with 1,024
negatives drawn by popularity, batches of 64 random histories of 200 items, gradient clipping, the optimizer and the
weight average exactly as `training.loop` runs them (no logits are computed, as in the loop): `torch.optim.AdamW` and `AveragedModel.update_parameters` over
every row (dense), or sparse table gradients, `LazyAdamW` and `LazyRowEMA` (lazy,
`hf_interest.training.sparse_rows`). Each (vocabulary, updates) cell runs in a fresh process, so its peak RSS is its
own, and times `--steps` steps after two warm-up steps. Printed per cell: RSS after building the model, peak RSS over
the steps, the median milliseconds of forward, backward, clipping, optimizer step and averaging; then, per mode, the
slope of peak RSS on vocabulary size (bytes per entry) beside the floor (weight, two moments, average: 16 bytes per
parameter; dense updates add a dense gradient, 20), and the lazy / dense ratio of a step at each size.

    python benchmarks/benchmark_item_table.py                                  # 10k and 1M entries
    python benchmarks/benchmark_item_table.py --vocabulary 10000 100000 1000000 --steps 20

A benchmark script, not a test: it prints one table, writes JSON (`--output_json`) and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PARTS = ("forward", "backward", "clip", "optimizer", "average")


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure(num_items: int, updates: str, steps: int, device: str = "cpu") -> dict:
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from hf_interest import InterestConfig, InterestForNextItemPrediction
    from hf_interest.training.arguments import DEFAULT_EMA_DECAY, ModelArguments
    from hf_interest.training.kernels import apply_cpu_training_kernels
    from hf_interest.training.sparse_rows import LazyAdamW, LazyRowEMA, clip_grad_norm_, enable_sparse_item_gradients

    torch.manual_seed(0)
    defaults = ModelArguments()
    config = InterestConfig(num_items=num_items, hidden_size=defaults.hidden_size,
                            num_hidden_layers=defaults.num_hidden_layers,
                            num_attention_heads=defaults.num_attention_heads,
                            intermediate_size=defaults.intermediate_size, max_position_embeddings=200,
                            loss_type="sampled_softmax", num_negative_samples=1024)  # fmt: skip
    started = _rss_mb()[0]
    model = InterestForNextItemPrediction(config).to(device).train()
    if device == "cpu":
        apply_cpu_training_kernels(model)  # as the loop does on CPU
    model.set_negative_sampling_distribution(torch.rand(num_items, device=device) * 100 + 1)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    after_model = _rss_mb()[0]
    if updates == "lazy":
        tables = enable_sparse_item_gradients(model)
        optimizer = LazyAdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DEFAULT_EMA_DECAY))
    lazy_average = LazyRowEMA(average, model, optimizer, tables, DEFAULT_EMA_DECAY) if updates == "lazy" else None
    generator = torch.Generator().manual_seed(0)
    times = {part: [] for part in PARTS}
    for step in range(steps + 2):
        input_ids = torch.randint(3, num_items, (64, 200), generator=generator).to(device)
        labels = torch.roll(input_ids, -1, dims=1)
        labels[:, -1] = -100
        clock = [_now(device)]
        loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels,
                     logits_to_keep=torch.empty(0, dtype=torch.long)).loss  # no logits, as the loop's  # fmt: skip
        clock.append(_now(device))
        loss.backward()
        clock.append(_now(device))
        if lazy_average is None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        else:
            clip_grad_norm_(model.parameters(), 1.0)
        clock.append(_now(device))
        optimizer.step()
        optimizer.zero_grad()
        clock.append(_now(device))
        if lazy_average is None:
            average.update_parameters(model)
        else:
            lazy_average.update()
        clock.append(_now(device))
        if step >= 2:  # the first steps allocate the optimizer state
            for part, start, end in zip(PARTS, clock[:-1], clock[1:], strict=True):
                times[part].append((end - start) * 1000)
    if lazy_average is not None:
        lazy_average.synchronize()  # before a read; counted in the peak
    return {
        "vocabulary": num_items,
        "updates": updates,
        "device": torch.cuda.get_device_name() if device != "cpu" else "cpu",
        # on a GPU: peak memory allocated by torch on it, beside the process's peak RSS
        "peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "rss_before_model_mb": started,
        "rss_after_model_mb": after_model,
        "peak_rss_mb": _rss_mb()[1],
        **{f"{part}_ms": statistics.median(values) for part, values in times.items()},
        "step_ms": statistics.median([sum(parts) for parts in zip(*times.values(), strict=True)]),
    }


def _now(device: str) -> float:
    """The wall clock after the device has finished what was queued (GPU kernels run asynchronously)."""
    if device != "cpu":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocabulary", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--updates", default="dense,lazy", help="comma-separated: dense, lazy")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per cell, after two warm-up steps")
    parser.add_argument("--output_json", type=Path, default=Path("runs/benchmark_item_table.json"))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: peak memory is then torch's on the GPU")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)  # internal: one cell
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(int(args.measure[0]), args.measure[1], int(args.measure[2]), args.measure[3])))
        return

    rows = []
    for num_items in args.vocabulary:
        for updates in args.updates.split(","):
            cell = [sys.executable, __file__, "--measure", str(num_items), updates, str(args.steps), args.device]
            run = subprocess.run(cell, capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(f"the {num_items:,} {updates} cell failed:\n{run.stderr[-3000:]}")
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(f"measured {num_items:,} {updates}", file=sys.stderr, flush=True)

    memory = "peak RSS" if args.device == "cpu" else "peak GPU memory"
    print(f"device: {rows[0]['device'] if rows else args.device}; memory columns: {memory}")
    header = f"{'vocabulary':>10} {'updates':>7} {'model MB':>8} {'peak MB':>8} " + " ".join(
        f"{part + ' ms':>12}" for part in (*PARTS, "step")
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['vocabulary']:>10,} {r['updates']:>7} {r['rss_after_model_mb'] - r['rss_before_model_mb']:>8,.0f} "
            f"{_peak(r):>8,.0f} " + " ".join(f"{r[part + '_ms']:>12.1f}" for part in (*PARTS, "step"))
        )
    summary = {}
    for updates in args.updates.split(","):
        mine = sorted((r for r in rows if r["updates"] == updates), key=lambda r: r["vocabulary"])
        if len(mine) >= 2:
            first, last = mine[0], mine[-1]
            entries = last["vocabulary"] - first["vocabulary"]
            per_entry = (_peak(last) - _peak(first)) * 2**20 / entries
            parameters = (last["parameters"] - first["parameters"]) / entries
            floor = parameters * (16 if updates == "lazy" else 20)
            summary[updates] = {"peak_bytes_per_entry": per_entry, "floor_bytes_per_entry": floor}
            print(
                f"{updates}: {memory} {per_entry:,.0f} bytes per vocabulary entry ({first['vocabulary']:,} to "
                f"{last['vocabulary']:,}); floor {floor:,.0f} ({parameters:.0f} float32 parameters per entry: weight, "
                f"two moments, average{', dense gradient' if updates == 'dense' else ''})"
            )
    for num_items in args.vocabulary:
        pair = {r["updates"]: r for r in rows if r["vocabulary"] == num_items}
        if {"dense", "lazy"} <= pair.keys():
            ratio = pair["lazy"]["step_ms"] / pair["dense"]["step_ms"]
            summary[f"lazy_over_dense_step_at_{num_items}"] = ratio
            print(f"{num_items:,} entries: a lazy step takes {ratio:.2f}x the dense one (medians, same run)")
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    args.output_json.write_text(
        json.dumps({"rows": rows, "summary": summary, "arguments": vars(args)}, indent=2, default=str)
    )
    print(f"wrote {args.output_json}")


def _peak(row: dict) -> float:
    return row["peak_device_mb"] if row.get("peak_device_mb") is not None else row["peak_rss_mb"]


if __name__ == "__main__":
    main()
