"""Tests of the long/short-term interest gate (`LongShortTermInterest` inside `InterestModel`) and of the two heads
built on the backbone: `InterestForInterestForecasting` (with `next_k_category_targets`) and
`InterestForClickPrediction` (DIN-style target attention). Tiny configs, CPU, seconds.

The reference computations here are written out plainly (Python loops, explicit masks and softmaxes) so that they do
not share code with the vectorised model.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_config as shared_tiny_config
from transformers import AutoModel

from hf_interest import (
    InterestConfig,
    InterestForClickPrediction,
    InterestForInterestForecasting,
    InterestForNextItemPrediction,
    InterestModel,
)
from hf_interest.modeling_interest import next_k_category_targets

NUM_ITEMS = 20  # 3 special tokens + 17 real items
BATCH, SEQ_LEN, HIDDEN, HEADS, WINDOW = 3, 8, 16, 2, 3

GATE_COMBINATIONS = [(False, False), (True, False), (False, True), (True, True)]
GATE_IDS = ["neither", "long", "short", "both"]


def tiny_config(**overrides) -> InterestConfig:
    kwargs = {
        "num_items": NUM_ITEMS,
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "max_position_embeddings": 24,
        "num_time_buckets": 16,
        "short_term_window": WINDOW,
        "click_hidden_size": 8,
    }
    kwargs.update(overrides)
    return shared_tiny_config(**kwargs)


def tiny_inputs(seed: int = 0, batch_size: int = BATCH, seq_len: int = SEQ_LEN) -> dict[str, torch.Tensor]:
    """Row 0 full, row 1 left-padded by 3, row 2 fully padded (when there are three rows)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, NUM_ITEMS, (batch_size, seq_len), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    if batch_size > 1:
        attention_mask[1, :3] = 0
    if batch_size > 2:
        attention_mask[2, :] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    gaps = torch.randint(0, 10**6, (batch_size, seq_len), generator=generator)
    timestamps = (1_600_000_000 + gaps.cumsum(dim=1)).masked_fill(attention_mask == 0, 0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "timestamps": timestamps}


