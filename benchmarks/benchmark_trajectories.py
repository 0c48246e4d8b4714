"""Interest drift of every user of a dataset, beside the same events shuffled, and category-interest accuracy.

    python benchmarks/benchmark_trajectories.py runs/interest --dataset movielens-100k --window 20 --plot_user 196

For each user the whole history (test target included) goes through the trained model once (`interest_trajectories`);
drift is the cosine distance between the mean interest states of consecutive windows (`interest_drift`), printed per
window index and pooled, beside a reference: each user's same events in one random order (`shuffled_trajectories`,
times kept in place). Time windows of 1 and 7 days too. Then the category interests (`category_interests`): the mass
the predicted category distribution puts on the next event's categories, beside the popularity category distribution
aggregated the same way. Optionally saves one user's plot.
"""

import argparse
import time

import numpy as np

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import load_named_dataset
from hf_interest.evolution import (
    category_distribution,
    category_interests,
    drift_by_window,
    interest_drift,
    interest_trajectories,
    plot_category_interests,
    shuffled_trajectories,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="A trained run folder (model + vocabulary).")
    parser.add_argument("--dataset", default="movielens-100k", help="Dataset the run was trained on.")
    parser.add_argument("--window", type=int, default=20, help="Events per drift window.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the shuffled reference.")
    parser.add_argument("--plot_user", default=None, help="Save this user's category-interest plot.")
    parser.add_argument("--output", default="trajectory.png", help="Where the plot goes.")
    args = parser.parse_args(argv)
    window = args.window
    start = time.time()
    model = InterestForNextItemPrediction.from_pretrained(args.run).eval()
    tokenizer = ItemTokenizer.from_pretrained(args.run)
    data = load_named_dataset(args.dataset)
    rows = data.sequences["test"]
    histories = [[*h, t] for h, t in zip(rows["item_ids"], rows["target_item_id"])]
    times = [[*h, t] for h, t in zip(rows["timestamps"], rows["target_timestamp"])]
    trajectories = interest_trajectories(model, tokenizer, histories, times, user_ids=rows["user_id"])
    shuffled = shuffled_trajectories(model, tokenizer, trajectories, seed=args.seed)
    print(
        f"{len(trajectories)} users, {sum(len(h) for h in histories):,} events, "
        f"{sum(len(t) for t in trajectories):,} read (newest {model.config.max_position_embeddings} per user), "
        f"{sum(t.num_truncated for t in trajectories):,} older left out "
        f"({sum(t.num_truncated > 0 for t in trajectories)} users), "
        f"{sum(t.num_unknown for t in trajectories)} unknown; {time.time() - start:.0f}s"
    )

    real = drift_by_window([interest_drift(t, window=window) for t in trajectories])
    base = drift_by_window([interest_drift(t, window=window) for t in shuffled])
    print(
        f"\nDrift per window of {window} events (cosine distance between the mean interest states of window w and"
        " w-1; windows from each user's first read event; shuffled = the same events of each user in one random"
        f" order, times in place, seed {args.seed})"
    )
    print(f"{'window':>6} {'users':>6} {'drift':>7} {'std':>6} {'shuffled':>8} {'from first':>10} {'shuffled':>8}")
    for r, b in zip(real, base):
        d = "-" if r["window"] == 0 else f"{r['drift']:.3f}"
        s = "-" if r["window"] == 0 else f"{b['drift']:.3f}"
        sd = "-" if r["window"] == 0 else f"{r['drift_std']:.3f}"
        print(
            f"{r['window']:>6} {r['users']:>6} {d:>7} {sd:>6} {s:>8} {r['drift_from_first']:>10.3f} "
            f"{b['drift_from_first']:>8.3f}"
        )
    pooled = np.concatenate([interest_drift(t, window=window).drift[1:] for t in trajectories])
    pooled_s = np.concatenate([interest_drift(t, window=window).drift[1:] for t in shuffled])
    print(
        f"all {len(pooled)} user-windows (w>=1): drift {pooled.mean():.3f} (shuffled {pooled_s.mean():.3f}); "
        f"users with >=2 windows: {sum(len(interest_drift(t, window=window)) > 1 for t in trajectories)}"
    )

    for seconds, name in ((86400, "1 day"), (7 * 86400, "7 days")):
        drifts = [interest_drift(t, window_seconds=seconds) for t in trajectories]
        drifts_s = [interest_drift(t, window_seconds=seconds) for t in shuffled]
        pooled = np.concatenate([d.drift[1:] for d in drifts])
        pooled_s = np.concatenate([d.drift[1:] for d in drifts_s])
        print(
            f"time windows of {name}: {sum(len(d) > 1 for d in drifts)} users with >=2 non-empty windows, "
            f"{len(pooled)} window pairs, {sum(d.empty_windows for d in drifts):,} empty windows skipped; "
            f"drift {pooled.mean():.3f} (shuffled {pooled_s.mean():.3f})"
        )

    # Category interests: mass the predicted category distribution puts on the next event's categories (an item with
    # several categories: its categories' masses averaged, the same split as category_distribution), beside the
    # popularity category distribution (share of training events) computed by the same aggregation.
    categories = dict(zip(map(str, data.items["item_id"]), data.items["categories"]))
    counts = np.asarray(data.item_counts, dtype=np.float64)
    popularity, pop_names, _ = category_distribution(counts / counts.sum(), data.item_ids, categories)
    start = time.time()
    held_out, held_out_pop, all_steps, all_steps_pop = [], [], [], []
    for trajectory in trajectories:
        interests = category_interests(model, tokenizer, trajectory, categories)
        column = {c: i for i, c in enumerate(interests.categories)}
        pop = np.array([popularity[pop_names.index(c)] if c in pop_names else 0.0 for c in interests.categories])
        for t in range(len(trajectory) - 1):
            cats = categories.get(trajectory.item_ids[t + 1]) or []
            if not cats:
                continue
            mass = np.mean([interests.probs[t, column[c]] for c in cats])
            base = np.mean([pop[column[c]] for c in cats])
            all_steps.append(mass)
            all_steps_pop.append(base)
            if t == len(trajectory) - 2:
                held_out.append(mass)
                held_out_pop.append(base)
    print(
        f"\nCategory interests ({time.time() - start:.0f}s): mean predicted mass on the next event's categories "
        "(seen items kept; several categories averaged)"
    )
    print(
        f"  held-out test target (last event of each user, {len(held_out)} users): model {np.mean(held_out):.3f}, "
        f"popularity {np.mean(held_out_pop):.3f}"
    )
    print(
        f"  every step (in-sample: training events included, {len(all_steps):,} steps): model {np.mean(all_steps):.3f}, "
        f"popularity {np.mean(all_steps_pop):.3f}"
    )

    if args.plot_user is not None:
        ids = [t.user_id for t in trajectories]
        if args.plot_user not in ids:
            raise SystemExit(f"--plot_user {args.plot_user!r} is not a user of {args.dataset}.")
        user = trajectories[ids.index(args.plot_user)]
        interests = category_interests(model, tokenizer, user, categories)
        drift = interest_drift(user, window=window)
        reference = [
            interest_drift(t, window=window).drift for t in shuffled_trajectories(model, tokenizer, [user] * 10)
        ]
        plot_category_interests(interests, args.output, drift=drift, drift_reference=np.mean(reference, 0))
        print(f"saved {args.output}")


if __name__ == "__main__":
    main()
