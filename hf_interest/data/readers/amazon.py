"""Amazon Reviews JSON Lines (2018 and 2023 field names) and their item metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from .._arrow import (
    Provenance,
    fill_empty_lists,
    first_line,
)
from ..columns import ColumnMapping
from .base import RawLog, check_file, rename_canonical
from .jsonl import read_json_lines

# Amazon Reviews: 2018 (McAuley lab, "reviewerID"/"asin"/"overall"/"unixReviewTime" in seconds) and 2023
# ("user_id"/"parent_asin"/"rating"/"timestamp" in milliseconds). Only the fields used are parsed (explicit schema,
# other fields ignored), so the free-form nested fields ("style", "images") cannot break the read.
AMAZON_2018 = {"user": "reviewerID", "item": "asin", "timestamp": "unixReviewTime", "rating": "overall"}
AMAZON_2023 = {"user": "user_id", "item": "parent_asin", "timestamp": "timestamp", "rating": "rating"}
_AMAZON_TYPES = {"user": pa.string(), "item": pa.string(), "timestamp": pa.int64(), "rating": pa.float64()}


def detect_amazon(path: Path) -> str | None:
    """Which Amazon Reviews release a JSON Lines file looks like ("2018", "2023"), from its first line, or `None`."""
    try:
        keys = set(json.loads(first_line(path).decode("utf-8")))
    except (ValueError, UnicodeDecodeError, TypeError):
        return None
    if {"reviewerID", "asin"} <= keys:
        return "2018"
    if {"user_id", "rating", "timestamp"} <= keys and ({"parent_asin", "asin"} & keys):
        return "2023"
    return None


def read_amazon_log(path: Path, mapping: ColumnMapping) -> RawLog:
    path = check_file(path)
    version = detect_amazon(path)
    if version is None:
        raise ValueError(
            f"{path}: not an Amazon Reviews file: the first line lacks the 2018 fields (reviewerID, asin, "
            f"overall, unixReviewTime) and the 2023 fields (user_id, parent_asin, rating, timestamp)."
        )
    defaults = dict(AMAZON_2018 if version == "2018" else AMAZON_2023)
    if version == "2023" and "parent_asin" not in json.loads(first_line(path).decode("utf-8")):
        defaults["item"] = "asin"
    resolved = {}
    for name, default in defaults.items():
        requested = getattr(mapping, name)
        if requested is False:
            continue
        resolved[name] = requested if isinstance(requested, str) else default
    for name in ("event_type", "session"):
        if isinstance(getattr(mapping, name), str):
            resolved[name] = getattr(mapping, name)
    schema = pa.schema([(src, _AMAZON_TYPES.get(name, pa.string())) for name, src in resolved.items()])
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False)
    table = read_json_lines(path, options)
    unit = mapping.timestamp_unit if mapping.timestamp_unit != "s" else ("ms" if version == "2023" else "s")
    return RawLog(
        table=rename_canonical(table, resolved),
        source=str(path),
        provenance=Provenance(str(path), header_lines=0),
        columns=resolved,
        timestamp_unit=unit,
        notes=[f"Amazon Reviews {version} field names; timestamps in {unit}"],
    )


AMAZON_META_2018 = {
    "asin": pa.string(),
    "title": pa.string(),
    "category": pa.list_(pa.string()),
    "description": pa.list_(pa.string()),
    "brand": pa.string(),
    "main_cat": pa.string(),
}
AMAZON_META_2023 = {
    "parent_asin": pa.string(),
    "title": pa.string(),
    "main_category": pa.string(),
    "categories": pa.list_(pa.string()),
    "description": pa.list_(pa.string()),
    "features": pa.list_(pa.string()),
    "store": pa.string(),
}


def read_amazon_items(path: str | os.PathLike) -> pa.Table:
    """Read Amazon Reviews item metadata (2018 `meta_*.json(.gz)` or 2023 `meta_*.jsonl(.gz)`).

    Args:
        path: The metadata file.

    Returns:
        The canonical item table: `item_id`, `title`, `categories`, `description` (description and, for 2023,
        features joined with spaces), and the brand/store/main category as attributes.
    """
    path = check_file(path)
    keys = set(json.loads(first_line(path).decode("utf-8")))
    spec = AMAZON_META_2023 if "parent_asin" in keys else AMAZON_META_2018
    options = pajson.ParseOptions(
        explicit_schema=pa.schema(list(spec.items())), unexpected_field_behavior="ignore", newlines_in_values=False
    )
    table = read_json_lines(path, options)
    item = "parent_asin" if "parent_asin" in spec else "asin"
    categories = "categories" if "categories" in spec else "category"
    description = pc.fill_null(pc.binary_join(table.column("description"), " "), "")
    if "features" in spec:
        features = pc.fill_null(pc.binary_join(table.column("features"), " "), "")
        description = pc.utf8_trim_whitespace(pc.binary_join_element_wise(description, features, " "))
    description = pc.if_else(pc.equal(description, ""), None, description)
    attributes = [n for n in table.column_names if n not in (item, "title", categories, "description", "features")]
    return pa.table(
        {
            "item_id": table.column(item),
            "title": table.column("title"),
            "categories": fill_empty_lists(table.column(categories)),
            "description": description,
            **{name: table.column(name) for name in attributes},
        }
    )
