"""The erasure request queue: one DynamoDB item per request in ``gdpr_requests``.

Item: ``request_id`` (key), ``subject_id`` (the only place it is kept raw, with the job specs of running
Spark jobs), ``received_at``, ``deadline`` (received + ``deadline_days``), ``status``, ``reason`` (why it
failed), ``progress`` (dataset -> outcome of the last attempt), ``claimed_by`` / ``claimed_at`` (the run
working on it), ``attempts``, ``completed_at``. A GSI ``by_status`` (status, received_at) lets a run find
the oldest open requests without a scan.

Beside the requests, one counter item per month, ``#completed#YYYY-MM`` (``completed``: how many requests
completed in that UTC month). It is incremented in the same transaction that marks a request COMPLETED, so
it counts each completion once; the lake-health page reads it with one GetItem instead of counting the
month's completions through the index (which reads every completed request). Its key cannot be a request
id (they start with a letter or digit) and, having no ``status``, it is in no index. A table that predates
the counter gets it for a month with ``python -m dataplatform.gdpr recount-completed``.

Statuses: PENDING -> IN_PROGRESS (claimed by one DAG run) -> COMPLETED (every dataset verified) or FAILED
(with the reason). FAILED requests are claimed again by later runs: they stay retriable until they
complete. An IN_PROGRESS claim older than the claim timeout (its run died) is claimed again too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from dataplatform.dynamodb import ensure_table, error_code, key

log = logging.getLogger(__name__)

PENDING, IN_PROGRESS, COMPLETED, FAILED = "PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"
# Requests that still have to be erased: FAILED ones are claimed again by later runs.
OPEN_STATUSES = (PENDING, IN_PROGRESS, FAILED)
STATUS_INDEX = "by_status"
CREATED_BY = "the first `submit` or gdpr_erasure run"  # named when the table is missing
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_COMPLETED_COUNTER = "#completed#{month}"  # month: YYYY-MM (UTC)

_serializer, _deserializer = TypeSerializer(), TypeDeserializer()


class RequestError(ValueError):
    """A request cannot be accepted (bad id, conflicting resubmission)."""


@dataclass
class Request:
    request_id: str
    subject_id: str
    received_at: str
    deadline: str
    status: str
    reason: str | None = None
    progress: dict[str, dict] = field(default_factory=dict)
    claimed_by: str | None = None
    claimed_at: str | None = None
    attempts: int = 0
    completed_at: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Request:
        plain = {key: _deserializer.deserialize(value) for key, value in item.items()}
        plain["attempts"] = int(plain.get("attempts", 0))
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in plain.items() if key in known})

    def public(self) -> dict[str, Any]:
        """Everything but the subject id: what logs, XCom and reports may show."""
        return {
            "request_id": self.request_id,
            "status": self.status,
            "received_at": self.received_at,
            "deadline": self.deadline,
            "reason": self.reason,
            "progress": _plain(self.progress),
            "attempts": self.attempts,
            "claimed_by": self.claimed_by,
            "completed_at": self.completed_at,
        }


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal: JSON wants int."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if type(value).__name__ == "Decimal":
        return int(value) if value == int(value) else float(value)
    return value


def _item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in values.items() if value is not None}


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.isoformat(timespec="seconds")


def check_request_id(request_id: object) -> str:
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        shown = repr(request_id)
        shown = shown if len(shown) <= 140 else f"{shown[:140]}... ({len(request_id)} characters)"
        raise RequestError(
            f"request id {shown} must be 1-128 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return request_id


# -- table ------------------------------------------------------------------------------------------------


def create_requests_table(dynamodb: Any, table: str) -> bool:
    """Create the table (on demand, GSI ``by_status``) unless it exists; True when this call created it."""
    return ensure_table(
        dynamodb,
        table,
        key("request_id"),
        ["request_id", "status", "received_at"],
        indexes={STATUS_INDEX: key("status", "received_at")},
    )


# -- submit -----------------------------------------------------------------------------------------------


def submit_request(
    dynamodb: Any,
    table: str,
    request_id: str,
    subject_id: str,
    received_at: datetime,
    deadline_days: int,
) -> tuple[Request, bool]:
    """Store a PENDING request; ``(request, True)`` when new. The same request id submitted again with the
    same subject is the same request: ``(existing, False)``, nothing changes. With another subject it is
    refused (a request id names one person's request)."""
    check_request_id(request_id)
    request = Request(
        request_id=request_id,
        subject_id=subject_id,
        received_at=_iso(received_at),
        deadline=_iso(received_at + timedelta(days=deadline_days)),
        status=PENDING,
    )
    item = _item({**request.__dict__, "progress": {}})
    try:
        dynamodb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(request_id)")
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        existing = get_request(dynamodb, table, request_id)
        assert existing is not None
        if existing.subject_id != subject_id:
            raise RequestError(f"request {request_id} exists already for another subject") from None
        return existing, False
    log.info("request %s accepted, deadline %s", request_id, request.deadline)
    return request, True


def get_request(dynamodb: Any, table: str, request_id: str) -> Request | None:
    item = dynamodb.get_item(TableName=table, Key={"request_id": {"S": request_id}}, ConsistentRead=True)
    return Request.from_item(item["Item"]) if "Item" in item else None


def get_requests(dynamodb: Any, table: str, request_ids: Iterable[str]) -> list[Request]:
    found = []
    for request_id in request_ids:
        request = get_request(dynamodb, table, request_id)
        if request is None:
            raise RequestError(f"request {request_id} does not exist in {table}")
        found.append(request)
    return found


def requests_by_status(dynamodb: Any, table: str, status: str, limit: int | None = None) -> list[Request]:
    """Oldest first."""
    found: list[Request] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": STATUS_INDEX,
        "KeyConditionExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":s": {"S": status}},
        "ScanIndexForward": True,
    }
    while True:
        page = dynamodb.query(**kwargs)
        found += [Request.from_item(item) for item in page.get("Items", [])]
        if "LastEvaluatedKey" not in page or (limit is not None and len(found) >= limit):
            return found[:limit] if limit is not None else found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def count_by_status(dynamodb: Any, table: str, status: str) -> int:
    """How many requests have ``status``, counted by DynamoDB (``Select=COUNT``): no item is read back."""
    return sum(page["Count"] for page in _status_pages(dynamodb, table, status, Select="COUNT"))


