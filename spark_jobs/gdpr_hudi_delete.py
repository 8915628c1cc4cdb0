"""GDPR erasure of subjects' rows in one Hudi table, on a transient EMR cluster (the pattern of
``../shared/reference/03-hudi-gdpr-deletes.txt``: find the keys, delete them through Hudi's bloom index,
which opens only the files that may hold them).

``spark_jobs/gdpr_hudi_delete.py --spec <uri of the spec JSON>``; the spec (see
``spark_jobs.common.gdpr_spec`` and ``dataplatform.gdpr.spark_erasure``) names the table location, its
key fields, the subject columns and ids, and where the result goes. The Hudi bundle, Kryo and the Hudi
session extension come from the Spark conf the job is submitted with. The steps:

1. table config: ``.hoodie/hoodie.properties`` must agree with the spec (table type, record key,
   partition and ordering fields): a mismatch fails before anything is read or written;
2. find: the latest snapshot's rows where any subject column holds a subject id -> the keys DataFrame
   (record key, partition field, precombine field) and the rows per subject;
3. delete: the keys written with ``operation=delete`` (``hudi_delete_options``): BLOOM index, cleaner
   KEEP_LATEST_COMMITS retaining 1 commit, so the clean that follows the commit deletes the file slices
   only older commits read; merge-on-read tables compact inline after the delta commit, so the base
   files lose the rows too. Nothing is written when no row matches (a rerun is a no-op);
4. purge: Hudi cleans before it compacts, so after a merge-on-read delete (or after a run that died
   between its commit and its clean) Parquet base files that no longer serve the latest commit still hold
   subject rows. When the base files on storage still hold any, an empty upsert commits once more and
   its clean removes them;
5. verify: every completed commit still on the active timeline (Hudi 0.x ``.hoodie/<instant>.<action>``
   and 1.x ``.hoodie/timeline/<instant>_<completion>.<action>``) read with ``as.of.instant``, the latest
   snapshot, and every Parquet base file on storage read as plain Parquet: passed when none holds a
   subject row. Hudi refuses to time-travel to a commit before the cleaner's earliest retained commit
   ("Cleaner cleaned up the timestamp of interest"): those commits are listed as ``cleaned``. Log files
   of merge-on-read tables are not read raw (they are Hudi's own format): compaction folds the delete
   into new base files and the purge's clean removes the logs with the old slices. And, when the table
   has a metadata table (``.hoodie/metadata``), its live records read as a Hudi table
   (``metadata_table``): no column-stats record of a subject column with a subject id as min or max, no
   record-index entry keyed by one. The bloom-filter partition holds hashes of record keys, not ids in
   clear; its records for the replaced files are tombstoned like the column stats (the delete enables
   every index ``hoodie.table.metadata.partitions`` lists, so it maintains them). The delete asks for
   the metadata table to compact after its commit, so its base files are written again without the
   tombstoned records; the metadata table's cleaner (which follows the data table's policy, retaining a
   few more commits, and waits a few commits after a compaction) deletes the older metadata file slices
   later: until it has, they hold the old records on storage, compressed HFiles this job does not read;
6. the result JSON at the spec's ``result_uri`` (``spark_jobs.common.gdpr_spec.build_result``).

Subject ids never leave the SQL: the job prints counts and commit instants, and any exception is raised
again with the ids scrubbed from its message (a Spark error can quote the plan, literals included).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spark_jobs.common import gdpr_spec
from spark_jobs.common.storage import Storage, join

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

JOB = gdpr_spec.HUDI_JOB
HOODIE_DIR = ".hoodie"
LATEST = "latest"
BASE_FILES = "base_files"
# What Hudi (0.14+) says when asked to time-travel to a commit whose files the cleaner removed.
CLEANED_MESSAGE = "Cleaner cleaned up the timestamp of interest"
# The commit actions that change data; clean, rollback, savepoint ... do not.
DATA_ACTIONS = ("commit", "deltacommit", "replacecommit")
# The columns Hudi adds to every row (1.x: also _hoodie_operation); a write must not carry them.
META_COLUMNS = (
    "_hoodie_commit_time",
    "_hoodie_commit_seqno",
    "_hoodie_record_key",
    "_hoodie_partition_path",
    "_hoodie_file_name",
    "_hoodie_operation",
)
_INSTANT = r"(\d{14,17})"
_V0_COMPLETED = re.compile(rf"^{_INSTANT}\.({'|'.join(DATA_ACTIONS)})$")
_V1_COMPLETED = re.compile(rf"^{_INSTANT}_{_INSTANT}\.({'|'.join(DATA_ACTIONS)})$")

# Cleaner and archival: retain one commit, so every older file slice (the ones holding the deleted rows)
# is cleaned. Hudi requires keep.min > commits.retained and keep.max > keep.min.
# Metadata-table partitions (``hoodie.table.metadata.partitions``) -> the write option that maintains each.
METADATA_INDEXES = {
    "column_stats": "hoodie.metadata.index.column.stats.enable",
    "bloom_filters": "hoodie.metadata.index.bloom.filter.enable",
    "record_index": "hoodie.metadata.record.index.enable",
}
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


# -- the delete ----------------------------------------------------------------------------------------------


def hudi_delete_options(
    spec: Mapping[str, Any], table_config: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The write options of the delete. ``table_config`` (``hoodie.properties``) supplies the table's own
    name and how it lays out partition paths, so the keys land in the partitions the rows are in."""
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
        "hoodie.clean.automatic": "true",
        "hoodie.cleaner.policy": "KEEP_LATEST_COMMITS",
        "hoodie.cleaner.commits.retained": str(COMMITS_RETAINED),
        # Hudi 1.x names of the same settings.
        "hoodie.clean.policy": "KEEP_LATEST_COMMITS",
        "hoodie.clean.commits.retained": str(COMMITS_RETAINED),
        "hoodie.keep.min.commits": str(KEEP_MIN_COMMITS),
        "hoodie.keep.max.commits": str(KEEP_MAX_COMMITS),
        # The metadata table records each file's column stats (min / max per column) and bloom filter;
        # the delete only appends tombstones for the replaced files' records to the metadata table's log.
        # Compacting it after this commit writes its base files again without them (see the module doc
        # for what its cleaner still keeps).
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
    """The options of the purge: an empty upsert (Hudi's own recipe for "clean older file slices") with
    the delete's cleaner settings."""
    return {**hudi_delete_options(spec, table_config), "hoodie.datasource.write.operation": "upsert"}


