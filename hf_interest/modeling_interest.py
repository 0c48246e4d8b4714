"""The interest-evolution sequence model: one backbone, heads on top.

`InterestModel` is a causal, pre-LN transformer over a user's behaviour sequence (SASRec, Kang & McAuley, 2018,
https://arxiv.org/abs/1808.09781) whose input at each step is the item embedding plus a position embedding plus an
embedding of the bucketised time gap since the previous event (the time-interval idea of TiSASRec, Li et al., 2020,
https://doi.org/10.1145/3336191.3371786, reduced to an additive embedding). Its output at step t is the interest
state u_t: a function of the first t events only, so the sequence of states is the user's interest trajectory.

`InterestForNextItemPrediction` scores every item of the catalogue as the next event from u_t, with weights tied to
the item embeddings, trained with a causal cross-entropy on every position (full softmax, or a sampled softmax with
the log-Q correction for large catalogues).

Items are represented by a learned id embedding, by a projection of a fixed embedding of their text, or by the sum
(`config.item_representation`), on the input and the output side alike; text-based items share what their texts
share, and an item added after training (`add_items`) is scored by its text without retraining: the two-tower,
content-based cold start of e.g. Hou et al., 2022, "Towards Universal Sequence Representation Learning for
Recommender Systems" (UniSRec, https://arxiv.org/abs/2206.05941), here with a frozen encoder and a linear projection.
The text embeddings are a buffer saved with the weights, so the model never needs the text encoder to serve.

Conventions: left padding (the newest event in the last column), `attention_mask` 1 for real events, timestamps in
integer seconds. This file is model code only: it imports nothing from the project except its configuration and
`checkpoint_interest.py` (the checkpoint-integrity checks of `from_pretrained` / `save_pretrained`), both relatively,
so that transformers ships them with a saved checkpoint and it loads with `trust_remote_code=True` where
`hf_interest` is not installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput, logging

from .checkpoint_interest import InterestCheckpointMixin
from .configuration_interest import InterestConfig

logger = logging.get_logger(__name__)

# Modules LoRA adapts by default (peft's `target_modules`): every projection inside the transformer layers. The item
# embeddings and the output bias are left to the base model; put "item_embeddings" and "item_head" in peft's
# `modules_to_save` when the catalogue or its popularity shifts enough that they must be retrained too. Models with a
# text tower can also adapt "text_projection" (an nn.Linear: LoRA on it moves every item, new ones included); with
# item_representation="text", item_head holds only the per-item bias (`InterestItemBias`): modules_to_save, not LoRA.
DEFAULT_LORA_TARGET_MODULES = ["query", "key", "value", "attention_output", "ffn_in", "ffn_out"]
# The same for `block_type="hstu"`: every projection of its layers.
HSTU_LORA_TARGET_MODULES = ["projection", "attention_output"]


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
        long_term_interest (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`, *optional*):
            l_t, the attention-pooled profile of all items up to step t (`config.long_term_interest`).
        short_term_interest (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`, *optional*):
            s_t, attention over the last `short_term_window` items, queried by the causal state h_t
            (`config.short_term_interest`): its values are those items only, its weights depend on h_t.
        interest_gate (`torch.FloatTensor` of shape `(batch_size, seq_len)`, *optional*):
            g_t in [0, 1], the weight of the long-term part against the short-term part (with both parts): near 1,
            the recommendation at step t follows the user's long-term profile; near 0, what they just did.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    long_term_interest: torch.FloatTensor | None = None
    short_term_interest: torch.FloatTensor | None = None
    interest_gate: torch.FloatTensor | None = None


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
        long_term_interest, short_term_interest, interest_gate (*optional*): as in [`InterestModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    long_term_interest: torch.FloatTensor | None = None
    short_term_interest: torch.FloatTensor | None = None
    interest_gate: torch.FloatTensor | None = None


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
        events_given (`torch.LongTensor` of shape `(batch_size,)`):
            How many events each history had: with `exclude_seen`, every one of their items was excluded.
        events_read (`torch.LongTensor` of shape `(batch_size,)`):
            How many of them the model read: the newest `max_position_embeddings` at most.
    """

    item_ids: torch.LongTensor | None = None
    scores: torch.FloatTensor | None = None
    events_given: torch.LongTensor | None = None
    events_read: torch.LongTensor | None = None


def log2_buckets(gaps: torch.Tensor, num_buckets: int) -> torch.LongTensor:
    """Bucket 1 for a gap of zero (or negative) seconds, `2 + floor(log2(gap))` for `gap >= 1`, capped at
    `num_buckets - 1`; bucket 0 ("unknown") is left to the caller."""
    gaps = gaps.clamp(min=0)
    log_bucket = 2 + torch.floor(torch.log2(gaps.clamp(min=1).float())).long()
    return torch.where(gaps == 0, torch.ones_like(gaps), log_bucket).clamp(max=num_buckets - 1)


def relative_time_buckets(timestamps: torch.Tensor, num_buckets: int) -> torch.LongTensor:
    """
    The bucket of the time between every pair of events (t, j) of a history, `time_t - time_j`, by `log2_buckets`
    (what `block_type="hstu"` biases its attention with). Pairs with padding get values too; the attention mask
    removes them. Returns a `torch.LongTensor` of shape `(batch_size, seq_len, seq_len)`.
    """
    timestamps = timestamps.long()
    return log2_buckets(timestamps[:, :, None] - timestamps[:, None, :], num_buckets)


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
    buckets = log2_buckets(timestamps[:, 1:] - timestamps[:, :-1], num_buckets)  # (B, T-1)
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
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool = False,
        queries_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`queries_to_keep` > 0: only the last that many positions query (keys and values stay all positions)."""
        batch_size, seq_len, hidden_size = hidden_states.shape
        shape = (batch_size, seq_len, self.num_heads, self.head_dim)
        key = self.key(hidden_states).view(shape).transpose(1, 2)  # (B, nh, T, hd)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        if queries_to_keep:
            hidden_states = hidden_states[:, -queries_to_keep:]
            if attention_mask is None:  # causal for the kept queries: is_causal would align them to the first keys
                attention_mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=key.device).tril()
            attention_mask = attention_mask[..., -queries_to_keep:, :]
        num_queries = hidden_states.shape[1]
        query = self.query(hidden_states).view(batch_size, num_queries, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.attention_dropout if self.training else 0.0

        probs = None
        if output_attentions:
            # The fused kernel does not return probabilities; this path computes the same thing in the open.
            scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, nh, Tq, T)
            if attention_mask is None:
                attention_mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, p=dropout, training=self.training) @ value
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=dropout, is_causal=attention_mask is None
            )
        context = context.transpose(1, 2).reshape(batch_size, num_queries, hidden_size)  # (B, Tq, H)
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
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool = False,
        states_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`states_to_keep` > 0: compute (and return) the last that many positions only."""
        attended, probs = self.attention(
            self.attention_layer_norm(hidden_states), attention_mask, output_attentions, states_to_keep
        )
        if states_to_keep:
            hidden_states = hidden_states[:, -states_to_keep:]
        hidden_states = hidden_states + self.dropout(attended)
        transformed = self.ffn_out(self.dropout(self.activation(self.ffn_in(self.ffn_layer_norm(hidden_states)))))
        hidden_states = hidden_states + self.dropout(transformed)
        return hidden_states, probs


