"""Crash-safety benchmark: SIGKILL training at random instants, resume, and compare with an uninterrupted run.

    python benchmarks/benchmark_kill.py --trials 10 --seed 1

Trains a small model (30 epochs of synthetic data) once without interruption (the reference), then `--trials` times:
starts the same run, kills it with SIGKILL after a random delay (uniform over the reference's wall time), resumes it
with `--resume_from_checkpoint latest` until it finishes, and checks that the test metrics, the validation history and
the final weights equal the reference's bit for bit. Prints a table and how many killed runs resumed cleanly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "train.py"
RUN_ARGS = [
    "--dataset", "synthetic",
    "--synthetic_num_users", "300",
    "--synthetic_num_items", "120",
    "--hidden_size", "32",
    "--num_hidden_layers", "2",
    "--num_attention_heads", "2",
    "--intermediate_size", "64",
    "--max_length", "50",
    "--per_device_train_batch_size", "16",
    "--num_train_epochs", "30",
    "--early_stopping_patience", "100",
    "--report_to", "none",
]  # fmt: skip


def _command(output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *RUN_ARGS, "--output_dir", str(output_dir), *extra]


def _env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    env.pop("HF_INTEREST_FAULT_INJECTION", None)
    return env


def _fingerprint(folder: Path) -> tuple[dict, list, str]:
    results = json.loads((folder / "eval_results.json").read_text())
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in results["training"]["history"]]
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    return results["test"], history, weights


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10, help="kill-and-resume trials (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill instants (default: 0)")
    parser.add_argument("--work_dir", help="where the runs go (default: a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hf_interest_kill_"))
    work.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    reference = work / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    subprocess.run(_command(reference), env=_env(), check=True, capture_output=True)
    reference_seconds = time.perf_counter() - start
    expected = _fingerprint(reference)
    print(
        f"reference run: {reference_seconds:.1f}s wall; killing at uniform instants in [0.5, {reference_seconds:.1f}]s"
    )

    rows, clean, killed_runs, killed_clean = [], 0, 0, 0
    for trial in range(1, args.trials + 1):
        folder = work / f"trial_{trial}"
        shutil.rmtree(folder, ignore_errors=True)
        delay = rng.uniform(0.5, reference_seconds)
        process = subprocess.Popen(_command(folder), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        process.wait()
        checkpoints = folder / "checkpoints"
        complete = [int(p.name[6:]) for p in checkpoints.glob("epoch_*") if (p / "trainer_state.json").is_file()]
        newest = max(complete, default="-")
        partial = len(list(checkpoints.glob(".*.tmp"))) + len(list(folder.parent.glob(f".{folder.name}.save.tmp")))
        resumes, ok, note = 0, False, ""
        if killed or not (folder / "eval_results.json").is_file():
            resumed = subprocess.run(
                _command(folder, "--resume_from_checkpoint", "latest"), env=_env(), capture_output=True, text=True
            )
            resumes = 1
            if resumed.returncode != 0:
                note = resumed.stderr.strip().splitlines()[-1][:80] if resumed.stderr.strip() else "failed"
        if (folder / "eval_results.json").is_file():
            got = _fingerprint(folder)
            ok = got == expected
            if not ok:
                note = "metrics" if got[0] != expected[0] else "history" if got[1] != expected[1] else "weights"
                note = f"differs: {note}"
        clean += ok
        killed_runs += killed
        killed_clean += killed and ok
        rows.append((trial, f"{delay:.1f}", "yes" if killed else "no (finished)", newest, partial, resumes, ok, note))

    header = (
        "trial",
        "kill at s",
        "killed",
        "newest ckpt (epoch)",
        "partial writes",
        "resumes",
        "same result",
        "note",
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    print(
        f"\n{killed_clean} of {killed_runs} killed runs resumed to the uninterrupted result (test metrics, validation "
        f"history and weights identical); {args.trials - killed_runs} run(s) finished before their kill instant; "
        f"{clean} of {args.trials} trials identical in all."
    )
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if clean == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
