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

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from transformers.utils import ModelOutput

DELETION_LEDGER = "deletion_ledger.jsonl"
logger = logging.getLogger(__name__)


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
    """
    The unkeyed hash older deletion ledgers stored (SHA-256 of a fixed prefix and the raw id). Kept only to read and
    upgrade such ledgers: anyone can recompute it for every plausible id, so it hides nothing of a numeric, e-mail or
    phone id. New ledgers store `ForgetKey.user_hmac`.
    """
    return hashlib.sha256(f"hf_interest-forget:{user_id}".encode()).hexdigest()


# The deletion ledger's key: a secret that never sits in the run folder. Looked for, in this order: the key file a
# caller names (`hf-interest forget --key_file`, `--deletion_key_file`), the key itself in FORGET_KEY_ENV (hex, e.g.
# from a secret store), a key file named in FORGET_KEY_FILE_ENV, then the default file `default_key_file()`.
FORGET_KEY_ENV = "HF_INTEREST_FORGET_KEY"
FORGET_KEY_FILE_ENV = "HF_INTEREST_FORGET_KEY_FILE"
KEY_BYTES = 32


def default_key_file() -> Path:
    """Where the first `forget` writes a new key when none is named: `$XDG_CONFIG_HOME/hf_interest/forget.key`
    (`~/.config/...` without XDG_CONFIG_HOME)."""
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "hf_interest" / "forget.key"


