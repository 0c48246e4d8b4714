"""Tests for `hf_interest.metrics`: hand-computed ranks and metrics, the protocol rules (strict ranks, exclude_seen keeps
the target, non-finite scores fail), torch vs the `evaluate` module vs a brute-force reference, the streaming
accumulator, and the popularity baseline scored by the same code."""

import math
import os
import socket

import pytest
import torch

from hf_interest.metrics import (
    RANKING_METRIC_PATH,
    PopularityRecommender,
    RankingAccumulator,
    format_results_table,
    ranking_metrics_from_ranks,
    ranking_protocol,
    ranks_from_scores,
    user_sample_description,
    user_sample_error_bound,
)

# ---------------------------------------------------------------------------------------------------------------------
# A tiny case worked out by hand: 3 users, 6 items, item 0 is the pad id (never a candidate), K in (1, 3, 5).
#
# user 0: target 4 (0.7), seen [2, pad]. Item 0 scores 9.0 but is ignored.
#   exclude_seen: candidates {1:.5, 3:.3, 4, 5:.1} -> nothing above .7             -> rank 0
#   keep seen:    item 2 (.9) is above                                              -> rank 1
# user 1: target 2 (0.8), seen [1, 2, 4]: the target is in its own history (a repeat target).
#   exclude_seen: 2 leaves the ranking with the history, as serving never returns it -> rank 6 (N), a miss
#   keep seen:    item 4 (.9) above, item 3 ties                                    -> rank 1
# user 2: target 5 (0.5), seen [3, pad, pad].
#   exclude_seen: candidates {1:.9, 2:.8, 4:.6, 5} -> 3 above                       -> rank 3
#   keep seen:    items 1, 2, 3, 4 above                                            -> rank 4
# ---------------------------------------------------------------------------------------------------------------------
PAD = 0
KS = (1, 3, 5)
SCORES = torch.tensor(
    [
        [9.0, 0.5, 0.9, 0.3, 0.7, 0.1],
        [0.0, 0.6, 0.8, 0.8, 0.9, 0.4],
        [0.0, 0.9, 0.8, 0.7, 0.6, 0.5],
    ]
)
TARGETS = torch.tensor([4, 2, 5])
SEEN = torch.tensor([[2, PAD, PAD], [1, 2, 4], [3, PAD, PAD]])

# ranks [0, 6, 3] with exclude_seen:
#   hr@1 = hr@3 = 1/3 (rank 3 is not < 3), hr@5 = 2/3
#   ndcg@5 = (1/log2(2) + 0 + 1/log2(5)) / 3 = (1 + 0.430677) / 3
#   mrr@5 = (1 + 0 + 1/4) / 3
EXPECTED_EXCLUDE = {
    "hr@1": 1 / 3,
    "hr@3": 1 / 3,
    "hr@5": 2 / 3,
    "ndcg@1": 1 / 3,
    "ndcg@3": 1 / 3,
    "ndcg@5": (1 + 1 / math.log2(5)) / 3,
    "mrr@1": 1 / 3,
    "mrr@3": 1 / 3,
    "mrr@5": 1.25 / 3,
    "num_users": 3,
}
# ranks [1, 1, 4] without exclude_seen:
#   hr@1 = 0, hr@3 = 2/3, hr@5 = 1
#   ndcg@3 = 2 * (1/log2(3)) / 3, ndcg@5 = (2/log2(3) + 1/log2(6)) / 3
#   mrr@3 = (1/2 + 1/2) / 3 = 1/3, mrr@5 = (1/2 + 1/2 + 1/5) / 3 = 0.4
EXPECTED_KEEP = {
    "hr@1": 0.0,
    "hr@3": 2 / 3,
    "hr@5": 1.0,
    "ndcg@1": 0.0,
    "ndcg@3": 2 / math.log2(3) / 3,
    "ndcg@5": (2 / math.log2(3) + 1 / math.log2(6)) / 3,
    "mrr@1": 0.0,
    "mrr@3": 1 / 3,
    "mrr@5": 0.4,
    "num_users": 3,
}


def assert_metrics_close(got, expected, rel=1e-12):
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=rel, abs=1e-15), key


