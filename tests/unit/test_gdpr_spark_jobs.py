"""The GDPR Spark jobs: spec, SQL and Hudi options, the keys DataFrame, the timeline parser, both jobs'
runs and their results, and that no subject id is ever printed.

The subject matching and the Hudi keys DataFrame run on local Spark over plain DataFrames; the whole Hudi
job runs with the real Hudi bundle in ``tests/integration/test_gdpr_hudi_job.py`` and
``test_gdpr_hudi_dag.py`` (spark-submit subprocesses: the shared session has no Hudi); the Iceberg job runs against ``FakeIcebergSpark``, a stand-in for
``spark.sql`` that answers from a small table model and applies DROP, DELETE and expire_snapshots to it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pyspark.sql import Row

from dataplatform import spark as spark_spec
from dataplatform.config import GdprDataset
from dataplatform.gdpr import spark_erasure
from spark_jobs import gdpr_hudi_delete as hudi_job
from spark_jobs import gdpr_iceberg_delete as iceberg_job
from spark_jobs.common import gdpr_spec, hudi_layout, iceberg_sql
from spark_jobs.common.storage import Storage

pytestmark = pytest.mark.unit

SUBJECTS = ["cust-000101", "cust-000202", "cust-000303"]
RUN_ID = "manual__2024-03-05T10:00:00+00:00"
WORK = "s3://ops/_gdpr/"
T = "`glue_catalog`.`lake`.`clickstream`"

APP_LOGS = GdprDataset.model_validate(
    {
        "format": "hudi",
        "database": "lake",
        "table": "app_logs",
        "location": "s3://raw/hudi/app_logs/",
        "subject_columns": ["user_id", "peer_id"],
        "partition_column": "log_date",
        "record_key": "log_id",
        "precombine_field": "event_ts",
        "hudi_table_type": "MERGE_ON_READ",
        "engine": "spark",
    }
)
CLICKSTREAM = GdprDataset.model_validate(
    {
        "format": "iceberg",
        "database": "lake",
        "table": "clickstream",
        "subject_columns": ["user_id", "referrer_id"],
        "partition_column": "event_date",
        "engine": "spark",
        "pinned_refs": "fail",
    }
)


def hudi_spec(dataset: GdprDataset = APP_LOGS, subjects=SUBJECTS, work=WORK) -> dict:
    return spark_erasure.build_spec("app_logs", dataset, list(subjects), RUN_ID, work, None, "us-east-1")


def iceberg_spec(pinned_refs: str = "fail", work=WORK, subjects=SUBJECTS) -> dict:
    dataset = CLICKSTREAM.model_copy(update={"pinned_refs": pinned_refs})
    return spark_erasure.build_spec("clickstream", dataset, list(subjects), RUN_ID, work, None, "us-east-1")


def assert_no_subject_id(*texts: str, subjects=SUBJECTS) -> None:
    for text in texts:
        for subject_id in subjects:
            assert subject_id not in text


# -- the spec -------------------------------------------------------------------------------------------------


def test_the_hudi_spec_carries_the_table_keys_and_a_result_uri_per_run():
    spec = hudi_spec()
    assert spec == {
        "version": 1,
        "job": "gdpr_hudi_delete",
        "dataset": "app_logs",
        "format": "hudi",
        "database": "lake",
        "table": "app_logs",
        "subject_columns": ["user_id", "peer_id"],
        "partition_column": "log_date",
        "subject_ids": SUBJECTS,
        "result_uri": "s3://ops/_gdpr/app_logs/manual__2024-03-05T10_00_00_00_00/result.json",
        "aws_endpoint_url": None,
        "region": "us-east-1",
        "catalog": None,
        "pinned_refs": None,
        "location": "s3://raw/hudi/app_logs/",
        "record_key": "log_id",
        "precombine_field": "event_ts",
        "table_type": "MERGE_ON_READ",
    }
    assert spark_erasure.spec_uri(WORK, "app_logs", RUN_ID) == (
        "s3://ops/_gdpr/app_logs/manual__2024-03-05T10_00_00_00_00/spec.json"
    )
    json.dumps(spec)


def test_the_iceberg_spec_names_the_catalog_and_the_pinned_refs_policy():
    spec = iceberg_spec("drop", work="file:///tmp/work")
    assert (spec["job"], spec["format"], spec["catalog"], spec["pinned_refs"]) == (
        "gdpr_iceberg_delete",
        "iceberg",
        "glue_catalog",
        "drop",
    )
    assert (spec["location"], spec["record_key"], spec["table_type"]) == (None, None, None)
    assert spec["result_uri"] == "file:///tmp/work/clickstream/manual__2024-03-05T10_00_00_00_00/result.json"


def test_a_pyiceberg_dataset_has_no_spark_job():
    dataset = CLICKSTREAM.model_copy(update={"engine": "pyiceberg"})
    with pytest.raises(ValueError, match="engine 'pyiceberg': only engine spark"):
        spark_erasure.build_spec("clickstream", dataset, SUBJECTS, RUN_ID, WORK, None, "us-east-1")
    with pytest.raises(ValueError, match="only engine spark"):
        spark_erasure.spark_job("clickstream", dataset, "s3://x/spec.json")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": 2}, "version 2, expected 1"),
        ({"job": "gdpr_delta_delete"}, "job must be one of"),
        ({"format": "iceberg"}, "format 'iceberg' does not fit job 'gdpr_hudi_delete'"),
        ({"database": "Lake"}, "database 'Lake' is not a lower-case identifier"),
        ({"table": "logs`; DROP TABLE x; --"}, "table .* is not a lower-case identifier"),
        ({"subject_columns": []}, "subject_columns must be a non-empty list"),
        ({"subject_columns": ["user id"]}, r"subject_columns\[0\] 'user id' is not"),
        ({"subject_columns": ["a", "a"]}, "must be distinct"),
        ({"record_key": None}, "record_key None is not"),
        ({"location": "/data/app_logs"}, "location must be an s3:// or file:// URI"),
        ({"result_uri": "https://x/result.json"}, "result_uri must be an s3:// or file:// URI"),
        ({"table_type": "MOR"}, "table_type must be one of"),
        ({"region": 1}, "region must be a string or null"),
    ],
)
def test_bad_hudi_specs_are_refused_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        gdpr_spec.check_spec({**hudi_spec(), **change})


def test_a_spec_missing_a_field_names_it():
    spec = hudi_spec()
    del spec["precombine_field"]
    with pytest.raises(ValueError, match=r"lacks \['precombine_field'\]"):
        gdpr_spec.check_spec(spec)
    with pytest.raises(ValueError, match="must be a JSON object"):
        gdpr_spec.check_spec([spec])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"catalog": "glue-catalog"}, "catalog 'glue-catalog' is not"),
        ({"pinned_refs": "keep"}, "pinned_refs must be one of"),
        ({"partition_column": "Event Date"}, "partition_column 'Event Date' is not"),
    ],
)
def test_bad_iceberg_specs_are_refused_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        gdpr_spec.check_spec({**iceberg_spec(), **change})


@pytest.mark.parametrize(
    "subject_ids, message",
    [
        ([], "subject_ids must be a non-empty list"),
        ("cust-000101", "subject_ids must be a non-empty list"),
        (["cust-000101", 7], r"subject_ids\[1\] is not a non-empty string"),
        (["cust-000101", ""], r"subject_ids\[1\] is not a non-empty string"),
        (["cust-000101", "cust-000202", "cust-000101"], r"subject_ids\[2\] repeats subject_ids\[0\]"),
        (
            ["cust-000101", "cust-000202\n"],
            r"subject_ids\[1\] is longer than 256 characters or holds control",
        ),
        (["cust-000101", "c" * 257], r"subject_ids\[1\] is longer than 256"),
    ],
)
def test_bad_subject_ids_are_named_by_position_never_echoed(subject_ids, message):
    with pytest.raises(ValueError, match=message) as raised:
        gdpr_spec.check_spec({**hudi_spec(), "subject_ids": subject_ids})
    assert_no_subject_id(str(raised.value), subjects=["cust-000101", "cust-000202", "c" * 257])
    with pytest.raises(ValueError, match=message):
        spark_erasure.build_spec("app_logs", APP_LOGS, subject_ids, RUN_ID, WORK, None, "us-east-1")


def test_run_ids_become_one_safe_path_segment():
    assert spark_erasure.sanitized_run_id("scheduled__2024-03-05T00:00:00+00:00") == (
        "scheduled__2024-03-05T00_00_00_00_00"
    )
    assert spark_erasure.sanitized_run_id("../../etc") == "etc"
    with pytest.raises(ValueError, match="no letters or digits"):
        spark_erasure.sanitized_run_id("/..")


# -- literals and predicates ----------------------------------------------------------------------------------


def test_literals_follow_the_column_type():
    assert gdpr_spec.literal_for("cust-000101", "string") == "'cust-000101'"
    assert gdpr_spec.literal_for("o'brien\\x", "varchar(64)") == "'o\\'brien\\\\x'"
    assert gdpr_spec.literal_for("0042", "bigint") == "42"
    assert gdpr_spec.literal_for("cust-000101", "bigint") is None
    assert gdpr_spec.literal_for("9223372036854775808", "bigint") is None  # past bigint: cannot match
    assert gdpr_spec.literal_for("2147483648", "int") is None
    assert gdpr_spec.literal_for("-7", "int") == "-7"
    with pytest.raises(ValueError, match="type double: subject ids are compared with string or integer"):
        gdpr_spec.literal_for("42", "double")


def test_the_subject_condition_and_positions_and_their_redacted_form():
    spec = {**iceberg_spec(subjects=["cust-1", "42"]), "subject_columns": ["user_id", "account_no"]}
    literals = gdpr_spec.subject_literals(spec, {"user_id": "string", "account_no": "bigint", "x": "int"})
    assert literals == {"user_id": ["'cust-1'", "'42'"], "account_no": [None, "42"]}
    assert gdpr_spec.subject_condition(literals) == "(`user_id` IN ('cust-1', '42') OR `account_no` IN (42))"
    assert gdpr_spec.subject_condition(literals, redact=True) == (
        "(`user_id` IN (<2 subject ids>) OR `account_no` IN (<1 subject ids>))"
    )
    assert gdpr_spec.subject_positions(literals) == (
        "array_distinct(filter(array(array_position(array('cust-1', '42'), `user_id`), "
        "array_position(array(NULL, 42), `account_no`)), p -> p > 0))"
    )
    assert "cust-1" not in gdpr_spec.subject_positions(literals, redact=True)
    # No id can be in an integer column: the column drops out; none anywhere: nothing matches.
    assert gdpr_spec.subject_condition({"account_no": [None]}) == "false"
    with pytest.raises(
        ValueError, match=re.escape("subject column 'user_id' is not a column of lake.clickstream")
    ):
        gdpr_spec.subject_literals(spec, {"account_no": "bigint"})
    with pytest.raises(ValueError, match="subject column 'account_no': type date"):
        gdpr_spec.subject_literals(spec, {"user_id": "string", "account_no": "date"})


def test_subject_values_are_typed_like_their_column_with_1_based_positions():
    spec = {**hudi_spec(subjects=["cust-1", "0042"]), "subject_columns": ["user_id", "account_no"]}
    values = gdpr_spec.subject_values(spec, {"user_id": "string", "account_no": "bigint"})
    assert values == {"user_id": [(1, "cust-1"), (2, "0042")], "account_no": [(2, 42)]}


# -- Hudi: options, table config, keys --------------------------------------------------------------------------

HUDI_COMMON = {
    "hoodie.table.name": "app_logs",
    "hoodie.datasource.write.operation": "delete",
    "hoodie.datasource.write.recordkey.field": "log_id",
    "hoodie.datasource.write.partitionpath.field": "log_date",
    "hoodie.datasource.write.precombine.field": "event_ts",
    "hoodie.index.type": "BLOOM",
    # The delete does not clean: the purge that follows does (and finishes a killed run's purge).
    "hoodie.clean.automatic": "false",
    "hoodie.cleaner.policy": "KEEP_LATEST_COMMITS",
    "hoodie.cleaner.commits.retained": "1",
    "hoodie.clean.policy": "KEEP_LATEST_COMMITS",
    "hoodie.clean.commits.retained": "1",
    "hoodie.keep.min.commits": "2",
    "hoodie.keep.max.commits": "3",
    "hoodie.metadata.compact.max.delta.commits": "1",
}


def test_hudi_delete_options_for_merge_on_read_compact_after_every_delta_commit():
    assert hudi_job.hudi_delete_options(hudi_spec()) == {
        **HUDI_COMMON,
        "hoodie.datasource.write.table.type": "MERGE_ON_READ",
        "hoodie.compact.inline": "true",
        "hoodie.compact.inline.max.delta.commits": "1",
    }


def test_hudi_delete_options_for_copy_on_write_and_from_the_table_config():
    spec = hudi_spec(APP_LOGS.model_copy(update={"hudi_table_type": "COPY_ON_WRITE"}))
    table_config = {
        "hoodie.table.name": "app_logs_v2",
        "hoodie.datasource.write.hive_style_partitioning": "true",
        "hoodie.datasource.write.partitionpath.urlencode": "false",
        "hoodie.table.keygenerator.class": "org.apache.hudi.keygen.SimpleKeyGenerator",
    }
    assert hudi_job.hudi_delete_options(spec, table_config) == {
        **HUDI_COMMON,
        "hoodie.table.name": "app_logs_v2",
        "hoodie.datasource.write.table.type": "COPY_ON_WRITE",
        "hoodie.datasource.write.hive_style_partitioning": "true",
        "hoodie.datasource.write.partitionpath.urlencode": "false",
        "hoodie.datasource.write.keygenerator.class": "org.apache.hudi.keygen.SimpleKeyGenerator",
    }
    # The metadata-table indexes the table has are maintained by the delete (tombstones for the replaced
    # files' column stats, bloom filters and record-index entries), the others left as they are.
    indexed = {**table_config, "hoodie.table.metadata.partitions": "files,column_stats,bloom_filters"}
    assert hudi_job.hudi_delete_options(spec, indexed) == {
        **hudi_job.hudi_delete_options(spec, table_config),
        "hoodie.metadata.index.column.stats.enable": "true",
        "hoodie.metadata.index.bloom.filter.enable": "true",
    }
    # What Hudi validates: keep.max > keep.min > commits retained.
    options = hudi_job.hudi_delete_options(spec)
    retained = int(options["hoodie.cleaner.commits.retained"])
    assert int(options["hoodie.keep.max.commits"]) > int(options["hoodie.keep.min.commits"]) > retained


@pytest.mark.spark
def test_the_metadata_table_records_naming_a_subject_are_counted(spark):
    """The predicate the Hudi job's verification runs on the metadata table, over a DataFrame with the
    metadata table's columns (HoodieMetadata.avsc: bounds are unions of ``{value}`` wrappers; the Hudi
    bundle that would read the real one is not installable here)."""
    wrapper = "struct<member0: struct<value: bigint>, member1: struct<value: string>>"
    schema = (
        f"key string, type int, ColumnStatsMetadata struct<fileName: string, columnName: string, "
        f"minValue: {wrapper}, maxValue: {wrapper}, isDeleted: boolean>"
    )

    def stats(column, low, high, deleted=False):
        def bound(value):
            return (None, (value,)) if isinstance(value, str) else ((value,), None)

        return ("k", 3, ("f1.parquet", column, bound(low), bound(high), deleted))

    records = spark.createDataFrame(
        [
            stats("user_id", SUBJECTS[0], "cust-000500"),  # a subject is the min: counted
            stats("peer_id", "cust-000001", SUBJECTS[1]),  # the max of another subject column: counted
            stats("user_id", SUBJECTS[2], "cust-000900", deleted=True),  # a tombstone: not counted
            stats("message", SUBJECTS[0], "zzz"),  # not a subject column: not counted
            stats("user_id", "cust-000100", "cust-000102"),  # around a subject, not one: not counted
            stats("peer_id", 4242, 4250),  # a numeric id as a long bound: counted below
            (SUBJECTS[1], 5, None),  # record index keyed by a subject: counted
            ("f1.parquet", 4, None),  # bloom filter: hashes, not counted
        ],
        schema,
    )
    spec = hudi_spec()
    assert hudi_job.metadata_subject_records(records, spec) == 3
    assert hudi_job.metadata_subject_records(records, {**spec, "subject_ids": [*SUBJECTS, "4242"]}) == 4
    assert hudi_job.id_texts(["cust-1", "0042", "7"]) == ["cust-1", "0042", "7", "42"]


PROPERTIES = """#Properties saved on 2024-03-05T10:00:00.000Z
#Tue Mar 05 10:00:00 UTC 2024
hoodie.table.name=app_logs
hoodie.table.type=MERGE_ON_READ
hoodie.table.recordkey.fields=log_id
hoodie.table.partition.fields=log_date
hoodie.table.precombine.field=event_ts
hoodie.datasource.write.hive_style_partitioning=true
hoodie.table.create.schema={"type"\\:"record","name"\\:"app_logs_record"}
"""


def test_the_purge_is_an_empty_upsert_that_cleans_every_partition():
    options = hudi_job.purge_options(hudi_spec())
    assert options == {
        **hudi_job.hudi_delete_options(hudi_spec()),
        "hoodie.datasource.write.operation": "upsert",
        "hoodie.clean.automatic": "true",
        "hoodie.cleaner.incremental.mode": "false",
    }


def test_the_table_config_is_read_and_must_agree_with_the_dataset():
    config = hudi_job.parse_properties(PROPERTIES)
    assert config["hoodie.table.create.schema"] == '{"type":"record","name":"app_logs_record"}'
    hudi_job.check_table_config(config, hudi_spec())
    hudi_job.check_table_config({**config, "hoodie.table.partition.fields": "log_date:SIMPLE"}, hudi_spec())
    cow = hudi_spec(APP_LOGS.model_copy(update={"hudi_table_type": "COPY_ON_WRITE"}))
    with pytest.raises(
        ValueError, match=re.escape("has hoodie.table.type='MERGE_ON_READ'; the gdpr dataset 'app_logs'")
    ):
        hudi_job.check_table_config(config, cow)
    with pytest.raises(ValueError, match=re.escape("hoodie.table.recordkey.fields='log_id,seq'")):
        hudi_job.check_table_config({**config, "hoodie.table.recordkey.fields": "log_id,seq"}, hudi_spec())


def test_no_hoodie_properties_is_not_a_hudi_table(tmp_path):
    with pytest.raises(ValueError, match="is not a Hudi table"):
        hudi_job.read_table_config(Storage(), tmp_path.as_uri())


LOG_ROWS = [
    # log_id, log_date, event_ts, user_id, peer_id, message
    ("l1", "2024-03-01", 1, "cust-000101", None, "a"),
    ("l2", "2024-03-01", 2, "cust-000999", "cust-000202", "b"),
    ("l3", "2024-03-02", 3, "cust-000101", "cust-000101", "c"),
    ("l4", "2024-03-02", 4, "cust-000999", None, "d"),
    ("l5", "2024-03-03", 5, "cust-000202", "cust-000101", "e"),
    ("l6", "2024-03-03", 6, None, None, "f"),
]
LOG_SCHEMA = "log_id string, log_date string, event_ts bigint, user_id string, peer_id string, message string"


@pytest.mark.spark
def test_subject_keys_are_the_matching_rows_with_only_the_key_columns(spark):
    df = spark.createDataFrame(LOG_ROWS, LOG_SCHEMA)
    keys = hudi_job.subject_keys(df, hudi_spec())
    assert keys.columns == ["log_id", "log_date", "event_ts"]
    assert sorted(tuple(row) for row in keys.collect()) == [
        ("l1", "2024-03-01", 1),
        ("l2", "2024-03-01", 2),
        ("l3", "2024-03-02", 3),
        ("l5", "2024-03-03", 5),
    ]
    # l3 names cust-000101 twice (once for it); l5 names two subjects (once for each).
    assert hudi_job.rows_by_subject(df, hudi_spec()) == [3, 2, 0]
    assert hudi_job.count_subject_rows(df, hudi_spec()) == 4
    assert hudi_job.subject_keys(df, hudi_spec(subjects=["cust-000404"])).count() == 0


@pytest.mark.spark
def test_subject_keys_match_integer_columns_and_quoted_ids(spark):
    df = spark.createDataFrame(
        [("k1", "d", 1, 42, "x"), ("k2", "d", 2, 7, "o'brien\\x"), ("k3", "d", 3, 8, "y")],
        "log_id string, log_date string, event_ts bigint, user_id bigint, peer_id string",
    )
    spec = hudi_spec(subjects=["0042", "o'brien\\x", "cust-000101"])
    assert sorted(row.log_id for row in hudi_job.subject_keys(df, spec).collect()) == ["k1", "k2"]
    assert hudi_job.rows_by_subject(df, spec) == [1, 1, 0]


def write_names(folder: Path, names: list[str], content: bytes = b"{}") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(content)


def test_completed_commits_of_a_hudi_0x_timeline(tmp_path):
    hoodie = tmp_path / ".hoodie"
    write_names(
        hoodie,
        [
            "hoodie.properties",
            "20240301000000000.commit.requested",
            "20240301000000000.inflight",
            "20240301000000000.commit",
            "20240302000000000.deltacommit.requested",
            "20240302000000000.deltacommit.inflight",
            "20240302000000000.deltacommit",
            "20240303000000000.compaction.requested",
            "20240303000000000.commit",
            "20240304000000000.clean",
            "20240304000000000.clean.requested",
            "20240305000000000.replacecommit",
            "20240306000000000.rollback",
            "20240307000000000.deltacommit.inflight",  # still being written
            "20240101000000.commit",  # 14-digit instants of old tables
        ],
    )
    write_names(hoodie / "metadata" / ".hoodie", ["20240308000000000.deltacommit"])
    commits = hudi_layout.completed_commits(Storage(), tmp_path.as_uri() + "/")
    assert [(c.instant, c.action, c.completed, c.name, c.as_of) for c in commits] == [
        ("20240101000000", "commit", None, "20240101000000.commit", "20240101000000"),
        ("20240301000000000", "commit", None, "20240301000000000.commit", "20240301000000000"),
        ("20240302000000000", "deltacommit", None, "20240302000000000.deltacommit", "20240302000000000"),
        ("20240303000000000", "commit", None, "20240303000000000.commit", "20240303000000000"),
        ("20240305000000000", "replacecommit", None, "20240305000000000.replacecommit", "20240305000000000"),
    ]


def test_completed_commits_of_a_hudi_1x_timeline(tmp_path):
    timeline = tmp_path / ".hoodie" / "timeline"
    write_names(
        timeline,
        [
            "20240301000000000.commit.requested",
            "20240301000000000.inflight",
            "20240301000000000_20240301000005123.commit",
            "20240302000000000.deltacommit.requested",
            "20240302000000000_20240302000009000.deltacommit",
            "20240303000000000_20240303000001000.clean",
            "20240304000000000_20240304000002000.replacecommit",
            "20240305000000000.deltacommit.inflight",
        ],
    )
    write_names(timeline / "history", ["20240101000000000_20240101000001000.commit"])
    write_names(tmp_path / ".hoodie", ["hoodie.properties"])
    commits = hudi_layout.completed_commits(Storage(), tmp_path.as_uri())
    assert [(c.instant, c.action, c.as_of, c.name) for c in commits] == [
        (
            "20240301000000000",
            "commit",
            "20240301000005123",
            "timeline/20240301000000000_20240301000005123.commit",
        ),
        (
            "20240302000000000",
            "deltacommit",
            "20240302000009000",
            "timeline/20240302000000000_20240302000009000.deltacommit",
        ),
        (
            "20240304000000000",
            "replacecommit",
            "20240304000002000",
            "timeline/20240304000000000_20240304000002000.replacecommit",
        ),
    ]


def test_the_delete_commit_is_the_new_one_whose_metadata_says_delete(tmp_path):
    stats = {
        "2024-03-01": [{"fileId": "f1", "numDeletes": 2}, {"fileId": "f1", "numDeletes": 0}],
        "2024-03-03": [{"fileId": "f9", "numDeletes": 1}],
    }
    hoodie = tmp_path / ".hoodie"
    write_names(hoodie, ["20240301000000000.deltacommit"], json.dumps({"operationType": "UPSERT"}).encode())
    write_names(
        hoodie,
        ["20240302000000000.deltacommit"],
        json.dumps({"operationType": "DELETE", "partitionToWriteStats": stats}).encode(),
    )
    write_names(hoodie, ["20240302000001000.commit"], b"\x00avro-bytes")  # the compaction
    location, storage = tmp_path.as_uri(), Storage()
    after = hudi_layout.completed_commits(storage, location)
    before = [commit for commit in after if commit.instant == "20240301000000000"]
    # Another writer's delta commit landed first: the one whose metadata says DELETE is ours.
    write_names(hoodie, ["20240301500000000.deltacommit"], json.dumps({"operationType": "UPSERT"}).encode())
    after = hudi_layout.completed_commits(storage, location)
    made = hudi_layout.delete_commit(storage, location, before, after, "MERGE_ON_READ")
    assert made.instant == "20240302000000000"
    compaction = next(commit for commit in after if commit.action == "commit")
    assert hudi_layout.commit_metadata(storage, location, compaction) is None  # not JSON (1.x: Avro)
    assert hudi_layout.delete_commit(storage, location, after, after, "MERGE_ON_READ") is None


def test_data_files_are_named_for_the_commit_that_wrote_them(tmp_path):
    """Base files ``<file id>_<write token>_<instant>.parquet``, log files
    ``.<file id>_<instant>.log.<n>_<token>`` (Hudi 1.x names a log file for its delta commit)."""
    write_names(
        tmp_path / "log_date=2024-03-01",
        [
            "f1-0_0-75-158_20240305100002000.parquet",
            "f1-0_0-40-90_20240305100001000.parquet",
            ".f2-0_20240305100002000.log.1_0-80-170",
            ".f2-0_20240305100002000.log.2_0-80-171",
            ".hoodie_partition_metadata",
        ],
    )
    write_names(tmp_path / "log_date=2024-03-02", ["f3-0_1-75-159_20240305100002000.parquet"])
    write_names(tmp_path / ".hoodie" / "metadata", ["f9-0_0-1-1_20240305100002000.parquet"])
    location, storage = tmp_path.as_uri() + "/", Storage()
    assert hudi_layout.files_of_commit(storage, location, "20240305100002000") == 3
    assert hudi_layout.files_of_commit(storage, location, "20240305100001000") == 1
    assert [p.rsplit("/", 1)[-1] for p in hudi_layout.log_files(storage, location)] == [
        ".f2-0_20240305100002000.log.1_0-80-170",
        ".f2-0_20240305100002000.log.2_0-80-171",
    ]


def test_log_files_holding_a_subject_id_are_found_by_their_bytes(tmp_path):
    folder = tmp_path / "log_date=2024-03-01"
    write_names(folder, [".f1-0_20240305100002000.log.1_0-1-1"], b"#HUDI#\x00\x16cust-000202\x02")
    write_names(folder, [".f2-0_20240305100002000.log.1_0-1-2"], b"#HUDI#\x00\x16cust-000999\x02")
    location = tmp_path.as_uri()
    assert hudi_job.log_files_holding(Storage(), location, SUBJECTS) == 1
    assert hudi_job.log_files_holding(Storage(), location, ["cust-000404"]) == 0


@pytest.mark.spark
def test_archived_commits_come_from_the_latest_manifest_of_the_1x_history(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    history = tmp_path / ".hoodie" / "timeline" / "history"
    history.mkdir(parents=True)
    layers = {
        "old.parquet": [("20240301000000000", "20240301000001000", "commit")],
        "l1.parquet": [
            ("20240301000000000", "20240301000001000", "commit"),
            ("20240302000000000", "20240302000001000", "deltacommit"),
            ("20240302500000000", "20240302500001000", "clean"),
        ],
        "l2.parquet": [("20240303000000000", "20240303000002000", "replacecommit")],
    }
    for name, rows in layers.items():
        columns = list(zip(*rows, strict=True))
        table = pa.table(
            {
                "instantTime": columns[0],
                "completionTime": columns[1],
                "action": columns[2],
                "metadata": [b""] * len(rows),
            }
        )
        pq.write_table(table, history / name)
    (history / "_version_").write_text("2")
    (history / "manifest_1").write_text(json.dumps({"files": [{"fileName": "old.parquet", "fileLen": 1}]}))
    (history / "manifest_2").write_text(
        json.dumps(
            {"files": [{"fileName": "l1.parquet", "fileLen": 1}, {"fileName": "l2.parquet", "fileLen": 1}]}
        )
    )
    write_names(tmp_path / ".hoodie" / "timeline", ["20240304000000000_20240304000001000.commit"])
    commits = hudi_layout.all_commits(spark, Storage(), tmp_path.as_uri())
    assert [(c.instant, c.action, c.as_of) for c in commits] == [
        ("20240301000000000", "commit", "20240301000001000"),
        ("20240302000000000", "deltacommit", "20240302000001000"),
        ("20240303000000000", "replacecommit", "20240303000002000"),
        ("20240304000000000", "commit", "20240304000001000"),
    ]
    assert hudi_layout.archived_commits(spark, Storage(), (tmp_path / "none").as_uri()) == []


def test_the_hudi_job_refuses_a_table_that_is_not_the_configured_one(tmp_path, capsys):
    write_names(tmp_path / ".hoodie", ["hoodie.properties"], PROPERTIES.replace("log_id", "uuid").encode())
    spec = {**hudi_spec(work=tmp_path.as_uri()), "location": tmp_path.as_uri()}
    with pytest.raises(RuntimeError, match=re.escape("hoodie.table.recordkey.fields='uuid'")):
        hudi_job.run(object(), spec, Storage())
    assert not Path(spec["result_uri"].removeprefix("file://")).exists()


# -- Iceberg: statements -----------------------------------------------------------------------------------------

LITERALS = {"user_id": ["'cust-000101'", "'cust-000202'"], "referrer_id": ["'cust-000101'", "'cust-000202'"]}
CONDITION = "(`user_id` IN ('cust-000101', 'cust-000202') OR `referrer_id` IN ('cust-000101', 'cust-000202'))"
SHOWN_CONDITION = "(`user_id` IN (<2 subject ids>) OR `referrer_id` IN (<2 subject ids>))"


def test_iceberg_statements():
    spec = iceberg_spec()
    assert iceberg_job.count_sql(spec, LITERALS, 81) == (
        f"SELECT count(*) AS n FROM {T} VERSION AS OF 81 WHERE {CONDITION}",
        f"SELECT count(*) AS n FROM {T} VERSION AS OF 81 WHERE {SHOWN_CONDITION}",
    )
    assert iceberg_job.count_sql(spec, LITERALS).sql == f"SELECT count(*) AS n FROM {T} WHERE {CONDITION}"
    assert iceberg_job.delete_sql(spec, LITERALS) == (
        f"DELETE FROM {T} WHERE {CONDITION}",
        f"DELETE FROM {T} WHERE {SHOWN_CONDITION}",
    )
    assert iceberg_job.rows_by_subject_sql(spec, LITERALS, 81).shown == (
        "SELECT position, count(*) AS n FROM (SELECT explode(array_distinct(filter(array("
        "array_position(array(<2 subject ids>), `user_id`), array_position(array(<2 subject ids>), "
        f"`referrer_id`)), p -> p > 0))) AS position FROM {T} VERSION AS OF 81 WHERE {SHOWN_CONDITION}) "
        "GROUP BY position"
    )
    assert iceberg_job.snapshots_sql(spec).sql == (
        f"SELECT snapshot_id FROM {T}.`snapshots` ORDER BY committed_at, snapshot_id"
    )
    assert iceberg_job.refs_sql(spec).sql == f"SELECT name, type, snapshot_id FROM {T}.`refs`"
    assert iceberg_job.drop_ref_sql(spec, "audit-2024", "TAG").sql == (
        f"ALTER TABLE {T} DROP TAG IF EXISTS `audit-2024`"
    )
    assert iceberg_job.drop_ref_sql(spec, "odd`name", "BRANCH").sql == (
        f"ALTER TABLE {T} DROP BRANCH IF EXISTS `odd``name`"
    )
    assert iceberg_job.expire_snapshots_sql(spec, [81, 82]).sql == (
        "CALL `glue_catalog`.system.expire_snapshots(table => '`lake`.`clickstream`', "
        "older_than => TIMESTAMP '1970-01-01 00:00:00.000000', snapshot_ids => array(81, 82), "
        "stream_results => true)"
    )
    assert iceberg_job.rewrite_manifests_sql(spec).sql == (
        "CALL `glue_catalog`.system.rewrite_manifests(table => '`lake`.`clickstream`', use_caching => false)"
    )
    bounds = (
        "(readable_metrics.`user_id`.lower_bound IN ({ids}) OR readable_metrics.`user_id`.upper_bound IN "
        "({ids}) OR readable_metrics.`referrer_id`.lower_bound IN ({ids}) OR "
        "readable_metrics.`referrer_id`.upper_bound IN ({ids}))"
    )
    assert iceberg_job.manifest_entries_sql(spec, LITERALS) == (
        f"SELECT count(*) AS n FROM {T}.`all_entries` WHERE "
        + bounds.format(ids="'cust-000101', 'cust-000202'"),
        f"SELECT count(*) AS n FROM {T}.`all_entries` WHERE " + bounds.format(ids="<2 subject ids>"),
    )
    assert iceberg_job.manifest_entries_sql(spec, LITERALS, every_snapshot=False).sql.startswith(
        f"SELECT count(*) AS n FROM {T}.`entries` WHERE (readable_metrics.`user_id`.lower_bound IN"
    )
    assert iceberg_job.deleted_files_sql(spec, 83).sql == (
        f"SELECT summary['deleted-data-files'] AS deleted_data_files FROM {T}.`snapshots` WHERE snapshot_id = 83"
    )


def test_iceberg_statements_refuse_bad_input():
    spec = iceberg_spec()
    with pytest.raises(ValueError, match="is not a lower-case identifier"):
        iceberg_job.delete_sql({**spec, "table": "clicks`; DROP TABLE x"}, LITERALS)
    with pytest.raises(ValueError, match="snapshot id must be an integer"):
        iceberg_job.count_sql(spec, LITERALS, "81 OR 1=1")
    with pytest.raises(ValueError, match="snapshot id must be an integer"):
        iceberg_job.expire_snapshots_sql(spec, [81, "82)"])
    with pytest.raises(ValueError, match="needs at least one snapshot id"):
        iceberg_job.expire_snapshots_sql(spec, [])
    with pytest.raises(ValueError, match="expected TAG or BRANCH"):
        iceberg_job.drop_ref_sql(spec, "x", "VIEW")
    with pytest.raises(ValueError, match="cannot be quoted"):
        iceberg_job.drop_ref_sql(spec, "x\ny", "TAG")


@pytest.mark.spark
def test_the_iceberg_count_and_per_subject_sql_run_on_spark(spark):
    """The statements' SQL, with a temporary view in place of the Iceberg table and its versions."""
    rows = [
        ("e1", "cust-000101", None),
        ("e2", "cust-000999", "cust-000202"),
        ("e3", "cust-000101", "cust-000101"),
        ("e4", "o'brien\\x", "cust-000101"),
        ("e5", None, None),
    ]
    spark.createDataFrame(
        rows, "event_id string, user_id string, referrer_id string"
    ).createOrReplaceTempView("gdpr_clickstream")
    spec = iceberg_spec(subjects=["cust-000101", "cust-000202", "o'brien\\x", "cust-000404"])
    literals = gdpr_spec.subject_literals(spec, {"user_id": "string", "referrer_id": "string"})

    def run(statement):
        return [
            row.asDict()
            for row in spark.sql(statement.sql.replace(T + " VERSION AS OF 7", "gdpr_clickstream")).collect()
        ]

    assert run(iceberg_job.count_sql(spec, literals, 7)) == [{"n": 4}]
    by_position = run(iceberg_job.rows_by_subject_sql(spec, literals, 7))
    assert gdpr_spec.counts_by_position(by_position, 4) == [3, 1, 1, 0]


