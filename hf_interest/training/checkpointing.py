"""Crash-safe writes of a training run: every folder is written under a temporary name and renamed into place, so a
kill at any instant leaves either the old version or the new one; epoch checkpoints (`accelerator.save_state` plus
the loop's `trainer_state.json`) and the resume from the newest complete one.

Tests kill runs at named points (`HF_INTEREST_FAULT_INJECTION=<point>@<epoch>`, see `fault_point`) and check that a
resumed run ends with the same metrics and weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
from pathlib import Path

from transformers.utils import logging as transformers_logging

FAULT_ENV = "HF_INTEREST_FAULT_INJECTION"
STATE_FILE = "trainer_state.json"


def fault_point(name: str, epoch: int) -> None:
    """
    Crash-safety tests set `HF_INTEREST_FAULT_INJECTION=<point>@<epoch>` to SIGKILL this process at a named point
    (`train_step`, `evaluation`, `checkpoint_write`, `best_write`, `final_write`) of a given epoch (1-based).
    Unset, this does nothing.
    """
    fault = os.environ.get(FAULT_ENV)
    if fault and fault == f"{name}@{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_replace(tmp: Path, final: Path) -> None:
    """Moves a fully written folder into place; the previous one is removed only after the new one is complete."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def recover_folder(final: Path) -> None:
    """Undoes what a kill inside `atomic_replace` left: a missing folder comes back from `.old`; leftovers go."""
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.exists():
        old.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(final.with_name(final.name + ".tmp"), ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Writes a text file under a temporary name, then renames it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sharding(accelerator) -> str | None:
    """The name of the engine that shards the model across processes (FSDP, DeepSpeed, Megatron-LM), or None:
    each process then holds a part of the weights, not a whole model that can be copied or saved as it is."""
    name = accelerator.distributed_type.value
    return name if name in ("FSDP", "DEEPSPEED", "MEGATRON_LM") else None


def save_model(accelerator, model, tokenizer, folder: Path, in_place: bool = False, fault=None) -> None:
    """
    `save_pretrained` of the model and the vocabulary, called on every process (transformers may synchronise inside)
    and written by the main one into a temporary folder, then moved into place, so a kill never leaves a half-written
    file: the whole folder is renamed, or with `in_place` (the run folder, which holds other files too) each file is
    moved over its old version with an atomic `os.replace`.

    Args:
        accelerator: the run's `Accelerator`.
        model: the model (possibly wrapped by `accelerator.prepare`; a peft model saves its adapter).
        tokenizer: the `ItemTokenizer`.
        folder (`Path`): where the files end up.
        in_place (`bool`): move file by file into an existing folder instead of renaming the folder.
        fault: `(point, epoch)` for `fault_point`, between the write and the move.
    """
    accelerator.wait_for_everyone()
    target = folder.with_name(f".{folder.name}.save.tmp") if in_place else folder.with_name(folder.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
    accelerator.wait_for_everyone()
    # Under sharding every process takes part in gathering the whole state dict first
    state_dict = accelerator.get_state_dict(model) if sharding(accelerator) else None
    with _no_save_progress_bars():
        accelerator.unwrap_model(model).save_pretrained(
            target, is_main_process=accelerator.is_main_process, state_dict=state_dict
        )
    if accelerator.is_main_process:
        tokenizer.save_pretrained(target)
        if fault:
            fault_point(*fault)
        if in_place:
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(target.iterdir()):
                os.replace(path, folder / path.name)
            target.rmdir()
        else:
            atomic_replace(target, folder)
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


class TiedWeightsSaveFilter(logging.Filter):
    """
    Drops accelerate's "Removed shared tensor {'item_head.weight'} while saving" warning, written at every checkpoint:
    the next-item head is tied to the item embeddings on purpose and `load_state` ties it back (resume is tested to
    give the same weights). Any other message passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor {'item_head.weight'} while saving" not in record.getMessage()


TIED_WEIGHTS_SAVE_FILTER = TiedWeightsSaveFilter()  # one instance: adding it again is a no-op


def save_checkpoint(accelerator, checkpoints: Path, state: dict, keep: int) -> None:
    """
    Writes `checkpoints/epoch_<n>` (accelerate's `save_state`: model, optimizer, scheduler, RNG states, registered
    objects such as the weight average; plus `trainer_state.json`), then keeps the newest `keep` (0: all).
    """
    folder = checkpoints / f"epoch_{state['epoch']}"
    tmp = checkpoints / f".epoch_{state['epoch']}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process writes its own RNG state into tmp before it is renamed
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        fault_point("checkpoint_write", state["epoch"])
        atomic_replace(tmp, folder)
        old = sorted(checkpoints.glob("epoch_*"), key=lambda p: int(p.name.split("_")[1]))
        for stale in old[:-keep] if keep > 0 else []:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def fresh_state() -> dict:
    """The loop state of a run that starts (what `trainer_state.json` holds after each epoch)."""
    return {
        "epoch": 0,
        "best_metric": None,
        "best_epoch": None,
        "bad_epochs": 0,
        "history": [],
        "train_seconds": 0.0,  # training steps only
        "wall_seconds": 0.0,  # training, validation and the best-model write: the loop's wall clock
        "steps": 0,  # optimizer steps
    }


def resume(accelerator, checkpoints: Path, resume_from: str | None, state: dict) -> dict:
    """
    Cleans up what a kill left and restores the newest complete checkpoint (`resume_from="latest"`) or the one named.

    Args:
        accelerator: the run's `Accelerator`, with everything prepared and registered.
        checkpoints (`Path`): the run's checkpoints folder.
        resume_from (`str`, *optional*): `"latest"`, a checkpoint folder, or `None` (no resume).
        state (`dict`): the loop state to return when there is nothing to resume.

    Returns:
        The loop state (`trainer_state.json` of the checkpoint), or `state` unchanged.
    """
    if not resume_from:
        return state
    if accelerator.is_main_process:  # what a kill at any instant can leave behind
        recover_folder(checkpoints / "best")
        for leftover in checkpoints.glob(".epoch_*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
    accelerator.wait_for_everyone()
    folder = Path(resume_from)
    if resume_from == "latest":
        found = sorted(
            (p for p in checkpoints.glob("epoch_*") if p.name[6:].isdigit() and (p / STATE_FILE).is_file()),
            key=lambda p: int(p.name[6:]),
        )
        if not found:  # killed before the first checkpoint: nothing to lose, start again
            accelerator.print(f"--resume_from_checkpoint latest: no checkpoint in {checkpoints} yet; starting.")
            return state
        folder = found[-1]
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint written by training (no {STATE_FILE}).")
    accelerator.load_state(str(folder))
    restored = json.loads((folder / STATE_FILE).read_text())
    accelerator.print(f"Resumed from {folder} after epoch {restored['epoch']}.")
    return restored
