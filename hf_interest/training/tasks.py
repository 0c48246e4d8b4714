"""What differs between the tasks one training loop trains (`hf_interest.training.loop`): the model, the training
batches, how a split is evaluated and against which baseline, which metric picks the best epoch, and what the test
results look like.

- `NextItemTask`: `InterestForNextItemPrediction`; windows of whole sequences with the causal next-item loss on every
  position; full-ranking HR/NDCG/MRR with seen items excluded and included, beside the popularity baseline.
- `ClickTask`: `InterestForClickPrediction`; leave-one-out by time; at every training position the next event's item
  is the candidate, a click when its rating is at least `click_threshold` (`click_labels="ratings"`), or the next
  item against sampled negatives (`"sampled"`, for logs without ratings). Validation/test: the target event scored
  after the whole history. Metric: AUC; baseline: logistic regression on the item's training popularity.
- `ForecastTask`: `InterestForInterestForecasting`; split by users (held-out users' whole sequences, so every position
  of theirs can be forecast); targets: the category distribution of the next `forecast_horizon` events. Metric:
  cross-entropy (lower is better); baseline: the recent category mix.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import torch
from accelerate import PartialState
from torch.utils.data import DataLoader

from ..configuration_interest import InterestConfig
from ..data import DataCollatorForClick, DataCollatorForInterest, encode_sequences
from ..heads import (
    category_prior,
    category_weight_matrix,
    evaluate_click,
    evaluate_forecast,
    format_head_results,
    tune_forecast_baselines,
    whole_sequences,
)
from ..metrics import (
    PopularityClickBaseline,
    RankingAccumulator,
    TransitionRecommender,
    format_results_table,
    user_sample_description,
)
from ..modeling_interest import (
    InterestForClickPrediction,
    InterestForInterestForecasting,
    InterestForNextItemPrediction,
)
from ..tokenization_interest import ItemTokenizer
from .adapters import load_init_model
from .arguments import (
    DataArguments,
    ModelArguments,
    TrainArguments,
    resolve_item_output_residual,
    resolve_item_transition_prior,
    resolve_loss_type,
)
from .data import LengthGroupedSampler, next_item_dataloaders, train_windows
from .evaluation import evaluate_next_item, popularity_baseline

# The fields of ModelArguments that shape the backbone of every head.
BACKBONE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "use_time_gaps",
    "long_term_interest",
    "short_term_interest",
    "short_term_window",
)


class NextItemTask:
    """
    Next-item recommendation: the model from scratch (or `--init_from`), the windows and evaluation loaders
    (`next_item_dataloaders`), and full-ranking evaluation beside the popularity baseline.
    """

    name = "next-item"
    result_name = "next-item-recommendation"
    stateful = ()  # objects with a state_dict that checkpoints hold besides the model, optimizer and RNGs
    higher_is_better = True
    streaming = False  # the training split is in memory (its consecutive pairs can be counted before training)
    # The loss reads every position; the loop reads no logits: none are computed (at 1M items the last position's
    # alone were a quarter of a sampled-softmax step).
    forward_kwargs = {"logits_to_keep": torch.empty(0, dtype=torch.long)}
    split_description = (
        "leave-one-out by time: per user, the last event is the test target, the one before it the validation "
        "target, the rest train; ties in time keep file order"
    )

    def __init__(self, data, data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments, log):
        self.metric = train_args.metric_for_best_model
        if train_args.init_from:
            self.model, self.tokenizer = load_init_model(train_args.init_from, data_args.max_length)
            log(
                f"Starting from {train_args.init_from} ({len(self.tokenizer):,} vocabulary entries); its architecture "
                "is used, the model arguments are ignored."
            )
        else:
            self.tokenizer = ItemTokenizer.from_items(data.item_ids, model_max_length=data_args.max_length)
        loaders, self.popularity, self.stats = next_item_dataloaders(data, self.tokenizer, data_args, train_args)
        self.stats["max_length"] = data_args.max_length
        self.train_loader = loaders["train"]
        self.eval_loaders = {split: loaders[split] for split in ("validation", "test")}
        self.has_time = self.stats["has_timestamps"]
        _print_data_notes(log, self.stats, train_args)
        self._finish_model(data, data_args, model_args, train_args, log)

    def _finish_model(self, data, data_args, model_args, train_args, log) -> None:
        """A new model unless `--init_from` gave one; the sampled softmax draws negatives by training popularity."""
        if train_args.private and model_args.loss_type == "auto":
            model_args = replace(model_args, loss_type="full_softmax")
            log("loss: full softmax (DP-SGD: the sampled softmax would share its negatives across users)")
        if not train_args.init_from:
            lift, transitions = None, None
            if self._reads_transition_lift(model_args, train_args.private):
                transitions = training_transitions(data, self.tokenizer, self.popularity)
                validation = self.eval_loaders["validation"]
                lift = transition_lift(transitions, validation, self.popularity, self.tokenizer.num_special_tokens)
            self.model = _new_next_item_model(data, self.tokenizer, data_args, model_args, log, self.has_time, lift)
            if train_args.item_bias_init == "popularity":
                start_item_bias_at_popularity(self.model, self.popularity.item_counts)
                log("item bias: starts at log(1 + training count), centred (--item_bias_init popularity)")
            if line := start_item_table(self.model, data, self.tokenizer, data_args, train_args, self.popularity):
                log(line)
            if self.model.transition_prior is not None:
                log(start_transition_prior(self.model, transitions))
        if self.model.config.loss_type == "sampled_softmax":
            self.model.set_negative_sampling_distribution(self.popularity.item_counts)

    def _reads_transition_lift(self, model_args: ModelArguments, private: bool) -> bool:
        """Whether the run counts the training split's consecutive pairs before training: for the transition prior
        (left out or on), or for `--item_output_residual`'s default with the full softmax."""
        if model_args.item_transition_prior and (self.streaming or private):
            raise ValueError(
                "--item_transition_prior true needs the training split's consecutive pairs counted before training: "
                "not with streamed sequence shards or DP-SGD; leave it out."
            )
        if self.streaming or private:
            return False
        prior = model_args.item_transition_prior is not False
        return prior or _residual_reads_transition_lift(model_args, len(self.tokenizer), private)

    def prepare(self, accelerator) -> None:
        """Shards the evaluation loaders across processes (`gather_for_metrics` puts the ranks back together)."""
        self.accelerator = accelerator
        self.eval_loaders = {split: accelerator.prepare(loader) for split, loader in self.eval_loaders.items()}

    def evaluate(self, model, split: str) -> dict:
        results = evaluate_next_item(
            model,
            self.eval_loaders[split],
            self.popularity,
            split,
            self.accelerator,
            use_timestamps=self.has_time,
        )
        sample = self.stats.get("validation_sample") if split == "validation" else None
        if sample:  # the protocol says which users the numbers cover
            for block in (results["exclude_seen"], results["include_seen"]):
                block["protocol"]["users"] = user_sample_description(sample["users"], sample["of"])
        return results

    def metric_value(self, results: dict) -> float:
        return results["exclude_seen"]["model"][self.metric]

    def format_test_results(self, results: dict) -> str:
        return "\n\n".join(
            format_results_table({"popularity": block["popularity"], "model": block["model"]}, block["protocol"])
            for block in (results["exclude_seen"], results["include_seen"])
        )

    def summary(self) -> dict:
        """Counts of the data preparation, for `eval_results.json`'s training block."""
        return {
            "train_windows": self.stats["train_windows"],
            "train_windows_before_targets_from": self.stats["train_windows_before_targets_from"],
            "unknown_items": self.stats["unknown_items"],
            "eval_rows_removed": self.stats["eval_rows_removed"],
            **({"one_row_per_user": rows} if (rows := self.stats.get("one_row_per_user")) is not None else {}),
        }


