"""A Gradio app to look at a model: a user's interests over time, what the model recommends now and why.

`SpaceBackend` computes every view without gradio (so that the views are plain, testable functions); `build_demo`
lays them out as a Gradio 6 `Blocks` app in which every view is also an API endpoint (`api_name`), usable with
`gradio_client`:

- `/user_history`: a user of the run's data (the history before their test event) as text;
- `/recommend`: the top-k items with titles, scores and the past events behind each (leave-one-out);
- `/trajectory`: category interests over the events (stacked area; the next-item distribution summed per category),
  the long/short-term gate, drift between windows, and the forecast of the next categories;
- `/group`: the user's group and its profile, when the run folder holds groups (`hf-interest groups`);
- `/remove_event`: the history without one event (the page then recomputes every view at once).

A history is typed as raw item ids separated by spaces or commas, oldest first, with optional times (integer seconds,
one per item). Bad input (an unknown item, an empty history, garbage times) is a message in the page, never a
traceback. `write_space` writes a ready Hugging Face Space around a model repository. Needs gradio
(`pip install 'hf-interest[space]'`).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import torch

from .evolution import category_interests, headless_pyplot, interest_drift, interest_trajectory, interest_vectors
from .explain import explain_recommendations
from .groups import UserGroups, describe_groups

MAX_USERS_LISTED = 2000
"""Users offered in the picker (the first ones of the test split, in its order)."""


class InputError(ValueError):
    """A person's input the app cannot read; its message is shown in the page."""


def _split(text) -> list[str]:
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        return [str(value).strip() for value in text if str(value).strip()]
    return [token for token in re.split(r"[\s,;]+", str(text).strip()) if token]


def load_run_data(run):
    """
    The data a run of `hf-interest train` was trained on, loaded again from the dataset its `eval_results.json` names
    (a run folder, or that file's content as a dict); None when there is none to read (a Hub repo, a run without
    results).
    """
    from .data import load_named_dataset

    if not isinstance(run, dict):
        results = Path(run) / "eval_results.json"
        if not results.is_file():
            return None
        run = json.loads(results.read_text(encoding="utf-8"))
    arguments = run.get("arguments", {}).get("data", {})
    name = arguments.get("dataset")
    if not name:
        return None
    synthetic = {
        key.removeprefix("synthetic_"): value
        for key, value in arguments.items()
        if key.startswith("synthetic_") and value is not None
    }
    return load_named_dataset(name, data_dir=arguments.get("data_dir"), synthetic=synthetic)


def item_info(data) -> dict[str, dict]:
    """`{raw item id: {"title", "categories"}}` from a `BehaviorData`'s items table (None / [] where it has none)."""
    columns = data.items.column_names
    titles = data.items["title"] if "title" in columns else [None] * len(data.items)
    categories = data.items["categories"] if "categories" in columns else [None] * len(data.items)
    return {
        str(item): {"title": title, "categories": list(item_categories or [])}
        for item, title, item_categories in zip(data.items["item_id"], titles, categories)
    }


