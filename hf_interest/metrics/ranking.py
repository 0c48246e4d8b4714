"""Full-ranking metrics for next-item recommendation: ranks, HR@K, NDCG@K and MRR@K.

The protocol is the one in `ARCHITECTURE.md` ("Evaluation protocol"), with one change below (repeat targets): every
user is scored against the whole catalogue (no sampled negatives), items already in the user's history are removed
from the ranking (`exclude_seen`, on by default), and

    rank = number of candidate items scoring strictly higher than the target (0 = top).

Under `exclude_seen` every history item leaves the ranking, the target too when the user has had it before (a repeat
target): such a target is in no list that serving with `exclude_seen` could return, so it gets rank `N` (the number of
score columns), past the end of every list, and counts as a miss at every K; `RankingAccumulator.protocol` states how
many there were. (`ARCHITECTURE.md` keeps the target among the candidates; that leaks the label, since the one history
item left in the ranking is then the answer, and a model trained the same way learns to score its history high: it
beat the known optimum of a synthetic world that way. See docs/results.md, "Repeat targets".)

Ties therefore count in the target's favour; a model (or baseline) that gives many items the same score is flattered,
which is why `PopularityRecommender` breaks its ties before it is scored by this same code. Every candidate score, and
the target's, must be finite: a NaN compares False with everything and would fake a perfect hit, so it raises.

With one held-out target per user, HR@K equals Recall@K; NDCG@K is `1 / log2(rank + 2)` when `rank < K` (the ideal DCG
is 1), following Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", ACM TOIS 20(4), 2002; and
MRR@K is `1 / (rank + 1)` when `rank < K`. The same definitions are implemented in numpy by the `evaluate` module in
`hf_interest/metrics/interest_ranking/`, and the tests check that both agree.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)

RANK_DEFINITION = "rank = number of candidate items scoring strictly higher than the target (0 = top)"

__all__ = [
    "DEFAULT_KS",
    "RANK_DEFINITION",
    "RankingAccumulator",
    "format_protocol",
    "format_results_table",
    "ranking_metrics_from_ranks",
    "ranking_protocol",
    "ranks_from_scores",
    "ranks_under_both_protocols",
]


def _ignore_tensor(ignore_index: Iterable[int] | torch.Tensor | None, num_items: int, device) -> torch.Tensor:
    """Validate `ignore_index` and return it as a 1-D long tensor on `device`."""
    if ignore_index is None:
        return torch.empty(0, dtype=torch.long, device=device)
    ignore = torch.as_tensor(list(ignore_index) if not isinstance(ignore_index, torch.Tensor) else ignore_index)
    ignore = ignore.reshape(-1)
    if ignore.numel() and (ignore.is_floating_point() or ignore.dtype == torch.bool):
        raise ValueError(f"ignore_index must hold integer item indices, got dtype {ignore.dtype}.")
    ignore = ignore.to(device=device, dtype=torch.long)
    if ignore.numel() and (int(ignore.min()) < 0 or int(ignore.max()) >= num_items):
        raise ValueError(
            f"ignore_index values must lie in [0, {num_items}) (the score columns); got {ignore.tolist()}."
        )
    return ignore


def ranks_from_scores(
    scores: torch.Tensor,
    targets: torch.Tensor,
    seen: torch.Tensor | None = None,
    *,
    exclude_seen: bool = True,
    ignore_index: Iterable[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Rank each user's target item against the full catalogue.

    Candidates are all item indices `0..N-1` except `ignore_index` (special tokens such as pad/unk/mask, never
    recommendable) and, when `exclude_seen` is on, except the items in the user's history `seen`, the target too: a
    target in `seen` is then not ranked and gets rank `N`, a miss at every K, as serving with `exclude_seen` never
    returns it. Nothing is modified in place; beside `scores`, memory is one `(B, N)` boolean and
    `O(B * (L + I))`; the result lives on `scores.device`.

    Args:
        scores (`torch.Tensor` of shape `(B, N)`):
            A floating-point score for every item index. Non-candidates may hold anything (e.g. `-inf` at the pad
            id); every candidate score and the target's score must be finite (a target removed as seen may hold
            anything too).
        targets (`torch.Tensor` of shape `(B,)`):
            The held-out item index of each user (integer dtype).
        seen (`torch.Tensor` of shape `(B, L)`, *optional*):
            Integer item indices of each user's input history, right- or left-padded. Pad with an id that is itself in
            `ignore_index` (e.g. the pad token) or with any negative value; both leave the ranking unchanged.
        exclude_seen (`bool`, defaults to `True`):
            Remove the history items from the ranking, a target among them included (rank `N`). Requires `seen`.
        ignore_index (iterable of `int`, *optional*):
            Item indices that are never candidates, e.g. `[0, 1, 2]` for pad/unk/mask.

    Returns:
        `torch.Tensor` of shape `(B,)`, dtype long: the number of candidates scoring strictly higher than the target,
        or `N` for a target removed as seen.

    Raises:
        ValueError: on wrong shapes/dtypes, indices out of range, a target in `ignore_index`, `exclude_seen=True`
            without `seen`, or non-finite scores among the candidates or at the target.
    """
    if exclude_seen and seen is None:
        raise ValueError(
            "exclude_seen=True needs `seen` (the users' history item indices); pass seen or set exclude_seen=False "
            "so the reported protocol matches what was computed."
        )
    scores, targets, ignore = _checked(scores, targets, ignore_index)
    return _ranks(scores, targets, seen, ignore, (bool(exclude_seen),))[bool(exclude_seen)]


