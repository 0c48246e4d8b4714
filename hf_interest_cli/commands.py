"""The `hf-interest` commands: train, evaluate, recommend, explain, groups, trajectory, space, export, push, info.

`hf_interest_cli.main` parses the arguments (`parsers`) and imports this module only to run a command: here the
command line meets the library. `train_main`, `evaluate_main` and `push_main` are also the command lines of
`hub_scripts/train.py`, `evaluate.py` and `push_to_hub.py`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .parsers import HelpFormatter, evaluate_parser, push_parser

# Errors a user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, RuntimeError, TypeError, OSError)


def _cached(model: str, filename: str) -> Path | None:
    """`filename` of a model folder or Hub repo id (`run` has checked that a local-looking name is a folder)."""
    local = Path(model).expanduser()
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    from transformers.utils import cached_file

    path = cached_file(model, filename, _raise_exceptions_for_missing_entries=False)
    return Path(path) if path else None


def _info(model: str) -> dict:
    config_path = _cached(model, "config.json")
    if config_path is None:
        if (Path(model) / "sisa.json").is_file():
            raise FileNotFoundError(
                f"{model} is a sharded run (train --num_shards): its models are shards/shard_K (hf-interest info "
                f"{Path(model) / 'shards' / 'shard_0'}); sisa.json and eval_results.json describe the ensemble."
            )
        raise FileNotFoundError(f"{model} has no config.json: point at a saved model folder or a Hub repo id.")
    from hf_interest.hub import read_json_file
    from hf_interest.tokenization_interest import SPECIAL_TOKENS

    config = read_json_file(config_path)
    keys = (
        "model_type",
        "architectures",
        "num_items",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "use_time_gaps",
        "loss_type",
        "tie_word_embeddings",
    )
    result: dict = {"model": model, "config": {key: config.get(key) for key in keys if key in config}}
    vocab_path = _cached(model, "item_vocab.json")
    if vocab_path is not None:
        vocab = read_json_file(vocab_path)
        specials = sum(1 for item in vocab if item in SPECIAL_TOKENS)
        result["vocabulary"] = {"size": len(vocab), "items": len(vocab) - specials, "special_tokens": specials}
        if config.get("num_items") not in (None, len(vocab)):
            result["vocabulary"]["warning"] = (
                f"item_vocab.json has {len(vocab)} entries but config.num_items is {config.get('num_items')}"
            )
    weights = _cached(model, "model.safetensors")
    if weights is not None:
        from hf_interest import modeling_interest
        from hf_interest.checkpoint_interest import checkpoint_problems, read_weights_header
        from hf_interest.configuration_interest import InterestConfig

        shapes, metadata = read_weights_header([weights])
        result["parameters"] = sum(math.prod(shape) for shape in shapes.values())
        result["weights_bytes"] = weights.stat().st_size
        try:
            loaded_config = InterestConfig.from_dict(config)
            name = (config.get("architectures") or ["InterestModel"])[0]
            model_class = getattr(modeling_interest, name, modeling_interest.InterestModel)
            problems = checkpoint_problems(model_class, loaded_config, shapes, metadata)
        except ValueError as error:
            problems = [f"config.json is not a valid InterestConfig: {error}"]
        result["problems"] = problems
    results_path = _cached(model, "eval_results.json")
    if results_path is not None:
        results = read_json_file(results_path)
        result["dataset"] = {
            k: v for k, v in results.get("dataset", {}).items() if k in ("name", "statistics", "split")
        }
        result["test"] = results.get("test", {})
        training = results.get("training", {})
        result["training"] = {key: value for key, value in training.items() if key != "history"}
        if results.get("differential_privacy"):
            result["differential_privacy"] = results["differential_privacy"]
    return result


def _print_info(info: dict) -> None:
    from hf_interest.metrics import format_results_table

    print(f"model: {info['model']}")
    for key, value in info["config"].items():
        print(f"  {key}: {value}")
    if "vocabulary" in info:
        vocab = info["vocabulary"]
        print(f"vocabulary: {vocab['items']:,} items + {vocab['special_tokens']} special tokens")
        if "warning" in vocab:
            print(f"  warning: {vocab['warning']}")
    if "parameters" in info:
        print(f"parameters: {info['parameters']:,} ({info['weights_bytes'] / 2**20:.1f} MiB safetensors)")
        if info["problems"]:
            print("PROBLEM: config.json does not describe model.safetensors (loading it fails):")
            for problem in info["problems"]:
                print(f"  - {problem}")
        else:
            print("config.json matches model.safetensors")
    if info.get("test"):
        print(f"dataset: {info['dataset'].get('name')}  {info['dataset'].get('statistics', '')}")
        for block in info["test"].values():
            print(
                format_results_table({"model": block["model"], "popularity": block["popularity"]}, block["protocol"])
            )
    else:
        print("metrics: no eval_results.json beside this checkpoint")
    if info.get("differential_privacy"):
        dp = info["differential_privacy"]
        print(
            f"differential privacy: user level, epsilon {dp['epsilon']:.2f} at delta {dp['delta']:.3g} ("
            f"{dp['accountant'].upper()} accountant, {dp['steps']:,} steps, noise multiplier {dp['noise_multiplier']:.3f}, "
            f"per-user clipping {dp['max_grad_norm']:g})"
        )
    elif info.get("test"):
        print("differential privacy: none (trained without DP-SGD)")


def _recommend(args) -> list[dict]:
    from transformers import pipeline

    from hf_interest import RECOMMENDATION_TASK

    titles = _titles(args)
    if args.timestamps is not None and len(args.timestamps) != len(args.items):
        raise ValueError(
            f"--timestamps has {len(args.timestamps)} values for {len(args.items)} items: give one per item."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # loaded here rather than by pipeline(), whose loader folds the real error into a traceback dump
    remote = args.trust_remote_code or None
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=remote)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=remote)
    recommender = pipeline(RECOMMENDATION_TASK, model=model, tokenizer=tokenizer, item_titles=titles)
    history = {"items": args.items, "timestamps": args.timestamps} if args.timestamps else args.items
    return recommender(history, top_k=args.top_k, exclude_seen=not args.include_seen)


def _titles(args) -> dict | None:
    """Item titles for a table: `--item_titles`, else those of the run's own data (as the Space shows them)."""
    if args.item_titles:
        return _read_titles(args.item_titles)
    from hf_interest.space import item_info, load_run_data

    try:
        data = load_run_data(args.model) if Path(args.model).is_dir() else None
    except FileNotFoundError as error:  # the run's data moved: the table goes without titles, and says why
        print(f"(no titles: the run's data is not where it was: {error})", file=sys.stderr)
        return None
    if data is None:
        return None
    return {item: info["title"] for item, info in item_info(data).items() if info["title"] is not None}


