"""The reconciliation ledger: one DynamoDB table that records every batch, stateless group and stateful run.

Item kinds (``pk`` is the hash key; ``state_key = "<kind>#<state>"`` feeds the GSI ``by_state``):
- ``batch#<batch_id>``: PENDING -> CLAIMED -> STATELESS_DONE -> STATEFUL_DONE -> INDEXED, or INVALID
  (-> INVALID_ACKNOWLEDGED once an operator has seen it: ``status`` stops listing it);
- ``group#<group_id>`` (one stateless run): CLAIMING -> READY -> CLAIMED -> APPLIED;
- ``stateful#<seq8>`` (one stateful run): BEGUN -> PROCESSED -> INDEXED;
- ``stateful_run#<run_id>`` -> seq, so a retried begin finds its run; ``counter#stateful`` -> last seq.

Every state change is a conditional write on the state it leaves, so concurrent or retried tasks cannot
apply a change twice: exactly one claimer wins a batch, exactly one stateful run gets a READY group, and a
rerun finds the change made and returns. GSI queries are eventually consistent, so they only propose
candidates; decisions rest on the conditional write or on a consistent read of the base item. A stateful
run takes its seq in the same transaction that writes it and claims its groups, so a crash never leaves a
hole in the seq sequence nor a group claimed by a run that does not exist.

Domain code: no Airflow. The DynamoDB client and the Storage are passed in.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from dataplatform.dynamodb import ensure_table, error_code, key
from dataplatform.reconciliation.manifests import (
    ManifestError,
    as_utc,
    candidate_batch_ids,
    format_utc,
    has_manifest,
    parse_utc,
    read_and_verify,
)
from dataplatform.reconciliation.manifests import manifest_uri as manifest_uri_of
from spark_jobs.common.storage import Storage

log = logging.getLogger(__name__)

INVALID_ACKNOWLEDGED = "INVALID_ACKNOWLEDGED"
BATCH_STATES = (
    "PENDING",
    "CLAIMED",
    "STATELESS_DONE",
    "STATEFUL_DONE",
    "INDEXED",
    "INVALID",
    INVALID_ACKNOWLEDGED,
)
GROUP_STATES = ("CLAIMING", "READY", "CLAIMED", "APPLIED")
RUN_STATES = ("BEGUN", "PROCESSED", "INDEXED")
STATES = {"batch": BATCH_STATES, "group": GROUP_STATES, "stateful": RUN_STATES}
INDEX_NAME = "by_state"
# What creates the ledger and the artifact index (named by the CLI and the lake-health page when missing).
TABLES_CREATED_BY = "the first recon_stateless run (setup_tables)"
COUNTER_PK = "counter#stateful"

_TRANSACTION_LIMIT = 100  # items per TransactWriteItems (DynamoDB's limit)
# commit_group marks the group and all its batches in one transaction, so a group holds at most 99.
MAX_GROUP_BATCHES = _TRANSACTION_LIMIT - 1
# begin_stateful_run writes the counter, the run and the run-id items plus one update per group.
MAX_RUN_GROUPS = _TRANSACTION_LIMIT - 3
_BATCH_GET_LIMIT = 100
_BEGIN_ATTEMPTS = 50
_WRITERS = 8  # concurrent UpdateItem calls when a run's batches change state

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class LedgerError(RuntimeError):
    """The ledger is not in a state the call can work with; the message says what and where."""


class LedgerConflict(LedgerError):
    """Another run holds what this call needs (a batch taken over, a group claimed elsewhere)."""


@dataclass(frozen=True)
class StatefulRun:
    seq: int
    run_id: str
    groups: tuple[str, ...]
    watermark: int  # every run <= watermark was INDEXED when this run began
    state: str = "BEGUN"
    resumed: bool = False  # True when a retried begin found the run already begun

    @property
    def inflight_seqs(self) -> list[int]:
        """Runs that may not be indexed yet: their part files are joined in as in-flight state."""
        return list(range(self.watermark + 1, self.seq))

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "run_id": self.run_id,
            "groups": list(self.groups),
            "watermark": self.watermark,
            "inflight_seqs": self.inflight_seqs,
            "state": self.state,
            "resumed": self.resumed,
        }


@dataclass(frozen=True)
class Status:
    table: str
    now: datetime
    window_minutes: int
    backlog: int  # PENDING batches
    batches: dict[str, int]
    groups: dict[str, int]
    runs: dict[str, int]
    last_seq: int
    highest_indexed_seq: int
    # Windows are aligned to multiples of window_minutes since the epoch, starting at the first boundary
    # at or after the earliest batch.
    latest_complete_window: tuple[datetime, datetime] | None
    complete_through: datetime | None  # every window from the first one up to this instant is complete
    first_incomplete_window: dict[str, Any] | None  # {"start", "end", "reason"}
    incomplete_windows: int
    invalid: list[dict[str, str]] = field(default_factory=list)  # a sample: {"batch_id", "reason"}

    def as_dict(self) -> dict[str, Any]:
        latest = self.latest_complete_window
        first = self.first_incomplete_window
        return {
            "table": self.table,
            "now": format_utc(self.now),
            "window_minutes": self.window_minutes,
            "backlog": self.backlog,
            "batches": dict(self.batches),
            "groups": dict(self.groups),
            "runs": dict(self.runs),
            "last_seq": self.last_seq,
            "highest_indexed_seq": self.highest_indexed_seq,
            "latest_complete_window": [format_utc(t) for t in latest] if latest else None,
            "complete_through": format_utc(self.complete_through) if self.complete_through else None,
            "first_incomplete_window": (
                {**first, "start": format_utc(first["start"]), "end": format_utc(first["end"])}
                if first
                else None
            ),
            "incomplete_windows": self.incomplete_windows,
            "invalid": list(self.invalid),
        }


# -- table ---------------------------------------------------------------------------------------------


def create_ledger_table(dynamodb: Any, table: str) -> bool:
    """Create the ledger table (on demand, GSI ``by_state``) unless it exists; wait until it is ACTIVE.
    True when this call created it."""
    return ensure_table(
        dynamodb, table, key("pk"), ["pk", "state_key"], indexes={INDEX_NAME: key("state_key", "pk")}
    )


# -- batches -------------------------------------------------------------------------------------------


def register_batches(
    dynamodb: Any, table: str, storage: Storage, landing_uri: str, now: datetime
) -> dict[str, Any]:
    """Record every landed batch the ledger does not know yet: PENDING when its manifest checks out,
    INVALID (with the reason) when not. A batch is registered once, whoever registers it first.

    Returns ``{"registered": [batch_id, ...], "invalid": [{"batch_id", "reason"}], "already_known": n}``.
    """
    # Known batches are skipped before their manifests are looked at: on S3 each look is a request, and
    # the landing folder keeps every batch ever delivered.
    candidates = candidate_batch_ids(storage, landing_uri)
    known = _batch_get(dynamodb, table, [_batch_pk(batch_id) for batch_id in candidates], projection="pk")
    result: dict[str, Any] = {"registered": [], "invalid": [], "already_known": 0}
    for batch_id in candidates:
        if _batch_pk(batch_id) in known:
            result["already_known"] += 1
            continue
        if not has_manifest(storage, landing_uri, batch_id):
            continue  # still being written
        manifest_uri = manifest_uri_of(landing_uri, batch_id)
        item: dict[str, Any] = {
            "pk": _batch_pk(batch_id),
            "kind": "batch",
            "batch_id": batch_id,
            "manifest_uri": manifest_uri,
            "registered_at": _stamp(now),
        }
        try:
            manifest = read_and_verify(storage, landing_uri, batch_id)
        except ManifestError as exc:
            item.update(_state_fields("batch", "INVALID"), reason=exc.reason)
        else:
            item.update(
                _state_fields("batch", "PENDING"),
                window_start=format_utc(manifest.window_start),
                window_end=format_utc(manifest.window_end),
                rows=manifest.rows,
                sha256=manifest.sha256,
                files=list(manifest.file_uris),
            )
        if not _put_new(dynamodb, table, item):
            result["already_known"] += 1  # registered by a concurrent task since we looked
        elif item["state"] == "INVALID":
            result["invalid"].append({"batch_id": batch_id, "reason": item["reason"]})
        else:
            result["registered"].append(batch_id)
    return result


def acknowledge_invalid(dynamodb: Any, table: str, batch_id: str, now: datetime) -> bool:
    """Record that an operator has seen an INVALID batch: it becomes INVALID_ACKNOWLEDGED (reason kept,
    ``acknowledged_at`` set) and ``status`` stops listing it. True when this call acknowledged it, False
    when it already was (a rerun changes nothing). A batch that is not INVALID (or not in the ledger) is
    refused with LedgerConflict. The batch is never processed either way: corrected data lands again
    under a new batch id."""
    pk = _batch_pk(batch_id)
    update = {**_state_fields("batch", INVALID_ACKNOWLEDGED), "acknowledged_at": _stamp(now)}
    try:
        return _advance(
            dynamodb,
            table,
            pk,
            update,
            "#state = :invalid",
            {"invalid": "INVALID"},
            _state_in(INVALID_ACKNOWLEDGED),
        )
    except LedgerConflict:
        item = _get(dynamodb, table, pk)
        state = item["state"] if item else f"not in the ledger {table}"
        raise LedgerConflict(
            f"batch {batch_id} is {state}: only an INVALID batch can be acknowledged"
        ) from None


def count_by_state(dynamodb: Any, table: str, kind: str = "batch") -> dict[str, int]:
    """Items of ``kind`` (batch, group, stateful) per state, every state listed (GSI, eventually
    consistent: for reports and the backlog estimate, not for decisions)."""
    if kind not in STATES:
        raise ValueError(f"kind must be one of {sorted(STATES)}, got {kind!r}")
    return {state: _count(dynamodb, table, f"{kind}#{state}") for state in STATES[kind]}


def claim_batches(
    dynamodb: Any, table: str, group_id: str, limit: int, now: datetime, claim_timeout: timedelta
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` of the oldest claimable batches (by window_start, then batch_id) for the
    stateless group ``group_id`` and record the group (CLAIMING) with the batches it won.

    Claimable: PENDING, or CLAIMED longer than ``claim_timeout`` ago (the claimer died; the claim is
    taken over). Each claim is a conditional update, so one claimer wins each batch. Idempotent per group:
    once the group is recorded a call returns its batches and claims nothing more; claims made by a call
    that died before recording the group are found again and kept. Returns the batch items (batch_id,
    files, window_start, window_end, rows, ...) in claim order; ``[]`` (and no group item) when nothing
    was claimable.
    """
    group = _get(dynamodb, table, _group_pk(group_id))
    if group is not None:
        return _batches_of_group(dynamodb, table, group)
    if limit > MAX_GROUP_BATCHES:
        log.warning(
            "claim limit %d lowered to %d (one commit transaction per group)", limit, MAX_GROUP_BATCHES
        )
        limit = MAX_GROUP_BATCHES
    if limit <= 0:
        return []
    stamp, cutoff = _stamp(now), _stamp(as_utc(now) - claim_timeout)
    claimed = list(_query(dynamodb, table, "batch#CLAIMED"))
    ours = [batch for batch in claimed if batch.get("group_id") == group_id]
    stale = [
        batch
        for batch in claimed
        if batch.get("group_id") != group_id and batch.get("claimed_at", "") < cutoff
    ]
    pending = list(_query(dynamodb, table, "batch#PENDING"))
    won: dict[str, dict[str, Any]] = {}
    for batch in sorted(ours, key=_window_order) + sorted(pending + stale, key=_window_order):
        if len(won) >= limit and batch.get("group_id") != group_id:
            break
        claim = _try_claim(dynamodb, table, batch, group_id, stamp, cutoff)
        if claim is not None:
            won[claim["batch_id"]] = claim
    if not won:
        return []
    batches = sorted(won.values(), key=_window_order)
    group_item = {
        "pk": _group_pk(group_id),
        "kind": "group",
        "group_id": group_id,
        **_state_fields("group", "CLAIMING"),
        "batches": [batch["batch_id"] for batch in batches],
        "claimed_at": stamp,
    }
    if not _put_new(dynamodb, table, group_item):
        raise LedgerConflict(f"group {group_id} was recorded by a concurrent claim with the same group id")
    taken_over = [batch["batch_id"] for batch in batches if batch.get("taken_over_from")]
    if taken_over:
        log.warning("group %s took over stale claims on %s", group_id, ", ".join(taken_over))
    return batches