# -- the Iceberg job against a stand-in for spark.sql -------------------------------------------------------------


class FakeFrame:
    def __init__(self, rows):
        self._rows = [Row(**row) for row in rows]

    def collect(self):
        return self._rows


class FakeIcebergSpark:
    """Answers the job's statements from a table model: snapshots 1-4 on main (head 4), subject rows at
    2 (3 rows), 3 (2) and 4 (2); ``tags`` pins snapshots; DELETE makes snapshot 5 without the rows;
    expire_snapshots removes the ids it is given and refuses a ref's head, as Iceberg does.

    Manifests: a snapshot holding rows, and the DELETE's (its DELETED entries keep the removed files'
    bounds), reach two entries naming a subject, and so does any in ``naming``; rewrite_manifests makes
    a new head whose manifests name none, unless ``rewrite_works`` is false (Iceberg's no-op on a single
    small manifest)."""

    def __init__(self, tags=None, holding=None, delete_mode=None, naming=(), rewrite_works=True):
        self.conf = dict(spark_erasure.iceberg_conf())
        self.sql_run: list[str] = []
        self.snapshots = [1, 2, 3, 4]
        self.holding = {2: 3, 3: 2, 4: 2} if holding is None else dict(holding)
        self.refs = [{"name": "main", "type": "BRANCH", "snapshot_id": 4}]
        self.refs += [{"name": name, "type": "TAG", "snapshot_id": sid} for name, sid in (tags or {}).items()]
        self.properties = {"format-version": "2"}
        self.naming = set(self.holding) | set(naming)
        self.rewrite_works = rewrite_works
        if delete_mode:
            self.properties["write.delete.mode"] = delete_mode

    def head(self) -> int:
        return next(ref["snapshot_id"] for ref in self.refs if ref["name"] == "main")

    def new_head(self, snapshot: int) -> None:
        self.snapshots.append(snapshot)
        self.refs = [{**ref, "snapshot_id": snapshot} if ref["name"] == "main" else ref for ref in self.refs]

    def sql(self, statement: str) -> FakeFrame:
        self.sql_run.append(statement)
        if statement == f"DESCRIBE TABLE {T}":
            columns = [
                ("event_id", "string"),
                ("user_id", "string"),
                ("referrer_id", "string"),
                ("event_date", "date"),
            ]
            described = [{"col_name": n, "data_type": t, "comment": None} for n, t in columns]
            described += [{"col_name": "", "data_type": "", "comment": ""}]
            described += [{"col_name": "# Partitioning", "data_type": "", "comment": ""}]
            return FakeFrame(described)
        if statement == f"SHOW TBLPROPERTIES {T}":
            return FakeFrame([{"key": k, "value": v} for k, v in self.properties.items()])
        if statement.startswith("SELECT snapshot_id FROM"):
            return FakeFrame([{"snapshot_id": n} for n in self.snapshots])
        if statement.startswith("SELECT name, type, snapshot_id FROM"):
            return FakeFrame(self.refs)
        if statement.startswith("SELECT count(*) AS n FROM") and "entries` WHERE" in statement:
            assert ENTRY_CONDITION_3 in statement
            reached = self.snapshots if "`all_entries`" in statement else [self.head()]
            return FakeFrame([{"n": 2 * len(self.naming & set(reached))}])
        if statement.startswith("SELECT count(*) AS n FROM"):
            assert CONDITION_3 in statement
            version = re.search(r"VERSION AS OF (\d+)", statement)
            snapshot = int(version.group(1)) if version else self.head()
            assert snapshot in self.snapshots
            return FakeFrame([{"n": self.holding.get(snapshot, 0)}])
        if statement.startswith("SELECT position"):
            assert f"VERSION AS OF {self.head()} " in statement
            return FakeFrame([{"position": 1, "n": 2}, {"position": 3, "n": 1}])
        if statement.startswith("ALTER TABLE"):
            name = statement.rsplit(" ", 1)[1].strip("`")
            self.refs = [ref for ref in self.refs if ref["name"] != name]
            return FakeFrame([])
        if statement.startswith("DELETE FROM"):
            assert statement == f"DELETE FROM {T} WHERE {CONDITION_3}"
            self.new_head(5)
            self.naming.add(5)
            return FakeFrame([])
        if "rewrite_manifests" in statement:
            if not self.rewrite_works:
                return FakeFrame([{"rewritten_manifests_count": 0, "added_manifests_count": 0}])
            self.new_head(max(self.snapshots) + 1)
            return FakeFrame([{"rewritten_manifests_count": 2, "added_manifests_count": 1}])
        if statement.startswith("SELECT summary['deleted-data-files']"):
            assert statement.endswith("WHERE snapshot_id = 5")
            return FakeFrame([{"deleted_data_files": "3"}])
        if "expire_snapshots" in statement:
            ids = [
                int(n) for n in re.search(r"snapshot_ids => array\(([^)]*)\)", statement).group(1).split(",")
            ]
            heads = {ref["snapshot_id"]: ref["name"] for ref in self.refs}
            for snapshot in ids:
                if snapshot in heads:
                    raise RuntimeError(
                        f"Cannot expire {snapshot}. Still referenced by refs: [{heads[snapshot]}]"
                    )
            self.snapshots = [n for n in self.snapshots if n not in ids]
            return FakeFrame([{"deleted_data_files_count": 4, "deleted_manifest_files_count": 2}])
        raise AssertionError(f"unexpected statement {statement}")


