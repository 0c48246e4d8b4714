"""MovieLens-100K: the copy inside the `recbole==1.2.1` wheel (fetched once from PyPI into the cache, never
committed), and the download helper (tested against a local archive, so no test needs GroupLens).

If the wheel cannot be fetched the fixture fails with the reason; nothing is skipped silently.
"""

import hashlib
import io
import os
import zipfile

import numpy as np
import pytest

from hf_interest.data import (
    CleaningConfig,
    download_movielens_100k,
    find_movielens_100k,
    load_behaviors,
    load_movielens_100k,
    movielens_100k_from_recbole_wheel,
)
from hf_interest.data.movielens import default_cache_dir


@pytest.fixture(scope="module")
def recbole_ml100k():
    """Directory with ml-100k.inter/.item/.user (cache: $HF_INTEREST_CACHE or ~/.cache/hf_interest)."""
    return movielens_100k_from_recbole_wheel(default_cache_dir())


@pytest.fixture(scope="module")
def ml100k(recbole_ml100k):
    return load_behaviors(recbole_ml100k / "ml-100k.inter")


def test_counts_before_filtering(ml100k):
    report = ml100k.report
    assert (report.raw_users, report.raw_items, report.raw_events) == (943, 1682, 100_000)
    assert ml100k.sequences["train"].num_rows == 943
    assert ml100k.sequences["test"].num_rows == 943 and ml100k.sequences["validation"].num_rows == 943
    assert report.splits["train"]["events"] + 2 * 943 == 100_000
    assert len(ml100k.items) == 1682 and sum(ml100k.item_counts) == report.splits["train"]["events"]


def test_ties_keep_file_order(recbole_ml100k, ml100k):
    # About half of consecutive events of a user share their timestamp; those must stay in file order.
    lines = (recbole_ml100k / "ml-100k.inter").read_text().splitlines()[1:]
    user, item, _, ts = np.array([line.split("\t") for line in lines]).T
    ts = ts.astype(float).astype(np.int64)
    order = np.lexsort((np.arange(len(ts)), ts, user))  # stable (user, time, file order)
    same_time = (user[order][1:] == user[order][:-1]) & (ts[order][1:] == ts[order][:-1])
    same_user = user[order][1:] == user[order][:-1]
    assert 0.4 < same_time.sum() / same_user.sum() < 0.6
    test = {r["user_id"]: r for r in ml100k.sequences["test"].to_list()}
    for u in ("1", "196", "405"):
        expected = item[order][user[order] == u].tolist()
        assert test[u]["item_ids"] + [test[u]["target_item_id"]] == expected


def test_side_information(ml100k):
    items = {r["item_id"]: r for r in ml100k.items.to_list()}
    assert items["1"]["title"] == "Toy Story" and items["1"]["categories"] == ["Animation", "Children's", "Comedy"]
    assert items["1"]["text"] == "Toy Story. Categories: Animation, Children's, Comedy"
    assert items["1"]["release_year"] == "1995"
    assert ml100k.item_ids[0] == "50"  # Star Wars: the most rated film in the training split
    users = {r["user_id"]: r for r in ml100k.users.to_list()}
    assert users["1"] == {"user_id": "1", "age": "24", "gender": "M", "occupation": "technician", "zip_code": "85711"}
    assert len(users) == 943


def test_k_core_on_movielens(recbole_ml100k):
    data = load_behaviors(recbole_ml100k, cleaning=CleaningConfig(min_user_events=20, min_item_events=20))
    step = data.report.step("k-core")
    assert step.events_before == 100_000 and step.events_after < 100_000
    counts = np.array([len(x) for x in data.sequences["train"]["item_ids"][:]]) + 2
    assert counts.min() >= 20


def test_load_movielens_100k_finds_local_files(recbole_ml100k, tmp_path):
    assert find_movielens_100k(recbole_ml100k, cache_dir=tmp_path) == recbole_ml100k
    assert find_movielens_100k(recbole_ml100k.parent, cache_dir=tmp_path) == recbole_ml100k  # the ml-100k subdir
    assert find_movielens_100k(tmp_path, cache_dir=tmp_path) is None
    data = load_movielens_100k(recbole_ml100k, cache_dir=tmp_path, download=False, split=None)
    assert data.report.raw_events == 100_000
    with pytest.raises(FileNotFoundError, match="MovieLens-100K not found"):
        load_movielens_100k(tmp_path / "nowhere", cache_dir=tmp_path, download=False)


def fake_archive(tmp_path, recbole_dir):
    """A zip laid out like GroupLens' ml-100k.zip, built from the RecBole copy (first 1000 ratings)."""
    lines = (recbole_dir / "ml-100k.inter").read_text().splitlines()[1:1001]
    u_data = "\n".join(
        "\t".join([u, i, r.split(".")[0], t.split(".")[0]]) for u, i, r, t in (x.split("\t") for x in lines)
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml-100k/", "")
        zf.writestr("ml-100k/u.data", u_data + "\n")
        zf.writestr("ml-100k/README", "fake")
    path = tmp_path / "ml-100k.zip"
    path.write_bytes(buffer.getvalue())
    return path, hashlib.md5(buffer.getvalue()).hexdigest()


@pytest.fixture
def local_http(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www, for the download tests (no other host is ever reached)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_checks_the_checksum(recbole_ml100k, tmp_path, local_http):
    root, base_url = local_http
    archive, md5 = fake_archive(root, recbole_ml100k)
    url = f"{base_url}/{archive.name}"
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="another MD5 than the expected 0{32}"):
        download_movielens_100k(cache, url=url, md5="0" * 32)
    assert find_movielens_100k(cache_dir=cache) is None  # nothing kept
    target = download_movielens_100k(cache, url=url, md5=md5)
    assert target == cache / "movielens" / "ml-100k" and (target / "u.data").is_file()
    assert sorted(os.listdir(cache / "movielens")) == ["ml-100k"]  # no temporary files left
    data = load_movielens_100k(cache_dir=cache, download=False, split=None)  # found in the cache now
    assert data.report.raw_events == 1000
    with pytest.raises(ConnectionError, match="Could not download"):
        download_movielens_100k(cache, url=f"{base_url}/missing.zip")
