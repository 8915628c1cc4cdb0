"""The pyiceberg and the Spark backend of Iceberg maintenance agree on the same table.

One table is written (pyiceberg, moto Glue + S3) with overwrites, an old tag that must keep its snapshot
and a tag past its age; its S3 objects and its Glue entry are saved. The pyiceberg backend maintains it;
the table is then put back exactly as it was (same objects, same metadata location: the same commits,
snapshot ids and file paths) and the Spark job (``spark_jobs/iceberg_maintenance.py``, in the shared
session with an Iceberg catalog configured as the job's conf configures it) maintains it with the same
policy and clock. Compared, from the table and from S3: the snapshots kept, the refs, the files tagged
as unreferenced (the same paths), the objects deleted (none: ``action: tag``).

Where they legitimately differ, and what is compared instead (see ``dataplatform.iceberg.spark_sql``):
- the new tag's ``max_ref_age_ms``: Iceberg's SQL retains in whole minutes (rounded up), pyiceberg to the
  millisecond; both keep the tag through its last day, the Spark one at most a minute longer;
- ``created`` tagging after the fact is pyiceberg's only (Spark tags at write time): off here;
- new metadata files: each backend writes its own commits' ``.metadata.json``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from dataplatform.config import IcebergTablePolicy
from dataplatform.iceberg import spark_sql
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.maintenance import MaintenanceContext, RunClock, maintain_table
from dataplatform.iceberg.sample import write_sample_table
from dataplatform.iceberg.snapshots import start_of_day, to_ms
from dataplatform.s3.objects import list_objects, split_uri
from dataplatform.spark import iceberg_endpoint_conf

pytestmark = [pytest.mark.integration, pytest.mark.spark]

BUCKET = "parity"
DATABASE, TABLE = "parity_db", "events"
LOCATION = f"s3://{BUCKET}/warehouse/{DATABASE}/{TABLE}"
CATALOG = "parity_catalog"
DELETE_TAG = ("delete-tag-name", "deleted")
POLICY = {
    "database": DATABASE,
    "table": TABLE,
    "retain_last": 2,
    "max_snapshot_age_hours": 0,
    "tag_rules": [{"name": "daily-{date:%Y-%m-%d}", "every": "day", "keep_days": 7}],
    "unreferenced": {"action": "tag", "tag": {"key": DELETE_TAG[0], "value": DELETE_TAG[1]}},
    "lifecycle": {"enabled": False},
    "created": {"enabled": False},
    "orphan_min_age_hours": 72,
}
GLUE_TABLE_INPUT = ("Name", "Description", "TableType", "Parameters", "StorageDescriptor", "PartitionKeys")


def policy(backend: str) -> IcebergTablePolicy:
    return IcebergTablePolicy.model_validate({**POLICY, "backend": backend})


@pytest.fixture(scope="module")
def lake(moto_server):
    from dataplatform import aws

    moto_server.reset()
    s3, glue = aws.client("s3"), aws.client("glue")
    s3.create_bucket(Bucket=BUCKET)
    catalog = load_glue_catalog(AwsAccess("us-east-1", moto_server.url, "testing", "testing"))
    table = write_sample_table(catalog, f"{DATABASE}.{TABLE}", LOCATION, commits=4)
    first, second = (s.snapshot_id for s in table.snapshots()[:2])
    # A tag without an age keeps its (old) snapshot; a tag past its age goes, and its snapshot with it.
    table.manage_snapshots().create_tag(first, "kept-forever").commit()
    table.manage_snapshots().create_tag(second, "aged", max_ref_age_ms=1).commit()
    saved = SimpleNamespace(
        objects={
            uri: s3.get_object(Bucket=BUCKET, Key=split_uri(uri)[1])["Body"].read()
            for uri in list_objects(s3, LOCATION)
        },
        glue=glue.get_table(DatabaseName=DATABASE, Name=TABLE)["Table"],
    )
    now = datetime.now(UTC)
    return SimpleNamespace(
        s3=s3, glue=glue, catalog=catalog, saved=saved, clock=RunClock(now.date(), now), url=moto_server.url
    )


def restore(lake) -> None:
    """The table exactly as written: every object back (untagged), no other, the same metadata location."""
    current = list_objects(lake.s3, LOCATION)
    for uri in current:
        lake.s3.delete_object(Bucket=BUCKET, Key=split_uri(uri)[1])
    for uri, body in lake.saved.objects.items():
        lake.s3.put_object(Bucket=BUCKET, Key=split_uri(uri)[1], Body=body)
    table_input = {key: lake.saved.glue[key] for key in GLUE_TABLE_INPUT if key in lake.saved.glue}
    lake.glue.update_table(DatabaseName=DATABASE, TableInput=table_input)


def outcome(lake) -> SimpleNamespace:
    """What a run left, read from the table and from S3."""
    table = lake.catalog.load_table(f"{DATABASE}.{TABLE}")
    listed = list_objects(lake.s3, LOCATION)
    tagged = set()
    for uri in listed:
        tags = lake.s3.get_object_tagging(Bucket=BUCKET, Key=split_uri(uri)[1])["TagSet"]
        if {"Key": DELETE_TAG[0], "Value": DELETE_TAG[1]} in tags:
            tagged.add(uri)
    refs = table.metadata.refs
    return SimpleNamespace(
        snapshots={s.snapshot_id for s in table.snapshots()},
        refs={name: (ref.snapshot_id, ref.snapshot_ref_type.value) for name, ref in refs.items()},
        ages={name: ref.max_ref_age_ms for name, ref in refs.items()},
        tagged=tagged,
        deleted=set(lake.saved.objects) - set(listed),
        rows=table.scan().to_arrow().sort_by("order_id"),
        head=table.metadata.snapshot_by_id(table.metadata.current_snapshot_id),
    )


@pytest.fixture(scope="module")
def by_pyiceberg(lake):
    ctx = MaintenanceContext(lake.catalog, lake.s3, f"s3://{BUCKET}/_state/", tag_workers=8)
    report = maintain_table(ctx, TABLE, policy("pyiceberg"), lake.clock)
    return SimpleNamespace(report=report, **vars(outcome(lake)))


@pytest.fixture(scope="module")
def by_spark(lake, by_pyiceberg, spark, tmp_path_factory):
    from spark_jobs import iceberg_maintenance
    from spark_jobs.common.storage import Storage

    restore(lake)
    conf = spark_sql.spark_conf(policy("spark"))
    for key, value in conf.items():
        if key.startswith("spark.sql.catalog.glue_catalog"):
            spark.conf.set(key.replace("glue_catalog", CATALOG, 1), value)
    for key, value in iceberg_endpoint_conf(CATALOG, lake.url, "us-east-1").items():
        spark.conf.set(key, value)
    report_uri = (tmp_path_factory.mktemp("parity") / "report.json").as_uri()
    spec = spark_sql.build_spec(TABLE, policy("spark"), lake.clock, False, report_uri)
    spec["catalog"] = CATALOG
    report = iceberg_maintenance.run(spark, spec, Storage(lake.s3))
    return SimpleNamespace(report=report, **vars(outcome(lake)))


def test_both_backends_keep_the_same_snapshots_and_refs(by_pyiceberg, by_spark):
    assert by_spark.snapshots == by_pyiceberg.snapshots
    assert by_spark.refs == by_pyiceberg.refs
    assert "aged" not in by_spark.refs and "kept-forever" in by_spark.refs
    assert by_spark.rows == by_pyiceberg.rows
    assert sorted(by_spark.report["expiry"]["expired_ids"]) == sorted(
        by_pyiceberg.report["expiry"]["expired_ids"]
    )
    assert by_spark.report["expiry"]["tags_removed"] == by_pyiceberg.report["expiry"]["tags_removed"]


def test_both_backends_tag_the_same_files_and_delete_none(lake, by_pyiceberg, by_spark):
    assert by_pyiceberg.tagged and any(uri.endswith(".parquet") for uri in by_pyiceberg.tagged)
    assert by_spark.tagged == by_pyiceberg.tagged
    assert by_spark.deleted == by_pyiceberg.deleted == set()


def test_the_new_tag_is_kept_through_its_last_day_by_both(lake, by_pyiceberg, by_spark):
    name = f"daily-{lake.clock.day}"
    keep_until = to_ms(start_of_day(lake.clock.day) + timedelta(days=7 + 1))
    exact = keep_until - 1 - by_pyiceberg.head.timestamp_ms
    # pyiceberg: aged from the first millisecond after the last kept day.
    assert by_pyiceberg.ages[name] == exact
    # Spark SQL: RETAIN in whole minutes, rounded up (never shorter, at most a minute longer).
    assert exact < by_spark.ages[name] <= exact + 60_000
    assert {k: v for k, v in by_spark.ages.items() if k != name} == {
        k: v for k, v in by_pyiceberg.ages.items() if k != name
    }