SUBJECTS_3 = ", ".join(f"'{s}'" for s in SUBJECTS)
CONDITION_3 = f"(`user_id` IN ({SUBJECTS_3}) OR `referrer_id` IN ({SUBJECTS_3}))"
ENTRY_CONDITION_3 = (
    f"(readable_metrics.`user_id`.lower_bound IN ({SUBJECTS_3}) OR readable_metrics.`user_id`.upper_bound IN "
    f"({SUBJECTS_3}) OR readable_metrics.`referrer_id`.lower_bound IN ({SUBJECTS_3}) OR "
    f"readable_metrics.`referrer_id`.upper_bound IN ({SUBJECTS_3}))"
)


def run_iceberg_job(tmp_path: Path, fake: FakeIcebergSpark, pinned_refs="fail") -> tuple[dict, str]:
    spec = iceberg_spec(pinned_refs, work=tmp_path.as_uri())
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    assert iceberg_job.main(["--spec", spec_path.as_uri()], spark=fake) == 0
    text = Path(spec["result_uri"].removeprefix("file://")).read_text()
    return json.loads(text), text


def test_the_iceberg_job_deletes_expires_the_snapshots_holding_rows_and_verifies(tmp_path, capsys):
    fake = FakeIcebergSpark(tags={"kept": 1})
    result, text = run_iceberg_job(tmp_path, fake)
    assert result["status"] == "erased"
    assert (result["rows_deleted"], result["rows_deleted_by_subject"]) == (2, [2, 0, 1])
    # The DELETE's snapshot 5 (DELETED entries with the removed files' bounds) is replaced by the
    # manifest rewrite's 6 and expired with the snapshots holding rows.
    assert (result["commit"], result["files_rewritten"]) == ("6", 3)
    assert result["expired_snapshots"] == ["2", "3", "4", "5"]
    assert fake.snapshots == [1, 6]
    assert (result["dropped_refs"], result["pinned_refs"]) == ([], [])
    assert result["verification"] == {
        "passed": True,
        "checked": ["1", "6", "current", "manifest_entries"],
        "rows_found": {"1": 0, "6": 0, "current": 0, "manifest_entries": 0},
        "cleaned": [],
    }
    delete_at = fake.sql_run.index(f"DELETE FROM {T} WHERE {CONDITION_3}")
    rewrite_at = next(n for n, s in enumerate(fake.sql_run) if "rewrite_manifests" in s)
    expire_at = next(n for n, s in enumerate(fake.sql_run) if "expire_snapshots" in s)
    assert delete_at < rewrite_at < expire_at
    spark_erasure.check_result(result, "clickstream", subjects=3)
    shown = capsys.readouterr().out
    assert f"gdpr_iceberg_delete: DELETE FROM {T} WHERE {SHOWN_CONDITION.replace('<2', '<3')}" in shown
    assert_no_subject_id(shown, text)
    # The ids reached the SQL that ran, and only that.
    assert any(SUBJECTS[0] in statement for statement in fake.sql_run)


