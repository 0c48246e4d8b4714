"""The interest-evolution sequence model: one backbone, heads on top.

`InterestModel` is a causal, pre-LN transformer over a user's behaviour sequence (SASRec, Kang & McAuley, 2018,
https://arxiv.org/abs/1808.09781) whose input at each step is the item embedding plus a position embedding plus an
embedding of the bucketised time gap since the previous event (the time-interval idea of TiSASRec, Li et al., 2020,
https://doi.org/10.1145/3336191.3371786, reduced to an additive embedding). Its output at step t is the interest
state u_t: a function of the first t events only, so the sequence of states is the user's interest trajectory.

`InterestForNextItemPrediction` scores every item of the catalogue as the next event from u_t, with weights tied to
the item embeddings, trained with a causal cross-entropy on every position (full softmax, or a sampled softmax with
the log-Q correction for large catalogues).

Conventions: left padding (the newest event in the last column), `attention_mask` 1 for real events, timestamps in
integer seconds. This file imports nothing from the project except its configuration, so that a saved checkpoint
loads with `trust_remote_code=True` where `hf_interest` is not installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .configuration_interest import InterestConfig

# Modules LoRA adapts by default (peft's `target_modules`): every projection inside the transformer layers. The item
# embeddings and the output bias are left to the base model; put "item_embeddings" and "item_head" in peft's
# `modules_to_save` when the catalogue or its popularity shifts enough that they must be retrained too.
DEFAULT_LORA_TARGET_MODULES = ["query", "key", "value", "attention_output", "ffn_in", "ffn_out"]


@dataclass
class InterestModelOutput(ModelOutput):
    """
    Output of [`InterestModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`):
            The interest state u_t after each event (after the final layer norm). Zero at padded positions.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The embedding output and the output of every layer; the last entry equals `last_hidden_state`.
            Returned when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention probabilities of every layer, each `(batch_size, num_heads, seq_len, seq_len)`. Returned when
            `output_attentions=True` (computed without the fused kernel, which does not expose them).
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class NextItemPredictionOutput(ModelOutput):
    """
    Output of [`InterestForNextItemPrediction`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean next-item cross-entropy over the labelled positions, returned when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, seq_len, num_items)`):
            Next-item scores over the whole vocabulary at each position (only the last `logits_to_keep` positions
            when that is set). Special-token columns are not masked here; `recommend` masks them.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`):
            The interest states u_t.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): as in [`InterestModelOutput`].
        attentions (`tuple(torch.FloatTensor)`, *optional*): as in [`InterestModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class RecommendationOutput(ModelOutput):
    """
    Output of `recommend`.

    Args:
        item_ids (`torch.LongTensor` of shape `(batch_size, top_k)`):
            Vocabulary indices of the recommended items, best first. `-1` marks an empty slot, where fewer than
            `top_k` items were eligible (every other item excluded).
        scores (`torch.FloatTensor` of shape `(batch_size, top_k)`):
            Their scores (next-item logits); `-inf` in empty slots.
    """

    item_ids: torch.LongTensor | None = None
    scores: torch.FloatTensor | None = None


def time_gap_buckets(
    timestamps: torch.Tensor, attention_mask: torch.Tensor | None, num_buckets: int
) -> torch.LongTensor:
    """
    Bucketises the gap since the previous event on a log2 scale of seconds.

    Bucket 0: no gap known (padding, the first event, or the previous position is padding). Bucket 1: a gap of zero
    seconds, or a negative gap (out-of-order timestamps; the data layer sorts by time, so these only come from
    hand-made inputs). Bucket `2 + floor(log2(gap))` for a gap of `gap >= 1` seconds, capped at `num_buckets - 1`.

    Args:
        timestamps (`torch.Tensor` of shape `(batch_size, seq_len)`): event times in integer seconds.
        attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*): 1 for real events.
        num_buckets (`int`): number of buckets.

    Returns:
        `torch.LongTensor` of shape `(batch_size, seq_len)`.
    """
    timestamps = timestamps.long()
    gaps = (timestamps[:, 1:] - timestamps[:, :-1]).clamp(min=0)  # (B, T-1)
    log_bucket = 2 + torch.floor(torch.log2(gaps.clamp(min=1).float())).long()
    buckets = torch.where(gaps == 0, torch.ones_like(gaps), log_bucket).clamp(max=num_buckets - 1)
    if attention_mask is not None:
        both_real = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
        buckets = buckets.masked_fill(~both_real, 0)
    return F.pad(buckets, (1, 0), value=0)  # (B, T)


class InterestAttention(nn.Module):
    """Multi-head causal self-attention through `scaled_dot_product_attention` (fused kernels where available)."""

    def __init__(self, config: InterestConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_output = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_probs_dropout_prob

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, hidden_size = hidden_states.shape
        shape = (batch_size, seq_len, self.num_heads, self.head_dim)
        query = self.query(hidden_states).view(shape).transpose(1, 2)  # (B, nh, T, hd)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        dropout = self.attention_dropout if self.training else 0.0

        probs = None
        if output_attentions:
            # The fused kernel does not return probabilities; this path computes the same thing in the open.
            scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, nh, T, T)
            if attention_mask is None:
                attention_mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, p=dropout, training=self.training) @ value
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=dropout, is_causal=attention_mask is None
            )
        context = context.transpose(1, 2).reshape(batch_size, seq_len, hidden_size)  # (B, T, H)
        return self.attention_output(context), probs


class InterestLayer(nn.Module):
    """A pre-LN transformer layer: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, config: InterestConfig):
        super().__init__()
        self.attention_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = InterestAttention(config)
        self.ffn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, probs = self.attention(self.attention_layer_norm(hidden_states), attention_mask, output_attentions)
        hidden_states = hidden_states + self.dropout(attended)
        transformed = self.ffn_out(self.dropout(self.activation(self.ffn_in(self.ffn_layer_norm(hidden_states)))))
        hidden_states = hidden_states + self.dropout(transformed)
        return hidden_states, probs


