"""Privacy (#24, first step): users kept out of training, and the membership-inference audit."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_interest_heads import NUM_ITEMS, build
from tiny import tiny_train_args

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import SyntheticConfig, generate_synthetic_interests
from hf_interest.privacy import membership_audit, membership_scores
from hf_interest.training.arguments import DataArguments, TrainArguments, check_arguments
from hf_interest.training.data import exclude_users

ITEMS = [f"i{index}" for index in range(NUM_ITEMS - 3)]


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
    run = subprocess.run(
        [sys.executable, "-m", "hf_interest.cli", "train", *tiny_train_args(), "--exclude_users_file", str(users),
         "--output_dir", str(folder)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}, timeout=600,
    )  # fmt: skip
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
