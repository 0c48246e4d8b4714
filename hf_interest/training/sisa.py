"""
Sharded training for exact forgetting (SISA: Bourtoule et al., 2021, "Machine Unlearning",
https://arxiv.org/abs/1912.03817): `train.py --num_shards S` trains S independent models, each on the users whose
hashed id falls in its shard (`hf_interest.privacy.user_shard`), each a whole run folder with its own checkpoints, and
evaluates their ensemble (`ShardEnsemble`: the mean of the shards' next-item log-probabilities) beside popularity.

`forget(run_dir, user_ids)` (`hf-interest forget RUN --users ...`) records the users in the run's deletion ledger
(HMAC-SHA256 of the ids under a secret key that never sits in the run folder) and retrains the shards that saw them
from scratch, with the same arguments and seed and without every user the ledger holds: the same weights, bit for
bit, as training that shard without those users, at the cost of the shards retrained (one of S for one user). Then
the ensemble is evaluated again.

Layout of a sharded run folder:
    RUN/sisa.json                 shards, users per shard, training seconds, the forget history
    RUN/eval_results.json         the ensemble's test and validation results beside popularity
    RUN/shards/shard_k/           the run folder of shard k (model, vocabulary, card, checkpoints)
    RUN/deletion_ledger.jsonl     who was forgotten when (keyed hashes of the ids), after a `forget`; its secret key
                                  lives outside the run folder (hf_interest.privacy.resolve_forget_key)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from accelerate import Accelerator

from ..metrics import format_results_table
from ..modeling_interest import InterestForNextItemPrediction
from ..privacy import DELETION_LEDGER, DeletionLedger, ShardEnsemble, find_user_data, resolve_forget_key
from ..tokenization_interest import ItemTokenizer
from .arguments import DataArguments, ModelArguments, TrainArguments, resolve_train_batch
from .checkpointing import write_text_atomic
from .data import load_data, next_item_dataloaders
from .evaluation import evaluate_next_item

SISA_FILE = "sisa.json"


def shard_folder(run_dir, index: int) -> Path:
    return Path(run_dir) / "shards" / f"shard_{index}"


def _shard_arguments(
    data_args, train_args, run_dir: Path, index: int, num_shards: int, ledger: Path | None, key_file=None
):
    has_ledger = ledger is not None and ledger.is_file()
    data = replace(
        data_args,
        user_shard=f"{index}/{num_shards}",
        deletion_ledger=str(ledger) if has_ledger else None,
        deletion_key_file=str(key_file) if has_ledger and key_file else None,
    )
    train = replace(train_args, num_shards=1, output_dir=str(shard_folder(run_dir, index)))
    # Every shard, and its retrain after a deletion, takes the same batch and learning rate whatever its size.
    return data, resolve_train_batch(train, None)[0]


def train_shards(
    data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments, train_one: Callable
) -> dict:
    """
    Trains the `--num_shards` shard models one after the other, then evaluates their ensemble; writes `sisa.json`
    and `eval_results.json` in `--output_dir`. (`check_arguments` has refused what sharding does not combine with.)

    Args:
        data_args, model_args, train_args: the run's arguments.
        train_one: the training of one run (`hf_interest.training.training_function`).

    Returns:
        `dict`: the ensemble's `eval_results.json`.
    """
    num_shards, run_dir = train_args.num_shards, Path(train_args.output_dir)
    ledger = run_dir / DELETION_LEDGER
    shards = []
    for index in range(num_shards):
        print(f"\n=== shard {index + 1} of {num_shards} (users whose hashed id is {index} mod {num_shards}) ===")
        shard_data, shard_train = _shard_arguments(data_args, train_args, run_dir, index, num_shards, ledger)
        started = time.perf_counter()
        results = train_one(shard_data, model_args, shard_train)
        shards.append(
            {
                "index": index,
                "folder": str(shard_folder(run_dir, index).relative_to(run_dir)),
                "train_users": results["dataset"]["statistics"]["train_rows"],
                "train_seconds": results["training"]["train_seconds"],
                "run_seconds": time.perf_counter() - started,
            }
        )
    sisa = {
        "num_shards": num_shards,
        "assignment": "sha256(user id)[:8 bytes] mod num_shards (hf_interest.privacy.user_shard)",
        "ensemble": "mean of the shard models' next-item log-probabilities",
        "shards": shards,
        "forgotten": [],
        "arguments": {"data": asdict(data_args), "model": asdict(model_args), "train": asdict(train_args)},
    }
    write_text_atomic(run_dir / SISA_FILE, json.dumps(sisa, indent=2) + "\n")
    return evaluate_ensemble(run_dir)


def _read_sisa(run_dir: Path) -> dict:
    path = Path(run_dir) / SISA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {SISA_FILE}: it is not a sharded run (train.py --num_shards S). A run trained whole "
            "forgets a user by retraining it whole: train again with --exclude_users_file."
        )
    return json.loads(path.read_text())


def _arguments(saved: dict) -> tuple[DataArguments, ModelArguments, TrainArguments]:
    return DataArguments(**saved["data"]), ModelArguments(**saved["model"]), TrainArguments(**saved["train"])


def load_ensemble(run_dir) -> tuple[ShardEnsemble, ItemTokenizer]:
    """The shard models of a sharded run as one `ShardEnsemble`, and their (shared) tokenizer."""
    sisa = _read_sisa(Path(run_dir))
    folders = [Path(run_dir) / shard["folder"] for shard in sisa["shards"]]
    models = [InterestForNextItemPrediction.from_pretrained(folder).eval() for folder in folders]
    return ShardEnsemble(models), ItemTokenizer.from_pretrained(folders[0])


def evaluate_ensemble(run_dir, key_file=None) -> dict:
    """Evaluates a sharded run's ensemble on every (not forgotten) user; writes and returns `eval_results.json`.
    `key_file`: the deletion ledger's key, where it is not found by the default rules (`resolve_forget_key`)."""
    run_dir = Path(run_dir)
    sisa = _read_sisa(run_dir)
    data_args, _, train_args = _arguments(sisa["arguments"])
    ledger = run_dir / DELETION_LEDGER
    if ledger.is_file():
        data_args = replace(data_args, deletion_ledger=str(ledger), deletion_key_file=key_file)
    ensemble, tokenizer = load_ensemble(run_dir)
    data = load_data(data_args, "next-item")
    loaders, popularity, stats = next_item_dataloaders(data, tokenizer, data_args, train_args)
    accelerator = Accelerator()
    results = {}
    for split in ("validation", "test"):
        results[split] = evaluate_next_item(
            ensemble,
            accelerator.prepare(loaders[split]),
            popularity,
            split,
            accelerator,
            use_timestamps=stats["has_timestamps"],
        )
    eval_results = {
        "task": "next-item-recommendation",
        "dataset": {
            "name": data_args.dataset,
            "statistics": {"users": data.report.users, "items": data.report.items, "events": data.report.events},
            "report": str(data.report),
        },
        "test": results["test"],
        "validation": results["validation"],
        "sisa": {key: sisa[key] for key in ("num_shards", "assignment", "ensemble", "shards")}
        | {"forgotten_users": _count_lines(ledger)},
    }
    write_text_atomic(run_dir / "eval_results.json", json.dumps(eval_results, indent=2) + "\n")
    for block in results["test"].values():
        print(format_results_table({"popularity": block["popularity"], "model": block["model"]}, block["protocol"]))
        print()
    print(f"Ensemble of {sisa['num_shards']} shard models: {run_dir} (sisa.json, shards/)")
    return eval_results


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.is_file() else 0