def _read_titles(path_text: str | None) -> dict | None:
    if not path_text:
        return None
    path = Path(path_text)
    if not path.is_file():
        raise FileNotFoundError(f"--item_titles {path} does not exist.")
    titles = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(titles, dict):
        raise ValueError(f"--item_titles {path} must hold a JSON object {{raw item id: title}}.")
    return {str(key): str(value) for key, value in titles.items()}


def _explain(args) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_interest.explain import counterfactual, explain

    if args.timestamps is not None and len(args.timestamps) != len(args.history):
        raise ValueError(
            f"--timestamps has {len(args.timestamps)} values for {len(args.history)} items: give one per item."
        )
    if args.top_k < 1:
        raise ValueError(f"--top_k must be a positive integer, got {args.top_k}.")
    titles = _titles(args) or {}
    remote = args.trust_remote_code or None
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=remote).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=remote)
    explanation = explain(model, tokenizer, args.history, args.timestamps, target=args.target, method=args.method)
    result = {
        "target": explanation.target,
        "target_title": titles.get(explanation.target),
        "score": explanation.score,
        "method": explanation.method,
        "events": [{**event, "title": titles.get(event["item_id"])} for event in explanation.top(args.top_k)],
        "diagnostics": {k: v for k, v in explanation.diagnostics.items() if not k.endswith("_weights")},
    }
    if not args.no_counterfactual:
        found = counterfactual(model, tokenizer, args.history, args.timestamps)
        result["counterfactual"] = dict(found)
    if args.output:
        from hf_interest.explain import plot_explanation

        plot_explanation(explanation, args.output, titles=titles)
        result["plot"] = args.output
    return result


