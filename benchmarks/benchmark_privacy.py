"""Privacy measured by an attack: what user-level DP-SGD and forgetting (SISA) cost in quality, and what a
membership-inference attack can still tell.

    # 1. hold out 20% of the users (never trained on: the attack's non-members)
    python benchmarks/benchmark_privacy.py --write_holdout runs/holdout.txt --fraction 0.2
    # 2. train without them: no DP, DP at epsilon 1 / 4 / 8, and S = 2, 4, 8 shards (commands: docs/privacy.md)
    python hub_scripts/train.py --dataset movielens-100k --exclude_users_file runs/holdout.txt --seed 42 \\
        --output_dir runs/ml100k_holdout                                    # and --dp_epsilon E / --num_shards S
    # 3. forget users of a sharded run (members drawn at random: one, then 100 more)
    python benchmarks/benchmark_privacy.py --holdout runs/holdout.txt --seed 1 \\
        --write_forget runs/forget_one.txt runs/forget100.txt --forget_counts 1 100
    hf-interest forget runs/sisa4 --users_file runs/forget_one.txt       # one user: one shard retrained
    hf-interest forget runs/sisa4 --users_file runs/forget100.txt
    # 4. the tables
    python benchmarks/benchmark_privacy.py --holdout runs/holdout.txt \\
        --runs "no DP=runs/ml100k_holdout" "eps 8=runs/dp8" "4 shards=runs/sisa4" \\
        --forgotten runs/forget_one.txt runs/forget100.txt

For every run: test NDCG@10 and HR@10 (full ranking, seen items excluded, on the run's own test users) beside the
popularity baseline of the same evaluation, the run's (epsilon, delta) when it is private, the training time, and the
attack: each user's score is the mean next-item log-likelihood of their events before their test event
(`hf_interest.privacy.membership_scores`), and the ROC AUC tells the members (trained on) from the held-out users,
with a bootstrap interval; 0.5 means the model gives away no better than chance who it was trained on. With
`--forgotten`, sharded runs are also audited on the users they forgot against the held-out ones: exact forgetting
should leave nothing to tell them apart. Nothing is asserted; the numbers are printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_interest  # noqa: F401  (registers the Auto classes)
from hf_interest.data import load_named_dataset
from hf_interest.privacy import membership_audit, membership_scores
from hf_interest.training.data import read_ids
from hf_interest.training.sisa import load_ensemble


def _read_ids(path) -> set[str]:
    return set(read_ids(path, "the id file", "user"))


def _load(run: Path):
    """The model (a shard ensemble for a sharded run), its tokenizer, and its eval_results.json."""
    results = json.loads((run / "eval_results.json").read_text())
    if (run / "sisa.json").is_file():
        model, tokenizer = load_ensemble(run)
    else:
        model = AutoModelForCausalLM.from_pretrained(run).eval()
        tokenizer = AutoTokenizer.from_pretrained(run)
    return model, tokenizer, results


def _interval(result: dict) -> str:
    return f"{result['auc']:.3f} ({result['low']:.3f}-{result['high']:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-100k", help="the dataset (default: movielens-100k)")
    parser.add_argument("--write_holdout", help="write a random sample of user ids here, and stop")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of users held out (default: 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="sample and bootstrap seed (default: 0)")
    parser.add_argument("--write_forget", nargs="+", default=[], metavar="FILE",
                        help="with --holdout: draw members to forget (--forget_counts per file, --seed), and stop")  # fmt: skip
    parser.add_argument("--forget_counts", nargs="+", type=int, default=[], help="users per --write_forget file")
    parser.add_argument("--runs", nargs="+", default=[], metavar="NAME=RUN", help="runs trained without --holdout")
    parser.add_argument("--run", help="one run (the same as --runs RUN=RUN)")
    parser.add_argument("--holdout", help="the held-out user ids (one per line)")
    parser.add_argument(
        "--forgotten", nargs="+", default=[], help="files of user ids the sharded runs forgot (forget --users_file)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws (default: 1000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = load_named_dataset(args.dataset).sequences["test"]
    users = [str(user) for user in rows["user_id"]]
    if args.write_holdout:
        count = round(args.fraction * len(users))
        held = sorted(np.random.default_rng(args.seed).choice(users, count, replace=False).tolist(), key=str)
        Path(args.write_holdout).write_text("\n".join(held) + "\n", encoding="utf-8")
        print(f"{count} of {len(users)} users of {args.dataset} written to {args.write_holdout} (seed {args.seed})")
        return
    if args.write_forget:
        if not args.holdout or len(args.forget_counts) != len(args.write_forget):
            parser.error("--write_forget needs --holdout and one --forget_counts number per file")
        held = _read_ids(args.holdout)
        members = sorted((user for user in users if user not in held), key=lambda user: (len(user), user))
        drawn = np.random.default_rng(args.seed).choice(members, sum(args.forget_counts), replace=False).tolist()
        for path, count in zip(args.write_forget, args.forget_counts):
            Path(path).write_text("\n".join(drawn[:count]) + "\n", encoding="utf-8")
            print(f"{count} members (not held out) written to {path} (seed {args.seed})")
            drawn = drawn[count:]
        return
    runs = [entry.split("=", 1) if "=" in entry else (entry, entry) for entry in args.runs]
    runs = [(name.strip(), Path(path)) for name, path in runs] + ([(args.run, Path(args.run))] if args.run else [])
    if not (runs and args.holdout):
        parser.error("give --write_holdout FILE, or --runs NAME=RUN ... --holdout FILE")
    held = _read_ids(args.holdout)
    forgotten = set().union(*(_read_ids(path) for path in args.forgotten))
    if held & forgotten:
        parser.error("--forgotten lists held-out users: those were never trained on.")
    is_held = np.array([user in held for user in users])
    is_forgotten = np.array([user in forgotten for user in users])
    print(
        f"{args.dataset}: {len(users)} users, {int(is_held.sum())} held out (never trained on: the non-members)"
        + (f", {int(is_forgotten.sum())} forgotten by the sharded runs" if forgotten else "")
        + ". Test: full ranking, seen items excluded, each run's own test users; attack: ROC AUC of the mean "
        "next-item log-likelihood, members vs held out (95% bootstrap interval, "
        f"{args.bootstrap} draws, seed {args.seed})."
    )
    # A reference for the attack: the same score from item popularity alone (counted on the members' training
    # events), which memorises no user: its AUC is what the two groups' histories differ by before any model.
    data = load_named_dataset(args.dataset)
    train = data.sequences["train"]
    counts: dict[str, int] = {}
    for user, items in zip(train["user_id"], train["item_ids"]):
        if str(user) not in held and str(user) not in forgotten:
            for item in items:
                counts[str(item)] = counts.get(str(item), 0) + 1
    total, catalogue = sum(counts.values()), len(data.item_ids)
    popularity_scores = np.array(
        [
            np.mean([np.log((counts.get(str(item), 0) + 1) / (total + catalogue)) for item in items[1:]])
            if len(items) > 1
            else np.nan
            for items in rows["item_ids"]
        ]
    )
    members = ~is_held & ~is_forgotten
    reference = membership_audit(
        popularity_scores[members], popularity_scores[is_held], n_bootstrap=args.bootstrap, seed=args.seed
    )
    print(
        f"reference: the same attack with item popularity as the model (no user memorised): AUC {_interval(reference)}"
    )
    header = (
        f"{'run':<14} {'privacy':<24} {'NDCG@10':>8} {'HR@10':>7} {'pop NDCG':>8} {'pop HR':>7} {'users':>6} "
        f"{'train s':>8}  {'attack AUC, members':<22} {'attack AUC, forgotten':<22}"
    )
    print(header)
    print("-" * len(header))
    table = []
    for name, run in runs:
        model, tokenizer, results = _load(run)
        block = results["test"]["exclude_seen"]
        scores = membership_scores(model, tokenizer, rows["item_ids"], rows["timestamps"])
        attack = membership_audit(scores[members], scores[is_held], n_bootstrap=args.bootstrap, seed=args.seed)
        forgot = None
        if forgotten and results.get("sisa", {}).get("forgotten_users"):
            forgot = membership_audit(
                scores[is_forgotten], scores[is_held], n_bootstrap=args.bootstrap, seed=args.seed
            )
        dp = results.get("differential_privacy")
        sisa = results.get("sisa")
        if dp:
            privacy = f"DP eps {dp['epsilon']:.2f}, delta {dp['delta']:.1e}"
            seconds = results["training"]["train_seconds"]
        elif sisa:
            privacy = f"{sisa['num_shards']} shards (SISA)"
            seconds = sum(shard["train_seconds"] for shard in sisa["shards"])
        else:
            privacy = "none"
            seconds = results["training"]["train_seconds"]
        row = {
            "run": name,
            "folder": str(run),
            "privacy": privacy,
            "ndcg@10": block["model"]["ndcg@10"],
            "hr@10": block["model"]["hr@10"],
            "popularity_ndcg@10": block["popularity"]["ndcg@10"],
            "popularity_hr@10": block["popularity"]["hr@10"],
            "test_users": block["model"]["num_users"],
            "train_seconds": seconds,
            "attack_members": attack,
            "attack_forgotten": forgot,
        }
        table.append(row)
        print(
            f"{name:<14} {privacy:<24} {row['ndcg@10']:>8.4f} {row['hr@10']:>7.4f} {row['popularity_ndcg@10']:>8.4f} "
            f"{row['popularity_hr@10']:>7.4f} {row['test_users']:>6} {seconds:>8.0f}  {_interval(attack):<22} "
            f"{_interval(forgot) if forgot else '-':<22}"
        )
    if args.json:
        output = {"popularity_reference": reference, "runs": table}
        Path(args.json).write_text(json.dumps(output, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
