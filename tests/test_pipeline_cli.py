"""The `next-item-recommendation` pipeline and the `hf-interest` command line."""

import json
import logging
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from transformers import pipeline

from hf_interest import InterestForNextItemPrediction, ItemTokenizer, NextItemRecommendationPipeline
from hf_interest_cli import main


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_run):
    return InterestForNextItemPrediction.from_pretrained(tiny_run).eval(), ItemTokenizer.from_pretrained(tiny_run)


@pytest.fixture(scope="module")
def recommender(tiny_run):
    return pipeline("next-item-recommendation", model=str(tiny_run))


def _direct(model, tokenizer, history, timestamps=None, top_k=5, exclude_seen=True):
    batch = tokenizer([history], timestamps=[timestamps] if timestamps else None, return_tensors="pt")
    recs = model.recommend(**batch, top_k=top_k, exclude_seen=exclude_seen)
    return tokenizer.batch_decode_items(recs.item_ids)[0], recs.scores[0].tolist()


def test_pipeline_matches_model_recommend(recommender, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert isinstance(recommender, NextItemRecommendationPipeline)
    history = list(tokenizer.items)[:6]
    out = recommender(history, top_k=5)
    items, scores = _direct(model, tokenizer, history)
    assert [r["item_id"] for r in out] == items
    assert [r["rank"] for r in out] == [1, 2, 3, 4, 5]
    assert [r["score"] for r in out] == pytest.approx(scores)
    assert not set(items) & set(history)


def test_pipeline_timestamps_and_include_seen(recommender, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    history = list(tokenizer.items)[:4]
    times = [1_700_000_000, 1_700_000_060, 1_700_090_000, 1_710_000_000]
    out = recommender({"items": history, "timestamps": times}, top_k=4, exclude_seen=False)
    items, _ = _direct(model, tokenizer, history, timestamps=times, top_k=4, exclude_seen=False)
    assert [r["item_id"] for r in out] == items


def test_pipeline_batch_titles_and_exclusions(tiny_run, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    catalogue = list(tokenizer.items)
    titles = {item: f"Title of {item}" for item in catalogue}
    recommender = pipeline("next-item-recommendation", model=str(tiny_run), item_titles=titles)
    histories = [catalogue[:3], catalogue[3:8]]
    outputs = recommender(histories, top_k=3)
    assert len(outputs) == 2
    for history, out in zip(histories, outputs):
        assert [r["item_id"] for r in out] == _direct(model, tokenizer, history, top_k=3)[0]
        assert all(r["title"] == f"Title of {r['item_id']}" for r in out)
    banned = [r["item_id"] for r in outputs[0]]
    again = recommender(histories[0], top_k=3, exclude_items=banned)
    assert not {r["item_id"] for r in again} & set(banned)


def test_pipeline_unknown_and_empty_histories(recommender, model_and_tokenizer, caplog):
    _, tokenizer = model_and_tokenizer
    with caplog.at_level(logging.WARNING, logger="hf_interest.pipelines"):
        out = recommender([list(tokenizer.items)[0], "never-seen-item"], top_k=3)
    assert len(out) == 3
    assert "1 of 2 history items are not in the vocabulary" in caplog.text
    assert len(recommender([], top_k=2)) == 2  # empty history: ranked by the learned item bias


@pytest.mark.parametrize(
    "inputs, kwargs, error, message",
    [
        ("item-1", {}, ValueError, "not a single string"),
        ({"timestamps": [1]}, {}, ValueError, "'items' key"),
        (["x"], {"top_k": 0}, ValueError, "top_k must be a positive integer"),
        (["x"], {"temperature": 1.0}, TypeError, "Unknown arguments"),
    ],
)
def test_pipeline_bad_input(recommender, inputs, kwargs, error, message):
    with pytest.raises(error, match=message):
        recommender(inputs, **kwargs)


def test_console_script_is_declared():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("hf-interest") == "hf_interest_cli:main"


def test_cli_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "evaluate", "recommend", "push", "info"):
        assert command in text
    assert "hf-interest train --dataset movielens-100k" in text


def test_cli_train_help_is_the_scripts_help():
    run = subprocess.run(
        [sys.executable, "-m", "hf_interest_cli", "train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0
    assert "--early_stopping_patience" in run.stdout and "--resume_from_checkpoint" in run.stdout


def test_cli_info(tiny_run, capsys):
    assert main(["info", str(tiny_run)]) == 0
    text = capsys.readouterr().out
    vocab = json.loads((tiny_run / "item_vocab.json").read_text())
    assert f"vocabulary: {len(vocab) - 3:,} items + 3 special tokens" in text
    assert "popularity (baseline)" in text and "Protocol: split=test" in text
    assert main(["info", str(tiny_run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    results = json.loads((tiny_run / "eval_results.json").read_text())
    assert info["test"]["exclude_seen"]["model"]["ndcg@10"] == results["test"]["exclude_seen"]["model"]["ndcg@10"]
    assert info["config"]["num_items"] == len(vocab) and info["parameters"] > 0


def test_cli_recommend(tiny_run, model_and_tokenizer, tmp_path, capsys):
    model, tokenizer = model_and_tokenizer
    history = list(tokenizer.items)[:4]
    titles = tmp_path / "titles.json"
    titles.write_text(json.dumps({item: f"T-{item}" for item in tokenizer.items}))
    assert main(["recommend", str(tiny_run), *history, "--top_k", "3", "--json", "--item_titles", str(titles)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["item_id"] for r in out] == _direct(model, tokenizer, history, top_k=3)[0]
    assert all(r["title"] == f"T-{r['item_id']}" for r in out)
    assert main(["recommend", str(tiny_run), *history, "--top_k", "2"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["rank", "item_id", "score"] and len(table.splitlines()) == 3


def test_cli_push_dry_run(tiny_run, tmp_path, capsys):
    assert main(["push", str(tiny_run), "--repo_id", "acme/x", "--dry_run", str(tmp_path / "up")]) == 0
    text = capsys.readouterr().out
    assert "model.safetensors" in text and "README.md" in text and "nothing uploaded" in text
    assert (tmp_path / "up" / "config.json").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "/no/such/model"], "/no/such/model: no such file or directory. The folder /no does not exist."),
        (["info", "{run}/checkpoints"], "has no config.json"),
        (["push", "/no/such/run", "--repo_id", "a/b", "--dry_run", "/tmp/never"], "is not a directory"),
        (["recommend", "{run}", "a", "b", "--timestamps", "1"], "--timestamps has 1 values for 2 items"),
        (["recommend", "{run}", "a", "--item_titles", "/no/titles.json"], "does not exist"),
    ],
)
def test_cli_errors_are_one_clear_line(tiny_run, capsys, argv, message):
    argv = [arg.replace("{run}", str(tiny_run)) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith(f"hf-interest {argv[0]}: error:")
