"""The gdpr_erasure DAG run for real (in-process ``dag.test()``) on the local config's datasets:
pyiceberg tables with personal data in the moto Glue catalog and a versioned S3 bucket, requests and
audit in moto DynamoDB. The expected rows come from the tables as read before the run, filtered in plain
Python: an oracle that shares no code with the erasure."""

from __future__ import annotations

import json

import pytest

from dataplatform.config import settings
from dataplatform.devstack.seed import GDPR_DEMO, seed_gdpr
from dataplatform.gdpr import audit, requests
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.objects import split_uri
from dataplatform.reports import report_key
from tests.airflow_helpers import run_repo_dag, task_states

pytestmark = pytest.mark.integration

DAG_ID = "gdpr_erasure"
ERASE = GDPR_DEMO["erase"]


@pytest.fixture
def lake(aws, airflow_db):
    aws.catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    aws.dynamodb = aws.client("dynamodb")
    aws.s3.create_bucket(Bucket=split_uri(settings().reports_uri)[0])
    seed_gdpr(aws.catalog, aws.s3, settings())
    return aws


def table_of(lake, key: str):
    return lake.catalog.load_table(settings().gdpr.datasets[key].identifier)


def all_rows(table, snapshot_id: int | None = None) -> list[dict]:
    rows = table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()
    return sorted(rows, key=lambda row: json.dumps(row, default=str, sort_keys=True))


def holds_subject(key: str, row: dict, subjects: list[str]) -> bool:
    columns = settings().gdpr.datasets[key].subject_columns
    return any(row[column] in subjects for column in columns)


def report(lake, run_id: str, name: str) -> dict:
    bucket, prefix = split_uri(settings().reports_uri)
    key = prefix + report_key(DAG_ID, run_id, name)
    return json.loads(lake.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_erasure_removes_exactly_the_subjects_rows_from_every_snapshot(lake):
    config = settings().gdpr
    before = {key: all_rows(table_of(lake, key)) for key in config.datasets}

    run = run_repo_dag(DAG_ID, run_conf={"subject_ids": ERASE})

    assert run.state == "success", task_states(run)
    for key in config.datasets:
        table = table_of(lake, key)
        expected = [row for row in before[key] if not holds_subject(key, row, ERASE)]
        assert len(expected) < len(before[key])
        assert all_rows(table) == expected
        for snapshot in table.snapshots():
            assert not [r for r in all_rows(table, snapshot.snapshot_id) if holds_subject(key, r, ERASE)]
        got = report(lake, run.run_id, key)
        assert got["outcome"] == "verified"
        assert got["rows_deleted"] == len(before[key]) - len(expected)
    dynamodb = lake.dynamodb
    done = requests.requests_by_status(dynamodb, config.requests_table, requests.COMPLETED)
    assert sorted(r.subject_id for r in done) == sorted(ERASE)
    for request in done:
        records = audit.records_for(dynamodb, config.audit_table, request.request_id)
        assert sorted(r["dataset"] for r in records) == sorted(config.datasets)
        assert all(r["outcome"] == "verified" for r in records)
        assert request.subject_id not in json.dumps(records)
