"""Demo and test data: for the Glue partition loader, tables in Glue and partition prefixes in S3; for
reconciliation, landed batches of financial events.

Writes real sample files (JSON lines) so that the prefixes look like what a writer leaves: data files,
optional ``_SUCCESS`` markers, and a few prefixes that are not partitions at all.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from dataplatform.config import GlueTable, Settings
from dataplatform.glue.discovery import split_s3_uri
from dataplatform.glue.layout import PartitionLayout, PartitionValues

# A JSON-lines table as Athena reads it.
JSON_STORAGE = {
    "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
    "SerdeInfo": {
        "SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe",
        "Parameters": {"paths": "event_id"},
    },
    "Compressed": False,
}
EVENT_COLUMNS = [
    {"Name": "event_id", "Type": "string"},
    {"Name": "user_id", "Type": "string"},
    {"Name": "event_type", "Type": "string"},
    {"Name": "event_time", "Type": "timestamp"},
]

# Prefixes under web_events/ that must be reported, never registered.
INVALID_WEB_EVENT_PREFIXES = (
    "dt=garbage/hour=00/",  # a value that does not fit %Y-%m-%d
    "dt=2024-03-01/minute=00/",  # an unexpected key at the hour level
    "region=eu/dt=2024-03-01/",  # an unexpected key at the top level
    "dt=2024-02-30/hour=01/",  # no such date
    "dt=2024-02-28/",  # files but no hour level
)


def ensure_bucket(s3, bucket: str) -> None:
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def create_table(glue, table: GlueTable, columns: list[dict] | None = None) -> None:
    """Create the Glue database (if missing) and the table with its partition keys as strings."""
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):
        glue.create_database(DatabaseInput={"Name": table.database})
    table_input = {
        "Name": table.table,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "json", "EXTERNAL": "TRUE"},
        "PartitionKeys": [{"Name": key.name, "Type": "string"} for key in table.partition_keys],
        "StorageDescriptor": {
            **JSON_STORAGE,
            "Columns": columns or EVENT_COLUMNS,
            "Location": table.location,
        },
    }
    try:
        glue.create_table(DatabaseName=table.database, TableInput=table_input)
    except glue.exceptions.AlreadyExistsException:
        glue.update_table(DatabaseName=table.database, TableInput=table_input)


def put_partitions(
    s3, table: GlueTable, partitions: Iterable[PartitionValues], *, success_marker: bool = False
) -> int:
    """Write one small JSON-lines file into each partition prefix; return how many objects were written."""
    layout = PartitionLayout(table)
    bucket, root = split_s3_uri(table.location)
    ensure_bucket(s3, bucket)
    written = 0
    for values in partitions:
        prefix = root + layout.render(values)
        rows = [
            {
                "event_id": f"{'-'.join(values)}-{i}",
                "user_id": f"u{i % 7}",
                "event_type": "view",
                "event_time": "/".join(values),
            }
            for i in range(3)
        ]
        s3.put_object(
            Bucket=bucket,
            Key=prefix + "part-00000.json",
            Body="\n".join(json.dumps(row) for row in rows).encode(),
        )
        written += 1
        if success_marker:
            s3.put_object(Bucket=bucket, Key=prefix + "_SUCCESS", Body=b"")
            written += 1
    return written


def put_raw_prefixes(s3, table: GlueTable, relative_prefixes: Iterable[str]) -> None:
    """Write one file under each relative prefix, valid partition or not (to test rejection)."""
    bucket, root = split_s3_uri(table.location)
    ensure_bucket(s3, bucket)
    for relative in relative_prefixes:
        s3.put_object(Bucket=bucket, Key=f"{root}{relative}part-00000.json", Body=b'{"event_id": "x"}\n')


def seed_demo(s3, glue, config: Settings, start: datetime = datetime(2024, 3, 1), days: int = 10) -> dict:
    """The demo lake: hourly ``web_events`` (Hive layout) and daily ``cloudtrail`` (path template)."""
    for uri in {config.reports_uri, *(t.location for t in config.glue.tables.values())}:
        if uri.startswith("s3://"):
            ensure_bucket(s3, split_s3_uri(uri)[0])
    counts = {}
    for name, table in config.glue.tables.items():
        create_table(glue, table)
        layout = PartitionLayout(table)
        end = start + timedelta(days=days if table.granularity == "hour" else days * 9)
        partitions = layout.values_for_interval(start, end)
        put_partitions(s3, table, partitions, success_marker=table.wait_for_success_marker)
        invalid = INVALID_WEB_EVENT_PREFIXES if table.layout == "hive" else ("2024/13/01/", "2024/03/xx/")
        put_raw_prefixes(s3, table, invalid)
        counts[name] = {"partitions": len(partitions), "invalid_prefixes": len(invalid)}
    return counts


# Days up to today (UTC) that the local stack's lake also holds, so that the scheduled run a newcomer gets
# by unpausing a DAG (yesterday's interval, or today's after midnight) finds its partitions and markers.
RECENT_DAYS = 7


def seed_recent_days(s3, config: Settings, now: datetime | None = None, days: int = RECENT_DAYS) -> dict:
    """Partitions (with ``_SUCCESS`` markers where the table waits for them) of every Glue table for the
    ``days`` days before today and today itself; the tables themselves come from ``seed_demo``."""
    today = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    counts = {}
    for name, table in config.glue.tables.items():
        partitions = PartitionLayout(table).values_for_interval(
            today - timedelta(days=days), today + timedelta(1)
        )
        put_partitions(s3, table, partitions, success_marker=table.wait_for_success_marker)
        counts[name] = len(partitions)
    return counts


# Demo reconciliation data: an hour of ten-minute batches (skewed keys, redeliveries, late corrections,
# 1% malformed rows): the first stateless run groups 4 of the 6 (backlog), the second takes the other 2,
# and then the hour 10:00-11:00 is complete.
RECON_DEMO = {"batches": 6, "events_per_batch": 1_500, "n_keys": 2_000, "start": datetime(2024, 3, 5, 10)}


def seed_recon(s3, config: Settings) -> dict:
    """Land the demo batches under ``reconciliation.landing_uri`` (``s3://`` on moto, or ``file://``),
    after emptying the landing and work areas: a ``file://`` folder outlives the moto server, whose ledger
    and index start empty."""
    from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
    from spark_jobs.common.storage import Storage, is_s3, split_s3

    recon = config.reconciliation
    storage = Storage(s3)
    for uri in (recon.landing_uri, recon.work_uri):
        if is_s3(uri):
            ensure_bucket(s3, split_s3(uri)[0])
        storage.delete_tree(uri)
    manifests = write_batches(
        storage,
        recon.landing_uri,
        GeneratorConfig(seed=3, n_keys=RECON_DEMO["n_keys"], events_per_batch=RECON_DEMO["events_per_batch"]),
        batches=RECON_DEMO["batches"],
        start=RECON_DEMO["start"],
    )
    return {"batches": len(manifests), "events": sum(m["rows"] for m in manifests)}


def seed_ledger(
    dynamodb, table: str, landing_uri: str, start: datetime, batches: int, now: datetime
) -> list[str]:
    """A ledger with ``batches`` tiny generated 10-minute batches from ``start``, landed under
    ``landing_uri`` and registered PENDING (what a stateless run finds before it claims them); their ids."""
    from dataplatform.reconciliation import ledger
    from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
    from spark_jobs.common.storage import Storage

    ledger.create_ledger_table(dynamodb, table)
    write_batches(
        Storage(),
        landing_uri,
        GeneratorConfig(seed=7, n_keys=4, events_per_batch=2),
        batches=batches,
        start=start,
    )
    return ledger.register_batches(dynamodb, table, Storage(), landing_uri, now)["registered"]


def iceberg_demo_location(config: Settings, name: str) -> str:
    """Where the demo puts a configured Iceberg table (in AWS the tables exist already)."""
    policy = config.iceberg.tables[name]
    bucket, _ = split_s3_uri(config.iceberg.state_uri)
    return f"s3://{bucket}/iceberg/{policy.database}/{policy.table}"


# Overwrites per demo table: each leaves the table's previous files to its history.
ICEBERG_DEMO_COMMITS = {"orders": 6, "customers": 4}
# Small appends after the overwrites, as a streaming writer leaves them: one file each, all in one
# partition, which the maintenance run's compaction (orders' policy) rewrites into one.
ICEBERG_DEMO_APPENDS = {"orders": 6}


def seed_iceberg(catalog, s3, config: Settings) -> dict:
    """(Re)create the configured Iceberg tables with a few overwrites each, then the small appends of
    ``ICEBERG_DEMO_APPENDS``, written by pyiceberg (the ``backend: spark`` ones too: Iceberg's Spark
    procedures maintain a table whoever wrote it)."""
    from pyiceberg.exceptions import NoSuchTableError

    from dataplatform.iceberg.sample import append_rows, write_sample_table

    ensure_bucket(s3, split_s3_uri(config.iceberg.state_uri)[0])
    seeded = {}
    for name, policy in config.iceberg.tables.items():
        with contextlib.suppress(NoSuchTableError):
            catalog.purge_table(policy.identifier)
        table = write_sample_table(
            catalog, policy.identifier, iceberg_demo_location(config, name), ICEBERG_DEMO_COMMITS.get(name, 3)
        )
        for version in range(ICEBERG_DEMO_APPENDS.get(name, 0)):
            table = append_rows(table, version + 1)
        seeded[name] = len(table.metadata.snapshots)
    return seeded


# Customers in the demo's personal-data tables, and the people the demo run erases.
GDPR_DEMO = {"customers": 30, "erase": ["cust-000004", "cust-000017"]}


def gdpr_demo_location(config: Settings, key: str) -> str:
    dataset = config.gdpr.datasets[key]
    bucket, _ = split_s3_uri(config.gdpr.work_uri)
    return f"s3://{bucket}/iceberg/{dataset.database}/{dataset.table}"


def seed_gdpr(catalog, s3, config: Settings) -> dict:
    """(Re)create the configured Iceberg GDPR datasets (either engine) with personal data over several
    snapshots (the demo's tables: in AWS they exist already), in a versioned bucket so the purge has
    versions to remove.
    ``GDPR_DEMO_SOFT_DELETED``'s history is then soft-deleted by Iceberg maintenance (``tag``). Returns,
    per dataset, its rows and the files maintenance left tagged."""
    from dataplatform.gdpr import sample

    bucket = split_s3_uri(config.gdpr.work_uri)[0]
    ensure_bucket(s3, bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    writers = {
        "customer_profiles": sample.write_profiles,
        "payments": sample.write_payments,
        "payment_ledger": sample.write_payments,
    }
    seeded = {}
    for key, dataset in config.gdpr.datasets.items():
        if dataset.format != "iceberg" or key not in writers:
            continue
        table = writers[key](
            catalog, dataset.identifier, gdpr_demo_location(config, key), GDPR_DEMO["customers"]
        )
        seeded[key] = {"rows": table.scan().to_arrow().num_rows, "tagged_files": 0}
        if key == GDPR_DEMO_SOFT_DELETED:
            seeded[key]["tagged_files"] = soft_delete_history(catalog, s3, config, key)
    return seeded


HUDI_SCHEMA = (
    "log_id string, log_date string, event_ts bigint, user_id string, peer_id string, message string"
)
HUDI_DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")


def hudi_demo_commits(customers: int) -> list[dict]:
    """Three commits of app-log rows over three days: every customer logs in on each day (``user_id``),
    every fifth row names a second customer (``peer_id``); the second commit updates the first day's rows
    (merge-on-read: into log files), the third adds a day's worth more. So the demo's subjects have rows in
    base files, log files and superseded file slices."""

    def row(n: int, day: str, ts: int, suffix: str) -> list:
        user = f"cust-{n % customers:06d}"
        peer = f"cust-{(n * 7) % customers:06d}" if n % 5 == 0 else None
        return [f"log-{day}-{n:04d}", day, ts, user, peer, f"login {suffix}"]

    first = [row(n, day, 1, "a") for day in HUDI_DAYS[:2] for n in range(customers)]
    updates = [row(n, HUDI_DAYS[0], 2, "b") for n in range(customers)]
    more = [row(n, HUDI_DAYS[2], 3, "c") for n in range(customers)]
    return [
        {"operation": "insert", "rows": first},
        {"operation": "upsert", "rows": updates},
        {"operation": "upsert", "rows": more},
    ]


def hudi_demo_tables(config: Settings) -> list[dict]:
    """The ``hudi_seed`` tables of the configured Hudi GDPR datasets (their own key fields and type)."""
    return [
        {
            "name": dataset.table,
            "location": dataset.location,
            "table_type": dataset.hudi_table_type,
            "record_key": dataset.record_key,
            "partition_field": dataset.partition_column,
            "precombine_field": dataset.precombine_field,
            "schema": HUDI_SCHEMA,
            "commits": hudi_demo_commits(GDPR_DEMO["customers"]),
        }
        for dataset in config.gdpr.datasets.values()
        if dataset.format == "hudi"
    ]


def seed_gdpr_hudi(s3, config: Settings, endpoint_url: str | None, credentials: tuple) -> dict:
    """(Re)write the configured Hudi GDPR datasets with real Hudi: one ``spark-submit`` of
    ``dataplatform.devstack.hudi_seed`` with the locked bundle and S3A on ``endpoint_url`` (``credentials``
    reach it in its environment). Returns, per dataset, its table type and how many commits hold rows."""
    from dataplatform.devstack import hudi_seed
    from dataplatform.s3.objects import delete_versions, list_versions

    tables = hudi_demo_tables(config)
    for table in tables:
        ensure_bucket(s3, split_s3_uri(table["location"])[0])
        delete_versions(s3, list_versions(s3, table["location"]))
    if tables:
        region = config.aws.region
        command = hudi_seed.seed_command(tables, endpoint_url, region)
        hudi_seed.run_hudi_program(command, endpoint_url, region, credentials, "seeding the Hudi tables")
    return {
        key: {"table_type": dataset.hudi_table_type, "commits": len(hudi_demo_commits(1))}
        for key, dataset in config.gdpr.datasets.items()
        if dataset.format == "hudi"
    }


# The demo dataset whose older files Iceberg maintenance keeps in S3 with the delete tag: no metadata
# reaches them, and the erasure must still find the ones holding the subjects' rows (issue 12).
GDPR_DEMO_SOFT_DELETED = "customer_profiles"


def soft_delete_history(catalog, s3, config: Settings, key: str) -> int:
    """Rewrite the dataset's table whole (as a compaction would), then run Iceberg maintenance on it with
    ``unreferenced.action: tag``, ``retain_last: 1`` and no minimum age: its older files stay in S3,
    tagged for the lifecycle rule. Returns how many files were tagged."""
    from dataplatform.config import IcebergTablePolicy
    from dataplatform.iceberg.maintenance import MaintenanceContext, RunClock, maintain_table

    dataset = config.gdpr.datasets[key]
    table = catalog.load_table(dataset.identifier)
    table.overwrite(table.scan().to_arrow())
    policy = IcebergTablePolicy(
        database=dataset.database,
        table=dataset.table,
        retain_last=1,
        max_snapshot_age_hours=0,
        unreferenced={"action": "tag"},
        created={"enabled": False},
    )
    now = datetime.now(UTC)
    ctx = MaintenanceContext(catalog, s3, f"{config.gdpr.work_uri}demo_maintenance_state/")
    report = maintain_table(ctx, key, policy, RunClock(now.date(), now))
    return report["unreferenced"].get("tagged", 0)


def seed_pricing(config) -> list[dict]:
    """The demo's workflow launches (``dataplatform.pricing.sample``) as moto resources and launch records,
    plus one launch whose instance type has no price."""
    from types import SimpleNamespace

    from dataplatform import aws
    from dataplatform.pricing.sample import DEMO_LAUNCHES, DEMO_UNPRICEABLE, seed_launches

    clients = SimpleNamespace(
        **{service: aws.client(service) for service in ("batch", "ecs", "ec2", "fsx", "iam")}
    )
    return seed_launches(
        clients,
        aws.client("dynamodb"),
        config.pricing.launches_table,
        launches=(*DEMO_LAUNCHES, DEMO_UNPRICEABLE),
    )


# The queue subscribed to the alert topic on the local stack: what `make demo` and the tests read.
ALERT_QUEUE = "dataplatform-alerts"


def seed_alert_topic(sns, sqs, topic_arn: str) -> str:
    """The topic of ``alerts.sns_topic_arn`` on moto with the queue ``ALERT_QUEUE`` subscribed (raw
    delivery off: a queue message is the SNS envelope, which keeps the subject); the queue URL. Idempotent."""
    topic = sns.create_topic(Name=topic_arn.rsplit(":", 1)[-1])["TopicArn"]
    if topic != topic_arn:
        raise ValueError(f"alerts.sns_topic_arn {topic_arn} is not the topic moto created ({topic})")
    queue_url = sqs.create_queue(QueueName=ALERT_QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "false"},
        ReturnSubscriptionArn=True,
    )
    return queue_url


def receive_alerts(sqs, queue_url: str) -> list[dict]:
    """Every alert waiting in the queue (``{"subject", "message"}``, in arrival order), deleted once read."""
    received = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["SentTimestamp"]
        ).get("Messages", [])
        if not batch:
            break
        for item in batch:
            envelope = json.loads(item["Body"])
            received.append(
                {
                    "subject": envelope.get("Subject"),
                    "message": envelope["Message"],
                    "sent": int(item["Attributes"]["SentTimestamp"]),
                }
            )
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=item["ReceiptHandle"])
    return sorted(received, key=lambda alert: alert["sent"])