def ranks_under_both_protocols(
    scores: torch.Tensor,
    targets: torch.Tensor,
    seen: torch.Tensor,
    *,
    ignore_index: Iterable[int] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`ranks_from_scores` with `exclude_seen=True` and with `exclude_seen=False`, from one pass over `scores`.

    The same ranks as the two calls (the count of items above the target is shared), at about half the cost: what
    evaluation over a large catalogue spends its time on. Raises where either call would.

    Returns:
        `(ranks with the history excluded, ranks with it included)`, each `torch.Tensor` of shape `(B,)`, long.
    """
    if seen is None:
        raise ValueError("ranks_under_both_protocols needs `seen` (the users' history item indices).")
    scores, targets, ignore = _checked(scores, targets, ignore_index)
    ranks = _ranks(scores, targets, seen, ignore, (True, False))
    return ranks[True], ranks[False]


def _checked(scores, targets, ignore_index):
    """Validated `(scores, targets, ignore)`: detached scores, long targets and ignore indices on the scores' device."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(
            f"scores must be a 2-D tensor (batch, num_items); got {getattr(scores, 'shape', type(scores))}."
        )
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got dtype {scores.dtype}.")
    batch_size, num_items = scores.shape
    device = scores.device
    scores = scores.detach()

    targets = torch.as_tensor(targets)
    if targets.dim() != 1 or targets.shape[0] != batch_size:
        raise ValueError(f"targets must have shape ({batch_size},) to match scores; got {tuple(targets.shape)}.")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer item indices, got dtype {targets.dtype}.")
    targets = targets.to(device=device, dtype=torch.long)
    if batch_size and (int(targets.min()) < 0 or int(targets.max()) >= num_items):
        raise ValueError(
            f"targets must lie in [0, {num_items}) (the score columns); got min/max "
            f"{int(targets.min())}/{int(targets.max())}."
        )

    ignore = _ignore_tensor(ignore_index, num_items, device)
    if ignore.numel() and bool(torch.isin(targets, ignore).any()):
        bad = int(torch.isin(targets, ignore).sum())
        raise ValueError(f"{bad} target(s) are in ignore_index {ignore.tolist()}: a special token cannot be a target.")

    return scores, targets, ignore


# Columns of the (B, N) scores compared at a time: the comparison's booleans stay in cache, and nothing of size
# (B, N) but the scores is ever held.
_CHUNK_ELEMENTS = 1 << 22


