"""User group discovery: cluster users by their interest vectors, describe the groups, and follow users between them.

```python
from hf_interest.groups import interest_vectors, discover_groups, describe_groups, group_migration

rows = data.sequences["test"]  # each user's history before the test event
vectors = interest_vectors(model, tokenizer, rows["item_ids"], rows["timestamps"])  # (users, hidden_size)
groups = discover_groups(vectors, rows["user_id"], seed=0)  # k chosen by silhouette when num_groups is None
describe_groups(groups, rows["item_ids"], items=data.items, users=data.users)
migration = group_migration(model, tokenizer, groups, rows["item_ids"], rows["timestamps"], num_windows=3)
groups.save("runs/ml100k/groups")  # groups.safetensors + groups.json beside the model
```

The interest vector of a user is the backbone's interest state after their last event (`pooling="last"`, what the
model recommends from), the mean state over their history (`pooling="mean"`, a smoother, longer-term summary), or the
long-term interest of models trained with `long_term_interest=True` (`pooling="long_term"`).
Clustering is scikit-learn k-means on L2-normalised vectors (cosine geometry), deterministic by seed.
`interest_vectors` is a pooled trajectory: it lives in `hf_interest.evolution` and is imported here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from .evolution import headless_pyplot, interest_vectors

GROUPS_WEIGHTS = "groups.safetensors"
GROUPS_CONFIG = "groups.json"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (users, dims), got shape {vectors.shape}.")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or inf: check the model and its inputs.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass
class UserGroups:
    """
    Groups of users found by `discover_groups`.

    Attributes:
        centroids: `(num_groups, dims)` k-means centres in the L2-normalised space.
        labels: the group of each user, aligned with `user_ids`.
        user_ids: the users clustered.
        pooling: how the interest vectors were made (`"last"`, `"mean"` or `"long_term"`).
        seed: the k-means seed.
        silhouette: the silhouette (cosine) of the chosen clustering.
        silhouette_by_k: the silhouette of every k tried (empty when `num_groups` was given).
    """

    centroids: np.ndarray
    labels: np.ndarray
    user_ids: list[str]
    pooling: str = "last"
    seed: int = 0
    silhouette: float = float("nan")
    silhouette_by_k: dict[int, float] = field(default_factory=dict)

    @property
    def num_groups(self) -> int:
        return int(self.centroids.shape[0])

    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_groups)

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """
        Assigns (new) users to the nearest group centre, as k-means does (Euclidean on L2-normalised vectors), e.g.
        users with more events since, or users the groups were not fitted on.
        """
        vectors = _normalise(vectors)
        if vectors.shape[1] != self.centroids.shape[1]:
            raise ValueError(
                f"vectors have {vectors.shape[1]} dims, the groups {self.centroids.shape[1]}: use the same model."
            )
        centroids = self.centroids.astype(np.float64)
        distances = (centroids**2).sum(1)[None, :] - 2.0 * vectors.astype(np.float64) @ centroids.T
        return np.argmin(distances, axis=1).astype(np.int64)

    def save(self, folder: str | Path) -> None:
        """Writes `groups.safetensors` (centroids, labels) and `groups.json` (users, settings) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "centroids": np.ascontiguousarray(self.centroids, dtype=np.float32),
                "labels": self.labels.astype(np.int64),
            },
            str(folder / GROUPS_WEIGHTS),
        )
        meta = {
            "user_ids": [str(u) for u in self.user_ids],
            "pooling": self.pooling,
            "seed": self.seed,
            "silhouette": self.silhouette,
            "silhouette_by_k": {str(k): v for k, v in self.silhouette_by_k.items()},
        }
        (folder / GROUPS_CONFIG).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> UserGroups:
        """Reads what `save` wrote."""
        folder = Path(folder)
        for name in (GROUPS_WEIGHTS, GROUPS_CONFIG):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is missing: save groups with UserGroups.save(folder).")
        tensors = load_file(str(folder / GROUPS_WEIGHTS))
        meta = json.loads((folder / GROUPS_CONFIG).read_text(encoding="utf-8"))
        if len(meta["user_ids"]) != len(tensors["labels"]):
            raise ValueError(f"{folder}: {len(meta['user_ids'])} user ids for {len(tensors['labels'])} labels.")
        return cls(
            centroids=tensors["centroids"],
            labels=tensors["labels"],
            user_ids=meta["user_ids"],
            pooling=meta["pooling"],
            seed=meta["seed"],
            silhouette=meta["silhouette"],
            silhouette_by_k={int(k): v for k, v in meta["silhouette_by_k"].items()},
        )


