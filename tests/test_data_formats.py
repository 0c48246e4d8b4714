"""Every input format of `load_behaviors` reads the same small log into the same sequences.

Files are written by the tests into `tmp_path`; nothing is committed. The log has equal timestamps for one user
(ties must keep file order) and rows out of time order (the sort must fix them).
"""

import bz2
import gzip
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from hf_interest.data import ColumnMapping, ItemColumns, load_behaviors, read_log
from hf_interest.data.movielens import ML100K_GENRES

# user, item, timestamp, rating, event type, in file order.
ROWS = [
    ("u1", "i1", 100, 5.0, "click"),
    ("u2", "i2", 100, 3.0, "click"),
    ("u1", "i3", 50, 4.0, "view"),
    ("u1", "i2", 100, 2.0, "click"),  # same time as row 0 for u1: comes after i1 (file order)
    ("u2", "i1", 200, 1.0, "buy"),
    ("u1", "i4", 300, 5.0, "click"),
    ("u3", "i1", 10, 4.0, "click"),
]
EXPECTED = {
    "u1": (["i3", "i1", "i2", "i4"], [50, 100, 100, 300]),
    "u2": (["i2", "i1"], [100, 200]),
    "u3": (["i1"], [10]),
}


def frame(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "event_type"])


def sequences(data, split="train") -> dict:
    rows = data.sequences[split].to_list()
    return {r["user_id"]: (r["item_ids"], r.get("timestamps")) for r in rows}


def check(data, expected=EXPECTED):
    assert sequences(data) == expected
    assert data.report.raw_events == sum(len(v[0]) for v in expected.values())


def load(source, **kwargs):
    return load_behaviors(source, split=None, **kwargs)


def test_csv(tmp_path):
    path = tmp_path / "events.csv"
    frame().to_csv(path, index=False)
    data = load(path)
    check(data)
    assert data.sequences["train"].features["item_ids"].feature.dtype == "string"
    assert data.sequences["train"].features["timestamps"].feature.dtype == "int64"
    ratings = {r["user_id"]: r["ratings"] for r in data.sequences["train"].to_list()}
    assert ratings["u1"] == [4.0, 5.0, 2.0, 5.0]
    events = {r["user_id"]: r["event_types"] for r in data.sequences["train"].to_list()}
    assert events["u1"] == ["view", "click", "click", "click"]


def test_csv_gzip_and_bz2(tmp_path):
    text = frame().to_csv(index=False).encode()
    (tmp_path / "events.csv.gz").write_bytes(gzip.compress(text))
    (tmp_path / "events.csv.bz2").write_bytes(bz2.compress(text))
    check(load(tmp_path / "events.csv.gz"))
    check(load(tmp_path / "events.csv.bz2"))


def test_tsv_with_explicit_mapping(tmp_path):
    path = tmp_path / "log.tsv"
    df = frame().rename(columns={"user_id": "visitor", "item_id": "product", "timestamp": "when"})
    df.to_csv(path, sep="\t", index=False)
    mapping = ColumnMapping(user="visitor", item="product", timestamp="when", rating=False, event_type=False)
    data = load(path, columns=mapping)
    check(data)
    assert "ratings" not in data.sequences["train"].column_names
    assert data.report.columns == {"user": "visitor", "item": "product", "timestamp": "when"}