class _HeadTask:
    """What the click and forecasting heads share: a vocabulary of the data's items, evaluation on every process."""

    stateful = ()
    forward_kwargs = {}

    def _encode(self, data, data_args: DataArguments):
        self.tokenizer = ItemTokenizer.from_items(data.item_ids, model_max_length=data_args.max_length)
        encoded, _ = encode_sequences(data.sequences, self.tokenizer.get_vocab(), self.tokenizer.unk_token_id)
        self.split_description = data.report.split
        self.has_time = "timestamps" in encoded["train"].column_names
        self.columns = [c for c in ("input_ids", "timestamps", "ratings") if c in encoded["train"].column_names]
        return encoded

    def prepare(self, accelerator) -> None:
        self.accelerator = accelerator  # every process evaluates every row

    def metric_value(self, results: dict) -> float:
        return results["model"][self.metric]

    def format_test_results(self, results: dict) -> str:
        return format_head_results(self.name, results)

    def summary(self) -> dict:
        return {"train_windows": self.num_windows}


class ClickTask(_HeadTask):
    """Click prediction: AUC and log loss beside logistic regression on item popularity."""

    name = "click"
    result_name = "click-prediction"
    metric, higher_is_better = "auc", True

    def __init__(self, data, data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments, log):
        encoded = self._encode(data, data_args)
        columns = self.columns
        if data_args.click_labels == "ratings" and "ratings" not in columns:
            raise ValueError(
                f"--task click --click_labels ratings needs a rating column, but {data_args.dataset} has none: pass "
                "--click_labels sampled (the next item against sampled negatives)."
            )
        windows = train_windows(encoded["train"], data_args.max_length, columns)
        common = {
            "pad_token_id": self.tokenizer.pad_token_id,
            "max_length": data_args.max_length,
            "label_source": data_args.click_labels,
            "click_threshold": data_args.click_threshold,
            "num_negatives": data_args.click_negatives,
            "num_items": len(self.tokenizer),
            "num_special_tokens": self.tokenizer.num_special_tokens,
            "return_time_gaps": False,
        }
        collator = DataCollatorForClick(
            mode="train", ignore_label_ids=(self.tokenizer.unk_token_id,), seed=train_args.seed, **common
        )
        self.eval_loaders = {}
        # The collators draw negatives from a counter of their calls: checkpointed, so a resumed run draws the same.
        self.stateful = [collator]
        for split in ("validation", "test"):
            keep = [
                c for c in ("input_ids", "timestamps", "labels", "target_rating") if c in encoded[split].column_names
            ]
            self.eval_loaders[split] = DataLoader(
                encoded[split].select_columns(keep).to_list(),
                batch_size=train_args.per_device_eval_batch_size,
                collate_fn=DataCollatorForClick(mode="eval", seed=train_args.seed + 1, **common),
            )
            self.stateful.append(self.eval_loaders[split].collate_fn)
        # The baseline is fitted on the same (candidate, label) pairs the model trains on.
        baseline_loader = DataLoader(
            windows, batch_size=256, collate_fn=DataCollatorForClick(mode="train", seed=train_args.seed, **common)
        )
        candidates, labels = _click_examples(baseline_loader)
        counts = popularity_baseline(encoded["train"], len(self.tokenizer), self.tokenizer.num_special_tokens)
        self.baseline = PopularityClickBaseline().fit(counts.item_counts.numpy(), candidates, labels)
        config = InterestConfig(
            num_items=len(self.tokenizer),
            max_position_embeddings=data_args.max_length,
            pad_token_id=self.tokenizer.pad_token_id,
            click_hidden_size=model_args.click_hidden_size,
            **backbone_fields(model_args, self.has_time),
        )
        self.model = InterestForClickPrediction(config)
        self.label_note = (
            f"click = rating >= {data_args.click_threshold:g}"
            if data_args.click_labels == "ratings"
            else f"the next item against {data_args.click_negatives} sampled negative(s)"
        )
        log(f"click labels: {self.label_note}; training transitions: {len(labels):,} ({int(labels.sum()):,} clicks)")
        self.train_loader = _grouped_loader(windows, collator, train_args)
        self.num_windows = len(windows)

    def evaluate(self, model, split: str) -> dict:
        unwrapped = self.accelerator.unwrap_model(model)
        results = evaluate_click(
            unwrapped, self.eval_loaders[split], self.baseline, split, use_timestamps=self.has_time
        )
        results["labels"] = self.label_note
        return results