def _print_explanation(result: dict) -> None:
    title = f" ({result['target_title']})" if result.get("target_title") else ""
    print(f"explained: item {result['target']}{title}, score {result['score']:.4f} (next-item logit), "
          f"method {result['method']}")  # fmt: skip
    for key, value in result["diagnostics"].items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"{'rank':>4} {'event':>5}  {'time (UTC)':<16}  {'item_id':<12} {'attribution':>11}  title")
    for rank, event in enumerate(result["events"], start=1):
        print(f"{rank:>4} {event['position'] + 1:>5}  {_utc(event['timestamp']):<16}  {event['item_id']:<12} "
              f"{event['attribution']:>11.4f}  {event.get('title') or ''}")  # fmt: skip
    found = result.get("counterfactual")
    if found is not None:
        if found["found"]:
            removed = ", ".join(f"{event['item_id']} (event {event['position'] + 1})" for event in found["removed"])
            check = "verified by re-running recommend" if found["verified"] else "NOT confirmed by recommend"
            print(f"counterfactual: without {found['size']} event(s) [{removed}] the top-1 is {found['new']} "
                  f"instead of {found['original']} ({check})")  # fmt: skip
        else:
            print(f"counterfactual: no set of the user's events changes the top-1 ({found['original']})")
    if result.get("plot"):
        print(f"Saved the plot to {result['plot']}")


def _space(args) -> None:
    from hf_interest import space

    if args.serve:
        demo = space.build_demo(args.model, trust_remote_code=args.trust_remote_code or None)
        demo.launch(server_name="127.0.0.1", server_port=args.port)
        return
    if not args.model_repo:
        raise ValueError("--model_repo ORG/NAME is required to write a Space: the Space loads the model from the Hub.")
    result = space.publish_space(
        args.model,
        args.model_repo,
        repo_id=args.repo_id,
        dry_run=args.dry_run,
        private=args.private,
        with_items=args.with_items,
        title=args.title,
    )
    where = result["url"] if result.get("url") else result["folder"]
    print(f"Space for {args.model_repo}: {where} ({len(result['files'])} files)")
    for name in result["files"]:
        if not name.startswith("hf_interest/"):
            print(f"  {name}")
    print(
        f"  hf_interest/ ({sum(n.startswith('hf_interest/') for n in result['files'])} files: this package's source)"
    )
    if args.repo_id and Path(args.model).is_dir():
        print(f"{args.model}/space.json records {args.repo_id}: `hf-interest push` renders the card with a link to it")


def _export(args) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_interest.serving import export_onnx, write_handler

    remote = args.trust_remote_code or None
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=remote).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=remote)
    result = export_onnx(model, tokenizer, args.output, max_top_k=args.max_top_k)
    if args.with_handler:
        write_handler(args.output)
    print(
        f"Exported {args.model} to {args.output} (dynamo exporter; batch, sequence and exclusions dynamic). Checked "
        f"against torch on left-padded batches: max abs difference {result['max_abs_diff']:.2e}, top-10 "
        f"{'identical' if result['top10_equal'] else 'DIFFERENT'}."
    )
    for name in sorted(p.name for p in Path(args.output).iterdir() if p.is_file()):
        print(f"  {name}")


