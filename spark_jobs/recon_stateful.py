"""The stateful processing step of reconciliation: prior artifacts + stateless artifacts -> new versions.

``spark_jobs/recon_stateful.py --spec <uri of _job.json>`` takes, for every key the run's stateless
groups touch, the latest prior artifact (the highest version among the prefetched artifacts and the
part files of the in-flight runs, which may not be indexed yet), adds the stateless totals, and writes
the new versions as ARTIFACT JSON lines into at most ``state_part_files`` text part files under
``state_uri``, sorted by key within each file; then ``<output_uri>_process_stats.json``.

Applying a batch twice changes nothing: a stateless artifact whose batches the prior artifact already
holds is skipped; one that shares only some of them means corrupted input and fails the job.
Nothing per key reaches the driver: it collects counts, and at most a few offending keys for an error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.common import main_with_spec
from spark_jobs.common.recon_schema import (
    ARTIFACT_FIELDS,
    ARTIFACT_JSON_SCHEMA,
    ARTIFACT_TOTAL_SCHEMA,
    EVENT_TYPES,
    ISO_MILLIS_FORMAT,
    OPEN,
    OVERPAID,
    RECONCILED,
    STATEFUL_SPEC_KEYS,
    STATELESS_SCHEMA,
    STATUSES,
    check_spec,
    folder_exists,
    read_committed_stats,
)
from spark_jobs.common.storage import Storage, join

JOB = "recon_stateful"
CREATED = "created"
UPDATED = "updated"
ALREADY_APPLIED = "already_applied"
# Where a key's base state came from; on equal versions the prefetched copy wins (it is the same
# artifact, and the in-flight files were not needed for it).
PREFETCHED = "prefetched"
INFLIGHT = "inflight"
_SOURCE_RANK = {INFLIGHT: 0, PREFETCHED: 1}
# A stateless artifact against the prior artifact's batches: none of its batches there (apply it), all
# of them (already applied: skip it), some of them (corrupted input).
NEW = "new"
APPLIED = "applied"
PARTIAL = "partial"
MAX_ERRORS_SHOWN = 10

TOTAL_FIELDS = tuple(field.name for field in ARTIFACT_TOTAL_SCHEMA.fields)
TIME_FIELDS = ("first_event_time", "last_event_time")

# -- reading -------------------------------------------------------------------------------------------


def parse_artifact_lines(lines_df: DataFrame) -> DataFrame:
    """ARTIFACT JSON lines (column ``value``) -> artifact rows with timestamp times.

    State is our own output: a line that does not parse, or lacks its key or version, fails the job
    rather than being taken for "no prior state" (which would restart the artifact at version 1).
    """
    parsed = lines_df.select(
        F.col("value"), F.from_json("value", ARTIFACT_JSON_SCHEMA, {"mode": "FAILFAST"}).alias("a")
    )
    broken = parsed["a"].isNull() | parsed["a.key"].isNull() | parsed["a.version"].isNull()
    checked = parsed.select(
        F.when(broken, F.raise_error(F.concat(F.lit("unreadable artifact line: "), F.col("value"))))
        .otherwise(F.col("a"))
        .alias("a")
    )
    return checked.select(
        *(
            F.to_timestamp(F.col(f"a.{name}")).alias(name) if name in TIME_FIELDS else F.col(f"a.{name}")
            for name in ARTIFACT_FIELDS
        )
    )


def keys_of(lines_df: DataFrame, keys_df: DataFrame) -> DataFrame:
    """The artifact lines of ``lines_df`` whose key is in ``keys_df`` (a join: the keys stay on the
    executors); only those lines are parsed in full."""
    return (
        lines_df.withColumn("key", F.get_json_object("value", "$.key"))
        .join(keys_df, "key", "left_semi")
        .select("value")
    )


def read_prefetched(spark: SparkSession, storage: Storage, output_uri: str) -> DataFrame:
    prefetched_uri = join(output_uri, "prefetched") + "/"
    if not folder_exists(storage, prefetched_uri):
        raise FileNotFoundError(f"{JOB}: {prefetched_uri} does not exist; did the prefetch job run?")
    return spark.read.text(prefetched_uri)


def inflight_part_files(storage: Storage, inflight_state_uris: Sequence[str]) -> list[str]:
    """The part files listed in each in-flight run's ``_COMMITTED`` (empty files left out)."""
    files: list[str] = []
    for uri in inflight_state_uris:
        committed_uri = join(uri, "_COMMITTED")
        if not storage.exists(committed_uri):
            raise FileNotFoundError(
                f"{JOB}: in-flight state {uri} has no _COMMITTED; its process step has not committed"
            )
        files += [part["uri"] for part in storage.read_json(committed_uri)["part_files"] if part["bytes"]]
    return files


