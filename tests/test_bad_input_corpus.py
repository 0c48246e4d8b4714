"""The bad-input corpus: malformed logs, checkpoints and command lines.

Every case either loads correctly with the counts reported, or fails with a clear error that names the file, row or
field; none gives a raw traceback and none drops events silently. Property-based tests then check that any valid log
round-trips to sequences with the same multiset of events, and that the collator loses nothing.
"""

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import tiny_config

from hf_interest import InterestForNextItemPrediction, ItemTokenizer
from hf_interest.data import CleaningConfig, DataCollatorForInterest, load_behaviors
from hf_interest_cli import main

T0 = 1_600_000_000
ROWS = [(u, i, T0 + 100 * u + i) for u in range(5) for i in range(6)]  # 30 events, 5 users


def _csv(rows=ROWS, sep=",", header="user_id,item_id,timestamp", newline="\n", extra=""):
    return header.replace(",", sep) + newline + "".join(f"{u}{sep}{i}{sep}{t}{newline}" for u, i, t in rows) + extra


def _jsonl(rows=ROWS, key=("user_id", "item_id", "timestamp")):
    return "".join(json.dumps(dict(zip(key, row))) + "\n" for row in rows)


def _write(tmp: Path, name: str, content) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def _parquet(tmp: Path, name: str, table: pa.Table) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


TABLE = pa.table({"user_id": [r[0] for r in ROWS], "item_id": [r[1] for r in ROWS], "timestamp": [r[2] for r in ROWS]})

