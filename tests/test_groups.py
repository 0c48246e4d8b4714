"""User groups: interest vectors, k-means by silhouette, descriptions, migration between time windows, save/load, CLI."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import generate_synthetic_interests
from hf_interest.groups import (
    UserGroups,
    describe_groups,
    discover_groups,
    group_migration,
    interest_vectors,
    migration_matrix,
    plot_groups,
    plot_migration,
)
from hf_interest_cli import main


@pytest.fixture(scope="module")
def setup(tiny_run):
    model = InterestForNextItemPrediction.from_pretrained(tiny_run).eval()
    tokenizer = ItemTokenizer.from_pretrained(tiny_run)
    data = generate_synthetic_interests(num_users=40, num_items=30, seed=0).to_behavior_data()
    rows = data.sequences["test"]
    return model, tokenizer, data, rows


def test_vectors_are_the_forward_pass_states(setup):
    model, tokenizer, _, rows = setup
    histories, times = rows["item_ids"][:5], rows["timestamps"][:5]
    last = interest_vectors(model, tokenizer, histories, times, batch_size=2)
    mean = interest_vectors(model, tokenizer, histories, times, pooling="mean")
    assert last.shape == (5, model.config.hidden_size) and last.dtype == np.float32
    for i in range(5):
        batch = tokenizer([histories[i]], timestamps=[times[i]], return_tensors="pt", truncation=True)
        with torch.no_grad():
            states = model.model(**batch).last_hidden_state[0]
        np.testing.assert_allclose(last[i], states[-1].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mean[i], states.mean(0).numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(last, mean)


def test_empty_history_gives_zero_vector_and_bad_pooling_fails(setup):
    model, tokenizer, _, rows = setup
    vectors = interest_vectors(model, tokenizer, [[], rows["item_ids"][0]])
    assert np.all(vectors[0] == 0) and np.any(vectors[1] != 0)
    with pytest.raises(ValueError, match="pooling"):
        interest_vectors(model, tokenizer, [["a"]], pooling="max")


def _blobs(seed=0, k=3, per=30, dims=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dims)) * 5
    return np.concatenate([c + rng.normal(size=(per, dims)) * 0.3 for c in centres]).astype(np.float32)


def test_silhouette_picks_the_planted_number_of_groups_deterministically():
    vectors = _blobs()
    first = discover_groups(vectors, seed=3, max_groups=6)
    again = discover_groups(vectors, seed=3, max_groups=6)
    assert first.num_groups == 3 and sorted(first.silhouette_by_k) == [2, 3, 4, 5, 6]
    assert first.silhouette == max(first.silhouette_by_k.values())
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    assert sorted(first.sizes().tolist()) == [30, 30, 30]
    fixed = discover_groups(vectors, num_groups=4, seed=0)
    assert fixed.num_groups == 4 and fixed.silhouette_by_k == {}


def test_assign_reproduces_kmeans_labels_and_round_trips(tmp_path):
    vectors = _blobs(seed=1, k=4)
    groups = discover_groups(vectors, user_ids=[f"u{i}" for i in range(len(vectors))], seed=0)
    np.testing.assert_array_equal(groups.assign(vectors), groups.labels)
    groups.save(tmp_path / "g")
    loaded = UserGroups.load(tmp_path / "g")
    np.testing.assert_array_equal(loaded.labels, groups.labels)
    np.testing.assert_array_equal(loaded.centroids, groups.centroids)
    assert loaded.user_ids == groups.user_ids and loaded.silhouette_by_k == groups.silhouette_by_k
    with pytest.raises(ValueError, match="dims"):
        groups.assign(np.ones((2, 3)))
    with pytest.raises(FileNotFoundError, match="groups.safetensors"):
        UserGroups.load(tmp_path)


@pytest.mark.parametrize(
    "vectors, kwargs, message",
    [
        (np.ones((5, 2)), {"num_groups": 5}, "number of groups"),
        (np.full((4, 2), np.nan), {}, "NaN"),
        (np.ones(4), {}, "2-D"),
        (np.ones((6, 2)), {"user_ids": ["a"]}, "user_ids"),
    ],
)
def test_discover_groups_bad_input(vectors, kwargs, message):
    with pytest.raises(ValueError, match=message):
        discover_groups(vectors, max_groups=3, **kwargs)


def test_migration_matrix_counts_and_rows():
    before = np.array([0, 0, 0, 1, 1, -1, 2])
    after = np.array([0, 1, 1, 1, 1, 0, -1])
    counts, shares = migration_matrix(before, after, 3)
    np.testing.assert_array_equal(counts, [[1, 2, 0], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_allclose(shares, [[1 / 3, 2 / 3, 0], [0, 1, 0], [0, 0, 0]])


def test_group_migration_over_time(setup):
    model, tokenizer, _, rows = setup
    histories, times = rows["item_ids"], rows["timestamps"]
    vectors = interest_vectors(model, tokenizer, histories, times)
    groups = discover_groups(vectors, rows["user_id"], num_groups=3, seed=0)
    migration = group_migration(model, tokenizer, groups, histories, times, num_windows=3)
    assert len(migration.boundaries) == 3 and migration.matrices.shape == (2, 3, 3)
    # the last boundary is after every event: users sit in the groups they were clustered into
    np.testing.assert_array_equal(migration.labels[-1], groups.labels)
    for counts, shares in zip(migration.counts, migration.matrices):
        filled = counts.sum(1) > 0
        np.testing.assert_allclose(shares[filled].sum(1), 1.0)
        assert np.all(shares[~filled] == 0)
    assert migration.users_not_yet_active[-1] == 0
    assert migration.counts[0].sum() == len(histories) - migration.users_not_yet_active[0]
    with pytest.raises(ValueError, match="increase"):
        group_migration(model, tokenizer, groups, histories, times, boundaries=[5, 3])


def test_describe_groups(setup):
    model, tokenizer, data, rows = setup
    vectors = interest_vectors(model, tokenizer, rows["item_ids"], rows["timestamps"])
    groups = discover_groups(vectors, rows["user_id"], num_groups=2, seed=0)
    described = describe_groups(groups, rows["item_ids"], items=data.items, top_n=3)
    assert [d["size"] for d in described] == groups.sizes().tolist()
    assert sum(d["share"] for d in described) == pytest.approx(1.0, abs=1e-3)
    titles = dict(zip(data.items["item_id"], data.items["title"]))
    for d in described:
        assert len(d["top_items"]) == 3 and all(title == titles[item] for item, title, _ in d["top_items"])
        assert d["top_categories"] and all(0 < share <= 1 for _, share in d["top_categories"])
    import datasets

    users = datasets.Dataset.from_dict(
        {
            "user_id": list(rows["user_id"]),
            "age": [str(20 + i % 10) for i in range(len(rows))],
            "gender": ["F" if i % 3 else "M" for i in range(len(rows))],
            "zip": [f"{10000 + i}" for i in range(len(rows))],  # identifier-like: not summarised
        }
    )
    attributes = describe_groups(groups, rows["item_ids"], users=users)[0]["attributes"]
    assert set(attributes) == {"age", "gender"} and "median" in attributes["age"]


def test_plots(setup, tmp_path):
    pytest.importorskip("matplotlib")
    model, tokenizer, _, rows = setup
    vectors = interest_vectors(model, tokenizer, rows["item_ids"], rows["timestamps"])
    groups = discover_groups(vectors, rows["user_id"], num_groups=3, seed=0)
    plot_groups(groups, vectors, tmp_path / "groups.png")
    migration = group_migration(model, tokenizer, groups, rows["item_ids"], rows["timestamps"])
    plot_migration(migration, path=tmp_path / "migration.png")
    assert (tmp_path / "groups.png").stat().st_size > 5000 and (tmp_path / "migration.png").stat().st_size > 5000


def test_cli_groups(tiny_run, tmp_path, capsys):
    log = tmp_path / "events.parquet"
    pq.write_table(generate_synthetic_interests(num_users=40, num_items=30, seed=0).events, log)
    out = tmp_path / "groups"
    assert main(["groups", str(tiny_run), "--dataset", str(log), "--num_groups", "3", "--output_dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 groups, silhouette" in text and "migration, boundary 0 -> 1" in text and "rows sum to 1" in text
    loaded = UserGroups.load(out)
    assert loaded.num_groups == 3 and len(loaded.user_ids) == 40
    assert (out / "groups.png").is_file() and (out / "migration.png").is_file()