def completed_in_month(dynamodb: Any, table: str, moment: datetime) -> int:
    """How many requests completed in the UTC month of ``moment``: the month's counter (one GetItem)."""
    item = dynamodb.get_item(
        TableName=table,
        Key=_completed_counter_key(moment),
        ConsistentRead=True,
        ProjectionExpression="completed",
    ).get("Item")
    return int(item["completed"]["N"]) if item else 0


def recount_completed(dynamodb: Any, table: str, moment: datetime) -> int:
    """Set the counter of ``moment``'s UTC month to the completions the status index holds for that month
    (for a table that predates the counter); the count. Run it while no gdpr_erasure run is finishing
    requests: a completion between the count and the write would be lost from the counter."""
    start = _month_start(moment)
    end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    options: dict[str, Any] = {
        "Select": "COUNT",
        "FilterExpression": "completed_at >= :since AND completed_at < :until",
        "ExpressionAttributeValues": {":since": {"S": _iso(start)}, ":until": {"S": _iso(end)}},
    }
    count = sum(page["Count"] for page in _status_pages(dynamodb, table, COMPLETED, **options))
    dynamodb.put_item(
        TableName=table, Item={**_completed_counter_key(moment), "completed": {"N": str(count)}}
    )
    return count


def _month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _completed_counter_key(moment: datetime) -> dict[str, Any]:
    month = _month_start(moment).strftime("%Y-%m")
    return {"request_id": {"S": _COMPLETED_COUNTER.format(month=month)}}


@dataclass(frozen=True)
class OpenRequests:
    """How many requests each open status holds, and the open ones due by a moment."""

    by_status: dict[str, int]
    due: list[dict[str, str]]  # {"request_id", "status", "deadline"}: never the subject id


