"""Every model card, rendered from a run's `eval_results.json` with `huggingface_hub.ModelCard.from_template` and the
templates in `model_cards/` (shipped as `hf_interest.model_cards`): the next-item model (`render_model_card`), the
click and forecasting heads (`head_model_card`), and the section a LoRA update adds (`lora_card_section`).

The next-item card's YAML metadata carries a `model-index` with the real test metrics (so the Hub shows them), and
its body carries the protocol line and the popularity baseline beside every number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .heads import format_head_results

TEMPLATE_NAME = "interest_model_card.md"
HEAD_TEMPLATE_NAME = "head_model_card.md"
LORA_TEMPLATE_NAME = "lora_card_section.md"
# The task name in eval_results.json -> the head class a head checkpoint holds.
HEAD_CLASSES = {
    "click-prediction": "InterestForClickPrediction",
    "interest-forecasting": "InterestForInterestForecasting",
}
# The Auto class each head loads with (registered in hf_interest/__init__.py); a head checkpoint's auto_map gets it
# instead of AutoModelForCausalLM.
HEAD_AUTO_CLASSES = {
    "InterestForClickPrediction": "AutoModelForSequenceClassification",
    "InterestForInterestForecasting": "AutoModelForTokenClassification",
}
CARD_METRICS = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10")
TASK_TYPE = "next-item-recommendation"


def template_path(name: str = TEMPLATE_NAME) -> Path:
    """Path of a card template shipped as `hf_interest.model_cards` (the repository's `model_cards/`)."""
    return Path(str(resources.files("hf_interest.model_cards").joinpath(name)))


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
        raise FileNotFoundError(
            f"{path} does not exist: point at a run folder written by training (hub_scripts/train.py or hf-interest "
            "train)."
        )
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
    space_id: str | None = None,
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
        space_id (`str`, *optional*): the Hugging Face Space that demonstrates the model (`hf-interest space`).

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
    for block in test.values():
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
            {
                "title": "Test split, seen items " + ("excluded" if protocol["exclude_seen"] else "included"),
                "metrics": metric_names,
                "rows": rows,
            }
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
    settings = eval_results.get("model", {})
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=model_name or repo_id.split("/")[-1],
        repo_id=repo_id,
        dataset_name=dataset_name,
        dataset_statistics=dataset.get("statistics", {}),
        split_description=dataset.get("split", "leave-one-out by time (last event test, previous validation)"),
        training_description=_training_prose(training),
        privacy_description=privacy_prose(eval_results.get("differential_privacy")),
        architecture_description=_architecture_prose(settings),
        uses_time_gaps=bool(settings.get("use_time_gaps")),
        example_timestamps=json.dumps([1_700_000_000 + 3_600 * i for i in range(len(example_history or [1, 2]))]),
        model_settings=eval_results.get("model", {}),
        protocol_line=protocol_line,
        result_tables=tables,
        example_history=json.dumps(example_history or ["item-1", "item-2"]),
        space_id=space_id,
    )


def privacy_prose(privacy: Mapping | None) -> str:
    """The card's sentence on a user-level differentially private run (`""` for a run without DP)."""
    if not privacy:
        return ""
    return (
        f"**Differential privacy (user level):** trained with DP-SGD at epsilon {privacy['epsilon']:.2f}, delta "
        f"{privacy['delta']:.3g} ({privacy['accountant'].upper()} accountant): each of the {privacy['users']:,} "
        f"training users was one training row, users were Poisson-sampled at rate {privacy['sample_rate']:.4f} for "
        f"{privacy['steps']:,} steps, each user's gradient was clipped to {privacy['max_grad_norm']:g} and Gaussian "
        f"noise of multiplier {privacy['noise_multiplier']:.3f} added. The weights kept are the last epoch's. Not "
        f"covered: {'; '.join(privacy.get('not_covered', []))}."
    )


