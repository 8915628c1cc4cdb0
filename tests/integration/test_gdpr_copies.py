"""Issue 12, sections 1 and 3: the copies of a table's data that its metadata no longer reaches, and a
verification that reads S3 itself. Real pyiceberg tables in the moto Glue catalog, a versioned S3 bucket,
moto DynamoDB. The checks read every object version in S3 with boto3 and pyarrow here, sharing no code
with the erasure."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.conversions import from_bytes

from dataplatform.config import GdprSettings, IcebergTablePolicy
from dataplatform.gdpr import audit, requests, sample
from dataplatform.gdpr.erasure import ErasureContext, erase_iceberg_dataset
from dataplatform.gdpr.iceberg_erasure import SubjectFilter
from dataplatform.gdpr.verify import verify_iceberg_table
from dataplatform.iceberg.archive import archive_register
from dataplatform.iceberg.maintenance import MaintenanceContext, RunClock, maintain_table
from tests.gdpr_helpers import pii_lake

pytestmark = pytest.mark.integration

BUCKET = "pii-copies"
SUBJECT = "cust-000004"
LOCATION = f"s3://{BUCKET}/db/profiles"


def settings_for(*tables: str) -> GdprSettings:
    return GdprSettings.model_validate(
        {
            "work_uri": f"s3://{BUCKET}/_gdpr/",
            "subject_id_pattern": "^cust-[0-9]{6}$",
            "datasets": {
                name: {
                    "format": "iceberg",
                    "database": "db",
                    "table": name,
                    "subject_columns": ["customer_id"],
                }
                for name in tables
            },
        }
    )


@pytest.fixture
def lake(aws):
    return pii_lake(aws, BUCKET)


def four_overwrites(lake):
    """Four full overwrites of 30 customers (every one holds the subject's row), partitioned by country."""
    table = sample.write_profiles(lake.catalog, "db.profiles", LOCATION, n_customers=30, updates=0)
    for version in range(1, 4):
        table.overwrite(sample.profile_rows(range(30), version))
    return table


def maintain_with_tag(lake, table_name: str = "profiles") -> dict:
    policy = IcebergTablePolicy.model_validate(
        {
            "database": "db",
            "table": table_name,
            "retain_last": 1,
            "max_snapshot_age_hours": 0,
            "unreferenced": {"action": "tag"},
            "created": {"enabled": False},
        }
    )
    ctx = MaintenanceContext(lake.catalog, lake.s3, f"s3://{BUCKET}/_state/")
    now = datetime.now(UTC)
    return maintain_table(ctx, table_name, policy, RunClock(now.date(), now))


def erase(lake, config: GdprSettings, dataset: str, request_id: str, run_id: str) -> dict:
    requests.submit_request(lake.dynamodb, "gdpr_requests", request_id, SUBJECT, datetime.now(UTC), 30)
    claimed = requests.claim_requests(
        lake.dynamodb, "gdpr_requests", run_id, 10, datetime.now(UTC), timedelta(hours=6)
    )
    ctx = ErasureContext(config, lake.dynamodb, lake.s3, b"test-key", run_id, catalog=lake.catalog)
    return erase_iceberg_dataset(ctx, dataset, claimed)


# -- what S3 holds, read here ----------------------------------------------------------------------------


def all_versions(s3, prefix: str = "db/profiles/") -> list[dict]:
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=prefix)
    return [v for page in pages for v in page.get("Versions", [])]


def subject_rows_in(s3, version: dict) -> int:
    body = s3.get_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
    rows = pq.read_table(io.BytesIO(body), columns=["customer_id"])
    return pc.sum(pc.equal(rows["customer_id"], SUBJECT)).as_py() or 0


def parquet_holding_subject(s3, prefix: str = "db/profiles/") -> dict[str, int]:
    """``s3://bucket/key?versionId=...`` -> the subject's rows, for every Parquet version holding some."""
    found = {}
    for version in all_versions(s3, prefix):
        if version["Key"].endswith(".parquet"):
            rows = subject_rows_in(s3, version)
            if rows:
                found[f"s3://{BUCKET}/{version['Key']}?versionId={version['VersionId']}"] = rows
    return found


def tagged_deleted(s3, uri: str) -> bool:
    key = uri.split("?")[0].removeprefix(f"s3://{BUCKET}/")
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
    return {"Key": "delete-tag-name", "Value": "deleted"} in tags