# (case id, builder(tmp) -> source, expected): expected is ("loads", events) or ("error", exception, message regex).
LOG_CASES = [
    ("csv_truncated_last_row", lambda t: _write(t, "a.csv", _csv(extra="5,1")), ("error", ValueError, r"a\.csv: malformed CSV: line 32 has 2 fields")),
    ("csv_semicolon_delimiter_guessed", lambda t: _write(t, "a.csv", _csv(sep=";")), ("loads", 30)),
    ("csv_one_column_header", lambda t: _write(t, "a.csv", _csv(header="user_id item_id timestamp", sep=" ")), ("error", ValueError, r"a\.csv: no user column found\. Columns found: \['user_id item_id timestamp'\]")),
    ("csv_header_only", lambda t: _write(t, "a.csv", "user_id,item_id,timestamp\n"), ("error", ValueError, r"a\.csv: .*no rows")),
    ("csv_empty_file", lambda t: _write(t, "a.csv", ""), ("error", ValueError, r"a\.csv: the file is empty")),
    ("csv_utf8_bom", lambda t: _write(t, "a.csv", ("\ufeff" + _csv()).encode("utf-8")), ("loads", 30)),
    ("csv_crlf", lambda t: _write(t, "a.csv", _csv(newline="\r\n")), ("loads", 30)),
    ("csv_latin1_bytes", lambda t: _write(t, "a.csv", (_csv() + "9,caf\xe9,1600000000\n").encode("latin-1")), ("error", ValueError, r"a\.csv: the file is not valid UTF-8 text \(line 32")),
    ("csv_quoted_newlines", lambda t: _write(t, "a.csv", "user_id,item_id,timestamp,note\n" + "".join(f'{u},{i},{ts},"two\nlines"\n' for u, i, ts in ROWS)), ("loads", 30)),
    ("csv_huge_ids", lambda t: _write(t, "a.csv", _csv([(u, 10**25 + i, ts) for u, i, ts in ROWS])), ("loads", 30)),
    ("csv_nan_timestamp", lambda t: _write(t, "a.csv", _csv(extra="1,2,nan\n")), ("error", ValueError, r"a\.csv, row 31 \(line 32\): timestamp nan is not a number")),
    ("csv_inf_timestamp", lambda t: _write(t, "a.csv", _csv(extra="1,2,inf\n")), ("error", ValueError, r"a\.csv, row 31 \(line 32\): timestamp inf")),
    ("csv_negative_timestamp", lambda t: _write(t, "a.csv", _csv(extra="1,2,-5\n")), ("error", ValueError, r"a\.csv, row 31 \(line 32\): timestamp -5 is negative")),
    ("csv_millisecond_timestamps", lambda t: _write(t, "a.csv", _csv([(u, i, ts * 1000) for u, i, ts in ROWS])), ("error", ValueError, r"a\.csv, row 1 \(line 2\): .*looks like ms: pass .*timestamp_unit='ms'")),
    ("csv_unparseable_timestamp", lambda t: _write(t, "a.csv", _csv(extra="1,2,yesterday\n")), ("error", ValueError, r"a\.csv.*(row 31|line 32).*yesterday")),
    ("csv_iso_dates", lambda t: _write(t, "a.csv", "user_id,item_id,timestamp\n" + "".join(f"{u},{i},2020-01-0{i + 1}T10:00:00\n" for u, i, _ in ROWS)), ("loads", 30)),
    ("csv_duplicate_header", lambda t: _write(t, "a.csv", "user_id,item_id,user_id,timestamp\n1,2,3,1600000000\n"), ("error", ValueError, r"a\.csv: the header names \['user_id'\] more than once")),
    ("csv_missing_item_column", lambda t: _write(t, "a.csv", "user_id,timestamp\n1,1600000000\n"), ("error", ValueError, r"a\.csv: no item column found\. Columns found: \['user_id', 'timestamp'\]")),
    ("csv_duplicate_events_counted", lambda t: _write(t, "a.csv", _csv(ROWS + ROWS[:4])), ("loads", 30)),
    ("csv_missing_ids_counted", lambda t: _write(t, "a.csv", _csv(extra=",3,1600000000\n1,,1600000001\n")), ("loads", 30)),
    ("tsv", lambda t: _write(t, "a.tsv", _csv(sep="\t")), ("loads", 30)),
    ("jsonl_truncated", lambda t: _write(t, "a.jsonl", _jsonl() + '{"user_id": 1, "item'), ("error", ValueError, r"a\.jsonl: could not parse JSON Lines at line 31")),
    ("jsonl_blank_lines", lambda t: _write(t, "a.jsonl", _jsonl().replace("\n", "\n\n")), ("loads", 30)),
    ("jsonl_mixed_id_types", lambda t: _write(t, "a.jsonl", _jsonl() + json.dumps({"user_id": "u-9", "item_id": 3, "timestamp": T0}) + "\n"), ("error", ValueError, r"a\.jsonl.*user_id.*(mixed|types)")),
    ("jsonl_non_utf8", lambda t: _write(t, "a.jsonl", _jsonl([(u, f"i{i}", ts) for u, i, ts in ROWS]).encode() + b'{"user_id": 1, "item_id": "caf\xe9", "timestamp": 1600000000}\n'), ("error", ValueError, r"a\.jsonl.*UTF-8.*line 31")),
    ("parquet_truncated", lambda t: _write(t, "a.parquet", (lambda p: p.read_bytes()[: p.stat().st_size // 2])(_parquet(t, "full.parquet", TABLE))), ("error", ValueError, r"a\.parquet: not a readable Parquet file")),
    ("parquet_shards_with_different_types", lambda t: (_parquet(t, "s/part-0.parquet", TABLE), _parquet(t, "s/part-1.parquet", TABLE.set_column(1, "item_id", pa.array([str(r[1]) for r in ROWS]))))[0].parent, ("error", ValueError, r"column 'item_id' has mixed types across shards: int64 in .*part-0\.parquet but string in .*part-1\.parquet")),
    ("parquet_shard_missing_column", lambda t: (_parquet(t, "s/part-0.parquet", TABLE), _parquet(t, "s/part-1.parquet", TABLE.drop(["timestamp"])))[0].parent, ("error", ValueError, r"part-1\.parquet: column 'timestamp' is missing from this shard")),
    ("parquet_spark_shards", lambda t: (_parquet(t, "s/part-0.parquet", TABLE.slice(0, 12)), _parquet(t, "s/part-1.parquet", TABLE.slice(12)), _write(t, "s/_SUCCESS", ""))[0].parent, ("loads", 30)),
    ("recbole_untyped_header", lambda t: _write(t, "a.inter", "user_id:token\titem_id\ttimestamp:float\n1\t2\t3\n"), ("error", ValueError, r"a\.inter: header field 2 is 'item_id'")),
    ("recbole_short_row", lambda t: _write(t, "a.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t1600000000\n1\t3\n"), ("error", ValueError, r"a\.inter: malformed RecBole atomic file: line 3 has 2 fields")),
    ("missing_file", lambda t: t / "nope.csv", ("error", FileNotFoundError, r"nope\.csv")),
    ("empty_directory", lambda t: (t / "empty").mkdir() or t / "empty", ("error", (FileNotFoundError, ValueError), r"empty")),
]  # fmt: skip


@pytest.mark.parametrize("case, build, expected", LOG_CASES, ids=[c[0] for c in LOG_CASES])
def test_log_corpus(tmp_path, case, build, expected):
    source = build(tmp_path)
    if expected[0] == "loads":
        data = load_behaviors(str(source), split=None)
        report = data.report
        assert report.events == expected[1], str(report)
        # nothing vanishes without a count: every raw row is either kept or counted by a cleaning step
        removed = sum(step.removed or 0 for step in report.steps)
        assert report.raw_events - removed == report.events, str(report)
        assert sum(len(row["item_ids"]) for row in data.sequences["train"]) == report.events
    else:
        _, error, message = expected
        with pytest.raises(error, match=message):
            load_behaviors(str(source), split=None)


def test_counted_cases_report_what_they_removed(tmp_path):
    duplicates = load_behaviors(str(_write(tmp_path, "d.csv", _csv(ROWS + ROWS[:4]))), split=None).report
    assert duplicates.raw_events == 34 and "deduplicate" in str(duplicates) and " 4 " in str(duplicates)
    missing = load_behaviors(str(_write(tmp_path, "m.csv", _csv(extra=",3,1600000000\n1,,1600000001\n"))), split=None)
    assert missing.report.raw_events == 32 and missing.report.events == 30


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    tokenizer = ItemTokenizer.from_items([f"i{k}" for k in range(20)])
    config = tiny_config(num_items=len(tokenizer), max_position_embeddings=200)
    InterestForNextItemPrediction(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _edit_config(change):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _truncate(name):
    def edit(folder):
        path = folder / name
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)

    return edit


def _pickle_only(folder):
    model = InterestForNextItemPrediction.from_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


CHECKPOINT_CASES = [
    ("config_missing_num_items", _edit_config(lambda c: c.pop("num_items")), ValueError, r"num_items is 1000 in config\.json but the weights were saved with 23"),
    ("config_wrong_hidden_size", _edit_config(lambda c: c.update(hidden_size=32, intermediate_size=32)), ValueError, r"hidden_size is 32 in config\.json but the weights were saved with 16"),
    ("config_heads_do_not_divide", _edit_config(lambda c: c.update(num_attention_heads=3)), ValueError, r"hidden_size \(16\) must be divisible by num_attention_heads \(3\)"),
    ("config_wrong_type", _edit_config(lambda c: c.update(hidden_size="16")), ValueError, r"InterestConfig\.hidden_size must be a positive integer, got '16'"),
    ("config_not_json", lambda f: (f / "config.json").write_text("{not json"), OSError, r"config\.json.*not a valid JSON"),
    ("weights_truncated", _truncate("model.safetensors"), OSError, r"safetensors weights are corrupted or truncated"),
    ("weights_garbage", lambda f: (f / "model.safetensors").write_bytes(b"\0" * 64), OSError, r"safetensors weights are corrupted or truncated"),
    ("weights_pickled_only", _pickle_only, OSError, r"model\.safetensors"),
]  # fmt: skip


@pytest.mark.parametrize("case, damage, error, message", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_checkpoint_corpus(checkpoint, tmp_path, case, damage, error, message):
    folder = tmp_path / "model"
    shutil.copytree(checkpoint, folder)
    damage(folder)
    with pytest.raises(error, match=message):
        InterestForNextItemPrediction.from_pretrained(folder)


def test_pickled_weights_are_never_read(checkpoint, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(checkpoint, folder)
    _pickle_only(folder)
    with pytest.raises(ValueError, match="safetensors only"):
        InterestForNextItemPrediction.from_pretrained(folder, use_safetensors=False)


def test_vocabulary_that_does_not_match_the_embeddings(checkpoint, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(checkpoint, folder)
    ItemTokenizer.from_items([f"i{k}" for k in range(25)]).save_pretrained(folder)  # 5 items too many
    model = InterestForNextItemPrediction.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"vocabulary has 28 entries but the model has 23 item embeddings"):
        model.check_vocabulary(ItemTokenizer.from_pretrained(folder))
    from transformers import pipeline

    with pytest.raises(ValueError, match="does not belong to this checkpoint"):
        pipeline("next-item-recommendation", model=str(folder))


# ---------------------------------------------------------------------------------------------------------------
# The command line: one clear line on stderr, exit status 2, never a traceback


def _cli_cases(tmp: Path, checkpoint: Path):
    broken = tmp / "broken"
    shutil.copytree(checkpoint, broken)
    _truncate("model.safetensors")(broken)
    bad_config = tmp / "bad_config"
    shutil.copytree(checkpoint, bad_config)
    (bad_config / "config.json").write_text("{not json")
    bad_log = _write(tmp, "bad.csv", "who;what;when\n1;2;3\n")
    return [
        (["train", "--dataset", str(tmp / "missing.csv"), "--output_dir", str(tmp / "o1")], "missing.csv"),
        (
            ["train", "--dataset", str(bad_log), "--output_dir", str(tmp / "o2")],
            "bad.csv: no user column found. Columns found: ['who', 'what', 'when']",
        ),
        (["recommend", str(broken), "i1", "i2"], "corrupted or truncated"),
        (["info", str(bad_config)], "config.json is not valid JSON"),
        (["evaluate", str(broken)], "corrupted or truncated"),
    ]


def test_cli_corpus(checkpoint, tmp_path, capsys):
    for argv, message in _cli_cases(tmp_path, checkpoint):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err and err.startswith(f"hf-interest {argv[0]}: error:"), (argv, err)


# ---------------------------------------------------------------------------------------------------------------
# Properties: any valid log round-trips to sequences with the same multiset of events

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "user 3", "ü4", "5"]),
        st.text(alphabet="abcXYZ019-_ é", min_size=1, max_size=6).map(str.strip).filter(bool),
        st.integers(min_value=T0, max_value=T0 + 10**6),
    ),
    min_size=1,
    max_size=40,
)


def _write_log(tmp: Path, fmt: str, events) -> Path:
    table = pa.table(
        {
            "user_id": [e[0] for e in events],
            "item_id": [e[1] for e in events],
            "timestamp": pa.array([e[2] for e in events], pa.int64()),
        }
    )
    path = tmp / f"log.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()), "utf-8")
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, fmt=st.sampled_from(["csv", "parquet", "jsonl"]))
def test_any_valid_log_round_trips(tmp_path, events, fmt):
    path = _write_log(tmp_path, fmt, events)
    data = load_behaviors(str(path), split=None, cleaning=CleaningConfig(deduplicate=False))
    got = Counter(
        (row["user_id"], item, ts)
        for row in data.sequences["train"]
        for item, ts in zip(row["item_ids"], row["timestamps"], strict=True)
    )
    assert got == Counter(events)
    for row in data.sequences["train"]:
        assert row["timestamps"] == sorted(row["timestamps"])
    os.remove(path)


@settings(max_examples=40, deadline=None)
@given(
    sequences=st.lists(
        st.lists(st.integers(min_value=3, max_value=50), min_size=1, max_size=12), min_size=1, max_size=6
    ),
    max_length=st.one_of(st.none(), st.integers(min_value=2, max_value=15)),
)
def test_collator_keeps_every_newest_event(sequences, max_length):
    features = [{"input_ids": s, "timestamps": [T0 + 10 * k for k in range(len(s))]} for s in sequences]
    batch = DataCollatorForInterest(max_length=max_length, mode="train")(features)
    for row, sequence in enumerate(sequences):
        mask = batch["attention_mask"][row].bool()
        inputs = batch["input_ids"][row][mask].tolist()
        labels = batch["labels"][row][mask].tolist()
        kept = sequence if max_length is None else sequence[-(max_length + 1) :]
        # inputs are s[:-1], labels s[1:], both the newest events; padding is on the left only
        assert inputs == kept[:-1] and labels == kept[1:]
        assert mask.tolist() == sorted(mask.tolist())


# ---------------------------------------------------------------------------------------------------------------
# Inference on untrusted input: a defined result or a clear error, never a crash deep inside torch

IDS = torch.tensor([[5, 6]])
FORWARD_CASES = [
    ("index_out_of_range", {"input_ids": torch.tensor([[5, 99]])}, r"outside the vocabulary \[0, 23\)"),
    ("negative_index", {"input_ids": torch.tensor([[5, -1]])}, r"outside the vocabulary"),
    ("float_ids", {"input_ids": IDS.float()}, r"integer item indices, got dtype torch\.float32"),
    ("one_dimensional", {"input_ids": torch.tensor([5, 6])}, r"must be \(batch_size, seq_len\)"),
    ("too_long", {"input_ids": torch.randint(3, 20, (1, 300))}, r"reads at most max_position_embeddings=200"),
    ("mask_shape", {"input_ids": IDS, "attention_mask": torch.ones(1, 3, dtype=torch.long)}, r"attention_mask must have the shape"),
    ("timestamps_shape", {"input_ids": IDS, "timestamps": torch.ones(1, 3, dtype=torch.long)}, r"timestamps must have the shape"),
    ("float_timestamps", {"input_ids": IDS, "timestamps": torch.tensor([[1.5, 2.5]])}, r"timestamps must be integer seconds"),
    ("labels_out_of_range", {"input_ids": IDS, "labels": torch.tensor([[6, 99]])}, r"labels must be item indices in \[0, 23\)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return InterestForNextItemPrediction.from_pretrained(checkpoint).eval(), ItemTokenizer.from_pretrained(checkpoint)


@pytest.mark.parametrize("case, inputs, message", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_forward_rejects_bad_inputs_clearly(loaded, case, inputs, message):
    model, _ = loaded
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_untrusted_histories_get_defined_results(loaded):
    model, tokenizer = loaded
    before = tokenizer.num_unknown_items
    batch = tokenizer([["never-seen", "i1"], []], return_tensors="pt")
    assert tokenizer.num_unknown_items == before + 1  # counted, read as [UNK]
    recs = model.recommend(**batch, top_k=5)  # the empty history is scored by the item bias
    assert recs.item_ids.shape == (2, 5) and (recs.item_ids >= 3).all()
    long = model.recommend(torch.randint(3, 23, (1, 500)), top_k=3)  # newest 200 events are read
    assert long.item_ids.shape == (1, 3)
    whole = model.recommend(IDS, top_k=1000)  # more than the catalogue: the rest is -1
    assert whole.item_ids.shape == (1, 20) and (whole.item_ids[0, -2:] == -1).all()
    # timestamps out of order (clock skew) are a defined input: gaps are clamped, never NaN
    out = model(input_ids=IDS, timestamps=torch.tensor([[100, 50]]))
    assert torch.isfinite(out.logits).all()
