"""The training loop of every task (next item, click, forecast), in the shape of accelerate's
`examples/nlp_example.py`: read the data, build the task and its model, prepare, loop over epochs in plain sight
(train, validate, keep the best, checkpoint, stop early), test the best weights, write the run folder.

The optional parts (adapters, DP-SGD, lazy item-table updates, the weight average, streaming, the stop rules, the
fault hooks) are objects of `features`, built from the arguments before the loop and called at fixed points; the run
folder is written by `run_folder`. SISA's shards are `train`'s business (`sisa.train_shards`, one plain loop per shard).

`hub_scripts/train.py`, `hf-interest train` and `accelerate launch -m hf_interest_cli train` all run `train`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data.sequence_shards import is_sequence_shards
from .arguments import DataArguments, ModelArguments, TrainArguments, check_arguments, resolve_train_batch
from .checkpointing import TIED_WEIGHTS_SAVE_FILTER, fresh_state, resume, save_checkpoint, save_model
from .data import load_data, resolve_train_batch_for_log
from .features import Adapters, FaultHooks, ItemTableUpdates, OptimizerStep, Placement, StopRules, WeightAverage
from .kernels import apply_cpu_training_kernels, keep_freed_memory_for_reuse
from .run_folder import load_best, run_results, write_run_folder
from .streaming import StreamingNextItemTask, StreamingSequences
from .tasks import build_task


def train(data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments) -> dict:
    """
    The entry point of every command line: `--num_shards` > 1 trains SISA's shards (`sisa.train_shards`, one
    `training_function` per shard, then their ensemble); otherwise one `training_function`.
    """
    if train_args.num_shards > 1:
        from .sisa import train_shards

        check_arguments(data_args, train_args, model_args)  # before any shard's data is read
        return train_shards(data_args, model_args, train_args, train_one=training_function)
    return training_function(data_args, model_args, train_args)


def training_function(data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments) -> dict:
    """
    Trains, validates every epoch, tests the best weights and writes a push-ready run folder.

    Args:
        data_args, model_args, train_args: the run's arguments (`hf_interest.training.arguments`).

    Returns:
        `dict`: what `eval_results.json` holds (`{"stopped_at_epoch": n}` after `--stop_after_epochs`).
    """
    check_arguments(data_args, train_args, model_args)  # before any data is read: a typo should not cost a data load
    if train_args.num_shards > 1:
        raise ValueError("training_function trains one model; --num_shards > 1 goes through training.train (SISA).")
    logging.getLogger("accelerate.utils.other").addFilter(TIED_WEIGHTS_SAVE_FILTER)
    output_dir, started = Path(train_args.output_dir), time.perf_counter()
    accelerator = Accelerator(
        mixed_precision=train_args.mixed_precision,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        log_with=_tracker(train_args.report_to),
        project_dir=str(output_dir / "logs"),
    )
    set_seed(train_args.seed)

    # Data, the task and its model, then the features: each built from the arguments, each doing nothing when off.
    data, task, train_args = _data_and_task(data_args, model_args, train_args, accelerator)
    _cpu_speedups(task.model, train_args, accelerator)
    adapters = Adapters(task.model, data, task.tokenizer, train_args)
    num_trainable, num_total = adapters.count_parameters(accelerator.print)
    placement = Placement(task, train_args, accelerator, accelerator.print)
    table = ItemTableUpdates(adapters.model, task.name, train_args, accelerator, adapters.any, placement.private)
    optimizer = raw_optimizer = _optimizer(adapters.model, adapters.joint, train_args, accelerator.print, table)
    stop, faults, metric = StopRules(train_args, task.metric), FaultHooks(), task.metric
    total_steps = stop.total_steps(placement.steps_per_epoch, train_args.num_train_epochs)
    scheduler = get_scheduler(
        train_args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=int(train_args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    trained, optimizer, train_loader, scheduler, model = placement.prepare(
        accelerator, adapters, optimizer, task.train_loader, scheduler
    )
    task.prepare(accelerator)
    average = WeightAverage(model, train_args, task.name, accelerator, adapters.any, placement, raw_optimizer, table)
    step = OptimizerStep(accelerator, trained, optimizer, scheduler, table, train_args, placement, task.forward_kwargs)
    for stateful in task.stateful:  # e.g. the click collators' sampling counters
        accelerator.register_for_checkpointing(stateful)
    accelerator.init_trackers("hf_interest", config={**asdict(data_args), **asdict(model_args), **asdict(train_args)})
    checkpoints = output_dir / "checkpoints"
    state = resume(accelerator, checkpoints, train_args.resume_from_checkpoint, fresh_state())
    if train_args.init_from and state["epoch"] == 0 and state["best_metric"] is None:
        _validate_the_start(task, average, adapters, accelerator, state, checkpoints)

    # The loop. A run killed after it had stopped goes straight to the test.
    epoch_seconds = []
    # Without a terminal (CI logs, a redirected run) tqdm's bar is off: a line a minute says the epoch is moving.
    progress = ProgressLines(
        _batches_per_epoch(train_loader), on=accelerator.is_local_main_process and not sys.stderr.isatty()
    )
    for epoch in range(state["epoch"], state["epoch"] if stop.finished(state) else train_args.num_train_epochs):
        epoch_start = time.perf_counter()
        trained.train()
        if hasattr(train_loader, "set_epoch"):  # not opacus's Poisson loader: its draws follow its own generator
            train_loader.set_epoch(epoch)
        total_loss, num_batches = torch.zeros((), device=accelerator.device), 0
        events = torch.zeros((), dtype=torch.long, device=accelerator.device)  # real (not padding) input events
        # main process only; None lets tqdm switch itself off when the output is not a terminal (CI logs)
        batches = tqdm(
            train_loader, desc=f"epoch {epoch + 1}", disable=not accelerator.is_local_main_process or None, leave=False
        )
        for batch in _within(placement.epoch_context(trained), batches):
            loss = step(_model_inputs(batch, task.has_time))
            if loss is None:  # DP-SGD's step of noise alone
                state["steps"] = state.get("steps", 0) + 1
                continue
            total_loss += loss.detach()
            events += batch["attention_mask"].sum()
            average.after_step()
            num_batches += 1
            faults.after_batch(epoch + 1, num_batches)
            progress(epoch, num_batches)
            if accelerator.sync_gradients:
                state["steps"] = state.get("steps", 0) + 1
                if stop.steps_done(state):
                    break
        train_loss = accelerator.gather(total_loss).mean().item() / max(num_batches, 1)
        events = int(accelerator.gather(events).sum().item())
        adapters.after_epoch()
        seconds = time.perf_counter() - epoch_start
        epoch_seconds.append(seconds)
        state["train_seconds"] += seconds

        # Validate (the average, when there is one), keep the best, checkpoint.
        peak_mb = _peak_rss_mb()  # data, model and training so far; evaluation's score chunks come after
        average.before_read()
        faults.before_validation(epoch + 1)
        validation_start = time.perf_counter()
        validation = task.evaluate(average.evaluated, "validation")
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
        improved = _note_validation(state, epoch + 1, value, validation, task, placement.private is not None)
        kept = " (kept: DP-SGD keeps the last epoch)" if placement.private is not None else " (best)"
        accelerator.print(
            f"epoch {epoch + 1}: train loss {train_loss:.4f}, validation {metric} {value:.4f}"
            f"{kept if improved else ''}, {seconds:.1f}s"
        )
        if improved:
            fault = ("best_write", epoch + 1)
            save_model(accelerator, average.evaluated, task.tokenizer, checkpoints / "best", fault=fault)
            adapters.save(accelerator, checkpoints / "best")
        state["wall_seconds"] = state.get("wall_seconds", 0.0) + time.perf_counter() - epoch_start
        if improved:
            state["wall_time_to_best_s"] = state["wall_seconds"]
        save_checkpoint(accelerator, checkpoints, state, train_args.checkpoints_to_keep)
        if (reason := stop.after_epoch(state)) is not None:
            accelerator.print(reason)
            break
        if stop.paused(epoch + 1):
            accelerator.print(f"Stopping after epoch {epoch + 1} as asked (--stop_after_epochs).")
            accelerator.end_training()
            return {"stopped_at_epoch": epoch + 1}

    # Test the best weights (with LoRA: the best adapter over the base model it was trained on).
    accelerator.wait_for_everyone()
    best = load_best(type(task.model), checkpoints / "best", adapters.lora_base, accelerator.print, state, metric)
    # Evaluated only: no DDP wrapper (a loaded adapter has no parameter that requires a gradient, which DDP refuses).
    # Moved first: under FSDP, evaluation mode leaves the placement to the caller.
    best = accelerator.prepare_model(best.to(accelerator.device), evaluation_mode=True)
    test_start = time.perf_counter()
    test_results = task.evaluate(best, "test")
    timing = {"epoch_seconds": epoch_seconds, "test_seconds": time.perf_counter() - test_start, "started": started}
    # The best epoch's own validation results: the saved weights are the ones validated then (a run folder's
    # `evaluate.py --split validation` reproduces them). Checkpoints of older versions lack them: validate again.
    val_results = state.get("best_validation") or task.evaluate(best, "validation")
    eval_results = run_results(
        task=task, data=data, data_args=data_args, model_args=model_args, train_args=train_args, state=state,
        test_results=test_results, val_results=val_results, timing=timing, accelerator=accelerator, best=best,
        num_trainable=num_trainable, ema_decay=average.decay, item_table_updates=table.name, private=placement.private,
    )  # fmt: skip
    write_run_folder(accelerator, eval_results, best=best, task=task, data=data, train_args=train_args,
                     adapters=adapters, checkpoints=checkpoints, num_trainable=num_trainable, num_total=num_total)  # fmt: skip
    accelerator.end_training()
    return eval_results


def _model_inputs(batch: dict, has_time: bool) -> dict:
    """The batch as the model reads it in training: the model buckets the time gaps itself from the timestamps, and a
    log without times (all zeros) gives none, so that the model sees "gap unknown" instead of "gap 0"."""
    batch.pop("time_gaps", None)
    return batch if has_time else {k: v for k, v in batch.items() if k != "timestamps"}


def _note_validation(state: dict, epoch: int, value: float, validation: dict, task, private: bool) -> bool:
    """Records a validation in the loop state; True when these weights are kept (the best so far, or any epoch under
    DP-SGD: choosing weights by validation would use the users' data outside the accountant)."""
    best = state["best_metric"]
    improved = best is None or private or (value > best if task.higher_is_better else value < best)
    if improved:
        state.update(best_metric=value, best_epoch=epoch, bad_epochs=0, time_to_best_s=state["train_seconds"])
        state["best_validation"] = validation  # the published validation block: these weights are saved as best
    else:
        state["bad_epochs"] += 1
    return improved


def _data_and_task(data_args, model_args, train_args, accelerator):
    """The run's data, its task (which builds the model) and the training arguments with the batch size and learning
    rate the log's size gives where they were left out (`resolve_train_batch`): Spark's sequence shards are streamed,
    each process reading its own; any other log is read whole."""
    if is_sequence_shards(data_args.dataset):
        if train_args.task != "next-item":
            raise ValueError(f"--task {train_args.task} does not read sequence shards yet; use --task next-item.")
        data = StreamingSequences(data_args.dataset, accelerator.process_index, accelerator.num_processes)
        accelerator.print(str(data.report))
        train_args = _logged(accelerator, *resolve_train_batch(train_args, None))  # windows not counted when streamed
        return data, StreamingNextItemTask(data, data_args, model_args, train_args, accelerator.print), train_args
    with accelerator.main_process_first():
        data = load_data(data_args, train_args.task)
    accelerator.print(str(data.report))
    train_args = _logged(
        accelerator, *resolve_train_batch_for_log(data.sequences["train"], data_args.max_length, train_args)
    )
    return data, build_task(data, data_args, model_args, train_args, accelerator.print), train_args


def _logged(accelerator, train_args: TrainArguments, why: str | None) -> TrainArguments:
    if why:
        accelerator.print(why)
    return train_args


def _cpu_speedups(model, train_args: TrainArguments, accelerator) -> None:
    """On CPU: malloc that keeps freed memory for reuse (`--reuse_freed_memory`) and the faster training kernels
    (`--cpu_kernels`); the model file itself stays plain PyTorch."""
    if accelerator.device.type != "cpu":
        return
    if train_args.reuse_freed_memory:
        # Not with the sampled softmax (large catalogues): its steps allocate little, while evaluation's (users,
        # items) score chunks of varying size then fragment a heap that never maps memory back, past 20 GB at
        # 557k items where plain malloc peaks under 4 GB (benchmarks/benchmark_scale.py).
        if getattr(model.config, "loss_type", None) == "sampled_softmax":
            accelerator.print("malloc left as it is (--reuse_freed_memory helps the full softmax only).")
        else:
            keep_freed_memory_for_reuse()
    if train_args.cpu_kernels:
        apply_cpu_training_kernels(model)


def _validate_the_start(task, average, adapters, accelerator, state: dict, checkpoints: Path) -> None:
    """With `--init_from` the starting model is a candidate too ("epoch 0"): an update that never beats it on
    validation is not kept."""
    validation = task.evaluate(average.evaluated, "validation")
    value = task.metric_value(validation)
    state.update(best_metric=value, best_epoch=0, time_to_best_s=0.0, wall_time_to_best_s=0.0)
    state["best_validation"] = validation
    state["history"].append({"epoch": 0, "train_loss": None, task.metric: value, "seconds": 0.0})
    accelerator.print(f"epoch 0 (the --init_from model, before any update): validation {task.metric} {value:.4f}")
    save_model(accelerator, average.evaluated, task.tokenizer, checkpoints / "best")
    adapters.save(
        accelerator, checkpoints / "best"
    )  # the adapter as it starts (LoRA's B is zero: the encoder unchanged)


def _optimizer(model, joint, train_args: TrainArguments, log, table: ItemTableUpdates) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: no weight decay on biases and norms; the text encoder's adapters (with
    `--text_encoder_lora_r`) at their own learning rate; `LazyAdamW` with lazy item-table updates, which updates a
    sparse gradient's rows only."""
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
    return table.optimizer_class(groups, lr=train_args.learning_rate, betas=(0.9, 0.98))


class ProgressLines:
    """Prints `epoch E: B/N batches, S s` when `every` seconds have passed since the last line (or the epoch's start);
    nothing when not `on`."""

    def __init__(self, total: int | None, every: float = 60.0, on: bool = True):
        self.total, self.every, self.epoch, self.last, self.on = total, every, None, 0.0, on

    def __call__(self, epoch: int, batches: int) -> None:
        if not self.on:
            return
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


def _tracker(report_to: str) -> str | None:
    """Accelerate's `log_with`: `"auto"` is TensorBoard when it is installed; `"none"` or `""` is no tracker."""
    if report_to == "auto":
        try:
            import tensorboard  # noqa: F401

            return "tensorboard"
        except ImportError:
            return None
    return None if report_to in ("none", "") else report_to


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
