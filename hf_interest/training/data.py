"""The data side of training: a run's data from its arguments, training windows over long sequences, the data
order, and the next-item dataloaders (`next_item_dataloaders`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

from ..data import CleaningConfig, DataCollatorForInterest, encode_sequences, load_named_dataset
from ..data.vocab import dataset_table
from ..privacy import DeletionLedger, resolve_forget_key, user_shard
from .arguments import DataArguments, resolve_train_batch, targets_from_seconds
from .evaluation import eval_dataloader, popularity_baseline


def load_data(data_args: DataArguments, task: str = "next-item"):
    """Loads the named dataset or log as per-user sequences with the split `--split` names (see hf_interest.data)."""
    columns = {"user": data_args.user_column, "item": data_args.item_column, "timestamp": data_args.timestamp_column}
    cleaning = CleaningConfig(
        min_rating=data_args.min_rating, min_user_events=data_args.k_core, min_item_events=data_args.k_core
    )
    synthetic = {
        "num_users": data_args.synthetic_num_users,
        "num_items": data_args.synthetic_num_items,
        "seed": data_args.synthetic_seed,
        "successor_probability": data_args.synthetic_successor_probability,
    }
    data = load_named_dataset(
        data_args.dataset,
        data_dir=data_args.data_dir,
        columns={k: v for k, v in columns.items() if v},
        cleaning=cleaning,
        synthetic=synthetic,
        split=data_args.split or ("by_user" if task == "forecast" else "leave_one_out"),
    )
    if data_args.exclude_items_file:
        data, _ = exclude_items(data, read_ids(data_args.exclude_items_file, "--exclude_items_file", "item"))
    if data_args.exclude_users_file:
        data, _ = exclude_users(data, read_ids(data_args.exclude_users_file, "--exclude_users_file", "user"))
    if data_args.deletion_ledger:
        ledger_path = Path(data_args.deletion_ledger)
        key = resolve_forget_key(data_args.deletion_key_file, run_dir=ledger_path.parent)
        forgotten = DeletionLedger(ledger_path, key).user_filter()
        data, _ = select_users(data, lambda user: not forgotten(user), f"forgotten users ({ledger_path})")
    if (shard := data_args.shard()) is not None:
        index, count = shard
        data, _ = select_users(
            data,
            lambda user: user_shard(user, count) == index,
            f"users of other shards (--user_shard {index}/{count})",
        )
    return data


def read_ids(path_text: str, flag: str, kind: str) -> list[str]:
    """The raw ids of a text file, one per line (blank lines skipped)."""
    path = Path(path_text)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file (one raw {kind} id per line).")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def exclude_users(data, user_ids) -> tuple[object, dict]:
    """
    Keeps users out of training entirely: their rows leave every split (training, validation and test), so nothing of
    theirs is trained on, selected on or reported. The items table (hence the vocabulary) is unchanged. The counts are
    added to `data.report`.

    Args:
        data (`BehaviorData`): the loaded data.
        user_ids (iterable): raw ids of the users to exclude; all must be users of the data.

    Returns:
        `(BehaviorData, counts)`: the data without the users, and `{"users": n, "rows_removed": {split: n}}`.
    """
    excluded = {str(user) for user in user_ids}
    known = set()
    for dataset in data.sequences.values():
        known.update(str(user) for user in dataset["user_id"])
    unknown = sorted(excluded - known)
    if unknown:
        raise ValueError(
            f"exclude_users: {len(unknown)} ids are not users of the data (e.g. {unknown[:5]}); check the list."
        )
    data, counts = select_users(data, lambda user: user not in excluded, "users (--exclude_users_file)")
    return data, {"users": len(excluded), "rows_removed": counts["rows_removed"]}


def select_users(data, keep, what: str) -> tuple[object, dict]:
    """
    Keeps the rows of the users `keep(raw_id_text)` accepts, in every split; the others leave entirely. The items
    table is unchanged. A note with the counts is added to `data.report` ("excluded N {what}: rows removed ...").

    Returns:
        `(BehaviorData, {"users": n, "rows_removed": {split: n}})`: `users` counts the distinct users removed.
    """
    removed_events: dict[str, int] = {}  # per removed user: their events (the longest row: history and target)
    kept_users = set()
    counts = {"rows_removed": {}}
    sequences = {}
    report = data.report
    for split, dataset in data.sequences.items():
        users = [str(user) for user in dataset["user_id"]]
        flags = [bool(keep(user)) for user in users]
        lengths = [len(ids) + ("target_item_id" in dataset.column_names) for ids in dataset["item_ids"]]
        for user, flag, length in zip(users, flags, lengths):
            if flag:
                kept_users.add(user)
            else:
                removed_events[user] = max(removed_events.get(user, 0), length)
        sequences[split] = dataset.select(np.flatnonzero(flags)) if not all(flags) else dataset
        counts["rows_removed"][split] = len(dataset) - len(sequences[split])
        if split in report.splits:  # the split's counts as training will see them
            report.splits[split]["rows"] = len(sequences[split])
            report.splits[split]["events"] = sum(length for length, flag in zip(lengths, flags) if flag)
    counts["users"] = len(removed_events)
    if report.steps:
        last = report.steps[-1]
        removed = sum(removed_events.values())
        report.steps.append(
            type(last)(
                name="select users",
                enabled=True,
                events_before=last.events_after,
                events_after=last.events_after - removed,
                users=len(kept_users),
                items=last.items,
                detail=f"{counts['users']:,} {what} left out",
            )
        )
    report.notes.append(
        f"excluded {counts['users']:,} {what}: rows removed "
        + ", ".join(f"{split} {n:,}" for split, n in counts["rows_removed"].items())
    )
    return replace(data, sequences=type(data.sequences)(sequences)), counts


def exclude_items(data, item_ids) -> tuple[object, dict]:
    """
    Keeps items out of training entirely, as if they did not exist yet (cold start): they leave the items table, hence
    the vocabulary, and their events leave every history (training sequences, and the histories of validation and
    test rows, which the model reads during training). Targets are left as they are: a validation or test row whose
    target is excluded has an unknown target, which `next_item_dataloaders` removes from evaluation and counts. The counts
    are added to `data.report`.

    Args:
        data (`BehaviorData`): the loaded data.
        item_ids (iterable): raw ids of the items to exclude; all must be items of the data.

    Returns:
        `(BehaviorData, counts)`: the data without the items, and `{"items": n, "events_removed": {split: n},
        "targets_excluded": {split: n}, "empty_training_sequences": n}`.
    """
    excluded = {str(i) for i in item_ids}
    unknown = sorted(excluded - set(data.item_ids))
    if unknown:
        raise ValueError(
            f"exclude_items: {len(unknown)} ids are not items of the data (e.g. {unknown[:5]}); check the list."
        )
    items = data.items.filter(lambda ids: [i not in excluded for i in ids], input_columns="item_id", batched=True)
    counts = {"items": len(excluded), "events_removed": {}, "targets_excluded": {}, "empty_training_sequences": 0}
    sequences = {}
    for split, dataset in data.sequences.items():
        schema = dataset.data.schema
        per_event = [
            c
            for c in dataset.column_names
            if pa.types.is_list(schema.field(c).type) or pa.types.is_large_list(schema.field(c).type)
        ]

        def drop(batch, per_event=per_event):
            keep = [[str(i) not in excluded for i in ids] for ids in batch["item_ids"]]
            for column in per_event:
                if any(len(v) != len(k) for v, k in zip(batch[column], keep)):
                    raise ValueError(f"exclude_items: column {column!r} is not aligned with item_ids.")
                batch[column] = [[v for v, k in zip(values, ks) if k] for values, ks in zip(batch[column], keep)]
            return batch

        before = sum(len(ids) for ids in dataset["item_ids"])
        sequences[split] = dataset.map(drop, batched=True, desc=f"excluding items ({split})")
        counts["events_removed"][split] = before - sum(len(ids) for ids in sequences[split]["item_ids"])
        if "target_item_id" in dataset.column_names:
            counts["targets_excluded"][split] = sum(str(t) in excluded for t in dataset["target_item_id"])
    if "train" in sequences:
        counts["empty_training_sequences"] = sum(len(ids) == 0 for ids in sequences["train"]["item_ids"])
    data.report.notes.append(
        f"excluded {counts['items']:,} items (--exclude_items_file): events removed from the histories "
        + ", ".join(f"{split} {n:,}" for split, n in counts["events_removed"].items())
        + "; targets that are excluded items (removed from evaluation) "
        + (", ".join(f"{split} {n:,}" for split, n in counts["targets_excluded"].items()) or "none")
        + f"; users left without a training event {counts['empty_training_sequences']:,}"
    )
    return replace(data, sequences=type(data.sequences)(sequences), items=items), counts


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
    counts = windows_per_sequence(lengths, window)
    rows = np.repeat(np.arange(len(lengths)), counts)
    newest_first = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0 = newest window
    stops = lengths[rows] - newest_first * step
    starts = np.maximum(0, stops - window)
    return rows, starts, stops


def windows_per_sequence(lengths: np.ndarray, window: int) -> np.ndarray:
    """How many `window_starts` windows each sequence gives: a sequence of n events has n - 1 transitions, so
    ceil((n - 1) / (window - 1)) windows, at least one."""
    return np.maximum(1, -(-(np.asarray(lengths, dtype=np.int64) - 1) // (window - 1)))


def count_train_windows(train_split, max_length: int) -> int:
    """The training windows (`train_windows`) of a raw or encoded train split, from its sequence lengths alone
    (Arrow, no rows built): what `resolve_train_batch` reads before the task builds its loader."""
    column = "input_ids" if "input_ids" in train_split.column_names else "item_ids"
    lengths = pc.fill_null(pc.list_value_length(dataset_table(train_split).column(column)), 0).to_numpy()
    return int(windows_per_sequence(lengths, max_length + 1).sum())


def resolve_train_batch_for_log(train_split, max_length: int, train_args):
    """`resolve_train_batch` for a train split: its windows are counted only where a field was left out.
    Returns `(train_args, why)` as `resolve_train_batch` does."""
    if train_args.per_device_train_batch_size is not None and train_args.learning_rate is not None:
        return train_args, None
    return resolve_train_batch(train_args, count_train_windows(train_split, max_length))


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


def user_rows(train_dataset, max_length: int, columns: Sequence[str]) -> tuple[list[dict], dict]:
    """
    One training row per user, for user-level differential privacy: the newest `max_length + 1` events of each
    training sequence (what the model reads at inference). A user with fewer than two training events has no
    next-item target and gets no row.

    Returns:
        `(rows, counts)`: the rows (dicts of `columns`) and `{"users_without_target": n, "events_not_read": m}`
        (events older than a user's newest window, which a one-row-per-user run never trains on).
    """
    window = max_length + 1
    source = {c: train_dataset[c] for c in columns}
    lengths = np.asarray([len(x) for x in source["input_ids"]], dtype=np.int64)
    keep = np.flatnonzero(lengths >= 2)
    rows = [{c: source[c][row][-window:] for c in columns} for row in keep.tolist()]
    counts = {
        "users_without_target": int(len(lengths) - len(keep)),
        "events_not_read": int(np.maximum(lengths[keep] - window, 0).sum()),
    }
    return rows, counts


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


def next_item_dataloaders(data, tokenizer, data_args: DataArguments, train_args):
    """
    Encodes the sequences with the vocabulary and builds the three dataloaders and the popularity baseline.

    Training rows are windows of `max_length + 1` events over each user's training sequence (inputs plus the shifted
    labels), so long histories are trained on whole and one epoch touches each training event once; evaluation rows
    are one target per user with the history before it.

    With `--init_from` the vocabulary is the base model's: items it lacks become [UNK] (never a training label), and
    evaluation rows whose target is [UNK] are removed and counted, since no model sharing the vocabulary can rank
    them. With `--targets_from` only targets at or after that time are trained on (earlier events stay as inputs;
    windows holding no such target are left out) and evaluated; the removed counts are in the returned `stats`.
    """
    encoded, num_unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    train = encoded["train"]
    columns = [c for c in ("input_ids", "timestamps") if c in train.column_names]
    targets_from = None if train_args.targets_from is None else targets_from_seconds(train_args.targets_from)
    if targets_from is not None and "timestamps" not in columns:
        raise ValueError(f"--targets_from needs event times, but {data_args.dataset} has no timestamp column.")
    private = getattr(train_args, "private", False)
    user_counts = None
    # The loop has resolved the batch already (it needs the learning rate first); benchmarks and tests may not have.
    train_args, _ = resolve_train_batch_for_log(train, data_args.max_length, train_args)
    if private:  # user-level DP: one row per user (the privacy unit), not one per window
        windows, user_counts = user_rows(train, data_args.max_length, columns)
    else:
        windows = train_windows(train, data_args.max_length, columns)
    num_windows = len(windows)
    if targets_from is not None:  # a window whose newest event is older than targets_from has nothing to train on
        windows = [w for w in windows if len(w["timestamps"]) > 1 and w["timestamps"][-1] >= targets_from]
        if not windows:
            raise ValueError(
                f"--targets_from {train_args.targets_from}: no training event is at or after it; pass an earlier time."
            )
    collator = DataCollatorForInterest(
        pad_token_id=tokenizer.pad_token_id,
        max_length=data_args.max_length,
        mode="train",
        ignore_label_ids=(tokenizer.unk_token_id,),  # predicting "unknown item" teaches nothing
        return_time_gaps=False,  # the model buckets the gaps itself from the timestamps
    )
    train_loader = DataLoader(
        windows,
        batch_size=train_args.per_device_train_batch_size,
        sampler=LengthGroupedSampler(
            [len(w["input_ids"]) for w in windows], train_args.per_device_train_batch_size, seed=train_args.seed
        ),
        collate_fn=collator if targets_from is None else TargetsFromCollator(collator, targets_from),
    )
    loaders = {"train": train_loader}
    removed, validation_sample = {}, None
    for split in ("validation", "test"):
        kept, removed[split] = filter_eval_targets(encoded[split], tokenizer.unk_token_id, targets_from)
        if len(kept) == 0:
            raise ValueError(
                f"No {split} target left to evaluate ({removed[split]}): with --targets_from pass an earlier time; "
                "with --init_from the data's items must be in the vocabulary of that folder."
            )
        sample = getattr(train_args, "validation_users", None)
        if split == "validation" and sample is not None and sample < len(kept):
            validation_sample = {"users": sample, "of": len(kept)}
            kept = kept.select(validation_user_sample(len(kept), sample, train_args.seed))
        loaders[split] = eval_dataloader(
            kept, tokenizer.pad_token_id, data_args.max_length, train_args.per_device_eval_batch_size
        )
    popularity = popularity_baseline(train, len(tokenizer), tokenizer.num_special_tokens)
    stats = {
        "train_windows": len(windows),
        "train_windows_before_targets_from": num_windows - len(windows),
        "unknown_items": num_unknown,
        "eval_rows_removed": removed,
        "has_timestamps": "timestamps" in columns,
        "one_row_per_user": user_counts,
        "validation_sample": validation_sample,
    }
    return loaders, popularity, stats


def validation_user_sample(num_users: int, size: int, seed: int) -> np.ndarray:
    """`size` of `num_users` evaluation rows, a simple random sample in row order, drawn from its own generator
    seeded with `seed` (so the run's other random draws are the ones it makes without a sample)."""
    return np.sort(np.random.default_rng(seed).choice(num_users, size=size, replace=False))
