"""One dataset's erasure for the requests a run claimed, and what it leaves behind: each request's
progress for the dataset, one audit record per request, and a report that names subjects by HMAC only.

The pyiceberg engine runs here (``erase_iceberg_dataset``); Spark datasets (Hudi, and Iceberg with
``engine: spark``) run as jobs whose result JSON is recorded by ``record_spark_result``. Either way,
``record_outcome`` writes the progress and the audit, so a request's trail reads the same whatever ran.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyiceberg.exceptions import NoSuchTableError

from dataplatform.config import GdprDataset, GdprSettings
from dataplatform.gdpr import audit, requests, subject_files
from dataplatform.gdpr.iceberg_erasure import (
    RUN_PROPERTY,
    ErasureError,
    PinnedRefsError,
    SubjectFilter,
    SubjectScanner,
    check_pinned_refs,
    delete_subject_rows,
    earlier_delete_of_run,
    purge_subject_history,
)
from dataplatform.gdpr.requests import Request
from dataplatform.gdpr.subjects import subject_hmac
from dataplatform.gdpr.unreachable import (
    files_of_sharing_tables,
    purge_unreachable_copies,
    refuse_unconfigured_sharing_tables,
)
from dataplatform.gdpr.verify import Verification, verify_iceberg_table, verify_location
from dataplatform.iceberg.state import state_uri_for
from dataplatform.s3 import objects
from spark_jobs.common.gdpr_spec import scrub

log = logging.getLogger(__name__)

VERIFIED, FAILED, PINNED_REFS = "verified", "failed", "pinned_refs"


@dataclass
class ErasureContext:
    settings: GdprSettings
    dynamodb: Any
    s3: Any
    hmac_key: bytes
    run_id: str
    try_number: int = 1
    catalog: Any = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def hmac(self, subject_id: str) -> str:
        return subject_hmac(self.hmac_key, subject_id)

    def now(self) -> str:
        return self.clock().isoformat(timespec="seconds")


@dataclass
class Outcome:
    """What happened to one dataset for the claimed requests."""

    outcome: str  # verified | failed | pinned_refs
    started_at: str
    rows_deleted: int = 0
    # A row naming two subjects (payer and payee) counts for each.
    rows_by_subject: dict[str, int] = field(default_factory=dict)
    files_rewritten: int | None = None
    commit: str | None = None
    expired_snapshots: list[str] = field(default_factory=list)
    dropped_refs: list[str] = field(default_factory=list)
    verification: dict[str, Any] = field(default_factory=lambda: {"passed": False})
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def distinct_subjects(claimed: list[Request]) -> list[str]:
    return sorted({request.subject_id for request in claimed})


# -- pyiceberg ------------------------------------------------------------------------------------------


def erase_iceberg_dataset(ctx: ErasureContext, key: str, claimed: list[Request]) -> dict[str, Any]:
    """Delete, purge and verify the subjects of ``claimed`` in one Iceberg dataset (pyiceberg), then
    record the outcome. A refused dataset (pinned refs under ``fail``, a bad column) is recorded and
    reported, not raised: the other datasets go on, and the request stays retriable. Any other error is
    recorded and raised, so Airflow retries the task."""
    dataset = ctx.settings.datasets[key]
    if dataset.format != "iceberg" or dataset.engine != "pyiceberg":
        raise ErasureError(f"dataset {key!r} is {dataset.format}/{dataset.engine}: it runs as a Spark job")
    started = ctx.now()
    if not claimed:
        return {"dataset": key, "requests": 0, "summary": f"{key}: no requests to erase"}
    subjects = distinct_subjects(claimed)
    try:
        outcome = _erase_iceberg(ctx, key, dataset, subjects, started)
    except PinnedRefsError as exc:
        outcome = Outcome(PINNED_REFS, started, reason=str(exc), details={"pinned_refs": exc.refs})
    except ErasureError as exc:
        outcome = Outcome(FAILED, started, reason=str(exc))
    except Exception as exc:
        # A library's message may quote the filter, ids included: it is recorded and raised scrubbed, and
        # the traceback is logged without it.
        reason = "error: " + scrub(f"{type(exc).__name__}: {exc}", subjects)
        log.error("%s: %s\n%s", key, reason, "".join(traceback.format_tb(exc.__traceback__)))
        record_outcome(ctx, key, claimed, Outcome(FAILED, started, reason=reason))
        raise RuntimeError(f"{key}: {reason}") from None
    return record_outcome(ctx, key, claimed, outcome)


def _erase_iceberg(
    ctx: ErasureContext, key: str, dataset: GdprDataset, subject_ids: list[str], started: str
) -> Outcome:
    try:
        table = ctx.catalog.load_table(dataset.identifier)
    except NoSuchTableError:
        raise ErasureError(f"dataset {key}: Iceberg table {dataset.identifier} does not exist") from None
    subject_filter = SubjectFilter.build(table.schema(), dataset.subject_columns, subject_ids)
    # One scanner for the ref check and the purge: files never change, so what it learnt about a file
    # holds for every snapshot that reaches it.
    scanner = SubjectScanner(table, subject_filter, ctx.settings.workers)
    # Before anything changes: a pinned ref under the `fail` policy stops here, and so does an archive
    # table registered from this one that no dataset covers.
    check_pinned_refs(table, scanner, dataset.pinned_refs)
    refuse_unconfigured_sharing_tables(ctx.catalog, table, iceberg_identifiers(ctx.settings))
    deleted = delete_subject_rows(
        table,
        dataset.subject_columns,
        subject_ids,
        workers=ctx.settings.workers,
        commit_retries=ctx.settings.commit_retries,
        snapshot_properties={RUN_PROPERTY: ctx.run_id},
    )
    table = table.refresh()
    if deleted.snapshot_id is None:
        # A retry of this run after its delete committed: report what that delete removed, not zero.
        deleted = earlier_delete_of_run(table, ctx.run_id, subject_ids) or deleted
    purged = purge_subject_history(
        table,
        scanner,
        ctx.s3,
        state_uri_for(f"{ctx.settings.work_uri}state", dataset.identifier),
        dataset.pinned_refs,
        ctx.settings.commit_retries,
        protected=frozenset(files_of_sharing_tables(ctx.catalog, table)),
    )
    copies = purge_unreachable_copies(
        table.refresh(), ctx.catalog, ctx.s3, subject_filter, ctx.settings.workers
    )
    verification = verify_iceberg_table(table, ctx.s3, subject_filter, ctx.settings.workers)
    return Outcome(
        VERIFIED if verification.passed else FAILED,
        started,
        rows_deleted=deleted.rows_deleted,
        rows_by_subject=deleted.rows_by_subject,
        files_rewritten=deleted.files_rewritten,
        commit=str(deleted.snapshot_id) if deleted.snapshot_id else None,
        expired_snapshots=[str(s) for s in purged.expired_snapshots],
        dropped_refs=purged.dropped_refs,
        verification=verification.as_dict(),
        reason=None if verification.passed else verification_failure(verification),
        details={
            "data_files": deleted.data_files,
            "files_scanned": deleted.files_scanned,
            "bytes_rewritten": deleted.bytes_rewritten,
            "files_deleted": purged.files_deleted,
            "versions_deleted": purged.versions_deleted,
            "resumed_pending_deletes": purged.resumed_pending,
            **copies.as_details(),
        },
    )


def iceberg_identifiers(settings: GdprSettings) -> list[str]:
    return [d.identifier for d in settings.datasets.values() if d.format == "iceberg"]


def verification_failure(verification: Verification) -> str:
    """Why verification failed, naming objects (URIs), never subjects."""
    parts = []
    if verification.holding:
        parts.append(
            f"{len(verification.holding)} objects still hold the subjects, e.g. {min(verification.holding)}"
        )
    if verification.unreadable:
        parts.append(
            f"{len(verification.unreadable)} objects could not be read, e.g. {min(verification.unreadable)}"
        )
    return "verification: " + "; ".join(parts)


# A DynamoDB item holds at most 400 KB: an audit record names this many deleted copies (about 120 KB of
# URIs), and the count; the run's report in S3 names them all.
AUDIT_LIST_LIMIT = 1000


def audit_details(details: dict[str, Any]) -> dict[str, Any]:
    listed = details.get("unreachable_files_deleted") or []
    if len(listed) <= AUDIT_LIST_LIMIT:
        return details
    return {
        **details,
        "unreachable_files_deleted": listed[:AUDIT_LIST_LIMIT],
        "unreachable_files_deleted_count": len(listed),
        "unreachable_files_deleted_complete_list": "the dataset's run report (reports_uri)",
    }


# -- recording ------------------------------------------------------------------------------------------


def record_outcome(ctx: ErasureContext, key: str, claimed: list[Request], outcome: Outcome) -> dict[str, Any]:
    """Progress on each request, one audit record each, and the dataset's report (HMACs, no ids)."""
    finished = ctx.now()
    per_request = []
    for request in claimed:
        rows = outcome.rows_by_subject.get(request.subject_id, 0)
        verified = outcome.outcome == VERIFIED
        requests.record_progress(
            ctx.dynamodb,
            ctx.settings.requests_table,
            request.request_id,
            ctx.run_id,
            key,
            {
                "verified": verified,
                "outcome": outcome.outcome,
                "rows_deleted": rows,
                "reason": outcome.reason,
                "run_id": ctx.run_id,
                "at": finished,
            },
        )
        record = audit.AuditRecord(
            request_id=request.request_id,
            subject_hmac=ctx.hmac(request.subject_id),
            dataset=key,
            run_id=ctx.run_id,
            try_number=ctx.try_number,
            outcome=outcome.outcome,
            rows_deleted=rows,
            files_rewritten=outcome.files_rewritten,
            commit=outcome.commit,
            expired_snapshots=outcome.expired_snapshots,
            dropped_refs=outcome.dropped_refs,
            verification=outcome.verification,
            started_at=outcome.started_at,
            finished_at=finished,
            reason=outcome.reason,
            details=audit_details(outcome.details),
        )
        audit.append(ctx.dynamodb, ctx.settings.audit_table, record)
        per_request.append(
            {
                "request_id": request.request_id,
                "subject_hmac": record.subject_hmac,
                "rows_deleted": rows,
                "outcome": outcome.outcome,
            }
        )
    report = {
        "dataset": key,
        "outcome": outcome.outcome,
        "reason": outcome.reason,
        "requests": per_request,
        "rows_deleted": outcome.rows_deleted,
        "files_rewritten": outcome.files_rewritten,
        "commit": outcome.commit,
        "expired_snapshots": outcome.expired_snapshots,
        "dropped_refs": outcome.dropped_refs,
        "verification": outcome.verification,
        "details": outcome.details,
        "started_at": outcome.started_at,
        "finished_at": finished,
    }
    copies = outcome.details.get("unreachable_files_deleted")
    report["summary"] = (
        f"{key}: {outcome.outcome} for {len(claimed)} requests, {report['rows_deleted']} rows deleted, "
        f"{outcome.files_rewritten or 0} files rewritten, {len(outcome.expired_snapshots)} snapshots expired"
        + (f", {len(copies)} copies the metadata no longer reached deleted" if copies else "")
        + (
            f", {outcome.details['commits_cleaned']} commits cleaned"
            if "commits_cleaned" in outcome.details
            else ""
        )
        + (f" ({outcome.reason})" if outcome.reason else "")
    )
    log.info("%s", report["summary"])
    return report


