"""The append-only audit trail of erasures: DynamoDB table ``gdpr_audit``.

One record per request, dataset and attempt: key ``request_id`` + ``record_id``
(``<recorded_at>#<dataset>#<run_id>#<try>``). Records are written with a condition that the key is new,
and nothing in this repository updates or deletes them (the IAM policy for the Airflow role grants
PutItem, GetItem and Query on the table, not UpdateItem or DeleteItem). The subject appears only as its
HMAC.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from dataplatform.dynamodb import ensure_table, error_code, key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditRecord:
    request_id: str
    subject_hmac: str
    dataset: str
    run_id: str
    try_number: int
    outcome: str  # verified | failed | pinned_refs | error
    rows_deleted: int
    files_rewritten: int | None
    # The delete's snapshot id (Iceberg) or commit instant (Hudi); None when nothing had to change.
    commit: str | None
    expired_snapshots: list[str]
    dropped_refs: list[str]
    verification: dict[str, Any]
    started_at: str
    finished_at: str
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def record_id(self) -> str:
        return f"{self.finished_at}#{self.dataset}#{self.run_id}#{self.try_number}"

    def item(self) -> dict[str, Any]:
        item = {
            "request_id": {"S": self.request_id},
            "record_id": {"S": self.record_id},
            "subject_hmac": {"S": self.subject_hmac},
            "dataset": {"S": self.dataset},
            "run_id": {"S": self.run_id},
            "try_number": {"N": str(self.try_number)},
            "outcome": {"S": self.outcome},
            "rows_deleted": {"N": str(self.rows_deleted)},
            "expired_snapshots": {"L": [{"S": s} for s in self.expired_snapshots]},
            "dropped_refs": {"L": [{"S": r} for r in self.dropped_refs]},
            # JSON keeps nested verification details readable and free of DynamoDB's type markers.
            "verification": {"S": json.dumps(self.verification, sort_keys=True)},
            "details": {"S": json.dumps(self.details, sort_keys=True)},
            "started_at": {"S": self.started_at},
            "finished_at": {"S": self.finished_at},
        }
        if self.files_rewritten is not None:
            item["files_rewritten"] = {"N": str(self.files_rewritten)}
        if self.commit is not None:
            item["commit"] = {"S": self.commit}
        if self.reason:
            item["reason"] = {"S": self.reason}
        return item


def create_audit_table(dynamodb: Any, table: str) -> bool:
    return ensure_table(dynamodb, table, key("request_id", "record_id"), ["request_id", "record_id"])


def append(dynamodb: Any, table: str, record: AuditRecord) -> bool:
    """Add the record; False when that exact record exists already (a retried write). Never overwrites."""
    try:
        dynamodb.put_item(
            TableName=table, Item=record.item(), ConditionExpression="attribute_not_exists(record_id)"
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    log.info(
        "audit: request %s, %s: %s, %d rows deleted",
        record.request_id,
        record.dataset,
        record.outcome,
        record.rows_deleted,
    )
    return True


def records_for(dynamodb: Any, table: str, request_id: str) -> list[dict[str, Any]]:
    """A request's audit records, oldest first, as plain dicts."""
    records, kwargs = (
        [],
        {
            "TableName": table,
            "KeyConditionExpression": "request_id = :r",
            "ExpressionAttributeValues": {":r": {"S": request_id}},
        },
    )
    while True:
        page = dynamodb.query(**kwargs)
        for item in page.get("Items", []):
            record = {name: next(iter(value.values())) for name, value in item.items()}
            for name in ("verification", "details"):
                if name in record:
                    record[name] = json.loads(record[name])
            for name in ("try_number", "rows_deleted", "files_rewritten"):
                if name in record:
                    record[name] = int(record[name])
            record["expired_snapshots"] = [v["S"] for v in item.get("expired_snapshots", {}).get("L", [])]
            record["dropped_refs"] = [v["S"] for v in item.get("dropped_refs", {}).get("L", [])]
            records.append(record)
        if "LastEvaluatedKey" not in page:
            return records
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
