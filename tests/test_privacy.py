"""Privacy (#24): users kept out of training, the membership-inference audit, and user-level DP-SGD."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_interest_heads import GATE_COMBINATIONS, GATE_IDS, NUM_ITEMS, build
from tiny import tiny_config, tiny_train_args

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import SyntheticConfig, generate_synthetic_interests
from hf_interest.privacy import membership_audit, membership_scores
from hf_interest.training.arguments import DataArguments, ModelArguments, TrainArguments, check_arguments
from hf_interest.training.data import exclude_users

ITEMS = [f"i{index}" for index in range(NUM_ITEMS - 3)]


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "hf_interest_cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"},
    )  # fmt: skip


def test_excluded_users_leave_every_split():
    data = generate_synthetic_interests(SyntheticConfig.small()).to_behavior_data()
    users = [str(user) for user in data.sequences["train"]["user_id"]][:5]
    kept, counts = exclude_users(data, users)
    for split, dataset in kept.sequences.items():
        assert not {str(user) for user in dataset["user_id"]} & set(users)
        assert len(dataset) == len(data.sequences[split]) - counts["rows_removed"][split]
    assert counts["users"] == 5 and counts["rows_removed"]["train"] == 5
    assert "excluded 5 users" in kept.report.notes[-1]
    assert kept.items.num_rows == data.items.num_rows  # the vocabulary is unchanged
    with pytest.raises(ValueError, match="not users of the data"):
        exclude_users(data, ["no-such-user"])


def test_training_without_some_users(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("3\n17\n")
    folder = tmp_path / "run"
    run = _cli("train", *tiny_train_args(), "--exclude_users_file", str(users), "--output_dir", str(folder))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "excluded 2 users (--exclude_users_file): rows removed train 2, validation 2, test 2" in run.stdout
    results = json.loads((folder / "eval_results.json").read_text())
    assert {block["model"]["num_users"] for block in results["test"].values()} == {38}  # 40 synthetic users - 2


def test_exclude_users_file_is_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="--exclude_users_file"):
        DataArguments(dataset="synthetic", exclude_users_file=str(tmp_path / "missing.txt"))
    listed = tmp_path / "users.txt"
    listed.write_text("1\n")
    with pytest.raises(ValueError, match="--exclude_users_file"):
        check_arguments(
            DataArguments(dataset="synthetic", exclude_users_file=str(listed)),
            TrainArguments(task="click", output_dir=str(tmp_path / "run"), metric_for_best_model="ndcg@10"),
        )


def test_membership_scores_are_the_mean_next_item_log_likelihood():
    model = build(InterestForNextItemPrediction)
    tokenizer = ItemTokenizer.from_items(ITEMS)
    histories = [["i3", "i7", "i1", "i12"], ["i5", "i2"], ["i9"]]
    times = [[10, 20, 30, 40], [5, 6], [7]]
    scores = membership_scores(model, tokenizer, histories, times)
    ids = torch.tensor([tokenizer.encode_items(histories[0])])
    with torch.no_grad():
        logits = model(input_ids=ids, timestamps=torch.tensor([times[0]])).logits[0].float()
    logits[:, :3] = float("-inf")
    expected = logits[:-1].log_softmax(-1).gather(1, ids[0, 1:, None]).mean()
    assert scores[0] == pytest.approx(float(expected), abs=1e-5)
    assert np.isfinite(scores[1]) and np.isnan(scores[2])  # one event: nothing to predict


def test_membership_audit_auc_and_interval():
    rng = np.random.default_rng(0)
    members, others = rng.normal(0.3, 1, 300), rng.normal(0.0, 1, 200)
    result = membership_audit(np.r_[members, np.nan], others, n_bootstrap=300, seed=1)
    labels = np.r_[np.ones(300), np.zeros(200)]
    assert result["auc"] == pytest.approx(roc_auc_score(labels, np.r_[members, others]))
    assert result["low"] < result["auc"] < result["high"] and result["left_out"] == 1
    same = membership_audit(rng.normal(0, 1, 300), rng.normal(0, 1, 300), n_bootstrap=300, seed=2)
    assert same["low"] < 0.5 < same["high"]  # no signal: the interval holds chance
    assert membership_audit([2.0, 3.0], [0.0, 1.0], n_bootstrap=10)["auc"] == 1.0
    with pytest.raises(ValueError, match="members and non-members"):
        membership_audit([np.nan], [1.0])


def _rows_batch(seed: int = 0):
    """Four left-padded rows of different lengths, one with no label at all, with times."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, NUM_ITEMS, (4, 8), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :3] = mask[1, :6] = 0
    ids[mask == 0] = 0
    labels = torch.roll(ids, -1, 1)
    labels[:, -1] = -100
    labels[mask == 0] = -100
    labels[2] = -100  # a row without a target: its loss and gradient are zero
    labels[3, 2] = labels[3, 1]  # a target already in the history (a repeat: loss_exclude_seen leaves it out)
    times = torch.cumsum(torch.randint(0, 5000, (4, 8), generator=generator), 1)
    return {"input_ids": ids, "attention_mask": mask, "timestamps": times, "labels": labels}


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_per_user_loss_is_the_mean_of_each_users_own_loss(exclude_seen):
    """DP-SGD's loss (`private.per_user_loss`) against the model's own loss of each row alone: the same exclusions,
    each user weighed once."""
    from hf_interest.training.private import per_user_loss

    model = build(InterestForNextItemPrediction, loss_exclude_seen=exclude_seen)
    batch = _rows_batch()
    with torch.no_grad():
        users = per_user_loss(model, model, batch)
        alone = [model(**{k: v[i : i + 1] for k, v in batch.items()}).loss for i in (0, 1, 3)]
        positions = model(**batch).loss
    assert users == pytest.approx(float(sum(alone)) / 4, rel=1e-5)  # row 2 has no target: it counts zero
    assert not torch.isclose(users, positions)  # the model's own loss weighs rows by their targets