def _groups(args) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_interest.data import load_named_dataset
    from hf_interest.groups import describe_groups, discover_groups, group_migration, interest_vectors

    remote = args.trust_remote_code or None
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=remote).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=remote)
    model.check_vocabulary(tokenizer)
    data = load_named_dataset(args.dataset, data_dir=args.data_dir)
    rows = data.sequences["test"]  # each user's whole history before their test event
    histories, timestamps = rows["item_ids"], rows["timestamps"]
    vectors = interest_vectors(model, tokenizer, histories, timestamps, pooling=args.pooling)
    groups = discover_groups(
        vectors, rows["user_id"], num_groups=args.num_groups, max_groups=args.max_groups, seed=args.seed,
        pooling=args.pooling,
    )  # fmt: skip
    print(
        f"{len(histories)} users of {args.dataset}, interest vector = {args.pooling} state, k-means seed {args.seed}"
    )
    if groups.silhouette_by_k:
        tried = ", ".join(f"k={k}: {v:.3f}" for k, v in groups.silhouette_by_k.items())
        print(f"silhouette (cosine) by k: {tried}")
    print(f"{groups.num_groups} groups, silhouette {groups.silhouette:.3f}")
    for group in describe_groups(groups, histories, items=data.items, users=data.users, top_n=3):
        items = "; ".join(f"{title or item} ({share:.1%})" for item, title, share in group["top_items"])
        categories = ", ".join(f"{c} {share:.0%}" for c, share in group["top_categories"])
        print(f"group {group['group']}: {group['size']} users ({group['share']:.0%}) | top items: {items}")
        if categories:
            print(f"    categories: {categories}")
        for name, summary in group["attributes"].items():
            print(f"    {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in summary.items()))
    migration = group_migration(model, tokenizer, groups, histories, timestamps, num_windows=args.num_windows)
    for w in range(len(migration.boundaries) - 1):
        print(
            f"migration, boundary {w} -> {w + 1} (t={migration.boundaries[w]} -> {migration.boundaries[w + 1]}; "
            f"{migration.users_not_yet_active[w]} users not active yet at the first), rows sum to 1:"
        )
        for i, row in enumerate(migration.matrices[w]):
            print(f"    from {i} (n={migration.counts[w][i].sum():4d}): " + " ".join(f"{v:.2f}" for v in row))
    output = args.output_dir or (str(Path(args.model) / "groups") if Path(args.model).is_dir() else None)
    if output:
        groups.save(output)
        try:
            from hf_interest.groups import plot_groups, plot_migration

            plot_groups(groups, vectors, Path(output) / "groups.png")
            if len(migration.matrices):
                plot_migration(migration, path=Path(output) / "migration.png")
            print(
                f"Saved the groups and plots to {output} (groups.safetensors, groups.json, groups.png, migration.png)"
            )
        except ImportError as error:
            print(f"Saved the groups to {output}; no plots: {error}")


def _utc(seconds) -> str:
    from datetime import datetime, timezone

    return "-" if seconds is None else datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _shares(pairs) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in pairs)


def _trajectory(args) -> None:
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_interest.data import load_named_dataset
    from hf_interest.evolution import (
        category_distribution,
        category_interests,
        interest_drift,
        interest_trajectory,
        shuffled_trajectories,
    )

    if args.window is not None and args.window_seconds is not None:
        raise ValueError("Give --window (events) or --window_seconds, not both.")
    if args.permutations < 1:
        raise ValueError(f"--permutations must be at least 1, got {args.permutations}.")
    windowing = {"window_seconds": args.window_seconds} if args.window_seconds else {"window": args.window or 20}
    synthetic = {"num_users": args.synthetic_num_users, "num_items": args.synthetic_num_items}
    synthetic["seed"] = args.synthetic_seed
    data = load_named_dataset(args.dataset, data_dir=args.data_dir, synthetic=synthetic)
    rows = data.sequences["test"]
    users = [str(u) for u in rows["user_id"]]
    if args.user not in users:
        raise ValueError(
            f"--user {args.user} is not in the test split of {args.dataset} ({len(users)} users, e.g. "
            f"{', '.join(users[:3])})."
        )
    remote = args.trust_remote_code or None
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=remote).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=remote)
    model.check_vocabulary(tokenizer)
    row = rows[users.index(args.user)]
    history = [*row["item_ids"], row["target_item_id"]]
    times = [*row["timestamps"], row["target_timestamp"]] if row.get("timestamps") is not None else None
    trajectory = interest_trajectory(model, tokenizer, history, times, user_id=args.user)
    drift = interest_drift(trajectory, **windowing)
    shuffled = shuffled_trajectories(model, tokenizer, [trajectory] * args.permutations, seed=args.seed)
    reference = np.mean([interest_drift(t, **windowing).drift for t in shuffled], axis=0)

    print(
        f"user {args.user} of {args.dataset}: {len(history)} events (test target included); {len(trajectory)} read "
        f"(the newest, max_position_embeddings={model.config.max_position_embeddings}), {trajectory.num_truncated} "
        f"older left out, {trajectory.num_unknown} unknown to the vocabulary"
    )
    unit = f"{drift.size} events" if drift.unit == "events" else f"{drift.size} s"
    print(
        f"drift = cosine distance between the mean interest states of consecutive windows of {unit} (0: same "
        f"direction, 1: orthogonal); shuffled = the same events in a random order, times in place, mean of "
        f"{args.permutations} orders (seed {args.seed})"
    )
    if drift.empty_windows:
        print(f"{drift.empty_windows} windows without events left out")
    print(f"{'window':>6} {'events':>6} {'positions':>11}  {'from (UTC)':<16}  {'to (UTC)':<16} {'drift':>6} "
          f"{'shuffled':>8} {'from first':>10}")  # fmt: skip
    for w in range(len(drift)):
        start_time = None if drift.start_times is None else drift.start_times[w]
        end_time = None if drift.end_times is None else drift.end_times[w]
        value = "-" if w == 0 else f"{drift.drift[w]:.3f}"
        base = "-" if w == 0 else f"{reference[w]:.3f}"
        span = f"{drift.starts[w]}-{drift.ends[w] - 1}"
        print(f"{w:>6} {drift.num_events[w]:>6} {span:>11}  {_utc(start_time):<16}  {_utc(end_time):<16} {value:>6} "
              f"{base:>8} {drift.drift_from_first[w]:>10.3f}")  # fmt: skip
    if len(drift) > 1:
        print(f"mean drift over windows 1-{len(drift) - 1}: {np.mean(drift.drift[1:]):.3f} "
              f"(shuffled order: {np.mean(reference[1:]):.3f})")  # fmt: skip

    categories = dict(zip(map(str, data.items["item_id"]), data.items["categories"]))
    interests = category_interests(model, tokenizer, trajectory, categories, exclude_seen=args.exclude_seen)
    seen = "seen items excluded" if args.exclude_seen else "seen items kept"
    print(f"category interests (the next-item distribution summed per category, {seen}; several categories split):")
    print(f"    after event {trajectory.positions[0] + 1}: {_shares(interests.top(0))}")
    print(f"    after event {trajectory.positions[-1] + 1}: {_shares(interests.top(-1))}")
    counts = np.asarray(data.item_counts, dtype=np.float64)
    popularity, names, _ = category_distribution(counts / max(counts.sum(), 1.0), data.item_ids, categories)
    print(
        f"    popularity (share of training events): {_shares(sorted(zip(names, popularity), key=lambda p: -p[1])[:3])}"
    )
    if interests.items_without_category == len(tokenizer.items):
        print("No item has a category in this dataset: no category plot.")
    elif args.output:
        try:
            from hf_interest.evolution import plot_category_interests

            plot_category_interests(
                interests, args.output, top=args.top, x=args.x, drift=drift, drift_reference=reference
            )
            print(f"Saved the plot to {args.output}")
        except ImportError as error:
            print(f"No plot: {error}")


