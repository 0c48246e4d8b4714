"""End to end through the real scripts on tiny synthetic data: train, stop, resume to the same result, evaluate."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from tiny import history_without_measurements, tiny_train_args

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_train_args(48, 16, 4, "--per_device_eval_batch_size", "32", "--early_stopping_patience", "10")


def _run(script: str, *args: str, launcher=(), env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **(env or {})}
    run = subprocess.run(
        [sys.executable, *launcher, str(ROOT / "hub_scripts" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    full, resumed = base / "full", base / "resumed"
    full_run = _run("train.py", *TINY, "--output_dir", str(full))
    stopped = _run("train.py", *TINY, "--output_dir", str(resumed), "--stop_after_epochs", "2")
    resumed_run = _run("train.py", *TINY, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    return {"full": full, "resumed": resumed, "full_log": full_run.stdout, "stopped_log": stopped.stdout,
            "resumed_log": resumed_run.stdout, "full_stderr": full_run.stderr}  # fmt: skip


def test_run_folder_is_push_ready(runs):
    folder = runs["full"]
    for name in ("config.json", "model.safetensors", "modeling_interest.py", "configuration_interest.py",
                 "checkpoint_interest.py", "item_vocab.json", "tokenizer_config.json", "tokenization_interest.py", "eval_results.json",
                 "README.md"):  # fmt: skip
        assert (folder / name).is_file(), name
    results = json.loads((folder / "eval_results.json").read_text())
    for variant, exclude in (("exclude_seen", True), ("include_seen", False)):
        block = results["test"][variant]
        assert block["protocol"]["split"] == "test" and block["protocol"]["exclude_seen"] is exclude
        assert block["protocol"]["ranking"] == "full ranking"
        assert block["model"]["num_users"] == block["popularity"]["num_users"] == 48
        assert 0.0 <= block["model"]["ndcg@10"] <= block["model"]["hr@10"] <= 1.0
    assert results["training"]["epochs_run"] == 4
    assert results["dataset"]["statistics"]["users"] == 48
    # the printed table states the protocol and has the baseline beside the model
    assert "Protocol: split=test | full ranking" in runs["full_log"]
    assert "popularity (baseline)" in runs["full_log"]
    # the model card parses and its model-index carries the real test numbers
    card = ModelCard.load(folder / "README.md")
    evals = {(r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results}
    assert evals[("ndcg@10", "exclude_seen")] == round(results["test"]["exclude_seen"]["model"]["ndcg@10"], 6)
    assert "popularity (baseline)" in card.text


def test_tied_weights_warning_is_silenced_and_nothing_else(runs):
    import logging

    from hf_interest.training.checkpointing import TiedWeightsSaveFilter

    # accelerate warned at every checkpoint that the (deliberately tied) head weight was not written separately
    assert "Removed shared tensor" not in runs["full_stderr"] + runs["full_log"]
    assert (runs["full"] / "checkpoints").is_dir()  # checkpoints were written, so the warning had its chance

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("accelerate.utils.other", logging.WARNING, __file__, 1, message, None, None)

    keep = TiedWeightsSaveFilter().filter
    assert not keep(record("[RANK 0] Removed shared tensor {'item_head.weight'} while saving. This should be OK"))
    assert keep(record("Removed shared tensor {'model.other.weight'} while saving. This should be OK"))
    assert keep(record("some other accelerate warning"))


def test_resume_gives_the_same_final_metrics(runs):
    assert "Stopping after epoch 2" in runs["stopped_log"]
    assert "Resumed from" in runs["resumed_log"]
    full = json.loads((runs["full"] / "eval_results.json").read_text())
    resumed = json.loads((runs["resumed"] / "eval_results.json").read_text())
    assert resumed["test"] == full["test"]
    assert resumed["validation"] == full["validation"]
    assert history_without_measurements(resumed) == history_without_measurements(full)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_evaluate_script_reproduces_the_stored_metrics(runs, tmp_path, split):
    # the validation block is the best epoch's own validation, kept from the loop (no second pass at the end)
    out = tmp_path / "eval.json"
    _run("evaluate.py", str(runs["full"]), "--split", split, "--output_json", str(out))
    evaluated = json.loads(out.read_text())[split]
    stored = json.loads((runs["full"] / "eval_results.json").read_text())[split]
    for variant in ("exclude_seen", "include_seen"):
        for metric in ("hr@10", "ndcg@10", "mrr@10"):
            assert evaluated[variant]["model"][metric] == pytest.approx(stored[variant]["model"][metric], abs=1e-6)
            assert evaluated[variant]["popularity"][metric] == stored[variant]["popularity"][metric]


def test_two_cpu_processes_under_accelerate_launch(tmp_path):
    # `accelerate launch --cpu` uses its single-process launcher; DDP on CPU is the multi-process launcher with the
    # CPU forced through the environment (gloo backend).
    with socket.socket() as probe:  # a free port, so a leftover rendezvous on the default port cannot interfere
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    launcher = ("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", port)
    _run("train.py", *TINY, "--num_train_epochs", "2", "--output_dir", str(tmp_path), launcher=launcher,
         env={"ACCELERATE_USE_CPU": "1"})  # fmt: skip
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["training"]["num_processes"] == 2
    # every user evaluated exactly once: gather_for_metrics drops the duplicates of an uneven last batch
    assert results["test"]["exclude_seen"]["model"]["num_users"] == 48
    assert (tmp_path / "model.safetensors").is_file()


def test_ema_is_on_by_default_and_changes_only_what_is_validated(runs, tmp_path):
    """The default run (the fixture's, resumed exactly by the test above) validates and publishes the average of the
    weights; with --ema_decay 0 the same training validates the weights themselves."""
    plain = tmp_path / "plain"
    _run("train.py", *TINY, "--ema_decay", "0", "--output_dir", str(plain))
    averaged = json.loads((runs["full"] / "eval_results.json").read_text())["training"]
    weights = json.loads((plain / "eval_results.json").read_text())["training"]
    assert averaged["ema_decay"] == 0.99 and weights["ema_decay"] == 0.0
    epochs = min(len(averaged["history"]), len(weights["history"]))
    assert [h["train_loss"] for h in averaged["history"][:epochs]] == [
        h["train_loss"] for h in weights["history"][:epochs]
    ]
    assert [h["ndcg@10"] for h in averaged["history"][:epochs]] != [h["ndcg@10"] for h in weights["history"][:epochs]]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--ema_decay", "1.0"], "must be in"),
        (["--ema_decay", "0.9", "--lora_r", "2"], "does not combine with --lora_r"),
        (["--learning_rat", "0.1"], "--learning_rat is not an option. Did you mean '--learning_rate'"),
        (["--validation_users", "0"], "--validation_users must be at least 1"),
        (["--task", "click", "--validation_users", "10"], "--validation_users apply to next-item"),
        (["--task", "click", "--item_table_init", "categories"], "--item_table_init categories apply to next-item"),
        (["--item_representation", "text", "--item_table_init", "categories"], "--item_representation text has none"),
    ],
)
def test_ema_arguments_are_checked_before_any_data_is_read(extra, message):
    run = subprocess.run(
        [sys.executable, str(ROOT / "hub_scripts" / "train.py"), *TINY, "--output_dir", "unused", *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert run.returncode != 0
    assert message in run.stderr


def test_max_steps_stops_mid_epoch_and_still_tests_and_saves(tmp_path):
    """48 users in windows of 8 make more than 2 steps an epoch: --max_steps 2 stops inside the first epoch, then
    validates, tests and writes the run folder as usual; the history says how many events were read."""
    folder = tmp_path / "two_steps"
    run = _run("train.py", *tiny_train_args(48, 8, 5), "--output_dir", str(folder), "--max_steps", "2")
    results = json.loads((folder / "eval_results.json").read_text())
    training = results["training"]
    assert training["optimizer_steps"] == 2 and training["epochs_run"] == 1
    epoch = training["history"][0]
    assert 0 < epoch["train_events"] <= 2 * 8 * 24  # two batches of at most 8 windows of at most 24 events
    assert epoch["validation_seconds"] > 0 and training["test_evaluation_seconds"] > 0
    assert "Stopping after 2 optimizer steps as asked (--max_steps)." in run.stdout
    assert (folder / "model.safetensors").is_file()
    assert results["test"]["exclude_seen"]["model"]["num_users"] == 48


def test_auto_loss_is_stated_in_the_log_and_recorded(runs):
    """30 synthetic items are far under the threshold: auto picks the full softmax, says so and records it."""
    assert "loss: full_softmax (--loss_type auto:" in runs["full_log"]
    config = json.loads((runs["full"] / "config.json").read_text())
    assert config["loss_type"] == "full_softmax"
    # and so dense item-table updates: the full softmax reads every row in every step
    assert "item table updates: dense (--item_table_updates auto: the full softmax" in runs["full_log"]
    training = json.loads((runs["full"] / "eval_results.json").read_text())["training"]
    assert training["item_table_updates"] == "dense"


def test_item_bias_start_is_stated_and_zero_keeps_the_old_start(runs, tmp_path):
    """The default starts the output bias at log popularity and says so; --item_bias_init zero trains as before."""
    assert "item bias: starts at log(1 + training count), centred (--item_bias_init popularity)" in runs["full_log"]
    zero = tmp_path / "zero"
    run = _run("train.py", *TINY, "--item_bias_init", "zero", "--output_dir", str(zero))  # the same schedule
    assert "item bias:" not in run.stdout
    first = json.loads((runs["full"] / "eval_results.json").read_text())["training"]["history"][0]["train_loss"]
    assert json.loads((zero / "eval_results.json").read_text())["training"]["history"][0]["train_loss"] != first


def test_item_table_starts_at_categories_where_items_have_few_events(runs, tmp_path):
    """auto reads the log: the tiny world's items have about 100 training events each, so they start at random as
    before and the run says why; --item_table_init categories starts them at their category vectors (a different first
    epoch), and a catalogue with a few events per item gets that start by default."""
    from hf_interest.training.tasks import CATEGORY_START_EVENTS_PER_ITEM

    line = next(line for line in runs["full_log"].splitlines() if line.startswith("item table: random start"))
    per_item = float(line.split("the default: ")[1].split(" training events")[0])
    assert per_item >= CATEGORY_START_EVENTS_PER_ITEM
    categories = tmp_path / "categories"
    run = _run("train.py", *TINY, "--item_table_init", "categories", "--output_dir", str(categories))  # same schedule
    assert "item table: starts at its items' category vectors (16 categories; 0 items without" in run.stdout
    first = json.loads((runs["full"] / "eval_results.json").read_text())["training"]["history"][0]["train_loss"]
    assert json.loads((categories / "eval_results.json").read_text())["training"]["history"][0]["train_loss"] != first
    many = _run("train.py", *tiny_train_args(48, 16, 1), "--synthetic_num_items", "3000", "--max_steps", "1",
                "--output_dir", str(tmp_path / "many"))  # fmt: skip
    line = next(line for line in many.stdout.splitlines() if line.startswith("item table: starts at"))
    assert float(line.split("; the default: ")[1].split(" training events")[0]) < CATEGORY_START_EVENTS_PER_ITEM


def test_max_steps_below_one_is_refused():
    run = subprocess.run(
        [sys.executable, str(ROOT / "hub_scripts" / "train.py"), *TINY, "--output_dir", "unused", "--max_steps", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert run.returncode != 0 and "--max_steps must be at least 1" in run.stderr


@pytest.mark.parametrize("tied", ["true", "false"])
def test_lazy_item_table_updates_resume_to_the_same_result(tmp_path, tied):
    """With the sampled softmax, auto picks lazy updates (sparse table gradients, LazyAdamW, the lazily averaged
    tables: the id table and the output residual, or the id and the separate output table): stopping and resuming
    gives the straight run's history and metrics, as with dense updates."""
    sampled = [*TINY, "--num_train_epochs", "3", "--loss_type", "sampled_softmax", "--num_negative_samples", "8",
               "--tie_word_embeddings", tied]  # fmt: skip
    straight = _run("train.py", *sampled, "--output_dir", str(tmp_path / "straight"))
    _run("train.py", *sampled, "--output_dir", str(tmp_path / "resumed"), "--stop_after_epochs", "1")
    _run("train.py", *sampled, "--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint", "latest")
    assert "item table updates: lazy (--item_table_updates auto: sampled softmax)" in straight.stdout
    # tied: the id table and the output residual (on by default with the sampled softmax); untied: the two tables
    assert "averages only the rows of the 2 item tables it read" in straight.stdout
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["item_output_residual"] == (tied == "true")
    assert ("item output residual: on (the default with the sampled softmax" in straight.stdout) == (tied == "true")
    full = json.loads((tmp_path / "straight" / "eval_results.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "eval_results.json").read_text())
    assert full["training"]["item_table_updates"] == "lazy"
    assert history_without_measurements(resumed) == history_without_measurements(full)
    assert resumed["test"] == full["test"]


@pytest.mark.parametrize("successors", ["0.6", "0"])
def test_the_full_softmax_turns_the_output_residual_on_where_transitions_are_strong(tmp_path, successors):
    """With the full softmax and `--item_output_residual` left out, the run measures the transition baseline against
    popularity on validation before training and turns the residual on at `RESIDUAL_TRANSITION_LIFT` or more: a world
    whose next item is often a successor of the previous one, not one without successors."""
    from hf_interest.training.arguments import RESIDUAL_TRANSITION_LIFT

    world = ["--synthetic_num_users", "200", "--synthetic_num_items", "100"]
    run = _run("train.py", *TINY, *world, "--synthetic_successor_probability", successors, "--max_steps", "1",
               "--output_dir", str(tmp_path))  # fmt: skip
    line = next(line for line in run.stdout.splitlines() if line.startswith("item output residual"))
    lift = float(line.split("scores ")[1].split("x popularity")[0])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["item_output_residual"] == (lift >= RESIDUAL_TRANSITION_LIFT) == (successors != "0")
    # the transition prior reads the same measurement, and holds the training split's pair counts when on
    assert f"item transition prior: {'on' if successors != '0' else 'off'} (the default" in run.stdout
    assert config["item_transition_prior"] == (successors != "0")
    assert (config["transition_prior_pairs"] > 0) == (successors != "0")
    assert config["loss_type"] == "full_softmax"
    if successors == "0":  # measuring the lift draws no random numbers: the run equals one with the flags given
        given = _run("train.py", *TINY, *world, "--max_steps", "1", "--item_output_residual", "false",
                     "--item_transition_prior", "false", "--output_dir", str(tmp_path / "given"))  # fmt: skip
        assert "item output residual" not in given.stdout and "item transition prior" not in given.stdout
        measured = json.loads((tmp_path / "eval_results.json").read_text())
        flagged = json.loads((tmp_path / "given" / "eval_results.json").read_text())
        assert measured["test"] == flagged["test"]
        assert history_without_measurements(measured) == history_without_measurements(flagged)


def test_validation_on_a_sample_of_users(tmp_path):
    """`--validation_users` validates on a fixed random sample of the users and says so, in the log and in the
    protocol; the numbers are those of the saved model over exactly those users, and the test split scores every
    user."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_interest.data import encode_sequences
    from hf_interest.training.arguments import DataArguments
    from hf_interest.training.data import load_data, validation_user_sample
    from hf_interest.training.evaluation import eval_dataloader, evaluate_next_item, popularity_baseline

    folder = tmp_path / "sampled"
    run = _run("train.py", *tiny_train_args(48, 16, 2), "--validation_users", "20", "--output_dir", str(folder))
    assert "validation: users: a fixed random sample of 20 of 48 (--validation_users)" in run.stdout
    results = json.loads((folder / "eval_results.json").read_text())
    block = results["validation"]["exclude_seen"]
    assert block["model"]["num_users"] == block["popularity"]["num_users"] == 20
    assert "a fixed random sample of 20 of 48" in block["protocol"]["users"]
    assert results["test"]["exclude_seen"]["model"]["num_users"] == 48
    assert "users" not in results["test"]["exclude_seen"]["protocol"]
    # by hand: the saved (best, validated) weights over the drawn users
    data = load_data(DataArguments(**results["arguments"]["data"]))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded, _ = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    rows = validation_user_sample(len(encoded["validation"]), 20, results["arguments"]["train"]["seed"])
    assert len(set(rows.tolist())) == 20 and list(rows) == sorted(rows)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    length = model.config.max_position_embeddings
    loader = eval_dataloader(encoded["validation"].select(rows), tokenizer.pad_token_id, length, 8)
    popularity = popularity_baseline(encoded["train"], len(tokenizer), tokenizer.num_special_tokens)
    by_hand = evaluate_next_item(model, loader, popularity, "validation")["exclude_seen"]
    for name in ("model", "popularity"):
        assert by_hand[name]["ndcg@10"] == pytest.approx(block[name]["ndcg@10"], abs=1e-6)
    # and they are not every user's: the sample changes the number the run chooses its epoch by
    everyone = evaluate_next_item(
        model, eval_dataloader(encoded["validation"], tokenizer.pad_token_id, length, 8), popularity, "validation"
    )["exclude_seen"]
    assert everyone["model"]["num_users"] == 48
    assert everyone["model"]["ndcg@10"] != pytest.approx(block["model"]["ndcg@10"], abs=1e-6)
