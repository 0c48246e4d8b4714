"""MovieLens as GroupLens ships it, and a `movielens-100k` helper that finds or downloads the data.

Harper & Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015.
https://grouplens.org/datasets/movielens/

Three layouts are read, from a directory or from the ratings file itself:

- 100K: `u.data` (tab-separated user, item, rating, timestamp), `u.item` (`|`-separated, Latin-1, 19 genre flags),
  `u.user` (age, gender, occupation, zip code), `u.genre` (genre names);
- 1M (and 10M): `ratings.dat`, `movies.dat` (genres `|`-separated), `users.dat` (1M only; age and occupation as
  codes, decoded with the tables of the 1M README), all `::`-separated;
- latest / 20M / 25M / 32M: `ratings.csv` (userId, movieId, rating, timestamp) and `movies.csv`.

`load_movielens_100k()` looks for the files in a directory you pass, then in the cache
(`$HF_INTEREST_CACHE`, default `~/.cache/hf_interest`), and otherwise downloads the official archive from
GroupLens and checks it against the MD5 GroupLens publishes. A RecBole conversion (`ml-100k.inter` etc.) in the
directory is read as well. `movielens_100k_from_recbole_wheel()` extracts that conversion from the `recbole==1.2.1`
wheel on PyPI, which is what the tests use (no data is committed to this repository).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import Provenance, read_all_bytes
from .columns import ColumnMapping
from .readers import RawLog, check_file, read_delimited, split_categories

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# Published by GroupLens in https://files.grouplens.org/datasets/movielens/ml-100k.zip.md5
ML100K_MD5 = "0e33842e24a9c977be4e0107933c0723"
ML100K_SIZE = 4_924_029

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ML100K_MEMBERS = {
    suffix: f"recbole/dataset_example/ml-100k/ml-100k.{suffix}" for suffix in ("inter", "item", "user")
}

# u.genre of ML-100K, in flag order (used when u.genre is absent).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# README of ML-1M: codes of users.dat.
ML1M_AGES = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = (
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student",
    "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip


def default_cache_dir() -> Path:
    """The cache directory: `$HF_INTEREST_CACHE`, else `~/.cache/hf_interest`."""
    return Path(os.environ.get("HF_INTEREST_CACHE") or Path.home() / ".cache" / "hf_interest")


# ----------------------------------------------------------------------------------------------------------------
# Reading


def _text_encoding(path: Path) -> str:
    """UTF-8 if the (small) file decodes as UTF-8, else Latin-1 (what GroupLens used for 100K and 1M)."""
    try:
        read_all_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _mapping_fields(mapping: ColumnMapping) -> dict[str, str]:
    resolved = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"}
    for name in ("timestamp", "rating"):
        if getattr(mapping, name) is False:
            del resolved[name]
    return resolved


def _canonical(table: pa.Table, resolved: dict[str, str]) -> pa.Table:
    return pa.table({canonical: table.column(source) for canonical, source in resolved.items()})


def _locate_variant(path: Path) -> tuple[str, Path]:
    if path.is_file():
        name = path.name.lower()
        variants = {"u.data": "100k", "ratings.dat": "1m", "ratings.csv": "latest"}
        if name not in variants:
            raise ValueError(
                f"{path}: not a MovieLens ratings file (u.data, ratings.dat or ratings.csv); pass the file or its "
                f"directory."
            )
        return variants[name], path.parent
    for name, variant in (("u.data", "100k"), ("ratings.dat", "1m"), ("ratings.csv", "latest")):
        if (path / name).exists():
            return variant, path
    found = sorted(p.name for p in path.iterdir())
    raise FileNotFoundError(
        f"{path}: no MovieLens ratings file (u.data, ratings.dat or ratings.csv) in this directory; found {found}."
    )


def read_movielens(path: str | os.PathLike, mapping: ColumnMapping | None = None) -> RawLog:
    """Read MovieLens 100K, 1M/10M or latest/20M/25M/32M in the layout GroupLens ships.

    Args:
        path: The directory (or its ratings file).
        mapping: Only `timestamp=False` / `rating=False` are honoured (the column names are fixed by GroupLens).

    Returns:
        The raw log with item (and, for 100K/1M, user) side tables.
    """
    mapping = mapping or ColumnMapping()
    variant, directory = _locate_variant(Path(path))
    resolved = _mapping_fields(mapping)
    if variant == "100k":
        ratings_file = check_file(directory / "u.data")
        table = read_delimited(
            ratings_file,
            delimiter="\t",
            column_names=["user_id", "item_id", "rating", "timestamp"],
            column_types={"user_id": pa.int64(), "item_id": pa.int64(), "rating": pa.float32()},
            quoting=False,
            label="MovieLens u.data",
        )
        items = _ml100k_items(directory) if (directory / "u.item").exists() else None
        users = _ml100k_users(directory) if (directory / "u.user").exists() else None
        header = 0
    elif variant == "1m":
        ratings_file = check_file(directory / "ratings.dat")
        names = ["user_id", "item_id", "rating", "timestamp"]
        types = {"user_id": pa.int64(), "item_id": pa.int64(), "rating": pa.float32(), "timestamp": pa.int64()}
        table = _read_double_colon(ratings_file, names, types)
        items = _ml1m_items(directory) if (directory / "movies.dat").exists() else None
        users = _ml1m_users(directory) if (directory / "users.dat").exists() else None
        header = 0
    else:
        ratings_file = check_file(directory / "ratings.csv")
        table = read_delimited(
            ratings_file,
            delimiter=",",
            include=["userId", "movieId", "rating", "timestamp"],
            label="MovieLens ratings.csv",
        )
        table = table.rename_columns(["user_id", "item_id", "rating", "timestamp"])
        items = _ml_latest_items(directory) if (directory / "movies.csv").exists() else None
        users = None
        header = 1
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in table.column_names]
    if missing:
        raise ValueError(f"{ratings_file}: missing columns {missing}; found {table.column_names}.")
    notes = [f"MovieLens {variant} layout"]
    return RawLog(
        table=_canonical(table, resolved),
        source=str(ratings_file),
        provenance=Provenance(str(ratings_file), header_lines=header),
        columns=resolved,
        timestamp_unit="s",
        items=items,
        users=users,
        notes=notes,
    )


def _read_double_colon(path: Path, names: list[str], types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """`a::b::c` files whose fields never contain ':' (ratings.dat, users.dat): ':' is the delimiter, and the
    empty fields between the two colons are skipped."""
    spread = [part for name in names for part in (name, f"_gap_{name}")][:-1]
    types = types or dict.fromkeys(names, pa.string())
    return read_delimited(
        path,
        delimiter=":",
        column_names=spread,
        include=names,
        column_types=types,
        encoding=_text_encoding(path) if path.stat().st_size < (64 << 20) else "utf-8",
        quoting=False,
        label="MovieLens .dat",
    )


def _split_lines(path: Path, names: list[str]) -> pa.Table:
    """`a::b::c` files whose last-but-one field may contain ':' (movies.dat titles)."""
    encoding = _text_encoding(path)
    lines = read_delimited(
        path, delimiter="\x1f", column_names=["line"], encoding=encoding, quoting=False, label="MovieLens .dat"
    ).column("line")
    parts = pc.split_pattern(lines, "::")
    count = pc.list_value_length(parts)
    bad = pc.not_equal(count, len(names))
    if pc.any(bad).as_py():
        i = int(np.argmax(bad.to_numpy(zero_copy_only=False)))
        raise ValueError(f"{path}: line {i + 1} has {count[i].as_py()} '::'-separated fields, expected {len(names)}.")
    return pa.table({name: pc.list_element(parts, k) for k, name in enumerate(names)})


def _ml100k_items(directory: Path) -> pa.Table:
    path = directory / "u.item"
    names = ["item_id", "title", "release_date", "video_release_date", "imdb_url"] + [f"g{k}" for k in range(19)]
    table = read_delimited(
        path,
        delimiter="|",
        column_names=names,
        column_types={"item_id": pa.string(), "title": pa.string(), "release_date": pa.string()},
        encoding=_text_encoding(path),
        quoting=False,
        label="MovieLens u.item",
    )
    genres = list(ML100K_GENRES)
    if (directory / "u.genre").exists():
        genre_table = read_delimited(
            directory / "u.genre", delimiter="|", column_names=["genre", "index"], quoting=False, label="u.genre"
        )
        genre_table = genre_table.filter(pc.is_valid(genre_table.column("genre")))
        order = np.argsort(genre_table.column("index").to_numpy())
        genres = [genre_table.column("genre").to_pylist()[k] for k in order]
    flags = np.stack([pc.fill_null(table.column(f"g{k}"), 0).to_numpy() for k in range(len(genres))], axis=1)
    rows, cols = np.nonzero(flags)
    lengths = np.bincount(rows, minlength=table.num_rows)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    categories = pa.ListArray.from_arrays(pa.array(offsets), pa.array(genres).take(pa.array(cols)))
    year = pc.struct_field(pc.extract_regex(table.column("release_date"), r"(?P<year>\d{4})$"), "year")
    return pa.table(
        {
            "item_id": table.column("item_id"),
            "title": table.column("title"),
            "categories": categories,
            "description": pa.nulls(table.num_rows, pa.string()),
            "year": pc.cast(year, pa.int32()),
            "release_date": table.column("release_date"),
            "imdb_url": table.column("imdb_url").cast(pa.string()),
        }
    )


def _ml100k_users(directory: Path) -> pa.Table:
    path = directory / "u.user"
    table = read_delimited(
        path,
        delimiter="|",
        column_names=["user_id", "age", "gender", "occupation", "zip_code"],
        column_types={"user_id": pa.string(), "age": pa.int32(), "zip_code": pa.string()},
        encoding=_text_encoding(path),
        quoting=False,
        label="MovieLens u.user",
    )
    return table


def _title_year(title: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(pc.struct_field(pc.extract_regex(title, r"\((?P<year>\d{4})\)\s*$"), "year"), pa.int32())


def _ml1m_items(directory: Path) -> pa.Table:
    table = _split_lines(directory / "movies.dat", ["item_id", "title", "genres"])
    genres = pc.if_else(pc.equal(table.column("genres"), "(no genres listed)"), "", table.column("genres"))
    return pa.table(
        {
            "item_id": table.column("item_id"),
            "title": table.column("title"),
            "categories": split_categories(genres, "|"),
            "description": pa.nulls(table.num_rows, pa.string()),
            "year": _title_year(table.column("title")),
        }
    )


def _ml1m_users(directory: Path) -> pa.Table:
    table = _read_double_colon(directory / "users.dat", ["user_id", "gender", "age", "occupation", "zip_code"])
    age_codes = pc.cast(table.column("age"), pa.int32())
    occupation_codes = pc.cast(table.column("occupation"), pa.int32())
    age_keys = pa.array(list(ML1M_AGES), pa.int32())
    age_names = pa.array(list(ML1M_AGES.values()))
    return pa.table(
        {
            "user_id": table.column("user_id"),
            "gender": table.column("gender"),
            "age_group": age_names.take(pc.index_in(age_codes, value_set=age_keys)),
            "occupation": pa.array(ML1M_OCCUPATIONS).take(occupation_codes),
            "zip_code": table.column("zip_code"),
        }
    )


def _ml_latest_items(directory: Path) -> pa.Table:
    table = read_delimited(
        directory / "movies.csv",
        delimiter=",",
        column_types={"movieId": pa.string(), "title": pa.string(), "genres": pa.string()},
        label="MovieLens movies.csv",
    )
    genres = pc.if_else(pc.equal(table.column("genres"), "(no genres listed)"), "", table.column("genres"))
    return pa.table(
        {
            "item_id": table.column("movieId"),
            "title": table.column("title"),
            "categories": split_categories(genres, "|"),
            "description": pa.nulls(table.num_rows, pa.string()),
            "year": _title_year(table.column("title")),
        }
    )


# ----------------------------------------------------------------------------------------------------------------
# Finding and downloading MovieLens-100K


def _is_ml100k_dir(path: Path) -> bool:
    return (path / "u.data").is_file() or (path / "ml-100k.inter").is_file()


def find_movielens_100k(
    data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """Look for MovieLens-100K files (GroupLens `u.data` or RecBole `ml-100k.inter`) without downloading.

    Args:
        data_dir: A directory to search first (it, and its `ml-100k` subdirectory).
        cache_dir: The cache (default `default_cache_dir()`); its `movielens/ml-100k` is searched.

    Returns:
        The directory holding the files, or `None`.
    """
    candidates = []
    if data_dir is not None:
        candidates += [Path(data_dir), Path(data_dir) / "ml-100k"]
    candidates.append(Path(cache_dir or default_cache_dir()) / "movielens" / "ml-100k")
    return next((c for c in candidates if _is_ml100k_dir(c)), None)


def download_movielens_100k(
    cache_dir: str | os.PathLike | None = None, *, url: str = ML100K_URL, md5: str = ML100K_MD5, timeout: float = 60
) -> Path:
    """Download the official MovieLens-100K archive with `pooch` (MD5 checked), and unpack it into the cache.

    Args:
        cache_dir: The cache (default `default_cache_dir()`); files go to `<cache>/movielens/ml-100k`.
        url: Where to download from.
        md5: Expected MD5 of the archive (GroupLens publishes it beside the archive).
        timeout: Network timeout in seconds.

    Returns:
        The directory holding `u.data`, `u.item`, ...

    Raises:
        ConnectionError: The download failed.
        ValueError: The archive does not match the checksum (nothing is kept).
    """
    import pooch  # noqa: PLC0415 (only for this download)
    import requests  # noqa: PLC0415 (pooch's HTTP client)

    root = Path(cache_dir or default_cache_dir()) / "movielens"
    root.mkdir(parents=True, exist_ok=True)
    target = root / "ml-100k"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            archive = pooch.retrieve(
                url, known_hash=f"md5:{md5}", fname="ml-100k.zip", path=tmp, progressbar=False,
                downloader=pooch.HTTPDownloader(timeout=timeout),
            )  # fmt: skip
        except ValueError as err:  # pooch: the hash does not match (the file is removed), or not an HTTP(S) URL
            if "hash" not in str(err).lower():
                raise ValueError(f"Cannot download MovieLens-100K from {url}: {err}") from None
            raise ValueError(
                f"The archive downloaded from {url} has another MD5 than the expected {md5}: the download is corrupt "
                f"or the file changed upstream ({err}). Nothing was kept; try again."
            ) from None
        except (requests.exceptions.RequestException, OSError) as err:
            raise ConnectionError(
                f"Could not download MovieLens-100K from {url}: {err}. Download ml-100k.zip yourself, unzip it and "
                f"pass its directory: load_movielens_100k('path/to/ml-100k')."
            ) from None
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.startswith("ml-100k/") and not m.endswith("/")]
            if "ml-100k/u.data" not in members:
                raise ValueError(f"The archive from {url} has no ml-100k/u.data.")
            unpacked = Path(tmp) / "unpacked"
            unpacked.mkdir()
            for member in members:
                (unpacked / Path(member).name).write_bytes(zf.read(member))
        if target.exists():
            shutil.rmtree(target)
        os.replace(unpacked, target)
    return target


def movielens_100k_from_recbole_wheel(cache_dir: str | os.PathLike | None = None) -> Path:
    """MovieLens-100K in RecBole's atomic format, extracted from the `recbole==1.2.1` wheel on PyPI.

    The wheel is fetched once with `pip download` into `<cache>/wheels`, checked against its SHA-256, and the
    three files `ml-100k.inter/.item/.user` are extracted into `<cache>/recbole-1.2.1/ml-100k`.

    Args:
        cache_dir: The cache (default `default_cache_dir()`).

    Returns:
        The directory holding `ml-100k.inter`, `ml-100k.item`, `ml-100k.user`.

    Raises:
        RuntimeError: The wheel could not be fetched, or its checksum does not match.
    """
    cache = Path(cache_dir or default_cache_dir())
    target = cache / "recbole-1.2.1" / "ml-100k"
    if all((target / f"ml-100k.{s}").is_file() for s in RECBOLE_ML100K_MEMBERS):
        return target
    wheel = cache / "wheels" / RECBOLE_WHEEL
    if not wheel.is_file():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", RECBOLE_REQUIREMENT, "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "-d", str(wheel.parent)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RuntimeError(f"Could not run `{' '.join(command)}`: {err}") from None
        if done.returncode != 0 or not wheel.is_file():
            raise RuntimeError(
                f"Could not fetch the {RECBOLE_REQUIREMENT} wheel (MovieLens-100K for the tests) with "
                f"`{' '.join(command)}` (exit code {done.returncode}):\n{done.stderr[-2000:]}\nCheck network access to "
                f"PyPI, or place {RECBOLE_WHEEL} in {wheel.parent}."
            )
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if sha256 != RECBOLE_WHEEL_SHA256:
        wheel.unlink()
        raise RuntimeError(
            f"{wheel} has SHA-256 {sha256}, expected {RECBOLE_WHEEL_SHA256}; it was deleted, run again to re-fetch."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, zipfile.ZipFile(wheel) as zf:
        unpacked = Path(tmp) / "ml-100k"
        unpacked.mkdir()
        for suffix, member in RECBOLE_ML100K_MEMBERS.items():
            (unpacked / f"ml-100k.{suffix}").write_bytes(zf.read(member))
        if target.exists():
            shutil.rmtree(target)
        os.replace(unpacked, target)
    return target
