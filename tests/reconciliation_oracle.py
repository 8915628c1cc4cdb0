"""The expected end state of the reconciliation pipeline, computed independently from the raw landing lines.

Deliberately imports no pipeline code (no ``dataplatform``, no ``spark_jobs``): it re-implements the
contract's rules in plain Python so a test can compare the pipeline's artifacts against it.

Rules (the contract's):
- a line is quarantined for the first problem found, in this order: ``not_json`` (not UTF-8 JSON, or not
  an object), ``missing_<field>`` (absent, null or ``""``; for event_id, artifact_key and entity also any
  non-string) in field order, ``unknown_event_type``, ``amount_not_integer`` (not a JSON integer: floats
  such as 12.0, strings and booleans too, and |amount| >= 10^15), ``negative_amount`` (below zero and not
  a correction), ``bad_currency`` (not 3 upper-case letters), ``bad_event_time`` (not
  ``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`` naming a real instant);
- valid events are deduplicated by event_id, keeping the first by batch order (the order the batches are
  given: window_start, then batch_id), then by line order within the batch, whatever their event_time;
  given when each batch was processed and the dedup horizon, an id applied more than the horizon before
  the batch that sends it again is applied again (the horizon counts from processing, not event time);
- per key and currency: sums per event type; balance = receivable - remittance + correction; status
  RECONCILED if every balance is 0, OVERPAID if any is negative, else OPEN;
- times come out as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (milliseconds, truncated).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

EVENT_TYPES = ("receivable", "payable", "royalty", "amortization", "remittance", "correction")
FIELDS = ("event_id", "artifact_key", "entity", "event_type", "amount", "currency", "event_time")
_STRING_FIELDS = ("event_id", "artifact_key", "entity")
_CURRENCY = re.compile(r"[A-Z]{3}")
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z")
_AMOUNT_LIMIT = 10**15

Batches = Iterable[tuple[str, Iterable[str | bytes]]]


def validate(raw: str | bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``(event, None)`` for a valid line (event_time parsed to a datetime), ``(None, reason)`` otherwise."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        event = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None, "not_json"
    if not isinstance(event, dict):
        return None, "not_json"
    for name in FIELDS:
        value = event.get(name)
        if value is None or value == "" or (name in _STRING_FIELDS and not isinstance(value, str)):
            return None, f"missing_{name}"
    if event["event_type"] not in EVENT_TYPES:
        return None, "unknown_event_type"
    amount = event["amount"]
    if type(amount) is not int or abs(amount) >= _AMOUNT_LIMIT:
        return None, "amount_not_integer"
    if amount < 0 and event["event_type"] != "correction":
        return None, "negative_amount"
    currency = event["currency"]
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        return None, "bad_currency"
    moment = _parse_time(event["event_time"])
    if moment is None:
        return None, "bad_event_time"
    return {**{name: event[name] for name in FIELDS}, "event_time": moment}, None


def _parse_time(value: Any) -> datetime | None:
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if not match:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def status_of(totals: list[dict[str, Any]]) -> str:
    balances = [total["balance"] for total in totals]
    if any(balance < 0 for balance in balances):
        return "OVERPAID"
    return "RECONCILED" if all(balance == 0 for balance in balances) else "OPEN"


def expected(
    batches: Batches,
    processed_at: dict[str, datetime] | None = None,
    horizon: timedelta | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """``(artifacts by key, stats)`` for ``[(batch_id, lines), ...]`` in batch order.

    Without ``horizon`` an event id is applied once, ever. With it, ``processed_at`` gives each batch's
    processing time, and an id is dropped only when it was applied at most ``horizon`` before.

    An artifact has the contract's fields except ``version`` and ``seq`` (they depend on how the batches
    were grouped into runs). Stats: input_rows, valid_rows, quarantined {reason: n}, quarantined_rows,
    duplicates (valid lines dropped as redeliveries), events_applied, artifacts."""
    if (processed_at is None) != (horizon is None):
        raise ValueError("expected(): give both processed_at and horizon, or neither")
    applied_at: dict[str, datetime | None] = {}
    per_key: dict[str, dict[str, Any]] = {}
    quarantined: Counter[str] = Counter()
    input_rows = valid_rows = duplicates = 0
    for batch_id, lines in batches:
        now = processed_at[batch_id] if processed_at is not None else None
        for raw in lines:
            input_rows += 1
            event, reason = validate(raw.rstrip(b"\n") if isinstance(raw, bytes) else raw.rstrip("\n"))
            if event is None:
                quarantined[reason] += 1
                continue
            valid_rows += 1
            if _still_seen(applied_at, event["event_id"], now, horizon):
                duplicates += 1
                continue
            applied_at[event["event_id"]] = now
            _apply(per_key, batch_id, event)
    artifacts = {key: _artifact(key, acc) for key, acc in sorted(per_key.items())}
    stats = {
        "input_rows": input_rows,
        "valid_rows": valid_rows,
        "quarantined": dict(sorted(quarantined.items())),
        "quarantined_rows": sum(quarantined.values()),
        "duplicates": duplicates,
        "events_applied": valid_rows - duplicates,
        "artifacts": len(artifacts),
    }
    return artifacts, stats


def _still_seen(
    applied_at: dict[str, datetime | None], event_id: str, now: datetime | None, horizon: timedelta | None
) -> bool:
    if event_id not in applied_at:
        return False
    if horizon is None:
        return True
    return applied_at[event_id] >= now - horizon


def expected_artifacts(batches: Batches) -> dict[str, dict[str, Any]]:
    return expected(batches)[0]


def _apply(per_key: dict[str, dict[str, Any]], batch_id: str, event: dict[str, Any]) -> None:
    acc = per_key.setdefault(
        event["artifact_key"],
        {"batches": set(), "entities": set(), "count": 0, "first": None, "last": None, "totals": {}},
    )
    acc["batches"].add(batch_id)
    acc["entities"].add(event["entity"])
    acc["count"] += 1
    moment = event["event_time"]
    acc["first"] = moment if acc["first"] is None else min(acc["first"], moment)
    acc["last"] = moment if acc["last"] is None else max(acc["last"], moment)
    sums = acc["totals"].setdefault(event["currency"], dict.fromkeys(EVENT_TYPES, 0))
    sums[event["event_type"]] += event["amount"]


def _artifact(key: str, acc: dict[str, Any]) -> dict[str, Any]:
    totals = []
    for currency, sums in sorted(acc["totals"].items()):
        balance = sums["receivable"] - sums["remittance"] + sums["correction"]
        totals.append({"currency": currency, **sums, "balance": balance})
    return {
        "key": key,
        "batches": sorted(acc["batches"]),
        "entities": sorted(acc["entities"]),
        "event_count": acc["count"],
        "first_event_time": format_time(acc["first"]),
        "last_event_time": format_time(acc["last"]),
        "totals": totals,
        "status": status_of(totals),
    }


def without_run_fields(artifact: dict[str, Any]) -> dict[str, Any]:
    """A pipeline artifact minus ``version`` and ``seq``, comparable with the oracle's."""
    return {name: value for name, value in artifact.items() if name not in ("version", "seq")}


