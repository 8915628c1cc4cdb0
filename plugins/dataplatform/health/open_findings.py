"""The open findings of ``lake_health``, kept in DynamoDB so that each alerts once and its clearing once.

One item per open finding in ``health.findings_table`` (key ``finding_id``): the finding's fields,
``opened_at``, ``state`` (OPEN, or CLEARING while its recovery is being sent) and ``alerted`` (its alert
went out). Each run (``alert_once``):

1. a finding not stored yet is put with a conditional write (``attribute_not_exists``): of two runs that
   see it at once, one stores it;
2. a stored finding not alerted yet is alerted, then marked ``alerted`` (a run that dies in between
   leaves it unmarked: the next run alerts it again, so delivery is at least once, never lost);
3. a stored finding that no longer holds is set CLEARING (conditional on OPEN), its recovery sent, and
   the item deleted (conditional on CLEARING); a run that dies in between leaves it CLEARING, and the
   next run sends the recovery and deletes it.

Why DynamoDB and not one S3 object: each finding is written on its own with a condition on its own state,
so no run rewrites (or loses) another's findings, and a rerun changes nothing; the table holds only the
open findings (a cleared one is deleted), so a run reads it with one small Scan.

No Airflow import: the caller hands in ``publish`` (an ``alerts.Alert`` -> True when delivered as
configured).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from dataplatform import alerts
from dataplatform.dynamodb import ensure_table, error_code, from_item, key, to_item

log = logging.getLogger(__name__)

OPEN, CLEARING = "OPEN", "CLEARING"
DAG_ID = "lake_health"
_FIELDS = ("pipeline", "kind", "severity", "dag_id", "summary")

Publish = Callable[[alerts.Alert], bool]


def create_findings_table(dynamodb: Any, table: str) -> bool:
    return ensure_table(dynamodb, table, key("finding_id"), ["finding_id"])


def stored_findings(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    """Every stored finding by id (a consistent Scan: the table holds only the open ones)."""
    found: dict[str, dict[str, Any]] = {}
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**request)
        for item in page.get("Items", []):
            plain = from_item(item)
            found[plain["finding_id"]] = plain
        if "LastEvaluatedKey" not in page:
            return found
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def alert_once(
    dynamodb: Any,
    table: str,
    findings: Iterable[dict[str, Any]],
    publish: Publish,
    env: str,
    run_id: str,
    now: datetime,
) -> dict[str, Any]:
    """Alert the findings not alerted yet and the clearing of those that no longer hold (see the module
    docstring); return what was done: ``{"open", "new", "alerted", "cleared", "not_sent", "summary"}``."""
    current = {finding["id"]: finding for finding in findings}
    stored = stored_findings(dynamodb, table)
    done: dict[str, list[str]] = {"new": [], "alerted": [], "cleared": [], "not_sent": []}
    for finding_id, item in sorted(stored.items()):
        if item["state"] == CLEARING or finding_id not in current:
            _clear(dynamodb, table, item, publish, env, run_id, done)
    for finding_id, finding in sorted(current.items()):
        item = stored.get(finding_id)
        if item is None or item["state"] == CLEARING:
            item = _store(dynamodb, table, finding, now)
            if item is None:
                continue  # another run stored it a moment ago: that run alerts it
            done["new"].append(finding_id)
        if not item.get("alerted"):
            if publish(finding_alert(alerts.FINDING, item, env, run_id)):
                _mark_alerted(dynamodb, table, finding_id, now)
                done["alerted"].append(finding_id)
            else:
                done["not_sent"].append(finding_id)
    result: dict[str, Any] = {"open": len(current), **done}
    result["summary"] = (
        f"lake_health: {len(current)} open findings, {len(done['new'])} new, {len(done['alerted'])} alerted, "
        f"{len(done['cleared'])} cleared"
        + (f", {len(done['not_sent'])} alerts not sent (retried next run)" if done["not_sent"] else "")
    )
    return result


def finding_alert(event: str, item: dict[str, Any], env: str, run_id: str) -> alerts.Alert:
    """The alert of a finding (or of its clearing): the lake_health run, the finding's id in the subject,
    its summary, pipeline and DAG in the message."""
    return alerts.Alert(
        event=event,
        env=env,
        dag_id=DAG_ID,
        run_id=run_id,
        about=item["finding_id"],
        summaries=[
            f"{item['severity']}: {item['summary']}",
            f"pipeline {item['pipeline']}, DAG {item['dag_id']}, open since {item['opened_at']}",
        ],
    )


def _store(dynamodb: Any, table: str, finding: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    item = {
        "finding_id": finding["id"],
        **{name: finding[name] for name in _FIELDS},
        "opened_at": now.isoformat(timespec="seconds"),
        "state": OPEN,
        "alerted": False,
    }
    try:
        dynamodb.put_item(
            TableName=table, Item=to_item(item), ConditionExpression="attribute_not_exists(finding_id)"
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return None
    return item


def _mark_alerted(dynamodb: Any, table: str, finding_id: str, now: datetime) -> None:
    dynamodb.update_item(
        TableName=table,
        Key={"finding_id": {"S": finding_id}},
        UpdateExpression="SET alerted = :yes, alerted_at = :now",
        ConditionExpression="attribute_exists(finding_id)",
        ExpressionAttributeValues={":yes": {"BOOL": True}, ":now": {"S": now.isoformat(timespec="seconds")}},
    )


def _clear(
    dynamodb: Any, table: str, item: dict[str, Any], publish: Publish, env: str, run_id: str, done: dict
) -> None:
    """CLEARING, the recovery (only for a finding that was alerted), then the item deleted."""
    finding_id = item["finding_id"]
    if item["state"] == OPEN and not _set_state(dynamodb, table, finding_id, OPEN, CLEARING):
        return  # another run is clearing it
    if item.get("alerted") and not publish(finding_alert(alerts.FINDING_CLEARED, item, env, run_id)):
        done["not_sent"].append(finding_id)
        return  # stays CLEARING: the next run sends it
    try:
        dynamodb.delete_item(
            TableName=table,
            Key={"finding_id": {"S": finding_id}},
            ConditionExpression="#s = :clearing",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":clearing": {"S": CLEARING}},
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return  # deleted by another run
    done["cleared"].append(finding_id)


def _set_state(dynamodb: Any, table: str, finding_id: str, old: str, new: str) -> bool:
    try:
        dynamodb.update_item(
            TableName=table,
            Key={"finding_id": {"S": finding_id}},
            UpdateExpression="SET #s = :new",
            ConditionExpression="#s = :old",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":new": {"S": new}, ":old": {"S": old}},
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return False
    return True
