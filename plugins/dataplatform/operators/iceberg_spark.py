"""Airflow side of the Spark backend of Iceberg maintenance (``dataplatform.iceberg.spark_sql``): one
TaskGroup per ``backend: spark`` table, ``spark_<table>``:

- ``plan``: checks the run's params (``check_tables``), skips the group when the table is not selected,
  writes the job spec next to the run's reports and returns its URI;
- ``iceberg_<table>``: ``spark_job_tasks`` of ``spark_jobs/iceberg_maintenance.py`` on the configured
  Spark backend (a transient EMR cluster, an existing one, or EMR Serverless), with the catalog's conf;
- ``finish``: reads the job's report, makes sure of the lifecycle rule and publishes the run's report
  (XCom and ``<reports_uri><dag>/<run>/<table>.json``, like the pyiceberg tables').

The groups are built at parse time from ``settings()`` (one local YAML read, cached per process).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from airflow.sdk import TaskGroup, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dataplatform.config import IcebergSettings, IcebergTablePolicy, settings
from dataplatform.iceberg import spark_sql
from dataplatform.operators import assets
from dataplatform.operators.iceberg import check_tables, publish_report, run_clock
from dataplatform.operators.spark import spark_job_tasks
from dataplatform.spark import SparkJob, SparkSizing

log = logging.getLogger(__name__)

# The key becomes part of task group ids and of the EMR step name.
_TABLE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
# The driver receives remove_orphan_files' orphan list and expire_snapshots' streamed paths.
SIZING = SparkSizing(driver_memory="4g")


def spark_tables(config: IcebergSettings | None = None) -> list[str]:
    """The configured tables maintained with Spark, in config order."""
    config = config or settings().iceberg
    return [name for name, policy in config.tables.items() if policy.backend == "spark"]


def group_id(table_key: str) -> str:
    if not _TABLE_KEY.match(table_key):
        raise ValueError(
            f"iceberg.tables key {table_key!r} cannot name a task group: use letters, digits, '_' or '-'"
        )
    return f"spark_{table_key}"


def maintenance_job(table_key: str, policy: IcebergTablePolicy, plan_task_id: str) -> SparkJob:
    """The Spark job of one table; its one argument is the spec the task ``plan_task_id`` wrote."""
    return SparkJob(
        name=f"iceberg_{table_key}",
        entry=spark_sql.JOB_ENTRY,
        args=["--spec", f"{{{{ ti.xcom_pull(task_ids='{plan_task_id}')['spec_uri'] }}}}"],
        conf=spark_sql.spark_conf(policy),
        sizing=SIZING,
    )


def spark_maintenance_tasks(table_key: str) -> TaskGroup:
    """``plan >> <Spark job tasks> >> finish`` for one ``backend: spark`` table (call in a DAG context)."""
    policy = settings().iceberg.tables[table_key]
    gid = group_id(table_key)
    table = assets.iceberg_table(policy.database, policy.table)
    with TaskGroup(
        group_id=gid, tooltip=f"Iceberg maintenance of {policy.identifier} with Spark procedures"
    ) as group:

        @task.short_circuit(task_id="plan", inlets=[table])
        def plan(params: dict) -> dict | None:
            """Write the job spec; skip the group when the run does not cover this table."""
            return plan_run(table_key, params, get_current_context())

        @task(task_id="finish", outlets=[table])
        def finish(planned: dict) -> dict:
            """Lifecycle rule and the run's report from the job's report."""
            return finish_run(table_key, planned, get_current_context())

        planned = plan()
        job = maintenance_job(table_key, policy, f"{gid}.plan")
        planned >> spark_job_tasks(job, inlets=[table]) >> finish(planned)
    return group


def plan_run(table_key: str, params: dict, context: Any) -> dict | None:
    from dataplatform import aws
    from dataplatform.reports import report_key
    from spark_jobs.common.storage import Storage, join

    config = settings()
    selected = check_tables(params.get("tables"), params.get("dry_run"), config.iceberg)
    if table_key not in selected:
        log.info("table %s is not among this run's tables %s: skipping its Spark job", table_key, selected)
        return None
    policy = config.iceberg.tables[table_key]
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    spec_uri = join(config.reports_uri, report_key(dag_id, run_id, f"{table_key}.spark_spec"))
    report_uri = join(config.reports_uri, report_key(dag_id, run_id, f"{table_key}.spark_job"))
    try:
        spec = spark_sql.build_spec(
            table_key,
            policy,
            run_clock(context),
            params["dry_run"],
            report_uri,
            region=config.aws.region,
            aws_endpoint_url=aws.endpoint_url(),
        )
    except ValueError as exc:  # a policy the Spark procedures cannot carry out: retrying will not help
        raise AirflowFailException(str(exc)) from None
    storage = Storage(aws.client("s3"))
    # The report of an earlier attempt must not pass for this attempt's.
    storage.delete(report_uri)
    storage.write_json(spec_uri, spec)
    log.info(
        "%s: spec %s (dry_run=%s, tags due %s, expire older than %s retaining %d, orphans older than %s)",
        policy.identifier,
        spec_uri,
        spec["dry_run"],
        [tag["name"] for tag in spec["tags"]] or "none",
        spec["expire"]["older_than"],
        spec["expire"]["retain_last"],
        spec["orphans"]["older_than"],
    )
    return {"spec_uri": spec_uri, "report_uri": report_uri, "dry_run": spec["dry_run"]}


def finish_run(table_key: str, planned: dict, context: Any) -> dict:
    from dataplatform import aws
    from spark_jobs.common.storage import Storage

    policy = settings().iceberg.tables[table_key]
    s3 = aws.client("s3")
    storage = Storage(s3)
    if not storage.exists(planned["report_uri"]):
        raise AirflowException(
            f"the Spark job of {policy.identifier} succeeded but wrote no report at {planned['report_uri']}"
        )
    job_report = storage.read_json(planned["report_uri"])
    lifecycle = spark_sql.ensure_lifecycle(s3, aws.client("glue"), policy, planned["dry_run"])
    report = spark_sql.final_report(table_key, policy, job_report, lifecycle)
    report["job_report_uri"] = planned["report_uri"]
    report["spec_uri"] = planned["spec_uri"]
    log.info("%s", report["summary"])
    return publish_report(context, table_key, report, s3)
