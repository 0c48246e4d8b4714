"""Readers: raw behaviour logs in their many shapes -> one Arrow table with canonical column names.

Every reader returns a `RawLog`: a `pyarrow.Table` whose columns are renamed to `user`, `item` and, when present,
`timestamp`, `event_type`, `rating`, `session`, plus the item and user side tables it found, and a `Provenance` to
turn a row index back into "file, row, line" for error messages. Cleaning, ordering and splitting happen later
(`hf_interest.data.cleaning`, `hf_interest.data.splits`); readers only read and check what only they can check
(missing columns, empty files, bytes that are not UTF-8, malformed rows, id columns of mixed types).

Formats: CSV/TSV, Parquet (a file, or a directory of shards as Spark or Dask write them, hive partitions included),
JSON Lines, RecBole atomic files (`.inter` + `.item`/`.user`, typed `name:type` headers), Amazon Reviews JSON Lines
(2018 and 2023 field names), and in-memory tables (`pyarrow.Table`, `pandas.DataFrame`, `datasets.Dataset`).
MovieLens as GroupLens ships it lives in `hf_interest.data.movielens`. One module per format: `delimited` (CSV/TSV),
`parquet`, `jsonl`, `amazon`, `recbole`, `memory`; shared pieces in `base`. `hf_interest.data.dispatch` picks the
reader for a path or format (`read_log`, `read_side_table`).

All reading is done by Arrow's multi-threaded C++ readers; only error paths look at bytes from Python.
"""

from .amazon import AMAZON_2018, AMAZON_2023, detect_amazon, read_amazon_items
from .base import (
    FORMATS,
    RawLog,
    canonical_items,
    canonical_users,
    check_file,
    ids_to_strings,
    infer_format,
    split_categories,
)
from .delimited import read_delimited
from .jsonl import read_json_lines
from .memory import table_from_memory
from .recbole import read_recbole_items, read_recbole_table, read_recbole_users, recbole_header

__all__ = [
    "AMAZON_2018",
    "AMAZON_2023",
    "FORMATS",
    "RawLog",
    "canonical_items",
    "canonical_users",
    "check_file",
    "detect_amazon",
    "ids_to_strings",
    "infer_format",
    "read_amazon_items",
    "read_delimited",
    "read_json_lines",
    "read_recbole_items",
    "read_recbole_table",
    "read_recbole_users",
    "recbole_header",
    "split_categories",
    "table_from_memory",
]
