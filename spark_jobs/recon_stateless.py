"""The stateless step of reconciliation: a group of landing batches -> one stateless artifact per key.

``spark_jobs/recon_stateless.py --spec <uri of _job.json>`` reads every line of the group's batches,
validates it (a bad line goes to ``quarantine/`` with its reason, never silently away), drops events
seen before (twice in this run, or in ``seen/`` of an older group), and reduces the rest to one row per
artifact key: totals per currency and event type, the batches and entities that contributed, counts and
the event time range. Outputs under ``output_uri``: ``artifacts/``, ``touched_keys/``, ``quarantine/``,
``seen/`` (by a hash bucket of the event id) and ``_stats.json``, written last: its presence says the
output is whole.

An event id is looked up by id alone: the groups to check are those the plan found committed within the
dedup horizon (arrival, not event time), and in each the one bucket folder that can hold the id. Groups
written before the buckets (``seen/event_date=...``) are read whole, so a lake deployed before needs no
migration; they leave the horizon after ``dedup_horizon_days``.

Nothing per key reaches the driver: it collects counts per reason code and id bucket only.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from spark_jobs.common import main_with_spec
from spark_jobs.common.recon_schema import (
    AMOUNT_NOT_INTEGER,
    AMOUNT_PATTERN,
    BAD_CURRENCY,
    BAD_EVENT_TIME,
    CURRENCY_PATTERN,
    EVENT_FIELDS,
    EVENT_TEXT_SCHEMA,
    EVENT_TIME_PATTERN,
    EVENT_TYPES,
    LEGACY_SEEN_PARTITION,
    NEGATIVE_AMOUNT,
    NOT_JSON,
    SEEN_BUCKET,
    SEEN_BUCKETS,
    SEEN_SCHEMA,
    SIGNED_EVENT_TYPE,
    STATELESS_SCHEMA,
    STATELESS_SPEC_KEYS,
    UNKNOWN_EVENT_TYPE,
    check_spec,
    missing,
    read_committed_stats,
)
from spark_jobs.common.storage import Storage, join

JOB = "recon_stateless"
LINE_COLUMNS = ("batch_id", "file", "raw")
QUARANTINE_COLUMNS = ("batch_id", "file", "raw", "reason")
EVENT_COLUMNS = (
    "batch_id",
    "file",
    "raw",
    "event_id",
    "artifact_key",
    "entity",
    "event_type",
    "amount",
    "currency",
    "event_time",
    "event_date",
)
_CORRUPT = "_corrupt_record"

# -- reading -------------------------------------------------------------------------------------------


def read_batch_lines(spark: SparkSession, batches: Sequence[dict[str, Any]]) -> DataFrame:
    """Every line of the batches' files as ``(batch_id, file, raw)``.

    One text read per batch, so each line's batch comes from the spec itself rather than from matching
    Spark's (URL-encoded) file name back to the listed URIs. ``file`` is the file as Spark names it.
    """
    frames = [
        spark.read.text(list(batch["files"])).select(
            F.lit(batch["batch_id"]).alias("batch_id"),
            # input_file_name() percent-encodes (a space is %20); "+" is literal in a path, so it is
            # protected from url_decode, which would turn it into a space.
            F.expr("url_decode(replace(input_file_name(), '+', '%2B'))").alias("file"),
            F.col("value").alias("raw"),
        )
        for batch in batches
        if batch["files"]
    ]
    if not frames:
        return spark.createDataFrame([], "batch_id string, file string, raw string")
    return reduce(DataFrame.unionByName, frames)


# -- validation ----------------------------------------------------------------------------------------


def _blank(column: Column) -> Column:
    return column.isNull() | (column == "")


# The ids must be JSON strings: the string parse turns 12 or [1] into text that looks like an id.
STRING_ID_FIELDS = ("event_id", "artifact_key", "entity")


def _not_a_json_string(text: Column, name: str) -> Column:
    """The raw line does not give ``name`` a string value (``"name": "``). A key written inside a
    string value cannot match: its quotes are escaped there."""
    return ~text.rlike(f'[{{,]\\s*"{name}"\\s*:\\s*"')


def _first_reason(checks: Sequence[tuple[Column, str]]) -> Column:
    """The reason of the first check that fails, or null when the row passes them all."""
    first_condition, first_reason = checks[0]
    reason = F.when(first_condition, F.lit(first_reason))
    for condition, code in checks[1:]:
        reason = reason.when(condition, F.lit(code))
    return reason


def classify_events(lines_df: DataFrame) -> DataFrame:
    """``lines_df`` (batch_id, file, raw) with ``reason`` (null for a valid event) and the parsed fields.

    Fields are parsed as strings so that a wrong type is visible; ``amount`` is parsed a second time as
    a JSON integer, because the string parse turns ``"12"`` and ``12.0`` into text that looks fine.
    """
    text = F.trim(F.col("raw"))
    as_text = F.from_json(
        text,
        StructType([*EVENT_TEXT_SCHEMA.fields, StructField(_CORRUPT, StringType())]),
        {"columnNameOfCorruptRecord": _CORRUPT},
    )
    # Spark's parser accepts trailing text after the object and parses arrays of objects: a line is an
    # event only if it is one JSON object from its first to its last character.
    is_object = (
        text.startswith("{")
        & text.endswith("}")
        & F.json_object_keys(text).isNotNull()
        & F.col("_text")[_CORRUPT].isNull()
    )
    field = {name: F.col("_text")[name] for name in EVENT_FIELDS}
    amount = F.col("_amount_long")
    checks = [
        (~F.coalesce(is_object, F.lit(False)), NOT_JSON),
        *(
            (
                _blank(field[name])
                | (_not_a_json_string(text, name) if name in STRING_ID_FIELDS else F.lit(False)),
                missing(name),
            )
            for name in EVENT_FIELDS
        ),
        (~field["event_type"].isin(*EVENT_TYPES), UNKNOWN_EVENT_TYPE),
        (~field["amount"].rlike(AMOUNT_PATTERN) | amount.isNull(), AMOUNT_NOT_INTEGER),
        ((amount < 0) & (field["event_type"] != SIGNED_EVENT_TYPE), NEGATIVE_AMOUNT),
        (~field["currency"].rlike(CURRENCY_PATTERN), BAD_CURRENCY),
        (~field["event_time"].rlike(EVENT_TIME_PATTERN) | F.col("_event_ts").isNull(), BAD_EVENT_TIME),
    ]
    return (
        lines_df.withColumn("_text", as_text)
        .withColumn("_amount_long", F.from_json(text, "amount long")["amount"])
        .withColumn("_event_ts", F.expr("try_cast(_text.event_time as timestamp)"))
        .withColumn("reason", _first_reason(checks))
        .select(
            *LINE_COLUMNS,
            "reason",
            *(field[name].alias(name) for name in ("event_id", "artifact_key", "entity", "event_type")),
            amount.alias("amount"),
            field["currency"].alias("currency"),
            F.col("_event_ts").alias("event_time"),
            # The time is UTC ("Z"), so its date is its first ten characters, whatever the session zone.
            F.substring(field["event_time"], 1, 10).alias("event_date"),
        )
    )


def split_valid(classified_df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid events, quarantine rows) of a ``classify_events`` result."""
    valid = classified_df.filter(F.col("reason").isNull()).select(*EVENT_COLUMNS)
    quarantine = classified_df.filter(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)
    return valid, quarantine


def validate_events(lines_df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid events, quarantine rows ``batch_id, file, raw, reason``) of ``lines_df``."""
    return split_valid(classify_events(lines_df))


# -- duplicates ----------------------------------------------------------------------------------------


def mark_duplicates(valid_df: DataFrame, seen_df: DataFrame) -> DataFrame:
    """``valid_df`` with ``duplicate_in_run`` and ``seen_before`` flags.

    Of the copies of one event id in this run, the one of the lowest batch id (then the smallest raw
    line) is kept, so a retry keeps the same copy. A kept copy is ``seen_before`` when an older group
    already applied its id; ``seen_df`` holds those ids (``event_id``).
    """
    copies = Window.partitionBy("event_id").orderBy("batch_id", "raw")
    seen_ids = seen_df.select("event_id").distinct().withColumn("_seen", F.lit(True))
    return (
        valid_df.withColumn("duplicate_in_run", F.row_number().over(copies) > 1)
        .join(seen_ids, "event_id", "left")
        .withColumn("seen_before", ~F.col("duplicate_in_run") & F.coalesce(F.col("_seen"), F.lit(False)))
        .drop("_seen")
    )


def drop_duplicates(valid_df: DataFrame, seen_df: DataFrame) -> DataFrame:
    """The events of ``valid_df`` to apply: one copy per event id, none already seen by an older group."""
    return only_new(mark_duplicates(valid_df, seen_df))


def only_new(marked_df: DataFrame) -> DataFrame:
    return marked_df.filter(~F.col("duplicate_in_run") & ~F.col("seen_before")).select(*EVENT_COLUMNS)


def seen_rows(events_df: DataFrame) -> DataFrame:
    """The ``seen/`` rows of the applied events: what later groups check their events against."""
    return events_df.select("event_id", "event_date").distinct()


# -- the reduce ----------------------------------------------------------------------------------------


def reduce_to_artifacts(events_df: DataFrame) -> DataFrame:
    """One STATELESS row per artifact key of the (deduplicated) events.

    Totals use ``try_sum``: a sum that overflows a long becomes null instead of wrapping around, and
    ``overflowing_totals`` makes the job fail on it.
    """
    zero = F.lit(0).cast("long")
    per_currency = events_df.groupBy("artifact_key", "currency").agg(
        *(
            F.try_sum(F.when(F.col("event_type") == kind, F.col("amount")).otherwise(zero)).alias(kind)
            for kind in EVENT_TYPES
        ),
        F.collect_set("batch_id").alias("batches"),
        F.collect_set("entity").alias("entities"),
        F.count(F.lit(1)).alias("event_count"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
    )
    per_key = per_currency.groupBy(F.col("artifact_key").alias("key")).agg(
        F.array_sort(F.array_distinct(F.flatten(F.collect_list("batches")))).alias("batches"),
        F.sum("event_count").alias("event_count"),
        F.min("first_event_time").alias("first_event_time"),
        F.max("last_event_time").alias("last_event_time"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list("entities")))).alias("entities"),
        # One struct per currency, currency first: sorting the structs sorts by currency.
        F.array_sort(F.collect_list(F.struct("currency", *EVENT_TYPES))).alias("totals"),
    )
    return per_key.select(
        *(F.col(field.name).cast(field.dataType).alias(field.name) for field in STATELESS_SCHEMA.fields)
    )


def overflowing_totals() -> Column:
    """True for an artifact with a total that overflowed (see ``reduce_to_artifacts``)."""
    return F.exists(
        "totals", lambda total: reduce(lambda a, b: a | b, (total[kind].isNull() for kind in EVENT_TYPES))
    )


# -- seen ids of older groups --------------------------------------------------------------------------


def seen_bucket(event_id: Column) -> Column:
    """The ``seen/`` bucket of an event id: Spark's xxhash64 (seeded, the same on every version and
    machine) modulo ``SEEN_BUCKETS``."""
    return F.pmod(F.xxhash64(event_id), F.lit(SEEN_BUCKETS)).cast("int")


def seen_uri(group_uri: str) -> str:
    return join(group_uri, "seen") + "/"


def seen_partitions(storage: Storage, group_uris: Sequence[str]) -> dict[str, list[str]]:
    """The partition folders (``id_bucket=3``, or ``event_date=2024-03-05`` in the layout before the
    buckets) of each group's ``seen/``: one listing a group. A group without ``seen/`` is refused."""
    found = {uri: storage.list_children(seen_uri(uri)) for uri in group_uris}
    absent = [uri for uri, names in found.items() if not names]
    if absent:
        raise FileNotFoundError(
            f"dedup groups without a seen/ folder (not a committed stateless output?): {absent}"
        )
    return {uri: [name for name in names if _is_partition(name)] for uri, names in found.items()}