def read_inflight(spark: SparkSession, files: Sequence[str]) -> DataFrame:
    if not files:
        return spark.createDataFrame([], "value string")
    return spark.read.text(list(files))


def read_stateless(spark: SparkSession, storage: Storage, stateless_uris: Sequence[str]) -> DataFrame:
    """The STATELESS rows of every group, with ``group`` (the group's URI)."""
    if not stateless_uris:
        raise ValueError(f"{JOB}: the spec lists no stateless groups")
    repeated = sorted({uri for uri in stateless_uris if stateless_uris.count(uri) > 1})
    if repeated:
        raise ValueError(f"{JOB}: stateless groups listed twice would be applied twice: {repeated}")
    unfinished = [uri for uri in stateless_uris if not storage.exists(join(uri, "_stats.json"))]
    if unfinished:
        raise FileNotFoundError(f"{JOB}: stateless groups without _stats.json (not finished): {unfinished}")
    frames = [
        spark.read.schema(STATELESS_SCHEMA).parquet(join(uri, "artifacts")).withColumn("group", F.lit(uri))
        for uri in stateless_uris
    ]
    return reduce(DataFrame.unionByName, frames)


# -- base state ----------------------------------------------------------------------------------------


def latest_base_state(prefetched_df: DataFrame, inflight_df: DataFrame) -> DataFrame:
    """The highest version of each key among the prefetched and in-flight artifacts (parsed rows), with
    ``base_source`` saying which one it came from."""
    candidates = prefetched_df.withColumn("base_source", F.lit(PREFETCHED)).unionByName(
        inflight_df.withColumn("base_source", F.lit(INFLIGHT))
    )
    rank = F.when(F.col("base_source") == PREFETCHED, _SOURCE_RANK[PREFETCHED]).otherwise(
        _SOURCE_RANK[INFLIGHT]
    )
    columns = [*ARTIFACT_FIELDS, "base_source"]
    latest = candidates.groupBy("key").agg(
        F.max_by(F.struct(*columns), F.struct(F.col("version"), rank)).alias("latest")
    )
    return latest.select(*(F.col(f"latest.{name}").alias(name) for name in columns))


# -- business logic ------------------------------------------------------------------------------------
# Everything a key needs (its base and its stateless artifacts) is brought together by one shuffle; the
# rest is per-row array arithmetic, so the state is shuffled once whatever the number of groups.


def _empty_strings() -> Column:
    return F.array().cast("array<string>")


def classify_by_key(base_df: DataFrame, stateless_df: DataFrame) -> DataFrame:
    """One row per key of ``stateless_df``: ``base`` (its base artifact or null) and ``parts`` (its
    stateless artifacts, each with ``group`` and ``overlap``: NEW, APPLIED or PARTIAL against the base's
    batches). Keys of ``base_df`` without a stateless artifact are left out."""
    base_type = (
        base_df.select(F.struct(*ARTIFACT_FIELDS, "base_source").alias("base")).schema["base"].dataType
    )
    part_columns = [field.name for field in STATELESS_SCHEMA.fields if field.name != "key"] + ["group"]
    part_type = stateless_df.select(F.struct(*part_columns).alias("part")).schema["part"].dataType
    rows = stateless_df.select(
        "key", F.struct(*part_columns).alias("part"), F.lit(None).cast(base_type).alias("base")
    ).unionByName(
        base_df.select(
            "key",
            F.lit(None).cast(part_type).alias("part"),
            F.struct(*ARTIFACT_FIELDS, "base_source").alias("base"),
        )
    )
    gathered = (
        rows.groupBy("key")
        .agg(F.collect_list("part").alias("parts"), F.max_by("base", "base.version").alias("base"))
        .filter(F.size("parts") > 0)
    )
    base_batches = F.coalesce(F.col("base.batches"), _empty_strings())

    def with_overlap(part: Column) -> Column:
        known = F.size(F.array_intersect(part["batches"], base_batches))
        overlap = (
            F.when(known == 0, F.lit(NEW))
            .when(known == F.size(part["batches"]), F.lit(APPLIED))
            .otherwise(F.lit(PARTIAL))
        )
        return part.withField("overlap", overlap)

    return gathered.select("key", "base", F.transform("parts", with_overlap).alias("parts"))


