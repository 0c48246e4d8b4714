"""Serving speed: torch eager against onnxruntime on a trained run, and top-k over a million items.

    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k --seed 42
    python benchmarks/benchmark_serving.py --run runs/ml100k

1. Latency and throughput of a recommendation (top-10, seen items excluded, with timestamps) on the run's model:
   one user with 200 events and one with three times what the model reads (p50 / p99 over `--latency_runs` calls
   after warm-up; the newest events read, every one excluded) and batches of 256 users with 200 events (users per
   second, median of `--throughput_runs` batches); torch eager (`model.recommend`) against the exported graph in
   onnxruntime (`OnnxRecommender.run`, the inputs already encoded, as both sides are timed). Then serving parity:
   every test user of the run through `model.recommend`, the pipeline and onnxruntime behind raw ids, HR@10 / NDCG@10
   beside the run's eval_results.json, answers holding a seen item, and the score ties of the test targets.
2. Top-k over a large catalogue: `chunked_top_k` scores `--users` users against `--items` random items of the
   model's width (fp32), for several chunk sizes, never holding the users x items matrix. Its GFLOP/s (2 x users x
   items x width per call) are compared with this machine's fp32 matmul peak measured in the same run (the best of a
   few square matmuls), and with the plain matmul of the same shapes (no top-k). Peak memory is the process's peak
   resident set size growth during the calls, beside the size of the full score matrix that is never built.
3. `recommend_chunked` end to end on a model with `--items` items (random weights), `--users` users of 50 events.

Nothing is asserted; medians are quoted, and every ratio is measured in this run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_interest  # noqa: F401  (registers the Auto classes)
from hf_interest.serving import OnnxRecommender, chunked_top_k, export_onnx, recommend_chunked


def _peak_rss_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 to clear_refs resets the peak resident set size
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")
    except OSError:
        pass


def _inputs(config, batch: int, length: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(config.num_special_tokens, config.num_items, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    timestamps = 880_000_000 + torch.randint(1, 5000, (batch, length), generator=generator).cumsum(1)
    return input_ids, attention_mask, timestamps


def _timed(function, runs: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - began)
    return seconds


def serving(args) -> None:
    model = AutoModelForCausalLM.from_pretrained(args.run).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.run)
    config = model.config
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        result = export_onnx(model, tokenizer, folder)
        exported = time.perf_counter() - began
        recommender = OnnxRecommender(folder, threads=args.threads)
        print(
            f"{args.run}: {config.num_items} items, width {config.hidden_size}, {config.num_hidden_layers} layers; "
            f"exported in {exported:.1f} s (checked: max abs diff {result['max_abs_diff']:.1e}, top-10 "
            f"{'identical' if result['top10_equal'] else 'DIFFERENT'}); torch threads {torch.get_num_threads()}, "
            f"onnxruntime intra-op threads {args.threads}"
        )
        print(f"{'':<40} {'torch eager':>12} {'onnxruntime':>12} {'ORT speed-up':>12}")
        read = config.max_position_embeddings
        cases = ((1, 200, args.latency_runs), (1, 3 * read, args.latency_runs), (256, 200, args.throughput_runs))
        for batch, length, runs in cases:
            # a history of `length` events: the newest `read` are read, every one of them is excluded
            input_ids, attention_mask, timestamps = _inputs(config, batch, length)
            newest = [tensor[:, -read:].numpy() for tensor in (input_ids, attention_mask, timestamps)]
            excluded = input_ids.numpy()
            has_times = np.ones(batch, dtype=bool)

            def eager(ids=input_ids, mask=attention_mask, times=timestamps):
                return model.recommend(ids, mask, times, top_k=10)

            def onnx(ids=newest[0], mask=newest[1], times=newest[2], ex=excluded, has=has_times):
                return recommender.run(ids, mask, times, has, ex, 10)

            torch_seconds, onnx_seconds = _timed(eager, runs), _timed(onnx, runs)
            label = f"{batch} user{'s' if batch > 1 else ''}, {length} events ({min(length, read)} read)"
            if batch == 1:
                for name, quantile in (("p50", 50), ("p99", 99)):
                    a = float(np.percentile(torch_seconds, quantile)) * 1000
                    b = float(np.percentile(onnx_seconds, quantile)) * 1000
                    print(f"{label + ', ' + name + ' ms':<40} {a:>12.2f} {b:>12.2f} {a / b:>12.2f}")
            else:
                a = batch / statistics.median(torch_seconds)
                b = batch / statistics.median(onnx_seconds)
                print(f"{label + ', users/s':<40} {a:>12.0f} {b:>12.0f} {b / a:>12.2f}")
        parity(args, model, tokenizer, recommender)


def _served_metrics(answers, targets, histories) -> dict:
    """HR@10 / NDCG@10 of served top-10 lists (rank = place in the list), and how many answers hold a seen item."""
    places = [answer.index(target) if target in answer else None for answer, target in zip(answers, targets)]
    return {
        "hr@10": sum(place is not None for place in places) / len(places),
        "ndcg@10": sum(1 / math.log2(place + 2) for place in places if place is not None) / len(places),
        "seen": sum(bool(set(answer) & set(history)) for answer, history in zip(answers, histories)),
    }


@torch.no_grad()
def parity(args, model, tokenizer, recommender) -> None:
    """Every test user of the run served by model.recommend, the pipeline and onnxruntime behind raw ids, scored
    against the run's eval_results.json; then the ties evaluation and serving could order differently."""
    from transformers import pipeline

    from hf_interest.data import encode_sequences
    from hf_interest.metrics import ranks_from_scores
    from hf_interest.training.arguments import DataArguments
    from hf_interest.training.data import load_data
    from hf_interest.training.evaluation import eval_dataloader

    results = json.loads((Path(args.run) / "eval_results.json").read_text())
    data = load_data(DataArguments(**results["arguments"]["data"]))
    test = data.sequences["test"]
    histories = [[str(item) for item in row] for row in test["item_ids"]]
    times = [list(row) for row in test["timestamps"]] if "timestamps" in test.column_names else None
    targets = [str(item) for item in test["target_item_id"]]
    read = model.config.max_position_embeddings
    served = {}
    output = model.recommend(**tokenizer(histories, timestamps=times, return_tensors="pt"), top_k=10)
    served["model.recommend"] = [
        tokenizer.decode_items([i for i in row if i >= 0]) for row in output.item_ids.tolist()
    ]
    recommender_pipeline = pipeline("next-item-recommendation", model=model, tokenizer=tokenizer)
    requests = [{"items": h, "timestamps": times[n]} if times else h for n, h in enumerate(histories)]
    served["pipeline"] = [[e["item_id"] for e in recommender_pipeline(r, top_k=10)] for r in requests]
    answers = recommender.recommend(histories, times, top_k=10)
    served["onnxruntime (handler)"] = [[entry["item_id"] for entry in answer] for answer in answers]
    stored = results["test"]["exclude_seen"]["model"]
    longer = sum(len(history) > read for history in histories)
    repeats = sum(target in history for target, history in zip(targets, histories))
    print(
        f"\nServing parity: {len(histories)} test users of {args.run} ({longer} with more than {read} events; "
        f"{repeats} whose target is already in their history), top-10, every given event excluded"
    )
    print(f"{'path':<24} {'HR@10':>8} {'NDCG@10':>8} {'answers with a seen item':>26}")
    print(f"{'eval_results.json':<24} {stored['hr@10']:>8.4f} {stored['ndcg@10']:>8.4f} {'':>26}")
    for name, lists in served.items():
        metrics = _served_metrics(lists, targets, histories)
        print(f"{name:<24} {metrics['hr@10']:>8.4f} {metrics['ndcg@10']:>8.4f} {metrics['seen']:>26}")

    # Ties: evaluation counts the items scoring strictly above the target (a tie favours the target); serving's top-k
    # orders tied items as torch.topk / ONNX TopK do.
    encoded, _ = encode_sequences(data.sequences, tokenizer.get_vocab(), tokenizer.unk_token_id)
    tied_target = tied_tenth = 0
    for batch in eval_dataloader(encoded["test"], tokenizer.pad_token_id, read, 256):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "timestamps") if k in batch}
        scores = model(**inputs, logits_to_keep=1).logits[:, -1].float()
        ranks_from_scores(scores, batch["labels"], batch["seen"], ignore_index=range(3))  # finite, valid: checked
        scores[:, :3] = float("-inf")
        target_scores = scores.gather(1, batch["labels"][:, None])
        scores.scatter_(1, batch["seen"], float("-inf"))
        others = scores.scatter(1, batch["labels"][:, None], float("-inf"))
        tied_target += int((others == target_scores).any(dim=1).sum())
        top = scores.topk(11, dim=1).values
        tied_tenth += int((top[:, 9] == top[:, 10]).sum())
    print(
        f"Ties: {tied_target} of {len(histories)} test targets tie an eligible item's score; "
        f"{tied_tenth} users have a tie between their 10th and 11th item"
    )


