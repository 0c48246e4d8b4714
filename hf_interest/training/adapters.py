"""Adapters and starting points of a training run: `--init_from` (a saved model and its vocabulary), LoRA on the
sequence model (peft), and LoRA on the item text encoder trained jointly (`hf_interest.text_tower`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..modeling_interest import InterestForNextItemPrediction
from ..text_tower import TEXT_ENCODER_ADAPTER_FOLDER
from ..tokenization_interest import ItemTokenizer
from .arguments import TrainArguments, lora_targets, module_names


def load_init_model(folder: str, max_length: int) -> tuple[InterestForNextItemPrediction, ItemTokenizer]:
    """
    Loads the model and item vocabulary a run starts from (`--init_from`).

    Args:
        folder (`str`): a `save_pretrained` folder holding both.
        max_length (`int`): events the run reads; at most the model's `max_position_embeddings`.

    Returns:
        `(model, tokenizer)`.
    """
    tokenizer = ItemTokenizer.from_pretrained(folder)
    model = InterestForNextItemPrediction.from_pretrained(folder)
    model.check_vocabulary(tokenizer)
    if max_length > model.config.max_position_embeddings:
        raise ValueError(
            f"--max_length {max_length} is more than the {model.config.max_position_embeddings} events the model in "
            f"{folder} reads (max_position_embeddings): pass --max_length {model.config.max_position_embeddings} or "
            "less."
        )
    return model, tokenizer


def add_lora(model: InterestForNextItemPrediction, train_args: TrainArguments):
    """
    Wraps the model with `peft.get_peft_model`: LoRA on `--lora_target_modules`, `--lora_modules_to_save` trained in
    full; every other weight is frozen.

    The model calls every target module (`self.item_head(hidden)`, ...), so the adapters act in the forward pass and
    the full-softmax loss. The sampled-softmax loss reads `item_head.weight` directly, which a LoRA layer on
    `item_head` would bypass: that pairing is refused (`--lora_modules_to_save item_head` works: the weight read is
    the trained copy's).

    Args:
        model (`InterestForNextItemPrediction`): the base model.
        train_args (`TrainArguments`): the LoRA settings.

    Returns:
        `peft.PeftModel`.
    """
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(train_args.lora_target_modules, model.config.block_type)
    to_save = module_names(train_args.lora_modules_to_save)
    adaptable = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
        }
    )
    named = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    if unknown := [name for name in targets if name not in adaptable]:
        raise ValueError(
            f"--lora_target_modules: {unknown} are not Linear or Embedding modules of the model; choose from "
            f"{adaptable}."
        )
    if unknown := [name for name in to_save if name not in named]:
        raise ValueError(
            f"--lora_modules_to_save: the model has no module named {unknown}; e.g. item_head, item_embeddings."
        )
    if both := sorted(set(targets) & set(to_save)):
        raise ValueError(
            f"{both} are in both --lora_target_modules and --lora_modules_to_save; a module is one or the other."
        )
    if "item_head" in targets and model.config.loss_type == "sampled_softmax":
        raise ValueError(
            "LoRA on item_head is not applied by the sampled-softmax loss (it reads item_head.weight directly): drop "
            "item_head from --lora_target_modules, put it in --lora_modules_to_save, or use --loss_type full_softmax."
        )
    if "item_head" in targets and getattr(model.config, "item_output_residual", False):
        raise ValueError(
            "LoRA on item_head is not applied with item_output_residual (many states are scored with the sum of "
            "item_head.weight and the residual): drop item_head from --lora_target_modules, or put it in "
            "--lora_modules_to_save."
        )
    if "item_head" in targets and getattr(model.config, "item_score_temperature", 0.0):
        raise ValueError(
            "LoRA on item_head is not applied with cosine scores (item_score_temperature > 0 normalises the rows of "
            "item_head.weight and reads them directly): drop item_head from --lora_target_modules, or put it in "
            "--lora_modules_to_save."
        )
    config = LoraConfig(
        r=train_args.lora_r,
        lora_alpha=train_args.lora_alpha,
        lora_dropout=train_args.lora_dropout,
        target_modules=targets,
        modules_to_save=to_save or None,
    )
    return get_peft_model(model, config)


def add_text_encoder_lora_training(model, data, tokenizer: ItemTokenizer, train_args: TrainArguments):
    """
    The joint module for `--text_encoder_lora_r`: the model's text encoder (`config.text_encoder`) with LoRA adapters,
    re-encoding the batch's items in each training step (`hf_interest.text_tower.JointTextEncoderTraining`).

    Args:
        model: the model (or its peft wrapper), with a text tower whose embeddings came from `config.text_encoder`.
        data (`BehaviorData`): for the item texts.
        tokenizer (`ItemTokenizer`): the item vocabulary.
        train_args (`TrainArguments`): the text encoder LoRA settings.

    Returns:
        `JointTextEncoderTraining`.
    """
    from transformers import AutoModel, AutoTokenizer

    from ..text_encoding import item_texts, resolve_text_encoder
    from ..text_tower import JointTextEncoderTraining, add_text_encoder_lora, tokenize_item_texts

    config = model.config
    if not getattr(config, "uses_text", False):
        raise ValueError(
            "--text_encoder_lora_r fine-tunes the item text encoder: it needs --item_representation text or id+text."
        )
    path = resolve_text_encoder(config.text_encoder)
    encoder = add_text_encoder_lora(
        AutoModel.from_pretrained(path),
        r=train_args.text_encoder_lora_r,
        alpha=train_args.text_encoder_lora_alpha,
        dropout=train_args.text_encoder_lora_dropout,
        target_modules=module_names(train_args.text_encoder_lora_target_modules),
    )
    encoder_tokenizer = AutoTokenizer.from_pretrained(path)
    joint = JointTextEncoderTraining(
        model,
        encoder,
        tokenize_item_texts(item_texts(data.items, tokenizer), encoder_tokenizer),
        max_items_per_step=train_args.text_encoder_max_items_per_step,
    )
    joint.encoder_tokenizer = encoder_tokenizer  # saved beside the adapter
    return joint


def save_text_encoder_adapter(accelerator, joint, folder: Path) -> None:
    """Saves the text encoder's adapter and tokenizer in `folder/text_encoder_adapter` (main process)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        target = folder / TEXT_ENCODER_ADAPTER_FOLDER
        shutil.rmtree(target, ignore_errors=True)
        joint.save_adapter(target, joint.encoder_tokenizer)
    accelerator.wait_for_everyone()
