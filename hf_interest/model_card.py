"""Model cards rendered from a run's `eval_results.json` with `huggingface_hub.ModelCard.from_template`.

The card's YAML metadata carries a `model-index` with the real test metrics (so the Hub shows them), and its body
carries the protocol line and the popularity baseline beside every number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE_NAME = "interest_model_card.md"
CARD_METRICS = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10")
TASK_TYPE = "next-item-recommendation"


def template_path() -> Path:
    """Path of the card template shipped as `hf_interest.model_cards` (the repository's `model_cards/`)."""
    return Path(str(resources.files("hf_interest.model_cards").joinpath(TEMPLATE_NAME)))


def load_eval_results(run_dir: str | Path) -> dict:
    """
    Reads `eval_results.json` from a run folder.

    Args:
        run_dir: folder written by `hub_scripts/train.py`.

    Returns:
        `dict`: the evaluation results.
    """
    path = Path(run_dir) / "eval_results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: point at a run folder written by hub_scripts/train.py.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None


def _format(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_model_card(
    eval_results: Mapping,
    repo_id: str = "ORG/NAME",
    model_name: str | None = None,
    license: str = "apache-2.0",
    base_model: str | None = None,
    example_history: list[str] | None = None,
) -> ModelCard:
    """
    Renders the model card of a trained run.

    Args:
        eval_results (`Mapping`): the content of `eval_results.json` (see `hub_scripts/train.py`).
        repo_id (`str`): the Hub repository the card is for (used in the code example).
        model_name (`str`, *optional*): title; defaults to the repository name.
        license (`str`): licence of the weights (the data's licence may restrict use further: say so in the card).
        base_model (`str`, *optional*): the pretrained text encoder, for models with a text tower.
        example_history (list of `str`, *optional*): raw item ids for the usage example.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    dataset = eval_results.get("dataset", {})
    dataset_name = dataset.get("name", "unknown")
    test = eval_results.get("test", {})
    if not test:
        raise ValueError("eval_results has no 'test' section: a card without test metrics would be misleading.")

    model_index = []
    tables = []
    for variant, block in test.items():
        protocol = block["protocol"]
        rows = []
        metric_names = [m for m in CARD_METRICS if m in block["model"]]
        for name in ("popularity", "model"):
            metrics = block[name]
            label = "popularity (baseline)" if name == "popularity" else model_name or repo_id.split("/")[-1]
            rows.append(
                {
                    "name": label,
                    "users": metrics.get("num_users", ""),
                    "cells": [_format(metrics[m]) for m in metric_names],
                }
            )
        tables.append(
            {"title": f"Test split, seen items {variant.replace('_', ' ')}", "metrics": metric_names, "rows": rows}
        )
        for metric in metric_names:
            model_index.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name="Next-item recommendation",
                    dataset_type=dataset_name,
                    dataset_name=dataset_name,
                    dataset_split="test",
                    metric_type=metric,
                    metric_name=f"{metric.upper()} ({'seen items excluded' if protocol['exclude_seen'] else 'seen items included'}, full ranking)",
                    metric_value=round(float(block["model"][metric]), 6),
                    metric_config="exclude_seen" if protocol["exclude_seen"] else "include_seen",
                )
            )

    first_protocol = next(iter(test.values()))["protocol"]
    protocol_line = eval_results.get("protocol_line") or (
        f"split={first_protocol['split']}, full ranking over {first_protocol.get('num_candidates')} items, "
        f"rank = items scoring strictly higher than the target"
    )
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        model_name=model_name or repo_id.split("/")[-1],
        tags=["hf-interest", "recommender-system", "sequential-recommendation", "interest-evolution", "custom_code"],
        datasets=[dataset["hub_id"]] if dataset.get("hub_id") else None,
        base_model=base_model,
        eval_results=model_index,
    )
    training = eval_results.get("training", {})
    training_description = ", ".join(
        f"{key}: {_format(value)}"
        for key, value in training.items()
        if key in ("epochs_run", "best_epoch", "seconds_per_epoch", "time_to_best_epoch_s", "total_time_s", "seed")
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=model_name or repo_id.split("/")[-1],
        repo_id=repo_id,
        dataset_name=dataset_name,
        dataset_statistics=dataset.get("statistics", {}),
        split_description=dataset.get("split", "leave-one-out by time (last event test, previous validation)"),
        training_description=training_description or "see eval_results.json",
        model_settings=eval_results.get("model", {}),
        protocol_line=protocol_line,
        result_tables=tables,
        example_history=json.dumps(example_history or ["item-1", "item-2"]),
    )


__all__ = ["load_eval_results", "render_model_card", "template_path"]
