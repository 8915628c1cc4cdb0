"""GDPR erasure in a real Airflow (`airflow standalone`: scheduler, DAG processor, LocalExecutor) driven
through the REST API: subject ids from the trigger form are erased from every dataset and their requests
complete; no task log holds a raw subject id; bad params are refused by the API or fail the run before
anything is stored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dataplatform import aws as aws_clients
from dataplatform.config import settings
from dataplatform.devstack.seed import GDPR_DEMO, seed_gdpr
from dataplatform.devstack.standalone import AirflowApiError, StandaloneAirflow
from dataplatform.gdpr import requests
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.s3.objects import split_uri
from tests.e2e.airflow_api import (
    describe_run,
    standalone_airflow,
    task_instances,
    unpause_after_its_scheduled_run,
    wait_for_run,
)
from tests.gdpr_helpers import pyiceberg_only_config

pytestmark = pytest.mark.e2e

DAG_ID = "gdpr_erasure"
ERASE = GDPR_DEMO["erase"]


@pytest.fixture(scope="module")
def pyiceberg_config(tmp_path_factory):
    """The local config without its Hudi datasets, for this process and the standalone Airflow."""
    saved = os.environ.get("DATAPLATFORM_CONFIG")
    os.environ["DATAPLATFORM_CONFIG"] = str(pyiceberg_only_config(tmp_path_factory.mktemp("config")))
    settings.cache_clear()
    yield
    if saved is None:
        os.environ.pop("DATAPLATFORM_CONFIG")
    else:
        os.environ["DATAPLATFORM_CONFIG"] = saved
    settings.cache_clear()


@pytest.fixture(scope="module")
def lake(moto_server, pyiceberg_config):
    moto_server.reset()
    s3 = aws_clients.client("s3")
    s3.create_bucket(Bucket=split_uri(settings().reports_uri)[0])
    catalog = load_glue_catalog(AwsAccess("us-east-1", moto_server.url, "testing", "testing"))
    seed_gdpr(catalog, s3, settings())
    return catalog


@pytest.fixture(scope="module")
def airflow(moto_server, lake, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-standalone-gdpr")
    with standalone_airflow(home, moto_server.url) as server:
        server.home = home
        unpause_after_its_scheduled_run(server, DAG_ID)
        yield server


def trigger(airflow: StandaloneAirflow, conf: dict) -> dict:
    return airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})


def holds_subject(key: str, row: dict) -> bool:
    return any(row[column] in ERASE for column in settings().gdpr.datasets[key].subject_columns)


def test_subjects_from_the_trigger_form_are_erased_and_never_logged(airflow, lake):
    config = settings().gdpr
    before = {
        key: lake.load_table(d.identifier).scan().to_arrow().to_pylist() for key, d in config.datasets.items()
    }

    run = trigger(airflow, {"subject_ids": ERASE})
    done = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=420)

    assert done["state"] == "success", describe_run(airflow, DAG_ID, run["dag_run_id"])
    mapped = [
        ti for ti in task_instances(airflow, DAG_ID, run["dag_run_id"]) if ti["task_id"] == "erase_iceberg"
    ]
    assert sorted(ti["rendered_map_index"] for ti in mapped) == sorted(config.datasets)
    for key, dataset in config.datasets.items():
        rows = lake.load_table(dataset.identifier).scan().to_arrow().to_pylist()
        expected = [row for row in before[key] if not holds_subject(key, row)]
        assert len(rows) == len(expected) < len(before[key])
        assert sorted(map(repr, rows)) == sorted(map(repr, expected))
    dynamodb = aws_clients.client("dynamodb")
    done_requests = requests.requests_by_status(dynamodb, config.requests_table, requests.COMPLETED)
    assert sorted(r.subject_id for r in done_requests) == sorted(ERASE)
    logs = [path for path in Path(airflow.home, "logs").rglob("*") if path.is_file()]
    assert any(f"run_id={run['dag_run_id']}" in str(path) for path in logs)
    leaking = [
        str(path) for path in logs if any(subject in path.read_text(errors="replace") for subject in ERASE)
    ]
    assert leaking == []


def test_bad_params_are_refused_or_fail_before_anything_is_stored(airflow, lake):
    config = settings().gdpr
    dynamodb = aws_clients.client("dynamodb")
    stored = dynamodb.scan(TableName=config.requests_table)["Count"]

    with pytest.raises(AirflowApiError) as refused:
        trigger(airflow, {"subject_ids": "cust-000001"})
    assert refused.value.status_code in (400, 422), refused.value

    run = trigger(airflow, {"subject_ids": ["cust-000001", "Jane Doe"]})
    done = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=180)

    assert done["state"] == "failed"
    states = {ti["task_id"]: ti for ti in task_instances(airflow, DAG_ID, run["dag_run_id"])}
    assert states["accept_requests"]["state"] == "failed" and states["accept_requests"]["try_number"] == 1
    assert states["claim_requests"]["state"] == "upstream_failed"
    assert dynamodb.scan(TableName=config.requests_table)["Count"] == stored
