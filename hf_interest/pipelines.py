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

import torch
from transformers import AutoModelForCausalLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .explain import METHODS, explain_recommendations

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
        explain (`bool`, default False): add to each recommendation `"because"`, its top past events (`item_id`,
            `timestamp`, `position`, `attribution`), highest attribution first (see `hf_interest.explain`); with it,
            an item the vocabulary does not know is an error rather than [UNK].
        explain_method (`str`, default `"leave_one_out"`): one of `hf_interest.explain.METHODS`.
        explain_top_k (`int`, default 3): how many past events per recommendation.
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

    def _sanitize_parameters(
        self,
        top_k=None,
        exclude_seen=None,
        exclude_items=None,
        explain=None,
        explain_method=None,
        explain_top_k=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"Unknown arguments for the {TASK} pipeline: {sorted(kwargs)}.")
        forward = {}
        if explain is not None:
            forward["explain"] = bool(explain)
        if explain_method is not None:
            if explain_method not in METHODS:
                raise ValueError(f"explain_method must be one of {', '.join(METHODS)}, got {explain_method!r}.")
            forward["explain_method"] = explain_method
        if explain_top_k is not None:
            if isinstance(explain_top_k, bool) or not isinstance(explain_top_k, int) or explain_top_k < 1:
                raise ValueError(f"explain_top_k must be a positive integer, got {explain_top_k!r}.")
            forward["explain_top_k"] = explain_top_k
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
        model_inputs = dict(encoded)
        model_inputs["history"] = {"items": items, "timestamps": list(timestamps) if timestamps is not None else None}
        return model_inputs

    def _forward(
        self,
        model_inputs,
        top_k=10,
        exclude_seen=True,
        exclude_items=None,
        explain=False,
        explain_method="leave_one_out",
        explain_top_k=3,
    ):
        history = model_inputs.pop("history")
        excluded = None
        if exclude_items:
            excluded = self.tokenizer.encode_items([str(item) for item in exclude_items])
        output = self.model.recommend(**model_inputs, top_k=top_k, exclude_seen=exclude_seen, exclude_items=excluded)
        result = {"item_ids": output.item_ids, "scores": output.scores}
        if explain:
            recommended = [index for index in output.item_ids[0].tolist() if index >= 0]
            with torch.enable_grad():  # integrated gradients differentiates; the pipeline runs without gradients
                result["because"] = explain_recommendations(  # over the newest events, the ones recommend read
                    self.model,
                    self.tokenizer,
                    history["items"],
                    history["timestamps"],
                    items=self.tokenizer.decode_items(recommended),
                    method=explain_method,
                    top_k=explain_top_k,
                )
        return result

    def postprocess(self, model_outputs):
        indices = model_outputs["item_ids"][0].tolist()
        scores = model_outputs["scores"][0].tolist()
        because = model_outputs.get("because")
        results = []
        for index, score in zip(indices, scores):
            if index < 0:  # nothing eligible left for this slot
                continue
            item_id = self.tokenizer.decode_items([index])[0]
            entry = {"item_id": item_id, "score": float(score), "rank": len(results) + 1}
            if item_id in self.item_titles:
                entry["title"] = self.item_titles[item_id]
            if because is not None:
                entry["because"] = [
                    {**event, "title": self.item_titles[event["item_id"]]}
                    if event["item_id"] in self.item_titles
                    else dict(event)
                    for event in because[len(results)]
                ]
            results.append(entry)
        return results


def register_pipeline() -> None:
    """Registers the `next-item-recommendation` task with `transformers.pipeline` (done by `import hf_interest`)."""
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=NextItemRecommendationPipeline, pt_model=AutoModelForCausalLM
        )


__all__ = ["TASK", "NextItemRecommendationPipeline", "register_pipeline"]