@pytest.mark.parametrize(("long", "short"), GATE_COMBINATIONS, ids=GATE_IDS)
def test_per_user_gradients_equal_per_row_autograd(long, short):
    """opacus's per-row gradients (with the long-term query's own rule) against autograd on each row alone, for every
    parameter, tied item vectors and the seen-item exclusion included."""
    from opacus.grad_sample import GradSampleModule

    from hf_interest.training.private import per_user_loss, register_grad_samplers

    register_grad_samplers()
    model = build(InterestForNextItemPrediction, long=long, short=short, hidden_dropout_prob=0.0).double().train()
    assert model.item_head.weight is model.model.item_embeddings.weight  # tied
    batch = _rows_batch(seed=1)
    wrapped = GradSampleModule(model, loss_reduction="mean")
    per_user_loss(model, wrapped, batch).backward()  # as training calls it
    per_row = {name: p.grad_sample.clone() for name, p in model.named_parameters()}
    wrapped.disable_hooks()
    names = [name for name, _ in model.named_parameters()]
    checked = 0
    for row in range(4):
        loss = per_user_loss(model, model, {k: v[row : row + 1] for k, v in batch.items()})
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        expected = {n: (torch.zeros_like(p) if g is None else g) for (n, p), g in zip(model.named_parameters(), grads)}
        scale = torch.cat([g.flatten() for g in expected.values()]).norm()
        for name in names:
            got, want = per_row[name][row], expected[name]
            if row == 2:  # no target: nothing to learn from this user
                assert got.abs().max() == 0, name
            elif want.norm() > 1e-9 * scale:
                assert (got - want).norm() <= 1e-5 * want.norm(), name
                checked += 1
            else:  # zero in exact arithmetic (e.g. a key bias: softmax ignores a shift common to all keys)
                assert got.norm() <= 1e-9 * scale, name
    assert checked >= 3 * (len(names) - 6)
    if long:
        assert "model.long_short_term.long_term_query" in names