def _ranks(scores, targets, seen, ignore, protocols) -> dict[bool, torch.Tensor]:
    """The ranks under each `exclude_seen` value in `protocols`, for checked inputs (see `ranks_from_scores`)."""
    batch_size, num_items = scores.shape
    device = scores.device
    if any(protocols):
        seen = torch.as_tensor(seen)
        if seen.dim() != 2 or seen.shape[0] != batch_size:
            raise ValueError(f"seen must have shape ({batch_size}, L) to match scores; got {tuple(seen.shape)}.")
        if seen.is_floating_point() or seen.dtype == torch.bool:
            raise ValueError(f"seen must hold integer item indices, got dtype {seen.dtype}.")
        seen = seen.to(device=device, dtype=torch.long)
        if seen.numel() and int(seen.max()) >= num_items:
            raise ValueError(f"seen holds item index {int(seen.max())} but scores only have {num_items} columns.")

    # No (B, N) candidate mask: count every item scoring above the target, then take off the distinct excluded items
    # (specials, and the history when exclude_seen) that do, found among the (B, I + L) excluded indices.
    target_scores = scores[torch.arange(batch_size, device=device), targets].unsqueeze(1)  # (B, 1)
    above = torch.zeros(batch_size, dtype=torch.int32, device=device)
    step = max(1, _CHUNK_ELEMENTS // max(batch_size, 1))
    for start in range(0, num_items, step):
        above += (scores[:, start : start + step] > target_scores).sum(dim=1, dtype=torch.int32)
    # Rows whose sum is finite hold no NaN or inf (specials that lead the columns, often -inf, left out); the others,
    # if any, are checked item by item below.
    prefix = 0
    for index in sorted(set(ignore.tolist())):
        if index != prefix:
            break
        prefix += 1
    suspect = ~torch.isfinite(scores[:, prefix:].sum(dim=1)) | ~torch.isfinite(target_scores.squeeze(1))

    ranks = {}
    for exclude_seen in protocols:
        excluded = ignore.unsqueeze(0).expand(batch_size, -1)  # (B, I): never candidates
        if exclude_seen:
            excluded = torch.cat([excluded, seen], dim=1)  # (B, I + L)
        excluded = torch.sort(excluded, dim=1).values
        distinct = torch.ones_like(excluded, dtype=torch.bool)
        distinct[:, 1:] = excluded[:, 1:] != excluded[:, :-1]
        distinct &= excluded >= 0  # padding (negative) leaves the excluded set
        excluded_scores = scores.gather(1, excluded.clamp(min=0))  # (B, I + L)
        # a target among the excluded items (a repeat target, under exclude_seen) is not ranked: a miss
        removed = (excluded == targets.unsqueeze(1)).any(dim=1) if exclude_seen else torch.zeros_like(suspect)
        if bool(suspect.any()):
            rows = suspect.nonzero().squeeze(1)
            nonfinite = (~torch.isfinite(scores[rows])).sum(dim=1)
            nonfinite -= (~torch.isfinite(excluded_scores[rows]) & distinct[rows]).sum(dim=1)
            bad = rows[(nonfinite > 0) | (~torch.isfinite(target_scores[rows, 0]) & ~removed[rows])]
            if bad.numel():
                raise ValueError(
                    f"{bad.numel()} of {batch_size} rows have non-finite scores (NaN or +/-inf) among the candidate "
                    f"items or at the target (first bad rows: {bad[:10].tolist()}). A NaN compares False with "
                    "everything and would fake a perfect hit; fix the model output, or put the special tokens that "
                    "hold -inf in ignore_index."
                )
        rank = above.long() - ((excluded_scores > target_scores) & distinct).sum(dim=1)  # (B,)
        ranks[exclude_seen] = rank.masked_fill(removed, num_items)
    return ranks


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k <= 0 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}.")
    return ks


def ranking_metrics_from_ranks(
    ranks: torch.Tensor | Sequence[int], ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float | int]:
    """Average HR@K, NDCG@K and MRR@K over users from their target ranks.

    Args:
        ranks (`torch.Tensor` of shape `(num_users,)` or a sequence of `int`):
            Per-user ranks as returned by `ranks_from_scores` (0 = top).
        ks (iterable of `int`, defaults to `(5, 10, 20)`):
            Cut-offs.

    Returns:
        `dict`: `hr@K`, `ndcg@K` and `mrr@K` (Python floats, averaged over users, computed in float64) for every K,
        grouped by metric, plus `num_users`.

    Raises:
        ValueError: if there are no ranks, a rank is negative, or `ks` is not a sequence of positive integers.
    """
    ks = _check_ks(ks)
    ranks = torch.as_tensor(ranks).reshape(-1)
    if ranks.numel() == 0:
        raise ValueError("No ranks to average: the evaluation saw no users.")
    if ranks.is_floating_point() or ranks.dtype == torch.bool:
        raise ValueError(f"ranks must be integers, got dtype {ranks.dtype}.")
    if int(ranks.min()) < 0:
        raise ValueError(f"ranks must be >= 0, got a minimum of {int(ranks.min())}.")
    r = ranks.to(torch.float64)
    zero = torch.zeros((), dtype=torch.float64, device=r.device)
    hits = {k: r < k for k in ks}
    out: dict[str, float | int] = {}
    for k in ks:
        out[f"hr@{k}"] = hits[k].to(torch.float64).mean().item()
    for k in ks:
        out[f"ndcg@{k}"] = torch.where(hits[k], 1.0 / torch.log2(r + 2.0), zero).mean().item()
    for k in ks:
        out[f"mrr@{k}"] = torch.where(hits[k], 1.0 / (r + 1.0), zero).mean().item()
    out["num_users"] = int(ranks.numel())
    return out