def reference_ranks(scores, targets, seen_lists, exclude_seen, ignore_index):
    """Brute-force Python loops over users and items: the definition, written as plainly as possible."""
    ranks = []
    for u in range(len(targets)):
        t = int(targets[u])
        excluded = set(ignore_index)
        if exclude_seen:
            excluded |= {int(i) for i in seen_lists[u] if int(i) >= 0}
        if t in excluded:  # a repeat target leaves the ranking with the history: a miss
            ranks.append(len(scores[u]))
            continue
        ranks.append(sum(1 for i in range(len(scores[u])) if i not in excluded and scores[u][i] > scores[u][t]))
    return ranks


# --- hand-computed case ----------------------------------------------------------------------------------------------


def test_hand_computed_ranks_and_metrics():
    ranks = ranks_from_scores(SCORES, TARGETS, SEEN, exclude_seen=True, ignore_index=[PAD])
    assert ranks.tolist() == [0, 6, 3]
    assert ranks.dtype == torch.long
    assert_metrics_close(ranking_metrics_from_ranks(ranks, KS), EXPECTED_EXCLUDE)

    ranks = ranks_from_scores(SCORES, TARGETS, SEEN, exclude_seen=False, ignore_index=[PAD])
    assert ranks.tolist() == [1, 1, 4]
    assert_metrics_close(ranking_metrics_from_ranks(ranks, KS), EXPECTED_KEEP)


def test_ignore_index_items_are_never_candidates():
    # Without ignore_index the pad column (9.0) beats user 0's target.
    assert ranks_from_scores(SCORES, TARGETS, exclude_seen=False).tolist() == [2, 1, 4]
    # Padding `seen` with the pad id is harmless once the pad id is ignored; negative padding is ignored too.
    negative_pad = torch.where(SEEN == PAD, torch.full_like(SEEN, -1), SEEN)
    assert ranks_from_scores(SCORES, TARGETS, negative_pad, ignore_index=[PAD]).tolist() == [0, 6, 3]


def test_default_ks_and_keys():
    metrics = ranking_metrics_from_ranks(torch.tensor([0, 4, 9, 19, 20]))
    assert list(metrics) == [
        *(f"hr@{k}" for k in (5, 10, 20)),
        *(f"ndcg@{k}" for k in (5, 10, 20)),
        *(f"mrr@{k}" for k in (5, 10, 20)),
        "num_users",
    ]
    assert metrics["hr@5"] == pytest.approx(2 / 5)
    assert metrics["hr@20"] == pytest.approx(4 / 5)
    assert metrics["num_users"] == 5


# --- protocol rules --------------------------------------------------------------------------------------------------


def test_ties_are_not_strictly_higher():
    scores = torch.ones(4, 10)
    ranks = ranks_from_scores(scores, torch.tensor([0, 3, 5, 9]), exclude_seen=False)
    assert ranks.tolist() == [0, 0, 0, 0]
    scores[:, 7] = 2.0  # one item strictly above everyone's target
    assert ranks_from_scores(scores, torch.tensor([0, 3, 5, 9]), exclude_seen=False).tolist() == [1, 1, 1, 1]


def test_a_repeat_target_leaves_the_ranking_with_the_history():
    # Keeping the target while removing the rest of the history would leak it: the one history item left in the
    # ranking would be the answer. Serving with exclude_seen never returns it, so it is a miss: rank N.
    scores = torch.tensor([[0.0, 0.2, 0.9, 0.5, 0.1], [0.0, 0.2, 0.9, 0.5, 0.1]])
    targets = torch.tensor([3, 4])
    seen = torch.tensor([[3, 2, 3], [2, 0, 0]])  # row 0: the target (twice) and a stronger item
    assert ranks_from_scores(scores, targets, seen, ignore_index=[0]).tolist() == [5, 2]
    assert ranks_from_scores(scores, targets, seen, exclude_seen=False, ignore_index=[0]).tolist() == [1, 3]
    metrics = ranking_metrics_from_ranks(ranks_from_scores(scores, targets, seen, ignore_index=[0]), (1, 5))
    assert metrics["hr@5"] == 0.5 and metrics["hr@1"] == 0.0
    # the removed target may hold anything, as every removed item may
    scores[0, 3] = float("-inf")
    assert ranks_from_scores(scores, targets, seen, ignore_index=[0]).tolist() == [5, 2]
    with pytest.raises(ValueError, match="1 of 2 rows"):
        ranks_from_scores(scores, targets, seen, exclude_seen=False, ignore_index=[0])


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_candidate_scores_raise(bad_value):
    scores = SCORES.clone()
    scores[1, 5] = bad_value  # a candidate of user 1
    with pytest.raises(ValueError, match="1 of 3 rows have non-finite scores"):
        ranks_from_scores(scores, TARGETS, SEEN, ignore_index=[PAD])


