"""Archive tables of Iceberg metadata files (``dataplatform.iceberg.archive``) and the
``iceberg_archive_register`` DAG, on pyiceberg tables in the moto Glue catalog and S3."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest

from dataplatform.config import settings
from dataplatform.iceberg.archive import (
    ArchiveError,
    FilesNotReadyError,
    archive_register,
    check_files,
    classify,
    prepare,
    read_metadata,
    register,
)
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.sample import create_sample_table, sample_rows, write_sample_table
from dataplatform.reports import report_key

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "iceberg_archive_register"
DB = "demo_lake"
SOURCE = f"{DB}.orders"  # the config's `orders` table, so the DAG tests can use the same lake
BUCKET = "dataplatform-local-lake"  # also the bucket of reports_uri in local.yaml
LOCATION = f"s3://{BUCKET}/iceberg/{DB}/orders"
N_REGIONS = 2


@pytest.fixture
def lake(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    catalog = load_glue_catalog(AwsAccess(settings().aws.region, aws.url, "testing", "testing"))
    # Three overwrites: metadata log 00000 (empty table), 00001 (version 0), 00002 (version 1); the
    # current metadata holds version 2.
    table = write_sample_table(catalog, SOURCE, LOCATION, commits=3, n_regions=N_REGIONS)
    log = [entry.metadata_file for entry in table.metadata.metadata_log]
    return SimpleNamespace(s3=aws.s3, glue=aws.glue, catalog=catalog, table=table, log=log)


def rows(arrow_table) -> list[tuple]:
    return sorted(tuple(row.values()) for row in arrow_table.to_pylist())


def metadata(lake, uri):
    return read_metadata(lake.table.io, uri)


def data_files(table, snapshot_id) -> set[str]:
    return {task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()}


def glue_tables(glue) -> dict[str, dict]:
    pages = glue.get_paginator("get_tables").paginate(DatabaseName=DB)
    return {t["Name"]: t for page in pages for t in page["TableList"]}


def key_of(uri: str) -> str:
    return uri.split("/", 3)[3]


def set_storage_class(s3, uri: str, storage_class: str) -> None:
    key = key_of(uri)
    s3.copy_object(
        Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key}, StorageClass=storage_class
    )


# -- the library ---------------------------------------------------------------------------------------


def test_registers_the_oldest_metadata_file_with_the_rows_of_its_snapshot(lake):
    source = lake.table
    report = archive_register(lake.catalog, lake.s3, SOURCE, "oldest", "orders_archive")

    # The first log entry is the empty table create_table wrote: `oldest` passes over it.
    assert metadata(lake, lake.log[0]).current_snapshot_id is None
    assert report["metadata_file"] == lake.log[1]
    assert report["skipped_log_entries"] == [f"{lake.log[0]}: no snapshot (the table was empty)"]
    assert (report["ready"], report["registered"], report["already_registered"]) == (True, True, False)

    old = metadata(lake, lake.log[1])
    archive = lake.catalog.load_table(f"{DB}.orders_archive")
    assert archive.metadata_location == lake.log[1]
    assert archive.metadata.current_snapshot_id == old.current_snapshot_id
    got = rows(archive.scan().to_arrow())
    assert got == rows(source.scan(snapshot_id=old.current_snapshot_id).to_arrow())
    assert got == rows(sample_rows(0, N_REGIONS)), "the rows of the first overwrite"
    assert got != rows(source.scan().to_arrow()), "not the current rows"
    assert rows(source.scan().to_arrow()) == rows(sample_rows(2, N_REGIONS)), "source unchanged"

    # What was checked: the metadata file, one manifest list, its manifest, the two data files.
    files = data_files(source, old.current_snapshot_id)
    assert len(files) == N_REGIONS
    assert report["by_kind"] == {"data": 2, "manifest": 1, "manifest_list": 1, "metadata": 1}
    assert (report["snapshots"], report["files_checked"], report["present"]) == (1, 5, 5)
    assert (report["missing"], report["needs_restore"], report["unreadable"]) == (0, 0, 0)
    assert report["storage_classes"] == {"STANDARD": 5}
    assert set(report["present_sample"]) == files | {lake.log[1], old.snapshots[0].manifest_list} | {
        m.manifest_path for m in old.snapshots[0].manifests(source.io)
    }
    assert report["walk_complete"] and report["same_table_uuid"] and report["in_metadata_log"]
    assert "registered" in report["summary"] and "5 present" in report["summary"]

    # A rerun changes nothing.
    before = glue_tables(lake.glue)
    again = archive_register(lake.catalog, lake.s3, SOURCE, "oldest", "orders_archive")
    assert (again["registered"], again["already_registered"], again["ready"]) == (False, True, True)
    assert "already registered, unchanged" in again["summary"]
    assert glue_tables(lake.glue) == before


def test_previous_and_an_explicit_uri_register_the_rows_of_their_snapshots(lake):
    source = lake.table
    previous = archive_register(lake.catalog, lake.s3, SOURCE, "previous", "orders_v1")
    assert previous["metadata_file"] == lake.log[-1] == lake.log[2]
    by_uri = archive_register(lake.catalog, lake.s3, SOURCE, lake.log[1], "orders_v0")
    assert by_uri["metadata_file"] == lake.log[1] and by_uri["requested"] == lake.log[1]
    assert previous["registered"] and by_uri["registered"]

    for name, uri, version in (("orders_v1", lake.log[2], 1), ("orders_v0", lake.log[1], 0)):
        old = metadata(lake, uri)
        archive = lake.catalog.load_table(f"{DB}.{name}")
        assert archive.metadata_location == uri
        want = rows(source.scan(snapshot_id=old.current_snapshot_id).to_arrow())
        assert rows(archive.scan().to_arrow()) == want == rows(sample_rows(version, N_REGIONS))

    # Every snapshot of the previous metadata is walked: the append, the delete and the second append.
    old = metadata(lake, lake.log[2])
    every_data_file = set().union(*(data_files(source, s.snapshot_id) for s in old.snapshots))
    assert previous["snapshots"] == len(old.snapshots) == 3
    assert previous["by_kind"]["data"] == len(every_data_file) == 2 * N_REGIONS
    assert previous["by_kind"]["manifest_list"] == 3
    assert previous["present"] == previous["files_checked"]


def test_a_deleted_data_file_is_reported_missing_and_nothing_is_registered(lake):
    old = metadata(lake, lake.log[1])
    gone = sorted(data_files(lake.table, old.current_snapshot_id))[0]
    lake.s3.delete_object(Bucket=BUCKET, Key=key_of(gone))

    report = archive_register(lake.catalog, lake.s3, SOURCE, "oldest", "orders_archive")
    assert (report["missing"], report["missing_sample"]) == (1, [gone])
    assert (report["present"], report["files_checked"], report["needs_restore"]) == (4, 5, 0)
    assert report["blocked_by_kind"] == {"data": 1}
    assert (report["ready"], report["registered"]) == (False, False)
    assert "NOT registered" in report["summary"] and "1 missing" in report["summary"]
    assert f"files missing: {gone}" in report["summary"]
    assert set(glue_tables(lake.glue)) == {"orders"}


def test_the_refusal_to_register_names_the_missing_files(lake):
    old = metadata(lake, lake.log[1])
    gone = sorted(data_files(lake.table, old.current_snapshot_id))
    for uri in gone:
        lake.s3.delete_object(Bucket=BUCKET, Key=key_of(uri))
    request = prepare(lake.catalog, SOURCE, "oldest", "orders_archive")
    report = check_files(lake.catalog, lake.s3, request).report

    with pytest.raises(FilesNotReadyError) as refused:
        register(lake.catalog, request, report)
    assert f"files missing: {gone[0]}, {gone[1]}" in str(refused.value)
    assert set(glue_tables(lake.glue)) == {"orders"}


NOT_METADATA = {
    "json_of_another_shape": b'{"format-version": 2, "location": "s3://dataplatform-local-lake/x"}',
    "a_json_list": b"[1, 2]",
    "not_json": b"not json at all",
    "not_text": b"\xff\xfe\x00\x01",
}


def put_not_metadata(lake, body: bytes) -> str:
    uri = f"{LOCATION}/metadata/00009-not-metadata.metadata.json"
    lake.s3.put_object(Bucket=BUCKET, Key=key_of(uri), Body=body)
    return uri


@pytest.mark.parametrize("body", NOT_METADATA.values(), ids=NOT_METADATA.keys())
def test_a_metadata_file_that_is_not_iceberg_metadata_is_refused_naming_it(lake, body):
    uri = put_not_metadata(lake, body)
    request = prepare(lake.catalog, SOURCE, uri, "orders_archive")  # the URI itself is well formed
    with pytest.raises(ArchiveError, match=f"{uri} is not an Iceberg table metadata file"):
        check_files(lake.catalog, lake.s3, request)
    with pytest.raises(ArchiveError, match=f"{uri} is not an Iceberg table metadata file"):
        archive_register(lake.catalog, lake.s3, SOURCE, uri, "orders_archive")
    assert set(glue_tables(lake.glue)) == {"orders"}


def test_an_archived_data_file_needs_a_restore_first_then_registers(lake):
    old = metadata(lake, lake.log[1])
    archived, instant = sorted(data_files(lake.table, old.current_snapshot_id))
    set_storage_class(lake.s3, archived, "GLACIER")
    set_storage_class(lake.s3, instant, "GLACIER_IR")  # readable directly

    report = archive_register(lake.catalog, lake.s3, SOURCE, "oldest", "orders_archive")
    assert (report["needs_restore"], report["needs_restore_sample"]) == (1, [archived])
    assert (report["present"], report["missing"], report["restore_in_progress"]) == (4, 0, 0)
    assert instant in report["present_sample"]
    assert report["storage_classes"] == {"GLACIER": 1, "GLACIER_IR": 1, "STANDARD": 3}
    assert report["bytes_needing_restore"] > 0
    assert (report["ready"], report["registered"]) == (False, False)
    assert set(glue_tables(lake.glue)) == {"orders"}

    # register() refuses a report that is not ready, whoever calls it.
    request = prepare(lake.catalog, SOURCE, "oldest", "orders_archive")
    with pytest.raises(FilesNotReadyError):
        register(lake.catalog, request, report)
    assert set(glue_tables(lake.glue)) == {"orders"}

    # After the restore (moto completes it at once) the same request registers.
    lake.s3.restore_object(Bucket=BUCKET, Key=key_of(archived), RestoreRequest={"Days": 1})
    report = archive_register(lake.catalog, lake.s3, SOURCE, "oldest", "orders_archive")
    assert report["registered"] and report["present"] == report["files_checked"] == 5
    assert report["storage_classes"] == {"GLACIER": 1, "GLACIER_IR": 1, "STANDARD": 3}
    archive = lake.catalog.load_table(f"{DB}.orders_archive")
    assert rows(archive.scan().to_arrow()) == rows(sample_rows(0, N_REGIONS))


def test_an_unreadable_manifest_list_or_manifest_stops_the_walk_with_a_report(lake):
    old = metadata(lake, lake.log[2])  # three snapshots
    first, _, third = old.snapshots
    io = lake.table.io
    # A manifest only the third snapshot lists (the first snapshot's manifest is still readable).
    manifest = next(
        m.manifest_path
        for m in third.manifests(io)
        if m.manifest_path not in {x.manifest_path for x in first.manifests(io)}
    )
    set_storage_class(lake.s3, first.manifest_list, "DEEP_ARCHIVE")
    lake.s3.delete_object(Bucket=BUCKET, Key=key_of(manifest))

    report = archive_register(lake.catalog, lake.s3, SOURCE, "previous", "orders_archive")
    assert report["metadata_file"] == lake.log[2]
    assert report["needs_restore_sample"] == [first.manifest_list]
    assert report["missing_sample"] == [manifest]
    assert report["walk_complete"] is False
    assert report["snapshots_not_walked"] == 2
    not_walked = " ".join(report["not_walked_sample"])
    assert str(first.snapshot_id) in not_walked and str(third.snapshot_id) in not_walked
    assert "walk incomplete" in report["summary"]
    assert (report["ready"], report["registered"]) == (False, False)
    assert set(glue_tables(lake.glue)) == {"orders"}


def test_an_archived_metadata_file_is_reported_without_reading_it(lake):
    set_storage_class(lake.s3, lake.log[1], "GLACIER")
    # `oldest` cannot read it to see whether it has a snapshot: it is chosen and reported.
    report = archive_register(lake.catalog, lake.s3, SOURCE, "oldest", "orders_archive")
    assert report["metadata_file"] == lake.log[1]
    assert report["metadata_readable"] is False
    assert (report["needs_restore"], report["files_checked"], report["snapshots"]) == (1, 1, None)
    assert "metadata file itself is archived" in report["summary"]
    assert set(glue_tables(lake.glue)) == {"orders"}


def test_classify_head_responses():
    assert classify({}).status == "present"
    assert classify({"StorageClass": "STANDARD_IA"}).status == "present"
    assert classify({"StorageClass": "GLACIER"}).status == "needs_restore"
    assert classify({"StorageClass": "DEEP_ARCHIVE", "Restore": 'ongoing-request="true"'}).status == (
        "needs_restore"
    )
    done = 'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"'
    assert classify({"StorageClass": "GLACIER", "Restore": done}).status == "present"
    assert classify({"StorageClass": "INTELLIGENT_TIERING", "ArchiveStatus": "ARCHIVE_ACCESS"}).status == (
        "needs_restore"
    )


OTHER = f"s3://{BUCKET}/iceberg/{DB}/customers/metadata/00001-x.metadata.json"


BAD_INPUT = [
    # (source, metadata_file, archive_table, what the error says)
    (f"{DB}.no_such_table", "oldest", "orders_archive", "does not exist"),
    (SOURCE, "oldest", "Orders_Archive", "lower-case Glue identifier"),
    (SOURCE, "oldest", "orders-archive", "lower-case Glue identifier"),
    (SOURCE, "oldest", "9lives", "lower-case Glue identifier"),
    (SOURCE, "oldest", "", "lower-case Glue identifier"),
    (SOURCE, "oldest", None, "lower-case Glue identifier"),
    (SOURCE, "oldest", "orders", "source table itself"),
    (SOURCE, "latest", "orders_archive", "is not a metadata file of table"),
    (SOURCE, "", "orders_archive", "metadata_file must be"),
    (SOURCE, OTHER, "orders_archive", "is not a metadata file of table"),
    (SOURCE, f"s3://elsewhere/iceberg/{DB}/orders/metadata/1.metadata.json", "a", "not a metadata"),
    (SOURCE, f"{LOCATION}_evil/metadata/00001-x.metadata.json", "a", "not a metadata file"),
    (SOURCE, f"{LOCATION}/data/00001-x.metadata.json", "a", "not a metadata file"),
    (SOURCE, f"{LOCATION}/metadata/../../customers/metadata/1.metadata.json", "a", "not a metadata"),
    (SOURCE, f"{LOCATION}/metadata/snap-1-0-x.avro", "a", "not a metadata file"),
]


def test_bad_input_is_refused_before_anything_changes(lake):
    assert issubclass(ArchiveError, ValueError)
    before = glue_tables(lake.glue)
    for source, metadata_file, archive_table, message in BAD_INPUT:
        with pytest.raises(ArchiveError, match=message):
            archive_register(lake.catalog, lake.s3, source, metadata_file, archive_table)
    assert glue_tables(lake.glue) == before
    assert set(before) == {"orders"}


def test_an_archive_name_taken_by_another_metadata_file_or_table_is_refused(lake):
    archive_register(lake.catalog, lake.s3, SOURCE, "oldest", "orders_archive")
    before = glue_tables(lake.glue)
    with pytest.raises(ArchiveError, match="already exists with metadata"):
        archive_register(lake.catalog, lake.s3, SOURCE, "previous", "orders_archive")
    lake.glue.create_table(
        DatabaseName=DB,
        TableInput={"Name": "plain_hive", "StorageDescriptor": {"Location": f"s3://{BUCKET}/x/"}},
    )
    with pytest.raises(ArchiveError, match="not an Iceberg table"):
        archive_register(lake.catalog, lake.s3, SOURCE, "previous", "plain_hive")
    after = glue_tables(lake.glue)
    assert after.pop("plain_hive")
    assert after == before
    assert lake.catalog.load_table(f"{DB}.orders_archive").metadata_location == lake.log[1]


def test_a_table_without_older_metadata_or_a_foreign_metadata_file_is_refused(lake):
    fresh = create_sample_table(lake.catalog, f"{DB}.fresh", f"s3://{BUCKET}/iceberg/{DB}/fresh")
    with pytest.raises(ArchiveError, match="no earlier metadata file"):
        archive_register(lake.catalog, lake.s3, f"{DB}.fresh", "oldest", "fresh_archive")
    # Another table's metadata file copied under this table's metadata location.
    foreign = f"{LOCATION}/metadata/99999-foreign.metadata.json"
    lake.s3.copy_object(
        Bucket=BUCKET,
        Key=key_of(foreign),
        CopySource={"Bucket": BUCKET, "Key": key_of(fresh.metadata_location)},
    )
    request = prepare(lake.catalog, SOURCE, foreign, "orders_archive")
    with pytest.raises(ArchiveError, match="describes a table at"):
        check_files(lake.catalog, lake.s3, request)
    assert set(glue_tables(lake.glue)) == {"orders", "fresh"}


# -- the DAG -------------------------------------------------------------------------------------------


def run_dag(**kwargs):
    """Parse the DAG afresh for every run (in-process rendering writes values back onto the tasks)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{DAG_ID}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(DAG_ID).test(**kwargs)


