"""How fast the command line answers: `--help` of `hf-interest` and its commands, median of N runs each.

    python benchmarks/benchmark_cli.py            # 5 runs per command
    python benchmarks/benchmark_cli.py --runs 9

`hf-interest --help` and the help of every command but train come from `hf_interest_cli`, which imports neither torch
nor transformers; train builds its options from the library's argument dataclasses (`import hf_interest` registers the
model with transformers' Auto classes, which imports both). Wall clock on this machine, one process per
run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["recommend"], ["explain"], ["info"], ["train"], ["evaluate"], ["push"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default: 5)")
    args = parser.parse_args()
    executable = shutil.which("hf-interest")
    launcher = [executable] if executable else [sys.executable, "-m", "hf_interest_cli"]
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'max s':>7}  ({args.runs} runs, {' '.join(launcher)})")
    for command in COMMANDS:
        seconds = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([*launcher, *command, "--help"], check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
        name = " ".join(["hf-interest", *command, "--help"])
        print(f"{name:<28} {statistics.median(seconds):>9.2f} {min(seconds):>7.2f} {max(seconds):>7.2f}")


if __name__ == "__main__":
    main()
