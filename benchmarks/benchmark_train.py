"""Benchmark the training job: test metrics over seeds, seconds per epoch, time to the best validation epoch.

    python benchmarks/benchmark_train.py                               # MovieLens-100K, defaults, seeds 42 43 44
    python benchmarks/benchmark_train.py --seeds 42 --ddp              # also 2 CPU processes under accelerate launch
    python benchmarks/benchmark_train.py --reuse_runs --ddp            # add the DDP row to the runs already there
    python benchmarks/benchmark_train.py --seeds 42 -- --hidden_size 32   # extra train.py arguments after --

Every run is `hub_scripts/train.py` in a subprocess with the given arguments; the numbers are read back from each
run's `eval_results.json`. Printed: one row per run (test NDCG@10 and HR@10 with seen items excluded and included, the
popularity baseline scored by the same code, best epoch, median seconds of training steps per epoch, seconds to the
best epoch counting the training steps only ("train s") and counting the loop's wall clock, validation and
checkpoint writes included ("loop s"), and the run's whole wall time), then mean and standard deviation over the
seeds. Timings are wall clock on this machine,
medians over epochs; they are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(
    launcher: list[str],
    seed: int,
    output_dir: Path,
    extra: list[str],
    dataset: str,
    env: dict | None = None,
    reuse: bool = False,
) -> dict:
    record = output_dir / "benchmark_run.json"
    if reuse and (output_dir / "eval_results.json").is_file():
        results = json.loads((output_dir / "eval_results.json").read_text())
        stored = json.loads(record.read_text()) if record.is_file() else {}
        if stored and stored.get("command_tail") != extra:
            raise ValueError(
                f"--reuse_runs: {output_dir} was trained with train.py arguments {stored.get('command_tail')}, not "
                f"{extra}; use another --output_root or drop --reuse_runs."
            )
        results["wall_seconds"] = stored.get("wall_seconds")  # None: the run predates this record
        print(f"reusing {output_dir}")
        return results
    command = launcher + [
        str(ROOT / "hub_scripts" / "train.py"),
        "--dataset", dataset,
        "--seed", str(seed),
        "--output_dir", str(output_dir),
        "--report_to", "none",
        *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
    wall = time.perf_counter() - started
    results = json.loads((output_dir / "eval_results.json").read_text())
    results["wall_seconds"] = wall
    record.write_text(json.dumps({"wall_seconds": wall, "command_tail": extra}) + "\n")
    return results


def row(label: str, results: dict) -> dict:
    test = results["test"]
    training = results["training"]
    return {
        "run": label,
        "procs": training["num_processes"],
        "ndcg@10": test["exclude_seen"]["model"]["ndcg@10"],
        "hr@10": test["exclude_seen"]["model"]["hr@10"],
        "pop ndcg@10": test["exclude_seen"]["popularity"]["ndcg@10"],
        "pop hr@10": test["exclude_seen"]["popularity"]["hr@10"],
        "ndcg@10 (seen in)": test["include_seen"]["model"]["ndcg@10"],
        "hr@10 (seen in)": test["include_seen"]["model"]["hr@10"],
        "pop ndcg@10 (seen in)": test["include_seen"]["popularity"]["ndcg@10"],
        "pop hr@10 (seen in)": test["include_seen"]["popularity"]["hr@10"],
        "best epoch": training["best_epoch"],
        "s/epoch (median)": training["seconds_per_epoch_median"],
        "train s to best": training["time_to_best_epoch_s"],
        "loop s to best": training.get("wall_time_to_best_epoch_s"),
        "wall s": results["wall_seconds"],
    }


def _reduce(reducer, rows: list[dict], column: str):
    """`reducer` over the rows that have a value in `column` (a reused run may lack its wall time); None if fewer than 2."""
    values = [r[column] for r in rows if r[column] is not None]
    return reducer(values) if len(values) > 1 else None


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    cells = [
        [c]
        + [
            "-"
            if r[c] is None
            else f"{r[c]:.4f}"
            if isinstance(r[c], float) and r[c] < 10
            else (f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]))
            for r in rows
        ]
        for c in columns
    ]  # noqa: E501
    widths = [max(len(x) for x in column) for column in cells]
    for i in range(len(rows) + 1):
        print(
            "  ".join(
                column[i].rjust(w) if j else column[i].ljust(w) for j, (column, w) in enumerate(zip(cells, widths))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--ddp", action="store_true", help="Also run the first seed with 2 CPU processes (DDP).")
    parser.add_argument("--output_root", default="runs/benchmark_train")
    parser.add_argument(
        "--reuse_runs",
        action="store_true",
        help="Read runs already in --output_root instead of training them again (e.g. to add --ddp afterwards).",
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="Arguments for train.py, after --.")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    root = Path(args.output_root)

    rows = []
    for seed in args.seeds:
        results = run_one([sys.executable], seed, root / f"seed_{seed}", extra, args.dataset, reuse=args.reuse_runs)
        rows.append(row(f"seed {seed}", results))
    summary = []
    if len(rows) > 1:
        for name, reducer in (("mean", statistics.mean), ("std", statistics.stdev)):
            summary.append(
                {c: name if c == "run" else "" if c == "procs" else _reduce(reducer, rows, c) for c in rows[0]}
            )
    if args.ddp:
        # `accelerate launch --cpu` starts a single process (its simple launcher); two CPU processes need the
        # multi-process launcher with the CPU forced through the environment (DDP over gloo).
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        seed = args.seeds[0]
        results = run_one(
            launcher,
            seed,
            root / f"ddp_seed_{seed}",
            extra,
            args.dataset,
            {"ACCELERATE_USE_CPU": "1"},
            args.reuse_runs,
        )
        rows.append(row(f"seed {seed}, DDP", results))
    first = json.loads((root / f"seed_{args.seeds[0]}" / "eval_results.json").read_text())
    protocol = first["test"]["exclude_seen"]["protocol"]
    print()
    print(
        f"Dataset {args.dataset}, split=test, leave-one-out by time, full ranking over {protocol['num_candidates']} "
        "items, rank = items scoring strictly higher; 'seen in' = seen items NOT excluded; pop = popularity baseline "
        "(train events only), same code."
    )
    print(f"train.py arguments: defaults{' + ' + ' '.join(extra) if extra else ''}")
    print_table(rows + summary)


if __name__ == "__main__":
    main()
