"""Group a behaviour log into per-user sequences with Apache Spark, written as Parquet shards.

For logs that live in Spark already, or that outgrow one machine's memory: Spark does the shuffle (one row per user,
events in time order) and `hf_interest` reads the shards back with `datasets` streaming, split across training
processes with `datasets.distributed.split_dataset_by_node` (`hf_interest.data.sequence_shards`):

    python hub_scripts/spark_sequences.py events.parquet --output_dir shards/ --num_shards 64        # local mode
    spark-submit hub_scripts/spark_sequences.py s3://bucket/events/ --output_dir s3://bucket/shards/   # a cluster
    accelerate launch hub_scripts/train.py --dataset shards/ ...      # a folder with sequences.json streams

Cleaning is the in-memory loader's default (`load_behaviors`): rows whose user or item is missing or empty are
dropped, identical events (same user, item and timestamp) are kept once, and each user's events are ordered by
(timestamp, order in the input), so the leave-one-out splits built from the shards are the in-memory loader's
(asserted in tests/test_spark_sequences.py). Every count is written to `sequences.json` beside the shards and printed.

Shards: `part-*.parquet` with `user_id` (string), `item_ids` (list of strings) and `timestamps` (list of int64
seconds), users spread by a hash of their id; `--num_shards` should be a multiple of the number of training
processes, so that each one reads whole shards. Needs `pyspark` (`pip install "hf-interest[spark]"`) and Java 17+.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

MANIFEST = "sequences.json"
FORMAT = "hf_interest.sequences/1"


def build_sequences(spark, source: str, output_dir: str, num_shards: int, user: str, item: str, time: str) -> dict:
    """Runs the Spark job; returns the counts written to the manifest."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType, TimestampType

    reader = spark.read
    if source.endswith((".csv", ".csv.gz", ".tsv")):
        log = reader.option("header", True).option("inferSchema", True)
        log = log.option("sep", "\t" if source.endswith(".tsv") else ",").csv(source)
    else:
        log = reader.parquet(source)
    missing = [c for c in (user, item, time) if c not in log.columns]
    if missing:
        raise SystemExit(
            f"{source}: no column {missing}; it has {log.columns}. Name them with --user_column / --item_column / "
            "--time_column."
        )
    time_type = log.schema[time].dataType
    if isinstance(time_type, TimestampType):
        seconds = F.unix_timestamp(F.col(time))
    elif isinstance(time_type, NumericType):
        seconds = F.col(time).cast("long")
    else:
        raise SystemExit(
            f"{source}: column {time!r} is {time_type.simpleString()}; this job reads epoch seconds or a timestamp "
            "type. Convert it first (e.g. to_timestamp) or load the log with load_behaviors, which parses strings."
        )
    # The order of the rows in the input breaks ties in time, as the in-memory loader's stable sort does.
    events = log.select(
        F.col(user).cast("string").alias("user_id"),
        F.col(item).cast("string").alias("item_id"),
        seconds.alias("timestamp"),
    ).withColumn("order", F.monotonically_increasing_id())
    read = events.count()
    events = events.where(
        F.col("user_id").isNotNull()
        & (F.length("user_id") > 0)
        & F.col("item_id").isNotNull()
        & (F.length("item_id") > 0)
    )
    kept = events.count()
    first = Window.partitionBy("user_id", "item_id", "timestamp").orderBy("order")
    events = events.withColumn("copy", F.row_number().over(first)).where("copy = 1").drop("copy").cache()
    unique = events.count()
    if events.where(F.col("timestamp").isNull()).limit(1).count():
        raise SystemExit(f"{source}: column {time!r} has missing values; drop or fill those rows first.")

    ordered = F.array_sort(F.collect_list(F.struct("timestamp", "order", "item_id")))
    sequences = events.groupBy("user_id").agg(ordered.alias("events"))
    sequences = sequences.select(
        "user_id",
        F.col("events.item_id").alias("item_ids"),
        F.col("events.timestamp").alias("timestamps"),
    )
    sequences.repartition(num_shards, "user_id").sortWithinPartitions("user_id").write.mode("overwrite").parquet(
        output_dir
    )
    counts = {
        "format": FORMAT,
        "source": source,
        "events_read": read,
        "dropped_missing_user_or_item": read - kept,
        "dropped_duplicates": kept - unique,
        "events": unique,
        "users": events.select("user_id").distinct().count(),
        "items": events.select("item_id").distinct().count(),
        "num_shards": num_shards,
        "columns": {"user": user, "item": item, "timestamp": time},
    }
    events.unpersist()
    return counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a Parquet file or folder, or a CSV/TSV file with a header (any Spark path)")
    parser.add_argument("--output_dir", required=True, help="where the shards and sequences.json go (replaced)")
    parser.add_argument("--num_shards", type=int, default=8, help="a multiple of the number of training processes")
    parser.add_argument("--user_column", default="user_id")
    parser.add_argument("--item_column", default="item_id")
    parser.add_argument("--time_column", default="timestamp")
    parser.add_argument("--master", default="local[*]", help="Spark master when not run by spark-submit")
    parser.add_argument(
        "--shuffle_partitions", type=int, help="spark.sql.shuffle.partitions (Spark's default, 200, when not given)"
    )
    args = parser.parse_args(argv)
    if args.num_shards < 1:
        raise SystemExit(f"--num_shards must be at least 1, got {args.num_shards}.")

    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.appName("hf_interest sequences")
        .master(args.master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # --num_shards is a contract (whole shards per training process): adaptive execution must not merge them
        .config("spark.sql.adaptive.coalescePartitions.enabled", "false")
    )
    if args.shuffle_partitions:
        spark = spark.config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
    spark = spark.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        counts = build_sequences(
            spark, args.source, args.output_dir, args.num_shards, args.user_column, args.item_column, args.time_column
        )
    finally:
        spark.stop()
    output = Path(args.output_dir)
    if output.is_dir():  # a local folder: drop Spark's marker files, keep the shards
        for marker in [*output.glob("._*.crc"), *output.glob(".*.crc"), output / "_SUCCESS"]:
            marker.unlink(missing_ok=True)
        (output / MANIFEST).write_text(json.dumps(counts, indent=2) + "\n")
    else:
        print(f"{args.output_dir} is not a local folder: write this as {MANIFEST} beside the shards:")
    print(json.dumps(counts, indent=2))
    return counts


if __name__ == "__main__":
    shutil.which("java") or print("warning: no `java` on PATH; pyspark needs Java 17 or newer.")
    main()