def shifted_labels(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-item labels as the collator makes them: the next real item, -100 at padding and at the last position."""
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, :-1] = inputs["input_ids"][:, 1:]
    labels[:, :-1] = labels[:, :-1].masked_fill(inputs["attention_mask"][:, 1:] == 0, -100)
    return labels.masked_fill(inputs["attention_mask"] == 0, -100)


@torch.no_grad()
def randomise_interest_parts(backbone: InterestModel, seed: int = 1) -> None:
    """Moves the parts that start at a symmetric point (zero long-term query: uniform attention; gate near 0.5) away
    from it, so that the tests below test something."""
    module = backbone.long_short_term
    if module is None:
        return
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def build(cls, long: bool = True, short: bool = True, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = cls(tiny_config(long_term_interest=long, short_term_interest=short, **overrides))
    randomise_interest_parts(model if isinstance(model, InterestModel) else model.model, seed + 1)
    return model.eval()


def changed_item(item: torch.Tensor) -> torch.Tensor:
    """Another real item index than `item`."""
    return (item + 1 - 3) % (NUM_ITEMS - 3) + 3


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- reference attention: explicit masks, loops over the batch, per-head softmax -------------------------------------


def allowed_keys(attention_mask: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """`(B, T, T)`: key j is read at query t when j <= t, j is real or j == t, and (with a window) t - j < window."""
    batch_size, seq_len = attention_mask.shape
    allowed = torch.zeros(batch_size, seq_len, seq_len, dtype=torch.bool)
    for b in range(batch_size):
        for t in range(seq_len):
            for j in range(t + 1):
                in_window = window is None or t - j < window
                allowed[b, t, j] = in_window and (bool(attention_mask[b, j]) or j == t)
    return allowed


def reference_attention(query, key, value, allowed, num_heads):
    """Multi-head attention with one explicit softmax per (row, head, query)."""
    batch_size, seq_len, hidden = key.shape
    head_dim = hidden // num_heads
    out = torch.zeros(batch_size, seq_len, hidden)
    for b in range(batch_size):
        for h in range(num_heads):
            part = slice(h * head_dim, (h + 1) * head_dim)
            for t in range(seq_len):
                keys = allowed[b, t].nonzero().flatten()
                scores = torch.stack([query[b, t, part] @ key[b, j, part] for j in keys]) / math.sqrt(head_dim)
                weights = scores.softmax(dim=0)
                out[b, t, part] = (weights[:, None] * value[b, keys, part]).sum(dim=0)
    return out


# --- the long/short-term gate: output fields -------------------------------------------------------------------------


@pytest.mark.parametrize("long, short", GATE_COMBINATIONS, ids=GATE_IDS)
def test_interest_fields_are_none_or_well_shaped(long, short):
    model = build(InterestForNextItemPrediction, long, short)
    inputs = tiny_inputs()
    out = model(**inputs)
    backbone_out = model.model(**inputs)
    assert (out.long_term_interest is None) is not long
    assert (out.short_term_interest is None) is not short
    assert (out.interest_gate is None) is not (long and short)
    assert (model.model.long_short_term is None) is not (long or short)
    for name in ("long_term_interest", "short_term_interest"):
        part = getattr(out, name)
        if part is not None:
            assert part.shape == (BATCH, SEQ_LEN, HIDDEN)
            assert torch.isfinite(part).all()
            assert torch.equal(part, getattr(backbone_out, name))  # the head passes the backbone's fields on
    if long and short:
        gate = out.interest_gate
        assert gate.shape == (BATCH, SEQ_LEN)
        assert ((gate >= 0) & (gate <= 1)).all()
        real = inputs["attention_mask"].bool()
        assert (gate[~real] == 0).all()  # padded positions carry no gate
        assert (gate[real] > 0).all() and (gate[real] < 1).all()
        assert gate[real].std() > 0.01  # randomised gate weights: the gate does vary by user and step
        assert torch.equal(gate, backbone_out.interest_gate)
    assert torch.isfinite(out.last_hidden_state).all()
    assert (out.last_hidden_state[~inputs["attention_mask"].bool()] == 0).all()


def test_forecasting_and_click_heads_pass_the_interest_fields_on():
    inputs = tiny_inputs()
    forecaster = build(InterestForInterestForecasting, num_categories=3)
    clicker = build(InterestForClickPrediction)
    candidates = torch.randint(3, NUM_ITEMS, (BATCH, 2))
    for model, out in (
        (forecaster, forecaster(**inputs)),
        (clicker, clicker(**inputs, candidate_ids=candidates)),
    ):
        expected = model.model(**inputs)
        for name in ("long_term_interest", "short_term_interest", "interest_gate"):
            assert torch.equal(getattr(out, name), getattr(expected, name)), name


def test_neither_configuration_is_the_plain_model():
    config = tiny_config(long_term_interest=False, short_term_interest=False)
    model = InterestModel(config)
    assert model.long_short_term is None
    # The parameter names of the backbone before the long/short-term parts existed: old checkpoints still load.
    layer = [
        f"layers.0.{name}.{kind}"
        for name in (
            "attention.attention_output",
            "attention.key",
            "attention.query",
            "attention.value",
            "attention_layer_norm",
            "ffn_in",
            "ffn_layer_norm",
            "ffn_out",
        )
        for kind in ("bias", "weight")
    ]
    expected = {
        "final_layer_norm.bias",
        "final_layer_norm.weight",
        "item_embeddings.weight",
        "position_embeddings.weight",
        "time_gap_embeddings.weight",
        *layer,
    }
    assert {name for name, _ in model.named_parameters()} == expected
    assert set(model.state_dict()) == expected
    head = InterestForNextItemPrediction(config)
    assert set(head.state_dict()) == {f"model.{name}" for name in expected} | {"item_head.weight", "item_head.bias"}
    # With the parts on, only new names are added under long_short_term.
    both = InterestModel(tiny_config(long_term_interest=True, short_term_interest=True))
    extra = {name for name, _ in both.named_parameters()} - expected
    assert extra and all(name.startswith("long_short_term.") for name in extra)
    assert expected <= {name for name, _ in both.named_parameters()}


@pytest.mark.parametrize("long, short", [(True, False), (False, True)], ids=["long", "short"])
def test_one_part_alone_is_added_without_a_gate(long, short):
    model = build(InterestModel, long, short)
    inputs = tiny_inputs()
    captured = {}
    hook = model.long_short_term.register_forward_hook(lambda module, args, output: captured.update(args=args))
    out = model(**inputs)
    hook.remove()
    assert model.long_short_term.interest_gate is None
    causal_states = captured["args"][0]
    part = out.long_term_interest if long else out.short_term_interest
    final = model.final_layer_norm
    expected = F.layer_norm(causal_states + part, (HIDDEN,), final.weight, final.bias, final.eps)
    expected = expected * inputs["attention_mask"][..., None]
    close(out.last_hidden_state, expected)


def test_init_weights_reaches_every_parameter_of_the_new_modules():
    config = tiny_config(initializer_range=1e-10, long_term_interest=True, short_term_interest=True, num_categories=3)
    for cls in (InterestModel, InterestForInterestForecasting, InterestForClickPrediction):
        model = cls(config)
        for name, param in model.named_parameters():
            # A tiny std rounds every initialised weight's mean to 0 and layer-norm weights to 1; PyTorch's own
            # defaults (kaiming-uniform linears, N(0, 1) embeddings) would not.
            mean = ((param.data.mean() * 1e9).round() / 1e9).item()
            assert mean in (0.0, 1.0), f"{cls.__name__}.{name} was not initialised by _init_weights (mean {mean})"
        if isinstance(model, InterestForInterestForecasting):
            assert (model.item_category_weights == 0).all()


# --- the gate: padding, causality, windows, order --------------------------------------------------------------------


@pytest.mark.parametrize("long, short", GATE_COMBINATIONS, ids=GATE_IDS)
def test_extra_left_padding_changes_nothing_at_real_positions(long, short):
    model = build(InterestModel, long, short)
    inputs = tiny_inputs()
    extra = 5
    padded = {k: F.pad(v, (extra, 0), value=0) for k, v in inputs.items()}
    short_out, long_out = model(**inputs), model(**padded)
    real = inputs["attention_mask"].bool()
    for name in ("last_hidden_state", "long_term_interest", "short_term_interest", "interest_gate"):
        before, after = getattr(short_out, name), getattr(long_out, name)
        if before is None:
            assert after is None
            continue
        close(after[:, extra:][real], before[real])
        assert torch.isfinite(after).all()
    assert (long_out.last_hidden_state[:, :extra] == 0).all()
    if long and short:
        assert (long_out.interest_gate[:, :extra] == 0).all()


@pytest.mark.parametrize("long, short", GATE_COMBINATIONS, ids=GATE_IDS)
def test_changing_a_later_event_never_changes_earlier_states(long, short):
    model = build(InterestModel, long, short)
    inputs = tiny_inputs()
    before = model(**inputs)
    names = ("last_hidden_state", "long_term_interest", "short_term_interest", "interest_gate")
    for position in range(3, SEQ_LEN):  # rows 0 and 1 are real from column 3 on
        changed = {k: v.clone() for k, v in inputs.items()}
        changed["input_ids"][:2, position] = changed_item(changed["input_ids"][:2, position])
        changed["timestamps"][:2, position:] += 12345
        after = model(**changed)
        for name in names:
            if getattr(before, name) is not None:
                close(getattr(after, name)[:2, :position], getattr(before, name)[:2, :position])
        assert not torch.allclose(after.last_hidden_state[:2, position], before.last_hidden_state[:2, position])


def test_short_term_part_reads_only_the_last_window_items():
    """s_t attends over the items at t - window + 1 .. t only; l_t over every item up to t.

    s_t is queried by the causal state h_t (`InterestConfig.short_term_interest`), and h_t depends on the whole
    history, so the window property holds for fixed h: checked on the module itself, then through the whole model
    with a constant query.
    """
    model = build(InterestModel, True, True)
    module = model.long_short_term
    generator = torch.Generator().manual_seed(3)
    causal_states = torch.randn(BATCH, SEQ_LEN, HIDDEN, generator=generator)
    items = torch.randn(BATCH, SEQ_LEN, HIDDEN, generator=generator)
    mask = tiny_inputs()["attention_mask"]
    with torch.no_grad():
        _, long_before, short_before, _ = module(causal_states, items, mask)
        t = SEQ_LEN - 1
        old = t - WINDOW  # just outside the window of t
        older_items = items.clone()
        older_items[:, old] = torch.randn(BATCH, HIDDEN, generator=generator)
        _, long_after, short_after, _ = module(causal_states, older_items, mask)
        close(short_after[:, old + WINDOW :], short_before[:, old + WINDOW :])  # every step whose window misses it
        assert not torch.allclose(short_after[:2, old], short_before[:2, old])  # it is in its own window
        assert not torch.allclose(long_after[:2, t], long_before[:2, t])  # the long-term part reads it
        inside_items = items.clone()
        inside_items[:, old + 1] = torch.randn(BATCH, HIDDEN, generator=generator)  # the oldest item in the window
        _, _, short_inside, _ = module(causal_states, inside_items, mask)
        assert not torch.allclose(short_inside[:2, t], short_before[:2, t])

    # Through the model: with a constant short-term query, s_t depends on the window items alone.
    with torch.no_grad():
        module.short_term_query.weight.zero_()
    inputs = tiny_inputs()
    before = model(**inputs)
    changed = {k: v.clone() for k, v in inputs.items()}
    old = SEQ_LEN - 1 - WINDOW
    changed["input_ids"][:2, old] = changed_item(changed["input_ids"][:2, old])
    after = model(**changed)
    close(after.short_term_interest[:2, old + WINDOW :], before.short_term_interest[:2, old + WINDOW :])
    assert not torch.allclose(after.long_term_interest[:2, -1], before.long_term_interest[:2, -1])
    assert not torch.allclose(after.last_hidden_state[:2, -1], before.last_hidden_state[:2, -1])


@pytest.mark.parametrize("short", [False, True], ids=["long", "both"])
def test_long_term_part_ignores_the_order_of_earlier_items(short):
    model = build(InterestModel, True, short)
    inputs = tiny_inputs()
    before = model(**inputs)
    t = 6
    permuted = {k: v.clone() for k, v in inputs.items()}
    # Row 0: reverse columns 0..t-1; row 1 (real from column 3): reverse its real columns before t.
    permuted["input_ids"][0, :t] = inputs["input_ids"][0, :t].flip(0)
    permuted["input_ids"][1, 3:t] = inputs["input_ids"][1, 3:t].flip(0)
    assert not torch.equal(permuted["input_ids"], inputs["input_ids"])
    after = model(**permuted)
    close(after.long_term_interest[:2, t:], before.long_term_interest[:2, t:])
    # ... while the causal states, which see positions, do change.
    assert not torch.allclose(after.last_hidden_state[:2, t], before.last_hidden_state[:2, t])


def test_combined_state_is_the_gated_sum_computed_by_hand():
    model = build(InterestModel, True, True)
    module = model.long_short_term
    inputs = tiny_inputs()
    captured = {}
    hook = module.register_forward_hook(lambda mod, args, output: captured.update(args=args))
    out = model(**inputs)
    hook.remove()
    h, items, mask = captured["args"]
    assert torch.equal(mask, inputs["attention_mask"])
    close(items, model.item_embeddings(inputs["input_ids"]))  # the items themselves: no positions, no time gaps

    with torch.no_grad():
        query = module.long_term_query.expand(BATCH, SEQ_LEN, HIDDEN)
        long_term = reference_attention(
            query, module.long_term_key(items), module.long_term_value(items), allowed_keys(mask), HEADS
        )
        short_term = reference_attention(
            module.short_term_query(h),
            module.short_term_key(items),
            module.short_term_value(items),
            allowed_keys(mask, WINDOW),
            HEADS,
        )
        w, b = module.interest_gate.weight[0], module.interest_gate.bias[0]
        gate = torch.zeros(BATCH, SEQ_LEN)
        combined = torch.zeros(BATCH, SEQ_LEN, HIDDEN)
        final = model.final_layer_norm
        for i in range(BATCH):
            for t in range(SEQ_LEN):
                g = torch.sigmoid(w @ torch.cat([h[i, t], long_term[i, t], short_term[i, t]]) + b)
                mixed = h[i, t] + g * long_term[i, t] + (1 - g) * short_term[i, t]
                centred = mixed - mixed.mean()
                normed = centred / torch.sqrt((centred**2).mean() + final.eps) * final.weight + final.bias
                real = bool(mask[i, t])
                gate[i, t] = g if real else 0.0
                combined[i, t] = normed if real else 0.0
    real = mask[..., None].to(long_term.dtype)  # the parts, like the states, are zero at padded positions
    close(out.long_term_interest, long_term * real)
    close(out.short_term_interest, short_term * real)
    close(out.interest_gate, gate)
    torch.testing.assert_close(out.last_hidden_state, combined, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("long, short", GATE_COMBINATIONS[1:], ids=GATE_IDS[1:])
def test_save_load_round_trip_keeps_the_interest_parts(tmp_path, long, short):
    model = build(InterestForNextItemPrediction, long, short)
    inputs = tiny_inputs()
    model.save_pretrained(tmp_path)
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    assert loaded.config.long_term_interest is long and loaded.config.short_term_interest is short
    assert loaded.config.short_term_window == WINDOW
    expected, got = model(**inputs), loaded(**inputs)
    for name in ("logits", "last_hidden_state", "long_term_interest", "short_term_interest", "interest_gate"):
        if getattr(expected, name) is None:
            assert getattr(got, name) is None
        else:
            assert torch.equal(getattr(got, name), getattr(expected, name)), name
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    assert torch.equal(backbone(**inputs).last_hidden_state, expected.last_hidden_state)


# --- next_k_category_targets -----------------------------------------------------------------------------------------


def category_weights_table() -> torch.Tensor:
    """8 vocabulary rows (3 special), 3 categories: item 3 -> c0, 4 -> c1, 5 -> c0 and c2, 6 -> none, 7 -> c2."""
    weights = torch.zeros(8, 3)
    weights[3, 0] = 1.0
    weights[4, 1] = 1.0
    weights[5, 0] = weights[5, 2] = 0.5
    weights[7, 2] = 1.0
    return weights


def test_next_k_category_targets_by_hand():
    next_items = torch.tensor(
        [
            [-100, -100, 3, 5, 6, 4, -100],
            [6, 6, -100, -100, 7, -100, -100],
        ]
    )
    targets, num_events = next_k_category_targets(next_items, category_weights_table(), k=3)
    expected = torch.tensor(
        [
            [
                [1.0, 0.0, 0.0],  # [-, -, 3]
                [0.75, 0.0, 0.25],  # [-, 3, 5]: 1 + 0.5 on c0, 0.5 on c2, over 2
                [0.75, 0.0, 0.25],  # [3, 5, 6]: item 6 has no category and adds nothing
                [0.25, 0.5, 0.25],  # [5, 6, 4]
                [0.0, 1.0, 0.0],  # [6, 4, -]
                [0.0, 1.0, 0.0],  # [4, -] (the end of the sequence)
                [0.0, 0.0, 0.0],  # [-]
            ],
            [
                [0.0, 0.0, 0.0],  # [6, 6, -]: events, but none with a category
                [0.0, 0.0, 0.0],
                [0.0, 0.0, 1.0],
                [0.0, 0.0, 1.0],
                [0.0, 0.0, 1.0],
                [0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0],
            ],
        ]
    )
    torch.testing.assert_close(targets, expected)
    assert num_events.tolist() == [[1, 2, 3, 3, 2, 1, 0], [2, 1, 1, 1, 1, 0, 0]]
    assert num_events.dtype == torch.long


def loop_category_targets(next_items: torch.Tensor, weights: torch.Tensor, k: int):
    """The same targets from plain Python loops."""
    batch_size, seq_len = next_items.shape
    targets = torch.zeros(batch_size, seq_len, weights.shape[1], dtype=torch.float64)
    num_events = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for b in range(batch_size):
        for t in range(seq_len):
            total = torch.zeros(weights.shape[1], dtype=torch.float64)
            for j in range(t, min(t + k, seq_len)):
                item = int(next_items[b, j])
                if item >= 0:
                    num_events[b, t] += 1
                    total += weights[item].double()
            if total.sum() > 0:
                targets[b, t] = total / total.sum()
    return targets, num_events


@pytest.mark.parametrize("k", [1, 3, 50])
def test_next_k_category_targets_match_a_loop(k):
    generator = torch.Generator().manual_seed(k)
    num_items, num_categories = 15, 4
    raw = torch.rand(num_items, num_categories, generator=generator) * (
        torch.rand(num_items, num_categories, generator=generator) < 0.5
    )
    raw[:3] = 0  # special tokens
    raw[5] = 0  # a real item without a category
    weights = raw / raw.sum(dim=1, keepdim=True).clamp(min=1e-12)
    next_items = torch.randint(0, num_items, (5, 11), generator=generator)
    next_items[torch.rand(5, 11, generator=generator) < 0.3] = -100
    next_items[0, :4] = -100  # front padding
    next_items[1, -3:] = -100  # end padding
    targets, num_events = next_k_category_targets(next_items, weights, k)
    expected_targets, expected_events = loop_category_targets(next_items, weights, k)
    torch.testing.assert_close(targets.double(), expected_targets, rtol=1e-5, atol=1e-6)
    assert torch.equal(num_events, expected_events)
    sums = targets.sum(dim=-1)
    assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))


# --- the forecasting head --------------------------------------------------------------------------------------------


def forecaster_with_categories(seed: int = 0, **overrides) -> InterestForInterestForecasting:
    overrides = {"num_categories": 3, "forecast_horizon": 3, **overrides}
    model = build(InterestForInterestForecasting, seed=seed, **overrides)
    generator = torch.Generator().manual_seed(seed + 7)
    raw = torch.rand(NUM_ITEMS, 3, generator=generator) * (torch.rand(NUM_ITEMS, 3, generator=generator) < 0.6)
    raw[:3] = 0
    raw[4] = 0  # an item without a category
    model.set_item_category_weights(raw / raw.sum(dim=1, keepdim=True).clamp(min=1e-12))
    return model


def test_forecasting_loss_is_the_soft_cross_entropy_over_positions_with_targets():
    model = forecaster_with_categories()
    inputs = tiny_inputs(batch_size=4)
    labels = shifted_labels(inputs)
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (4, SEQ_LEN, 3)
    targets, _ = loop_category_targets(labels, model.item_category_weights, k=3)
    losses = []
    for b in range(4):
        for t in range(SEQ_LEN):
            if inputs["attention_mask"][b, t] and targets[b, t].sum() > 0:
                log_probs = torch.log_softmax(out.logits[b, t].double(), dim=0)
                losses.append(-(targets[b, t] * log_probs).sum())
    assert losses
    torch.testing.assert_close(out.loss.double(), torch.stack(losses).mean(), rtol=1e-5, atol=1e-6)

    # category_targets given directly take the same path
    direct = model(**inputs, category_targets=targets.float()).loss
    torch.testing.assert_close(direct, out.loss)
    assert model(**inputs).loss is None
    with pytest.raises(ValueError, match="category_targets must have shape"):
        model(**inputs, category_targets=targets[:, :, :2].float())
    with pytest.raises(ValueError, match="labels must"):
        model(**inputs, labels=labels.float())


def test_forecasting_loss_without_targets_is_zero_with_a_gradient():
    model = forecaster_with_categories().train()
    inputs = tiny_inputs()
    for kwargs in (
        {"category_targets": torch.zeros(BATCH, SEQ_LEN, 3)},
        {"labels": torch.full((BATCH, SEQ_LEN), -100)},
    ):
        model.zero_grad()
        loss = model(**inputs, **kwargs).loss
        assert loss.item() == 0.0
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


def test_set_item_category_weights_rejects_bad_tables():
    model = build(InterestForInterestForecasting, num_categories=3)
    assert (model.item_category_weights == 0).all()
    good = torch.zeros(NUM_ITEMS, 3)
    good[3:, 1] = 1.0
    with pytest.raises(ValueError, match=r"shape \(num_items, num_categories\)"):
        model.set_item_category_weights(torch.zeros(NUM_ITEMS, 4))
    with pytest.raises(ValueError, match=r"shape \(num_items, num_categories\)"):
        model.set_item_category_weights(torch.zeros(NUM_ITEMS - 1, 3))
    negative = good.clone()
    negative[5] = torch.tensor([1.5, -0.5, 0.0])  # sums to 1, but negative
    with pytest.raises(ValueError, match="non-negative"):
        model.set_item_category_weights(negative)
    partial = good.clone()
    partial[6] = torch.tensor([0.3, 0.3, 0.0])
    with pytest.raises(ValueError, match="summing to 1"):
        model.set_item_category_weights(partial)
    not_finite = good.clone()
    not_finite[7, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        model.set_item_category_weights(not_finite)
    assert (model.item_category_weights == 0).all()  # nothing was written by a rejected table
    model.set_item_category_weights(good)  # zero rows (special tokens) are allowed
    assert torch.equal(model.item_category_weights, good)


def test_forecasting_needs_num_categories():
    with pytest.raises(ValueError, match="num_categories"):
        InterestForInterestForecasting(tiny_config())
    with pytest.raises(ValueError, match="category_names"):
        tiny_config(num_categories=3, category_names=["a", "b"])


def test_forecast_returns_distributions_after_the_last_event():
    model = forecaster_with_categories()
    inputs = tiny_inputs()
    forecast = model.forecast(**inputs)
    assert forecast.shape == (BATCH, 3)
    torch.testing.assert_close(forecast.sum(dim=-1), torch.ones(BATCH))
    assert (forecast >= 0).all()
    close(forecast, model(**inputs).logits[:, -1].softmax(dim=-1))


def test_forecasting_save_load_keeps_category_weights_and_outputs(tmp_path):
    model = forecaster_with_categories(category_names=["x", "y", "z"])
    inputs = tiny_inputs()
    model.save_pretrained(tmp_path)
    loaded = InterestForInterestForecasting.from_pretrained(tmp_path).eval()
    assert loaded.config.category_names == ["x", "y", "z"]
    assert loaded.item_category_weights.abs().sum() > 0
    assert torch.equal(loaded.item_category_weights, model.item_category_weights)
    labels = shifted_labels(inputs)
    expected, got = model(**inputs, labels=labels), loaded(**inputs, labels=labels)
    assert torch.equal(got.logits, expected.logits)
    assert torch.equal(got.loss, expected.loss)


def test_forecasting_labels_of_the_wrong_shape_are_named_in_the_error():
    model = forecaster_with_categories()
    inputs = tiny_inputs()
    with pytest.raises(ValueError, match="^labels"):
        model(**inputs, labels=torch.full((BATCH, SEQ_LEN + 1), -100))


def backbone_weights_equal(a: InterestModel, b: InterestModel) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert set(state_a) == set(state_b)
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


@pytest.mark.parametrize("long, short", [(False, False), (True, True)], ids=["plain", "both"])
def test_forecasting_head_loads_the_backbone_of_a_next_item_checkpoint(tmp_path, long, short):
    next_item = build(InterestForNextItemPrediction, long, short, seed=5)  # a config without categories
    next_item.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs config.num_categories"):
        InterestForInterestForecasting.from_pretrained(tmp_path)
    loaded = InterestForInterestForecasting.from_pretrained(
        tmp_path, num_categories=3, category_names=["a", "b", "c"]
    ).eval()
    assert loaded.config.num_categories == 3 and loaded.forecast_head.out_features == 3
    backbone_weights_equal(loaded.model, next_item.model)
    assert (loaded.item_category_weights == 0).all()  # not in the checkpoint: set it before training
    inputs = tiny_inputs()
    assert torch.equal(loaded(**inputs).last_hidden_state, next_item(**inputs).last_hidden_state)


# --- the click head --------------------------------------------------------------------------------------------------


def click_candidates(seed: int = 0, batch_size: int = BATCH, num_candidates: int = 4, per_step: bool = True):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, SEQ_LEN, num_candidates) if per_step else (batch_size, num_candidates)
    return torch.randint(3, NUM_ITEMS, shape, generator=generator)


@pytest.mark.parametrize("long, short", [(False, False), (True, True)], ids=["plain", "both"])
def test_click_output_shapes(long, short):
    model = build(InterestForClickPrediction, long, short)
    inputs = tiny_inputs()
    per_step = model(**inputs, candidate_ids=click_candidates(), output_attentions=True)
    assert per_step.logits.shape == per_step.probabilities.shape == (BATCH, SEQ_LEN, 4)
    assert per_step.target_attention.shape == (BATCH, SEQ_LEN, 4, SEQ_LEN)
    assert per_step.last_hidden_state.shape == (BATCH, SEQ_LEN, HIDDEN)
    close(per_step.probabilities, torch.sigmoid(per_step.logits))
    assert torch.isfinite(per_step.logits).all()
    last = model(**inputs, candidate_ids=click_candidates(per_step=False), output_attentions=True)
    assert last.logits.shape == last.probabilities.shape == (BATCH, 4)
    assert last.target_attention.shape == (BATCH, 4, SEQ_LEN)
    assert model(**inputs, candidate_ids=click_candidates()).target_attention is None
    assert per_step.loss is None


def test_click_last_position_path_equals_the_per_step_path():
    model = build(InterestForClickPrediction)
    inputs = tiny_inputs()
    per_step_candidates = click_candidates()
    last_candidates = per_step_candidates[:, -1]
    per_step = model(**inputs, candidate_ids=per_step_candidates, output_attentions=True)
    last = model(**inputs, candidate_ids=last_candidates, output_attentions=True)
    close(last.logits, per_step.logits[:, -1])
    close(last.target_attention, per_step.target_attention[:, -1])
    # and the fused attention (no weights requested) gives the same scores
    close(model(**inputs, candidate_ids=last_candidates).logits, last.logits)
    close(model(**inputs, candidate_ids=per_step_candidates).logits, per_step.logits)


def test_click_extra_left_padding_changes_nothing_at_real_positions():
    model = build(InterestForClickPrediction)
    inputs = tiny_inputs()
    candidates = click_candidates()
    extra = 4
    padded = {k: F.pad(v, (extra, 0), value=0) for k, v in inputs.items()}
    padded_candidates = F.pad(candidates, (0, 0, extra, 0), value=0)
    before = model(**inputs, candidate_ids=candidates, output_attentions=True)
    after = model(**padded, candidate_ids=padded_candidates, output_attentions=True)
    real = inputs["attention_mask"].bool()
    close(after.logits[:, extra:][real], before.logits[real])
    close(after.target_attention[:, extra:, :, extra:][real], before.target_attention[real])
    assert (after.target_attention[:, extra:, :, :extra][real] == 0).all()
    close(model(**padded, candidate_ids=candidates[:, -1]).logits[:2], before.logits[:2, -1])


def test_click_candidates_ignore_later_history():
    model = build(InterestForClickPrediction)
    inputs = tiny_inputs()
    candidates = click_candidates()
    before = model(**inputs, candidate_ids=candidates, output_attentions=True)
    for position in range(3, SEQ_LEN):
        changed = {k: v.clone() for k, v in inputs.items()}
        changed["input_ids"][:2, position] = changed_item(changed["input_ids"][:2, position])
        changed["timestamps"][:2, position:] += 777
        after = model(**changed, candidate_ids=candidates, output_attentions=True)
        close(after.logits[:2, :position], before.logits[:2, :position])
        close(after.target_attention[:2, :position], before.target_attention[:2, :position])
        assert not torch.allclose(after.logits[:2, position], before.logits[:2, position])


def test_target_attention_is_a_distribution_over_real_past_events():
    model = build(InterestForClickPrediction)
    inputs = tiny_inputs()
    weights = model(**inputs, candidate_ids=click_candidates(), output_attentions=True).target_attention
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(BATCH, SEQ_LEN, 4))
    for b in range(BATCH):
        for t in range(SEQ_LEN):
            if not mask[b, t]:
                continue
            for j in range(SEQ_LEN):
                if j > t or not mask[b, j]:
                    assert (weights[b, t, :, j] == 0).all(), (b, t, j)  # future or padding
                else:
                    assert (weights[b, t, :, j] > 0).all(), (b, t, j)
    last = model(**inputs, candidate_ids=click_candidates(per_step=False), output_attentions=True).target_attention
    assert (last[1, :, :3] == 0).all()  # row 1 is padded in columns 0..2
    torch.testing.assert_close(last[:2].sum(dim=-1), torch.ones(2, 4))


def test_click_loss_is_bce_on_the_labelled_entries():
    model = build(InterestForClickPrediction)
    inputs = tiny_inputs()
    candidates = click_candidates()
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 2, candidates.shape, generator=generator).float()
    labels[torch.rand(candidates.shape, generator=generator) < 0.3] = -100
    labels[~inputs["attention_mask"].bool()] = -100
    out = model(**inputs, candidate_ids=candidates, click_labels=labels)
    labelled = labels != -100
    expected = F.binary_cross_entropy_with_logits(out.logits[labelled], labels[labelled])
    close(out.loss, expected)
    # by hand, in float64, from the probabilities
    p = out.probabilities[labelled].double()
    y = labels[labelled].double()
    torch.testing.assert_close(
        out.loss.double(), -(y * p.log() + (1 - y) * (1 - p).log()).mean(), rtol=1e-4, atol=1e-5
    )
    # (B, C) labels with (B, C) candidates
    last_labels = labels[:, -1].clone()
    last_labels[2] = -100
    last = model(**inputs, candidate_ids=candidates[:, -1], click_labels=last_labels)
    keep = last_labels != -100
    close(last.loss, F.binary_cross_entropy_with_logits(last.logits[keep], last_labels[keep]))
    # nothing labelled: zero loss, still a graph
    model.train()
    nothing = model(**inputs, candidate_ids=candidates, click_labels=torch.full(candidates.shape, -100.0)).loss
    assert nothing.item() == 0.0
    nothing.backward()


def test_click_head_rejects_bad_inputs():
    model = build(InterestForClickPrediction)
    inputs = tiny_inputs()
    candidates = click_candidates()
    for bad in (0.5, 2.0, -1.0, float("nan")):
        labels = torch.zeros(candidates.shape)
        labels[0, 0, 0] = bad
        with pytest.raises(ValueError, match="click_labels must be 1"):
            model(**inputs, candidate_ids=candidates, click_labels=labels)
    with pytest.raises(ValueError, match="click_labels must have the shape"):
        model(**inputs, candidate_ids=candidates, click_labels=torch.zeros(BATCH, SEQ_LEN))
    for bad_candidates in (
        torch.randint(3, NUM_ITEMS, (BATCH, SEQ_LEN + 1, 2)),  # wrong seq_len
        torch.randint(3, NUM_ITEMS, (BATCH + 1, 2)),  # wrong batch size
        torch.randint(3, NUM_ITEMS, (4,)),  # one dimension
        torch.randint(3, NUM_ITEMS, (BATCH, SEQ_LEN, 2, 1)),  # four dimensions
    ):
        with pytest.raises(ValueError, match="candidate_ids must be"):
            model(**inputs, candidate_ids=bad_candidates)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(**inputs, candidate_ids=torch.full((BATCH, 2), NUM_ITEMS))
    with pytest.raises(ValueError, match="needs input_ids and candidate_ids"):
        model(**inputs)


def test_click_head_loads_the_backbone_of_a_next_item_checkpoint(tmp_path):
    next_item = build(InterestForNextItemPrediction, seed=5)
    next_item.save_pretrained(tmp_path)
    loaded = InterestForClickPrediction.from_pretrained(tmp_path).eval()
    backbone_weights_equal(loaded.model, next_item.model)
    assert (loaded.click_item_bias.bias == 0).all()  # a fresh head
    inputs = tiny_inputs()
    out = loaded(**inputs, candidate_ids=click_candidates(per_step=False))
    assert torch.equal(out.last_hidden_state, next_item(**inputs).last_hidden_state)


def test_click_head_learns_a_candidate_dependent_click_rule():
    """Clicks depend on the candidate alone (even item indices are clicked): a few Adam steps must learn it."""
    torch.manual_seed(0)
    model = InterestForClickPrediction(
        tiny_config(hidden_dropout_prob=0.0, long_term_interest=True, short_term_interest=True)
    )
    inputs = tiny_inputs(seed=11, batch_size=16)
    inputs["attention_mask"][:, :2] = 0  # some padding, no empty rows
    inputs["input_ids"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, 0)
    inputs["timestamps"] = inputs["timestamps"].masked_fill(inputs["attention_mask"] == 0, 0)
    candidates = click_candidates(seed=12, batch_size=16, num_candidates=3)
    labels = (candidates % 2 == 0).float().masked_fill(~inputs["attention_mask"].bool()[..., None], -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(30):
        loss = model(**inputs, candidate_ids=candidates, click_labels=labels).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model(**inputs, candidate_ids=candidates, click_labels=labels)
    assert losses[0] > 0.6  # about log 2 at the start
    assert final.loss.item() < 0.5 * losses[0]
    labelled = labels != -100
    accuracy = ((final.logits[labelled] > 0).float() == labels[labelled]).float().mean()
    assert accuracy > 0.9


def test_interest_vectors_long_term_pooling_is_the_long_term_part_after_the_last_event():
    from hf_interest import ItemTokenizer
    from hf_interest.evolution import interest_vectors

    tokenizer = ItemTokenizer.from_items([f"i{n}" for n in range(NUM_ITEMS - 3)])
    model = build(InterestForNextItemPrediction, True, True)
    histories = [["i1", "i4", "i2"], ["i5"], ["i3", "i3", "i0", "i6", "i2"]]
    vectors = interest_vectors(model, tokenizer, histories, pooling="long_term")
    for row, history in enumerate(histories):
        ids = torch.tensor([tokenizer.convert_tokens_to_ids(history)])
        expected = model(input_ids=ids).long_term_interest[0, -1]
        torch.testing.assert_close(torch.from_numpy(vectors[row]), expected.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="long_term_interest=True"):
        interest_vectors(build(InterestForNextItemPrediction, False, True), tokenizer, histories, pooling="long_term")


def test_a_config_saved_before_the_interest_parts_existed_loads_without_them(tmp_path):
    import json

    model = InterestForNextItemPrediction(tiny_config(long_term_interest=False, short_term_interest=False)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("long_term_interest", "short_term_interest"):
        del saved[key]  # what a checkpoint from before these fields holds
    (tmp_path / "config.json").write_text(json.dumps(saved))
    reloaded = InterestForNextItemPrediction.from_pretrained(tmp_path).eval()
    assert reloaded.model.long_short_term is None  # the architecture it was trained with, not the new default
    inputs = tiny_inputs()
    torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits)
    assert InterestConfig().long_term_interest and InterestConfig().short_term_interest  # the default for new models