class ForecastTask(_HeadTask):
    """Interest forecasting: cross-entropy of the next-k category mix beside the tuned recent category mix."""

    name = "forecast"
    result_name = "interest-forecasting"
    metric, higher_is_better = "cross_entropy", False

    def __init__(self, data, data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments, log):
        encoded = self._encode(data, data_args)
        self.batch_size = train_args.per_device_eval_batch_size
        windows = train_windows(encoded["train"], data_args.max_length, self.columns)
        weights, names, without = category_weight_matrix(
            data.items, self.tokenizer, primary_only=data_args.primary_category_only
        )
        log(
            f"forecast: {len(names)} categories, {without:,} items without a category; horizon "
            f"{model_args.forecast_horizon} events"
        )
        self.collator = DataCollatorForInterest(
            pad_token_id=self.tokenizer.pad_token_id,
            max_length=data_args.max_length,
            mode="train",
            ignore_label_ids=(self.tokenizer.unk_token_id,),
            return_time_gaps=False,
        )
        self.sequences = {split: whole_sequences(encoded[split]) for split in ("validation", "test")}
        self.prior = category_prior(encoded["train"]["input_ids"], weights)
        config = InterestConfig(
            num_items=len(self.tokenizer),
            max_position_embeddings=data_args.max_length,
            pad_token_id=self.tokenizer.pad_token_id,
            num_categories=len(names),
            category_names=names,
            forecast_horizon=model_args.forecast_horizon,
            **backbone_fields(model_args, self.has_time),
        )
        self.model = InterestForInterestForecasting(config)
        self.model.set_item_category_weights(torch.from_numpy(weights))
        self.baselines = tune_forecast_baselines(
            self.sequences["validation"], self.collator, weights, self.prior, model_args.forecast_horizon
        )
        log(f"forecasting baselines tuned on validation: {self.baselines}")
        self.train_loader = _grouped_loader(windows, self.collator, train_args)
        self.num_windows = len(windows)

    def evaluate(self, model, split: str) -> dict:
        evaluation = evaluate_forecast(
            self.accelerator.unwrap_model(model),
            self.sequences[split],
            self.collator,
            self.prior,
            split=split,
            batch_size=self.batch_size,
            baselines=self.baselines,
            use_timestamps=self.has_time,
        )
        return evaluation.metrics


