"""Training of interest models: the arguments, the data side, evaluation, crash-safe checkpoints, adapters, the CPU
kernels, and one loop for every task (`training_function`).

    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k      # from a checkout
    hf-interest train --dataset ... --output_dir ...                                   # from an installed package
    accelerate launch -m hf_interest_cli train --dataset ... --output_dir ...          # the same, several processes

The command lines parse the arguments (`hf_interest_cli.commands.parse_train_arguments`) and call `train`.

Modules: `arguments` (the argument dataclasses: data, model, and training in four groups; `check_arguments`), `data` (the run's data,
training windows, data order), `evaluation` (full-ranking evaluation beside the popularity baseline), `tasks` (what
differs between next item, click and forecast), `checkpointing` (atomic writes, checkpoints, resume), `adapters`
(`--init_from`, LoRA, text encoder LoRA), `kernels` (faster CPU training kernels applied to a plain model),
`sparse_rows` (lazy item-table updates for the sampled softmax: a step costs its batch's rows, not the catalogue),
`features` (the optional parts of a run, each an object the loop calls: adapters, DP-SGD placement, lazy
item-table updates, the weight average, the stop rules, the fault hooks), `run_folder` (what a run leaves), `loop`
(`train`: SISA's shards or one `training_function`).
"""

from .arguments import (
    TASKS,
    DataArguments,
    LoopArguments,
    LoraArguments,
    ModelArguments,
    PrivacyArguments,
    TextEncoderLoraArguments,
    TrainArguments,
    check_arguments,
    resolve_train_batch,
    targets_from_seconds,
)
from .data import (
    LengthGroupedSampler,
    TargetsFromCollator,
    count_train_windows,
    exclude_items,
    filter_eval_targets,
    load_data,
    next_item_dataloaders,
    resolve_train_batch_for_log,
    train_windows,
    window_starts,
)
from .evaluation import EvalCollator, eval_dataloader, evaluate_next_item, popularity_baseline
from .kernels import apply_cpu_training_kernels, keep_freed_memory_for_reuse
from .loop import train, training_function

__all__ = [
    "TASKS",
    "DataArguments",
    "EvalCollator",
    "LengthGroupedSampler",
    "ModelArguments",
    "TargetsFromCollator",
    "TrainArguments",
    "LoopArguments",
    "LoraArguments",
    "TextEncoderLoraArguments",
    "PrivacyArguments",
    "apply_cpu_training_kernels",
    "check_arguments",
    "count_train_windows",
    "eval_dataloader",
    "evaluate_next_item",
    "exclude_items",
    "filter_eval_targets",
    "keep_freed_memory_for_reuse",
    "load_data",
    "next_item_dataloaders",
    "popularity_baseline",
    "resolve_train_batch",
    "resolve_train_batch_for_log",
    "targets_from_seconds",
    "train_windows",
    "train",
    "training_function",
    "window_starts",
]
