"""Evaluate a saved next-item checkpoint on any split, beside the popularity baseline, under the stated protocol.

    python hub_scripts/evaluate.py runs/ml100k                        # the dataset the run was trained on, test split
    python hub_scripts/evaluate.py runs/ml100k --split validation
    python hub_scripts/evaluate.py ORG/NAME --dataset movielens-100k   # a Hub repo id or any folder, any dataset

The data is loaded and split exactly as `hub_scripts/train.py` does (leave-one-out by time); items the checkpoint's
vocabulary does not know become [UNK] and are counted. The popularity baseline counts the training events of the
split. Results print as a table (seen items excluded, then included) and, with `--output_json`, are written to a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import hf_interest  # noqa: F401  (registers the Auto classes)
from hf_interest.data import CleaningConfig, encode_sequences
from hf_interest.metrics import format_results_table
from hf_interest.training import eval_dataloader, evaluate_next_item, load_named_dataset, popularity_baseline


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="A run folder, a save_pretrained folder, or a Hub repo id.")
    parser.add_argument("--split", default="test", choices=["validation", "test"], help="Split to evaluate.")
    parser.add_argument(
        "--dataset",
        default=None,
        help="'movielens-100k', 'synthetic' or a log path (default: the dataset in the checkpoint's eval_results.json).",
    )
    parser.add_argument("--data_dir", default=None, help="Where MovieLens files are.")
    parser.add_argument("--batch_size", type=int, default=256, help="Users per batch.")
    parser.add_argument("--output_json", default=None, help="Also write the results to this file.")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = AutoConfig.from_pretrained(args.checkpoint)
    heads = {"InterestForClickPrediction", "InterestForInterestForecasting"}
    if heads & set(config.architectures or []):
        raise ValueError(
            f"{args.checkpoint} is a {config.architectures[0]} checkpoint: this script evaluates next-item models. "
            "Its test and validation results, beside its baseline, are in its eval_results.json (hub_scripts/train.py "
            "--task click|forecast evaluates the best weights); hf_interest.heads.evaluate_click / evaluate_forecast "
            "evaluate it on other data."
        )
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model.check_vocabulary(tokenizer)

    stored = Path(args.checkpoint) / "eval_results.json"
    data_arguments = json.loads(stored.read_text())["arguments"]["data"] if stored.is_file() else {}
    dataset = args.dataset or data_arguments.get("dataset")
    if dataset is None:
        raise ValueError(
            f"{args.checkpoint} has no eval_results.json naming its dataset: pass --dataset (movielens-100k, synthetic "
            "or a log path)."
        )
    cleaning = CleaningConfig(
        min_rating=data_arguments.get("min_rating"),
        min_user_events=data_arguments.get("k_core", 0),
        min_item_events=data_arguments.get("k_core", 0),
    )
    synthetic = {
        key.removeprefix("synthetic_"): value for key, value in data_arguments.items() if key.startswith("synthetic_")
    }
    data = load_named_dataset(
        dataset, data_dir=args.data_dir or data_arguments.get("data_dir"), cleaning=cleaning, synthetic=synthetic
    )
    encoded, num_unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    has_time = "timestamps" in encoded[args.split].column_names
    loader = eval_dataloader(
        encoded[args.split], tokenizer.pad_token_id, model.config.max_position_embeddings, args.batch_size
    )
    popularity = popularity_baseline(encoded["train"], len(tokenizer), tokenizer.num_special_tokens)
    results = evaluate_next_item(model, loader, popularity, args.split, use_timestamps=has_time, show_progress=True)
    print(f"{args.checkpoint} on {dataset} ({num_unknown} item ids not in the checkpoint's vocabulary -> [UNK])")
    for block in results.values():
        print(format_results_table({"popularity": block["popularity"], "model": block["model"]}, block["protocol"]))
        print()
    if args.output_json:
        Path(args.output_json).write_text(json.dumps({"dataset": dataset, args.split: results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