def states(dagrun) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


def read_report(s3, dagrun, name="orders") -> dict:
    from dataplatform.glue.discovery import split_s3_uri

    bucket, prefix = split_s3_uri(settings().reports_uri)
    body = s3.get_object(Bucket=bucket, Key=prefix + report_key(DAG_ID, dagrun.run_id, name))["Body"]
    return json.loads(body.read())


CONF = {"table": "orders", "metadata_file": "oldest", "archive_table": "orders_archive"}


def test_dag_registers_the_archive_table_and_a_rerun_changes_nothing(lake, airflow_db):
    dagrun = run_dag(run_conf=CONF)
    assert dagrun.state == "success", states(dagrun)
    archive = lake.catalog.load_table(f"{DB}.orders_archive")
    assert archive.metadata_location == lake.log[1]
    old = metadata(lake, lake.log[1])
    assert rows(archive.scan().to_arrow()) == rows(
        lake.table.scan(snapshot_id=old.current_snapshot_id).to_arrow()
    )
    report = read_report(lake.s3, dagrun)
    assert (report["table"], report["registered"], report["present"], report["files_checked"]) == (
        "orders",
        True,
        5,
        5,
    )

    before = glue_tables(lake.glue)
    dagrun = run_dag(run_conf=CONF)
    assert dagrun.state == "success", states(dagrun)
    assert glue_tables(lake.glue) == before
    report = read_report(lake.s3, dagrun)
    assert (report["registered"], report["already_registered"]) == (False, True)


