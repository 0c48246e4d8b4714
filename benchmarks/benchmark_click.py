"""Benchmark the click-prediction head on MovieLens-100K against logistic regression on popularity.

    python benchmarks/benchmark_click.py                                # seeds 42 43 44, patience 5
    python benchmarks/benchmark_click.py --seeds 42 -- --click_labels sampled   # extra train.py arguments

Each seed runs `hub_scripts/train.py --task click` (leave-one-out by time; a click is a rating >= 4; training on
every transition of the training sequences, validation AUC for early stopping) and reads its `eval_results.json`.
Printed: test AUC and log loss of the model and of the baseline (logistic regression on the log training count of
the candidate item, fitted on the same training transitions, scored on the same test rows), mean and spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--patience", type=int, default=5, help="Early-stopping patience (epochs) on validation AUC.")
    parser.add_argument("--output_root", default="runs/benchmark_click")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="Arguments for train.py, after --.")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    rows = []
    for seed in args.seeds:
        run = Path(args.output_root) / f"seed_{seed}"
        command = [
            sys.executable, str(ROOT / "hub_scripts" / "train.py"), "--task", "click", "--dataset", args.dataset,
            "--early_stopping_patience", str(args.patience), "--seed", str(seed), "--output_dir", str(run),
            "--report_to", "none", *extra,
        ]  # fmt: skip
        subprocess.run(command, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
        results = json.loads((run / "eval_results.json").read_text())
        rows.append((seed, results))

    test = rows[0][1]["test"]
    print(f"\nprotocol: {test['protocol']}; labels: {test.get('labels')}")
    print(f"train.py arguments: --task click --early_stopping_patience {args.patience} {' '.join(extra)}")
    print(f"{'seed':>6s} {'AUC':>7s} {'log loss':>9s} {'LR-pop AUC':>10s} {'LR-pop log loss':>15s} {'examples':>8s} "
          f"{'best epoch':>10s} {'s/epoch':>7s}")  # fmt: skip
    for seed, results in rows:
        model, base, training = results["test"]["model"], results["test"]["popularity_lr"], results["training"]
        print(
            f"{seed:6d} {model['auc']:7.4f} {model['log_loss']:9.4f} {base['auc']:10.4f} {base['log_loss']:15.4f} "
            f"{model['num_examples']:8d} {training['best_epoch']:10d} {training['seconds_per_epoch_median']:7.1f}"
        )
    if len(rows) > 1:
        for name in ("auc", "log_loss"):
            values = [r["test"]["model"][name] for _, r in rows]
            print(f"model {name}: mean {statistics.mean(values):.4f}, std {statistics.stdev(values):.4f}")


if __name__ == "__main__":
    main()
