"""The transition prior (`InterestConfig.item_transition_prior`): counts of consecutive training pairs, read the same
way by the loss, the logits, `recommend`, the chunked and exported serving paths, and saved with the weights."""

import math
from collections import Counter

import pytest
import torch
from tiny import tiny_config

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.checkpoint_interest import fields_from_weights

NUM_ITEMS = 30
SPECIAL = 3


def _pairs(seed: int = 0, count: int = 600):
    generator = torch.Generator().manual_seed(seed)
    previous = torch.randint(0, NUM_ITEMS, (count,), generator=generator)
    following = torch.randint(0, NUM_ITEMS, (count,), generator=generator)
    following[: count // 3] = (previous[: count // 3] * 7 + 1) % (NUM_ITEMS - SPECIAL) + SPECIAL  # frequent successors
    return previous, following


def _model(successors: int = 4, weight: float = 0.8, gate: float = 3.0, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(
        num_items=NUM_ITEMS, item_transition_prior=True, transition_prior_successors=successors,
        hidden_dropout_prob=0.0, **overrides,
    )  # fmt: skip
    model = InterestForNextItemPrediction(config)
    model.set_transition_counts(*_pairs(seed))
    with torch.no_grad():
        model.transition_prior.weight.fill_(weight)
        model.transition_prior.gate.bias.fill_(gate)  # counts weigh about as much as the model's own scores
        model.transition_prior.gate.weight.normal_(0.0, 0.5)  # and the state matters
    return model.eval()


def _kept_counts(previous, following, successors: int) -> dict:
    """By hand: each real item's `successors` most frequent successors (ties: the lower index), with their counts."""
    counts = Counter((a, b) for a, b in zip(previous.tolist(), following.tolist()) if a >= SPECIAL and b >= SPECIAL)
    kept = {}
    for a in range(NUM_ITEMS):
        row = sorted(((-c, b) for (x, b), c in counts.items() if x == a))[:successors]
        kept.update({(a, b): -c for c, b in row})
    return kept


def _mixed_by_hand(model, scores, previous: int, state, kept: dict, target: int | None = None):
    """One state's scores `(N,)` with item `previous`'s successors mixed in, written out item by item:
    log(exp(s_i) + exp(g(u) + w * log(c(a, i) / c(a)))), each count without the target's own pair."""
    prior = model.transition_prior
    row = {b: c - (b == target) for (a, b), c in kept.items() if a == previous}
    total = sum(row.values())
    gate = prior.gate(state.detach()).item()
    mixed = scores.detach().clone().double()
    for b, c in row.items():
        if c > 0:
            evidence = gate + prior.weight.item() * math.log(c / total)
            mixed[b] = math.log(math.exp(mixed[b]) + math.exp(evidence))
    return mixed.float()


def test_the_counts_kept_are_each_items_most_frequent_successors():
    model = _model(successors=4)
    kept = _kept_counts(*_pairs(0), 4)
    prior = model.transition_prior
    assert model.config.transition_prior_pairs == len(kept) == prior.next_items.numel()
    assert int(prior.row_starts[-1]) == len(kept)
    for a in range(NUM_ITEMS):
        start, stop = int(prior.row_starts[a]), int(prior.row_starts[a + 1])
        row = dict(zip(prior.next_items[start:stop].tolist(), prior.counts[start:stop].tolist()))
        assert row == {b: float(c) for (x, b), c in kept.items() if x == a}
    assert not any(a < SPECIAL or b < SPECIAL for a, b in kept)  # pairs with special tokens are skipped
    assert any(stop - start == 4 for start, stop in zip(prior.row_starts[:-1], prior.row_starts[1:]))  # capped


def test_counts_given_per_pair_are_summed_like_repeated_pairs():
    model, other = _model(), _model()
    previous, following = torch.tensor([5, 5, 6, 5]), torch.tensor([7, 8, 9, 7])
    model.set_transition_counts(previous, following)
    other.set_transition_counts(torch.tensor([5, 6, 5]), torch.tensor([7, 9, 8]), torch.tensor([2.0, 1.0, 1.0]))
    for name in ("row_starts", "next_items", "counts"):
        assert torch.equal(getattr(model.transition_prior, name), getattr(other.transition_prior, name))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"previous_items": [3, 4], "next_items": [5]}, "one entry per pair"),
        ({"previous_items": [3, NUM_ITEMS], "next_items": [5, 6]}, "previous_items must be vocabulary indices"),
        ({"previous_items": [3], "next_items": [-1]}, "next_items must be vocabulary indices"),
        ({"previous_items": [3], "next_items": [5], "counts": [float("nan")]}, "finite and non-negative"),
    ],
)
def test_bad_counts_are_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model().set_transition_counts(**kwargs)


