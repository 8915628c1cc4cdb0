"""No subject id left in an Iceberg table's metadata after an erasure (issue 12, section 2).

A copy-on-write delete that records the rewritten files as DELETED manifest entries keeps their column
bounds, so a subject that was the smallest or largest value of a column in a file stays readable in the
current snapshot's manifests. These tests run the whole pyiceberg erasure (delete, purge, verify) against
moto, then read what is left with pyiceberg's own Avro readers and plain S3 calls (no code of the
erasure): every manifest list and manifest the current metadata reaches and every manifest under the
table location, every entry whatever its status, every bound decoded with its field's type; every
version of every metadata JSON file under the table location; every statistics file the metadata
lists. No subject id may appear, decoded or as bytes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import EqualTo
from pyiceberg.manifest import ManifestFile, read_manifest_list

from dataplatform.config import GdprSettings
from dataplatform.gdpr import audit, requests, sample
from dataplatform.gdpr.erasure import ErasureContext, erase_iceberg_dataset
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.s3.objects import split_uri
from tests.iceberg_statistics import register_statistics

pytestmark = pytest.mark.integration

BUCKET = "pii-lake"


def dataset(table: str, columns: list[str], pinned_refs: str = "fail") -> dict:
    return {
        "format": "iceberg",
        "database": "db",
        "table": table,
        "subject_columns": columns,
        "pinned_refs": pinned_refs,
    }


CONFIG = GdprSettings.model_validate(
    {
        "work_uri": f"s3://{BUCKET}/_gdpr/",
        "datasets": {
            "customers": dataset("customers", ["customer_id"]),
            "accounts": dataset("accounts", ["account_id"]),
            "profiles": dataset("profiles", ["customer_id"]),
        },
    }
)

CUSTOMERS = pa.schema([("customer_id", pa.string()), ("note", pa.string()), ("amount", pa.int64())])


def customer_batch(numbers: range) -> pa.Table:
    ids = [sample.customer_id(n) for n in numbers]
    return pa.table(
        {"customer_id": ids, "note": [f"n{n}" for n in numbers], "amount": [100 + n for n in numbers]},
        schema=CUSTOMERS,
    )


@pytest.fixture
def lake(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    aws.catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    aws.catalog.create_namespace("db")
    aws.dynamodb = aws.client("dynamodb")
    requests.create_requests_table(aws.dynamodb, CONFIG.requests_table)
    audit.create_audit_table(aws.dynamodb, CONFIG.audit_table)
    return aws


def customers_table(lake):
    """Three files: cust-000004 is the smallest id of the first, cust-000029 the largest of the last;
    each file keeps other rows, so the erasure rewrites it (a DELETED entry plus a replacement)."""
    table = lake.catalog.create_table(
        "db.customers", schema=CUSTOMERS, location=f"s3://{BUCKET}/db/customers"
    )
    for numbers in (range(4, 10), range(10, 20), range(20, 30)):
        table.append(customer_batch(numbers))
    return table


def erase(lake, key: str, subjects: list[str], run_id: str = "run-1") -> dict:
    for n, subject in enumerate(subjects):
        requests.submit_request(
            lake.dynamodb, CONFIG.requests_table, f"{run_id}-{n}", subject, datetime.now(UTC), 30
        )
    claimed = requests.claim_requests(
        lake.dynamodb, CONFIG.requests_table, run_id, 10, datetime.now(UTC), timedelta(hours=6)
    )
    ctx = ErasureContext(CONFIG, lake.dynamodb, lake.s3, b"test-key", run_id, catalog=lake.catalog)
    return erase_iceberg_dataset(ctx, key, claimed)


# -- the independent reader -----------------------------------------------------------------------------


def subject_forms(subjects: list[str]) -> list[bytes]:
    """The bytes a subject id takes in a bound: UTF-8, and for numeric ids Iceberg's int and long."""
    forms = [s.encode() for s in subjects]
    for s in subjects:
        if s.isdigit():
            forms += [int(s).to_bytes(4, "little", signed=True), int(s).to_bytes(8, "little", signed=True)]
    return forms


def findings_in_manifest(table, manifest: ManifestFile, subjects: list[str]) -> list[str]:
    """Where ``manifest`` names a subject: a bound or partition value (any entry status) equal to or
    holding one. Bounds are decoded with the type of their field in the table's schema."""
    found = []
    schema, forms = table.schema(), subject_forms(subjects)
    for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
        data_file = entry.data_file
        for kind, bounds in (("lower", data_file.lower_bounds), ("upper", data_file.upper_bounds)):
            for field_id, raw in (bounds or {}).items():
                value = from_bytes(schema.find_field(field_id).field_type, raw)
                if str(value) in subjects or any(form in raw for form in forms if len(form) > 4):
                    found.append(
                        f"{manifest.manifest_path}: {entry.status.name} {kind} bound of field {field_id}"
                    )
        for value in [data_file.partition[i] for i in range(len(data_file.partition or ()))]:
            if str(value) in subjects:
                found.append(f"{manifest.manifest_path}: {entry.status.name} partition value")
    for summary in manifest.partitions or ():
        for raw in (summary.lower_bound, summary.upper_bound):
            if raw and any(form in raw for form in forms):
                found.append(f"{manifest.manifest_path}: partition summary")
    return found


