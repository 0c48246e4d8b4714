"""Most-popular baseline: the sanity floor printed beside every ranking result.

`PopularityRecommender` recommends the items that occur most often in the training interactions, the same list for
every user. It produces a `(B, N)` score matrix like a model does, so it is evaluated by the very same
`ranks_from_scores` code, on the same split, with the same `exclude_seen` setting (see `ARCHITECTURE.md`, "Evaluation
protocol").

Ties. `ranks_from_scores` counts the items scoring *strictly* higher than the target, so tied items do not count
against it. Raw popularity counts tie a lot (every item seen once, every item never seen), and scoring them as they are
would place a cold target at the top of a large tie group: the baseline would be flattered, and a sanity floor must not
be. So by default ties are broken by a fixed pseudo-random order of the items (`tie_break="random"`, `seed=0`): the
scores are then all distinct, reproducible, and unrelated to how item ids were assigned. Breaking ties by item index
(`tie_break="index"`, lower index first) is also available, but is not the default because a vocabulary built by
frequency over the whole log (test events included) would make the index order leak test popularity. `tie_break="none"`
keeps the raw counts (ties favour the target) for comparison with code bases that do that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = ["PopularityRecommender"]

_TIE_BREAKS = ("random", "index", "none")


class PopularityRecommender:
    """Score every item by its training popularity, identically for every user.

    Args:
        item_counts (`torch.Tensor`, `np.ndarray` or sequence of numbers, shape `(N,)`):
            Training interaction count of every item index (specials included, usually 0).
        tie_break (`str`, defaults to `"random"`):
            `"random"`: equal counts are ordered by a fixed pseudo-random permutation drawn with `seed`;
            `"index"`: equal counts are ordered by item index, lower first; `"none"`: scores are the raw counts and
            ties are left to the ranking code (where they favour the target). See the module docstring for why.
        seed (`int`, defaults to 0):
            Seed of the `"random"` tie-break permutation.

    Attributes:
        item_counts (`torch.Tensor` of shape `(N,)`, float64): The counts.
        item_scores (`torch.Tensor` of shape `(N,)`): The score of every item, higher is more popular. With a
            tie-break these are `N - position` in the popularity order, so all distinct (float32 while that is exact).
    """

    def __init__(self, item_counts, *, tie_break: str = "random", seed: int = 0):
        if tie_break not in _TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {_TIE_BREAKS}, got {tie_break!r}.")
        if isinstance(item_counts, torch.Tensor):
            counts = item_counts.detach().cpu().to(torch.float64)
        else:
            counts = torch.as_tensor(np.asarray(item_counts, dtype=np.float64))
        if counts.dim() != 1 or counts.numel() == 0:
            raise ValueError(
                f"item_counts must be a non-empty 1-D array (one count per item), got shape {tuple(counts.shape)}."
            )
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
            raise ValueError("item_counts must be finite and non-negative.")
        self.item_counts = counts
        self.tie_break = tie_break
        self.seed = seed
        self.item_scores = self._scores_from_counts(counts, tie_break, seed)

    @staticmethod
    def _scores_from_counts(counts: torch.Tensor, tie_break: str, seed: int) -> torch.Tensor:
        num_items = counts.numel()
        # float32 represents every integer up to 2**24 exactly; beyond that keep float64 so scores stay distinct.
        dtype = torch.float32 if num_items <= 2**24 else torch.float64
        if tie_break == "none":
            return counts.to(dtype)
        if tie_break == "random":
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(num_items, generator=generator)  # secondary key: a fixed random order
        else:
            order = torch.arange(num_items)  # secondary key: item index
        # Stable sort by count (descending) of the items laid out in secondary-key order = lexicographic sort.
        order = order[torch.sort(counts[order], descending=True, stable=True).indices]  # (N,) most popular first
        scores = torch.empty(num_items, dtype=dtype)
        scores[order] = torch.arange(num_items, 0, -1, dtype=dtype)
        return scores

    @classmethod
    def from_sequences(
        cls,
        sequences: Iterable[Sequence[int]],
        num_items: int,
        *,
        ignore_index: Iterable[int] | None = None,
        tie_break: str = "random",
        seed: int = 0,
    ) -> PopularityRecommender:
        """Count item occurrences in training sequences of item indices.

        Args:
            sequences (iterable of sequences of `int`): Each user's training item indices (e.g. the `train` split's
                item column after tokenisation). Padding is allowed if the pad id is in `ignore_index`.
            num_items (`int`): Vocabulary size, i.e. the number of score columns of the model being compared.
            ignore_index (iterable of `int`, *optional*): Special ids (pad/unk/mask) that are not counted.
            tie_break (`str`, defaults to `"random"`): See the class docstring.
            seed (`int`, defaults to 0): See the class docstring.

        Returns:
            `PopularityRecommender`.

        Raises:
            ValueError: if an item index is negative or not below `num_items`.
        """
        if num_items <= 0:
            raise ValueError(f"num_items must be positive, got {num_items}.")
        chunks = [np.asarray(seq, dtype=np.int64).reshape(-1) for seq in sequences]
        items = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        if items.size and (items.min() < 0 or items.max() >= num_items):
            raise ValueError(
                f"sequences hold item indices outside [0, {num_items}) (min {items.min()}, max {items.max()}): "
                "pass the tokenised indices and the vocabulary size."
            )
        counts = np.bincount(items, minlength=num_items).astype(np.float64)
        if ignore_index is not None:
            counts[np.asarray(list(ignore_index), dtype=np.int64)] = 0.0
        return cls(counts, tie_break=tie_break, seed=seed)

    @property
    def num_items(self) -> int:
        """Number of items (score columns)."""
        return int(self.item_scores.numel())

    def full_sort_scores(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Scores over the full catalogue for `batch_size` users, to feed to `ranks_from_scores`.

        Args:
            batch_size (`int`): Number of users in the batch.
            device (`torch.device` or `str`, *optional*): Where to put the scores (defaults to CPU).
            dtype (`torch.dtype`, *optional*): Score dtype (defaults to `item_scores.dtype`).

        Returns:
            `torch.Tensor` of shape `(batch_size, N)`: the same row for every user. It is an expanded view that shares
            memory across rows; `.clone()` it before writing into it.
        """
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}.")
        scores = self.item_scores.to(device=device, dtype=dtype or self.item_scores.dtype)
        return scores.unsqueeze(0).expand(batch_size, -1)  # (B, N)
