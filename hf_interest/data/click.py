"""`DataCollatorForClick`: encoded sequences -> candidates and click labels for click-through-rate (CTR) prediction.

The click head (`InterestForClickPrediction`) scores candidate items from the interest state after each event, as in
DIN / DIEN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018; "Deep Interest
Evolution Network", AAAI 2019). This collator builds its inputs from the same encoded splits as
`DataCollatorForInterest` (which it wraps, so padding, truncation and time features are identical):

```python
collate = DataCollatorForClick(max_length=50, label_source="ratings", click_threshold=4.0)
loader = DataLoader(encoded["train"].with_format(columns=["input_ids", "timestamps", "ratings"]), collate_fn=collate)
```

Two sources of labels:

- `label_source="ratings"` (explicit feedback such as MovieLens): the next event is the only candidate, a click when
  its rating is `>= click_threshold`, a non-click below. The negatives are items the user picked and then rated low,
  harder than random items. Needs the `ratings` (train) / `target_rating` (eval) features, present when the log has
  a rating column.
- `label_source="sampled"` (implicit feedback, or a log without ratings): the next event is a click (slot 0) and
  `num_negatives` items drawn uniformly among the real items (indices `num_special_tokens .. num_items - 1`) are
  non-clicks. With `exclude_seen_negatives` a negative is never the positive nor an item of the user's window (the
  kept events, inputs and labels). Negatives are drawn exactly from the allowed items (`uniform_excluding`: no
  rejection loop, one binary search per draw); only when a window holds every real item is nothing left to draw, and
  those slots are ignored and counted in `num_unreplaced_negatives`. Negatives are drawn with replacement, so two
  negatives of one position may coincide. The positive itself is never a negative, even with
  `exclude_seen_negatives=False`.

Shapes. `mode="train"`: `candidate_ids` `(B, T, C)` and `click_labels` `(B, T, C)`, candidates scored from the state
after event `t` (aligned with the next-item `labels` of `DataCollatorForInterest`). `mode="eval"`: `(B, C)`, scored
from the state after the last event (the whole input is history, the target is the evaluation split's target).
`C = 1` for ratings, `1 + num_negatives` for sampled (positive first). `click_labels` are float32: 1.0 click, 0.0 no
click, -100.0 ignored (padding, labels in `ignore_label_ids`, missing ratings, unreplaceable negatives); the candidate
id of an ignored slot is `pad_token_id`. The next-item `labels` are not returned (the click head does not take them).

Nothing is dropped silently: the collator counts, over all its calls, the label events ignored for a missing (NaN)
rating (`num_missing_ratings`) and the negatives that could not be replaced (`num_unreplaced_negatives`). With
`DataLoader(num_workers > 0)` each worker holds its own copy, so these counters stay at 0 in the main process; count
with `click_label_counts` on the batches instead.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .collator import DataCollatorForInterest

if TYPE_CHECKING:
    import torch

IGNORE_LABEL = -100.0
"""Click label of ignored slots (padding, ignored or unrated events, unreplaceable negatives)."""

_MODES = ("train", "eval")
_LABEL_SOURCES = ("ratings", "sampled")


@dataclass
class DataCollatorForClick:
    """Pad and truncate behaviour sequences and attach click candidates and labels for click prediction.

    Args:
        pad_token_id: Index used for padding, and the candidate id of ignored slots (`ItemTokenizer` uses 0).
        max_length: Longest sequence returned (`T <= max_length`); older events are cut. `None`: no limit.
        mode: "train" (candidates at every position, `(B, T, C)`) or "eval" (candidates for the target of an
            evaluation split, scored at the last position, `(B, C)`).
        label_source: "ratings" (click = rating of the event `>= click_threshold`) or "sampled" (the event is a
            click, `num_negatives` random items are not).
        click_threshold: A rating `>= click_threshold` is a click (ratings mode). Must be finite.
        num_negatives: Negatives per positive (sampled mode).
        num_items: Vocabulary size, special tokens included (`len(tokenizer)`, `config.num_items`); needed for
            sampled mode.
        num_special_tokens: Indices below this ([PAD], [UNK], [MASK]) are never sampled as negatives.
        ignore_label_ids: Item indices never used as training targets (e.g. `[UNK]`); in train mode their slots are
            ignored. Evaluation targets are all kept, as in the ranking evaluation.
        seed: Seed of the negative sampling. Each call draws from a `torch.Generator` seeded from `(seed, call
            number)` (and, in a `DataLoader` worker, the worker's seed), so the same batches in the same order give
            the same negatives. `None`: torch's global random state.
        exclude_seen_negatives: Never sample an item of the user's window (inputs and labels kept in the batch) as a
            negative.
        return_time_gaps: Also return `time_gaps` (as `DataCollatorForInterest`).
        pad_to_multiple_of: Round `T` up to a multiple of this.

    Attributes:
        num_missing_ratings: Label events ignored because their rating is missing (NaN), over all calls.
        num_unreplaced_negatives: Sampled negatives left ignored because the user's window holds every real item,
            over all calls.
    """

    pad_token_id: int = 0
    max_length: int | None = None
    mode: str = "train"
    label_source: str = "ratings"
    click_threshold: float = 4.0
    num_negatives: int = 1
    num_items: int | None = None
    num_special_tokens: int = 3
    ignore_label_ids: tuple[int, ...] = ()
    seed: int | None = None
    exclude_seen_negatives: bool = True
    return_time_gaps: bool = True
    pad_to_multiple_of: int | None = None
    num_missing_ratings: int = field(default=0, init=False)
    num_unreplaced_negatives: int = field(default=0, init=False)
    _calls: int = field(default=0, init=False, repr=False)
    _base: DataCollatorForInterest | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.mode not in _MODES:
            raise ValueError(f"DataCollatorForClick.mode must be 'train' or 'eval', got {self.mode!r}.")
        if self.label_source not in _LABEL_SOURCES:
            raise ValueError(
                f"DataCollatorForClick.label_source must be 'ratings' or 'sampled', got {self.label_source!r}."
            )
        threshold = self.click_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
            raise ValueError(
                "DataCollatorForClick.click_threshold must be a finite number (a rating >= click_threshold is a "
                f"click), got {threshold!r}."
            )
        if isinstance(self.num_special_tokens, bool) or not isinstance(self.num_special_tokens, int):
            raise ValueError(
                f"DataCollatorForClick.num_special_tokens must be an int, got {self.num_special_tokens!r}."
            )
        if self.num_special_tokens < 0:
            raise ValueError(f"DataCollatorForClick.num_special_tokens must be >= 0, got {self.num_special_tokens}.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"DataCollatorForClick.seed must be a non-negative int or None, got {self.seed!r}.")
        if self.label_source == "sampled":
            self._check_sampling()
        self._base = DataCollatorForInterest(
            pad_token_id=self.pad_token_id,
            max_length=self.max_length,
            mode=self.mode,
            ignore_label_ids=tuple(self.ignore_label_ids),
            return_time_gaps=self.return_time_gaps,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_ratings=self.label_source == "ratings",
        )

    def _check_sampling(self) -> None:
        if self.num_items is None:
            raise ValueError(
                "DataCollatorForClick(label_source='sampled') needs num_items, the vocabulary size the negatives are "
                "drawn from: pass num_items=len(tokenizer) (config.num_items)."
            )
        if isinstance(self.num_items, bool) or not isinstance(self.num_items, (int, np.integer)):
            raise ValueError(f"DataCollatorForClick.num_items must be an int, got {self.num_items!r}.")
        self.num_items = int(self.num_items)
        if self.num_items <= self.num_special_tokens:
            raise ValueError(
                f"DataCollatorForClick.num_items={self.num_items} leaves no real item to sample negatives from "
                f"(indices below num_special_tokens={self.num_special_tokens} are special); pass len(tokenizer)."
            )
        if isinstance(self.num_negatives, bool) or not isinstance(self.num_negatives, int) or self.num_negatives < 1:
            raise ValueError(f"DataCollatorForClick.num_negatives must be a positive int, got {self.num_negatives!r}.")
        if not 0 <= self.pad_token_id < self.num_special_tokens:
            raise ValueError(
                f"DataCollatorForClick: pad_token_id={self.pad_token_id} must be a special index (below "
                f"num_special_tokens={self.num_special_tokens}), or sampled negatives could be the padding id."
            )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate a batch.

        Args:
            features: Rows of an encoded split: `input_ids`, optional `timestamps`; in ratings mode `ratings` (train)
                or `target_rating` (eval); in eval mode `labels` (the target index).

        Returns:
            `input_ids`, `attention_mask`, `timestamps` (and `time_gaps`) as `DataCollatorForInterest` returns them,
            plus `candidate_ids` (`int64`) and `click_labels` (`float32`), `(B, T, C)` in train mode and `(B, C)` in
            eval mode (see the module docstring).
        """
        import torch  # noqa: PLC0415 (keeps `import hf_interest.data` light for data-only work)

        self._calls += 1
        train = self.mode == "train"
        if self.label_source == "ratings":
            key = "ratings" if train else "target_rating"
            for k, feature in enumerate(features):
                if isinstance(feature, Mapping) and feature.get(key) is None:
                    raise ValueError(
                        f"DataCollatorForClick(label_source='ratings', mode={self.mode!r}) needs {key!r} in every "
                        f"feature; feature {k} has none: the log has no rating column. Use label_source='sampled' "
                        f"(with num_items=len(tokenizer)), or load a log with ratings "
                        f"(columns=ColumnMapping(rating=...)). Keys found: {sorted(feature)}."
                    )
        batch = self._base(features)
        labels = batch.pop("labels")  # (B, T) train, (B,) eval
        valid = labels != self._base.label_pad_token_id
        positives = torch.where(valid, labels, self.pad_token_id)
        if self.label_source == "ratings":
            ratings = batch.pop("label_ratings" if train else "target_ratings")  # same shape as labels
            missing = valid & torch.isnan(ratings)
            self.num_missing_ratings += int(missing.sum())
            rated = valid & ~missing
            clicks = torch.where(rated, (ratings >= float(self.click_threshold)).float(), IGNORE_LABEL)
            candidate_ids = torch.where(rated, positives, self.pad_token_id)[..., None]  # (B, T, 1) or (B, 1)
            click_labels = clicks[..., None]
        else:
            if train:  # the window the model sees: inputs, plus the last label (the others are inputs already)
                window = torch.cat([batch["input_ids"], positives], dim=1)  # (B, 2T)
            else:
                window = torch.cat([batch["input_ids"], positives[:, None]], dim=1)  # (B, T + 1)
            too_large = positives >= self.num_items
            if bool(too_large.any()):
                raise ValueError(
                    f"DataCollatorForClick: the batch holds item index {int(positives[too_large].max())} but "
                    f"num_items={self.num_items}; pass num_items=len(tokenizer) of the vocabulary that encoded the data."
                )
            negatives, unreplaced = self._sample_negatives(positives, valid, window)  # (..., K) each
            self.num_unreplaced_negatives += int(unreplaced.sum())
            keep = valid[..., None] & ~unreplaced
            negatives = torch.where(keep, negatives, self.pad_token_id)
            candidate_ids = torch.cat([positives[..., None], negatives], dim=-1)  # (..., 1 + K)
            click_labels = torch.cat(
                [
                    torch.where(valid, 1.0, IGNORE_LABEL)[..., None],
                    torch.where(keep, 0.0, IGNORE_LABEL),
                ],
                dim=-1,
            ).float()
        batch["candidate_ids"] = candidate_ids.long()
        batch["click_labels"] = click_labels.float()
        return batch

    def state_dict(self) -> dict[str, int]:
        """Where the negative sampling stands (calls so far), so that a resumed training run draws what an
        uninterrupted one would (`accelerator.register_for_checkpointing` saves it with every checkpoint)."""
        return {"calls": self._calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restores `state_dict`."""
        self._calls = int(state["calls"])

    def _generator(self) -> torch.Generator | None:
        import torch  # noqa: PLC0415

        if self.seed is None:
            return None
        # In a DataLoader worker the counter restarts with every epoch's fresh workers; the worker's own seed (drawn
        # from the main process's torch RNG for each epoch, plus the worker id) keeps the epochs apart and the order
        # reproducible under torch.manual_seed.
        info = torch.utils.data.get_worker_info()
        stream = 0 if info is None else int(info.seed) + 1
        state = np.random.SeedSequence([int(self.seed), stream, self._calls]).generate_state(1, dtype=np.uint64)
        return torch.Generator().manual_seed(int(state[0]))

    def _sample_negatives(
        self, positives: torch.Tensor, valid: torch.Tensor, window: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw `num_negatives` per position, uniformly among the real items that are allowed there.

        Args:
            positives: `(B, T)` or `(B,)` positive item of each position (pad where not `valid`).
            valid: Same shape, where a positive exists.
            window: `(B, L)` item indices of each row, the positives included (padding is never a real item).

        Returns:
            `(negatives, unreplaced)`, both `positives.shape + (num_negatives,)`: the drawn indices, and where a
            position has a positive but no allowed item is left.
        """
        k = self.num_negatives
        if self.exclude_seen_negatives:  # one excluded set per row, shared by its T * K draws
            excluded, draws = window, positives[0].numel() * k
        else:  # one per position: its positive
            excluded, draws = positives.reshape(-1, 1), k
        values = uniform_excluding(
            excluded, draws, self.num_special_tokens, int(self.num_items), generator=self._generator()
        )  # (G, draws)
        negatives = values.reshape(*positives.shape, k)
        return negatives, (negatives < 0) & valid[..., None]


def uniform_excluding(
    excluded: torch.Tensor, num_draws: int, low: int, high: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw integers uniformly from `[low, high)` minus a set per row, exactly (no rejection), vectorised.

    The `r`-th allowed value (0-based) of a row is `low + r + #{excluded s_j : s_j - low - j <= r}`, with `s_j` the
    row's distinct excluded values in `[low, high)`, sorted (`j` 0-based): a binary search per draw.

    Args:
        excluded: `(G, L)` values to leave out in each of `G` rows; values outside `[low, high)` and repeats are
            fine.
        num_draws: Draws per row (with replacement).
        low: Smallest value drawn.
        high: One past the largest value drawn.
        generator: Random source (`None`: torch's global one).

    Returns:
        `(G, num_draws)` `int64`: the draws, -1 in rows where every value of `[low, high)` is excluded.
    """
    import torch  # noqa: PLC0415

    excluded = excluded.long()
    inside = (excluded >= low) & (excluded < high)
    values = torch.where(inside, excluded, high).sort(dim=1).values  # (G, L), real values first, `high` after
    repeat = torch.zeros_like(inside)
    repeat[:, 1:] = values[:, 1:] == values[:, :-1]
    values = torch.where(repeat, high, values).sort(dim=1).values  # distinct values first
    real = values < high
    free = (high - low) - real.sum(dim=1)  # (G,) allowed values per row
    position = torch.arange(values.shape[1], dtype=torch.int64)
    big = torch.iinfo(torch.int64).max
    before = torch.where(real, values - low - position, big)  # (G, L) non-decreasing: allowed values below s_j
    # 2**62 is so much larger than any catalogue that the modulo bias is nil.
    r = torch.randint(0, 2**62, (len(values), num_draws), generator=generator) % free.clamp(min=1)[:, None]
    drawn = low + r + torch.searchsorted(before, r, right=True)
    return torch.where(free[:, None] > 0, drawn, -1)


def click_label_counts(batch: Mapping[str, Any] | torch.Tensor) -> dict[str, int]:
    """Count the clicks, non-clicks and ignored slots of a click batch, for reporting.

    Args:
        batch: A batch of `DataCollatorForClick` (with `click_labels`), or the `click_labels` tensor itself.

    Returns:
        `{"positives": ..., "negatives": ..., "ignored": ...}`: slots labelled 1.0, 0.0 and -100.0.

    Raises:
        ValueError: No `click_labels`, or labels other than 1, 0 and -100.
    """
    import torch  # noqa: PLC0415

    if isinstance(batch, Mapping):
        if "click_labels" not in batch:
            raise ValueError(
                f"The batch has no 'click_labels' (keys: {sorted(batch)}); collate it with DataCollatorForClick."
            )
        labels = batch["click_labels"]
    else:
        labels = batch
    labels = torch.as_tensor(labels)
    counts = {
        "positives": int((labels == 1).sum()),
        "negatives": int((labels == 0).sum()),
        "ignored": int((labels == IGNORE_LABEL).sum()),
    }
    other = labels.numel() - sum(counts.values())
    if other:
        raise ValueError(f"click_labels must be 1.0, 0.0 or -100.0; {other} slots hold other values (NaN included).")
    return counts
