"""Checkpoint integrity for the interest models: a `config.json` must describe the weights beside it.

`InterestCheckpointMixin` gives the models (`modeling_interest.InterestPreTrainedModel`) their `from_pretrained` and
`save_pretrained`: loading reads safetensors only, turns a corrupted file into a clear error, and compares the
config's `weight_fields` with the weights' own shapes and with what `save_pretrained` recorded in the safetensors
header, so an edited or swapped `config.json` is an error naming the field instead of random layers or ignored ones.

This file sits beside `modeling_interest.py` in a saved checkpoint (the model file imports it relatively, so
transformers ships it with the remote code); like the model file it imports nothing from the project except the
configuration.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError

from .configuration_interest import InterestConfig

# Checkpoint integrity: a config.json must describe the weights beside it. `save_pretrained` records the config's
# `weight_fields` in the safetensors header (key below); loading compares them, and the weights' own shapes, with the
# config, so an edited or swapped config.json is an error naming the field instead of random layers or ignored ones.
WEIGHT_FIELDS_METADATA_KEY = "hf_interest_weight_fields"


def weight_files(folder: Path, variant: str | None) -> list[Path]:
    """The safetensors files of a saved model in `folder` (one file, or the shards its index names)."""
    name = f"model.{variant}.safetensors" if variant else "model.safetensors"
    index = folder / f"{name}.index.json"
    if index.is_file():
        shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        return [folder / shard for shard in sorted(set(shards))]
    return [folder / name] if (folder / name).is_file() else []


def read_weights_header(files) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """The `{name: shape}` of every tensor in safetensors `files` and the first file's metadata, from headers only."""
    from safetensors import safe_open

    shapes, metadata = {}, {}
    for i, path in enumerate(files):
        with safe_open(str(path), framework="pt") as handle:
            if i == 0:
                metadata = dict(handle.metadata() or {})
            for name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes, metadata


def record_weight_fields(files, config: InterestConfig) -> None:
    """
    Writes the config's `weight_fields` into the header of each safetensors file (data bytes untouched; the header is
    rewritten into a new file that replaces the old one, so a crash leaves the old file whole).
    """
    fields = json.dumps({name: getattr(config, name, None) for name in config.weight_fields}, sort_keys=True)
    for path in map(Path, files):
        tmp = path.with_name(path.name + ".tmp")
        with open(path, "rb") as source:
            (length,) = struct.unpack("<Q", source.read(8))
            header = json.loads(source.read(length))
            header.setdefault("__metadata__", {})[WEIGHT_FIELDS_METADATA_KEY] = fields
            blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
            blob += b" " * (-len(blob) % 8)  # the data stays 8-byte aligned, as safetensors writes it
            with open(tmp, "wb") as target:
                target.write(struct.pack("<Q", len(blob)))
                target.write(blob)
                shutil.copyfileobj(source, target, 16 << 20)
        os.replace(tmp, path)


HUB_OPTIONS = ("cache_dir", "revision", "token", "local_files_only")


def resolved_weight_files(name_or_path, kwargs: dict) -> list[Path]:
    """The safetensors files `from_pretrained` just read (a local folder, or the Hub cache it filled)."""
    subfolder, variant = kwargs.get("subfolder") or "", kwargs.get("variant")
    local = Path(name_or_path) / subfolder
    if local.is_dir():
        return weight_files(local, variant)
    from transformers.utils import cached_file

    name = f"model.{variant}.safetensors" if variant else "model.safetensors"
    options = {k: kwargs[k] for k in HUB_OPTIONS if k in kwargs}
    for filename in (f"{name}.index.json", name):
        path = cached_file(
            name_or_path, filename, subfolder=subfolder, _raise_exceptions_for_missing_entries=False, **options
        )
        if path is not None:
            return weight_files(Path(path).parent, variant)
    return []


def backbone_shapes(shapes: dict) -> dict:
    prefixed = {k[len("model.") :]: v for k, v in shapes.items() if k.startswith("model.")}
    return prefixed or shapes