def _parts(overlap: str) -> Column:
    return F.filter("parts", lambda part: part["overlap"] == overlap)


def _overlap_message(part: Column) -> Column:
    return F.concat(
        F.lit("partial overlap for key "),
        F.col("key"),
        F.lit(": stateless group "),
        part["group"],
        F.lit(" has batches ["),
        F.array_join(part["batches"], ", "),
        F.lit("] but version "),
        F.col("base.version").cast("string"),
        F.lit(" already holds ["),
        F.array_join("base.batches", ", "),
        F.lit("]"),
    )


def partial_overlaps(classified_df: DataFrame) -> DataFrame:
    """One ``message`` per stateless artifact (of a ``classify_by_key`` result) that shares only some of
    its batches with its base: corrupted input, since a batch belongs to exactly one group."""
    return classified_df.select("key", "base", F.explode(_parts(PARTIAL)).alias("part")).select(
        _overlap_message(F.col("part")).alias("message")
    )


def _checked(value: Column, message: Column) -> Column:
    """``value``, or a failed job when it is null (an overflowing sum)."""
    return F.when(value.isNull(), F.raise_error(message)).otherwise(value)


def _new_parts() -> Column:
    """The stateless artifacts to apply; computing them fails the job on corrupted input (every output
    column derives from them, so the check cannot be optimised away)."""
    new = _parts(NEW)
    all_batches = F.flatten(F.transform(new, lambda part: part["batches"]))
    partial = _parts(PARTIAL)
    return (
        F.when(F.size(partial) > 0, F.raise_error(_overlap_message(partial[0])))
        .when(
            F.size(all_batches) != F.size(F.array_distinct(all_batches)),
            F.raise_error(F.concat(F.lit("stateless groups share a batch for key "), F.col("key"))),
        )
        .otherwise(new)
    )


def _sum_parts(field: str) -> Column:
    return F.aggregate("new_parts", F.lit(0).cast("long"), lambda total, part: total + part[field])


def _adder(kind: str):
    """(acc, total) -> acc + total[kind], null when the sum overflows a long (instead of wrapping)."""
    return lambda acc, total: F.try_add(acc, total[kind])


def _merged_totals() -> Column:
    """The base's totals plus the new parts' totals, per currency (sorted), with the balance."""
    base_totals = F.transform(
        F.coalesce(F.col("base.totals"), F.array().cast(ARTIFACT_JSON_SCHEMA["totals"].dataType)),
        lambda t: F.struct(t["currency"].alias("currency"), *(t[kind].alias(kind) for kind in EVENT_TYPES)),
    )
    new_totals = F.flatten(F.transform("new_parts", lambda part: part["totals"]))
    totals = F.concat(base_totals, new_totals)
    currencies = F.array_sort(F.array_distinct(F.transform(totals, lambda t: t["currency"])))
    overflow = F.concat(F.lit("a total of key "), F.col("key"), F.lit(" overflows a 64-bit long"))

    def summed(currency: Column) -> Column:
        of_currency = F.filter(totals, lambda t: t["currency"] == currency)
        return F.struct(
            currency.alias("currency"),
            *(
                _checked(F.aggregate(of_currency, F.lit(0).cast("long"), _adder(kind)), overflow).alias(kind)
                for kind in EVENT_TYPES
            ),
        )

    def with_balance(t: Column) -> Column:
        balance = F.try_add(F.try_subtract(t["receivable"], t["remittance"]), t["correction"])
        return t.withField("balance", _checked(balance, overflow))

    return F.transform(F.transform(currencies, summed), with_balance)


