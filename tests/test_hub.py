"""Publishing: the dry-run folder, the card's metadata, the upload (mocked Hub), and proof that what we publish loads."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

import hf_interest.hub as hub
from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.hub import prepare_upload_folder, push_to_hub

REPO_ID = "acme/tiny-interest"
MODEL_FILES = {
    "README.md",
    "checkpoint_interest.py",
    "config.json",
    "configuration_interest.py",
    "eval_results.json",
    "item_vocab.json",
    "model.safetensors",
    "modeling_interest.py",
    "tokenization_interest.py",
    "tokenizer_config.json",
}


@pytest.fixture(scope="module")
def dry_run(tiny_run, tmp_path_factory):
    return prepare_upload_folder(tiny_run, tmp_path_factory.mktemp("dry") / "upload", repo_id=REPO_ID)


def _history(run: Path) -> list[str]:
    items = json.loads((run / "item_vocab.json").read_text())[3:]
    return items[:5]


def _expected_recommendations(run: Path, history: list[str]) -> list[str]:
    model = InterestForNextItemPrediction.from_pretrained(run).eval()
    tokenizer = ItemTokenizer.from_pretrained(run)
    recs = model.recommend(**tokenizer([history], return_tensors="pt"), top_k=5)
    return tokenizer.batch_decode_items(recs.item_ids)[0]


def test_dry_run_folder_holds_exactly_the_published_files(tiny_run, dry_run):
    assert dry_run.kind == "model"
    assert set(dry_run.files) == MODEL_FILES
    assert not (dry_run.path / "checkpoints").exists()  # training state stays behind
    config = json.loads((dry_run.path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    assert (dry_run.path / "model.safetensors").read_bytes() == (tiny_run / "model.safetensors").read_bytes()
    assert dry_run.fixes == []
    listing = dry_run.listing()
    for name in MODEL_FILES:
        assert name in listing


def test_card_metadata_is_valid_and_carries_the_real_metrics(tiny_run, dry_run):
    results = json.loads((tiny_run / "eval_results.json").read_text())
    metadata = metadata_load(dry_run.path / "README.md")
    assert metadata["library_name"] == "transformers"
    assert "custom_code" in metadata["tags"] and metadata["license"] == "apache-2.0"
    name, eval_results = model_index_to_eval_results(metadata["model-index"])
    assert name == "tiny-interest"
    found = {(r.metric_type, r.metric_config): r.metric_value for r in eval_results}
    for variant in ("exclude_seen", "include_seen"):
        for metric in ("hr@10", "ndcg@10"):
            assert found[(metric, variant)] == round(results["test"][variant]["model"][metric], 6)
    for result in eval_results:
        assert result.task_type == "next-item-recommendation" and result.dataset_split == "test"
    card = ModelCard.load(dry_run.path / "README.md")
    assert f'AutoModelForCausalLM.from_pretrained("{REPO_ID}")' in card.text
    assert "popularity (baseline)" in card.text and "Privacy" in card.text
    # the card's usage code is the one we prove below; it must name the pipeline too
    assert 'pipeline("next-item-recommendation"' in card.text


def test_missing_auto_map_and_code_files_are_restored(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    del config["auto_map"]
    (run / "config.json").write_text(json.dumps(config))
    (run / "modeling_interest.py").unlink()
    folder = prepare_upload_folder(run, tmp_path / "upload", repo_id=REPO_ID)
    assert set(folder.files) == MODEL_FILES
    assert any("auto_map" in fix for fix in folder.fixes) and any(
        "modeling_interest.py" in fix for fix in folder.fixes
    )
    assert "AutoModelForCausalLM" in json.loads((folder.path / "config.json").read_text())["auto_map"]


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("eval_results.json", "eval_results.json does not exist"),
        ("model.safetensors", "has no model.safetensors"),
        ("item_vocab.json", "item_vocab.json is missing"),
    ],
)
def test_incomplete_run_folders_get_clear_errors(tiny_run, tmp_path, breakage, message):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / breakage).unlink()
    with pytest.raises(FileNotFoundError, match=message):
        prepare_upload_folder(run, tmp_path / "upload", repo_id=REPO_ID)


def test_pickled_weights_are_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model.safetensors").rename(run / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="only safetensors are published"):
        prepare_upload_folder(run, tmp_path / "upload", repo_id=REPO_ID)


def test_bad_repo_id_and_non_empty_output_are_errors(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="ORG/NAME"):
        prepare_upload_folder(tiny_run, tmp_path / "a", repo_id="no-slash")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_upload_folder(tiny_run, tmp_path / "b", repo_id=REPO_ID)


def test_adapter_folder_is_pushed_on_its_own(tiny_run, tmp_path):
    from peft import LoraConfig, get_peft_model

    from hf_interest import DEFAULT_LORA_TARGET_MODULES

    model = InterestForNextItemPrediction.from_pretrained(tiny_run)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=DEFAULT_LORA_TARGET_MODULES))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    ItemTokenizer.from_pretrained(tiny_run).save_pretrained(adapter)
    shutil.copy2(tiny_run / "eval_results.json", adapter / "eval_results.json")
    folder = prepare_upload_folder(adapter, tmp_path / "upload", repo_id=REPO_ID)
    assert folder.kind == "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "eval_results.json"} <= set(folder.files)
    assert "model.safetensors" not in folder.files and "config.json" not in folder.files


class _FakeApi:
    """Stands in for huggingface_hub.HfApi: records the calls and keeps a copy of the uploaded folder."""

    calls: list = []
    uploaded: Path | None = None

    def __init__(self, token=None):
        _FakeApi.calls.append(("init", bool(token)))
        self.token = token

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None):
        _FakeApi.calls.append(("create_repo", repo_id, private, exist_ok, repo_type))

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
        shutil.copytree(folder_path, _FakeApi.uploaded)
        _FakeApi.calls.append(("upload_folder", repo_id, repo_type))
        return f"https://huggingface.co/{repo_id}/commit/0123"


def test_push_uploads_the_dry_run_folder_and_never_writes_the_token(tiny_run, dry_run, tmp_path, monkeypatch, capsys):
    secret = "hf_SeCrEt0123456789abcdefTOKEN"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(hub, "HfApi", _FakeApi)
    _FakeApi.calls, _FakeApi.uploaded = [], tmp_path / "uploaded"
    url = push_to_hub(tiny_run, REPO_ID, private=True)
    assert url.endswith("/commit/0123")
    assert ("init", True) in _FakeApi.calls
    assert ("create_repo", REPO_ID, True, True, "model") in _FakeApi.calls
    uploaded = sorted(str(p.relative_to(_FakeApi.uploaded)) for p in _FakeApi.uploaded.rglob("*") if p.is_file())
    assert uploaded == dry_run.files
    for name in uploaded:
        assert (_FakeApi.uploaded / name).read_bytes() == (dry_run.path / name).read_bytes(), name
    out = capsys.readouterr()
    for path in [*_FakeApi.uploaded.rglob("*"), *tiny_run.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in out.out + out.err


def test_push_without_a_token_is_a_clear_error(tiny_run, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "get_token", lambda: None)
    with pytest.raises(RuntimeError, match="hf auth login"):
        push_to_hub(tiny_run, REPO_ID)


def _as_hub_cache(folder: Path, hf_home: Path, repo_id: str) -> None:
    """Lays a folder out as a Hub download in HF_HOME (refs/main -> snapshots/<commit>/files)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


