"""LoRA and model updates through the real training script (`hub_scripts/train.py`, called in-process on tiny
synthetic data): `--init_from`, `--lora_*`, `--targets_from`; the adapter round trip (save, load, merge) and what a
LoRA run leaves behind."""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from tiny import history_without_measurements, tiny_config, tiny_train_args

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import DataCollatorForInterest, load_named_dataset
from hf_interest.training import TargetsFromCollator, TrainArguments, filter_eval_targets
from hf_interest.training.adapters import add_lora
from hf_interest_cli.commands import train_main

LORA = ("--lora_r", "4", "--lora_alpha", "8", "--lora_modules_to_save", "item_head", "--learning_rate", "0.01")
ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"query", "key", "value", "attention_output", "ffn_in", "ffn_out"}


def _train(*extra: str) -> tuple[dict, str]:
    """One tiny run of train.py's `main` in this process (no interpreter start-up: about a second)."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        results = train_main(tiny_train_args(40, 16, 2, *extra))
    return results, log.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    base, lora, resumed = root / "base", root / "lora", root / "resumed"
    _train("--output_dir", str(base))
    results, log = _train("--init_from", str(base), *LORA, "--output_dir", str(lora))
    _train("--init_from", str(base), *LORA, "--output_dir", str(resumed), "--stop_after_epochs", "1")
    resumed_results, resumed_log = _train(
        "--init_from", str(base), *LORA, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"
    )
    return {"base": base, "lora": lora, "resumed": resumed, "results": results, "log": log,
            "resumed_results": resumed_results, "resumed_log": resumed_log}  # fmt: skip


def _batch(folder: Path) -> dict:
    tokenizer = ItemTokenizer.from_pretrained(folder)
    histories = [tokenizer.items[3:9], tokenizer.items[10:13], tokenizer.items[20:21]]
    times = [[1_700_000_000 + 3600 * k for k in range(len(h))] for h in histories]
    return dict(tokenizer(histories, timestamps=times, return_tensors="pt"))


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_lora_run_leaves_adapter_merged_model_and_results(runs):
    folder, results = runs["lora"], runs["results"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "item_vocab.json", "tokenizer_config.json",
                 "eval_results.json", "README.md"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert not (folder / "model.safetensors").exists()  # the run folder is the adapter, not a full copy
    for name in ("config.json", "model.safetensors", "modeling_interest.py", "item_vocab.json", "eval_results.json"):
        assert (folder / "merged" / name).is_file(), name
    # the best adapter is what checkpoints/best keeps
    assert (folder / "checkpoints" / "best" / "adapter_model.safetensors").is_file()

    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert set(adapter_config["target_modules"]) == TARGETS and adapter_config["modules_to_save"] == ["item_head"]
    assert adapter_config["r"] == 4 and adapter_config["base_model_name_or_path"] == str(runs["base"])

    lora = json.loads((folder / "eval_results.json").read_text())["lora"]
    assert lora == results["lora"]
    assert lora["adapter_size_bytes"] == (folder / "adapter_model.safetensors").stat().st_size
    peft_model = PeftModel.from_pretrained(InterestForNextItemPrediction.from_pretrained(runs["base"]), folder)
    base_total = sum(p.numel() for p in InterestForNextItemPrediction.from_pretrained(runs["base"]).parameters())
    adapter_numel = sum(t.numel() for t in load_file(folder / "adapter_model.safetensors").values())
    assert lora["trainable_parameters"] == adapter_numel == results["training"]["trainable_parameters"]
    assert lora["total_parameters"] == sum(p.numel() for p in peft_model.parameters()) == base_total + adapter_numel
    assert lora["trainable_parameters"] < lora["total_parameters"] / 2
    assert f"Trainable parameters: {adapter_numel:,} of {lora['total_parameters']:,}" in runs["log"]
    # the starting model is evaluated first ("epoch 0") and stays the best unless an epoch beats it
    history = results["training"]["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2] and "epoch 0 (the --init_from model" in runs["log"]
    best = max(history, key=lambda h: h["ndcg@10"])
    assert results["training"]["best_epoch"] == best["epoch"] and best["epoch"] > 0  # this adapter did improve
    # metrics are reported beside the popularity baseline, as for a full run
    block = results["test"]["exclude_seen"]
    assert block["model"]["num_users"] == block["popularity"]["num_users"] == 40
    card = (folder / "README.md").read_text()
    assert "## LoRA adapter" in card and "PeftModel.from_pretrained" in card and "popularity (baseline)" in card


def test_adapter_round_trip_gives_identical_outputs(runs):
    base_dir, folder = runs["base"], runs["lora"]
    batch = _batch(base_dir)
    base_logits = _logits(InterestForNextItemPrediction.from_pretrained(base_dir), batch)
    adapted = _logits(
        PeftModel.from_pretrained(InterestForNextItemPrediction.from_pretrained(base_dir), folder), batch
    )
    merged_saved = _logits(InterestForNextItemPrediction.from_pretrained(folder / "merged"), batch)
    in_memory = PeftModel.from_pretrained(InterestForNextItemPrediction.from_pretrained(base_dir), folder)
    merged_now = _logits(in_memory.merge_and_unload(), batch)
    assert not torch.allclose(adapted, base_logits, atol=1e-3)  # the adapter changes the model
    # merging adds B @ A into the weights: the same function up to float32 rounding
    torch.testing.assert_close(merged_saved, adapted, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged_now, merged_saved, rtol=0, atol=0)  # the saved merge is exactly merge_and_unload
    assert (
        ItemTokenizer.from_pretrained(folder / "merged").get_vocab()
        == ItemTokenizer.from_pretrained(base_dir).get_vocab()
    )


def test_only_adapter_and_saved_head_train(runs):
    base = load_file(runs["base"] / "model.safetensors")
    best_epoch = runs["results"]["training"]["best_epoch"]  # the checkpoint holds the full training state
    trained = load_file(runs["lora"] / "checkpoints" / f"epoch_{best_epoch}" / "model.safetensors")
    prefix = "base_model.model."
    # every weight of the base model, as it stood after training (the head's original stays tied to the embeddings)
    frozen = {
        k[len(prefix) :].replace(".base_layer", "").replace(".original_module", ""): v
        for k, v in trained.items()
        if "lora_" not in k and "modules_to_save" not in k
    }
    assert set(base) - {"item_head.weight"} <= set(frozen) <= set(base)
    for name, value in frozen.items():
        assert torch.equal(value, base[name]), f"{name} is frozen but changed"
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert len(lora_b) == len(TARGETS) and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: trained
    # --lora_modules_to_save item_head trains a copy of the head; the tied original stays the item embeddings
    head = trained[f"{prefix}item_head.modules_to_save.default.weight"]
    assert not torch.allclose(head, base["model.item_embeddings.weight"])
    assert not torch.equal(trained[f"{prefix}item_head.modules_to_save.default.bias"], base["item_head.bias"])
    merged = load_file(runs["lora"] / "merged" / "model.safetensors")
    assert torch.equal(merged["item_head.weight"], head)
    assert torch.equal(merged["model.item_embeddings.weight"], base["model.item_embeddings.weight"])
    assert torch.equal(merged["model.position_embeddings.weight"], base["model.position_embeddings.weight"])
    assert not torch.equal(merged["model.layers.0.ffn_in.weight"], base["model.layers.0.ffn_in.weight"])


def test_resume_with_lora_gives_the_same_result(runs):
    assert "Resumed from" in runs["resumed_log"]
    full, resumed = runs["results"], runs["resumed_results"]
    assert resumed["test"] == full["test"] and resumed["validation"] == full["validation"]
    assert history_without_measurements(resumed) == history_without_measurements(full)
    adapter = "adapter_model.safetensors"
    assert (runs["resumed"] / adapter).read_bytes() == (runs["lora"] / adapter).read_bytes()


def test_update_on_a_later_period_with_new_items(runs, tmp_path):
    # New data from a wider catalogue: items the base vocabulary lacks become [UNK] and are counted; only targets at
    # or after the cut-off are trained on and evaluated.
    data = load_named_dataset("synthetic", synthetic={"num_users": 40, "num_items": 40, "seed": 0})
    cutoff = int(np.median(np.asarray(data.sequences["test"]["target_timestamp"])))
    results, log = _train(
        "--init_from", str(runs["base"]), "--synthetic_num_items", "40", "--targets_from", str(cutoff),
        "--output_dir", str(tmp_path / "update"),
    )  # fmt: skip
    training = results["training"]
    assert training["unknown_items"] > 0 and "mapped to [UNK]" in log
    assert results["model"]["num_items"] == 33 and results["model"]["trainable_parameters"] > 0
    removed = training["eval_rows_removed"]["test"]
    assert removed["targets_before_targets_from"] > 0 and removed["unknown_targets"] > 0
    rows = data.sequences["test"].num_rows
    assert results["test"]["exclude_seen"]["model"]["num_users"] + sum(removed.values()) == rows
    assert (tmp_path / "update" / "model.safetensors").is_file() and not (tmp_path / "update" / "merged").exists()


def test_targets_from_collator_ignores_older_labels():
    collator = DataCollatorForInterest(max_length=3, mode="train", return_time_gaps=False)
    features = [
        {"input_ids": [5, 6, 7, 8, 9], "timestamps": [10, 20, 30, 40, 50]},  # truncated to its newest 4 events
        {"input_ids": [4, 5], "timestamps": [35, 45]},
    ]
    plain = collator(features)["labels"]
    masked = TargetsFromCollator(collator, targets_from=40)(features)["labels"]
    assert plain.tolist() == [[7, 8, 9], [-100, -100, 5]]
    assert masked.tolist() == [[-100, 8, 9], [-100, -100, 5]]  # the label of the event at 30 is before 40


def test_filter_eval_targets_counts_what_it_removes():
    from datasets import Dataset

    rows = Dataset.from_dict({"labels": [5, 1, 6, 1, 7], "target_timestamp": [10, 20, 30, 40, 50]})
    kept, counts = filter_eval_targets(rows, unk_token_id=1, targets_from=30)
    assert kept["labels"] == [6, 7] and counts == {"unknown_targets": 2, "targets_before_targets_from": 1}
    kept, counts = filter_eval_targets(rows, unk_token_id=1)
    assert kept["labels"] == [5, 6, 7] and counts == {"unknown_targets": 2, "targets_before_targets_from": 0}


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--lora_r", "4"), "pass --init_from"),
        (("--lora_modules_to_save", "item_head"), "pass --lora_r"),
        (("--lora_r", "-1"), "--lora_r must be"),
        (("--targets_from", "yesterday"), "Cannot read 'yesterday' as a time"),
        (("--init_from", "/nonexistent/run"), "no config.json"),
    ],
)
def test_bad_update_arguments_fail_before_loading_data(extra, message, tmp_path):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        _train(*extra, "--output_dir", str(tmp_path / "run"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--lora_target_modules", "query,attention"), r"not Linear or Embedding modules"),
        (("--lora_modules_to_save", "query"), "in both"),
        (("--lora_modules_to_save", "head"), "no module named"),
    ],
)
def test_bad_lora_modules_are_named(runs, extra, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        _train("--init_from", str(runs["base"]), "--lora_r", "2", *extra, "--output_dir", str(tmp_path / "r"))


def test_lora_on_the_head_is_refused_with_the_sampled_softmax():
    config = tiny_config(hidden_size=8, intermediate_size=16, max_position_embeddings=200, loss_type="sampled_softmax",
                         num_negative_samples=4)  # fmt: skip
    args = TrainArguments(lora_r=2, lora_target_modules="query,item_head")
    with pytest.raises(ValueError, match="sampled-softmax"):
        add_lora(InterestForNextItemPrediction(config), args)
    residual = tiny_config(hidden_size=8, intermediate_size=16, item_output_residual=True)  # read as a summed table
    with pytest.raises(ValueError, match="item_output_residual"):
        add_lora(InterestForNextItemPrediction(residual), args)
    args = TrainArguments(lora_r=2, lora_modules_to_save="item_head")  # the supported way
    model = add_lora(InterestForNextItemPrediction(config), args)
    assert (
        model.base_model.model.item_head.weight is model.base_model.model.item_head.modules_to_save["default"].weight
    )


def test_init_from_an_adapter_folder_points_to_merged(runs, tmp_path):
    with pytest.raises(ValueError, match="merged/"):
        _train("--init_from", str(runs["lora"]), "--output_dir", str(tmp_path / "r"))
    with pytest.raises(ValueError, match="--max_length 24 or less"):
        _train("--init_from", str(runs["base"]), "--max_length", "50", "--output_dir", str(tmp_path / "r"))


@pytest.mark.slow
def test_lora_under_two_cpu_processes(runs, tmp_path):
    # DDP over gloo: the adapter trains, and the best adapter (no parameter requiring a gradient once loaded) is
    # evaluated without a DDP wrapper, every user once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    launcher = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", port]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, *launcher, str(ROOT / "hub_scripts" / "train.py"), *tiny_train_args(40, 16, 2),
               "--init_from", str(runs["base"]), *LORA, "--output_dir", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert results["training"]["num_processes"] == 2
    assert results["test"]["exclude_seen"]["model"]["num_users"] == 40
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "merged" / "model.safetensors").is_file()
