"""The synthetic next-k oracle: the stored latent state follows the generator, and `next_k_category_probs` is the
law of the next k categories (checked by Monte Carlo, with a test that also rejects plausible wrong formulas)."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from hf_interest.data import SyntheticConfig, generate_synthetic_interests
from hf_interest.metrics import forecast_metrics, next_k_category_mix, recent_category_mix

PAD = -100
K, HORIZON = 5, 5
# Many users, strong drift and frequent switches, so that a wrong drift or switch term shows.
MONTE_CARLO = SyntheticConfig(
    num_users=3000, num_items=60, num_categories=K, min_events=30, max_events=40, drift_rate=0.05,
    switch_probability=0.05, seed=11,
)  # fmt: skip
# Each statistic below is a mean over users of a per-user sum; users are independent, so the standard error is the
# users' standard deviation / sqrt(num_users), and |mean| <= 4.5 standard errors holds with probability ~1 - 7e-6
# per statistic when the formula is right (a dozen statistics: a false failure about once in 10^4 seeds).
Z_LIMIT = 4.5


@pytest.fixture(scope="module")
def monte_carlo():
    data = generate_synthetic_interests(MONTE_CARLO)
    lengths = np.diff(data.user_offsets)
    position = np.arange(MONTE_CARLO.max_events)[None, :]
    valid = position < lengths[:, None]
    event = data.user_major[np.where(valid, data.user_offsets[:-1, None] + position, 0)]  # (users, T) -> events row
    item_rows = np.where(valid, data.events.column("item_id").to_numpy()[event], PAD)
    item_weights = np.eye(K)[data.primary_category_index]  # one-hot: the generator draws primary categories
    targets, full = next_k_category_mix(item_rows, item_weights, HORIZON, pad=PAD)
    return data, event, item_rows, item_weights, targets, full


def z_score(values, full):
    """Mean over users of the per-user sum of `values` over full positions, in standard errors."""
    per_user = np.where(full, values, 0.0).sum(axis=1)
    return per_user.mean() / (per_user.std(ddof=1) / np.sqrt(len(per_user)))


def reference_next_k(data, k, shift=0, switch=None):
    """The formula one event at a time (optionally with a wrong drift offset or switch probability)."""
    s = data.config.switch_probability if switch is None else switch
    rho, latent, num_categories = data.config.drift_rate, data.latent, data.config.num_categories
    out = np.zeros((data.events.num_rows, num_categories))
    for j in range(1, k + 1):
        w_j = np.minimum(latent.drift_weight.astype(np.float64) + (j + shift) * rho, 1.0)[:, None]
        out += (1 - s) ** j * ((1 - w_j) * latent.event_a + w_j * latent.event_b) + (1 - (1 - s) ** j) / num_categories
    return out / k


def test_latent_state_follows_the_generator():
    config = SyntheticConfig.small(drift_rate=0.1, switch_probability=0.2, seed=4)
    data = generate_synthetic_interests(config)
    latent = data.latent
    n = data.events.num_rows
    assert latent.regime.shape == latent.drift_weight.shape == (n,)
    assert latent.regime_a.dtype == latent.regime_b.dtype == latent.drift_weight.dtype == np.float32
    assert latent.regime_a.shape == latent.regime_b.shape and latent.regime_a.shape[1] == 6
    assert latent.regime_a.shape[0] < n  # regimes are stored once each, not per event
    np.testing.assert_allclose(latent.regime_a.sum(axis=1), 1.0, atol=1e-5)
    order = data.user_major
    users = data.events.column("user_id").to_numpy()[order]
    regime, w = latent.regime[order].astype(np.int64), latent.drift_weight[order].astype(np.float64)
    first = np.r_[True, users[1:] != users[:-1]]
    np.testing.assert_array_equal(regime[first], users[first])  # user u starts in regime u with w = 0
    assert (w[first] == 0).all()
    later = np.flatnonzero(~first)
    kept = regime[later] == regime[later - 1]
    # Without a switch w grows by the drift rate up to 1; a switch starts a new regime (never seen before) at w = 0.
    np.testing.assert_allclose(w[later[kept]], np.minimum(w[later[kept] - 1] + 0.1, 1.0), atol=1e-6)
    assert (w[later[~kept]] == 0).all() and (regime[later[~kept]] > regime[later[~kept] - 1]).all()
    assert 0.1 < (~kept).mean() < 0.3  # about switch_probability of the steps switch
    assert (w == 1.0).any()  # the cap is reached
    assert generate_synthetic_interests(SyntheticConfig.small(ground_truth=False)).latent is None


def test_primary_category_index():
    data = generate_synthetic_interests(SyntheticConfig.small(seed=2))
    primary = data.primary_category_index
    assert primary.shape == (data.items.num_rows,) and primary.dtype == np.int64
    assert data.items.column("item_id").to_pylist() == list(range(data.items.num_rows))
    names = np.asarray(data.category_names)
    assert names[primary].tolist() == data.items.column("primary_category").to_pylist()
    event_items = data.events.column("item_id").to_numpy()
    assert names[primary[event_items]].tolist() == data.events.column("category").to_pylist()


def test_next_k_formula_and_its_special_cases():
    data = generate_synthetic_interests(SyntheticConfig.small(drift_rate=0.1, switch_probability=0.2, seed=4))
    one = data.next_k_category_probs(1)
    assert one.dtype == np.float32 and one.shape == data.next_category_probs.shape
    # k = 1 is the existing next-event law (regimes kept in float32: equal up to float32 rounding).
    np.testing.assert_allclose(one, data.next_category_probs, atol=1e-6, rtol=0)
    for k in (2, 3, 12):
        probs = data.next_k_category_probs(k)
        np.testing.assert_allclose(probs, reference_next_k(data, k), atol=1e-6, rtol=0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # By hand for one event, straight from the definition.
    row = 7
    a, b = data.latent.event_a[row].astype(float), data.latent.event_b[row].astype(float)
    w = float(data.latent.drift_weight[row])
    w1, w2 = min(w + 0.1, 1.0), min(w + 0.2, 1.0)
    by_hand = (0.8 * ((1 - w1) * a + w1 * b) + 0.2 / 6 + 0.64 * ((1 - w2) * a + w2 * b) + 0.36 / 6) / 2
    np.testing.assert_allclose(data.next_k_category_probs(2)[row], by_hand, atol=1e-6)
    # No drift and no switch: the law never changes, whatever the horizon. Always switching: uniform.
    still = generate_synthetic_interests(SyntheticConfig.small(drift_rate=0.0, switch_probability=0.0))
    np.testing.assert_allclose(still.next_k_category_probs(9), still.latent.theta(), atol=1e-6)
    chaos = generate_synthetic_interests(SyntheticConfig.small(switch_probability=1.0))
    np.testing.assert_allclose(chaos.next_k_category_probs(3), 1 / 6, atol=1e-7)
    with pytest.raises(ValueError, match="positive integer"):
        data.next_k_category_probs(0)
    with pytest.raises(ValueError, match="positive integer"):
        data.next_k_category_probs(2.0)
    with pytest.raises(ValueError, match="ground_truth=False"):
        generate_synthetic_interests(SyntheticConfig.small(ground_truth=False)).next_k_category_probs(2)


def test_stored_drift_weight_is_the_one_each_event_was_drawn_with(monte_carlo):
    # The event's own category is drawn from theta(w) with the stored w, not the w of the next step: the residual
    # one-hot - theta is orthogonal to the drift direction B - A for the stored w and clearly not for w + rho.
    data, event, _, _, _, _ = monte_carlo
    category = pc.index_in(data.events.column("category"), value_set=pa.array(data.category_names)).to_numpy()
    observed = np.eye(K)[category][event]
    valid = np.arange(MONTE_CARLO.max_events)[None, :] < np.diff(data.user_offsets)[:, None]
    direction = (data.latent.event_b - data.latent.event_a)[event]
    shifted = reference_next_k(data, 1, switch=0.0)[event]  # theta(min(w + rho, 1))
    assert abs(z_score(((observed - data.latent.theta()[event]) * direction).sum(-1), valid)) < Z_LIMIT
    assert abs(z_score(((observed - shifted) * direction).sum(-1), valid)) > 2 * Z_LIMIT


def test_next_k_oracle_is_the_law_of_the_next_k_categories(monte_carlo):
    data, event, _, _, targets, full = monte_carlo
    assert full.sum() > 80_000
    oracle = data.next_k_category_probs(HORIZON)[event]
    direction = (data.latent.event_b - data.latent.event_a)[event]

    def statistics(predicted):
        # E[q - p | latent state] = 0 for the true law, so the residual has mean 0 in every category and is
        # orthogonal to any function of the state: the law itself, the current theta, the drift direction.
        residual = targets - predicted
        per_category = [z_score(residual[..., c], full) for c in range(K)]
        tests = (oracle, data.latent.theta()[event], direction)
        return np.array(per_category + [z_score((residual * f).sum(-1), full) for f in tests])

    assert (np.abs(statistics(oracle)) < Z_LIMIT).all(), statistics(oracle)
    # The same statistics reject plausible mistakes: the next-event law, no switch discount, half the switch rate,
    # and the drift off by one step either way.
    wrong = {
        "k=1 law": data.next_category_probs[event],
        "no switch discount": reference_next_k(data, HORIZON, switch=0.0)[event],
        "half switch rate": reference_next_k(data, HORIZON, switch=0.025)[event],
        "drift one step late": reference_next_k(data, HORIZON, shift=-1)[event],
        "drift one step early": reference_next_k(data, HORIZON, shift=1)[event],
    }
    for name, predicted in wrong.items():
        assert np.abs(statistics(predicted)).max() > 2 * Z_LIMIT, name


def test_oracle_has_the_lowest_cross_entropy(monte_carlo):
    data, event, item_rows, item_weights, targets, full = monte_carlo
    q = targets[full]
    oracle = forecast_metrics(data.next_k_category_probs(HORIZON)[event][full], q)
    prior = item_weights[item_rows[item_rows != PAD]].mean(axis=0)
    recent_scores = {  # the recent mix at its best smoothing (the baseline as strong as it gets)
        smoothing: forecast_metrics(recent_category_mix(item_rows, item_weights, 5, smoothing, prior)[full], q)[
            "cross_entropy"
        ]
        for smoothing in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    }
    smoothing = min(recent_scores, key=recent_scores.get)
    others = {
        "next-event law": forecast_metrics(data.next_category_probs[event][full], q)["cross_entropy"],
        "current theta": forecast_metrics(data.latent.theta()[event][full], q)["cross_entropy"],
        "uniform": forecast_metrics(np.full(q.shape, 1 / K), q)["cross_entropy"],
        "marginal": forecast_metrics(np.broadcast_to(prior, q.shape), q)["cross_entropy"],
        "recent mix": recent_scores[smoothing],
    }
    for name, cross_entropy in others.items():
        assert oracle["cross_entropy"] < cross_entropy, (name, oracle["cross_entropy"], cross_entropy)
    assert oracle["cross_entropy"] < others["current theta"] - 0.1
    assert oracle["cross_entropy"] < others["uniform"] - 0.3
    # Per position too: the paired difference to the current theta is positive by many standard errors.
    theta_ce = -(targets * np.log(np.maximum(data.latent.theta()[event], 1e-12))).sum(-1)
    oracle_ce = -(targets * np.log(data.next_k_category_probs(HORIZON)[event])).sum(-1)
    assert z_score(theta_ce - oracle_ce, full) > 10


def reference_informed(data, k, seed=0, alpha=None, reset=True, sides=True):
    """`informed_next_k_category_probs` one event at a time (optionally with a wrong prior, without the reset at a
    switch, or pooling both sides' counts)."""
    alpha = data.config.concentration if alpha is None else alpha
    category = pc.index_in(data.events.column("category"), value_set=pa.array(data.category_names)).to_numpy()
    a, b, w = data.latent.event_a, data.latent.event_b, data.latent.drift_weight.astype(np.float64)
    rows = np.arange(len(category))
    theta = (1 - w) * a[rows, category] + w * b[rows, category]
    side_b = np.random.default_rng(seed).random(len(category)) * theta < w * b[rows, category]
    mean_a, mean_b = np.zeros(a.shape), np.zeros(b.shape)
    for user in range(data.config.num_users):
        counts = {True: np.zeros(K), False: np.zeros(K)}
        previous = None
        for row in data.user_major[data.user_offsets[user] : data.user_offsets[user + 1]]:
            if reset and data.latent.regime[row] != previous:
                counts = {True: np.zeros(K), False: np.zeros(K)}
            previous = data.latent.regime[row]
            counts[bool(side_b[row]) if sides else True][category[row]] += 1
            n_a, n_b = (counts[False], counts[True]) if sides else (counts[True], counts[True])
            mean_a[row] = (alpha + n_a) / (K * alpha + n_a.sum())
            mean_b[row] = (alpha + n_b) / (K * alpha + n_b.sum())
    return data._next_k_mix(k, mean_a, mean_b)


def test_informed_forecast_matches_a_loop_and_is_the_law_given_its_information(monte_carlo):
    data, event, item_rows, item_weights, targets, full = monte_carlo
    informed = data.informed_next_k_category_probs(HORIZON, seed=3)
    assert informed.shape == (data.events.num_rows, K) and informed.dtype == np.float32
    np.testing.assert_allclose(informed.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(informed, reference_informed(data, HORIZON, seed=3), atol=1e-6)
    np.testing.assert_array_equal(informed, data.informed_next_k_category_probs(HORIZON, seed=3))
    assert not np.allclose(informed, data.informed_next_k_category_probs(HORIZON, seed=4))

    # Exact Bayes given the history, the regime's start and the sides: the residual has mean 0 in every category and
    # is orthogonal to anything the observer knows (its own forecast, the current event's category); the same
    # statistics reject a wrong prior, counts not reset at a switch, and the two sides' counts pooled.
    current = np.eye(K)[
        pc.index_in(data.events.column("category"), value_set=pa.array(data.category_names)).to_numpy()
    ]

    def statistics(predicted):
        residual = targets - predicted[event]
        per_category = [z_score(residual[..., c], full) for c in range(K)]
        return np.array(per_category + [z_score((residual * f[event]).sum(-1), full) for f in (informed, current)])

    assert (np.abs(statistics(informed)) < Z_LIMIT).all(), statistics(informed)
    wrong = {
        "prior alpha 1": reference_informed(data, HORIZON, seed=3, alpha=1.0),
        "no reset at a switch": reference_informed(data, HORIZON, seed=3, reset=False),
        "sides pooled": reference_informed(data, HORIZON, seed=3, sides=False),
    }
    for name, predicted in wrong.items():
        assert np.abs(statistics(predicted)).max() > 2 * Z_LIMIT, name

    # Between the oracle (which knows A and B) and a history-only forecast.
    q = targets[full]
    oracle = forecast_metrics(data.next_k_category_probs(HORIZON)[event][full], q)["cross_entropy"]
    bound = forecast_metrics(informed[event][full], q)["cross_entropy"]
    prior = item_weights[item_rows[item_rows != PAD]].mean(axis=0)
    recent = min(
        forecast_metrics(recent_category_mix(item_rows, item_weights, window, 0.1, prior)[full], q)["cross_entropy"]
        for window in (5, 10, 20)
    )
    assert oracle < bound < recent, (oracle, bound, recent)
