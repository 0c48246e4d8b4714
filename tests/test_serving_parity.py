"""Serving recommends what evaluation measured (#33): every test user of a small trained run, served through
`model.recommend`, the `next-item-recommendation` pipeline and the exported ONNX handler (in a process without torch),
gives back exactly the run's eval_results.json test metrics, with no seen item in any answer. The runs read 8 events,
so most users' histories are longer than the model reads; one run has timestamps and one has none.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from tiny import tiny_train_args
from transformers import pipeline

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import SyntheticConfig, generate_synthetic_interests
from hf_interest.metrics import RankingAccumulator
from hf_interest.training.arguments import DataArguments
from hf_interest.training.data import load_data

MAX_LENGTH = 8
NUM_ITEMS = 80
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}

# The handler as an Inference Endpoint runs it: torch, transformers and hf_interest cannot be imported at all.
HANDLER_SCRIPT = """
import importlib.abc, importlib.util, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "hf_interest"):
            raise ImportError(f"{name} is not installed on this endpoint")
        return None

sys.meta_path.insert(0, Refuse())
folder, requests, answers = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("handler", f"{folder}/handler.py")
handler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler)
endpoint = handler.EndpointHandler(folder)
out = [endpoint(request) for request in json.load(open(requests))]
assert not any(name.split(".")[0] in ("torch", "transformers") for name in sys.modules)
json.dump(out, open(answers, "w"))
"""


def _cli(*args):
    run = subprocess.run(
        [sys.executable, "-m", "hf_interest_cli", *args], capture_output=True, text=True, env=ENV, timeout=900
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


def _train_args(dataset: str) -> list[str]:
    args = tiny_train_args(60, 16, 3)
    args[args.index("--max_length") + 1] = str(MAX_LENGTH)
    args[args.index("--synthetic_num_items") + 1] = str(NUM_ITEMS)
    args[args.index("--dataset") + 1] = dataset
    return args


def _write_log(folder, timed: bool) -> str:
    """The synthetic world as a CSV log (with or without a time column), each user's repeats of an item dropped, as in
    a log of ratings; `test_repeat_targets_are_misses_served_and_evaluated` covers a log with repeats."""
    data = generate_synthetic_interests(SyntheticConfig(num_users=60, num_items=NUM_ITEMS, seed=0)).to_behavior_data()
    rows = ["user_id,item_id,timestamp" if timed else "user_id,item_id"]
    for row in data.sequences["test"]:  # a test row holds every event of its user: the history, then the target
        events = zip([*row["item_ids"], row["target_item_id"]], [*row["timestamps"], row["target_timestamp"]])
        first = {}
        for item, time in events:
            first.setdefault(item, time)
        rows += [
            f"{row['user_id']},{item},{time}" if timed else f"{row['user_id']},{item}" for item, time in first.items()
        ]
    path = folder / "log.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _test_users(run) -> tuple[dict, dict]:
    results = json.loads((run / "eval_results.json").read_text())
    test = load_data(DataArguments(**results["arguments"]["data"])).sequences["test"]
    users = {
        "histories": [[str(item) for item in row] for row in test["item_ids"]],
        "timestamps": [list(t) for t in test["timestamps"]] if "timestamps" in test.column_names else None,
        "targets": [str(item) for item in test["target_item_id"]],
    }
    return results, users


@pytest.fixture(scope="module", params=["timestamps", "no_timestamps"])
def served_run(request, tmp_path_factory):
    """A tiny run (with or without event times), its ONNX export with the handler, and its test users."""
    folder = tmp_path_factory.mktemp(f"parity_{request.param}")
    run = folder / "run"
    _cli("train", *_train_args(_write_log(folder, request.param == "timestamps")), "--output_dir", str(run))
    _cli("export", "onnx", str(run), "--output", str(folder / "serve"), "--with_handler")
    results, users = _test_users(run)
    assert (users["timestamps"] is not None) == (request.param == "timestamps")
    return run, folder / "serve", results, users


def _metrics(answers: list[list[str]], targets: list[str], num_items: int) -> dict:
    """HR/NDCG/MRR@5,10 from served top-10 lists, by the library's accumulator (rank = place in the list; a target
    outside the top 10 gets a rank past every cut-off) and by hand."""
    ranks = [answer.index(target) if target in answer else num_items for answer, target in zip(answers, targets)]
    accumulator = RankingAccumulator((5, 10), exclude_seen=True, ignore_index=range(3))
    accumulator.add_ranks(ranks, num_items=num_items)
    metrics = accumulator.compute()
    by_hand = sum(1 / math.log2(rank + 2) for rank in ranks if rank < 10) / len(ranks)
    assert metrics["ndcg@10"] == pytest.approx(by_hand, abs=1e-12)
    return metrics


@pytest.mark.slow
def test_every_serving_path_scores_what_evaluation_measured(served_run, tmp_path):
    run, serve, results, users = served_run
    histories, times, targets = users["histories"], users["timestamps"], users["targets"]
    longer = sum(len(history) > MAX_LENGTH for history in histories)
    assert longer >= len(histories) // 2  # most histories are longer than the model reads
    model = InterestForNextItemPrediction.from_pretrained(run).eval()
    tokenizer = ItemTokenizer.from_pretrained(run)
    assert model.config.max_position_embeddings == MAX_LENGTH
    num_items = model.config.num_items

    # 1. model.recommend on the whole histories, as README's first example calls it
    output = model.recommend(**tokenizer(histories, timestamps=times, return_tensors="pt"), top_k=10)
    by_model = [tokenizer.decode_items([i for i in row if i >= 0]) for row in output.item_ids.tolist()]
    assert output.events_given.tolist() == [len(history) for history in histories]
    assert output.events_read.tolist() == [min(len(history), MAX_LENGTH) for history in histories]

    # 2. the pipeline, one history (dict) at a time
    recommender = pipeline("next-item-recommendation", model=model, tokenizer=tokenizer)
    requests = [
        {"items": history, "timestamps": times[row]} if times is not None else history
        for row, history in enumerate(histories)
    ]
    by_pipeline = [[entry["item_id"] for entry in recommender(request, top_k=10)] for request in requests]

    # 3. the exported handler, in a process where torch cannot be imported
    endpoint_requests = [
        {
            "inputs": {"items": h, "timestamps": list(times[row])} if times is not None else h,
            "parameters": {"top_k": 10},
        }
        for row, h in enumerate(histories)
    ]
    (tmp_path / "requests.json").write_text(json.dumps(endpoint_requests))
    subprocess.run(
        [sys.executable, "-c", HANDLER_SCRIPT, str(serve), str(tmp_path / "requests.json"), str(tmp_path / "out.json")],
        check=True, env=ENV, timeout=300,
    )  # fmt: skip
    by_handler = [[entry["item_id"] for entry in answer] for answer in json.loads((tmp_path / "out.json").read_text())]

    expected = results["test"]["exclude_seen"]["model"]
    assert expected["num_users"] == len(histories)
    for name, answers in (("recommend", by_model), ("pipeline", by_pipeline), ("handler", by_handler)):
        assert all(0 < len(answer) <= 10 for answer in answers), name  # fewer only where fewer are unseen
        assert not any(set(answer) & set(history) for answer, history in zip(answers, histories)), name  # no seen
        metrics = _metrics(answers, targets, num_items)
        for key in ("hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr@10"):
            assert metrics[key] == expected[key], (name, key, metrics[key], expected[key])
    assert by_model == by_pipeline == by_handler


@pytest.mark.slow
def test_padding_side_and_exclusions_mean_the_same_on_every_path(served_run, tmp_path):
    """Left or right padding gives the same answer; `exclude_items` removes the same items through recommend (indices),
    the pipeline and the handler (raw ids); histories longer than the model reads exclude every given event."""
    run, serve, _, users = served_run
    model = InterestForNextItemPrediction.from_pretrained(run).eval()
    tokenizer = ItemTokenizer.from_pretrained(run)
    histories, times = users["histories"][:6], users["timestamps"]
    times = times[:6] if times is not None else None
    left = tokenizer(histories, timestamps=times, return_tensors="pt")
    right = {name: torch.stack([row.roll(-int((mask == 0).sum())) for row, mask in zip(value, left["attention_mask"])])
             for name, value in left.items()}  # fmt: skip
    assert not torch.equal(left["input_ids"], right["input_ids"])  # some rows are padded
    a, b = model.recommend(**left, top_k=10), model.recommend(**right, top_k=10)
    assert torch.equal(a.item_ids, b.item_ids) and torch.equal(a.scores, b.scores)

    blocked = tokenizer.decode_items(a.item_ids[:, 0].tolist())[:3]  # each of these was someone's top-1
    excluded = model.recommend(**left, top_k=10, exclude_items=tokenizer.encode_items(blocked))
    by_model = [tokenizer.decode_items(row) for row in excluded.item_ids.tolist()]
    recommender = pipeline("next-item-recommendation", model=model, tokenizer=tokenizer)
    requests = [{"items": h, "timestamps": times[row]} if times else h for row, h in enumerate(histories)]
    by_pipeline = [
        [entry["item_id"] for entry in recommender(request, top_k=10, exclude_items=blocked)] for request in requests
    ]
    (tmp_path / "requests.json").write_text(
        json.dumps([{"inputs": requests, "parameters": {"top_k": 10, "exclude_items": blocked}}])
    )
    subprocess.run(
        [sys.executable, "-c", HANDLER_SCRIPT, str(serve), str(tmp_path / "requests.json"), str(tmp_path / "out.json")],
        check=True, env=ENV, timeout=300,
    )  # fmt: skip
    by_handler = [
        [entry["item_id"] for entry in answer] for answer in json.loads((tmp_path / "out.json").read_text())[0]
    ]
    assert by_model == by_pipeline == by_handler
    assert not any(set(answer) & (set(blocked) | set(history)) for answer, history in zip(by_model, histories))


@pytest.mark.slow
def test_repeat_targets_are_misses_served_and_evaluated(tmp_path):
    """On a world with re-consumption: no serving path ever returns a seen item, and evaluation's `exclude_seen`
    removes a target the user already had with the rest of the history (ARCHITECTURE.md kept it rankable, which let a
    model score what serving cannot give). Served ranks equal evaluation's for every user, repeats included, and the
    run's HR@10 is the served lists' exactly; the protocol states how many targets were repeats."""
    from hf_interest.data import encode_sequences
    from hf_interest.metrics import ranks_from_scores
    from hf_interest.training.evaluation import eval_dataloader

    run = tmp_path / "run"
    _cli("train", *_train_args("synthetic"), "--output_dir", str(run))
    results, users = _test_users(run)
    model = InterestForNextItemPrediction.from_pretrained(run).eval()
    tokenizer = ItemTokenizer.from_pretrained(run)
    data = load_data(DataArguments(**results["arguments"]["data"]))
    encoded, _ = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    rows = encoded["test"]
    loader = eval_dataloader(rows, tokenizer.pad_token_id, MAX_LENGTH, batch_size=len(rows))
    batch = next(iter(loader))  # one batch, in the loader's order (longest histories first, stable)
    order = sorted(range(len(rows)), key=lambda i: -min(len(rows[i]["input_ids"]), MAX_LENGTH))
    with torch.no_grad():
        scores = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "timestamps")}, logits_to_keep=1)
    evaluated = ranks_from_scores(scores.logits[:, -1].float(), batch["labels"], batch["seen"], ignore_index=range(3))
    evaluated = dict(zip(order, evaluated.tolist()))

    histories, times, targets = users["histories"], users["timestamps"], users["targets"]
    served = model.recommend(**tokenizer(histories, timestamps=times, return_tensors="pt"), top_k=10)
    answers = [tokenizer.decode_items([i for i in row if i >= 0]) for row in served.item_ids.tolist()]
    repeats = [target in history for target, history in zip(targets, histories)]
    assert 0 < sum(repeats) < len(repeats)  # the world has both kinds
    for user, (answer, target, repeat) in enumerate(zip(answers, targets, repeats)):
        served_rank = answer.index(target) if target in answer else None
        assert served_rank == (evaluated[user] if evaluated[user] < 10 else None)
        if repeat:
            assert served_rank is None and evaluated[user] == model.config.num_items  # never served, a miss scored
    test = results["test"]["exclude_seen"]
    assert test["protocol"]["targets_in_history"] == sum(repeats)
    assert test["protocol"]["num_targets"] == len(targets)
    served_metrics = _metrics(answers, targets, model.config.num_items)
    for metric in ("hr@10", "ndcg@10", "mrr@10"):
        assert served_metrics[metric] == pytest.approx(test["model"][metric], abs=1e-12), metric