def key_columns(spec: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys([spec["record_key"], spec["partition_column"], spec["precombine_field"]]))


def column_types(df: DataFrame) -> dict[str, str]:
    return {field.name: field.dataType.simpleString() for field in df.schema.fields}


def subject_condition(df: DataFrame, spec: Mapping[str, Any]) -> str:
    return gdpr_spec.subject_condition(gdpr_spec.subject_literals(spec, column_types(df)))


def subject_keys(df: DataFrame, spec: Mapping[str, Any]) -> DataFrame:
    """The rows of ``df`` where any subject column holds a subject id, as only the columns Hudi's delete
    needs: record key, partition path field and precombine field."""
    from pyspark.sql import functions as F

    return df.where(F.expr(subject_condition(df, spec))).select(*key_columns(spec))


def rows_by_subject(df: DataFrame, spec: Mapping[str, Any]) -> list[int]:
    """Rows of ``df`` per subject index (a row naming two subjects counts for each)."""
    from pyspark.sql import functions as F

    literals = gdpr_spec.subject_literals(spec, column_types(df))
    rows = (
        df.where(F.expr(gdpr_spec.subject_condition(literals)))
        .select(F.explode(F.expr(gdpr_spec.subject_positions(literals))).alias("position"))
        .groupBy("position")
        .agg(F.count("*").alias("n"))
        .collect()
    )
    return gdpr_spec.counts_by_position([row.asDict() for row in rows], len(spec["subject_ids"]))