def test_a_model_without_the_prior_refuses_counts():
    model = InterestForNextItemPrediction(tiny_config(num_items=NUM_ITEMS))
    with pytest.raises(ValueError, match="item_transition_prior=True"):
        model.set_transition_counts([3], [4])


def test_the_mixture_is_the_log_of_the_model_and_the_counts_summed():
    model = _model(successors=4)
    kept = _kept_counts(*_pairs(0), 4)
    generator = torch.Generator().manual_seed(2)
    previous = torch.arange(NUM_ITEMS)
    scores = torch.randn(NUM_ITEMS, NUM_ITEMS, generator=generator)
    states = torch.randn(NUM_ITEMS, model.config.hidden_size, generator=generator)
    mixed = model.transition_prior(scores, previous, states)
    for a in range(NUM_ITEMS):
        torch.testing.assert_close(mixed[a], _mixed_by_hand(model, scores[a], a, states[a], kept))
    assert (mixed != scores).sum() == len(kept)  # exactly the counted successors move
    # the sampled softmax's reading, with repeated candidates, is the same numbers
    candidates = torch.tensor([4, 9, 9, 17, 4, 28, 3])
    items, evidence = model.transition_prior.evidence(previous, states)
    picked = model.transition_prior.candidate_evidence(items, evidence, candidates)
    torch.testing.assert_close(model.transition_prior.mixed(scores[:, candidates], picked), mixed[:, candidates])


def test_logits_recommend_and_the_loss_mix_in_the_newest_events_successors():
    model = _model(successors=6)
    kept = _kept_counts(*_pairs(0), 6)
    input_ids = torch.tensor([[5, 9, 12, 4], [0, 0, 7, 11]])  # the second row left-padded
    attention_mask = (input_ids != 0).long()
    output = model(input_ids=input_ids, attention_mask=attention_mask)
    states = output.last_hidden_state
    without = torch.nn.functional.linear(states, model.item_head.weight, model.item_head.bias)
    expected = torch.stack(
        [
            torch.stack(
                [_mixed_by_hand(model, without[r, p], int(input_ids[r, p]), states[r, p], kept) for p in range(4)]
            )  # fmt: skip
            for r in range(2)
        ]
    )
    assert not torch.allclose(expected, without)  # the counts move these scores
    torch.testing.assert_close(output.logits, expected)
    last = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1).logits
    torch.testing.assert_close(last, expected[:, -1:])
    picked = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=torch.tensor([1])).logits
    torch.testing.assert_close(picked, expected[:, 1:2])
    scores = expected[:, -1].clone()
    scores[:, :SPECIAL] = float("-inf")
    scores.scatter_(1, input_ids, float("-inf"))
    recommended = model.recommend(input_ids, attention_mask, top_k=5)
    assert torch.equal(recommended.item_ids, scores.topk(5).indices)
    with pytest.raises(ValueError, match="pass previous_items"):
        model.item_logits(states[:, -1])


def test_in_training_the_full_softmax_leaves_each_targets_own_pair_out_of_its_counts():
    """The counts hold every training pair once: the pair being predicted is taken out of its own counts, so
    training sees what serving will (a pair that has not happened yet is not counted)."""
    model = _model(successors=6)
    kept = _kept_counts(*_pairs(0), 6)
    input_ids = torch.tensor([[5, 12, 7, 26, 20]])  # each a frequent successor of the one before (_pairs)
    labels = torch.tensor([[12, 7, 26, 20, -100]])
    model.train()
    loss = model(input_ids=input_ids, labels=labels).loss
    model.eval()
    states = model.model(input_ids=input_ids).last_hidden_state[0, :4]
    losses = []
    for position in range(4):
        a, target = int(input_ids[0, position]), int(labels[0, position])
        scores = states[position] @ model.item_head.weight.T + model.item_head.bias
        logits = _mixed_by_hand(model, scores, a, states[position], kept, target)
        logits[:SPECIAL] = float("-inf")
        logits[[x for x in input_ids[0, : position + 1].tolist() if x != target]] = float("-inf")  # seen items
        losses.append(torch.nn.functional.cross_entropy(logits[None], torch.tensor([target])))
    assert any(kept.get((int(a), int(b)), 0) > 1 for a, b in zip(input_ids[0, :4], labels[0, :4]))  # a pair counted
    torch.testing.assert_close(loss, torch.stack(losses).mean())


