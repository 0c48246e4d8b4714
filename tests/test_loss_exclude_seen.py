"""`loss_exclude_seen`: the training softmax leaves out the history's items, as exclude_seen ranking does."""

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


# row 0 is left padded and repeats item 5; row 1's last label (8) is an item it has already seen (a repeat target)
INPUT_IDS = torch.tensor([[0, 0, 5, 6, 7, 5, 9, 10], [3, 4, 8, 8, 11, 12, 13, 14]])
ATTENTION = (INPUT_IDS != 0).long()
LABELS = torch.cat([INPUT_IDS[:, 1:], torch.tensor([[6], [8]])], dim=1).masked_fill(ATTENTION == 0, -100)


def reference_loss(model):
    """Cross-entropy written out position by position, with the seen items (not the target) removed by hand."""
    logits = model(input_ids=INPUT_IDS, attention_mask=ATTENTION).logits
    losses = []
    for b in range(INPUT_IDS.shape[0]):
        for t in range(INPUT_IDS.shape[1]):
            target = int(LABELS[b, t])
            if target < 3:
                continue
            row = logits[b, t].clone()
            row[:3] = float("-inf")  # special tokens are never candidates
            for item in INPUT_IDS[b, : t + 1].tolist():
                if item >= 3 and item != target:
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
