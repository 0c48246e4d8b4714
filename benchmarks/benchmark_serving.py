"""Serving speed: torch eager against onnxruntime on a trained run, and top-k over a million items.

    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k --seed 42
    python benchmarks/benchmark_serving.py --run runs/ml100k

1. Latency and throughput of a recommendation (top-10, seen items excluded, with timestamps) on the run's model:
   one user with 200 events (p50 / p99 over `--latency_runs` calls after warm-up) and batches of 256 users with
   200 events (users per second, median of `--throughput_runs` batches); torch eager (`model.recommend`) against the
   exported graph in onnxruntime (`OnnxRecommender.run`, the inputs already encoded, as both sides are timed).
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
import statistics
import tempfile
import time

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
        print(f"{'':<34} {'torch eager':>12} {'onnxruntime':>12} {'ORT speed-up':>12}")
        for batch, runs, label in ((1, args.latency_runs, "latency"), (256, args.throughput_runs, "throughput")):
            input_ids, attention_mask, timestamps = _inputs(config, batch, 200)
            excluded = input_ids.numpy()
            has_times = np.ones(batch, dtype=bool)

            def eager(ids=input_ids, mask=attention_mask, times=timestamps):
                return model.recommend(ids, mask, times, top_k=10)

            def onnx(ids=input_ids, mask=attention_mask, times=timestamps, ex=excluded, has=has_times):
                return recommender.run(ids.numpy(), mask.numpy(), times.numpy(), has, ex, 10)

            torch_seconds, onnx_seconds = _timed(eager, runs), _timed(onnx, runs)
            if label == "latency":
                for name, quantile in (("p50", 50), ("p99", 99)):
                    a = float(np.percentile(torch_seconds, quantile)) * 1000
                    b = float(np.percentile(onnx_seconds, quantile)) * 1000
                    print(f"{'1 user, 200 events, ' + name + ' ms':<34} {a:>12.2f} {b:>12.2f} {a / b:>12.2f}")
            else:
                a = batch / statistics.median(torch_seconds)
                b = batch / statistics.median(onnx_seconds)
                print(f"{'batch 256 x 200 events, users/s':<34} {a:>12.0f} {b:>12.0f} {b / a:>12.2f}")


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_model:
        serving(args)
    for width in args.widths:
        top_k(args, width)
    large_model(args)


if __name__ == "__main__":
    main()
