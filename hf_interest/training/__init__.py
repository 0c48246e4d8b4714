"""Training of interest models: the arguments, the data side, evaluation, crash-safe checkpoints, adapters, the CPU
kernels, and one loop for every task (`training_function`).

    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k      # from a checkout
    accelerate launch -m hf_interest.training --dataset ... --output_dir ...           # from an installed package
    hf-interest train --dataset ... --output_dir ...                                   # the same

Modules: `arguments` (the three argument dataclasses, `check_arguments`, `parse_arguments`), `data` (the run's data,
training windows, data order), `evaluation` (full-ranking evaluation beside the popularity baseline), `tasks` (what
differs between next item, click and forecast), `checkpointing` (atomic writes, checkpoints, resume), `adapters`
(`--init_from`, LoRA, text encoder LoRA), `kernels` (faster CPU training kernels applied to a plain model),
`sparse_rows` (lazy item-table updates for the sampled softmax: a step costs its batch's rows, not the catalogue),
`loop` (`training_function`).
"""

from .arguments import (
    TASKS,
    DataArguments,
    ModelArguments,
    TrainArguments,
    check_arguments,
    parse_arguments,
    targets_from_seconds,
)
from .data import (
    LengthGroupedSampler,
    TargetsFromCollator,
    exclude_items,
    filter_eval_targets,
    load_data,
    next_item_dataloaders,
    train_windows,
    window_starts,
)
from .evaluation import EvalCollator, eval_dataloader, evaluate_next_item, popularity_baseline
from .kernels import apply_cpu_training_kernels, keep_freed_memory_for_reuse
from .loop import training_function


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """Parses the arguments (a command line, or one JSON/YAML file) and runs `training_function`."""
    return training_function(*parse_arguments(argv, prog=prog))


__all__ = [
    "TASKS",
    "DataArguments",
    "EvalCollator",
    "LengthGroupedSampler",
    "ModelArguments",
    "TargetsFromCollator",
    "TrainArguments",
    "apply_cpu_training_kernels",
    "check_arguments",
    "eval_dataloader",
    "evaluate_next_item",
    "exclude_items",
    "filter_eval_targets",
    "keep_freed_memory_for_reuse",
    "load_data",
    "main",
    "next_item_dataloaders",
    "parse_arguments",
    "popularity_baseline",
    "targets_from_seconds",
    "train_windows",
    "training_function",
    "window_starts",
]
