"""The optional parts of a training run, each one object with a named role that `training_function` builds from the
arguments before the loop and calls at fixed points. A feature that is off is the same object doing nothing, so the
loop reads the same for every run:

- `Adapters`: what is trained when it is not the whole model: LoRA over `--init_from`, and the text encoder's LoRA
  (`--text_encoder_lora_r`) trained jointly with the model.
- `ItemTableUpdates`: how the item table's rows are updated (`--item_table_updates`): lazily, the rows a step read
  (`sparse_rows`), or every row; it picks the optimizer and the gradient clipping.
- `Placement`: how the model, optimizer, rows and schedule are put on the devices: accelerate's `prepare`, the same
  for a stream that each process reads itself, or opacus's DP-SGD wrappers (`PrivateTraining`).
- `OptimizerStep`: one optimizer step from one batch (accumulation, clipping, DP-SGD's steps without a user).
- `WeightAverage`: the exponential moving average of the weights (`--ema_decay`), dense or row by row with lazy updates;
  what is validated, kept and published.
- `StopRules`: early stopping, `--max_steps` and `--stop_after_epochs`.
- `FaultHooks`: the named points where crash-safety tests kill the process (`checkpointing.fault_point`).
"""

from __future__ import annotations

import contextlib
import math

import torch
from accelerate import Accelerator
from torch.distributed.algorithms.join import Join
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .adapters import add_lora, add_text_encoder_lora_training, save_text_encoder_adapter
from .arguments import DEFAULT_EMA_DECAY, TrainArguments, lora_targets
from .checkpointing import fault_point, sharding
from .private import PrivateTraining
from .sparse_rows import (
    LazyAdamW,
    LazyRowEMA,
    clip_grad_norm_,
    enable_sparse_item_gradients,
    sparse_item_gradients_supported,
)


class Adapters:
    """
    LoRA (`--lora_r`) and the text encoder's LoRA (`--text_encoder_lora_r`), or neither.

    `model` is what the task trains (the peft model with LoRA); `trained_module` what the optimizer steps (the joint
    model + encoder with text encoder LoRA); `evaluated_model(trained)` the model that is validated and saved.
    """

    def __init__(self, model, data, tokenizer, train_args: TrainArguments):
        self.args, self.lora = train_args, train_args.lora_r > 0
        self.lora_targets = lora_targets(train_args.lora_target_modules, model.config.block_type)
        self.model = add_lora(model, train_args) if self.lora else model
        self.joint = (
            add_text_encoder_lora_training(self.model, data, tokenizer, train_args)
            if train_args.text_encoder_lora_r
            else None
        )

    def count_parameters(self, log) -> tuple[int, int]:
        """`(trainable, total)` parameters of the model, said in the log."""
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        log(
            f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
            + (f", LoRA r={self.args.lora_r} on {','.join(self.lora_targets)}" if self.lora else "")
        )
        return trainable, total

    @property
    def lora_base(self) -> str | None:
        """The base model a LoRA adapter is loaded over (`--init_from`), None without LoRA."""
        return self.args.init_from if self.lora else None

    @property
    def any(self) -> bool:
        return self.lora or self.joint is not None

    @property
    def trained_module(self):
        return self.joint if self.joint is not None else self.model

    def after_prepare(self, accelerator: Accelerator, trained):
        """The prepared model to validate and save (the model inside the joint module with text encoder LoRA)."""
        if self.joint is None:
            return trained
        self.joint = accelerator.unwrap_model(trained)
        return self.joint.model

    def after_epoch(self) -> None:
        """Every item re-encoded by the updated encoder: what is evaluated and saved."""
        if self.joint is not None:
            self.joint.refresh_item_text_embeddings()

    def save(self, accelerator: Accelerator, folder) -> None:
        """The encoder's adapter beside the weights that its item text embeddings belong to."""
        if self.joint is not None:
            save_text_encoder_adapter(accelerator, self.joint, folder)


class ItemTableUpdates:
    """
    `--item_table_updates`: `lazy` updates (and averages) only the rows of the item table a step read, with sparse
    gradients and `LazyAdamW`; `dense` updates every row with AdamW. The log says which, and why.
    """

    def __init__(self, model, task_name: str, train_args: TrainArguments, accelerator, adapters: bool, private: bool):
        self.tables = None
        if not private:  # DP-SGD's per-user gradients are dense
            self.tables = lazy_item_tables(model, task_name, train_args, accelerator, adapters)
        self.name = "lazy" if self.tables is not None else "dense"
        self.optimizer_class = LazyAdamW if self.tables is not None else torch.optim.AdamW

    def clip(self, accelerator: Accelerator, parameters, max_norm: float) -> None:
        """Global-norm clipping; torch's own cannot norm a sparse gradient, `sparse_rows.clip_grad_norm_` can."""
        if self.tables is None:
            accelerator.clip_grad_norm_(parameters, max_norm)
        else:
            accelerator.unscale_gradients()
            clip_grad_norm_(parameters, max_norm)


