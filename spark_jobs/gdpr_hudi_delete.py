"""GDPR erasure of subjects' rows in one Hudi table (the pattern of
``../shared/reference/03-hudi-gdpr-deletes.txt``: find the keys, delete them through Hudi's bloom index,
which opens only the files that may hold them). Written for Hudi 1.0.x (EMR 7.11+, and the pinned bundle
the local stack runs); the 0.x timeline layout is still read.

``spark_jobs/gdpr_hudi_delete.py --spec <uri of the spec JSON>``; the spec (see
``spark_jobs.common.gdpr_spec`` and ``dataplatform.gdpr.spark_erasure``) names the table location, its
key fields, the subject columns and ids, and where the result goes. The Hudi bundle, Kryo and the Hudi
session extension come from the Spark conf the job is submitted with. The steps:

1. table config: ``.hoodie/hoodie.properties`` must agree with the spec (table type, record key,
   partition and ordering fields): a mismatch fails before anything is read or written;
2. find: the latest snapshot's rows where any subject column holds a subject id -> the keys DataFrame
   (record key, partition field, precombine field) and the rows per subject;
3. delete: the keys written with ``operation=delete`` (``hudi_delete_options``), BLOOM index, no clean
   yet; merge-on-read tables compact inline after the delta commit, so new base files lack the rows.
   Nothing is written when no row matches (a rerun is a no-op);
4. purge: while any base file (read as plain Parquet) or log file (its bytes) on storage still holds a
   subject, an empty upsert commits with the cleaner on (KEEP_LATEST_COMMITS retaining 1, every
   partition looked at), so the clean removes every file slice but the latest. The delete does not clean
   itself: Hudi cleans before it compacts, and a job killed between the delete commit and the clean
   must leave a state the next run finishes from, which is the same step. ``GDPR_HUDI_FAULT=
   after_delete_commit`` stops the job there (tests of that recovery);
5. verify: every completed data commit, on the active timeline and archived (1.x LSM history under
   ``.hoodie/timeline/history``; 0.x ``.hoodie/<instant>.<action>``), read with ``as.of.instant``; the
   latest snapshot; every Parquet base file on storage read as plain Parquet; every log file's bytes
   searched for the ids (Avro blocks keep strings in clear; an integer id in an integer column is
   varint-coded there and is not matched); and the metadata table's live column-stats and record-index
   records (``metadata_table``). Hudi refuses to time-travel before the cleaner's earliest retained
   commit ("Cleaner cleaned up the timestamp of interest"): those commits are listed as ``cleaned``;
6. the result JSON at the spec's ``result_uri`` (``spark_jobs.common.gdpr_spec.build_result``).

Subject ids never reach a query plan: they are matched by joining with a small DataFrame of them
(``gdpr_spec.subject_values``), never compared with SQL literals, so the Spark UI, its event log and any
error quoting a plan show a scan of that DataFrame, not the ids. Every Spark job gets a description
naming the step (``describe``). The job prints counts and commit instants, and any exception is raised
again with the ids scrubbed from its message.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from spark_jobs.common import gdpr_spec
from spark_jobs.common.hudi_layout import (
    HOODIE_DIR,
    Commit,
    all_commits,
    completed_commits,
    delete_commit,
    files_of_commit,
    log_files,
)
from spark_jobs.common.storage import Storage, join

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyspark.sql import DataFrame

JOB = gdpr_spec.HUDI_JOB
LATEST = "latest"
BASE_FILES = "base_files"
LOG_FILES = "log_files"
# What Hudi says when asked to time-travel to a commit whose files the cleaner removed.
CLEANED_MESSAGE = "Cleaner cleaned up the timestamp of interest"
# The columns Hudi adds to every row (1.x: also _hoodie_operation); a write must not carry them.
META_COLUMNS = (
    "_hoodie_commit_time",
    "_hoodie_commit_seqno",
    "_hoodie_record_key",
    "_hoodie_partition_path",
    "_hoodie_file_name",
    "_hoodie_operation",
)
# The array of 1-based subject positions a row matches (empty when none), added while matching.
POSITIONS = "_gdpr_subject_positions"
# The recovery test's stop: the process ends as if killed right after the delete commit, before the clean.
FAULT_ENV = "GDPR_HUDI_FAULT"
AFTER_DELETE_COMMIT = "after_delete_commit"
FAULT_EXIT_CODE = 137

# Metadata-table partitions (``hoodie.table.metadata.partitions``) -> the write option that maintains each.
METADATA_INDEXES = {
    "column_stats": "hoodie.metadata.index.column.stats.enable",
    "bloom_filters": "hoodie.metadata.index.bloom.filter.enable",
    "record_index": "hoodie.metadata.record.index.enable",
}
# Cleaner and archival: retain one commit, so every older file slice (the ones holding the deleted rows)
# is cleaned. Hudi requires keep.min > commits.retained and keep.max > keep.min.
COMMITS_RETAINED = 1
KEEP_MIN_COMMITS = COMMITS_RETAINED + 1
KEEP_MAX_COMMITS = KEEP_MIN_COMMITS + 1


# -- table config --------------------------------------------------------------------------------------------


def parse_properties(text: str) -> dict[str, str]:
    """A Java properties file as Hudi writes ``hoodie.properties`` (``key=value``, ``#`` comments,
    ``\\:`` and ``\\=`` escaped)."""
    properties = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        properties[key.strip()] = re.sub(r"\\(.)", r"\1", value.strip())
    return properties


def read_table_config(storage: Storage, location: str) -> dict[str, str]:
    uri = join(location, HOODIE_DIR, "hoodie.properties")
    if not storage.exists(uri):
        raise ValueError(f"{location} is not a Hudi table: {uri} does not exist")
    return parse_properties(storage.read_bytes(uri).decode("utf-8"))


def _fields(value: str | None) -> list[str]:
    """``a,b`` -> ``[a, b]``; Hudi 1.x may suffix a partition field with its key type (``dt:SIMPLE``)."""
    return [part.split(":", 1)[0].strip() for part in (value or "").split(",") if part.strip()]


def check_table_config(table_config: Mapping[str, str], spec: Mapping[str, Any]) -> None:
    """The config says what the table is; Hudi would refuse a delete with other key fields anyway, but
    only after the subject rows were searched for."""
    expected = {
        "hoodie.table.type": (spec["table_type"], lambda v: v),
        "hoodie.table.recordkey.fields": ([spec["record_key"]], _fields),
        "hoodie.table.partition.fields": ([spec["partition_column"]], _fields),
        # 0.x name, then 1.x's.
        "hoodie.table.precombine.field": ([spec["precombine_field"]], _fields),
        "hoodie.table.ordering.fields": ([spec["precombine_field"]], _fields),
    }
    for key, (wanted, parse) in expected.items():
        if key in table_config and parse(table_config[key]) != wanted:
            raise ValueError(
                f"the Hudi table at {spec['location']} has {key}={table_config[key]!r}; the gdpr dataset "
                f"{spec['dataset']!r} says {wanted!r}: fix the dataset's config"
            )


# -- the writes ----------------------------------------------------------------------------------------------


def hudi_delete_options(
    spec: Mapping[str, Any], table_config: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The write options of the delete. ``table_config`` (``hoodie.properties``) supplies the table's own
    name and how it lays out partition paths, so the keys land in the partitions the rows are in. The
    delete does not clean (the purge does, see the module doc)."""
    table_config = table_config or {}
    options = {
        "hoodie.table.name": table_config.get("hoodie.table.name") or spec["table"],
        "hoodie.datasource.write.operation": "delete",
        "hoodie.datasource.write.table.type": spec["table_type"],
        "hoodie.datasource.write.recordkey.field": spec["record_key"],
        "hoodie.datasource.write.partitionpath.field": spec["partition_column"],
        "hoodie.datasource.write.precombine.field": spec["precombine_field"],
        # Explicit: newer Spark writers default to SIMPLE, which joins against every file of the
        # partitions instead of opening only the files whose bloom filter may hold the keys.
        "hoodie.index.type": "BLOOM",
        "hoodie.clean.automatic": "false",
        # The cleaner and archival settings both writes share: the purge's clean keeps one commit.
        "hoodie.clean.policy": "KEEP_LATEST_COMMITS",
        "hoodie.clean.commits.retained": str(COMMITS_RETAINED),
        # Their 0.x names (EMR 7.3-7.10 ship Hudi 0.15).
        "hoodie.cleaner.policy": "KEEP_LATEST_COMMITS",
        "hoodie.cleaner.commits.retained": str(COMMITS_RETAINED),
        "hoodie.keep.min.commits": str(KEEP_MIN_COMMITS),
        "hoodie.keep.max.commits": str(KEEP_MAX_COMMITS),
        # The metadata table records each file's column stats (min / max per column) and bloom filter;
        # the delete only appends tombstones for the replaced files' records to the metadata table's log.
        # Compacting it after this commit writes its base files again without them.
        "hoodie.metadata.compact.max.delta.commits": "1",
    }
    for key in (
        "hoodie.datasource.write.hive_style_partitioning",
        "hoodie.datasource.write.partitionpath.urlencode",
    ):
        if key in table_config:
            options[key] = table_config[key]
    if table_config.get("hoodie.table.keygenerator.class"):
        options["hoodie.datasource.write.keygenerator.class"] = table_config[
            "hoodie.table.keygenerator.class"
        ]
    # The metadata-table indexes the table keeps are kept up to date by this write too: the replaced
    # files' column stats, bloom filters and record-index entries are tombstoned, not left stale.
    partitions = set(_fields(table_config.get("hoodie.table.metadata.partitions")))
    options.update({key: "true" for partition, key in METADATA_INDEXES.items() if partition in partitions})
    if spec["table_type"] == "MERGE_ON_READ":
        # The delete goes to log files; the base files keep the rows until compaction rewrites them.
        options["hoodie.compact.inline"] = "true"
        options["hoodie.compact.inline.max.delta.commits"] = "1"
    return options