def open_requests_due(dynamodb: Any, table: str, due_by: datetime) -> OpenRequests:
    """Per open status, its request count, and the open requests whose deadline is at or before ``due_by``
    (``request_id``, ``status`` and ``deadline``). One Query per status: the deadline is a filter, so
    DynamoDB returns only the requests due while its ``ScannedCount`` counts all of them (the health page's
    2,000 open requests of 10,000 are counted without being sent); only ``request_id`` and ``deadline``
    are read back, the status is the query's."""
    by_status = dict.fromkeys(OPEN_STATUSES, 0)
    due: list[dict[str, str]] = []
    for status in OPEN_STATUSES:
        for page in _status_pages(
            dynamodb,
            table,
            status,
            ProjectionExpression="request_id, deadline",
            FilterExpression="deadline <= :due_by",
            ExpressionAttributeValues={":due_by": {"S": _iso(due_by)}},
        ):
            by_status[status] += page["ScannedCount"]
            due += [
                {"request_id": item["request_id"]["S"], "status": status, "deadline": item["deadline"]["S"]}
                for item in page.get("Items", [])
            ]
    return OpenRequests(by_status, due)


def _status_pages(dynamodb: Any, table: str, status: str, **options: Any) -> Iterator[dict[str, Any]]:
    """Every page of a Query of the status index for ``status`` (``options``: more Query parameters)."""
    values = {":s": {"S": status}, **options.pop("ExpressionAttributeValues", {})}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": STATUS_INDEX,
        "KeyConditionExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": values,
        **options,
    }
    while True:
        page = dynamodb.query(**kwargs)
        yield page
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def is_overdue(deadline: str, now: datetime) -> bool:
    """An open request with this deadline is past it."""
    return deadline < _iso(now)


def days_to_deadline(deadline: str, now: datetime) -> float:
    """Days left before the deadline (negative once overdue)."""
    return (datetime.fromisoformat(deadline) - now).total_seconds() / 86400


# -- claim ------------------------------------------------------------------------------------------------


def claim_requests(
    dynamodb: Any, table: str, run_id: str, limit: int, now: datetime, claim_timeout: timedelta
) -> list[Request]:
    """Claim up to ``limit`` open requests for ``run_id``, oldest first: the ones this run claimed already
    (a retried task), then PENDING, FAILED, and IN_PROGRESS ones whose claim has timed out. Each claim is
    a conditional update, so two runs never work on one request."""
    stale_before = _iso(now - claim_timeout)
    mine = [r for r in requests_by_status(dynamodb, table, IN_PROGRESS) if r.claimed_by == run_id]
    claimed = mine[:limit]
    for status in (PENDING, FAILED, IN_PROGRESS):
        for request in requests_by_status(dynamodb, table, status):
            if len(claimed) >= limit:
                return claimed
            if request.claimed_by == run_id:
                continue
            if status == IN_PROGRESS and (request.claimed_at or "") > stale_before:
                continue
            if _try_claim(dynamodb, table, request, run_id, now, stale_before):
                request.status, request.claimed_by, request.claimed_at = IN_PROGRESS, run_id, _iso(now)
                request.attempts += 1
                claimed.append(request)
    return claimed


def _try_claim(
    dynamodb: Any, table: str, request: Request, run_id: str, now: datetime, stale_before: str
) -> bool:
    try:
        dynamodb.update_item(
            TableName=table,
            Key={"request_id": {"S": request.request_id}},
            UpdateExpression="SET #s = :in_progress, claimed_by = :run, claimed_at = :now, "
            "attempts = if_not_exists(attempts, :zero) + :one",
            ConditionExpression="#s IN (:pending, :failed) OR (#s = :in_progress AND claimed_at < :stale)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=_item(
                {
                    ":in_progress": IN_PROGRESS,
                    ":pending": PENDING,
                    ":failed": FAILED,
                    ":run": run_id,
                    ":now": _iso(now),
                    ":stale": stale_before,
                    ":zero": 0,
                    ":one": 1,
                }
            ),
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            # Another run took it first, or this claim was resent after a read timeout and its first send
            # had landed: then the request holds this run and this claim's time.
            current = get_request(dynamodb, table, request.request_id)
            return current is not None and (current.status, current.claimed_by, current.claimed_at) == (
                IN_PROGRESS,
                run_id,
                _iso(now),
            )
        raise
    return True


# -- progress and outcome ---------------------------------------------------------------------------------