def metadata_findings(lake, identifier: str, subjects: list[str]) -> list[str]:
    table = lake.catalog.load_table(identifier)
    found = []
    manifests: dict[str, ManifestFile] = {}
    for snapshot in table.metadata.snapshots:
        for manifest in read_manifest_list(table.io.new_input(snapshot.manifest_list)):
            manifests[manifest.manifest_path] = manifest
    # Manifests no snapshot lists any more but still stored: the bytes are as readable as the others'.
    bucket, prefix = split_uri(table.location().rstrip("/") + "/")
    listed = lake.s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    keys = {v["Key"] for v in listed.get("Versions", [])}
    for key in sorted(k for k in keys if k.endswith(".avro")):
        with table.io.new_input(f"s3://{bucket}/{key}").open() as stream:
            head = stream.read()
        if b"manifest_path" in head[:4096]:  # a manifest list: its manifests are read through it
            for manifest in read_manifest_list(table.io.new_input(f"s3://{bucket}/{key}")):
                manifests.setdefault(manifest.manifest_path, manifest)
    for manifest in manifests.values():
        if table.io.new_input(manifest.manifest_path).exists():
            found += findings_in_manifest(table, manifest, subjects)
    forms = subject_forms(subjects)
    for version in listed.get("Versions", []):
        if version["Key"].endswith(".json"):
            body = lake.s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
            if any(form in body["Body"].read() for form in forms if len(form) > 4):
                found.append(f"s3://{bucket}/{version['Key']} (version {version['VersionId']})")
    for stats in [*table.metadata.statistics, *table.metadata.partition_statistics]:
        with table.io.new_input(stats.statistics_path).open() as stream:
            if any(form in stream.read() for form in forms):
                found.append(stats.statistics_path)
    return found


def live_ids(table, column: str) -> list:
    return sorted(table.refresh().scan().to_arrow()[column].to_pylist())


def object_versions(lake, location: str) -> list[tuple[str, str]]:
    bucket, prefix = split_uri(location.rstrip("/") + "/")
    listed = lake.s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted(
        (v["Key"], v["VersionId"]) for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])
    )


# -- the cases ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["cust-000004", "cust-000029"], ids=["file_minimum", "file_maximum"])
def test_a_subject_that_bounds_a_file_is_in_no_metadata_after_the_erasure(lake, subject):
    table = customers_table(lake)
    before = live_ids(table, "customer_id")
    assert metadata_findings(lake, "db.customers", [subject])  # the reader sees it before

    report = erase(lake, "customers", [subject])

    assert report["outcome"] == "verified" and report["rows_deleted"] == 1
    assert live_ids(table, "customer_id") == [c for c in before if c != subject]
    assert metadata_findings(lake, "db.customers", [subject]) == []


def test_a_rerun_changes_nothing(lake):
    table = customers_table(lake)
    erase(lake, "customers", ["cust-000004"])
    location = lake.catalog.load_table("db.customers").metadata_location
    objects_before = object_versions(lake, table.location())

    report = erase(lake, "customers", ["cust-000004"], run_id="run-2")

    assert report["outcome"] == "verified" and report["rows_deleted"] == 0
    assert report["commit"] is None and report["expired_snapshots"] == []
    assert lake.catalog.load_table("db.customers").metadata_location == location
    assert object_versions(lake, table.location()) == objects_before
    assert metadata_findings(lake, "db.customers", ["cust-000004"]) == []


def test_an_integer_id_that_bounds_a_file_is_in_no_metadata(lake):
    schema = pa.schema([("account_id", pa.int64()), ("balance", pa.int64())])
    table = lake.catalog.create_table("db.accounts", schema=schema, location=f"s3://{BUCKET}/db/accounts")
    for ids in ([7002, 7003, 7004], [7005, 7006, 7007]):
        table.append(pa.table({"account_id": ids, "balance": [1] * len(ids)}, schema=schema))
    assert metadata_findings(lake, "db.accounts", ["7002", "7007"])

    report = erase(lake, "accounts", ["7002", "7007"])

    assert report["outcome"] == "verified" and report["rows_deleted"] == 2
    assert live_ids(table, "account_id") == [7003, 7004, 7005, 7006]
    assert metadata_findings(lake, "db.accounts", ["7002", "7007"]) == []