def purge_options(spec: Mapping[str, Any], table_config: Mapping[str, str] | None = None) -> dict[str, str]:
    """The options of the purge: an empty upsert (Hudi's own recipe for "clean older file slices") whose
    clean looks at every partition, not only those written since the last clean (a clean of an earlier
    run may have advanced past the delete's partitions without cleaning them)."""
    return {
        **hudi_delete_options(spec, table_config),
        "hoodie.datasource.write.operation": "upsert",
        "hoodie.clean.automatic": "true",
        "hoodie.cleaner.incremental.mode": "false",
    }


def table_path(location: str) -> str:
    return location.rstrip("/")


def read_table(spark: Any, location: str, as_of: str | None = None) -> DataFrame:
    """The latest snapshot, or the table as of a commit instant."""
    reader = spark.read.format("hudi")
    if as_of is not None:
        reader = reader.option("as.of.instant", as_of)
    return reader.load(table_path(location))


def write_delete(keys: DataFrame, options: Mapping[str, str], location: str) -> None:
    keys.write.format("hudi").options(**options).mode("append").save(table_path(location))


@contextmanager
def describe(spark: Any, step: str) -> Iterator[None]:
    """Spark jobs (and SQL executions) run inside are described as ``gdpr_hudi_delete: <step>`` in the
    Spark UI and its event log instead of the call site; the description holds no subject id."""
    context = getattr(spark, "sparkContext", None)
    if context is not None:
        context.setJobDescription(f"{JOB}: {step}")
    try:
        yield
    finally:
        if context is not None:
            context.setJobDescription(None)