def test_dp_flags_are_checked(tmp_path):
    run = str(tmp_path / "run")
    with pytest.raises(ValueError, match="--dp_epsilon must be positive"):
        TrainArguments(output_dir=run, dp_epsilon=0.0)
    with pytest.raises(ValueError, match="--dp_epsilon must be positive"):
        TrainArguments(output_dir=run, dp_epsilon=-1.0)
    with pytest.raises(ValueError, match="pass one"):
        TrainArguments(output_dir=run, dp_epsilon=4.0, dp_noise_multiplier=1.0)
    with pytest.raises(ValueError, match="--dp_noise_multiplier must be positive"):
        TrainArguments(output_dir=run, dp_noise_multiplier=0.0)
    with pytest.raises(ValueError, match="--dp_delta must be in"):
        TrainArguments(output_dir=run, dp_epsilon=4.0, dp_delta=1.0)
    with pytest.raises(ValueError, match="--dp_max_grad_norm must be positive"):
        TrainArguments(output_dir=run, dp_epsilon=4.0, dp_max_grad_norm=0.0)
    with pytest.raises(ValueError, match="pass --dp_epsilon"):
        TrainArguments(output_dir=run, dp_delta=1e-5)  # a DP setting without DP
    with pytest.raises(ValueError, match="--dp_accountant"):
        TrainArguments(output_dir=run, dp_epsilon=4.0, dp_accountant="moments")
    data = DataArguments(dataset="synthetic")
    for train, model, flag in [
        ({"task": "click", "metric_for_best_model": "ndcg@10"}, {}, "--task"),
        ({"lora_r": 4, "init_from": str(tmp_path)}, {}, "--lora_r"),
        ({"item_table_updates": "lazy"}, {}, "--item_table_updates lazy"),
        ({"gradient_accumulation_steps": 2}, {}, "--gradient_accumulation_steps"),
        ({"resume_from_checkpoint": "latest"}, {}, "--resume_from_checkpoint"),
        ({}, {"loss_type": "sampled_softmax"}, "--loss_type sampled_softmax"),
        ({}, {"item_representation": "id+text"}, "--item_representation"),
        ({}, {"item_output_residual": True}, "--item_output_residual"),
        ({}, {"item_transition_prior": True}, "--item_transition_prior"),
    ]:
        with pytest.raises(ValueError, match="does not combine with") as error:
            check_arguments(data, TrainArguments(output_dir=run, dp_epsilon=4.0, **train), ModelArguments(**model))
        assert flag in str(error.value)
    check_arguments(data, TrainArguments(output_dir=run, dp_epsilon=4.0), ModelArguments())  # the plain case passes
    with pytest.raises(ValueError, match="--num_shards 4 .* does not combine with --dp_epsilon"):
        check_arguments(data, TrainArguments(output_dir=run, dp_epsilon=4.0, num_shards=4), ModelArguments())
    with pytest.raises(ValueError, match="--user_shard"):
        check_arguments(
            DataArguments(dataset="synthetic", user_shard="0/2"), TrainArguments(output_dir=run, num_shards=2)
        )
    with pytest.raises(ValueError, match="--user_shard must be 'k/S'"):
        DataArguments(dataset="synthetic", user_shard="2/2")
    with pytest.raises(ValueError, match="--num_shards must be at least 1"):
        TrainArguments(output_dir=run, num_shards=0)


def test_private_training_end_to_end(tmp_path):
    folder = tmp_path / "run"
    run = _cli("train", *tiny_train_args(80, 16, 3), "--dp_epsilon", "4", "--output_dir", str(folder))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "DP-SGD (user level): 80 users, one row each, Poisson-sampled at rate 0.2000" in run.stdout
    results = json.loads((folder / "eval_results.json").read_text())
    privacy = results["differential_privacy"]
    assert privacy["unit"] == "user" and privacy["rows_per_user"] == 1 and privacy["users"] == 80
    assert 3.0 < privacy["epsilon"] <= 4.0 + 1e-6  # the noise was set to spend the budget, not more
    assert privacy["delta"] == pytest.approx(1 / 80) and privacy["steps"] == 3 * 5
    assert results["training"]["best_epoch"] == results["training"]["epochs_run"] == 3  # the last epoch is kept
    assert results["training"]["one_row_per_user"]["users_without_target"] == 0
    card = (folder / "README.md").read_text()
    assert "differential privacy" in card.lower() and f"{privacy['epsilon']:.2f}" in card
    info = _cli("info", str(folder))
    assert info.returncode == 0 and f"epsilon {privacy['epsilon']:.2f}" in info.stdout


