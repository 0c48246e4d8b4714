"""Serving: an ONNX graph with exclusions and top-k inside, onnxruntime behind raw ids, and top-k over huge catalogues.

- `export_onnx(model, tokenizer, folder)`: `torch.onnx.export(..., dynamo=True)` of `RecommendationGraph` (the
  model's scores after the last event, special tokens and the excluded items masked, `topk` inside the graph), with
  dynamic batch, sequence and exclusion axes, beside the item vocabulary and `onnx_config.json`; the export is checked
  against torch on a few left-padded batches before it is kept. (`optimum` does not support transformers 5.)
- `OnnxRecommender` (from `endpoint_handler.py`, standalone): onnxruntime behind raw item ids, every input checked.
- `chunked_top_k(states, item_vectors, bias, k)`: the top-k items of many users against a catalogue of any size
  without ever holding the users x items score matrix: one matmul per chunk of items and a running top-k;
  `recommend_chunked(model, ...)` is `model.recommend` on top of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .endpoint_handler import ONNX_CONFIG_FILE, ONNX_FILE, EndpointHandler, OnnxRecommender, RequestError
from .modeling_interest import RecommendationOutput, relative_time_buckets, time_gap_buckets

DEFAULT_MAX_TOP_K = 100


class RecommendationGraph(nn.Module):
    """
    What the exported graph computes, in plain PyTorch: the next-item scores after the last event of each left-padded
    history (as `recommend`), special tokens and `excluded_ids` set to -inf, then the top `max_top_k`.

    Inputs: `input_ids`, `attention_mask`, `timestamps` `(B, T)` int64; `has_timestamps` `(B,)` bool (False: every gap
    "unknown", as the model reads a history given without times); `excluded_ids` `(B, E)` int64 (pad with the padding
    index, a special token that is masked anyway). Outputs: `scores`, `item_ids` `(B, max_top_k)`.
    """

    def __init__(self, model, max_top_k: int = DEFAULT_MAX_TOP_K):
        super().__init__()
        self.model = model
        self.max_top_k = int(max_top_k)

    def forward(self, input_ids, attention_mask, timestamps, has_timestamps, excluded_ids):
        config = self.model.config
        buckets = None
        if config.use_time_gaps:
            buckets = time_gap_buckets(timestamps, attention_mask, config.num_time_buckets)
            buckets = buckets * has_timestamps[:, None].to(buckets.dtype)
        relative = None
        if config.block_type == "hstu":  # the time between every pair of events, "unknown" for rows without times
            relative = relative_time_buckets(timestamps, config.num_time_buckets)
            relative = relative * has_timestamps[:, None, None].to(relative.dtype)
        states = self.model.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            time_gap_bucket_ids=buckets,
            relative_time_bucket_ids=relative,
            return_dict=True,
            states_to_keep=1,  # the last layer and the interest parts for the newest event only, as recommend does
        ).last_hidden_state[:, -1]
        scores = self.model.item_logits(states, previous_items=input_ids[:, -1]).float()  # left padded: newest last
        special = torch.arange(scores.shape[1], device=scores.device) < config.num_special_tokens
        scores = scores.masked_fill(special[None, :], float("-inf"))
        scores = scores.scatter(1, excluded_ids, float("-inf"))
        top_scores, top_items = torch.topk(scores, self.max_top_k, dim=1)
        return top_scores, top_items


def _example_inputs(config, batch: int, length: int, excluded: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    special = config.num_special_tokens
    input_ids = torch.randint(special, config.num_items, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):  # left padding of different lengths, one row fully real
        attention_mask[row, : row % length] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, config.pad_token_id)
    gaps = torch.randint(1, 10**5, (batch, length), generator=generator)
    timestamps = (1_600_000_000 + gaps.cumsum(dim=1)).masked_fill(attention_mask == 0, 0)
    has_timestamps = torch.arange(batch) % 2 == 0
    excluded_ids = torch.full((batch, excluded), config.pad_token_id, dtype=torch.long)
    excluded_ids[:, : min(excluded, length)] = input_ids[:, : min(excluded, length)]
    return input_ids, attention_mask, timestamps, has_timestamps, excluded_ids


def export_onnx(model, tokenizer, folder, max_top_k: int = DEFAULT_MAX_TOP_K, check: bool = True) -> dict:
    """
    Exports a next-item model to `folder/model.onnx` (with `onnx_config.json` and the item vocabulary), dynamic in the
    batch, the sequence (up to `max_position_embeddings`) and the number of excluded items, and checks it: onnxruntime
    against torch on left-padded batches, max abs difference of the top scores and equality of the top-10.

    Returns:
        `{"folder", "files", "max_abs_diff", "top10_equal"}` (the last two from the check).
    """
    config = model.config
    if not hasattr(model, "recommend"):
        raise TypeError(f"export_onnx exports a next-item model (with recommend), got {type(model).__name__}.")
    model.check_vocabulary(tokenizer)
    max_top_k = min(int(max_top_k), config.num_items - config.num_special_tokens)
    if max_top_k < 1:
        raise ValueError("max_top_k must be at least 1.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    graph = RecommendationGraph(model, max_top_k).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    length = torch.export.Dim("sequence", min=1, max=config.max_position_embeddings)
    excluded = torch.export.Dim("excluded", min=1, max=1 << 20)
    per_event = {0: batch, 1: length}
    example = _example_inputs(config, batch=3, length=min(5, config.max_position_embeddings), excluded=7)
    try:
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            input_names=["input_ids", "attention_mask", "timestamps", "has_timestamps", "excluded_ids"],
            output_names=["scores", "item_ids"],
            dynamic_shapes={
                "input_ids": per_event,
                "attention_mask": per_event,
                "timestamps": per_event,
                "has_timestamps": {0: batch},
                "excluded_ids": {0: batch, 1: excluded},
            },
            verbose=False,
        )
    finally:
        model.train(was_training)
    program.save(str(folder / ONNX_FILE))
    tokenizer.save_vocabulary(str(folder))
    onnx_config = {
        "num_items": config.num_items,
        "num_special_tokens": config.num_special_tokens,
        "pad_token_id": config.pad_token_id,
        "max_length": config.max_position_embeddings,
        "max_top_k": max_top_k,
        "uses_time_gaps": bool(config.use_time_gaps),
        "inputs": ["input_ids", "attention_mask", "timestamps", "has_timestamps", "excluded_ids"],
        "outputs": ["scores", "item_ids"],
    }
    (folder / ONNX_CONFIG_FILE).write_text(json.dumps(onnx_config, indent=2) + "\n", encoding="utf-8")
    result = {"folder": str(folder), "files": sorted(p.name for p in folder.iterdir() if p.is_file())}
    if check:
        result.update(check_onnx(model, folder))
        if result["max_abs_diff"] > 1e-4 or not result["top10_equal"]:
            raise RuntimeError(
                f"The exported graph does not match torch (max abs diff {result['max_abs_diff']:.2e}, top-10 equal: "
                f"{result['top10_equal']}); the export in {folder} is not safe to serve."
            )
    return result


@torch.no_grad()
def check_onnx(model, folder, shapes=((1, 3), (4, 12), (7, None))) -> dict:
    """onnxruntime against `RecommendationGraph` in torch on left-padded batches `(batch, length)` (None: the maximum)."""
    recommender = OnnxRecommender(str(folder))
    graph = RecommendationGraph(model, recommender.config["max_top_k"]).eval()
    worst, equal = 0.0, True
    for batch, length in shapes:
        length = min(length or model.config.max_position_embeddings, model.config.max_position_embeddings)
        inputs = _example_inputs(model.config, batch, length, excluded=length + 2, seed=batch * 1000 + length)
        torch_scores, torch_items = graph(*inputs)
        names = ["input_ids", "attention_mask", "timestamps", "has_timestamps", "excluded_ids"]
        scores, items = recommender.session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        finite = np.isfinite(torch_scores.numpy())
        worst = max(worst, float(np.abs(scores[finite] - torch_scores.numpy()[finite]).max()))
        top = min(10, items.shape[1])  # slots with no eligible item (-inf) hold an arbitrary index: not compared
        torch_top = np.where(finite, torch_items.numpy(), -1)[:, :top]
        equal = equal and bool((np.where(np.isfinite(scores), items, -1)[:, :top] == torch_top).all())
    return {"max_abs_diff": worst, "top10_equal": equal}


def write_handler(folder) -> list[str]:
    """Writes the Inference Endpoints handler (`handler.py`, this package's `endpoint_handler.py`) and its
    `requirements.txt` (onnxruntime and numpy, pinned to the versions installed here) into an exported folder."""
    from importlib import metadata

    folder = Path(folder)
    shutil.copy2(Path(__file__).with_name("endpoint_handler.py"), folder / "handler.py")
    pins = []
    for name in ("onnxruntime", "numpy"):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{name} is not installed: pip install 'hf-interest[serve]'.") from None
    (folder / "requirements.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    return ["handler.py", "requirements.txt"]


@torch.no_grad()
def chunked_top_k(
    states: torch.Tensor,
    item_vectors: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: int = 10,
    chunk_size: int = 2048,
    excluded: torch.Tensor | None = None,
    excluded_per_user: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The top-k items of each user, `scores = states @ item_vectors.T + bias`, one chunk of items at a time with a
    running top-k: memory is `users x chunk_size` scores at most, never `users x items`.

    A chunk is merged only into the users whose best score in it beats their current k-th best (one row maximum per
    user): in a large catalogue, after the first chunks, few users are, so the cost is the matmul plus a row maximum
    rather than a `topk` over every score.

    Args:
        states: `(U, H)` interest states.
        item_vectors: `(N, H)` output item vectors (e.g. `model.item_representations()`, or any table).
        bias: `(N,)` per-item bias, optional.
        k: how many items per user.
        chunk_size: items scored per matmul (the default keeps a chunk of scores of 1,024 users in the CPU's cache).
        excluded: `(N,)` bool, items never returned (e.g. special tokens), optional.
        excluded_per_user: `(U, S)` item indices never returned to that user (e.g. the items they have seen; pad
            with any index of `excluded`), optional.

    Returns:
        `(scores, indices)`, each `(U, k)`, best first. Of items with equal scores at the k-th place, which are kept is
        unspecified, as for `torch.topk`; the scores are exactly the top-k scores.
    """
    users, items = states.shape[0], item_vectors.shape[0]
    if item_vectors.shape[1] != states.shape[1]:
        raise ValueError(f"states have {states.shape[1]} dims, item_vectors {item_vectors.shape[1]}.")
    if not 1 <= k <= items:
        raise ValueError(f"k must be between 1 and the number of items ({items}), got {k}.")
    best_scores = torch.full((users, k), float("-inf"), dtype=states.dtype, device=states.device)
    best_items = torch.full((users, k), -1, dtype=torch.long, device=states.device)
    if excluded is not None:  # a few indices, sorted: each chunk sets its own slice of them (no dense mask pass)
        excluded_items = excluded.nonzero(as_tuple=True)[0]
    if excluded_per_user is not None:  # (user, item) pairs sorted by item: each chunk takes a slice
        pair_items, order = torch.sort(excluded_per_user.flatten())
        pair_users = torch.arange(users, device=states.device).repeat_interleave(excluded_per_user.shape[1])[order]
    for start in range(0, items, chunk_size):
        stop = min(start + chunk_size, items)
        vectors = item_vectors[start:stop].T
        scores = torch.addmm(bias[start:stop], states, vectors) if bias is not None else states @ vectors  # (U, C)
        bounds = torch.tensor([start, stop], device=states.device)
        if excluded is not None:
            low, high = torch.searchsorted(excluded_items, bounds).tolist()
            scores[:, excluded_items[low:high] - start] = float("-inf")
        if excluded_per_user is not None:
            low, high = torch.searchsorted(pair_items, bounds).tolist()
            scores[pair_users[low:high], pair_items[low:high] - start] = float("-inf")
        # only users whose best score in this chunk beats their current k-th best need a merge: in a large
        # catalogue, after the first chunks, few do (about k / chunks-seen of them)
        active = (scores.amax(dim=1) > best_scores[:, -1]).nonzero(as_tuple=True)[0]
        if active.numel() == users:
            best_scores, best_items = _dense_merge(best_scores, best_items, scores, start, k)
        elif active.numel():
            merged = _dense_merge(best_scores[active], best_items[active], scores[active], start, k)
            best_scores[active], best_items[active] = merged
    return best_scores, best_items


@torch.no_grad()
def recommend_chunked(
    model,
    input_ids,
    attention_mask=None,
    timestamps=None,
    top_k: int = 10,
    exclude_seen: bool = True,
    exclude_items=None,
    chunk_size: int = 2048,
):
    """
    `model.recommend` for catalogues too large for a users x items score matrix: the same inputs, checks and result,
    with the items ranked by `chunked_top_k` (special tokens and `exclude_items` excluded for all, each user's seen
    items for that user).

    The item vectors are read from the weights (`output_item_vectors`), as the sampled softmax reads them: a LoRA on
    `item_head` is not applied here (merge it first, `merge_and_unload`). With a transition prior
    (`item_transition_prior`), the newest item's successors are scored apart, mixed with their counts, then merged.

    Returns:
        `RecommendationOutput` (`item_ids`, `scores` `(batch_size, top_k)`; -1 / -inf in empty slots).
    """
    config = model.config
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    input_ids, attention_mask, timestamps, seen = model.clean_recommend_inputs(input_ids, attention_mask, timestamps)
    states = model.last_states(input_ids, attention_mask, timestamps)
    device = states.device
    plain = config.item_representation == "id" and model.item_output_residual is None
    if plain and not config.item_score_temperature:  # the table itself: no copy
        vectors = model.item_head.weight.to(states.dtype)
    else:  # the sum of the id, residual and text parts (normalised for cosine scores)
        vectors = model.output_item_vectors(torch.arange(config.num_items, device=device)).to(states.dtype)
    scored = model.scoring_states(states)  # as item_logits multiplies them: normalised and scaled for cosine scores
    bias = model.item_head.bias.to(states.dtype)
    excluded = torch.zeros(config.num_items, dtype=torch.bool, device=device)
    excluded[: config.num_special_tokens] = True
    if exclude_items is not None:
        exclude_items = torch.as_tensor(exclude_items, dtype=torch.long, device=device)
        if exclude_items.numel() and (exclude_items.min() < 0 or exclude_items.max() >= config.num_items):
            raise ValueError(f"exclude_items must be vocabulary indices in [0, {config.num_items}).")
        excluded[exclude_items] = True
    width = min(top_k, config.num_items - config.num_special_tokens)
    per_user = seen if exclude_seen else None
    prior = model.transition_prior
    if prior is not None:  # the newest item's successors are scored apart, with their prior, then merged
        successors, evidence = prior.evidence(input_ids[:, -1], states)  # (B, K); left aligned: newest last
        per_user = successors if per_user is None else torch.cat([per_user, successors], dim=1)
    scores, items = chunked_top_k(
        scored.float(), vectors.float(), bias.float(), k=width, chunk_size=chunk_size, excluded=excluded,
        excluded_per_user=per_user,
    )  # fmt: skip
    if prior is not None:
        own = (scored[:, None, :] * vectors[successors]).sum(-1) + bias[successors]
        successor_scores = prior.mixed(own.float(), evidence.float())
        dropped = excluded[successors]
        if exclude_seen:
            dropped = dropped | (successors[:, :, None] == seen[:, None, :]).any(dim=2)
        merged = torch.cat([scores, successor_scores.masked_fill(dropped, float("-inf"))], dim=1)
        order = merged.topk(width, dim=1).indices
        scores, items = merged.gather(1, order), torch.cat([items, successors], dim=1).gather(1, order)
    return RecommendationOutput(
        item_ids=items.masked_fill(torch.isinf(scores), -1),
        scores=scores,
        events_given=(seen != config.pad_token_id).sum(dim=1),
        events_read=attention_mask.sum(dim=1),
    )


def _dense_merge(best_scores, best_items, scores, start: int, k: int):
    chunk_scores, chunk_items = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
    merged_items = torch.cat([best_items, chunk_items + start], dim=1)
    order = torch.topk(merged_scores, k, dim=1).indices
    return merged_scores.gather(1, order), merged_items.gather(1, order)


__all__ = [
    "DEFAULT_MAX_TOP_K",
    "EndpointHandler",
    "OnnxRecommender",
    "RecommendationGraph",
    "RequestError",
    "check_onnx",
    "chunked_top_k",
    "export_onnx",
    "recommend_chunked",
    "write_handler",
]