def stop_if_asked(point: str) -> None:
    """End the process at ``point`` when ``$GDPR_HUDI_FAULT`` names it, as a kill would: no result, no
    cleanup (``os._exit``)."""
    if os.environ.get(FAULT_ENV) == point:
        print(f"{JOB}: stopped {point.replace('_', ' ')} (${FAULT_ENV})", flush=True)
        os._exit(FAULT_EXIT_CODE)


# -- the subjects, as data -----------------------------------------------------------------------------------


def key_columns(spec: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys([spec["record_key"], spec["partition_column"], spec["precombine_field"]]))


def column_types(df: DataFrame) -> dict[str, str]:
    return {field.name: field.dataType.simpleString() for field in df.schema.fields}


def with_subject_positions(df: DataFrame, spec: Mapping[str, Any]) -> DataFrame:
    """``df`` with ``POSITIONS``: the 1-based positions of the subjects each row names (in any subject
    column; each once). Per subject column, one left join with a broadcast DataFrame of the ids that can
    be values of its type: ids are distinct, so no row is repeated."""
    from pyspark.sql import functions as F

    values = gdpr_spec.subject_values(spec, column_types(df))
    found = []
    for index, (column, pairs) in enumerate(values.items()):
        if not pairs:
            continue
        value, position = f"_gdpr_value_{index}", f"_gdpr_position_{index}"
        ids = df.sparkSession.createDataFrame(pairs, f"{position} int, {value} {column_types(df)[column]}")
        df = df.join(F.broadcast(ids), df[column] == ids[value], "left").drop(value)
        found.append(position)
    if not found:
        return df.withColumn(POSITIONS, F.array().cast("array<int>"))
    positions = F.array_distinct(F.filter(F.array(*found), lambda p: p.isNotNull()))
    return df.withColumn(POSITIONS, positions).drop(*found)


