"""The request queue and the audit trail on moto DynamoDB, and the CLI that feeds the queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dataplatform.config import settings
from dataplatform.gdpr import audit, requests
from dataplatform.gdpr.__main__ import main as gdpr_cli
from dataplatform.gdpr.requests import COMPLETED, FAILED, IN_PROGRESS, PENDING
from tests.moto_helpers import ResendingClient

pytestmark = pytest.mark.integration

TABLE, AUDIT = "gdpr_requests", "gdpr_audit"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def dynamodb(aws):
    client = aws.client("dynamodb")
    requests.create_requests_table(client, TABLE)
    audit.create_audit_table(client, AUDIT)
    return client


def submit(dynamodb, request_id: str, subject: str = "cust-000001", at: datetime = T0):
    return requests.submit_request(dynamodb, TABLE, request_id, subject, at, 30)


def counted(dynamodb, month: str) -> int | None:
    """The month's completed counter as stored (read here, not through the code under test)."""
    item = dynamodb.get_item(TableName=TABLE, Key={"request_id": {"S": f"#completed#{month}"}}).get("Item")
    return int(item["completed"]["N"]) if item else None


def complete(dynamodb, request_id: str, run_id: str, at: datetime):
    requests.claim_requests(dynamodb, TABLE, run_id, 10, at, 6 * HOUR)
    requests.record_progress(dynamodb, TABLE, request_id, run_id, "profiles", {"verified": True})
    return requests.finish_request(dynamodb, TABLE, request_id, run_id, ["profiles"], at)


def test_a_request_gets_its_deadline_and_resubmitting_it_changes_nothing(dynamodb):
    request, created = submit(dynamodb, "ticket-1")
    again, created_again = submit(dynamodb, "ticket-1", at=T0 + HOUR)

    assert created and not created_again
    assert request.deadline == "2024-05-31T12:00:00+00:00" and request.status == PENDING
    assert again == request
    assert dynamodb.scan(TableName=TABLE)["Count"] == 1


def test_a_request_id_cannot_be_reused_for_another_subject(dynamodb):
    submit(dynamodb, "ticket-1")
    with pytest.raises(requests.RequestError, match="another subject") as refused:
        submit(dynamodb, "ticket-1", subject="cust-000002")
    assert "cust-00000" not in str(refused.value)
    assert requests.get_request(dynamodb, TABLE, "ticket-1").subject_id == "cust-000001"


def test_claims_take_the_oldest_open_requests_once(dynamodb):
    for n in range(5):
        submit(dynamodb, f"ticket-{n}", subject=f"cust-00000{n}", at=T0 + n * HOUR)

    first = requests.claim_requests(dynamodb, TABLE, "run-a", 3, T0 + 10 * HOUR, 6 * HOUR)
    retried = requests.claim_requests(dynamodb, TABLE, "run-a", 3, T0 + 10 * HOUR, 6 * HOUR)
    second = requests.claim_requests(dynamodb, TABLE, "run-b", 3, T0 + 10 * HOUR, 6 * HOUR)

    assert [r.request_id for r in first] == ["ticket-0", "ticket-1", "ticket-2"]
    assert [r.request_id for r in retried] == [r.request_id for r in first]
    assert [r.request_id for r in second] == ["ticket-3", "ticket-4"]
    stored = requests.get_request(dynamodb, TABLE, "ticket-0")
    assert (stored.status, stored.claimed_by, stored.attempts) == (IN_PROGRESS, "run-a", 1)


def test_a_dead_runs_claim_is_taken_over_after_the_timeout(dynamodb):
    submit(dynamodb, "ticket-1")
    requests.claim_requests(dynamodb, TABLE, "dead-run", 10, T0, 6 * HOUR)

    assert requests.claim_requests(dynamodb, TABLE, "run-b", 10, T0 + 5 * HOUR, 6 * HOUR) == []
    taken = requests.claim_requests(dynamodb, TABLE, "run-c", 10, T0 + 7 * HOUR, 6 * HOUR)

    assert [r.request_id for r in taken] == ["ticket-1"]
    with pytest.raises(requests.ClaimLostError):
        requests.record_progress(dynamodb, TABLE, "ticket-1", "dead-run", "payments", {"verified": True})