# -- Spark jobs -----------------------------------------------------------------------------------------


def spark_outcome(
    ctx: ErasureContext, key: str, claimed: list[Request], storage: Any, result_uri: str
) -> Outcome:
    """The outcome of a Spark dataset's job from its result JSON; then, in a versioned bucket, the
    noncurrent versions under the table location (the job's engine deleted files whose names it does not
    report) are deleted too, and ``check_spark_dataset`` erases what the metadata no longer reaches and
    verifies every object version independently of the job. A job that wrote no result, a result that
    does not check out, or a failed independent check, fails."""
    from dataplatform.gdpr import spark_erasure
    from spark_jobs.common import gdpr_spec

    started = ctx.now()
    subjects = distinct_subjects(claimed)
    if not storage.exists(result_uri):
        return Outcome(FAILED, started, reason="the Spark job wrote no result (it failed: see its task log)")
    try:
        result = spark_erasure.check_result(storage.read_json(result_uri), key, len(subjects))
    except ValueError as exc:
        return Outcome(FAILED, started, reason=f"the Spark job's result: {exc}")
    if result["status"] == gdpr_spec.PINNED_REFS:
        refs = ", ".join(result["pinned_refs"])
        return Outcome(
            PINNED_REFS,
            result["started_at"],
            reason=f"refs {refs} pin snapshots that hold rows of the subjects; the dataset's pinned_refs "
            "policy is 'fail': drop or move them (or set pinned_refs: drop), then rerun",
            details={"pinned_refs": result["pinned_refs"]},
        )
    location = spark_table_location(ctx, key)
    # A file:// table has no object versions.
    versions = objects.delete_noncurrent_versions(ctx.s3, location) if location.startswith("s3://") else 0
    details = {"job_status": result["status"], "noncurrent_versions_deleted": versions}
    if result["format"] == "hudi":
        # Commits whose file slices the cleaner removed (Hudi can no longer read them).
        details["commits_cleaned"] = len(result["verification"]["cleaned"])
    try:
        independent, copies = check_spark_dataset(ctx, key, subjects, location)
    except ErasureError as exc:
        independent, copies, refused = None, {}, str(exc)
    else:
        refused = None
    details |= copies
    passed = refused is None and (independent is None or independent.passed)
    return Outcome(
        VERIFIED if passed else FAILED,
        result["started_at"],
        rows_deleted=result["rows_deleted"],
        rows_by_subject=dict(zip(subjects, result["rows_deleted_by_subject"], strict=True)),
        files_rewritten=result["files_rewritten"],
        commit=result["commit"],
        expired_snapshots=result["expired_snapshots"],
        dropped_refs=result["dropped_refs"],
        verification={
            **(independent.as_dict() if independent else {"passed": passed}),
            "job": result["verification"],
        },
        reason=refused or (None if passed else verification_failure(independent)),
        details=details,
    )