def test_pinned_refs_fail_changes_nothing_and_names_the_refs(tmp_path, capsys):
    fake = FakeIcebergSpark(tags={"audit-2024": 3, "before-backfill": 2, "kept": 1})
    result, text = run_iceberg_job(tmp_path, fake, "fail")
    assert result["status"] == "pinned_refs"
    assert result["pinned_refs"] == ["audit-2024", "before-backfill"]
    assert (
        result["rows_deleted"],
        result["commit"],
        result["expired_snapshots"],
        result["dropped_refs"],
    ) == (
        0,
        None,
        [],
        [],
    )
    assert result["verification"]["passed"] is False
    assert result["verification"]["rows_found"] == {"1": 0, "2": 3, "3": 2, "4": 2}
    assert not any(s.startswith(("ALTER", "DELETE", "CALL")) for s in fake.sql_run)
    assert fake.snapshots == [1, 2, 3, 4] and len(fake.refs) == 4
    assert spark_erasure.check_result(result, "clickstream", subjects=3) is result
    assert_no_subject_id(capsys.readouterr().out, text)


def test_pinned_refs_drop_drops_them_then_erases(tmp_path):
    fake = FakeIcebergSpark(tags={"audit-2024": 3, "kept": 1})
    result, _ = run_iceberg_job(tmp_path, fake, "drop")
    assert f"ALTER TABLE {T} DROP TAG IF EXISTS `audit-2024`" in fake.sql_run
    assert [ref["name"] for ref in fake.refs] == ["main", "kept"]
    assert (result["status"], result["dropped_refs"], result["pinned_refs"]) == (
        "erased",
        ["audit-2024"],
        ["audit-2024"],
    )
    assert result["expired_snapshots"] == ["2", "3", "4", "5"] and result["verification"]["passed"]
    spark_erasure.check_result(result, "clickstream", subjects=3)


