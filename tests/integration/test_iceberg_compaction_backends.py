"""Compaction by both maintenance backends on the same data: two identical tables (pyiceberg writes, moto
Glue + S3), each with small appends and merge-on-read deletes made by Spark; one maintained by the
pyiceberg path (``maintenance.maintain_table``), the other by the Spark job
(``spark_jobs/iceberg_maintenance.py`` in the shared session: ``rewrite_data_files``,
``rewrite_manifests``) with the same policy. Checked from the tables and the files themselves: the rows,
the live data files per partition, the rows each new file stores (no delete applied), their order.

Both leave the position delete files in the snapshot, applying to no stored row (README, *Compaction*)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from dataplatform.config import IcebergTablePolicy
from dataplatform.iceberg import spark_sql
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.maintenance import MaintenanceContext, RunClock, maintain_table
from dataplatform.iceberg.sample import append_rows, create_sample_table

pytestmark = [pytest.mark.integration, pytest.mark.spark]

BUCKET = "compaction-backends"
DATABASE = "compaction_db"
DELETED = (10_002, 20_001, 70_002)  # one row of r00's appends 1 and 2, one of r01's
POLICY = {
    "database": DATABASE,
    "retain_last": 2,
    "max_snapshot_age_hours": 0,
    "unreferenced": {"action": "delete"},
    "lifecycle": {"enabled": False},
    "created": {"enabled": False},
    "orphan_min_age_hours": 72,
    "compaction": {
        "target_file_mb": 128,
        "min_input_files": 4,
        "max_bytes_per_run": 1024**3,
        "sort_order": ["order_id desc"],
        "max_small_manifests": 2,
    },
}


def policy(table: str, backend: str) -> IcebergTablePolicy:
    return IcebergTablePolicy.model_validate({**POLICY, "table": table, "backend": backend})


def write_table(catalog, spark, name: str):
    """6 appends of 4 rows into r00, then 2 rows into each of r00 and r01 (the r01 file gets a delete: rewritten alone), then
    Spark's merge-on-read DELETE of ``DELETED``: position delete files."""
    table = create_sample_table(catalog, f"{DATABASE}.{name}", f"s3://{BUCKET}/warehouse/{DATABASE}/{name}")
    for version in range(1, 7):
        append_rows(table, version, n_regions=1, rows_per_region=4)
    append_rows(table, 7, n_regions=2, rows_per_region=2)
    spark_name = f"glue_catalog.{DATABASE}.{name}"
    spark.sql(f"REFRESH TABLE {spark_name}")
    spark.sql(f"ALTER TABLE {spark_name} SET TBLPROPERTIES ('write.delete.mode'='merge-on-read')")
    spark.sql(f"DELETE FROM {spark_name} WHERE order_id IN {DELETED}")
    return catalog.load_table(f"{DATABASE}.{name}")


def files_per_region(table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in table.inspect.data_files().to_pylist():
        counts[row["partition"]["region"]] = counts.get(row["partition"]["region"], 0) + 1
    return counts


def stored_ids(table) -> dict[str, list[int]]:
    """Per live data file (by region), the order ids it stores, as stored: no delete file applied."""
    stored = {}
    for row in table.inspect.data_files().to_pylist():
        with table.io.new_input(row["file_path"]).open() as stream:
            stored[row["partition"]["region"]] = pq.read_table(stream)["order_id"].to_pylist()
    return stored


def rows(table) -> list[dict]:
    return sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["order_id"])


@pytest.fixture(scope="module")
def lake(moto_server, spark):
    from dataplatform import aws

    moto_server.reset()
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    catalog = load_glue_catalog(AwsAccess("us-east-1", moto_server.url, "testing", "testing"))
    tables = {backend: write_table(catalog, spark, f"events_{backend}") for backend in ("pyiceberg", "spark")}
    before = {backend: rows(table) for backend, table in tables.items()}
    assert before["pyiceberg"] == before["spark"] and not set(DELETED) & {
        r["order_id"] for r in before["spark"]
    }
    assert files_per_region(tables["spark"]) == {"r00": 7, "r01": 1}
    now = datetime.now(UTC)
    return SimpleNamespace(s3=s3, catalog=catalog, rows=before["spark"], clock=RunClock(now.date(), now))