@dataclass
class SpaceBackend:
    """
    The model, its vocabulary and (for a run folder) its data, and the views computed from them.

    Args:
        model: a next-item model (`InterestForNextItemPrediction`, or one loaded with `trust_remote_code`).
        tokenizer: its `ItemTokenizer`.
        items: `{raw item id: {"title": ..., "categories": [...]}}` (optional; without categories there is no
            category view).
        users: `{user id: (items, timestamps)}`: histories a person can pick (optional).
        groups: `UserGroups` of the run (optional) and `group_profiles`, one `describe_groups` dict per group.
        name: what the page calls the model.
        data: the run's `BehaviorData`, when it was read (`from_pretrained` on a run folder).
    """

    model: object
    tokenizer: object
    items: dict = field(default_factory=dict)
    users: dict = field(default_factory=dict)
    groups: UserGroups | None = None
    group_profiles: list = field(default_factory=list)
    name: str = "model"
    data: object = field(default=None, repr=False)

    @classmethod
    def from_pretrained(
        cls, reference: str, trust_remote_code: bool | None = None, with_data: bool = True, items_file=None
    ):
        """
        Loads a run folder or a Hub repo id. A run folder of `hf-interest train` also gives its data (the users to
        pick, item titles and categories, from the dataset named in its eval_results.json) and its groups
        (`groups/` after `hf-interest groups`). `items_file`: a JSON `{raw item id: {"title", "categories"}}` (the
        `space_items.json` that `write_space` can write), read when it exists.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(reference, trust_remote_code=trust_remote_code).eval()
        tokenizer = AutoTokenizer.from_pretrained(reference, trust_remote_code=trust_remote_code)
        model.check_vocabulary(tokenizer)
        backend = cls(model=model, tokenizer=tokenizer, name=str(reference))
        folder = Path(reference)
        if items_file is not None and Path(items_file).is_file():
            backend.items = json.loads(Path(items_file).read_text(encoding="utf-8"))
        results = folder / "eval_results.json"
        if with_data and folder.is_dir() and results.is_file():
            backend._read_run_data(json.loads(results.read_text(encoding="utf-8")))
        if folder.is_dir() and (folder / "groups" / "groups.json").is_file():
            backend.groups = UserGroups.load(folder / "groups")
            backend._describe_groups()
        return backend

    def _read_run_data(self, results: dict) -> None:
        data = load_run_data(results)
        if data is None:
            return
        self.data = data
        self.items.update(item_info(data))
        rows = data.sequences["test"]
        times = rows["timestamps"] if "timestamps" in rows.column_names else [None] * len(rows)
        for user, history, stamps in zip(rows["user_id"][:MAX_USERS_LISTED], rows["item_ids"], times):
            self.users[str(user)] = ([str(item) for item in history], list(stamps) if stamps is not None else None)

    def _describe_groups(self) -> None:
        data = self.data
        if data is None:
            return
        rows = data.sequences["test"]
        by_user = {str(user): [str(i) for i in items] for user, items in zip(rows["user_id"], rows["item_ids"])}
        if not all(user in by_user for user in self.groups.user_ids):
            return  # the groups were found on other users: no profile to show
        histories = [by_user[user] for user in self.groups.user_ids]
        self.group_profiles = describe_groups(self.groups, histories, items=data.items, top_n=3)

    # --- input ------------------------------------------------------------------------------------------------

    def parse(self, items_text, times_text=None) -> tuple[list[str], list[int] | None]:
        """Raw item ids (space or comma separated, oldest first) and optional times: checked, or `InputError`."""
        items = _split(items_text)
        if not items:
            raise InputError("The history is empty: type or paste raw item ids, oldest first, or pick a user.")
        vocabulary = self.tokenizer.get_vocab()
        special = self.model.config.num_special_tokens
        unknown = [item for item in items if vocabulary.get(item, -1) < special]
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise InputError(f"{len(unknown)} of {len(items)} items are not in this model's vocabulary: {shown}.")
        raw_times = _split(times_text)
        if not raw_times:
            return items, None
        if len(raw_times) != len(items):
            raise InputError(f"{len(raw_times)} times for {len(items)} items: give one time per item, or none.")
        try:
            times = [int(value) for value in raw_times]
        except ValueError:
            bad = next(value for value in raw_times if not value.lstrip("-").isdigit())
            raise InputError(f"Times must be integer seconds (unix time); {bad!r} is not.") from None
        if any(later < earlier for earlier, later in zip(times, times[1:])):
            raise InputError("Times must not decrease: list the events oldest first.")
        return items, times

    def title(self, item: str) -> str:
        return (self.items.get(item) or {}).get("title") or ""

    # --- views ------------------------------------------------------------------------------------------------

    def user_history(self, user_id) -> tuple[str, str]:
        """`(items text, times text)` of a user of the run's data."""
        user_id = str(user_id or "").strip()
        if user_id not in self.users:
            known = ", ".join(list(self.users)[:5])
            raise InputError(
                f"Unknown user {user_id!r}." + (f" Pick one of the list (e.g. {known})." if known else "")
            )
        items, times = self.users[user_id]
        return " ".join(items), " ".join(str(t) for t in times) if times is not None else ""

    def recommend(self, items_text, times_text=None, top_k=10, explain_top_k=3) -> list[list]:
        """Rows `[rank, item_id, title, score, because]`: the top-k (every given event's item excluded, as
        `model.recommend` and evaluation do) with their top events (among the newest events, which the model read)."""
        items, times = self.parse(items_text, times_text)
        top_k = int(top_k)
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}.")
        encoded = self.tokenizer([items], timestamps=[times] if times is not None else None, return_tensors="pt")
        output = self.model.recommend(**encoded, top_k=top_k)
        indices = [index for index in output.item_ids[0].tolist() if index >= 0]
        recommended = self.tokenizer.decode_items(indices)
        because = explain_recommendations(
            self.model, self.tokenizer, items, times, items=recommended, method="leave_one_out", top_k=explain_top_k
        )
        rows = []
        for rank, (item, score, events) in enumerate(zip(recommended, output.scores[0].tolist(), because), start=1):
            reasons = "; ".join(
                f"{self.title(event['item_id']) or event['item_id']} ({event['attribution']:+.2f})" for event in events
            )
            rows.append([rank, item, self.title(item), round(float(score), 4), reasons])
        return rows

    def events(self, items_text, times_text=None) -> list[tuple[str, int]]:
        """`(label, position)` of each event, newest first: the choices of "remove an event"."""
        items, times = self.parse(items_text, times_text)
        labels = []
        for position in reversed(range(len(items))):
            when = f" at {_utc(times[position])}" if times is not None else ""
            name = self.title(items[position])
            labels.append((f"{position + 1}: {items[position]}{' ' + name if name else ''}{when}", position))
        return labels

    def remove_event(self, items_text, times_text, position) -> tuple[str, str]:
        """The history without the event at `position` (0 = oldest)."""
        items, times = self.parse(items_text, times_text)
        if position is None or str(position).strip() == "":
            raise InputError("Choose the event to remove.")
        position = int(position)
        if not 0 <= position < len(items):
            raise InputError(f"There is no event {position + 1}: the history has {len(items)} events.")
        if len(items) == 1:
            raise InputError("This is the only event: a history needs at least one.")
        del items[position]
        if times is not None:
            del times[position]
        return " ".join(items), " ".join(str(t) for t in times) if times is not None else ""

    def trajectory(self, items_text, times_text=None, window: int = 10) -> dict:
        """
        Category interests after every event (`steps`, `categories`, `shares` rows), the gate after every event
        (None without both long- and short-term parts), drift between windows of `window` events, and the forecast
        of the next event's categories (the last row, largest first).
        """
        items, times = self.parse(items_text, times_text)
        trajectory = interest_trajectory(self.model, self.tokenizer, items, times)
        result = {"steps": [int(p) + 1 for p in trajectory.positions], "categories": [], "shares": [], "forecast": []}
        categories = {item: info.get("categories") or [] for item, info in self.items.items()}
        if any(categories.values()):
            interests = category_interests(self.model, self.tokenizer, trajectory, categories)
            result["categories"] = list(interests.categories)
            result["shares"] = np.round(interests.probs, 5).tolist()
            result["forecast"] = [[name, round(share, 4)] for name, share in interests.top(-1, n=5)]
        ids = torch.as_tensor(trajectory.input_ids)[None, :]
        stamps = torch.as_tensor(trajectory.timestamps)[None, :] if trajectory.timestamps is not None else None
        with torch.no_grad():
            gate = self.model.model(input_ids=ids, timestamps=stamps).interest_gate
        result["gate"] = np.round(gate[0].float().numpy(), 4).tolist() if gate is not None else None
        drift = interest_drift(trajectory, window=max(1, min(int(window), len(trajectory))))
        result["drift"] = [
            [int(start) + 1, int(end), None if np.isnan(value) else round(float(value), 4)]
            for start, end, value in zip(drift.starts, drift.ends, drift.drift)
        ]
        return result

    def group(self, items_text, times_text=None) -> str:
        """The user's group (nearest centre, as k-means assigns) and its profile, as Markdown."""
        items, times = self.parse(items_text, times_text)
        if self.groups is None:
            return "This model has no user groups (run `hf-interest groups RUN --dataset ...` to find them)."
        vector = interest_vectors(
            self.model, self.tokenizer, [items], [times] if times is not None else None, pooling=self.groups.pooling
        )
        group = int(self.groups.assign(vector)[0])
        sizes = self.groups.sizes()
        lines = [
            f"**Group {group}** of {self.groups.num_groups}: {int(sizes[group])} users ({sizes[group] / sizes.sum():.0%})."
        ]
        if self.group_profiles:
            profile = self.group_profiles[group]
            if profile["top_categories"]:
                lines.append("Top categories: " + ", ".join(f"{c} {s:.0%}" for c, s in profile["top_categories"]))
            if profile["top_items"]:
                lines.append(
                    "Top items: " + "; ".join(f"{title or item} ({s:.1%})" for item, title, s in profile["top_items"])
                )
        return "\n\n".join(lines)


