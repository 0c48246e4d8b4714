"""Serving an exported model with onnxruntime: raw item ids in, raw item ids out. Standalone on purpose.

This file is the Hugging Face Inference Endpoints custom handler (`hf-interest push --with_handler` copies it into the
repository as `handler.py`), so it imports only the standard library, numpy and onnxruntime: never `hf_interest`,
torch or transformers. The library re-exports `OnnxRecommender` (`hf_interest.serving`).

The ONNX graph (`hf_interest.serving.export_onnx`) checks nothing: an index outside the vocabulary would be read out of
bounds or raise deep inside onnxruntime. Everything is validated here first, with errors that say what to fix.

Request (`EndpointHandler.__call__`, the JSON body the endpoint receives):

    {"inputs": ["50", "181", "100"]}                                     # one history, raw item ids, oldest first
    {"inputs": {"items": ["50", "181"], "timestamps": [881250949, 881251300]}}
    {"inputs": [["50", "181"], {"items": ["7"], "timestamps": [881250949]}],  # a batch
     "parameters": {"top_k": 5, "exclude_seen": true, "exclude_items": ["258"]}}

Response: one list per history of `{"item_id", "score", "rank"}`, best first (a single history: its list).

A history may be longer than the model reads (`max_length` in onnx_config.json): the model reads its newest
`max_length` events and, with `exclude_seen`, every event given is excluded, as `model.recommend` and evaluation do
(logged once per recommender).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

ONNX_FILE = "model.onnx"
ONNX_CONFIG_FILE = "onnx_config.json"
VOCAB_FILE = "item_vocab.json"
logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the recommender cannot answer; the message says what to fix."""


def _history(entry, index: int | None):
    where = f"inputs[{index}]" if index is not None else "inputs"
    if isinstance(entry, Mapping):
        unknown_keys = sorted(set(entry) - {"items", "timestamps"})
        if "items" not in entry or unknown_keys:
            raise RequestError(
                f"{where}: a history object has 'items' (and optionally 'timestamps'), got {sorted(entry)}."
            )
        items, times = entry["items"], entry.get("timestamps")
    else:
        items, times = entry, None
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise RequestError(f"{where}: a history is a list of raw item ids (oldest first), got {type(items).__name__}.")
    if any(isinstance(item, (Mapping, list, tuple, bool)) or item is None for item in items):
        raise RequestError(f"{where}: every item must be a raw item id (a string or a number).")
    if times is not None:
        if isinstance(times, (str, bytes)) or not isinstance(times, Sequence) or len(times) != len(items):
            raise RequestError(f"{where}: 'timestamps' must be a list with one time (integer seconds) per item.")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in times):
            raise RequestError(f"{where}: timestamps must be integer seconds, got {list(times)[:3]}...")
        if any(later < earlier for earlier, later in zip(times, times[1:])):
            raise RequestError(f"{where}: timestamps must not decrease; list the events oldest first.")
    return [str(item) for item in items], list(times) if times is not None else None


