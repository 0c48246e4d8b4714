"""The Gradio app (`hf_interest.space`): its views, its API endpoints through gradio_client, and the Space folder."""

import json
import subprocess
import sys

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from space_fixtures import run_with_groups, serve

from hf_interest.space import InputError, SpaceBackend, timed_views, write_space
from hf_interest_cli import main


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    return run_with_groups(tiny_run, tmp_path_factory.mktemp("space") / "run")


@pytest.fixture(scope="module")
def backend(run):
    return SpaceBackend.from_pretrained(str(run))


@pytest.fixture(scope="module")
def client(backend):
    demo, url = serve(backend)
    assert url.startswith("http://127.0.0.1:")  # never bound to every interface
    yield Client(url, verbose=False)
    demo.close()


def _fixtures(backend, count=3):
    return list(backend.users)[:count]


def _expected_top(backend, user, top_k=5):
    items, times = backend.users[user]  # the whole history: recommend reads the newest events and excludes all
    encoded = backend.tokenizer([items], timestamps=[times], return_tensors="pt")
    output = backend.model.recommend(**encoded, top_k=top_k)
    return backend.tokenizer.decode_items(output.item_ids[0].tolist()), output.scores[0].tolist()


def test_backend_reads_the_runs_data_items_and_groups(backend):
    assert len(backend.users) == 40 and backend.groups is not None and len(backend.group_profiles) == 2
    assert any(info["categories"] for info in backend.items.values())


@pytest.mark.parametrize("index", range(3))
def test_recommend_view_is_model_recommend(backend, index):
    user = _fixtures(backend)[index]
    history, times = backend.user_history(user)
    rows = backend.recommend(history, times, 5)
    items, scores = _expected_top(backend, user)
    assert [row[1] for row in rows] == items
    assert [row[3] for row in rows] == pytest.approx(scores, abs=1e-4)
    assert all(row[4] for row in rows)  # every recommendation says which past events drove it


def test_trajectory_and_group_views(backend):
    history, times = backend.user_history(_fixtures(backend)[0])
    view = backend.trajectory(history, times)
    read = min(len(history.split()), backend.model.config.max_position_embeddings)  # the newest events
    assert len(view["steps"]) == read == len(view["shares"]) == len(view["gate"])
    assert view["steps"][-1] == len(history.split())
    assert all(abs(sum(row) - 1) < 1e-3 for row in view["shares"])
    assert view["forecast"] and view["drift"]
    text = backend.group(history, times)
    assert text.startswith("**Group ") and "Top categories" in text


def test_remove_event_drops_exactly_that_event(backend):
    history, times = backend.user_history(_fixtures(backend)[0])
    new_history, new_times = backend.remove_event(history, times, 2)
    items, stamps = history.split(), times.split()
    assert new_history.split() == items[:2] + items[3:] and new_times.split() == stamps[:2] + stamps[3:]


@pytest.mark.parametrize(
    ("history", "times", "message"),
    [
        ("", "", "history is empty"),
        ("nope", "", "not in this model's vocabulary: nope"),
        ("{first} {second}", "1 2 3", "3 times for 2 items"),
        ("{first} {second}", "1 tuesday", "'tuesday' is not"),
        ("{first} {second}", "10 5", "must not decrease"),
    ],
)
def test_bad_input_is_a_message(backend, history, times, message):
    first, second = list(backend.items)[:2]
    with pytest.raises(InputError, match=message):
        backend.recommend(history.format(first=first, second=second), times, 5)


@pytest.mark.parametrize("index", range(3))
def test_api_endpoints_return_model_recommend(client, backend, index):
    user = _fixtures(backend)[index]
    history, times = client.predict(user, api_name="/user_history")
    assert (history, times) == backend.user_history(user)
    table = client.predict(history, times, 5, api_name="/recommend")
    items, _ = _expected_top(backend, user)
    assert [row[1] for row in table["data"]] == items
    plot, summary = client.predict(history, times, api_name="/trajectory")
    assert plot and "Next categories" in summary
    assert client.predict(history, times, api_name="/group").startswith("**Group ")
    shorter, _ = client.predict(history, times, 0, api_name="/remove_event")
    assert shorter.split() == history.split()[1:]


@pytest.mark.parametrize(
    ("history", "times", "message"),
    [("", "", "history is empty"), ("nope 1", "", "not in this model's vocabulary"), ("{first}", "x", "'x' is not")],
)
def test_api_bad_input_is_a_readable_error(client, backend, history, times, message):
    with pytest.raises(AppError) as raised:
        client.predict(history.format(first=list(backend.items)[0]), times, 5, api_name="/recommend")
    assert message in str(raised.value) and "Traceback" not in str(raised.value)


def test_views_are_fast(backend):
    history, times = backend.user_history(_fixtures(backend)[0])
    seconds = timed_views(backend, history, times, repeats=3)
    assert set(seconds) == {"recommend", "trajectory", "group"} and all(value > 0 for value in seconds.values())


def test_space_dry_run_writes_a_ready_space(run, tmp_path, capsys):
    folder = tmp_path / "space"
    argv = ["space", str(run), "--model_repo", "org/model", "--repo_id", "org/model-demo", "--dry_run", str(folder)]
    assert main([*argv, "--with_items"]) == 0
    printed = capsys.readouterr().out
    assert "app.py" in printed and "requirements.txt" in printed
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: gradio" in readme and "app_file: app.py" in readme
    assert "https://huggingface.co/org/model" in readme and "  - org/model" in readme
    requirements = (folder / "requirements.txt").read_text().splitlines()
    pinned = [line for line in requirements if line and not line.startswith(("#", "--"))]
    assert pinned and all("==" in line for line in pinned) and any(line.startswith("gradio==") for line in pinned)
    assert 'SpaceBackend.from_pretrained("org/model"' in (folder / "app.py").read_text()
    items = json.loads((folder / "space_items.json").read_text())
    assert set(items) == set(SpaceBackend.from_pretrained(str(run), with_data=False).tokenizer.items)
    assert not any("user" in path.name for path in folder.iterdir())  # no user data in a Space
    # the Space runs its own copy of hf_interest
    code = "import hf_interest.space, pathlib; print(pathlib.Path(hf_interest.space.__file__).resolve())"
    where = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(folder.resolve()))
    # and the model card links back to it
    assert json.loads((run / "space.json").read_text()) == {"space_id": "org/model-demo"}
    upload = tmp_path / "upload"
    assert main(["push", str(run), "--repo_id", "org/model", "--dry_run", str(upload)]) == 0
    assert "https://huggingface.co/spaces/org/model-demo" in (upload / "README.md").read_text()


def test_space_refuses_what_it_cannot_do(run, tmp_path, capsys):
    assert main(["space", str(run), "--dry_run", str(tmp_path / "a")]) == 2
    assert "--model_repo" in capsys.readouterr().err
    assert main(["space", str(run), "--model_repo", "not a repo", "--dry_run", str(tmp_path / "b")]) == 2
    assert "ORG/NAME" in capsys.readouterr().err
    with pytest.raises(FileExistsError):
        write_space(run, "org/model")  # an existing, non-empty folder


def test_models_without_history_signal_still_score(backend):
    assert torch.isfinite(torch.tensor(backend.recommend(list(backend.items)[0], "", 3)[0][3]))