def test_a_rerun_finds_nothing_and_changes_nothing(tmp_path):
    fake = FakeIcebergSpark(holding={})
    result, _ = run_iceberg_job(tmp_path, fake)
    assert (result["status"], result["rows_deleted"], result["commit"], result["expired_snapshots"]) == (
        "nothing_to_delete",
        0,
        None,
        [],
    )
    assert not any(s.startswith(("ALTER", "DELETE", "CALL")) for s in fake.sql_run)
    assert result["verification"]["rows_found"] == {
        "1": 0,
        "2": 0,
        "3": 0,
        "4": 0,
        "current": 0,
        "manifest_entries": 0,
    }
    spark_erasure.check_result(result, "clickstream", subjects=3)


def test_old_snapshots_holding_rows_are_expired_even_when_the_table_has_none(tmp_path):
    """A run that deleted and then died before expiring: the rerun expires what is left."""
    fake = FakeIcebergSpark(holding={2: 3, 3: 2})
    result, _ = run_iceberg_job(tmp_path, fake)
    assert not any(s.startswith("DELETE") for s in fake.sql_run)
    assert (result["status"], result["rows_deleted"], result["commit"]) == ("erased", 0, None)
    assert result["expired_snapshots"] == ["2", "3"] and fake.snapshots == [1, 4]
    assert result["verification"]["checked"] == ["1", "4", "current", "manifest_entries"]