def _matmul_peak(runs: int = 5) -> float:
    best = 0.0
    for size in (1024, 2048):
        a, b = torch.randn(size, size), torch.randn(size, size)
        seconds = min(_timed(lambda a=a, b=b: a @ b, runs, warmup=2))
        best = max(best, 2 * size**3 / seconds / 1e9)
    return best


def top_k(args, width: int) -> None:
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(args.users, width, generator=generator)
    items = torch.randn(args.items, width, generator=generator)
    bias = torch.randn(args.items, generator=generator)
    flops = 2 * args.users * args.items * width
    peak = _matmul_peak()
    full_gib = args.users * args.items * 4 / 2**30
    print(
        f"\ntop-10 of {args.users} users over {args.items:,} items, width {width}, fp32: the full score matrix would be "
        f"{full_gib:.1f} GiB. Matmul peak (square 1024/2048, best of 5): {peak:.1f} GFLOP/s"
    )
    print(
        f"{'chunk':>8} {'median s':>9} {'GFLOP/s':>8} {'% peak':>7} {'matmul only':>12} {'% peak':>7} {'peak RSS +MiB':>14}"
    )
    for chunk in args.chunks:

        def chunked(chunk=chunk):
            return chunked_top_k(states, items, bias, k=10, chunk_size=chunk)

        def plain(chunk=chunk):
            for start in range(0, args.items, chunk):
                torch.addmm(bias[start : start + chunk], states, items[start : start + chunk].T)

        _reset_peak_rss()
        before = _peak_rss_mib()
        seconds = statistics.median(_timed(chunked, args.topk_runs, warmup=1))
        grown = _peak_rss_mib() - before
        matmul = statistics.median(_timed(plain, args.topk_runs, warmup=1))
        rate, plain_rate = flops / seconds / 1e9, flops / matmul / 1e9
        print(
            f"{chunk:>8} {seconds:>9.3f} {rate:>8.1f} {rate / peak:>7.0%} {plain_rate:>12.1f} {plain_rate / peak:>7.0%} "
            f"{grown:>14.0f}"
        )


