"""A newcomer's path: arguments checked as a whole before any data is read, messages that name what to fix (the
argument, the file's own columns, the close names), and help that reads as written by a person."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_interest.data import load_behaviors
from hf_interest.data.paths import check_model_reference, missing_path_message
from hf_interest.training import check_arguments
from hf_interest_cli import main
from hf_interest_cli.commands import parse_train_arguments as parse_arguments
from hf_interest_cli.parsers import HelpFormatter

REPO = Path(__file__).resolve().parents[1]


def _parse(argv):
    data_args, model_args, train_args = parse_arguments(argv)
    check_arguments(data_args, train_args)
    return data_args, model_args, train_args


# --- every argument checked before any data is read -------------------------------------------------------------------

BAD_ARGUMENTS = [
    (["--dataset", "movielens-100"], r"--dataset movielens-100: not a dataset name .* Did you mean 'movielens-100k'\?"),
    (["--dataset", "synthetc"], r"Did you mean 'synthetic'\?"),
    (["--learning_rat", "0.1"], r"--learning_rat is not an option\. Did you mean '--learning_rate'"),
    (["--learning_rate", "-0.001"], r"--learning_rate must be a positive number"),
    (["--learning_rate", "inf"], r"--learning_rate must be a finite number"),
    (["--weight_decay", "nan"], r"--weight_decay must be a finite number"),
    (["--per_device_train_batch_size", "-8"], r"--per_device_train_batch_size must be a positive number"),
    (["--num_train_epochs", "0"], r"--num_train_epochs must be a positive number"),
    (["--loss_type", "sampled"], r"--loss_type must be one of .* Did you mean 'sampled_softmax'\?"),
    (["--item_representation", "txt"], r"--item_representation must be one of .* Did you mean 'text'"),
    (["--task", "clik"], r"--task must be one of .* Did you mean 'click'\?"),
    (["--lr_scheduler_type", "cosin"], r"Did you mean 'cosine'"),
    (["--lr_scheduler_type", "reduce_lr_on_plateau"], r"--lr_scheduler_type must be one of"),  # needs a metric
    (["--metric_for_best_model", "ndcg@50"], r"--metric_for_best_model must be one of"),
    (["--report_to", "tensorbord"], r"Did you mean 'tensorboard'"),
    (["--hidden_size", "30", "--num_attention_heads", "4"], r"--hidden_size \(30\) must be divisible by num_attention_heads"),
    (["--item_id_dropout", "0.3"], r"--item_id_dropout=0.3 .* needs item_representation='id\+text'"),
    (["--output_dir", "README.md"], r"--output_dir README\.md is a file"),
    (["--output_dir", "README.md/run"], r"--output_dir README\.md/run: .*README\.md is a file"),
    (["--resume_from_checkpoint", "runs-typo/checkpoints/epoch_3"], r"--resume_from_checkpoint runs-typo.*no such file"),
    (["--exclude_items_file", "no-such-items.txt"], r"--exclude_items_file no-such-items\.txt: no such file"),
    (["--task", "click", "--metric_for_best_model", "hr@10"], r"--task click keeps the epoch with the best validation auc"),
    (["--lora_r", "8"], r"--lora_r: LoRA adapts a trained model; pass --init_from"),
]  # fmt: skip


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_fail_before_any_data_with_the_argument_named(argv, message, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        _parse(argv)


def test_no_abbreviations():
    parser_error = subprocess.run(
        [sys.executable, str(REPO / "hub_scripts" / "train.py"), "--learning_rat", "0.1"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert parser_error.returncode != 0
    lines = parser_error.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "train.py: error: --learning_rat is not an option. Did you mean '--learning_rate'"
    )


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_scripts_fail_in_one_line(script, tmp_path):
    argv = ["--dataset", "movielens-100"] if script == "train.py" else ["runs-typo/ml10k"]
    (tmp_path / "runs-typo").mkdir()
    run = subprocess.run([sys.executable, str(REPO / "hub_scripts" / script), *argv], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={"HF_HUB_OFFLINE": "0", "PATH": ""})  # fmt: skip
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), run.stderr
    assert "Traceback" not in run.stderr


# --- local folders are never taken for Hub repo ids --------------------------------------------------------------------


def test_a_mistyped_local_folder_is_said_before_any_hub_call(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "ml100k").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"runs/ml10k: no such file or directory\. Did you mean 'runs/ml100k'"):
        check_model_reference("runs/ml10k")
    for bad in ("./model", "a/b/c", "/nowhere/model"):
        with pytest.raises(FileNotFoundError, match="no such file or directory"):
            check_model_reference(bad)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="file.txt is a file"):
        check_model_reference("file.txt")
    check_model_reference("runs/ml100k")
    check_model_reference("some-org/some-model")  # a Hub repo id: left to the Hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was called")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_hub)
    for command in (["evaluate", "runs/ml10k"], ["recommend", "runs/ml10k", "1"], ["info", "runs/ml10k"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "runs/ml10k: no such file or directory. Did you mean 'runs/ml100k'" in err[0], err


def test_missing_paths_say_what_is_there(tmp_path):
    (tmp_path / "events.csv").write_text("user,item\n1,a\n")
    assert missing_path_message(tmp_path / "event.csv").endswith(f"Did you mean '{tmp_path / 'events.csv'}'?")
    assert missing_path_message(tmp_path / "a" / "b.csv").endswith(f"The folder {tmp_path / 'a'} does not exist.")


# --- the file's own words: delimiter, columns ---------------------------------------------------------------------------


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_the_delimiter_is_guessed_from_the_header_and_said(tmp_path, separator):
    path = tmp_path / "log.csv"
    path.write_text("\n".join(separator.join(row) for row in [["user", "item", "timestamp"], ["1", "a", "10"],
                                                                 ["1", "b", "20"], ["1", "c", "30"]]) + "\n")  # fmt: skip
    data = load_behaviors(path)
    assert data.report.notes[0] == f"read as {separator!r}-separated: the header has no ',' but 2 {separator!r}"
    with pytest.raises(ValueError, match=rf"The header was read as one column holding {re.escape(repr(separator))}"):
        load_behaviors(path, delimiter=",")  # an explicit delimiter is kept, and the message says what went wrong


def test_a_header_only_file_names_its_own_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,iid,ts\n")
    with pytest.raises(ValueError, match=r"has columns \['uid', 'iid', 'ts'\] but no rows"):
        load_behaviors(path)


# --- help that reads as written: one default per option --------------------------------------------------------------


def _help_strings(parser):
    formatter = parser._get_formatter()
    return {action.option_strings[0]: formatter._get_help_string(action) % {"default": action.default}
            for action in parser._actions if action.option_strings}  # fmt: skip


def test_train_help_has_one_default_per_option(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    from transformers import HfArgumentParser

    from hf_interest.training import DataArguments, ModelArguments, TrainArguments

    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments), formatter_class=HelpFormatter)
    helps = _help_strings(parser)
    for option, text in helps.items():
        assert len(re.findall(r"\bdefault\b", text, re.IGNORECASE)) <= 1, (option, text)
    assert helps["--learning_rate"].endswith("else 1e-3.") and "(default" not in helps["--learning_rate"]
    assert helps["--max_length"].endswith("(default: 200)")


def test_no_flags_say_what_they_turn_off(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "--no_use_time_gaps, --no-use-time-gaps The same as --use_time_gaps false." in text
    # the help of a model field is InterestConfig's own docstring, said once
    assert text.count("Whether to add an embedding of the time gap since the previous event.") == 1


def test_evaluate_help_shows_its_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "users per batch (default: 256)" in text and "split to evaluate (default: test)" in text
    assert "(default: None)" not in text and "default: the checkpoint's own dataset)" in text


# --- a property: random argument vectors start training or fail before the data, naming an argument ---------------

_VALUES = {
    "--dataset": st.sampled_from(["synthetic", "synthetc", "movielens-100k", "/nowhere/log.csv"]),
    "--hidden_size": st.one_of(st.integers(-4, 130).map(str), st.just("abc")),
    "--num_attention_heads": st.integers(-1, 5).map(str),
    "--num_hidden_layers": st.integers(-1, 3).map(str),
    "--learning_rate": st.sampled_from(["0.001", "-1", "0", "nan", "inf", "1e-2", "x"]),
    "--per_device_train_batch_size": st.integers(-2, 8).map(str),
    "--num_train_epochs": st.integers(-1, 3).map(str),
    "--loss_type": st.sampled_from(["auto", "full_softmax", "sampled_softmax", "sampled", ""]),
    "--item_representation": st.sampled_from(["id", "text", "id+text", "ids"]),
    "--item_id_dropout": st.sampled_from(["0", "0.2", "1.0", "-0.1"]),
    "--task": st.sampled_from(["next-item", "click", "forecast", "next_item"]),
    "--lora_r": st.integers(-1, 4).map(str),
    "--ema_decay": st.sampled_from(["0", "0.99", "1", "-0.5"]),
    "--warmup_ratio": st.sampled_from(["0", "0.1", "1.5", "nan"]),
    "--metric_for_best_model": st.sampled_from(["ndcg@10", "hr@20", "mrr@5", "ndcg@11", "auc"]),
    "--max_length": st.integers(-1, 300).map(str),
    "--split": st.sampled_from(["leave_one_out", "by_user", "random"]),
    "--mixed_precision": st.sampled_from(["no", "bf16", "fp8"]),
    "--resume_from_checkpoint": st.sampled_from(["latest", "/nowhere/checkpoint"]),
    "--init_from": st.sampled_from(["/nowhere/model"]),
    "--targets_from": st.sampled_from(["2024-06-01", "yesterday", "1700000000"]),
    "--short_term_window": st.integers(-1, 8).map(str),
    "--lr_scheduler_type": st.sampled_from(["linear", "cosine", "greedy", "cosin"]),
    "--learning_rat": st.just("0.1"),
    "--no_use_time_gaps": st.none(),
}


@st.composite
def _argv(draw):
    flags = draw(st.lists(st.sampled_from(sorted(_VALUES)), min_size=1, max_size=5, unique=True))
    argv = []
    for flag in flags:
        value = draw(_VALUES[flag])
        argv += [flag] if value is None else [flag, value]
    return argv


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=_argv())
def test_property_argument_vectors_start_or_fail_naming_an_argument(argv, tmp_path, capsys):
    argv = [*argv, "--output_dir", str(tmp_path / "run")]
    flags = [a.lstrip("-") for a in argv if a.startswith("--")]
    try:
        data_args, model_args, train_args = _parse(argv)
    except SystemExit:  # argparse: a value of the wrong type
        message = capsys.readouterr().err
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        message = str(error)
    else:
        # accepted: what training builds from the arguments alone before reading data is built here too
        from hf_interest import InterestConfig

        assert train_args.output_dir == str(tmp_path / "run") and model_args.hidden_size > 0
        from hf_interest.training.arguments import resolve_item_output_residual, resolve_item_transition_prior

        assert InterestConfig(num_items=50, **{**vars(model_args), "loss_type": "full_softmax",
                                               "item_output_residual": resolve_item_output_residual(model_args, "full_softmax")[0],
                                               "item_transition_prior": resolve_item_transition_prior(model_args, None)[0],
                                               "text_embedding_size": 8 if model_args.item_representation != "id" else None})  # fmt: skip
        return
    assert any(flag in message or flag.replace("_", "-") in message for flag in flags), (argv, message)


def test_the_arguments_of_a_real_run_still_pass(tiny_run, tmp_path):
    # what a run recorded is accepted again (the checks refuse nothing that trained before)
    recorded = json.loads((tiny_run / "eval_results.json").read_text())["arguments"]
    argv = []
    for group in recorded.values():
        for name, value in group.items():
            if value is not None and name != "output_dir":
                argv += [f"--{name}", str(value)]
    _parse([*argv, "--output_dir", str(tmp_path / "again")])


def test_help_formatter_keeps_a_default_the_help_already_names():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--a", default=3, help="things (default: three)")
    parser.add_argument("--b", default=3, help="things")
    parser.add_argument("--c", help="things")
    helps = _help_strings(parser)
    assert helps["--a"] == "things (default: three)" and helps["--b"] == "things (default: 3)"
    assert helps["--c"] == "things"


# --- time gaps: a model that reads them says so when it is called without timestamps -------------------------------


def _warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if "called without timestamps" in r.getMessage()]


def test_a_time_gap_model_warns_once_without_timestamps(caplog):
    import torch
    from transformers.utils import logging as hf_logging

    from hf_interest import InterestConfig, InterestForNextItemPrediction
    from hf_interest.training.tasks import backbone_fields

    hf_logging.warning_once.cache_clear()
    model = InterestForNextItemPrediction(InterestConfig(num_items=20, hidden_size=8, intermediate_size=16)).eval()
    ids = torch.tensor([[5, 6, 7]])
    model.recommend(ids, timestamps=torch.tensor([[10, 20, 4000]]), top_k=3)
    assert _warnings_of(caplog) == []
    model.recommend(ids, top_k=3)
    model.recommend(ids, top_k=3)
    assert len(_warnings_of(caplog)) == 1  # once
    assert "Pass the events' times" in _warnings_of(caplog)[0]
    hf_logging.warning_once.cache_clear()
    model.train()(ids)  # training on a log without times is the loop's business, not a warning
    assert len(_warnings_of(caplog)) == 1
    no_gaps = InterestForNextItemPrediction(InterestConfig(num_items=20, hidden_size=8, intermediate_size=16,
                                                           use_time_gaps=False)).eval()  # fmt: skip
    no_gaps.recommend(ids, top_k=3)
    assert len(_warnings_of(caplog)) == 1
    # a log without times builds a model without the time-gap embedding, rather than one whose every gap is unknown
    from hf_interest.training import ModelArguments

    assert backbone_fields(ModelArguments(), has_time=False)["use_time_gaps"] is False
    assert backbone_fields(ModelArguments(), has_time=True)["use_time_gaps"] is True


def test_pipeline_and_cli_warn_without_timestamps(tiny_run, caplog):
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from hf_interest import ItemTokenizer

    items = list(ItemTokenizer.from_pretrained(tiny_run).items)[:3]
    hf_logging.warning_once.cache_clear()
    recommender = pipeline("next-item-recommendation", model=str(tiny_run))
    recommender({"items": items, "timestamps": [1_700_000_000, 1_700_000_600, 1_700_090_000]}, top_k=2)
    assert _warnings_of(caplog) == []
    recommender(items, top_k=2)
    assert len(_warnings_of(caplog)) == 1
    run = subprocess.run([sys.executable, "-m", "hf_interest_cli", "recommend", str(tiny_run), *items, "--top_k", "2"],
                         capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})  # fmt: skip
    assert run.returncode == 0 and run.stderr.count("called without timestamps") == 1, run.stderr


def test_help_answers_without_importing_torch():
    code = (
        "import sys, contextlib, io\n"
        "from hf_interest_cli import main\n"
        "for argv in (['--help'], ['recommend', '--help'], ['info', '--help'], ['evaluate', '-h'], ['push', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'hf_interest') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_progress_lines_and_theclosing_summary(capsys, tmp_path):
    from types import SimpleNamespace

    from hf_interest.training.loop import ProgressLines
    from hf_interest.training.run_folder import closing_summary

    for every, expected in ((0.0, ["epoch 1: 1/120 batches", "epoch 1: 40/120 batches", "epoch 2: 1/120 batches"]),
                            (3600.0, [])):  # fmt: skip
        lines = ProgressLines(total=120, every=every)
        for epoch, batches in ((0, 1), (0, 40), (1, 1)):
            lines(epoch, batches)
        assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()] == expected
    results = {"training": {"metric_for_best_model": "ndcg@10", "best_validation_ndcg@10": 0.1234, "best_epoch": 7,
                            "epochs_run": 17, "ema_decay": 0.99}}  # fmt: skip
    data = SimpleNamespace(report=SimpleNamespace(source="/cache/ml-100k.inter"))
    summary = closing_summary(results, data, tmp_path).splitlines()
    assert summary[0] == (
        "Kept: the weights of epoch 7 of 17 run (best validation ndcg@10 0.1234), as their moving average "
        "(--ema_decay 0.99): the average is what was validated, tested and saved."
    )
    assert summary[1] == "Data read from: /cache/ml-100k.inter"
    assert summary[2].startswith(f"Checkpoints: {tmp_path / 'checkpoints'} (--resume_from_checkpoint latest")
    results["training"]["ema_decay"] = 0
    assert closing_summary(results, data, tmp_path).splitlines()[0].endswith("(best validation ndcg@10 0.1234).")


def test_the_model_card_reads_as_prose(tiny_run):
    card = (tiny_run / "README.md").read_text()
    assert "### Test split, seen items excluded" in card and "### Test split, seen items included" in card
    assert "exclude seen" not in card and "epochs_run:" not in card
    results = json.loads((tiny_run / "eval_results.json").read_text())
    training = results["training"]
    assert f"{training['epochs_run']} epochs; early stopping kept epoch {training['best_epoch']}" in card
    if training.get("ema_decay"):
        assert "The published weights are the exponential moving average of the weights" in card
    assert "mixed, by a gate learned per user and step, with a long-term interest" in card  # the parts, named
    assert "timestamps=[times]" in card and "--timestamps SECONDS" in card


def test_evaluate_without_timestamps_measures_what_they_are_worth(tiny_run, capsys):
    from hf_interest.training.evaluation import evaluate_checkpoint

    with_times = evaluate_checkpoint(str(tiny_run), "test")["test"]["exclude_seen"]
    without = evaluate_checkpoint(str(tiny_run), "test", use_timestamps=False)["test"]["exclude_seen"]
    assert with_times["protocol"] == without["protocol"] and with_times["popularity"] == without["popularity"]
    recorded = json.loads((tiny_run / "eval_results.json").read_text())["test"]["exclude_seen"]["model"]
    assert with_times["model"]["ndcg@10"] == pytest.approx(recorded["ndcg@10"])
    assert without["model"]["ndcg@10"] != with_times["model"]["ndcg@10"]  # the gaps are read: leaving them out shows
    assert main(["evaluate", str(tiny_run), "--without_timestamps"]) == 0
    assert "; without timestamps" in capsys.readouterr().out