def _is_compiling() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def _check_item_indices(input_ids: torch.Tensor, num_items: int) -> None:
    """`input_ids` must be integer vocabulary indices: a clear error instead of an `IndexError` inside the embedding."""
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer item indices, got dtype {input_ids.dtype}.")
    if input_ids.numel():
        low, high = torch.aminmax(input_ids)
        if int(low) < 0 or int(high) >= num_items:
            raise ValueError(
                f"input_ids holds indices outside the vocabulary [0, {num_items}): encode raw item ids with the "
                "model's ItemTokenizer, which maps unknown items to [UNK]."
            )


def _check_inputs(input_ids, inputs_embeds, attention_mask, timestamps, num_items: int) -> None:
    """Clear errors for inputs that would otherwise fail deep inside torch (or, worse, silently give nonsense)."""
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch_size, seq_len), got shape {tuple(input_ids.shape)}.")
        _check_item_indices(input_ids, num_items)
        shape = tuple(input_ids.shape)
    else:
        if inputs_embeds.dim() != 3:
            raise ValueError(f"inputs_embeds must be (batch_size, seq_len, hidden), got {tuple(inputs_embeds.shape)}.")
        shape = tuple(inputs_embeds.shape[:2])
    for name, tensor in (("attention_mask", attention_mask), ("timestamps", timestamps)):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have the shape of input_ids {shape}, got {tuple(tensor.shape)}.")
    if timestamps is not None and (timestamps.dtype.is_floating_point or timestamps.dtype == torch.bool):
        raise ValueError(f"timestamps must be integer seconds, got dtype {timestamps.dtype}.")


def _check_labels(labels, num_items: int) -> None:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer item indices (or -100 to ignore), got dtype {labels.dtype}.")
    real = labels[labels != -100]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= num_items):
        raise ValueError(f"labels must be item indices in [0, {num_items}) or -100 (ignored).")


class InterestPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the capabilities shared by the interest model and its heads."""

    config_class = InterestConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InterestLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            # A slice loses the "already loaded" flag, so check it here or a loaded padding row would be re-zeroed.
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """
        Loads like `PreTrainedModel.from_pretrained`, from safetensors only: pickled weights (`pytorch_model.bin`)
        are never read, so loading a checkpoint cannot run code hidden in its weights. A corrupted or truncated
        weights file, or a `config.json` whose sizes do not match the weights, is a clear error.
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError(
                "hf_interest models load from safetensors only (pickled weights can run code). Convert trusted "
                "pickled weights once with `model.save_pretrained(folder)` (it writes safetensors)."
            )
        kwargs["use_safetensors"] = True
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"{pretrained_model_name_or_path}: the safetensors weights are corrupted or truncated ({error}). "
                "Download or save the checkpoint again."
            ) from None
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ValueError(
                f"{pretrained_model_name_or_path}: the weights do not match config.json (the sizes are in the load "
                "report above: num_items, hidden_size, intermediate_size, ...). The config does not belong to these "
                "weights: restore the config.json saved with them."
            ) from None

    def check_vocabulary(self, tokenizer) -> None:
        """
        Raises a `ValueError` when an item vocabulary (an `ItemTokenizer`, or any sized vocabulary) does not have one
        entry per row of the item embeddings: indices would then name the wrong items, silently.
        """
        if len(tokenizer) != self.config.num_items:
            raise ValueError(
                f"The item vocabulary has {len(tokenizer)} entries but the model has {self.config.num_items} item "
                "embeddings (config.num_items): the vocabulary (item_vocab.json) does not belong to this checkpoint. "
                "Load both from the same folder."
            )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """
        Saves like `PreTrainedModel.save_pretrained`, and makes `config.json`'s `auto_map` name the backbone for
        `AutoModel` as well as this class for its own Auto class, so either loads with `trust_remote_code=True`.
        """
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoConfig", "configuration_interest.InterestConfig")
            auto_map.setdefault("AutoModel", "modeling_interest.InterestModel")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class InterestModel(InterestPreTrainedModel):
    """
    The backbone: item, position and time-gap embeddings, then causal pre-LN transformer layers. Returns the interest
    state u_t after every event.
    """

    # Loading the backbone from a head checkpoint leaves the head's weights behind, as intended.
    _keys_to_ignore_on_load_unexpected = [r"^item_head\."]

    def __init__(self, config: InterestConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.num_items, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.time_gap_embeddings = (
            nn.Embedding(config.num_time_buckets, config.hidden_size) if config.use_time_gaps else None
        )
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList([InterestLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.item_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.item_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> InterestModelOutput | tuple:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                Item indices from [`ItemTokenizer`], left padded.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*):
                1 for real events, 0 for padding. Without it every position is treated as real.
            timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                Event times in integer seconds; without them the time-gap embedding sees "gap unknown".
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`, *optional*):
                Item representations to use instead of looking `input_ids` up (e.g. from a text tower).
            output_attentions (`bool`, *optional*): return every layer's attention probabilities.
            output_hidden_states (`bool`, *optional*): return every layer's output.
            return_dict (`bool`, *optional*): return an [`InterestModelOutput`] rather than a tuple.

        Returns:
            [`InterestModelOutput`] or a tuple.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("InterestModel.forward needs exactly one of `input_ids` or `inputs_embeds`.")
        if not _is_compiling():
            _check_inputs(input_ids, inputs_embeds, attention_mask, timestamps, self.config.num_items)
        if inputs_embeds is None:
            inputs_embeds = self.item_embeddings(input_ids)  # (B, T, H)
        batch_size, seq_len, _ = inputs_embeds.shape
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"The input has {seq_len} positions but the model reads at most max_position_embeddings="
                f"{self.config.max_position_embeddings}. Truncate histories to their newest events (the tokenizer, "
                "the data collator and `recommend` do this for you)."
            )

        # Positions count real events from the start of each history, so extra left padding changes nothing and
        # u_t depends on the first t events only.
        if attention_mask is None:
            position_ids = torch.arange(seq_len, device=inputs_embeds.device).expand(batch_size, seq_len)
        else:
            position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        hidden_states = inputs_embeds + self.position_embeddings(position_ids)
        if self.time_gap_embeddings is not None:
            if timestamps is None:
                buckets = torch.zeros(batch_size, seq_len, dtype=torch.long, device=inputs_embeds.device)
            else:
                buckets = time_gap_buckets(timestamps, attention_mask, self.config.num_time_buckets)
            hidden_states = hidden_states + self.time_gap_embeddings(buckets)
        hidden_states = self.embedding_dropout(hidden_states)

        # Causal mask: a real position attends to real positions up to itself. Every position may attend to itself,
        # so a padded position (or a fully padded row) has one finite key and never produces NaN, and no real
        # position ever attends to padding.
        if attention_mask is None:
            attn_mask = None  # pure causal: lets SDPA pick its fused causal kernel
        else:
            causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=hidden_states.device).tril()
            diagonal = torch.eye(seq_len, dtype=torch.bool, device=hidden_states.device)
            key_is_real = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
            attn_mask = causal & (key_is_real | diagonal)  # (B, 1, T, T)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden_states, probs = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, attn_mask, output_attentions
                )
            else:
                hidden_states, probs = layer(hidden_states, attn_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (probs,)

        hidden_states = self.final_layer_norm(hidden_states)
        if attention_mask is not None:
            hidden_states = hidden_states * attention_mask[..., None].to(hidden_states.dtype)
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)

        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden_states, all_attentions) if v is not None)
        return InterestModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


class InterestForNextItemPrediction(InterestPreTrainedModel):
    """
    The backbone with a next-item head: logits over the whole catalogue from every interest state u_t, a causal
    cross-entropy when `labels` are given, and `recommend` for top-k retrieval.
    """

    _tied_weights_keys = {"item_head.weight": "model.item_embeddings.weight"}

    def __init__(self, config: InterestConfig):
        super().__init__(config)
        self.model = InterestModel(config)
        # Weight tied to the item embeddings by default; the bias is a learned per-item prior (popularity), which is
        # what an empty history is scored by.
        self.item_head = nn.Linear(config.hidden_size, config.num_items, bias=True)
        # Log-probabilities of drawing each item as a negative for the sampled softmax; uniform over real items when
        # unset. Not saved: it is a training setting (see `set_negative_sampling_distribution`).
        self.register_buffer("negative_sampling_log_q", None, persistent=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.item_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.item_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.item_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.item_head = value

    def set_negative_sampling_distribution(self, item_counts: torch.Tensor, power: float = 0.75) -> None:
        """
        Sets the distribution negatives are drawn from for `loss_type="sampled_softmax"`: q(i) proportional to
        `item_counts[i] ** power` (word2vec's smoothing), zero for special tokens. The log-Q correction keeps the
        sampled loss an unbiased estimate of the full softmax's gradient whatever q is.

        Args:
            item_counts (`torch.Tensor` of shape `(num_items,)`): training-event counts per vocabulary index.
            power (`float`, defaults to 0.75): smoothing exponent; 0 gives uniform sampling over seen items.
        """
        item_counts = torch.as_tensor(item_counts, dtype=torch.float64)
        if item_counts.shape != (self.config.num_items,):
            raise ValueError(
                f"item_counts must have shape ({self.config.num_items},) (one count per vocabulary index), got "
                f"{tuple(item_counts.shape)}."
            )
        if not torch.isfinite(item_counts).all() or (item_counts < 0).any():
            raise ValueError("item_counts must be finite and non-negative.")
        weights = torch.where(item_counts > 0, item_counts.pow(power), torch.zeros_like(item_counts))
        weights[: self.config.num_special_tokens] = 0
        if weights.sum() <= 0:
            raise ValueError("item_counts has no positive count for any real item; nothing could be sampled.")
        self.negative_sampling_log_q = (weights / weights.sum()).log().float().to(self.item_head.weight.device)

    def _next_item_loss(
        self, hidden_states: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None
    ) -> torch.Tensor:
        num_special = self.config.num_special_tokens
        labelled = labels >= num_special  # -100 and special tokens are never targets
        hidden = hidden_states[labelled]  # (M, H)
        targets = labels[labelled]  # (M,)
        if targets.numel() == 0:
            return hidden_states.sum() * 0.0
        if self.config.loss_type == "full_softmax":
            logits = self.item_head(hidden)[:, num_special:]  # (M, N - special)
            losses = F.cross_entropy(logits.float(), targets - num_special, reduction="none")
        else:
            losses = self._sampled_softmax_losses(hidden, targets)
        if num_items_in_batch is not None:
            return losses.sum() / num_items_in_batch
        return losses.mean()

    def _sampled_softmax_losses(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_special, num_samples = self.config.num_special_tokens, self.config.num_negative_samples
        weight, bias = self.item_head.weight, self.item_head.bias
        if self.negative_sampling_log_q is None:
            negatives = torch.randint(num_special, self.config.num_items, (num_samples,), device=hidden.device)
            log_q_pos = log_q_neg = None  # uniform: the correction is the same constant for every candidate
        else:
            negatives = torch.multinomial(self.negative_sampling_log_q.exp(), num_samples, replacement=True)
            log_q_pos, log_q_neg = self.negative_sampling_log_q[targets], self.negative_sampling_log_q[negatives]
        positive_logits = (hidden * weight[targets]).sum(-1) + bias[targets]  # (M,)
        negative_logits = hidden @ weight[negatives].T + bias[negatives]  # (M, S)
        if log_q_pos is not None:
            positive_logits = positive_logits - log_q_pos
            negative_logits = negative_logits - log_q_neg
        # A sampled negative that is the positive itself is an accidental hit: drop it from that row.
        negative_logits = negative_logits.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive_logits[:, None], negative_logits], dim=1).float()  # (M, 1 + S)
        return F.cross_entropy(logits, torch.zeros_like(targets), reduction="none")

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> NextItemPredictionOutput | tuple:
        """
        Args:
            input_ids, attention_mask, timestamps, inputs_embeds, output_attentions, output_hidden_states:
                as in [`InterestModel.forward`].
            labels (`torch.LongTensor`, *optional*):
                Either `(batch_size, seq_len)`: the next item at every position (the collator's shifted labels),
                -100 where there is none; or `(batch_size,)`: one target per row, scored from the last real
                position. Labels below `num_special_tokens` (padding, unknown items) are ignored.
            logits_to_keep (`int`, defaults to 0):
                Compute logits for the last `logits_to_keep` positions only (0: all). The loss does not depend on
                it; training loops pass 1 to skip a `(batch, seq_len, num_items)` tensor they never read.
            return_dict (`bool`, *optional*): return a [`NextItemPredictionOutput`] rather than a tuple.
            num_items_in_batch (`int`, *optional*):
                Labelled positions across the accumulated batches (passed by `transformers.Trainer` under
                gradient accumulation); the loss is then a sum divided by it instead of a mean.

        Returns:
            [`NextItemPredictionOutput`] or a tuple.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            timestamps=timestamps,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, H)

        loss = None
        if labels is not None:
            if labels.dim() == 1:
                labels = self._labels_at_last_position(labels, attention_mask, hidden_states.shape[1])
            if labels.shape != hidden_states.shape[:2]:
                raise ValueError(
                    f"labels must have shape (batch_size, seq_len)={tuple(hidden_states.shape[:2])} or "
                    f"(batch_size,), got {tuple(labels.shape)}."
                )
            if not _is_compiling():
                _check_labels(labels, self.config.num_items)
            loss = self._next_item_loss(hidden_states, labels.to(hidden_states.device), num_items_in_batch)

        kept = hidden_states[:, -logits_to_keep:, :] if logits_to_keep else hidden_states
        logits = self.item_head(kept)  # (B, T or logits_to_keep, N)

        if not return_dict:
            extra = tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits, hidden_states) + extra
        return NextItemPredictionOutput(
            loss=loss,
            logits=logits,
            last_hidden_state=hidden_states,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @staticmethod
    def _labels_at_last_position(
        labels: torch.Tensor, attention_mask: torch.Tensor | None, seq_len: int
    ) -> torch.Tensor:
        batch_size = labels.shape[0]
        full = torch.full((batch_size, seq_len), -100, dtype=labels.dtype, device=labels.device)
        if attention_mask is None:
            last = torch.full((batch_size,), seq_len - 1, device=labels.device)
        else:  # the last real position, whichever side the padding is on
            positions = torch.arange(seq_len, device=labels.device)
            last = (attention_mask.to(labels.device).bool() * positions).amax(dim=1)
        full[torch.arange(batch_size, device=labels.device), last] = labels
        return full

    @torch.no_grad()
    def recommend(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.Tensor | None = None,
        top_k: int = 10,
        exclude_seen: bool = True,
        exclude_items: list[int] | torch.Tensor | None = None,
        **kwargs,
    ) -> RecommendationOutput:
        """
        Recommends the next items for a batch of histories, in eval mode and without gradients.

        Histories longer than `max_position_embeddings` keep their newest events. An empty history (all padding)
        is scored by the learned per-item bias alone, a popularity prior.

        Args:
            input_ids (`torch.Tensor` of shape `(batch_size, seq_len)` or `(seq_len,)`): item indices.
            attention_mask (`torch.Tensor`, *optional*): 1 for real events; defaults to `input_ids != pad_token_id`.
            timestamps (`torch.Tensor`, *optional*): event times in integer seconds, same shape as `input_ids`.
            top_k (`int`, defaults to 10): how many items to return per history.
            exclude_seen (`bool`, defaults to `True`): never recommend an item already in the history.
            exclude_items (list of `int`, *optional*): vocabulary indices never to recommend (e.g. out of stock).

        Returns:
            [`RecommendationOutput`] with `item_ids` and `scores` of shape `(batch_size, top_k)`. Special tokens
            are never returned.
        """
        input_ids, attention_mask, timestamps = self._check_recommend_inputs(input_ids, attention_mask, timestamps)
        num_special = self.config.num_special_tokens
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        top_k = min(top_k, self.config.num_items - num_special)

        was_training = self.training
        self.eval()
        try:
            states = self.model(
                input_ids=input_ids, attention_mask=attention_mask, timestamps=timestamps, return_dict=True
            ).last_hidden_state[:, -1]  # (B, H): left aligned, so the newest event's state
        finally:
            self.train(was_training)
        scores = self.item_head(states).float()  # (B, N)
        scores[:, :num_special] = float("-inf")
        if exclude_seen:
            seen = input_ids.masked_fill(~attention_mask.bool(), self.config.pad_token_id)
            scores.scatter_(1, seen, float("-inf"))
        if exclude_items is not None:
            exclude_items = torch.as_tensor(exclude_items, dtype=torch.long, device=scores.device)
            if exclude_items.numel() and (exclude_items.min() < 0 or exclude_items.max() >= self.config.num_items):
                raise ValueError(f"exclude_items must be vocabulary indices in [0, {self.config.num_items}).")
            scores[:, exclude_items] = float("-inf")
        top_scores, top_items = scores.topk(top_k, dim=1)
        top_items = top_items.masked_fill(torch.isinf(top_scores), -1)
        return RecommendationOutput(item_ids=top_items, scores=top_scores)

    def _check_recommend_inputs(
        self, input_ids, attention_mask, timestamps
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Validates untrusted inputs with clear errors, left-aligns them and keeps the newest events."""
        device = self.item_head.weight.device
        input_ids = torch.as_tensor(input_ids, device=device)
        if input_ids.dim() == 1:
            input_ids = input_ids[None, :]
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch_size, seq_len), got {tuple(input_ids.shape)}.")
        _check_item_indices(input_ids, self.config.num_items)
        input_ids = input_ids.long()
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        attention_mask = torch.as_tensor(attention_mask, device=device)
        if attention_mask.dim() == 1:
            attention_mask = attention_mask[None, :]
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}."
            )
        attention_mask = attention_mask.bool()
        if timestamps is not None:
            timestamps = torch.as_tensor(timestamps, device=device)
            if timestamps.dim() == 1:
                timestamps = timestamps[None, :]
            if timestamps.shape != input_ids.shape:
                raise ValueError(
                    f"timestamps has shape {tuple(timestamps.shape)} but input_ids has {tuple(input_ids.shape)}."
                )
            if timestamps.dtype.is_floating_point and not torch.isfinite(timestamps[attention_mask]).all():
                raise ValueError("timestamps must be finite numbers of seconds at every real position.")
            timestamps = timestamps.long()

        # Move real events to the right end (a stable sort keeps their order), whatever side the padding was on,
        # then keep the newest max_position_embeddings columns.
        order = attention_mask.long().argsort(dim=1, stable=True)
        input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
        if timestamps is not None:
            timestamps = timestamps.gather(1, order)
        max_len = self.config.max_position_embeddings
        if input_ids.shape[1] > max_len:
            input_ids, attention_mask = input_ids[:, -max_len:], attention_mask[:, -max_len:]
            timestamps = timestamps[:, -max_len:] if timestamps is not None else None
        if input_ids.shape[1] == 0:  # empty histories: one padding column, scored by the item bias alone
            input_ids = torch.full((input_ids.shape[0], 1), self.config.pad_token_id, device=device)
            attention_mask = torch.zeros_like(input_ids, dtype=torch.bool)
            timestamps = None
        return input_ids, attention_mask.long(), timestamps


__all__ = [
    "DEFAULT_LORA_TARGET_MODULES",
    "InterestForNextItemPrediction",
    "InterestModel",
    "InterestModelOutput",
    "InterestPreTrainedModel",
    "NextItemPredictionOutput",
    "RecommendationOutput",
    "time_gap_buckets",
]
