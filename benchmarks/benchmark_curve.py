"""Validation NDCG@10 against seconds of training, read back from finished runs' `eval_results.json`.

    python benchmarks/benchmark_curve.py old=runs/old_t1/seed_42 new=runs/new_t1/seed_42 --plot curve.png

Each run's history holds one row per epoch: the validation metric the loop chose on and the seconds of training
steps that epoch took (validation and checkpoint writes not counted). Printed per run: the best validation value,
the epoch and the training seconds to it, the seconds to 90% of it, and the best value reached by each of the
`--at` budgets; with `--plot`, the curves in one PNG (matplotlib). Compare runs only when they ran one at a time on
the same machine and thread count; nothing here times anything itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run_dir: Path) -> dict:
    """(cumulative training seconds, validation metric) per epoch of one run, and its metric's name."""
    results = json.loads((Path(run_dir) / "eval_results.json").read_text())
    training = results["training"]
    metric = training["metric_for_best_model"]
    seconds, values, total = [], [], 0.0
    for row in training["history"]:
        total += row["seconds"]
        seconds.append(total)
        values.append(row[metric])
    return {"metric": metric, "seconds": seconds, "values": values}


def summary(points: dict, budgets: list[float]) -> dict:
    """The best value, when it came, when 90% of it came, and the best reached within each budget of seconds."""
    values, seconds = points["values"], points["seconds"]
    best = max(values)
    best_epoch = values.index(best)
    to_90 = next(s for s, v in zip(seconds, values) if v >= 0.9 * best)
    within = {b: max((v for s, v in zip(seconds, values) if s <= b), default=None) for b in budgets}
    return {"best": best, "best_epoch": best_epoch + 1, "to_best_s": seconds[best_epoch], "to_90_s": to_90,
            "within": within}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER, one per curve")
    parser.add_argument("--at", type=float, nargs="+", default=[15, 30, 60, 120, 240], help="budgets in seconds")
    parser.add_argument("--plot", help="also draw the curves into this PNG")
    args = parser.parse_args(argv)
    named = {}
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"{item!r}: give each run as NAME=RUN_FOLDER (e.g. new=runs/new/seed_42).")
        if not (Path(folder) / "eval_results.json").is_file():
            parser.error(f"{folder}: no eval_results.json there; pass the folder of a finished train.py run.")
        named[name] = curve(Path(folder))
    metric = next(iter(named.values()))["metric"]
    header = ["run", f"best validation {metric}", "best epoch", "train s to best", "train s to 90%"]
    header += [f"best by {b:g} s" for b in args.at]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    table = {}
    for name, points in named.items():
        row = table[name] = summary(points, args.at)
        cells = [
            name,
            f"{row['best']:.4f}",
            str(row["best_epoch"]),
            f"{row['to_best_s']:.1f}",
            f"{row['to_90_s']:.1f}",
        ]
        cells += ["-" if v is None else f"{v:.4f}" for v in row["within"].values()]
        print("| " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(7, 4))
        for name, points in named.items():
            axes.plot(points["seconds"], points["values"], marker=".", label=name)
        axes.set_xlabel("seconds of training steps")
        axes.set_ylabel(f"validation {metric}")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")
    return table


if __name__ == "__main__":
    main()