def test_dag_bad_params_fail_before_registering(lake, airflow_db):
    for conf in (
        {**CONF, "table": "no_such_table"},
        {**CONF, "archive_table": "orders"},
        {**CONF, "metadata_file": OTHER},
        {"table": "orders", "metadata_file": "oldest"},  # no archive_table
    ):
        dagrun = run_dag(run_conf=conf)
        assert dagrun.state == "failed", conf
        assert states(dagrun) == {
            "validate": "failed",
            "check": "upstream_failed",
            "register": "upstream_failed",
        }
        assert set(glue_tables(lake.glue)) == {"orders"}


def test_dag_a_metadata_file_that_is_not_iceberg_metadata_fails_the_check_at_once(lake, airflow_db, capfd):
    for body in NOT_METADATA.values():
        uri = put_not_metadata(lake, body)
        capfd.readouterr()

        dagrun = run_dag(run_conf={**CONF, "metadata_file": uri})

        assert dagrun.state == "failed", body
        instances = {ti.task_id: ti for ti in dagrun.get_task_instances()}
        assert states(dagrun) == {"validate": "success", "check": "failed", "register": "upstream_failed"}
        assert instances["check"].try_number == 1, "an input error must not be retried"
        out = capfd.readouterr().out
        assert f"AirflowFailException: {uri} is not an Iceberg table metadata file" in out, body
        assert set(glue_tables(lake.glue)) == {"orders"}


def test_dag_fails_at_register_naming_what_to_restore(lake, airflow_db):
    from dataplatform.operators.iceberg_archive import not_ready_message

    old = metadata(lake, lake.log[1])
    archived = sorted(data_files(lake.table, old.current_snapshot_id))[0]
    set_storage_class(lake.s3, archived, "GLACIER")

    dagrun = run_dag(run_conf=CONF)
    assert dagrun.state == "failed"
    assert states(dagrun) == {"validate": "success", "check": "success", "register": "failed"}
    assert set(glue_tables(lake.glue)) == {"orders"}
    report = read_report(lake.s3, dagrun)
    assert (report["needs_restore"], report["needs_restore_sample"], report["registered"]) == (
        1,
        [archived],
        False,
    )
    # The restore manifest (S3 Batch Operations CSV: bucket,key) lists exactly the archived file.
    bucket, key = report["restore_manifest_uri"].removeprefix("s3://").split("/", 1)
    body = lake.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert body == f"{BUCKET},{quote(key_of(archived))}\n"  # keys URL-encoded: region%3Dr00
    message = not_ready_message(report)
    assert "1 files" in message and "aws s3api restore-object" in message
    assert f"--key {key_of(archived)}" in message and report["restore_manifest_uri"] in message
