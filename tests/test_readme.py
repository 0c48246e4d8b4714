"""The examples of README and the docs run as written; README stays a five-minute read."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _python_blocks() -> list[str]:
    """Every ```python block of README, then of the docs pages."""
    return [
        block
        for page in (README, *DOCS)
        for block in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    ]


def test_readme_is_short_and_holds_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "make main" in text and "make test" in text
    for page in re.findall(r"`docs/([a-z_]+\.md)`", text):  # every page README names exists
        assert (ROOT / "docs" / page).is_file(), page
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS:  # and every page is in the site's navigation
        assert f" {page.name}" in nav, page.name


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it saves "my-model" in the working directory
    blocks = _python_blocks()
    usage = next(block for block in blocks if "recommend(" in block)
    namespace: dict = {}
    exec(compile(usage, str(README), "exec"), namespace)
    recs = namespace["recs"]
    assert recs.item_ids.shape == (2, 2)
    history = {"sku-1", "sku-3"}
    assert not history & set(namespace["tokenizer"].decode_items(recs.item_ids[0]))
    assert (tmp_path / "my-model" / "model.safetensors").is_file()
    assert type(namespace["reloaded"]).__name__ == "InterestForNextItemPrediction"


def test_readme_lora_example_runs():
    blocks = _python_blocks()
    usage = next(block for block in blocks if "recommend(" in block)
    lora = next(block for block in blocks if "get_peft_model" in block)
    namespace: dict = {}
    exec(compile(usage.split("model.save_pretrained")[0], str(README), "exec"), namespace)
    exec(compile(lora, str(README), "exec"), namespace)
    trainable = [n for n, p in namespace["peft_model"].named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_readme_explanation_example_runs():
    blocks = _python_blocks()
    usage = next(block for block in blocks if "recommend(" in block)
    explaining = next(block for block in blocks if "counterfactual(" in block)
    namespace: dict = {}
    exec(compile(usage.split("model.save_pretrained")[0], str(README), "exec"), namespace)
    exec(compile(explaining, str(README), "exec"), namespace)
    why, flip = namespace["why"], namespace["flip"]
    assert [event["item_id"] for event in why.events] == namespace["history"]
    assert len(why.top(2)) == 2 and why.target not in namespace["history"]
    assert namespace["gradients"].diagnostics["relative_completeness_gap"] <= 1e-2
    assert not flip.found or flip.verified
    assert 0 <= namespace["checked"]["deletion_auc"] <= 1
