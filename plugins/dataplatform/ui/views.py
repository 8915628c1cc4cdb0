"""What the lake-health page shows, read from the lake: the health figures per pipeline
(``dataplatform.health.figures``, the functions ``python -m dataplatform.health status`` prints: one
source of truth), picked and shaped for the page, and a run's reports.

No Airflow import; the app adds each DAG's latest run from the metadata database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from dataplatform.config import settings
from dataplatform.ui.chart import BarChart, bar_chart
from dataplatform.ui.page import PipelineView, RunLinks

# Per pipeline, the figures shown as a list (in this order) and the tables shown with these columns.
HEADLINES = {
    "reconciliation": (
        "backlog",
        "latest_complete_window",
        "complete_through",
        "incomplete_windows",
        "invalid_batches",
    ),
    "gdpr": ("open", "overdue", "due_soon", "completed_this_month"),
    "iceberg": (),
    "glue": (),
    "pricing": (),
}
# Pricing's figures over the last 7 days.
PRICING_WEEK = ("launches_priced", "cost_usd", "unpriced", "pricing_errors")
TABLES = {
    "gdpr": {"urgent": ("request_id", "status", "deadline", "days_left", "overdue")},
    "iceberg": {
        "tables": (
            "table",
            "snapshots",
            "unreferenced_files",
            "unreferenced_bytes",
            "last_maintenance",
            "hours_since_maintenance",
            "error",
        )
    },
    "glue": {"tables": ("table", "newest_partition", "lag_minutes", "freshness_minutes", "error")},
    "pricing": {"repeatedly_failed": ("launch_id", "attempts", "reason")},
}


class UnknownDag(LookupError):
    """A report was asked for a DAG the page does not show."""


def read_figures() -> dict[str, Any]:
    from dataplatform.health.figures import clients_from_connection, lake_figures

    return lake_figures(settings(), clients_from_connection(), datetime.now(UTC))


def dag_ids(figures: dict[str, Any]) -> list[str]:
    return [dag_id for block in figures["pipelines"] for dag_id in block["dag_ids"]]


def pipeline_views(figures: dict[str, Any], runs: dict[str, RunLinks]) -> list[PipelineView]:
    """One view per pipeline block: its headline figures and tables, its findings, each DAG with its
    latest run (``runs``, from Airflow) and the run whose report is the newest (from the block)."""
    return [_view(block, runs) for block in figures["pipelines"]]


def _view(block: dict[str, Any], runs: dict[str, RunLinks]) -> PipelineView:
    name = block["pipeline"]
    figures = block["figures"]
    shown: dict[str, Any] = {key: _shown(figures.get(key)) for key in HEADLINES.get(name, ())}
    if name == "pricing" and figures:
        shown.update({key: figures["week"][key] for key in PRICING_WEEK})
    for key, columns in TABLES.get(name, {}).items():
        shown[key] = [
            {column: _shown(row.get(column)) for column in columns} for row in figures.get(key) or []
        ]
    if block.get("error"):
        shown["error"] = block["error"]
    shown["findings"] = [f"{item['severity']}: {item['summary']}" for item in block["findings"]]
    reported = {run["dag_id"]: run["run_id"] for run in block["last_runs"]}
    return PipelineView(
        name=name,
        title=block["title"],
        state=block["state"],
        figures=shown,
        runs=[RunLinks(dag_id, runs.get(dag_id), reported.get(dag_id)) for dag_id in block["dag_ids"]],
        chart=comparison_chart(figures.get("comparison")) if name == "pricing" else None,
    )


def comparison_chart(comparison: dict[str, Any] | None) -> BarChart | None:
    """The pricing comparison as bars: cost per run of each (workflow type, instance group)."""
    if not comparison or not comparison.get("groups"):
        return None
    series = [
        (
            f"{group['workflow_type']} · {group['group']}",
            _number(group["cost_per_run_usd"]),
            str(group["cost_per_run_usd"]),
        )
        for group in comparison["groups"]
    ]
    start, end = comparison["period"]["start"][:10], comparison["period"]["end"][:10]
    return bar_chart(f"Cost per run (USD), {start} to {end}", series)


def _shown(value: Any) -> Any:
    """Lists of plain values (a window, a partition's values) as one string."""
    if isinstance(value, list) and all(not isinstance(item, dict | list) for item in value):
        return " / ".join(str(item) for item in value)
    return value


def _number(text: Any) -> float:
    try:
        return float(Decimal(str(text)))
    except (InvalidOperation, ValueError):
        return 0.0


def read_run_reports(dag_id: str, run_id: str) -> list[dict]:
    """The reports one run wrote; only for the page's DAGs (the key is built from the ids)."""
    from dataplatform import aws
    from dataplatform.health.figures import DAG_IDS
    from dataplatform.reports import run_reports

    if not any(dag_id in dags for dags in DAG_IDS.values()):
        raise UnknownDag(dag_id)
    return run_reports(settings().reports_uri, dag_id, run_id, s3=aws.client("s3"))