def _utc(seconds) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def trajectory_figure(view: dict, top: int = 6):
    """A matplotlib figure of a `SpaceBackend.trajectory` result: category shares (stacked area) and the gate."""
    plt = headless_pyplot()
    panels = 2 if view["gate"] is not None else 1
    figure, axes = plt.subplots(panels, 1, figsize=(9, 4.6), sharex=True, squeeze=False, height_ratios=[3, 1][:panels])
    steps = view["steps"]
    area = axes[0][0]
    if view["shares"]:
        shares = np.asarray(view["shares"])
        order = np.argsort(-shares.mean(axis=0), kind="stable")
        shown = order[:top]
        stacked = [shares[:, c] for c in shown] + [shares[:, order[top:]].sum(axis=1)]
        labels = [view["categories"][c] for c in shown] + ["other"]
        area.stackplot(steps, stacked, labels=labels, alpha=0.85)
        area.set_ylim(0, 1)
        area.legend(loc="upper left", fontsize=7, ncol=4)
        area.set_ylabel("category interest")
    else:
        area.text(0.5, 0.5, "no item categories known to this app", ha="center", va="center")
    area.set_title("Interest trajectory: the next-item distribution by category after each event", fontsize=10)
    if view["gate"] is not None:
        gate = axes[1][0]
        gate.plot(steps, view["gate"], color="black", linewidth=1)
        gate.set_ylim(0, 1)
        gate.set_ylabel("gate (long)")
    axes[-1][0].set_xlabel("event")
    figure.tight_layout()
    return figure


