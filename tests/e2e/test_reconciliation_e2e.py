"""Reconciliation in a real Airflow (`airflow standalone`: scheduler, DAG processor, LocalExecutor) driven
through the REST API: a triggered recon_stateless run commits a group, its asset event makes the
scheduler start recon_stateful, and the indexed artifacts equal the independent computation."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest

from dataplatform import aws as aws_clients
from dataplatform.config import settings
from dataplatform.devstack.standalone import AirflowApiError, StandaloneAirflow
from dataplatform.reconciliation import index
from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
from spark_jobs.common.storage import Storage, split_s3
from tests.e2e.airflow_api import describe_run, pause, wait_for, wait_for_run
from tests.reconciliation_oracle import expected, read_landing, without_run_fields

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

STATELESS, STATEFUL = "recon_stateless", "recon_stateful"


@pytest.fixture(scope="module")
def airflow(moto_server, local_airflow):
    """The shared standalone Airflow (tests/e2e/conftest.py) over two landed batches; both DAGs paused
    again when the module is done."""
    config = settings().reconciliation
    moto_server.reset()
    # The landing and work areas and the run reports are in the lake bucket, which exists in every
    # environment before any DAG runs.
    s3 = aws_clients.client("s3")
    for bucket in {split_s3(uri)[0] for uri in (config.landing_uri, config.work_uri, settings().reports_uri)}:
        s3.create_bucket(Bucket=bucket)
    write_batches(
        Storage(s3),
        config.landing_uri,
        GeneratorConfig(seed=21, n_keys=150, events_per_batch=300),
        batches=2,
        start=datetime(2024, 3, 5, 10, tzinfo=UTC),
    )
    yield local_airflow
    pause(local_airflow, STATELESS, STATEFUL)


def unpause(airflow: StandaloneAirflow, dag_id: str) -> None:
    def parsed():
        try:
            return airflow.api("GET", f"/dags/{dag_id}")
        except AirflowApiError as exc:
            if exc.status_code == 404:
                return None
            raise

    wait_for(parsed, 120, f"{dag_id} to be parsed", interval=2.0)
    assert airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})["is_paused"] is False


def test_a_triggered_stateless_run_schedules_the_stateful_run_through_its_asset(airflow, moto_server):
    unpause(airflow, STATEFUL)
    unpause(airflow, STATELESS)  # its own schedule may start a run too: max_active_runs=1 serialises them
    run = airflow.api("POST", f"/dags/{STATELESS}/dagRuns", json={"logical_date": None, "conf": {}})
    # Unpausing starts a scheduled run for the latest cron tick, and the manual run queues behind it.
    stateless = wait_for_run(airflow, STATELESS, run["dag_run_id"], timeout=480)
    assert stateless["state"] == "success", describe_run(airflow, STATELESS, run["dag_run_id"])

    def asset_triggered_run_done():
        runs = airflow.api("GET", f"/dags/{STATEFUL}/dagRuns", params={"limit": 10})["dag_runs"]
        done = [r for r in runs if r["run_type"] == "asset_triggered" and r["state"] in ("success", "failed")]
        return done[0] if done else None

    stateful = wait_for(asset_triggered_run_done, 420, "the asset-triggered recon_stateful run", 3.0)
    assert stateful["state"] == "success", describe_run(airflow, STATEFUL, stateful["dag_run_id"])

    config = settings().reconciliation
    want, _ = expected(read_landing(config.landing_uri, aws_clients.client("s3")))
    dynamodb = aws_clients.client("dynamodb")
    storage = Storage(aws_clients.client("s3"))

    def indexed_state():
        got = {key: index.get_artifact(dynamodb, storage, config.index_table, key) for key in want}
        return {key: without_run_fields(artifact) if artifact else None for key, artifact in got.items()}

    # The scheduled recon_stateless run may have taken a batch of its own, and its stateful run may still
    # be indexing: wait for the state to settle, then compare.
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: indexed_state() == want, 420, "the indexed state to equal the expected one", 5.0)
    assert indexed_state() == want