def fields_from_weights(shapes: dict) -> dict:
    """The `weight_fields` that the tensors' names and shapes themselves determine."""
    backbone, fields = backbone_shapes(shapes), {}
    if "item_embeddings.weight" in backbone:
        fields["num_items"], fields["hidden_size"] = backbone["item_embeddings.weight"]
    elif "item_text_embeddings" in backbone:
        fields["num_items"] = backbone["item_text_embeddings"][0]
    if "final_layer_norm.weight" in backbone:
        fields["hidden_size"] = backbone["final_layer_norm.weight"][0]
    layers = {int(m.group(1)) for k in backbone if (m := re.match(r"layers\.(\d+)\.", k))}
    fields["num_hidden_layers"] = len(layers)
    if "layers.0.ffn_in.weight" in backbone:
        fields["intermediate_size"] = backbone["layers.0.ffn_in.weight"][0]
    if layers:
        fields["block_type"] = "hstu" if "layers.0.projection.weight" in backbone else "transformer"
    if "position_embeddings.weight" in backbone:
        fields["max_position_embeddings"] = backbone["position_embeddings.weight"][0]
    fields["use_time_gaps"] = "time_gap_embeddings.weight" in backbone
    if fields["use_time_gaps"]:
        fields["num_time_buckets"] = backbone["time_gap_embeddings.weight"][0]
    has_ids, has_text = "item_embeddings.weight" in backbone, "text_projection.weight" in backbone
    fields["item_representation"] = "id+text" if has_ids and has_text else "text" if has_text else "id"
    if has_text:
        fields["text_embedding_size"] = backbone["text_projection.weight"][1]
    fields["long_term_interest"] = "long_short_term.long_term_query" in backbone
    fields["short_term_interest"] = "long_short_term.short_term_query.weight" in backbone
    if "item_head.bias" in shapes and has_ids:
        fields["tie_word_embeddings"] = "item_head.weight" not in shapes
        fields["item_output_residual"] = "item_output_residual.weight" in shapes
    if "item_head.bias" in shapes:
        fields["item_transition_prior"] = "transition_prior.weight" in shapes
        if fields["item_transition_prior"] and "transition_prior.next_items" in shapes:
            fields["transition_prior_pairs"] = shapes["transition_prior.next_items"][0]
    if "click_mlp_in.weight" in shapes:
        fields["click_hidden_size"] = shapes["click_mlp_in.weight"][0]
    if "forecast_head.weight" in shapes:
        fields["num_categories"] = shapes["forecast_head.weight"][0]
    return fields


def checkpoint_problems(model_class, config: InterestConfig, shapes: dict, metadata: dict | None = None) -> list:
    """
    Where `config` disagrees with saved weights (`shapes` and `metadata` as `read_weights_header` returns them), for
    loading them into `model_class`: one sentence per config field (the config's value and the weights'), then any
    tensor the model would miss or not use. Empty when they belong together.
    """
    problems = {}
    # A head on the backbone of another task's checkpoint is new: its own sizes are the config's to choose.
    new_head = model_class.__name__ not in (config.architectures or [model_class.__name__])
    skipped = ("num_categories", "click_hidden_size") if new_head else ()
    recorded = json.loads((metadata or {}).get(WEIGHT_FIELDS_METADATA_KEY, "{}"))
    for name, value in recorded.items():
        if name in config.weight_fields and name not in skipped and getattr(config, name, None) != value:
            problems[name] = (
                f"{name} is {getattr(config, name, None)!r} in config.json but the weights were saved with {value!r}"
            )
    for name, value in fields_from_weights(shapes).items():
        if name not in problems and name not in skipped and getattr(config, name, None) != value:
            problems[name] = f"{name} is {getattr(config, name, None)!r} in config.json but the weights hold {value!r}"
    if problems:
        return list(problems.values())
    # No field explains it: compare tensor by tensor with the model the config builds (on the meta device: no memory).
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    is_head = any(k.startswith("model.") for k in expected)
    if is_head and not any(k.startswith("model.") for k in shapes):
        shapes = {f"model.{k}": v for k, v in shapes.items()}  # a backbone checkpoint under a head
    elif not is_head:
        shapes = backbone_shapes(shapes)
    if config.tie_word_embeddings:
        for key in getattr(model_class, "_tied_weights_keys", None) or {}:
            expected.pop(key, None)
    ignored = [re.compile(p) for p in getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or []]
    unexpected = sorted(k for k in shapes if k not in expected and not any(p.search(k) for p in ignored))
    missing = sorted(k for k in expected if k not in shapes and not (new_head and not k.startswith("model.")))
    wrong = sorted(k for k in expected if k in shapes and shapes[k] != expected[k])
    lines = []
    for label, keys in (("missing from the weights", missing), ("not used by the model", unexpected)):
        if keys:
            lines.append(f"{label}: {', '.join(keys[:5])}" + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""))
    for key in wrong[:5]:
        lines.append(f"{key} has shape {shapes[key]} in the weights, {expected[key]} by config.json")
    return lines


