"""Fine-tuning the item text encoder jointly with the interest model, through LoRA adapters (peft).

The text tower of `InterestModel` reads a fixed buffer of item text embeddings (`item_text_embeddings`), so a saved
model serves without any encoder. Where item texts are domain-specific, the encoder itself can be adapted to the
recommendation loss: `JointTextEncoderTraining` holds the model and an encoder with LoRA adapters (Hu et al., 2021,
"LoRA", https://arxiv.org/abs/2106.09685) on the attention `query` and `value` projections, and in each training
step re-encodes the items of the batch (inputs and labels) with gradients; every other item's row comes from the
cached buffer, detached. After training, `refresh_item_text_embeddings` re-encodes every item into the buffer, which
is what `save_pretrained` saves: the checkpoint still loads and serves without the encoder, and new items are encoded
with the same adapted encoder (`save_adapter` / `load_adapted_text_encoder`).

```python
from hf_interest.text_tower import JointTextEncoderTraining, add_text_encoder_lora, tokenize_item_texts

encoder = add_text_encoder_lora(AutoModel.from_pretrained(path), r=8)        # only the adapters train
joint = JointTextEncoderTraining(model, encoder, tokenize_item_texts(texts, AutoTokenizer.from_pretrained(path)))
loss = joint(**batch).loss                                                    # the model's forward, text re-encoded
...
joint.refresh_item_text_embeddings()                                          # before evaluating and saving
model.save_pretrained(out); joint.save_adapter(out / "text_encoder_adapter", tokenizer)
```

The cost is the encoder's forward and backward over the batch's items in every step, plus one pass without
gradients over the catalogue per refresh; `max_items_per_step` bounds the first (a random subset of the batch's items
is re-encoded, the others read the cache).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch
from torch import nn

from .text_encoding import ItemTexts, mean_pool

# BERT-style encoders (all-MiniLM-L6-v2 among them) name their attention projections so.
DEFAULT_TEXT_ENCODER_LORA_TARGET_MODULES = ("query", "value")
TEXT_ENCODER_ADAPTER_FOLDER = "text_encoder_adapter"


def add_text_encoder_lora(
    encoder: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] = DEFAULT_TEXT_ENCODER_LORA_TARGET_MODULES,
    **lora_kwargs,
):
    """
    Wraps a text encoder with peft LoRA adapters; its own weights are frozen.

    Args:
        encoder (`transformers.PreTrainedModel`): e.g. `AutoModel.from_pretrained(resolve_text_encoder())`.
        r (`int`, defaults to 8): LoRA rank.
        alpha (`float`, defaults to 16.0): LoRA scaling (the update is scaled by alpha / r).
        dropout (`float`, defaults to 0.0): dropout on the LoRA input.
        target_modules (list of `str`, defaults to `("query", "value")`): module names to adapt.
        **lora_kwargs: other `peft.LoraConfig` fields (e.g. `init_lora_weights=False` in tests).

    Returns:
        `peft.PeftModel`.
    """
    from peft import LoraConfig, get_peft_model

    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"text encoder LoRA: r must be a positive integer, got {r!r}.")
    if not alpha > 0:
        raise ValueError(f"text encoder LoRA: alpha must be positive, got {alpha!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"text encoder LoRA: dropout must be in [0, 1), got {dropout!r}.")
    names = {name.rsplit(".", 1)[-1] for name, module in encoder.named_modules() if isinstance(module, nn.Linear)}
    if missing := sorted(set(target_modules) - names):
        raise ValueError(
            f"text encoder LoRA: the encoder has no Linear module named {missing}; choose from {sorted(names)}."
        )
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), **lora_kwargs
    )
    return get_peft_model(encoder, config)


def tokenize_item_texts(texts: ItemTexts | Sequence[str | None], tokenizer, max_length: int = 256) -> dict:
    """
    Tokenizes one text per vocabulary index once, for re-encoding during training.

    Args:
        texts ([`ItemTexts`] or list of `str`/`None`): from `hf_interest.text_encoding.item_texts`; `None` (special
            tokens, items without text) keeps a zero row and is never encoded.
        tokenizer: the encoder's tokenizer.
        max_length (`int`, defaults to 256): tokens kept per text, as in `encode_texts`.

    Returns:
        `dict` with `input_ids` and `attention_mask` (`(num_items, L)`, right padded), `lengths` `(num_items,)` and
        `has_text` `(num_items,)` bool.
    """
    texts = list(texts.texts if isinstance(texts, ItemTexts) else texts)
    present = [i for i, text in enumerate(texts) if text is not None]
    if not present:
        raise ValueError("tokenize_item_texts: no item has a text; there is nothing for the text encoder to adapt.")
    encoded = tokenizer([texts[i] for i in present], padding=True, truncation=True, max_length=max_length)
    width = max(len(ids) for ids in encoded["input_ids"])
    input_ids = torch.full((len(texts), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    attention_mask = torch.zeros(len(texts), width, dtype=torch.long)
    for row, ids, mask in zip(present, encoded["input_ids"], encoded["attention_mask"]):
        input_ids[row, : len(ids)] = torch.as_tensor(ids)
        attention_mask[row, : len(mask)] = torch.as_tensor(mask)
    has_text = torch.zeros(len(texts), dtype=torch.bool)
    has_text[present] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "lengths": attention_mask.sum(1),
        "has_text": has_text,
    }


def _text_tower_backbone(model: nn.Module) -> nn.Module:
    """The `InterestModel` inside a head model, a peft wrapper or a DDP wrapper: the module holding the buffer."""
    for module in model.modules():
        if getattr(module, "text_projection", None) is not None and "item_text_embeddings" in module._buffers:
            return module
    raise ValueError("The model has no text tower: text encoder LoRA needs item_representation='text' or 'id+text'.")


class JointTextEncoderTraining(nn.Module):
    """
    Trains an interest model and a LoRA-adapted item text encoder together.

    In training mode, `forward` re-encodes the batch's items (the real items of `input_ids` and `labels`, at most
    `max_items_per_step` of them) with gradients, puts them into a copy of the cached text embeddings (the other rows
    detached), runs the model on it, and writes the new rows (detached) back into the cache. In eval mode it is the
    model's forward. Call `refresh_item_text_embeddings` before evaluating or saving: it re-encodes every item.

    Args:
        model (`InterestForNextItemPrediction`, possibly a `peft.PeftModel` of one): a model with a text tower.
        encoder (`peft.PeftModel`): the text encoder with adapters (`add_text_encoder_lora`); it must embed as the
            model's cached text embeddings were embedded (same encoder, pooling and normalisation).
        item_tokens (`dict`): from `tokenize_item_texts`, one row per vocabulary index.
        normalize (`bool`, defaults to `True`): L2-normalise the pooled embeddings (as `encode_texts` does).
        max_items_per_step (`int`, *optional*): re-encode at most this many of a batch's items (a random subset);
            default: all.
        encode_batch_size (`int`, defaults to 256): texts per encoder pass.
    """

    def __init__(
        self,
        model: nn.Module,
        encoder: nn.Module,
        item_tokens: dict,
        normalize: bool = True,
        max_items_per_step: int | None = None,
        encode_batch_size: int = 256,
    ):
        super().__init__()
        self.model = model
        self.encoder = encoder
        self.normalize = normalize
        backbone = _text_tower_backbone(model)
        num_items, text_size = backbone.item_text_embeddings.shape
        if item_tokens["input_ids"].shape[0] != num_items:
            raise ValueError(
                f"item_tokens has {item_tokens['input_ids'].shape[0]} rows but the model has {num_items} items: "
                "tokenize one text per vocabulary index (tokenize_item_texts(item_texts(items, tokenizer), ...))."
            )
        encoder_size = getattr(getattr(encoder, "config", None), "hidden_size", text_size)
        if encoder_size != text_size:
            raise ValueError(
                f"The encoder's hidden_size {encoder_size} differs from the model's text_embedding_size {text_size}: "
                "use the encoder the model's text embeddings came from (config.text_encoder)."
            )
        for name, value in (("max_items_per_step", max_items_per_step), ("encode_batch_size", encode_batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.max_items_per_step = max_items_per_step
        self.encode_batch_size = encode_batch_size
        self.num_special_tokens = getattr(backbone.config, "num_special_tokens", 0)
        for name in ("input_ids", "attention_mask", "lengths", "has_text"):
            self.register_buffer(f"text_{name}", item_tokens[name], persistent=False)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """
        Encodes the texts of some items with the current encoder (with gradients when enabled).

        Args:
            item_ids (`torch.LongTensor` of shape `(M,)`): vocabulary indices of items that have a text.

        Returns:
            `torch.FloatTensor` of shape `(M, text_embedding_size)`.
        """
        order = self.text_lengths[item_ids].argsort(descending=True)  # similar lengths share a pass: less padding
        pooled = []
        for start in range(0, len(order), self.encode_batch_size):
            ids = item_ids[order[start : start + self.encode_batch_size]]
            width = int(self.text_lengths[ids].max())
            mask = self.text_attention_mask[ids, :width]
            hidden = self.encoder(input_ids=self.text_input_ids[ids, :width], attention_mask=mask).last_hidden_state
            pooled.append(mean_pool(hidden, mask, self.normalize))  # (b, D)
        out = torch.cat(pooled)
        return out[order.argsort()]  # back to the order of item_ids

    def _batch_items(self, *tensors: torch.Tensor | None) -> torch.Tensor:
        ids = torch.cat([t.reshape(-1) for t in tensors if t is not None])
        ids = ids[(ids >= self.num_special_tokens) & (ids < len(self.text_has_text))].unique()
        ids = ids[self.text_has_text[ids]]
        if self.max_items_per_step is not None and len(ids) > self.max_items_per_step:
            ids = ids[torch.randperm(len(ids), device=ids.device)[: self.max_items_per_step]]
        return ids

    def forward(self, input_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs):
        """The model's forward (same arguments and output); in training mode with the batch's items re-encoded."""
        if not self.training or input_ids is None:
            return self.model(input_ids=input_ids, labels=labels, **kwargs)
        backbone = _text_tower_backbone(self.model)
        cache = backbone.item_text_embeddings
        ids = self._batch_items(input_ids, labels)
        fresh = self.encode_items(ids).to(cache.dtype)  # (M, D), with gradients into the adapters
        table = cache.detach().index_copy(0, ids, fresh)  # (N, D): the batch's rows fresh, the rest cached
        with _buffer_replaced(backbone, "item_text_embeddings", table):
            outputs = self.model(input_ids=input_ids, labels=labels, **kwargs)
        with torch.no_grad():
            cache[ids] = fresh.detach()  # keep the cache as current as it can be without re-encoding everything
        return outputs

    @torch.no_grad()
    def refresh_item_text_embeddings(self) -> torch.Tensor:
        """
        Re-encodes every item with text into the model's buffer (what `save_pretrained` saves), in eval mode.

        Returns:
            `torch.FloatTensor` of shape `(num_items, text_embedding_size)`: the new buffer.
        """
        backbone = _text_tower_backbone(self.model)
        was_training = self.encoder.training
        self.encoder.eval()
        ids = self.text_has_text.nonzero().squeeze(1)
        cache = backbone.item_text_embeddings
        cache[ids] = self.encode_items(ids).to(cache.dtype)
        self.encoder.train(was_training)
        return cache

    def save_adapter(self, folder: str | os.PathLike, tokenizer=None, **kwargs) -> None:
        """
        Saves the encoder's adapter (peft `save_pretrained`) and, if given, its tokenizer, so that new items can be
        encoded as the trained ones were (`load_adapted_text_encoder`).

        Args:
            folder (`str` or `os.PathLike`): e.g. `<run folder>/text_encoder_adapter`.
            tokenizer (*optional*): the encoder's tokenizer, saved beside the adapter.
            **kwargs: passed to `save_pretrained` (e.g. `is_main_process`).
        """
        self.encoder.save_pretrained(folder, **kwargs)
        if tokenizer is not None and kwargs.get("is_main_process", True):
            tokenizer.save_pretrained(folder)


@contextlib.contextmanager
def _buffer_replaced(module: nn.Module, name: str, value: torch.Tensor):
    # The model reads its text table from this buffer; swapping it (rather than adding an argument to the model's
    # forward) keeps modeling_interest.py free of anything the saved checkpoint does not need.
    saved = module._buffers[name]
    module._buffers[name] = value
    try:
        yield
    finally:
        module._buffers[name] = saved


def load_adapted_text_encoder(folder: str | os.PathLike, base: str | os.PathLike | None = None):
    """
    Loads a text encoder with the adapter `save_adapter` wrote, merged into it, and its tokenizer, for
    `encode_texts(texts, encoder=model, tokenizer=tokenizer)` (e.g. items added after training).

    Args:
        folder (`str` or `os.PathLike`): the adapter folder (`<run folder>/text_encoder_adapter`).
        base (`str` or `os.PathLike`, *optional*): the base encoder name or folder; default: the one recorded in the
            adapter's config (`base_model_name_or_path`).

    Returns:
        `(encoder, tokenizer)`.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoModel, AutoTokenizer

    from .text_encoding import resolve_text_encoder

    if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
        raise FileNotFoundError(f"{folder}: no adapter_config.json; pass the folder save_adapter wrote.")
    base = resolve_text_encoder(
        base if base is not None else PeftConfig.from_pretrained(folder).base_model_name_or_path
    )
    tokenizer_source = folder if os.path.isfile(os.path.join(folder, "tokenizer_config.json")) else base
    encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder).merge_and_unload().eval()
    return encoder, AutoTokenizer.from_pretrained(tokenizer_source)


__all__ = [
    "DEFAULT_TEXT_ENCODER_LORA_TARGET_MODULES",
    "JointTextEncoderTraining",
    "TEXT_ENCODER_ADAPTER_FOLDER",
    "add_text_encoder_lora",
    "load_adapted_text_encoder",
    "tokenize_item_texts",
]
