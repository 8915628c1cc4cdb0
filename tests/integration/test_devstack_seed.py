"""The demo lake of `make demo` / `make up` holds what a newcomer's runs of glue_partition_loader ask for:
the scheduled run for yesterday (what unpausing the DAG starts) and the backfill example of the docs."""

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from dataplatform.config import settings
from dataplatform.devstack.seed import RECENT_DAYS, seed_demo, seed_recent_days
from dataplatform.glue.discovery import split_s3_uri
from dataplatform.glue.layout import PartitionLayout
from tests.airflow_helpers import run_repo_dag, task_states

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BACKFILL_EXAMPLE = re.compile(
    r"backfill create --dag-id glue_partition_loader --from-date (\S+) --to-date ([^\s`\"]+)"
)


def documented_backfill_days() -> set[date]:
    """Every day of every glue_partition_loader backfill example in README.md and the DAG's doc."""
    days = set()
    for doc in (REPO / "README.md", REPO / "dags" / "glue_partition_loader.py"):
        examples = BACKFILL_EXAMPLE.findall(doc.read_text())
        assert examples, f"{doc.name}: no backfill example"
        for start, end in examples:
            first, last = date.fromisoformat(start), date.fromisoformat(end)
            days.update(first + timedelta(days=n) for n in range((last - first).days + 1))
    return days


@pytest.fixture
def demo_lake(aws):
    seed_demo(aws.s3, aws.glue, settings())
    seed_recent_days(aws.s3, settings())
    return aws


def keys_of_day(s3, name: str, day: date) -> set[str]:
    """The objects under the day's partitions of table ``name``, relative to the table location."""
    table = settings().glue.tables[name]
    bucket, root = split_s3_uri(table.location)
    start = datetime(day.year, day.month, day.day)
    keys = set()
    for values in PartitionLayout(table).values_for_interval(start, start + timedelta(days=1)):
        prefix = root + PartitionLayout(table).render(values)
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        keys.update(obj["Key"][len(root) :] for obj in listing)
    return keys


def test_the_demo_lake_has_yesterday_today_and_the_documented_backfill_days(demo_lake):
    today = datetime.now(UTC).date()
    days = {
        today,
        today - timedelta(days=1),
        today - timedelta(days=RECENT_DAYS),
        *documented_backfill_days(),
    }
    for day in sorted(days):
        for name, table in settings().glue.tables.items():
            keys = keys_of_day(demo_lake.s3, name, day)
            partitions = 24 if table.granularity == "hour" else 1
            data = [key for key in keys if key.endswith("part-00000.json")]
            markers = [key for key in keys if key.endswith("_SUCCESS")]
            assert len(data) == partitions, f"{name} {day}: {sorted(keys)}"
            assert len(markers) == (partitions if table.wait_for_success_marker else 0), f"{name} {day}"


def test_the_scheduled_run_for_yesterday_succeeds_on_the_demo_lake(demo_lake, airflow_db):
    """What unpausing the DAG in `make up` starts: the run of the interval [yesterday, today)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    dagrun = run_repo_dag("glue_partition_loader", logical_date=today)
    assert dagrun.state == "success", task_states(dagrun)
    assert (dagrun.data_interval_start, dagrun.data_interval_end) == (today - timedelta(days=1), today)
    for name, table in settings().glue.tables.items():
        pages = demo_lake.glue.get_paginator("get_partitions").paginate(
            DatabaseName=table.database, TableName=table.table
        )
        registered = {tuple(p["Values"]) for page in pages for p in page["Partitions"]}
        assert registered == set(
            PartitionLayout(table).values_for_interval(
                (today - timedelta(days=1)).replace(tzinfo=None), today.replace(tzinfo=None)
            )
        ), name


def test_the_demo_recon_batches_land_on_s3_and_a_reseed_empties_the_work_area(aws):
    from dataplatform.devstack.seed import RECON_DEMO, seed_recon
    from spark_jobs.common.storage import split_s3
    from tests.reconciliation_oracle import read_landing

    recon = settings().reconciliation
    assert recon.landing_uri.startswith("s3://") and recon.work_uri.startswith("s3://")
    landed = seed_recon(aws.s3, settings())

    batches = read_landing(recon.landing_uri, aws.s3)
    assert len(batches) == landed["batches"] == RECON_DEMO["batches"]
    assert sum(len(lines) for _, lines in batches) == landed["events"] > 0
    # What an earlier demo's Spark jobs left in the work area goes with the next seeding.
    bucket, prefix = split_s3(recon.work_uri)
    aws.s3.put_object(Bucket=bucket, Key=f"{prefix}state/00000001/part-00000.txt", Body=b"{}\n")
    assert seed_recon(aws.s3, settings()) == landed
    assert aws.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0
    assert read_landing(recon.landing_uri, aws.s3) == batches