def discover_groups(
    vectors: np.ndarray,
    user_ids: Sequence | None = None,
    num_groups: int | None = None,
    min_groups: int = 2,
    max_groups: int = 10,
    seed: int = 0,
    pooling: str = "last",
    silhouette_sample_size: int | None = 5000,
) -> UserGroups:
    """
    Clusters users with scikit-learn k-means on L2-normalised interest vectors.

    Args:
        vectors: `(num_users, dims)` from `interest_vectors`.
        user_ids (*optional*): aligned with `vectors` (default: "0", "1", ...).
        num_groups (`int`, *optional*): the number of groups; when `None`, every k in `[min_groups, max_groups]` is
            tried and the one with the best cosine silhouette is kept.
        seed (`int`): k-means seed (the same seed gives the same groups).
        pooling (`str`): recorded with the groups.
        silhouette_sample_size (`int`, *optional*): users sampled (by `seed`) for the silhouette; `None`: all.

    Returns:
        `UserGroups`.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    points = _normalise(vectors)
    n = len(points)
    user_ids = [str(u) for u in (user_ids if user_ids is not None else range(n))]
    if len(user_ids) != n:
        raise ValueError(f"user_ids has {len(user_ids)} entries for {n} vectors.")
    candidates = [num_groups] if num_groups is not None else list(range(min_groups, max_groups + 1))
    if any(k < 2 for k in candidates) or max(candidates) >= n:
        raise ValueError(f"The number of groups must be in [2, {n - 1}] for {n} users, got {candidates}.")
    sample = None if silhouette_sample_size is None or n <= silhouette_sample_size else silhouette_sample_size
    best, scores = None, {}
    for k in candidates:
        kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(points)
        if len(np.unique(kmeans.labels_)) < 2:
            scores[k] = float("nan")
            continue
        scores[k] = float(
            silhouette_score(points, kmeans.labels_, metric="cosine", sample_size=sample, random_state=seed)
        )
        if best is None or scores[k] > scores[best[0]]:
            best = (k, kmeans)
    if best is None:
        raise ValueError("k-means found a single group for every k: the interest vectors are (nearly) identical.")
    k, kmeans = best
    return UserGroups(
        centroids=kmeans.cluster_centers_.astype(np.float32),
        labels=kmeans.labels_.astype(np.int64),
        user_ids=user_ids,
        pooling=pooling,
        seed=seed,
        silhouette=scores[k],
        silhouette_by_k={} if num_groups is not None else scores,
    )


def _attribute_summary(values: list) -> dict | None:
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return None
    try:
        numbers = np.array([float(v) for v in values])
        return {"median": float(np.median(numbers)), "mean": float(numbers.mean())}
    except (TypeError, ValueError):
        counts = Counter(map(str, values))
        return {value: round(count / len(values), 3) for value, count in counts.most_common(3)}


def _is_identifier_like(values: list) -> bool:
    """A column with more distinct values than half its users (zip codes, e-mails) says nothing about a group."""
    values = [v for v in values if v is not None and v != ""]
    return len(set(map(str, values))) > max(5, len(values) // 2)


def describe_groups(
    groups: UserGroups,
    histories: Sequence[Sequence],
    items=None,
    users=None,
    top_n: int = 5,
) -> list[dict]:
    """
    Describes each group: size, share, top items and categories of its members' histories, and user attributes.

    Args:
        groups: from `discover_groups`.
        histories: the members' histories (raw item ids), aligned with `groups.user_ids`.
        items (*optional*): item table with `item_id` and optionally `title` and `categories` (`BehaviorData.items`).
        users (*optional*): user table with `user_id` and attributes (`BehaviorData.users`); numeric attributes get
            the median and mean, categorical ones their three most common values with shares; identifier-like
            columns (more distinct values than half the users, e.g. zip codes) are left out.
        top_n (`int`): items and categories listed per group.

    Returns:
        a list with one dict per group: `group`, `size`, `share`, `top_items` (`[(item_id, title, share of the
        group's events)]`), `top_categories` (`[(category, share)]`), `attributes`.
    """
    if len(histories) != len(groups.labels):
        raise ValueError(f"histories has {len(histories)} rows for {len(groups.labels)} grouped users.")
    titles, categories = {}, {}
    if items is not None:
        ids = [str(i) for i in items["item_id"]]
        if "title" in items.column_names:
            titles = dict(zip(ids, items["title"]))
        if "categories" in items.column_names:
            categories = {i: c or [] for i, c in zip(ids, items["categories"])}
    user_rows = {}
    attribute_names = []
    if users is not None:
        attribute_names = [c for c in users.column_names if c != "user_id" and not _is_identifier_like(users[c])]
        user_rows = {str(row["user_id"]): row for row in users}
    descriptions = []
    total = len(groups.labels)
    for group in range(groups.num_groups):
        members = np.flatnonzero(groups.labels == group)
        item_counts = Counter(str(item) for index in members for item in histories[index])
        events = sum(item_counts.values()) or 1
        category_counts = Counter(
            c for item, n in item_counts.items() for c in categories.get(item, []) for _ in range(n)
        )
        category_total = sum(category_counts.values()) or 1
        attributes = {}
        for name in attribute_names:
            summary = _attribute_summary(
                [user_rows[groups.user_ids[i]][name] for i in members if groups.user_ids[i] in user_rows]
            )
            if summary is not None:
                attributes[name] = summary
        descriptions.append(
            {
                "group": group,
                "size": int(len(members)),
                "share": round(len(members) / total, 4),
                "top_items": [
                    (item, titles.get(item), round(n / events, 4)) for item, n in item_counts.most_common(top_n)
                ],
                "top_categories": [(c, round(n / category_total, 4)) for c, n in category_counts.most_common(top_n)],
                "attributes": attributes,
            }
        )
    return descriptions


@dataclass
class GroupMigration:
    """
    How users move between groups from one time window to the next.

    Attributes:
        boundaries: the window ends (unix seconds); a user's vector at a boundary reads their events before it.
        labels: `(num_windows, num_users)` group of each user at each boundary, `-1` with no event before it yet.
        matrices: `(num_windows - 1, k, k)` row-normalised: `matrices[w, i, j]` is the share of the users in group
            `i` at boundary `w` who are in group `j` at boundary `w + 1` (rows of groups nobody was in are 0).
        counts: the same as user counts.
        users_not_yet_active: per boundary, users with no event before it (left out of that window's rows).
    """

    boundaries: list[int]
    labels: np.ndarray
    matrices: np.ndarray
    counts: np.ndarray
    users_not_yet_active: list[int]


def migration_matrix(before: np.ndarray, after: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts and row-normalised shares of moves from group `before[u]` to `after[u]` (users with -1 ignored)."""
    before, after = np.asarray(before), np.asarray(after)
    keep = (before >= 0) & (after >= 0)
    counts = np.zeros((num_groups, num_groups), dtype=np.int64)
    np.add.at(counts, (before[keep], after[keep]), 1)
    rows = counts.sum(1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=np.float64), where=rows > 0)
    return counts, shares


