"""Airflow side of GDPR erasure (``dataplatform.gdpr``): param checks, the HMAC key from the Airflow
connection, the request claim, the per-dataset erasure and the final outcome of each request."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from dataplatform.config import GdprSettings, settings
from dataplatform.operators.links import RunReportLink
from dataplatform.operators.params import configured_names


def check_datasets(datasets: Any, config: GdprSettings) -> list[str]:
    """The configured datasets a run covers (empty: all); an unknown name fails before any change."""
    return configured_names(datasets, config.datasets, "datasets", "dataset")


def check_subject_ids(subject_ids: Any, config: GdprSettings) -> list[str]:
    """Every id of the ``subject_ids`` param, checked before any is stored. Messages give positions, not
    ids (a mistyped id may still be personal data)."""
    from dataplatform.gdpr.subjects import SubjectIdError, check_subject_id

    if subject_ids in (None, "", []):
        return []
    if not isinstance(subject_ids, list):
        raise AirflowFailException("param subject_ids must be a list of subject ids")
    problems = []
    for position, subject_id in enumerate(subject_ids):
        try:
            check_subject_id(subject_id, config.subject_id_pattern)
        except SubjectIdError as exc:
            problems.append(f"#{position}: {exc}")
    if problems:
        raise AirflowFailException("param subject_ids: " + "; ".join(problems) + " (nothing was submitted)")
    return list(dict.fromkeys(subject_ids))


def hmac_key(conn_id: str) -> bytes:
    """The HMAC key: the password of the Airflow connection (or secrets backend entry) ``conn_id``."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowRuntimeError

    try:
        password = Connection.get(conn_id).password
    except AirflowRuntimeError:
        password = None
    if not password:
        raise AirflowFailException(
            f"the GDPR HMAC key is missing: create the Airflow connection {conn_id!r} (or the secrets "
            "backend entry) with the key as its password"
        )
    return password.encode("utf-8")


def manual_request_id(run_id: str, position: int) -> str:
    """Requests from the trigger form are named after the run: a retried task submits the same ones."""
    from dataplatform.gdpr.requests import check_request_id

    safe = "".join(c if c.isalnum() or c in "_.:-" else "-" for c in run_id)
    return check_request_id(f"{safe[:110]}-{position:04d}")


def accept_requests(params: dict, run_id: str) -> dict:
    """Validate the params (nothing is stored if any is bad), make sure the tables exist, and submit the
    subject ids of the trigger form as requests."""
    from dataplatform import aws
    from dataplatform.gdpr import audit, requests

    config = settings().gdpr
    datasets = check_datasets(params.get("datasets"), config)
    subject_ids = check_subject_ids(params.get("subject_ids"), config)
    dynamodb = aws.client("dynamodb")
    requests.create_requests_table(dynamodb, config.requests_table)
    audit.create_audit_table(dynamodb, config.audit_table)
    now = datetime.now(UTC)
    submitted = []
    for position, subject_id in enumerate(subject_ids):
        request, _ = requests.submit_request(
            dynamodb,
            config.requests_table,
            manual_request_id(run_id, position),
            subject_id,
            now,
            config.deadline_days,
        )
        submitted.append(request.request_id)
    return {"datasets": datasets, "submitted": submitted}


def claim(run_id: str) -> list[str]:
    from dataplatform import aws
    from dataplatform.gdpr import requests

    config = settings().gdpr
    claimed = requests.claim_requests(
        aws.client("dynamodb"),
        config.requests_table,
        run_id,
        config.batch_size,
        datetime.now(UTC),
        timedelta(minutes=config.claim_timeout_minutes),
    )
    return [request.request_id for request in claimed]


def erasure_context(context: Any):
    from dataplatform import aws
    from dataplatform.gdpr.erasure import ErasureContext
    from dataplatform.operators.iceberg import glue_catalog

    config = settings().gdpr
    return ErasureContext(
        settings=config,
        dynamodb=aws.client("dynamodb"),
        s3=aws.client("s3"),
        hmac_key=hmac_key(config.hmac_conn_id),
        run_id=context["run_id"],
        try_number=context["ti"].try_number,
        catalog=glue_catalog(),
    )


class GdprIcebergErasureOperator(BaseOperator):
    """Erase the claimed requests' subjects from one Iceberg dataset with pyiceberg: delete, purge,
    verify, then progress and audit per request. Returns the dataset's report (HMACs, no subject ids)."""

    template_fields: Sequence[str] = ("dataset", "request_ids")
    ui_color = "#f6d5d5"
    operator_extra_links = (RunReportLink(),)

    def __init__(self, *, dataset: str, request_ids: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.request_ids = request_ids

    def execute(self, context) -> dict:
        from dataplatform.gdpr import requests
        from dataplatform.gdpr.erasure import erase_iceberg_dataset
        from dataplatform.operators.iceberg import publish_report

        ctx = erasure_context(context)
        claimed = requests.get_requests(ctx.dynamodb, ctx.settings.requests_table, self.request_ids or [])
        report = erase_iceberg_dataset(ctx, self.dataset, claimed)
        return publish_report(context, self.dataset, report, ctx.s3)


def finish_requests(request_ids: list[str] | None, context: Any) -> dict:
    """Each claimed request COMPLETED (every dataset verified) or FAILED with the reasons; the run's
    report; the task fails when a request did not complete, so the run shows red."""
    from dataplatform import aws
    from dataplatform.gdpr import requests
    from dataplatform.operators.iceberg import publish_report

    if request_ids is None:
        # This task runs whatever happened upstream (to close the requests it can); without a claim there
        # is nothing to close, and the run must still show that a task before it failed.
        raise AirflowFailException("no claim to finish: accept_requests or claim_requests failed")
    config = settings().gdpr
    dynamodb = aws.client("dynamodb")
    now = datetime.now(UTC)
    finished = [
        requests.finish_request(dynamodb, config.requests_table, rid, context["run_id"], config.datasets, now)
        for rid in request_ids
    ]
    report = {
        "requests": [request.public() for request in finished],
        "completed": sum(r.status == requests.COMPLETED for r in finished),
        "failed": sum(r.status == requests.FAILED for r in finished),
    }
    report["summary"] = f"{report['completed']} requests completed, {report['failed']} failed (retriable)"
    publish_report(context, "requests", report, aws.client("s3"))
    if report["failed"]:
        reasons = "; ".join(f"{r.request_id}: {r.reason}" for r in finished if r.status == requests.FAILED)
        raise AirflowFailException(f"{report['summary']}: {reasons}")
    return report
