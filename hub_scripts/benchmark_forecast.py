"""Benchmark the interest-forecasting head on the synthetic drifting-interest data, against the generator's optimum.

    python hub_scripts/benchmark_forecast.py                       # default synthetic setting, seeds 42 43 44
    python hub_scripts/benchmark_forecast.py --seeds 42 -- --forecast_horizon 10   # extra train.py arguments

Each seed trains `hub_scripts/train.py --task forecast --dataset synthetic --primary_category_only true` (split by
users: 10% of users held out for test, evaluated after every event of theirs that has k later events). The best model
is then evaluated again here on the test users, position by position, beside

- the "recent category mix" baseline (the last n events' categories, smoothed toward the training prior; n and the
  smoothing chosen on the validation users), and
- the oracle: the generator's ground truth for the next k events' category distribution given the user's latent
  state (`SyntheticInterestData.next_k_category_probs`), the best forecast any model can make in expectation.

Printed per seed: cross-entropy, KL and top-category accuracy of the three, and the ratio of the model's
cross-entropy to the oracle's (target: at most 1.10). The events are the synthetic events unfiltered (the split keeps
whole sequences), so positions map back to the generator's events exactly.
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
    oracle = truth[events][:, order].astype(np.float64)
    oracle /= oracle.sum(axis=1, keepdims=True)
    oracle_metrics = forecast_metrics(oracle, evaluation.targets)
    print(format_forecast_table(evaluation.metrics, oracle_metrics))
    model_ce = evaluation.metrics["model"]["cross_entropy"]
    return {
        "model": evaluation.metrics["model"],
        "recent_mix": evaluation.metrics["recent_mix"],
        "decayed_mix": evaluation.metrics["decayed_mix"],
        "oracle": oracle_metrics,
        "ratio_to_oracle": model_ce / oracle_metrics["cross_entropy"],
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
    header = f"{'seed':>6s} {'model CE':>9s} {'mix CE':>8s} {'decayed CE':>10s} {'oracle CE':>9s} {'ratio':>6s} "
    header += f"{'decayed ratio':>13s} {'model top1':>10s} "
    header += f"{'mix top1':>8s} {'oracle top1':>11s} {'best ep':>7s}"
    print(header)
    for seed, r in zip(args.seeds, rows):
        print(
            f"{seed:6d} {r['model']['cross_entropy']:9.4f} {r['recent_mix']['cross_entropy']:8.4f} "
            f"{r['decayed_mix']['cross_entropy']:10.4f} {r['oracle']['cross_entropy']:9.4f} {r['ratio_to_oracle']:6.3f} "
            f"{r['decayed_mix']['cross_entropy'] / r['oracle']['cross_entropy']:13.3f} "
            f"{r['model']['top_category_accuracy']:10.4f} "
            f"{r['recent_mix']['top_category_accuracy']:8.4f} {r['oracle']['top_category_accuracy']:11.4f} "
            f"{r['best_epoch']:7d}"
        )
    if len(rows) > 1:
        ratios = [r["ratio_to_oracle"] for r in rows]
        print(
            f"ratio to oracle: mean {statistics.mean(ratios):.3f}, std {statistics.stdev(ratios):.3f} (target <= 1.10)"
        )


if __name__ == "__main__":
    main()
