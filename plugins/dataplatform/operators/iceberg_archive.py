"""Airflow side of ``iceberg_archive_register`` (``dataplatform.iceberg.archive``): the three task bodies
(validate, check, register), each turning input errors into ``AirflowFailException`` (no retries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from airflow.sdk.exceptions import AirflowFailException

from dataplatform.config import IcebergSettings, settings
from dataplatform.operators.iceberg import glue_catalog, publish_report

RESTORE_DAYS = 7


def source_identifier(table: Any, config: IcebergSettings) -> str:
    if not isinstance(table, str) or table not in config.tables:
        raise AirflowFailException(
            f"param table must be one of the configured Iceberg tables {sorted(config.tables)}, got {table!r}"
        )
    return config.tables[table].identifier


def validate_request(params: dict) -> dict:
    """Every input check (config, catalog, metadata file, archive name) before anything is changed; the
    validated request, with ``oldest`` / ``previous`` resolved to a URI, for the next tasks."""
    from dataplatform.iceberg.archive import ArchiveError, prepare

    identifier = source_identifier(params.get("table"), settings().iceberg)
    try:
        request = prepare(
            glue_catalog(), identifier, params.get("metadata_file"), params.get("archive_table")
        )
    except ArchiveError as exc:
        raise AirflowFailException(f"bad request: {exc}") from None
    return {"table": params["table"], **request.as_dict()}


def _request(request: dict):
    from dataplatform.iceberg.archive import ArchiveRequest

    return request["table"], ArchiveRequest.from_dict({k: v for k, v in request.items() if k != "table"})


def check_request(context, request: dict) -> dict:
    """HEAD every file the metadata file needs; the report goes to XCom and ``reports_uri`` (with a
    restore manifest next to it when files need a restore). Succeeds whatever it finds: ``register``
    decides."""
    from dataplatform import aws
    from dataplatform.iceberg.archive import NEEDS_RESTORE, ArchiveError, check_files

    table, archive_request = _request(request)
    s3 = aws.client("s3")
    try:
        check = check_files(glue_catalog(), s3, archive_request, workers=settings().iceberg.tag_workers)
    except ArchiveError as exc:
        raise AirflowFailException(str(exc)) from None
    report = {"table": table, **check.report}
    to_restore = check.uris(NEEDS_RESTORE)
    if to_restore:
        report["restore_manifest_uri"] = write_restore_manifest(context, table, to_restore, s3)
    return publish_report(context, table, report, s3)


def register_request(context, request: dict, report: dict) -> dict:
    """Register when the check found every file present; otherwise fail, naming the counts and what to
    do. A rerun on an archive already registered on this file changes nothing."""
    from dataplatform import aws
    from dataplatform.iceberg.archive import ArchiveError, register, release_from_lifecycle

    table, archive_request = _request(request)
    if not report.get("ready"):
        raise AirflowFailException(not_ready_message(report))
    catalog, s3 = glue_catalog(), aws.client("s3")
    try:
        report = register(catalog, archive_request, report)
    except ArchiveError as exc:
        raise AirflowFailException(str(exc)) from None
    policy = settings().iceberg.tables[table]
    report["untagged_files"] = release_from_lifecycle(
        catalog, s3, archive_request.archive, policy.unreferenced.tag.key, settings().iceberg.tag_workers
    )
    return publish_report(context, table, report, s3)


def not_ready_message(report: dict) -> str:
    lines = [f"{report['summary']}."]
    if report.get("needs_restore"):
        sample = report["needs_restore_sample"][0]
        bucket, _, key = sample.removeprefix("s3://").partition("/")
        in_progress = report.get("restore_in_progress", 0)
        lines.append(
            f"{report['needs_restore']} files ({report['bytes_needing_restore']} bytes) are archived in "
            f"GLACIER / DEEP_ARCHIVE and need a restore first ({in_progress} restores already in progress). "
            f"Restore each, e.g. `aws s3api restore-object --bucket {bucket} --key {key} --restore-request "
            f'\'{{"Days": {RESTORE_DAYS}, "GlacierJobParameters": {{"Tier": "Standard"}}}}\'`, or all at once '
            f"with an S3 Batch Operations restore job on the manifest {report.get('restore_manifest_uri')}; "
            "when the restores have completed (hours; `aws s3api head-object` shows "
            '`ongoing-request="false"`), trigger this DAG again with the same params.'
        )
    if report.get("missing") or report.get("unreadable"):
        lines.append(
            f"{report.get('missing', 0)} files are missing and {report.get('unreadable', 0)} unreadable "
            "(named above): a missing file cannot be restored; choose a newer metadata file."
        )
    if not report.get("walk_complete"):
        lines.append(
            f"{report.get('snapshots_not_walked', 0)} snapshots could not be walked (their manifest list or "
            "manifests need a restore or are missing), so their data files are not checked yet: rerun after "
            "restoring to check them."
        )
    lines.append(f"Report: {report.get('report_uri')}")
    return "\n".join(lines)


def write_restore_manifest(context, table: str, uris: list[str], s3) -> str:
    """The archived objects as an S3 Batch Operations manifest (``bucket,key`` CSV, keys URL-encoded),
    written next to the run reports but outside the run's report folder."""
    from dataplatform.reports import report_key

    lines = []
    for uri in uris:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        lines.append(f"{bucket},{quote(key)}")
    key = "restore_manifests/" + report_key(context["dag"].dag_id, context["run_id"], table).removesuffix(
        ".json"
    )
    uri = settings().reports_uri.rstrip("/") + "/" + key + ".csv"
    body = ("\n".join(lines) + "\n").encode()
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        s3.put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=body, ContentType="text/csv")
    else:
        path = Path(parsed.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return uri
