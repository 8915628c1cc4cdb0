"""Profile a Hive-partitioned JSON-lines dataset: rows per partition, and the event_time range.

``spark_jobs/partition_profile.py --input <dir or URI> --output <URI> --partition-columns dt,hour``
reads ``<input>/dt=.../hour=.../*.json`` with Spark's partition discovery and writes one JSON object per
partition (``{"dt": "2024-01-01", "hour": "00", "rows": 3, "min_event_time": ..., "max_event_time": ...}``)
into a single part file under ``<output>`` (overwritten, so a rerun changes nothing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from spark_jobs.common import spark_session

EVENT_TIME = "event_time"


def profile_partitions(df: DataFrame, partition_columns: Sequence[str]) -> DataFrame:
    """One row per partition: the partition values, ``rows``, and min/max ``event_time`` when present.

    A string ``event_time`` is parsed as a timestamp first: comparing ISO strings with different offsets
    as text would give the wrong range.
    """
    if not partition_columns:
        raise ValueError("partition_columns must name at least one column")
    missing = [name for name in partition_columns if name not in df.columns]
    if missing:
        raise ValueError(f"partition columns {missing} not in the dataset; its columns are {df.columns}")
    aggregates = [F.count(F.lit(1)).alias("rows")]
    if EVENT_TIME in df.columns:
        event_time = F.col(EVENT_TIME)
        if isinstance(df.schema[EVENT_TIME].dataType, StringType):
            event_time = F.to_timestamp(event_time)
        aggregates += [F.min(event_time).alias("min_event_time"), F.max(event_time).alias("max_event_time")]
    return df.groupBy(*partition_columns).agg(*aggregates).orderBy(*partition_columns)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="partition_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="root of the Hive-partitioned JSON-lines dataset")
    parser.add_argument("--output", required=True, help="where the profile (JSON lines) is written")
    parser.add_argument(
        "--partition-columns",
        required=True,
        type=lambda value: [part.strip() for part in value.split(",") if part.strip()],
        help="comma-separated partition columns, outermost first (dt,hour)",
    )
    args = parser.parse_args(list(argv))
    if not args.partition_columns:
        parser.error("--partition-columns names no column")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    spark = spark_session("partition_profile")
    # Partition values stay strings exactly as they appear in the paths (hour=00 stays "00", not 0).
    spark.conf.set("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    df = spark.read.option("basePath", args.input).json(args.input)
    profile = profile_partitions(df, args.partition_columns).cache()
    profile.coalesce(1).write.mode("overwrite").json(args.output)
    totals = profile.agg(F.count(F.lit(1)).alias("partitions"), F.sum("rows").alias("rows")).first()
    print(
        f"partition_profile: profiled {totals['partitions']} partitions, {totals['rows'] or 0} rows "
        f"from {args.input} into {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