def _is_partition(name: str) -> bool:
    # Besides the partition folders, seen/ holds _SUCCESS (and, written through EMRFS or s3n, empty
    # "<folder>_$folder$" marker objects, which name no folder Spark could read).
    return "=" in name and not name.endswith("_$folder$")


def folders_to_read(partitions: Sequence[str], buckets: Collection[int]) -> list[str]:
    """Those of one group's seen partitions that can hold an id of ``buckets``: the folders of those
    buckets, or every folder of a group in the event-date layout (an id may sit under any date)."""
    columns = {name.split("=", 1)[0] for name in partitions}
    if columns - {SEEN_BUCKET, LEGACY_SEEN_PARTITION} or len(columns) > 1:
        raise ValueError(f"seen/ partitions of more than one layout, or of none known: {sorted(partitions)}")
    if columns == {LEGACY_SEEN_PARTITION}:
        return list(partitions)
    wanted = {f"{SEEN_BUCKET}={bucket}" for bucket in buckets}
    return [name for name in partitions if name in wanted]


def seen_paths(partitions: dict[str, list[str]], buckets: Collection[int]) -> list[str]:
    """Every seen folder of the dedup groups that can hold an id of ``buckets`` (none without ids)."""
    if not buckets:
        return []
    return [
        join(seen_uri(uri), name)
        for uri, names in partitions.items()
        for name in folders_to_read(names, buckets)
    ]