def test_the_sampled_softmax_adds_the_same_prior_to_its_candidates(monkeypatch):
    """With every real item drawn once as a negative (uniform draws: no log-Q shift between candidates), the sampled
    softmax scores the positive and each negative as the full softmax does, prior and own-pair rule included."""
    model = _model(successors=6, loss_type="sampled_softmax", num_negative_samples=NUM_ITEMS - SPECIAL)
    full = _model(successors=6)
    full.load_state_dict(model.state_dict())
    every_item = torch.arange(SPECIAL, NUM_ITEMS)
    monkeypatch.setattr(torch, "randint", lambda low, high, size, device=None: every_item.clone())
    input_ids = torch.tensor([[5, 9, 12, 4, 20], [7, 7, 11, 3, 26]])
    labels = torch.tensor([[9, 12, 4, 20, -100], [7, 11, 3, 26, -100]])
    model.train()
    full.train()
    sampled_loss = model(input_ids=input_ids, labels=labels).loss
    full_loss = full(input_ids=input_ids, labels=labels).loss
    torch.testing.assert_close(sampled_loss, full_loss, rtol=1e-4, atol=1e-4)
    sampled_loss.backward()
    assert model.transition_prior.weight.grad.abs() > 0  # the weight is learned


def test_save_load_and_the_checkpoint_fields(tmp_path):
    model = _model(successors=5)
    model.save_pretrained(tmp_path)
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    assert loaded.config.transition_prior_pairs == model.config.transition_prior_pairs > 0
    for name, tensor in model.transition_prior.state_dict().items():
        assert torch.equal(loaded.transition_prior.state_dict()[name], tensor)
    input_ids = torch.tensor([[5, 9, 12, 4]])
    torch.testing.assert_close(loaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    fields = fields_from_weights(shapes)
    assert fields["item_transition_prior"] is True
    assert fields["transition_prior_pairs"] == model.config.transition_prior_pairs


def test_added_items_have_no_successors_and_old_scores_stay():
    model = _model(successors=5)
    tokenizer = ItemTokenizer.from_items([f"i{k}" for k in range(NUM_ITEMS - SPECIAL)])
    input_ids = torch.tensor([[5, 9, 12, 4]])
    before = model(input_ids=input_ids).logits
    model.add_items(tokenizer, ["new0", "new1"])
    after = model(input_ids=torch.tensor([[5, 9, 12, 4], [5, 9, 12, NUM_ITEMS + 1]])).logits
    torch.testing.assert_close(after[:1, :, :NUM_ITEMS], before)
    assert len(model.transition_prior.row_starts) == NUM_ITEMS + 3
    scores = torch.randn(1, NUM_ITEMS + 2)
    new_item = torch.tensor([NUM_ITEMS + 1])
    assert torch.equal(model.transition_prior(scores, new_item, torch.randn(1, model.config.hidden_size)), scores)


def test_the_mixture_starts_at_the_best_fit_of_the_training_pairs():
    """`train.py` starts the gate's bias at the maximum likelihood of the training pairs' next items under the
    biases and the counts alone (w = 1), each pair with its own counts taken out: checked against the likelihood
    computed densely, by hand."""
    from hf_interest.training.tasks import start_transition_prior_at_fit

    model = _model(successors=6, weight=1.0, gate=0.0)
    with torch.no_grad():
        model.item_head.bias.copy_(torch.randn(NUM_ITEMS, generator=torch.Generator().manual_seed(3)))
        model.transition_prior.gate.weight.zero_()
    previous, following = _pairs(0)
    real = (previous >= SPECIAL) & (following >= SPECIAL)
    previous, following = previous[real], following[real]
    share = start_transition_prior_at_fit(model, previous, following, torch.ones(len(previous)))
    gate = model.transition_prior.gate.bias.item()
    real_bias = model.item_head.bias.detach().double()[SPECIAL:]
    assert share == pytest.approx(float(torch.sigmoid(gate - torch.logsumexp(real_bias, 0))), rel=1e-6)
    assert 0.05 < share < 0.95  # the frequent successors in _pairs make the counts worth a real share
    kept = _kept_counts(previous, following, 6)
    state = torch.zeros(model.config.hidden_size)

    def nll(g: float) -> float:
        with torch.no_grad():
            model.transition_prior.gate.bias.fill_(g)
        total = 0.0
        for a, t in zip(previous.tolist(), following.tolist()):
            logits = _mixed_by_hand(model, model.item_head.bias, a, state, kept, t).double()
            total -= float(torch.log_softmax(logits[SPECIAL:], 0)[t - SPECIAL])
        return total / len(previous)

    assert nll(gate) < min(nll(gate - 0.1), nll(gate + 0.1))
