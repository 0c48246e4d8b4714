"""In-memory tables: `pyarrow.Table`, `pandas.DataFrame`, `datasets.Dataset`, `polars.DataFrame`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .._arrow import (
    Provenance,
)
from ..columns import ColumnMapping, resolve_columns
from .base import RawLog, arrow_message

# ----------------------------------------------------------------------------------------------------------------
# In-memory tables


def table_from_memory(source, label: str = "table") -> pa.Table:
    """Arrow table from a `pyarrow.Table`, `pandas.DataFrame`, `datasets.Dataset` or `polars.DataFrame`.

    Args:
        source: The in-memory table.
        label: Name for messages.

    Returns:
        A `pyarrow.Table` (zero-copy where the source allows).
    """
    if isinstance(source, pa.Table):
        return source
    if hasattr(source, "data") and hasattr(source.data, "table") and hasattr(source, "features"):  # datasets
        return source.data.table
    if hasattr(source, "to_arrow") and not hasattr(source, "iloc"):  # polars
        return source.to_arrow()
    if hasattr(source, "iloc"):  # pandas
        try:
            return pa.Table.from_pandas(source, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            bad = _mixed_pandas_column(source)
            if bad is not None:
                raise ValueError(f"DataFrame {label}: {bad}") from None
            raise ValueError(f"DataFrame {label}: cannot convert to Arrow: {arrow_message(err)}") from None
    raise ValueError(
        f"Cannot read {label} from an object of type {type(source).__name__}; pass a path, a pyarrow.Table, a "
        f"pandas.DataFrame or a datasets.Dataset."
    )


def _mixed_pandas_column(frame) -> str | None:
    # Error path only: find an object column holding values of several Python types (e.g. 7 and "7").
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        kinds = column.dropna().map(lambda v: type(v).__name__)
        if kinds.nunique() > 1:
            first_kind = kinds.iloc[0]
            other = kinds[kinds != first_kind]
            row = int(np.flatnonzero((column.notna()).to_numpy())[0])
            pos = int(frame.index.get_loc(other.index[0]))
            return (
                f"column {name!r} has mixed types: {first_kind} (row {row + 1}: {column.iloc[row]!r}) and "
                f"{other.iloc[0]} (row {pos + 1}: {column.iloc[pos]!r}). Make the column one type "
                f"(e.g. df[{name!r}] = df[{name!r}].astype(str))."
            )
    return None


def read_memory_log(source, mapping: ColumnMapping) -> RawLog:
    table = table_from_memory(source, "events")
    resolved = resolve_columns(mapping, table.column_names, "table")
    for name in ("user", "item"):
        column = table.column(resolved[name])
        if column.type == pa.null():
            raise ValueError(f"table: the {name} column {resolved[name]!r} holds only missing values.")
    return RawLog.from_columns(table, resolved, mapping, f"<{type(source).__name__}>", Provenance("table"))
