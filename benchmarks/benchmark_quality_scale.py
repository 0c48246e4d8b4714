"""Quality at scale against a known optimum: the model with train.py's defaults, the baselines that need no training,
and the exact optimum of the synthetic world, by the same evaluation code.

    # cells of the grid: EVENTS:ITEMS (k and M suffixes); each trains hub_scripts/train.py with its defaults
    python benchmarks/benchmark_quality_scale.py --cells 1M:10k 1M:100k --num_train_epochs 6 --output runs/quality
    # the baselines beside a trained run of any dataset (MovieLens-100K: no optimum is known there)
    python benchmarks/benchmark_quality_scale.py --runs runs/ml100k
    # the largest cell: validate and score fixed random samples of 20,000 users (each with its stated error bound)
    python benchmarks/benchmark_quality_scale.py --cells 10M:1M --num_train_epochs 3 --test_users 20000 \
        --train_args --validation_users 20000

The world is the library's synthetic drifting-interest generator with item-to-item structure
(`--successor_probability`, default 0.3: a sequel, the next episode). A cell of E events over N items has E / 60 users
(20-100 events each, 60 on average). Per cell it records, on the test split (leave-one-out, full ranking over the
whole catalogue, items of the history excluded, a target among them counted as a miss, as served):
- NDCG@10 and HR@10 of the model, the transition and history-category baselines, popularity, and the optimum
  (`SyntheticInterestData.next_item_probs`, ranked with the same exclusions; it knows the latent regime, which a model
  can only infer from the history, so it is an upper bound), each also as a fraction of the optimum's NDCG@10;
- the training seconds to the best epoch, and to the first epoch whose validation NDCG@10 reached 90% of the best;
- when the curve left the popularity plateau: the first epoch (and its training seconds) whose validation NDCG@10
  reached 1.25x popularity's on the validation split, scored by the same code;
- the validation NDCG@10 of every epoch (the curve), the peak resident memory of training, events per item.
With `--test_users N` every scorer is scored on the same fixed random sample of N test users (drawn from `--seed`),
and the protocol line states the sample and the 95% bound on its error (`user_sample_error_bound`); the plateau's
popularity level is always scored on the users the run validated. It writes `--output/quality.json` and prints one
table. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MEAN_EVENTS_PER_USER = 60  # SyntheticConfig's 20..100 events per user
LEFT_POPULARITY = 1.25  # the curve has left the popularity plateau at 1.25x popularity's validation NDCG@10


def _count(text: str) -> int:
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "kM" else text) * scale)


def train_cell(events: int, items: int, args) -> Path:
    """Trains one cell with hub_scripts/train.py's defaults (a few flags for the world and the epochs)."""
    users = max(1, events // MEAN_EVENTS_PER_USER)
    folder = Path(args.output) / f"cell_{events}_{items}"
    command = [
        sys.executable, str(ROOT / "hub_scripts" / "train.py"), "--dataset", "synthetic",
        "--synthetic_num_users", str(users), "--synthetic_num_items", str(items),
        "--synthetic_successor_probability", str(args.successor_probability),
        "--num_train_epochs", str(args.num_train_epochs), "--seed", str(args.seed), "--output_dir", str(folder),
        "--report_to", "none", *args.train_args,
    ]  # fmt: skip
    print(" ".join(command), flush=True)
    began = time.perf_counter()
    with open(Path(args.output) / f"cell_{events}_{items}.log", "w", encoding="utf-8") as log:
        subprocess.run(
            command, check=True, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"}
        )
    print(f"  trained in {time.perf_counter() - began:.0f} s", flush=True)
    return folder


def _users(rows, size: int | None, seed: int):
    """`rows` (an evaluation split) cut to train.py's fixed random sample of `size` users drawn from `seed`, or all of
    them (None: `size` left out or not below the split's users)."""
    from hf_interest.training.data import validation_user_sample

    if size is None or size >= len(rows):
        return None
    return validation_user_sample(len(rows), size, seed)


@torch.no_grad()
def score_run(run: Path, test_users: int | None = None, seed: int = 42) -> dict:
    """The run's model, popularity, the two baselines and (synthetic data) the optimum on the test split: every user,
    or a fixed random sample of `test_users` (drawn from `seed`; the same users for every scorer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_interest  # noqa: F401  (registers the Auto classes)
    from hf_interest.data import SyntheticConfig, encode_sequences, generate_synthetic_interests
    from hf_interest.heads import category_weight_matrix
    from hf_interest.metrics import (
        HistoryCategoryRecommender,
        RankingAccumulator,
        TransitionRecommender,
        synthetic_oracle_scores,
        user_sample_description,
    )
    from hf_interest.training.arguments import DataArguments
    from hf_interest.training.data import load_data
    from hf_interest.training.evaluation import eval_dataloader, evaluate_next_item, popularity_baseline

    results = json.loads((run / "eval_results.json").read_text())
    data_args = DataArguments(**results["arguments"]["data"])
    model = AutoModelForCausalLM.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    data = load_data(data_args)
    encoded, _ = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    popularity = popularity_baseline(encoded["train"], len(tokenizer), tokenizer.num_special_tokens)
    # the synthetic world draws an event's item by its primary category (listed first); other logs: every category
    primary_only = "primary_category" in data.items.column_names
    weights, _, _ = category_weight_matrix(data.items, tokenizer, primary_only=primary_only)
    baselines = {
        "transition": TransitionRecommender.from_sequences(encoded["train"]["input_ids"], len(tokenizer), popularity),
        "history_category": HistoryCategoryRecommender(weights, popularity),
    }
    test, rows = data.sequences["test"], encoded["test"]  # row i of one is row i of the other
    sample, picked = None, _users(rows, test_users, seed)
    if picked is not None:
        sample = user_sample_description(test_users, len(rows), "--test_users")
        test, rows = test.select(picked), rows.select(picked)
    loader = eval_dataloader(rows, tokenizer.pad_token_id, model.config.max_position_embeddings, 128)
    has_time = "timestamps" in encoded["test"].column_names
    began = time.perf_counter()
    scored = evaluate_next_item(model, loader, popularity, "test", use_timestamps=has_time, baselines=baselines)
    block = scored["exclude_seen"]
    out = {name: {k: block[name][k] for k in ("ndcg@10", "hr@10")} for name in ("model", "popularity", *baselines)}
    out["protocol"] = block["protocol"] if sample is None else {**block["protocol"], "users": sample}
    if data_args.dataset == "synthetic":
        config = SyntheticConfig(
            num_users=data_args.synthetic_num_users, num_items=data_args.synthetic_num_items,
            seed=data_args.synthetic_seed, successor_probability=data_args.synthetic_successor_probability,
        )  # fmt: skip
        synthetic = generate_synthetic_interests(config)
        accumulator = RankingAccumulator((10,), exclude_seen=True, ignore_index=range(tokenizer.num_special_tokens))
        for start in range(0, len(test), 256):
            stop = min(start + 256, len(test))
            scores = synthetic_oracle_scores(synthetic, test, tokenizer.get_vocab(), start, stop)
            histories = rows[start:stop]["input_ids"]
            width = max(len(history) for history in histories)
            seen = torch.tensor([[tokenizer.pad_token_id] * (width - len(h)) + list(h) for h in histories])
            accumulator.update(scores, torch.tensor(rows[start:stop]["labels"]), seen)
        optimum = accumulator.compute()
        out["optimum"] = {"ndcg@10": optimum["ndcg@10"], "hr@10": optimum["hr@10"]}
        for name in ("model", "popularity", *baselines):
            out[name]["of_optimum"] = out[name]["ndcg@10"] / optimum["ndcg@10"]
    out["evaluation_seconds"] = time.perf_counter() - began
    # popularity on the validation split, the level of the plateau the curve has to leave: on the users the run
    # validated (train.py's --validation_users sample, if it took one)
    validation_rows, train_args = encoded["validation"], results["arguments"]["train"]
    picked = _users(validation_rows, train_args.get("validation_users"), train_args["seed"])
    if picked is not None:
        validation_rows = validation_rows.select(picked)
    validation = RankingAccumulator((10,), exclude_seen=True, ignore_index=range(tokenizer.num_special_tokens))
    for batch in eval_dataloader(validation_rows, tokenizer.pad_token_id, model.config.max_position_embeddings, 256):
        validation.update(popularity.full_sort_scores(len(batch["labels"])), batch["labels"], batch["seen"])
    validation_popularity = validation.compute()["ndcg@10"]
    training = results["training"]
    history = training["history"]
    best = max(row["ndcg@10"] for row in history)
    elapsed, to_90, left = 0.0, None, None
    for epoch, row in enumerate(history, start=1):
        elapsed += row["seconds"]
        if to_90 is None and row["ndcg@10"] >= 0.9 * best:
            to_90 = elapsed
        if left is None and row["ndcg@10"] >= LEFT_POPULARITY * validation_popularity:
            left = (epoch, elapsed)
    stats = results["dataset"]["statistics"]
    out["training"] = {
        "epochs_run": training["epochs_run"],
        "best_epoch": training["best_epoch"],
        "train_seconds": training["train_seconds"],
        "time_to_best_s": training.get("time_to_best_epoch_s"),
        "time_to_90pct_s": to_90,
        "validation_popularity_ndcg@10": validation_popularity,
        "left_popularity_epoch": left[0] if left else None,
        "left_popularity_s": left[1] if left else None,
        "validation_ndcg@10_by_epoch": [round(row["ndcg@10"], 5) for row in history],
        "peak_rss_mb": max((v for row in history for k, v in row.items() if k.startswith("peak_rss")), default=None),
    }
    out["data"] = {"events": stats.get("events"), "items": stats.get("items"), "users": stats.get("users")}
    if stats.get("events") and stats.get("items"):
        out["data"]["events_per_item"] = stats["events"] / stats["items"]
    return out


def _left(training: dict) -> str:
    epoch = training.get("left_popularity_epoch")
    return "never" if epoch is None else f"{epoch} ({training['left_popularity_s']:.0f} s)"


def print_table(scored: dict[str, dict]) -> None:
    names = ("model", "transition", "history_category", "popularity")
    from hf_interest.metrics import format_protocol

    print(format_protocol(next(iter(scored.values()))["protocol"]))
    header = f"{'run':<34} {'events/item':>11} {'repeats':>7} {'optimum':>8} "
    header += " ".join(f"{n[:16]:>16}" for n in names)
    print(header + f" {'left pop.':>10} {'to best s':>9} {'to 90% s':>8} {'peak MB':>8}")
    for run, out in scored.items():
        optimum = out.get("optimum", {}).get("ndcg@10")
        cells = []
        for name in names:
            value = out[name]["ndcg@10"]
            cells.append(f"{value:.4f} ({value / optimum:.0%})" if optimum else f"{value:.4f}")
        training, per_item = out["training"], out["data"].get("events_per_item")
        protocol = out["protocol"]
        repeats = "-"  # test targets already in the history: misses for every scorer (a run scored before the count)
        if protocol.get("targets_in_history") is not None and protocol.get("num_targets"):
            repeats = f"{protocol['targets_in_history'] / protocol['num_targets']:.1%}"
        print(
            f"{run:<34} {per_item or float('nan'):>11.1f} {repeats:>7} {optimum or float('nan'):>8.4f} "
            + " ".join(f"{c:>16}" for c in cells)
            + f" {_left(training):>10}"
            + f" {training['time_to_best_s'] or float('nan'):>9.0f} {training['time_to_90pct_s'] or float('nan'):>8.0f}"
            + f" {training['peak_rss_mb'] or float('nan'):>8.0f}"
        )
    print(
        "NDCG@10 on the test split; (x%): of the optimum's NDCG@10. Seconds: training only, to the best epoch and to"
    )
    print("the first epoch at 90% of the best validation NDCG@10. Left pop.: the first epoch (its seconds) at 1.25x")
    print("popularity's validation NDCG@10. Peak MB: the training process's resident memory. Repeats: test targets")
    print("already in the user's history, misses for every scorer (as served with exclude_seen).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="*", default=[], help="EVENTS:ITEMS cells to train, e.g. 1M:10k 10M:1M")
    parser.add_argument("--runs", nargs="*", default=[], help="trained run folders to score as they are")
    parser.add_argument("--num_train_epochs", type=int, default=20, help="epochs per cell (early stopping applies)")
    parser.add_argument("--successor_probability", type=float, default=0.3, help="item-to-item structure of the world")
    parser.add_argument("--seed", type=int, default=42, help="training seed (the world's seed is 0)")
    parser.add_argument("--output", default="runs/quality", help="where the cells' runs and quality.json go")
    parser.add_argument(
        "--test_users", type=int, default=None,
        help="score a fixed random sample of this many test users (drawn from --seed), not all; the table states the "
        "sample and its 95 percent error bound",
    )  # fmt: skip
    parser.add_argument("--table", default=None, help="print the table of a saved quality.json and stop")
    parser.add_argument("--train_args", nargs=argparse.REMAINDER, default=[], help="more train.py flags (last)")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return
    Path(args.output).mkdir(parents=True, exist_ok=True)
    runs = [Path(run) for run in args.runs]
    for cell in args.cells:
        events, items = (_count(part) for part in cell.split(":"))
        runs.append(train_cell(events, items, args))
    scored = {str(run): score_run(run, args.test_users, args.seed) for run in runs}
    (Path(args.output) / "quality.json").write_text(json.dumps(scored, indent=2) + "\n")
    print_table(scored)


if __name__ == "__main__":
    main()
