"""What a DAG alert says, and how it is sent without ever failing the DAG it reports on.

Three events (``dataplatform.operators.notifiers`` wires them into every DAG): a run failed, a task failed
for good (after its retries), a run succeeded right after a failed one (recovery). Three more come from
the lake's own checks: a DAG run missed its Airflow deadline (``operators.deadlines``), and the hourly
``lake_health`` DAG found a domain deadline passed or saw one clear (``health.open_findings``). A message names the DAG,
the run, the task and its try, the domain summary of the run's reports (``summary`` of each JSON report
under ``reports_uri/<dag_id>/<run_id>/``) and a link to the task's log in the Airflow UI. It never holds
the run's conf, a task's exception or any other payload: what a message may say is built here from named
fields only, and the GDPR subject ids a run was given are redacted from it besides (reports name subjects
by HMAC already, see ``dataplatform.gdpr.subjects``).

No Airflow import: the notifier hands this module plain values and a ``publish`` callable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RUN_FAILED = "run_failed"
TASK_FAILED = "task_failed"
RECOVERED = "recovered"
DEADLINE_MISSED = "deadline_missed"
FINDING = "finding"
FINDING_CLEARED = "finding_cleared"
EVENTS = {
    RUN_FAILED: "run FAILED",
    TASK_FAILED: "task FAILED after its retries",
    RECOVERED: "RECOVERED: first success after a failed run",
    DEADLINE_MISSED: "DEADLINE MISSED",
    FINDING: "FINDING",
    FINDING_CLEARED: "CLEARED",
}
# SNS refuses a subject over 100 characters (and any line break in it).
SUBJECT_LIMIT = 100
# Summary lines quoted in one message: a mapped task group writes one report per table or launch.
MAX_SUMMARY_LINES = 40
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Alert:
    event: str
    env: str
    dag_id: str
    run_id: str
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    max_tries: int | None = None
    log_url: str | None = None
    summaries: list[str] = field(default_factory=list)
    # What the event is about, after its name in the subject: a finding's id, a deadline's name.
    about: str | None = None

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown alert event {self.event!r}, one of {sorted(EVENTS)}")


def subject(alert: Alert) -> str:
    """The SNS subject: one line, at most 100 characters."""
    return _one_line(f"[{alert.env}] {headline(alert)}")[:SUBJECT_LIMIT]


def headline(alert: Alert) -> str:
    """``<dag_id>: <event>`` and, when the alert has one, ``: <about>``."""
    return f"{alert.dag_id}: {EVENTS[alert.event]}" + (f": {alert.about}" if alert.about else "")


def message(alert: Alert) -> str:
    """The alert's text: one ``Key: value`` line each for the DAG, run, task, try and log link, then the
    summaries of the run's reports, indented, each with its own lines."""
    lines = [
        f"{headline(alert)} ({alert.env})",
        f"DAG: {alert.dag_id}",
        f"Run: {alert.run_id}",
    ]
    if alert.task_id:
        mapped = f"[{alert.map_index}]" if alert.map_index is not None and alert.map_index >= 0 else ""
        lines.append(f"Task: {alert.task_id}{mapped}")
    if alert.try_number:
        # max_tries counts the retries; the first try is one more.
        of = f" of {alert.max_tries + 1}" if alert.max_tries is not None else ""
        lines.append(f"Try: {alert.try_number}{of}")
    if alert.log_url:
        lines.append(f"Log: {alert.log_url}")
    lines = [_one_line(line) for line in lines]
    summary = [line.rstrip() for text in alert.summaries for line in text.splitlines() if line.strip()]
    if not summary:
        return "\n".join([*lines, "Summary: (no report written)"])
    shown = summary[:MAX_SUMMARY_LINES]
    more = (
        f"  ... and {len(summary) - len(shown)} more lines in the run's reports"
        if summary[len(shown) :]
        else None
    )
    return "\n".join([*lines, "Summary:", *("  " + line for line in shown), *([more] if more else [])])


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (a subject id the run was given) replaced, longest first."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def conf_secrets(conf: dict[str, Any] | None) -> list[str]:
    """The values of a run's conf that must never be quoted: the GDPR DAG's ``subject_ids``."""
    ids = (conf or {}).get("subject_ids") or []
    return [str(value) for value in ids] if isinstance(ids, list) else [str(ids)]


def summaries(reports: Iterable[dict]) -> list[str]:
    """The ``summary`` of each report that has one."""
    return [str(report["summary"]) for report in reports if report.get("summary")]


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI (when no task is to blame, e.g. a deadlocked run)."""
    from urllib.parse import quote

    return f"{base_url.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id)}"


def is_transient(exc: BaseException) -> bool:
    """A publish worth retrying: throttled, a 5xx answer, or no answer (a connection or read error).
    Refusals (no such topic, not authorised, a bad parameter) would be refused again."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        # botocore's connection and read-timeout errors carry no response.
        return type(exc).__module__.startswith(("botocore", "urllib3", "socket")) or isinstance(exc, OSError)
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status >= 500 or "Throttl" in code or code in {"RequestLimitExceeded", "KMSThrottling"}


def publish_with_retries(
    publish: Callable[[], Any],
    attempts: int,
    what: str,
    delay_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Call ``publish`` up to ``attempts`` times while it fails transiently, ``delay_seconds`` doubling
    between tries. Never raises: a lost alert is logged (with ``what`` it was) and False returned, so an
    alert that cannot be sent never changes the state of the DAG it reports on."""
    for attempt in range(1, attempts + 1):
        try:
            publish()
            return True
        except Exception as exc:  # an alert must never fail the run it reports on
            retry = attempt < attempts and is_transient(exc)
            log.warning(
                "alert %s: publish attempt %d/%d failed (%s: %s)%s",
                what,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
                "; retrying" if retry else "; alert not sent",
            )
            if not retry:
                return False
            sleep(delay_seconds * 2 ** (attempt - 1))
    return False


def _one_line(text: str) -> str:
    return " ".join(text.split())