def subject_rows(df: DataFrame, spec: Mapping[str, Any]) -> DataFrame:
    """The rows of ``df`` where any subject column holds a subject id, with ``POSITIONS``."""
    from pyspark.sql import functions as F

    return with_subject_positions(df, spec).where(F.size(POSITIONS) > 0)


def subject_keys(df: DataFrame, spec: Mapping[str, Any]) -> DataFrame:
    """The subjects' rows as only the columns Hudi's delete needs: record key, partition path field and
    precombine field."""
    return subject_rows(df, spec).select(*key_columns(spec))


def counts_by_subject(matched: DataFrame, spec: Mapping[str, Any]) -> list[int]:
    """Rows per subject index of ``subject_rows`` (a row naming two subjects counts for each)."""
    from pyspark.sql import functions as F

    rows = (
        matched.select(F.explode(POSITIONS).alias("position"))
        .groupBy("position")
        .agg(F.count("*").alias("n"))
        .collect()
    )
    return gdpr_spec.counts_by_position([row.asDict() for row in rows], len(spec["subject_ids"]))


def rows_by_subject(df: DataFrame, spec: Mapping[str, Any]) -> list[int]:
    return counts_by_subject(subject_rows(df, spec), spec)


def count_subject_rows(df: DataFrame, spec: Mapping[str, Any]) -> int:
    return subject_rows(df, spec).count()


# -- files on storage ----------------------------------------------------------------------------------------


def log_files_holding(storage: Storage, location: str, subject_ids: Sequence[str]) -> int:
    """Log files whose bytes hold a subject id in UTF-8 (Avro data blocks store strings in clear; a
    delete block holds the record keys)."""
    needles = [subject_id.encode("utf-8") for subject_id in subject_ids]
    return sum(
        1
        for uri in log_files(storage, location)
        if any(needle in storage.read_bytes(uri) for needle in needles)
    )


def read_base_files(spark: Any, location: str) -> DataFrame | None:
    """Every Parquet base file under the table, as plain Parquet: the file slices still on storage,
    whether or not a commit on the timeline still reads them. Spark skips ``.hoodie/`` (hidden). None
    when there is no base file."""
    try:
        return (
            spark.read.option("recursiveFileLookup", "true")
            .option("pathGlobFilter", "*.parquet")
            .parquet(table_path(location))
        )
    except Exception as exc:
        if "Unable to infer schema" in str(exc):
            return None
        raise


def base_file_rows(spark: Any, spec: Mapping[str, Any]) -> int:
    files = read_base_files(spark, spec["location"])
    return 0 if files is None else count_subject_rows(files, spec)


# -- the metadata table -------------------------------------------------------------------------------------

METADATA_TABLE = "metadata_table"
# Record types of the metadata table (HoodieMetadata.avsc): 3 column stats, 5 record index.
COLUMN_STATS, RECORD_INDEX = 3, 5


