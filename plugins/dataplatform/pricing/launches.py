"""The workflow manager's launch records (DynamoDB ``workflow_launches``) as pricing reads and writes them.

Item (written by the workflow manager): ``launch_id`` (key), ``workflow_type``, ``status`` (PREPARING,
WAITING, READY, RUNNING, FAILED, COMPLETE), ``created_at`` / ``started_at`` / ``completed_at`` (ISO-8601
UTC), ``region``, and the compute it used: ``batch_job_ids``, ``instance_ids``, ``volume_ids``,
``fsx_file_system_id``. A GSI ``by_status`` (status, completed_at) finds COMPLETE launches oldest first
without a scan.

Pricing adds ``total_cost``, ``instance_cost``, ``volume_cost``, ``filesystem_cost`` (strings, 4 decimal
places), ``currency``, ``price_source``, ``price_date``, ``priced_at``, ``instance_types`` with one
conditional update that only succeeds while ``total_cost`` is absent: a rerun, a retry or a concurrent run
cannot price a launch twice. A launch that cannot be priced gets ``pricing_error`` (the reason),
``pricing_error_at`` and ``pricing_attempts`` instead, and stays unpriced, so the next run tries again.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from dataplatform.dynamodb import ensure_table, error_code, from_item, key, to_item
from dataplatform.pricing.resources import PricingError, as_utc

log = logging.getLogger(__name__)

STATUSES = ("PREPARING", "WAITING", "READY", "RUNNING", "FAILED", "COMPLETE")
COMPLETE = "COMPLETE"
STATUS_INDEX = "by_status"
CREATED_BY = "the first benchmark_pricing run"  # named when the table is missing
COST_ATTRIBUTES = ("total_cost", "instance_cost", "volume_cost", "filesystem_cost")
# What the comparison (``pricing.report.compare``) reads of a launch besides its status (COMPLETE, the
# query's key): ``completed_launches`` reads back only these, not the resource ids and cost parts that
# make up most of an item.
COMPARISON_ATTRIBUTES = (
    "launch_id",
    "started_at",
    "completed_at",
    "total_cost",
    "currency",
    "workflow_type",
    "instance_types",
    "pricing_error",
)

_serializer = TypeSerializer()

# What each field of a launch record must look like before any AWS call is made for it. A value that
# does not fit is the workflow manager's bug, reported by name (and stored as the launch's pricing_error),
# never sent to an API whose answer ("not found", "malformed") would hide which field was wrong.
_LAUNCH_ID = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
_RESOURCE_IDS = {
    "batch_job_ids": re.compile(r"[A-Za-z0-9:/_.-]{1,256}"),  # job ids (UUIDs) or job ARNs
    "instance_ids": re.compile(r"i-[0-9a-f]{8,17}"),
    "volume_ids": re.compile(r"vol-[0-9a-f]{8,17}"),
}
_FILE_SYSTEM_ID = re.compile(r"fs-[0-9a-f]{8,17}")
# Ids one launch may name (DescribeInstances takes 1,000 a call; a launch of a genomics workflow uses tens).
MAX_RESOURCE_IDS = 10_000


class LaunchRecordError(PricingError):
    """A launch record (or a launch id) is malformed; the message names the field."""


def check_launch_id(launch_id: Any) -> str:
    if not isinstance(launch_id, str) or not _LAUNCH_ID.fullmatch(launch_id):
        raise LaunchRecordError(
            f"launch_id must be 1-256 characters without control characters, got {_shown(launch_id)}"
        )
    return launch_id


def check_launch_record(launch: dict[str, Any]) -> dict[str, Any]:
    """``launch`` itself after checking every field pricing reads (``LaunchRecordError`` naming the first
    bad one). Fields pricing does not read are the workflow manager's and are left alone."""
    launch_id = check_launch_id(launch.get("launch_id"))

    def bad(field: str, expected: str) -> LaunchRecordError:
        return LaunchRecordError(
            f"launch {launch_id}: {field} must be {expected}, got {_shown(launch.get(field))}"
        )

    if launch.get("status") not in STATUSES:
        raise bad("status", f"one of {', '.join(STATUSES)}")
    region = launch.get("region")
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise bad("region", "an AWS region name such as us-east-1")
    for field in ("created_at", "started_at", "completed_at"):
        # Pricing needs the run's start and end; created_at is optional.
        if (field in launch or field != "created_at") and not _is_time(launch.get(field)):
            raise bad(field, "an ISO-8601 time")
    if as_utc(launch["completed_at"]) < as_utc(launch["started_at"]):
        raise bad("completed_at", f"at or after started_at {launch['started_at']}")
    for field, pattern in _RESOURCE_IDS.items():
        ids = launch.get(field)
        if ids is None:
            continue
        if not isinstance(ids, list | set | tuple) or len(ids) > MAX_RESOURCE_IDS:
            raise bad(field, f"a list of at most {MAX_RESOURCE_IDS} ids")
        if not all(isinstance(one, str) and pattern.fullmatch(one) for one in ids):
            raise bad(field, f"a list of ids matching {pattern.pattern}")
    file_system = launch.get("fsx_file_system_id")
    if file_system is not None and not (
        isinstance(file_system, str) and _FILE_SYSTEM_ID.fullmatch(file_system)
    ):
        raise bad("fsx_file_system_id", f"an id matching {_FILE_SYSTEM_ID.pattern}")
    return launch