def test_user_shards_and_the_deletion_ledger(tmp_path):
    from hf_interest.privacy import DeletionLedger, ForgetKey, user_shard

    users = [str(user) for user in range(2000)]
    counts = np.bincount([user_shard(user, 4) for user in users], minlength=4)
    assert counts.sum() == 2000 and counts.min() > 400  # a hash spreads users evenly
    assert user_shard("196", 4) == user_shard(196, 4) == 3  # the id as text; the same on every machine
    key = ForgetKey(bytes(range(32)), "test")
    ledger = DeletionLedger(tmp_path / "deletion_ledger.jsonl", key)
    first = ledger.append(["196", "305"], num_shards=4)
    again = ledger.append(["305", "7", "7"], num_shards=4)
    assert [entry["user_hmac"] for entry in first + again] == [key.user_hmac(u) for u in ("196", "305", "7")]
    assert [entry["shard"] for entry in first] == [user_shard("196", 4), user_shard("305", 4)]
    assert {entry["key_id"] for entry in ledger.entries()} == {key.key_id}
    text = ledger.path.read_text()
    assert len(ledger.entries()) == 3 and "196" not in text.replace(key.user_hmac("196"), "")  # no raw id stored
    recorded = DeletionLedger(ledger.path, key).user_filter()
    assert [recorded(u) for u in ("196", 305, "7", "8")] == [True, True, True, False]
    with pytest.raises(ValueError, match="num_shards"):
        user_shard("1", 0)


def _enumerate(ledger_text: str, candidates) -> set[str]:
    """What an attacker holding the run folder, but not the key, recovers from a ledger: every candidate id hashed the
    ways an unkeyed ledger could (this library's old prefix, plain SHA-256, SHA-256 of the id's bytes)."""
    import hashlib

    lines = ledger_text
    found = set()
    for user in candidates:
        for digest in (
            hashlib.sha256(f"hf_interest-forget:{user}".encode()).hexdigest(),
            hashlib.sha256(str(user).encode()).hexdigest(),
        ):
            if digest in lines:
                found.add(str(user))
    return found


def test_a_keyed_ledger_recovers_nobody_by_enumeration(tmp_path):
    """#36: the old ledger's hash gave users 5 and 7 back by hashing 0..999,999; a keyed ledger gives nobody, yet the
    key's holder still recognises them."""
    from hf_interest.privacy import DeletionLedger, ForgetKey, user_hash

    key = ForgetKey(bytes.fromhex("5e" * 32), "test")
    ledger = DeletionLedger(tmp_path / "deletion_ledger.jsonl", key)
    ledger.append(["5", "7"], num_shards=2)
    assert _enumerate(ledger.path.read_text(), range(1_000_000)) == set()
    recorded = DeletionLedger(ledger.path, key).user_filter()
    assert recorded("5") and recorded("7") and not recorded("6")
    # the attack works, on the unkeyed lines older versions wrote: the check itself can fail
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"user_hash": user_hash(u), "shard": 0}) + "\n" for u in ("5", "7")))
    assert _enumerate(old.read_text(), range(1_000)) == {"5", "7"}

    other = ForgetKey(bytes.fromhex("a1" * 32), "other")
    assert key.user_hmac("5") != other.user_hmac("5")  # the same id under two keys: two different lines
    second = DeletionLedger(tmp_path / "second.jsonl", other)
    second.append(["5"], num_shards=2)
    assert second.entries()[0]["user_hmac"] != ledger.entries()[0]["user_hmac"]


