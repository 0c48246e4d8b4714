"""Next-item training on sequence shards streamed with `datasets`, each process reading its own shards.

`--dataset` naming a folder written by `hub_scripts/spark_sequences.py` (it holds `sequences.json`) trains from
`hf_interest.data.sequence_shards`: no process holds the log. Every process makes one streaming pass over all
sequences for the vocabulary (every item, in the in-memory loader's order: descending training count, ties by id),
the popularity counts and the split counts; then each reads only its part (`split_dataset_by_node`) for training
and evaluation. Training windows are the in-memory path's (`window_starts`), in a shuffle buffer's order instead of
grouped by length; processes with fewer batches join the others' gradient all-reduce (torch's `Join`), and
the evaluation ranks of all processes are gathered at the end, so every user is evaluated exactly once.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader

from ..data import DataCollatorForInterest
from ..data.cleaning import CleaningStep, DataReport
from ..data.sequence_shards import leave_one_out_items, read_sequence_shards, stream_sequence_splits
from ..data.vocab import vocabulary_order
from ..metrics import PopularityRecommender
from ..tokenization_interest import ItemTokenizer
from .adapters import load_init_model
from .data import window_starts
from .evaluation import EvalCollator, evaluate_next_item
from .tasks import NextItemTask

SHUFFLE_BUFFER = 10_000  # training rows (users) shuffled at a time


class StreamingSequences:
    """
    A sequence-shard folder as a run's data: the report, the vocabulary order and training counts from one streaming
    pass, and this process's streaming splits.
    """

    def __init__(self, path, rank: int, world_size: int):
        _, manifest = read_sequence_shards(path)
        self.path, self.rank, self.world_size = str(path), rank, world_size
        splits = stream_sequence_splits(path, rank, world_size)
        self.splits = {name: splits[name] for name in ("train", "validation", "test")}
        counts: dict[str, int] = {}
        seen_items: set[str] = set()
        totals = dict.fromkeys(("users", "events", "train_rows", "train_events", "val_rows", "val_events"), 0)
        totals |= {"test_rows": 0, "test_events": 0}
        for table in _whole_stream(path):
            n, keep, values, train_values = leave_one_out_items(table.column("item_ids").combine_chunks())
            seen_items.update(pc.unique(values).to_pylist())
            for entry in pc.value_counts(train_values).to_pylist():
                counts[entry["values"]] = counts.get(entry["values"], 0) + entry["counts"]
            totals["users"] += len(n)
            totals["events"] += int(n.sum())
            totals["train_rows"] += int((keep > 0).sum())
            totals["train_events"] += int(keep.sum())
            totals["val_rows"] += int((n >= 3).sum())
            totals["val_events"] += int((n - 2)[n >= 3].sum())
            totals["test_rows"] += int((n >= 2).sum())
            totals["test_events"] += int((n - 1)[n >= 2].sum())
        ids = pa.array(sorted(seen_items), type=pa.string())
        item_counts = np.array([counts.get(i, 0) for i in ids.to_pylist()], dtype=np.int64)
        order = vocabulary_order(ids, item_counts)
        self.item_ids = ids.take(pa.array(order)).to_pylist()
        self.item_counts = item_counts[order]
        self.report = _report(manifest, self.path, totals, len(self.item_ids))


def _whole_stream(path):
    """Every sequence of the folder as Arrow tables (a streaming pass; nothing is held)."""
    from datasets import load_dataset

    files, _ = read_sequence_shards(path)
    stream = load_dataset("parquet", data_files=files, split="train", streaming=True).with_format("arrow")
    yield from stream.iter(batch_size=4096)


def _report(manifest: dict, path: str, totals: dict, items: int) -> DataReport:
    read, events = manifest["events_read"], manifest["events"]
    missing = manifest["dropped_missing_user_or_item"]
    if totals["events"] != events:
        raise ValueError(
            f"{path}: the shards hold {totals['events']:,} events but sequences.json says {events:,}; a shard is "
            "missing or extra. Write the folder again with hub_scripts/spark_sequences.py."
        )
    users = totals["users"]
    steps = [
        CleaningStep("read", True, read, read, users, items),
        CleaningStep(
            "drop missing user/item",
            True,
            read,
            read - missing,
            users,
            items,
            "rows whose user or item is null or empty (Spark)",
        ),  # fmt: skip
        CleaningStep(
            "deduplicate",
            True,
            read - missing,
            events,
            users,
            items,
            "identical user, item and time; first kept (Spark)",
        ),  # fmt: skip
    ]
    report = DataReport(source=f"{path} (sequence shards, streamed)", columns=manifest["columns"], steps=steps)
    report.split = "leave-one-out by time (last event = test target, previous = validation target)"
    report.splits = {
        "train": {"rows": totals["train_rows"], "events": totals["train_events"]},
        "validation": {"rows": totals["val_rows"], "events": totals["val_events"], "targets": totals["val_rows"]},
        "test": {"rows": totals["test_rows"], "events": totals["test_events"], "targets": totals["test_rows"]},
    }
    report.notes.append(
        "users and items of the read and cleaning steps are those left after cleaning (Spark counts the rows)"
    )
    return report


class _StreamingLoader:
    """Batches of one process's streaming rows, moved to the device; `set_epoch` reshuffles the training stream."""

    def __init__(self, dataset, batch_size: int, collate_fn, num_batches: int | None = None):
        self.dataset, self.num_batches = dataset, num_batches
        self.loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn)
        self.device = torch.device("cpu")

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_batches or 0

    def __iter__(self):
        for batch in self.loader:
            yield {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class StreamingNextItemTask(NextItemTask):
    """`NextItemTask` over streamed sequence shards: same model, loss, evaluation protocol and baseline."""

    streaming = True

    def __init__(self, data: StreamingSequences, data_args, model_args, train_args, log):
        if (
            train_args.targets_from is not None
            or data_args.exclude_items_file
            or data_args.exclude_users_file
            or train_args.validation_users is not None
        ):
            raise ValueError(
                "--targets_from, --exclude_items_file, --exclude_users_file and --validation_users do not apply to "
                "sequence shards yet."
            )
        if model_args.item_representation != "id":
            raise ValueError(
                f"--item_representation {model_args.item_representation} needs item texts, which sequence shards do "
                "not carry; train with --item_representation id."
            )
        self.metric = train_args.metric_for_best_model
        if train_args.init_from:
            self.model, self.tokenizer = load_init_model(train_args.init_from, data_args.max_length)
        else:
            self.tokenizer = ItemTokenizer.from_items(data.item_ids, model_max_length=data_args.max_length)
        vocab = self.tokenizer.get_vocab()
        self.has_time = True
        max_length = data_args.max_length
        unk = self.tokenizer.unk_token_id

        def windows(batch):
            lengths = np.array([len(x) for x in batch["item_ids"]])
            rows, starts, stops = window_starts(lengths, max_length + 1)
            ids = [[vocab.get(i, unk) for i in items] for items in batch["item_ids"]]
            return {
                "input_ids": [ids[r][a:b] for r, a, b in zip(rows.tolist(), starts.tolist(), stops.tolist())],
                "timestamps": [
                    batch["timestamps"][r][a:b] for r, a, b in zip(rows.tolist(), starts.tolist(), stops.tolist())
                ],
            }

        def encode_targets(row):
            return {
                "input_ids": [vocab.get(i, unk) for i in row["item_ids"]],
                "labels": vocab.get(row["target_item_id"], unk),
            }

        # This process's windows, counted in one pass over its training rows' lengths; the schedule spans the
        # largest count over processes.
        lengths = np.fromiter(
            (len(r["item_ids"]) for r in data.splits["train"].select_columns(["item_ids"])), np.int64
        )
        local_windows = len(window_starts(lengths, max_length + 1)[0])
        all_windows = gather_object([local_windows])
        batch_size = train_args.per_device_train_batch_size
        self.steps_per_epoch = math.ceil(
            max(math.ceil(w / batch_size) for w in all_windows) / train_args.gradient_accumulation_steps
        )
        train = data.splits["train"].shuffle(seed=train_args.seed, buffer_size=SHUFFLE_BUFFER)
        train = train.map(windows, batched=True, batch_size=256, remove_columns=["user_id", "item_ids", "timestamps"])
        collator = DataCollatorForInterest(
            pad_token_id=self.tokenizer.pad_token_id,
            max_length=max_length,
            mode="train",
            ignore_label_ids=(unk,),
            return_time_gaps=False,
        )
        self.train_loader = _StreamingLoader(train, batch_size, collator, math.ceil(local_windows / batch_size))
        eval_collator = EvalCollator(
            DataCollatorForInterest(
                pad_token_id=self.tokenizer.pad_token_id, max_length=max_length, mode="eval", return_time_gaps=False
            ),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self.eval_loaders = {}
        for split in ("validation", "test"):
            rows = data.splits[split].map(encode_targets).select_columns(["input_ids", "timestamps", "labels"])
            self.eval_loaders[split] = _StreamingLoader(rows, train_args.per_device_eval_batch_size, eval_collator)
        counts = np.zeros(len(self.tokenizer), dtype=np.float64)
        counts[[vocab[i] for i in data.item_ids]] = data.item_counts
        self.popularity = PopularityRecommender(counts)
        self.stats = {
            "train_windows": int(sum(all_windows)),
            "train_windows_before_targets_from": 0,
            "unknown_items": 0,
            "eval_rows_removed": {"validation": 0, "test": 0},
            "has_timestamps": True,
            "train_windows_per_process": all_windows,
        }
        log(
            f"Streaming {data.path} over {data.world_size} process(es): training windows per process {all_windows}, "
            f"{self.steps_per_epoch} optimizer steps per epoch"
        )
        self._finish_model(data, data_args, model_args, train_args, log)

    def prepare(self, accelerator) -> None:
        """Nothing to shard (each process streams its own rows); batches go to the accelerator's device."""
        self.accelerator = accelerator
        for loader in (self.train_loader, *self.eval_loaders.values()):
            loader.device = accelerator.device

    def evaluate(self, model, split: str) -> dict:
        """This process's users, ranked; the ranks of all processes gathered at the end (uneven counts are fine)."""
        return evaluate_next_item(
            self.accelerator.unwrap_model(model),
            self.eval_loaders[split],
            self.popularity,
            split,
            accelerator=None,
            use_timestamps=self.has_time,
            gather_ranks=lambda ranks: torch.cat(gather_object([ranks])),
        )

    def summary(self) -> dict:
        return {**super().summary(), "train_windows_per_process": self.stats["train_windows_per_process"]}