def group_migration(
    model,
    tokenizer,
    groups: UserGroups,
    histories: Sequence[Sequence],
    timestamps: Sequence[Sequence[int]],
    num_windows: int = 3,
    boundaries: Sequence[int] | None = None,
    batch_size: int = 256,
) -> GroupMigration:
    """
    Follows users between groups over time: at each boundary, each user's interest vector from their events before
    it is assigned to the nearest group; consecutive boundaries give a migration matrix.

    Args:
        model, tokenizer: the model the groups were found with.
        groups: from `discover_groups` (same pooling is used).
        histories, timestamps: aligned with `groups.user_ids`; timestamps in seconds, oldest first.
        num_windows (`int`): boundaries at the time quantiles 1/n, 2/n, ..., 1 of all events, when `boundaries` is
            not given (the last boundary is after the last event).
        boundaries (*optional*): explicit boundaries (unix seconds, increasing).

    Returns:
        `GroupMigration`.
    """
    if len(histories) != len(timestamps) or len(histories) != len(groups.labels):
        raise ValueError("histories, timestamps and the grouped users must be aligned (same number of rows).")
    times = [np.asarray(t, dtype=np.int64) for t in timestamps]
    all_times = np.concatenate([t for t in times if len(t)])
    if boundaries is None:
        if num_windows < 2:
            raise ValueError(f"num_windows must be at least 2 to see a migration, got {num_windows}.")
        quantiles = np.quantile(all_times, np.arange(1, num_windows) / num_windows)
        boundaries = [*(int(q) for q in quantiles), int(all_times.max()) + 1]
    boundaries = [int(b) for b in boundaries]
    if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
        raise ValueError(f"boundaries must increase, got {boundaries}.")
    labels = np.full((len(boundaries), len(histories)), -1, dtype=np.int64)
    inactive = []
    for w, boundary in enumerate(boundaries):
        cut = [int(np.searchsorted(t, boundary, side="left")) for t in times]
        active = [i for i, c in enumerate(cut) if c > 0]
        inactive.append(len(histories) - len(active))
        if not active:
            continue
        vectors = interest_vectors(
            model,
            tokenizer,
            [list(histories[i])[: cut[i]] for i in active],
            [list(timestamps[i])[: cut[i]] for i in active],
            pooling=groups.pooling,
            batch_size=batch_size,
        )
        labels[w, active] = groups.assign(vectors)
    pairs = [migration_matrix(labels[w], labels[w + 1], groups.num_groups) for w in range(len(boundaries) - 1)]
    return GroupMigration(
        boundaries=boundaries,
        labels=labels,
        matrices=np.stack([shares for _, shares in pairs])
        if pairs
        else np.zeros((0, groups.num_groups, groups.num_groups)),
        counts=np.stack([counts for counts, _ in pairs])
        if pairs
        else np.zeros((0, groups.num_groups, groups.num_groups), np.int64),
        users_not_yet_active=inactive,
    )


