"""The training loop of every task (next item, click, forecast), in the shape of accelerate's
`examples/nlp_example.py`: read the data, build the task and its model, prepare, loop over epochs in plain sight
(train, validate, keep the best, checkpoint, stop early), test the best weights, write the run folder.

`hub_scripts/train.py`, `hf-interest train` and `accelerate launch -m hf_interest.training` all run
`training_function`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.distributed.algorithms.join import Join
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data.sequence_shards import is_sequence_shards
from ..model_card import head_model_card, lora_card_section, render_model_card
from ..text_tower import TEXT_ENCODER_ADAPTER_FOLDER
from .adapters import add_lora, add_text_encoder_lora_training, save_text_encoder_adapter
from .arguments import DEFAULT_EMA_DECAY, DataArguments, ModelArguments, TrainArguments, check_arguments, module_names
from .checkpointing import (
    TIED_WEIGHTS_SAVE_FILTER,
    fault_point,
    resume,
    save_checkpoint,
    save_model,
    sharding,
    write_text_atomic,
)
from .data import load_data
from .kernels import apply_cpu_training_kernels, keep_freed_memory_for_reuse
from .private import PrivateTraining
from .sparse_rows import (
    LazyAdamW,
    LazyRowEMA,
    clip_grad_norm_,
    enable_sparse_item_gradients,
    sparse_item_gradients_supported,
)
from .streaming import StreamingNextItemTask, StreamingSequences
from .tasks import build_task


def training_function(data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments) -> dict:
    """
    Trains, validates every epoch, tests the best weights and writes a push-ready run folder.

    Args:
        data_args, model_args, train_args: the run's arguments (`hf_interest.training.arguments`).

    Returns:
        `dict`: what `eval_results.json` holds (`{"stopped_at_epoch": n}` after `--stop_after_epochs`).
    """
    check_arguments(data_args, train_args, model_args)  # before any data is read: a typo should not cost a data load
    if train_args.num_shards > 1:  # SISA: one run per shard, then their ensemble (hf_interest.training.sisa)
        from .sisa import train_shards

        return train_shards(data_args, model_args, train_args, train_one=training_function)
    logging.getLogger("accelerate.utils.other").addFilter(TIED_WEIGHTS_SAVE_FILTER)
    output_dir = Path(train_args.output_dir)
    accelerator = Accelerator(
        mixed_precision=train_args.mixed_precision,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        log_with=_tracker(train_args.report_to),
        project_dir=str(output_dir / "logs"),
    )
    set_seed(train_args.seed)
    on_cpu = accelerator.device.type == "cpu"
    started = time.perf_counter()

    # Data and the task's model.
    if is_sequence_shards(data_args.dataset):  # Spark's shards, streamed: each process reads its own
        if train_args.task != "next-item":
            raise ValueError(f"--task {train_args.task} does not read sequence shards yet; use --task next-item.")
        data = StreamingSequences(data_args.dataset, accelerator.process_index, accelerator.num_processes)
        accelerator.print(str(data.report))
        task = StreamingNextItemTask(data, data_args, model_args, train_args, accelerator.print)
    else:
        with accelerator.main_process_first():
            data = load_data(data_args, train_args.task)
        accelerator.print(str(data.report))
        task = build_task(data, data_args, model_args, train_args, accelerator.print)
    model = task.model
    if train_args.reuse_freed_memory and on_cpu:
        # Not with the sampled softmax (large catalogues): its steps allocate little, while evaluation's (users,
        # items) score chunks of varying size then fragment a heap that never maps memory back, past 20 GB at
        # 557k items where plain malloc peaks under 4 GB (benchmarks/benchmark_scale.py).
        if getattr(model.config, "loss_type", None) == "sampled_softmax":
            accelerator.print("malloc left as it is (--reuse_freed_memory helps the full softmax only).")
        else:
            keep_freed_memory_for_reuse()
    if train_args.cpu_kernels and on_cpu:
        apply_cpu_training_kernels(model)
    use_lora = train_args.lora_r > 0
    if use_lora:
        model = add_lora(model, train_args)
    joint = None
    if train_args.text_encoder_lora_r:
        joint = add_text_encoder_lora_training(model, data, task.tokenizer, train_args)
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    num_total = sum(p.numel() for p in model.parameters())
    accelerator.print(
        f"Trainable parameters: {num_trainable:,} of {num_total:,} ({100 * num_trainable / num_total:.2f}%)"
        + (f", LoRA r={train_args.lora_r} on {train_args.lora_target_modules}" if use_lora else "")
    )

    # Optimizer, schedule, prepare.
    private = None
    if train_args.private:
        if accelerator.num_processes > 1:
            raise ValueError("DP-SGD (--dp_epsilon / --dp_noise_multiplier) runs in one process; launch it without "
                             "accelerate's multi-process options.")  # fmt: skip
        private = PrivateTraining(train_args, num_users=len(task.train_loader.dataset), log=accelerator.print)
    lazy_table = (
        None
        if private is not None
        else _lazy_item_table(model, task.name, train_args, accelerator, adapters=use_lora or joint is not None)
    )
    optimizer = raw_optimizer = _optimizer(model, joint, train_args, accelerator.print, lazy=lazy_table is not None)
    streaming = getattr(task, "streaming", False)  # each process reads its own shards: no loader to shard
    steps_per_epoch = (
        task.steps_per_epoch
        if streaming
        else math.ceil(len(task.train_loader) / accelerator.num_processes / train_args.gradient_accumulation_steps)
    )
    total_steps = steps_per_epoch * train_args.num_train_epochs
    if train_args.max_steps is not None:
        total_steps = min(total_steps, train_args.max_steps)
    scheduler = get_scheduler(
        train_args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=int(train_args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    # With text encoder LoRA the trained module is the joint one (model + encoder); evaluation and saving use the model.
    if private is not None:  # opacus wraps the model, the optimizer and the rows; one process, nothing to shard
        model = model.to(accelerator.device)
        trained, optimizer, train_loader = private.attach(model, optimizer, task.train_loader)
    elif streaming:
        trained, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        train_loader = task.train_loader
    else:
        trained, optimizer, train_loader, scheduler = accelerator.prepare(
            joint if joint is not None else model, optimizer, task.train_loader, scheduler
        )
    task.prepare(accelerator)
    if joint is not None:
        joint = accelerator.unwrap_model(trained)
        model = joint.model
    elif private is None:  # with DP-SGD `model` stays the plain model (evaluated, saved); `trained` wraps it
        model = trained
    ema_decay = train_args.ema_decay
    sharded = sharding(accelerator)
    if ema_decay and sharded:  # AveragedModel keeps a whole copy of the model: a sharded model cannot be copied
        raise ValueError(
            f"--ema_decay {ema_decay} needs a whole copy of the model, which {sharded} shards; leave --ema_decay out "
            "(it is off under sharding) or train with DDP."
        )
    if ema_decay is None:  # the default: on for full next-item training, off for adapters, the heads and sharding
        full_training = task.name == "next-item" and not (use_lora or joint is not None)
        ema_decay = DEFAULT_EMA_DECAY if full_training and not sharded and private is None else 0.0
        if full_training and private is not None:
            accelerator.print(
                "weight average: off (DP-SGD takes few, noisy steps; --ema_decay averages them, which costs no privacy)"
            )
        if full_training and sharded:
            accelerator.print(
                f"weight average: off ({sharded} shards the model; the average needs a whole copy of it)"
            )
    ema = lazy_ema = None
    if ema_decay:  # validated, kept and published instead of the weights; in every checkpoint for resume
        ema = AveragedModel(accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
        accelerator.register_for_checkpointing(ema)
        if lazy_table is not None:  # the table's rows averaged when they change, all of them before a read
            lazy_ema = LazyRowEMA(ema, accelerator.unwrap_model(model), raw_optimizer, lazy_table, ema_decay)
    evaluated = ema.module if ema is not None else model
    for stateful in task.stateful:  # e.g. the click collators' sampling counters
        accelerator.register_for_checkpointing(stateful)
    if accelerator.log_with:
        accelerator.init_trackers(
            "hf_interest", config={**asdict(data_args), **asdict(model_args), **asdict(train_args)}
        )

    forward_kwargs = {**task.forward_kwargs, **({"loss_reduction": "rows"} if private is not None else {})}
    checkpoints = output_dir / "checkpoints"
    state = {
        "epoch": 0,
        "best_metric": None,
        "best_epoch": None,
        "bad_epochs": 0,
        "history": [],
        "train_seconds": 0.0,  # training steps only
        "wall_seconds": 0.0,  # training, validation and the best-model write: the loop's wall clock
        "steps": 0,  # optimizer steps
    }
    state = resume(accelerator, checkpoints, train_args.resume_from_checkpoint, state)
    metric = task.metric
    if train_args.init_from and state["epoch"] == 0 and state["best_metric"] is None:
        # The starting model is a candidate too ("epoch 0"): an update that never beats it on validation is not kept.
        validation = task.evaluate(evaluated, "validation")
        value = task.metric_value(validation)
        state.update(best_metric=value, best_epoch=0, time_to_best_s=0.0, wall_time_to_best_s=0.0)
        state["best_validation"] = validation
        state["history"].append({"epoch": 0, "train_loss": None, metric: value, "seconds": 0.0})
        accelerator.print(f"epoch 0 (the --init_from model, before any update): validation {metric} {value:.4f}")
        save_model(accelerator, evaluated, task.tokenizer, checkpoints / "best")
        if joint is not None:  # the adapter as it starts (LoRA's B is zero: the encoder unchanged)
            save_text_encoder_adapter(accelerator, joint, checkpoints / "best")

    # The loop. A run killed after early stopping had triggered goes straight to the test.
    epoch_seconds = []
    finished = state["bad_epochs"] >= train_args.early_stopping_patience or (
        train_args.max_steps is not None and state.get("steps", 0) >= train_args.max_steps
    )
    # Without a terminal (CI logs, a redirected run) tqdm's bar is off: a line a minute says the epoch is moving.
    quiet_progress = None
    if accelerator.is_local_main_process and not sys.stderr.isatty():
        quiet_progress = _ProgressLines(_batches_per_epoch(train_loader))
    for epoch in range(state["epoch"], state["epoch"] if finished else train_args.num_train_epochs):
        epoch_start = time.perf_counter()
        trained.train()
        if hasattr(train_loader, "set_epoch"):  # not opacus's Poisson loader: its draws follow its own generator
            train_loader.set_epoch(epoch)
        total_loss, num_batches = torch.zeros((), device=accelerator.device), 0
        events = torch.zeros((), dtype=torch.long, device=accelerator.device)  # real (not padding) input events
        # main process only; None lets tqdm switch itself off when the output is not a terminal (CI logs)
        show = None if accelerator.is_local_main_process else True
        # Streaming processes may hold different numbers of batches: the ones done early join the others' all-reduce.
        # (torch's Join itself: accelerate's join_uneven_inputs does nothing for CPU processes.)
        uneven = Join([trained]) if streaming and accelerator.num_processes > 1 else contextlib.nullcontext()
        for batch in _within(uneven, tqdm(train_loader, desc=f"epoch {epoch + 1}", disable=show, leave=False)):
            batch.pop("time_gaps", None)  # the model buckets the gaps itself from the timestamps
            if not task.has_time:
                batch.pop("timestamps", None)  # all zeros: let the model see "gap unknown" instead of "gap 0"
            if private is not None and len(batch["input_ids"]) == 0:  # a Poisson draw of no user: noise only
                private.empty_step()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                state["steps"] = state.get("steps", 0) + 1
                continue
            with accelerator.accumulate(trained):
                loss = trained(**batch, **forward_kwargs).loss
                accelerator.backward(loss)
                # (DP-SGD clips each user's gradient itself, inside optimizer.step())
                if private is None and accelerator.sync_gradients and train_args.max_grad_norm > 0:
                    if lazy_table is None:
                        accelerator.clip_grad_norm_(trained.parameters(), train_args.max_grad_norm)
                    else:  # torch's clipping cannot norm a sparse gradient
                        accelerator.unscale_gradients()
                        clip_grad_norm_(trained.parameters(), train_args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            total_loss += loss.detach()
            events += batch["attention_mask"].sum()
            if ema is not None and accelerator.sync_gradients:
                if lazy_ema is None:
                    ema.update_parameters(accelerator.unwrap_model(model))
                else:
                    lazy_ema.update()
            num_batches += 1
            if num_batches == 2:
                fault_point("train_step", epoch + 1)
            if quiet_progress is not None:
                quiet_progress(epoch, num_batches)
            if accelerator.sync_gradients:
                state["steps"] = state.get("steps", 0) + 1
                if train_args.max_steps is not None and state["steps"] >= train_args.max_steps:
                    break
        train_loss = accelerator.gather(total_loss).mean().item() / max(num_batches, 1)
        events = int(accelerator.gather(events).sum().item())
        if joint is not None:  # every item re-encoded by the updated encoder: what is evaluated and saved
            joint.refresh_item_text_embeddings()
        seconds = time.perf_counter() - epoch_start
        epoch_seconds.append(seconds)
        state["train_seconds"] += seconds

        peak_mb = _peak_rss_mb()  # data, model and training so far; evaluation's score chunks come after
        if lazy_ema is not None:  # every row of the average up to date before it is validated and saved
            lazy_ema.synchronize()
        fault_point("evaluation", epoch + 1)
        validation_start = time.perf_counter()
        validation = task.evaluate(evaluated, "validation")
        value = task.metric_value(validation)
        state["epoch"] = epoch + 1
        state["history"].append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                metric: value,
                "seconds": seconds,
                "train_events": events,  # input events read, over all processes
                "validation_seconds": time.perf_counter() - validation_start,
                "peak_rss_mb_before_validation": peak_mb,  # this process's; None where the OS does not say
            }
        )
        accelerator.log({"train/loss": train_loss, f"validation/{metric}": value}, step=epoch + 1)
        best = state["best_metric"]
        improved = best is None or (value > best if task.higher_is_better else value < best)
        if private is not None:  # choosing weights by validation would use the users' data outside the accountant
            improved = True
        if improved:
            state.update(best_metric=value, best_epoch=epoch + 1, bad_epochs=0, time_to_best_s=state["train_seconds"])
            state["best_validation"] = validation  # the published validation block: these weights are saved as best
        else:
            state["bad_epochs"] += 1
        accelerator.print(
            f"epoch {epoch + 1}: train loss {train_loss:.4f}, validation {metric} {value:.4f}"
            f"{(' (kept: DP-SGD keeps the last epoch)' if private is not None else ' (best)') if improved else ''}, "
            f"{seconds:.1f}s"
        )
        if improved:
            save_model(accelerator, evaluated, task.tokenizer, checkpoints / "best", fault=("best_write", epoch + 1))
            if joint is not None:
                save_text_encoder_adapter(accelerator, joint, checkpoints / "best")
        state["wall_seconds"] = state.get("wall_seconds", 0.0) + time.perf_counter() - epoch_start
        if improved:
            state["wall_time_to_best_s"] = state["wall_seconds"]
        save_checkpoint(accelerator, checkpoints, state, train_args.checkpoints_to_keep)
        if state["bad_epochs"] >= train_args.early_stopping_patience:
            accelerator.print(f"Early stopping: no better validation {metric} for {state['bad_epochs']} epochs.")
            break
        if train_args.max_steps is not None and state["steps"] >= train_args.max_steps:
            accelerator.print(f"Stopping after {state['steps']} optimizer steps as asked (--max_steps).")
            break
        if train_args.stop_after_epochs is not None and epoch + 1 >= train_args.stop_after_epochs:
            accelerator.print(f"Stopping after epoch {epoch + 1} as asked (--stop_after_epochs).")
            accelerator.end_training()
            return {"stopped_at_epoch": epoch + 1}

    # Test the best weights (with LoRA: the best adapter over the base model it was trained on).
    if state["best_epoch"] == 0:
        accelerator.print(
            f"No epoch beat the --init_from model on validation {metric}: the result is that model unchanged"
            + (" (its adapter changes nothing)." if use_lora else ".")
        )
    accelerator.wait_for_everyone()
    best = _load_best(type(task.model), checkpoints / "best", train_args.init_from if use_lora else None)
    # Evaluated only: no DDP wrapper (a loaded adapter has no parameter that requires a gradient, which DDP refuses).
    # Moved first: under FSDP, evaluation mode leaves the placement to the caller.
    best = accelerator.prepare_model(best.to(accelerator.device), evaluation_mode=True)
    test_start = time.perf_counter()
    test_results = task.evaluate(best, "test")
    test_seconds = time.perf_counter() - test_start
    # The best epoch's own validation results: the saved weights are the ones validated then (a run folder's
    # `evaluate.py --split validation` reproduces them). Checkpoints of older versions lack them: validate again.
    val_results = state.get("best_validation") or task.evaluate(best, "validation")

    eval_results = {
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
            "item_table_updates": "lazy" if lazy_table is not None else "dense",
            "seconds_per_epoch_median": float(np.median(epoch_seconds)) if epoch_seconds else None,
            "time_to_best_epoch_s": state.get("time_to_best_s"),
            "wall_time_to_best_epoch_s": state.get("wall_time_to_best_s"),
            "wall_seconds": state.get("wall_seconds"),
            "train_seconds": state["train_seconds"],
            "optimizer_steps": state.get("steps"),
            "test_evaluation_seconds": test_seconds,
            "total_time_s": time.perf_counter() - started,
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
    save_model(accelerator, best, task.tokenizer, output_dir, in_place=True, fault=("final_write", state["epoch"]))
    if joint is not None:  # the best epoch's encoder adapter, which encoded the saved item text embeddings
        eval_results["text_encoder_lora"] = _publish_text_encoder_adapter(accelerator, checkpoints, output_dir, joint)
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
    if use_lora:
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
            "target_modules": module_names(train_args.lora_target_modules),
            "modules_to_save": module_names(train_args.lora_modules_to_save),
            "base_model": train_args.init_from,
            "trainable_parameters": num_trainable,
            "total_parameters": num_total,
            "adapter_size_bytes": adapter_file.stat().st_size if adapter_file.is_file() else None,
            "merged_model": "merged",
        }
    if accelerator.is_main_process:
        print(task.format_test_results(test_results) + "\n")
        for folder in folders:
            write_text_atomic(folder / "eval_results.json", json.dumps(eval_results, indent=2) + "\n")
            write_text_atomic(folder / "README.md", _card_text(eval_results, folder, task, use_lora))
        if use_lora:
            lora = eval_results["lora"]
            print(
                f"LoRA adapter in {output_dir} (adapter_config.json, adapter_model.safetensors: "
                f"{lora['adapter_size_bytes']:,} bytes, {num_trainable:,} trainable parameters) over "
                f"{train_args.init_from}; merged into a plain model in {output_dir / 'merged'}."
            )
        print(_closing_summary(eval_results, data, output_dir))
        print(f"Push-ready folder: {output_dir} (model, vocabulary, eval_results.json, README.md model card)")
    accelerator.end_training()
    return eval_results


class _ProgressLines:
    """Prints `epoch E: B/N batches, S s` when `every` seconds have passed since the last line (or the epoch's start)."""

    def __init__(self, total: int | None, every: float = 60.0):
        self.total, self.every, self.epoch, self.last = total, every, None, 0.0

    def __call__(self, epoch: int, batches: int) -> None:
        now = time.perf_counter()
        if epoch != self.epoch:
            self.epoch, self.start, self.last = epoch, now, now
        if now - self.last >= self.every:
            self.last = now
            of = f"/{self.total:,}" if self.total else ""
            print(f"epoch {epoch + 1}: {batches:,}{of} batches, {now - self.start:.0f} s", flush=True)


def _batches_per_epoch(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:  # a stream without a length
        return None


def _closing_summary(eval_results: dict, data, output_dir: Path) -> str:
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


def _tracker(report_to: str) -> str | None:
    """Accelerate's `log_with`: `"auto"` is TensorBoard when it is installed; `"none"` or `""` is no tracker."""
    if report_to == "auto":
        try:
            import tensorboard  # noqa: F401

            return "tensorboard"
        except ImportError:
            return None
    return None if report_to in ("none", "") else report_to


def _lazy_item_table(model, task_name: str, train_args: TrainArguments, accelerator, adapters: bool):
    """
    `--item_table_updates`: the item table's weight when its rows are updated lazily (after making its gradient
    sparse), None for dense updates. The log says which, and why.
    """
    choice = train_args.item_table_updates
    if choice == "dense":
        accelerator.print("item table updates: dense (--item_table_updates dense)")
        return None
    why_not = None
    if task_name != "next-item":
        why_not = f"--task {task_name} trains a head"
    elif adapters:
        why_not = "adapter training leaves the item table frozen or to peft"
    elif accelerator.num_processes > 1 and accelerator.device.type != "cpu":
        why_not = "sparse gradients are all-reduced by gloo (CPU processes) only, not by NCCL"
    elif sharding(accelerator):
        why_not = f"{sharding(accelerator)} shards the parameters itself"
    else:
        why_not = sparse_item_gradients_supported(model)
    if why_not is not None:
        if choice == "lazy":
            raise ValueError(f"--item_table_updates lazy does not apply: {why_not}. Use --item_table_updates dense.")
        accelerator.print(f"item table updates: dense (--item_table_updates auto: {why_not})")
        return None
    accelerator.print(
        f"item table updates: lazy (--item_table_updates {choice}: sampled softmax): each step updates, decays and "
        "averages only the table rows it read; --item_table_updates dense for AdamW over every row"
    )
    return enable_sparse_item_gradients(model)


def _optimizer(model, joint, train_args: TrainArguments, log, lazy: bool = False) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: no weight decay on biases and norms; the text encoder's adapters (with
    `--text_encoder_lora_r`) at their own learning rate. `lazy`: `LazyAdamW`, which updates a sparse gradient's rows
    only."""
    no_decay = ("bias", "layer_norm", "LayerNorm")
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for n, p in trained if not any(k in n for k in no_decay)],
            "weight_decay": train_args.weight_decay,
        },
        {"params": [p for n, p in trained if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    if joint is not None:
        adapters = [p for p in joint.encoder.parameters() if p.requires_grad]
        groups.append({"params": adapters, "weight_decay": 0.0, "lr": train_args.text_encoder_learning_rate})
        log(
            f"text encoder LoRA r={train_args.text_encoder_lora_r} on {train_args.text_encoder_lora_target_modules} "
            f"of {model.config.text_encoder}: {sum(p.numel() for p in adapters):,} trainable parameters, learning "
            f"rate {train_args.text_encoder_learning_rate:g}, items re-encoded per step: "
            f"{train_args.text_encoder_max_items_per_step or 'all of the batch'}"
        )
    optimizer_class = LazyAdamW if lazy else torch.optim.AdamW
    return optimizer_class(groups, lr=train_args.learning_rate, betas=(0.9, 0.98))


def _load_best(model_class, folder: Path, lora_base: str | None):
    """The best weights written during the loop; with LoRA, the best adapter over its base model."""
    if lora_base is None:
        return model_class.from_pretrained(folder)
    from peft import PeftModel

    return PeftModel.from_pretrained(model_class.from_pretrained(lora_base), folder)


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


def _within(context, iterable):
    """Iterates `iterable` inside `context` (entered on the first item, left when the loop ends or breaks)."""
    with context:
        yield from iterable


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory so far in MiB (Linux and macOS), else None."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