def audit_records(lake, request_id: str) -> list[dict]:
    return audit.records_for(lake.dynamodb, "gdpr_audit", request_id)


# -- section 1 -------------------------------------------------------------------------------------------


def test_files_maintenance_kept_with_the_delete_tag_are_erased_and_listed_in_the_audit(lake):
    """The issue's reproduction: verified, yet tagged unreachable Parquet objects held the rows."""
    four_overwrites(lake)
    maintenance = maintain_with_tag(lake)
    assert maintenance["unreferenced"]["tagged"] > 0
    holding_before = parquet_holding_subject(lake.s3)
    soft_deleted = {uri.split("?")[0] for uri in holding_before if tagged_deleted(lake.s3, uri)}
    assert len(soft_deleted) == 3  # one file per overwrite that maintenance expired

    report = erase(lake, settings_for("profiles"), "profiles", "t-1", "run-1")

    assert report["outcome"] == "verified", report["reason"]
    assert parquet_holding_subject(lake.s3) == {}
    listed = report["details"]["unreachable_files_deleted"]
    assert soft_deleted <= set(listed)
    # Every version of them is gone, not hidden behind a delete marker.
    keys = {v["Key"] for v in all_versions(lake.s3)}
    assert not {uri.removeprefix(f"s3://{BUCKET}/") for uri in soft_deleted} & keys
    [record] = audit_records(lake, "t-1")
    assert record["outcome"] == "verified"
    assert soft_deleted <= set(record["details"]["unreachable_files_deleted"])
    assert SUBJECT not in json.dumps(record)
    # The table itself is intact: every other customer's current row is there.
    table = lake.catalog.load_table("db.profiles")
    assert sorted(table.scan().to_arrow()["customer_id"].to_pylist()) == sorted(
        sample.customer_id(n) for n in range(30) if sample.customer_id(n) != SUBJECT
    )


def test_a_rerun_after_the_sweep_deletes_nothing(lake):
    four_overwrites(lake)
    maintain_with_tag(lake)
    config = settings_for("profiles")
    erase(lake, config, "profiles", "t-1", "run-1")
    location = lake.catalog.load_table("db.profiles").metadata_location
    versions = sorted((v["Key"], v["VersionId"]) for v in all_versions(lake.s3))

    again = erase(lake, config, "profiles", "t-2", "run-2")

    assert again["outcome"] == "verified"
    assert again["details"]["unreachable_files_deleted"] == []
    assert lake.catalog.load_table("db.profiles").metadata_location == location
    assert sorted((v["Key"], v["VersionId"]) for v in all_versions(lake.s3)) == versions


def test_orphans_of_a_failed_writer_and_older_versions_are_erased(lake):
    table = four_overwrites(lake)
    rows = sample.profile_rows(range(30), 9)
    # A writer that died before its commit: a Parquet file under data/ that no metadata names, written
    # twice, so the older version holds the subject and the current one does not.
    orphan = "db/profiles/data/country=fr/00000-9-orphan.parquet"
    for part in (rows, rows.filter(pc.not_equal(rows["customer_id"], SUBJECT))):
        sink = io.BytesIO()
        pq.write_table(part, sink)
        lake.s3.put_object(Bucket=BUCKET, Key=orphan, Body=sink.getvalue())
    # An unrelated orphan without the subject stays.
    clean = "db/profiles/data/country=fr/00000-9-clean.parquet"
    sink = io.BytesIO()
    pq.write_table(rows.filter(pc.not_equal(rows["customer_id"], SUBJECT)), sink)
    lake.s3.put_object(Bucket=BUCKET, Key=clean, Body=sink.getvalue())
    assert table.current_snapshot() is not None

    report = erase(lake, settings_for("profiles"), "profiles", "t-1", "run-1")

    assert report["outcome"] == "verified", report["reason"]
    assert f"s3://{BUCKET}/{orphan}" in report["details"]["unreachable_files_deleted"]
    keys = {v["Key"] for v in all_versions(lake.s3)}
    assert orphan not in keys and clean in keys
    assert parquet_holding_subject(lake.s3) == {}


# -- archive tables ----------------------------------------------------------------------------------------


def register_archive(lake) -> str:
    report = archive_register(lake.catalog, lake.s3, "db.profiles", "oldest", "profiles_archive")
    assert report["registered"], report["summary"]
    return "db.profiles_archive"