def read_landing(landing_uri: str, s3: Any = None) -> list[tuple[str, list[bytes]]]:
    """``[(batch_id, lines)]`` of every batch with a manifest under a landing folder (``file://``, or
    ``s3://`` read with the boto3 client ``s3``), in batch order (window_start, then batch_id). Plain file
    reads and GETs: independent of the pipeline's storage code."""
    found = []
    for manifest_raw, read_file in _landed_batches(landing_uri, s3):
        manifest = json.loads(manifest_raw)
        lines = [line for name in manifest["files"] for line in _lines(read_file(name))]
        found.append((manifest["window_start"], manifest["batch_id"], lines))
    # Windows end in Z with the same precision here, but compare instants, not strings.
    found.sort(key=lambda item: (_parse_time(_with_fraction(item[0])) or item[0], item[1]))
    return [(batch_id, lines) for _, batch_id, lines in found]


def _landed_batches(landing_uri: str, s3: Any) -> Iterable[tuple[bytes, Any]]:
    """``(manifest bytes, read(name) -> bytes)`` of every batch folder that has its manifest."""
    parsed = urlparse(landing_uri)
    if parsed.scheme == "file":
        root = Path(parsed.path)
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            if (folder / "_manifest.json").is_file():
                yield (folder / "_manifest.json").read_bytes(), lambda name, f=folder: (f / name).read_bytes()
        return
    if parsed.scheme != "s3" or s3 is None:
        raise ValueError(
            f"read_landing reads file:// folders, or s3:// ones with an s3 client: {landing_uri}"
        )
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/").rstrip("/") + "/"

    def get(key: str) -> bytes:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    keys = {
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    }
    for key in sorted(keys):
        folder, _, name = key.rpartition("/")
        if name == "_manifest.json" and folder.count("/") == prefix.count("/"):
            yield get(key), lambda name, f=folder: get(f"{f}/{name}")


def _lines(data: bytes) -> list[bytes]:
    """Lines as the manifest counts them: split on ``\\n``; a last line without one counts too."""
    lines = data.split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


def _with_fraction(text: str) -> str:
    return text if "." in text else text[:-1] + ".0Z"