def test_a_lost_or_wrong_key_is_an_error_and_old_ledgers_are_upgraded(tmp_path, caplog):
    from hf_interest.privacy import DeletionLedger, ForgetKey, resolve_forget_key, user_hash

    path = tmp_path / "run" / "deletion_ledger.jsonl"
    path.parent.mkdir()
    key = resolve_forget_key(run_dir=path.parent, create=True)
    key_file = Path(key.source)  # the default place: under XDG_CONFIG_HOME (set per test in conftest)
    assert key_file == Path(os.environ["XDG_CONFIG_HOME"]) / "hf_interest" / "forget.key" and key_file.is_file()
    assert key_file.stat().st_mode & 0o777 == 0o600 and key_file.parent.stat().st_mode & 0o777 == 0o700
    assert resolve_forget_key(run_dir=path.parent) == key  # found again at the default place
    DeletionLedger(path, key).append(["3"], num_shards=2)
    with pytest.raises(ValueError, match="no key was found"):
        DeletionLedger(path, None)
    with pytest.raises(ValueError, match="wrong key would recognise none"):
        DeletionLedger(path, ForgetKey(b"x" * 32, "a wrong key"))
    inside = path.parent / "forget.key"
    inside.write_text("00" * 32)
    with pytest.raises(ValueError, match="inside the run folder"):
        resolve_forget_key(inside, run_dir=path.parent)
    garbled = tmp_path / "garbled.key"
    garbled.write_text("not hex")
    with pytest.raises(ValueError, match="not hex"):
        resolve_forget_key(garbled)

    old = tmp_path / "old" / "deletion_ledger.jsonl"
    old.parent.mkdir()
    old.write_text(
        "".join(
            json.dumps({"forgotten_at": "2026-01-01T00:00:00Z", "user_hash": user_hash(u), "shard": 1}) + "\n"
            for u in ("4", "9", "gone")
        )
    )
    with caplog.at_level("WARNING", logger="hf_interest.privacy"):
        legacy = DeletionLedger(old, key)
    assert "unkeyed SHA-256" in caplog.text and "recover those users" in caplog.text
    assert legacy.user_filter()("4")  # still honoured before the upgrade
    assert legacy.upgrade(["1", "4", "9"]) == {"upgraded": 2, "dropped": 1}
    entries = legacy.entries()
    assert [entry["user_hmac"] for entry in entries] == [key.user_hmac("4"), key.user_hmac("9")]
    assert {entry["forgotten_at"] for entry in entries} == {
        "2026-01-01T00:00:00Z"
    } and "user_hash" not in old.read_text()
    assert _enumerate(old.read_text(), [str(u) for u in range(100)] + ["gone"]) == set()


def test_forget_retrains_one_shard_bit_for_bit(tmp_path):
    from safetensors.torch import load_file

    from hf_interest.privacy import user_shard

    run = tmp_path / "sisa"
    trained = _cli("train", *tiny_train_args(60, 16, 2), "--num_shards", "2", "--output_dir", str(run))
    assert trained.returncode == 0, trained.stderr[-3000:]
    sisa = json.loads((run / "sisa.json").read_text())
    assert [shard["train_users"] for shard in sisa["shards"]] == [
        sum(user_shard(u, 2) == k for u in range(60)) for k in (0, 1)
    ]
    before = json.loads((run / "eval_results.json").read_text())
    assert before["test"]["exclude_seen"]["model"]["num_users"] == 60  # the ensemble serves every user

    forgotten = "17"
    shard = user_shard(forgotten, 2)
    other = (run / "shards" / f"shard_{1 - shard}" / "model.safetensors").read_bytes()
    missing = _cli("forget", str(run), "--users", forgotten, "no-such-user")
    assert missing.returncode == 2 and "not users of synthetic" in missing.stderr
    assert not (run / "deletion_ledger.jsonl").exists()  # nothing was changed
    (run / "groups").mkdir()  # a user-level file computed before the forget (as `hf-interest groups` writes one)
    (run / "groups" / "groups.json").write_text(json.dumps({"user_ids": ["3", forgotten], "labels": [0, 1]}))
    done = _cli("forget", str(run), "--users", forgotten)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"retrained shards [{shard}] of 2" in done.stdout
    key_file = Path(os.environ["XDG_CONFIG_HOME"]) / "hf_interest" / "forget.key"
    assert f"Created the deletion-ledger key {key_file} (mode 0600)" in done.stdout
    assert "still name forgotten users" in done.stdout and "groups/groups.json: names 1 user ids" in done.stdout
    assert (run / "shards" / f"shard_{1 - shard}" / "model.safetensors").read_bytes() == other  # untouched
    after = json.loads((run / "eval_results.json").read_text())
    assert after["test"]["exclude_seen"]["model"]["num_users"] == 59 and after["sisa"]["forgotten_users"] == 1
    ledger_text = (run / "deletion_ledger.jsonl").read_text()
    assert forgotten not in ledger_text.split('"') and '"user_hmac"' in ledger_text
    assert _enumerate(ledger_text, range(1_000_000)) == set()  # 1M candidate ids: nobody recovered
    assert not any(run.rglob("*.key"))
    lost = _cli("forget", str(run), "--users", "3", "--key_file", str(tmp_path / "elsewhere.key"))
    assert lost.returncode == 2 and "no key was found" in lost.stderr  # not a new key that forgets 17 again
    assert (run / "deletion_ledger.jsonl").read_text() == ledger_text and not (tmp_path / "elsewhere.key").exists()

    # The same shard trained from scratch without the user, by the other road (--exclude_users_file): the same weights.
    listed = tmp_path / "forget.txt"
    listed.write_text(forgotten + "\n")
    reference = tmp_path / "reference"
    retrained = _cli("train", *tiny_train_args(60, 16, 2), "--user_shard", f"{shard}/2", "--exclude_users_file",
                     str(listed), "--output_dir", str(reference))  # fmt: skip
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    mine = load_file(run / "shards" / f"shard_{shard}" / "model.safetensors")
    theirs = load_file(reference / "model.safetensors")
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in mine)  # bit for bit
    again = _cli("forget", str(run), "--users", forgotten)
    assert again.returncode == 0 and "Forgot 0 users (1 already forgotten)" in again.stdout


