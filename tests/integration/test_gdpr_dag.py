"""The gdpr_erasure DAG run for real (in-process ``dag.test()``) on the local config's datasets:
pyiceberg tables with personal data in the moto Glue catalog and a versioned S3 bucket, requests and
audit in moto DynamoDB. The expected rows come from the tables as read before the run, filtered in plain
Python: an oracle that shares no code with the erasure."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from dataplatform.config import settings
from dataplatform.devstack.seed import GDPR_DEMO, GDPR_DEMO_SOFT_DELETED, seed_gdpr
from dataplatform.gdpr import audit, requests
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.reports import report_key
from dataplatform.s3.objects import split_uri
from tests.airflow_helpers import run_repo_dag, task_states
from tests.gdpr_helpers import pyiceberg_only_config

pytestmark = pytest.mark.integration

DAG_ID = "gdpr_erasure"
ERASE = GDPR_DEMO["erase"]


@pytest.fixture
def lake(aws, airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("DATAPLATFORM_CONFIG", str(pyiceberg_only_config(tmp_path)))
    settings.cache_clear()
    aws.catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    aws.dynamodb = aws.client("dynamodb")
    aws.s3.create_bucket(Bucket=split_uri(settings().reports_uri)[0])
    seed_gdpr(aws.catalog, aws.s3, settings())
    yield aws
    settings.cache_clear()


def table_of(lake, key: str):
    return lake.catalog.load_table(settings().gdpr.datasets[key].identifier)


def all_rows(table, snapshot_id: int | None = None) -> list[dict]:
    rows = table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()
    return sorted(rows, key=lambda row: json.dumps(row, default=str, sort_keys=True))


def holds_subject(key: str, row: dict, subjects: list[str]) -> bool:
    columns = settings().gdpr.datasets[key].subject_columns
    return any(row[column] in subjects for column in columns)


def parquet_rows_of_subjects(lake, key: str, location: str) -> int:
    bucket, prefix = split_uri(location.rstrip("/") + "/")
    pages = lake.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    rows = 0
    for version in (v for page in pages for v in page.get("Versions", [])):
        if version["Key"].endswith(".parquet"):
            body = lake.s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
            data = pq.read_table(io.BytesIO(body["Body"].read())).to_pylist()
            rows += sum(holds_subject(key, row, ERASE) for row in data)
    return rows


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
        # Every Parquet version under the location, reached or not, read here: none holds the subjects.
        assert parquet_rows_of_subjects(lake, key, table.location()) == 0
    # Maintenance soft-deleted customer_profiles' history (unreferenced.action tag): the erasure found the
    # tagged files no metadata reaches and deleted those holding the subjects' rows.
    assert report(lake, run.run_id, GDPR_DEMO_SOFT_DELETED)["details"]["unreachable_files_deleted"]
    dynamodb = lake.dynamodb
    done = requests.requests_by_status(dynamodb, config.requests_table, requests.COMPLETED)
    assert sorted(r.subject_id for r in done) == sorted(ERASE)
    for request in done:
        records = audit.records_for(dynamodb, config.audit_table, request.request_id)
        assert sorted(r["dataset"] for r in records) == sorted(config.datasets)
        assert all(r["outcome"] == "verified" for r in records)
        assert request.subject_id not in json.dumps(records)


def tag_first_snapshot(lake, key: str, tag: str) -> int:
    table = table_of(lake, key)
    first = table.snapshots()[0].snapshot_id
    table.manage_snapshots().create_tag(first, tag).commit()
    return first


def test_a_pinned_tag_fails_its_dataset_under_fail_and_is_dropped_under_drop(lake):
    config = settings().gdpr
    assert config.datasets["customer_profiles"].pinned_refs == "fail"
    assert config.datasets["payments"].pinned_refs == "drop"
    tag_first_snapshot(lake, "customer_profiles", "audit-2024")
    tag_first_snapshot(lake, "payments", "audit-2024")
    profiles_before = table_of(lake, "customer_profiles")

    run = run_repo_dag(DAG_ID, run_conf={"subject_ids": ERASE})

    assert run.state == "failed"
    states = task_states(run)
    assert states["finish_requests[-1]"] == "failed" and states["erase_iceberg[0]"] == "success"
    pinned = report(lake, run.run_id, "customer_profiles")
    assert pinned["outcome"] == "pinned_refs" and "audit-2024" in pinned["reason"]
    # Nothing changed in the table under `fail`.
    profiles = table_of(lake, "customer_profiles")
    assert profiles.metadata_location == profiles_before.metadata_location
    payments = table_of(lake, "payments")
    assert "audit-2024" not in payments.metadata.refs
    assert not [r for r in all_rows(payments) if holds_subject("payments", r, ERASE)]
    failed = requests.requests_by_status(lake.dynamodb, config.requests_table, requests.FAILED)
    assert len(failed) == 2 and all("audit-2024" in r.reason for r in failed)

    # Someone removes the tag; the next run claims the failed requests again and completes them.
    profiles.manage_snapshots().remove_tag("audit-2024").commit()
    retry = run_repo_dag(DAG_ID)

    assert retry.state == "success", task_states(retry)
    done = requests.requests_by_status(lake.dynamodb, config.requests_table, requests.COMPLETED)
    assert sorted(r.subject_id for r in done) == sorted(ERASE)
    assert all(r.attempts == 2 for r in done)
    assert not [
        r
        for r in all_rows(table_of(lake, "customer_profiles"))
        if holds_subject("customer_profiles", r, ERASE)
    ]


def test_a_rerun_changes_nothing(lake):
    first = run_repo_dag(DAG_ID, run_conf={"subject_ids": ERASE})
    assert first.state == "success", task_states(first)
    locations = {key: table_of(lake, key).metadata_location for key in settings().gdpr.datasets}
    objects_before = sorted(
        o["Key"] for o in lake.s3.list_objects_v2(Bucket="dataplatform-local-lake")["Contents"]
    )

    again = run_repo_dag(DAG_ID)

    assert again.state == "success", task_states(again)
    assert task_states(again)["erase_iceberg[-1]"] == "skipped"
    assert {key: table_of(lake, key).metadata_location for key in settings().gdpr.datasets} == locations
    reports = {o["Key"] for o in lake.s3.list_objects_v2(Bucket="dataplatform-local-lake")["Contents"]}
    assert sorted(k for k in reports if "/_reports/" not in "/" + k) == [
        k for k in objects_before if "/_reports/" not in "/" + k
    ]
    assert report(lake, again.run_id, "requests")["completed"] == 0


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"subject_ids": ["cust-000001", "not a customer"]}, "does not match the configured pattern"),
        ({"subject_ids": ["cust-000001"], "datasets": ["no_such_dataset"]}, "unknown dataset"),
    ],
)
def test_bad_params_fail_before_anything_is_stored_or_changed(lake, conf, message, capfd):
    locations = {key: table_of(lake, key).metadata_location for key in settings().gdpr.datasets}

    run = run_repo_dag(DAG_ID, run_conf=conf)

    assert run.state == "failed"
    assert task_states(run)["accept_requests[-1]"] == "failed"
    output = "".join(capfd.readouterr())
    assert message in output
    assert "not a customer" not in output
    tables = lake.dynamodb.list_tables()["TableNames"]
    if settings().gdpr.requests_table in tables:
        assert lake.dynamodb.scan(TableName=settings().gdpr.requests_table)["Count"] == 0
    assert {key: table_of(lake, key).metadata_location for key in settings().gdpr.datasets} == locations
