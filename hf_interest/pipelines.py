"""The `next-item-recommendation` pipeline: a user's history of raw item ids in, the top-k next items out.

```python
import hf_interest  # registers the task
from transformers import pipeline

recommender = pipeline("next-item-recommendation", model="runs/ml100k")
recommender(["50", "181", "100"], top_k=3)
# [{'item_id': '...', 'score': 7.1, 'rank': 1}, ...]
```
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from transformers import AutoModelForCausalLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

TASK = "next-item-recommendation"
logger = logging.getLogger(__name__)


def _titles_from(items) -> dict[str, str]:
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(key): str(value) for key, value in items.items() if value is not None}
    column_names = getattr(items, "column_names", None)
    if column_names is not None and "item_id" in column_names and "title" in column_names:
        return {
            str(item): str(title)
            for item, title in zip(items["item_id"], items["title"], strict=True)
            if title is not None
        }
    raise TypeError(
        "item_titles must be a mapping {raw item id: title} or a table with 'item_id' and 'title' columns "
        "(for example BehaviorData.items)."
    )


class NextItemRecommendationPipeline(Pipeline):
    """
    Recommends the next items for one history or a list of histories.

    Inputs: a list of raw item ids (oldest first), a dict `{"items": [...], "timestamps": [...]}` (timestamps in integer
    seconds, optional), or a list of either. Each history gives a list of `{"item_id", "score", "rank"}` dicts (plus
    `"title"` when `item_titles` knows the item), best first, never an item of the history when `exclude_seen=True`.
    Items the vocabulary does not know are read as [UNK] and counted in the `"unknown_items"` warning.

    Args (at construction, besides the usual `model`/`tokenizer`/`device`):
        item_titles: `{raw item id: title}` or a table with `item_id` and `title` columns (e.g. `BehaviorData.items`).

    Call arguments:
        top_k (`int`, default 10), exclude_seen (`bool`, default True), exclude_items (raw ids never recommended).
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, item_titles=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError(f"The {TASK} pipeline needs the item vocabulary: pass tokenizer= or a model folder.")
        if not hasattr(self.model, "recommend"):
            raise TypeError(
                f"The {TASK} pipeline needs a model with recommend() (InterestForNextItemPrediction), "
                f"got {type(self.model).__name__}."
            )
        self.model.check_vocabulary(self.tokenizer)
        self.item_titles = _titles_from(item_titles)

    def _sanitize_parameters(self, top_k=None, exclude_seen=None, exclude_items=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unknown arguments for the {TASK} pipeline: {sorted(kwargs)}.")
        forward = {}
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
            forward["top_k"] = top_k
        if exclude_seen is not None:
            forward["exclude_seen"] = bool(exclude_seen)
        if exclude_items is not None:
            forward["exclude_items"] = list(exclude_items)
        return {}, forward, {}

    @staticmethod
    def _is_single(inputs) -> bool:
        if isinstance(inputs, Mapping):
            return True
        if isinstance(inputs, (str, bytes)):
            raise ValueError("Pass a history as a list of raw item ids, not a single string: e.g. [item_id].")
        return isinstance(inputs, Sequence) and (len(inputs) == 0 or not isinstance(inputs[0], (Mapping, list, tuple)))

    def __call__(self, inputs, **kwargs):
        if self._is_single(inputs):
            return super().__call__([inputs], **kwargs)[0]
        return super().__call__(list(inputs), **kwargs)

    def preprocess(self, history):
        if isinstance(history, Mapping):
            if "items" not in history:
                raise ValueError(
                    f"A history dict needs an 'items' key (and optionally 'timestamps'), got {sorted(history)}."
                )
            items, timestamps = list(history["items"]), history.get("timestamps")
        else:
            items, timestamps = list(history), None
        items = [str(item) for item in items]
        before = self.tokenizer.num_unknown_items
        encoded = self.tokenizer(
            items, timestamps=list(timestamps) if timestamps is not None else None, return_tensors="pt"
        )
        unknown = self.tokenizer.num_unknown_items - before
        if unknown:
            logger.warning(
                "%d of %d history items are not in the vocabulary and were read as [UNK].", unknown, len(items)
            )
        return dict(encoded)

    def _forward(self, model_inputs, top_k=10, exclude_seen=True, exclude_items=None):
        excluded = None
        if exclude_items:
            excluded = self.tokenizer.encode_items([str(item) for item in exclude_items])
        output = self.model.recommend(**model_inputs, top_k=top_k, exclude_seen=exclude_seen, exclude_items=excluded)
        return {"item_ids": output.item_ids, "scores": output.scores}

    def postprocess(self, model_outputs):
        indices = model_outputs["item_ids"][0].tolist()
        scores = model_outputs["scores"][0].tolist()
        results = []
        for index, score in zip(indices, scores):
            if index < 0:  # nothing eligible left for this slot
                continue
            item_id = self.tokenizer.decode_items([index])[0]
            entry = {"item_id": item_id, "score": float(score), "rank": len(results) + 1}
            if item_id in self.item_titles:
                entry["title"] = self.item_titles[item_id]
            results.append(entry)
        return results


def register_pipeline() -> None:
    """Registers the `next-item-recommendation` task with `transformers.pipeline` (done by `import hf_interest`)."""
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=NextItemRecommendationPipeline, pt_model=AutoModelForCausalLM
        )


__all__ = ["TASK", "NextItemRecommendationPipeline", "register_pipeline"]