def forget(run_dir, user_ids, train_one: Callable, key_file=None) -> dict:
    """
    Forgets users of a sharded run exactly: records them in the deletion ledger (HMAC-SHA256 of their ids under a
    secret key kept outside the run folder), retrains each shard that saw one of them from scratch without every user
    the ledger holds (same arguments, same seed), then evaluates the ensemble again. The first `forget` of a run
    without a key creates one (`hf_interest.privacy.resolve_forget_key`); a ledger already keyed and a missing or
    different key is an error, never a new key that would recognise nobody. Lines of an older, unkeyed ledger are
    rewritten under the key. Files of the run folder that still name a forgotten user (a `groups/` computed before)
    are listed.

    Args:
        run_dir: the folder of a run trained with `--num_shards`.
        user_ids (iterable): raw user ids; each must be a user of the run's data (a clear error names the others).
        train_one: the training of one run (`hf_interest.training.training_function`).
        key_file (*optional*): the ledger's key file, where the default rules do not find it.

    Returns:
        `dict`: `{"forgotten": n, "already_forgotten": m, "shards_retrained": [...], "retrain_seconds": s,
        "full_training_seconds": t, "cost_ratio": s / t, "eval_results": ..., "traces": [files still naming them]}`.
    """
    run_dir = Path(run_dir)
    sisa = _read_sisa(run_dir)
    num_shards = sisa["num_shards"]
    data_args, model_args, train_args = _arguments(sisa["arguments"])
    requested = [str(user) for user in user_ids]
    if not requested:
        raise ValueError("forget: no user id given (--users ID [ID ...] or --users_file FILE).")
    data = load_data(data_args, "next-item")  # every user the run was given, forgotten or not
    known = set()
    for dataset in data.sequences.values():
        known.update(str(user) for user in dataset["user_id"])
    unknown = sorted(set(requested) - known)
    if unknown:
        raise ValueError(
            f"forget: {len(unknown)} of {len(set(requested))} ids are not users of {data_args.dataset} (e.g. "
            f"{unknown[:5]}); nothing was changed. Check the ids (raw user ids, as in the log's user column)."
        )
    ledger_path = run_dir / DELETION_LEDGER
    key = resolve_forget_key(key_file, run_dir=run_dir)
    if key is None:
        DeletionLedger(ledger_path)  # a ledger keyed already, and no key: an error, not a new key that knows nobody
        key = resolve_forget_key(key_file, run_dir=run_dir, create=True)
    ledger = DeletionLedger(ledger_path, key)
    ledger.upgrade(known)
    entries = ledger.append(requested, num_shards)
    shards = sorted({entry["shard"] for entry in entries})
    retrain_seconds = retrain_train_seconds = 0.0
    for index in shards:
        shard_data, shard_train = _shard_arguments(
            data_args, train_args, run_dir, index, num_shards, ledger.path, key_file
        )
        target = shard_folder(run_dir, index)
        fresh = run_dir / "shards" / ".retrain" / target.name  # the same folder name: the same card
        shutil.rmtree(fresh, ignore_errors=True)
        print(f"\n=== forgetting: retraining shard {index} of {num_shards} without the ledger's users ===")
        started = time.perf_counter()
        results = train_one(shard_data, model_args, replace(shard_train, output_dir=str(fresh)))
        retrain_seconds += time.perf_counter() - started
        retrain_train_seconds += results["training"]["train_seconds"]
        shutil.rmtree(target)
        fresh.rename(target)
        fresh.parent.rmdir()
        sisa["shards"][index].update(train_users=results["dataset"]["statistics"]["train_rows"])
    full_seconds = sum(shard["run_seconds"] for shard in sisa["shards"])
    full_train_seconds = sum(shard["train_seconds"] for shard in sisa["shards"])
    record = {
        "forgotten_at": entries[0]["forgotten_at"] if entries else None,
        "users": len(entries),
        "shards_retrained": shards,
        "retrain_seconds": retrain_seconds,  # the shard runs: data, training, validation, test, writing
        "full_training_seconds": full_seconds,
        "retrain_train_seconds": retrain_train_seconds,  # training steps only
        "full_train_seconds": full_train_seconds,
    }
    sisa["forgotten"].append(record)
    write_text_atomic(run_dir / SISA_FILE, json.dumps(sisa, indent=2) + "\n")
    started = time.perf_counter()
    eval_results = evaluate_ensemble(run_dir, key_file) if shards else None
    evaluation_seconds = time.perf_counter() - started
    traces = [line for line in find_user_data(run_dir, requested) if not line.startswith(DELETION_LEDGER)]
    if traces:
        print(
            "These files of the run folder still name forgotten users; regenerate them (e.g. `hf-interest groups`) "
            "or delete them:\n  " + "\n  ".join(traces)
        )
    print(
        f"Forgot {len(entries)} users ({len(requested) - len(entries)} already forgotten): retrained shards {shards} "
        f"of {num_shards} in {retrain_seconds:.1f} s (training all {num_shards} took {full_seconds:.1f} s; training "
        f"steps alone {retrain_train_seconds:.1f} s of {full_train_seconds:.1f} s), then evaluated the ensemble again "
        f"in {evaluation_seconds:.1f} s; the ledger {ledger.path} records them by a keyed hash (key: {key.source})."
    )
    return {
        "forgotten": len(entries),
        "already_forgotten": len(requested) - len(entries),
        "shards_retrained": shards,
        "retrain_seconds": retrain_seconds,
        "full_training_seconds": full_seconds,
        "cost_ratio": retrain_seconds / full_seconds if full_seconds else None,
        "train_cost_ratio": retrain_train_seconds / full_train_seconds if full_train_seconds else None,
        "evaluation_seconds": evaluation_seconds,
        "eval_results": eval_results,
        "traces": traces,
    }


__all__ = ["evaluate_ensemble", "forget", "load_ensemble", "shard_folder", "train_shards"]
