"""The command-line tools as a user runs them, in a new process against the moto server: standard output
holds the result alone (it parses as JSON, so ``| jq`` works), logs go to standard error, and
``reconciliation ack-invalid`` takes an INVALID batch off ``status`` once, reading the real ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dataplatform.config import settings
from dataplatform.dynamodb import from_item
from dataplatform.gdpr import audit, requests
from dataplatform.pricing.sample import DEMO_LAUNCHES, seed_launches
from dataplatform.reconciliation import index, ledger
from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
from spark_jobs.common.storage import Storage
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.integration

# What the AWS hook logs when it builds a client: it must reach standard error, not vanish.
CONNECTION_LOG = "AWS Connection (conn_id='aws_default'"


def assert_only_json_on_stdout(process) -> object:
    assert process.returncode == 0, process.stderr
    assert CONNECTION_LOG in process.stderr
    return json.loads(process.stdout)


def test_reconciliation_get_prints_only_the_artifact(aws):
    config = settings().reconciliation
    dynamodb = aws.client("dynamodb")
    index.create_index_table(dynamodb, config.index_table)
    aws.s3.create_bucket(Bucket="cli-state")
    artifacts = [
        {"key": f"ORD-{n:07d}", "version": 2, "status": "OPEN", "entities": ["Zürich_€"], "event_count": n}
        for n in range(3)
    ]
    part_uri = "s3://cli-state/state/00000002/part-00000.txt"
    storage = Storage(aws.s3)
    storage.write_bytes(
        part_uri, b"".join(json.dumps(a, ensure_ascii=False).encode() + b"\n" for a in artifacts)
    )
    index.index_part_file(dynamodb, storage, config.index_table, part_uri, seq=2)

    found = run_cli("reconciliation", "get", "ORD-0000001")
    missing = run_cli("reconciliation", "get", "ORD-9999999")

    assert assert_only_json_on_stdout(found) == artifacts[1]
    assert (missing.returncode, missing.stdout) == (1, "")
    assert f"error: no artifact 'ORD-9999999' in the index {config.index_table}" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_gdpr_status_prints_only_json(aws):
    config = settings().gdpr
    dynamodb = aws.client("dynamodb")
    requests.create_requests_table(dynamodb, config.requests_table)
    audit.create_audit_table(dynamodb, config.audit_table)
    received = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    requests.submit_request(dynamodb, config.requests_table, "ticket-7", "cust-000007", received, 30)

    one = assert_only_json_on_stdout(run_cli("gdpr", "status", "--request-id", "ticket-7"))
    overview = assert_only_json_on_stdout(run_cli("gdpr", "status", "--json"))

    assert (one["request_id"], one["status"], one["deadline"], one["audit"]) == (
        "ticket-7",
        "PENDING",
        "2024-05-31T12:00:00+00:00",
        [],
    )
    assert overview["counts"] == {"PENDING": 1, "IN_PROGRESS": 0, "FAILED": 0, "COMPLETED": 0}
    assert [(r["request_id"], r["overdue"]) for r in overview["open"]] == [("ticket-7", True)]
    assert "cust-000007" not in json.dumps([one, overview])


def test_pricing_launch_prints_only_json_and_what_it_wrote_is_in_the_table(aws):
    table = settings().pricing.launches_table
    clients = type("Clients", (), {s: aws.client(s) for s in ("batch", "ecs", "ec2", "fsx", "iam")})
    launch = next(launch for launch in DEMO_LAUNCHES if launch.status == "COMPLETE")
    seed_launches(clients, aws.client("dynamodb"), table, launches=(launch,))

    shown = assert_only_json_on_stdout(run_cli("pricing", "launch", launch.launch_id, "--write", "--json"))

    item = aws.client("dynamodb").get_item(
        TableName=table, Key={"launch_id": {"S": launch.launch_id}}, ConsistentRead=True
    )["Item"]
    stored = from_item(item)
    assert shown["written"]["outcome"] == "priced"
    assert {name: stored[name] for name in shown["cost"]} == shown["cost"]
    assert sum(float(line["cost"]) for line in shown["lines"]) == pytest.approx(float(stored["total_cost"]))


def test_ack_invalid_takes_an_invalid_batch_off_status_once(aws, tmp_path):
    table = settings().reconciliation.ledger_table
    dynamodb = aws.client("dynamodb")
    ledger.create_ledger_table(dynamodb, table)
    landing = f"file://{tmp_path}/landing/"
    start = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
    write_batches(
        Storage(), landing, GeneratorConfig(seed=5, n_keys=4, events_per_batch=2), batches=2, start=start
    )
    (tmp_path / "landing" / "20240305T1010").rename(tmp_path / "landing" / "20240305T1015")
    ledger.register_batches(dynamodb, table, Storage(), landing, start)

    def stored(batch_id):
        key = {"pk": {"S": f"batch#{batch_id}"}}
        return from_item(dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"])

    before = assert_only_json_on_stdout(run_cli("reconciliation", "status", "--json"))
    acked = run_cli("reconciliation", "ack-invalid", "20240305T1015")
    after = assert_only_json_on_stdout(run_cli("reconciliation", "status", "--json"))
    refused = run_cli("reconciliation", "ack-invalid", "20240305T1000")

    reason = "manifest batch_id '20240305T1010' does not match its folder"
    assert before["invalid"] == [{"batch_id": "20240305T1015", "reason": reason}]
    assert (acked.returncode, acked.stdout) == (0, "INVALID batch 20240305T1015 acknowledged\n")
    assert (stored("20240305T1015")["state"], stored("20240305T1015")["reason"]) == (
        "INVALID_ACKNOWLEDGED",
        reason,
    )
    assert after["invalid"] == []
    assert (after["batches"]["INVALID"], after["batches"]["INVALID_ACKNOWLEDGED"]) == (0, 1)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert "error: refused: batch 20240305T1000 is PENDING: only an INVALID batch can be acknowledged" in (
        refused.stderr
    )
    assert stored("20240305T1000")["state"] == "PENDING"


def test_status_on_a_fresh_stack_names_the_missing_table(aws):
    fresh = run_cli("reconciliation", "status")

    assert (fresh.returncode, fresh.stdout) == (1, "")
    assert fresh.stderr.splitlines()[-1] == (
        "error: DynamoDB table recon_ledger does not exist yet: the first recon_stateless run (setup_tables) "
        "creates it"
    )
    assert "Traceback" not in fresh.stderr
