"""Baselines that need no training, scored by the same ranking code as the model (`evaluate_next_item(baselines=)`).

- `HistoryCategoryRecommender`: the category mix of the user's own history (counts, add-one smoothed) times each
  item's share of its category's training events. Ten lines of arithmetic that use only what the model sees; on a
  log whose next item follows the user's taste in categories it is hard to beat.
- `TransitionRecommender`: a first-order item-to-item model, the counts of consecutive pairs `(a, b)` in the training
  sequences; the next item after a history ending in `a` is scored by `count(a, b)`. The standard sanity check a
  sequence model must beat (it is the Markov-chain half of FPMC: Rendle et al., 2010, "Factorizing personalized
  Markov chains for next-basket recommendation").

Both are called like a scorer, `baseline(input_ids, attention_mask) -> (B, N)` scores over the vocabulary, on the
same left-padded batches the model reads, and break exact ties by the popularity baseline's order
(`PopularityRecommender`), so that no tie favours the target. Their scores are float64, so that the tie-break survives
(float32 would merge it into the scores of large counts). `synthetic_oracle_scores` gives the scores of the known optimum of the synthetic
world (`hf_interest.data.synthetic`) in the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import sparse

from .popularity import PopularityRecommender


def _tie_break(popularity: PopularityRecommender) -> torch.Tensor:
    """`(N,)` float64 values in [0, 1): the popularity order (all distinct, as `PopularityRecommender`'s scores)."""
    scores = popularity.item_scores.double()
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low + 1.0) if high > low else torch.zeros_like(scores)


class HistoryCategoryRecommender:
    """
    The category mix of the history times each item's share of its category's training events.

    `score(i) = sum_c mix(c) W[i, c] count(i) / sum_j count(j) W[j, c]` with `mix(c) = (n_c + 1) / (n + C)`: `n_c`
    the history's events in category c (an item with several categories spreads its event), `W` the item -> category
    weights (rows summing to 1, or 0 for items without one), `count` the items' training events. Items of equal score
    are ordered by popularity: a relative bump of at most 1e-9 (far below any real difference between two scores),
    and for items scored 0 a bump below every positive score.

    Args:
        item_category_weights: `(N, C)` item -> category weights over the vocabulary (special tokens: zero rows), e.g.
            from `hf_interest.heads.category_weight_matrix`.
        popularity: the popularity baseline fitted on the same training events (its counts and tie-break order).
        smoothing: added to every category's count (1: add-one).
    """

    def __init__(self, item_category_weights, popularity: PopularityRecommender, smoothing: float = 1.0):
        weights = torch.as_tensor(np.asarray(item_category_weights), dtype=torch.float64)
        counts = popularity.item_counts.to(torch.float64)
        if weights.dim() != 2 or weights.shape[0] != counts.numel():
            raise ValueError(
                f"item_category_weights must be (num_items={counts.numel()}, C), got {tuple(weights.shape)}."
            )
        category_events = (counts[:, None] * weights).sum(dim=0)  # (C,)
        share = counts[:, None] * weights / category_events.clamp(min=1e-12)[None, :]  # (N, C)
        self.weights = weights
        self.share = share
        self.smoothing = float(smoothing)
        self.tie_break = _tie_break(popularity)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = self.weights.to(input_ids.device)
        per_event = weights[input_ids] * attention_mask[..., None].to(weights.dtype)  # (B, T, C)
        counts = per_event.sum(dim=1)  # (B, C)
        mix = (counts + self.smoothing) / (counts.sum(dim=1, keepdim=True) + self.smoothing * weights.shape[1])
        scores = mix @ self.share.to(input_ids.device).T  # (B, N) float64
        tie_break = self.tie_break.to(input_ids.device)
        return scores * (1.0 + 1e-9 * tie_break) + 1e-200 * tie_break


class TransitionRecommender:
    """
    First-order transitions: the items that followed the history's newest item in the training sequences, by count,
    then every other item in popularity order.

    Args:
        pair_counts: `(N, N)` sparse counts of consecutive pairs `(a, b)`.
        popularity: the popularity baseline of the same training events (the order after the counted items).
    """

    def __init__(self, pair_counts: sparse.csr_matrix, popularity: PopularityRecommender):
        self.pair_counts = sparse.csr_matrix(pair_counts, dtype=np.float64)
        self.tie_break = _tie_break(popularity)

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[Sequence[int]],
        num_items: int,
        popularity: PopularityRecommender,
        num_special: int = 3,
    ) -> TransitionRecommender:
        """Counts every consecutive pair of item indices in the training sequences (special tokens skipped)."""
        firsts, seconds = [], []
        for sequence in sequences:
            items = np.asarray(sequence, dtype=np.int64)
            items = items[items >= num_special]
            firsts.append(items[:-1])
            seconds.append(items[1:])
        a = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
        b = np.concatenate(seconds) if seconds else np.zeros(0, dtype=np.int64)
        counts = sparse.csr_matrix((np.ones(len(a)), (a, b)), shape=(num_items, num_items))
        counts.sum_duplicates()
        return cls(counts, popularity)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask.bool() * positions).amax(dim=1)  # the newest real event, whichever side is padded
        newest = input_ids.gather(1, last[:, None])[:, 0].cpu().numpy()
        counts = torch.from_numpy(self.pair_counts[newest].toarray())  # (B, N)
        empty = ~attention_mask.bool().any(dim=1).cpu()
        counts[empty] = 0.0  # an empty history: popularity alone
        return (counts + self.tie_break[None, :]).to(input_ids.device)


def synthetic_oracle_scores(synthetic, dataset, vocabulary: dict, start: int, stop: int) -> torch.Tensor:
    """
    The known optimum's scores for rows `start:stop` of an evaluation split of a synthetic world: the exact next-item
    probabilities (`SyntheticInterestData.next_item_probs`) laid out over the vocabulary (special tokens and items
    the vocabulary does not know: -inf).

    Args:
        synthetic: the `SyntheticInterestData` the split was built from (`to_behavior_data()`, no filtering).
        dataset: the split (raw ids: `user_id`, `item_ids`).
        vocabulary: raw item id -> vocabulary index (`tokenizer.get_vocab()`).

    Returns:
        `(stop - start, V)` float64 scores.
    """
    probs = synthetic.next_item_probs(dataset, start, stop)  # (B, num raw items), columns = raw ids
    raw = np.arange(probs.shape[1])
    index = np.array([vocabulary.get(str(item), -1) for item in raw])
    known = index >= 0
    scores = torch.full((probs.shape[0], max(vocabulary.values()) + 1), float("-inf"), dtype=torch.float64)
    scores[:, torch.from_numpy(index[known])] = torch.from_numpy(probs[:, known])
    return scores


__all__ = ["HistoryCategoryRecommender", "TransitionRecommender", "synthetic_oracle_scores"]
