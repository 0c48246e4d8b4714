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

(With accelerate 1.15, `accelerate launch --cpu --num_processes 2` starts one process: the `--cpu` flag selects the
single-process launcher. The second form above runs two CPU processes with DDP over gloo.)

Shape after accelerate's `examples/nlp_example.py`: `get_dataloaders`, `training_function`, `main`.
"""

from __future__ import annotations

import json
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
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_scheduler

from hf_interest import InterestConfig, InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import CleaningConfig, DataCollatorForInterest, encode_sequences
from hf_interest.metrics import format_results_table
from hf_interest.model_card import render_model_card
from hf_interest.training import (
    LengthGroupedSampler,
    eval_dataloader,
    evaluate_next_item,
    load_named_dataset,
    popularity_baseline,
    window_starts,
)


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


@dataclass
class TrainArguments:
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
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, data order and dropout."})
    metric_for_best_model: str = field(default="ndcg@10", metadata={"help": "Validation metric (seen excluded)."})
    early_stopping_patience: int = field(default=20, metadata={"help": "Epochs without improvement before stopping."})
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


def load_data(data_args: DataArguments):
    """Loads the named dataset or log as per-user sequences with a leave-one-out split (see hf_interest.data)."""
    columns = {"user": data_args.user_column, "item": data_args.item_column, "timestamp": data_args.timestamp_column}
    cleaning = CleaningConfig(
        min_rating=data_args.min_rating, min_user_events=data_args.k_core, min_item_events=data_args.k_core
    )
    synthetic = {
        "num_users": data_args.synthetic_num_users,
        "num_items": data_args.synthetic_num_items,
        "seed": data_args.synthetic_seed,
    }
    return load_named_dataset(
        data_args.dataset,
        data_dir=data_args.data_dir,
        columns={k: v for k, v in columns.items() if v},
        cleaning=cleaning,
        synthetic=synthetic,
    )


def get_dataloaders(data, tokenizer: ItemTokenizer, data_args: DataArguments, train_args: TrainArguments):
    """
    Encodes the sequences with the vocabulary and builds the three dataloaders and the popularity baseline.

    Training rows are windows of `max_length + 1` events over each user's training sequence (inputs plus the shifted
    labels), so long histories are trained on whole and one epoch touches each training event once; evaluation rows
    are one target per user with the history before it.
    """
    encoded, num_unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    train = encoded["train"]
    lengths = np.asarray([len(x) for x in train["input_ids"]])
    rows, starts, stops = window_starts(lengths, data_args.max_length + 1)
    columns = [c for c in ("input_ids", "timestamps") if c in train.column_names]
    source = {c: train[c] for c in columns}
    windows = [
        {c: source[c][row][start:stop] for c in columns}
        for row, start, stop in zip(rows.tolist(), starts.tolist(), stops.tolist())
    ]
    train_loader = DataLoader(
        windows,
        batch_size=train_args.per_device_train_batch_size,
        sampler=LengthGroupedSampler(
            [len(w["input_ids"]) for w in windows], train_args.per_device_train_batch_size, seed=train_args.seed
        ),
        collate_fn=DataCollatorForInterest(
            pad_token_id=tokenizer.pad_token_id,
            max_length=data_args.max_length,
            mode="train",
            ignore_label_ids=(tokenizer.unk_token_id,),  # predicting "unknown item" teaches nothing
            return_time_gaps=False,  # the model buckets the gaps itself from the timestamps
        ),
    )
    loaders = {"train": train_loader}
    for split in ("validation", "test"):
        loaders[split] = eval_dataloader(
            encoded[split], tokenizer.pad_token_id, data_args.max_length, train_args.per_device_eval_batch_size
        )
    popularity = popularity_baseline(train, len(tokenizer), tokenizer.num_special_tokens)
    stats = {"train_windows": len(windows), "unknown_items": num_unknown, "has_timestamps": "timestamps" in columns}
    return loaders, popularity, stats


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


def training_function(data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments) -> dict:
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
    started = time.perf_counter()

    with accelerator.main_process_first():
        data = load_data(data_args)
    accelerator.print(str(data.report))
    tokenizer = ItemTokenizer.from_items(data.item_ids, model_max_length=data_args.max_length)
    loaders, popularity, stats = get_dataloaders(data, tokenizer, data_args, train_args)

    config = InterestConfig(
        num_items=len(tokenizer),
        max_position_embeddings=data_args.max_length,
        pad_token_id=tokenizer.pad_token_id,
        **asdict(model_args),
    )
    model = InterestForNextItemPrediction(config)
    if config.loss_type == "sampled_softmax":
        model.set_negative_sampling_distribution(popularity.item_counts)
    no_decay = ("bias", "layer_norm", "LayerNorm")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
            "weight_decay": train_args.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
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
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, loaders["train"], loaders["validation"], loaders["test"], scheduler
    )
    if log_with is not None:
        accelerator.init_trackers(
            "hf_interest", config={**asdict(data_args), **asdict(model_args), **asdict(train_args)}
        )

    checkpoints = output_dir / "checkpoints"
    state = {"epoch": 0, "best_metric": None, "best_epoch": None, "bad_epochs": 0, "history": [], "train_seconds": 0.0}
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
    # a run killed after early stopping had triggered goes straight to the test
    finished = state["bad_epochs"] >= train_args.early_stopping_patience
    for epoch in range(state["epoch"], state["epoch"] if finished else train_args.num_train_epochs):
        epoch_start = time.perf_counter()
        model.train()
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
            with accelerator.accumulate(model):
                loss = model(**batch, logits_to_keep=1).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and train_args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            total_loss += loss.detach()
            num_batches += 1
            if num_batches == 2:
                _fault_point("train_step", epoch + 1)
        train_loss = accelerator.gather(total_loss).mean().item() / max(num_batches, 1)
        seconds = time.perf_counter() - epoch_start
        epoch_seconds.append(seconds)
        state["train_seconds"] += seconds

        _fault_point("evaluation", epoch + 1)
        results = evaluate_next_item(model, val_loader, popularity, "validation", accelerator, use_timestamps=has_time)
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
            _save_model(accelerator, model, tokenizer, checkpoints / "best", fault=("best_write", epoch + 1))
        _save_checkpoint(accelerator, checkpoints, state, train_args.checkpoints_to_keep)
        if state["bad_epochs"] >= train_args.early_stopping_patience:
            accelerator.print(f"Early stopping: no better validation {metric} for {state['bad_epochs']} epochs.")
            break
        if train_args.stop_after_epochs is not None and epoch + 1 >= train_args.stop_after_epochs:
            accelerator.print(f"Stopping after epoch {epoch + 1} as asked (--stop_after_epochs).")
            accelerator.end_training()
            return {"stopped_at_epoch": epoch + 1}

    # Test with the best weights.
    accelerator.wait_for_everyone()
    best = InterestForNextItemPrediction.from_pretrained(checkpoints / "best")
    best = accelerator.prepare(best)
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
            "seconds_per_epoch_median": float(np.median(epoch_seconds)) if epoch_seconds else None,
            "time_to_best_epoch_s": state.get("time_to_best_s"),
            "train_seconds": state["train_seconds"],
            "total_time_s": total_seconds,
            "num_processes": accelerator.num_processes,
            "seed": train_args.seed,
            "train_windows": stats["train_windows"],
            "history": state["history"],
        },
        "model": {
            "num_parameters": sum(p.numel() for p in accelerator.unwrap_model(best).parameters()),
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
    if accelerator.is_main_process:
        for variant in ("exclude_seen", "include_seen"):
            block = test_results[variant]
            print(
                format_results_table({"popularity": block["popularity"], "model": block["model"]}, block["protocol"])
            )
            print()
        _write_text_atomic(output_dir / "eval_results.json", json.dumps(eval_results, indent=2) + "\n")
        card = render_model_card(
            eval_results,
            repo_id=f"ORG/{output_dir.name}",
            example_history=tokenizer.items[:3],
        )
        _write_text_atomic(output_dir / "README.md", str(card))
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