def check_spark_dataset(
    ctx: ErasureContext, key: str, subject_ids: list[str], location: str
) -> tuple[Verification | None, dict[str, Any]]:
    """After a Spark job, in Python: for Iceberg, the copies its metadata no longer reaches are erased as
    on the pyiceberg path (an archive table no dataset covers is refused); then every object version
    under the location is verified. A file:// table cannot be listed: no independent check (None)."""
    dataset = ctx.settings.datasets[key]
    if not location.startswith("s3://"):
        return None, {}
    if dataset.format == "hudi":
        subjects = subject_files.by_column_name(dataset.subject_columns, subject_ids)
        return verify_location(ctx.s3, location, subjects, ctx.settings.workers), {}
    table = ctx.catalog.load_table(dataset.identifier)
    refuse_unconfigured_sharing_tables(ctx.catalog, table, iceberg_identifiers(ctx.settings))
    subjects = SubjectFilter.build(table.schema(), dataset.subject_columns, subject_ids)
    copies = purge_unreachable_copies(table, ctx.catalog, ctx.s3, subjects, ctx.settings.workers)
    return verify_iceberg_table(table, ctx.s3, subjects, ctx.settings.workers), copies.as_details()


def spark_table_location(ctx: ErasureContext, key: str) -> str:
    dataset = ctx.settings.datasets[key]
    if dataset.format == "hudi":
        assert dataset.location is not None
        return dataset.location
    return ctx.catalog.load_table(dataset.identifier).location()