def test_an_archive_table_no_dataset_covers_stops_the_erasure_before_any_change(lake):
    four_overwrites(lake)
    register_archive(lake)
    maintain_with_tag(lake)
    location = lake.catalog.load_table("db.profiles").metadata_location
    versions = sorted((v["Key"], v["VersionId"]) for v in all_versions(lake.s3))

    report = erase(lake, settings_for("profiles"), "profiles", "t-1", "run-1")

    assert report["outcome"] == "failed"
    assert "db.profiles_archive" in report["reason"] and "gdpr.datasets" in report["reason"]
    assert lake.catalog.load_table("db.profiles").metadata_location == location
    assert sorted((v["Key"], v["VersionId"]) for v in all_versions(lake.s3)) == versions
    [record] = audit_records(lake, "t-1")
    assert record["outcome"] == "failed"


def test_an_archive_configured_as_a_dataset_is_erased_and_keeps_its_files_until_then(lake):
    four_overwrites(lake)
    archive = register_archive(lake)
    maintain_with_tag(lake)
    config = settings_for("profiles", "profiles_archive")
    archive_files_before = {
        task.file.file_path for task in lake.catalog.load_table(archive).scan().plan_files()
    }

    first = erase(lake, config, "profiles", "t-1", "run-1")

    # The source's erasure leaves the archive's files alone (they are the archive's to erase), so its
    # verification still finds the subject in them: not verified yet.
    assert first["outcome"] == "failed" and "still hold the subjects" in first["reason"]
    listed_keys = {v["Key"] for v in all_versions(lake.s3)}
    assert {p.removeprefix(f"s3://{BUCKET}/") for p in archive_files_before} <= listed_keys
    assert SUBJECT in lake.catalog.load_table(archive).scan().to_arrow()["customer_id"].to_pylist()

    archived = erase(lake, config, "profiles_archive", "t-2", "run-2")
    again = erase(lake, config, "profiles", "t-3", "run-3")

    assert archived["outcome"] == "verified", archived["reason"]
    assert again["outcome"] == "verified", again["reason"]
    assert parquet_holding_subject(lake.s3) == {}
    rows = lake.catalog.load_table(archive).scan().to_arrow()["customer_id"].to_pylist()
    assert SUBJECT not in rows and len(rows) == 29


# -- section 3: verification -------------------------------------------------------------------------------


def test_verification_reads_every_version_and_finds_a_planted_copy(lake):
    table = four_overwrites(lake)
    erase(lake, settings_for("profiles"), "profiles", "t-1", "run-1")
    table = table.refresh()
    subjects = SubjectFilter.build(table.schema(), ["customer_id"], [SUBJECT])
    # A large orphan of other customers: its footer statistics exclude the subject.
    others = pa.table(
        {
            "customer_id": [f"cust-{n:06d}" for n in range(100_000, 150_000)],
            "note": [f"{n * 7919 % 1_000_003:032x}" for n in range(50_000)],
        }
    )
    sink = io.BytesIO()
    pq.write_table(others, sink, compression="none")
    big = sink.getvalue()
    lake.s3.put_object(Bucket=BUCKET, Key="db/profiles/data/others.parquet", Body=big)
    data_versions = [v for v in all_versions(lake.s3) if v["Key"].endswith(".parquet")]

    clean = verify_iceberg_table(table, lake.s3, subjects)

    assert clean.passed
    assert clean.objects_read >= len(data_versions) > 0
    # Only the large file's footer was read: less than its size in all.
    assert len(big) > 1_000_000 and 0 < clean.bytes_read < len(big)

    # A copy nothing knows about, e.g. restored by hand after the erasure.
    rows = sample.profile_rows(range(3, 6), 7)
    sink = io.BytesIO()
    pq.write_table(rows, sink)
    lake.s3.put_object(Bucket=BUCKET, Key="db/profiles/data/restored.parquet", Body=sink.getvalue())

    planted = verify_iceberg_table(table, lake.s3, subjects)

    assert not planted.passed
    assert [label.split("?")[0] for label in planted.holding] == [
        f"s3://{BUCKET}/db/profiles/data/restored.parquet"
    ]
    assert list(planted.holding.values()) == [1]


