"""Train, evaluate and package an interest model with Accelerate.

The same script runs under `python` and under `accelerate launch` (CPU, one GPU, DDP across GPUs or nodes):

    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k
    accelerate launch --num_processes 2 hub_scripts/train.py --dataset synthetic --output_dir runs/synth    # 2 GPUs
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 hub_scripts/train.py ...          # 2 CPU procs
    python hub_scripts/train.py args.json            # or args.yaml: the same fields as a file

It trains on whole sequences with a causal next-item loss on every position (one epoch touches each training event
once), evaluates on the validation split every epoch with the full-ranking protocol beside the popularity baseline,
stops early on `--metric_for_best_model`, keeps the best weights, checkpoints with `accelerator.save_state` (resume with
`--resume_from_checkpoint latest`), and leaves `--output_dir` ready to push: safetensors weights, the code files, the
item vocabulary, `eval_results.json` and a model card (README.md).

Updating a trained model on newer data (`benchmarks/benchmark_drift.py` compares the ways):

    python hub_scripts/train.py --dataset new.parquet --init_from runs/base --targets_from 2024-06-01 --output_dir u
    python hub_scripts/train.py ... --init_from runs/base --lora_r 8 --lora_modules_to_save item_head   # LoRA

`--init_from` starts from a saved model and its item vocabulary (items it lacks become [UNK], counted);
`--targets_from` trains and evaluates only on targets from that time on, older events being read as history; with
`--lora_r` only LoRA adapters (peft) and `--lora_modules_to_save` train. A LoRA run folder holds the adapter
(`adapter_config.json`, `adapter_model.safetensors`: `PeftModel.from_pretrained(base_model, folder)`), the vocabulary,
`eval_results.json` and the card, and `merged/`: the adapter merged into the base (`merge_and_unload`), a plain model
that loads without peft.

Fine-tuning the item text encoder with the model (text tower; `hf_interest.text_tower`):

    python hub_scripts/train.py --item_representation id+text --text_encoder_lora_r 8 --output_dir runs/te_lora

re-encodes the batch's items with a LoRA-adapted encoder in every step and all items after every epoch; the saved
model holds the final text embeddings (it serves without the encoder) and `text_encoder_adapter/` the adapter and
tokenizer that encode new items the same way (`hf_interest.text_tower.load_adapted_text_encoder`).

(With accelerate 1.15, `accelerate launch --cpu --num_processes 2` starts one process: the `--cpu` flag selects the
single-process launcher. The second form above runs two CPU processes with DDP over gloo.)

The click-prediction and interest-forecasting heads train through the same loop:

    python hub_scripts/train.py --task click --output_dir runs/click        # AUC beside logistic regression
    python hub_scripts/train.py --task forecast --output_dir runs/forecast  # next-k category mix

The loop is `hf_interest.training.training_function` (shaped like accelerate's `examples/nlp_example.py`; `train`
runs it once, or once per SISA shard), so a pip-installed package runs the same code with `hf-interest train ...` or
`accelerate launch -m hf_interest_cli train ...`; `python hub_scripts/train.py --help` lists every argument.
"""

from __future__ import annotations

import sys

from hf_interest_cli.commands import train_main as main

if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:  # a user's mistake: one line, no traceback
        sys.exit(f"train.py: error: {error}")
