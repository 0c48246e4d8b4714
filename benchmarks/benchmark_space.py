"""How long a person waits for each view of the Gradio app (`hf_interest.space`), on a trained run.

    python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k --seed 42
    python benchmarks/benchmark_space.py runs/ml100k --users 20

The app is served on 127.0.0.1 and each view is called through its API endpoint with gradio_client, as the page calls
it (server round trip, the views' computation, the plot rendered to an image), for `--users` users of the run's test
split (the first ones, each history the model reads: the newest max_position_embeddings events). Prints the median,
90th percentile and maximum seconds per view, and the same views called in-process (no server). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client  # noqa: E402

from hf_interest.space import SpaceBackend, build_demo, trajectory_figure  # noqa: E402


def _row(name: str, seconds: list[float]) -> str:
    return (
        f"{name:<28} {statistics.median(seconds):>8.3f} {float(np.percentile(seconds, 90)):>8.3f} {max(seconds):>8.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder (with its data; groups/ if `hf-interest groups` was run)")
    parser.add_argument("--users", type=int, default=20, help="users timed (default: 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    backend = SpaceBackend.from_pretrained(args.run)
    loaded = time.perf_counter() - began
    demo = build_demo(backend)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    users = list(backend.users)[: args.users]
    timings: dict[str, list[float]] = {}

    def timed(name, function, *arguments, **keywords):
        start = time.perf_counter()
        result = function(*arguments, **keywords)
        timings.setdefault(name, []).append(time.perf_counter() - start)
        return result

    def figure(history, times):
        plt.close(trajectory_figure(backend.trajectory(history, times)))

    for user in users:
        history, times = timed("API /user_history", client.predict, user, api_name="/user_history")
        timed("API /recommend (k=10)", client.predict, history, times, 10, api_name="/recommend")
        timed("API /trajectory (+ plot)", client.predict, history, times, api_name="/trajectory")
        timed("API /group", client.predict, history, times, api_name="/group")
        timed("in-process recommend", backend.recommend, history, times, 10)
        timed("in-process trajectory+plot", figure, history, times)
        timed("in-process group", backend.group, history, times)
    demo.close()
    print(
        f"{args.run}: {len(users)} users, {backend.model.config.max_position_embeddings} newest events read, "
        f"groups: {'yes' if backend.groups is not None else 'no'}; app loaded in {loaded:.1f} s; "
        f"torch threads {args.threads}"
    )
    print(f"{'view':<28} {'median s':>8} {'p90 s':>8} {'max s':>8}")
    for name, seconds in timings.items():
        print(_row(name, seconds))


if __name__ == "__main__":
    main()