def count_subject_rows(df: DataFrame, spec: Mapping[str, Any]) -> int:
    from pyspark.sql import functions as F

    return df.where(F.expr(subject_condition(df, spec))).count()


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


# -- the timeline --------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Commit:
    """A completed data commit on the active timeline. ``completed`` is the completion time (1.x only);
    ``name`` the file's path under ``.hoodie/``."""

    instant: str
    action: str
    completed: str | None
    name: str

    @property
    def as_of(self) -> str:
        """The time to travel to so that this commit is included: its completion time where the timeline
        records one (1.x), else its instant."""
        return self.completed or self.instant


def parse_timeline(hoodie_names: Iterable[str], timeline_names: Iterable[str] = ()) -> list[Commit]:
    """Completed commits from the names in ``.hoodie/`` (0.x: ``<instant>.<action>``) and in
    ``.hoodie/timeline/`` (1.x: ``<instant>_<completion>.<action>``); requested and inflight files,
    cleans, rollbacks and the archive are ignored."""
    commits = []
    for name in hoodie_names:
        match = _V0_COMPLETED.match(name)
        if match:
            commits.append(Commit(match.group(1), match.group(2), None, name))
    for name in timeline_names:
        match = _V1_COMPLETED.match(name)
        if match:
            commits.append(Commit(match.group(1), match.group(3), match.group(2), f"timeline/{name}"))
    return sorted(commits)


def completed_commits(storage: Storage, location: str) -> list[Commit]:
    hoodie = join(location, HOODIE_DIR)
    names = storage.list_children(hoodie)
    timeline = storage.list_children(join(hoodie, "timeline")) if "timeline" in names else []
    return parse_timeline(names, timeline)


def commit_metadata(storage: Storage, location: str, commit: Commit) -> dict[str, Any] | None:
    """The commit file's JSON (Hudi 0.x); None where it is not JSON (1.x writes Avro) or unreadable."""
    try:
        metadata = json.loads(storage.read_bytes(join(location, HOODIE_DIR, commit.name)))
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) else None


def files_written(metadata: Mapping[str, Any] | None) -> int | None:
    """File groups the commit wrote (``partitionToWriteStats``): for a delete, the files rewritten
    without the rows (copy-on-write) or given a delete block before compaction (merge-on-read)."""
    if not metadata or not isinstance(metadata.get("partitionToWriteStats"), dict):
        return None
    file_ids = {
        (partition, stat.get("fileId"))
        for partition, stats in metadata["partitionToWriteStats"].items()
        for stat in stats or []
        if isinstance(stat, dict)
    }
    return len(file_ids)


def delete_commit(
    storage: Storage, location: str, before: Iterable[Commit], after: Sequence[Commit], table_type: str
) -> Commit | None:
    """The commit the delete made: new since ``before``, of the table type's write action, preferring the
    one whose metadata says DELETE (another writer may have committed meanwhile; a merge-on-read table
    also gains the compaction's commit)."""
    seen = {commit.instant for commit in before}
    action = "deltacommit" if table_type == "MERGE_ON_READ" else "commit"
    new = [commit for commit in after if commit.instant not in seen and commit.action == action]
    for commit in new:
        metadata = commit_metadata(storage, location, commit)
        if metadata and metadata.get("operationType") == "DELETE":
            return commit
    return new[0] if new else None


# -- the metadata table -------------------------------------------------------------------------------------

METADATA_TABLE = "metadata_table"
# Record types of the metadata table (HoodieMetadata.avsc): 3 column stats, 5 record index.
COLUMN_STATS, RECORD_INDEX = 3, 5


def metadata_table_path(location: str) -> str:
    return join(location, HOODIE_DIR, "metadata")


def bound_needles(subject_ids: Sequence[str]) -> list[str]:
    """How a subject id reads in the JSON of a column-stats bound (a union of ``{"value": ...}``
    wrappers): as a string, and for a numeric id as an int or long."""
    needles = [f'"value":{json.dumps(subject_id)}' for subject_id in subject_ids]
    needles += [f'"value":{int(subject_id)}}}' for subject_id in subject_ids if subject_id.isdigit()]
    return needles