TASK_CLASSES = {task.name: task for task in (NextItemTask, ClickTask, ForecastTask)}


def build_task(data, data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments, log):
    """
    The task `train_args.task` names, built on the loaded data: its vocabulary, model, training loader, evaluation
    and baseline.

    Args:
        data (`BehaviorData`): the run's data (`load_data`).
        data_args, model_args, train_args: the run's arguments.
        log: a print function (the accelerator's: main process only).

    Returns:
        `NextItemTask`, `ClickTask` or `ForecastTask`.
    """
    return TASK_CLASSES[train_args.task](data, data_args, model_args, train_args, log)


def backbone_fields(model_args: ModelArguments, has_time: bool) -> dict:
    """The backbone's config fields; no time-gap embedding for a log without times (every gap would be unknown)."""
    fields = {name: getattr(model_args, name) for name in BACKBONE_FIELDS}
    fields["use_time_gaps"] = model_args.use_time_gaps and has_time
    return fields


@torch.no_grad()
def start_item_bias_at_popularity(model, item_counts) -> None:
    """
    Sets a new next-item model's output bias to `log(1 + count_i)`, centred over the vocabulary (the softmax ignores
    the centre), from the training events' counts per vocabulary index (special tokens count 0).

    Why: the model then scores by popularity from its first step. Started at zero, AdamW moves each bias by about the
    learning rate per step, so the log-popularity range (about 10 at 10k items) takes thousands of steps; meanwhile
    the dot product u_t . e_i carries popularity, every interest state points the same way, and the model sits at
    the popularity baseline for epochs before it learns the user (docs/scale.md, "Quality at scale").
    """
    counts = torch.as_tensor(item_counts, dtype=torch.float64)
    bias = model.item_head.bias
    if counts.shape != bias.shape:
        raise ValueError(f"item_counts has shape {tuple(counts.shape)}, the item bias {tuple(bias.shape)}.")
    prior = counts.clamp(min=0).log1p()
    bias.copy_((prior - prior.mean()).to(bias))


