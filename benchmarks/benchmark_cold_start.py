"""Cold-start benchmark of the item text tower: items never seen in training, added afterwards without retraining.

    python benchmarks/benchmark_cold_start.py                                    # MovieLens-100K, 10% held out
    python benchmarks/benchmark_cold_start.py --num_train_epochs 5 --representations id text   # quicker
    python benchmarks/benchmark_cold_start.py --reuse_runs                       # re-evaluate trained runs only
    python benchmarks/benchmark_cold_start.py --representations text --tag _te_lora --text_encoder_lora_r 8
                                                        # a variant: text encoder LoRA (any train.py flag passes on)

1. A seeded 10% of the items is held out: written to `<output_dir>/held_out_items.txt` and passed to
   `hub_scripts/train.py --exclude_items_file`, which keeps them out of the vocabulary and removes their events from
   every history it trains and validates on (the counts are printed in the data report).
2. One model per item representation (`id`, `text`, `id+text`) is trained by `train.py` in a subprocess, with the
   same seed and arguments otherwise.
3. Each trained model gets the held-out items with `add_items`: text models with the items' text embeddings (same
   encoder), every model with zero id rows for them and a bias equal to the median bias of the trained items.
4. All are evaluated on the test split of the full data, histories as they are (held-out items' events included, now
   in the vocabulary), full ranking over every item, seen items excluded: over all test users, over those whose test
   target is a held-out item (cold), and over the others (warm), beside the popularity baseline fitted on the same
   training events (so it has no count for held-out items either), by the same code (`evaluate_next_item`).

An id-only model has no trained embedding for a held-out item: its cold column says so; the footnote gives what its
untrained rows (zero vector, median bias) measure, labelled as such. Timings are wall clock on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import encode_sequences, load_named_dataset
from hf_interest.text_encoding import encode_item_texts, item_texts
from hf_interest.text_tower import TEXT_ENCODER_ADAPTER_FOLDER, load_adapted_text_encoder
from hf_interest.training import eval_dataloader, evaluate_next_item, exclude_items, popularity_baseline

ROOT = Path(__file__).resolve().parents[1]

REPRESENTATIONS = ("id", "text", "id+text")


def choose_held_out(item_ids: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded random `fraction` of the items (at least one), in vocabulary order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--held_out_fraction must be in (0, 1), got {fraction}.")
    count = max(1, round(fraction * len(item_ids)))
    chosen = np.random.default_rng(seed).choice(len(item_ids), size=count, replace=False)
    return [item_ids[i] for i in sorted(chosen)]


def train(representation: str, args: argparse.Namespace, held_out_file: Path, extra: list[str]) -> dict:
    folder = Path(args.output_dir) / (representation.replace("+", "_") + args.tag)
    if args.reuse_runs and (folder / "eval_results.json").is_file():
        print(f"[{representation}] reusing {folder}")
        return {"folder": folder, "wall_seconds": None}
    command = [
        sys.executable, str(ROOT / "hub_scripts" / "train.py"),
        "--dataset", args.dataset,
        "--item_representation", representation,
        "--exclude_items_file", str(held_out_file),
        "--num_train_epochs", str(args.num_train_epochs),
        "--early_stopping_patience", str(args.early_stopping_patience),
        "--seed", str(args.seed),
        "--output_dir", str(folder),
        "--report_to", "none",
        *extra,
    ]  # fmt: skip
    print(f"[{representation}] {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return {"folder": folder, "wall_seconds": time.perf_counter() - started}


def evaluate_subsets(model, test, popularity, subsets: dict, max_length: int, pad_token_id: int) -> dict:
    """HR/NDCG of the model and the popularity baseline on each subset of test rows (seen items excluded)."""
    out = {}
    for name, rows in subsets.items():
        loader = eval_dataloader(test.select(rows), pad_token_id, max_length, batch_size=256)
        out[name] = evaluate_next_item(model, loader, popularity, "test")["exclude_seen"]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--output_dir", default="runs/cold_start")
    parser.add_argument("--held_out_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42, help="Seed of the held-out choice and of training.")
    parser.add_argument("--representations", nargs="+", default=list(REPRESENTATIONS), choices=REPRESENTATIONS)
    parser.add_argument(
        "--num_train_epochs",
        type=int,
        default=15,
        help="Epochs per model (early stopping may end sooner). 15 is quick, but not convergence for every model: "
        "with train.py's small-log batch the best validation epochs were 13 (id), 38 (text) and 7 (id+text); "
        "--num_train_epochs 200 trains each to early stopping (8 minutes at 2 threads, docs/cold_start.md).",
    )
    parser.add_argument("--early_stopping_patience", type=int, default=10)
    parser.add_argument("--max_length", type=int, default=200, help="Events the models read (train.py's default).")
    parser.add_argument("--reuse_runs", action="store_true", help="Skip training where a run folder is complete.")
    parser.add_argument(
        "--tag", default="", help="Suffix of the run folders (<output_dir>/<representation><tag>), for variants."
    )
    args, extra = parser.parse_known_args(argv)  # anything else goes to train.py, e.g. --hidden_size 32
    started = time.perf_counter()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    data = load_named_dataset(args.dataset)
    held_out = choose_held_out(data.item_ids, args.held_out_fraction, args.seed)
    held_out_file = output_dir / "held_out_items.txt"
    held_out_file.write_text("\n".join(held_out) + "\n", encoding="utf-8")
    kept, counts = exclude_items(data, held_out)  # what the models train on, for the baseline and the counts
    print(f"Held out {len(held_out):,} of {len(data.item_ids):,} items (seed {args.seed}): {counts}")

    runs = {
        rep: train(rep, args, held_out_file, extra + ["--max_length", str(args.max_length)])
        for rep in args.representations
    }

    # Add the held-out items to every model; all vocabularies must then be the same, in the same order.
    new_texts = item_texts(data.items, held_out)
    print(f"held-out items: {new_texts}")
    encoded_texts = {}
    models, vocab = {}, None
    for rep, run in runs.items():
        model = InterestForNextItemPrediction.from_pretrained(run["folder"]).eval()
        tokenizer = ItemTokenizer.from_pretrained(run["folder"])
        text = None
        adapter = Path(run["folder"]) / TEXT_ENCODER_ADAPTER_FOLDER
        if model.config.uses_text and adapter.is_dir():  # trained with text encoder LoRA: the adapted encoder
            encoder, encoder_tokenizer = load_adapted_text_encoder(adapter)
            text = encode_item_texts(new_texts, encoder=encoder, tokenizer=encoder_tokenizer)
        elif model.config.uses_text:
            encoder = model.config.text_encoder
            if encoder not in encoded_texts:
                encoded_texts[encoder] = encode_item_texts(new_texts, encoder=encoder)
            text = encoded_texts[encoder]
        model.add_items(tokenizer, held_out, text_embeddings=text)
        if vocab is None:
            vocab = tokenizer.get_vocab()
        elif tokenizer.get_vocab() != vocab:
            raise RuntimeError(f"The {rep} model's vocabulary differs from the others' after add_items.")
        models[rep] = (model, tokenizer)
    tokenizer = next(iter(models.values()))[1]

    full, unknown = encode_sequences(data.sequences, vocab, tokenizer.unk_token_id)
    if unknown:
        raise RuntimeError(f"{unknown} events are outside the grown vocabulary; add_items missed items.")
    trained_on, _ = encode_sequences(kept.sequences, vocab, tokenizer.unk_token_id)
    popularity = popularity_baseline(trained_on["train"], len(tokenizer), tokenizer.num_special_tokens)
    test = full["test"]
    held_out_set = set(held_out)
    is_cold = np.asarray([str(t) in held_out_set for t in test["target_item_id"]])
    subsets = {
        "all": np.arange(len(test)),
        "cold": np.flatnonzero(is_cold),
        "warm": np.flatnonzero(~is_cold),
    }
    results = {
        rep: evaluate_subsets(model, test, popularity, subsets, args.max_length, tokenizer.pad_token_id)
        for rep, (model, _) in models.items()
    }

    # One table.
    first = next(iter(results.values()))
    protocol = first["all"]["protocol"]
    sizes = {name: len(rows) for name, rows in subsets.items()}
    columns = [("all", "all test users"), ("cold", "target held out"), ("warm", "target trained")]
    header = "| model | " + " | ".join(f"{label} ({sizes[name]}): HR@10 / NDCG@10" for name, label in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]

    def cell(metrics: dict) -> str:
        return f"{metrics['hr@10']:.4f} / {metrics['ndcg@10']:.4f}"

    for rep in results:
        cells = []
        for name, _ in columns:
            if rep == "id" and name == "cold":
                cells.append("cannot score (no trained embedding)*")
            else:
                cells.append(cell(results[rep][name]["model"]))
        lines.append(f"| {rep}{args.tag} | " + " | ".join(cells) + " |")
    lines.append("| popularity (baseline) | " + " | ".join(cell(first[n]["popularity"]) for n, _ in columns) + " |")
    print()
    print(
        f"Cold start, {args.dataset}: {len(held_out):,} of {len(data.item_ids):,} items ({args.held_out_fraction:.0%}, "
        f"seed {args.seed}) held out of training entirely ({counts['events_removed'].get('train', 0):,} training "
        f"events removed; {counts['targets_excluded'].get('validation', 0)} validation targets not used for early "
        "stopping), then added with add_items: text embeddings from the same encoder, zero id rows, bias = median of "
        "the trained items' biases. No retraining."
    )
    print(
        f"Protocol: split={protocol['split']} | full ranking over all {len(tokenizer) - tokenizer.num_special_tokens:,} "
        f"items | seen items excluded | rank = items scoring strictly higher than the target | test histories as "
        "they are (held-out items' events included) | popularity fitted on the same training events (no count for "
        "held-out items)"
    )
    print("\n".join(lines))
    if "id" in results:
        untrained = results["id"]["cold"]["model"]
        print(
            f"* id-only: a held-out item has an untrained id row (zero vector, median bias); measured anyway that "
            f"gives HR@10 {untrained['hr@10']:.4f} / NDCG@10 {untrained['ndcg@10']:.4f} (ties with other held-out "
            "items count in its favour)."
        )
    for rep, run in runs.items():
        training = json.loads((Path(run["folder"]) / "eval_results.json").read_text())["training"]
        wall = f"{run['wall_seconds']:.0f} s" if run["wall_seconds"] is not None else "reused"
        print(
            f"{rep}: {training['epochs_run']} epochs, best validation epoch {training['best_epoch']}, "
            f"{training['seconds_per_epoch_median']:.1f} s/epoch (median), run {wall}"
        )
    total = time.perf_counter() - started
    print(f"Total wall time {total:.0f} s.")

    summary = {
        "dataset": args.dataset,
        "held_out_items": len(held_out),
        "items": len(data.item_ids),
        "seed": args.seed,
        "exclusion": counts,
        "subset_sizes": sizes,
        "protocol": protocol,
        "results": {
            rep: {name: {"model": r[name]["model"], "popularity": r[name]["popularity"]} for name in r}
            for rep, r in results.items()
        },
        "total_seconds": total,
    }
    (output_dir / f"cold_start_results{args.tag}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


if __name__ == "__main__":
    main()
