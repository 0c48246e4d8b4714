"""Publishing a training run to the Hugging Face Hub.

`prepare_upload_folder` builds exactly the folder that is uploaded: the model (or a peft adapter), the item vocabulary,
the code files that `trust_remote_code=True` needs, `eval_results.json` and a model card rendered from it.
`push_to_hub` uploads that folder with `huggingface_hub`. The token comes from `hf auth login` or `HF_TOKEN` (or is
passed in) and is never printed, logged or written anywhere.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, get_token

from .model_card import HEAD_AUTO_CLASSES, HEAD_CLASSES, head_model_card, load_eval_results, render_model_card
from .privacy import find_user_data
from .tokenization_interest import SPECIAL_TOKENS

SPACE_LINK_FILE = "space.json"
"""In a run folder: `{"space_id": ORG/NAME}`, the Space `hf-interest space` published for it; the card links to it."""

PACKAGE_DIR = Path(__file__).resolve().parent
CODE_FILES = (
    "configuration_interest.py",
    "checkpoint_interest.py",
    "modeling_interest.py",
    "tokenization_interest.py",
)
MODEL_AUTO_MAP = {
    "AutoConfig": "configuration_interest.InterestConfig",
    "AutoModel": "modeling_interest.InterestModel",
    "AutoModelForCausalLM": "modeling_interest.InterestForNextItemPrediction",
}
TOKENIZER_AUTO_MAP = {"AutoTokenizer": ["tokenization_interest.ItemTokenizer", None]}
TOKENIZER_FILES = ("tokenizer_config.json", "item_vocab.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
OPTIONAL_FILES = ("special_tokens_map.json", "generation_config.json")


@dataclass
class UploadFolder:
    """What `prepare_upload_folder` wrote: the folder, its files (relative paths) and what it fixed on the way."""

    path: Path
    files: list[str]
    kind: str  # "model" or "adapter"
    fixes: list[str] = field(default_factory=list)
    user_data: list[str] = field(default_factory=list)  # user-level files included on request (--with_user_data)

    def listing(self) -> str:
        lines = [f"{self.kind} folder {self.path} ({len(self.files)} files):"]
        for name in self.files:
            lines.append(f"  {name}  ({(self.path / name).stat().st_size:,} bytes)")
        lines.extend(f"  note: {fix}" for fix in self.fixes)
        lines.extend(f"  USER-LEVEL DATA (asked for with --with_user_data): {item}" for item in self.user_data)
        return "\n".join(lines)


def read_json_file(path: Path):
    """Reads a JSON file of a checkpoint or run folder; broken JSON is a `ValueError` naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); save or download it again.") from None