CATEGORY_START_STD = 0.05
"""Spread of each category's start vector per dimension (`--item_table_init categories`): 2.5x the item table's own
random start (`initializer_range` 0.02), so the shared direction dominates an item's row until its events move it."""


CATEGORY_START_EVENTS_PER_ITEM = 50
"""`--item_table_init auto` starts the item table at the category vectors below this many training events per item
(measured: gains at 3.8, 11.4, 13.0 and 29 events per item, level at 58 on MovieLens-100K over 3 seeds; 20 until
the 29-per-item world was measured; docs/scale.md)."""


def start_item_table(model, data, tokenizer, data_args: DataArguments, train_args, popularity) -> str:
    """Starts a new model's item table as `--item_table_init` says (`item_table_start`); returns the line the run logs
    ("" when there is nothing to say)."""
    categories, why = item_table_start(
        train_args.item_table_init, data, tokenizer, data_args, model.config, popularity
    )
    if categories is None:
        return f"item table: random start ({why})" if why else ""
    weights, names, without = categories
    start_item_table_at_categories(model, weights, train_args.seed)
    return (
        f"item table: starts at its items' category vectors ({len(names):,} categories; {without:,} items without "
        f"one start as before; {why})"
    )


def item_table_start(choice: str, data, tokenizer, data_args: DataArguments, config: InterestConfig, popularity):
    """
    `--item_table_init`: `(categories, why)`, with `categories` the `category_weight_matrix` result to start the item
    table from (None: the random start) and `why` what the run logs. 'auto' starts from the categories where the
    log's items carry some, the model has an item id table (not `item_representation="text"`) and the training split
    has fewer than `CATEGORY_START_EVENTS_PER_ITEM` events per item: where an item's own row learns from a handful of
    events. Above it the rows learn on their own, and on MovieLens-100K (58 per item) the category start measured
    level (3 seeds; docs/results.md), so those runs train as before. 'categories' without any is a clear error.
    """
    if choice == "random":
        return None, ""
    if choice == "categories":
        return item_category_weights(data, tokenizer, data_args), "--item_table_init categories"
    items = getattr(data, "items", None)
    if items is None or "categories" not in items.column_names or config.item_representation == "text":
        return None, ""
    counts = torch.as_tensor(popularity.item_counts, dtype=torch.float64)
    per_item = float(counts.sum() / max(int((counts > 0).sum()), 1))
    if per_item >= CATEGORY_START_EVENTS_PER_ITEM:
        return None, (
            f"the default: {per_item:.1f} training events per item, at least {CATEGORY_START_EVENTS_PER_ITEM}; "
            "--item_table_init categories to start the items at their categories' vectors"
        )
    try:
        categories = category_weight_matrix(items, tokenizer, primary_only=data_args.primary_category_only)
    except ValueError:  # a categories column without any category: nothing to start from
        return None, ""
    return categories, (
        f"the default: {per_item:.1f} training events per item, under {CATEGORY_START_EVENTS_PER_ITEM}; "
        "--item_table_init random for off"
    )


