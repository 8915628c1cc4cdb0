"""``python -m dataplatform.gdpr submit --subject-id ID [--request-id R] | status [--request-id R] |
recount-completed [--month YYYY-MM]``.

``submit`` checks the id's format and stores a PENDING request (the same request id again is the same
request: nothing changes); the next ``gdpr_erasure`` run claims it. ``status`` counts requests per status
and lists the open ones (``--json``: as one JSON document), or shows one request with its audit records
(JSON). Neither prints a subject id. ``recount-completed`` sets a month's completed-requests counter (what
the lake-health page shows) from the requests themselves: once, for a table that predates the counter. Standard output carries only the result; logs and errors go to
standard error (``dataplatform.cli``).

AWS clients come from the Airflow connection (``aws_default``), as in the tasks: locally, run it where
``make up`` runs (it prints the connection to export) or inside the Airflow environment.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from dataplatform import cli
from dataplatform.dynamodb import table_must_exist


def _clients():
    from dataplatform import aws
    from dataplatform.config import settings

    return settings().gdpr, aws.client("dynamodb")


def submit_command(out: cli.Output, subject_id: str, request_id: str | None) -> int:
    from dataplatform.gdpr import audit, requests
    from dataplatform.gdpr.subjects import SubjectIdError, check_subject_id

    config, dynamodb = _clients()
    try:
        check_subject_id(subject_id, config.subject_id_pattern)
        # An empty --request-id is a mistake to refuse, not a request for a generated one.
        request_id = requests.check_request_id(
            request_id if request_id is not None else f"req-{uuid.uuid4()}"
        )
    except (SubjectIdError, requests.RequestError) as exc:
        raise cli.CommandError(f"refused: {exc}", exit_code=2) from exc
    requests.create_requests_table(dynamodb, config.requests_table)
    audit.create_audit_table(dynamodb, config.audit_table)
    try:
        request, created = requests.submit_request(
            dynamodb, config.requests_table, request_id, subject_id, datetime.now(UTC), config.deadline_days
        )
    except requests.RequestError as exc:
        raise cli.CommandError(f"refused: {exc}", exit_code=2) from exc
    verb = "submitted" if created else "already submitted"
    out.line(f"{verb}: request {request.request_id}, status {request.status}, deadline {request.deadline}")
    return 0


def status_command(out: cli.Output, request_id: str | None, as_json: bool) -> int:
    from dataplatform.gdpr import requests

    if request_id is not None:
        try:
            requests.check_request_id(request_id)
        except requests.RequestError as exc:
            raise cli.CommandError(f"refused: {exc}", exit_code=2) from exc
    config, dynamodb = _clients()
    with table_must_exist(config.requests_table, requests.CREATED_BY):
        return _show_status(out, config, dynamodb, request_id, as_json)


def _show_status(out: cli.Output, config, dynamodb, request_id: str | None, as_json: bool) -> int:
    from dataplatform.gdpr import audit, requests

    if request_id:
        request = requests.get_request(dynamodb, config.requests_table, request_id)
        if request is None:
            raise cli.CommandError(f"no request {request_id!r} in {config.requests_table}")
        out.json({**request.public(), "audit": audit.records_for(dynamodb, config.audit_table, request_id)})
        return 0
    now = datetime.now(UTC)
    by_status = {
        status: requests.requests_by_status(dynamodb, config.requests_table, status)
        for status in requests.OPEN_STATUSES
    }
    # Completed requests are counted, not listed.
    completed = requests.count_by_status(dynamodb, config.requests_table, requests.COMPLETED)
    if as_json:
        out.json(
            {
                "counts": {
                    **{status: len(found) for status, found in by_status.items()},
                    "COMPLETED": completed,
                },
                "open": [
                    {**request.public(), "overdue": requests.is_overdue(request.deadline, now)}
                    for found in by_status.values()
                    for request in found
                ],
            }
        )
        return 0
    for status, found in by_status.items():
        out.line(f"{status}: {len(found)}")
        for request in found:
            late = "  OVERDUE" if requests.is_overdue(request.deadline, now) else ""
            reason = f"  ({request.reason})" if request.reason else ""
            out.line(
                f"  {request.request_id}  received {request.received_at}  deadline {request.deadline}{late}{reason}"
            )
    out.line(f"{requests.COMPLETED}: {completed}")
    return 0


def recount_command(out: cli.Output, month: datetime) -> int:
    from dataplatform.gdpr import requests

    config, dynamodb = _clients()
    with table_must_exist(config.requests_table, requests.CREATED_BY):
        count = requests.recount_completed(dynamodb, config.requests_table, month)
    out.line(f"{month:%Y-%m}: {count} requests completed")
    return 0


def _month(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a month is YYYY-MM, got {value!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplatform.gdpr")
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="queue an erasure request for one person")
    submit.add_argument("--subject-id", required=True, help="the person's id, as the datasets hold it")
    submit.add_argument(
        "--request-id", help="your ticket id (default: a new uuid); resubmitting it is a no-op"
    )
    status = commands.add_parser("status", help="requests per status, or one request with its audit")
    status.add_argument("--request-id", help="show this request and its audit records (JSON)")
    status.add_argument("--json", action="store_true", help="the counts and open requests as JSON")
    recount = commands.add_parser(
        "recount-completed", help="set a month's completed-requests counter from the requests (UTC)"
    )
    recount.add_argument(
        "--month", type=_month, default=datetime.now(UTC), help="YYYY-MM (default: this month)"
    )
    args = parser.parse_args(argv)
    if args.command == "submit":
        return cli.run(lambda out: submit_command(out, args.subject_id, args.request_id))
    if args.command == "recount-completed":
        return cli.run(lambda out: recount_command(out, args.month))
    return cli.run(lambda out: status_command(out, args.request_id, args.json))


if __name__ == "__main__":
    sys.exit(main())