def read_seen(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    """The ``event_id`` of every seen row under ``paths`` (partition folders of either layout; each is
    read as a folder of Parquet files, so the partition column is not needed)."""
    schema = StructType([SEEN_SCHEMA["event_id"]])
    if not paths:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(*paths)


def write_seen(events_df: DataFrame, uri: str) -> None:
    """The applied ids under ``uri``, one folder per bucket, one file per folder, sorted by id."""
    (
        seen_rows(events_df)
        .withColumn(SEEN_BUCKET, seen_bucket(F.col("event_id")))
        .repartition(SEEN_BUCKET)
        .sortWithinPartitions("event_id")
        .write.mode("overwrite")
        .partitionBy(SEEN_BUCKET)
        .parquet(uri)
    )


# -- the job -------------------------------------------------------------------------------------------


def _line_counts(classified_df: DataFrame) -> tuple[dict[str, int], dict[int, int]]:
    """(rows per quarantine reason, valid rows per seen bucket of their id): one small aggregation."""
    quarantined: dict[str, int] = {}
    valid_by_bucket: dict[int, int] = {}
    bucket = F.when(F.col("reason").isNull(), seen_bucket(F.col("event_id"))).alias("bucket")
    for row in classified_df.groupBy("reason", bucket).count().collect():
        if row["reason"] is None:
            valid_by_bucket[row["bucket"]] = row["count"]
        else:
            quarantined[row["reason"]] = quarantined.get(row["reason"], 0) + row["count"]
    return quarantined, valid_by_bucket


def run(spark: SparkSession, spec: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Run the stateless step of ``spec``; its stats (also written to ``<output_uri>_stats.json``)."""
    check_spec(spec, STATELESS_SPEC_KEYS, JOB)
    output_uri = spec["output_uri"]
    stats_uri = join(output_uri, "_stats.json")
    committed = read_committed_stats(storage, join(output_uri, "_COMMITTED"), stats_uri, JOB)
    if committed is not None:
        return committed
    if not spec["batches"]:
        raise ValueError(f"{JOB}: group {spec['group_id']} has no batches")
    # A _stats.json of an earlier attempt would vouch for output this attempt is about to replace.
    storage.delete(stats_uri)
    dedup_partitions = seen_partitions(storage, spec["dedup_group_uris"])
    spark.conf.set("spark.sql.session.timeZone", "UTC")

    cached: list[DataFrame] = []
    try:
        classified = classify_events(read_batch_lines(spark, spec["batches"])).persist()
        cached.append(classified)
        quarantined, valid_by_bucket = _line_counts(classified)
        valid, quarantine = split_valid(classified)

        seen_folders = seen_paths(dedup_partitions, valid_by_bucket)
        marked = mark_duplicates(valid, read_seen(spark, seen_folders)).persist()
        cached.append(marked)
        duplicates = marked.agg(
            F.count(F.when(F.col("duplicate_in_run"), 1)).alias("in_run"),
            F.count(F.when(F.col("seen_before"), 1)).alias("seen_before"),
        ).first()
        events = only_new(marked)

        artifacts = reduce_to_artifacts(events).persist()
        cached.append(artifacts)
        artifact_counts = artifacts.agg(
            F.count(F.lit(1)).alias("artifacts"),
            F.count(F.when(overflowing_totals(), 1)).alias("overflowing"),
        ).first()
        if artifact_counts["overflowing"]:
            raise ArithmeticError(
                f"{JOB}: {artifact_counts['overflowing']} artifacts have a total beyond a 64-bit long"
            )

        artifacts.write.mode("overwrite").parquet(join(output_uri, "artifacts"))
        artifacts.select("key").write.mode("overwrite").parquet(join(output_uri, "touched_keys"))
        quarantine.write.mode("overwrite").json(join(output_uri, "quarantine"))
        write_seen(events, join(output_uri, "seen"))
    finally:
        for frame in cached:
            frame.unpersist()

    valid_rows = sum(valid_by_bucket.values())
    quarantined_rows = sum(quarantined.values())
    stats = {
        "input_rows": valid_rows + quarantined_rows,
        "valid_rows": valid_rows,
        "quarantined": quarantined,
        "quarantined_rows": quarantined_rows,
        "duplicates_in_run": duplicates["in_run"],
        "duplicates_seen_before": duplicates["seen_before"],
        "events_applied": valid_rows - duplicates["in_run"] - duplicates["seen_before"],
        "artifacts": artifact_counts["artifacts"],
        "seen_folders_read": len(seen_folders),
    }
    storage.write_json(stats_uri, stats)
    print(
        f"{JOB}: group {spec['group_id']}: {stats['input_rows']} rows from {len(spec['batches'])} batches, "
        f"{quarantined_rows} quarantined {quarantined}, {stats['duplicates_in_run']} duplicates in the run, "
        f"{stats['duplicates_seen_before']} seen before (in {len(seen_folders)} seen folders of "
        f"{len(dedup_partitions)} groups), {stats['events_applied']} events applied to "
        f"{stats['artifacts']} artifacts under {output_uri}"
    )
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    return main_with_spec(JOB, run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
