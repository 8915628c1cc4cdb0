"""The iceberg_maintenance DAG run for real (in-process ``dag.test()``) on the pyiceberg demo tables of
the local config, in the moto Glue catalog and S3 (its ``backend: spark`` table runs in
test_iceberg_spark_maintenance.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dataplatform.config import settings
from dataplatform.devstack.seed import seed_iceberg
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.files import FileIndex, reachable_files
from dataplatform.reports import report_key
from dataplatform.s3.objects import list_objects, split_uri
from tests.airflow_helpers import run_repo_dag, task_states

pytestmark = pytest.mark.integration

DAG_ID = "iceberg_maintenance"


@pytest.fixture
def demo_tables(aws, airflow_db, pyiceberg_only_config):
    aws.catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    seed_iceberg(aws.catalog, aws.s3, settings())
    return aws


def report(aws, run_id: str, table: str) -> dict:
    bucket, prefix = split_uri(settings().reports_uri)
    key = prefix + report_key(DAG_ID, run_id, table)
    return json.loads(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_the_nightly_run_maintains_every_configured_table(demo_tables):
    catalog, config = demo_tables.catalog, settings().iceberg
    before = {name: catalog.load_table(p.identifier) for name, p in config.tables.items()}
    rows = {name: table.scan().to_arrow().sort_by("order_id") for name, table in before.items()}
    logical = datetime.now(UTC) + timedelta(days=1)

    run = run_repo_dag(DAG_ID, logical_date=logical)

    assert run.state == "success", task_states(run)
    assert task_states(run) == {
        "select_tables[-1]": "success",
        "maintain_table[0]": "success",
        "maintain_table[1]": "success",
    }
    for name, policy in config.tables.items():
        table = catalog.load_table(policy.identifier)
        assert table.scan().to_arrow().sort_by("order_id") == rows[name]
        # The only tag (orders' daily tag) is on the head, which retain_last keeps anyway.
        assert len(table.snapshots()) == policy.retain_last
        got = report(demo_tables, run.run_id, name)
        # Each partition compacted and each manifest rewrite is a snapshot of the run's own, before expiry.
        compacted = got.get("compaction", {"partitions_compacted": 0, "manifests_rewritten": 0})
        commits = compacted["partitions_compacted"] + compacted["manifests_rewritten"]
        assert got["expiry"]["snapshots_expired"] == len(before[name].snapshots()) + commits - len(
            table.snapshots()
        )
        reachable = reachable_files(FileIndex(table.io), table.metadata, table.metadata_location)
        listed = list_objects(demo_tables.s3, table.location())
        assert set(reachable) <= set(listed)
        if policy.unreferenced.action == "delete":
            assert got["unreferenced"]["deleted"] == got["unreferenced"]["files"] > 0
            assert len(listed) == len(reachable)
        else:
            assert got["unreferenced"]["tagged"] == got["unreferenced"]["files"] > 0
            assert len(listed) == len(reachable) + got["unreferenced"]["files"]
    orders = catalog.load_table(config.tables["orders"].identifier)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    # Tagged before the compaction: the tag is on the head the writers left (the same rows).
    assert (
        orders.metadata.refs[f"daily-{today}"].snapshot_id == before["orders"].current_snapshot().snapshot_id
    )
    # The seed's small appends (one partition, 7 files with its overwrite's) are one file now; the other partitions kept their one file.
    files = orders.inspect.files().to_pylist()
    per_region: dict[str, int] = {}
    for row in files:
        per_region[row["partition"]["region"]] = per_region.get(row["partition"]["region"], 0) + 1
    assert sorted(per_region.values()) == [1, 1, 1, 1]
    assert report(demo_tables, run.run_id, "orders")["compaction"]["partitions_compacted"] == 1


def test_an_unknown_table_param_fails_the_run_before_anything_changes(demo_tables):
    catalog, config = demo_tables.catalog, settings().iceberg
    locations = {
        name: catalog.load_table(p.identifier).metadata_location for name, p in config.tables.items()
    }

    run = run_repo_dag(DAG_ID, run_conf={"tables": ["orders", "no_such_table"]})

    assert run.state == "failed"
    states = task_states(run)
    assert states["select_tables[-1]"] == "failed" and not any(
        k.startswith("maintain_table[0") for k, v in states.items() if v == "success"
    )
    assert {
        name: catalog.load_table(p.identifier).metadata_location for name, p in config.tables.items()
    } == locations