def status_of(totals: Column) -> Column:
    """OVERPAID when any currency's balance is negative, RECONCILED when all are zero, else OPEN."""
    return (
        F.when(F.exists(totals, lambda t: t["balance"] < 0), F.lit(OVERPAID))
        .when(F.forall(totals, lambda t: t["balance"] == 0), F.lit(RECONCILED))
        .otherwise(F.lit(OPEN))
    )


def _union_sorted(base: str, field: str) -> Column:
    new = F.flatten(F.transform("new_parts", lambda part: part[field]))
    return F.array_sort(F.array_union(F.coalesce(F.col(base), _empty_strings()), new))


def new_versions(classified_df: DataFrame, seq: int) -> DataFrame:
    """The artifacts of a ``classify_by_key`` result after run ``seq``; see ``apply_stateless``."""
    with_new = classified_df.withColumn("new_parts", _new_parts())
    changed = F.size("new_parts") > 0
    outcome = (
        F.when(~changed, F.lit(ALREADY_APPLIED))
        .when(F.col("base").isNull(), F.lit(CREATED))
        .otherwise(F.lit(UPDATED))
    )
    first = F.array_min(F.transform("new_parts", lambda part: part["first_event_time"]))
    last = F.array_max(F.transform("new_parts", lambda part: part["last_event_time"]))
    return with_new.select(
        "key",
        (F.coalesce(F.col("base.version"), F.lit(0)) + F.when(changed, 1).otherwise(0))
        .cast("long")
        .alias("version"),
        _union_sorted("base.batches", "batches").alias("batches"),
        _union_sorted("base.entities", "entities").alias("entities"),
        (F.coalesce(F.col("base.event_count"), F.lit(0)) + _sum_parts("event_count")).alias("event_count"),
        F.least("base.first_event_time", first).alias("first_event_time"),
        F.greatest("base.last_event_time", last).alias("last_event_time"),
        _merged_totals().alias("totals"),
        F.lit(None).cast("string").alias("status"),
        F.when(changed, F.lit(seq)).otherwise(F.col("base.seq")).cast("long").alias("seq"),
        outcome.alias("outcome"),
        F.size("new_parts").alias("applied"),
        F.size(_parts(APPLIED)).alias("already_applied"),
        F.col("base.base_source").alias("base_source"),
    ).withColumn("status", status_of(F.col("totals")))


def apply_stateless(base_df: DataFrame, stateless_df: DataFrame, seq: int) -> DataFrame:
    """The artifacts of every key in ``stateless_df`` after applying it to ``base_df`` in run ``seq``.

    ``stateless_df`` has STATELESS rows plus ``group`` (the stateless artifacts of several groups of one
    run are summed); ``base_df`` has parsed artifacts plus ``base_source`` (``latest_base_state``).
    A stateless artifact whose batches the base already holds is skipped; when all of a key's are, the
    key keeps its base unchanged. The result has the artifact fields plus ``outcome`` (created, updated,
    or already_applied: not to be written), ``applied`` and ``already_applied`` (the key's stateless
    artifacts applied / skipped) and ``base_source``. A partial overlap fails the job when the result
    is computed.
    """
    return new_versions(classify_by_key(base_df, stateless_df), seq)


def to_artifact_json(df: DataFrame) -> DataFrame:
    """(key, value): each artifact as its ARTIFACT JSON line, keys in the contract's order, times as
    ISO-8601 UTC with milliseconds and ``Z`` (the session time zone must be UTC)."""
    ordered_total = F.transform(
        "totals",
        lambda t: F.struct(
            t["currency"].alias("currency"), *(t[name].cast("long").alias(name) for name in TOTAL_FIELDS[1:])
        ),
    )
    fields = []
    for name in ARTIFACT_FIELDS:
        if name in TIME_FIELDS:
            fields.append(F.date_format(name, ISO_MILLIS_FORMAT).alias(name))
        elif name == "totals":
            fields.append(ordered_total.alias(name))
        else:
            fields.append(F.col(name))
    return df.select("key", F.to_json(F.struct(*fields)).alias("value"))


