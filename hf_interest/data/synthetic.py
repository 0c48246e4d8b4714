"""Synthetic users whose interests drift and switch, with the ground truth a model can be scored against.

The generative process (all numpy, vectorised over users; the only Python loop is over time steps):

- `K` categories; every item has a primary category (each category gets items) and, sometimes, a secondary one;
  within a category, item popularity follows a Zipf law (`popularity_exponent`).
- Each user is in a *regime* `(A, B, w)`: two category distributions drawn from a symmetric Dirichlet
  (`concentration`; small values give focused tastes) and a mixing weight. The preference at an event is
  `theta = (1 - w) A + w B`, and `w` grows by `drift_rate` per event up to 1: interests *drift* from A to B.
- Before each event after the first, with probability `switch_probability` the regime is replaced by a fresh one
  (`A, B` new, `w = 0`): interests *switch*.
- An event draws a category from `theta`, then an item of that category by popularity; the time gap to the
  previous event is `1 + Exponential(mean_gap_seconds)` seconds (at least one second, so events of a user never
  tie and deduplication never removes one).
- Item-to-item structure (sequels, series, accessories, the next episode), when `successor_probability > 0`: every
  item has `num_successors` successor items with fixed weights `1/j` (normalised); after the first event, with
  probability `successor_probability` the next item is drawn from the previous item's successors instead of from
  the regime. The regime (drift and switches) evolves the same either way.

Ground truth: for every event, the distribution of the category of the user's *next* event given the latent state
after this event. Marginalising the switch (whose fresh `A` has the uniform distribution as mean) gives exactly
`(1 - s) * ((1 - w') A + w' B) + s / K` with `w' = min(w + drift_rate, 1)` (with successors: that law times
`1 - successor_probability`, plus `successor_probability` times the categories of this event's item's successors).
`next_item_probs` gives the whole next-item law the same way (regime part times the within-category popularity,
plus the successor part): ranked with the evaluation's exclusions, it is the optimum a next-item model is scored
against (`hf_interest.metrics.synthetic_oracle_scores`; it knows the latent regime, which a model can only infer from the history, so it is an
upper bound). No model that sees only the history can
beat it in expectation, so it is the ceiling to compare a category forecast (or an item model, through categories)
against. `next_category_probs` is aligned with the rows of `events`; `target_category_probs(split)` looks it up
for the targets of a split built from these events. `next_k_category_probs(k)` is the same ceiling for the category
mix of the next `k` events (an interest forecast), computed from the stored latent state (`latent`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .cleaning import CleaningConfig
from .columns import ColumnMapping, ItemColumns
from .loading import load_behaviors
from .vocab import dataset_table

CATEGORY_NAMES = (
    "action", "comedy", "drama", "science", "music", "sports", "travel", "cooking", "history", "fantasy",
    "romance", "horror", "technology", "fashion", "health", "finance", "gaming", "nature", "art", "politics",
    "education", "animals", "cars", "poetry",
)  # fmt: skip
_ADJECTIVES = (
    "quiet", "bright", "hidden", "golden", "wild", "silent", "broken", "endless", "little", "distant", "secret",
    "frozen", "electric", "gentle", "lost", "crimson",
)  # fmt: skip
_NOUNS = (
    "harbor", "garden", "signal", "river", "machine", "voyage", "kingdom", "letter", "forest", "engine", "mirror",
    "island", "festival", "archive", "lantern", "summit",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the drifting-interest generator (defaults: 1000 users, 500 items, 16 categories).

    Args:
        num_users: Number of users.
        num_items: Number of items (at least `num_categories`).
        num_categories: Number of categories.
        min_events: Shortest sequence.
        max_events: Longest sequence.
        concentration: Dirichlet concentration of preferences (smaller: more focused users).
        drift_rate: Per-event growth of the drift weight `w` (0: no drift).
        switch_probability: Probability of an interest switch before each event (0: no switches).
        popularity_exponent: Zipf exponent of item popularity within a category.
        secondary_category_probability: Probability that an item also carries a second category.
        mean_gap_seconds: Mean time between two events of a user.
        start_time: Earliest first event (unix seconds).
        start_spread_seconds: Users start uniformly within this window after `start_time`.
        seed: Random seed; the same seed gives the same data, bit for bit.
        ground_truth: Compute `next_category_probs` and keep the latent state (`latent`, for
            `next_k_category_probs`); turn off for very large benchmarks: it is `events x K` floats and more.
        successor_probability: Probability that an event after the first is drawn from the previous item's
            successors rather than from the regime (0: no item-to-item structure, the data of earlier versions).
        num_successors: Successors per item (weights `1/j`, normalised), when `successor_probability > 0`.
        successor_same_category: Probability that a successor is drawn from its item's own primary category (by
            popularity) rather than uniformly from the whole catalogue.
    """

    num_users: int = 1000
    num_items: int = 500
    num_categories: int = 16
    min_events: int = 20
    max_events: int = 100
    concentration: float = 0.2
    drift_rate: float = 0.02
    switch_probability: float = 0.02
    popularity_exponent: float = 1.0
    secondary_category_probability: float = 0.3
    mean_gap_seconds: float = 3 * 3600.0
    start_time: int = 1_600_000_000
    start_spread_seconds: int = 30 * 86_400
    seed: int = 0
    ground_truth: bool = True
    successor_probability: float = 0.0
    num_successors: int = 3
    successor_same_category: float = 0.5

    def __post_init__(self):
        positive = ("num_users", "num_items", "num_categories", "min_events", "max_events", "concentration")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"SyntheticConfig.{name} must be positive, got {getattr(self, name)!r}.")
        if self.min_events > self.max_events:
            raise ValueError(
                f"SyntheticConfig.min_events ({self.min_events}) must not exceed max_events ({self.max_events})."
            )
        if self.num_items < self.num_categories:
            raise ValueError(
                f"SyntheticConfig.num_items ({self.num_items}) must be at least num_categories "
                f"({self.num_categories}) so that every category has an item."
            )
        if self.num_successors < 1:
            raise ValueError(f"SyntheticConfig.num_successors must be at least 1, got {self.num_successors!r}.")
        for name in (
            "drift_rate",
            "switch_probability",
            "secondary_category_probability",
            "successor_probability",
            "successor_same_category",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SyntheticConfig.{name} must be in [0, 1], got {getattr(self, name)!r}.")
        if self.mean_gap_seconds < 0 or self.start_spread_seconds < 0:
            raise ValueError("SyntheticConfig.mean_gap_seconds and start_spread_seconds must be non-negative.")

    @classmethod
    def small(cls, **overrides) -> SyntheticConfig:
        """Tiny settings for unit tests (64 users, 48 items, 6 categories, 6-16 events); `overrides` win."""
        settings = {"num_users": 64, "num_items": 48, "num_categories": 6, "min_events": 6, "max_events": 16}
        return cls(**(settings | overrides))


@dataclass
class SyntheticLatentState:
    """The hidden state of every event: the regime `(A, B)` and the drift weight `w` the event was drawn with.

    Regimes are stored once each, not once per event: a user starts in one regime and gets a new one at every
    switch, so there are `num_users + number of switches` regimes (switches counted over all `max_events` steps of
    the vectorised loop, including steps after a user's last event). Memory is `2 * num_regimes * K * 4` bytes for
    the regime tables plus 8 bytes per event (`regime` int32 and `drift_weight` float32), against
    `num_events * K * 4` bytes for `next_category_probs` itself; `event_a` / `event_b` give per-event rows on demand.

    Args:
        regime_a: `(num_regimes, K)` float32, the distribution `A` of each regime.
        regime_b: `(num_regimes, K)` float32, the distribution `B` of each regime.
        regime: `(num_events,)` int32, aligned with `events`: the regime of each event.
        drift_weight: `(num_events,)` float32, aligned with `events`: the `w` of each event, so that the event's
            category was drawn from `theta = (1 - w) A + w B` (after this step's drift increment and switch).
    """

    regime_a: np.ndarray
    regime_b: np.ndarray
    regime: np.ndarray
    drift_weight: np.ndarray

    @property
    def event_a(self) -> np.ndarray:
        """`(num_events, K)` float32: `A` of each event's regime (a gathered copy)."""
        return self.regime_a[self.regime]

    @property
    def event_b(self) -> np.ndarray:
        """`(num_events, K)` float32: `B` of each event's regime (a gathered copy)."""
        return self.regime_b[self.regime]

    def theta(self) -> np.ndarray:
        """`(num_events, K)` float32: the category law each event was drawn from, `(1 - w) A + w B`."""
        w = self.drift_weight.astype(np.float64)[:, None]
        return ((1.0 - w) * self.event_a + w * self.event_b).astype(np.float32)


@dataclass
class SyntheticInterestData:
    """What `generate_synthetic_interests` returns.

    Args:
        config: The settings used.
        events: One row per event, in time order (ties by user, then step): `user_id`, `item_id`, `timestamp`,
            `category` (primary category of the item), `step` (position in the user's sequence).
        items: `item_id`, `title`, `categories` (primary first), `primary_category`, `text`.
        category_names: Name of each category index.
        next_category_probs: `(num_events, K)` float32, aligned with `events`: the true distribution of the
            category of the user's next event (see the module docstring); `None` if `config.ground_truth` is off.
        user_offsets: Start of each user's events in user-major order (`num_users + 1` values).
        user_major: Row of `events` of each event in user-major order (user, then step).
        primary_category_index: `(num_items,)` int64: the primary category index of each raw item id (`item_id`
            `i` is row `i`), e.g. for one-hot item -> category weights `np.eye(K)[primary_category_index]`
            (reindex by the vocabulary for model inputs: `ItemTokenizer` indices are not raw ids).
        latent: The latent state of every event (`SyntheticLatentState`); `None` if `config.ground_truth` is off.
        within_category_probability: `(num_items,)` float64: P(item | its primary category), the popularity law an
            event of that category draws its item from.
        successors: `(num_items, num_successors)` int64 raw item ids, or None without item-to-item structure.
        successor_weights: `(num_successors,)` float64, the probability of each successor slot, or None.
    """

    config: SyntheticConfig
    events: pa.Table
    items: pa.Table
    category_names: list[str]
    next_category_probs: np.ndarray | None
    user_offsets: np.ndarray
    user_major: np.ndarray
    primary_category_index: np.ndarray | None = None
    latent: SyntheticLatentState | None = None
    within_category_probability: np.ndarray | None = None
    successors: np.ndarray | None = None
    successor_weights: np.ndarray | None = None

    def to_behavior_data(self, split="leave_one_out", cleaning: CleaningConfig | None = None):
        """Run the events through `load_behaviors` (the same path as real data).

        Args:
            split: Split protocol (default leave-one-out).
            cleaning: Cleaning steps; with filtering steps, `target_category_probs` no longer applies.

        Returns:
            A `BehaviorData` whose items carry titles, categories and text.
        """
        return load_behaviors(
            self.events,
            columns=ColumnMapping(
                user="user_id", item="item_id", timestamp="timestamp", event_type=False, rating=False
            ),
            items=self.items,
            item_columns=ItemColumns(item="item_id", title="title", categories="categories", text="text"),
            cleaning=cleaning,
            split=split,
        )

    def target_category_probs(self, dataset) -> np.ndarray:
        """Ground-truth category distribution of the target of every row of an evaluation split.

        The target of a row with history length h is the user's event h; its category distribution is the one
        predicted after event h - 1. Valid for splits of `to_behavior_data()` without filtering, capping or
        `max_history` (the history must be the whole prefix of the user's sequence).

        Args:
            dataset: An evaluation split (`user_id`, `item_ids`, `target_item_id`).

        Returns:
            `(rows, K)` float32 probabilities.
        """
        if self.next_category_probs is None:
            raise ValueError("This synthetic data was generated with ground_truth=False.")
        table = dataset_table(dataset)
        users = pc.cast(table.column("user_id"), pa.int64()).to_numpy()
        history = pc.list_value_length(table.column("item_ids")).to_numpy()
        if (history < 1).any():
            raise ValueError("Every row needs at least one history event to have a ground-truth prediction.")
        rows = self.user_major[self.user_offsets[users] + history - 1]
        return self.next_category_probs[rows]

    def next_item_probs(self, dataset, start: int = 0, stop: int | None = None) -> np.ndarray:
        """
        The exact law of the target item of rows `start:stop` of an evaluation split, given the latent state after
        the row's last history event: with `p = successor_probability`, `s = switch_probability`,
        `w' = min(w + drift_rate, 1)` and the previous item `j`,

            P(i) = (1 - p) * [(1 - s) ((1 - w') A + w' B) + s / K]_{c(i)} * P(i | c(i)) + p * S(j, i),

        where `c(i)` is the item's primary category, `P(i | c)` its popularity within it
        (`within_category_probability`) and `S(j, i)` the weight of `i` among `j`'s successors. The switch
        marginalises as in `next_category_probs` (a fresh regime's mean is uniform), and the successor draw is
        independent of the regime. Valid for splits of `to_behavior_data()` without filtering (as
        `target_category_probs`).

        Args:
            dataset: An evaluation split (`user_id`, `item_ids`).
            start, stop: The rows to compute (a batch: the result is `rows x num_items`).

        Returns:
            `(rows, num_items)` float64, columns indexed by raw item id; rows sum to 1.
        """
        if self.latent is None:
            raise ValueError("This synthetic data was generated with ground_truth=False: no latent state is stored.")
        table = dataset_table(dataset).slice(start, None if stop is None else stop - start)
        users = pc.cast(table.column("user_id"), pa.int64()).to_numpy()
        history = pc.list_value_length(table.column("item_ids")).to_numpy()
        if (history < 1).any():
            raise ValueError("Every row needs at least one history event to have a ground-truth prediction.")
        lengths = np.diff(self.user_offsets)
        known = (users >= 0) & (users < len(lengths))
        fits = known & (history <= lengths[np.where(known, users, 0)])  # a user of this world, long enough
        users, history = np.where(fits, users, 0), np.where(fits, history, 1)  # placeholders, refused below
        rows = self.user_major[self.user_offsets[users] + history - 1]
        items = self.events.column("item_id").to_numpy()
        histories = table.column("item_ids").combine_chunks()
        offsets = histories.offsets.to_numpy()  # of a slice: absolute, while flatten() starts at offsets[0]
        last = pc.cast(histories.flatten(), pa.int64()).to_numpy()[offsets[1:] - offsets[0] - 1]
        if not fits.all() or not np.array_equal(items[rows], last):
            raise ValueError(
                "The split's histories are not prefixes of these generated events (filtered, capped or from another "
                "world): its rows cannot be matched to a latent state. Build it with to_behavior_data() unfiltered."
            )
        config, latent = self.config, self.latent
        s, rho, K = config.switch_probability, config.drift_rate, config.num_categories
        w_next = np.minimum(latent.drift_weight[rows].astype(np.float64) + rho, 1.0)[:, None]
        regime = latent.regime[rows]
        categories = (1.0 - s) * ((1.0 - w_next) * latent.regime_a[regime] + w_next * latent.regime_b[regime]) + s / K
        primary = self.primary_category_index
        probs = categories[:, primary] * self.within_category_probability[None, :]  # (rows, N)
        if self.successors is not None:
            p = config.successor_probability
            probs *= 1.0 - p
            previous = items[rows]
            for slot, weight in enumerate(self.successor_weights):
                np.add.at(probs, (np.arange(len(rows)), self.successors[previous, slot]), p * weight)
        return probs

    def next_k_category_probs(self, k: int) -> np.ndarray:
        """Expected category mix of the user's next `k` events given the latent state after each event.

        With `s = switch_probability`, `rho = drift_rate` and `theta(w) = (1 - w) A + w B`, the value for an event
        with state `(A, B, w)` is

            (1 / k) * sum_{j=1..k} [ (1 - s)^j theta(w_j) + (1 - (1 - s)^j) / K ],   w_j = min(w + j * rho, 1).

        Derivation, from `generate_synthetic_interests`: at every step after the first, the generator draws the
        switch, then sets `w = min(w + rho, 1)`, then on a switch replaces `A, B` by fresh Dirichlet draws and sets
        `w = 0`; only then does it draw the event's category from `theta(w)`. So the `w` stored for an event (in
        `latent.drift_weight`) already includes its own step's increment or reset. For event `t + j`:
        - no switch at any of the steps `t+1 .. t+j` (probability `(1 - s)^j`, the switch draws being independent):
          the regime is unchanged and `w` has grown `j` times, `min(min(w + rho, 1) + rho, 1) = min(w + 2 rho, 1)`
          and so on, giving `theta(w_j)`;
        - otherwise the regime at `t + j` comes from the last switch: its `A', B'` are fresh symmetric-Dirichlet draws
          independent of everything else, and its weight `w''` depends only on when that switch happened, so
          `E[(1 - w'') A' + w'' B'] = 1 / K` (uniform) whatever `w''` is.
        The category of event `t + j` is drawn from that step's `theta`, so its law given the state after event `t`
        is the bracket above; averaging the one-hot categories of the `k` events gives the formula (sequence lengths
        are drawn independently of the regimes, so conditioning on the user having `k` more events changes nothing).
        For `k = 1` it is `next_category_probs`. Since cross-entropy is linear in the target, this expectation
        minimises the expected cross-entropy (and KL) against the empirical next-`k` mix: the ceiling for a
        forecast. Values are also defined for events with fewer than `k` later events (the continuation the user
        would have had); exclude those positions when scoring against observed events.

        Args:
            k: The forecast horizon (number of next events), at least 1.

        Returns:
            `(num_events, K)` float32, aligned with `events`; rows sum to 1.
        """
        self._check_latent("next_k_category_probs", k)
        if self.successors is not None and k > 1:
            raise ValueError(
                "next_k_category_probs is derived for k = 1 only when successor_probability > 0 (a chain of "
                "successors makes the next k events depend on each other's items); use next_category_probs."
            )
        if self.successors is not None:
            return self.next_category_probs
        return self._next_k_mix(k, self.latent.event_a, self.latent.event_b)

    def _check_latent(self, name: str, k) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} needs a positive integer horizon k, got {k!r}.")
        if self.latent is None:
            raise ValueError("This synthetic data was generated with ground_truth=False: no latent state is stored.")

    def _next_k_mix(self, k: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The next-k formula of `next_k_category_probs` with per-event `A` and `B` (or their expectations)."""
        s, rho, K = self.config.switch_probability, self.config.drift_rate, self.config.num_categories
        w = self.latent.drift_weight.astype(np.float64)
        weight_a = np.zeros_like(w)  # (1/k) sum_j (1-s)^j (1 - w_j), accumulated over j to keep memory O(events)
        weight_b = np.zeros_like(w)  # (1/k) sum_j (1-s)^j w_j
        uniform = 0.0  # (1/k) sum_j (1 - (1-s)^j) / K
        for j in range(1, int(k) + 1):
            stay = (1.0 - s) ** j
            w_j = np.minimum(w + j * rho, 1.0)
            weight_a += stay * (1.0 - w_j)
            weight_b += stay * w_j
            uniform += (1.0 - stay) / K
        probs = weight_a[:, None] * a + weight_b[:, None] * b
        probs += uniform
        return (probs / k).astype(np.float32)

    def informed_next_k_category_probs(self, k: int, seed: int = 0) -> np.ndarray:
        """The next-`k` category forecast of an observer who sees the history *and* part of the latent state.

        `next_k_category_probs` knows the regime's `A` and `B` exactly, which no forecaster that reads the history
        can. This observer is between the two: it knows when the user's current regime began (so its drift weight
        `w`) and, for every event of the regime so far, whether its category was drawn from the `A` or the `B` side
        of `theta = (1 - w) A + w B`, but not `A` and `B` themselves. Its forecast is exact Bayes: given the sides,
        `A` and `B` have independent Dirichlet posteriors `Dir(alpha + n_A)` and `Dir(alpha + n_B)` (`n_A` counts
        the categories drawn from `A` in the regime up to and including the event), and the next-`k` formula is
        linear in `A` and `B`, so the forecast is that formula with their posterior means.

        The sides are not drawn by the generator (it draws the category from `theta` directly); they are sampled
        here from their law given the latent state, `P(side = B) = w B_c / theta_c`, with `seed`. That gives the
        same joint law of latent state, sides and categories as a generator that drew the side first, and the
        future depends on the past only through the latent state, so this observer's information contains the
        history's: **no history-only forecast has a lower expected cross-entropy** (the Bayes forecast on less
        information cannot beat the Bayes forecast on more). Its cross-entropy is therefore a floor for any model,
        closer to what is reachable than `next_k_category_probs`'.

        Args:
            k: The forecast horizon (number of next events), at least 1.
            seed: Seed of the sampled sides.

        Returns:
            `(num_events, K)` float32, aligned with `events`; rows sum to 1.
        """
        self._check_latent("informed_next_k_category_probs", k)
        if self.successors is not None:
            raise ValueError("informed_next_k_category_probs is derived for data without successors only.")
        K, alpha = self.config.num_categories, self.config.concentration
        category = pc.index_in(self.events.column("category"), value_set=pa.array(self.category_names))
        category = category.to_numpy(zero_copy_only=False).astype(np.int64)  # (events,) category index
        a, b = self.latent.event_a.astype(np.float64), self.latent.event_b.astype(np.float64)
        w = self.latent.drift_weight.astype(np.float64)
        rows = np.arange(len(category))
        from_b = w * b[rows, category]
        theta = (1.0 - w) * a[rows, category] + from_b
        side_b = np.random.default_rng(seed).random(len(category)) * theta < from_b  # (events,)

        # Counts of A-side and B-side categories per regime up to each event: cumulative sums in user-major order
        # (a regime is a contiguous run of one user's events), minus the sums before the regime's first event.
        order = self.user_major
        regime = self.latent.regime[order]
        one_hot = np.zeros((len(order), K))
        one_hot[np.arange(len(order)), category[order]] = 1.0
        starts = np.flatnonzero(np.concatenate(([True], regime[1:] != regime[:-1])))
        run_start = starts[np.searchsorted(starts, np.arange(len(order)), side="right") - 1]
        posterior = {}
        for name, mask in (("a", ~side_b[order]), ("b", side_b[order])):
            counts = np.cumsum(one_hot * mask[:, None], axis=0)
            before = np.where((run_start > 0)[:, None], counts[np.maximum(run_start - 1, 0)], 0.0)
            counts = counts - before
            mean = (alpha + counts) / (K * alpha + counts.sum(axis=1, keepdims=True))
            posterior[name] = np.empty_like(mean)
            posterior[name][order] = mean  # back to the row order of `events`
        return self._next_k_mix(k, posterior["a"], posterior["b"])


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (rows, K) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def generate_synthetic_interests(config: SyntheticConfig | None = None, **overrides) -> SyntheticInterestData:
    """Generate users with drifting and switching category preferences, deterministically from `config.seed`.

    Args:
        config: Settings (default `SyntheticConfig()`).
        **overrides: Fields of `SyntheticConfig` to change, e.g. `num_users=50, seed=3`.

    Returns:
        A `SyntheticInterestData`.
    """
    config = config or SyntheticConfig()
    if overrides:
        config = SyntheticConfig(**(asdict(config) | overrides))
    rng = np.random.default_rng(config.seed)
    K, n_items, n_users = config.num_categories, config.num_items, config.num_users
    names = [CATEGORY_NAMES[k] if k < len(CATEGORY_NAMES) else f"category_{k}" for k in range(K)]

    # Items: primary category (every category used), optional secondary, Zipf popularity within the category.
    primary = rng.permutation(np.arange(n_items) % K)
    has_secondary = rng.random(n_items) < config.secondary_category_probability
    secondary = (primary + rng.integers(1, max(K, 2), n_items)) % K
    has_secondary &= K > 1
    by_category = np.lexsort((rng.random(n_items), primary))  # items grouped by category, random order within
    sorted_category = primary[by_category]
    category_start = np.searchsorted(sorted_category, np.arange(K + 1))
    rank = np.arange(n_items) - category_start[sorted_category]
    weight = 1.0 / (rank + 1.0) ** config.popularity_exponent
    cum = np.cumsum(weight)
    before = np.concatenate(([0.0], cum))[category_start[sorted_category]]
    total = np.concatenate(([0.0], cum))[category_start[1:]] - np.concatenate(([0.0], cum))[category_start[:-1]]
    within_cdf = (cum - before) / total[sorted_category]  # in (0, 1], reaching 1 at each category's last item
    global_cdf = sorted_category + within_cdf

    def sample_items(categories: np.ndarray) -> np.ndarray:
        position = np.searchsorted(global_cdf, categories + rng.random(len(categories)), side="right")
        position = np.minimum(position, category_start[categories + 1] - 1)
        return by_category[position]

    # P(item | its primary category): the Zipf weight over its category's total, indexed by raw item id.
    within_probability = np.empty(n_items)
    within_probability[by_category] = weight / total[sorted_category]

    # Item-to-item structure: each item's successors (drawn only when used, so data without it is unchanged).
    p_follow, successors, successor_weights = config.successor_probability, None, None
    if p_follow > 0:
        m = config.num_successors
        successor_weights = 1.0 / np.arange(1, m + 1)
        successor_weights /= successor_weights.sum()
        own = np.repeat(primary, m)
        same = rng.random(n_items * m) < config.successor_same_category
        drawn = np.where(same, sample_items(own), rng.integers(0, n_items, n_items * m))
        itself = drawn == np.repeat(np.arange(n_items), m)
        drawn[itself] = (drawn[itself] + 1) % n_items  # never an item's own successor
        successors = drawn.reshape(n_items, m)

    # Users.
    lengths = rng.integers(config.min_events, config.max_events + 1, n_users)
    alpha = np.full(K, config.concentration)
    regime_a = rng.dirichlet(alpha, n_users)
    regime_b = rng.dirichlet(alpha, n_users)
    weight_w = np.zeros(n_users)
    clock = config.start_time + rng.integers(0, config.start_spread_seconds + 1, n_users)
    s, rho = config.switch_probability, config.drift_rate
    # Latent-state bookkeeping (ground truth only; it draws nothing, so the random stream is the same either way):
    # every regime once, and the current regime id of each user.
    regimes_a = [regime_a.astype(np.float32)] if config.ground_truth else []
    regimes_b = [regime_b.astype(np.float32)] if config.ground_truth else []
    regime_id = np.arange(n_users, dtype=np.int64)
    num_regimes = n_users

    out_user, out_step, out_time, out_item, out_truth, out_regime, out_w = [], [], [], [], [], [], []
    previous = None  # each user's item at the last step
    for step in range(config.max_events):  # loop over time steps; each step is vectorised over users
        if step > 0:
            switch = rng.random(n_users) < s
            weight_w = np.minimum(weight_w + rho, 1.0)
            n_switch = int(switch.sum())
            if n_switch:
                regime_a[switch] = rng.dirichlet(alpha, n_switch)
                regime_b[switch] = rng.dirichlet(alpha, n_switch)
                weight_w[switch] = 0.0
                if config.ground_truth:
                    regimes_a.append(regime_a[switch].astype(np.float32))
                    regimes_b.append(regime_b[switch].astype(np.float32))
                    regime_id[switch] = num_regimes + np.arange(n_switch)
                    num_regimes += n_switch
            clock = clock + 1 + np.floor(rng.exponential(config.mean_gap_seconds, n_users)).astype(np.int64)
        theta = (1.0 - weight_w)[:, None] * regime_a + weight_w[:, None] * regime_b
        categories = _categorical(rng, theta)
        items = sample_items(categories)
        if successors is not None and step > 0:  # a sequel, the next episode: from the previous item's successors
            follow = rng.random(n_users) < p_follow
            choice = rng.choice(len(successor_weights), size=n_users, p=successor_weights)
            items = np.where(follow, successors[previous, choice], items)
        previous = items
        active = np.flatnonzero(step < lengths)
        out_user.append(active)
        out_step.append(np.full(len(active), step, dtype=np.int32))
        out_time.append(clock[active])
        out_item.append(items[active])
        if config.ground_truth:
            w_next = np.minimum(weight_w[active] + rho, 1.0)[:, None]
            drifted = (1.0 - w_next) * regime_a[active] + w_next * regime_b[active]
            truth = (1.0 - s) * drifted + s / K
            if successors is not None:  # the next event follows this event's item with probability p_follow
                followed = np.zeros_like(truth)
                for j, weight_j in enumerate(successor_weights):
                    np.add.at(followed, (np.arange(len(active)), primary[successors[items[active], j]]), weight_j)
                truth = (1.0 - p_follow) * truth + p_follow * followed
            out_truth.append(truth.astype(np.float32))
            out_regime.append(regime_id[active])
            out_w.append(weight_w[active].astype(np.float32))

    user = np.concatenate(out_user)
    step = np.concatenate(out_step)
    time = np.concatenate(out_time)
    item = np.concatenate(out_item)
    order = np.lexsort((step, user, time))  # global time order, ties by user then step
    user, step, time, item = user[order], step[order], time[order], item[order]
    truth = np.concatenate(out_truth)[order] if config.ground_truth else None
    latent = None
    if config.ground_truth:
        latent = SyntheticLatentState(
            regime_a=np.concatenate(regimes_a),
            regime_b=np.concatenate(regimes_b),
            regime=np.concatenate(out_regime)[order].astype(np.int32 if num_regimes < 2**31 else np.int64),
            drift_weight=np.concatenate(out_w)[order],
        )
    user_major = np.lexsort((step, user))
    user_offsets = np.concatenate(([0], np.cumsum(np.bincount(user, minlength=n_users))))

    category_names = pa.array(names)
    events = pa.table(
        {
            "user_id": pa.array(user.astype(np.int64)),
            "item_id": pa.array(item.astype(np.int64)),
            "timestamp": pa.array(time.astype(np.int64)),
            "category": category_names.take(pa.array(primary[item])),
            "step": pa.array(step),
        }
    )

    # Item side information: titles and text from small word lists, all in Arrow.
    adjectives = pa.array(_ADJECTIVES).take(pa.array(rng.integers(0, len(_ADJECTIVES), n_items)))
    nouns = pa.array(_NOUNS).take(pa.array(rng.integers(0, len(_NOUNS), n_items)))
    numbers = pc.cast(pa.array(np.arange(n_items)), pa.string())
    title = pc.utf8_capitalize(pc.binary_join_element_wise(adjectives, nouns, numbers, " "))
    primary_names = category_names.take(pa.array(primary))
    secondary_names = category_names.take(pa.array(secondary))
    cat_lengths = 1 + has_secondary.astype(np.int32)
    cat_values = np.empty(int(cat_lengths.sum()), dtype=np.int64)
    first_slot = np.concatenate(([0], np.cumsum(cat_lengths)[:-1]))
    cat_values[first_slot] = primary
    cat_values[first_slot[has_secondary] + 1] = secondary[has_secondary]
    categories = pa.ListArray.from_arrays(
        pa.array(np.concatenate(([0], np.cumsum(cat_lengths))).astype(np.int32)),
        category_names.take(pa.array(cat_values)),
    )
    also = pc.if_else(
        pa.array(has_secondary), pc.binary_join_element_wise(" It also touches on ", secondary_names, ".", ""), ""
    )
    text = pc.binary_join_element_wise("A ", adjectives, " ", primary_names, " item about a ", nouns, ".", also, "")
    items_table = pa.table(
        {
            "item_id": pa.array(np.arange(n_items, dtype=np.int64)),
            "title": title,
            "categories": categories,
            "primary_category": primary_names,
            "text": text,
        }
    )
    return SyntheticInterestData(
        config=config,
        events=events,
        items=items_table,
        category_names=names,
        next_category_probs=truth,
        user_offsets=user_offsets,
        user_major=user_major,
        primary_category_index=primary.astype(np.int64),
        latent=latent,
        within_category_probability=within_probability,
        successors=successors,
        successor_weights=successor_weights,
    )