def lazy_item_tables(model, task_name: str, train_args: TrainArguments, accelerator, adapters: bool):
    """
    The item tables' weights (the id embeddings, and a separate output table where there is one) when their rows are
    updated lazily, after making their gradients sparse; None when every row is updated.
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
    elif accelerator.num_processes > 1 and not model.config.tie_word_embeddings:
        why_not = (
            "DDP takes sparse gradients from sparse embeddings only, and the separate output table is a linear layer"
        )
    else:
        why_not = sparse_item_gradients_supported(model)
    if why_not is not None:
        if choice == "lazy":
            raise ValueError(f"--item_table_updates lazy does not apply: {why_not}. Use --item_table_updates dense.")
        accelerator.print(f"item table updates: dense (--item_table_updates auto: {why_not})")
        return None
    tables = enable_sparse_item_gradients(model)
    which = "the id table's rows" if len(tables) == 1 else f"the rows of the {len(tables)} item tables"
    accelerator.print(
        f"item table updates: lazy (--item_table_updates {choice}: sampled softmax): each step updates, decays and "
        f"averages only {which} it read; --item_table_updates dense for AdamW over every row"
    )
    return tables


class Placement:
    """
    Puts the trained module, optimizer, training rows and schedule on the devices, and says how an epoch's batches
    are read: accelerate's `prepare` (the loader sharded across processes); the same without the loader for a stream
    that each process reads itself (uneven batch counts joined with torch's `Join`); opacus's DP-SGD wrappers in one
    process, where `model` stays the plain model (evaluated, saved) and the returned module wraps it.
    """

    def __init__(self, task, train_args: TrainArguments, accelerator: Accelerator, log):
        self.streaming = getattr(task, "streaming", False)  # each process reads its own shards: no loader to shard
        self.private = None
        if train_args.private:
            if accelerator.num_processes > 1:
                raise ValueError("DP-SGD (--dp_epsilon / --dp_noise_multiplier) runs in one process; launch it "
                                 "without accelerate's multi-process options.")  # fmt: skip
            self.private = PrivateTraining(train_args, num_users=len(task.train_loader.dataset), log=log)
        self.steps_per_epoch = (
            task.steps_per_epoch
            if self.streaming
            else math.ceil(len(task.train_loader) / accelerator.num_processes / train_args.gradient_accumulation_steps)
        )
        self.uneven = self.streaming and accelerator.num_processes > 1

    def prepare(self, accelerator: Accelerator, adapters: Adapters, optimizer, train_loader, scheduler):
        """`(trained, optimizer, loader, scheduler, model)`: `trained` takes the steps, `model` is validated and saved."""
        if self.private is not None:  # opacus wraps the model, the optimizer and the rows; nothing to shard
            model = adapters.model.to(accelerator.device)
            trained, optimizer, train_loader = self.private.attach(model, optimizer, train_loader)
            return trained, optimizer, train_loader, scheduler, model
        if self.streaming:
            trained, optimizer, scheduler = accelerator.prepare(adapters.model, optimizer, scheduler)
        else:
            trained, optimizer, train_loader, scheduler = accelerator.prepare(
                adapters.trained_module, optimizer, train_loader, scheduler
            )
        return trained, optimizer, train_loader, scheduler, adapters.after_prepare(accelerator, trained)

    def epoch_context(self, trained):
        """Streaming processes may hold different numbers of batches: the ones done early join the others'
        all-reduce (torch's `Join`: accelerate's `join_uneven_inputs` does nothing for CPU processes)."""
        return Join([trained]) if self.uneven else contextlib.nullcontext()


class OptimizerStep:
    """One optimizer step from one batch: forward, backward, clipping (DP-SGD clips each user's gradient itself, inside
    the optimizer), step, schedule. A DP-SGD draw of no user is a step of noise alone, with no loss (None).
    `forward_kwargs`: the task's own arguments of the forward pass; DP-SGD computes its per-user loss itself
    (`private.per_user_loss`)."""

    def __init__(self, accelerator, trained, optimizer, scheduler, table: ItemTableUpdates, train_args, placement,
                 forward_kwargs: dict):  # fmt: skip
        self.accelerator, self.trained, self.optimizer, self.scheduler = accelerator, trained, optimizer, scheduler
        self.table, self.private = table, placement.private
        self.max_grad_norm = train_args.max_grad_norm if placement.private is None else 0.0
        self.forward_kwargs = forward_kwargs
        self.loss = self.private.loss if self.private is not None else self.model_loss

    def model_loss(self, batch: dict) -> torch.Tensor:
        """The model's own loss of the batch (DP-SGD's is `PrivateTraining.loss`)."""
        return self.trained(**batch, **self.forward_kwargs).loss

    def __call__(self, batch: dict) -> torch.Tensor | None:
        if self.private is not None and len(batch["input_ids"]) == 0:  # a Poisson draw of no user: noise only
            self.private.empty_step()
            self._step()
            return None
        accelerator = self.accelerator
        with accelerator.accumulate(self.trained):
            loss = self.loss(batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.max_grad_norm > 0:
                self.table.clip(accelerator, self.trained.parameters(), self.max_grad_norm)
            self._step()
        return loss

    def _step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()


class WeightAverage:
    """
    `--ema_decay`: an exponential moving average of the weights, updated after every optimizer step, which is
    validated, kept and published instead of the weights (`AveragedModel`, in every checkpoint for resume). With
    lazy item-table updates the table's rows are averaged when they change and all of them brought up to date before
    a read (`LazyRowEMA`). Decay 0: the weights themselves.

    The default (`--ema_decay` unset) is on for full next-item training, off for adapters, the heads, DP-SGD and
    sharded models.
    """

    def __init__(self, model, train_args: TrainArguments, task_name: str, accelerator, adapters: bool, placement,
                 optimizer, table: ItemTableUpdates):  # fmt: skip
        decay, sharded, private = train_args.ema_decay, sharding(accelerator), placement.private is not None
        if decay and sharded:  # AveragedModel keeps a whole copy of the model: a sharded model cannot be copied
            raise ValueError(
                f"--ema_decay {decay} needs a whole copy of the model, which {sharded} shards; leave --ema_decay out "
                "(it is off under sharding) or train with DDP."
            )
        if decay is None:
            full_training = task_name == "next-item" and not adapters
            decay = DEFAULT_EMA_DECAY if full_training and not sharded and not private else 0.0
            if full_training and private:
                accelerator.print(
                    "weight average: off (DP-SGD takes few, noisy steps; --ema_decay averages them, which costs no "
                    "privacy)"
                )
            if full_training and sharded:
                accelerator.print(
                    f"weight average: off ({sharded} shards the model; the average needs a whole copy of it)"
                )
        self.decay, self.accelerator, self.model = decay, accelerator, model
        self.ema = self.lazy = None
        if decay:
            self.ema = AveragedModel(accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(decay))
            accelerator.register_for_checkpointing(self.ema)
            if table.tables is not None:
                self.lazy = LazyRowEMA(self.ema, accelerator.unwrap_model(model), optimizer, table.tables, decay)

    @property
    def evaluated(self):
        """What is validated, kept and published: the average, or the weights themselves."""
        return self.ema.module if self.ema is not None else self.model

    def after_step(self) -> None:
        if self.ema is None or not self.accelerator.sync_gradients:
            return
        if self.lazy is None:
            self.ema.update_parameters(self.accelerator.unwrap_model(self.model))
        else:
            self.lazy.update()

    def before_read(self) -> None:
        """Every row of the average up to date before it is validated and saved."""
        if self.lazy is not None:
            self.lazy.synchronize()


class StopRules:
    """When the loop ends: early stopping (`--early_stopping_patience`), `--max_steps`, `--stop_after_epochs`."""

    def __init__(self, train_args: TrainArguments, metric: str):
        self.patience, self.max_steps = train_args.early_stopping_patience, train_args.max_steps
        self.stop_after_epochs, self.metric = train_args.stop_after_epochs, metric

    def total_steps(self, steps_per_epoch: int, epochs: int) -> int:
        """The schedule's length: every epoch's steps, or `--max_steps` when it stops earlier."""
        return min(steps_per_epoch * epochs, self.max_steps or steps_per_epoch * epochs)

    def finished(self, state: dict) -> bool:
        """A run killed after it had stopped goes straight to the test."""
        return state["bad_epochs"] >= self.patience or self.steps_done(state)

    def steps_done(self, state: dict) -> bool:
        return self.max_steps is not None and state.get("steps", 0) >= self.max_steps

    def after_epoch(self, state: dict) -> str | None:
        """Why the loop stops after this epoch (a line to print), or None. `stop_after_epochs` is said apart: the run
        then ends without a test (`paused`)."""
        if state["bad_epochs"] >= self.patience:
            return f"Early stopping: no better validation {self.metric} for {state['bad_epochs']} epochs."
        if self.steps_done(state):
            return f"Stopping after {state['steps']} optimizer steps as asked (--max_steps)."
        return None

    def paused(self, epoch: int) -> bool:
        return self.stop_after_epochs is not None and epoch >= self.stop_after_epochs


class FaultHooks:
    """The named points where the crash-safety tests kill the process (`HF_INTEREST_FAULT_INJECTION`); nothing
    otherwise. The writes' own points (`checkpoint_write`, `best_write`, `final_write`) are inside `checkpointing`."""

    @staticmethod
    def after_batch(epoch: int, batches: int) -> None:
        if batches == 2:
            fault_point("train_step", epoch)

    @staticmethod
    def before_validation(epoch: int) -> None:
        fault_point("evaluation", epoch)


__all__ = [
    "Adapters",
    "lazy_item_tables",
    "FaultHooks",
    "ItemTableUpdates",
    "OptimizerStep",
    "Placement",
    "StopRules",
    "WeightAverage",
]
