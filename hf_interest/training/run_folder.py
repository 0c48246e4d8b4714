"""The run folder a training run leaves: the best weights, `eval_results.json` (the test and validation results with
their protocol, the data's counts, how the run went, the arguments), the model card, and with LoRA the adapter and the
merged model; then the lines that say what was kept and where things are.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..model_card import head_model_card, lora_card_section, render_model_card
from ..text_tower import TEXT_ENCODER_ADAPTER_FOLDER
from .arguments import lora_targets, module_names
from .checkpointing import save_model, write_text_atomic


def load_best(model_class, folder: Path, lora_base: str | None, log, state: dict, metric: str):
    """The best weights written during the loop; with LoRA, the best adapter over its base model. Says so when no
    epoch beat the `--init_from` model."""
    if state["best_epoch"] == 0:
        log(
            f"No epoch beat the --init_from model on validation {metric}: the result is that model unchanged"
            + (" (its adapter changes nothing)." if lora_base is not None else ".")
        )
    if lora_base is None:
        return model_class.from_pretrained(folder)
    from peft import PeftModel

    return PeftModel.from_pretrained(model_class.from_pretrained(lora_base), folder)


def run_results(*, task, data, data_args, model_args, train_args, state: dict, test_results: dict, val_results: dict,
                timing: dict, accelerator, best, num_trainable: int, ema_decay: float, item_table_updates: str,
                private) -> dict:  # fmt: skip
    """What `eval_results.json` holds (`timing`: `epoch_seconds`, `test_seconds`, `started`)."""
    epoch_seconds, metric = timing["epoch_seconds"], task.metric
    return {
        "task": task.result_name,
        "dataset": {
            "name": data_args.dataset,
            "statistics": {
                "users": data.report.users,
                "items": data.report.items,
                "events": data.report.events,
                "events_before_cleaning": data.report.raw_events,
                **{f"{name}_rows": counts["rows"] for name, counts in data.report.splits.items()},
            },
            "split": task.split_description,
            "report": str(data.report),
        },
        "test": test_results,
        "validation": val_results,
        "training": {
            "metric_for_best_model": metric,
            "higher_is_better": task.higher_is_better,
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"],
            f"best_validation_{metric}": state["best_metric"],
            "ema_decay": ema_decay,
            "item_table_updates": item_table_updates,
            "seconds_per_epoch_median": float(np.median(epoch_seconds)) if epoch_seconds else None,
            "time_to_best_epoch_s": state.get("time_to_best_s"),
            "wall_time_to_best_epoch_s": state.get("wall_time_to_best_s"),
            "wall_seconds": state.get("wall_seconds"),
            "train_seconds": state["train_seconds"],
            "optimizer_steps": state.get("steps"),
            "test_evaluation_seconds": timing["test_seconds"],
            "total_time_s": time.perf_counter() - timing["started"],
            "num_processes": accelerator.num_processes,
            "seed": train_args.seed,
            "trainable_parameters": num_trainable,
            "init_from": train_args.init_from,
            "targets_from": train_args.targets_from,
            **task.summary(),
            "history": state["history"],
        },
        **({"differential_privacy": private.report()} if private is not None else {}),
        "model": _model_summary(accelerator.unwrap_model(best), num_trainable),
        "arguments": {"data": asdict(data_args), "model": asdict(model_args), "train": asdict(train_args)},
    }


def write_run_folder(accelerator, eval_results: dict, *, best, task, data, train_args, adapters, checkpoints: Path,
                     num_trainable: int, num_total: int) -> None:  # fmt: skip
    """Writes the best weights, `eval_results.json` and the card into `--output_dir` (and `merged/` with LoRA), adds
    the adapters' parts to `eval_results`, prints the test table and the closing lines."""
    output_dir = Path(train_args.output_dir)
    save_model(
        accelerator,
        best,
        task.tokenizer,
        output_dir,
        in_place=True,
        fault=("final_write", eval_results["training"]["epochs_run"]),
    )
    if adapters.joint is not None:  # the best epoch's encoder adapter, which encoded the saved item text embeddings
        eval_results["text_encoder_lora"] = _publish_text_encoder_adapter(
            accelerator, checkpoints, output_dir, adapters.joint
        )
        eval_results["text_encoder_lora"].update(
            {
                "r": train_args.text_encoder_lora_r,
                "alpha": train_args.text_encoder_lora_alpha,
                "dropout": train_args.text_encoder_lora_dropout,
                "target_modules": module_names(train_args.text_encoder_lora_target_modules),
                "learning_rate": train_args.text_encoder_learning_rate,
                "max_items_per_step": train_args.text_encoder_max_items_per_step,
            }
        )
    folders = [output_dir]
    if adapters.lora:
        # The adapter merged into the base weights: a plain model for users without peft (same outputs up to float
        # rounding). merge_and_unload changes `best` in place, so it comes after every use of the adapter model.
        merged = accelerator.unwrap_model(best).merge_and_unload()
        save_model(accelerator, merged, task.tokenizer, output_dir / "merged")
        folders.append(output_dir / "merged")
        adapter_file = output_dir / "adapter_model.safetensors"
        eval_results["lora"] = {
            "r": train_args.lora_r,
            "alpha": train_args.lora_alpha,
            "dropout": train_args.lora_dropout,
            "target_modules": lora_targets(
                train_args.lora_target_modules, accelerator.unwrap_model(best).config.block_type
            ),
            "modules_to_save": module_names(train_args.lora_modules_to_save),
            "base_model": train_args.init_from,
            "trainable_parameters": num_trainable,
            "total_parameters": num_total,
            "adapter_size_bytes": adapter_file.stat().st_size if adapter_file.is_file() else None,
            "merged_model": "merged",
        }
    if not accelerator.is_main_process:
        return
    print(task.format_test_results(eval_results["test"]) + "\n")
    for folder in folders:
        write_text_atomic(folder / "eval_results.json", json.dumps(eval_results, indent=2) + "\n")
        write_text_atomic(folder / "README.md", _card_text(eval_results, folder, task, adapters.lora))
    if adapters.lora:
        lora = eval_results["lora"]
        print(
            f"LoRA adapter in {output_dir} (adapter_config.json, adapter_model.safetensors: "
            f"{lora['adapter_size_bytes']:,} bytes, {num_trainable:,} trainable parameters) over "
            f"{train_args.init_from}; merged into a plain model in {output_dir / 'merged'}."
        )
    print(closing_summary(eval_results, data, output_dir))
    print(f"Push-ready folder: {output_dir} (model, vocabulary, eval_results.json, README.md model card)")