def test_a_rerun_after_a_delete_whose_manifests_were_not_rewritten_rewrites_them(tmp_path):
    """A run that died between its DELETE (snapshot 4, no rows left) and the manifest rewrite: the rerun
    finds the current manifests naming subjects, rewrites them and expires snapshot 4."""
    fake = FakeIcebergSpark(holding={2: 3, 3: 2}, naming={4})
    result, _ = run_iceberg_job(tmp_path, fake)
    assert not any(s.startswith("DELETE") for s in fake.sql_run)
    assert (result["status"], result["rows_deleted"], result["commit"]) == ("erased", 0, "5")
    assert result["expired_snapshots"] == ["2", "3", "4"] and fake.snapshots == [1, 5]
    assert result["verification"]["passed"]
    spark_erasure.check_result(result, "clickstream", subjects=3)


def test_manifests_iceberg_would_not_rewrite_fail_the_verification(tmp_path):
    """rewrite_manifests is a no-op on one small manifest: the DELETE's DELETED entries stay, and the
    run must not be called verified."""
    fake = FakeIcebergSpark(rewrite_works=False)
    result, _ = run_iceberg_job(tmp_path, fake)
    assert result["commit"] == "5" and result["expired_snapshots"] == ["2", "3", "4"]
    assert result["verification"]["passed"] is False
    assert result["verification"]["rows_found"]["manifest_entries"] == 2
    with pytest.raises(ValueError, match="verification failed: subject rows remain at"):
        spark_erasure.check_result(result, "clickstream", subjects=3)