def build_demo(backend: SpaceBackend | str, title: str | None = None, trust_remote_code: bool | None = None):
    """
    The Gradio app. `backend` is a `SpaceBackend` or what `SpaceBackend.from_pretrained` loads (a run folder or Hub
    repo id). Returns a `gradio.Blocks`; `demo.launch()` serves it on 127.0.0.1 unless GRADIO_SERVER_NAME says
    otherwise (a Hugging Face Space sets it).
    """
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("The app needs gradio: pip install 'hf-interest[space]'.") from None
    if not isinstance(backend, SpaceBackend):
        backend = SpaceBackend.from_pretrained(backend, trust_remote_code=trust_remote_code)

    def readable(function):
        """Bad input: a message in the page (gr.Error), never a traceback."""

        def wrapped(*args):
            try:
                return function(*args)
            except (InputError, ValueError) as error:
                raise gr.Error(str(error), print_exception=False) from None

        wrapped.__name__ = function.__name__
        wrapped.__doc__ = function.__doc__
        return wrapped

    def recommend(items_text, times_text, top_k):
        return backend.recommend(items_text, times_text, top_k)

    def trajectory(items_text, times_text):
        view = backend.trajectory(items_text, times_text)
        drift = ", ".join(f"{start}-{end}: {value}" for start, end, value in view["drift"] if value is not None)
        forecast = ", ".join(f"{name} {share:.0%}" for name, share in view["forecast"]) or "(no categories)"
        gate = view["gate"][-1] if view["gate"] else None
        summary = (
            f"**Next categories (forecast):** {forecast}\n\n"
            + (
                f"**Gate after the last event:** {gate:.2f} (1: long-term profile, 0: the last few events)\n\n"
                if gate is not None
                else ""
            )
            + f"**Drift between windows of 10 events** (cosine distance of mean states): {drift or '-'}"
        )
        return trajectory_figure(view), summary

    def event_choices(items_text, times_text):
        choices = backend.events(items_text, times_text)
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    with gr.Blocks(title=title or f"hf_interest: {backend.name}") as demo:
        gr.Markdown(
            f"# {title or 'How interests evolve'}\n"
            f"Model: `{backend.name}`. Pick a user or type a history of raw item ids (oldest first, optional times "
            "in unix seconds); see the interest trajectory, the recommendations and the past events behind them."
        )
        with gr.Row():
            user = gr.Dropdown(
                choices=list(backend.users),
                value=None,  # nothing picked: choosing the first user must be a change too
                label="user of the run's data",
                elem_id="user",
                visible=bool(backend.users),
            )
            top_k = gr.Slider(1, 50, value=10, step=1, label="top k", elem_id="top_k")
        history = gr.Textbox(label="history: raw item ids, oldest first", elem_id="history", lines=2, max_lines=4)
        times = gr.Textbox(label="times (unix seconds, one per item; optional)", elem_id="times", lines=1, max_lines=3)
        show = gr.Button("Show", variant="primary", elem_id="show")
        recommendations = gr.Dataframe(
            headers=["rank", "item_id", "title", "score", "because (top past events, leave-one-out)"],
            label="recommendations",
            elem_id="recommendations",
            interactive=False,
            wrap=True,
        )
        with gr.Row():
            remove_choice = gr.Dropdown(
                label="remove an event", elem_id="remove_choice", choices=[], allow_custom_value=True
            )
            remove = gr.Button("Remove it and recompute", elem_id="remove")
        plot = gr.Plot(label="interest trajectory", elem_id="trajectory")
        summary = gr.Markdown(elem_id="summary")
        group = gr.Markdown(elem_id="group")

        views = [history, times]
        every_view = (
            (recommend, [history, times, top_k], recommendations, "recommend"),
            (trajectory, views, [plot, summary], "trajectory"),
            (backend.group, views, group, "group"),
            (event_choices, views, remove_choice, None),
        )
        # The Show button: one API endpoint per view.
        for function, inputs, outputs, api_name in every_view:
            show.click(
                readable(function),
                inputs,
                outputs,
                api_name=api_name,
                api_visibility="public" if api_name else "private",
            )
        # Picking a user or removing an event changes the history, then every view is recomputed.
        picked = user.change(readable(backend.user_history), user, views, api_name="user_history")
        removed = remove.click(
            readable(backend.remove_event), [history, times, remove_choice], views, api_name="remove_event"
        )
        for changed in (picked, removed):
            for function, inputs, outputs, _ in every_view:
                changed.success(readable(function), inputs, outputs, api_visibility="private")
    return demo