def test_a_partitioned_table_keeps_no_subject_id_in_any_column_bound(lake):
    """cust-000000 is the smallest id of the ``de`` partition's first file, and its e-mail address (which
    holds the id) the smallest e-mail: both bounds must go."""
    table = sample.write_profiles(lake.catalog, "db.profiles", f"s3://{BUCKET}/db/profiles")
    subject = "cust-000000"
    before = live_ids(table, "customer_id")
    assert metadata_findings(lake, "db.profiles", [subject])

    report = erase(lake, "profiles", [subject])

    assert report["outcome"] == "verified"
    assert live_ids(table, "customer_id") == [c for c in before if c != subject]
    assert metadata_findings(lake, "db.profiles", [subject]) == []


def test_deleted_entries_left_by_an_earlier_delete_are_cleaned_too(lake):
    """Someone deleted the subject's rows before the request came (pyiceberg's own delete): the current
    snapshot holds no row of the subject, but its manifests may still name it in DELETED entries."""
    table = customers_table(lake)
    subject = "cust-000004"
    table.delete(EqualTo("customer_id", subject))
    table.append(customer_batch(range(30, 33)))
    assert subject not in live_ids(table, "customer_id")
    assert metadata_findings(lake, "db.customers", [subject])

    report = erase(lake, "customers", [subject])

    assert report["outcome"] == "verified" and report["rows_deleted"] == 0
    assert metadata_findings(lake, "db.customers", [subject]) == []
    assert live_ids(table, "customer_id") == [sample.customer_id(n) for n in range(5, 33)]


def test_statistics_files_of_the_purged_snapshots_are_removed(lake):
    table = customers_table(lake)
    subject = "cust-000004"
    snapshot_id = table.current_snapshot().snapshot_id
    body = b"PFA1 sketch of " + subject.encode()
    stats_path, partition_stats_path = register_statistics(lake.s3, table, snapshot_id, body)
    assert stats_path in metadata_findings(lake, "db.customers", [subject])

    report = erase(lake, "customers", [subject])

    assert report["outcome"] == "verified"
    metadata = lake.catalog.load_table("db.customers").metadata
    assert metadata.statistics == [] and metadata.partition_statistics == []
    bucket, _ = split_uri(stats_path)
    for path in (stats_path, partition_stats_path):
        versions = lake.s3.list_object_versions(Bucket=bucket, Prefix=split_uri(path)[1])
        assert not versions.get("Versions") and not versions.get("DeleteMarkers")
    assert metadata_findings(lake, "db.customers", [subject]) == []


def test_previous_metadata_files_that_list_the_purged_snapshots_are_deleted(lake):
    """They list snapshots whose manifests and data files the purge deleted; the metadata log may keep
    their names, but no version of them stays in the bucket. (Here every snapshot reaches the subject's
    file, so every metadata file that lists a snapshot goes.)"""
    table = customers_table(lake)
    paths = [entry.metadata_file for entry in table.metadata.metadata_log] + [table.metadata_location]
    listing = [path for path in paths if json.loads(read_object(lake, path))["snapshots"]]
    assert len(listing) == 3

    erase(lake, "customers", ["cust-000004"])

    for path in listing:
        bucket, key = split_uri(path)
        versions = lake.s3.list_object_versions(Bucket=bucket, Prefix=key)
        assert not versions.get("Versions"), path
    current = lake.catalog.load_table("db.customers")
    assert json.loads(read_object(lake, current.metadata_location))["current-snapshot-id"]
    assert live_ids(current, "customer_id") == [sample.customer_id(n) for n in range(5, 30)]


def read_object(lake, uri: str) -> bytes:
    bucket, key = split_uri(uri)
    return lake.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_a_tag_on_a_snapshot_whose_manifests_name_the_subject_is_a_pinned_ref(lake):
    """The tagged snapshot holds no row of the subject, but its manifests carry the subject's id in
    DELETED entries: under ``pinned_refs: fail`` nothing changes and the tag is named."""
    table = customers_table(lake)
    subject = "cust-000004"
    table.delete(EqualTo("customer_id", subject))
    table.manage_snapshots().create_tag(table.current_snapshot().snapshot_id, "after-cleanup").commit()
    table.append(customer_batch(range(30, 33)))
    location = lake.catalog.load_table("db.customers").metadata_location

    report = erase(lake, "customers", [subject])

    assert report["outcome"] == "pinned_refs" and "after-cleanup" in report["reason"]
    assert lake.catalog.load_table("db.customers").metadata_location == location
