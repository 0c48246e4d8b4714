"""Privacy audits: can an attacker tell the users a model was trained on from users it never saw?

A membership-inference audit (the loss attack of Yeom et al., 2018, "Privacy Risk in Machine Learning",
https://arxiv.org/abs/1709.01604, at the level of users): a model fits its training users' events better than
anyone else's, so the mean next-item log-likelihood of a user's events (`membership_scores`) is a membership score.
`membership_audit` reports how well it separates members from non-members: the ROC AUC (0.5: no better than chance)
with a bootstrap interval. Non-members must be users kept out of training entirely (`train.py --exclude_users_file`),
drawn from the same population as the members; `benchmarks/benchmark_privacy.py` runs the audit on a trained model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


@torch.no_grad()
def membership_scores(
    model, tokenizer, histories: Sequence[Sequence], timestamps: Sequence[Sequence[int]] | None = None, batch_size=64
) -> np.ndarray:
    """
    One score per user: the mean log-probability the model gives each of the user's events after the events before
    it (teacher forcing, full softmax over the real items, the newest `max_position_embeddings` events read). Higher
    means the model fits the user better, as it fits the users it was trained on.

    Returns:
        `np.ndarray` `(num_users,)` float64; NaN for a user with fewer than two events (nothing to predict).
    """
    model.eval()
    config = model.config
    special = config.num_special_tokens
    device = next(model.parameters()).device
    scores = np.full(len(histories), np.nan)
    for start in range(0, len(histories), batch_size):
        chunk = [
            list(map(str, history))[-config.max_position_embeddings :]
            for history in histories[start : start + batch_size]
        ]
        times = None
        if timestamps is not None:
            times = [list(t)[-config.max_position_embeddings :] for t in timestamps[start : start + batch_size]]
        encoded = tokenizer(chunk, timestamps=times, return_tensors="pt")
        encoded = {name: value.to(device) for name, value in encoded.items()}
        logits = model(**encoded).logits.float()  # (B, T, N)
        logits[..., :special] = float("-inf")
        log_probs = logits[:, :-1].log_softmax(dim=-1)  # predicting the event at t + 1 from the state after t
        targets = encoded["input_ids"][:, 1:]
        picked = log_probs.gather(2, targets[..., None])[..., 0]
        both_real = (encoded["attention_mask"][:, 1:] * encoded["attention_mask"][:, :-1]).bool()
        counts = both_real.sum(dim=1)
        sums = picked.masked_fill(~both_real, 0.0).sum(dim=1)
        means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
        scores[start : start + len(chunk)] = means.cpu().double().numpy()
    return scores


def membership_audit(member_scores, nonmember_scores, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95):
    """
    The ROC AUC of a membership score between members (label 1) and non-members (label 0), with a percentile
    bootstrap interval (members and non-members resampled separately, `n_bootstrap` times). Users with a NaN score are
    left out and counted.

    Returns:
        `dict`: `auc`, `low`, `high` (the interval at `level`), `members`, `non_members`, `left_out`, `n_bootstrap`.
    """
    members = np.asarray(member_scores, dtype=np.float64)
    others = np.asarray(nonmember_scores, dtype=np.float64)
    left_out = int(np.isnan(members).sum() + np.isnan(others).sum())
    members, others = members[~np.isnan(members)], others[~np.isnan(others)]
    if members.size == 0 or others.size == 0:
        raise ValueError(f"An audit needs members and non-members with scores, got {members.size} and {others.size}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")

    def auc(a, b):
        return float(roc_auc_score(np.r_[np.ones(a.size), np.zeros(b.size)], np.r_[a, b]))

    rng = np.random.default_rng(seed)
    draws = [auc(rng.choice(members, members.size), rng.choice(others, others.size)) for _ in range(int(n_bootstrap))]
    tail = (1 - level) / 2 * 100
    return {
        "auc": auc(members, others),
        "low": float(np.percentile(draws, tail)) if draws else float("nan"),
        "high": float(np.percentile(draws, 100 - tail)) if draws else float("nan"),
        "members": int(members.size),
        "non_members": int(others.size),
        "left_out": left_out,
        "n_bootstrap": int(n_bootstrap),
    }


__all__ = ["membership_audit", "membership_scores"]