def timed_views(backend: SpaceBackend, items_text: str, times_text: str = "", repeats: int = 5) -> dict:
    """Median seconds of each view for one history (what a person waits for, without the browser)."""
    views = {
        "recommend": lambda: backend.recommend(items_text, times_text, 10),
        "trajectory": lambda: trajectory_figure(backend.trajectory(items_text, times_text)),
        "group": lambda: backend.group(items_text, times_text),
    }
    result = {}
    for name, view in views.items():
        seconds = []
        for _ in range(repeats):
            began = time.perf_counter()
            output = view()
            seconds.append(time.perf_counter() - began)
            if name == "trajectory":
                headless_pyplot().close(output)
        result[name] = float(np.median(seconds))
    return result


# --- the Space folder ---------------------------------------------------------------------------------------------

SPACE_APP = '''"""A Hugging Face Space for {model_repo}, written by `hf-interest space`."""

from pathlib import Path

from hf_interest.space import SpaceBackend, build_demo

items = Path(__file__).with_name("space_items.json")  # item titles and categories, when the Space was given them
demo = build_demo(SpaceBackend.from_pretrained("{model_repo}", items_file=items), title="{title}")

if __name__ == "__main__":
    demo.launch()
'''

SPACE_REQUIREMENTS = ("gradio", "torch", "transformers", "datasets", "accelerate", "peft", "evaluate", "safetensors",
                      "huggingface_hub", "numpy", "pyarrow", "jinja2", "scikit-learn", "tqdm", "pooch", "matplotlib",
                      "captum")  # fmt: skip