def metadata_subject_records(records: DataFrame, spec: Mapping[str, Any]) -> int:
    """Live records of the metadata table (read as a Hudi table) that carry a subject id: column stats of
    a subject column whose min or max is one, record-index entries keyed by one."""
    from functools import reduce

    from pyspark.sql import functions as F

    stats = F.col("ColumnStatsMetadata")
    bounds = [F.to_json(stats.getField(name)) for name in ("minValue", "maxValue")]
    holds = reduce(
        lambda a, b: a | b,
        [F.instr(bound, needle) > 0 for bound in bounds for needle in bound_needles(spec["subject_ids"])],
    )
    column_stats = (
        (F.col("type") == COLUMN_STATS) & stats.getField("columnName").isin(spec["subject_columns"]) & holds
    )
    if "isDeleted" in records.schema["ColumnStatsMetadata"].dataType.fieldNames():
        column_stats &= ~F.coalesce(stats.getField("isDeleted"), F.lit(False))
    record_index = (F.col("type") == RECORD_INDEX) & F.col("key").isin(list(spec["subject_ids"]))
    return records.where(column_stats | record_index).count()


def metadata_table_records(spark: Any, storage: Storage, spec: Mapping[str, Any]) -> int | None:
    """``metadata_subject_records`` of the table's metadata table; None when it has none."""
    path = metadata_table_path(spec["location"])
    if not storage.exists(join(path, HOODIE_DIR, "hoodie.properties")):
        return None
    return metadata_subject_records(spark.read.format("hudi").load(path), spec)


# -- verification --------------------------------------------------------------------------------------------


def verify(spark: Any, storage: Storage, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Subject rows at every completed commit on the active timeline, in the latest snapshot and in the
    base files on storage."""
    rows_found: dict[str, int] = {}
    cleaned: list[str] = []
    for commit in completed_commits(storage, spec["location"]):
        try:
            rows_found[commit.instant] = count_subject_rows(
                read_table(spark, spec["location"], commit.as_of), spec
            )
        except Exception as exc:
            if CLEANED_MESSAGE not in str(exc):
                raise
            cleaned.append(commit.instant)
    rows_found[LATEST] = count_subject_rows(read_table(spark, spec["location"]), spec)
    rows_found[BASE_FILES] = base_file_rows(spark, spec)
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


def purge_old_slices(
    spark: Any, storage: Storage, spec: Mapping[str, Any], table_config: Mapping[str, str]
) -> Commit | None:
    """An empty write, for its cleaner. Hudi cleans before it runs inline compaction, so the clean that
    follows a merge-on-read delete still keeps the base files the compaction then replaces; and a run
    that died between its delete and its clean left the old slices behind. This commit's clean keeps
    only what its own commit (the latest) reads."""
    empty = read_table(spark, spec["location"]).drop(*META_COLUMNS).limit(0)
    return write_and_find_commit(storage, spec, empty, purge_options(spec, table_config))


def erase(spark: Any, spec: dict[str, Any], storage: Storage) -> dict[str, Any]:
    from pyspark.sql import functions as F

    started = gdpr_spec.utc_now()
    table_config = read_table_config(storage, spec["location"])
    check_table_config(table_config, spec)
    table = read_table(spark, spec["location"])
    needed = list(dict.fromkeys([*key_columns(spec), *spec["subject_columns"]]))
    # One scan of the table: the counts and the keys written come from the same rows.
    matched = table.where(F.expr(subject_condition(table, spec))).select(*needed).persist()
    try:
        by_subject = rows_by_subject(matched, spec)
        keys = subject_keys(matched, spec)
        rows = keys.count()
        options = hudi_delete_options(spec, table_config)
        deleted = write_and_find_commit(storage, spec, keys, options) if rows else None
        purged = purge_old_slices(spark, storage, spec, table_config) if base_file_rows(spark, spec) else None
    finally:
        matched.unpersist()
    commit = deleted or purged
    files = files_written(commit_metadata(storage, spec["location"], deleted)) if deleted else None
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