def large_model(args) -> None:
    """`recommend_chunked` on a model with `--items` items (random weights: speed and memory only)."""
    from hf_interest import InterestConfig, InterestForNextItemPrediction

    torch.manual_seed(0)
    config = InterestConfig(num_items=args.items + 3, hidden_size=64, max_position_embeddings=200)
    model = InterestForNextItemPrediction(config).eval()
    input_ids, attention_mask, timestamps = _inputs(config, args.users, 50)
    peak = _matmul_peak()

    def call():
        return recommend_chunked(model, input_ids, attention_mask, timestamps, top_k=10)

    _reset_peak_rss()
    before = _peak_rss_mib()
    seconds = statistics.median(_timed(call, args.topk_runs, warmup=1))
    grown = _peak_rss_mib() - before
    rate = 2 * args.users * config.num_items * config.hidden_size / seconds / 1e9
    print(
        f"\nrecommend_chunked: a model with {config.num_items:,} items (width 64, random weights), {args.users} users x 50 "
        f"events, top-10, seen items excluded: {seconds:.3f} s (median of {args.topk_runs}), the scoring's "
        f"{rate:.1f} GFLOP/s over the whole call (backbone included) = {rate / peak:.0%} of the matmul peak "
        f"({peak:.1f} GFLOP/s); peak RSS +{grown:.0f} MiB, against {args.users * config.num_items * 4 / 2**30:.1f} GiB "
        "for the full score matrix model.recommend would hold"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/ml100k", help="a trained run folder (default: runs/ml100k)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default: 2)")
    parser.add_argument("--latency_runs", type=int, default=200, help="single-user calls timed (default: 200)")
    parser.add_argument("--throughput_runs", type=int, default=10, help="batches of 256 timed (default: 10)")
    parser.add_argument("--users", type=int, default=1024, help="users for the top-k (default: 1024)")
    parser.add_argument("--items", type=int, default=1_000_000, help="items for the top-k (default: 1,000,000)")
    parser.add_argument(
        "--widths", type=int, nargs="+", default=[64, 256], help="item vector widths (default: 64 256)"
    )
    parser.add_argument("--chunks", type=int, nargs="+", default=[1024, 2048, 8192], help="items per matmul")
    parser.add_argument("--topk_runs", type=int, default=3, help="top-k calls timed per chunk size (default: 3)")
    parser.add_argument("--skip_model", action="store_true", help="only the top-k part")
    parser.add_argument("--skip_large", action="store_true", help="only the run's model: no top-k over --items")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_model:
        serving(args)
    if not args.skip_large:
        for width in args.widths:
            top_k(args, width)
        large_model(args)


if __name__ == "__main__":
    main()