def test_no_manifest_the_current_snapshot_reaches_names_an_erased_subject_that_was_a_files_minimum(lake):
    """The issue's section 2 reproduction: the copy-on-write commit's DELETED entries keep the original
    files' bounds, and the subject was the minimum of customer_id in one."""
    table = sample.write_profiles(lake.catalog, "db.profiles", LOCATION, n_customers=30, updates=0)
    table = lake.catalog.load_table("db.profiles")
    field_id = table.schema().find_field("customer_id").field_id
    minimums = {
        from_bytes(table.schema().find_field("customer_id").field_type, task.file.lower_bounds[field_id])
        for task in table.scan().plan_files()
    }
    subject = sorted(minimums)[0]
    assert subject == "cust-000000"
    requests.submit_request(lake.dynamodb, "gdpr_requests", "t-1", subject, datetime.now(UTC), 30)
    claimed = requests.claim_requests(
        lake.dynamodb, "gdpr_requests", "run-1", 10, datetime.now(UTC), timedelta(hours=6)
    )
    ctx = ErasureContext(
        settings_for("profiles"), lake.dynamodb, lake.s3, b"k", "run-1", catalog=lake.catalog
    )
    erase_iceberg_dataset(ctx, "profiles", claimed)

    table = lake.catalog.load_table("db.profiles")
    field_type = table.schema().find_field("customer_id").field_type
    in_clear = [
        entry.data_file.file_path
        for manifest in table.current_snapshot().manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False)
        for bounds in (entry.data_file.lower_bounds or {}, entry.data_file.upper_bounds or {})
        if field_id in bounds and from_bytes(field_type, bounds[field_id]) == subject
    ]
    assert in_clear == []


def test_the_spark_record_step_erases_what_an_iceberg_jobs_metadata_no_longer_reaches(lake):
    """``engine: spark``: the job deletes and expires through the metadata only; the record step, in
    Python after the job, sweeps the soft-deleted copies and verifies from S3 itself."""
    from dataplatform.gdpr.erasure import spark_outcome
    from dataplatform.gdpr.iceberg_erasure import SubjectScanner, delete_subject_rows, purge_subject_history
    from spark_jobs.common.storage import Storage

    four_overwrites(lake)
    maintain_with_tag(lake)
    soft_deleted = {u.split("?")[0] for u in parquet_holding_subject(lake.s3) if tagged_deleted(lake.s3, u)}
    assert soft_deleted
    # What the Spark job leaves (done here with the pyiceberg steps: the job needs Iceberg's Spark runtime).
    table = lake.catalog.load_table("db.profiles")
    deleted = delete_subject_rows(table, ["customer_id"], [SUBJECT])
    table = table.refresh()
    scanner = SubjectScanner(table, SubjectFilter.build(table.schema(), ["customer_id"], [SUBJECT]), 4)
    purged = purge_subject_history(table, scanner, lake.s3, f"s3://{BUCKET}/_gdpr/state/db.profiles.json")
    result = {
        "job": "gdpr_iceberg_delete",
        "dataset": "profiles",
        "format": "iceberg",
        "status": "erased",
        "rows_deleted": deleted.rows_deleted,
        "rows_deleted_by_subject": [deleted.rows_deleted],
        "files_rewritten": deleted.files_rewritten,
        "commit": str(deleted.snapshot_id),
        "expired_snapshots": [str(s) for s in purged.expired_snapshots],
        "dropped_refs": [],
        "pinned_refs": [],
        "verification": {"passed": True, "checked": ["current"], "rows_found": {"current": 0}, "cleaned": []},
        "started_at": "2024-03-05T10:00:00+00:00",
        "finished_at": "2024-03-05T10:05:00+00:00",
    }
    result_uri = f"s3://{BUCKET}/_gdpr/profiles/run-1/result.json"
    Storage(lake.s3).write_json(result_uri, result)
    config = settings_for("profiles")
    spark_config = config.model_copy(
        update={"datasets": {"profiles": config.datasets["profiles"].model_copy(update={"engine": "spark"})}}
    )
    ctx = ErasureContext(spark_config, lake.dynamodb, lake.s3, b"k", "run-1", catalog=lake.catalog)
    claimed = [requests.Request("t-1", SUBJECT, "x", "y", requests.IN_PROGRESS)]

    got = spark_outcome(ctx, "profiles", claimed, Storage(lake.s3), result_uri)

    assert got.outcome == "verified", got.reason
    assert soft_deleted <= set(got.details["unreachable_files_deleted"])
    assert parquet_holding_subject(lake.s3) == {}
    assert got.verification["passed"] and got.verification["objects_read"] > 0