def test_non_finite_target_raises_and_non_candidates_may_hold_inf():
    scores = SCORES.clone()
    scores[:, 0] = float("-inf")  # the ignored pad column: allowed
    scores[0, 2] = float("nan")  # user 0's seen item, excluded: allowed
    assert ranks_from_scores(scores, TARGETS, SEEN, ignore_index=[PAD]).tolist() == [0, 6, 3]
    # ... but the same NaN is a candidate once seen items are kept.
    with pytest.raises(ValueError, match="1 of 3 rows"):
        ranks_from_scores(scores, TARGETS, SEEN, exclude_seen=False, ignore_index=[PAD])
    scores[:, 0] = 0.0
    scores[0, 2] = 0.9
    scores[0, 4] = float("nan")  # the target itself
    scores[2, 5] = float("nan")
    with pytest.raises(ValueError, match="2 of 3 rows"):
        ranks_from_scores(scores, TARGETS, SEEN, ignore_index=[PAD])


def test_inputs_are_not_modified():
    scores, targets, seen = SCORES.clone(), TARGETS.clone(), SEEN.clone()
    ranks_from_scores(scores, targets, seen, ignore_index=[PAD])
    assert torch.equal(scores, SCORES) and torch.equal(targets, TARGETS) and torch.equal(seen, SEEN)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seen": None}, "exclude_seen=True needs `seen`"),
        ({"targets": torch.tensor([4, 0, 5])}, "in ignore_index"),
        ({"targets": torch.tensor([4, 2, 6])}, r"targets must lie in \[0, 6\)"),
        ({"targets": torch.tensor([4, 2])}, "targets must have shape"),
        ({"seen": torch.tensor([[7], [1], [1]])}, "seen holds item index 7"),
        ({"seen": torch.tensor([[1.0], [1.0], [1.0]])}, "seen must hold integer"),
        ({"scores": SCORES.long()}, "scores must be floating point"),
        ({"ignore_index": [6]}, "ignore_index values must lie"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, message):
    args = {"scores": SCORES, "targets": TARGETS, "seen": SEEN, "ignore_index": [PAD], **kwargs}
    with pytest.raises(ValueError, match=message):
        ranks_from_scores(args["scores"], args["targets"], args["seen"], ignore_index=args["ignore_index"])


