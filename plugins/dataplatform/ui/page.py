"""The lake-health page's HTML from the health figures (``dataplatform.health``) and each DAG's last run.

No Airflow import: the app (``dataplatform.ui.app``) reads the figures and the runs, this module only
renders them, with Jinja's autoescaping (names, states and figures come from data). Every URL is relative
to the page, served at ``<base>/lake-health/``: ``../dags/<dag_id>`` is Airflow's DAG page under any
base_url path prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

from dataplatform.ui.chart import BarChart

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True)
class LatestRun:
    """A DAG's latest run, as Airflow's metadata database has it."""

    run_id: str
    state: str


@dataclass(frozen=True)
class RunLinks:
    """A DAG with its latest run and the run that wrote its newest report, as links relative to the page."""

    dag_id: str
    latest: LatestRun | None = None
    report_run_id: str | None = None

    @property
    def dag_href(self) -> str:
        return f"../dags/{quote(self.dag_id, safe='')}"

    @property
    def run_href(self) -> str:
        return f"{self.dag_href}/runs/{quote(self.latest.run_id, safe='')}" if self.latest else ""

    @property
    def report_href(self) -> str:
        return report_href(self.dag_id, self.report_run_id) if self.report_run_id else ""


def report_href(dag_id: str, run_id: str, prefix: str = "") -> str:
    """The page's view of a run's reports (``prefix`` = the way from where the link is shown to the page)."""
    return f"{prefix}report?{urlencode({'dag_id': dag_id, 'run_id': run_id})}"


@dataclass(frozen=True)
class PipelineView:
    name: str
    title: str
    state: str
    figures: dict[str, Any]
    runs: list[RunLinks] = field(default_factory=list)
    chart: BarChart | None = None


def render_page(pipelines: list[PipelineView], generated_at: str) -> str:
    return _TEMPLATES.get_template("lake_health.html").render(
        pipelines=pipelines, generated_at=generated_at, label=label, show=show
    )


def render_reports(dag_id: str, run_id: str, reports: list[dict]) -> str:
    return _TEMPLATES.get_template("report.html").render(
        dag_id=dag_id,
        run_id=run_id,
        dag_href=RunLinks(dag_id).dag_href,
        reports=[json.dumps(report, indent=2, sort_keys=True, default=str) for report in reports],
    )


# Figure names whose plain spelling would read badly.
LABELS = {
    "cost_usd": "Cost (USD)",
    "lag_minutes": "Lag (minutes)",
    "freshness_minutes": "Expected within (minutes)",
    "hours_since_maintenance": "Hours since",
    "days_left": "Days left",
}


def label(key: str) -> str:
    """``unreferenced_bytes`` -> ``Unreferenced bytes``."""
    if key in LABELS:
        return LABELS[key]
    text = str(key).replace("_", " ")
    return text[:1].upper() + text[1:]


def show(value: Any) -> str:
    """A figure as the page shows it: integers in full, other numbers to two decimals, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