@dataclass(frozen=True)
class ForgetKey:
    """
    The secret key of deletion ledgers: each forgotten user is recorded as HMAC-SHA256(key, id), which nobody without
    the key can recompute, however few the plausible ids are. `source` says where the key came from (a file or an
    environment variable), never the key.
    """

    secret: bytes
    source: str

    def __post_init__(self):
        if len(self.secret) < 16:
            raise ValueError(
                f"The deletion-ledger key from {self.source} is {len(self.secret)} bytes; use at least 16."
            )

    @property
    def key_id(self) -> str:
        """A public fingerprint of the key (it reveals nothing of it), written in each ledger line, so that a wrong key
        is an error rather than a ledger that silently recognises nobody."""
        return hmac.new(self.secret, b"hf_interest deletion-ledger key id", hashlib.sha256).hexdigest()[:16]

    def user_hmac(self, user_id) -> str:
        """What the ledger stores of a user: HMAC-SHA256 of the raw id (as text) under the key."""
        return hmac.new(self.secret, str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()

    @classmethod
    def from_text(cls, text: str, source: str) -> ForgetKey:
        try:
            return cls(bytes.fromhex(text.strip()), source)
        except ValueError as error:
            raise ValueError(
                f"The deletion-ledger key in {source} is not hex text ({error}); a key is {KEY_BYTES} random bytes "
                f"written as hex, as `hf-interest forget` creates it."
            ) from None


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def resolve_forget_key(key_file=None, run_dir=None, create: bool = False) -> ForgetKey | None:
    """
    The deletion-ledger key: from `key_file`, else the FORGET_KEY_ENV variable (the key as hex), else the file in
    FORGET_KEY_FILE_ENV, else `default_key_file()`.

    Args:
        key_file (*optional*): a key file named by the caller.
        run_dir (*optional*): the run folder the ledger belongs to; a key file inside it is refused (anyone with the
            folder could then reverse the ledger).
        create (`bool`): when the chosen key file does not exist, write a new random key there (mode 0600, its folder
            0700) and say where; otherwise return None.

    Returns:
        `ForgetKey`, or None when no key exists and `create` is off.
    """
    if key_file is None and os.environ.get(FORGET_KEY_ENV):
        return ForgetKey.from_text(os.environ[FORGET_KEY_ENV], f"the environment variable {FORGET_KEY_ENV}")
    named = key_file or os.environ.get(FORGET_KEY_FILE_ENV)
    path = Path(named).expanduser() if named else default_key_file()
    if run_dir is not None and _inside(path, Path(run_dir)):
        raise ValueError(
            f"The deletion-ledger key file {path} lies inside the run folder {run_dir}: anyone with the folder could "
            "reverse the ledger. Keep the key elsewhere (the default is outside every run folder)."
        )
    if path.is_file():
        if path.stat().st_mode & 0o077:
            logger.warning("The deletion-ledger key file %s can be read by other users: chmod 600 it.", path)
        return ForgetKey.from_text(path.read_text(encoding="utf-8"), str(path))
    if not create:
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    print(
        f"Created the deletion-ledger key {path} (mode 0600). Keep it safe and out of every run folder: without it "
        "the ledger cannot tell who was forgotten, and forgetting or retraining this run needs it again "
        f"({FORGET_KEY_FILE_ENV}={path} or --key_file where the key is not at this default place)."
    )
    return ForgetKey.from_text(path.read_text(encoding="utf-8"), str(path))


class DeletionLedger:
    """
    The record of who was forgotten when, in a run folder (`deletion_ledger.jsonl`, one JSON object per line): the
    time, the user as `ForgetKey.user_hmac` (a keyed hash), the fingerprint of the key, the shard retrained. It stores
    no id and no event, and without the key its lines cannot be tied to anyone, even by hashing every plausible id;
    `push` never uploads it.

    Lines of older ledgers (`user_hash`, an unkeyed hash anyone can reverse by enumerating ids) are still read, with a
    warning; `upgrade` rewrites them keyed.
    """

    def __init__(self, path, key: ForgetKey | None = None):
        self.path = Path(path)
        self.key = key
        self._check_key()

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        entries = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}, line {number}: not JSON ({error}); restore the ledger.") from None
            if not isinstance(entry, dict) or not ({"user_hmac", "user_hash"} & entry.keys()):
                raise ValueError(f"{self.path}, line {number}: not a deletion-ledger entry (no user_hmac).")
            entries.append(entry)
        return entries

    def _check_key(self) -> None:
        entries = self.entries()
        keyed = {entry["key_id"] for entry in entries if "user_hmac" in entry}
        legacy = sum("user_hmac" not in entry for entry in entries)
        if keyed and self.key is None:
            raise ValueError(
                f"{self.path} records forgotten users under a secret key, and no key was found ({_key_places()}). "
                "Without the key already forgotten users cannot be recognised: point to the key file the first "
                "`forget` created (it printed where) rather than making a new one."
            )
        if keyed and keyed != {self.key.key_id}:
            raise ValueError(
                f"{self.path} was written under the key with id {sorted(keyed)}, but the key from {self.key.source} has "
                f"id {self.key.key_id}: a wrong key would recognise none of the users already forgotten. Use the key "
                f"file the first `forget` created ({_key_places()})."
            )
        if legacy:
            logger.warning(
                "%s holds %d lines written by an older version as an unkeyed SHA-256 of the user id: anyone with the "
                "run folder can recover those users by hashing every plausible id. `hf-interest forget` rewrites "
                "them under a secret key.",
                self.path,
                legacy,
            )

    def _keyed(self, user, forgotten_at, shard) -> dict:
        if self.key is None:
            raise ValueError(f"Recording users in {self.path} needs the deletion-ledger key ({_key_places()}).")
        return {
            "forgotten_at": forgotten_at,
            "user_hmac": self.key.user_hmac(user),
            "key_id": self.key.key_id,
            "shard": shard,
        }

    def user_filter(self):
        """A function `raw id -> bool`: True for the users the ledger records (a fast set lookup per user)."""
        entries = self.entries()
        keyed = {entry["user_hmac"] for entry in entries if "user_hmac" in entry}
        legacy = {entry["user_hash"] for entry in entries if "user_hmac" not in entry}
        key = self.key

        def recorded(user) -> bool:
            return (key is not None and key.user_hmac(user) in keyed) or (bool(legacy) and user_hash(user) in legacy)

        return recorded

    def append(self, user_ids: Iterable, num_shards: int, when: float | None = None) -> list[dict]:
        """Records users (raw ids, hashed under the key here) as forgotten; returns the new entries (users already
        recorded are skipped)."""
        recorded = self.user_filter()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        entries, seen = [], set()
        for user in user_ids:
            if str(user) in seen or recorded(user):
                continue
            seen.add(str(user))
            entries.append(self._keyed(user, stamp, user_shard(user, num_shards)))
        if entries:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as ledger:
                ledger.writelines(json.dumps(entry) + "\n" for entry in entries)
        return entries

    def upgrade(self, user_ids: Iterable) -> dict:
        """
        Rewrites the unkeyed lines of an older ledger under the key: each line whose hash matches one of `user_ids`
        (the data's users) becomes a keyed line with its time and shard; a line that matches no user of the data is
        dropped (it kept nobody out) and counted.

        Returns:
            `dict`: `{"upgraded": n, "dropped": m}`.
        """
        entries = self.entries()
        if all("user_hmac" in entry for entry in entries):
            return {"upgraded": 0, "dropped": 0}
        by_hash = {user_hash(user): str(user) for user in user_ids}
        lines, upgraded, dropped = [], 0, 0
        for entry in entries:
            if "user_hmac" in entry:
                lines.append(entry)
            elif entry["user_hash"] in by_hash:
                lines.append(self._keyed(by_hash[entry["user_hash"]], entry.get("forgotten_at"), entry.get("shard")))
                upgraded += 1
            else:
                dropped += 1
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text("".join(json.dumps(entry) + "\n" for entry in lines), encoding="utf-8")
        os.replace(temporary, self.path)
        logger.warning(
            "%s: rewrote %d unkeyed (reversible) lines under the key from %s; dropped %d that match no user of the data.",
            self.path,
            upgraded,
            self.key.source,
            dropped,
        )
        return {"upgraded": upgraded, "dropped": dropped}