def closing_summary(eval_results: dict, data, output_dir: Path) -> str:
    """What a run kept and where things are: the epoch, whether the weights are their moving average, data, checkpoints."""
    training = eval_results["training"]
    metric = training["metric_for_best_model"]
    value = training.get(f"best_validation_{metric}")
    privacy = eval_results.get("differential_privacy")
    lines = [
        f"Kept: the weights of epoch {training['best_epoch']} of {training['epochs_run']} run"
        + (
            " (DP-SGD keeps the last epoch: validation never chooses the weights)"
            if privacy
            else (f" (best validation {metric} {value:.4f})" if isinstance(value, float) else "")
        )
        + (
            f", as their moving average (--ema_decay {training['ema_decay']}): the average is what was validated, "
            "tested and saved"
            if training.get("ema_decay")
            else ""
        )
        + "."
    ]
    if privacy:
        lines.append(
            f"Differential privacy (user level): epsilon {privacy['epsilon']:.2f} at delta {privacy['delta']:.3g} "
            f"({privacy['steps']:,} steps, noise multiplier {privacy['noise_multiplier']:.3f}, per-user clipping "
            f"{privacy['max_grad_norm']:g}, {privacy['accountant'].upper()} accountant)."
        )
    source = getattr(getattr(data, "report", None), "source", None) or getattr(data, "path", None)
    if source:
        lines.append(f"Data read from: {source}")
    lines.append(
        f"Checkpoints: {output_dir / 'checkpoints'} (--resume_from_checkpoint latest continues the run; best/ holds "
        "the kept weights)"
    )
    return "\n".join(lines)


def _model_summary(model, num_trainable: int) -> dict:
    config = model.config
    return {
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": num_trainable,
        **{k: getattr(config, k) for k in ("num_items", "hidden_size", "num_hidden_layers", "num_attention_heads")},
        **{k: getattr(config, k) for k in ("long_term_interest", "short_term_interest", "short_term_window")},
        "max_position_embeddings": config.max_position_embeddings,
        "use_time_gaps": config.use_time_gaps,
        "loss_type": config.loss_type,
    }


def _publish_text_encoder_adapter(accelerator, checkpoints: Path, output_dir: Path, joint) -> dict:
    """Copies the best epoch's encoder adapter into the run folder; returns its part of `eval_results.json`."""
    adapter = output_dir / TEXT_ENCODER_ADAPTER_FOLDER
    if accelerator.is_main_process and (checkpoints / "best" / TEXT_ENCODER_ADAPTER_FOLDER).is_dir():
        shutil.rmtree(adapter, ignore_errors=True)
        shutil.copytree(checkpoints / "best" / TEXT_ENCODER_ADAPTER_FOLDER, adapter)
    return {"base_encoder": joint.model.config.text_encoder, "adapter": TEXT_ENCODER_ADAPTER_FOLDER}


def _card_text(eval_results: dict, folder: Path, task, use_lora: bool) -> str:
    """The model card of a run folder (or its `merged/` folder)."""
    if task.name != "next-item":
        return str(head_model_card(eval_results, type(task.model).__name__))
    name = folder.name if folder.name != "merged" else f"{folder.parent.name}-merged"
    card = render_model_card(eval_results, repo_id=f"ORG/{name}", example_history=task.tokenizer.items[:3])
    if use_lora:
        card.text += lora_card_section(eval_results["lora"], adapter=folder.name != "merged")
    return str(card)


__all__ = ["closing_summary", "load_best", "run_results", "write_run_folder"]