def item_category_weights(data, tokenizer, data_args: DataArguments):
    """`category_weight_matrix` of the log's items table for `--item_table_init categories`, or a clear error where
    the items have no categories."""
    items = getattr(data, "items", None)
    if items is None or "categories" not in items.column_names:
        raise ValueError(
            "--item_table_init categories needs the items' categories (an items table with a categories column, "
            "such as a RecBole .item or MovieLens u.item file beside the log; docs/data.md); this log has none: leave "
            "it out."
        )
    try:
        return category_weight_matrix(items, tokenizer, primary_only=data_args.primary_category_only)
    except ValueError as error:
        raise ValueError(f"--item_table_init categories: {error} Leave the flag out.") from None


def start_item_table_at_categories(model, weights, seed: int) -> None:
    """
    Adds to each row of a new next-item model's item table the mean of its categories' vectors: one vector per
    category, `CATEGORY_START_STD` per dimension, drawn from its own generator seeded with `seed` (the run's other
    random draws are unchanged). `weights` `(num_items, C)`: item -> category weights (`category_weight_matrix`; zero
    rows, such as the special tokens and the padding row, add nothing).

    Why: the items of a category then share a direction from the first step. The model learns to point its states
    along it from every event of the category, so an item seen a handful of times, which its own row cannot place, is
    scored by its category (docs/scale.md: 1M events over 1M items, 3.8 events per item).
    """
    weights = torch.as_tensor(weights, dtype=torch.float32)
    table = model.get_input_embeddings().weight
    if weights.shape[0] != table.shape[0]:
        raise ValueError(f"weights has {weights.shape[0]} rows, the item table {table.shape[0]}.")
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.randn(weights.shape[1], table.shape[1], generator=generator) * CATEGORY_START_STD
    with torch.no_grad():
        table.add_((weights @ centroids).to(table))


def start_transition_prior(model, transitions: TransitionRecommender) -> str:
    """Fills a new model's transition prior with the training split's pair counts (`training_transitions`) and starts
    its mixture at their fit (`start_transition_prior_at_fit`). Returns the line the run logs."""
    pairs = transitions.pair_counts.tocoo()
    kept = model.set_transition_counts(pairs.row, pairs.col, pairs.data)
    share = start_transition_prior_at_fit(model, pairs.row, pairs.col, pairs.data)
    return (
        f"item transition prior: {kept:,} (item, successor) counts kept of the training split's {pairs.nnz:,} "
        f"distinct consecutive pairs (at most {model.config.transition_prior_successors} per item, the most "
        f"frequent); the mixture starts with the counts' share at {share:.3f}, the best fit of the training pairs' "
        "next items by the item biases and the counts alone"
    )