def test_a_merge_on_read_table_is_refused_before_any_change(tmp_path, capsys):
    fake = FakeIcebergSpark(delete_mode="merge-on-read")
    with pytest.raises(
        RuntimeError, match=re.escape("write.delete.mode=merge-on-read: a DELETE would write delete files")
    ):
        run_iceberg_job(tmp_path, fake)
    assert not any(s.startswith(("ALTER", "DELETE", "CALL")) for s in fake.sql_run)
    assert_no_subject_id(capsys.readouterr().out)


def test_the_iceberg_job_refuses_a_session_without_the_catalog(tmp_path):
    fake = FakeIcebergSpark()
    del fake.conf["spark.sql.extensions"]
    with pytest.raises(RuntimeError, match=r"lacks the Iceberg catalog conf \['spark.sql.extensions'\]"):
        iceberg_job.run(fake, iceberg_spec(work=tmp_path.as_uri()), Storage())
    assert fake.sql_run == []


def test_errors_from_spark_are_raised_without_subject_ids(tmp_path):
    class Failing(FakeIcebergSpark):
        def sql(self, statement):
            if statement.startswith("DELETE"):
                raise RuntimeError(f"AnalysisException: cannot resolve plan\n'Filter {statement}")
            return super().sql(statement)

    with pytest.raises(RuntimeError) as raised:
        iceberg_job.run(Failing(), iceberg_spec(work=tmp_path.as_uri()), Storage())
    message = str(raised.value)
    assert message.startswith("gdpr_iceberg_delete: RuntimeError: AnalysisException")
    assert "`user_id` IN ('<subject #0>', '<subject #1>', '<subject #2>')" in message
    assert_no_subject_id(message)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_scrub_masks_longer_ids_first():
    assert gdpr_spec.scrub("ids 1234 and 12", ["12", "1234"]) == "ids <subject #1> and <subject #0>"


