"""Parquet: one file, or a directory of shards as Spark or Dask write them (hive partitions included)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .._arrow import (
    Provenance,
)
from ..columns import ColumnMapping, resolve_columns
from .base import RawLog, arrow_message, check_file, parquet_files

# ----------------------------------------------------------------------------------------------------------------
# Parquet: one file, or a directory of shards (Spark `part-*.parquet` + `_SUCCESS`, Dask `part.N.parquet`, hive
# partitions `key=value/`).


def read_parquet_log(path: Path, mapping: ColumnMapping) -> RawLog:
    if path.is_dir():
        files = parquet_files(path)
        if not files:
            raise FileNotFoundError(
                f"{path}: the directory holds no Parquet files (*.parquet); files starting with '_' or '.' "
                f"(_SUCCESS, _metadata, .crc) are ignored."
            )
    else:
        files = [check_file(path)]
    schemas = []
    for f in files:
        if f.stat().st_size == 0:
            raise ValueError(f"{f}: the file is empty (0 bytes); it is not a Parquet file.")
        try:
            schemas.append(pq.read_schema(f))
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{f}: not a readable Parquet file ({arrow_message(err)}).") from None
    partition_fields: pa.Schema | None = None
    if path.is_dir():
        probe = pads.dataset(
            [str(f) for f in files], format="parquet", partitioning="hive", partition_base_dir=str(path)
        )
        file_names = set().union(*(s.names for s in schemas))
        partition_fields = pa.schema([fld for fld in probe.schema if fld.name not in file_names])
    found = list(dict.fromkeys([n for s in schemas for n in s.names] + (partition_fields or pa.schema([])).names))
    resolved = resolve_columns(mapping, found, str(path))
    needed = list(resolved.values())
    # Shards must agree on the type of every column we read: a user id that is an integer in one shard and text in
    # another is ambiguous ("7" vs 7), so say which files disagree instead of letting Arrow fail mid-scan.
    fields_out = []
    for name in needed:
        if partition_fields is not None and name in partition_fields.names:
            fields_out.append(partition_fields.field(name))
            continue
        typed = [(f, s.field(name).type) for f, s in zip(files, schemas) if name in s.names]
        try:
            merged = pa.unify_schemas([pa.schema([(name, t)]) for _, t in typed], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            first_file, first_type = typed[0]
            other_file, other_type = next((f, t) for f, t in typed if t != first_type)
            raise ValueError(
                f"{path}: column {name!r} has mixed types across shards: {first_type} in {first_file} but "
                f"{other_type} in {other_file}. Rewrite the shards with one type for this column (ids as text)."
            ) from None
        if len(typed) < len(files):
            missing = next(f for f, s in zip(files, schemas) if name not in s.names)
            raise ValueError(f"{missing}: column {name!r} is missing from this shard (present in {typed[0][0]}).")
        fields_out.append(merged.field(name))
    try:
        if path.is_dir():
            dataset = pads.dataset(
                [str(f) for f in files],
                format="parquet",
                partitioning="hive",
                partition_base_dir=str(path),
                schema=pa.schema(fields_out),
            )
            table = dataset.to_table(columns=needed)
        else:
            table = pq.read_table(files[0], columns=needed)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as err:
        raise ValueError(f"{path}: could not read the Parquet data: {arrow_message(err)}") from None
    counts = [(str(f), pq.ParquetFile(f).metadata.num_rows) for f in files] if len(files) > 1 else []
    return RawLog.from_columns(
        table,
        resolved,
        mapping,
        str(path),
        Provenance(str(files[0]) if len(files) == 1 else str(path), files=counts),
        notes=[f"read {len(files)} Parquet shards"] if len(files) > 1 else [],
    )


def read_parquet_any(path: Path) -> pa.Table:
    files = parquet_files(path) if path.is_dir() else [path]
    try:
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
        raise ValueError(f"{path}: could not read the Parquet data: {arrow_message(err)}") from None