def ranking_protocol(
    split: str,
    num_items: int | None,
    *,
    exclude_seen: bool = True,
    ignore_index: Iterable[int] | None = None,
    targets_in_history: int | None = None,
    num_targets: int | None = None,
) -> dict[str, object]:
    """Describe how a ranking number was computed, to print next to it.

    Args:
        split (`str`): The split the targets come from (e.g. `"validation"`, `"test"`).
        num_items (`int`, *optional*): Number of score columns (the item vocabulary size, specials included).
        exclude_seen (`bool`, defaults to `True`): Whether history items were removed from the ranking.
        ignore_index (iterable of `int`, *optional*): Item indices that are never candidates.
        targets_in_history (`int`, *optional*): With `exclude_seen`, how many targets were already in their user's
            history, and so removed from the ranking and counted as misses.
        num_targets (`int`, *optional*): How many targets were ranked (the denominator of `targets_in_history`).

    Returns:
        `dict` with `split`, `ranking` ("full ranking"), `exclude_seen`, `rank` (the definition), `num_items`,
        `num_ignored` and `num_candidates` (catalogue items a user is ranked against before removing their history),
        and `targets_in_history` / `num_targets` when given.
    """
    num_ignored = len({int(i) for i in ignore_index}) if ignore_index is not None else 0
    protocol = {
        "split": split,
        "ranking": "full ranking",
        "exclude_seen": bool(exclude_seen),
        "rank": RANK_DEFINITION,
        "num_items": num_items,
        "num_ignored": num_ignored,
        "num_candidates": None if num_items is None else num_items - num_ignored,
    }
    if targets_in_history is not None:
        protocol["targets_in_history"] = int(targets_in_history)
        protocol["num_targets"] = None if num_targets is None else int(num_targets)
    return protocol


def format_protocol(protocol: Mapping[str, object] | str) -> str:
    """Render a protocol (from `ranking_protocol`) as one line of text; a string is returned unchanged.

    Args:
        protocol (`dict` or `str`): The protocol.

    Returns:
        `str`: e.g. `"split=test | full ranking over 1679 candidate items (3 special ids never ranked) | exclude_seen=on
        (history items removed; 0 of 943 targets were in the history, misses) | rank = ..."`.
    """
    if isinstance(protocol, str):
        return protocol
    num_candidates = protocol.get("num_candidates")
    ranking = str(protocol.get("ranking", "full ranking"))
    if num_candidates is not None:
        ranking += f" over {num_candidates} candidate items"
        if protocol.get("num_ignored"):
            ranking += f" ({protocol['num_ignored']} special ids never ranked)"
    exclude = "off"
    if protocol.get("exclude_seen"):
        exclude = "on (history items removed"
        if protocol.get("targets_in_history") is not None:
            of = f" of {protocol['num_targets']}" if protocol.get("num_targets") is not None else ""
            exclude += f"; {protocol['targets_in_history']}{of} targets were in the history, misses"
        exclude += ")"
    parts = [f"split={protocol.get('split')}", ranking, f"exclude_seen={exclude}", str(protocol.get("rank", ""))]
    if protocol.get("users"):  # a sample of the split's users (`user_sample_description`)
        parts.insert(1, str(protocol["users"]))
    return " | ".join(p for p in parts if p)


