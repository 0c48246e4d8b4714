"""`DataCollatorForInterest`: encoded sequences -> padded batches of tensors for interest models.

Like the collators of `transformers` (`DataCollatorForLanguageModeling`, ...), it is a dataclass called on a list
of features (rows of an encoded split, see `encode_sequences`) and returns a dict of `torch` tensors:

- `input_ids` `(B, T)`: item indices, **left**-padded with `pad_token_id` so the newest event is always at the last
  position; sequences longer than `max_length` keep their newest events;
- `attention_mask` `(B, T)`: 1 on real events, 0 on padding;
- `timestamps` `(B, T)`: unix seconds of each input event, 0 on padding (all 0 when the features have no times);
- `time_gaps` `(B, T)` (when `return_time_gaps`): seconds since the previous event of the same user, 0 on the
  first event and on padding. After truncation the first kept event still gets its true gap, computed before
  truncating;
- `labels`: in `mode="train"`, `(B, T)`, the next item at each position: a training sequence `s` gives inputs
  `s[:-1]` and labels `s[1:]` (the SASRec objective), `label_pad_token_id` (-100) at padding; in `mode="eval"`,
  `(B,)`, the target index of each row (`labels` of an evaluation split), with `input_ids` the whole history;
- with `return_ratings`, the ratings of the events the labels point to, as `float32`: in train mode `label_ratings`
  `(B, T)`, the rating of the label event at each position (`ratings[1:]` of the kept window, truncated exactly like
  `input_ids`), NaN at padding; in eval mode `target_ratings` `(B,)`, from the feature `target_rating`. A rating
  missing in the log is NaN too. These feed the click labels of `DataCollatorForClick`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class DataCollatorForInterest:
    """Pad, truncate and label behaviour sequences for next-item training and evaluation.

    Args:
        pad_token_id: Index used for padding (`ItemTokenizer` uses 0).
        max_length: Longest sequence returned (`T <= max_length`); older events are cut. `None`: no limit.
        mode: "train" (inputs `s[:-1]`, labels `s[1:]`) or "eval" (inputs = history, labels = target index).
        label_pad_token_id: Label at padded positions (ignored by `torch.nn.CrossEntropyLoss`).
        ignore_label_ids: Item indices never used as training labels (e.g. `[UNK]`: predicting "unknown" teaches
            nothing); they become `label_pad_token_id` in train mode.
        return_time_gaps: Also return `time_gaps`.
        pad_to_multiple_of: Round `T` up to a multiple of this (tensor cores like multiples of 8).
        input_column: Feature holding the item indices.
        return_ratings: Also return `label_ratings` (train) or `target_ratings` (eval) from the features' `ratings`
            / `target_rating` (present in the splits of a log with a rating column). Positions whose label is
            ignored (`ignore_label_ids`) keep their rating: mask with `labels`.
    """

    pad_token_id: int = 0
    max_length: int | None = None
    mode: str = "train"
    label_pad_token_id: int = -100
    ignore_label_ids: tuple[int, ...] = ()
    return_time_gaps: bool = True
    pad_to_multiple_of: int | None = None
    input_column: str = "input_ids"
    return_ratings: bool = False

    def __post_init__(self):
        if self.mode not in ("train", "eval"):
            raise ValueError(f"DataCollatorForInterest.mode must be 'train' or 'eval', got {self.mode!r}.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"DataCollatorForInterest.max_length must be positive or None, got {self.max_length!r}.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(
                f"DataCollatorForInterest.pad_to_multiple_of must be positive or None, got {self.pad_to_multiple_of!r}."
            )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate a batch.

        Args:
            features: Rows with `input_ids` (list of int), optional `timestamps` (list of int, same length) and, in
                eval mode, `labels` (int). With `return_ratings`: `ratings` (list of float, same length as
                `input_ids`) in train mode, `target_rating` (float) in eval mode. Other keys are ignored.

        Returns:
            `input_ids`, `attention_mask`, `timestamps`, `labels` and optionally `time_gaps`, as `torch.int64`
            tensors, and with `return_ratings` `label_ratings` or `target_ratings` as `torch.float32` (see the
            module docstring for shapes).
        """
        import torch  # noqa: PLC0415 (keeps `import hf_interest.data` light for data-only work)

        if not features:
            raise ValueError("DataCollatorForInterest got an empty batch.")
        column = self.input_column
        for k, feature in enumerate(features):
            if column not in feature:
                raise ValueError(
                    f"Feature {k} has no {column!r}; encode the sequences first (encode_sequences / BehaviorData.encode)."
                    f" Keys found: {sorted(feature)}."
                )
        train = self.mode == "train"
        if self.return_ratings:
            key = "ratings" if train else "target_rating"
            for k, feature in enumerate(features):
                if feature.get(key) is None:
                    raise ValueError(
                        f"return_ratings=True needs {key!r} in every feature (mode={self.mode!r}); feature {k} has "
                        f"none. Splits carry ratings only when the log has a rating column (map it with "
                        f"columns=ColumnMapping(rating=...)); otherwise leave return_ratings off. "
                        f"Keys found: {sorted(feature)}."
                    )
        label_rated = self.return_ratings and train
        has_time = all(feature.get("timestamps") is not None for feature in features)
        # A training row of n events yields n - 1 (input, label) pairs; keep max_length + 1 events for max_length.
        keep = None if self.max_length is None else self.max_length + (1 if train else 0)
        ids, times, gaps, row_ratings = [], [], [], []
        for k, feature in enumerate(features):  # a loop over the rows of one batch, each handled with numpy
            seq = np.asarray(feature[column], dtype=np.int64).reshape(-1)
            # None (an Arrow null) becomes NaN in a float array: a missing rating stays visible as NaN.
            rating = np.asarray(feature["ratings"], dtype=np.float32).reshape(-1) if label_rated else None
            if label_rated and len(rating) != len(seq):
                raise ValueError(
                    f"Feature {k} has {len(seq)} {column} but {len(rating)} ratings; they must be aligned "
                    "(one rating per event)."
                )
            if has_time:
                ts = np.asarray(feature["timestamps"], dtype=np.int64).reshape(-1)
                if len(ts) != len(seq):
                    raise ValueError(
                        f"A feature has {len(seq)} {column} but {len(ts)} timestamps; they must be aligned."
                    )
                gap = np.diff(ts, prepend=ts[:1]) if len(ts) else ts
            else:
                ts = gap = np.zeros(len(seq), dtype=np.int64)
            if keep is not None and len(seq) > keep:
                seq, ts, gap = seq[-keep:], ts[-keep:], gap[-keep:]
                rating = rating[-keep:] if label_rated else None
            ids.append(seq)
            times.append(ts)
            gaps.append(gap)
            row_ratings.append(rating)

        if train:
            lengths = [max(len(s) - 1, 0) for s in ids]
        else:
            lengths = [len(s) for s in ids]
        width = max(lengths) if lengths else 0
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        width = max(width, 1)
        batch = len(features)
        input_ids = np.full((batch, width), self.pad_token_id, dtype=np.int64)
        attention = np.zeros((batch, width), dtype=np.int64)
        timestamps = np.zeros((batch, width), dtype=np.int64)
        time_gaps = np.zeros((batch, width), dtype=np.int64)
        labels = np.full((batch, width), self.label_pad_token_id, dtype=np.int64) if train else None
        label_ratings = np.full((batch, width), np.nan, dtype=np.float32) if label_rated else None
        for row, (seq, ts, gap, rating, n) in enumerate(zip(ids, times, gaps, row_ratings, lengths)):
            if n == 0:
                continue
            start = width - n
            if train:
                input_ids[row, start:] = seq[:-1]
                labels[row, start:] = seq[1:]
                timestamps[row, start:] = ts[:-1]
                time_gaps[row, start:] = gap[:-1]
                if label_rated:
                    label_ratings[row, start:] = rating[1:]  # the rating of the label event, like labels = seq[1:]
            else:
                input_ids[row, start:] = seq
                timestamps[row, start:] = ts
                time_gaps[row, start:] = gap
            attention[row, start:] = 1
        if train and self.ignore_label_ids:
            labels[np.isin(labels, np.asarray(self.ignore_label_ids))] = self.label_pad_token_id

        out = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "timestamps": torch.from_numpy(timestamps),
        }
        if self.return_time_gaps:
            out["time_gaps"] = torch.from_numpy(time_gaps)
        if train:
            out["labels"] = torch.from_numpy(labels)
            if label_rated:
                out["label_ratings"] = torch.from_numpy(label_ratings)
        else:
            missing = [k for k, f in enumerate(features) if f.get("labels") is None]
            if missing:
                raise ValueError(
                    f"mode='eval' needs a 'labels' (target index) in every feature; feature {missing[0]} has none. "
                    f"Encode an evaluation split (it has target_item_id), or use mode='train'."
                )
            out["labels"] = torch.tensor([int(np.asarray(f["labels"]).reshape(-1)[0]) for f in features])
            if self.return_ratings:
                out["target_ratings"] = torch.from_numpy(
                    np.asarray(
                        [np.asarray(f["target_rating"], dtype=np.float32).reshape(-1)[0] for f in features],
                        dtype=np.float32,
                    )
                )
        return out