class OnnxRecommender:
    """
    An exported model (`model.onnx`, `onnx_config.json`, `item_vocab.json` in one folder) behind raw item ids.

    Args:
        path: the folder.
        providers: onnxruntime execution providers (default: the CPU).
        threads: intra-op threads (default: onnxruntime's choice).
    """

    def __init__(self, path: str = "", providers=None, threads: int | None = None):
        import onnxruntime

        path = path or "."
        for name in (ONNX_FILE, ONNX_CONFIG_FILE, VOCAB_FILE):
            if not os.path.isfile(os.path.join(path, name)):
                raise FileNotFoundError(
                    f"{os.path.join(path, name)} is missing: export the model with `hf-interest export onnx RUN --output "
                    "DIR` (or push it with --with_handler)."
                )
        with open(os.path.join(path, ONNX_CONFIG_FILE), encoding="utf-8") as handle:
            self.config = json.load(handle)
        with open(os.path.join(path, VOCAB_FILE), encoding="utf-8") as handle:
            self.items = [str(item) for item in json.load(handle)]
        if len(self.items) != self.config["num_items"]:
            raise ValueError(
                f"{VOCAB_FILE} has {len(self.items)} items but the graph scores {self.config['num_items']}."
            )
        self.index = {item: position for position, item in enumerate(self.items)}
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            os.path.join(path, ONNX_FILE), options, providers=providers or ["CPUExecutionProvider"]
        )
        self._said_long = False

    @property
    def num_items(self) -> int:
        return int(self.config["num_items"])

    def run(
        self, input_ids, attention_mask, timestamps, has_timestamps, excluded_ids, top_k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        The graph on vocabulary indices, checked first. Shapes `(B, T)` (left padded), `(B,)` (False: the history came
        without times, every gap is "unknown") and `(B, E)`; returns `(scores, indices)` of shape `(B, top_k)`, `-inf`
        / `-1` in slots with no eligible item.
        """
        input_ids = np.asarray(input_ids)
        excluded_ids = np.asarray(excluded_ids)
        for name, array in (("input_ids", input_ids), ("excluded_ids", excluded_ids)):
            if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
                raise RequestError(f"{name} must be a 2-D array of integer indices, got {array.dtype} {array.shape}.")
            if array.size and (array.min() < 0 or array.max() >= self.num_items):
                raise RequestError(
                    f"{name} holds indices outside the vocabulary [0, {self.num_items}): map raw item ids with "
                    f"{VOCAB_FILE} (negative or out-of-range indices are refused, never read)."
                )
        batch, length = input_ids.shape
        if length > self.config["max_length"]:
            raise RequestError(f"At most {self.config['max_length']} events per history, got {length}.")
        if not 1 <= int(top_k) <= self.config["max_top_k"]:
            raise RequestError(f"top_k must be between 1 and {self.config['max_top_k']} (the exported maximum).")
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        timestamps = np.asarray(timestamps, dtype=np.int64)
        if attention_mask.shape != input_ids.shape or timestamps.shape != input_ids.shape:
            raise RequestError("attention_mask and timestamps must have the shape of input_ids.")
        if excluded_ids.shape[0] != batch or excluded_ids.shape[1] == 0:
            raise RequestError("excluded_ids needs one non-empty row per history (pad with the padding index).")
        has_timestamps = np.asarray(has_timestamps, dtype=bool)
        if has_timestamps.shape != (batch,):
            raise RequestError("has_timestamps needs one value per history.")
        scores, indices = self.session.run(
            ["scores", "item_ids"],
            {
                "input_ids": input_ids.astype(np.int64),
                "attention_mask": attention_mask,
                "timestamps": timestamps,
                "has_timestamps": has_timestamps,
                "excluded_ids": excluded_ids.astype(np.int64),
            },
        )
        scores, indices = scores[:, :top_k], indices[:, :top_k].astype(np.int64)
        return scores, np.where(np.isfinite(scores), indices, -1)

    def encode(self, histories, timestamps=None, exclude_seen: bool = True, exclude_items=None) -> dict:
        """Raw ids to the graph's inputs: unknown ids refused, newest `max_length` events kept, left padded; with
        `exclude_seen`, the items of every event given are excluded, the older ones too."""
        pad, max_length = self.config["pad_token_id"], self.config["max_length"]
        special = self.config["num_special_tokens"]
        rows, times_rows, unknown, seen = [], [], [], []
        if timestamps is not None and len(timestamps) != len(histories):
            raise RequestError(f"{len(timestamps)} timestamp lists for {len(histories)} histories: one per history.")
        for position, (items, times) in enumerate(zip(histories, timestamps or [None] * len(histories))):
            if times is not None and len(times) != len(items):
                raise RequestError(f"history {position}: {len(times)} timestamps for {len(items)} items.")
            indices = [self.index.get(str(item), -1) for item in items]
            unknown += [(position, item) for item, index in zip(items, indices) if index < special]
            rows.append(indices[-max_length:])
            times_rows.append((times or [0] * len(items))[-max_length:])
            seen.append(indices)
        excluded_items = [str(item) for item in (exclude_items or [])]
        unknown += [("exclude_items", item) for item in excluded_items if self.index.get(item, -1) < special]
        if unknown:
            shown = ", ".join(
                f"{item!r} ({'history ' + str(where) if isinstance(where, int) else where})"
                for where, item in unknown[:5]
            )
            raise RequestError(
                f"{len(unknown)} item ids are not in this model's vocabulary: {shown}"
                + (" ..." if len(unknown) > 5 else "")
                + ". Remove them (a model only knows the items it was trained on)."
            )
        width = max(1, max(len(row) for row in rows))
        input_ids = np.full((len(rows), width), pad, dtype=np.int64)
        stamps = np.zeros((len(rows), width), dtype=np.int64)
        for position, (row, times) in enumerate(zip(rows, times_rows)):
            if row:
                input_ids[position, -len(row) :] = row
                stamps[position, -len(row) :] = times
        attention_mask = (input_ids != pad).astype(np.int64)
        if not self._said_long and any(len(row) > max_length for row in seen):
            self._said_long = True
            logger.warning(
                "A history is longer than the model reads (max_length=%d): the model reads its newest %d events, and "
                "every event given is still excluded from the recommendations (exclude_seen).",
                max_length,
                max_length,
            )
        extra = [self.index[item] for item in excluded_items]
        excluded = [(row if exclude_seen else []) + extra for row in seen]
        excluded_width = max(1, max(len(row) for row in excluded))
        excluded_ids = np.full((len(rows), excluded_width), pad, dtype=np.int64)
        for position, row in enumerate(excluded):
            excluded_ids[position, : len(row)] = row
        has_timestamps = np.array([bool(timestamps) and timestamps[row] is not None for row in range(len(rows))])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "timestamps": stamps,
            "has_timestamps": has_timestamps,
            "excluded_ids": excluded_ids,
        }

    def recommend(self, histories, timestamps=None, top_k: int = 10, exclude_seen: bool = True, exclude_items=None):
        """
        Top-k next items for a batch of histories of raw item ids (oldest first), with optional timestamps (integer
        seconds, one list per history). Returns one list of `{"item_id", "score", "rank"}` per history, best first.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise RequestError(f"top_k must be an integer, got {top_k!r}.")
        if not isinstance(exclude_seen, bool):
            raise RequestError(f"exclude_seen must be true or false, got {exclude_seen!r}.")
        if exclude_items is not None and (
            isinstance(exclude_items, (str, bytes)) or not isinstance(exclude_items, Sequence)
        ):
            raise RequestError("exclude_items must be a list of raw item ids.")
        if not histories:
            raise RequestError("No histories: send at least one.")
        inputs = self.encode(histories, timestamps, exclude_seen, exclude_items)
        scores, indices = self.run(**inputs, top_k=top_k)
        results = []
        for row_scores, row_indices in zip(scores, indices):
            row = []
            for score, index in zip(row_scores.tolist(), row_indices.tolist()):
                if index >= 0:
                    row.append({"item_id": self.items[index], "score": float(score), "rank": len(row) + 1})
            results.append(row)
        return results


class EndpointHandler:
    """The Inference Endpoints custom handler: `EndpointHandler(path)(request)`; see the module docstring."""

    def __init__(self, path: str = ""):
        self.recommender = OnnxRecommender(path)

    def __call__(self, data):
        if not isinstance(data, Mapping) or "inputs" not in data:
            raise RequestError('The request must be a JSON object with "inputs" (and optionally "parameters").')
        unknown_keys = sorted(set(data) - {"inputs", "parameters"})
        if unknown_keys:
            raise RequestError(f"Unknown request keys {unknown_keys}: use 'inputs' and 'parameters'.")
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise RequestError('"parameters" must be a JSON object.')
        allowed = {"top_k", "exclude_seen", "exclude_items"}
        if set(parameters) - allowed:
            raise RequestError(f"Unknown parameters {sorted(set(parameters) - allowed)}: use {sorted(allowed)}.")
        inputs = data["inputs"]
        single = isinstance(inputs, Mapping) or (
            isinstance(inputs, Sequence)
            and not isinstance(inputs, (str, bytes))
            and (len(inputs) == 0 or not isinstance(inputs[0], (Mapping, list, tuple)))
        )
        batch = [inputs] if single else inputs
        if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
            raise RequestError('"inputs" must be a history (a list of raw item ids), an object, or a list of them.')
        parsed = [_history(entry, None if single else index) for index, entry in enumerate(batch)]
        histories = [items for items, _ in parsed]
        times = [stamps for _, stamps in parsed]
        if any(stamps is None for stamps in times) and any(stamps is not None for stamps in times):
            raise RequestError("Give timestamps for every history of a batch, or for none.")
        results = self.recommender.recommend(
            histories,
            None if times[0] is None else times,
            top_k=parameters.get("top_k", 10),
            exclude_seen=parameters.get("exclude_seen", True),
            exclude_items=parameters.get("exclude_items"),
        )
        return results[0] if single else results


__all__ = ["EndpointHandler", "OnnxRecommender", "RequestError"]