# -- SparkJobs ----------------------------------------------------------------------------------------------------


def test_the_hudi_spark_job():
    job = spark_erasure.spark_job("app_logs", APP_LOGS, "s3://ops/_gdpr/app_logs/run/spec.json")
    assert (job.name, job.entry, job.entry_path, list(job.args)) == (
        "gdpr_app_logs",
        "spark_jobs.gdpr_hudi_delete",
        "spark_jobs/gdpr_hudi_delete.py",
        ["--spec", "s3://ops/_gdpr/app_logs/run/spec.json"],
    )
    assert dict(job.conf) == {
        "spark.jars": "/usr/lib/hudi/hudi-spark-bundle.jar",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.kryo.registrator": "org.apache.spark.HoodieSparkKryoRegistrar",
        "spark.sql.extensions": "org.apache.spark.sql.hudi.HoodieSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.hudi.catalog.HoodieCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.eventLog.enabled": "false",
    }


def test_the_iceberg_spark_job_deletes_unreferenced_files():
    job = spark_erasure.spark_job("clickstream", CLICKSTREAM, "s3://ops/spec.json")
    assert (job.name, job.entry) == ("gdpr_clickstream", "spark_jobs.gdpr_iceberg_delete")
    conf = dict(job.conf)
    assert conf["spark.sql.catalog.glue_catalog"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.extensions"] == "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
    assert conf["spark.eventLog.enabled"] == "false"
    assert not any(".s3.delete" in key or ".s3.write" in key for key in conf)
    # What the job checks for is what the conf gives.
    iceberg_sql.check_session(type("Session", (), {"conf": conf})(), "glue_catalog", iceberg_job.JOB, "x")


# -- result checks ------------------------------------------------------------------------------------------------


def a_result(**changes) -> dict:
    result = {
        "job": "gdpr_iceberg_delete",
        "dataset": "clickstream",
        "format": "iceberg",
        "status": "erased",
        "rows_deleted": 3,
        "rows_deleted_by_subject": [2, 0, 2],
        "files_rewritten": 2,
        "commit": "5",
        "expired_snapshots": ["3", "4"],
        "dropped_refs": [],
        "pinned_refs": [],
        "verification": {
            "passed": True,
            "checked": ["5", "current"],
            "rows_found": {"5": 0, "current": 0},
            "cleaned": [],
        },
        "started_at": "2024-03-05T10:00:00+00:00",
        "finished_at": "2024-03-05T10:05:00+00:00",
    }
    return {**result, **changes}


def test_a_good_result_passes():
    assert spark_erasure.check_result(a_result(), "clickstream", subjects=3) == a_result()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dataset": "payments"}, "result is for dataset 'payments', expected 'clickstream'"),
        ({"status": "done"}, "status must be one of"),
        ({"format": "hudi"}, "unknown or mismatched"),
        ({"rows_deleted": -1}, "rows_deleted must be an integer >= 0"),
        ({"rows_deleted": 5}, r"rows_deleted 5 does not fit rows_deleted_by_subject \(max 2, sum 4\)"),
        ({"rows_deleted_by_subject": [2, "x", 1]}, r"rows_deleted_by_subject\[1\] must be an integer"),
        ({"rows_deleted_by_subject": [2, 1]}, "has 2 counts for 3 subjects"),
        ({"files_rewritten": 1.5}, "files_rewritten must be an integer"),
        ({"commit": 5}, "commit must be a string or null"),
        ({"commit": None}, "rows_deleted > 0 without the commit"),
        ({"expired_snapshots": [3]}, "expired_snapshots must be a list of strings"),
        ({"status": "nothing_to_delete"}, "nothing_to_delete with rows deleted"),
        (
            {"status": "pinned_refs", "pinned_refs": ["t"]},
            "pinned_refs must name the refs and change nothing",
        ),
        (
            {"verification": {"passed": True}},
            "verification must hold passed, checked, rows_found and cleaned",
        ),
        (
            {"verification": {"passed": True, "checked": ["5"], "rows_found": {"5": 2}, "cleaned": []}},
            "verification.passed does not agree with rows_found",
        ),
        (
            {"verification": {"passed": False, "checked": ["5"], "rows_found": {"5": 2}, "cleaned": []}},
            r"verification failed: subject rows remain at \{'5': 2\}",
        ),
        ({"finished_at": "yesterday"}, "finished_at must be an ISO timestamp"),
        ({"subject_ids": ["cust-000101"]}, r"has unexpected \['subject_ids'\]"),
    ],
)
def test_bad_results_are_refused_naming_what_is_wrong(changes, message):
    with pytest.raises(ValueError, match=message):
        spark_erasure.check_result(a_result(**changes), "clickstream", subjects=3)


# -- packaging -------------------------------------------------------------------------------------------------


def test_the_jobs_import_neither_airflow_nor_dataplatform_nor_pyspark():
    code = (
        "import sys, spark_jobs.gdpr_hudi_delete, spark_jobs.gdpr_iceberg_delete; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'dataplatform', 'pyspark')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=spark_spec.REPO_ROOT, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_jobs_are_in_the_py_files_zip(tmp_path):
    with zipfile.ZipFile(spark_spec.build_py_files_zip(tmp_path / "spark_jobs.zip")) as archive:
        names = set(archive.namelist())
    assert {
        "spark_jobs/gdpr_hudi_delete.py",
        "spark_jobs/gdpr_iceberg_delete.py",
        "spark_jobs/common/gdpr_spec.py",
    } <= names