def test_serving_forgets_a_user_with_their_history():
    """The model holds no per-user parameter: a user exists for it only through the history passed in, so deleting the
    stored history forgets them at inference exactly (the recommendations are those of an unknown user)."""
    model = build(InterestForNextItemPrediction)
    assert not any("user" in name for name, _ in model.named_parameters())
    assert all(NUM_ITEMS in p.shape or p.dim() < 2 or max(p.shape) <= 64 for p in model.parameters())
    tokenizer = ItemTokenizer.from_items(ITEMS)
    stored = {"u1": ["i3", "i7", "i1"], "u2": ["i5"]}
    served = model.recommend(**tokenizer([stored["u1"]], return_tensors="pt"), top_k=5)
    del stored["u1"]  # the deletion request, on the serving side
    unknown = model.recommend(**tokenizer([stored.get("u1", [])], return_tensors="pt"), top_k=5)
    empty = model.recommend(**tokenizer([[]], return_tensors="pt"), top_k=5)
    assert torch.equal(unknown.item_ids, empty.item_ids) and not torch.equal(served.item_ids, empty.item_ids)


def test_published_artifacts_hold_no_user_data(tmp_path):
    """Every artifact meant for publishing (the upload folder with its card and eval_results.json, a Space folder) is
    checked for the data's user ids and per-user data; the run's groups (user ids and their group) stay behind unless
    asked for."""
    from hf_interest.privacy import find_user_data

    rng = np.random.default_rng(0)
    users = [f"cust-7f3a-{index:03d}" for index in range(40)]
    lines = ["user_id,item_id,timestamp"]
    for user in users:
        times = np.sort(rng.integers(1_600_000_000, 1_700_000_000, 15))
        lines += [f"{user},item{rng.integers(0, 30)},{time}" for time in times]
    log = tmp_path / "log.csv"
    log.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    args = [a if a != "synthetic" else str(log) for a in tiny_train_args(40, 16, 1)]
    trained = _cli("train", *args, "--output_dir", str(run))
    assert trained.returncode == 0, trained.stderr[-3000:]
    grouped = _cli("groups", str(run), "--dataset", str(log), "--num_groups", "2")
    assert grouped.returncode == 0, grouped.stderr[-3000:]
    assert find_user_data(run / "groups", users)  # the groups are user-level: found by both checks
    assert any("per-user values" in line for line in find_user_data(run / "groups"))

    upload = tmp_path / "upload"
    pushed = _cli("push", str(run), "--repo_id", "org/model", "--dry_run", str(upload))
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert not (upload / "groups").exists() and "USER-LEVEL" not in pushed.stdout
    assert find_user_data(upload, users) == []  # card, eval_results.json, config, vocabulary, weights' neighbours
    asked = _cli("push", str(run), "--repo_id", "org/model", "--dry_run", str(tmp_path / "asked"), "--with_user_data")
    assert asked.returncode == 0 and (tmp_path / "asked" / "groups" / "groups.json").is_file()
    assert "USER-LEVEL DATA (asked for with --with_user_data): groups/groups.json" in asked.stdout

    space = tmp_path / "space"
    written = _cli("space", str(run), "--model_repo", "org/model", "--dry_run", str(space), "--with_items")
    assert written.returncode == 0, written.stderr[-3000:]
    assert find_user_data(space, users) == []
    (run / "deletion_ledger.jsonl").write_text("{}\n")
    assert any("deletion ledger" in line for line in find_user_data(run))


