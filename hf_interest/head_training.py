"""Training of the click-prediction and interest-forecasting heads (`hub_scripts/train.py --task click|forecast`).

The same shape as the next-item loop of `hub_scripts/train.py`: Accelerate (devices, DDP, mixed precision, gradient
accumulation), AdamW with a warmup/decay schedule, gradient clipping, a deterministic length-grouped data order,
validation every epoch with early stopping on the task's metric, the best weights kept, and a test evaluation of them
beside the task's baseline, written to `eval_results.json` with the protocol.

- `click`: leave-one-out by time; at every training position the next event's item is the candidate, a click when
  its rating is at least `click_threshold` (`click_labels="ratings"`), or the next item against sampled negatives
  (`"sampled"`, for logs without ratings). Validation/test: the target event scored after the whole history. Metric:
  AUC (higher is better); baseline: logistic regression on the item's training popularity.
- `forecast`: split by users (held-out users' whole sequences, so every position of theirs can be forecast);
  targets: the category distribution of the next `forecast_horizon` events. Metric: cross-entropy (lower is
  better); baseline: the recent category mix.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .data import DataCollatorForClick, DataCollatorForInterest
from .heads import (
    category_prior,
    category_weight_matrix,
    evaluate_click,
    evaluate_forecast,
    format_forecast_table,
    tune_forecast_baselines,
    whole_sequences,
)
from .hub import HEAD_AUTO_CLASSES
from .metrics import PopularityClickBaseline
from .training import LengthGroupedSampler, optimizer_step, popularity_baseline, train_windows

TASKS = ("next-item", "click", "forecast")
BEST_METRIC = {"click": ("auc", True), "forecast": ("cross_entropy", False)}  # (name, higher is better)


def _click_examples(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, label) of every training transition, for fitting the popularity baseline."""
    candidates, labels = [], []
    for batch in dataset:
        keep = batch["click_labels"] != -100
        candidates.append(batch["candidate_ids"][keep].numpy())
        labels.append(batch["click_labels"][keep].numpy())
    return np.concatenate(candidates), np.concatenate(labels)