def test_a_request_completes_only_when_every_dataset_verified(dynamodb):
    submit(dynamodb, "ticket-1")
    requests.claim_requests(dynamodb, TABLE, "run-a", 10, T0, 6 * HOUR)
    requests.record_progress(dynamodb, TABLE, "ticket-1", "run-a", "profiles", {"verified": True})
    requests.record_progress(
        dynamodb, TABLE, "ticket-1", "run-a", "payments", {"verified": False, "reason": "tag pinned"}
    )

    failed = requests.finish_request(dynamodb, TABLE, "ticket-1", "run-a", ["profiles", "payments"], T0)
    assert failed.status == FAILED and failed.reason == "payments: tag pinned"
    assert counted(dynamodb, "2024-05") is None

    retried = requests.claim_requests(dynamodb, TABLE, "run-b", 10, T0 + HOUR, 6 * HOUR)
    assert [r.request_id for r in retried] == ["ticket-1"] and retried[0].attempts == 2
    requests.record_progress(dynamodb, TABLE, "ticket-1", "run-b", "payments", {"verified": True})
    done = requests.finish_request(dynamodb, TABLE, "ticket-1", "run-b", ["profiles", "payments"], T0 + HOUR)
    assert done.status == COMPLETED and done.reason is None
    # The finishing task retried after it was killed past this write (found by tests/crash): unchanged.
    again = requests.finish_request(
        dynamodb, TABLE, "ticket-1", "run-b", ["profiles", "payments"], T0 + 2 * HOUR
    )
    assert again == done
    with pytest.raises(requests.ClaimLostError):
        requests.finish_request(dynamodb, TABLE, "ticket-1", "run-a", ["profiles", "payments"], T0 + 2 * HOUR)
    assert requests.claim_requests(dynamodb, TABLE, "run-c", 10, T0 + 2 * HOUR, 6 * HOUR) == []
    # Counted once, in the month it completed, whatever was retried or refused after.
    assert counted(dynamodb, "2024-05") == 1


def test_resent_claims_and_finishes_are_the_runs_own(dynamodb):
    """Found by make chaos (read_timeout): a claim resent after its first send had landed was taken for
    another run's (the request stayed IN_PROGRESS, worked on by nobody), and a resent finish failed the
    task on the status it had just set, and every retry of it."""
    submit(dynamodb, "ticket-1")
    resending = ResendingClient(dynamodb, "update_item")

    claimed = requests.claim_requests(resending, TABLE, "run-a", 10, T0, 6 * HOUR)
    assert [r.request_id for r in claimed] == ["ticket-1"] and claimed[0].attempts == 1
    requests.record_progress(resending, TABLE, "ticket-1", "run-a", "profiles", {"verified": True})
    done = requests.finish_request(resending, TABLE, "ticket-1", "run-a", ["profiles"], T0)
    assert done.status == COMPLETED
    again = requests.finish_request(dynamodb, TABLE, "ticket-1", "run-a", ["profiles"], T0)
    assert again.status == COMPLETED and requests.get_request(dynamodb, TABLE, "ticket-1").attempts == 1

    # The completing transaction resent after its first send landed: counted once.
    submit(dynamodb, "ticket-2", subject="cust-000002")
    resent_transaction = ResendingClient(dynamodb, "transact_write_items")
    assert complete(resent_transaction, "ticket-2", "run-b", T0).status == COMPLETED
    assert counted(dynamodb, "2024-05") == 2


