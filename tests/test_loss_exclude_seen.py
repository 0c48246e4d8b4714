"""`loss_exclude_seen`: the training softmax leaves out the history's items, as exclude_seen ranking does, and a
position whose target is one of them (a repeat, a miss under that protocol) leaves the loss."""

import torch
import torch.nn.functional as F
from tiny import tiny_config

from hf_interest import InterestForNextItemPrediction


def tiny(loss_type="full_softmax", **kwargs):
    config = tiny_config(
        max_position_embeddings=8,
        loss_type=loss_type,
        num_negative_samples=40,
        loss_exclude_seen=True,
        **kwargs,
    )
    torch.manual_seed(0)
    return InterestForNextItemPrediction(config).eval()


# row 0 is left padded, repeats item 5 (the label at position 4) and ends on 6 again (its last label); row 1 reads 8
# twice (the label at position 2) and its last label (8) is an item it has already seen: four repeat targets
INPUT_IDS = torch.tensor([[0, 0, 5, 6, 7, 5, 9, 10], [3, 4, 8, 8, 11, 12, 13, 14]])
ATTENTION = (INPUT_IDS != 0).long()
LABELS = torch.cat([INPUT_IDS[:, 1:], torch.tensor([[6], [8]])], dim=1).masked_fill(ATTENTION == 0, -100)


def reference_loss(model):
    """Cross-entropy written out position by position: the seen items removed by hand, repeat targets skipped."""
    logits = model(input_ids=INPUT_IDS, attention_mask=ATTENTION).logits
    losses = []
    for b in range(INPUT_IDS.shape[0]):
        for t in range(INPUT_IDS.shape[1]):
            target = int(LABELS[b, t])
            if target < 3:
                continue
            history = INPUT_IDS[b, : t + 1].tolist()
            if target in history:
                continue
            row = logits[b, t].clone()
            row[:3] = float("-inf")  # special tokens are never candidates
            for item in history:
                if item >= 3:
                    row[item] = float("-inf")
            losses.append(F.cross_entropy(row[None], torch.tensor([target])))
    return torch.stack(losses).mean()


def test_full_softmax_matches_hand_computation():
    model = tiny()
    loss = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=LABELS).loss
    torch.testing.assert_close(loss, reference_loss(model))
    model.config.loss_exclude_seen = False
    plain = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=LABELS).loss
    assert plain > loss  # the seen items took probability mass away from the targets


def test_repeat_targets_are_found_and_leave_the_loss():
    repeat = InterestForNextItemPrediction.target_seen_before(INPUT_IDS, LABELS)
    assert repeat.nonzero().tolist() == [[0, 4], [0, 7], [1, 2], [1, 7]]
    model = tiny()
    only_repeats = LABELS.masked_fill(~repeat, -100)
    for loss_type in ("full_softmax", "sampled_softmax"):
        model.config.loss_type = loss_type
        assert model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=only_repeats).loss.item() == 0.0
    model.config.loss_type = "full_softmax"
    # the other positions' loss is what it is without the repeat positions labelled at all
    without = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=LABELS.masked_fill(repeat, -100)).loss
    torch.testing.assert_close(model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=LABELS).loss, without)
    model.config.loss_exclude_seen = False  # without the protocol, a repeat is a target like any other
    assert model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=only_repeats).loss.item() > 0.0


def test_repeat_target_keeps_a_finite_loss_and_gradient():
    model = tiny().train()
    loss = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=LABELS).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_sampled_candidates_agree_with_the_full_table():
    model = tiny(loss_type="sampled_softmax")
    labelled = LABELS >= 3
    batch_index, position = labelled.nonzero(as_tuple=True)
    candidates = torch.arange(3, 20)
    full = model.seen_before(INPUT_IDS, batch_index, position)[:, 3:]  # the whole vocabulary, specials dropped
    sampled = model.seen_before(INPUT_IDS, batch_index, position, candidates)
    assert torch.equal(full, sampled)
    # row 0, position 3 has read [pad, pad, 5, 6]: 5 and 6 are seen, 7 (its label) is not yet
    m = ((batch_index == 0) & (position == 3)).nonzero().item()
    assert set((candidates[full[m]]).tolist()) == {5, 6}


def test_sampled_softmax_drops_seen_negatives():
    model = tiny(loss_type="sampled_softmax")
    torch.manual_seed(1)
    masked = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=LABELS).loss
    model.config.loss_exclude_seen = False
    torch.manual_seed(1)  # the same negatives
    plain = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=LABELS).loss
    assert torch.isfinite(masked) and masked < plain


def test_inputs_embeds_trains_without_the_mask():
    model = tiny()
    embeds = model.get_input_embeddings()(INPUT_IDS)
    loss = model(inputs_embeds=embeds, attention_mask=ATTENTION, labels=LABELS).loss
    model.config.loss_exclude_seen = False
    torch.testing.assert_close(loss, model(input_ids=INPUT_IDS, attention_mask=ATTENTION, labels=LABELS).loss)