# -- the job -------------------------------------------------------------------------------------------


def write_state(artifacts_df: DataFrame, state_uri: str, part_files: int) -> None:
    """At most ``part_files`` text files, each sorted by key: the indexer records byte offsets per line."""
    (
        to_artifact_json(artifacts_df)
        .repartition(part_files, "key")
        .sortWithinPartitions("key")
        .select("value")
        .write.mode("overwrite")
        .text(state_uri)
    )


def _process_stats(result: DataFrame) -> dict[str, Any]:
    """The counts of ``_process_stats.json``: one aggregation over the (cached) result."""
    written = F.col("outcome") != ALREADY_APPLIED
    row = result.agg(
        F.sum(F.col("applied") + F.col("already_applied")).alias("stateless_artifacts"),
        F.count(F.when(written, 1)).alias("artifacts_written"),
        F.count(F.when(F.col("outcome") == CREATED, 1)).alias(CREATED),
        F.count(F.when(F.col("outcome") == UPDATED, 1)).alias(UPDATED),
        F.sum("already_applied").alias(ALREADY_APPLIED),
        F.count(F.when(F.col("base_source") == INFLIGHT, 1)).alias("inflight_artifacts_used"),
        F.count(F.when(F.col("base_source") == PREFETCHED, 1)).alias("prefetched_artifacts_used"),
        *(F.count(F.when(written & (F.col("status") == status), 1)).alias(status) for status in STATUSES),
    ).first()
    counts = {name: int(row[name] or 0) for name in row.asDict() if name not in STATUSES}
    return {**counts, "statuses": {status: int(row[status]) for status in STATUSES}}


def run(spark: SparkSession, spec: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Run the stateful process step of ``spec``; its stats (also in ``<output_uri>_process_stats.json``)."""
    check_spec(spec, STATEFUL_SPEC_KEYS, JOB)
    output_uri, state_uri, seq = spec["output_uri"], spec["state_uri"], int(spec["seq"])
    stats_uri = join(output_uri, "_process_stats.json")
    committed = read_committed_stats(storage, join(state_uri, "_COMMITTED"), stats_uri, JOB)
    if committed is not None:
        return committed
    # Stats of an earlier attempt would vouch for part files this attempt is about to replace.
    storage.delete(stats_uri)
    spark.conf.set("spark.sql.session.timeZone", "UTC")

    cached: list[DataFrame] = []
    try:
        stateless = read_stateless(spark, storage, spec["stateless_uris"]).persist()
        cached.append(stateless)
        touched = stateless.select("key").distinct()
        prefetched = parse_artifact_lines(keys_of(read_prefetched(spark, storage, output_uri), touched))
        inflight_files = inflight_part_files(storage, spec["inflight_state_uris"])
        inflight = parse_artifact_lines(keys_of(read_inflight(spark, inflight_files), touched))
        base = latest_base_state(prefetched, inflight)

        classified = classify_by_key(base, stateless).persist()
        cached.append(classified)
        problems = [row["message"] for row in partial_overlaps(classified).limit(MAX_ERRORS_SHOWN).collect()]
        if problems:
            raise ValueError(
                f"{JOB} run {seq}: corrupted input (first {len(problems)}): " + "; ".join(problems)
            )

        result = new_versions(classified, seq).persist()
        cached.append(result)
        stats = _process_stats(result)
        write_state(
            result.filter(F.col("outcome") != ALREADY_APPLIED), state_uri, int(spec["state_part_files"])
        )
    finally:
        for frame in cached:
            frame.unpersist()

    storage.write_json(stats_uri, stats)
    print(
        f"{JOB}: run {seq}: {stats['stateless_artifacts']} stateless artifacts -> "
        f"{stats['artifacts_written']} artifacts written ({stats[CREATED]} created, {stats[UPDATED]} "
        f"updated), {stats[ALREADY_APPLIED]} already applied; base from {stats['prefetched_artifacts_used']} "
        f"prefetched and {stats['inflight_artifacts_used']} in-flight artifacts ({len(inflight_files)} "
        f"in-flight part files); statuses {stats['statuses']}; state in {state_uri}"
    )
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    return main_with_spec(JOB, run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