@pytest.fixture(scope="module")
def by_pyiceberg(lake):
    ctx = MaintenanceContext(lake.catalog, lake.s3, f"s3://{BUCKET}/_state/", tag_workers=8)
    report = maintain_table(ctx, "events_pyiceberg", policy("events_pyiceberg", "pyiceberg"), lake.clock)
    return SimpleNamespace(report=report, table=lake.catalog.load_table(f"{DATABASE}.events_pyiceberg"))


def run_spark_job(lake, spark, tmp_path, *, dry_run: bool = False) -> dict:
    from spark_jobs import iceberg_maintenance
    from spark_jobs.common.storage import Storage

    table_policy = policy("events_spark", "spark")
    now = datetime.now(UTC)
    spec = spark_sql.build_spec(
        "events_spark", table_policy, RunClock(now.date(), now), dry_run, (tmp_path / "report.json").as_uri()
    )
    return iceberg_maintenance.run(spark, spec, Storage(lake.s3))


@pytest.fixture(scope="module")
def by_spark(lake, spark, tmp_path_factory):
    dry = run_spark_job(lake, spark, tmp_path_factory.mktemp("dry"), dry_run=True)
    table = lake.catalog.load_table(f"{DATABASE}.events_spark")
    dry_run_left = (table.metadata_location, files_per_region(table))
    report = run_spark_job(lake, spark, tmp_path_factory.mktemp("run"))
    return SimpleNamespace(
        report=report,
        dry=dry,
        dry_run_left=dry_run_left,
        table=lake.catalog.load_table(f"{DATABASE}.events_spark"),
    )


def test_both_backends_leave_one_file_per_partition_with_the_same_rows(lake, by_pyiceberg, by_spark):
    for result in (by_pyiceberg, by_spark):
        assert files_per_region(result.table) == {"r00": 1, "r01": 1}
        assert rows(result.table) == lake.rows
        # the new files themselves hold no deleted row, in the policy's order (the appends were ascending)
        for ids in stored_ids(result.table).values():
            assert not set(DELETED) & set(ids) and ids == sorted(ids, reverse=True)
        # retain_last 2, no age: the expiry after the compaction kept two snapshots
        assert len(result.table.snapshots()) == 2
    assert stored_ids(by_spark.table) == stored_ids(by_pyiceberg.table)


def test_the_delete_files_stay_applying_to_no_stored_row_on_both(lake, by_pyiceberg, by_spark):
    """Neither backend drops the three position delete files: the rewritten files carry the sequence
    number the rewrite started from (Iceberg's default), so the deletes are not older than them."""
    for result in (by_pyiceberg, by_spark):
        assert result.table.inspect.delete_files().num_rows == len(DELETED)
        stored = sorted(i for ids in stored_ids(result.table).values() for i in ids)
        assert stored == [r["order_id"] for r in lake.rows]


def test_the_spark_dry_run_reports_the_partition_and_changes_nothing(lake, by_spark):
    table_before_run = by_spark.dry_run_left
    assert table_before_run[1] == {"r00": 7, "r01": 1}
    assert [(p["files"], p["partition"]) for p in by_spark.dry["compaction"]["planned"]] == [
        (7, '{"region":"r00"}')
    ]
    assert by_spark.dry["compaction"]["estimate"] is True
    # the run then compacted: 8 data files -> 2
    assert (by_spark.report["compaction"]["files_before"], by_spark.report["compaction"]["files_after"]) == (
        8,
        2,
    )


def test_a_spark_rerun_changes_nothing(lake, spark, by_spark, tmp_path):
    location = lake.catalog.load_table(f"{DATABASE}.events_spark").metadata_location

    report = run_spark_job(lake, spark, tmp_path)

    assert lake.catalog.load_table(f"{DATABASE}.events_spark").metadata_location == location
    assert report["compaction"]["files_after"] == report["compaction"]["files_before"] == 2
    assert report["compaction"]["manifests_rewritten"] == 0