class ClaimLostError(RuntimeError):
    """The request is no longer claimed by this run (its claim timed out and another run took it)."""


def record_progress(
    dynamodb: Any, table: str, request_id: str, run_id: str, dataset: str, progress: dict[str, Any]
) -> None:
    """Store the outcome of one dataset for one request (overwriting an earlier attempt's)."""
    _update_claimed(
        dynamodb,
        table,
        request_id,
        run_id,
        "SET progress.#d = :p",
        {"#d": dataset},
        {":p": progress},
    )


def finish_request(
    dynamodb: Any, table: str, request_id: str, run_id: str, datasets: Iterable[str], now: datetime
) -> Request:
    """COMPLETED when the latest attempt on every dataset verified the erasure (an attempt of an earlier
    run counts: a run may cover only some datasets); otherwise FAILED with the reasons (the request stays
    retriable). A request this run already finished is returned as it is: the retry of a finishing task
    killed after some of its writes."""
    request = get_request(dynamodb, table, request_id)
    if request is not None and request.claimed_by == run_id and request.status in (COMPLETED, FAILED):
        # Finished by this run already: a retried task, or the write below resent after a read timeout.
        return request
    if request is None or request.claimed_by != run_id or request.status != IN_PROGRESS:
        raise ClaimLostError(f"request {request_id} is not claimed by run {run_id}")
    problems = []
    for dataset in datasets:
        progress = request.progress.get(dataset)
        if progress is None:
            problems.append(f"{dataset}: not erased yet")
        elif not progress.get("verified"):
            problems.append(f"{dataset}: {progress.get('reason') or 'verification failed'}")
    values: dict[str, Any] = {":s": FAILED if problems else COMPLETED, ":now": _iso(now)}
    if problems:
        expression = "SET #s = :s, reason = :r, updated_at = :now"
        values[":r"] = "; ".join(problems)
    else:
        expression = "SET #s = :s, completed_at = :now, updated_at = :now REMOVE reason"
    # A completion also counts in its month's counter, in one transaction with it: counted once.
    counter = None if problems else _completed_counter_key(now)
    try:
        _update_claimed(dynamodb, table, request_id, run_id, expression, {"#s": "status"}, values, counter)
    except ClaimLostError:
        # A resend of this write whose first send had landed fails on the status it set.
        landed = get_request(dynamodb, table, request_id)
        if landed is None or (landed.claimed_by, landed.status) != (run_id, values[":s"]):
            raise
    finished = get_request(dynamodb, table, request_id)
    assert finished is not None
    return finished


def _update_claimed(
    dynamodb: Any,
    table: str,
    request_id: str,
    run_id: str,
    expression: str,
    names: dict[str, str],
    values: dict[str, Any],
    counter: dict[str, Any] | None = None,
) -> None:
    """Update the request if ``run_id`` still holds its claim (else ``ClaimLostError``); with ``counter``
    (a counter item's key), add one to its ``completed`` in the same transaction."""
    update = {
        "TableName": table,
        "Key": {"request_id": {"S": request_id}},
        "UpdateExpression": expression,
        "ConditionExpression": "claimed_by = :claimant AND #status = :in_progress",
        "ExpressionAttributeNames": {**names, "#status": "status"},
        "ExpressionAttributeValues": _item({**values, ":claimant": run_id, ":in_progress": IN_PROGRESS}),
    }
    try:
        if counter is None:
            dynamodb.update_item(**update)
            return
        count = {
            "TableName": table,
            "Key": counter,
            "UpdateExpression": "ADD completed :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
        dynamodb.transact_write_items(TransactItems=[{"Update": update}, {"Update": count}])
    except ClientError as exc:
        if _condition_failed(exc):
            raise ClaimLostError(f"request {request_id} is not claimed by run {run_id}") from None
        raise


def _condition_failed(exc: ClientError) -> bool:
    """The request's condition failed: on UpdateItem, or as the first item of a cancelled transaction."""
    if error_code(exc) == "ConditionalCheckFailedException":
        return True
    reasons = exc.response.get("CancellationReasons") or []
    return (
        error_code(exc) == "TransactionCanceledException"
        and bool(reasons)
        and reasons[0].get("Code") == "ConditionalCheckFailed"
    )
