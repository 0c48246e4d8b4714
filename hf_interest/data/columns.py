"""Column mappings: which column of a raw log holds the user, the item, the time and the optional fields.

Logs name their columns in many ways (`userId`, `visitorid`, `reviewerID`, ...). A `ColumnMapping` states the names
explicitly; fields left to `None` are looked up among common names (case-insensitively), and the names actually
used are written into the loading report, so a guess never goes unnoticed. A field set to `False` is never used,
even when a column with a common name exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from ._arrow import format_values

# Common column names, most specific first. Matching is case-insensitive.
USER_CANDIDATES = ("user_id", "userid", "user", "uid", "visitorid", "visitor_id", "reviewerid", "customer_id")
ITEM_CANDIDATES = ("item_id", "itemid", "item", "iid", "movieid", "movie_id", "asin", "product_id", "article_id")
TIMESTAMP_CANDIDATES = ("timestamp", "ts", "time", "datetime", "event_time", "unixreviewtime", "date", "created_at")
EVENT_TYPE_CANDIDATES = ("event_type", "event", "action", "behavior", "behaviour", "interaction_type")
RATING_CANDIDATES = ("rating", "overall", "score", "value")
SESSION_CANDIDATES = ("session_id", "sessionid", "session")

TITLE_CANDIDATES = ("title", "movie_title", "name", "item_name", "product_name")
CATEGORY_CANDIDATES = ("categories", "category", "genres", "genre", "class", "tags")
TEXT_CANDIDATES = ("description", "text", "overview", "summary", "plot")

_CANDIDATES = {
    "user": USER_CANDIDATES,
    "item": ITEM_CANDIDATES,
    "timestamp": TIMESTAMP_CANDIDATES,
    "event_type": EVENT_TYPE_CANDIDATES,
    "rating": RATING_CANDIDATES,
    "session": SESSION_CANDIDATES,
}

TIMESTAMP_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclass(frozen=True)
class ColumnMapping:
    """Names of the columns of a behaviour log.

    Args:
        user: Column with the user id (required). `None`: look for `user_id`, `userId`, `user`, `visitorid`, ...
        item: Column with the item id (required). `None`: look for `item_id`, `itemId`, `movieId`, `asin`, ...
        timestamp: Column with the event time. `None`: look for `timestamp`, `time`, `ts`, ...; `False`: the log
            has no time, events keep file order and only leave-one-out / user splits are possible.
        event_type: Optional column with the kind of event (click, cart, purchase, ...).
        rating: Optional column with a rating or any numeric value of the event.
        session: Optional column with a session id.
        timestamp_unit: Unit of numeric timestamps: "s" (default), "ms", "us" or "ns".
        timestamp_format: `strptime` format for timestamps stored as text that are not ISO 8601 (ISO 8601 text,
            with or without a zone offset, is recognised without it). Text without a zone is read as UTC.
    """

    user: str | None = None
    item: str | None = None
    timestamp: str | None | bool = None
    event_type: str | None | bool = None
    rating: str | None | bool = None
    session: str | None | bool = None
    timestamp_unit: str = "s"
    timestamp_format: str | None = None

    def __post_init__(self):
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise ValueError(
                f"ColumnMapping.timestamp_unit must be one of {sorted(TIMESTAMP_UNITS)}, got {self.timestamp_unit!r}."
            )
        for name in ("user", "item"):
            if getattr(self, name) is False:
                raise ValueError(f"ColumnMapping.{name} is required; it cannot be False.")

    @classmethod
    def from_any(cls, columns: ColumnMapping | Mapping[str, str] | None) -> ColumnMapping:
        """Build a mapping from a `ColumnMapping`, a plain dict with the same keys, or `None` (all detected).

        Args:
            columns: The mapping as the user gave it.

        Returns:
            A `ColumnMapping`.
        """
        if columns is None:
            return cls()
        if isinstance(columns, ColumnMapping):
            return columns
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(columns) - known)
        if unknown:
            raise ValueError(f"Unknown column mapping keys {unknown}; the keys are {sorted(known)}.")
        return cls(**dict(columns))


def _find(found: Sequence[str], wanted: str) -> str | None:
    lower = {name.lower(): name for name in reversed(found)}
    return lower.get(wanted.lower())


def _match_columns(mapping, candidates_by_field: dict, found: Sequence[str], who: str, where: str) -> dict[str, str]:
    """Fields named in `mapping` must exist (case-insensitively); the others take the first unused candidate found.
    A field mapped to `False` is skipped. Returns `{field: column}` for the fields matched."""
    resolved: dict[str, str] = {}
    for name, candidates in candidates_by_field.items():
        requested = getattr(mapping, name)
        if requested is False:
            continue
        if isinstance(requested, str):
            match = requested if requested in found else _find(found, requested)
            if match is None:
                raise ValueError(
                    f"{who} names {requested!r} as the {name} column, but {where} has no such column. Columns "
                    f"found: {format_values(found, 50)}. Pass the right name."
                )
            resolved[name] = match
            continue
        for candidate in candidates:
            match = _find(found, candidate)
            if match is not None and match not in resolved.values():
                resolved[name] = match
                break
    return resolved


def resolve_columns(mapping: ColumnMapping, found: Sequence[str], source: str) -> dict[str, str]:
    """Match a `ColumnMapping` against the columns a source actually has.

    Args:
        mapping: The requested mapping.
        found: Column names present in the source.
        source: Name of the source, for messages.

    Returns:
        `{canonical field: source column}` for every field in use (`user` and `item` always).

    Raises:
        ValueError: A named column is missing, or no user/item column could be found; the message lists the columns
            that are present and how to name the right ones.
    """
    resolved = _match_columns(mapping, _CANDIDATES, found, f"{source}: the column mapping", "the source")
    for name in ("user", "item"):
        if name not in resolved:
            separators = [c for c in (",", "\t", ";", "|") if len(found) == 1 and c in found[0]]
            raise ValueError(
                f"{source}: no {name} column found. Columns found: {format_values(found, 50)}; looked for "
                f"{list(_CANDIDATES[name])}. Name it explicitly, e.g. load_behaviors(..., columns={{'{name}': "
                "'<column>'})."
                + (
                    f" The header was read as one column holding {separators[0]!r}: check the delimiter "
                    f"(load_behaviors(..., delimiter={separators[0]!r}))."
                    if separators
                    else ""
                )
            )
    return resolved


@dataclass(frozen=True)
class ItemColumns:
    """Names of the columns of an item side-information table (all detected when `None`).

    Args:
        item: Column with the item id (must match the ids of the behaviour log).
        title: Column with the item title.
        categories: Column with categories/genres: a list column, or text split on `category_separator`.
        text: Column with a free-text description.
        category_separator: Separator of categories stored as text; `None`: "|" if any value contains "|",
            else "," if any contains ",", else each value is a single category.
    """

    item: str | None = None
    title: str | None | bool = None
    categories: str | None | bool = None
    text: str | None | bool = None
    category_separator: str | None = None

    @classmethod
    def from_any(cls, columns: ItemColumns | Mapping[str, str] | None) -> ItemColumns:
        """Build from an `ItemColumns`, a dict with the same keys, or `None`.

        Args:
            columns: The mapping as the user gave it.

        Returns:
            An `ItemColumns`.
        """
        if columns is None:
            return cls()
        if isinstance(columns, ItemColumns):
            return columns
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(columns) - known)
        if unknown:
            raise ValueError(f"Unknown item column keys {unknown}; the keys are {sorted(known)}.")
        return cls(**dict(columns))


def resolve_item_columns(mapping: ItemColumns, found: Sequence[str], source: str) -> dict[str, str]:
    """Match an `ItemColumns` against an item table's columns.

    Args:
        mapping: The requested mapping.
        found: Column names present in the item table.
        source: Name of the source, for messages.

    Returns:
        `{"item": ..., "title": ..., "categories": ..., "text": ...}` for the fields found (`item` always).
    """
    table = {"item": ITEM_CANDIDATES, "title": TITLE_CANDIDATES, "categories": CATEGORY_CANDIDATES}
    table["text"] = TEXT_CANDIDATES
    resolved = _match_columns(mapping, table, found, f"{source}: the item column mapping", "the table")
    if "item" not in resolved:
        raise ValueError(
            f"{source}: no item id column found in the item table. Columns found: {format_values(found, 50)}; "
            f"name it with item_columns={{'item': '<column>'}}."
        )
    return resolved