def _weight_files(run_dir: Path) -> list[str]:
    index = run_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json_file(index).get("weight_map", {}).values()))
        missing = [name for name in shards if not (run_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names weight shards that are missing from {run_dir}: {missing}.")
        return [index.name, *shards]
    if (run_dir / "model.safetensors").is_file():
        return ["model.safetensors"]
    pickled = sorted(p.name for p in run_dir.glob("*.bin")) + sorted(p.name for p in run_dir.glob("*.pt"))
    hint = f" It holds pickled weights ({', '.join(pickled)}): only safetensors are published." if pickled else ""
    raise FileNotFoundError(
        f"{run_dir} has no model.safetensors.{hint} Point at a run folder written by hub_scripts/train.py, or "
        "save the model with save_pretrained (safetensors is the default)."
    )


def prepare_upload_folder(
    run_dir: str | Path,
    output_dir: str | Path,
    repo_id: str = "ORG/NAME",
    license: str = "apache-2.0",
    model_name: str | None = None,
    with_handler: bool = False,
    with_user_data: bool = False,
) -> UploadFolder:
    """
    Writes the folder that `push_to_hub` uploads.

    For a model run: the weights (safetensors), `config.json` with `auto_map`, the tokenizer files, the code files,
    `eval_results.json` and `README.md` (the model card rendered from `eval_results.json` for `repo_id`). Missing
    `auto_map` entries and code files are added from the installed package and reported in `fixes`. For a peft adapter
    folder (`adapter_config.json`): the adapter files, the tokenizer files when present, `eval_results.json` and the
    card. Checkpoints, logs and anything else in the run folder stay behind.

    Args:
        run_dir: a run folder of `hub_scripts/train.py`, or any `save_pretrained` folder with `eval_results.json`.
        output_dir: where to write; must not exist or be empty.
        repo_id: the Hub repository the card is written for.
        with_handler: also the ONNX export (`model.onnx`, `onnx_config.json`, checked against torch) and the Inference
            Endpoints handler (`handler.py`, `requirements.txt`), so that the repository deploys as a custom endpoint.
        license: licence of the weights, for the card metadata.
        model_name: the card's title (default: the repository name).
        with_user_data: also the run's user-level files (`groups/`: user ids and their groups). Without it nothing
            user-level is written, and the folder is checked for it (`hf_interest.privacy.find_user_data`): a finding
            is an error and nothing is published.

    Returns:
        `UploadFolder`.
    """
    run_dir = Path(run_dir)
    output_dir = Path(output_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir} is not a directory: point at a run folder written by hub_scripts/train.py."
        )
    if output_dir.resolve() == run_dir.resolve():
        raise ValueError("The upload folder must differ from the run folder.")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} is not empty: pass a new folder for the upload (dry run) files.")
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like ORG/NAME, got {repo_id!r}.")
    eval_results = load_eval_results(run_dir)
    vocab_path = run_dir / "item_vocab.json"
    vocabulary = read_json_file(vocab_path) if vocab_path.is_file() else None
    output_dir.mkdir(parents=True, exist_ok=True)
    fixes: list[str] = []

    def copy(name: str) -> None:
        shutil.copy2(run_dir / name, output_dir / name)

    if (run_dir / "adapter_config.json").is_file():
        kind = "adapter"
        for name in ADAPTER_FILES:
            if not (run_dir / name).is_file():
                raise FileNotFoundError(f"{run_dir / name} is missing: save the adapter with save_pretrained.")
            copy(name)
        for name in (*TOKENIZER_FILES, "tokenization_interest.py"):
            if (run_dir / name).is_file():
                copy(name)
    else:
        kind = "model"
        for name in ("config.json", *TOKENIZER_FILES):
            if not (run_dir / name).is_file():
                raise FileNotFoundError(
                    f"{run_dir / name} is missing: a published model needs its config and item vocabulary "
                    "(model.save_pretrained and tokenizer.save_pretrained into the same folder)."
                )
        for name in _weight_files(run_dir):
            copy(name)
        for name in ("item_vocab.json", *OPTIONAL_FILES):
            if (run_dir / name).is_file():
                copy(name)
        config = read_json_file(run_dir / "config.json")
        if config.get("model_type") != "interest":
            raise ValueError(
                f"{run_dir / 'config.json'}: model_type is {config.get('model_type')!r}, expected 'interest'."
            )
        if len(vocabulary) != config.get("num_items"):
            raise ValueError(
                f"{run_dir / 'item_vocab.json'} has {len(vocabulary)} entries but config.json has num_items="
                f"{config.get('num_items')}: the vocabulary does not belong to these weights; nothing was published."
            )
        auto_map = dict(config.get("auto_map") or {})
        expected = dict(MODEL_AUTO_MAP)
        head = next((name for name in config.get("architectures") or [] if name in HEAD_AUTO_CLASSES), None)
        if head is not None:
            del expected["AutoModelForCausalLM"]
            expected[HEAD_AUTO_CLASSES[head]] = f"modeling_interest.{head}"
        added = [key for key in expected if key not in auto_map]
        if added:
            auto_map.update({key: expected[key] for key in added})
            config["auto_map"] = auto_map
            fixes.append(f"config.json: added auto_map entries {added}")
        (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tokenizer_config = read_json_file(run_dir / "tokenizer_config.json")
        if "AutoTokenizer" not in (tokenizer_config.get("auto_map") or {}):
            tokenizer_config["auto_map"] = {**(tokenizer_config.get("auto_map") or {}), **TOKENIZER_AUTO_MAP}
            fixes.append("tokenizer_config.json: added the AutoTokenizer auto_map entry")
        (output_dir / "tokenizer_config.json").write_text(
            json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        for name in CODE_FILES:
            if (run_dir / name).is_file():
                copy(name)
            else:
                shutil.copy2(PACKAGE_DIR / name, output_dir / name)
                fixes.append(f"{name}: copied from the installed hf_interest package")

    shutil.copy2(run_dir / "eval_results.json", output_dir / "eval_results.json")
    # the usage example in the card uses real item ids of this model
    example = [item for item in vocabulary or [] if item not in SPECIAL_TOKENS][:3] or None
    if eval_results.get("task") in HEAD_CLASSES:  # a click or forecasting head: its own card, from its own results
        head_model_card(eval_results, HEAD_CLASSES[eval_results["task"]], repo_id=repo_id).save(
            output_dir / "README.md"
        )
    else:
        space = run_dir / SPACE_LINK_FILE  # written by `hf-interest space --repo_id`: the card links to the Space
        space_id = json.loads(space.read_text(encoding="utf-8")).get("space_id") if space.is_file() else None
        card = render_model_card(
            eval_results,
            repo_id=repo_id,
            model_name=model_name,
            license=license,
            example_history=example,
            space_id=space_id,
        )
        card.save(output_dir / "README.md")
    if with_handler:
        _add_handler(run_dir, output_dir, kind)
    user_data = find_user_data(output_dir)
    if user_data:  # the allowlist above copies none: a guard against a future file that would
        raise ValueError(f"{output_dir} holds user-level data, so nothing was published: " + "; ".join(user_data))
    if with_user_data and (run_dir / "groups").is_dir():
        shutil.copytree(run_dir / "groups", output_dir / "groups")
        user_data = find_user_data(output_dir) or ["groups/ (per-user group assignments)"]
    files = sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file())
    return UploadFolder(path=output_dir, files=files, kind=kind, fixes=fixes, user_data=user_data)


def _add_handler(run_dir: Path, output_dir: Path, kind: str) -> None:
    """The ONNX export and the endpoint handler, written into the upload folder (a next-item model only)."""
    from transformers import AutoModelForCausalLM

    from .serving import export_onnx, write_handler
    from .tokenization_interest import ItemTokenizer

    if kind != "model":
        raise ValueError("--with_handler needs a full model folder: merge the adapter first (merge_and_unload).")
    model = AutoModelForCausalLM.from_pretrained(str(run_dir))
    if not hasattr(model, "recommend"):
        raise ValueError("--with_handler serves a next-item model; this run holds a click or forecasting head.")
    export_onnx(model.eval(), ItemTokenizer.from_pretrained(str(run_dir)), output_dir)
    write_handler(output_dir)


def push_to_hub(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    dry_run: str | Path | None = None,
    license: str = "apache-2.0",
    model_name: str | None = None,
    commit_message: str = "Upload hf_interest model",
    with_handler: bool = False,
    with_user_data: bool = False,
) -> UploadFolder | str:
    """
    Publishes a run folder to the Hub, or with `dry_run` writes exactly the folder that would be uploaded.

    Args:
        run_dir: the run folder (see `prepare_upload_folder`).
        repo_id: `ORG/NAME` on the Hub; created when it does not exist.
        private: create the repository as private.
        token: a Hub token; default from `hf auth login` or the `HF_TOKEN` environment variable.
        dry_run: a folder to write the upload into instead of uploading.
        license, model_name: for the model card.
        commit_message: the Hub commit message.
        with_handler: also the ONNX export and the Inference Endpoints handler (see `prepare_upload_folder`).
        with_user_data: also the run's user-level files (see `prepare_upload_folder`); off by default.

    Returns:
        the `UploadFolder` for a dry run, else the URL of the commit.
    """
    if dry_run is not None:
        return prepare_upload_folder(
            run_dir,
            dry_run,
            repo_id=repo_id,
            license=license,
            model_name=model_name,
            with_handler=with_handler,
            with_user_data=with_user_data,
        )
    token = token or get_token()
    if not token:
        raise RuntimeError(
            "No Hugging Face token found: run `hf auth login` or set the HF_TOKEN environment variable, "
            "or use --dry_run DIR to write the folder without uploading."
        )
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf_interest_upload_") as tmp:
        folder = prepare_upload_folder(
            run_dir,
            Path(tmp) / "upload",
            repo_id,
            license=license,
            model_name=model_name,
            with_handler=with_handler,
            with_user_data=with_user_data,
        )
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=str(folder.path), repo_id=repo_id, repo_type="model", commit_message=commit_message
        )
    return str(getattr(commit, "commit_url", commit))


__all__ = ["UploadFolder", "prepare_upload_folder", "push_to_hub"]