class InterestHSTULayer(nn.Module):
    """
    An HSTU-style layer (`InterestConfig.block_type="hstu"`): x + W_o(LN(A v) * u), where u, v, q, k =
    SiLU(W(LN(x))) and A[t, j] = silu(q_t . k_j / sqrt(d) + p[t - j] + tau[time bucket of (t, j)]) / n_t over the
    n_t real events j <= t (0 elsewhere). Per head; p and tau are this layer's learned relative biases.
    """

    def __init__(self, config: InterestConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.input_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.position_bias = nn.Embedding(config.max_position_embeddings, config.num_attention_heads)
        self.time_bias = nn.Embedding(config.num_time_buckets, config.num_attention_heads)
        self.attention_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention_output = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool = False,
        states_to_keep: int = 0,
        relative: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`relative`: (distance in real events, `relative_time_buckets`), each `(batch, seq, seq)`, as `InterestModel`
        computes them; `states_to_keep` as `InterestLayer`'s. Returns
        the new states and, with `output_attentions`, the weights A of shape (batch, heads, queries, keys)."""
        batch_size, seq_len, hidden_size = hidden_states.shape
        u, value, query, key = F.silu(self.projection(self.input_layer_norm(hidden_states))).split(hidden_size, -1)
        if attention_mask is None:
            attention_mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=hidden_states.device).tril()
        distance, time_bucket = relative
        if states_to_keep:
            hidden_states, u, query = (x[:, -states_to_keep:] for x in (hidden_states, u, query))
            attention_mask = attention_mask[..., -states_to_keep:, :]
            distance, time_bucket = distance[:, -states_to_keep:], time_bucket[:, -states_to_keep:]
        num_queries = query.shape[1]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch_size, x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)

        scores = heads(query) @ heads(key).transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, nh, Tq, T)
        bias = self.position_bias(distance) + self.time_bias(time_bucket)  # (B, Tq, T, nh)
        scores = scores + bias.permute(0, 3, 1, 2)
        attention_mask = attention_mask.expand(batch_size, 1, num_queries, seq_len)
        keys_attended = attention_mask.sum(dim=-1, keepdim=True).clamp(min=1).to(scores.dtype)  # (B, 1, Tq, 1)
        weights = F.silu(scores).masked_fill(~attention_mask, 0.0) / keys_attended
        context = (weights @ heads(value)).transpose(1, 2).reshape(batch_size, num_queries, hidden_size)
        transformed = self.attention_output(self.dropout(self.attention_layer_norm(context) * u))
        return hidden_states + self.dropout(transformed), weights if output_attentions else None


class LongShortTermInterest(nn.Module):
    """
    The long-term and short-term parts of the interest state and their gate (see `InterestConfig.long_term_interest`
    and `short_term_interest`).

    - long-term l_t: one learned query attends over the items up to t (no positions: an order-free profile);
    - short-term s_t: the causal state h_t queries the last `short_term_window` items;
    - with both, the gate g_t = sigmoid(w . [h_t, l_t, s_t] + b) mixes them: `h_t + g_t l_t + (1 - g_t) s_t`.

    Both read the item representations (the model's input before positions and time gaps), so they see the items
    themselves, not the transformer's mixture of them. Neither builds a (T, T) attention matrix: the long-term part
    is a ratio of cumulative sums (its query does not depend on t), the short-term part attends over a window of
    `short_term_window` positions, so both cost O(T) per sequence.
    """

    def __init__(self, config: InterestConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.window = config.short_term_window
        if config.long_term_interest:
            self.long_term_query = nn.Parameter(torch.zeros(hidden))
            self.long_term_key = nn.Linear(hidden, hidden)
            self.long_term_value = nn.Linear(hidden, hidden)
        if config.short_term_interest:
            self.short_term_query = nn.Linear(hidden, hidden)
            self.short_term_key = nn.Linear(hidden, hidden)
            self.short_term_value = nn.Linear(hidden, hidden)
        self.interest_gate = (
            nn.Linear(3 * hidden, 1) if config.long_term_interest and config.short_term_interest else None
        )

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, T, H)` -> `(B, T, heads, H / heads)`."""
        return x.reshape(*x.shape[:2], self.num_heads, -1)

    def long_term_scores(self, key: torch.Tensor, query: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """
        The long-term part's attention scores `(B, T, heads)`, float, -inf at padding, from the per-head keys
        `(B, T, heads, head_size)` and the query: `(H,)`, or one copy per row `(B, H)` (per-row gradients of the query
        in differentially private training). The weights of the events at step t are their softmax over positions
        up to t: at the last step, `long_term_scores(...).softmax(dim=1)` (what the explanations show).
        """
        query = query.to(key.dtype).reshape(-1, self.num_heads, key.shape[-1]).expand(key.shape[0], -1, -1)
        scores = torch.einsum("bthd,bhd->bth", key, query) / math.sqrt(query.shape[-1])  # (B, T, nh)
        return scores.float().masked_fill(~real[..., None], float("-inf"))

    def long_term_average(
        self, key: torch.Tensor, value: torch.Tensor, query: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """
        l_t for every t in O(T), from the per-head keys and values `(B, T, heads, head_size)` and the query (as in
        `long_term_scores`): the query is the same at every step, so the weight of item j, exp(q . k_j), does not
        depend on t, and l_t = sum_{j<=t} w_j v_j / sum_{j<=t} w_j is a ratio of two cumulative sums (no (T, T)
        attention matrix). Scores are shifted by their maximum over the row first, as a softmax does.
        """
        scores = self.long_term_scores(key, query, real)
        shift = scores.amax(dim=1, keepdim=True).clamp(min=-1e4)  # finite even for an all-padding row
        weights = torch.exp(scores - shift)  # (B, T, nh), zero at padding
        summed = torch.cumsum(weights[..., None] * value.float(), dim=1)  # (B, T, nh, hd)
        total = torch.cumsum(weights, dim=1)[..., None]
        long_term = torch.where(total > 0, summed / total.clamp(min=torch.finfo(torch.float32).tiny), 0.0)
        return long_term.to(key.dtype).flatten(2)  # (B, T, H)

    def long_term_part(self, items: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """l_t for every t `(B, T, H)` from the item representations `(B, T, H)` and the real-event mask `(B, T)`."""
        key, value = self.split_heads(self.long_term_key(items)), self.split_heads(self.long_term_value(items))
        return self.long_term_average(key, value, self.long_term_query, real)

    def short_term_weights(
        self, causal_states: torch.Tensor, items: torch.Tensor, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The short-term part's weights: h_t attends over the items at t - window + 1 .. t (real ones, and t itself).
        The states `(B, Tq, H)` may cover the last positions only (`states_to_keep`): then so does the result.

        Returns:
            `(weights, values)`: `weights` `(B, Tq, heads, window)`, the softmax over each step's window, whose last
            entry is step t itself and whose entry i is position t - window + 1 + i; `values`
            `(B, Tq, heads, head_size, window)`, the windows' per-head values.
        """
        kept, width = causal_states.shape[1], self.window - 1
        start = max(items.shape[1] - kept - width, 0)  # the kept positions' windows reach back no further
        items, real = items[:, start:], real[:, start:]
        query = self.split_heads(self.short_term_query(causal_states))  # (B, Tq, nh, hd)
        key, value = self.split_heads(self.short_term_key(items)), self.split_heads(self.short_term_value(items))
        # windows[b, t, ..., i] is position t - width + i (left-padded with zeros, which the mask leaves out)
        key = F.pad(key, (0, 0, 0, 0, width, 0)).unfold(1, self.window, 1)  # (B, T, nh, hd, window)
        value = F.pad(value, (0, 0, 0, 0, width, 0)).unfold(1, self.window, 1)
        allowed = F.pad(real, (width, 0), value=False).unfold(1, self.window, 1).clone()  # (B, T, window)
        allowed[..., -1] = True  # the item at t itself: no row is empty
        key, value, allowed = key[:, -kept:], value[:, -kept:], allowed[:, -kept:]
        scores = torch.einsum("bthd,bthdw->bthw", query, key) / math.sqrt(query.shape[-1])  # (B, T, nh, window)
        scores = scores.masked_fill(~allowed[:, :, None, :], float("-inf"))
        return scores.softmax(dim=-1), value

    def short_term_part(self, causal_states: torch.Tensor, items: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """s_t `(B, Tq, H)` in O(T * window), as `short_term_weights` describes."""
        weights, value = self.short_term_weights(causal_states, items, real)
        return torch.einsum("bthw,bthdw->bthd", weights, value).flatten(2)  # (B, T, H)

    def forward(
        self, causal_states: torch.Tensor, items: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """
        Args:
            causal_states: h_t `(B, T, H)`, the transformer's output before the final layer norm; or `(B, Tq, H)`,
                the last Tq positions only (`states_to_keep`), and then every output covers those positions.
            items: the item representations `(B, T, H)` (after embedding dropout in training).
            attention_mask: `(B, T)`, 1 on real events, or None.

        Returns:
            `(combined, long_term, short_term, gate)`: `combined` is `h_t` plus the parts; each part is None when off.
        """
        batch_size, seq_len, _ = items.shape
        kept = causal_states.shape[1]
        if attention_mask is not None:
            real = attention_mask.bool()
        else:
            real = torch.ones(batch_size, seq_len, dtype=torch.bool, device=items.device)
        long_term = short_term = gate = None
        combined = causal_states
        if hasattr(self, "long_term_query"):
            long_term = self.long_term_part(items, real)[:, -kept:]
        if hasattr(self, "short_term_query"):
            short_term = self.short_term_part(causal_states, items, real)
        if self.interest_gate is not None:
            gate = torch.sigmoid(self.interest_gate(torch.cat([causal_states, long_term, short_term], dim=-1)))
            combined = combined + gate * long_term + (1.0 - gate) * short_term
            gate = gate.squeeze(-1)
        elif long_term is not None:
            combined = combined + long_term
        elif short_term is not None:
            combined = combined + short_term
        if attention_mask is not None:  # like the states, the parts are zero at padded positions
            real = attention_mask[:, -kept:].to(items.dtype)
            gate = gate * real if gate is not None else None
            long_term = long_term * real[..., None] if long_term is not None else None
            short_term = short_term * real[..., None] if short_term is not None else None
        return combined, long_term, short_term, gate


class InterestItemBias(nn.Module):
    """
    The output layer of a model with `item_representation="text"`: no id weights, only the learned per-item bias (the
    popularity prior). Its forward returns the bias for every position, to which the text scores are added, so the
    module is called like a linear head and peft's `modules_to_save` can train a copy of it.
    """

    def __init__(self, num_items: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_items))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.bias.to(hidden_states.dtype).expand(*hidden_states.shape[:-1], self.bias.shape[0])  # (..., N)


class InterestOutputResidual(nn.Embedding):
    """
    `config.item_output_residual`: one output-side vector per item, added to the tied id embedding when items are
    scored (`u_t . (e_i + r_i) + b_i`). Started at zero, so a new model scores as the tied one does.
    """


class InterestTransitionPrior(nn.Module):
    """
    `config.item_transition_prior`: the model's scores mixed with the first-order transition law of the training
    sequences, as a pointer (copy) mechanism mixes a model's distribution with a copy distribution. After an event of
    item a, a successor i of a, seen `c(a, i)` times after a among a's `c(a)` counted successor events, scores

        log(exp(s_i) + exp(g(u) + w * log(c(a, i) / c(a))))

    with s_i the model's own score, g(u) = `gate(u)` a learned function of the interest state (how much to trust the
    counts for this user now) and w one learned weight (1 at the start: with w = 1 the softmax of these scores is
    exactly a mixture of the model's softmax and the transition law c(a, i) / c(a)); every other item keeps s_i.
    It carries item-to-item structure (sequels, series, accessories, next episodes) that an item vector learned from a
    few events per item cannot hold yet: a count uses each pair at once.

    The counts are buffers saved with the weights, in compressed rows: item a's successors are
    `next_items[row_starts[a]:row_starts[a + 1]]` with their `counts`, at most `transition_prior_successors` per item
    (the most frequent; c(a) counts those kept). Filled by `InterestForNextItemPrediction.set_transition_counts`;
    empty (no prior) until then.
    """

    def __init__(self, config: InterestConfig):
        super().__init__()
        self.max_successors = config.transition_prior_successors
        self.weight = nn.Parameter(torch.ones(1))
        self.gate = nn.Linear(config.hidden_size, 1)
        self.register_buffer("row_starts", torch.zeros(config.num_items + 1, dtype=torch.long))
        self.register_buffer("next_items", torch.zeros(config.transition_prior_pairs, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(config.transition_prior_pairs))

    def successors(self, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(..., K)` successor items of each `previous` item and their counts (item 0 and count 0 past a row's end;
        `K = transition_prior_successors`)."""
        start = self.row_starts[previous]
        length = self.row_starts[previous + 1] - start
        offsets = torch.arange(self.max_successors, device=previous.device)
        real = offsets < length[..., None]
        if self.next_items.numel() == 0:
            return torch.zeros_like(real, dtype=torch.long), torch.zeros_like(real, dtype=self.counts.dtype)
        index = (start[..., None] + offsets).clamp(max=self.next_items.numel() - 1)
        items = self.next_items[index].masked_fill(~real, 0)
        return items, self.counts[index].masked_fill(~real, 0.0)

    def successor_shares(
        self, previous: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        `(items, log_shares, counted)`, each `(..., K)`: each previous item's successors, `log(c(a, i) / c(a))`
        (0 where not counted) and whether `c(a, i) > 0`. With `targets` (training), each target's own pair is left
        out of the counts: they hold every training pair once, and the pair being predicted has not happened yet
        when a model is served.
        """
        items, counts = self.successors(previous)
        if targets is not None:
            counts = counts - (items == targets[..., None]).to(counts.dtype)
        totals = counts.sum(-1, keepdim=True)
        counted = counts > 0
        log_shares = torch.where(counted, counts.clamp(min=1.0).log() - totals.clamp(min=1.0).log(), 0.0)
        return items, log_shares, counted

    def evidence(
        self, previous: torch.Tensor, states: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(items, evidence)`, each `(..., K)`: `g(u) + w * log(c(a, i) / c(a))` of each successor, -inf where not
        counted (states `(..., H)`, one per previous item)."""
        items, log_shares, counted = self.successor_shares(previous, targets)
        gate = self.gate(states.to(self.gate.weight.dtype))  # (..., 1)
        evidence = torch.where(counted, gate + self.weight * log_shares, float("-inf"))
        return items, evidence

    @staticmethod
    def mixed(scores: torch.Tensor, evidence: torch.Tensor) -> torch.Tensor:
        """`log(exp(scores) + exp(evidence))`, written as `scores + softplus(evidence - scores)` (unchanged where the
        evidence is -inf, with a zero gradient to it)."""
        return scores + F.softplus(evidence - scores)

    def forward(
        self, scores: torch.Tensor, previous: torch.Tensor, states: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The scores of every item `(..., N)` with the successors of each `previous` item mixed in."""
        items, evidence = self.evidence(previous, states, targets)
        own = scores.gather(-1, items)
        # added rather than written: the padding entries (item 0, no evidence) add exactly 0, however many
        return scores.scatter_add(-1, items, self.mixed(own, evidence.to(own.dtype)) - own)

    def candidate_evidence(
        self, items: torch.Tensor, evidence: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """`(M, C)`: from `evidence`'s `(items, evidence)` of M rows, the evidence of candidates `(C,)` (the sampled
        negatives, repeats allowed), -inf where not counted, without a `(M, num_items)` table."""
        # one column per distinct candidate: every copy of an item reads the column its last copy wrote
        column = torch.full((len(self.row_starts) - 1,), len(candidates), device=items.device)
        column[candidates] = torch.arange(len(candidates), device=items.device)
        by_column = evidence.new_full((items.shape[0], len(candidates) + 1), float("-inf"))
        # successors not sampled (and padding) go to the extra column, never read; a row's successors are distinct
        target_columns = torch.where(evidence > float("-inf"), column[items], len(candidates))
        by_column = by_column.scatter(1, target_columns, evidence)
        return by_column[:, column[candidates]]


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """
    Per-row cross-entropy of `logits` `(M, N)` against `targets` `(M,)`, the entries where `excluded` (bool,
    broadcastable to `(M, N)`) is True left out of the softmax. Training may swap in a fused kernel with the same
    values and gradients (`hf_interest.training.kernels`).
    """
    return F.cross_entropy(logits.masked_fill(excluded, float("-inf")), targets, reduction="none")


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


def _checked_text_embeddings(embeddings, expected: tuple, name: str, shape_text: str, note: str = "") -> torch.Tensor:
    """`embeddings` as a tensor of shape `expected` with finite floats, or a `ValueError` naming `name`."""
    embeddings = torch.as_tensor(embeddings)
    if tuple(embeddings.shape) != expected:
        raise ValueError(f"{name} must have shape {shape_text} = {expected}{note}, got {tuple(embeddings.shape)}.")
    if not embeddings.dtype.is_floating_point or not torch.isfinite(embeddings).all():
        raise ValueError(f"{name} must be finite floating-point numbers.")
    return embeddings


def _check_labels(labels, num_items: int) -> None:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer item indices (or -100 to ignore), got dtype {labels.dtype}.")
    real = labels[labels != -100]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= num_items):
        raise ValueError(f"labels must be item indices in [0, {num_items}) or -100 (ignored).")


MISSING_TIMESTAMPS_WARNING = (
    "This model reads the time gaps between events (config.use_time_gaps=True) but was called without timestamps, so "
    "every gap reads as unknown, which costs quality (hf_interest's docs/model.md, 'Time gaps', measures it on "
    "MovieLens-100K). Pass the events' times: timestamps= in integer seconds, one per item (pipeline: {'items': [...], "
    "'timestamps': [...]}; CLI: --timestamps)."
)


class InterestPreTrainedModel(InterestCheckpointMixin, PreTrainedModel):
    """Weight initialisation and the capabilities shared by the interest model and its heads."""

    config_class = InterestConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InterestLayer", "InterestHSTULayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, InterestOutputResidual):
            init.zeros_(module.weight)  # the tied table alone at the start; a loaded one is kept
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            # A slice loses the "already loaded" flag, so check it here or a loaded padding row would be re-zeroed.
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, InterestItemBias):
            init.zeros_(module.bias)
        elif isinstance(module, InterestTransitionPrior):
            init.ones_(module.weight)  # w = 1: an exact mixture with the transition law; a loaded weight is kept
            init.zeros_(module.gate.weight)  # one mixing weight for every state at the start (train.py fits its bias)
            init.zeros_(module.gate.bias)
            for buffer in (module.row_starts, module.next_items, module.counts):
                init.zeros_(buffer)  # filled by set_transition_counts (no prior until then); a loaded one is kept
        elif isinstance(module, LongShortTermInterest) and hasattr(module, "long_term_query"):
            init.zeros_(module.long_term_query)  # uniform attention (the mean of the history) at the start
        if isinstance(module, InterestForInterestForecasting):
            init.zeros_(module.item_category_weights)  # filled by set_item_category_weights; a loaded one is kept
        if isinstance(module, InterestModel) and module.item_text_embeddings is not None:
            # Filled by `set_item_text_embeddings`; zero (no text) until then. A loaded buffer is left alone.
            init.zeros_(module.item_text_embeddings)

    def resize_token_embeddings(self, *args, **kwargs):
        """
        transformers' resize, for `item_representation="id"` models. Models with a text tower grow with `add_items`,
        which also grows the item text embeddings (transformers' resize knows nothing of them).
        """
        if self.config.uses_text:
            raise ValueError(
                f"resize_token_embeddings does not grow the item text embeddings of an item_representation="
                f"{self.config.item_representation!r} model: use InterestForNextItemPrediction.add_items(tokenizer, "
                "item_ids, text_embeddings)."
            )
        return super().resize_token_embeddings(*args, **kwargs)

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


class InterestModel(InterestPreTrainedModel):
    """
    The backbone: item, position and time-gap embeddings, then causal pre-LN transformer layers. Returns the interest
    state u_t after every event.

    The item part of the input is `item_representations(input_ids)`: the id embedding, the projected text embedding
    (`text_projection(item_text_embeddings[i])`), or their sum, as `config.item_representation` says. The text
    embeddings are a persistent buffer (saved in `model.safetensors`, not trained), filled once with
    `set_item_text_embeddings`; special tokens conventionally have zero rows, so with `"text"` the padding item is the
    zero vector, as the padding row of the id embeddings is.
    """

    # Loading the backbone from a head checkpoint leaves the head's weights behind, as intended.
    _keys_to_ignore_on_load_unexpected = [r"^item_head\."]

    def __init__(self, config: InterestConfig):
        super().__init__(config)
        self.item_embeddings = (
            nn.Embedding(config.num_items, config.hidden_size, padding_idx=config.pad_token_id)
            if config.item_representation != "text"
            else None
        )
        if config.uses_text:
            # No bias: an item without text (a zero row) then has no text part at all, rather than a shared offset.
            self.text_projection = nn.Linear(config.text_embedding_size, config.hidden_size, bias=False)
            self.register_buffer(
                "item_text_embeddings", torch.zeros(config.num_items, config.text_embedding_size), persistent=True
            )
        else:
            self.text_projection = None
            self.register_buffer("item_text_embeddings", None, persistent=True)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.time_gap_embeddings = (
            nn.Embedding(config.num_time_buckets, config.hidden_size) if config.use_time_gaps else None
        )
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        layer_class = InterestHSTULayer if config.block_type == "hstu" else InterestLayer
        self.layers = nn.ModuleList([layer_class(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.long_short_term = (
            LongShortTermInterest(config) if config.long_term_interest or config.short_term_interest else None
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The id embeddings; for `item_representation="text"`, which has none, the text projection."""
        return self.item_embeddings if self.item_embeddings is not None else self.text_projection

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if self.item_embeddings is None:
            raise ValueError("An item_representation='text' model has no id embeddings to set.")
        self.item_embeddings = value

    def item_representations(
        self, item_ids: torch.Tensor | None = None, item_id_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        The vector of each item as the model reads it (and, with tied weights, scores it): the id embedding, the
        projected text embedding, or their sum, as `config.item_representation` says. The modules are called, not
        their weights read, so peft's LoRA / `modules_to_save` on `item_embeddings` or `text_projection` apply.

        Args:
            item_ids (`torch.Tensor`, *optional*): vocabulary indices of any shape; default: the whole vocabulary.
            item_id_keep (`torch.Tensor` of shape `(num_items,)`, *optional*): per item, 1 to keep its id part and 0
                to drop it (`item_id_dropout` in training; the head draws it once per step for both sides).

        Returns:
            `torch.Tensor` of shape `item_ids.shape + (hidden_size,)`, or `(num_items, hidden_size)`.
        """
        representation = None
        if self.item_embeddings is not None:
            if item_ids is None:
                item_ids = torch.arange(self.config.num_items, device=self.item_embeddings.weight.device)
            representation = self.item_embeddings(item_ids)
            if item_id_keep is not None:
                representation = representation * item_id_keep[item_ids, None].to(representation.dtype)
        if self.text_projection is not None:
            text = self.text_representations(item_ids)
            representation = text if representation is None else representation + text
        return representation

    def text_representations(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """
        The text part of the item representations: `text_projection(item_text_embeddings[item_ids])`.

        Args:
            item_ids (`torch.Tensor`, *optional*): vocabulary indices of any shape; default: the whole vocabulary.

        Returns:
            `torch.Tensor` of shape `item_ids.shape + (hidden_size,)`, or `(num_items, hidden_size)`.
        """
        if self.text_projection is None:
            raise ValueError("This model has no text tower (config.item_representation='id').")
        text = self.item_text_embeddings if item_ids is None else self.item_text_embeddings[item_ids]
        return self.text_projection(text.to(self.text_projection.weight.dtype))

    @torch.no_grad()
    def set_item_text_embeddings(self, embeddings: torch.Tensor) -> None:
        """
        Fills the item text embeddings (one row per vocabulary index, e.g. from
        `hf_interest.text_encoding.encode_item_texts`). They are saved with the weights.

        Args:
            embeddings (`torch.Tensor` of shape `(num_items, text_embedding_size)`): finite values; special tokens and
                items without text conventionally get zero rows.
        """
        if self.item_text_embeddings is None:
            raise ValueError(
                "This model has no text tower (config.item_representation='id'): build it with item_representation="
                "'text' or 'id+text' and text_embedding_size."
            )
        embeddings = _checked_text_embeddings(
            embeddings,
            tuple(self.item_text_embeddings.shape),
            "item text embeddings",
            "(num_items, text_embedding_size)",
            ", one row per vocabulary index (special tokens included)",
        )
        self.item_text_embeddings.copy_(embeddings.to(self.item_text_embeddings))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        item_id_keep: torch.Tensor | None = None,
        states_to_keep: int = 0,
        time_gap_bucket_ids: torch.LongTensor | None = None,
        relative_time_bucket_ids: torch.LongTensor | None = None,
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
                Item representations to use instead of `item_representations(input_ids)`.
            output_attentions (`bool`, *optional*): return every layer's attention probabilities.
            output_hidden_states (`bool`, *optional*): return every layer's output.
            return_dict (`bool`, *optional*): return an [`InterestModelOutput`] rather than a tuple.
            states_to_keep (`int`, defaults to 0):
                Compute the final layer, the long/short-term parts and the outputs for the last `states_to_keep`
                positions only (0: all). The states there are the same as with all positions; serving and evaluation
                read the last state only, and the last layer is then little more than its key and value projections.
                `last_hidden_state` and the last entries of `hidden_states` / `attentions` cover those positions.
            time_gap_bucket_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                The time-gap buckets themselves (`time_gap_buckets`), instead of `timestamps`; 0 is "gap unknown". An
                exported graph uses it to serve histories with and without times through one input.
            relative_time_bucket_ids (`torch.LongTensor` of shape `(batch_size, seq_len, seq_len)`, *optional*):
                With `block_type="hstu"`: the buckets of the time between every pair of events
                (`relative_time_buckets`), instead of `timestamps`; 0 is "unknown". For the same exported graph.

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
            if time_gap_bucket_ids is not None:
                shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape[:2])
                if tuple(time_gap_bucket_ids.shape) != shape or not (
                    int(time_gap_bucket_ids.min()) >= 0
                    and int(time_gap_bucket_ids.max()) < self.config.num_time_buckets
                ):
                    raise ValueError(
                        f"time_gap_bucket_ids must have shape {shape} and values in [0, {self.config.num_time_buckets})."
                    )
            if relative_time_bucket_ids is not None:
                shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape[:2])
                shape = (*shape, shape[1])
                if tuple(relative_time_bucket_ids.shape) != shape or not (
                    int(relative_time_bucket_ids.min()) >= 0
                    and int(relative_time_bucket_ids.max()) < self.config.num_time_buckets
                ):
                    raise ValueError(
                        f"relative_time_bucket_ids must have shape {shape} and values in "
                        f"[0, {self.config.num_time_buckets})."
                    )
        if inputs_embeds is None:
            inputs_embeds = self.item_representations(input_ids, item_id_keep)  # (B, T, H)
        batch_size, seq_len, _ = inputs_embeds.shape
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"The input has {seq_len} positions but the model reads at most max_position_embeddings="
                f"{self.config.max_position_embeddings}. Keep the newest events: `tokenizer(..., truncation=True)` "
                "does (the data collator and `recommend` do it for you)."
            )

        # Positions count real events from the start of each history, so extra left padding changes nothing and
        # u_t depends on the first t events only.
        if attention_mask is None:
            position_ids = torch.arange(seq_len, device=inputs_embeds.device).expand(batch_size, seq_len)
        else:
            position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        item_states = inputs_embeds
        hidden_states = inputs_embeds + self.position_embeddings(position_ids)
        if self.time_gap_embeddings is not None and time_gap_bucket_ids is not None:
            hidden_states = hidden_states + self.time_gap_embeddings(time_gap_bucket_ids)
        elif self.time_gap_embeddings is not None:
            if timestamps is None:
                if not self.training:
                    logger.warning_once(MISSING_TIMESTAMPS_WARNING)
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
        if isinstance(states_to_keep, bool) or not isinstance(states_to_keep, int) or states_to_keep < 0:
            raise ValueError(f"states_to_keep must be a non-negative integer, got {states_to_keep!r}.")
        states_to_keep = states_to_keep if states_to_keep < seq_len else 0  # 0: every position
        # The HSTU layers' relative biases read, for every pair of events, their distance in real events and the
        # bucket of the time between them (0, "unknown", without timestamps).
        relative = ()
        if self.config.block_type == "hstu":
            distance = (position_ids[:, :, None] - position_ids[:, None, :]).clamp(
                0, self.config.max_position_embeddings - 1
            )
            if relative_time_bucket_ids is None and timestamps is not None:
                relative_time_bucket_ids = relative_time_buckets(timestamps, self.config.num_time_buckets)
            elif relative_time_bucket_ids is None:
                relative_time_bucket_ids = torch.zeros_like(distance)
            relative = ((distance, relative_time_bucket_ids),)
        for index, layer in enumerate(self.layers):
            keep = states_to_keep if index == len(self.layers) - 1 else 0
            if self.gradient_checkpointing and self.training:
                hidden_states, probs = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, attn_mask, output_attentions, keep, *relative
                )
            else:
                hidden_states, probs = layer(hidden_states, attn_mask, output_attentions, keep, *relative)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (probs,)
        if states_to_keep and hidden_states.shape[1] != states_to_keep:  # no layer to do it
            hidden_states = hidden_states[:, -states_to_keep:]

        long_term = short_term = gate = None
        if self.long_short_term is not None:
            hidden_states, long_term, short_term, gate = self.long_short_term(
                hidden_states, self.embedding_dropout(item_states), attention_mask
            )
        hidden_states = self.final_layer_norm(hidden_states)
        if attention_mask is not None:
            hidden_states = hidden_states * attention_mask[:, -hidden_states.shape[1] :, None].to(hidden_states.dtype)
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)

        if not return_dict:
            outputs = (hidden_states, all_hidden_states, all_attentions, long_term, short_term, gate)
            return tuple(v for v in outputs if v is not None)
        return InterestModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            long_term_interest=long_term,
            short_term_interest=short_term,
            interest_gate=gate,
        )


class InterestForNextItemPrediction(InterestPreTrainedModel):
    """
    The backbone with a next-item head: logits over the whole catalogue from every interest state u_t, a causal
    cross-entropy when `labels` are given, `recommend` for top-k retrieval, and `add_items` for new items.

    The score of item i is `u_t . r_i + b_i`, with r_i the item's representation (`item_representations()`: id
    embedding, projected text, or their sum) and b_i a learned per-item bias; with `config.item_score_temperature` t
    it is `cos(u_t, r_i) / t + b_i` (`scoring_states` and `output_item_vectors` normalise the two sides). It is computed as `item_head(u_t)` (the
    id part, weight tied to the id embeddings, plus the bias; only the bias for `item_representation="text"`) plus
    `u_t . text_projection(text_i)`: both modules are called, so peft's LoRA / `modules_to_save` on `item_head` or
    `text_projection` take effect (the sampled softmax reads the weights directly and sees no LoRA on `item_head`).
    """

    _tied_weights_keys = {"item_head.weight": "model.item_embeddings.weight"}
    # The full-softmax loss with excluded items; training on CPU swaps in a fused kernel with the same values and
    # gradients (`hf_interest.training.kernels`).
    masked_cross_entropy = staticmethod(masked_cross_entropy)

    def __init__(self, config: InterestConfig):
        super().__init__(config)
        self.model = InterestModel(config)
        if config.item_representation == "text":
            # No id embeddings to tie to: the head is the per-item bias alone, the text scores are added to it.
            self._tied_weights_keys = {}
            self.item_head = InterestItemBias(config.num_items)
        else:
            # Weight tied to the item embeddings by default; the bias is a learned per-item prior (popularity), which
            # is what an empty history is scored by.
            self.item_head = nn.Linear(config.hidden_size, config.num_items, bias=True)
        # `item_output_residual`: a second output-side vector per item, added to the tied one (zero at the start).
        self.item_output_residual = (
            InterestOutputResidual(config.num_items, config.hidden_size) if config.item_output_residual else None
        )
        # `item_transition_prior`: the scores mixed with the transition law of the training pairs (a copy mechanism).
        self.transition_prior = InterestTransitionPrior(config) if config.item_transition_prior else None
        # Log-probabilities of drawing each item as a negative for the sampled softmax; uniform over real items when
        # unset. Not saved: it is a training setting (see `set_negative_sampling_distribution`).
        self.register_buffer("negative_sampling_log_q", None, persistent=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear | None:
        """The id output layer; `None` for `item_representation="text"`, which scores items by their text only."""
        return None if self.config.item_representation == "text" else self.item_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.item_head = value

    def item_representations(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[`InterestModel.item_representations`]: the vector of each item (input side; output side when tied)."""
        return self.model.item_representations(item_ids)

    def set_item_text_embeddings(self, embeddings: torch.Tensor) -> None:
        """[`InterestModel.set_item_text_embeddings`]: fills the item text embeddings (saved with the weights)."""
        self.model.set_item_text_embeddings(embeddings)

    def item_logits(
        self,
        hidden_states: torch.Tensor,
        item_id_keep: torch.Tensor | None = None,
        previous_items: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Scores of every item from interest states `(..., H)`: `(..., num_items)`, the output layer `recommend`,
        evaluation and serving share (`item_id_keep`: the items that keep their id part, in training only).
        With `item_transition_prior`, `previous_items` `(...)` are the items of the events the states have just read
        (their successors are mixed in), and `targets` (the loss, in training) leave each target's own pair out.
        """
        residual = self.item_output_residual
        if self.config.item_score_temperature:  # cosine over the temperature: normalised states and item vectors
            every_item = torch.arange(self.config.num_items, device=hidden_states.device)
            vectors = self.output_item_vectors(every_item, item_id_keep).to(hidden_states.dtype)
            logits = F.linear(self.scoring_states(hidden_states), vectors, self.item_head.bias)
        elif residual is not None and hidden_states.numel() > 16 * hidden_states.shape[-1]:
            # u . (e_i + r_i): one product with the summed table (many states: training, evaluation batches)
            weight = (self.item_head.weight + residual.weight).to(hidden_states.dtype)
            logits = F.linear(hidden_states, weight, self.item_head.bias)
        else:  # id part (tied to the id embeddings) + bias; bias alone for "text"
            logits = self.item_head(hidden_states)
            if residual is not None:  # a few states (recommending): u . e_i + u . r_i, no (N, H) sum per call
                logits = logits + F.linear(hidden_states, residual.weight.to(hidden_states.dtype))
        if item_id_keep is not None and not self.config.item_score_temperature:
            # item_id_dropout: the dropped items keep their bias, lose their id part (the cosine path drops it above)
            bias = self.item_head(hidden_states.new_zeros(hidden_states.shape[-1]))  # the module's own bias, via peft
            logits = bias + (logits - bias) * item_id_keep.to(logits.dtype)
        if self.model.text_projection is not None and not self.config.item_score_temperature:
            logits = logits + hidden_states @ self.model.text_representations().T  # (..., H) @ (H, N)
        if self.transition_prior is not None:
            if previous_items is None:
                raise ValueError(
                    "This model has a transition prior (config.item_transition_prior): its scores need the item of "
                    "the newest event each state has read; pass previous_items (or score through forward/recommend)."
                )
            logits = self.transition_prior(logits, previous_items, hidden_states, targets)
        return logits

    @torch.no_grad()
    def add_items(
        self,
        tokenizer,
        item_ids,
        text_embeddings: torch.Tensor | None = None,
        bias: float | torch.Tensor | None = None,
    ) -> int:
        """
        Cold start: appends new items to the vocabulary and to the model without retraining. Existing items keep
        their indices, weights and scores exactly; the new items get the next indices.

        - Text models (`item_representation` `"text"` or `"id+text"`) take each new item's text embedding, so a new
          item is represented, and scored, by its text at once. Encode the texts with the encoder the model was
          trained with (`config.text_encoder`), e.g. `hf_interest.text_encoding.encode_texts`.
        - New id embeddings (`"id"`, `"id+text"`) start at zero: they are untrained, so an id-only model has nothing
          to score a new item by but its bias (it cannot really rank cold items until it is trained on them), and an
          `"id+text"` model scores it by its text part alone.
        - New biases: `bias`, or by default the median bias of the existing real items, a neutral popularity prior
          (a new item has no interactions to estimate one from).

        Call it on the base model (before wrapping it with peft), and build optimizers afterwards: the grown weights
        are new parameters. A sampled-softmax distribution set with `set_negative_sampling_distribution` is cleared
        (set it again with counts for the new vocabulary).

        Args:
            tokenizer ([`ItemTokenizer`]): the model's vocabulary; the new items are added to it (`add_items`).
            item_ids (iterable): raw ids of the new items, none of them already in the vocabulary.
            text_embeddings (`torch.Tensor` of shape `(len(item_ids), text_embedding_size)`, *optional*): required
                for text models, not allowed for id-only ones.
            bias (`float` or `torch.Tensor` of shape `(len(item_ids),)`, *optional*): output bias of the new items.

        Returns:
            `int`: the number of items added (`len(item_ids)`).
        """
        self.check_vocabulary(tokenizer)
        item_ids = [str(item) for item in item_ids]
        if not item_ids:
            raise ValueError("add_items needs at least one new item id.")
        vocab = tokenizer.get_vocab()
        present = [item for item in item_ids if item in vocab]
        if present:
            raise ValueError(
                f"add_items: {len(present)} item ids are already in the vocabulary (e.g. {present[:5]}); pass only new "
                "items."
            )
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("add_items: item_ids holds duplicates; pass each new item once.")
        num_old, num_new = self.config.num_items, len(item_ids)
        backbone = self.model
        if self.config.uses_text:
            if text_embeddings is None:
                raise ValueError(
                    f"add_items: an item_representation={self.config.item_representation!r} model needs the new items' "
                    "text_embeddings (one row per new item, from the encoder in config.text_encoder)."
                )
            text_embeddings = _checked_text_embeddings(
                text_embeddings,
                (num_new, self.config.text_embedding_size),
                "add_items: text_embeddings",
                "(len(item_ids), text_embedding_size)",
            )
        elif text_embeddings is not None:
            raise ValueError(
                "add_items: this model has no text tower (item_representation='id'), so text_embeddings would be "
                "ignored; leave them out, or train a model with item_representation='text' or 'id+text'."
            )
        old_bias = self.item_head.bias
        if bias is None:
            new_bias = old_bias[self.config.num_special_tokens :].float().quantile(0.5).expand(num_new)
        else:
            new_bias = torch.as_tensor(bias, dtype=old_bias.dtype, device=old_bias.device)
            if new_bias.numel() not in (1, num_new) or not torch.isfinite(new_bias).all():
                raise ValueError(f"add_items: bias must be one finite number or {num_new} (one per new item).")
            new_bias = new_bias.reshape(-1).expand(num_new)

        # The vocabulary first: it raises on ids it refuses (special-token names) before the model has changed.
        added = tokenizer.add_items(item_ids)
        if added != num_new:  # the checks above make this unreachable
            raise RuntimeError(f"add_items: the tokenizer added {added} of {num_new} items; vocabulary out of sync.")

        def grown(parameter: nn.Parameter, extra: torch.Tensor) -> nn.Parameter:
            extra = extra.to(device=parameter.device, dtype=parameter.dtype)
            return nn.Parameter(torch.cat([parameter.detach(), extra]), requires_grad=parameter.requires_grad)

        tied = backbone.item_embeddings is not None and self.item_head.weight is backbone.item_embeddings.weight
        if backbone.item_embeddings is not None:
            embeddings = backbone.item_embeddings
            embeddings.weight = grown(
                embeddings.weight, embeddings.weight.new_zeros(num_new, embeddings.embedding_dim)
            )
            embeddings.num_embeddings = num_old + num_new
        if backbone.item_text_embeddings is not None:
            backbone.item_text_embeddings = torch.cat(
                [backbone.item_text_embeddings, text_embeddings.to(backbone.item_text_embeddings)]
            )
        if isinstance(self.item_head, nn.Linear):
            if tied:
                self.item_head.weight = backbone.item_embeddings.weight
            else:
                weight = self.item_head.weight
                self.item_head.weight = grown(weight, weight.new_zeros(num_new, weight.shape[1]))
            self.item_head.out_features = num_old + num_new
        self.item_head.bias = grown(old_bias, new_bias)
        if self.item_output_residual is not None:  # new items have no successors learned: zero, as at the start
            residual = self.item_output_residual
            residual.weight = grown(residual.weight, residual.weight.new_zeros(num_new, residual.embedding_dim))
            residual.num_embeddings = num_old + num_new
        if self.transition_prior is not None:  # new items have no successors counted: empty rows
            starts = self.transition_prior.row_starts
            self.transition_prior.row_starts = torch.cat([starts, starts[-1:].expand(num_new)])
        if self.negative_sampling_log_q is not None:
            logger.warning("add_items cleared the sampled-softmax distribution; set it again for the new vocabulary.")
            self.negative_sampling_log_q = None
        self.config.num_items = num_old + num_new
        return num_new

    def _draw_item_id_keep(self) -> torch.Tensor | None:
        """`item_id_dropout`: in training, which items keep their id part this step (one draw for both sides)."""
        rate = self.config.item_id_dropout
        if not self.training or not rate or self.model.item_embeddings is None or self.model.text_projection is None:
            return None
        device = self.model.item_embeddings.weight.device
        keep = torch.rand(self.config.num_items, device=device) >= rate
        keep[: self.config.num_special_tokens] = True
        return keep

    def output_item_vectors(self, item_ids: torch.Tensor, item_id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """
        Output-side vectors `(..., H)` of some items `(...)`: `item_logits` without the bias, for a few items (the
        sampled softmax) or all of them (serving's index).
        """
        vectors = None
        if self.config.item_representation != "text":
            weight, embeddings = self.item_head.weight, self.model.item_embeddings
            # Sparse gradients when the id embeddings ask for them (`nn.Embedding(..., sparse=True)`), so the output
            # table's gradient (the same table when tied) holds the rows of this batch only; dense otherwise.
            sparse = embeddings is not None and embeddings.sparse
            vectors = F.embedding(item_ids, weight, sparse=sparse)
            if self.item_output_residual is not None:
                vectors = vectors + F.embedding(item_ids, self.item_output_residual.weight, sparse=sparse)
            if item_id_keep is not None:
                vectors = vectors * item_id_keep[item_ids, None].to(vectors.dtype)
        if self.model.text_projection is not None:
            text = self.model.text_representations(item_ids)
            vectors = text if vectors is None else vectors + text
        if self.config.item_score_temperature:  # cosine scores: unit vectors (a dropped id part leaves the text's)
            vectors = F.normalize(vectors, dim=-1)
        return vectors

    def scoring_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """
        Interest states `(..., H)` as the output layer multiplies them with `output_item_vectors`: unchanged, or
        L2-normalised and divided by `config.item_score_temperature` when it is set (cosine scores).
        """
        temperature = self.config.item_score_temperature
        return F.normalize(hidden_states, dim=-1) / temperature if temperature else hidden_states

    @torch.no_grad()
    def set_transition_counts(self, previous_items, next_items, counts=None) -> int:
        """
        Fills the transition prior (`config.item_transition_prior`) with counts of consecutive pairs: item
        `next_items[j]` followed `previous_items[j]` `counts[j]` times (default 1 per pair; repeated pairs are
        summed) in the training sequences. Each item keeps its `config.transition_prior_successors` most frequent
        successors (ties: the lower index). Count pairs of the training split only: a pair from the evaluated events
        would leak its answer. Pairs with a special token are skipped.

        Returns:
            `int`: the number of (item, successor) counts kept (`config.transition_prior_pairs`).
        """
        if self.transition_prior is None:
            raise ValueError(
                "set_transition_counts needs a model built with InterestConfig(item_transition_prior=True)."
            )
        device = self.transition_prior.row_starts.device
        previous = torch.as_tensor(previous_items, dtype=torch.long).reshape(-1).cpu()
        following = torch.as_tensor(next_items, dtype=torch.long).reshape(-1).cpu()
        weights = torch.ones(len(previous), dtype=torch.float64) if counts is None else torch.as_tensor(counts)
        weights = weights.reshape(-1).double().cpu()
        num_items, num_special = self.config.num_items, self.config.num_special_tokens
        if not len(previous) == len(following) == len(weights):
            raise ValueError(
                f"set_transition_counts: previous_items, next_items and counts must have one entry per pair, got "
                f"{len(previous)}, {len(following)} and {len(weights)}."
            )
        for name, items in (("previous_items", previous), ("next_items", following)):
            if len(items) and (items.min() < 0 or items.max() >= num_items):
                raise ValueError(f"set_transition_counts: {name} must be vocabulary indices in [0, {num_items}).")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("set_transition_counts: counts must be finite and non-negative.")
        real = (previous >= num_special) & (following >= num_special) & (weights > 0)
        keys, inverse = torch.unique(previous[real] * num_items + following[real], return_inverse=True)
        summed = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inverse, weights[real])
        rows, items = keys // num_items, keys % num_items
        # each row's most frequent successors first (ties: lower index), then the first max_successors of each row
        # (`keys` are sorted by row, then item: two stable sorts make it row, then count descending, then item)
        order = torch.sort(-summed, stable=True).indices
        order = order[torch.sort(rows[order], stable=True).indices]
        rows, items, summed = rows[order], items[order], summed[order]
        row_sizes = torch.bincount(rows, minlength=num_items)
        row_firsts = torch.cumsum(row_sizes, 0) - row_sizes
        rank = torch.arange(len(rows)) - row_firsts[rows]
        keep = rank < self.config.transition_prior_successors
        items, summed = items[keep], summed[keep]
        prior = self.transition_prior
        ends = torch.cumsum(row_sizes.clamp(max=self.config.transition_prior_successors), 0)  # the rows as kept
        prior.row_starts = torch.cat([ends.new_zeros(1), ends]).to(device)
        prior.next_items = items.to(device)
        prior.counts = summed.to(device=device, dtype=prior.weight.dtype)
        self.config.transition_prior_pairs = len(items)
        return len(items)

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
        self.negative_sampling_log_q = (weights / weights.sum()).log().float().to(self.item_head.bias.device)

    def _next_item_loss(
        self,
        hidden_states: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: int | torch.Tensor | None,
        input_ids: torch.Tensor | None = None,
        item_id_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        num_special = self.config.num_special_tokens
        labelled = labels >= num_special  # -100 and special tokens are never targets
        # With loss_exclude_seen, the items of the history up to each position leave the softmax, as they leave the
        # ranking under the exclude_seen protocol, and a position whose target is among them (a repeat) leaves the
        # loss, as it is a miss there whatever the scores. Needs input_ids aligned with the labels.
        exclude_seen = self.config.loss_exclude_seen and input_ids is not None and input_ids.shape == labels.shape
        if exclude_seen:
            labelled = labelled & ~self.target_seen_before(input_ids, labels)
        hidden = hidden_states[labelled]  # (M, H)
        targets = labels[labelled]  # (M,)
        if targets.numel() == 0:
            return hidden_states.sum() * 0.0
        seen_from = None
        if exclude_seen:
            batch_index, position = labelled.nonzero(as_tuple=True)
            seen_from = (input_ids, batch_index, position)
        # the item each state has just read (the transition prior's row); in training, each target's own pair is left
        # out of the prior's counts
        previous = input_ids[labelled] if input_ids is not None and input_ids.shape == labels.shape else None
        prior_targets = targets if self.training else None
        if self.config.loss_type == "full_softmax":
            logits = self.item_logits(hidden, item_id_keep, previous, prior_targets).float()  # (M, N)
            # Special tokens are never candidates; one masked copy of the logits (slicing them off would copy too).
            excluded = torch.arange(self.config.num_items, device=logits.device) < num_special  # (N,)
            if seen_from is not None:
                excluded = self.seen_before(*seen_from) | excluded  # (M, N)
            losses = self.masked_cross_entropy(logits, targets, excluded)  # (M,)
        else:
            losses = self._sampled_softmax_losses(hidden, targets, seen_from, item_id_keep, previous, prior_targets)
        if num_items_in_batch is not None:
            return losses.sum() / num_items_in_batch
        return losses.mean()

    @staticmethod
    def target_seen_before(input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """
        `(B, T)` bool: whether the label at each position (the next item) occurs in its row of `input_ids` at or
        before that position, i.e. is a repeat of an item the history has already read.
        """
        seq_len = input_ids.shape[1]
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=input_ids.device).tril()  # (T, T)
        return ((labels[:, :, None] == input_ids[:, None, :]) & causal).any(dim=2)

    def seen_before(
        self,
        input_ids: torch.Tensor,
        batch_index: torch.Tensor,
        position: torch.Tensor,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        `(M, C)` bool: whether candidate item `candidates[c]` (default: every item of the vocabulary) occurs in row
        `batch_index[m]` of `input_ids` at or before `position[m]`, i.e. is already in the history the state at that
        position has read.
        """
        batch_size, seq_len = input_ids.shape
        positions = torch.arange(seq_len, device=input_ids.device)
        if candidates is None:  # (B, N): the first position of every item, one scatter
            first = torch.full((batch_size, self.config.num_items), seq_len, device=input_ids.device)
            first.scatter_reduce_(1, input_ids, positions.expand(batch_size, seq_len), reduce="amin")
            small = torch.int16 if seq_len < 2**15 else torch.int32
            # compared per (row, position) as a (B, T, N) bool table, then the labelled positions kept: cheaper than
            # gathering a (M, N) table of positions first
            return (first.to(small)[:, None, :] <= positions.to(small)[None, :, None])[batch_index, position]
        # (B, C) for a few sampled candidates, without a (B, N) table
        match = input_ids[:, :, None] == candidates[None, None, :]  # (B, T, C)
        first = torch.where(match, positions[None, :, None], seq_len).amin(dim=1)
        return first[batch_index] <= position[:, None]

    def _sampled_softmax_losses(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        seen_from: tuple | None = None,
        item_id_keep: torch.Tensor | None = None,
        previous: torch.Tensor | None = None,
        prior_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        num_special, num_samples = self.config.num_special_tokens, self.config.num_negative_samples
        bias = self.item_head.bias
        if self.negative_sampling_log_q is None:
            negatives = torch.randint(num_special, self.config.num_items, (num_samples,), device=hidden.device)
            log_q_pos = log_q_neg = None  # uniform: the correction is the same constant for every candidate
        else:
            negatives = torch.multinomial(self.negative_sampling_log_q.exp(), num_samples, replacement=True)
            log_q_pos, log_q_neg = self.negative_sampling_log_q[targets], self.negative_sampling_log_q[negatives]
        scored = self.scoring_states(hidden)
        positive_logits = (scored * self.output_item_vectors(targets, item_id_keep)).sum(-1) + bias[targets]  # (M,)
        negative_logits = scored @ self.output_item_vectors(negatives, item_id_keep).T + bias[negatives]  # (M, S)
        prior = self.transition_prior
        if prior is not None:  # the mixture item_logits makes, read for these candidates only
            if previous is None:
                raise ValueError("The transition prior (config.item_transition_prior) needs input_ids in the loss.")
            successors, evidence = prior.evidence(previous, hidden, prior_targets)
            own = torch.where(successors == targets[:, None], evidence, float("-inf")).amax(dim=1)
            positive_logits = prior.mixed(positive_logits, own.to(positive_logits.dtype))
            negative_evidence = prior.candidate_evidence(successors, evidence, negatives)
            negative_logits = prior.mixed(negative_logits, negative_evidence.to(negative_logits.dtype))
        if log_q_pos is not None:
            positive_logits = positive_logits - log_q_pos
            negative_logits = negative_logits - log_q_neg
        # A sampled negative that is the positive itself is an accidental hit: drop it from that row.
        drop = negatives[None, :] == targets[:, None]
        if seen_from is not None:  # and negatives already in the history, with loss_exclude_seen
            drop = drop | self.seen_before(*seen_from, negatives)
        negative_logits = negative_logits.masked_fill(drop, float("-inf"))
        logits = torch.cat([positive_logits[:, None], negative_logits], dim=1).float()  # (M, 1 + S)
        return F.cross_entropy(logits, torch.zeros_like(targets), reduction="none")

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
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
            logits_to_keep (`int` or `torch.Tensor`, defaults to 0):
                Compute logits for the last `logits_to_keep` positions only (0: all), or, as a 1-D tensor, for the
                positions it lists (transformers' convention; an empty tensor computes none). The loss does not
                depend on it; training loops pass an empty tensor to skip a `(batch, seq_len, num_items)` tensor
                they never read. Without `labels`, an `int` also makes the model's last layer run for those
                positions only (`states_to_keep`), and `last_hidden_state` covers them only.
            return_dict (`bool`, *optional*): return a [`NextItemPredictionOutput`] rather than a tuple.
            num_items_in_batch (`int`, *optional*):
                Labelled positions across the accumulated batches (passed by `transformers.Trainer` under
                gradient accumulation); the loss is then a sum divided by it instead of a mean. With
                `config.loss_exclude_seen`, a position whose target the history has already read adds nothing to
                the sum (a repeat), so a count that includes such positions scales the loss down by their share.

        Returns:
            [`NextItemPredictionOutput`] or a tuple.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        item_id_keep = self._draw_item_id_keep()
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            timestamps=timestamps,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            item_id_keep=item_id_keep,
            # the loss needs every position
            states_to_keep=logits_to_keep if labels is None and not isinstance(logits_to_keep, torch.Tensor) else 0,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, H), or (B, logits_to_keep, H) without labels

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
            loss = self._next_item_loss(
                hidden_states,
                labels.to(hidden_states.device),
                num_items_in_batch,
                input_ids,
                item_id_keep,
            )

        previous = None  # the item each kept state has just read, for the transition prior
        if isinstance(logits_to_keep, torch.Tensor):  # the positions listed (none: no (B, T, N) product at all)
            kept = hidden_states[:, logits_to_keep.to(hidden_states.device), :]
            if input_ids is not None:
                previous = input_ids[:, logits_to_keep.to(input_ids.device)]
        else:
            kept = hidden_states[:, -logits_to_keep:, :] if logits_to_keep else hidden_states
            if input_ids is not None and kept.shape[1]:
                previous = input_ids[:, -kept.shape[1] :]
        if kept.shape[1] == 0:  # nothing to score (not even the text tower's item vectors)
            logits = kept.new_zeros(kept.shape[0], 0, self.config.num_items)
        else:
            logits = self.item_logits(kept, item_id_keep, previous)  # (B, T or the positions kept, N)

        if not return_dict:
            extra = tuple(v for v in outputs.to_tuple()[1:] if v is not None)
            return ((loss,) if loss is not None else ()) + (logits, hidden_states) + extra
        return NextItemPredictionOutput(
            loss=loss,
            logits=logits,
            last_hidden_state=hidden_states,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            long_term_interest=outputs.long_term_interest,
            short_term_interest=outputs.short_term_interest,
            interest_gate=outputs.interest_gate,
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

        "Seen" means every event of the history given, however long: the model reads the newest
        `max_position_embeddings` events, and `exclude_seen` removes the items of all of them (as evaluation does;
        a warning says so once when a history is longer). An empty history (all padding) is scored by the learned
        per-item bias alone, a popularity prior.

        Args:
            input_ids (`torch.Tensor` of shape `(batch_size, seq_len)` or `(seq_len,)`): item indices.
            attention_mask (`torch.Tensor`, *optional*): 1 for real events; defaults to `input_ids != pad_token_id`.
            timestamps (`torch.Tensor`, *optional*): event times in integer seconds, same shape as `input_ids`.
            top_k (`int`, defaults to 10): how many items to return per history.
            exclude_seen (`bool`, defaults to `True`): never recommend an item already in the history.
            exclude_items (list of `int`, *optional*): vocabulary indices never to recommend (e.g. out of stock).

        Returns:
            [`RecommendationOutput`] with `item_ids` and `scores` of shape `(batch_size, top_k)`, and how many events
            each history had and how many the model read. Special tokens are never returned.
        """
        input_ids, attention_mask, timestamps, seen = self.clean_recommend_inputs(
            input_ids, attention_mask, timestamps
        )
        num_special = self.config.num_special_tokens
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        top_k = min(top_k, self.config.num_items - num_special)

        states = self.last_states(input_ids, attention_mask, timestamps)
        scores = self.item_logits(states, previous_items=input_ids[:, -1]).float()  # (B, N); left aligned: newest last
        scores[:, :num_special] = float("-inf")
        if exclude_seen:
            scores.scatter_(1, seen, float("-inf"))  # every event given, not only the ones read
        if exclude_items is not None:
            exclude_items = torch.as_tensor(exclude_items, dtype=torch.long, device=scores.device)
            if exclude_items.numel() and (exclude_items.min() < 0 or exclude_items.max() >= self.config.num_items):
                raise ValueError(f"exclude_items must be vocabulary indices in [0, {self.config.num_items}).")
            scores[:, exclude_items] = float("-inf")
        top_scores, top_items = scores.topk(top_k, dim=1)
        top_items = top_items.masked_fill(torch.isinf(top_scores), -1)
        return RecommendationOutput(
            item_ids=top_items,
            scores=top_scores,
            events_given=(seen != self.config.pad_token_id).sum(dim=1),
            events_read=attention_mask.sum(dim=1),
        )

    def last_states(self, input_ids, attention_mask, timestamps) -> torch.Tensor:
        """`(B, H)`: the interest state after the newest event of each left-aligned history (as
        `clean_recommend_inputs` returns it), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                timestamps=timestamps,
                return_dict=True,
                states_to_keep=1,
            ).last_hidden_state[:, -1]  # left aligned: the last column is the newest event
        finally:
            self.train(was_training)

    def clean_recommend_inputs(
        self, input_ids, attention_mask, timestamps
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """
        Validates untrusted `recommend` inputs with clear errors, left-aligns them and keeps the newest
        `max_position_embeddings` events (a longer history is said once, its events still excluded). Returns
        `(input_ids, attention_mask, timestamps, seen)`: what the model reads, and the items of every event given.
        """
        note = "every event given is still excluded from the recommendations (exclude_seen)"
        return _read_newest(self.config, self.item_head.bias.device, input_ids, attention_mask, timestamps, note)


def _shaped_like(input_ids: torch.Tensor, value, name: str) -> torch.Tensor:
    """`value` as a `(batch_size, seq_len)` tensor on `input_ids`' device (one history may come as `(seq_len,)`)."""
    value = torch.as_tensor(value, device=input_ids.device)
    if value.dim() == 1:
        value = value[None, :]
    if value.shape != input_ids.shape:
        raise ValueError(f"{name} has shape {tuple(value.shape)} but input_ids has {tuple(input_ids.shape)}.")
    return value


def _read_newest(
    config, device, input_ids, attention_mask, timestamps, note: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Validates untrusted inputs with clear errors, left-aligns them and keeps the newest `max_position_embeddings`
    events (saying so once, with `note`). Returns `(input_ids, attention_mask, timestamps)` as the model reads them,
    and `seen`: the items of every event given (before the newest were kept), `pad_token_id` elsewhere."""
    input_ids = torch.as_tensor(input_ids, device=device)
    if input_ids.dim() == 1:
        input_ids = input_ids[None, :]
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch_size, seq_len), got {tuple(input_ids.shape)}.")
    _check_item_indices(input_ids, config.num_items)
    input_ids = input_ids.long()
    if attention_mask is None:
        attention_mask = input_ids != config.pad_token_id
    attention_mask = _shaped_like(input_ids, attention_mask, "attention_mask").bool()
    if timestamps is not None:
        timestamps = _shaped_like(input_ids, timestamps, "timestamps")
        if timestamps.dtype.is_floating_point and not torch.isfinite(timestamps[attention_mask]).all():
            raise ValueError("timestamps must be finite numbers of seconds at every real position.")
        timestamps = timestamps.long()

    # Move real events to the right end (a stable sort keeps their order), whatever side the padding was on,
    # then keep the newest max_position_embeddings columns.
    order = attention_mask.long().argsort(dim=1, stable=True)
    input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
    if timestamps is not None:
        timestamps = timestamps.gather(1, order)
    seen = input_ids.masked_fill(~attention_mask, config.pad_token_id)
    max_len = config.max_position_embeddings
    if input_ids.shape[1] > max_len:
        if attention_mask[:, :-max_len].any():
            logger.warning_once(
                f"A history is longer than max_position_embeddings={max_len}: the model reads its newest {max_len} "
                f"events; {note}."
            )
        input_ids, attention_mask = input_ids[:, -max_len:], attention_mask[:, -max_len:]
        timestamps = timestamps[:, -max_len:] if timestamps is not None else None
    if input_ids.shape[1] == 0:  # empty histories: one padding column, scored by the item bias alone
        input_ids = torch.full((input_ids.shape[0], 1), config.pad_token_id, device=device)
        attention_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        timestamps = None
        seen = input_ids
    return input_ids, attention_mask.long(), timestamps, seen


@dataclass
class InterestForecastingOutput(ModelOutput):
    """
    Output of [`InterestForInterestForecasting`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean cross-entropy between the empirical category distribution of the next `forecast_horizon` events and
            the forecast, over the positions that have a target.
        logits (`torch.FloatTensor` of shape `(batch_size, seq_len, num_categories)`):
            The log of the forecast distribution at every step (`logits.softmax(-1)` or `logits.exp()` gives it).
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`): the interest states.
        long_term_interest, short_term_interest, interest_gate (*optional*): as in [`InterestModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    long_term_interest: torch.FloatTensor | None = None
    short_term_interest: torch.FloatTensor | None = None
    interest_gate: torch.FloatTensor | None = None


def next_k_category_targets(
    next_items: torch.Tensor, item_category_weights: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The empirical category distribution of the next `k` events at every position, from the next-item labels.

    `next_items[b, t]` is the item of the event after position t (the `labels` of `DataCollatorForInterest` in train
    mode; -100 where there is none), so the next k events of position t are `next_items[b, t : t + k]`. Their
    category weight rows (`item_category_weights`, an item with several categories spreads its weight) are summed
    and normalised; events without a category add nothing.

    Args:
        next_items: `(B, T)` vocabulary indices, -100 (or any negative value) where there is no event (a special
            token such as padding, 0, counts as an event without a category: use -100).
        item_category_weights: `(num_items, C)`, rows summing to 1 (or 0 for items without a category).
        k: the horizon.

    Returns:
        `(targets, num_events)`: `targets` `(B, T, C)`, rows summing to 1 where any of the next k events has a
        category and 0 elsewhere; `num_events` `(B, T)`, how many of the k next events exist (k marks a full window).
    """
    valid = next_items >= 0
    weights = item_category_weights[next_items.clamp(min=0)] * valid[..., None].to(item_category_weights.dtype)
    batch_size, seq_len, num_categories = weights.shape
    zeros = weights.new_zeros(batch_size, 1, num_categories)
    summed = torch.cat([zeros, weights.cumsum(dim=1)], dim=1)  # (B, T + 1, C): events before each position
    counted = torch.cat([valid.new_zeros(batch_size, 1, dtype=torch.long), valid.long().cumsum(dim=1)], dim=1)
    start = torch.arange(seq_len, device=next_items.device)
    end = (start + k).clamp(max=seq_len)
    window = summed[:, end] - summed[:, start]  # (B, T, C)
    num_events = counted[:, end] - counted[:, start]
    mass = window.sum(dim=-1, keepdim=True)
    targets = torch.where(mass > 0, window / mass.clamp(min=torch.finfo(window.dtype).tiny), torch.zeros_like(window))
    return targets, num_events


class InterestForInterestForecasting(InterestPreTrainedModel):
    """
    The backbone with an interest-forecasting head: from the interest state u_t, the distribution over item
    categories of the user's next `config.forecast_horizon` events. It is a mixture, with a gate g_t = sigmoid(w . u_t
    + b), of a generated distribution (a linear layer and a softmax) and a copied one: u_t attends over the states up
    to t and the weights sum those events' categories, so "the user's recent category mix, weighted as learned" is
    one attention away (the pointer idea of pointer-generator networks and RepeatNet).

    The item -> category weights are a buffer (`set_item_category_weights`, saved with the weights). They are read on
    the input side too (each history item's categories, projected by `category_input`, are added to its
    representation) and the training targets are built from them: `forward(labels=...)` with the next-item `labels`
    of `DataCollatorForInterest` trains on every position that has at least one later event with a category (the last positions of a sequence
    see fewer than k later events; their targets are the distribution of those). Evaluate on full windows (see
    `next_k_category_targets`). A next-item checkpoint's backbone loads into it with `from_pretrained`.
    """

    _keys_to_ignore_on_load_unexpected = [r"^item_head\.", r"^click_", r"^target_"]

    def __init__(self, config: InterestConfig):
        super().__init__(config)
        if config.num_categories is None:
            raise ValueError(
                "InterestForInterestForecasting needs config.num_categories (and, ideally, category_names): set them "
                "from your items table, e.g. with hf_interest.evolution.category_weight_matrix."
            )
        self.model = InterestModel(config)
        self.forecast_head = nn.Linear(config.hidden_size, config.num_categories)
        # The history's categories as an input too: the head knows them (the buffer below), so the model need not
        # learn each item's category from its id before it can follow the user's category mix.
        self.category_input = nn.Linear(config.num_categories, config.hidden_size, bias=False)
        # A copy of the history's own category mix: u_t attends over the states up to t, and the attention weights
        # sum the attended events' categories (the pointer idea of pointer-generator networks and RepeatNet). A gate
        # mixes it with the generated distribution: a recency-weighted, smoothed mix of the user's recent categories
        # is then one attention away, rather than something the softmax layer must approximate.
        self.copy_query = nn.Linear(config.hidden_size, config.hidden_size)
        self.copy_key = nn.Linear(config.hidden_size, config.hidden_size)
        self.copy_gate = nn.Linear(config.hidden_size, 1)
        self.register_buffer(
            "item_category_weights", torch.zeros(config.num_items, config.num_categories), persistent=True
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    @torch.no_grad()
    def set_item_category_weights(self, weights: torch.Tensor) -> None:
        """
        Sets the item -> category weights, one row per vocabulary index (special tokens and items without a
        category: zero rows; an item with n categories: 1/n on each). Saved with the weights.
        """
        weights = _checked_text_embeddings(
            weights, tuple(self.item_category_weights.shape), "item category weights", "(num_items, num_categories)"
        )
        sums = weights.sum(dim=-1)
        if (weights < 0).any() or not torch.all((sums - 1).abs().lt(1e-4) | sums.eq(0)):
            raise ValueError("item category weights must be non-negative with rows summing to 1 (or 0: no category).")
        self.item_category_weights.copy_(weights.to(self.item_category_weights))

    def _forecast_log_probs(
        self, states: torch.Tensor, categories: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """log p_t with p_t = g_t * copy_t + (1 - g_t) * softmax(forecast_head(u_t)); `(B, T, C)`."""
        batch_size, seq_len, hidden = states.shape
        steps = torch.arange(seq_len, device=states.device)
        allowed = steps[None, :] <= steps[:, None]  # (T, T)
        if attention_mask is not None:  # real keys, and each position itself so no row is empty
            allowed = allowed & (
                attention_mask.bool()[:, None, :] | torch.eye(seq_len, dtype=torch.bool, device=states.device)
            )
            allowed = allowed[:, None]  # (B, 1, T, T)
        query = self.copy_query(states)[:, None]  # (B, 1, T, H)
        key = self.copy_key(states)[:, None]
        copied = F.scaled_dot_product_attention(query, key, categories.to(states.dtype)[:, None], attn_mask=allowed)[
            :, 0
        ]  # (B, T, C): attention-weighted categories of the events up to t
        gate = torch.sigmoid(self.copy_gate(states)).float()  # (B, T, 1)
        generated = self.forecast_head(states).float().softmax(dim=-1)
        # Events without a category add nothing: renormalise, and where none was attended, copy the generated part.
        mass = copied.float().sum(dim=-1, keepdim=True)
        copied = torch.where(mass > 1e-6, copied.float() / mass.clamp(min=1e-6), generated)
        probs = gate * copied.float() + (1.0 - gate) * generated
        return probs.clamp(min=torch.finfo(torch.float32).tiny).log()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        category_targets: torch.FloatTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> InterestForecastingOutput | tuple:
        """
        Args:
            input_ids, attention_mask, timestamps, inputs_embeds: as for [`InterestModel`].
            labels (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): the next item at every position
                (-100: none); the targets are the categories of the next `forecast_horizon` of them.
            category_targets (`torch.FloatTensor` of shape `(batch_size, seq_len, num_categories)`, *optional*):
                target distributions given directly (rows summing to 1; all-zero rows are ignored), instead of
                `labels`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if input_ids is not None:
            _check_item_indices(input_ids, self.config.num_items)
        if input_ids is None:
            raise ValueError(
                "InterestForInterestForecasting.forward needs input_ids: the copy part reads the history's categories."
            )
        categories_of_inputs = self.item_category_weights[input_ids]  # (B, T, C)
        if inputs_embeds is None:
            inputs_embeds = self.model.item_representations(input_ids) + self.category_input(
                categories_of_inputs.to(self.category_input.weight.dtype)
            )
        outputs = self.model(
            attention_mask=attention_mask,
            timestamps=timestamps,
            inputs_embeds=inputs_embeds,
            return_dict=True,
        )
        logits = self._forecast_log_probs(outputs.last_hidden_state, categories_of_inputs, attention_mask)
        loss = None
        if labels is not None and category_targets is None:
            if tuple(labels.shape) != tuple(logits.shape[:2]):
                raise ValueError(
                    f"labels must have the shape of input_ids {tuple(logits.shape[:2])} (the next item at every "
                    f"position, -100 where there is none), got {tuple(labels.shape)}."
                )
            _check_labels(labels, self.config.num_items)
            category_targets, _ = next_k_category_targets(
                labels, self.item_category_weights.to(logits.dtype), self.config.forecast_horizon
            )
        if category_targets is not None:
            if tuple(category_targets.shape) != tuple(logits.shape):
                raise ValueError(
                    f"category_targets must have shape (batch_size, seq_len, num_categories) = {tuple(logits.shape)}, "
                    f"got {tuple(category_targets.shape)}."
                )
            has_target = category_targets.sum(dim=-1) > 0
            if attention_mask is not None:
                has_target = has_target & attention_mask.bool()
            cross_entropy = -(category_targets.to(logits.dtype) * logits).sum(dim=-1)
            loss = cross_entropy[has_target].mean() if has_target.any() else logits.sum() * 0.0
        if not return_dict:
            return tuple(v for v in (loss, logits, outputs.last_hidden_state) if v is not None)
        return InterestForecastingOutput(
            loss=loss,
            logits=logits,
            last_hidden_state=outputs.last_hidden_state,
            long_term_interest=outputs.long_term_interest,
            short_term_interest=outputs.short_term_interest,
            interest_gate=outputs.interest_gate,
        )

    @torch.no_grad()
    def forecast(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """The forecast category distribution `(batch_size, num_categories)` after each history (padded on either
        side); of a history longer than `max_position_embeddings`, the newest events are read (said once)."""
        note = "the forecast follows from those"
        device = self.forecast_head.weight.device
        input_ids, attention_mask, timestamps, _ = _read_newest(
            self.config, device, input_ids, attention_mask, timestamps, note
        )
        logits = self(input_ids=input_ids, attention_mask=attention_mask, timestamps=timestamps).logits
        return logits[:, -1].float().softmax(dim=-1)


@dataclass
class ClickPredictionOutput(ModelOutput):
    """
    Output of [`InterestForClickPrediction`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): mean binary cross-entropy over the labelled candidates.
        logits (`torch.FloatTensor` of shape `(batch_size, seq_len, num_candidates)` or `(batch_size, num_candidates)`):
            Click logits of each candidate (the shape of `candidate_ids`).
        probabilities (`torch.FloatTensor`, same shape): `sigmoid(logits)`, the click probabilities.
        target_attention (`torch.FloatTensor` of shape `logits.shape + (seq_len,)`, *optional*): how much each
            candidate attended to each history event (`output_attentions=True`).
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`): the interest states.
        long_term_interest, short_term_interest, interest_gate (*optional*): as in [`InterestModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None
    target_attention: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    long_term_interest: torch.FloatTensor | None = None
    short_term_interest: torch.FloatTensor | None = None
    interest_gate: torch.FloatTensor | None = None


class InterestForClickPrediction(InterestPreTrainedModel):
    """
    The backbone with a click-prediction head in the spirit of DIN (Zhou et al., 2018, "Deep Interest Network for
    Click-Through Rate Prediction") and DIEN (Zhou et al., 2019): the candidate item attends over the user's history
    items up to step t (target-aware attention, causal), and an MLP reads the interest state u_t, the attended history
    a, the candidate c and their products `[u_t, a, c, u_t * c, a * c]`, plus a learned per-item click bias. BCE loss.

    `candidate_ids` `(B, T, C)` scores C candidates at every step (training: the next event's item, with its rating
    as the label, or the next item and sampled negatives; see `hf_interest.data.DataCollatorForClick`);
    `(B, C)` scores them after the whole (left-padded) history. A next-item checkpoint's backbone loads into it.
    """

    _keys_to_ignore_on_load_unexpected = [r"^item_head\.", r"^forecast_head\.", r"^item_category_weights"]

    def __init__(self, config: InterestConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.model = InterestModel(config)
        self.target_query = nn.Linear(hidden, hidden)
        self.target_key = nn.Linear(hidden, hidden)
        self.click_mlp_in = nn.Linear(5 * hidden, config.click_hidden_size)
        self.click_activation = ACT2FN[config.hidden_act]
        self.click_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.click_mlp_out = nn.Linear(config.click_hidden_size, 1)
        self.click_item_bias = InterestItemBias(config.num_items)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        candidate_ids: torch.LongTensor | None = None,
        click_labels: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs,
    ) -> ClickPredictionOutput | tuple:
        """
        Args:
            input_ids, attention_mask, timestamps: as for [`InterestModel`] (left padded).
            candidate_ids (`torch.LongTensor` of shape `(batch_size, seq_len, C)` or `(batch_size, C)`):
                the items to score at every step, or after the whole history. Pad slots with `pad_token_id`.
            click_labels (`torch.FloatTensor`, shape of `candidate_ids`, *optional*): 1 (click), 0 (no click) or
                -100 (ignored: padding, empty slots).
            output_attentions (`bool`, *optional*): also return the target attention weights.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`, *optional*): the history's
                item representations, read by the backbone and the target attention alike, instead of
                `item_representations(input_ids)` (e.g. to attribute the click score to the events); `input_ids`
                still gives the shape and the candidates' vocabulary.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        if input_ids is None or candidate_ids is None:
            raise ValueError("InterestForClickPrediction needs input_ids and candidate_ids.")
        last_only = candidate_ids.dim() == 2
        if (
            candidate_ids.dim() not in (2, 3)
            or candidate_ids.shape[0] != input_ids.shape[0]
            or (not last_only and candidate_ids.shape[1] != input_ids.shape[1])
        ):
            raise ValueError(
                f"candidate_ids must be (batch_size, seq_len, C) = ({input_ids.shape[0]}, {input_ids.shape[1]}, C) or "
                f"(batch_size, C), got {tuple(candidate_ids.shape)}."
            )
        _check_item_indices(candidate_ids, self.config.num_items)
        _check_item_indices(input_ids, self.config.num_items)
        if inputs_embeds is not None and tuple(inputs_embeds.shape[:2]) != tuple(input_ids.shape):
            raise ValueError(
                f"inputs_embeds must be (batch_size, seq_len, hidden_size) with the shape of input_ids "
                f"{tuple(input_ids.shape)} first, got {tuple(inputs_embeds.shape)}."
            )
        history = inputs_embeds if inputs_embeds is not None else self.model.item_representations(input_ids)
        outputs = self.model(
            attention_mask=attention_mask, timestamps=timestamps, inputs_embeds=history, return_dict=True
        )
        states = outputs.last_hidden_state  # (B, T, H)
        batch_size, seq_len, hidden = states.shape
        if last_only:
            candidate_ids = candidate_ids[:, None, :]  # (B, 1, C), scored at the last position
            states_at = states[:, -1:]
            query_steps = torch.full((1,), seq_len - 1, device=states.device)
        else:
            states_at = states
            query_steps = torch.arange(seq_len, device=states.device)
        num_candidates = candidate_ids.shape[-1]
        candidates = self.model.item_representations(candidate_ids)  # (B, T', C, H)

        # Target attention: candidate c at step t attends over history items 0..t (real ones; the item at t itself
        # is always allowed, so a row is never empty).
        steps = torch.arange(seq_len, device=states.device)
        allowed = steps[None, :] <= query_steps[:, None]  # (T', T)
        if attention_mask is not None:
            allowed = allowed & (attention_mask.bool()[:, None, :] | (steps[None, :] == query_steps[:, None]))
        else:
            allowed = allowed.expand(batch_size, -1, -1)
        allowed = allowed[:, :, None, :].expand(-1, -1, num_candidates, -1)  # (B, T', C, T)
        query = self.target_query(candidates).reshape(batch_size, 1, -1, hidden)  # (B, 1, T'C, H)
        key = self.target_key(history)[:, None]  # (B, 1, T, H)
        mask = allowed.reshape(batch_size, 1, -1, seq_len)
        weights = None
        if output_attentions:
            scores = (query @ key.transpose(-1, -2)) / math.sqrt(hidden)
            weights = scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(dim=-1)
            attended = weights @ history[:, None]
            weights = weights.reshape(batch_size, -1, num_candidates, seq_len)
        else:
            attended = F.scaled_dot_product_attention(query, key, history[:, None], attn_mask=mask)
        attended = attended.reshape(batch_size, -1, num_candidates, hidden)  # (B, T', C, H)
        user = states_at[:, :, None, :].expand_as(candidates)
        features = torch.cat([user, attended, candidates, user * candidates, attended * candidates], dim=-1)
        hidden_features = self.click_dropout(self.click_activation(self.click_mlp_in(features)))
        logits = self.click_mlp_out(hidden_features).squeeze(-1)  # (B, T', C)
        logits = logits + self.click_item_bias.bias.to(logits.dtype)[candidate_ids]
        if last_only:
            logits = logits[:, 0]
            weights = weights[:, 0] if weights is not None else None

        loss = None
        if click_labels is not None:
            if tuple(click_labels.shape) != tuple(logits.shape):
                raise ValueError(
                    f"click_labels must have the shape of candidate_ids {tuple(logits.shape)}, "
                    f"got {tuple(click_labels.shape)}."
                )
            labelled = click_labels != -100
            values = click_labels[labelled]
            if values.numel() and not torch.all((values == 0) | (values == 1)):
                raise ValueError("click_labels must be 1 (click), 0 (no click) or -100 (ignored).")
            if labelled.any():
                loss = F.binary_cross_entropy_with_logits(logits[labelled].float(), values.float())
            else:
                loss = logits.sum() * 0.0
        probabilities = torch.sigmoid(logits)
        if not return_dict:
            return tuple(v for v in (loss, logits, probabilities, weights, states) if v is not None)
        return ClickPredictionOutput(
            loss=loss,
            logits=logits,
            probabilities=probabilities,
            target_attention=weights,
            last_hidden_state=states,
            long_term_interest=outputs.long_term_interest,
            short_term_interest=outputs.short_term_interest,
            interest_gate=outputs.interest_gate,
        )


__all__ = [
    "ClickPredictionOutput",
    "DEFAULT_LORA_TARGET_MODULES",
    "InterestForClickPrediction",
    "InterestForInterestForecasting",
    "InterestForNextItemPrediction",
    "InterestForecastingOutput",
    "InterestModel",
    "InterestModelOutput",
    "InterestPreTrainedModel",
    "NextItemPredictionOutput",
    "RecommendationOutput",
    "next_k_category_targets",
    "time_gap_buckets",
]
