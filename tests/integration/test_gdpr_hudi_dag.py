"""``gdpr_erasure`` over a real Hudi table on the local backend (``dag.test()``; the job is a local
``spark-submit`` with the locked Hudi bundle, the table on moto S3 in a versioned bucket), and the fault
the issue names: the job killed after its delete commit and before the clean.

The first run's job stops right after the delete commit (``GDPR_HUDI_FAULT=after_delete_commit``: the
process ends as a kill would, no result; its local retry stops at the same point): the old file slices,
which still hold the subjects' rows, are on S3, and the requests are FAILED, not COMPLETED. The second run claims them again: its job finds no
row left to delete, purges the old slices, verifies; ``record`` deletes the noncurrent object versions
and verifies every object version itself; the requests are COMPLETED. Checked from S3 itself: after the
first run a Parquet base file still holds subject rows, after the second no object version does.
"""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest
import yaml

from dataplatform.config import CONFIG_DIR, settings
from dataplatform.gdpr import audit, requests
from dataplatform.s3.objects import split_uri
from spark_jobs import gdpr_hudi_delete as hudi_job
from spark_jobs.common.hudi_layout import completed_commits
from spark_jobs.common.storage import Storage
from tests import hudi_helpers
from tests.airflow_helpers import run_repo_dag, task_states
from tests.gdpr_helpers import pii_lake

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.hudi]

SUBJECTS = ["cust-000101", "cust-000202"]
LOCATION = "s3://dataplatform-local-lake/hudi/app_logs/"
HUDI_DATASET = {
    "format": "hudi",
    "database": "lake",
    "table": "app_logs",
    "location": LOCATION,
    "subject_columns": ["user_id", "peer_id"],
    "partition_column": "log_date",
    "record_key": "log_id",
    "precombine_field": "event_ts",
    "hudi_table_type": "COPY_ON_WRITE",
    "engine": "spark",
}
GROUP = "erase_app_logs."


@pytest.fixture
def hudi_lake(aws, airflow_db, hudi_tables, tmp_path, monkeypatch):
    """The local config with one dataset, the seeded copy-on-write table (so COMPLETED means: verified
    there)."""
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["gdpr"]["datasets"] = {"app_logs": HUDI_DATASET}
    path = tmp_path / "hudi.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DATAPLATFORM_CONFIG", str(path))
    settings.cache_clear()
    bucket, _ = split_uri(LOCATION)
    pii_lake(aws, bucket)
    hudi_helpers.put_table(aws.s3, hudi_tables["cow"], LOCATION)
    yield aws
    settings.cache_clear()


def subject_rows_in_versions(s3, location: str) -> dict[str, int]:
    """Every object version under ``location`` read from S3: base files' rows naming a subject
    (pyarrow), any other object holding a subject id's bytes."""
    bucket, prefix = split_uri(location)
    holding = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            key = version["Key"]
            body = s3.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
            if key.endswith(".parquet") and "/.hoodie/" not in key:
                rows = pq.read_table(io.BytesIO(body), columns=["user_id", "peer_id"]).to_pylist()
                found = sum(1 for r in rows if r["user_id"] in SUBJECTS or r["peer_id"] in SUBJECTS)
            else:
                found = sum(1 for subject in SUBJECTS if subject.encode() in body)
            if found:
                holding[f"{key}@{version['VersionId']}"] = found
    return holding


def current_base_files_holding(s3, location: str) -> int:
    bucket, prefix = split_uri(location)
    found = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet") and "/.hoodie/" not in obj["Key"]:
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                rows = pq.read_table(io.BytesIO(body), columns=["user_id"]).to_pylist()
                found += any(r["user_id"] in SUBJECTS for r in rows)
    return found


def test_a_job_killed_after_the_delete_commit_leaves_the_requests_open_and_the_next_run_purges(
    hudi_lake, monkeypatch
):
    aws = hudi_lake
    config = settings().gdpr
    dynamodb = aws.client("dynamodb")
    commits_seeded = completed_commits(Storage(aws.s3), LOCATION)

    monkeypatch.setenv(hudi_job.FAULT_ENV, hudi_job.AFTER_DELETE_COMMIT)
    killed = run_repo_dag("gdpr_erasure", run_conf={"subject_ids": SUBJECTS})
    states = task_states(killed)
    assert states[GROUP + "gdpr_app_logs.spark_submit[-1]"] == "failed"
    (submit,) = [
        ti for ti in killed.get_task_instances() if ti.task_id == GROUP + "gdpr_app_logs.spark_submit"
    ]
    assert submit.try_number == 2  # the local backend retries once
    assert states[GROUP + "record[-1]"] == "success"
    assert states["finish_requests[-1]"] == "failed" and killed.state == "failed"
    # The delete committed (a commit newer than the seeded ones; archival may have moved older ones out
    # of the active timeline), no clean ran since, and the old slices that still hold the subjects' rows
    # are on S3.
    storage = Storage(aws.s3)
    (delete,) = [c for c in completed_commits(storage, LOCATION) if c.instant > commits_seeded[-1].instant]
    timeline = storage.list_children(LOCATION + ".hoodie/timeline/")
    assert not [name for name in timeline if ".clean" in name and name[:17] > delete.instant]
    assert current_base_files_holding(aws.s3, LOCATION) > 0
    failed = requests.requests_by_status(dynamodb, config.requests_table, requests.FAILED)
    assert sorted(r.subject_id for r in failed) == SUBJECTS
    assert not requests.requests_by_status(dynamodb, config.requests_table, requests.COMPLETED)

    monkeypatch.delenv(hudi_job.FAULT_ENV)
    finished = run_repo_dag("gdpr_erasure")
    states = task_states(finished)
    assert states[GROUP + "gdpr_app_logs.spark_submit[-1]"] == "success"
    assert finished.state == "success", states
    completed = requests.requests_by_status(dynamodb, config.requests_table, requests.COMPLETED)
    assert sorted(r.subject_id for r in completed) == SUBJECTS
    # From S3 itself: no version of any object under the table holds a subject (the cleaner removed the
    # old slices, record deleted their noncurrent versions).
    assert subject_rows_in_versions(aws.s3, LOCATION) == {}
    for request in completed:
        records = audit.records_for(dynamodb, config.audit_table, request.request_id)
        assert sorted(r["outcome"] for r in records) == ["failed", "verified"]
        assert [r["verification"]["passed"] for r in records if r["outcome"] == "verified"] == [True]