def test_shard_ensemble_averages_log_probabilities_and_audit_scores_both_groups():
    from hf_interest.privacy import ShardEnsemble, audit

    first, second = build(InterestForNextItemPrediction, seed=0), build(InterestForNextItemPrediction, seed=5)
    batch = {k: v for k, v in _rows_batch().items() if k != "labels"}
    with torch.no_grad():
        mixed = ShardEnsemble([first, second])(**batch, logits_to_keep=1).logits
        a, b = (m(**batch, logits_to_keep=1).logits.float().log_softmax(-1) for m in (first, second))
        alone = ShardEnsemble([first])(**batch).logits
    torch.testing.assert_close(mixed, (a + b) / 2)
    torch.testing.assert_close(alone[:, -1:], a)
    with pytest.raises(ValueError, match="one vocabulary"):
        ShardEnsemble([first, build(InterestForNextItemPrediction, num_items=NUM_ITEMS + 1)])
    tokenizer = ItemTokenizer.from_items(ITEMS)
    histories = [["i3", "i7", "i1", "i12"], ["i5", "i2", "i9"], ["i4", "i6"], ["i8", "i10", "i11"]]
    result = audit(ShardEnsemble([first, second]), tokenizer, histories[:2], histories[2:], n_bootstrap=20)
    expected = membership_scores(ShardEnsemble([first, second]), tokenizer, histories)
    assert result["auc"] == pytest.approx(float(np.mean([m > o for m in expected[:2] for o in expected[2:]])))


def test_dp_sgd_refuses_a_model_with_a_transition_prior():
    """An `--init_from` model brings its own config: a transition prior (counts of every user's pairs) is refused."""
    from hf_interest.training.private import check_private_model

    model = InterestForNextItemPrediction(tiny_config(item_transition_prior=True))
    with pytest.raises(ValueError, match="DP-SGD cannot train this model: .*item_transition_prior=True"):
        check_private_model(model)


def test_the_transition_priors_counts_leave_out_excluded_users(tmp_path):
    """The transition prior's pair counts (saved with the weights) come from the data the run trains on: a user left
    out with --exclude_users_file (as `forget` and the deletion ledger do) is in none of them."""
    from collections import Counter

    from hf_interest.data import encode_sequences
    from hf_interest.training import load_data

    users = tmp_path / "users.txt"
    users.write_text("3\n17\n")
    world = ("--synthetic_successor_probability", "0.6", "--item_transition_prior", "true", "--max_steps", "1")
    folder = tmp_path / "run"
    run = _cli("train", *tiny_train_args(), *world, "--exclude_users_file", str(users), "--output_dir", str(folder))
    assert run.returncode == 0, run.stderr[-3000:]
    model = InterestForNextItemPrediction.from_pretrained(folder)
    prior = model.transition_prior
    saved = {
        (a, int(b)): float(c)
        for a in range(model.config.num_items)
        for b, c in zip(
            prior.next_items[prior.row_starts[a] : prior.row_starts[a + 1]],
            prior.counts[prior.row_starts[a] : prior.row_starts[a + 1]],
        )
    }
    tokenizer = ItemTokenizer.from_pretrained(folder)

    def training_pairs(exclude_users_file=None) -> Counter:
        data_args = DataArguments(dataset="synthetic", synthetic_num_users=40, synthetic_num_items=30,
                                  synthetic_successor_probability=0.6, exclude_users_file=exclude_users_file)  # fmt: skip
        encoded, _ = encode_sequences(load_data(data_args).sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
        return Counter(
            (a, b)
            for sequence in encoded["train"]["input_ids"]
            for a, b in zip(sequence[:-1], sequence[1:])
            if a >= 3 and b >= 3
        )

    assert saved == {pair: float(count) for pair, count in training_pairs(str(users)).items()}
    assert saved != {pair: float(count) for pair, count in training_pairs().items()}  # the two users had pairs
