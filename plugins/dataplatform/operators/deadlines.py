"""Airflow 3 Deadline Alerts on the scheduled DAGs, from ``health.deadlines`` in the config.

- ``iceberg_maintenance``: the nightly run finished within N minutes of its scheduled time (its logical
  date: the cron trigger's time);
- ``recon_stateless``: a run not finished N minutes after its scheduled time: the pipeline is N minutes
  behind;
- ``benchmark_pricing``: a run still going N minutes after it was queued is stuck.

The scheduler records each run's deadline when the run is created (queued, for the last) and, once it
passes with the run unfinished, queues the callback to the triggerer: ``deadline_missed`` sends a
DEADLINE MISSED alert through the one alert path (``notifiers.publish_alert``). A run that finishes in
time has its deadline deleted. 0 minutes in the config: no deadline on that DAG.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from dataplatform import alerts
from dataplatform.config import settings

log = logging.getLogger(__name__)

# dag_id -> (the health.deadlines key with its minutes, what the deadline counts from, what a miss means)
DEADLINES: dict[str, tuple[str, Any, str]] = {
    "iceberg_maintenance": (
        "iceberg_maintenance_minutes",
        DeadlineReference.DAGRUN_LOGICAL_DATE,
        "nightly maintenance not finished {minutes} minutes after its scheduled time",
    ),
    "recon_stateless": (
        "recon_stateless_behind_minutes",
        DeadlineReference.DAGRUN_LOGICAL_DATE,
        "reconciliation more than {minutes} minutes behind: a run not finished {minutes} minutes after "
        "its scheduled time",
    ),
    "benchmark_pricing": (
        "benchmark_pricing_minutes",
        DeadlineReference.DAGRUN_QUEUED_AT,
        "pricing run stuck: not finished {minutes} minutes after it was queued",
    ),
}


def dag_deadlines(dag_id: str) -> list[DeadlineAlert]:
    """The ``deadline=`` of ``@dag(...)`` for ``dag_id`` (empty when its minutes are 0)."""
    key, reference, meaning = DEADLINES[dag_id]
    minutes = getattr(settings().health.deadlines, key)
    if not minutes:
        return []
    return [
        DeadlineAlert(
            reference=reference,
            interval=timedelta(minutes=minutes),
            callback=AsyncCallback(deadline_missed, kwargs={"meaning": meaning.format(minutes=minutes)}),
            name=f"{dag_id}_{key}",
        )
    ]


async def deadline_missed(meaning: str, context: dict[str, Any] | None = None) -> bool:
    """The callback the triggerer runs when a run missed its deadline (``context``: the run as the
    scheduler describes it, ``dag_run`` and ``deadline``). The publish blocks, so it runs in a thread: from
    there the triggerer's channel to its supervisor still answers the AWS connection lookup (Airflow 3.3's
    ``TriggerCommsDecoder.send`` bridges a foreign thread to its loop)."""
    return await asyncio.to_thread(send_deadline_alert, meaning, context or {})


def send_deadline_alert(meaning: str, context: dict[str, Any]) -> bool:
    """Build and send the DEADLINE MISSED alert; never raises (an alert must not break the triggerer)."""
    from dataplatform.operators.notifiers import publish_alert, ui_base_url

    try:
        run = context.get("dag_run") or {}
        deadline = context.get("deadline") or {}
        dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id") or run.get("run_id", "?")
        alert = alerts.Alert(
            event=alerts.DEADLINE_MISSED,
            env=settings().env,
            dag_id=dag_id,
            run_id=run_id,
            about=meaning.split(":")[0],
            log_url=alerts.run_url(ui_base_url(), dag_id, run_id),
            summaries=[
                f"{meaning}; deadline {deadline.get('deadline_time')}, run state {run.get('state')}, "
                f"queued at {run.get('queued_at')}"
            ],
        )
        return publish_alert(alert)
    except Exception:  # logged, never raised
        log.exception("deadline alert not sent: building it failed")
        return False
