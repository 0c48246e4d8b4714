"""How the cost of the whole pipeline grows with the number of events and the size of the catalogue.

For every (events, items) cell: a synthetic drifting-interest log (`hf_interest.data.synthetic`, written once as
Parquet with integer `user_id`, `item_id`, `timestamp`, users of 50-150 events, item popularity Zipf(0.5) within 16
categories so that most of the catalogue occurs), then, each in a fresh process so that peak memory is its own:

    ingest    `load_behaviors(path)`: read, clean, sort, leave-one-out split (events/s, peak RSS)
    train     `hf_interest_cli.commands.train_main` as a user runs it, defaults unless stated (--loss_type auto picks the
              softmax), `--max_steps` optimizer steps or one whole epoch, then validation and test over ALL users
              (full ranking) and the write of the run folder: training events/s (real input events read per second of
              training steps), peak RSS of the whole process, validation seconds, and the recommend latency of the
              saved model (`recommend`, top 10, seen items excluded, histories of 50 events, median of 20 calls)

Growth exponents are least-squares slopes of log(cost) on log(events) at a fixed catalogue, and on log(items) at a
fixed number of events. Memory per item: the slope of peak training RSS on vocabulary size (bytes per item), beside
what the embedding tables, their gradients and AdamW's two moments need per item (the floor).
`--item_table_updates auto,dense` times both updates of the item table in each cell (auto: lazy with the sampled
softmax).

    python benchmarks/benchmark_scale.py                                   # 1M and 10M events x 10k, 100k, 1M items
    python benchmarks/benchmark_scale.py --events 1000000 --items 10000 100000 --max_steps 50
    python benchmarks/benchmark_scale.py --events 10000000 --items 1000000 --full_epoch

A benchmark script, not a test: it prints one table, writes JSON (`--output_json`) and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hf_interest.tokenization_interest import SPECIAL_TOKENS
from hf_interest.training.arguments import resolve_loss_type

MEAN_EVENTS_PER_USER = 100


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, events: int, items: int, seed: int) -> None:
    """Writes a synthetic log of about `events` events over a catalogue of `items` items to `path` (Parquet)."""
    import pyarrow.parquet as pq

    from hf_interest.data import SyntheticConfig, generate_synthetic_interests

    config = SyntheticConfig(
        num_users=max(1, events // MEAN_EVENTS_PER_USER), num_items=items, num_categories=16, min_events=50,
        max_events=150, popularity_exponent=0.5, seed=seed, ground_truth=False,
    )  # fmt: skip
    data = generate_synthetic_interests(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data.events.select(["user_id", "item_id", "timestamp"]), path)


def measure_ingest(path: Path) -> dict:
    from hf_interest.data import load_behaviors

    before = _peak_rss_mb()
    started = time.perf_counter()
    data = load_behaviors(path)
    seconds = time.perf_counter() - started
    return {
        "events": data.report.events,
        "users": data.report.users,
        "items": data.report.items,
        "seconds": seconds,
        "events_per_s": data.report.events / seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_imports_mb": before,
    }


def measure_train(path: Path, loss_type: str, updates: str, max_steps: int | None, extra: list[str]) -> dict:
    import numpy as np
    import torch

    from hf_interest import InterestForNextItemPrediction
    from hf_interest_cli.commands import train_main as main

    with tempfile.TemporaryDirectory() as output_dir:
        argv = ["--dataset", str(path), "--output_dir", output_dir, "--num_train_epochs", "1", "--report_to", "none"]
        argv += ["--loss_type", loss_type, "--item_table_updates", updates]
        argv += (["--max_steps", str(max_steps)] if max_steps else []) + extra
        started = time.perf_counter()
        results = main(argv)
        total = time.perf_counter() - started
        peak = _peak_rss_mb()  # before the latency measurement below, which loads a second copy of the model
        epoch = results["training"]["history"][0]
        model = InterestForNextItemPrediction.from_pretrained(output_dir).eval()
        num_items = model.config.num_items
        generator = torch.Generator().manual_seed(0)
        latencies = {}
        for batch_size in (1, 64):
            histories = torch.randint(3, num_items, (batch_size, 50), generator=generator)
            times = []
            for _ in range(21):
                t0 = time.perf_counter()
                with torch.no_grad():
                    model.recommend(input_ids=histories, top_k=10)
                times.append(time.perf_counter() - t0)
            latencies[batch_size] = float(np.median(times[1:]) * 1000)
    statistics = results["dataset"]["statistics"]
    return {
        "loss_type": results["model"]["loss_type"],
        "item_table_updates": results["training"]["item_table_updates"],
        "vocabulary": num_items,
        "users_evaluated": statistics["validation_rows"],
        "optimizer_steps": results["training"]["optimizer_steps"],
        "train_events": epoch["train_events"],
        "train_seconds": epoch["seconds"],
        "train_events_per_s": epoch["train_events"] / epoch["seconds"],
        "validation_seconds": epoch["validation_seconds"],
        "test_seconds": results["training"]["test_evaluation_seconds"],
        "test_ndcg@10": results["test"]["exclude_seen"]["model"]["ndcg@10"],
        "test_popularity_ndcg@10": results["test"]["exclude_seen"]["popularity"]["ndcg@10"],
        "total_seconds": total,
        "peak_rss_mb": peak,
        "train_peak_rss_mb": epoch.get("peak_rss_mb_before_validation"),
        "recommend_ms_batch1": latencies[1],
        "recommend_ms_batch64": latencies[64],
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": model.config.hidden_size,
    }


def _run(args: list[str], memory_limit_gb: float) -> dict:
    """One measurement in a fresh process whose data segment is capped at `memory_limit_gb` (RLIMIT_DATA): a run
    that would need more fails with torch's allocation error, recorded in the row, instead of meeting the OOM killer."""
    limit = int(memory_limit_gb * 2**30)

    def cap():
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    command = [sys.executable, __file__, *args]
    out = subprocess.run(command, capture_output=True, text=True, check=False, preexec_fn=cap)
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if "Error" in line] or out.stderr.splitlines()
        return {"error": (lines or [f"exit code {out.returncode}"])[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _slope(xs, ys) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two distinct points."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y]
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def _linear_slope(xs, ys) -> float | None:
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--losses", default="full_softmax,sampled_softmax", help="comma-separated --loss_type values to time per cell"
    )
    parser.add_argument(
        "--item_table_updates", default="auto", help="comma-separated --item_table_updates values to time per cell"
    )
    parser.add_argument("--memory_limit_gb", type=float, default=20.0, help="RLIMIT_DATA of each measurement")
    parser.add_argument("--max_steps", type=int, default=100, help="optimizer steps timed per cell")
    parser.add_argument("--full_epoch", action="store_true", help="time one whole epoch instead of --max_steps")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hf_interest_scale")
    parser.add_argument("--output_json", type=Path, default=Path("runs/benchmark_scale.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--include_json", type=Path, nargs="*", default=[], help="earlier outputs whose rows join the table and fits"
    )
    parser.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)  # internal: one measurement
    args, extra = parser.parse_known_args()  # anything else goes to training, e.g. --hidden_size 32

    if args.measure:
        kind, path = args.measure[0], Path(args.measure[1])
        if kind == "ingest":
            print(json.dumps(measure_ingest(path)))
        else:
            steps = None if args.measure[4] == "epoch" else int(args.measure[4])
            print(json.dumps(measure_train(path, args.measure[2], args.measure[3], steps, extra)))
        return

    rows = [row for path in args.include_json for row in json.loads(path.read_text())["rows"]]
    for events in args.events:
        for items in args.items:
            path = args.workdir / f"events{events}_items{items}_seed{args.seed}.parquet"
            if not path.exists():
                t0 = time.perf_counter()
                generate(path, events, items, args.seed)
                print(f"generated {path} in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
            ingest = _run(["--measure", "ingest", str(path)], args.memory_limit_gb)
            print(f"ingest {events:,} x {items:,}: {ingest}", file=sys.stderr, flush=True)
            vocabulary = ingest.get("items", items) + len(SPECIAL_TOKENS)
            auto, _ = resolve_loss_type("auto", vocabulary)
            for loss, updates in [(x, y) for x in args.losses.split(",") for y in args.item_table_updates.split(",")]:
                row = {"events_target": events, "catalogue": items, "loss": loss, "auto_picks": auto, "ingest": ingest}
                if loss == "full_softmax" and updates == "lazy":
                    continue  # refused: the full softmax reads every row
                # The full softmax's logits alone: one float32 score per batch position and vocabulary entry.
                logits_gb = 64 * 200 * vocabulary * 4 / 2**30
                if loss == "full_softmax" and logits_gb > args.memory_limit_gb:
                    row["error"] = (
                        f"not run: its logits alone take {logits_gb:,.0f} GB (64 x 200 x {vocabulary:,} x 4 B)"
                    )
                    rows.append(row)
                    continue
                steps = "epoch" if args.full_epoch else str(args.max_steps)
                train = _run(["--measure", "train", str(path), loss, updates, steps, *extra], args.memory_limit_gb)
                print(f"train {events:,} x {items:,} {loss} {updates}: {train}", file=sys.stderr, flush=True)
                rows.append(row | train)

    header = (
        f"{'events':>11} {'catalogue':>9} {'vocab':>9} {'users':>7} {'ingest ev/s':>11} {'ingest MB':>9} "
        f"{'loss':>16} {'table':>5} {'steps':>6} {'train ev/s':>10} {'peak MB':>8} {'val s':>7} {'rec ms b1':>9} "
        f"{'rec ms b64':>10} {'NDCG@10':>7} {'pop':>6} {'train MB':>8} {'test s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ingest = r["ingest"]
        if "error" in r:
            print(f"{ingest.get('events', 0):>11,} {r['catalogue']:>9,} {r['loss']:>35}  {r['error']}")
            continue
        print(
            f"{ingest['events']:>11,} {r['catalogue']:>9,} {r['vocabulary']:>9,} {ingest['users']:>7,} "
            f"{ingest['events_per_s']:>11,.0f} {ingest['peak_rss_mb']:>9,.0f} "
            f"{r['loss_type'] + ('*' if r['loss_type'] == r['auto_picks'] else ''):>16} "
            f"{r.get('item_table_updates', 'dense'):>5} {r['optimizer_steps']:>6} {r['train_events_per_s']:>10,.0f} {r['peak_rss_mb']:>8,.0f} "
            f"{r['validation_seconds']:>7.1f} {r['recommend_ms_batch1']:>9.1f} {r['recommend_ms_batch64']:>10.1f} "
            f"{r['test_ndcg@10']:>7.4f} {r['test_popularity_ndcg@10']:>6.4f} {r.get('train_peak_rss_mb') or 0:>8,.0f} "
            f"{r['test_seconds']:>7.1f}"
        )

    fits = {}
    ok = [r for r in rows if "error" not in r]
    # rows of the earlier runs, before --item_table_updates existed, updated the table densely
    for loss, updates in sorted({(r["loss_type"], r.get("item_table_updates", "dense")) for r in ok}):
        mine = [r for r in ok if (r["loss_type"], r.get("item_table_updates", "dense")) == (loss, updates)]
        loss = f"{loss} ({updates} table updates)"
        for items in sorted({r["catalogue"] for r in mine}):
            cells = [r for r in mine if r["catalogue"] == items]
            xs = [r["ingest"]["events"] for r in cells]
            fits[f"{loss} vs events at {items:,} items"] = {
                "ingest_time": _slope(xs, [r["ingest"]["seconds"] for r in cells]),
                "train_time_per_step": _slope(xs, [r["train_seconds"] / r["optimizer_steps"] for r in cells]),
                "validation_time": _slope(xs, [r["validation_seconds"] for r in cells]),
                "peak_rss": _slope(xs, [r["peak_rss_mb"] for r in cells]),
            }
        for events in sorted({r["events_target"] for r in mine}):
            cells = [r for r in mine if r["events_target"] == events]
            xs = [r["vocabulary"] for r in cells]
            per_item = _linear_slope(xs, [r["peak_rss_mb"] * 2**20 for r in cells])
            train_per_item = None
            if all(r.get("train_peak_rss_mb") for r in cells):
                train_per_item = _linear_slope(xs, [r["train_peak_rss_mb"] * 2**20 for r in cells])
            params_per_entry = _linear_slope(xs, [r["parameters"] for r in cells])
            fits[f"{loss} vs items at {events:,} events"] = {
                "parameters_per_entry": params_per_entry,
                "train_time_per_step": _slope(xs, [r["train_seconds"] / r["optimizer_steps"] for r in cells]),
                "validation_time": _slope(xs, [r["validation_seconds"] for r in cells]),
                "peak_rss": _slope(xs, [r["peak_rss_mb"] for r in cells]),
                "peak_rss_bytes_per_item": per_item,
                "train_peak_rss_bytes_per_item": train_per_item,
            }
    if fits:
        print("\ngrowth exponents (slope of log cost on log size; 1 = linear) and peak RSS per vocabulary entry:")
        for name, values in fits.items():
            cells = ", ".join(
                f"{k} {v:,.0f}" if k.endswith(("per_item", "per_entry")) else f"{k} {v:.2f}"
                for k, v in values.items()
                if v is not None
            )
            print(f"  {name}: {cells or 'one point only'}")
    per_entry = [v["parameters_per_entry"] for v in fits.values() if v.get("parameters_per_entry")]
    floor = (
        f"{per_entry[0]:.1f} float32 parameters per vocabulary entry (slope of the parameter count)"
        if per_entry
        else ""
    )
    if per_entry:
        floor += (
            f": {per_entry[0] * 16:,.0f} bytes for weight, gradient and AdamW's two moments, "
            f"{per_entry[0] * 20:,.0f} with the weight average's copy (dense updates); lazy updates hold no dense "
            f"gradient: {per_entry[0] * 16:,.0f} with the average"
        )
    print(
        f"\nfloor: {floor or 'needs two catalogue sizes'}.\n"
        f"protocol of NDCG@10: test split (leave-one-out, each user's last event), full ranking over the vocabulary, "
        f"seen items excluded; 'pop' is the popularity baseline by the same code. 'steps' optimizer steps of 64 "
        f"windows were timed{' (one whole epoch)' if args.full_epoch else ''}; validation covers every user.\n"
        f"*: what --loss_type auto (the default) picks for this vocabulary.\n"
        f"machine: {os.cpu_count()} CPUs; one process at a time; peak MB is the peak RSS of the whole training process "
        f"(evaluation included), train MB its peak before the first validation (data, model, training steps)."
    )
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    args.output_json.write_text(json.dumps({"rows": rows, "fits": fits, "arguments": vars(args) | {"extra": extra}},
                                           indent=2, default=str) + "\n")  # fmt: skip
    print(f"wrote {args.output_json}")


if __name__ == "__main__":
    main()
