"""Are the explanations true? Every attribution method of `hf_interest.explain`, checked against the model itself.

    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k --seed 42
    python hub_scripts/train.py --dataset synthetic --output_dir runs/synthetic --seed 42
    python benchmarks/benchmark_explain.py --run runs/ml100k --synthetic_run runs/synthetic

On a random sample of test users (`--users`, `--seed`; each history is what the model reads before the user's test
event, newest `max_position_embeddings` events) it explains the model's top-1 recommendation (seen items excluded)
with each method and prints, per method:

- beats random: the share of (user, draw) pairs where deleting the method's top-3 events lowers the explained item's
  logit more than deleting 3 random events (`--draws` draws per user; ties count one half);
- deletion / insertion AUC: the area under the explained item's probability (full softmax over the catalogue) as the
  events are removed highest attribution first (lower is better) or added to an empty history (higher is better);
- comprehensiveness / sufficiency at 3: logit(all) - logit(without the top 3), logit(all) - logit(the top 3 alone);
- seconds per user to explain (median over batches of `--batch_size` users, explanation only).

Then integrated gradients' completeness gap (|sum of attributions - (score - baseline score)| / |score - baseline
score|), and the counterfactual: the share of users for whom a set of their own events changes the top-1, the share of
those sets that change it when re-run through `recommend` (it must be 100%), and the median set size.

With `--synthetic_run` (a run trained on `--dataset synthetic`, whose generator settings are read from its
eval_results.json), the same users' truth is known: the share of each method's top-3 events that belong to the user's
current interest regime (the regime of their last history event), beside the base rate (the share of their history in
that regime, what a random top-3 gets in expectation), over all sampled users and over those whose history spans
more than one regime. Nothing is asserted; the numbers are what this machine measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_interest  # noqa: F401  (registers the model with the Auto classes)
from hf_interest.data import load_named_dataset
from hf_interest.data.synthetic import SyntheticConfig, generate_synthetic_interests
from hf_interest.explain import METHODS, counterfactual, explain, faithfulness

TOP = 3


def _load(run: str):
    model = AutoModelForCausalLM.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    arguments = json.loads((Path(run) / "eval_results.json").read_text())["arguments"]["data"]
    return model, tokenizer, arguments


def _sample(rows, users: int, seed: int, max_len: int):
    order = np.random.default_rng(seed).permutation(len(rows))[: min(users, len(rows))]
    picked = rows.select(sorted(order.tolist()))
    histories = [[str(item) for item in items][-max_len:] for items in picked["item_ids"]]
    times = [list(values)[-max_len:] for values in picked["timestamps"]]
    return picked, histories, times


def _explain_all(model, tokenizer, histories, times, method, batch_size, seed):
    explanations, per_user = [], []
    for start in range(0, len(histories), batch_size):
        chunk = slice(start, start + batch_size)
        began = time.perf_counter()
        explanations += explain(
            model, tokenizer, histories[chunk], times[chunk], method=method, seed=seed + start, internal_batch_size=512
        )
        per_user.append((time.perf_counter() - began) / len(histories[chunk]))
    return explanations, statistics.median(per_user)


def _movielens(args) -> dict:
    model, tokenizer, data_arguments = _load(args.run)
    data = load_named_dataset(data_arguments["dataset"], data_dir=data_arguments.get("data_dir"))
    _, histories, times = _sample(data.sequences["test"], args.users, args.seed, model.config.max_position_embeddings)
    print(
        f"{args.run}: {len(histories)} test users of {data_arguments['dataset']} (sample seed {args.seed}), histories of "
        f"{min(map(len, histories))}-{max(map(len, histories))} events; explained: the top-1 recommendation (full "
        f"ranking, seen items excluded); {args.draws} random draws of {TOP} events per user (seed {args.seed + 1000})"
    )
    print(
        f"{'method':<22} {'beats random':>12} {'deletion AUC':>12} {'insertion AUC':>13} {'compreh.@3':>10} "
        f"{'suffic.@3':>9} {'s/user':>7}"
    )
    results, gradients = {}, None
    for method in METHODS:
        explanations, seconds = _explain_all(model, tokenizer, histories, times, method, args.batch_size, args.seed)
        checked = faithfulness(
            model, tokenizer, explanations, histories, times, k=TOP, num_random=args.draws, seed=args.seed + 1000
        )
        results[method] = {key: value for key, value in checked.items() if not isinstance(value, (list, dict))}
        results[method]["seconds_per_user"] = seconds
        print(
            f"{method:<22} {checked['beats_random']:>12.3f} {checked['deletion_auc']:>12.4f} "
            f"{checked['insertion_auc']:>13.4f} {checked['comprehensiveness']:>10.3f} {checked['sufficiency']:>9.3f} "
            f"{seconds:>7.3f}"
        )
        if method == "integrated_gradients":
            gradients = explanations
    gaps = np.array([e.diagnostics["relative_completeness_gap"] for e in gradients])
    print(
        f"integrated gradients ({gradients[0].diagnostics['n_steps']} Gauss-Legendre steps, zero item vectors as the "
        f"baseline): relative completeness gap median {np.median(gaps):.2e}, max {gaps.max():.2e}; "
        f"{(gaps <= 0.01).mean():.1%} of users within 1%"
    )
    results["integrated_gradients"]["completeness_gap"] = {"median": float(np.median(gaps)), "max": float(gaps.max())}

    users = histories[: args.counterfactual_users]
    began = time.perf_counter()
    found = counterfactual(model, tokenizer, users, times[: len(users)])
    seconds = (time.perf_counter() - began) / len(users)
    sizes = [c.size for c in found if c.found]
    verified = sum(1 for c in found if c.found and c.verified)
    print(
        f"counterfactual (greedy, the user's own events, seen items stay excluded): {len(sizes)}/{len(found)} users "
        f"found a set that changes the top-1; re-run through recommend, {verified}/{len(sizes)} "
        f"({verified / max(len(sizes), 1):.0%}) change it; set size median {statistics.median(sizes) if sizes else '-'}"
        f", mean {np.mean(sizes) if sizes else float('nan'):.2f}, max {max(sizes) if sizes else '-'}; {seconds:.3f} s/user"
    )
    results["counterfactual"] = {
        "users": len(found),
        "found": len(sizes),
        "verified": verified,
        "median_size": statistics.median(sizes) if sizes else None,
        "seconds_per_user": seconds,
    }
    return results


def _synthetic(args) -> dict:
    model, tokenizer, data_arguments = _load(args.synthetic_run)
    if data_arguments["dataset"] != "synthetic":
        raise SystemExit(f"--synthetic_run {args.synthetic_run} was trained on {data_arguments['dataset']!r}.")
    config = SyntheticConfig(
        num_users=data_arguments["synthetic_num_users"],
        num_items=data_arguments["synthetic_num_items"],
        seed=data_arguments["synthetic_seed"],
    )
    generated = generate_synthetic_interests(config)
    data = generated.to_behavior_data()
    rows = data.sequences["test"]
    picked, histories, times = _sample(rows, args.users, args.seed, model.config.max_position_embeddings)
    event_items = generated.events.column("item_id").to_numpy()
    regimes = []
    for user, history, explained in zip(picked["user_id"], picked["item_ids"], histories):
        start = generated.user_offsets[int(user)]
        events = generated.user_major[start : start + len(history)]
        if [str(item) for item in event_items[events]] != [str(item) for item in history]:
            raise SystemExit(f"user {user}: the split's history is not the generator's sequence; cannot map regimes.")
        regimes.append(generated.latent.regime[events][-len(explained) :])
    current = [regime == regime[-1] for regime in regimes]
    mixed = np.array([not in_current.all() for in_current in current])
    base = np.array([in_current.mean() for in_current in current])
    print(
        f"\n{args.synthetic_run}: {len(histories)} test users of the synthetic drifting-interest data ({config.num_users} "
        f"users, {config.num_items} items, seed {config.seed}); {int(mixed.sum())} of them have events of more than one "
        f"regime. Share of the top-{TOP} events in the user's current regime:"
    )
    print(f"{'method':<22} {'all users':>9} {'base rate':>9} {'multi-regime users':>18} {'base rate':>9}")
    results = {}
    for method in METHODS:
        explanations, _ = _explain_all(model, tokenizer, histories, times, method, args.batch_size, args.seed)
        shares = np.array(
            [
                np.mean([in_current[event["position"]] for event in e.top(TOP)])
                for e, in_current in zip(explanations, current)
            ]
        )
        results[method] = {"share": float(shares.mean()), "share_multi_regime": float(shares[mixed].mean())}
        print(
            f"{method:<22} {shares.mean():>9.3f} {base.mean():>9.3f} {shares[mixed].mean():>18.3f} "
            f"{base[mixed].mean():>9.3f}"
        )
    results["base_rate"] = {"all": float(base.mean()), "multi_regime": float(base[mixed].mean())}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/ml100k", help="a run trained on MovieLens-100K (default: runs/ml100k)")
    parser.add_argument("--synthetic_run", help="a run trained on --dataset synthetic (the regime check)")
    parser.add_argument("--users", type=int, default=200, help="test users sampled (default: 200)")
    parser.add_argument("--draws", type=int, default=10, help="random 3-event deletions per user (default: 10)")
    parser.add_argument("--counterfactual_users", type=int, default=200, help="users for the counterfactual")
    parser.add_argument("--batch_size", type=int, default=16, help="users explained together (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="user sample and random baselines (default: 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--output_json", help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"movielens": _movielens(args)}
    if args.synthetic_run:
        results["synthetic"] = _synthetic(args)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
