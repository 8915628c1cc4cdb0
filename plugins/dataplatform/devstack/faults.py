"""Faults as AWS produces them under trouble, for the local AWS endpoint (``aws_endpoint.py``).

A seeded fraction of the signed AWS requests gets a fault instead of (or after) its answer, with AWS's own
error shapes, so botocore, the provider hooks, pyarrow's and Spark's S3 clients see what they would see in
AWS and their retries are exercised for real: S3 ``503 SlowDown`` and ``500 InternalError``, DynamoDB
throughput / throttling / transaction conflicts / internal errors, Glue throttling and concurrent
modification, EMR and EMR Serverless throttling, connection resets and read timeouts. A modelled latency
can be added to every request. Configured in one place, ``include/config/faults.yaml`` (off by default),
with environment overrides for one run (``make chaos RATE=... SEED=...``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dataplatform.config import REPO_ROOT

FAULTS_FILE = REPO_ROOT / "include" / "config" / "faults.yaml"


@dataclass(frozen=True)
class FaultKind:
    """One way a request can fail. ``service`` None: any service; ``operations`` None: any operation,
    else the operation-name prefixes it applies to."""

    name: str
    service: str | None
    operations: tuple[str, ...] | None
    status: int
    code: str
    message: str

    def applies_to(self, operation: str) -> bool:
        return self.operations is None or operation.startswith(self.operations)


# Error codes and messages as the services return them (botocore retries the throttling and 5xx ones
# itself; TransactionConflict and ConcurrentModificationException are for the caller to handle).
KINDS: dict[str, FaultKind] = {
    kind.name: kind
    for kind in (
        FaultKind("s3_slow_down", "s3", None, 503, "SlowDown", "Please reduce your request rate."),
        FaultKind(
            "s3_internal_error",
            "s3",
            None,
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        FaultKind(
            "dynamodb_throughput_exceeded",
            "dynamodb",
            None,
            400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. "
            "Consider increasing your provisioning level with the UpdateTable API.",
        ),
        FaultKind(
            "dynamodb_throttling",
            "dynamodb",
            None,
            400,
            "com.amazon.coral.availability#ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        ),
        FaultKind(
            "dynamodb_transaction_conflict",
            "dynamodb",
            ("TransactWriteItems",),
            400,
            "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Transaction cancelled, please refer cancellation reasons for specific reasons",
        ),
        FaultKind(
            "dynamodb_internal_error",
            "dynamodb",
            None,
            500,
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "Internal server error",
        ),
        FaultKind("glue_throttling", "glue", None, 400, "ThrottlingException", "Rate exceeded"),
        # Glue answers ConcurrentModificationException to writes only (UpdateTable, BatchCreatePartition, ...).
        FaultKind(
            "glue_concurrent_modification",
            "glue",
            ("Create", "Update", "Delete", "BatchCreate", "BatchUpdate", "BatchDelete"),
            400,
            "ConcurrentModificationException",
            "Update table failed due to concurrent modifications.",
        ),
        FaultKind("emr_throttling", "elasticmapreduce", None, 400, "ThrottlingException", "Rate exceeded"),
        FaultKind(
            "emr_serverless_throttling", "emr-serverless", None, 429, "ThrottlingException", "Rate exceeded"
        ),
        # Connection-level: no HTTP answer at all.
        FaultKind(
            "connection_reset", None, None, 0, "ConnectionReset", "connection reset before the request"
        ),
        FaultKind("read_timeout", None, None, 0, "ReadTimeout", "request processed, answer never sent"),
    )
}
ALL_KINDS: tuple[str, ...] = tuple(KINDS)


@dataclass(frozen=True)
class FaultPlan:
    """What the endpoint injects. ``rate`` 0 (the default) is off."""

    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = ALL_KINDS
    services: tuple[str, ...] = ()  # SigV4 signing names; empty: every service
    timeout_seconds: float = 3.0  # how long a read_timeout holds the connection before closing it
    latency_ms: float = 0.0  # modelled latency added to every AWS request (uniform 0.5x-1.5x)
    latency_services: tuple[str, ...] = ()  # SigV4 signing names the latency applies to; empty: every service

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"faults.rate must be between 0 and 1, got {self.rate}")
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"faults.kinds: unknown kind(s) {unknown}; known: {list(KINDS)}")
        if self.timeout_seconds < 0 or self.latency_ms < 0:
            raise ValueError("faults.timeout_seconds and faults.latency_ms must not be negative")

    @property
    def enabled(self) -> bool:
        return self.rate > 0 or self.latency_ms > 0

    def applicable_kinds(self, service: str, operation: str) -> list[FaultKind]:
        """The kinds a request of this service and operation can get under this plan."""
        if self.services and service not in self.services:
            return []
        return [
            KINDS[name]
            for name in self.kinds
            if KINDS[name].service in (None, service) and KINDS[name].applies_to(operation)
        ]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"faults: unknown key(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        for key in ("kinds", "services", "latency_services"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def load(cls, path: Path = FAULTS_FILE, environ: dict[str, str] | None = None) -> FaultPlan:
        """The plan of ``include/config/faults.yaml``, with ``DATAPLATFORM_FAULT_RATE``, ``_SEED``,
        ``_KINDS`` and ``_SERVICES`` (comma lists) overriding it for one run."""
        environ = os.environ if environ is None else environ
        data = (yaml.safe_load(path.read_text()) or {}).get("faults") or {} if path.exists() else {}
        overrides = {
            "rate": ("DATAPLATFORM_FAULT_RATE", float),
            "seed": ("DATAPLATFORM_FAULT_SEED", int),
            "kinds": ("DATAPLATFORM_FAULT_KINDS", _comma_list),
            "services": ("DATAPLATFORM_FAULT_SERVICES", _comma_list),
        }
        for key, (variable, parse) in overrides.items():
            if environ.get(variable, "").strip():
                data[key] = parse(environ[variable])
        return cls.from_dict(data)


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


class FaultDice:
    """The seeded choices: whether a request gets a fault, which one, and the modelled latency.

    Decisions are drawn in arrival order from one generator, so the same seed gives the same sequence of
    decisions; which request meets which decision depends on the clients' interleaving."""

    def __init__(self, plan: FaultPlan):
        self.plan = plan
        self._random = random.Random(plan.seed)

    def choose(self, service: str, operation: str) -> FaultKind | None:
        kinds = self.plan.applicable_kinds(service, operation)
        if not kinds or self._random.random() >= self.plan.rate:
            return None
        return kinds[self._random.randrange(len(kinds))]

    def latency_seconds(self, service: str) -> float:
        if not self.plan.latency_ms or (
            self.plan.latency_services and service not in self.plan.latency_services
        ):
            return 0.0
        return self.plan.latency_ms * (0.5 + self._random.random()) / 1000.0


def error_response(
    kind: FaultKind, protocol: str, method: str, body: bytes | None
) -> tuple[int, list, bytes]:
    """(status, headers, body) of ``kind`` in the service's protocol, as AWS sends it."""
    request_id = str(uuid.uuid4())
    if protocol == "rest-xml":
        payload = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{kind.code}</Code>'
            f"<Message>{kind.message}</Message><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
        return kind.status, headers, b"" if method == "HEAD" else payload
    if protocol == "rest-json":
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", kind.code),
        ]
        return kind.status, headers, json.dumps({"message": kind.message}).encode()
    document: dict[str, Any] = {"__type": kind.code, "message": kind.message}
    if kind.name == "dynamodb_transaction_conflict":
        document["CancellationReasons"] = _conflict_reasons(body)
    headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", request_id)]
    return kind.status, headers, json.dumps(document).encode()


def _conflict_reasons(body: bytes | None) -> list[dict[str, str]]:
    """One reason per item of the transaction, the first in conflict, as DynamoDB reports it."""
    try:
        items = json.loads(body or b"{}").get("TransactItems") or [{}]
    except ValueError:
        items = [{}]
    reasons = [{"Code": "None"} for _ in items]
    reasons[0] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
    return reasons