def metadata_table_path(location: str) -> str:
    return join(location, HOODIE_DIR, "metadata")


def id_texts(subject_ids: Sequence[str]) -> list[str]:
    """How a subject id reads as the text of a column-stats bound (cast to string): itself, and for a
    numeric id its integer form (``0042`` is the long 42)."""
    texts = list(subject_ids) + [str(int(s)) for s in subject_ids if gdpr_spec._INTEGER.match(s)]
    return list(dict.fromkeys(texts))


def _bound_text(bound: Any, bound_type: Any) -> Any:
    """A column-stats bound (a union of ``{value}`` wrappers, read as a struct of members) as text."""
    from pyspark.sql import functions as F

    members = [
        member.name
        for member in bound_type.fields
        if hasattr(member.dataType, "fieldNames") and "value" in member.dataType.fieldNames()
    ]
    return F.coalesce(*[bound.getField(m).getField("value").cast("string") for m in members])


def metadata_subject_records(records: DataFrame, spec: Mapping[str, Any]) -> int:
    """Live records of the metadata table (read as a Hudi table) that carry a subject id: column stats of
    a subject column whose min or max is one, record-index entries keyed by one. Matched by joins with a
    DataFrame of the ids, as the rows are."""
    from pyspark.sql import functions as F

    ids = records.sparkSession.createDataFrame(
        [(t,) for t in id_texts(spec["subject_ids"])], "_gdpr_id string"
    )
    stats_type = records.schema["ColumnStatsMetadata"].dataType
    stats = F.col("ColumnStatsMetadata")
    live = (F.col("type") == COLUMN_STATS) & stats.getField("columnName").isin(list(spec["subject_columns"]))
    if "isDeleted" in stats_type.fieldNames():
        live &= ~F.coalesce(stats.getField("isDeleted"), F.lit(False))
    bounds = records.where(live).select(
        _bound_text(stats.getField("minValue"), stats_type["minValue"].dataType).alias("low"),
        _bound_text(stats.getField("maxValue"), stats_type["maxValue"].dataType).alias("high"),
    )
    low, high = ids.withColumnRenamed("_gdpr_id", "_low"), ids.withColumnRenamed("_gdpr_id", "_high")
    column_stats = (
        bounds.join(F.broadcast(low), bounds["low"] == low["_low"], "left")
        .join(F.broadcast(high), bounds["high"] == high["_high"], "left")
        .where(F.col("_low").isNotNull() | F.col("_high").isNotNull())
        .count()
    )
    keys = records.where(F.col("type") == RECORD_INDEX).select("key")
    record_index = keys.join(F.broadcast(ids), keys["key"] == ids["_gdpr_id"], "left_semi").count()
    return column_stats + record_index


def metadata_table_records(spark: Any, storage: Storage, spec: Mapping[str, Any]) -> int | None:
    """``metadata_subject_records`` of the table's metadata table; None when it has none."""
    path = metadata_table_path(spec["location"])
    if not storage.exists(join(path, HOODIE_DIR, "hoodie.properties")):
        return None
    return metadata_subject_records(spark.read.format("hudi").load(path), spec)


# -- verification --------------------------------------------------------------------------------------------