def train_head(task: str, data, tokenizer, encoded, data_args, model_args, train_args, accelerator, log) -> dict:
    """
    Trains, validates and tests one head; returns the `eval_results` dict (also written to the run folder).

    Args:
        task: `"click"` or `"forecast"`.
        data: the `BehaviorData` (its `items` give the categories for `forecast`).
        tokenizer: the `ItemTokenizer`.
        encoded: the encoded `DatasetDict` (train / validation / test).
        data_args, model_args, train_args: the argument dataclasses of `hub_scripts/train.py`.
        accelerator: the `Accelerator`.
        log: a print function (the accelerator's).
    """
    from transformers import get_scheduler

    from . import InterestConfig, InterestForClickPrediction, InterestForInterestForecasting

    if task not in BEST_METRIC:
        raise ValueError(f"task must be one of {tuple(BEST_METRIC)}, got {task!r}.")
    started = time.perf_counter()
    output_dir = Path(train_args.output_dir)
    metric, higher_is_better = BEST_METRIC[task]
    has_time = "timestamps" in encoded["train"].column_names
    columns = [c for c in ("input_ids", "timestamps", "ratings") if c in encoded["train"].column_names]
    windows = train_windows(encoded["train"], data_args.max_length, columns)
    special = tokenizer.num_special_tokens
    model_fields = {
        k: getattr(model_args, k)
        for k in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "use_time_gaps",
            "long_term_interest",
            "short_term_interest",
            "short_term_window",
        )
    }

    if task == "click":
        if data_args.click_labels == "ratings" and "ratings" not in columns:
            raise ValueError(
                f"--task click --click_labels ratings needs a rating column, but {data_args.dataset} has none: pass "
                "--click_labels sampled (the next item against sampled negatives)."
            )
        common = {
            "pad_token_id": tokenizer.pad_token_id,
            "max_length": data_args.max_length,
            "label_source": data_args.click_labels,
            "click_threshold": data_args.click_threshold,
            "num_negatives": data_args.click_negatives,
            "num_items": len(tokenizer),
            "num_special_tokens": special,
            "return_time_gaps": False,
        }
        train_collator = DataCollatorForClick(
            mode="train", ignore_label_ids=(tokenizer.unk_token_id,), seed=train_args.seed, **common
        )
        eval_rows = {}
        for split in ("validation", "test"):
            keep = [
                c for c in ("input_ids", "timestamps", "labels", "target_rating") if c in encoded[split].column_names
            ]
            eval_rows[split] = encoded[split].select_columns(keep).to_list()
        eval_loaders = {
            split: torch.utils.data.DataLoader(
                rows,
                batch_size=train_args.per_device_eval_batch_size,
                collate_fn=DataCollatorForClick(mode="eval", seed=train_args.seed + 1, **common),
            )
            for split, rows in eval_rows.items()
        }
        baseline_loader = torch.utils.data.DataLoader(
            windows, batch_size=256, collate_fn=DataCollatorForClick(mode="train", seed=train_args.seed, **common)
        )
        candidates, labels = _click_examples(baseline_loader)
        baseline = PopularityClickBaseline().fit(
            popularity_baseline(encoded["train"], len(tokenizer), special).item_counts.numpy(), candidates, labels
        )
        config = InterestConfig(
            num_items=len(tokenizer),
            max_position_embeddings=data_args.max_length,
            pad_token_id=tokenizer.pad_token_id,
            click_hidden_size=model_args.click_hidden_size,
            **model_fields,
        )
        model = InterestForClickPrediction(config)
        label_note = (
            f"click = rating >= {data_args.click_threshold:g}"
            if data_args.click_labels == "ratings"
            else f"the next item against {data_args.click_negatives} sampled negative(s)"
        )
        log(f"click labels: {label_note}; training transitions: {len(labels):,} ({int(labels.sum()):,} clicks)")

        def evaluate(module, split):
            results = evaluate_click(
                accelerator.unwrap_model(module), eval_loaders[split], baseline, split, use_timestamps=has_time
            )
            results["labels"] = label_note
            return results, results["model"][metric]
    else:
        weights, names, without = category_weight_matrix(
            data.items, tokenizer, primary_only=data_args.primary_category_only
        )
        log(
            f"forecast: {len(names)} categories, {without:,} items without a category; horizon "
            f"{model_args.forecast_horizon} events"
        )
        train_collator = DataCollatorForInterest(
            pad_token_id=tokenizer.pad_token_id,
            max_length=data_args.max_length,
            mode="train",
            ignore_label_ids=(tokenizer.unk_token_id,),
            return_time_gaps=False,
        )
        sequences = {split: whole_sequences(encoded[split]) for split in ("validation", "test")}
        prior = category_prior(encoded["train"]["input_ids"], weights)
        config = InterestConfig(
            num_items=len(tokenizer),
            max_position_embeddings=data_args.max_length,
            pad_token_id=tokenizer.pad_token_id,
            num_categories=len(names),
            category_names=names,
            forecast_horizon=model_args.forecast_horizon,
            **model_fields,
        )
        model = InterestForInterestForecasting(config)
        model.set_item_category_weights(torch.from_numpy(weights))
        baselines = tune_forecast_baselines(
            sequences["validation"], train_collator, weights, prior, model_args.forecast_horizon
        )
        log(f"forecasting baselines tuned on validation: {baselines}")

        def evaluate(module, split):
            unwrapped = accelerator.unwrap_model(module)
            evaluation = evaluate_forecast(
                unwrapped,
                sequences[split],
                train_collator,
                prior,
                split=split,
                batch_size=train_args.per_device_eval_batch_size,
                baselines=baselines,
                use_timestamps=has_time,
            )
            return evaluation.metrics, evaluation.metrics["model"][metric]

    train_loader = torch.utils.data.DataLoader(
        windows,
        batch_size=train_args.per_device_train_batch_size,
        sampler=LengthGroupedSampler(
            [len(w["input_ids"]) for w in windows], train_args.per_device_train_batch_size, seed=train_args.seed
        ),
        collate_fn=train_collator,
    )
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{type(model).__name__}: {num_trainable:,} trainable parameters; {len(windows):,} training windows")
    no_decay = ("bias", "layer_norm", "LayerNorm")
    params = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {
                "params": [p for n, p in params if not any(k in n for k in no_decay)],
                "weight_decay": train_args.weight_decay,
            },
            {"params": [p for n, p in params if any(k in n for k in no_decay)], "weight_decay": 0.0},
        ],
        lr=train_args.learning_rate,
        betas=(0.9, 0.98),
    )
    steps_per_epoch = math.ceil(len(train_loader) / train_args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * train_args.num_train_epochs
    scheduler = get_scheduler(
        train_args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(train_args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    best_dir = output_dir / "checkpoints" / "best"
    best_value, best_epoch, bad_epochs, train_seconds, time_to_best, history = None, 0, 0, 0.0, None, []
    epoch_seconds = []
    for epoch in range(train_args.num_train_epochs):
        epoch_start = time.perf_counter()
        model.train()
        train_loader.set_epoch(epoch)
        total, batches = torch.zeros((), device=accelerator.device), 0
        for batch in train_loader:
            batch.pop("time_gaps", None)
            if not has_time:
                batch.pop("timestamps", None)
            total += optimizer_step(accelerator, model, batch, optimizer, scheduler, train_args.max_grad_norm)
            batches += 1
        train_loss = accelerator.gather(total).mean().item() / max(batches, 1)
        seconds = time.perf_counter() - epoch_start
        epoch_seconds.append(seconds)
        train_seconds += seconds
        results, value = evaluate(model, "validation")
        improved = best_value is None or (value > best_value if higher_is_better else value < best_value)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, metric: value, "seconds": seconds})
        accelerator.log({"train/loss": train_loss, f"validation/{metric}": value}, step=epoch + 1)
        if improved:
            best_value, best_epoch, bad_epochs, time_to_best = value, epoch + 1, 0, train_seconds
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(best_dir)
                tokenizer.save_pretrained(best_dir)
        else:
            bad_epochs += 1
        log(
            f"epoch {epoch + 1}: train loss {train_loss:.4f}, validation {metric} {value:.4f}"
            f"{' (best)' if improved else ''}, {seconds:.1f}s"
        )
        if bad_epochs >= train_args.early_stopping_patience:
            log(f"Early stopping: no better validation {metric} for {bad_epochs} epochs.")
            break
    accelerator.wait_for_everyone()
    best = type(accelerator.unwrap_model(model)).from_pretrained(best_dir).to(accelerator.device)
    test_results, _ = evaluate(best, "test")
    val_results, _ = evaluate(best, "validation")
    eval_results = {
        "task": {"click": "click-prediction", "forecast": "interest-forecasting"}[task],
        "arguments": {"data": asdict(data_args), "model": asdict(model_args), "train": asdict(train_args)},
        "dataset": {"name": data_args.dataset, "split": data.report.split, "report": str(data.report)},
        "test": test_results,
        "validation": val_results,
        "training": {
            "metric_for_best_model": metric,
            "higher_is_better": higher_is_better,
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            f"best_validation_{metric}": best_value,
            "seconds_per_epoch_median": float(np.median(epoch_seconds)) if epoch_seconds else None,
            "time_to_best_epoch_s": time_to_best,
            "train_seconds": train_seconds,
            "total_time_s": time.perf_counter() - started,
            "num_processes": accelerator.num_processes,
            "seed": train_args.seed,
            "train_windows": len(windows),
            "trainable_parameters": num_trainable,
            "history": history,
        },
    }
    if accelerator.is_main_process:
        best.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        (output_dir / "eval_results.json").write_text(json.dumps(eval_results, indent=2) + "\n")
        (output_dir / "README.md").write_text(head_model_card(eval_results, type(best).__name__))
        log(format_head_results(task, test_results))
        log(f"Run folder: {output_dir} (model, vocabulary, eval_results.json, README.md)")
    accelerator.end_training()
    return eval_results


def format_head_results(task: str, results: dict) -> str:
    """The test results of a head beside its baseline, headed by the protocol."""
    if task == "forecast":
        return format_forecast_table(results)
    lines = [
        f"protocol: {results['protocol']}; labels: {results.get('labels', '')}",
        f"{'':28s} {'AUC':>7s} {'log loss':>9s} {'examples':>9s} {'click rate':>10s}",
    ]
    for name, key in (("model", "model"), ("logistic regression on pop.", "popularity_lr")):
        values = results[key]
        lines.append(
            f"{name:28s} {values['auc']:7.4f} {values['log_loss']:9.4f} {values['num_examples']:9d} "
            f"{values['positive_rate']:10.4f}"
        )
    return "\n".join(lines)


def head_model_card(eval_results: dict, class_name: str) -> str:
    """A short model card for a head checkpoint: what it predicts, how to load it, and its measured results."""
    task = eval_results["task"]
    auto_class = HEAD_AUTO_CLASSES[class_name]
    table = format_head_results("forecast" if task == "interest-forecasting" else "click", eval_results["test"])
    return (
        f"---\nlibrary_name: transformers\ntags:\n- recommender-systems\n- hf-interest\n- {task}\n---\n\n"
        f"# {class_name} ({task})\n\nTrained with `hub_scripts/train.py --task "
        f"{'forecast' if task == 'interest-forecasting' else 'click'}` on {eval_results['dataset']['name']}.\n\n"
        f"```python\nimport hf_interest  # registers the Auto classes; without it, pass trust_remote_code=True\n"
        f"from transformers import {auto_class}, AutoTokenizer\n\n"
        f"model = {auto_class}.from_pretrained('PATH')  # {class_name}\n"
        f"tokenizer = AutoTokenizer.from_pretrained('PATH')  # the item vocabulary\n```\n\n"
        f"## Test results\n\nSplit: {eval_results['dataset']['split']}\n\n```\n{table}\n```\n"
    )


__all__ = ["BEST_METRIC", "TASKS", "format_head_results", "head_model_card", "train_head"]