def user_sample_error_bound(users: int, of: int, level: float = 0.95) -> float:
    """
    How far a mean metric with values in [0, 1] (HR@K, NDCG@K, MRR@K) computed on a simple random sample of `users`
    of `of` users can be from the mean over all of them: the half-width of the normal-approximation interval at
    `level`, `z * 0.5 / sqrt(users)` times the finite-population correction. 0.5 is the largest standard deviation a
    value in [0, 1] can have, so the bound holds whatever the metric's value (0 when every user is scored).

    Args:
        users (`int`): users in the sample.
        of (`int`): users of the whole split.
        level (`float`, defaults to 0.95): coverage of the interval.

    Returns:
        `float`: the half-width.
    """
    if not 0 < users <= of:
        raise ValueError(f"A sample of {users} users of {of}: it needs 0 < users <= of.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    correction = math.sqrt((of - users) / (of - 1)) if of > 1 else 0.0
    return z * 0.5 / math.sqrt(users) * correction


def user_sample_description(users: int, of: int, flag: str = "--validation_users") -> str:
    """One line saying which users a number covers, with `user_sample_error_bound`'s 95% bound."""
    bound = user_sample_error_bound(users, of)
    return (
        f"users: a fixed random sample of {users:,} of {of:,} ({flag}); a metric on it is within {bound:.4f} of all "
        "users' (95%, at most)"
    )


def format_results_table(
    results: Mapping[str, Mapping[str, float | int]],
    protocol: Mapping[str, object] | str,
    *,
    baseline: str | None = "popularity",
    digits: int = 4,
) -> str:
    """Format ranking results of several models, the baseline first, as a plain-text table headed by the protocol.

    Args:
        results (`dict[str, dict]`):
            Model name -> metrics dict (as returned by `ranking_metrics_from_ranks` or `RankingAccumulator.compute`).
        protocol (`dict` or `str`):
            The evaluation protocol (`ranking_protocol(...)` / `RankingAccumulator.protocol`), printed above the table.
        baseline (`str`, *optional*, defaults to `"popularity"`):
            Name of the sanity-floor row that must be present (see `PopularityRecommender`); `None` to skip the check.
        digits (`int`, defaults to 4): Decimals for the metric values.

    Returns:
        `str`: the protocol line followed by an aligned table with one row per model.

    Raises:
        ValueError: if `results` is empty, the baseline row is missing, or the rows were computed on different
            numbers of users (they would not be comparable).
    """
    if not results:
        raise ValueError("results is empty: nothing to format.")
    if baseline is not None and baseline not in results:
        raise ValueError(
            f"results has no {baseline!r} row: score hf_interest.metrics.PopularityRecommender on the same split with "
            "the same code and add it (or pass baseline=None)."
        )
    users = {name: r.get("num_users") for name, r in results.items() if r.get("num_users") is not None}
    if len(set(users.values())) > 1:
        raise ValueError(f"Rows were computed on different numbers of users and are not comparable: {users}.")

    names = list(results)
    if baseline is not None:
        names = [baseline] + [n for n in names if n != baseline]
    columns: list[str] = []
    for r in results.values():
        columns += [c for c in r if c != "num_users" and c not in columns]

    header = ["model", "users"] + [c.upper() for c in columns]
    rows = []
    for name in names:
        r = results[name]
        row = [name + (" (baseline)" if name == baseline else ""), str(r.get("num_users", ""))]
        row += [f"{float(r[c]):.{digits}f}" if c in r else "-" for c in columns]
        rows.append(row)
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]

    def _line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [f"Protocol: {format_protocol(protocol)}", _line(header), _line(["-" * w for w in widths])]
    lines += [_line(row) for row in rows]
    return "\n".join(lines)