def parse_train_arguments(argv: list[str] | None = None, prog: str | None = None):
    """
    The training run's arguments from a command line, or from one JSON or YAML file holding the same fields.

    Args:
        argv (`list[str]`, *optional*): the arguments (default: `sys.argv[1:]`), or `[path.json]` / `[path.yaml]`.
        prog (`str`, *optional*): the program name `--help` shows.

    Returns:
        `(DataArguments, ModelArguments, TrainArguments)` (`hf_interest.training.arguments`).
    """
    import os

    from transformers import HfArgumentParser

    from hf_interest.data.paths import did_you_mean
    from hf_interest.training import DataArguments, ModelArguments, TrainArguments

    # No abbreviations: `--learning_rat` must not silently become `--learning_rate` (or another flag added later).
    parser = HfArgumentParser(
        (DataArguments, ModelArguments, TrainArguments), prog=prog, allow_abbrev=False, formatter_class=HelpFormatter
    )
    for action in parser._actions:  # argparse keeps no public list of its arguments
        if action.option_strings and action.option_strings[0].startswith("--no_"):
            action.help = f"The same as --{action.dest} false."
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return tuple(parser.parse_json_file(os.path.abspath(argv[0])))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return tuple(parser.parse_yaml_file(os.path.abspath(argv[0])))
    *arguments, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if remaining:
        unknown = next((text for text in remaining if text.startswith("-")), remaining[0])
        options = [action.option_strings[0] for action in parser._actions if action.option_strings]
        raise ValueError(
            f"{unknown} is not an option.{did_you_mean(unknown.split('=')[0], options)} `--help` lists them all "
            f"(not used: {' '.join(remaining)})."
        )
    return tuple(arguments)


def train_main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """`hf-interest train` and `hub_scripts/train.py`: parses the arguments (a command line, or one JSON/YAML file)
    and runs `hf_interest.training.train` (SISA's shards, or one `training_function`)."""
    arguments = parse_train_arguments(argv, prog=prog)  # fails here, before any data is read, on a bad value
    from hf_interest.training import train

    return train(*arguments)


