"""The pyiceberg erasure of one dataset against moto (Glue catalog, versioned S3, DynamoDB): what it does
when things go wrong. The DAG-level tests (tests/integration/test_gdpr_dag.py) cover the normal runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from dataplatform.config import GdprSettings
from dataplatform.gdpr import audit, iceberg_erasure, requests, sample
from dataplatform.gdpr.erasure import ErasureContext, erase_iceberg_dataset
from dataplatform.gdpr.iceberg_erasure import ErasureError, SubjectFilter, delete_subject_rows
from dataplatform.iceberg.state import load_state, state_uri_for
from dataplatform.s3.objects import existing_versions
from tests.gdpr_helpers import pii_lake

pytestmark = pytest.mark.integration

BUCKET = "pii-lake"
SUBJECTS = ["cust-000004", "cust-000017"]
CONFIG = GdprSettings.model_validate(
    {
        "work_uri": f"s3://{BUCKET}/_gdpr/",
        "subject_id_pattern": "^cust-[0-9]{6}$",
        "datasets": {
            "payments": {
                "format": "iceberg",
                "database": "db",
                "table": "payments",
                "subject_columns": ["payer_id", "payee_id"],
            }
        },
    }
)


@pytest.fixture
def lake(aws):
    pii_lake(aws, BUCKET, CONFIG.requests_table, CONFIG.audit_table)
    aws.table = sample.write_payments(aws.catalog, "db.payments", f"s3://{BUCKET}/db/payments")
    return aws


def context(lake, run_id: str) -> ErasureContext:
    return ErasureContext(CONFIG, lake.dynamodb, lake.s3, b"test-key", run_id, catalog=lake.catalog)


def claim(lake, run_id: str) -> list[requests.Request]:
    now = datetime.now(UTC)
    return requests.claim_requests(lake.dynamodb, CONFIG.requests_table, run_id, 10, now, timedelta(hours=6))


def subject_rows(table) -> int:
    flt = SubjectFilter.build(table.schema(), ["payer_id", "payee_id"], SUBJECTS)
    return sum(
        table.scan(row_filter=flt.expression, snapshot_id=s.snapshot_id).to_arrow().num_rows
        for s in table.snapshots()
    )


def test_a_run_that_dies_between_purge_commit_and_deletes_is_finished_by_the_next(lake, monkeypatch):
    for n, subject in enumerate(SUBJECTS):
        requests.submit_request(
            lake.dynamodb, CONFIG.requests_table, f"t-{n}", subject, datetime.now(UTC), 30
        )
    real_delete = iceberg_erasure.delete_unreferenced
    monkeypatch.setattr(
        iceberg_erasure,
        "delete_unreferenced",
        # The "library" error quotes a subject id: it must reach neither the record nor the raised message.
        lambda *a: (_ for _ in ()).throw(OSError(f"worker killed while deleting {SUBJECTS[0]}")),
    )
    claimed = claim(lake, "run-1")

    with pytest.raises(RuntimeError, match="worker killed while deleting <subject #0>") as raised:
        erase_iceberg_dataset(context(lake, "run-1"), "payments", claimed)
    assert raised.value.__cause__ is None and SUBJECTS[0] not in str(raised.value)

    state_uri = state_uri_for(f"{CONFIG.work_uri}state", "db.payments")
    pending = load_state(lake.s3, state_uri).pending["files"]
    # The expiry is committed, its files not yet deleted: all of them still there.
    assert pending and existing_versions(lake.s3, pending) == sorted(pending)
    for request in claimed:
        assert (
            requests.finish_request(
                lake.dynamodb,
                CONFIG.requests_table,
                request.request_id,
                "run-1",
                ["payments"],
                datetime.now(UTC),
            ).status
            == requests.FAILED
        )

    monkeypatch.setattr(iceberg_erasure, "delete_unreferenced", real_delete)
    retry = claim(lake, "run-2")
    report = erase_iceberg_dataset(context(lake, "run-2"), "payments", retry)

    assert report["outcome"] == "verified"
    assert report["details"]["resumed_pending_deletes"] == len(pending)
    assert existing_versions(lake.s3, pending) == []
    assert load_state(lake.s3, state_uri).pending is None
    assert subject_rows(lake.catalog.load_table("db.payments")) == 0
    for request in retry:
        trail = audit.records_for(lake.dynamodb, CONFIG.audit_table, request.request_id)
        assert [r["outcome"] for r in trail] == ["failed", "verified"]
        assert "OSError: worker killed" in trail[0]["reason"] and SUBJECTS[0] not in trail[0]["reason"]


def test_a_writer_committing_during_the_delete_keeps_its_rows(lake, monkeypatch):
    table = lake.table
    extra = sample.payment_rows(batch=9, n_customers=30, per_batch=5)
    real_commit = iceberg_erasure.commit_rewrites
    calls = []

    def append_first(table, rewrites, properties, scanner):
        if not calls:
            calls.append(1)
            lake.catalog.load_table("db.payments").append(extra)
        return real_commit(table, rewrites, properties, scanner)

    monkeypatch.setattr(iceberg_erasure, "commit_rewrites", append_first)
    before = table.scan().to_arrow().num_rows

    result = delete_subject_rows(table, ["payer_id", "payee_id"], SUBJECTS)

    after = lake.catalog.load_table("db.payments").scan().to_arrow()
    extra_subject_rows = sum(
        r["payer_id"] in SUBJECTS or r["payee_id"] in SUBJECTS for r in extra.to_pylist()
    )
    assert result.conflicts_retried == 1
    assert after.num_rows == before + extra.num_rows - result.rows_deleted
    assert set(extra["payment_id"].to_pylist()) - set(after["payment_id"].to_pylist()) == {
        r["payment_id"] for r in extra.to_pylist() if r["payer_id"] in SUBJECTS or r["payee_id"] in SUBJECTS
    }
    assert extra_subject_rows <= result.rows_deleted


def test_a_subject_column_missing_from_the_table_fails_before_any_change(lake):
    bad = CONFIG.model_copy(deep=True)
    dataset = bad.datasets["payments"].model_copy(update={"subject_columns": ["customer_id"]})
    bad = bad.model_copy(update={"datasets": {"payments": dataset}})
    requests.submit_request(lake.dynamodb, CONFIG.requests_table, "t-1", SUBJECTS[0], datetime.now(UTC), 30)
    location = lake.table.metadata_location
    ctx = context(lake, "run-1")
    ctx.settings = bad

    report = erase_iceberg_dataset(ctx, "payments", claim(lake, "run-1"))

    assert report["outcome"] == "failed" and "'customer_id' is not in the table's schema" in report["reason"]
    assert lake.catalog.load_table("db.payments").metadata_location == location


def test_integer_subject_columns_take_numeric_ids_and_refuse_others(lake):
    table = lake.catalog.create_table(
        "db.accounts",
        schema=pa.schema([("account_id", pa.int64()), ("balance", pa.int64())]),
        location=f"s3://{BUCKET}/db/accounts",
    )
    table.append(
        pa.table(
            {"account_id": pa.array([1, 2, 3, 2], pa.int64()), "balance": pa.array([5, 6, 7, 8], pa.int64())}
        )
    )

    result = delete_subject_rows(table, ["account_id"], ["2"])

    assert result.rows_deleted == 2 and result.rows_by_subject == {"2": 2}
    assert sorted(table.refresh().scan().to_arrow()["account_id"].to_pylist()) == [1, 3]
    with pytest.raises(ErasureError, match="not an integer"):
        delete_subject_rows(table, ["account_id"], ["cust-000001"])


HUDI_CONFIG = GdprSettings.model_validate(
    {
        "work_uri": f"s3://{BUCKET}/_gdpr/",
        "datasets": {
            "app_logs": {
                "format": "hudi",
                "database": "lake",
                "table": "app_logs",
                "location": f"s3://{BUCKET}/hudi/app_logs/",
                "subject_columns": ["user_id"],
                "partition_column": "log_date",
                "record_key": "log_id",
                "precombine_field": "event_ts",
                "engine": "spark",
            }
        },
    }
)


def hudi_result(**changes) -> dict:
    result = {
        "job": "gdpr_hudi_delete",
        "dataset": "app_logs",
        "format": "hudi",
        "status": "erased",
        "rows_deleted": 5,
        "rows_deleted_by_subject": [2, 3],
        "files_rewritten": 2,
        "commit": "20240305100000000",
        "expired_snapshots": [],
        "dropped_refs": [],
        "pinned_refs": [],
        "verification": {
            "passed": True,
            "checked": ["20240305100000000", "latest"],
            "rows_found": {"20240305100000000": 0, "latest": 0},
            "cleaned": [],
        },
        "started_at": "2024-03-05T10:00:00+00:00",
        "finished_at": "2024-03-05T10:05:00+00:00",
    }
    return {**result, **changes}


def log_file(users: list[str]) -> bytes:
    """A Parquet base file of the Hudi table with rows of ``users``."""
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"log_id": list(range(len(users))), "user_id": users}), sink)
    return sink.getvalue()


@pytest.mark.parametrize(
    "result, outcome, reason",
    [
        (hudi_result(), "verified", None),
        (hudi_result(rows_deleted_by_subject=[2]), "failed", "the Spark job's result"),
        (None, "failed", "the Spark job wrote no result"),
    ],
)
def test_a_spark_jobs_result_becomes_each_requests_outcome(lake, result, outcome, reason):
    from dataplatform.gdpr.erasure import spark_outcome
    from spark_jobs.common.storage import Storage

    s3 = lake.s3
    # A file the Hudi cleaner deleted: its bytes live on as a noncurrent version until the record step.
    s3.put_object(Bucket=BUCKET, Key="hudi/app_logs/2024-03-01/old.parquet", Body=log_file(SUBJECTS))
    s3.delete_object(Bucket=BUCKET, Key="hudi/app_logs/2024-03-01/old.parquet")
    s3.put_object(Bucket=BUCKET, Key="hudi/app_logs/2024-03-01/live.parquet", Body=log_file(["cust-000001"]))
    result_uri = f"s3://{BUCKET}/_gdpr/app_logs/run-1/result.json"
    storage = Storage(s3)
    if result is not None:
        storage.write_json(result_uri, result)
    ctx = ErasureContext(HUDI_CONFIG, lake.dynamodb, s3, b"test-key", "run-1")
    claimed = [
        requests.Request("t-1", SUBJECTS[1], "x", "y", requests.IN_PROGRESS),
        requests.Request("t-2", SUBJECTS[0], "x", "y", requests.IN_PROGRESS),
    ]

    got = spark_outcome(ctx, "app_logs", claimed, storage, result_uri)

    assert got.outcome == outcome
    assert (got.reason is None) if reason is None else reason in got.reason
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="hudi/app_logs/")
    keys = sorted(v["Key"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []))
    if outcome == "verified":
        # Counts come back by position in the spec's sorted subject list.
        assert got.rows_by_subject == {SUBJECTS[0]: 2, SUBJECTS[1]: 3} and got.rows_deleted == 5
        assert got.details["noncurrent_versions_deleted"] == 2
        assert keys == ["hudi/app_logs/2024-03-01/live.parquet"]
    else:
        assert "hudi/app_logs/2024-03-01/old.parquet" in keys


def test_the_spark_record_step_checks_the_hudi_location_itself(lake):
    """The job's result says verified, yet a base file under the Hudi location still holds a subject's
    rows: the record step's own check of every object version fails the dataset, naming the file."""
    from dataplatform.gdpr.erasure import spark_outcome
    from spark_jobs.common.storage import Storage

    lake.s3.put_object(Bucket=BUCKET, Key="hudi/app_logs/2024-03-01/slice-1.parquet", Body=log_file(SUBJECTS))
    result_uri = f"s3://{BUCKET}/_gdpr/app_logs/run-1/result.json"
    Storage(lake.s3).write_json(result_uri, hudi_result())
    ctx = ErasureContext(HUDI_CONFIG, lake.dynamodb, lake.s3, b"test-key", "run-1")
    claimed = [requests.Request(f"t-{n}", s, "x", "y", requests.IN_PROGRESS) for n, s in enumerate(SUBJECTS)]

    got = spark_outcome(ctx, "app_logs", claimed, Storage(lake.s3), result_uri)

    assert got.outcome == "failed" and "slice-1.parquet" in got.reason
    assert list(got.verification["holding_subjects"].values()) == [2]
    assert got.verification["job"]["passed"]
    assert not any(s in json.dumps(got.verification) + got.reason for s in SUBJECTS)


