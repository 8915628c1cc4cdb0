"""Domain deadlines Airflow cannot see: pure functions from a pipeline's figures (``health.figures``) to
its findings. Thresholds come from the settings (validated at load):

- GDPR: an open request within ``gdpr.alert_days_before_deadline`` of its deadline (warning) or past it
  (failing);
- reconciliation: the first incomplete window, when it ended more than
  ``reconciliation.completeness_sla_minutes`` ago (failing);
- Glue: a table whose newest registered partition ended longer ago than its freshness
  (``health.glue_freshness_minutes``, default two partition periods), or that has none in the lookback;
- Iceberg: a table whose last maintenance is older than two ``health.iceberg_maintenance_period_hours``
  (or that was never maintained);
- pricing: a launch whose pricing failed ``health.pricing_failed_attempts`` times and is still unpriced.

A finding's ``id`` stays the same while the condition holds (the alert-once key of ``open_findings``); its
``summary`` names tables, request and launch ids, never a subject id or a payload.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dataplatform.config import Settings

WARNING, FAILING = "warning", "failing"
# How many maintenance periods a table may go without maintenance.
MAINTENANCE_PERIODS = 2


def finding(
    pipeline: str, kind: str, subject: str, severity: str, dag_id: str, summary: str
) -> dict[str, Any]:
    return {
        "id": f"{pipeline}:{kind}:{subject}",
        "pipeline": pipeline,
        "kind": kind,
        "severity": severity,
        "dag_id": dag_id,
        "summary": summary,
    }


def gdpr_findings(figures: dict[str, Any], config: Settings, now: datetime) -> list[dict[str, Any]]:
    days = config.gdpr.alert_days_before_deadline
    found = []
    for request in figures["urgent"]:
        if request["overdue"]:
            found.append(
                finding(
                    "gdpr",
                    "overdue",
                    request["request_id"],
                    FAILING,
                    "gdpr_erasure",
                    f"GDPR request {request['request_id']} ({request['status']}) is past its deadline "
                    f"{request['deadline']} by {-request['days_left']:.1f} days",
                )
            )
        else:
            found.append(
                finding(
                    "gdpr",
                    "deadline_near",
                    request["request_id"],
                    WARNING,
                    "gdpr_erasure",
                    f"GDPR request {request['request_id']} ({request['status']}) has {request['days_left']:.1f} "
                    f"days left before its deadline {request['deadline']} (alert within {days} days)",
                )
            )
    return found


def reconciliation_findings(figures: dict[str, Any], config: Settings, now: datetime) -> list[dict[str, Any]]:
    window = figures["first_incomplete_window"]
    if window is None:
        return []
    sla = config.reconciliation.completeness_sla_minutes
    late = int((now - datetime.fromisoformat(window["end"])).total_seconds() // 60)
    if late <= sla:
        return []
    return [
        finding(
            "reconciliation",
            "incomplete_window",
            window["start"],
            FAILING,
            "recon_stateless",
            f"reconciliation window {window['start']} .. {window['end']} still incomplete {late} minutes after "
            f"its end (SLA {sla} minutes): {window['reason']}; {figures['incomplete_windows']} incomplete in all",
        )
    ]


def glue_findings(figures: dict[str, Any], config: Settings, now: datetime) -> list[dict[str, Any]]:
    found = []
    for table in figures["tables"]:
        if table["error"]:
            continue  # the page shows it; a table the loader never created is not a freshness finding
        if table["newest_partition"] is None:
            summary = (
                f"Glue table {table['identifier']} has no partition in the last {table['lookback_partitions']} "
                f"{table['granularity']}s"
            )
        elif table["lag_minutes"] > table["freshness_minutes"]:
            summary = (
                f"Glue table {table['identifier']}: newest partition {'/'.join(table['newest_partition'])} ended "
                f"{table['lag_minutes']} minutes ago (expected within {table['freshness_minutes']})"
            )
        else:
            continue
        found.append(finding("glue", "stale", table["table"], FAILING, "glue_partition_loader", summary))
    return found


def iceberg_findings(figures: dict[str, Any], config: Settings, now: datetime) -> list[dict[str, Any]]:
    limit = MAINTENANCE_PERIODS * figures["maintenance_period_hours"]
    found = []
    for table in figures["tables"]:
        hours = table["hours_since_maintenance"]
        if table["error"] or (hours is not None and hours <= limit):
            continue  # an unreadable table is shown with its error (the maintenance run fails on it too)
        since = "never maintained" if hours is None else f"last maintained {table['last_maintenance']}"
        found.append(
            finding(
                "iceberg",
                "maintenance_overdue",
                table["table"],
                FAILING,
                "iceberg_maintenance",
                f"Iceberg table {table['identifier']}: {since} (expected within {limit} hours)",
            )
        )
    return found


def pricing_findings(figures: dict[str, Any], config: Settings, now: datetime) -> list[dict[str, Any]]:
    return [
        finding(
            "pricing",
            "pricing_failed",
            launch["launch_id"],
            FAILING,
            "benchmark_pricing",
            f"launch {launch['launch_id']} failed pricing {launch['attempts']} times "
            f"(alert at {figures['failed_attempts']}): {_short(launch['reason'])}",
        )
        for launch in figures["repeatedly_failed"]
    ]


def _short(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text or "no reason recorded").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