def verify(spark: Any, storage: Storage, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Subject rows at every completed commit (active and archived), in the latest snapshot and in the
    base files on storage; log files holding a subject id; metadata-table records naming one."""
    location = spec["location"]
    rows_found: dict[str, int] = {}
    cleaned: list[str] = []
    for commit in all_commits(spark, storage, location):
        try:
            with describe(spark, f"verify commit {commit.instant}"):
                rows_found[commit.instant] = count_subject_rows(
                    read_table(spark, location, commit.as_of), spec
                )
        except Exception as exc:
            if CLEANED_MESSAGE not in str(exc):
                raise
            cleaned.append(commit.instant)
    with describe(spark, "verify the latest snapshot, base files, log files and metadata table"):
        rows_found[LATEST] = count_subject_rows(read_table(spark, location), spec)
        rows_found[BASE_FILES] = base_file_rows(spark, spec)
        rows_found[LOG_FILES] = log_files_holding(storage, location, spec["subject_ids"])
        in_metadata = metadata_table_records(spark, storage, spec)
    if in_metadata is not None:
        rows_found[METADATA_TABLE] = in_metadata
    return gdpr_spec.verification(rows_found, cleaned)


# -- the job -------------------------------------------------------------------------------------------------


def write_and_find_commit(
    storage: Storage, spec: Mapping[str, Any], rows: DataFrame, options: Mapping[str, str]
) -> Commit | None:
    """Write ``rows`` with ``options``; the commit that made."""
    location = spec["location"]
    before = completed_commits(storage, location)
    write_delete(rows, options, location)
    return delete_commit(storage, location, before, completed_commits(storage, location), spec["table_type"])


def old_slices_hold_subjects(spark: Any, storage: Storage, spec: Mapping[str, Any]) -> bool:
    """Whether any base file (as plain Parquet) or log file on storage still holds a subject: file slices
    the latest commit no longer reads, until a clean removes them."""
    if log_files_holding(storage, spec["location"], spec["subject_ids"]):
        return True
    return base_file_rows(spark, spec) > 0


def purge_old_slices(
    spark: Any, storage: Storage, spec: Mapping[str, Any], table_config: Mapping[str, str]
) -> Commit | None:
    """An empty write, for its clean, which keeps only what its own commit (the latest) reads."""
    empty = read_table(spark, spec["location"]).drop(*META_COLUMNS).limit(0)
    return write_and_find_commit(storage, spec, empty, purge_options(spec, table_config))


def erase(spark: Any, spec: dict[str, Any], storage: Storage) -> dict[str, Any]:
    started = gdpr_spec.utc_now()
    location = spec["location"]
    table_config = read_table_config(storage, location)
    check_table_config(table_config, spec)
    table = read_table(spark, location)
    needed = list(dict.fromkeys([*key_columns(spec), *spec["subject_columns"]]))
    # One scan of the table: the counts and the keys written come from the same rows.
    matched = subject_rows(table.select(*needed), spec).persist()
    try:
        with describe(spark, "find the subjects' rows"):
            by_subject = counts_by_subject(matched, spec)
            rows = matched.count()
        deleted = None
        if rows:
            with describe(spark, "delete the subjects' rows"):
                deleted = write_and_find_commit(
                    storage, spec, matched.select(*key_columns(spec)), hudi_delete_options(spec, table_config)
                )
        stop_if_asked(AFTER_DELETE_COMMIT)
    finally:
        matched.unpersist()
    files = files_of_commit(storage, location, deleted.instant) if deleted else None
    with describe(spark, "purge old file slices"):
        purged = (
            purge_old_slices(spark, storage, spec, table_config)
            if old_slices_hold_subjects(spark, storage, spec)
            else None
        )
    commit = deleted or purged
    return gdpr_spec.build_result(
        spec,
        status=gdpr_spec.status_of(rows, (), (), commit.instant if commit else None),
        rows_deleted=rows,
        rows_deleted_by_subject=by_subject,
        files_rewritten=files,
        commit=commit.instant if commit else None,
        verification=verify(spark, storage, spec),
        started_at=started,
    )


def run(spark: Any, spec: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Erase the spec's subjects from its table; the result, also written to the spec's ``result_uri``."""
    gdpr_spec.check_spec(spec)
    if spec["job"] != JOB:
        raise ValueError(f"{JOB} got a spec for {spec['job']}")
    gdpr_spec.quiet_driver_logs(spark)
    with gdpr_spec.ids_scrubbed(JOB, spec["subject_ids"]):
        result = erase(spark, spec, storage)
        storage.write_json(spec["result_uri"], result)
    print(f"{gdpr_spec.summary(result)}; result {spec['result_uri']}", flush=True)
    return result


def main(argv: Sequence[str] | None = None, spark: Any = None) -> int:
    return gdpr_spec.job_main(JOB, run, argv, spark)


if __name__ == "__main__":
    sys.exit(main())