def test_metrics_from_ranks_validation():
    with pytest.raises(ValueError, match="no users"):
        ranking_metrics_from_ranks(torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match=">= 0"):
        ranking_metrics_from_ranks(torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="positive integers"):
        ranking_metrics_from_ranks(torch.tensor([0]), ks=(0, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    ranks_cpu = ranks_from_scores(SCORES, TARGETS, SEEN, ignore_index=[PAD])
    ranks_gpu = ranks_from_scores(SCORES.cuda(), TARGETS, SEEN, ignore_index=[PAD])
    assert ranks_gpu.device.type == "cuda"
    assert torch.equal(ranks_gpu.cpu(), ranks_cpu)


# --- torch vs evaluate vs brute force on random scores ---------------------------------------------------------------

NUM_USERS, NUM_ITEMS, SPECIALS = 64, 200, [0, 1, 2]


@pytest.fixture(scope="module")
def random_case():
    g = torch.Generator().manual_seed(0)
    # Rounded scores so that ties happen; the special columns hold -inf as a model's masking would.
    scores = (torch.rand(NUM_USERS, NUM_ITEMS, generator=g) * 50).round() / 50  # (B, N) float32
    scores[:, SPECIALS] = float("-inf")
    targets = torch.randint(3, NUM_ITEMS, (NUM_USERS,), generator=g)
    seen_lists = []
    for u in range(NUM_USERS):
        length = int(torch.randint(0, 30, (1,), generator=g))
        items = torch.randint(3, NUM_ITEMS, (length,), generator=g).tolist()
        if u % 4 == 0:
            items.append(int(targets[u]))  # the target sometimes sits in the history
        seen_lists.append(items)
    max_len = max(len(s) for s in seen_lists)
    seen = torch.full((NUM_USERS, max_len), 0, dtype=torch.long)  # left-padded with the pad id 0
    for u, items in enumerate(seen_lists):
        if items:
            seen[u, max_len - len(items) :] = torch.tensor(items)
    return scores, targets, seen, seen_lists


@pytest.fixture(scope="module")
def ranking_metric(tmp_path_factory):
    """Load the shipped evaluate module with every socket connection refused, to prove it needs no network."""
    evaluate = pytest.importorskip("evaluate")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_EVALUATE_OFFLINE", "1")

    attempts = []

    def no_connect(sock, address, *args, **kwargs):
        # Recorded as well as refused: evaluate swallows errors while it tries the Hub, so an exception alone could
        # go unnoticed.
        attempts.append(address)
        raise OSError(f"network disabled in this test, tried {address}")

    def no_dns(host, port, *args, **kwargs):
        attempts.append((host, port))
        raise OSError(f"network disabled in this test, tried to resolve {host}")

    mp.setattr(socket.socket, "connect", no_connect)
    mp.setattr(socket, "getaddrinfo", no_dns)
    try:
        cache_dir = str(tmp_path_factory.mktemp("evaluate_cache"))
        default = evaluate.load(RANKING_METRIC_PATH, cache_dir=cache_dir, keep_in_memory=True)
        with_seen = evaluate.load(RANKING_METRIC_PATH, "with_seen", cache_dir=cache_dir, keep_in_memory=True)
    finally:
        mp.undo()
    assert attempts == [], f"evaluate.load tried to reach the network: {attempts}"
    return default, with_seen


def test_metric_module_is_self_contained():
    from evaluate.loading import get_imports

    path = os.path.join(RANKING_METRIC_PATH, "interest_ranking.py")
    imports = get_imports(path)
    assert {name for kind, name, *_ in imports} == {"datasets", "evaluate", "numpy"}
    assert all(kind == "library" for kind, *_ in imports)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_torch_evaluate_and_reference_agree(random_case, ranking_metric, exclude_seen):
    scores, targets, seen, seen_lists = random_case
    ks = (1, 5, 10, 20, 50)
    ranks = ranks_from_scores(scores, targets, seen, exclude_seen=exclude_seen, ignore_index=SPECIALS)
    expected_ranks = reference_ranks(scores.tolist(), targets.tolist(), seen_lists, exclude_seen, SPECIALS)
    assert ranks.tolist() == expected_ranks
    torch_metrics = ranking_metrics_from_ranks(ranks, ks)
    assert 0 < torch_metrics["hr@20"] < 1  # the case is not degenerate

    default, with_seen = ranking_metric
    common = {"exclude_seen": exclude_seen, "k_values": list(ks), "ignore_index": SPECIALS}
    from_kwarg = default.compute(predictions=scores.tolist(), references=targets.tolist(), seen=seen_lists, **common)
    repeats = sum(int(t) in set(s) for t, s in zip(targets.tolist(), seen_lists, strict=True))
    assert repeats > 0  # the case has repeat targets, so their removal is checked
    if exclude_seen:
        torch_metrics["targets_in_history"] = repeats
    assert_metrics_close(from_kwarg, torch_metrics)

    # The "with_seen" config takes seen as a column, fed in uneven batches through add_batch.
    for start, stop in [(0, 10), (10, 37), (37, NUM_USERS)]:
        with_seen.add_batch(
            predictions=scores[start:stop].tolist(),
            references=targets[start:stop].tolist(),
            seen=seen_lists[start:stop],
        )
    assert_metrics_close(with_seen.compute(**common), torch_metrics)


def test_evaluate_module_raises_on_nan(ranking_metric):
    default, _ = ranking_metric
    scores = SCORES.clone()
    scores[2, 1] = float("nan")
    with pytest.raises(ValueError, match="1 of 3 rows have non-finite scores"):
        default.compute(
            predictions=scores.tolist(), references=TARGETS.tolist(), seen=SEEN.tolist(), ignore_index=[PAD]
        )


def test_evaluate_module_hand_case(ranking_metric):
    default, _ = ranking_metric
    common = {
        "predictions": SCORES.tolist(),
        "references": TARGETS.tolist(),
        "k_values": list(KS),
        "ignore_index": [0],
    }
    assert_metrics_close(default.compute(seen=SEEN.tolist(), **common), {**EXPECTED_EXCLUDE, "targets_in_history": 1})
    assert_metrics_close(default.compute(exclude_seen=False, **common), EXPECTED_KEEP)


# --- streaming accumulator -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_accumulator_matches_one_shot(random_case, exclude_seen):
    scores, targets, seen, _ = random_case
    one_shot = ranking_metrics_from_ranks(
        ranks_from_scores(scores, targets, seen, exclude_seen=exclude_seen, ignore_index=SPECIALS)
    )
    acc = RankingAccumulator(exclude_seen=exclude_seen, ignore_index=SPECIALS, split="validation")
    for start, stop in [(0, 7), (7, 40), (40, NUM_USERS)]:
        acc.update(scores[start:stop], targets[start:stop], seen[start:stop])
    assert acc.compute() == one_shot
    repeats = int((seen == targets[:, None]).any(dim=1).sum())
    counted = {"targets_in_history": repeats, "num_targets": NUM_USERS} if exclude_seen else {}
    assert acc.protocol == ranking_protocol(
        "validation", NUM_ITEMS, exclude_seen=exclude_seen, ignore_index=SPECIALS, **counted
    )
    assert acc.protocol.get("targets_in_history") == (repeats if exclude_seen else None)
    assert acc.protocol["num_candidates"] == NUM_ITEMS - 3

    # A gather function (accelerator.gather_for_metrics in real runs) is applied before the ranks are stored.
    acc.reset()
    acc.update(scores, targets, seen, gather=lambda r: torch.cat([r, r]))
    doubled = acc.compute()
    assert doubled["num_users"] == 2 * NUM_USERS
    assert doubled["ndcg@10"] == pytest.approx(one_shot["ndcg@10"], rel=1e-12)


def test_accumulator_rejects_a_changing_catalogue():
    acc = RankingAccumulator(ignore_index=[PAD])
    acc.update(SCORES, TARGETS, SEEN)
    with pytest.raises(ValueError, match="same catalogue"):
        acc.update(torch.zeros(1, 7), torch.tensor([1]), torch.tensor([[0]]))


# --- popularity baseline ---------------------------------------------------------------------------------------------
# Train sequences (pad 0 is not counted): counts 1:1, 2:3, 3:2, 4:1, 5:1. Items 1, 4, 5 tie at 1.
TRAIN = [[1, 2, 3], [2, 3], [2, 5], [4, PAD, PAD]]


def test_popularity_counts_and_tie_breaks():
    pop = PopularityRecommender.from_sequences(TRAIN, num_items=6, ignore_index=[PAD], tie_break="index")
    assert pop.item_counts.tolist() == [0, 1, 3, 2, 1, 1]
    # index tie-break: order 2, 3, 1, 4, 5, 0 -> scores N - position
    assert pop.item_scores.tolist() == [1, 4, 6, 5, 3, 2]
    assert torch.equal(PopularityRecommender([0, 1, 3, 2, 1, 1], tie_break="index").item_scores, pop.item_scores)
    none = PopularityRecommender.from_sequences(TRAIN, num_items=6, ignore_index=[PAD], tie_break="none")
    assert none.item_scores.tolist() == [0, 1, 3, 2, 1, 1]

    rand = PopularityRecommender([0, 1, 3, 2, 1, 1], seed=0)
    again = PopularityRecommender([0, 1, 3, 2, 1, 1], seed=0)
    assert torch.equal(rand.item_scores, again.item_scores)  # deterministic
    assert len(set(rand.item_scores.tolist())) == 6  # a strict order
    s = rand.item_scores
    assert s[2] > s[3] > max(s[1], s[4], s[5]) and min(s[1], s[4], s[5]) > s[0]  # consistent with the counts


def test_popularity_scored_by_the_same_code():
    pop = PopularityRecommender.from_sequences(TRAIN, num_items=6, ignore_index=[PAD], tie_break="index")
    scores = pop.full_sort_scores(len(TARGETS))
    assert scores.shape == (3, 6)
    # Scores [pad 1, 1:4, 2:6, 3:5, 4:3, 5:2], the hand case's targets [4, 2, 5] and seen, exclude_seen on:
    #   user 0: target 4 (3), candidates {1:4, 3:5, 5:2} (2 seen) -> 1, 3 above -> rank 2
    #   user 1: target 2, in its history: removed with it           -> rank 6, a miss
    #   user 2: target 5 (2), candidates {1:4, 2:6, 4:3} (3 seen) -> rank 3
    ranks = ranks_from_scores(scores, TARGETS, SEEN, ignore_index=[PAD])
    assert ranks.tolist() == [2, 6, 3]
    metrics = ranking_metrics_from_ranks(ranks, KS)
    # hr@3 = 1/3, ndcg@3 = 1/log2(4) / 3 = 1/6, mrr@5 = (1/3 + 1/4) / 3
    assert metrics["hr@3"] == pytest.approx(1 / 3)
    assert metrics["ndcg@3"] == pytest.approx(1 / 6)
    assert metrics["mrr@5"] == pytest.approx((1 / 3 + 1 / 4) / 3)

    # Raw counts leave ties to the ranking, where they favour the target: user 0 and user 2 each climb.
    none = PopularityRecommender.from_sequences(TRAIN, num_items=6, ignore_index=[PAD], tie_break="none")
    assert ranks_from_scores(none.full_sort_scores(3), TARGETS, SEEN, ignore_index=[PAD]).tolist() == [1, 6, 1]


def test_popularity_validation():
    with pytest.raises(ValueError, match="outside"):
        PopularityRecommender.from_sequences([[1, 6]], num_items=6)
    with pytest.raises(ValueError, match="non-negative"):
        PopularityRecommender([1.0, -1.0])
    with pytest.raises(ValueError, match="tie_break"):
        PopularityRecommender([1.0, 2.0], tie_break="alphabetical")


# --- results table ---------------------------------------------------------------------------------------------------


def test_results_table_states_protocol_and_baseline():
    protocol = ranking_protocol("test", 6, exclude_seen=True, ignore_index=[PAD])
    model = ranking_metrics_from_ranks(torch.tensor([0, 0, 3]), KS)
    baseline = ranking_metrics_from_ranks(torch.tensor([2, 0, 3]), KS)
    table = format_results_table({"interest": model, "popularity": baseline}, protocol)
    lines = table.splitlines()
    assert lines[0].startswith("Protocol: split=test | full ranking over 5 candidate items")
    assert "exclude_seen=on" in lines[0] and "strictly higher than the target" in lines[0]
    assert "HR@1" in lines[1] and "NDCG@5" in lines[1] and "MRR@3" in lines[1]
    assert lines[3].startswith("popularity (baseline)")  # baseline first
    assert lines[4].startswith("interest") and "0.7500" in lines[4]  # mrr@5 of ranks [0, 0, 3]

    with pytest.raises(ValueError, match="no 'popularity' row"):
        format_results_table({"interest": model}, protocol)
    other = ranking_metrics_from_ranks(torch.tensor([0, 1]), KS)
    with pytest.raises(ValueError, match="different numbers of users"):
        format_results_table({"interest": other, "popularity": baseline}, protocol)


def test_excluded_items_may_hold_non_finite_scores_and_negative_padding_is_ignored(random_case):
    """With exclude_seen, a history item (repeated, padded with -1) holding NaN or +inf is not a candidate, so the
    ranks equal the brute-force definition's; without exclude_seen the same scores are refused."""
    scores, targets, _, seen_lists = random_case
    scores = scores.clone()
    seen = torch.full((len(seen_lists), 2 * max(map(len, seen_lists))), -1, dtype=torch.long)
    for u, items in enumerate(seen_lists):
        doubled = items + items  # every history item twice
        seen[u, : len(doubled)] = torch.tensor(doubled, dtype=torch.long)
        for i in set(items) - {int(targets[u])}:
            scores[u, i] = float("nan") if i % 2 else float("inf")
    ranks = ranks_from_scores(scores, targets, seen, exclude_seen=True, ignore_index=SPECIALS)
    assert ranks.tolist() == reference_ranks(scores.tolist(), targets.tolist(), seen_lists, True, SPECIALS)
    with pytest.raises(ValueError, match="non-finite"):
        ranks_from_scores(scores, targets, seen, exclude_seen=False, ignore_index=SPECIALS)


@pytest.mark.parametrize("chunk_elements", [1 << 22, 7])
def test_both_protocols_in_one_pass_equal_the_two_separate_rankings(random_case, monkeypatch, chunk_elements):
    """The shared pass (in one column chunk, or in many of a few columns) gives exactly the two rankings, for model
    scores and for the popularity baseline's expanded view."""
    import hf_interest.metrics.ranking as ranking

    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", chunk_elements)
    scores, targets, seen, seen_lists = random_case
    popularity = PopularityRecommender.from_sequences(seen_lists, num_items=NUM_ITEMS, ignore_index=SPECIALS)
    for matrix in (scores, popularity.full_sort_scores(len(targets))):
        excluded, included = ranking.ranks_under_both_protocols(matrix, targets, seen, ignore_index=SPECIALS)
        for exclude_seen, ranks in ((True, excluded), (False, included)):
            expected = reference_ranks(matrix.tolist(), targets.tolist(), seen_lists, exclude_seen, SPECIALS)
            assert ranks.tolist() == expected


def test_add_ranks_checks_the_catalogue_like_update():
    accumulator = RankingAccumulator((1,))
    accumulator.add_ranks(torch.tensor([0, 3]), num_items=10)
    assert accumulator.protocol["num_items"] == 10
    with pytest.raises(ValueError, match="same catalogue"):
        accumulator.add_ranks(torch.tensor([1]), num_items=11)


def test_user_sample_error_bound_covers_the_worst_case_metric():
    """A metric averaged over a random sample of users is within the bound of the all-users mean at least about 95% of
    the time, even for the worst case (values 0 or 1, half of each, where the spread is largest); it is 0 when every
    user is scored, the formula's value otherwise, and bad sizes are refused."""
    generator = torch.Generator().manual_seed(0)
    population = (torch.arange(1000) % 2).to(torch.float64)  # per-user HR@10 of 1,000 users, mean 0.5
    bound = user_sample_error_bound(100, 1000)
    assert bound == pytest.approx(1.959964 * 0.5 / 10 * math.sqrt(900 / 999), rel=1e-6)
    within = [
        abs(population[torch.randperm(1000, generator=generator)[:100]].mean() - 0.5) <= bound for _ in range(4000)
    ]
    assert 0.93 <= sum(within) / len(within) <= 0.975
    # a tighter bound would not cover: half of it misses often
    assert sum(abs(population[torch.randperm(1000, generator=generator)[:100]].mean() - 0.5) <= bound / 2
               for _ in range(1000)) / 1000 < 0.8  # fmt: skip
    assert user_sample_error_bound(1000, 1000) == 0.0
    assert "a fixed random sample of 20,000 of 166,666 (--validation_users)" in user_sample_description(20000, 166666)
    for users, of in ((0, 10), (11, 10)):
        with pytest.raises(ValueError, match="0 < users <= of"):
            user_sample_error_bound(users, of)
    protocol = {**ranking_protocol("validation", 10, ignore_index=[0]), "users": user_sample_description(5, 9)}
    table = format_results_table({"popularity": {"ndcg@10": 0.1, "num_users": 5}}, protocol)
    assert "split=validation | users: a fixed random sample of 5 of 9" in table