@torch.no_grad()
def start_transition_prior_at_fit(model, previous, following, counts, iterations: int = 60) -> float:
    """
    Starts the transition prior's mixing weight (the gate's bias g, the same for every state at the start) where the
    mixture best predicts the training split's next items from the item biases and the counts alone: the maximum
    likelihood of `(exp(b_t) + exp(g) * c(a, t) / c(a)) / (sum_i exp(b_i) + exp(g))` over every training pair
    (a, t), each with its own pair left out of its counts, as the loss reads them. In the mixture's share
    `exp(g) / (sum_i exp(b_i) + exp(g))` the likelihood is concave, so a golden-section search over g finds it.
    Like the popularity start of the biases, it spares the first epochs of moving one number by about the learning
    rate per step. Returns the counts' share of the mixture at the start, `exp(g) / (sum_i exp(b_i) + exp(g))`.
    """
    prior = model.transition_prior
    device = prior.row_starts.device
    previous = torch.as_tensor(previous, dtype=torch.long, device=device)
    following = torch.as_tensor(following, dtype=torch.long, device=device)
    counts = torch.as_tensor(counts, dtype=torch.float64, device=device)
    bias = model.item_head.bias.detach().double()
    log_total = torch.logsumexp(bias[model.config.num_special_tokens :], 0)
    rows = []  # per pair: b_t, log(c(a, t) / c(a)) (-inf: not counted), whether a has counted successors
    for start in range(0, len(previous), 65536):
        a, t = previous[start : start + 65536], following[start : start + 65536]
        items, log_shares, counted = prior.successor_shares(a, t)
        own = torch.where((items == t[:, None]) & counted, log_shares.double(), float("-inf")).amax(dim=1)
        rows.append((bias[t], own, counted.any(dim=1)))
    target_bias, own_share, has_successors = (torch.cat(parts) for parts in zip(*rows))
    weights = counts / counts.sum()

    def loss(gate: float) -> float:
        mixed = torch.logaddexp(target_bias, gate + own_share)
        normaliser = torch.where(
            has_successors, torch.logaddexp(log_total, torch.tensor(gate, dtype=torch.float64)), log_total
        )
        return float((weights * (normaliser - mixed)).sum())

    low, high = float(log_total) - 20.0, float(log_total) + 20.0
    ratio = (5**0.5 - 1) / 2
    for _ in range(iterations):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if loss(left) <= loss(right):
            high = right
        else:
            low = left
    gate = (low + high) / 2
    prior.gate.bias.fill_(gate)
    return float(torch.sigmoid(torch.tensor(gate, dtype=torch.float64) - log_total))


def _residual_reads_transition_lift(model_args: ModelArguments, num_items: int, private: bool) -> bool:
    """Whether `--item_output_residual`'s default needs `transition_lift`: left out, a tied id table, the full
    softmax, no DP-SGD (which refuses the residual)."""
    tied_ids = model_args.tie_word_embeddings and model_args.item_representation != "text"
    full = resolve_loss_type(model_args.loss_type, num_items)[0] == "full_softmax"
    return model_args.item_output_residual is None and tied_ids and full and not private


def training_transitions(data, tokenizer, popularity) -> TransitionRecommender:
    """The first-order transition baseline of the training split: counts of its consecutive pairs."""
    encoded, _ = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    return TransitionRecommender.from_sequences(
        encoded["train"]["input_ids"], len(tokenizer), popularity, tokenizer.num_special_tokens
    )


def transition_lift(transition: TransitionRecommender, validation_loader, popularity, num_special: int) -> float:
    """
    The first-order transition baseline's validation NDCG@10 (full ranking, seen items excluded) over popularity's,
    both by the evaluation's code, before any training: how much of a log's next item follows from its previous item
    alone (`TransitionRecommender`: counts of consecutive training pairs).
    """
    special = range(num_special)
    scored = {name: RankingAccumulator((10,), exclude_seen=True, ignore_index=special) for name in ("t", "p")}
    with torch.random.fork_rng(devices=[]):  # a DataLoader draws a seed as it starts: keep the run's random stream
        for batch in validation_loader:
            scored["t"].update(transition(batch["input_ids"], batch["attention_mask"]), batch["labels"], batch["seen"])
            scored["p"].update(popularity.full_sort_scores(len(batch["labels"])), batch["labels"], batch["seen"])
    return scored["t"].compute()["ndcg@10"] / max(scored["p"].compute()["ndcg@10"], 1e-12)


