"""Extra links from a task to what it produced: its run's reports, the Glue table, the EMR cluster or
EMR Serverless job run.

In Airflow 3 the worker calls each link's ``get_link`` when the task ends and stores the URL in XCom
(key ``_link_<class name>``); the UI's task page reads it from there, so a link never needs the DAG code
at display time. A task that produced nothing (it failed before, or ran nothing) gets an empty link,
which the UI hides.

The report link is relative (``lake-health/report?...``): the UI resolves it against its base URL, so it
opens the lake-health page's view of the run's reports behind any path prefix. The others open the AWS
console in the configured region.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from dataplatform.config import settings
from dataplatform.ui.page import report_href

# Where plugins/lake_health_plugin.py mounts the page, relative to the UI's base URL.
LAKE_HEALTH_PAGE = "lake-health/"


def _return_value(ti_key) -> Any:
    return XCom.get_value(ti_key=ti_key, key="return_value")


def _console(region: str, path: str) -> str:
    return f"https://{region}.console.aws.amazon.com/{path}"


class RunReportLink(BaseOperatorLink):
    """The lake-health page's view of the reports of the task's run, once the task wrote one."""

    name = "Run report"

    def get_link(self, operator, *, ti_key) -> str:
        report = _return_value(ti_key)
        if not isinstance(report, dict) or not report.get("report_uri"):
            return ""
        return report_href(ti_key.dag_id, ti_key.run_id, prefix=LAKE_HEALTH_PAGE)


class GlueTableLink(BaseOperatorLink):
    """The Glue table the task registered partitions in (its report names the configured table)."""

    name = "Glue table"

    def get_link(self, operator, *, ti_key) -> str:
        report = _return_value(ti_key)
        config = settings()
        spec = config.glue.tables.get(report.get("table")) if isinstance(report, dict) else None
        if spec is None:
            return ""
        region = config.aws.region
        return _console(
            region,
            f"glue/home?region={region}#/v2/data-catalog/tables/view/{quote(spec.table, safe='')}"
            f"?database={quote(spec.database, safe='')}",
        )


class EmrJobLink(BaseOperatorLink):
    """The EMR cluster (``backend='emr'``) or EMR Serverless job run the task's cost record is about."""

    name = "EMR job"

    def get_link(self, operator, *, ti_key) -> str:
        region = operator.region_name
        if operator.backend == "emr":
            cluster_id = operator.cluster_id  # rendered: the run_on_cluster XCom or the configured id
            if not cluster_id:
                return ""
            return _console(region, f"emr/home?region={region}#/clusterDetails/{quote(str(cluster_id))}")
        record = _return_value(ti_key)
        resource = record.get("resource_id", "") if isinstance(record, dict) else ""
        if "/" not in resource:
            return ""
        application_id, job_run_id = resource.split("/", 1)
        return _console(
            region,
            f"emr/home?region={region}#/serverless-applications/{quote(application_id)}"
            f"/job-runs/{quote(job_run_id)}",
        )
