"""
Repeat targets under the `exclude_seen` protocol: how many test targets are items the user has had before, and what
each scorer's NDCG@10 is on them and on the new targets, for trained synthetic run folders.

    python benchmarks/benchmark_repeat_targets.py runs/quality_prior_1m_10k/cell_1000000_10000 --users 4000

Until 2026-12-07 the protocol removed the history's items from the ranking except the target itself. For a repeat
target that told a model which history item is the target: every other one was removed, so a model that scores its
history's items high ranked the target near the top, while serving with `exclude_seen` removes every history item and
can never return it. The protocol now removes the target with the history (a repeat target is a miss, as served).
This script still measures the old rule, to show what it gave: per scorer, NDCG@10 over all targets with the target
kept (the old figure), on repeat targets, on new targets, and with repeat targets counted as misses (the protocol's
figure now, what serving with `exclude_seen` can reach), on the first `--users` test users (full ranking, seen items
excluded). The optimum ranks by the true probabilities and takes no bonus from the old rule. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

NAMES = ("model", "transition", "history_category", "popularity", "optimum")


def ndcg_at_10(ranks: torch.Tensor) -> torch.Tensor:
    return torch.where(ranks < 10, 1.0 / torch.log2(ranks.double() + 2.0), 0.0)


@torch.no_grad()
def score(run: Path, users: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_interest  # noqa: F401  (registers the Auto classes)
    from hf_interest.data import SyntheticConfig, encode_sequences, generate_synthetic_interests
    from hf_interest.heads import category_weight_matrix
    from hf_interest.metrics import (
        HistoryCategoryRecommender,
        TransitionRecommender,
        ranks_from_scores,
        synthetic_oracle_scores,
    )
    from hf_interest.training.arguments import DataArguments
    from hf_interest.training.data import load_data
    from hf_interest.training.evaluation import popularity_baseline

    results = json.loads((run / "eval_results.json").read_text())
    data_args = DataArguments(**results["arguments"]["data"])
    if data_args.dataset != "synthetic":
        raise ValueError(f"{run} was trained on {data_args.dataset}: the optimum needs a synthetic world.")
    model = AutoModelForCausalLM.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    data = load_data(data_args)
    encoded, _ = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    rows = encoded["test"].select(range(min(users, len(encoded["test"]))))
    popularity = popularity_baseline(encoded["train"], len(tokenizer), tokenizer.num_special_tokens)
    transition = TransitionRecommender.from_sequences(encoded["train"]["input_ids"], len(tokenizer), popularity)
    weights, _, _ = category_weight_matrix(data.items, tokenizer, primary_only=True)  # the world draws by primary
    history_category = HistoryCategoryRecommender(weights, popularity)
    world = generate_synthetic_interests(
        SyntheticConfig(
            num_users=data_args.synthetic_num_users,
            num_items=data_args.synthetic_num_items,
            seed=data_args.synthetic_seed,
            successor_probability=data_args.synthetic_successor_probability,
        )  # fmt: skip
    )
    length, pad, special = model.config.max_position_embeddings, tokenizer.pad_token_id, range(3)
    values = {name: [] for name in NAMES}
    repeat = []
    for start in range(0, len(rows), 128):
        stop = min(start + 128, len(rows))
        batch = rows[start:stop]
        width = max(len(h) for h in batch["input_ids"])
        seen = torch.tensor([[pad] * (width - len(h)) + list(h) for h in batch["input_ids"]])
        labels = torch.tensor(batch["labels"])
        inputs = seen[:, -length:]
        mask = (inputs != pad).long()
        kwargs = {}
        if "timestamps" in batch:
            kwargs["timestamps"] = torch.tensor([[0] * (width - len(t)) + list(t) for t in batch["timestamps"]])[
                :, -length:
            ]
        scores = {
            "model": model(input_ids=inputs, attention_mask=mask, logits_to_keep=1, **kwargs).logits[:, -1].float(),
            "transition": transition(inputs, mask),
            "history_category": history_category(inputs, mask),
            "popularity": popularity.full_sort_scores(len(labels)),
            "optimum": torch.as_tensor(
                synthetic_oracle_scores(world, data.sequences["test"], tokenizer.get_vocab(), start, stop)
            ),
        }
        kept = seen.masked_fill(seen == labels[:, None], pad)  # the old rule: the target stays in the ranking
        for name, matrix in scores.items():
            ranks = ranks_from_scores(matrix, labels, kept, exclude_seen=True, ignore_index=special)
            values[name].append(ndcg_at_10(ranks))
        repeat.append((seen == labels[:, None]).any(1))
    repeat = torch.cat(repeat)
    out = {"run": str(run), "users": len(repeat), "repeat_targets": int(repeat.sum())}
    for name, parts in values.items():
        ndcg = torch.cat(parts)
        out[name] = {
            "all": float(ndcg.mean()),
            "repeat": float(ndcg[repeat].mean()) if repeat.any() else None,
            "new": float(ndcg[~repeat].mean()),
            "repeats_as_misses": float(torch.where(repeat, 0.0, ndcg).mean()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="trained synthetic run folders")
    parser.add_argument("--users", type=int, default=4000, help="the first N test users")
    parser.add_argument("--output", default=None, help="a JSON file for the results")
    args = parser.parse_args()
    results = [score(Path(run), args.users) for run in args.runs]
    print("test split, full ranking, seen items excluded; NDCG@10 with the target kept (the old rule: all, repeat)")
    print("and with repeat targets counted as misses (the protocol now)")
    print(f"{'run / scorer':<58} {'all':>7} {'repeat':>7} {'new':>7} {'repeats as misses':>18}")
    for result in results:
        share = result["repeat_targets"] / result["users"]
        print(f"{result['run']}: {result['users']} users, {result['repeat_targets']} repeat targets ({share:.1%})")
        for name in NAMES:
            row = result[name]
            repeat = "-" if row["repeat"] is None else f"{row['repeat']:.4f}"
            print(f"  {name:<56} {row['all']:>7.4f} {repeat:>7} {row['new']:>7.4f} {row['repeats_as_misses']:>18.4f}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