class InterestCheckpointMixin:
    """`from_pretrained` and `save_pretrained` with the checks above; mixed into `InterestPreTrainedModel`."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """
        Loads like `PreTrainedModel.from_pretrained`, from safetensors only: pickled weights (`pytorch_model.bin`)
        are never read, so loading a checkpoint cannot run code hidden in its weights. A corrupted or truncated
        weights file is a clear error, and so is a `config.json` that does not describe the weights: any of
        `config.weight_fields` that differs from what the weights hold or were saved with (a layer more or less, other
        attention heads, the time gaps or an interest part switched), or a tensor the model would miss or not use.
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError(
                "hf_interest models load from safetensors only (pickled weights can run code). Convert trusted "
                "pickled weights once with `model.save_pretrained(folder)` (it writes safetensors)."
            )
        kwargs["use_safetensors"] = True
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except SafetensorError as error:
            raise OSError(
                f"{pretrained_model_name_or_path}: the safetensors weights are corrupted or truncated ({error}). "
                "Download or save the checkpoint again."
            ) from None
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            config = kwargs.get("config")
            if not isinstance(config, InterestConfig):
                options = {k: kwargs[k] for k in (*HUB_OPTIONS, "subfolder") if k in kwargs}
                config = InterestConfig.from_pretrained(pretrained_model_name_or_path, **options)
            cls.check_checkpoint(pretrained_model_name_or_path, config, kwargs)
            raise ValueError(
                f"{pretrained_model_name_or_path}: the weights do not match config.json (the sizes are in the load "
                "report above: num_items, hidden_size, intermediate_size, ...). The config does not belong to these "
                "weights: restore the config.json saved with them."
            ) from None
        # ignore_mismatched_sizes=True asks for new weights where the shapes differ: then there is nothing to check.
        if not kwargs.get("ignore_mismatched_sizes"):
            cls.check_checkpoint(pretrained_model_name_or_path, model.config, kwargs)
        return (model, loading_info) if output_loading_info else model

    @classmethod
    def check_checkpoint(cls, pretrained_model_name_or_path, config: InterestConfig, kwargs: dict) -> None:
        """Raises a `ValueError` naming every field or tensor where `config` does not describe the saved weights."""
        files = resolved_weight_files(pretrained_model_name_or_path, kwargs)
        problems = checkpoint_problems(cls, config, *read_weights_header(files)) if files else []
        if problems:
            raise ValueError(
                f"{pretrained_model_name_or_path}: config.json does not describe the weights beside it: "
                + "; ".join(problems)
                + ". Restore the config.json saved with these weights (or save the model again after changing it)."
            )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """
        Saves like `PreTrainedModel.save_pretrained`, and makes `config.json`'s `auto_map` name the backbone for
        `AutoModel` as well as this class for its own Auto class, so either loads with `trust_remote_code=True`. The
        config's `weight_fields` are also recorded in the safetensors header, where `from_pretrained` checks them.
        """
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoConfig", "configuration_interest.InterestConfig")
            auto_map.setdefault("AutoModel", "modeling_interest.InterestModel")
            self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if (args[0] if args else kwargs.get("is_main_process", True)) and not kwargs.get("push_to_hub"):
            record_weight_fields(weight_files(Path(save_directory), kwargs.get("variant")), self.config)
        return result