def _is_time(value: Any) -> bool:
    if isinstance(value, datetime):
        return value.tzinfo is not None
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        as_utc(value)
    except ValueError:
        return False
    return True


def _shown(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def ensure_launches_table(dynamodb: Any, table: str) -> bool:
    return ensure_table(
        dynamodb,
        table,
        key("launch_id"),
        ["launch_id", "status", "completed_at"],
        indexes={STATUS_INDEX: key("status", "completed_at")},
    )


def put_launch(dynamodb: Any, table: str, launch: dict[str, Any]) -> None:
    """Write a launch record as the workflow manager does (the demo seed and the tests use it)."""
    dynamodb.put_item(TableName=table, Item=to_item(launch))


def get_launch(dynamodb: Any, table: str, launch_id: str) -> dict[str, Any] | None:
    item = dynamodb.get_item(TableName=table, Key={"launch_id": {"S": launch_id}}, ConsistentRead=True).get(
        "Item"
    )
    return from_item(item) if item else None


def unpriced_launches(dynamodb: Any, table: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` COMPLETE launches without a total cost, oldest completed first: the ones never
    tried before, then the ones that failed to price (the reason may be gone: a price added, a resource
    found). Fresh launches go first so that a pile of unpriceable ones cannot starve them."""
    fresh = _query_complete(
        dynamodb, table, "attribute_not_exists(total_cost) AND attribute_not_exists(pricing_error)", limit
    )
    if len(fresh) >= limit:
        return fresh
    failed = _query_complete(
        dynamodb,
        table,
        "attribute_not_exists(total_cost) AND attribute_exists(pricing_error)",
        limit - len(fresh),
    )
    return fresh + failed


def _query_complete(dynamodb: Any, table: str, condition: str, limit: int) -> list[dict[str, Any]]:
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": STATUS_INDEX,
        "KeyConditionExpression": "#status = :complete",
        "FilterExpression": condition,
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {":complete": {"S": COMPLETE}},
        "ScanIndexForward": True,
    }
    return _query_pages(dynamodb, request, limit)


def completed_launches(
    dynamodb: Any, table: str, completed_from: str, completed_to: str
) -> list[dict[str, Any]]:
    """COMPLETE launches completed in [from, to), priced or not (the comparison report's input: it
    compares the priced ones and counts the others), with the attributes it reads
    (``COMPARISON_ATTRIBUTES`` and the status)."""
    names = {f"#a{i}": name for i, name in enumerate(COMPARISON_ATTRIBUTES)}
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": STATUS_INDEX,
        "KeyConditionExpression": "#status = :complete AND completed_at BETWEEN :from AND :to",
        "ProjectionExpression": ", ".join(names),
        "ExpressionAttributeNames": {"#status": "status", **names},
        "ExpressionAttributeValues": {
            ":complete": {"S": COMPLETE},
            ":from": {"S": completed_from},
            ":to": {"S": completed_to},
        },
    }
    # BETWEEN includes its upper bound; the period is half-open.
    return [
        {**launch, "status": COMPLETE}
        for launch in _query_pages(dynamodb, request)
        if launch["completed_at"] < completed_to
    ]


def repeatedly_failed(dynamodb: Any, table: str, min_attempts: int) -> list[dict[str, Any]]:
    """COMPLETE launches still unpriced whose pricing failed at least ``min_attempts`` times, oldest
    completed first: ``launch_id``, ``completed_at``, ``pricing_attempts``, ``pricing_error``."""
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": STATUS_INDEX,
        "KeyConditionExpression": "#status = :complete",
        "FilterExpression": "attribute_not_exists(total_cost) AND pricing_attempts >= :n",
        "ProjectionExpression": "launch_id, completed_at, pricing_attempts, pricing_error",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {":complete": {"S": COMPLETE}, ":n": {"N": str(min_attempts)}},
    }
    return _query_pages(dynamodb, request)


def _query_pages(dynamodb: Any, request: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """Every page of a Query (until ``limit`` items), as plain values."""
    found: list[dict[str, Any]] = []
    while limit is None or len(found) < limit:
        page = dynamodb.query(**request)
        found.extend(from_item(item) for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        request = {**request, "ExclusiveStartKey": page["LastEvaluatedKey"]}
    return found if limit is None else found[:limit]


def write_cost(dynamodb: Any, table: str, launch_id: str, attributes: dict[str, Any]) -> bool:
    """Set the cost attributes (and clear an earlier pricing error) while ``total_cost`` is absent and
    the launch is COMPLETE. False when another run priced it first (nothing is changed then).

    The write carries a token of this call (``pricing_token``): when botocore resends it after a read
    timeout and the first send had landed, the condition fails on our own write, and the token tells so."""
    token = uuid.uuid4().hex
    values = {**attributes, "priced_at": _now(), "pricing_token": token}
    names = {f"#a{position}": name for position, name in enumerate(values)}
    try:
        dynamodb.update_item(
            TableName=table,
            Key={"launch_id": {"S": launch_id}},
            UpdateExpression="SET "
            + ", ".join(f"#a{position} = :a{position}" for position in range(len(values)))
            + " REMOVE pricing_error, pricing_error_at",
            ConditionExpression="attribute_exists(launch_id) AND attribute_not_exists(total_cost) "
            "AND #status = :complete",
            ExpressionAttributeNames={**names, "#status": "status"},
            ExpressionAttributeValues={
                **{
                    f":a{position}": _serializer.serialize(value)
                    for position, value in enumerate(values.values())
                },
                ":complete": {"S": COMPLETE},
            },
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return _written_by(dynamodb, table, launch_id, "pricing_token", token)
    return True


def _written_by(dynamodb: Any, table: str, launch_id: str, attribute: str, token: str) -> bool:
    """True when the launch's ``attribute`` holds ``token``: the conditional write that just failed had
    landed on an earlier send of the same call."""
    item = dynamodb.get_item(TableName=table, Key={"launch_id": {"S": launch_id}}, ConsistentRead=True).get(
        "Item", {}
    )
    return item.get(attribute, {}).get("S") == token


def record_error(dynamodb: Any, table: str, launch_id: str, reason: str) -> bool:
    """Note why the launch could not be priced (it stays unpriced and is retried). False when it was
    priced meanwhile: a stale error is never written over a cost.

    ``pricing_attempts`` counts attempts, not sends: the call's token (``pricing_error_token``) makes a
    resend after a read timeout, whose first send had landed, fail its condition instead of counting the
    attempt twice."""
    token = uuid.uuid4().hex
    try:
        dynamodb.update_item(
            TableName=table,
            Key={"launch_id": {"S": launch_id}},
            UpdateExpression="SET pricing_error = :reason, pricing_error_at = :now, "
            "pricing_error_token = :token ADD pricing_attempts :one",
            ConditionExpression="attribute_exists(launch_id) AND attribute_not_exists(total_cost) "
            "AND (attribute_not_exists(pricing_error_token) OR pricing_error_token <> :token)",
            ExpressionAttributeValues={
                ":reason": {"S": reason[:2000]},
                ":now": {"S": _now()},
                ":one": {"N": "1"},
                ":token": {"S": token},
            },
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return _written_by(dynamodb, table, launch_id, "pricing_error_token", token)
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