def evaluate_main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """
    `hf-interest evaluate` and `hub_scripts/evaluate.py`: evaluates a checkpoint
    (`hf_interest.training.evaluation.evaluate_checkpoint`), prints the tables (seen items excluded, then included)
    and, with `--output_json`, writes the results to a file.
    """
    args = evaluate_parser(prog).parse_args(argv)
    from hf_interest.metrics import format_results_table
    from hf_interest.training.evaluation import evaluate_checkpoint

    evaluated = evaluate_checkpoint(
        args.checkpoint, args.split, args.dataset, args.data_dir, args.batch_size, show_progress=True,
        use_timestamps=not args.without_timestamps,
    )  # fmt: skip
    print(
        f"{args.checkpoint} on {evaluated['dataset']} ({evaluated['unknown_items']} item ids not in the checkpoint's "
        "vocabulary -> [UNK])" + ("; without timestamps" if args.without_timestamps else "")
    )
    for block in evaluated[args.split].values():
        print(format_results_table({"popularity": block["popularity"], "model": block["model"]}, block["protocol"]))
        print()
    if args.output_json:
        output = {"dataset": evaluated["dataset"], args.split: evaluated[args.split]}
        Path(args.output_json).write_text(json.dumps(output, indent=2) + "\n")
    return evaluated[args.split]


def push_main(argv: list[str] | None = None, prog: str | None = None):
    """`hf-interest push` and `hub_scripts/push_to_hub.py`: `hf_interest.hub.push_to_hub` with its options."""
    args = push_parser(prog).parse_args(argv)
    from hf_interest.hub import push_to_hub

    result = push_to_hub(
        args.run_dir,
        args.repo_id,
        private=args.private,
        dry_run=args.dry_run,
        license=args.license,
        model_name=args.model_name,
        with_handler=args.with_handler,
        with_user_data=args.with_user_data,
    )
    if args.dry_run:
        print(result.listing())
        print(f"Dry run: nothing uploaded. `hf-interest push {args.run_dir} --repo_id {args.repo_id}` uploads it.")
    else:
        print(f"Uploaded to https://huggingface.co/{args.repo_id} ({result})")
    return result


def run_script(argv: list[str]) -> int:
    """`hf-interest train|evaluate|push ...`: the command lines of hub_scripts/ (every option of each)."""
    command = {"train": train_main, "evaluate": evaluate_main, "push": push_main}[argv[0]]
    try:
        command(argv[1:], prog=f"hf-interest {argv[0]}")
    except USER_ERRORS as error:
        print(f"hf-interest {argv[0]}: error: {error}", file=sys.stderr)
        return 2
    return 0


def run(args) -> int:
    """The other commands, parsed by `parsers.build_parser`."""
    try:
        if getattr(args, "model", None) is not None:
            from hf_interest.data.paths import check_model_reference

            check_model_reference(args.model)  # before any Hub call
        if args.command == "recommend":
            results = _recommend(args)
            if args.json:
                print(json.dumps(results, indent=2, ensure_ascii=False))
            else:
                print(f"{'rank':>4}  {'item_id':<20} {'score':>10}  title")
                for entry in results:
                    print(
                        f"{entry['rank']:>4}  {entry['item_id']:<20} {entry['score']:>10.4f}  {entry.get('title', '')}"
                    )
        elif args.command == "explain":
            result = _explain(args)
            if args.json:
                print(json.dumps(result, indent=2, ensure_ascii=False))
            else:
                _print_explanation(result)
        elif args.command == "export":
            _export(args)
        elif args.command == "space":
            _space(args)
        elif args.command == "groups":
            _groups(args)
        elif args.command == "trajectory":
            _trajectory(args)
        elif args.command == "forget":
            from hf_interest.training import training_function
            from hf_interest.training.data import read_ids
            from hf_interest.training.sisa import forget

            users = list(args.users) + (read_ids(args.users_file, "--users_file", "user") if args.users_file else [])
            forget(args.run, users, train_one=training_function, key_file=args.key_file)
        elif args.command == "info":
            info = _info(args.model)
            if args.json:
                print(json.dumps(info, indent=2))
            else:
                _print_info(info)
    except USER_ERRORS as error:
        print(f"hf-interest {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
