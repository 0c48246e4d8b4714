"""Benchmark the interest-forecasting head on the synthetic drifting-interest data, against the generator's optimum.

    python benchmarks/benchmark_forecast.py                       # default synthetic setting, seeds 42 43 44
    python benchmarks/benchmark_forecast.py --seeds 42 -- --forecast_horizon 10   # extra train.py arguments

Each seed trains `hub_scripts/train.py --task forecast --dataset synthetic --primary_category_only true` (split by
users: 10% of users held out for test, evaluated after every event of theirs that has k later events). The best model
is then evaluated again here on the test users, position by position, beside

- the "recent category mix" baseline (the last n events' categories, smoothed toward the training prior; n and the
  smoothing chosen on the validation users), and
- the oracle: the generator's ground truth for the next k events' category distribution given the user's latent
  state (`SyntheticInterestData.next_k_category_probs`). It knows each regime's two category distributions, which no
  forecast that reads the history can know, so its score is a floor no model reaches;
- the informed observer (`SyntheticInterestData.informed_next_k_category_probs`): exact Bayes for an observer that
  sees the history plus when the regime began and which side of the drift each event came from. It knows more than
  the history, so no history-only forecast beats it in expectation: a floor closer to what is reachable.

Printed per seed: cross-entropy, KL and top-category accuracy, and the ratio of the model's cross-entropy to the
oracle's (the issue's target: at most 1.10) and to the informed observer's. The events are the synthetic events
unfiltered (the split keeps whole sequences), so positions map back to the generator's events exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def evaluate_run(run: Path, synthetic_config: dict) -> dict:
    from hf_interest import InterestForInterestForecasting
    from hf_interest.data import (
        DataCollatorForInterest,
        SyntheticConfig,
        encode_sequences,
        generate_synthetic_interests,
    )
    from hf_interest.heads import (
        category_prior,
        evaluate_forecast,
        format_forecast_table,
        tune_forecast_baselines,
        whole_sequences,
    )
    from hf_interest.metrics import forecast_metrics
    from hf_interest.tokenization_interest import ItemTokenizer

    model = InterestForInterestForecasting.from_pretrained(run).eval()
    tokenizer = ItemTokenizer.from_pretrained(run)
    generated = generate_synthetic_interests(SyntheticConfig(**synthetic_config))
    data = generated.to_behavior_data(split="by_user")
    encoded, unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    if unknown:
        raise ValueError(
            f"{unknown} events are not in {run}'s vocabulary: the synthetic settings differ from training."
        )
    sequences = whole_sequences(encoded["test"])
    collator = DataCollatorForInterest(
        pad_token_id=tokenizer.pad_token_id,
        max_length=model.config.max_position_embeddings,
        mode="train",
        return_time_gaps=False,
    )
    weights = model.item_category_weights.numpy()
    prior = category_prior(encoded["train"]["input_ids"], weights)
    baselines = tune_forecast_baselines(
        whole_sequences(encoded["validation"]), collator, weights, prior, model.config.forecast_horizon
    )
    evaluation = evaluate_forecast(model, sequences, collator, prior, split="test", baselines=baselines)

    # The oracle, in the model's category order (sorted names) from the generator's (category index) order.
    k = model.config.forecast_horizon
    truth = generated.next_k_category_probs(k)
    users = np.asarray([int(sequences[r]["user_id"]) for r in evaluation.rows])
    events = generated.user_major[generated.user_offsets[users] + evaluation.event_index]
    order = [generated.category_names.index(name) for name in model.config.category_names]
    floors = {}
    for name, probs in (("oracle", truth), ("informed", generated.informed_next_k_category_probs(k))):
        probs = probs[events][:, order].astype(np.float64)
        floors[name] = forecast_metrics(probs / probs.sum(axis=1, keepdims=True), evaluation.targets)
    print(format_forecast_table(evaluation.metrics, floors["oracle"]))
    print(f"informed observer: {floors['informed']}")
    model_ce = evaluation.metrics["model"]["cross_entropy"]
    return {
        "model": evaluation.metrics["model"],
        "recent_mix": evaluation.metrics["recent_mix"],
        "decayed_mix": evaluation.metrics["decayed_mix"],
        "oracle": floors["oracle"],
        "informed": floors["informed"],
        "ratio_to_oracle": model_ce / floors["oracle"]["cross_entropy"],
        "ratio_to_informed": model_ce / floors["informed"]["cross_entropy"],
        "protocol": evaluation.metrics["protocol"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--output_root", default="runs/benchmark_forecast")
    parser.add_argument("--num_users", type=int, default=1000, help="Synthetic users (the generator's default).")
    parser.add_argument("--num_items", type=int, default=500, help="Synthetic items (the generator's default).")
    parser.add_argument("--synthetic_seed", type=int, default=0)
    parser.add_argument(
        "--evaluate_only", action="store_true", help="Evaluate the runs already in --output_root; train nothing."
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="Arguments for train.py, after --.")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    synthetic = {"num_users": args.num_users, "num_items": args.num_items, "seed": args.synthetic_seed}
    rows = []
    for seed in args.seeds:
        run = Path(args.output_root) / f"seed_{seed}"
        command = [
            sys.executable, str(ROOT / "hub_scripts" / "train.py"),
            "--task", "forecast", "--dataset", "synthetic", "--primary_category_only", "true",
            "--synthetic_num_users", str(args.num_users), "--synthetic_num_items", str(args.num_items),
            "--synthetic_seed", str(args.synthetic_seed),
            "--seed", str(seed), "--output_dir", str(run), "--report_to", "none", *extra,
        ]  # fmt: skip
        if not args.evaluate_only:
            subprocess.run(command, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
        print(f"\nseed {seed}: test users, evaluated again position by position")
        result = evaluate_run(run, synthetic)
        training = json.loads((run / "eval_results.json").read_text())["training"]
        result.update(best_epoch=training["best_epoch"], seconds_per_epoch=training["seconds_per_epoch_median"])
        (run / "forecast_benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
        rows.append(result)

    print(f"\n{rows[0]['protocol']}")
    print(f"train.py arguments: --task forecast --dataset synthetic {' '.join(extra)}")
    columns = {  # header: (width, value of a row)
        "seed": (6, lambda seed, r: f"{seed}"),
        "model CE": (9, lambda seed, r: f"{r['model']['cross_entropy']:.4f}"),
        "mix CE": (8, lambda seed, r: f"{r['recent_mix']['cross_entropy']:.4f}"),
        "decayed CE": (10, lambda seed, r: f"{r['decayed_mix']['cross_entropy']:.4f}"),
        "informed CE": (11, lambda seed, r: f"{r['informed']['cross_entropy']:.4f}"),
        "oracle CE": (9, lambda seed, r: f"{r['oracle']['cross_entropy']:.4f}"),
        "model/oracle": (12, lambda seed, r: f"{r['ratio_to_oracle']:.3f}"),
        "model/informed": (14, lambda seed, r: f"{r['ratio_to_informed']:.3f}"),
        "informed/oracle": (
            15,
            lambda seed, r: f"{r['informed']['cross_entropy'] / r['oracle']['cross_entropy']:.3f}",
        ),
        "model top1": (10, lambda seed, r: f"{r['model']['top_category_accuracy']:.4f}"),
        "mix top1": (8, lambda seed, r: f"{r['recent_mix']['top_category_accuracy']:.4f}"),
        "oracle top1": (11, lambda seed, r: f"{r['oracle']['top_category_accuracy']:.4f}"),
        "best ep": (7, lambda seed, r: f"{r['best_epoch']}"),
    }
    print(" ".join(f"{name:>{width}s}" for name, (width, _) in columns.items()))
    for seed, r in zip(args.seeds, rows):
        print(" ".join(f"{value(seed, r):>{width}s}" for width, value in columns.values()))
    if len(rows) > 1:
        for key, target in (("ratio_to_oracle", " (target <= 1.10)"), ("ratio_to_informed", "")):
            ratios = [r[key] for r in rows]
            print(f"{key}: mean {statistics.mean(ratios):.3f}, std {statistics.stdev(ratios):.3f}{target}")


if __name__ == "__main__":
    main()