def test_a_retry_after_the_delete_committed_reports_the_rows_that_delete_removed(lake, monkeypatch):
    """Found by the crash harness (tests/crash): a task killed after its delete committed left the retry
    finding no row, and the request's progress and audit said 0 rows deleted."""
    from dataplatform.gdpr import erasure

    for n, subject in enumerate(SUBJECTS):
        requests.submit_request(
            lake.dynamodb, CONFIG.requests_table, f"t-{n}", subject, datetime.now(UTC), 30
        )
    table = lake.catalog.load_table("db.payments")
    flt = SubjectFilter.build(table.schema(), ["payer_id", "payee_id"], SUBJECTS)
    before = table.scan(row_filter=flt.expression).to_arrow().num_rows
    claimed = claim(lake, "run-1")
    real_purge = erasure.purge_subject_history

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("worker killed")  # after the delete's commit, before anything is recorded

    monkeypatch.setattr(erasure, "purge_subject_history", killed)
    with pytest.raises(KeyboardInterrupt):
        erase_iceberg_dataset(context(lake, "run-1"), "payments", claimed)
    monkeypatch.setattr(erasure, "purge_subject_history", real_purge)
    retry = ErasureContext(CONFIG, lake.dynamodb, lake.s3, b"test-key", "run-1", 2, catalog=lake.catalog)
    report = erase_iceberg_dataset(retry, "payments", claimed)

    assert report["outcome"] == "verified" and report["rows_deleted"] == before > 0
    stored = requests.get_requests(lake.dynamodb, CONFIG.requests_table, [r.request_id for r in claimed])
    assert sum(r.progress["payments"]["rows_deleted"] for r in stored) >= report["rows_deleted"] > 0
    trail = [audit.records_for(lake.dynamodb, CONFIG.audit_table, r.request_id) for r in claimed]
    assert [[r["outcome"] for r in records] for records in trail] == [["verified"], ["verified"]]
    assert sum(int(records[0]["rows_deleted"]) for records in trail) >= report["rows_deleted"]
