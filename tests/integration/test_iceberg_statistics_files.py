"""Iceberg maintenance and statistics files (Puffin and partition statistics, registered per snapshot):
the current snapshot's are referenced (never orphans), an expired snapshot's leave the metadata with
it and get the unreferenced action."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dataplatform.config import IcebergTablePolicy
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.maintenance import MaintenanceContext, RunClock, maintain_table
from dataplatform.iceberg.sample import write_sample_table
from dataplatform.s3.objects import list_objects
from tests.iceberg_statistics import register_statistics

pytestmark = pytest.mark.integration

BUCKET = "lake"
LOCATION = f"s3://{BUCKET}/warehouse/db/orders"


def test_statistics_files_follow_their_snapshot(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    table = write_sample_table(catalog, "db.orders", LOCATION, commits=3, n_regions=2)
    oldest, current = table.snapshots()[0].snapshot_id, table.current_snapshot().snapshot_id
    expired_files = register_statistics(aws.s3, table, oldest, b"old sketch")
    kept_files = register_statistics(aws.s3, catalog.load_table("db.orders"), current, b"new sketch")
    policy = IcebergTablePolicy.model_validate(
        {
            "database": "db",
            "table": "orders",
            "retain_last": 1,
            "max_snapshot_age_hours": 0,
            "orphan_min_age_hours": 1,
            "unreferenced": {"action": "delete"},
        }
    )
    # Late enough that every object under the table is past the orphans' minimum age.
    now = datetime.now(UTC) + timedelta(hours=2)

    report = maintain_table(
        MaintenanceContext(catalog, aws.s3, f"s3://{BUCKET}/_state/"),
        "orders",
        policy,
        RunClock(now.date(), now),
    )

    metadata = catalog.load_table("db.orders").metadata
    assert [s.statistics_path for s in metadata.statistics] == [kept_files[0]]
    assert [s.statistics_path for s in metadata.partition_statistics] == [kept_files[1]]
    present = set(list_objects(aws.s3, LOCATION))
    assert set(kept_files) <= present and not set(expired_files) & present
    assert report["unreferenced"]["by_kind"]["statistics"] == 2
    assert report["orphans"]["found"] == 0
