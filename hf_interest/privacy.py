"""Privacy: the membership-inference audit, forgetting by shards, and checks of what is published.

- `membership_scores`, `membership_audit`, `audit`: can an attacker tell the users a model was trained on from users
  it never saw (or forgot)?
- `user_shard`, `DeletionLedger`, `ShardEnsemble`: the pieces of SISA forgetting (`train.py --num_shards S`,
  `hf-interest forget`; the training side is `hf_interest.training.sisa`).
- `find_user_data`: user ids and per-user data in a folder about to be published (`push` runs it).

User-level differentially private training (DP-SGD) is a training option: `train.py --dp_epsilon E`
(`hf_interest.training.private`).

The audit is a membership-inference attack (the loss attack of Yeom et al., 2018, "Privacy Risk in Machine Learning",
https://arxiv.org/abs/1709.01604, at the level of users): a model fits its training users' events better than
anyone else's, so the mean next-item log-likelihood of a user's events (`membership_scores`) is a membership score.
`membership_audit` reports how well it separates members from non-members: the ROC AUC (0.5: no better than chance)
with a bootstrap interval. Non-members must be users kept out of training entirely (`train.py --exclude_users_file`),
drawn from the same population as the members; `benchmarks/benchmark_privacy.py` runs the audit on a trained model.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from transformers.utils import ModelOutput

DELETION_LEDGER = "deletion_ledger.jsonl"


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


def audit(
    model,
    tokenizer,
    member_histories: Sequence[Sequence],
    nonmember_histories: Sequence[Sequence],
    member_timestamps: Sequence[Sequence[int]] | None = None,
    nonmember_timestamps: Sequence[Sequence[int]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """
    The membership-inference audit in one call: `membership_scores` of both groups, then `membership_audit`.

    Args:
        model: a next-item model (or a `ShardEnsemble`); tokenizer: its `ItemTokenizer`.
        member_histories, nonmember_histories: raw item ids per user, of users trained on and of users never seen
            (or forgotten).
        member_timestamps, nonmember_timestamps: their event times, when the model reads time gaps.

    Returns:
        `dict`: what `membership_audit` returns.
    """
    members = membership_scores(model, tokenizer, member_histories, member_timestamps)
    others = membership_scores(model, tokenizer, nonmember_histories, nonmember_timestamps)
    return membership_audit(members, others, n_bootstrap=n_bootstrap, seed=seed)


# Forgetting (SISA: Bourtoule et al., 2021, "Machine Unlearning", https://arxiv.org/abs/1912.03817). Users are split
# into shards by a hash of their id; each shard trains its own model, and the shard models' next-item log-probabilities
# are averaged. Forgetting a user retrains the one shard that saw them, without them.


def user_shard(user_id, num_shards: int) -> int:
    """The shard of a user: the first 8 bytes of the SHA-256 of the raw id (as text), modulo `num_shards`. Stable across
    runs, machines and Python versions (unlike `hash`)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}.")
    digest = hashlib.sha256(str(user_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def user_hash(user_id) -> str:
    """What the deletion ledger stores of a user: a SHA-256 of the raw id, never the id or any of their data."""
    return hashlib.sha256(f"hf_interest-forget:{user_id}".encode()).hexdigest()


class DeletionLedger:
    """
    The record of who was forgotten when, in a run folder (`deletion_ledger.jsonl`, one JSON object per line): the
    time, the user's `user_hash`, the shard retrained. It stores no id and no event; `push` never uploads it.
    """

    def __init__(self, path):
        self.path = Path(path)

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def hashes(self) -> set[str]:
        return {entry["user_hash"] for entry in self.entries()}

    def append(self, user_ids: Iterable, num_shards: int, when: float | None = None) -> list[dict]:
        """Records users (raw ids, hashed here) as forgotten; returns the new entries (already recorded ones skipped)."""
        known = self.hashes()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        entries = []
        for user in user_ids:
            hashed = user_hash(user)
            if hashed in known:
                continue
            known.add(hashed)
            entries.append({"forgotten_at": stamp, "user_hash": hashed, "shard": user_shard(user, num_shards)})
        if entries:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as ledger:
                ledger.writelines(json.dumps(entry) + "\n" for entry in entries)
        return entries


# Keys whose values, in a JSON file, are per-user data (ids or one entry per user).
USER_LEVEL_KEYS = ("user_id", "user_ids", "users_ids", "user_histories")
TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".txt", ".csv", ".tsv", ".yaml", ".yml", ".py")


def find_user_data(folder, user_ids: Iterable | None = None) -> list[str]:
    """
    What in a folder about to be published is user-level data: deletion ledgers, JSON values under user keys
    (`USER_LEVEL_KEYS`, e.g. the `user_ids` of a groups file), and, when `user_ids` are given, any text file naming
    one of those raw ids as a whole token.

    Args:
        folder: the folder (an upload folder, a Space folder, a run folder).
        user_ids (iterable, *optional*): the raw ids of the data's users.

    Returns:
        `list[str]`: one line per finding (file and what), empty when none.
    """
    folder = Path(folder)
    ids = {str(user) for user in user_ids or ()}
    findings = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder)
        if path.name == DELETION_LEDGER:
            findings.append(f"{name}: a deletion ledger (who was forgotten, by hashed id)")
            continue
        if path.suffix not in TEXT_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".json":
            try:
                keys = sorted(_user_keys(json.loads(text)))
            except json.JSONDecodeError:
                keys = []
            if keys:
                findings.append(f"{name}: per-user values under {keys}")
        if ids:
            named = ids.intersection(re.findall(r"[\w.@+-]+", text))
            if named:
                findings.append(f"{name}: names {len(named)} user ids (e.g. {sorted(named)[:3]})")
    return findings


def _user_keys(value) -> set[str]:
    """The `USER_LEVEL_KEYS` in a JSON value that hold something (at any depth)."""
    found = set()
    if isinstance(value, dict):
        for key, child in value.items():
            if key in USER_LEVEL_KEYS and child not in (None, [], {}, ""):
                found.add(key)
            found |= _user_keys(child)
    elif isinstance(value, list):
        for child in value:
            found |= _user_keys(child)
    return found


class ShardEnsemble(nn.Module):
    """
    The shard models of a SISA run as one scorer: the mean over shards of each model's next-item log-probabilities
    (log-softmax over the catalogue). Called like a next-item model (`input_ids`, `attention_mask`, `timestamps`,
    `logits_to_keep`); `.logits` holds the averaged log-probabilities. The shards share one vocabulary.
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("A ShardEnsemble needs at least one shard model.")
        sizes = {model.config.num_items for model in models}
        if len(sizes) != 1:
            raise ValueError(f"The shard models must share one vocabulary, got sizes {sorted(sizes)}.")
        self.shards = nn.ModuleList(models)
        self.config = models[0].config

    def forward(self, input_ids=None, attention_mask=None, timestamps=None, logits_to_keep=0, **kwargs):
        total = None
        for model in self.shards:
            logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                timestamps=timestamps,
                logits_to_keep=logits_to_keep,
            ).logits.float()
            log_probs = logits.log_softmax(dim=-1)
            total = log_probs if total is None else total + log_probs
        return ModelOutput(logits=total / len(self.shards))


__all__ = [
    "DeletionLedger",
    "ShardEnsemble",
    "audit",
    "find_user_data",
    "membership_audit",
    "membership_scores",
    "user_hash",
    "user_shard",
]