LOAD_SCRIPT = """
import json, sys
if {block_package}:
    sys.modules["hf_interest"] = None  # prove the checkpoint needs nothing from the package
else:
    import hf_interest
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
kwargs = {{"trust_remote_code": True}} if {block_package} else {{}}
model = AutoModelForCausalLM.from_pretrained("{repo_id}", **kwargs).eval()
tokenizer = AutoTokenizer.from_pretrained("{repo_id}", **kwargs)
backbone = AutoModel.from_pretrained("{repo_id}", **kwargs)
history = {history}
batch = tokenizer([history], return_tensors="pt")
recs = model.recommend(**batch, top_k=5)
out = {{"model_class": type(model).__module__ + "." + type(model).__name__,
        "backbone_class": type(backbone).__name__,
        "items": tokenizer.batch_decode_items(recs.item_ids)[0]}}
if not {block_package}:
    from transformers import pipeline
    out["pipeline"] = [r["item_id"] for r in pipeline("next-item-recommendation", model="{repo_id}")(history, top_k=5)]
print(json.dumps(out))
"""


@pytest.mark.parametrize("block_package", [True, False], ids=["remote_code_without_package", "package_installed"])
def test_published_folder_loads_by_repo_id_offline(tiny_run, dry_run, tmp_path, block_package):
    hf_home = tmp_path / "hf_home"
    _as_hub_cache(dry_run.path, hf_home, REPO_ID)
    history = _history(tiny_run)
    expected = _expected_recommendations(tiny_run, history)
    script = LOAD_SCRIPT.format(block_package=block_package, repo_id=REPO_ID, history=history)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    workdir = tmp_path / "elsewhere"  # not the repository, so a checkout cannot leak onto the path
    workdir.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["items"] == expected
    assert not set(out["items"]) & set(history)
    if block_package:
        assert not out["model_class"].startswith("hf_interest"), out["model_class"]  # the remote code ran
        assert out["backbone_class"] == "InterestModel"
    else:
        assert out["model_class"].startswith("hf_interest."), out["model_class"]
        assert out["pipeline"] == expected


def test_dry_run_weights_equal_the_run(tiny_run, dry_run):
    a = InterestForNextItemPrediction.from_pretrained(tiny_run).state_dict()
    b = InterestForNextItemPrediction.from_pretrained(dry_run.path).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_the_cards_usage_code_runs_against_the_published_repo(dry_run, tmp_path):
    text = (dry_run.path / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    assert len(blocks) >= 2, "the card shows the Auto-class and the pipeline usage"
    hf_home = tmp_path / "hf_home"
    _as_hub_cache(dry_run.path, hf_home, REPO_ID)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    code = blocks[0] + "\nimport hf_interest\n" + blocks[1] + "\nprint('CARD-CODE-OK', recs.item_ids.shape)\n"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "CARD-CODE-OK torch.Size([1, 10])" in run.stdout