def _training_prose(training: Mapping) -> str:
    """The training line of the card, as a sentence."""
    if not training.get("epochs_run"):
        return "see eval_results.json"
    metric = training.get("metric_for_best_model", "ndcg@10")
    best = training.get(f"best_validation_{metric}")
    text = f"{training['epochs_run']} epochs; early stopping kept epoch {training.get('best_epoch')}"
    if isinstance(best, float):
        text += f" (best validation {metric.upper()}, seen items excluded: {best:.4f})"
    if training.get("ema_decay"):
        text += (
            f". The published weights are the exponential moving average of the weights (decay {training['ema_decay']},"
            f" about the last {round(1 / (1 - training['ema_decay']))} optimizer steps): that average is what was "
            "validated and tested"
        )
    timing = [f"seed {training['seed']}"] if "seed" in training else []
    if training.get("time_to_best_epoch_s") is not None:
        timing.append(f"{training['time_to_best_epoch_s']:.0f} s of training to the kept epoch")
    if training.get("total_time_s") is not None:
        timing.append(f"{training['total_time_s']:.0f} s for the whole run")
    return text + (". " + ", ".join(timing).capitalize() if timing else "") + "."


def _architecture_prose(settings: Mapping) -> str:
    """What the model's parts are, in a sentence, from the settings `eval_results.json` records."""
    if not settings:
        return ""
    parts = [f"A causal transformer of {settings.get('num_hidden_layers')} layers over the item sequence"]
    if settings.get("use_time_gaps"):
        parts.append("with an embedding of the time gap between consecutive events (pass timestamps)")
    long, short = settings.get("long_term_interest"), settings.get("short_term_interest")
    if long and short:
        window = settings.get("short_term_window")
        parts.append(
            f"whose state is mixed, by a gate learned per user and step, with a long-term interest (attention over the "
            f"whole history) and a short-term interest (the last {window} events)"
        )
    elif long:
        parts.append("plus a long-term interest (attention over the whole history)")
    elif short:
        parts.append(f"plus a short-term interest (the last {settings.get('short_term_window')} events)")
    return ", ".join(parts) + "."


def head_model_card(eval_results: Mapping, class_name: str, repo_id: str = "PATH") -> ModelCard:
    """
    The card of a click-prediction or forecasting head: what it predicts, how to load it, its measured test results
    beside its baseline.

    Args:
        eval_results (`Mapping`): the run's `eval_results.json`.
        class_name (`str`): `"InterestForClickPrediction"` or `"InterestForInterestForecasting"`.
        repo_id (`str`): the repository (or folder) named in the loading example.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    task = eval_results["task"]
    task_flag = "forecast" if task == "interest-forecasting" else "click"
    card_data = ModelCardData(library_name="transformers", tags=["recommender-systems", "hf-interest", task])
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path(HEAD_TEMPLATE_NAME)),
        class_name=class_name,
        task=task,
        task_flag=task_flag,
        auto_class=HEAD_AUTO_CLASSES[class_name],
        repo_id=repo_id,
        dataset_name=eval_results["dataset"]["name"],
        split=eval_results["dataset"]["split"],
        results_table=format_head_results(task_flag, eval_results["test"]),
    )


def lora_card_section(lora: Mapping, adapter: bool) -> str:
    """
    The card section of a LoRA update: the adapter folder (`adapter=True`: what it holds, how to load it over its
    base) or the merged model (`adapter=False`).

    Args:
        lora (`Mapping`): the `lora` block of `eval_results.json`.
        adapter (`bool`): the section for the adapter folder rather than for `merged/`.

    Returns:
        `str`: markdown to append to the card's text.
    """
    settings = (
        f"LoRA (peft) with r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']} on "
        f"{', '.join(lora['target_modules'])}"
        + (
            f"; trained in full and saved with it: {', '.join(lora['modules_to_save'])}"
            if lora["modules_to_save"]
            else ""
        )
        + f". Trainable parameters: {lora['trainable_parameters']:,} of {lora['total_parameters']:,}; adapter file: "
        f"{lora['adapter_size_bytes']:,} bytes. Base model: `{lora['base_model']}`."
    )
    template = jinja2.Template(template_path(LORA_TEMPLATE_NAME).read_text(encoding="utf-8"))
    return template.render(adapter=adapter, settings=settings, base_model=lora["base_model"])


__all__ = [
    "HEAD_AUTO_CLASSES",
    "HEAD_CLASSES",
    "head_model_card",
    "load_eval_results",
    "lora_card_section",
    "render_model_card",
    "template_path",
]