def test_csv_keeps_leading_zeros_of_ids(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp\n007,0042,1\n007,42,2\n")
    data = load(path)
    assert sequences(data)["007"][0] == ["0042", "42"]


def test_common_column_names_are_detected(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,10,4.0,5\n1,11,3.0,6\n")
    data = load(path)
    assert data.report.columns == {"user": "userId", "item": "movieId", "timestamp": "timestamp", "rating": "rating"}
    assert sequences(data) == {"1": (["10", "11"], [5, 6])}


def test_parquet_file(tmp_path):
    path = tmp_path / "events.parquet"
    frame().to_parquet(path, index=False)
    check(load(path))


def test_parquet_spark_directory(tmp_path):
    root = tmp_path / "events"
    root.mkdir()
    table = pa.Table.from_pandas(frame(), preserve_index=False)
    pq.write_table(table.slice(0, 3), root / "part-00000-abc.snappy.parquet")
    pq.write_table(table.slice(3), root / "part-00001-abc.snappy.parquet")
    (root / "_SUCCESS").write_text("")
    (root / ".part-00000-abc.snappy.parquet.crc").write_bytes(b"\x00crc")
    data = load(root)
    check(data)
    assert "read 2 Parquet shards" in str(data.report)


def test_parquet_dask_shards_are_read_in_natural_order(tmp_path):
    # Eleven shards part.0 ... part.10; each holds one event of u1 at the same time. File order (part.2 before
    # part.10, not lexicographic) decides the order of the ties.
    root = tmp_path / "dask"
    root.mkdir()
    for k in range(11):
        pq.write_table(
            pa.table({"user_id": ["u1"], "item_id": [f"i{k}"], "timestamp": [5]}), root / f"part.{k}.parquet"
        )
    pq.write_table(
        pa.table({"user_id": ["u1"], "item_id": ["meta"], "timestamp": [5]}).slice(0, 0), root / "_metadata"
    )
    data = load(root)
    assert sequences(data)["u1"][0] == [f"i{k}" for k in range(11)]


def test_parquet_hive_partitions(tmp_path):
    root = tmp_path / "hive"
    table = pa.Table.from_pandas(frame(), preserve_index=False)
    for day, (lo, hi) in {"2020-01-01": (0, 4), "2020-01-02": (4, 7)}.items():
        (root / f"day={day}").mkdir(parents=True)
        pq.write_table(table.slice(lo, hi - lo), root / f"day={day}" / "part-0.parquet")
    check(load(root))
    # A partition key can be mapped like any column.
    data = load(root, columns=ColumnMapping(event_type="day"))
    assert {r["user_id"]: r["event_types"] for r in data.sequences["train"].to_list()}["u2"] == [
        "2020-01-01",
        "2020-01-02",
    ]


def test_jsonl_plain_and_gzip(tmp_path):
    lines = "\n".join(json.dumps(dict(zip(frame().columns, row))) for row in ROWS) + "\n"
    (tmp_path / "events.jsonl").write_text(lines)
    (tmp_path / "events.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    check(load(tmp_path / "events.jsonl"))
    check(load(tmp_path / "events.jsonl.gz"))


def test_jsonl_integer_ids_become_decimal_strings(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"user_id": 7, "item_id": 12, "timestamp": 3}\n{"user_id": 7, "item_id": 3, "timestamp": 4}\n')
    assert sequences(load(path)) == {"7": (["12", "3"], [3, 4])}


def write_recbole(directory, name="toy"):
    directory.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{r}\t{t}" for u, i, t, r, _ in ROWS]
    (directory / f"{name}.inter").write_text("\n".join(inter) + "\n")
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tscore:float_seq"]
    item += [
        'i1\tThe "First" Film\t1995\tAction Comedy\t1 2',
        "i2\tSecond\t1996\tDrama\t3",
        "i9\tUnused\t1990\tWar\t4",
    ]
    (directory / f"{name}.item").write_text("\n".join(item) + "\n")
    user = ["user_id:token\tage:token\tgender:token", "u1\t24\tM", "u2\t53\tF"]
    (directory / f"{name}.user").write_text("\n".join(user) + "\n")
    return directory / f"{name}.inter"


def test_recbole_atomic_files(tmp_path):
    inter = write_recbole(tmp_path / "toy")
    for source in (inter, inter.parent):
        data = load(source)
        check(data)
    items = {r["item_id"]: r for r in data.items.to_list()}
    assert items["i1"]["title"] == 'The "First" Film'
    assert items["i1"]["categories"] == ["Action", "Comedy"]
    assert items["i1"]["score"] == [1.0, 2.0]
    assert items["i1"]["text"] == 'The "First" Film. Categories: Action, Comedy'
    assert items["i3"]["title"] is None and items["i3"]["categories"] == []
    assert "i9" not in items
    report = str(data.report)
    assert "2 of 4 items have no side information" in report
    assert "1 items of the side table do not occur" in report
    users = {r["user_id"]: r for r in data.users.to_list()}
    assert users["u2"]["gender"] == "F" and users["u3"]["age"] is None
    assert "1 of 3 users have no attributes" in report


def write_ml100k(directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text(
        "1\t10\t4\t881250949\n2\t10\t3\t881250950\n1\t20\t5\t881250949\n1\t30\t1\t881250900\n"
    )
    flags = ["0"] * 19
    action_comedy, drama = list(flags), list(flags)
    action_comedy[1] = action_comedy[5] = "1"
    drama[8] = "1"
    lines = [
        "|".join(["10", "Les Misérables (1995)", "01-Jan-1995", "", "http://x"] + action_comedy),
        "|".join(["20", "Toy Story (1995)", "01-Jan-1995", "", "http://y"] + drama),
        "|".join(["30", "Heat (1995)", "", "", ""] + flags),
    ]
    (directory / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (directory / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    genres = ML100K_GENRES
    (directory / "u.genre").write_text("\n".join(f"{g}|{k}" for k, g in enumerate(genres)) + "\n\n")
    return directory


def test_movielens_100k_layout(tmp_path):
    directory = write_ml100k(tmp_path / "ml-100k")
    for source in (directory, directory / "u.data"):
        data = load(source)
        assert sequences(data) == {
            "1": (["30", "10", "20"], [881250900, 881250949, 881250949]),
            "2": (["10"], [881250950]),
        }
    items = {r["item_id"]: r for r in data.items.to_list()}
    assert items["10"]["title"] == "Les Misérables (1995)"  # Latin-1 decoded
    assert items["10"]["categories"] == ["Action", "Comedy"]
    assert items["20"]["categories"] == ["Drama"] and items["30"]["categories"] == []
    assert items["10"]["year"] == 1995
    users = {r["user_id"]: r for r in data.users.to_list()}
    assert users["2"] == {"user_id": "2", "age": 53, "gender": "F", "occupation": "other", "zip_code": "94043"}


def test_movielens_1m_layout(tmp_path):
    directory = tmp_path / "ml-1m"
    directory.mkdir()
    (directory / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    movies = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
    (directory / "movies.dat").write_bytes(movies.encode("latin-1"))
    (directory / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    data = load(directory)
    assert sequences(data) == {"1": (["1193", "661"], [978300760, 978302109]), "2": (["1193"], [978298413])}
    items = {r["item_id"]: r for r in data.items.to_list()}
    assert items["661"]["title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items["661"]["categories"] == ["Action", "Sci-Fi"] and items["661"]["year"] == 1977
    users = {r["user_id"]: r for r in data.users.to_list()}
    assert users["1"]["age_group"] == "Under 18" and users["1"]["occupation"] == "K-12 student"
    assert users["2"]["age_group"] == "56+" and users["2"]["occupation"] == "self-employed"


def test_movielens_latest_layout(tmp_path):
    directory = tmp_path / "ml-latest-small"
    directory.mkdir()
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n")
    (directory / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,"Grumpier Old Men, The (1995)",(no genres listed)\n'
    )
    data = load(directory)
    assert sequences(data) == {"1": (["3", "1"], [964981247, 964982703])}
    items = {r["item_id"]: r for r in data.items.to_list()}
    assert items["3"]["title"] == "Grumpier Old Men, The (1995)" and items["3"]["categories"] == []
    assert items["1"]["categories"] == ["Adventure", "Animation"]
    assert data.users is None


def test_amazon_2018(tmp_path):
    reviews = [
        {"overall": 5.0, "verified": True, "reviewTime": "09 13, 2009", "reviewerID": "A1", "asin": "B01",
         "style": {"Format:": " Hardcover"}, "unixReviewTime": 1252800000, "vote": "2"},
        {"overall": 3.0, "reviewerID": "A1", "asin": "B02", "unixReviewTime": 1252700000, "image": ["x"]},
        {"overall": 4.0, "reviewerID": "A2", "asin": "B01", "unixReviewTime": 1252900000},
    ]  # fmt: skip
    meta = [
        {"asin": "B01", "title": "A Book", "category": ["Books", "Fiction"], "description": ["Long", "story."],
         "brand": "Acme", "price": "$3.99"},
        {"asin": "B02", "title": "A Lamp", "category": [], "main_cat": "Home"},
    ]  # fmt: skip
    path = tmp_path / "Books_5.json.gz"
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in reviews).encode()))
    (tmp_path / "meta_Books.json").write_text("\n".join(json.dumps(m) for m in meta))
    data = load(path, items=tmp_path / "meta_Books.json")
    assert sequences(data) == {"A1": (["B02", "B01"], [1252700000, 1252800000]), "A2": (["B01"], [1252900000])}
    assert "Amazon Reviews 2018" in str(data.report)
    items = {r["item_id"]: r for r in data.items.to_list()}
    assert items["B01"]["categories"] == ["Books", "Fiction"] and items["B01"]["brand"] == "Acme"
    assert items["B01"]["text"] == "A Book. Categories: Books, Fiction. Long story."
    assert items["B02"]["main_cat"] == "Home"


def test_amazon_2023_uses_parent_asin_and_milliseconds(tmp_path):
    reviews = [
        {"rating": 5.0, "title": "Great", "text": "...", "images": [], "asin": "B1", "parent_asin": "P1",
         "user_id": "AG", "timestamp": 1588687728923, "helpful_vote": 2, "verified_purchase": True},
        {"rating": 2.0, "title": "Meh", "text": "...", "images": [], "asin": "B2", "parent_asin": "P2",
         "user_id": "AG", "timestamp": 1588687728000, "helpful_vote": 0, "verified_purchase": False},
    ]  # fmt: skip
    meta = [
        {"main_category": "All Beauty", "title": "Soap", "average_rating": 4.1, "features": ["Mild"],
         "description": ["Gentle soap."], "categories": ["Beauty", "Soap"], "store": "S", "parent_asin": "P1",
         "details": {"weight": "1 lb"}},
    ]  # fmt: skip
    path = tmp_path / "All_Beauty.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in reviews))
    (tmp_path / "meta_All_Beauty.jsonl").write_text("\n".join(json.dumps(m) for m in meta))
    data = load(path, items=tmp_path / "meta_All_Beauty.jsonl")
    # Milliseconds: ordered at full resolution, reported in seconds.
    assert sequences(data) == {"AG": (["P2", "P1"], [1588687728, 1588687728])}
    items = {r["item_id"]: r for r in data.items.to_list()}
    assert items["P1"]["text"] == "Soap. Categories: Beauty, Soap. Gentle soap. Mild"
    assert items["P1"]["main_category"] == "All Beauty"
    # The generic JSON Lines reader can be forced, with an explicit mapping.
    generic = load(path, format="jsonl", columns=ColumnMapping(item="asin", timestamp_unit="ms"))
    assert sequences(generic)["AG"][0] == ["B2", "B1"]


def test_in_memory_tables(tmp_path):
    df = frame()
    check(load(df))
    check(load(pa.Table.from_pandas(df, preserve_index=False)))
    check(load(Dataset.from_pandas(df)))


def test_item_side_table_from_parquet_with_text_categories(tmp_path):
    items = pd.DataFrame(
        {"item_id": ["i1", "i2", "i3"], "name": ["One", "Two", "Three"], "genres": ["a|b", "c", None]}
    )
    items.to_parquet(tmp_path / "items.parquet", index=False)
    data = load(frame(), items=tmp_path / "items.parquet")
    rows = {r["item_id"]: r for r in data.items.to_list()}
    assert rows["i1"]["title"] == "One" and rows["i1"]["categories"] == ["a", "b"]
    assert rows["i3"]["categories"] == []
    data = load(frame(), items=items, item_columns=ItemColumns(title="name", categories=False))
    assert data.items.to_list()[0]["categories"] == []


def test_timestamps_as_iso_text_with_and_without_zone(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,timestamp\n"
        "u,a,2020-01-01T00:00:10Z\n"
        "u,b,2020-01-01 00:00:05\n"
        "u,c,2020-01-01T01:00:00+02:00\n"  # 2019-12-31T23:00:00Z
        "u,d,2020-01-01\n"
    )
    data = load(path)
    assert sequences(data)["u"] == (["c", "d", "b", "a"], [1577833200, 1577836800, 1577836805, 1577836810])


def test_timestamps_with_format_and_units(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp\nu,a,02/01/2020 10:00\nu,b,01/01/2020 10:00\n")
    data = load(path, columns=ColumnMapping(timestamp_format="%d/%m/%Y %H:%M"))
    assert sequences(data)["u"][0] == ["b", "a"]
    df = pd.DataFrame(
        {"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1_500_000_000_500, 1_500_000_000_400]}
    )
    data = load(df, columns=ColumnMapping(timestamp_unit="ms"))
    assert sequences(data)["u"] == (["b", "a"], [1_500_000_000, 1_500_000_000])
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ms")
    assert sequences(load(df))["u"] == (["b", "a"], [1_500_000_000, 1_500_000_000])
    df["timestamp"] = [1_500_000_000.75, 1_500_000_000.25]  # float seconds keep sub-second order
    assert sequences(load(df))["u"] == (["b", "a"], [1_500_000_000, 1_500_000_000])


def test_log_without_timestamps_keeps_file_order(tmp_path):
    df = frame().drop(columns=["timestamp"])
    data = load(df)
    assert "timestamps" not in data.sequences["train"].column_names
    assert sequences(data)["u1"] == (["i1", "i3", "i2", "i4"], None)
    assert "no timestamp column" in str(data.report)
    assert "repeats cannot be told" in str(data.report)


def test_session_column_is_carried(tmp_path):
    df = frame().assign(session_id=["s1", "s2", "s1", "s1", "s2", "s3", "s4"])
    data = load_behaviors(df)
    test = {r["user_id"]: r for r in data.sequences["test"].to_list()}
    assert test["u1"]["session_ids"] == ["s1", "s1", "s1"] and test["u1"]["target_session_id"] == "s3"
    assert test["u1"]["target_event_type"] == "click" and test["u1"]["target_rating"] == 5.0


def test_read_log_returns_canonical_columns(tmp_path):
    raw = read_log(frame())
    assert raw.table.column_names == ["user", "item", "timestamp", "event_type", "rating"]
    assert np.array_equal(raw.table.column("timestamp").to_numpy(), [r[2] for r in ROWS])


def test_side_tables_from_csv_keep_id_text(tmp_path):
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\n007,0042,1\n007,42,2\n")
    (tmp_path / "items.csv").write_text("item_id,title,year\n0042,Padded,1999\n42,Plain,2001\n")
    (tmp_path / "users.tsv").write_text("user_id\tcountry\n007\tUK\n")
    data = load(tmp_path / "events.csv", items=tmp_path / "items.csv", users=tmp_path / "users.tsv")
    items = {r["item_id"]: r for r in data.items.to_list()}
    assert items["0042"]["title"] == "Padded" and items["42"]["title"] == "Plain" and items["42"]["year"] == 2001
    assert data.users.to_list() == [{"user_id": "007", "country": "UK"}]


def test_item_ids_and_counts_follow_a_filtered_items_table(tmp_path):
    import dataclasses

    path = tmp_path / "events.csv"
    frame().to_csv(path, index=False)
    data = load(path)
    kept = data.items.filter(lambda item: item != "i2", input_columns="item_id")  # an indices mapping, not a copy
    filtered = dataclasses.replace(data, items=kept)
    assert filtered.item_ids == [i for i in data.item_ids if i != "i2"]
    by_id = dict(zip(data.item_ids, data.item_counts.tolist()))
    assert filtered.item_counts.tolist() == [by_id[i] for i in filtered.item_ids]