def write_space(
    folder, model_repo: str, run_dir=None, title: str | None = None, with_items: bool = False
) -> list[str]:
    """
    Writes a ready Hugging Face Space into `folder`: `app.py` (the app above, on `model_repo`), `requirements.txt`
    (the versions installed here, pinned; torch as the CPU build a free Space runs), `README.md` with the Space
    metadata (`sdk: gradio`) and a link to the model repository, and `hf_interest/`, this package's own source, so
    that the Space runs without hf_interest on PyPI. With `with_items`, the run's item titles and categories go into
    `space_items.json` (check the data's licence first: MovieLens' forbids redistribution; without them the page
    shows raw ids and no category view). No user data is ever written.

    Returns:
        the files written, relative to `folder`.
    """
    import hf_interest

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty: choose a new folder for the Space.")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", model_repo or ""):
        raise ValueError(f"The model repository must be a Hub id ORG/NAME, got {model_repo!r}.")
    folder.mkdir(parents=True, exist_ok=True)
    title = title or model_repo.split("/")[-1]
    (folder / "app.py").write_text(SPACE_APP.format(model_repo=model_repo, title=title), encoding="utf-8")
    pins = []
    for name in SPACE_REQUIREMENTS:
        try:
            version = metadata.version(name).split("+")[0]
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{name} is not installed here: install hf-interest[space,explain] first.") from None
        pins.append(f"{name}=={version}")
    (folder / "requirements.txt").write_text(
        "# Pinned to the versions this Space was written with (hf-interest space).\n"
        "--extra-index-url https://download.pytorch.org/whl/cpu\n" + "\n".join(pins) + "\n",
        encoding="utf-8",
    )
    gradio_version = metadata.version("gradio")
    readme = [
        "---",
        f"title: {title}",
        "emoji: 📈",
        "colorFrom: indigo",
        "colorTo: green",
        "sdk: gradio",
        f"sdk_version: {gradio_version}",
        "app_file: app.py",
        "pinned: false",
        "models:",
        f"  - {model_repo}",
        "---",
        "",
        f"# {title}",
        "",
        f"How a user's interests evolve, what [{model_repo}](https://huggingface.co/{model_repo}) recommends next, and "
        "which past events drove each recommendation. Type a history of raw item ids (oldest first) with optional "
        "unix times; remove an event to see the ranking change.",
        "",
        "Every view is also an API endpoint: `gradio_client.Client(SPACE).predict(history, times, 10, "
        'api_name="/recommend")`.',
        "",
        "Written by `hf-interest space` ([hf_interest](https://github.com/hf-interest/hf_interest)).",
        "",
    ]
    (folder / "README.md").write_text("\n".join(readme), encoding="utf-8")
    source = Path(hf_interest.__file__).resolve().parent
    shutil.copytree(source, folder / "hf_interest", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cards = Path(str(resources.files("hf_interest.model_cards")))  # the repository's model_cards/ when editable
    if not (folder / "hf_interest" / "model_cards").exists():
        shutil.copytree(cards, folder / "hf_interest" / "model_cards", ignore=shutil.ignore_patterns("__pycache__"))
    if with_items:
        if run_dir is None:
            raise ValueError("with_items needs the run folder whose data holds the item titles and categories.")
        backend = SpaceBackend.from_pretrained(str(run_dir))
        (folder / "space_items.json").write_text(json.dumps(backend.items, ensure_ascii=False), encoding="utf-8")
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def publish_space(
    run_dir,
    model_repo: str,
    repo_id: str | None = None,
    dry_run=None,
    private: bool = False,
    with_items: bool = False,
    title: str | None = None,
) -> dict:
    """
    Writes the Space (`write_space`) into `dry_run`, or into a temporary folder and uploads it to the Space `repo_id`
    (created with `sdk: gradio` when missing). With `repo_id`, the run folder records it (`space.json`) so that the
    model card `hf-interest push` renders links to the Space.

    Returns:
        `{"folder", "files", "space_id", "url"}` (`url` only after an upload).
    """
    import tempfile

    from .hub import SPACE_LINK_FILE

    if dry_run is None and repo_id is None:
        raise ValueError("Give --dry_run DIR (write the Space folder) or --repo_id ORG/NAME (push it), or both.")
    if repo_id is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ValueError(f"--repo_id must be a Space id ORG/NAME, got {repo_id!r}.")
    run_dir = Path(run_dir) if run_dir is not None else None
    result = {"space_id": repo_id}
    if dry_run is not None:
        files = write_space(dry_run, model_repo, run_dir=run_dir, title=title, with_items=with_items)
        result.update(folder=str(dry_run), files=files)
    else:
        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "space"
            files = write_space(folder, model_repo, run_dir=run_dir, title=title, with_items=with_items)
            api = HfApi()
            api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=str(folder))
        result.update(folder=None, files=files, url=f"https://huggingface.co/spaces/{repo_id}")
    if repo_id is not None and run_dir is not None and run_dir.is_dir():
        (run_dir / SPACE_LINK_FILE).write_text(json.dumps({"space_id": repo_id}) + "\n", encoding="utf-8")
    return result


__all__ = [
    "InputError",
    "SpaceBackend",
    "build_demo",
    "item_info",
    "load_run_data",
    "publish_space",
    "timed_views",
    "trajectory_figure",
    "write_space",
]
