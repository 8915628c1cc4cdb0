"""What the lake-health figures read again on a reload (the page's process keeps what cannot change):
an Iceberg table's metadata file is read once per location, a report copy once per ETag; a commit or a
rewritten report since the last load is shown on the next one. Checked against the table and the
objects on the moto server, and by the GETs the server received."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dataplatform.config import settings
from dataplatform.devstack.seed import ensure_bucket
from dataplatform.health import figures
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.sample import append_rows, write_sample_table
from dataplatform.reports import latest_key
from tests.moto_helpers import recorded_s3_gets

pytestmark = pytest.mark.integration

BUCKET = "dataplatform-local-lake"
NOW = datetime.now(UTC).replace(microsecond=0)
REPORT_KEY = "_reports/" + latest_key("iceberg_maintenance", "orders")


@pytest.fixture
def lake(aws):
    figures.forget_cached_reads()
    ensure_bucket(aws.s3, BUCKET)
    catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    policy = settings().iceberg.tables["orders"]
    catalog.create_namespace(policy.database)
    table = write_sample_table(catalog, policy.identifier, f"s3://{BUCKET}/iceberg/orders", commits=2)
    write_copy(aws.s3, NOW - timedelta(days=3), files=2)
    clients = figures.Clients(dynamodb=aws.client("dynamodb"), s3=aws.s3, glue=aws.glue)
    yield aws, clients, table
    figures.forget_cached_reads()


def write_copy(s3, written_at: datetime, files: int) -> None:
    """The latest copy of the orders maintenance report, as ``write_run_report`` leaves it."""
    copy = {
        "dag_id": "iceberg_maintenance",
        "run_id": f"manual__{written_at:%Y%m%dT%H%M%S}",
        "name": "orders",
        "report_uri": f"s3://{BUCKET}/_reports/iceberg_maintenance/x/orders.json",
        "written_at": written_at.isoformat(),
        "report": {"unreferenced": {"action": "tag", "files": files, "bytes": 10 * files}},
    }
    s3.put_object(Bucket=BUCKET, Key=REPORT_KEY, Body=json.dumps(copy).encode())


def orders_row(clients) -> dict:
    block = figures.iceberg_figures(settings(), clients, NOW)
    return next(row for row in block["figures"]["tables"] if row["table"] == "orders")


def snapshots_in_the_catalog(aws) -> tuple[str, int]:
    """The table's current metadata file and its snapshot count, read from Glue and S3 directly."""
    policy = settings().iceberg.tables["orders"]
    location = aws.glue.get_table(DatabaseName=policy.database, Name=policy.table)["Table"]["Parameters"][
        "metadata_location"
    ]
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return location, len(json.loads(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())["snapshots"])


def test_a_reload_reads_no_unchanged_metadata_file_or_report_again(lake):
    aws, clients, _ = lake
    first = orders_row(clients)
    location, snapshots = snapshots_in_the_catalog(aws)
    assert (first["metadata_location"], first["snapshots"], first["unreferenced_files"]) == (
        location,
        snapshots,
        2,
    )

    aws.server.start_recording()
    try:
        again = orders_row(clients)
    finally:
        aws.server.stop_recording()
    assert again == first
    metadata_key = location.removeprefix(f"s3://{BUCKET}/")
    assert recorded_s3_gets(aws.server, BUCKET, metadata_key) == []
    assert recorded_s3_gets(aws.server, BUCKET, REPORT_KEY) == []


def test_a_commit_and_a_rewritten_report_since_the_last_load_are_shown(lake):
    aws, clients, table = lake
    before = orders_row(clients)
    append_rows(table, version=9)
    written = NOW - timedelta(minutes=5)
    write_copy(aws.s3, written, files=7)

    after = orders_row(clients)
    location, snapshots = snapshots_in_the_catalog(aws)
    assert after["metadata_location"] == location != before["metadata_location"]
    assert after["snapshots"] == snapshots == before["snapshots"] + 1
    assert (after["last_maintenance"], after["unreferenced_files"]) == (written.isoformat(), 7)


def test_a_fresh_glue_table_costs_one_lookup_of_four_keys_and_an_old_partition_is_still_found(aws):
    """The newest partition is looked up newest period first, 4 keys, then 12, then 128, then the rest:
    a table registered an hour ago answers in one small call (Glue returns each partition found whole),
    one whose newest partition is 100 days old is still found, in the third."""
    from dataplatform.devstack.seed import create_table
    from dataplatform.glue.layout import PartitionLayout

    tables = settings().glue.tables
    newest = {"web_events": NOW - timedelta(hours=1), "cloudtrail": NOW - timedelta(days=100)}
    for name, moment in newest.items():
        table = tables[name]
        create_table(aws.glue, table)
        values = PartitionLayout(table).values_for_interval(moment - timedelta(days=2), moment)
        aws.glue.batch_create_partition(
            DatabaseName=table.database,
            TableName=table.table,
            PartitionInputList=[
                {"Values": list(v), "StorageDescriptor": {"Location": f"{table.location}{'/'.join(v)}/"}}
                for v in values
            ],
        )
    lookups: dict[str, list[int]] = {}

    def record(params, **_):
        lookups.setdefault(params["TableName"], []).append(len(params["PartitionsToGet"]))

    aws.glue.meta.events.register("provide-client-params.glue.BatchGetPartition", record)
    clients = figures.Clients(dynamodb=aws.client("dynamodb"), s3=aws.s3, glue=aws.glue)

    rows = {row["table"]: row for row in figures.glue_figures(settings(), clients, NOW)["figures"]["tables"]}

    assert lookups == {"web_events": [4], "cloudtrail_logs": [4, 12, 128]}
    for name, moment in newest.items():
        period = PartitionLayout(tables[name]).values_for_interval(moment - timedelta(seconds=1), moment)
        assert rows[name]["newest_partition"] == list(period[-1]), name
