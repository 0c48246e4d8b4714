"""A membership-inference audit of a trained model: can the users it was trained on be told from users it never saw?

    python benchmarks/benchmark_privacy.py --dataset movielens-100k --write_holdout runs/holdout.txt --fraction 0.2
    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k_holdout --seed 42 \\
        --exclude_users_file runs/holdout.txt
    python benchmarks/benchmark_privacy.py --dataset movielens-100k --run runs/ml100k_holdout --holdout runs/holdout.txt

The first command draws `--fraction` of the dataset's users at random (`--seed`) and writes their ids; the model is
trained without them (their rows leave every split). The audit scores every user's history before their test event
(`hf_interest.privacy.membership_scores`: the mean next-item log-likelihood of their events) and reports the ROC AUC
between the members (trained on) and the held-out users, with a bootstrap interval. 0.5 means the model says nothing
about who it was trained on. Nothing is asserted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_interest  # noqa: F401  (registers the Auto classes)
from hf_interest.data import load_named_dataset
from hf_interest.privacy import membership_audit, membership_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-100k", help="the dataset (default: movielens-100k)")
    parser.add_argument("--write_holdout", help="write a random sample of user ids here, and stop")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of users held out (default: 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="sample and bootstrap seed (default: 0)")
    parser.add_argument("--run", help="a run trained with --exclude_users_file HOLDOUT")
    parser.add_argument("--holdout", help="the held-out user ids (one per line)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws (default: 1000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
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
    if not (args.run and args.holdout):
        parser.error("give --write_holdout FILE, or --run RUN --holdout FILE")
    held = {line.strip() for line in Path(args.holdout).read_text(encoding="utf-8").splitlines() if line.strip()}
    model = AutoModelForCausalLM.from_pretrained(args.run).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.run)
    scores = membership_scores(model, tokenizer, rows["item_ids"], rows["timestamps"])
    is_member = np.array([user not in held for user in users])
    result = membership_audit(scores[is_member], scores[~is_member], n_bootstrap=args.bootstrap, seed=args.seed)
    print(
        f"{args.run} on {args.dataset}: {result['members']} members (trained on), {result['non_members']} held-out "
        f"users (never seen), {result['left_out']} left out (fewer than two events); score = mean next-item "
        "log-likelihood of the user's events before their test event (newest 200 read)"
    )
    print(f"{'':<26} {'members':>9} {'held out':>9}")
    print(f"{'mean score':<26} {np.nanmean(scores[is_member]):>9.3f} {np.nanmean(scores[~is_member]):>9.3f}")
    print(
        f"membership AUC {result['auc']:.3f} (95% bootstrap interval {result['low']:.3f}-{result['high']:.3f}, "
        f"{result['n_bootstrap']} draws, seed {args.seed}); 0.5 = the model gives its training users away no better "
        "than chance"
    )


if __name__ == "__main__":
    main()
