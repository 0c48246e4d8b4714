"""Evaluation of next-item models under the stated protocol (full ranking, seen items excluded and included),
beside the popularity baseline scored by the same code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import DataCollatorForInterest
from ..data.paths import check_model_reference
from ..metrics import DEFAULT_KS, PopularityRecommender, RankingAccumulator, ranks_under_both_protocols


@dataclass
class EvalCollator:
    """
    Wraps the model-input collator for evaluation and adds `seen`: every item of the full history (not only the
    newest `max_length` the model reads), left padded with `pad_token_id`, so `exclude_seen` removes everything the
    user has interacted with before the target.

    Args:
        collator: a `DataCollatorForInterest` in eval mode.
        pad_token_id (`int`): the padding index.
    """

    collator: object
    pad_token_id: int = 0

    def __call__(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        histories = [list(f["input_ids"]) for f in features]
        width = max(1, max(len(h) for h in histories))
        seen = torch.full((len(histories), width), self.pad_token_id, dtype=torch.long)
        for row, history in enumerate(histories):
            if history:
                seen[row, width - len(history) :] = torch.as_tensor(history, dtype=torch.long)
        batch["seen"] = seen
        return batch


def eval_dataloader(dataset, pad_token_id: int, max_length: int, batch_size: int):
    """
    A dataloader over an encoded evaluation split (rows with `input_ids`, optional `timestamps`, and `labels`).

    Args:
        dataset (`datasets.Dataset`): an evaluation split after `encode_sequences`.
        pad_token_id (`int`): padding index.
        max_length (`int`): events the model reads (older ones still count as seen).
        batch_size (`int`): users per batch.

    Returns:
        `torch.utils.data.DataLoader` yielding `EvalCollator` batches, longest histories first (a stable sort, so
        rows of equal length keep their order).
    """
    columns = [c for c in ("input_ids", "timestamps", "labels") if c in dataset.column_names]
    collator = EvalCollator(
        DataCollatorForInterest(pad_token_id=pad_token_id, max_length=max_length, mode="eval", return_time_gaps=False),
        pad_token_id=pad_token_id,
    )
    rows = dataset.select_columns(columns).to_list()
    # Longest histories first: a batch pads to its longest row, so batching similar lengths together does less work
    # (about half on MovieLens-100K), and the largest batch comes first. The metrics are means over users, so the
    # order does not change them.
    rows.sort(key=lambda row: -min(len(row["input_ids"]), max_length))
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=collator)


def popularity_baseline(train_dataset, num_items: int, num_special_tokens: int = 3) -> PopularityRecommender:
    """The popularity baseline fitted on the training events only (the `input_ids` of the encoded train split)."""
    return PopularityRecommender.from_sequences(
        train_dataset["input_ids"], num_items=num_items, ignore_index=range(num_special_tokens)
    )


@torch.no_grad()
def evaluate_next_item(
    model,
    dataloader,
    popularity: PopularityRecommender,
    split: str,
    accelerator=None,
    ks: Sequence[int] = DEFAULT_KS,
    num_special_tokens: int = 3,
    show_progress: bool = False,
    use_timestamps: bool = True,
    gather_ranks=None,
    baselines: Mapping[str, object] | None = None,
) -> dict[str, dict]:
    """
    Full-ranking evaluation of a next-item model and the popularity baseline, with seen items excluded and included.

    Args:
        model: an `InterestForNextItemPrediction` (possibly wrapped by `accelerator.prepare`).
        dataloader: batches from `EvalCollator` (`input_ids`, `attention_mask`, optional `timestamps`, `labels` (B,),
            `seen`).
        popularity (`PopularityRecommender`): the baseline, fitted on training events only.
        split (`str`): name of the split, for the protocol.
        accelerator (`accelerate.Accelerator`, *optional*): gathers ranks across processes.
        ks: cut-offs.
        num_special_tokens (`int`): special indices are never candidates.
        show_progress (`bool`): show a progress bar.
        use_timestamps (`bool`): pass `timestamps` to the model (off for logs without time, whose collated
            timestamps are all zero).
        gather_ranks (callable, *optional*): applied once at the end to each process's ranks (all of its users), for
            processes that read different numbers of batches (streaming); instead of `accelerator`'s per-batch gather.
        baselines (mapping, *optional*): more scorers ranked beside the model on the same batches, by name:
            `scorer(input_ids, attention_mask) -> (B, N)` (e.g. `hf_interest.metrics.TransitionRecommender`).

    Returns:
        `{"exclude_seen": {"model": metrics, "popularity": metrics, <baseline name>: metrics, ..., "protocol":
        protocol}, "include_seen": {...}}`.
    """
    special = list(range(num_special_tokens))
    gather = accelerator.gather_for_metrics if accelerator is not None else None
    baselines = dict(baselines or {})
    names = ("model", "popularity", *baselines)
    accumulators = {
        (variant, name): RankingAccumulator(
            ks, exclude_seen=variant == "exclude_seen", ignore_index=special, split=split
        )
        for variant in ("exclude_seen", "include_seen")
        for name in names
    }
    was_training = model.training
    model.eval()
    for batch in tqdm(dataloader, desc=f"eval {split}", disable=not show_progress, leave=False):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
        if use_timestamps and "timestamps" in batch:
            inputs["timestamps"] = batch["timestamps"]
        scores = model(**inputs, logits_to_keep=1).logits[:, -1].float()  # (B, N)
        scored = {"model": scores, "popularity": popularity.full_sort_scores(scores.shape[0], device=scores.device)}
        for name, scorer in baselines.items():
            scored[name] = scorer(batch["input_ids"], batch["attention_mask"])  # its own dtype: ties stay broken
        for name, matrix in scored.items():
            # both protocols from one pass over the (B, N) scores
            ranks = ranks_under_both_protocols(matrix, batch["labels"], batch["seen"], ignore_index=special)
            for variant, variant_ranks in zip(("exclude_seen", "include_seen"), ranks, strict=True):
                variant_ranks = gather(variant_ranks) if gather is not None else variant_ranks
                accumulators[(variant, name)].add_ranks(variant_ranks, num_items=scores.shape[1])
    model.train(was_training)
    if gather_ranks is not None:  # each process ranked its own users: put all of them together
        for key, accumulator in accumulators.items():
            gathered = RankingAccumulator(ks, exclude_seen=key[0] == "exclude_seen", ignore_index=special, split=split)
            gathered.add_ranks(gather_ranks(accumulator.ranks), num_items=popularity.num_items)
            accumulators[key] = gathered
    results = {}
    for variant in ("exclude_seen", "include_seen"):
        results[variant] = {name: accumulators[(variant, name)].compute() for name in names}
        results[variant]["protocol"] = accumulators[(variant, "model")].protocol
    return results


def evaluate_checkpoint(
    checkpoint: str,
    split: str = "test",
    dataset: str | None = None,
    data_dir: str | None = None,
    batch_size: int = 256,
    show_progress: bool = False,
    use_timestamps: bool = True,
) -> dict:
    """
    Evaluates a saved next-item checkpoint on a split, beside the popularity baseline, under the stated protocol.

    The data is loaded and split exactly as training does (its arguments are read from the checkpoint's
    `eval_results.json`); items the checkpoint's vocabulary does not know become [UNK] and are counted. The
    popularity baseline counts the training events of the split.

    Args:
        checkpoint (`str`): a run folder, a `save_pretrained` folder, or a Hub repo id.
        split (`str`): `"validation"` or `"test"`.
        dataset (`str`, *optional*): `"movielens-100k"`, `"synthetic"` or a log path (default: the dataset in the
            checkpoint's `eval_results.json`).
        data_dir (`str`, *optional*): where MovieLens files are.
        batch_size (`int`): users per batch.
        show_progress (`bool`): show a progress bar.
        use_timestamps (`bool`): give the model the events' times when the data has them; `False` measures what
            serving without them costs a model that reads time gaps.

    Returns:
        `{"dataset": name, "unknown_items": n, split: results}` (results as `evaluate_next_item` returns them).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..data import CleaningConfig, encode_sequences, load_named_dataset

    if split not in ("validation", "test"):
        raise ValueError(f"split must be 'validation' or 'test', got {split!r}.")
    check_model_reference(checkpoint)  # a mistyped local folder is said at once, not after the Hub's retries
    config = AutoConfig.from_pretrained(checkpoint)
    heads = {"InterestForClickPrediction", "InterestForInterestForecasting"}
    if heads & set(config.architectures or []):
        raise ValueError(
            f"{checkpoint} is a {config.architectures[0]} checkpoint: this evaluates next-item models. Its test and "
            "validation results, beside its baseline, are in its eval_results.json (training evaluates the best "
            "weights); hf_interest.heads.evaluate_click / evaluate_forecast evaluate it on other data."
        )
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model.check_vocabulary(tokenizer)
    stored = Path(checkpoint) / "eval_results.json"
    data_arguments = json.loads(stored.read_text())["arguments"]["data"] if stored.is_file() else {}
    dataset = dataset or data_arguments.get("dataset")
    if dataset is None:
        raise ValueError(
            f"{checkpoint} has no eval_results.json naming its dataset: pass the dataset (movielens-100k, synthetic "
            "or a log path)."
        )
    cleaning = CleaningConfig(
        min_rating=data_arguments.get("min_rating"),
        min_user_events=data_arguments.get("k_core", 0),
        min_item_events=data_arguments.get("k_core", 0),
    )
    synthetic = {
        key.removeprefix("synthetic_"): value for key, value in data_arguments.items() if key.startswith("synthetic_")
    }
    data = load_named_dataset(
        dataset, data_dir=data_dir or data_arguments.get("data_dir"), cleaning=cleaning, synthetic=synthetic
    )
    encoded, num_unknown = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    has_time = use_timestamps and "timestamps" in encoded[split].column_names
    loader = eval_dataloader(encoded[split], tokenizer.pad_token_id, model.config.max_position_embeddings, batch_size)
    popularity = popularity_baseline(encoded["train"], len(tokenizer), tokenizer.num_special_tokens)
    results = evaluate_next_item(
        model, loader, popularity, split, use_timestamps=has_time, show_progress=show_progress
    )
    return {"dataset": dataset, "unknown_items": num_unknown, split: results}