def test_completions_are_counted_per_utc_month_and_can_be_recounted(dynamodb, capsys):
    """The counter the lake-health page reads, against the requests themselves; ``recount-completed``
    rebuilds a month's counter (a table that predates it) from the status index."""
    may_end = datetime(2024, 5, 31, 23, 30, tzinfo=UTC)
    for n, at in enumerate([T0, may_end, may_end + HOUR]):  # the last one completes on 1 June, UTC
        submit(dynamodb, f"ticket-{n}", subject=f"cust-00000{n}", at=at - HOUR)
        complete(dynamodb, f"ticket-{n}", f"run-{n}", at)
    submit(dynamodb, "ticket-open", subject="cust-000009")
    stored = [json.loads(json.dumps(i)) for i in dynamodb.scan(TableName=TABLE)["Items"]]
    done = [i["completed_at"]["S"][:7] for i in stored if i.get("status", {}).get("S") == COMPLETED]
    assert sorted(done) == ["2024-05", "2024-05", "2024-06"]

    assert (counted(dynamodb, "2024-05"), counted(dynamodb, "2024-06")) == (2, 1)
    assert requests.completed_in_month(dynamodb, TABLE, may_end) == 2
    assert requests.completed_in_month(dynamodb, TABLE, datetime(2024, 7, 1, tzinfo=UTC)) == 0

    for month in ("2024-05", "2024-06"):
        dynamodb.delete_item(TableName=TABLE, Key={"request_id": {"S": f"#completed#{month}"}})
    assert gdpr_cli(["recount-completed", "--month", "2024-05"]) == 0
    assert requests.recount_completed(dynamodb, TABLE, datetime(2024, 6, 15, tzinfo=UTC)) == 1
    assert (counted(dynamodb, "2024-05"), counted(dynamodb, "2024-06")) == (2, 1)
    assert capsys.readouterr().out == "2024-05: 2 requests completed\n"
    with pytest.raises(SystemExit) as refused:
        gdpr_cli(["recount-completed", "--month", "May"])
    assert refused.value.code == 2 and "a month is YYYY-MM, got 'May'" in capsys.readouterr().err


def record(**overrides) -> audit.AuditRecord:
    values = {
        "request_id": "ticket-1",
        "subject_hmac": "hmac-sha256:ab",
        "dataset": "payments",
        "run_id": "run-a",
        "try_number": 1,
        "outcome": "verified",
        "rows_deleted": 3,
        "files_rewritten": 1,
        "commit": "123",
        "expired_snapshots": ["1", "2"],
        "dropped_refs": [],
        "verification": {"passed": True},
        "started_at": "2024-05-01T12:00:00+00:00",
        "finished_at": "2024-05-01T12:01:00+00:00",
    }
    return audit.AuditRecord(**{**values, **overrides})


def test_audit_records_are_appended_never_overwritten(dynamodb):
    assert audit.append(dynamodb, AUDIT, record())
    assert not audit.append(dynamodb, AUDIT, record(outcome="failed", rows_deleted=0))
    assert audit.append(dynamodb, AUDIT, record(try_number=2, finished_at="2024-05-01T12:05:00+00:00"))

    records = audit.records_for(dynamodb, AUDIT, "ticket-1")
    assert [(r["try_number"], r["outcome"], r["rows_deleted"]) for r in records] == [
        (1, "verified", 3),
        (2, "verified", 3),
    ]
    assert records[0]["expired_snapshots"] == ["1", "2"] and records[0]["verification"] == {"passed": True}


def test_the_cli_submits_once_and_never_prints_the_subject(aws, capsys):
    config = settings().gdpr
    assert gdpr_cli(["submit", "--subject-id", "cust-000042", "--request-id", "ticket-9"]) == 0
    assert gdpr_cli(["submit", "--subject-id", "cust-000042", "--request-id", "ticket-9"]) == 0
    assert gdpr_cli(["submit", "--subject-id", "not-a-customer"]) == 2
    assert gdpr_cli(["status"]) == 0
    assert gdpr_cli(["status", "--request-id", "ticket-9"]) == 0

    out, err = capsys.readouterr()
    assert "submitted: request ticket-9" in out and "already submitted: request ticket-9" in out
    assert "does not match the configured pattern" in err
    assert "PENDING: 1" in out and '"request_id": "ticket-9"' in out
    assert "cust-000042" not in out + err and "not-a-customer" not in out + err
    client = aws.client("dynamodb")
    items = client.scan(TableName=config.requests_table)["Items"]
    assert [json.loads(json.dumps(i))["subject_id"]["S"] for i in items] == ["cust-000042"]
