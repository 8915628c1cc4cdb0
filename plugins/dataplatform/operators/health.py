"""The ``lake_health`` DAG's task: read the lake's figures, alert the findings once and their clearing once,
write the run's report. Domain logic: ``dataplatform.health``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from dataplatform.config import settings

log = logging.getLogger(__name__)


def check_lake_health(run_id: str) -> dict:
    """One hourly check. The config is read (and validated) first: a bad one fails here, naming the key,
    before any AWS call."""
    from dataplatform.health import open_findings
    from dataplatform.health.figures import clients_from_connection, lake_figures
    from dataplatform.operators.notifiers import publish_alert
    from dataplatform.reports import write_run_report

    config = settings()
    clients = clients_from_connection()
    now = datetime.now(UTC)
    table = config.health.findings_table
    open_findings.create_findings_table(clients.dynamodb, table)
    figures = lake_figures(config, clients, now)
    alerted = open_findings.alert_once(
        clients.dynamodb, table, figures["findings"], publish_alert, config.env, run_id, now
    )
    states = {block["pipeline"]: block["state"] for block in figures["pipelines"]}
    report = {
        "summary": f"{alerted['summary']}; state {figures['state']} ("
        + ", ".join(f"{name} {state}" for name, state in states.items())
        + ")",
        "generated_at": figures["generated_at"],
        "state": figures["state"],
        "pipelines": states,
        "errors": {block["pipeline"]: block["error"] for block in figures["pipelines"] if block["error"]},
        "findings": figures["findings"],
        "alerts": alerted,
    }
    report["report_uri"] = write_run_report(
        config.reports_uri, open_findings.DAG_ID, run_id, "lake_health", report, s3=clients.s3
    )
    log.info("%s", report["summary"])
    return report