class RankingAccumulator:
    """Collect per-user ranks batch by batch, then compute HR/NDCG/MRR@K once at the end.

    Ranks, not per-batch averages, are kept, so the result is exact whatever the batch sizes, and distributed evaluation
    stays in the caller's hands: pass `gather=accelerator.gather_for_metrics` to `update` (or gather the ranks yourself
    and call `add_ranks`) so that every process accumulates the ranks of all users, duplicates from an uneven last batch
    dropped by Accelerate.

    Example:

    ```python
    acc = RankingAccumulator(split="test", exclude_seen=True, ignore_index=[0, 1, 2])
    for batch in dataloader:
        scores = model(**batch).logits[:, -1]  # (B, N)
        acc.update(scores, batch["target"], batch["input_ids"], gather=accelerator.gather_for_metrics)
    metrics = acc.compute()
    ```

    Args:
        ks (iterable of `int`, defaults to `(5, 10, 20)`): Cut-offs.
        exclude_seen (`bool`, defaults to `True`): See `ranks_from_scores`.
        ignore_index (iterable of `int`, *optional*): See `ranks_from_scores`.
        split (`str`, defaults to `"test"`): Name of the split, reported in `protocol`.
    """

    def __init__(
        self,
        ks: Iterable[int] = DEFAULT_KS,
        *,
        exclude_seen: bool = True,
        ignore_index: Iterable[int] | None = None,
        split: str = "test",
    ):
        self.ks = _check_ks(ks)
        self.exclude_seen = bool(exclude_seen)
        self.ignore_index = None if ignore_index is None else [int(i) for i in ignore_index]
        self.split = split
        self.num_items: int | None = None
        self._ranks: list[torch.Tensor] = []

    def update(
        self,
        scores: torch.Tensor,
        targets: torch.Tensor,
        seen: torch.Tensor | None = None,
        *,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Rank a batch with `ranks_from_scores` and keep the ranks.

        Args:
            scores (`torch.Tensor` of shape `(B, N)`): Scores over the full catalogue.
            targets (`torch.Tensor` of shape `(B,)`): Target item indices.
            seen (`torch.Tensor` of shape `(B, L)`, *optional*): History item indices (required if `exclude_seen`).
            gather (callable, *optional*): Applied to the batch ranks before they are stored, e.g.
                `accelerator.gather_for_metrics`.

        Returns:
            `torch.Tensor`: the ranks that were stored (after `gather`, on CPU).
        """
        self._check_catalogue(int(scores.shape[-1]))
        ranks = ranks_from_scores(
            scores, targets, seen, exclude_seen=self.exclude_seen, ignore_index=self.ignore_index
        )
        if gather is not None:
            ranks = gather(ranks)
        return self.add_ranks(ranks)

    def _check_catalogue(self, num_items: int) -> None:
        if self.num_items is None:
            self.num_items = num_items
        elif num_items != self.num_items:
            raise ValueError(
                f"scores have {num_items} columns but earlier batches had {self.num_items}: every batch must be "
                "scored against the same catalogue."
            )

    def add_ranks(self, ranks: torch.Tensor | Sequence[int], *, num_items: int | None = None) -> torch.Tensor:
        """Store already computed (and, in distributed runs, already gathered) ranks.

        Args:
            ranks (`torch.Tensor` of shape `(B,)` or a sequence of `int`): Ranks from `ranks_from_scores` (or
                `ranks_under_both_protocols`).
            num_items (`int`, *optional*): Score columns they were ranked among, for the protocol (checked against
                earlier batches, as `update` does).

        Returns:
            `torch.Tensor`: the stored ranks (long, on CPU).
        """
        if num_items is not None:
            self._check_catalogue(int(num_items))
        ranks = torch.as_tensor(ranks).detach().reshape(-1)
        if ranks.is_floating_point() or ranks.dtype == torch.bool:
            raise ValueError(f"ranks must be integers, got dtype {ranks.dtype}.")
        ranks = ranks.to(device="cpu", dtype=torch.long)
        self._ranks.append(ranks)
        return ranks

    @property
    def ranks(self) -> torch.Tensor:
        """All ranks stored so far, shape `(num_users,)`, long, on CPU."""
        if not self._ranks:
            return torch.empty(0, dtype=torch.long)
        return torch.cat(self._ranks)

    @property
    def protocol(self) -> dict[str, object]:
        """The protocol of these numbers (see `ranking_protocol`); `num_items` is known after the first `update`."""
        in_history = None
        if self.exclude_seen and self.num_items is not None:
            in_history = int((self.ranks >= self.num_items).sum())  # the rank a target removed as seen gets
        return ranking_protocol(
            self.split,
            self.num_items,
            exclude_seen=self.exclude_seen,
            ignore_index=self.ignore_index,
            targets_in_history=in_history,
            num_targets=int(self.ranks.numel()) if in_history is not None else None,
        )

    def compute(self) -> dict[str, float | int]:
        """Average the metrics over every stored user.

        Returns:
            `dict`: as `ranking_metrics_from_ranks`.
        """
        return ranking_metrics_from_ranks(self.ranks, self.ks)

    def reset(self) -> None:
        """Forget all stored ranks (e.g. between evaluation rounds)."""
        self._ranks = []
        self.num_items = None