def plot_groups(groups: UserGroups, vectors: np.ndarray, path: str | Path | None = None, title: str | None = None):
    """Scatter of the users in a 2-D PCA projection of their (normalised) interest vectors, coloured by group."""
    from sklearn.decomposition import PCA

    plt = headless_pyplot()
    points = PCA(n_components=2, random_state=groups.seed).fit_transform(_normalise(vectors))
    fig, ax = plt.subplots(figsize=(6, 5))
    sizes = groups.sizes()
    for group in range(groups.num_groups):
        mask = groups.labels == group
        ax.scatter(points[mask, 0], points[mask, 1], s=8, alpha=0.7, label=f"group {group} ({sizes[group]})")
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title or f"{groups.num_groups} user groups (interest vectors, PCA)")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_migration(migration: GroupMigration, window: int = -1, path: str | Path | None = None):
    """Heat map of one migration matrix (default: between the last two boundaries), shares annotated."""
    plt = headless_pyplot()
    matrix = migration.matrices[window]
    counts = migration.counts[window]
    k = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.7 * k))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(k), [str(j) for j in range(k)])
    ax.set_yticks(range(k), [f"{i} (n={counts[i].sum()})" for i in range(k)])
    ax.set(xlabel="group at the later boundary", ylabel="group at the earlier boundary", title="Group migration")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


__all__ = [
    "GroupMigration",
    "UserGroups",
    "describe_groups",
    "discover_groups",
    "group_migration",
    "interest_vectors",
    "migration_matrix",
    "plot_groups",
    "plot_migration",
]
