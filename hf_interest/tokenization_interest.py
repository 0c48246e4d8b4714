"""The item vocabulary: raw item ids (strings) <-> vocabulary indices, saved and loaded with the model.

A recommender checkpoint is useless without the mapping from its embedding rows back to the shop's item ids, so
`ItemTokenizer` is a `transformers` tokenizer: `save_pretrained` writes it beside the weights, `AutoTokenizer`
restores it, and it pads on the left, the way the model reads histories (newest event last). Like transformers'
tokenizers it truncates only when asked (`truncation=True` or `max_length`), and then on the left: a history goes to
`model.recommend` whole, so that every event of it counts as seen while the model reads the newest ones.

Indices 0, 1 and 2 are [PAD], [UNK] and [MASK]; real items follow in the order the vocabulary was built with.
Unknown item ids map to [UNK] and are counted (`num_unknown_items`), never crashed on.

This file imports only `transformers` (and the standard library): it is copied beside the weights so that the
vocabulary loads with `trust_remote_code=True` where `hf_interest` is not installed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence

from transformers import BatchEncoding, PreTrainedTokenizer

logger = logging.getLogger(__name__)

VOCAB_FILES_NAMES = {"vocab_file": "item_vocab.json"}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]")


class ItemTokenizer(PreTrainedTokenizer):
    """
    Item-id vocabulary for interest models.

    Build it from the training items with [`ItemTokenizer.from_items`], encode histories by calling it, and decode
    recommendations with [`ItemTokenizer.decode_items`]:

    ```python
    tok = ItemTokenizer.from_items(["i1", "i2", "i3"])
    batch = tok([["i1", "i2"], ["i3"]], timestamps=[[10, 20], [5]], return_tensors="pt")
    tok.decode_items([3, 4])  # ['i1', 'i2']
    ```

    Args:
        vocab_file (`str`, *optional*):
            Path to `item_vocab.json`: a JSON list of the raw item ids in index order, special tokens first.
        items (iterable of `str`, *optional*):
            Raw item ids to build the vocabulary from, when there is no `vocab_file` (see `from_items`).
        model_max_length (`int`, defaults to 200):
            The longest history the model reads (`max_position_embeddings`): the length `truncation=True` keeps.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"
    truncation_side = "left"

    def __init__(
        self,
        vocab_file: str | None = None,
        items: Iterable[str] | None = None,
        pad_token: str = "[PAD]",
        unk_token: str = "[UNK]",
        mask_token: str = "[MASK]",
        model_max_length: int = 200,
        **kwargs,
    ):
        # On loading, transformers passes the special tokens as `AddedToken`s; the vocabulary holds their text.
        pad_token, unk_token, mask_token = str(pad_token), str(unk_token), str(mask_token)
        if vocab_file is not None:
            tokens = _read_vocab_file(vocab_file)
        else:
            tokens = [pad_token, unk_token, mask_token] + [str(item) for item in (items or [])]
        self._index_to_item: list[str] = []
        self._item_to_index: dict[str, int] = {}
        self._append_tokens(tokens, source=vocab_file or "items")
        specials = tokens[:3]
        if specials != [pad_token, unk_token, mask_token]:
            raise ValueError(
                f"The item vocabulary must start with the special tokens {[pad_token, unk_token, mask_token]}, "
                f"found {specials} in {vocab_file or 'items'}."
            )
        self.num_unknown_items = 0
        kwargs.setdefault("padding_side", "left")
        kwargs.setdefault("truncation_side", "left")
        super().__init__(
            pad_token=pad_token,
            unk_token=unk_token,
            mask_token=mask_token,
            model_max_length=model_max_length,
            **kwargs,
        )

    def _append_tokens(self, tokens: Iterable[str], source: str) -> int:
        added = 0
        for token in tokens:
            if not isinstance(token, str):
                raise ValueError(f"Item ids in the vocabulary must be strings, found {token!r} in {source}.")
            if token in self._item_to_index:
                raise ValueError(f"Item id {token!r} appears twice in {source}; each item must appear once.")
            self._item_to_index[token] = len(self._index_to_item)
            self._index_to_item.append(token)
            added += 1
        return added

    @classmethod
    def from_items(cls, items: Iterable, **kwargs) -> ItemTokenizer:
        """
        Builds a vocabulary from raw item ids, in the order given (e.g. by descending training frequency).

        Args:
            items (iterable): raw item ids; converted with `str()`; duplicates are an error.
            **kwargs: passed to the constructor (e.g. `model_max_length`).

        Returns:
            `ItemTokenizer`.
        """
        items = [str(item) for item in items]
        clash = sorted(set(items) & set(SPECIAL_TOKENS))
        if clash:
            raise ValueError(f"Item ids {clash} clash with the special tokens {SPECIAL_TOKENS}; rename those items.")
        return cls(items=items, **kwargs)

    def add_items(self, items: Iterable) -> int:
        """
        Appends new items at the end of the vocabulary (existing indices never move). Items already present are
        skipped. Resize the model's embeddings to `len(tokenizer)` afterwards.

        Args:
            items (iterable): raw item ids.

        Returns:
            `int`: the number of items added.
        """
        new = list(dict.fromkeys(str(item) for item in items if str(item) not in self._item_to_index))
        clash = sorted(set(new) & set(SPECIAL_TOKENS))
        if clash:
            raise ValueError(f"Item ids {clash} clash with the special tokens {SPECIAL_TOKENS}; rename those items.")
        added = self._append_tokens(new, source="add_items")
        self._update_total_vocab_size()
        return added

    @property
    def vocab_size(self) -> int:
        return len(self._index_to_item)

    @property
    def num_special_tokens(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def items(self) -> list[str]:
        """Raw item ids of the real items, in index order (index `num_special_tokens + position`)."""
        return self._index_to_item[len(SPECIAL_TOKENS) :]

    def get_vocab(self) -> dict[str, int]:
        return dict(self._item_to_index)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        # Only reached through the generic string API (`tokenize`, `encode` on a string): whitespace-separated ids.
        return text.split()

    def _convert_token_to_id(self, token: str) -> int:
        index = self._item_to_index.get(token)
        if index is None:
            self.num_unknown_items += 1
            return self._item_to_index[self.unk_token]
        return index

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < len(self._index_to_item):
            raise ValueError(f"Index {index} is outside the item vocabulary [0, {len(self._index_to_item)}).")
        return self._index_to_item[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def encode_items(self, items: Iterable) -> list[int]:
        """
        Maps raw item ids to indices; unknown ids become [UNK] and are counted in `num_unknown_items`.

        Args:
            items (iterable): raw item ids (converted with `str()`).

        Returns:
            `list[int]`.
        """
        unk = self._item_to_index[self.unk_token]
        indices = [self._item_to_index.get(str(item), unk) for item in items]
        unknown = sum(1 for index in indices if index == unk)
        self.num_unknown_items += unknown
        return indices

    def decode_items(self, indices: Iterable[int], skip_special_tokens: bool = True) -> list[str]:
        """
        Maps indices back to raw item ids.

        Args:
            indices (iterable of `int`, or a 1-D tensor): vocabulary indices; `-1` (an empty slot of `recommend`)
                is always skipped.
            skip_special_tokens (`bool`, defaults to `True`): leave out [PAD]/[UNK]/[MASK].

        Returns:
            `list[str]`.
        """
        if hasattr(indices, "tolist"):
            indices = indices.tolist()
        special = len(SPECIAL_TOKENS)
        return [
            self._convert_id_to_token(int(i))
            for i in indices
            if int(i) != -1 and not (skip_special_tokens and i < special)
        ]

    def batch_decode_items(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True) -> list[list[str]]:
        """`decode_items` for a batch (a list of lists or a 2-D tensor)."""
        if hasattr(batch, "tolist"):
            batch = batch.tolist()
        return [self.decode_items(row, skip_special_tokens=skip_special_tokens) for row in batch]

    def __call__(
        self,
        histories: Sequence | Sequence[Sequence],
        timestamps: Sequence | Sequence[Sequence] | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        truncation: bool = False,
        **kwargs,
    ) -> BatchEncoding:
        """
        Encodes one history (a list of raw item ids) or a batch of them: left padding to the longest, every event
        kept unless truncation is asked for.

        `model.recommend(**tok(history))` takes the whole history (it reads the newest `max_position_embeddings`
        events and excludes all of them); the model's `forward` reads at most `max_position_embeddings` positions, so
        pass `truncation=True` for it when histories may be longer.

        Args:
            histories: a list of raw item ids (one user, oldest first) or a list of such lists.
            timestamps (*optional*): event times in integer seconds, shaped like `histories`; padded with 0.
            max_length (`int`, *optional*): keep the newest `max_length` events of each history.
            return_tensors (`str`, *optional*): `"pt"` for torch tensors, `"np"` for numpy, else lists.
            truncation (`bool`, defaults to `False`): keep the newest `max_length` (default `model_max_length`) events.

        Returns:
            `BatchEncoding` with `input_ids`, `attention_mask` and, when given, `timestamps`, each
            `(batch_size, seq_len)`.
        """
        if kwargs:
            raise TypeError(
                f"ItemTokenizer() got unexpected arguments {sorted(kwargs)}; it pads left by itself, and keeps the "
                "newest events with truncation=True or max_length."
            )
        if isinstance(histories, str):
            raise ValueError(
                "ItemTokenizer expects a list of raw item ids (one history) or a list of such lists, got a single "
                "string. Wrap it: tokenizer([item_id])."
            )
        single = len(histories) == 0 or not _is_sequence(histories[0])
        batch = [histories] if single else list(histories)
        if timestamps is not None:
            time_batch = [timestamps] if single else list(timestamps)
            if len(time_batch) != len(batch) or any(len(t) != len(h) for t, h in zip(time_batch, batch)):
                raise ValueError("timestamps must have the same shape as histories: one time per event.")
        if max_length is None and truncation:
            max_length = self.model_max_length
        encoded = [self.encode_items(history) for history in batch]
        if max_length is not None:
            encoded = [row[-max_length:] if max_length > 0 else [] for row in encoded]
        width = max((len(row) for row in encoded), default=0)
        pad = self._item_to_index[self.pad_token]
        data = {
            "input_ids": [[pad] * (width - len(row)) + row for row in encoded],
            "attention_mask": [[0] * (width - len(row)) + [1] * len(row) for row in encoded],
        }
        if timestamps is not None:
            data["timestamps"] = [
                [0] * (width - len(row)) + [int(t) for t in times[len(times) - len(row) :]]
                for row, times in zip(encoded, time_batch)
            ]
        return BatchEncoding(data, tensor_type=return_tensors)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        if not os.path.isdir(save_directory):
            raise FileNotFoundError(f"Cannot save the item vocabulary: {save_directory} is not a directory.")
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        path = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["vocab_file"])
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self._index_to_item, handle, ensure_ascii=False, indent=0)
            handle.write("\n")
        return (path,)


def _is_sequence(value) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    return isinstance(value, Sequence) or getattr(value, "ndim", 0) > 0


def _read_vocab_file(vocab_file: str) -> list[str]:
    try:
        with open(vocab_file, encoding="utf-8") as handle:
            tokens = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"Item vocabulary file {vocab_file} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"Item vocabulary file {vocab_file} is not valid UTF-8 JSON ({error}); it should be a JSON list of item "
            "ids written by ItemTokenizer.save_pretrained."
        ) from None
    if not isinstance(tokens, list):
        raise ValueError(f"Item vocabulary file {vocab_file} must hold a JSON list of item ids, got {type(tokens)}.")
    return tokens


__all__ = ["ItemTokenizer"]