def _try_claim(
    dynamodb: Any, table: str, batch: dict[str, Any], group_id: str, stamp: str, cutoff: str
) -> dict[str, Any] | None:
    """The batch item after claiming it for ``group_id``, or None when another claimer has it."""
    update = {**_state_fields("batch", "CLAIMED"), "group_id": group_id, "claimed_at": stamp}
    values = {"pending": "PENDING", "claimed": "CLAIMED", "group": group_id, "cutoff": cutoff}
    if batch["state"] == "CLAIMED" and batch.get("group_id") != group_id:
        # Take over exactly the stale claim we saw; its old group can no longer commit the batch.
        update["taken_over_from"] = batch.get("group_id")
        values["old"] = batch.get("group_id")
        condition = "#state = :claimed AND #group_id = :old AND #claimed_at < :cutoff"
    else:
        condition = "#state = :pending OR (#state = :claimed AND #group_id = :group)"
    try:
        response = dynamodb.update_item(
            TableName=table,
            Key=_key(_batch_pk(batch["batch_id"])),
            ReturnValues="ALL_NEW",
            **_expression(update, condition, values),
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return None
        raise
    return _public(_from_item(response["Attributes"]))


def _batches_of_group(dynamodb: Any, table: str, group: dict[str, Any]) -> list[dict[str, Any]]:
    """A recorded group's batches (consistent reads), checked to still belong to it."""
    group_id = group["group_id"]
    items = _batch_get(dynamodb, table, [_batch_pk(batch_id) for batch_id in group["batches"]])
    batches = []
    for batch_id in group["batches"]:
        item = items.get(_batch_pk(batch_id))
        if item is None:
            raise LedgerError(f"batch {batch_id} of group {group_id} is missing from the ledger {table}")
        if item.get("group_id") != group_id:
            raise LedgerConflict(
                f"batch {batch_id} of group {group_id} was taken over by group {item.get('group_id')} "
                "(the claim was older than the claim timeout); this group cannot process it"
            )
        batches.append(_public(item))
    return batches


def dedup_group_ids(dynamodb: Any, table: str, now: datetime, horizon_days: int) -> list[str]:
    """Groups committed (READY, CLAIMED or APPLIED) within the last ``horizon_days``, oldest first: the
    stateless job drops events whose ids these groups have seen."""
    cutoff = _stamp(as_utc(now) - timedelta(days=horizon_days))
    found = []
    for state in ("READY", "CLAIMED", "APPLIED"):
        for item in _query(
            dynamodb,
            table,
            f"group#{state}",
            filter_expression="#committed_at >= :cutoff",
            values={"cutoff": cutoff},
            projection=("group_id", "committed_at"),
        ):
            found.append((item["committed_at"], item["group_id"]))
    return [group_id for _, group_id in sorted(found)]


def commit_group(
    dynamodb: Any, table: str, group_id: str, stats: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The group's stateless output is complete: group READY, its batches STATELESS_DONE, in one
    transaction and only while every batch is still CLAIMED by this group. A rerun on a committed group
    changes nothing. Returns ``{"group_id", "state", "batches", "already_committed"}``."""
    group = _get(dynamodb, table, _group_pk(group_id))
    if group is None:
        raise LedgerError(f"group {group_id} is not in the ledger {table}: nothing claimed it")
    for _attempt in range(5):
        if group["state"] != "CLAIMING":
            return _commit_result(group, already_committed=True)
        stamp = _stamp(now)
        group_update = {
            **_state_fields("group", "READY"),
            "committed_at": stamp,
            "stats": stats,
        }
        entries = [
            _transact_update(table, group["pk"], group_update, "#state = :claiming", {"claiming": "CLAIMING"})
        ]
        for batch_id in group["batches"]:
            entries.append(
                _transact_update(
                    table,
                    _batch_pk(batch_id),
                    {**_state_fields("batch", "STATELESS_DONE"), "stateless_done_at": stamp},
                    "#state = :claimed AND #group_id = :group",
                    {"claimed": "CLAIMED", "group": group_id},
                )
            )
        try:
            dynamodb.transact_write_items(TransactItems=entries)
        except ClientError as exc:
            if error_code(exc) not in ("TransactionCanceledException", "TransactionConflictException"):
                raise
            group = _get(dynamodb, table, _group_pk(group_id))
            failed = _failed_conditions(exc)
            if group["state"] == "CLAIMING" and any(index > 0 for index in failed):
                raise _batch_conflict(dynamodb, table, group, failed) from None
            continue  # a concurrent commit won, or a transient conflict: look again
        log.info("group %s committed: %d batches STATELESS_DONE", group_id, len(group["batches"]))
        return _commit_result({**group, "state": "READY"}, already_committed=False)
    raise LedgerError(f"group {group_id}: commit kept conflicting with concurrent writes; retry later")


def _commit_result(group: dict[str, Any], already_committed: bool) -> dict[str, Any]:
    return {
        "group_id": group["group_id"],
        "state": group["state"],
        "batches": list(group["batches"]),
        "already_committed": already_committed,
    }


def _batch_conflict(dynamodb: Any, table: str, group: dict[str, Any], failed: list[int]) -> LedgerConflict:
    batch_id = group["batches"][min(index for index in failed if index > 0) - 1]
    batch = _get(dynamodb, table, _batch_pk(batch_id)) or {}
    return LedgerConflict(
        f"group {group['group_id']} cannot commit: batch {batch_id} is {batch.get('state')} for group "
        f"{batch.get('group_id')}, not CLAIMED by this group (taken over after the claim timeout?)"
    )


# -- stateful runs ---------------------------------------------------------------------------------------


def begin_stateful_run(
    dynamodb: Any, table: str, run_id: str, now: datetime, max_groups: int | None = None
) -> StatefulRun | None:
    """Start stateful run ``run_id``: claim every READY group (at most ``max_groups``, at most 97),
    take the next seq and record the run BEGUN, all in one transaction conditioned on the counter's
    current value (retried on conflict). Idempotent per run_id: a retry returns the run already begun.
    None, and nothing claimed, when no group is READY."""
    if max_groups is not None and max_groups < 1:
        raise ValueError(f"max_groups must be >= 1, got {max_groups}")
    limit = min(max_groups or MAX_RUN_GROUPS, MAX_RUN_GROUPS)
    for attempt in range(_BEGIN_ATTEMPTS):
        existing = _existing_run(dynamodb, table, run_id)
        if existing is not None:
            return existing
        groups = _ready_groups(dynamodb, table, limit)
        if not groups:
            return None
        counter = _get(dynamodb, table, COUNTER_PK)
        last_seq = int(counter["value"]) if counter else 0
        seq = last_seq + 1
        watermark = _contiguous_indexed(dynamodb, table, last_seq)
        try:
            dynamodb.transact_write_items(
                TransactItems=_begin_entries(table, run_id, seq, last_seq, groups, watermark, _stamp(now))
            )
        except ClientError as exc:
            if error_code(exc) not in ("TransactionCanceledException", "TransactionConflictException"):
                raise
            # Another run took this seq or one of these groups: look again (after a short, random pause so
            # contending runs spread out).
            time.sleep(random.uniform(0.005, 0.05) * min(attempt + 1, 8))
            continue
        log.info("stateful run %d (%s) begun with groups %s, watermark %d", seq, run_id, groups, watermark)
        return StatefulRun(seq=seq, run_id=run_id, groups=tuple(groups), watermark=watermark)
    raise LedgerError(f"stateful run {run_id}: no seq after {_BEGIN_ATTEMPTS} attempts (heavy contention)")


def _begin_entries(
    table: str, run_id: str, seq: int, last_seq: int, groups: list[str], watermark: int, stamp: str
) -> list[dict[str, Any]]:
    if last_seq == 0:
        counter_condition, counter_values = "attribute_not_exists(pk)", {":one": {"N": "1"}}
    else:
        counter_condition = "#value = :last"
        counter_values = {":one": {"N": "1"}, ":last": {"N": str(last_seq)}}
    counter = {
        "Update": {
            "TableName": table,
            "Key": _key(COUNTER_PK),
            "UpdateExpression": "ADD #value :one",
            "ConditionExpression": counter_condition,
            "ExpressionAttributeNames": {"#value": "value"},
            "ExpressionAttributeValues": counter_values,
        }
    }
    run_item = {
        "pk": _run_pk(seq),
        "kind": "stateful",
        "seq": seq,
        "run_id": run_id,
        "groups": groups,
        **_state_fields("stateful", "BEGUN"),
        "watermark": watermark,
        "begun_at": stamp,
    }
    run_id_item = {"pk": _run_id_pk(run_id), "kind": "stateful_run", "seq": seq, "run_id": run_id}
    entries = [
        counter,
        {
            "Put": {
                "TableName": table,
                "Item": _to_item(run_item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {
            "Put": {
                "TableName": table,
                "Item": _to_item(run_id_item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
    ]
    for group_id in groups:
        entries.append(
            _transact_update(
                table,
                _group_pk(group_id),
                {**_state_fields("group", "CLAIMED"), "claimed_by_seq": seq, "claimed_at": stamp},
                "#state = :ready",
                {"ready": "READY"},
            )
        )
    return entries


def _existing_run(dynamodb: Any, table: str, run_id: str) -> StatefulRun | None:
    pointer = _get(dynamodb, table, _run_id_pk(run_id))
    if pointer is None:
        return None
    run = _get(dynamodb, table, _run_pk(int(pointer["seq"])))
    if run is None:
        raise LedgerError(f"run id {run_id} points at stateful run {pointer['seq']}, which is missing")
    return _run_from_item(run, resumed=True)


def _ready_groups(dynamodb: Any, table: str, limit: int) -> list[str]:
    """READY groups, oldest commit first, confirmed by a consistent read (the GSI may lag)."""
    candidates = list(_query(dynamodb, table, "group#READY", projection=("pk", "group_id", "committed_at")))
    current = _batch_get(dynamodb, table, [item["pk"] for item in candidates])
    ready = [item for item in current.values() if item.get("state") == "READY"]
    ready.sort(key=lambda item: (item.get("committed_at", ""), item["group_id"]))
    return [item["group_id"] for item in ready[:limit]]


def run_state(dynamodb: Any, table: str, seq: int) -> str | None:
    """BEGUN, PROCESSED or INDEXED (consistent read); None when there is no run ``seq``."""
    run = _get(dynamodb, table, _run_pk(seq))
    return run["state"] if run else None


def get_run(dynamodb: Any, table: str, seq: int) -> StatefulRun | None:
    """Run ``seq`` as recorded (consistent read), or None."""
    run = _get(dynamodb, table, _run_pk(seq))
    return _run_from_item(run, resumed=True) if run else None


def mark_processed(
    dynamodb: Any,
    table: str,
    seq: int,
    part_files: Sequence[Any],
    stats: dict[str, Any],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The run's state part files are written: its groups' batches STATEFUL_DONE, then the run PROCESSED
    (with ``part_files`` and ``stats``). Idempotent; a rerun after a crash finishes the job."""
    run = _require_run(dynamodb, table, seq)
    if run["state"] in ("PROCESSED", "INDEXED"):
        return {"seq": seq, "state": run["state"], "already": True}
    batch_ids = _batches_of_run(dynamodb, table, run)
    _advance_all(
        dynamodb,
        table,
        [_batch_pk(batch_id) for batch_id in batch_ids],
        {**_state_fields("batch", "STATEFUL_DONE"), "stateful_seq": seq},
        "#state = :stateless_done",
        {"stateless_done": "STATELESS_DONE"},
        done=lambda item: (
            item.get("stateful_seq") == seq and item.get("state") in ("STATEFUL_DONE", "INDEXED")
        ),
    )
    update = {
        **_state_fields("stateful", "PROCESSED"),
        "part_files": list(part_files),
        "processed_stats": stats,
        "processed_at": _stamp(now or datetime.now(UTC)),
    }
    _advance(
        dynamodb,
        table,
        _run_pk(seq),
        update,
        "#state = :begun",
        {"begun": "BEGUN"},
        _state_in("PROCESSED", "INDEXED"),
    )
    log.info("stateful run %d PROCESSED: %d batches STATEFUL_DONE", seq, len(batch_ids))
    return {"seq": seq, "state": "PROCESSED", "already": False, "batches": len(batch_ids)}


def mark_indexed(
    dynamodb: Any, table: str, seq: int, stats: dict[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """The run's artifacts are indexed: batches INDEXED, groups APPLIED, then the run INDEXED.
    Idempotent; the run must be PROCESSED first."""
    run = _require_run(dynamodb, table, seq)
    if run["state"] == "INDEXED":
        return {"seq": seq, "state": "INDEXED", "already": True}
    if run["state"] != "PROCESSED":
        raise LedgerError(f"stateful run {seq} is {run['state']}: it must be PROCESSED before it is INDEXED")
    stamp = _stamp(now or datetime.now(UTC))
    batch_ids = _batches_of_run(dynamodb, table, run)
    _advance_all(
        dynamodb,
        table,
        [_batch_pk(batch_id) for batch_id in batch_ids],
        {**_state_fields("batch", "INDEXED"), "indexed_at": stamp},
        "#state = :stateful_done AND #stateful_seq = :seq",
        {"stateful_done": "STATEFUL_DONE", "seq": seq},
        done=lambda item: item.get("stateful_seq") == seq and item.get("state") == "INDEXED",
    )
    _advance_all(
        dynamodb,
        table,
        [_group_pk(group_id) for group_id in run["groups"]],
        {**_state_fields("group", "APPLIED"), "applied_at": stamp},
        "#state = :claimed AND #claimed_by_seq = :seq",
        {"claimed": "CLAIMED", "seq": seq},
        done=lambda item: item.get("claimed_by_seq") == seq and item.get("state") == "APPLIED",
    )
    update = {**_state_fields("stateful", "INDEXED"), "indexed_stats": stats, "indexed_at": stamp}
    _advance(
        dynamodb,
        table,
        _run_pk(seq),
        update,
        "#state = :processed",
        {"processed": "PROCESSED"},
        _state_in("INDEXED"),
    )
    log.info(
        "stateful run %d INDEXED: %d batches, %d groups APPLIED", seq, len(batch_ids), len(run["groups"])
    )
    return {"seq": seq, "state": "INDEXED", "already": False, "batches": len(batch_ids)}


def highest_indexed_seq(dynamodb: Any, table: str) -> int:
    """The highest seq whose run is INDEXED (0 when none). Runs are indexed in seq order, so normally
    every run below it is indexed too; ``index_watermark`` is the strict form."""
    last_seq = _last_seq(dynamodb, table)
    if last_seq == 0:
        return 0
    top = next(
        iter(_query(dynamodb, table, "stateful#INDEXED", projection=("seq",), newest_first=True, limit=1)),
        None,
    )
    floor_seq = int(top["seq"]) if top else 0
    # The GSI may lag behind the newest runs: read those (few: the runs in flight) consistently.
    for chunk in _chunks(list(range(last_seq, floor_seq, -1)), _BATCH_GET_LIMIT):
        items = _batch_get(dynamodb, table, [_run_pk(seq) for seq in chunk], projection="pk, seq, #state")
        indexed = [seq for seq in chunk if items.get(_run_pk(seq), {}).get("state") == "INDEXED"]
        if indexed:
            return max(indexed)
    return floor_seq


def index_watermark(dynamodb: Any, table: str) -> int:
    """The highest seq S such that every run <= S is INDEXED (consistent reads)."""
    return _contiguous_indexed(dynamodb, table, _last_seq(dynamodb, table))


def _contiguous_indexed(dynamodb: Any, table: str, up_to: int) -> int:
    if up_to <= 0:
        return 0
    latest = _get(dynamodb, table, _run_pk(up_to))
    # A run's watermark stays true (runs never leave INDEXED), so walking starts there, not at 1.
    watermark = int(latest.get("watermark", 0)) if latest else 0
    for chunk in _chunks(list(range(watermark + 1, up_to + 1)), _BATCH_GET_LIMIT):
        items = _batch_get(dynamodb, table, [_run_pk(seq) for seq in chunk], projection="pk, seq, #state")
        for seq in chunk:
            if items.get(_run_pk(seq), {}).get("state") != "INDEXED":
                return watermark
            watermark = seq
    return watermark


def _last_seq(dynamodb: Any, table: str) -> int:
    counter = _get(dynamodb, table, COUNTER_PK)
    return int(counter["value"]) if counter else 0


def _require_run(dynamodb: Any, table: str, seq: int) -> dict[str, Any]:
    run = _get(dynamodb, table, _run_pk(seq))
    if run is None:
        raise LedgerError(f"stateful run {seq} is not in the ledger {table}")
    return run


def _batches_of_run(dynamodb: Any, table: str, run: dict[str, Any]) -> list[str]:
    groups = _batch_get(dynamodb, table, [_group_pk(group_id) for group_id in run["groups"]])
    batch_ids = []
    for group_id in run["groups"]:
        group = groups.get(_group_pk(group_id))
        if group is None:
            raise LedgerError(f"group {group_id} of stateful run {run['seq']} is missing from the ledger")
        batch_ids.extend(group["batches"])
    return batch_ids


def _run_from_item(run: dict[str, Any], resumed: bool) -> StatefulRun:
    return StatefulRun(
        seq=int(run["seq"]),
        run_id=run["run_id"],
        groups=tuple(run["groups"]),
        watermark=int(run.get("watermark", 0)),
        state=run["state"],
        resumed=resumed,
    )


# -- status ----------------------------------------------------------------------------------------------


def status(dynamodb: Any, table: str, window_minutes: int, now: datetime) -> Status:
    """Backlog, items per state and completeness windows (a window is complete when its batches cover
    all of it and every batch overlapping it is INDEXED; INVALID batches neither cover nor block).
    Read from the GSI: a report, seconds behind at most."""
    if window_minutes < 1:
        raise ValueError(f"window_minutes must be >= 1, got {window_minutes}")
    batches: list[dict[str, Any]] = []
    invalid = list(_query(dynamodb, table, "batch#INVALID", projection=("batch_id", "reason")))
    batch_counts = {}
    for state in BATCH_STATES:
        # INVALID batches hold no window: listed until acknowledged, then only counted.
        if state == "INVALID":
            batch_counts[state] = len(invalid)
            continue
        if state == INVALID_ACKNOWLEDGED:
            batch_counts[state] = _count(dynamodb, table, f"batch#{state}")
            continue
        found = list(
            _query(
                dynamodb,
                table,
                f"batch#{state}",
                projection=("batch_id", "window_start", "window_end", "state"),
            )
        )
        batch_counts[state] = len(found)
        batches.extend(found)
    windows = _completeness(batches, timedelta(minutes=window_minutes))
    return Status(
        table=table,
        now=as_utc(now),
        window_minutes=window_minutes,
        backlog=batch_counts["PENDING"],
        batches=batch_counts,
        groups=count_by_state(dynamodb, table, "group"),
        runs=count_by_state(dynamodb, table, "stateful"),
        last_seq=_last_seq(dynamodb, table),
        highest_indexed_seq=highest_indexed_seq(dynamodb, table),
        invalid=[{"batch_id": item["batch_id"], "reason": item.get("reason", "")} for item in invalid[:20]],
        **windows,
    )


def _completeness(batches: list[dict[str, Any]], window: timedelta) -> dict[str, Any]:
    empty = {
        "latest_complete_window": None,
        "complete_through": None,
        "first_incomplete_window": None,
        "incomplete_windows": 0,
    }
    spans = [
        (parse_utc(batch["window_start"]), parse_utc(batch["window_end"]), batch["state"])
        for batch in batches
    ]
    if not spans:
        return empty
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    origin = epoch + window * math.ceil((min(start for start, _, _ in spans) - epoch) / window)
    count = max(0, math.floor((max(end for _, end, _ in spans) - origin) / window))
    covered = _merge((start, end) for start, end, _ in spans)
    covered_starts = [start for start, _ in covered]
    # Windows an unfinished batch overlaps: they cannot be complete yet.
    blocked: dict[int, int] = {}
    for start, end, state in spans:
        if state == "INDEXED":
            continue
        first = max(0, math.floor((start - origin) / window))
        last = min(count - 1, math.ceil((end - origin) / window) - 1)
        for index in range(first, last + 1):
            blocked[index] = blocked.get(index, 0) + 1
    result = dict(empty)
    contiguous = True
    for index in range(count):
        start = origin + window * index
        end = start + window
        at = bisect.bisect_right(covered_starts, start) - 1
        is_covered = at >= 0 and covered[at][1] >= end
        if is_covered and index not in blocked:
            result["latest_complete_window"] = (start, end)
            if contiguous:
                result["complete_through"] = end
            continue
        contiguous = False
        result["incomplete_windows"] += 1
        if result["first_incomplete_window"] is None:
            reason = (
                f"{blocked[index]} overlapping batches not INDEXED"
                if index in blocked
                else f"gap: no batch covers {format_utc(_first_uncovered(covered, start, end))}"
            )
            result["first_incomplete_window"] = {"start": start, "end": end, "reason": reason}
    return result


def _merge(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _first_uncovered(covered: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> datetime:
    moment = start
    for span_start, span_end in covered:
        if span_start <= moment < span_end:
            moment = span_end
    return min(moment, end)


def format_status(status: Status) -> str:
    """The status as text for a terminal."""

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{state} {count}" for state, count in values.items())

    lines = [
        f"reconciliation ledger {status.table} at {format_utc(status.now)}",
        f"backlog: {status.backlog} pending batches",
        f"batches: {counts(status.batches)}",
        f"stateless groups: {counts(status.groups)}",
        f"stateful runs: {counts(status.runs)} (last seq {status.last_seq}, "
        f"highest indexed {status.highest_indexed_seq})",
    ]
    window = f"{status.window_minutes}-minute windows"
    if status.complete_through is not None:
        behind = int((status.now - status.complete_through).total_seconds() // 60)
        lines.append(
            f"complete through: {format_utc(status.complete_through)} ({window}; {behind} minutes before now)"
        )
    else:
        lines.append(f"complete through: nothing complete yet ({window})")
    latest = status.latest_complete_window
    lines.append(
        f"latest complete window: {format_utc(latest[0])} .. {format_utc(latest[1])}"
        if latest
        else "latest complete window: none"
    )
    first = status.first_incomplete_window
    if first:
        lines.append(
            f"first incomplete window: {format_utc(first['start'])} .. {format_utc(first['end'])}: "
            f"{first['reason']} ({status.incomplete_windows} incomplete in all)"
        )
    for bad in status.invalid:
        lines.append(f"INVALID batch {bad['batch_id']}: {bad['reason']}")
    if status.batches.get("INVALID", 0) > len(status.invalid):
        lines.append(f"... and {status.batches['INVALID'] - len(status.invalid)} more INVALID batches")
    if status.invalid:
        lines.append("(seen to: python -m dataplatform.reconciliation ack-invalid <batch_id>)")
    return "\n".join(lines)


# -- DynamoDB plumbing -------------------------------------------------------------------------------------


def _batch_pk(batch_id: str) -> str:
    return f"batch#{batch_id}"


def _group_pk(group_id: str) -> str:
    return f"group#{group_id}"


def _run_pk(seq: int) -> str:
    return f"stateful#{seq:08d}"


def _run_id_pk(run_id: str) -> str:
    return f"stateful_run#{run_id}"


def _state_fields(kind: str, state: str) -> dict[str, str]:
    return {"state": state, "state_key": f"{kind}#{state}"}


def _state_in(*states: str):
    return lambda item: item.get("state") in states


def _stamp(moment: datetime) -> str:
    """Fixed width (always microseconds), so stamps compare correctly as strings in conditions."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _window_order(batch: dict[str, Any]) -> tuple[datetime, str]:
    return parse_utc(batch["window_start"]), batch["batch_id"]


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in item.items() if name not in ("pk", "state_key")}


def _key(pk: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": pk}}


def _chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for begin in range(0, len(values), size):
        yield values[begin : begin + size]


def _dynamo_value(value: Any) -> Any:
    """Floats become Decimals (boto3 refuses floats); containers are converted throughout."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(name): _dynamo_value(inner) for name, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_dynamo_value(inner) for inner in value]
    return value


def _serialize(value: Any) -> dict[str, Any]:
    return _serializer.serialize(_dynamo_value(value))


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _serialize(value) for name, value in values.items() if value is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {name: _plain(inner) for name, inner in value.items()}
    if isinstance(value, list | set):
        return [_plain(inner) for inner in value]
    return value


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}


def _expression(update: dict[str, Any] | None, condition: str | None, values: dict[str, Any] | None) -> dict:
    """UpdateExpression (SET of ``update``) and ConditionExpression arguments. In ``condition``, ``#name``
    is the attribute ``name`` and ``:value`` is ``values["value"]``; only placeholders used are sent
    (DynamoDB rejects unused ones)."""
    names: dict[str, str] = {}
    attribute_values: dict[str, Any] = {}
    request: dict[str, Any] = {}
    if update:
        assignments = []
        for number, (name, value) in enumerate(update.items()):
            names[f"#u{number}"] = name
            attribute_values[f":u{number}"] = _serialize(value)
            assignments.append(f"#u{number} = :u{number}")
        request["UpdateExpression"] = "SET " + ", ".join(assignments)
    if condition:
        request["ConditionExpression"] = condition
        names.update({f"#{name}": name for name in re.findall(r"#(\w+)", condition)})
        attribute_values.update(
            {f":{name}": _serialize((values or {})[name]) for name in re.findall(r":(\w+)", condition)}
        )
    if names:
        request["ExpressionAttributeNames"] = names
    if attribute_values:
        request["ExpressionAttributeValues"] = attribute_values
    return request


def _transact_update(
    table: str, pk: str, update: dict[str, Any], condition: str, values: dict[str, Any]
) -> dict[str, Any]:
    return {"Update": {"TableName": table, "Key": _key(pk), **_expression(update, condition, values)}}


def _failed_conditions(exc: ClientError) -> list[int]:
    """Indexes of the transaction entries whose condition failed."""
    reasons = exc.response.get("CancellationReasons") or []
    return [index for index, reason in enumerate(reasons) if reason.get("Code") == "ConditionalCheckFailed"]


def _get(dynamodb: Any, table: str, pk: str) -> dict[str, Any] | None:
    item = dynamodb.get_item(TableName=table, Key=_key(pk), ConsistentRead=True).get("Item")
    return _from_item(item) if item else None


def _put_new(dynamodb: Any, table: str, values: dict[str, Any]) -> bool:
    """Put the item unless one with its pk exists; False when it does, unless it is this very item: a
    put that botocore sent again after a read timeout, whose first send had landed, fails its condition
    on its own write (the items carry a timestamp of the call, so an equal item is ours)."""
    try:
        dynamodb.put_item(
            TableName=table, Item=_to_item(values), ConditionExpression="attribute_not_exists(pk)"
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return _get(dynamodb, table, values["pk"]) == _from_item(_to_item(values))
        raise
    return True


def _advance(
    dynamodb: Any,
    table: str,
    pk: str,
    update: dict[str, Any],
    condition: str,
    values: dict[str, Any],
    done,
) -> bool:
    """Move one item on (conditional update). True when this call moved it, False when it was already
    where ``done`` says; LedgerConflict when it is elsewhere."""
    try:
        dynamodb.update_item(TableName=table, Key=_key(pk), **_expression(update, condition, values))
        return True
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
    item = _get(dynamodb, table, pk)
    if item is not None and done(item):
        return False
    state = item.get("state") if item else "missing"
    raise LedgerConflict(
        f"{pk} is {state}; cannot set it to {update.get('state')} (needs {condition} with {values})"
    )


def _advance_all(
    dynamodb: Any,
    table: str,
    pks: list[str],
    update: dict[str, Any],
    condition: str,
    values: dict[str, Any],
    done,
) -> int:
    """``_advance`` for many items, a few at a time; the number this call moved."""
    if not pks:
        return 0
    with ThreadPoolExecutor(max_workers=min(_WRITERS, len(pks))) as pool:
        moved = pool.map(lambda pk: _advance(dynamodb, table, pk, update, condition, values, done), pks)
        return sum(moved)


def _batch_get(
    dynamodb: Any, table: str, pks: Sequence[str], projection: str | None = None
) -> dict[str, dict[str, Any]]:
    """Items by pk (consistent reads, 100 keys a call, unprocessed keys retried); missing ones absent."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(list(dict.fromkeys(pks)), _BATCH_GET_LIMIT):
        request: dict[str, Any] = {"Keys": [_key(pk) for pk in chunk], "ConsistentRead": True}
        if projection:
            request["ProjectionExpression"] = projection
            if "#state" in projection:
                request["ExpressionAttributeNames"] = {"#state": "state"}
        pending: dict[str, Any] = {table: request}
        for attempt in range(10):
            response = dynamodb.batch_get_item(RequestItems=pending)
            for item in response.get("Responses", {}).get(table, []):
                plain = _from_item(item)
                found[plain["pk"]] = plain
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
            time.sleep(min(1.0, 0.05 * 2**attempt))
        else:
            raise LedgerError(f"BatchGetItem on {table} left keys unprocessed after 10 attempts")
    return found


def _query_pages(
    dynamodb: Any,
    table: str,
    state_key: str,
    *,
    select: str | None = None,
    filter_expression: str | None = None,
    values: dict[str, Any] | None = None,
    projection: Sequence[str] | None = None,
    newest_first: bool = False,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    names = {"#state_key": "state_key"}
    attribute_values = {":state_key": {"S": state_key}}
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": INDEX_NAME,
        "KeyConditionExpression": "#state_key = :state_key",
        "ScanIndexForward": not newest_first,
    }
    if select:
        request["Select"] = select
    if limit:
        request["Limit"] = limit
    if filter_expression:
        request["FilterExpression"] = filter_expression
        names.update({f"#{name}": name for name in re.findall(r"#(\w+)", filter_expression)})
        attribute_values.update(
            {
                f":{name}": _serialize((values or {})[name])
                for name in re.findall(r":(\w+)", filter_expression)
            }
        )
    if projection:
        request["ProjectionExpression"] = ", ".join(f"#p{number}" for number in range(len(projection)))
        names.update({f"#p{number}": name for number, name in enumerate(projection)})
    request["ExpressionAttributeNames"] = names
    request["ExpressionAttributeValues"] = attribute_values
    while True:
        page = dynamodb.query(**request)
        yield page
        if limit or "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _count(dynamodb: Any, table: str, state_key: str) -> int:
    return sum(page["Count"] for page in _query_pages(dynamodb, table, state_key, select="COUNT"))


def _query(dynamodb: Any, table: str, state_key: str, **options: Any) -> Iterator[dict[str, Any]]:
    for page in _query_pages(dynamodb, table, state_key, **options):
        for item in page.get("Items", []):
            yield _from_item(item)
