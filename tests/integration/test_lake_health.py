"""The hourly ``lake_health`` DAG end to end on the moto server: a lake seeded with one state of each kind
of finding (a GDPR request near its deadline and one past it, a reconciliation window incomplete past its
SLA, a Glue table whose newest partition is stale, an Iceberg table not maintained for two periods, a
launch that failed pricing three times) beside states that are fine; real ``dag.test()`` runs; the alerts
read back from the SQS queue subscribed to the SNS topic.

One module-scoped lake serves every test, in order: the figures, the first run (one alert per finding),
the second run (none), a cleared finding (one recovery), the CLI (the same figures), a bad config (an
error before any side effect)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import yaml

from dataplatform.config import settings
from dataplatform.devstack.seed import (
    create_table,
    ensure_bucket,
    receive_alerts,
    seed_alert_topic,
    seed_ledger,
)
from dataplatform.dynamodb import from_item, to_item
from dataplatform.gdpr import requests
from dataplatform.glue.layout import PartitionLayout
from dataplatform.health.__main__ import format_status
from dataplatform.health.figures import DAG_IDS, Clients, lake_figures
from dataplatform.iceberg.sample import write_sample_table
from dataplatform.pricing.launches import ensure_launches_table
from dataplatform.reports import latest_key, report_key
from tests.airflow_helpers import run_repo_dag, task_states
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.integration

DAG_ID = "lake_health"
NOW = datetime.now(UTC).replace(microsecond=0)
EXPECTED_FINDINGS = {
    "gdpr:deadline_near:req-soon",
    "gdpr:overdue:req-late",
    # 6 batches of 10 minutes cover the hour that started 6 hours ago; PENDING, so it cannot be complete.
    f"reconciliation:incomplete_window:{NOW.replace(minute=0, second=0) - timedelta(hours=6):%Y-%m-%dT%H:%M:%SZ}",
    "glue:stale:web_events",
    "iceberg:maintenance_overdue:orders",
    "pricing:pricing_failed:L-unpriceable",
}


@pytest.fixture(scope="module")
def lake(moto_server, airflow_db, tmp_path_factory):
    """The seeded lake, the alert queue and a reader of it. Every test reads the same state."""
    from dataplatform import aws

    moto_server.reset()
    config = settings()
    clients = Clients(dynamodb=aws.client("dynamodb"), s3=aws.client("s3"), glue=aws.client("glue"))
    sqs = aws.client("sqs")
    queue = seed_alert_topic(aws.client("sns"), sqs, config.alerts.sns_topic_arn)
    ensure_bucket(clients.s3, "dataplatform-local-lake")
    seed_gdpr(clients.dynamodb, config)
    seed_reconciliation(clients.dynamodb, config, tmp_path_factory.mktemp("landing"))
    seed_glue(clients.glue, config)
    seed_iceberg(clients.s3, moto_server.url, config)
    seed_pricing(clients.dynamodb, config)
    return SimpleNamespace(clients=clients, config=config, alerts=lambda: receive_alerts(sqs, queue))


def seed_gdpr(dynamodb, config) -> None:
    """Two requests completed through the queue's own path (claimed, erased, finished: last month and
    this one), then three open ones."""
    table = config.gdpr.requests_table
    requests.create_requests_table(dynamodb, table)
    days = config.gdpr.deadline_days
    last_month = NOW.replace(day=1) - timedelta(days=1)
    for request_id, subject, completed in [("req-old", 99, last_month), ("req-done", 3, NOW)]:
        requests.submit_request(
            dynamodb, table, request_id, f"cust-{subject:06d}", completed - timedelta(days=3), days
        )
        (claimed,) = requests.claim_requests(dynamodb, table, "seed", 1, completed, timedelta(hours=6))
        requests.record_progress(dynamodb, table, claimed.request_id, "seed", "profiles", {"verified": True})
        requests.finish_request(dynamodb, table, claimed.request_id, "seed", ["profiles"], completed)
    for request_id, age_days in [("req-soon", days - 2), ("req-late", days + 1), ("req-fresh", 1)]:
        requests.submit_request(
            dynamodb, table, request_id, f"cust-{age_days:06d}", NOW - timedelta(days=age_days), days
        )


def seed_reconciliation(dynamodb, config, landing_dir) -> None:
    hour = NOW.replace(minute=0, second=0) - timedelta(hours=6)
    table = config.reconciliation.ledger_table
    assert len(seed_ledger(dynamodb, table, f"file://{landing_dir}/", hour, 6, NOW)) == 6


def seed_glue(glue, config) -> None:
    """web_events with its newest partition 5 hours old (stale past 180 minutes); cloudtrail absent."""
    table = config.glue.tables["web_events"]
    create_table(glue, table)
    values = PartitionLayout(table).values_at(NOW - timedelta(hours=5))
    glue.create_partition(
        DatabaseName=table.database,
        TableName=table.table,
        PartitionInput={"Values": list(values), "StorageDescriptor": {"Location": table.location + "x/"}},
    )


def seed_iceberg(s3, endpoint: str, config) -> None:
    """orders: a real table (3 snapshots) last maintained 3 days ago; customers: maintained an hour ago
    but not in the catalog (an error on the page, no finding)."""
    from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog

    catalog = load_glue_catalog(AwsAccess("us-east-1", endpoint, "testing", "testing"))
    orders = config.iceberg.tables["orders"]
    write_sample_table(catalog, orders.identifier, "s3://dataplatform-local-lake/iceberg/orders", commits=2)
    for name, age in [("orders", timedelta(days=3)), ("customers", timedelta(hours=1))]:
        copy = {
            "dag_id": "iceberg_maintenance",
            "run_id": f"scheduled__{name}",
            "name": name,
            "report_uri": f"{config.reports_uri}iceberg_maintenance/scheduled__{name}/{name}.json",
            "written_at": (NOW - age).isoformat(),
            "report": {"unreferenced": {"action": "tag", "files": 2, "bytes": 1234}, "orphans": {"found": 0}},
        }
        key = "_reports/" + latest_key("iceberg_maintenance", name)
        s3.put_object(Bucket="dataplatform-local-lake", Key=key, Body=json.dumps(copy).encode())


def seed_pricing(dynamodb, config) -> None:
    table = config.pricing.launches_table
    ensure_launches_table(dynamodb, table)
    common = {"status": "COMPLETE", "workflow_type": "wgs", "region": "us-east-1"}
    launches = [
        {
            "launch_id": "L-priced",
            "started_at": (NOW - timedelta(days=1, hours=2)).isoformat(),
            "completed_at": (NOW - timedelta(days=1)).isoformat(),
            "total_cost": "12.5000",
            "currency": "USD",
            "instance_types": ["m6g.xlarge"],
        },
        {
            "launch_id": "L-unpriceable",
            "completed_at": (NOW - timedelta(days=2)).isoformat(),
            "pricing_error": "no price for instance type x9.fake",
            "pricing_attempts": 3,
        },
        {
            "launch_id": "L-failed-once",
            "completed_at": (NOW - timedelta(days=2)).isoformat(),
            "pricing_error": "Batch job not found",
            "pricing_attempts": 1,
        },
    ]
    for launch in launches:
        dynamodb.put_item(TableName=table, Item=to_item({**common, **launch}))


def run_lake_health():
    run = run_repo_dag(DAG_ID)
    assert run.state == "success", task_states(run)
    return run


def findings_stored(lake) -> dict[str, dict]:
    table = lake.config.health.findings_table
    items = lake.clients.dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["finding_id"]: item for item in map(from_item, items)}


def about(alert: dict) -> tuple[str, str]:
    """(event, finding id) from a subject ``[local] lake_health: FINDING: <id>``."""
    _, event, finding_id = alert["subject"].split(": ", 2)
    return event, finding_id


def test_the_figures_are_the_seeded_state(lake):
    figures = lake_figures(lake.config, lake.clients, NOW)
    blocks = {block["pipeline"]: block for block in figures["pipelines"]}
    gdpr = blocks["gdpr"]["figures"]
    assert (gdpr["open"], gdpr["overdue"], gdpr["due_soon"], gdpr["completed_this_month"]) == (3, 1, 1, 1)
    table = lake.config.gdpr.requests_table
    stored = {
        request_id: from_item(
            lake.clients.dynamodb.get_item(TableName=table, Key={"request_id": {"S": request_id}})["Item"]
        )
        for request_id in ("req-late", "req-soon")
    }
    assert [(item["request_id"], item["status"], item["deadline"]) for item in gdpr["urgent"]] == [
        (request_id, stored[request_id]["status"], stored[request_id]["deadline"])
        for request_id in ("req-late", "req-soon")
    ]
    assert "cust-" not in json.dumps(figures), "no subject id in the figures"
    recon = blocks["reconciliation"]["figures"]
    assert (recon["backlog"], recon["incomplete_windows"], recon["latest_complete_window"]) == (6, 1, None)
    (web_events, cloudtrail) = blocks["glue"]["figures"]["tables"]
    newest = NOW - timedelta(hours=5)
    assert web_events["newest_partition"] == [f"{newest:%Y-%m-%d}", f"{newest:%H}"]
    assert 4 * 60 <= web_events["lag_minutes"] <= 5 * 60
    assert cloudtrail["error"].startswith("EntityNotFoundException")
    tables = {table["table"]: table for table in blocks["iceberg"]["figures"]["tables"]}
    metadata = lake.clients.glue.get_table(DatabaseName="demo_lake", Name="orders")["Table"]["Parameters"]
    bucket, _, key = metadata["metadata_location"].removeprefix("s3://").partition("/")
    snapshots = json.loads(lake.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())["snapshots"]
    assert tables["orders"]["snapshots"] == len(snapshots) == 3
    assert (tables["orders"]["unreferenced_bytes"], tables["orders"]["unreferenced_action"]) == (1234, "tag")
    assert tables["customers"]["error"] and tables["customers"]["hours_since_maintenance"] == 1.0
    pricing = blocks["pricing"]["figures"]
    assert (pricing["week"]["launches_priced"], pricing["week"]["cost_usd"]) == (1, "12.5000")
    assert (pricing["week"]["pricing_errors"], len(pricing["comparison"]["groups"])) == (2, 1)
    assert [launch["launch_id"] for launch in pricing["repeatedly_failed"]] == ["L-unpriceable"]
    assert {finding["id"] for finding in figures["findings"]} == EXPECTED_FINDINGS
    states = {name: block["state"] for name, block in blocks.items()}
    assert states == {name: "failing" for name in states}
    assert blocks["iceberg"]["last_runs"][0]["run_id"] == "scheduled__customers"
    text = format_status(figures)
    assert "gdpr: failing: 3 open, 1 overdue, 1 due within 7 days, 1 completed this month" in text
    assert "pricing: failing: 1 launches priced this week, 12.5000 USD" in text


def test_the_first_run_alerts_each_finding_once(lake):
    run_lake_health()
    alerts = lake.alerts()
    assert sorted(about(alert) for alert in alerts) == sorted(("FINDING", f) for f in EXPECTED_FINDINGS)
    stored = findings_stored(lake)
    assert set(stored) == EXPECTED_FINDINGS
    assert all(item["alerted"] and item["state"] == "OPEN" for item in stored.values())
    for alert in alerts:
        assert "cust-" not in alert["message"], "no subject id in an alert"
    overdue = next(alert for alert in alerts if about(alert)[1] == "gdpr:overdue:req-late")
    assert "past its deadline" in overdue["message"] and "DAG gdpr_erasure" in overdue["message"]


def test_the_second_run_alerts_nothing(lake):
    run = run_lake_health()
    assert lake.alerts() == []
    assert set(findings_stored(lake)) == EXPECTED_FINDINGS
    report = lake.clients.s3.get_object(
        Bucket="dataplatform-local-lake", Key="_reports/" + report_key(DAG_ID, run.run_id, "lake_health")
    )
    assert json.loads(report["Body"].read())["alerts"]["alerted"] == []


def test_a_cleared_finding_sends_one_recovery(lake):
    lake.clients.dynamodb.update_item(
        TableName=lake.config.pricing.launches_table,
        Key={"launch_id": {"S": "L-unpriceable"}},
        UpdateExpression="SET total_cost = :c REMOVE pricing_error",
        ExpressionAttributeValues={":c": {"S": "3.0000"}},
    )
    run_lake_health()
    assert [about(alert) for alert in lake.alerts()] == [("CLEARED", "pricing:pricing_failed:L-unpriceable")]
    assert set(findings_stored(lake)) == EXPECTED_FINDINGS - {"pricing:pricing_failed:L-unpriceable"}


def test_the_cli_prints_the_same_figures(lake):
    process = run_cli("health", "status", "--json")
    assert process.returncode == 0, process.stderr
    printed = json.loads(process.stdout)
    expected = EXPECTED_FINDINGS - {"pricing:pricing_failed:L-unpriceable"}
    assert {finding["id"] for finding in printed["findings"]} == expected
    assert [block["pipeline"] for block in printed["pipelines"]] == list(DAG_IDS)


def test_a_bad_config_fails_before_any_side_effect(lake, tmp_path, monkeypatch):
    from dataplatform import config as config_module
    from dataplatform.config import ConfigError
    from dataplatform.operators.health import check_lake_health

    raw = yaml.safe_load(config_module.config_path("local").read_text())
    raw["health"]["pricing_failed_attempts"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    table = lake.config.health.findings_table
    lake.clients.dynamodb.delete_table(TableName=table)
    monkeypatch.setenv("DATAPLATFORM_CONFIG", str(bad))
    config_module.settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"health\.pricing_failed_attempts"):
            check_lake_health("manual__bad_config")
    finally:
        monkeypatch.undo()
        config_module.settings.cache_clear()
    assert table not in lake.clients.dynamodb.list_tables()["TableNames"]
    assert lake.alerts() == []