def _new_next_item_model(
    data, tokenizer, data_args: DataArguments, model_args: ModelArguments, log, has_time=True, lift=None
):
    """A next-item model from the model arguments; with a text tower, the item texts are embedded once here.
    `lift`: `transition_lift`, which `--item_output_residual`'s default reads with the full softmax."""
    model_fields, text_embeddings = asdict(model_args), None
    if model_args.use_time_gaps and not has_time:
        model_fields["use_time_gaps"] = False
        log("time gaps: off (the log has no timestamps, so every gap would read as unknown)")
    model_fields["loss_type"], why = resolve_loss_type(model_args.loss_type, len(tokenizer))
    log(why + (f", {model_args.num_negative_samples:,} negatives per batch" if "sampled" in why else ""))
    model_fields["item_output_residual"], why = resolve_item_output_residual(
        model_args, model_fields["loss_type"], lift
    )
    if why:
        log(why)
    model_fields["item_transition_prior"], why = resolve_item_transition_prior(model_args, lift)
    if why:
        log(why)
    if model_args.item_representation in ("text", "id+text"):  # embed the item texts once; saved with the model
        from ..text_encoding import DEFAULT_TEXT_ENCODER, encode_item_texts, item_texts

        model_fields["text_encoder"] = model_args.text_encoder or DEFAULT_TEXT_ENCODER
        texts = item_texts(data.items, tokenizer)
        log(texts)
        show_progress = PartialState().is_local_main_process
        text_embeddings = encode_item_texts(texts, encoder=model_fields["text_encoder"], show_progress=show_progress)
        model_fields["text_embedding_size"] = text_embeddings.shape[1]
    config = InterestConfig(
        num_items=len(tokenizer),
        max_position_embeddings=data_args.max_length,
        pad_token_id=tokenizer.pad_token_id,
        **model_fields,
    )
    model = InterestForNextItemPrediction(config)
    if text_embeddings is not None:
        model.set_item_text_embeddings(text_embeddings)
    return model


def _grouped_loader(windows: list[dict], collator, train_args: TrainArguments) -> DataLoader:
    """Training batches of similar lengths in a seeded order (`LengthGroupedSampler`)."""
    return DataLoader(
        windows,
        batch_size=train_args.per_device_train_batch_size,
        sampler=LengthGroupedSampler(
            [len(w["input_ids"]) for w in windows], train_args.per_device_train_batch_size, seed=train_args.seed
        ),
        collate_fn=collator,
    )


def _click_examples(dataloader) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, label) of every training transition, for fitting the popularity baseline."""
    candidates, labels = [], []
    for batch in dataloader:
        keep = batch["click_labels"] != -100
        candidates.append(batch["candidate_ids"][keep].numpy())
        labels.append(batch["click_labels"][keep].numpy())
    return np.concatenate(candidates), np.concatenate(labels)


def _print_data_notes(log, stats: dict, train_args: TrainArguments) -> None:
    if stats.get("one_row_per_user") is not None:
        counts = stats["one_row_per_user"]
        log(
            f"DP-SGD training rows: one per user, their newest {stats['max_length'] + 1:,} events "
            f"({stats['train_windows']:,} users; {counts['users_without_target']:,} users with fewer than 2 training "
            f"events have no target and no row; {counts['events_not_read']:,} older training events are not read)"
        )
    if stats["unknown_items"]:
        log(
            f"{stats['unknown_items']:,} events name items outside the vocabulary and were mapped to [UNK] (never a "
            "training label; inputs only). Give new items an index first (add_items) or train from scratch."
        )
    if stats["train_windows_before_targets_from"]:
        log(
            f"--targets_from {train_args.targets_from}: {stats['train_windows_before_targets_from']:,} training "
            f"windows hold no target at or after it and are left out ({stats['train_windows']:,} kept)."
        )
    if sample := stats.get("validation_sample"):
        log(
            f"validation: {user_sample_description(sample['users'], sample['of'])}; the same users every epoch "
            "(drawn from --seed); the test split scores every user"
        )
    for split, removed in stats["eval_rows_removed"].items():
        if removed["unknown_targets"]:
            log(
                f"{split}: {removed['unknown_targets']:,} rows whose target is outside the vocabulary are not "
                "evaluated (no model with this vocabulary can rank them)."
            )
        if removed["targets_before_targets_from"]:
            log(
                f"{split}: {removed['targets_before_targets_from']:,} rows whose target is before --targets_from are "
                "not evaluated."
            )
