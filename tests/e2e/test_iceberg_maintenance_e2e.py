"""Iceberg maintenance in a real Airflow (`airflow standalone`: scheduler, DAG processor, LocalExecutor)
driven through the REST API: the trigger form's params reach the mapped tasks, the tables end in the
state the policy asks for, and bad params are refused by the API or fail the run before any change."""

from __future__ import annotations

import pytest

from dataplatform import aws as aws_clients
from dataplatform.config import settings
from dataplatform.devstack.seed import seed_iceberg
from dataplatform.devstack.standalone import AirflowApiError, StandaloneAirflow
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.files import FileIndex, reachable_files
from dataplatform.s3.objects import list_objects, split_uri
from tests.e2e.airflow_api import (
    ON_POSTGRES,
    dag_runs,
    describe_run,
    pause,
    running_together,
    task_instances,
    unpause_after_its_scheduled_run,
    wait_for_run,
)

pytestmark = pytest.mark.e2e

DAG_ID = "iceberg_maintenance"


@pytest.fixture(scope="module")
def lake(moto_server):
    moto_server.reset()
    s3 = aws_clients.client("s3")
    s3.create_bucket(Bucket=split_uri(settings().reports_uri)[0])
    catalog = load_glue_catalog(AwsAccess("us-east-1", moto_server.url, "testing", "testing"))
    seed_iceberg(catalog, s3, settings())
    return catalog, s3


@pytest.fixture(scope="module")
def airflow(lake, local_airflow):
    """The shared standalone Airflow (tests/e2e/conftest.py), the DAG paused again when the module is done."""
    unpause_after_its_scheduled_run(local_airflow, DAG_ID)
    yield local_airflow
    pause(local_airflow, DAG_ID)


def trigger(airflow: StandaloneAirflow, conf: dict) -> dict:
    return airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})


def test_a_manual_run_for_one_table_leaves_it_as_its_policy_asks(airflow, lake):
    catalog, s3 = lake
    policy = settings().iceberg.tables["customers"]
    rows = catalog.load_table(policy.identifier).scan().to_arrow().sort_by("order_id")

    run = trigger(airflow, {"tables": ["customers"], "dry_run": False})
    done = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=420)

    assert done["state"] == "success", describe_run(airflow, DAG_ID, run["dag_run_id"])
    mapped = [
        ti for ti in task_instances(airflow, DAG_ID, run["dag_run_id"]) if ti["task_id"] == "maintain_table"
    ]
    assert [(ti["map_index"], ti["rendered_map_index"]) for ti in mapped] == [(0, "customers")]
    table = catalog.load_table(policy.identifier)
    assert len(table.snapshots()) == policy.retain_last
    assert table.scan().to_arrow().sort_by("order_id") == rows
    reachable = reachable_files(FileIndex(table.io), table.metadata, table.metadata_location)
    # customers deletes unreferenced files: what is left under the table is exactly what it reaches.
    assert set(list_objects(s3, table.location())) == set(reachable)


@pytest.mark.skipif(not ON_POSTGRES, reason="parallel task processes: the PostgreSQL stack's promise")
def test_the_scheduled_run_maintained_its_tables_in_parallel(airflow):
    """On PostgreSQL the LocalExecutor runs mapped tasks side by side: in the scheduled run that unpausing
    started, the maintain_table instances (one per pyiceberg table) ran at the same time."""
    (scheduled,) = dag_runs(airflow, DAG_ID, "scheduled")
    mapped = [
        ti
        for ti in task_instances(airflow, DAG_ID, scheduled["dag_run_id"])
        if ti["task_id"] == "maintain_table" and ti["state"] == "success"
    ]
    pyiceberg = [t for t in settings().iceberg.tables.values() if t.backend == "pyiceberg"]
    assert len(mapped) == len(pyiceberg) >= 2, describe_run(airflow, DAG_ID, scheduled["dag_run_id"])
    assert running_together(mapped), [(ti["start_date"], ti["end_date"]) for ti in mapped]


def test_bad_params_are_refused_or_fail_before_any_change(airflow, lake):
    catalog, _ = lake
    locations = {
        p.identifier: catalog.load_table(p.identifier).metadata_location
        for p in settings().iceberg.tables.values()
    }

    with pytest.raises(AirflowApiError) as refused:
        trigger(airflow, {"tables": "orders", "dry_run": "yes"})
    assert refused.value.status_code in (400, 422), refused.value

    run = trigger(airflow, {"tables": ["no_such_table"], "dry_run": True})
    done = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=180)
    assert done["state"] == "failed"
    states = {ti["task_id"]: ti for ti in task_instances(airflow, DAG_ID, run["dag_run_id"])}
    assert states["select_tables"]["state"] == "failed" and states["select_tables"]["try_number"] == 1
    assert states["maintain_table"]["state"] == "upstream_failed"
    after = {
        p.identifier: catalog.load_table(p.identifier).metadata_location
        for p in settings().iceberg.tables.values()
    }
    assert after == locations