def _key_places() -> str:
    return f"--key_file, {FORGET_KEY_ENV}, {FORGET_KEY_FILE_ENV}, or the default {default_key_file()}"


# Keys whose values, in a JSON file, are per-user data (ids or one entry per user).
USER_LEVEL_KEYS = ("user_id", "user_ids", "users_ids", "user_histories")
USER_ID_KEYS = ("user_id", "user_ids", "users_ids")  # of those, the ones whose values are user ids
TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".txt", ".csv", ".tsv", ".yaml", ".yml", ".py")


def find_user_data(folder, user_ids: Iterable | None = None) -> list[str]:
    """
    What in a folder about to be published (or left behind after a `forget`) is user-level data: deletion ledgers,
    JSON values under user keys (`USER_LEVEL_KEYS`, e.g. the `user_ids` of a groups file), and, when `user_ids` are
    given, the files that name one of those raw ids.

    Where an id is looked for depends on the id. Every id is matched exactly where a file names users: values under
    user keys in JSON and JSON Lines files, and columns whose name holds "user" in CSV/TSV files. Ids that are not
    plain numbers are also matched as whole tokens in any text file (a card, a log, a README). Plain numbers are not:
    in free text a number is as often a count, an item id or a metric, so every file would match. A warning says how
    many numeric ids were matched in the structured places only; check prose files for them by hand.

    Args:
        folder: the folder (an upload folder, a Space folder, a run folder).
        user_ids (iterable, *optional*): the raw ids of the data's users.

    Returns:
        `list[str]`: one line per finding (file and what), empty when none.
    """
    folder = Path(folder)
    ids = {str(user) for user in user_ids or ()}
    tokens = {user for user in ids if not user.isdigit()}
    findings = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder)
        if path.name == DELETION_LEDGER:
            findings.append(f"{name}: a deletion ledger (who was forgotten, by keyed hash)")
            continue
        if path.suffix not in TEXT_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        values = _user_values(path.suffix, text)
        if path.suffix == ".json" and values is not None and values[0]:
            findings.append(f"{name}: per-user values under {sorted(values[0])}")
        named = ids.intersection(values[1]) if values is not None else set()
        if tokens:
            named |= tokens.intersection(re.findall(r"[\w.@+-]+", text))
        if named:
            findings.append(f"{name}: names {len(named)} user ids (e.g. {sorted(named)[:3]})")
    if len(tokens) < len(ids):
        logger.warning(
            "%d of %d user ids are plain numbers: they were matched under user keys (JSON, JSON Lines) and in user "
            "columns (CSV, TSV) only, not in free text, where numbers stand for counts and item ids as well. Check "
            "prose files (cards, logs) for them by hand.",
            len(ids) - len(tokens),
            len(ids),
        )
    return findings


def _user_values(suffix: str, text: str) -> tuple[set[str], set[str]] | None:
    """The user keys found (JSON) and the values under user keys or in user columns, as text; None when the file does
    not parse as its kind."""
    if suffix in (".json", ".jsonl"):
        try:
            documents = (
                [json.loads(text)] if suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
            )
        except json.JSONDecodeError:
            return None
        keys, values = set(), set()
        for document in documents:
            _collect_user_values(document, keys, values)
        return keys, values
    if suffix in (".csv", ".tsv"):
        rows = list(csv.reader(io.StringIO(text), delimiter="," if suffix == ".csv" else "\t"))
        if not rows:
            return set(), set()
        columns = [index for index, column in enumerate(rows[0]) if "user" in column.lower()]
        return set(), {row[index].strip() for row in rows[1:] for index in columns if index < len(row)}
    return set(), set()


def _collect_user_values(value, keys: set[str], values: set[str], under_id_key: bool = False) -> None:
    """Adds the `USER_LEVEL_KEYS` that hold something to `keys`, and every scalar under a `USER_ID_KEYS` key to
    `values`."""
    if isinstance(value, dict):
        for key, child in value.items():
            if key in USER_LEVEL_KEYS and child not in (None, [], {}, ""):
                keys.add(key)
            _collect_user_values(child, keys, values, under_id_key or key in USER_ID_KEYS)
    elif isinstance(value, list):
        for child in value:
            _collect_user_values(child, keys, values, under_id_key)
    elif under_id_key and value is not None:
        values.add(str(value))


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
    "ForgetKey",
    "resolve_forget_key",
    "default_key_file",
    "ShardEnsemble",
    "audit",
    "find_user_data",
    "membership_audit",
    "membership_scores",
    "user_hash",
    "user_shard",
]
