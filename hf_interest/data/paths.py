"""Messages about names and paths a person typed: the close matches, and what is there instead."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path


def did_you_mean(value, candidates: Iterable) -> str:
    """`" Did you mean 'x'?"` for the close matches of `value` among `candidates`, or `""` when none is close."""
    matches = difflib.get_close_matches(str(value), [str(c) for c in candidates], n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""


def path_hint(path: str | os.PathLike) -> str:
    """
    For a path that does not exist, what is there instead: `" Did you mean 'x'?"` for the close names in its folder,
    `" The folder F does not exist."` when a folder on its way is missing, or `""`.
    """
    p = Path(path).expanduser()
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor != p.parent:
        missing = p.parent
        while missing.parent != ancestor:
            missing = missing.parent
        return f" The folder {missing} does not exist."
    try:
        names = sorted(entry.name for entry in os.scandir(ancestor))[:10_000]
    except OSError:
        return ""
    close = difflib.get_close_matches(p.name, names, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(str(Path(path).parent / n)) for n in close)}?" if close else ""


def missing_path_message(path: str | os.PathLike) -> str:
    """`"PATH: no such file or directory."` and `path_hint`."""
    return f"{path}: no such file or directory.{path_hint(path)}"


def check_model_reference(name: str) -> None:
    """
    A model given as a local folder or a Hub repo id: raises when it names a local path that is not a folder, before
    any Hub call (which would retry for half a minute and end in "couldn't connect"). A local path is what starts
    with `.`, `/` or `~`, has two `/` or more, or whose first part is a local folder (`runs/ml10k` where `runs/`
    exists); anything else (ORG/NAME, or a bare NAME) goes to the Hub.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise NotADirectoryError(f"{name} is a file; give the model's folder (where config.json is) or a Hub repo id.")
    first = name.split("/")[0]
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or ("/" in name and Path(first).expanduser().is_dir()):
        raise FileNotFoundError(f"{missing_path_message(name)} (Read as a local folder; a Hub repo id is ORG/NAME.)")
