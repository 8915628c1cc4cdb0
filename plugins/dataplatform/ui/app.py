"""The lake-health FastAPI app, mounted by ``plugins/lake_health_plugin.py`` at ``<base>/lake-health``.

Plugin apps are not protected by Airflow: every route here depends on Airflow's own
``requires_access_dag("GET")``, which authenticates the request the way the REST API does (the JWT in the
``_token`` cookie the UI's login sets, or an ``Authorization: Bearer`` header; none -> 401, an invalid one
-> 403) and then asks the auth manager whether the user may read DAGs (no -> 403).

The figures come from ``dataplatform.health`` (the functions the CLI prints), the last runs from the
metadata database; ``dataplatform.ui.page`` renders them.
"""

from __future__ import annotations

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from dataplatform.ui import page, views

app = FastAPI(
    title="Lake health",
    dependencies=[Depends(requires_access_dag("GET"))],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.get("/", response_class=HTMLResponse)
def lake_health(session: SessionDep) -> str:
    figures = views.read_figures()
    pipelines = views.pipeline_views(figures, latest_runs(session, views.dag_ids(figures)))
    return page.render_page(pipelines, generated_at=figures["generated_at"])


@app.get("/report", response_class=HTMLResponse)
def run_reports(dag_id: str = Query(max_length=250), run_id: str = Query(max_length=250)) -> str:
    try:
        reports = views.read_run_reports(dag_id, run_id)
    except views.UnknownDag:
        raise HTTPException(status_code=404, detail="no such DAG on the lake-health page") from None
    return page.render_reports(dag_id, run_id, reports)


def latest_runs(session, dag_ids: list[str]) -> dict[str, page.LatestRun]:
    """Each DAG's latest run (by ``run_after``); a DAG that never ran has none."""
    from airflow.models.dagrun import DagRun

    runs = {}
    for dag_id in dag_ids:
        row = session.execute(
            select(DagRun.run_id, DagRun.state)
            .where(DagRun.dag_id == dag_id)
            .order_by(DagRun.run_after.desc())
            .limit(1)
        ).first()
        if row:
            runs[dag_id] = page.LatestRun(row.run_id, getattr(row.state, "value", str(row.state)))
    return runs
