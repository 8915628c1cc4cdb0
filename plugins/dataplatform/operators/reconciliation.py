"""Airflow-facing pieces of the reconciliation pipeline: the asset between the two DAGs, the Spark jobs
and the context the tasks hand to ``dataplatform.reconciliation.pipeline`` (clients from the Airflow
connection). The stages themselves live in the pipeline module."""

from __future__ import annotations

from airflow.sdk import Asset

from dataplatform.spark import SparkJob, SparkSizing

# Updated by every recon_stateless run that committed a group; recon_stateful is scheduled on it.
STATELESS_ARTIFACTS = Asset(name="recon_stateless_artifacts")

# Spark's own shuffle width for the reconciliation jobs; the state part files are sized by config.
_SPARK_CONF = {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false"}


def check_params(params: dict) -> int | None:
    """recon_stateless's params, checked in its first task, before a table is created or a batch
    registered: a bad ``max_batches`` fails the run at once, without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.reconciliation.backlog import check_max_batches

    try:
        return check_max_batches(params.get("max_batches"))
    except ValueError as exc:
        raise AirflowFailException(f"param {exc}") from None


def _recon_job(name: str, entry: str, spec_task: str, sizing: SparkSizing | None = None) -> SparkJob:
    """A reconciliation Spark job; its one argument is the job spec the task ``spec_task`` wrote."""
    return SparkJob(
        name=name,
        entry=entry,
        args=["--spec", f"{{{{ ti.xcom_pull(task_ids='{spec_task}')['spec_uri'] }}}}"],
        conf=_SPARK_CONF,
        sizing=sizing or SparkSizing(),
    )


def stateless_job() -> SparkJob:
    return _recon_job(
        "stateless_reduce", "spark_jobs.recon_stateless", "plan_stateless", SparkSizing(executor_memory="8g")
    )


def prefetch_job() -> SparkJob:
    return _recon_job("prefetch", "spark_jobs.recon_prefetch", "begin_stateful")


def stateful_job() -> SparkJob:
    return _recon_job(
        "process", "spark_jobs.recon_stateful", "begin_stateful", SparkSizing(executor_memory="8g")
    )


def recon_context():
    """The pipeline context for a task: settings, DynamoDB and S3 clients from the Airflow connection,
    and the connection's endpoint for the Spark jobs' specs."""
    from dataplatform import aws
    from dataplatform.config import settings
    from dataplatform.reconciliation.pipeline import ReconContext
    from spark_jobs.common.storage import Storage

    config = settings()
    return ReconContext(
        settings=config.reconciliation,
        dynamodb=aws.client("dynamodb"),
        storage=Storage(aws.client("s3")),
        region=config.aws.region,
        aws_endpoint_url=aws.endpoint_url(),
    )


def write_run_report(dag_id: str, run_id: str, name: str, report: dict) -> str:
    """The run's JSON report under ``reports_uri`` (the UI shows it as the task's XCom too)."""
    from dataplatform import aws
    from dataplatform.config import settings
    from dataplatform.reports import write_run_report

    return write_run_report(settings().reports_uri, dag_id, run_id, name, report, s3=aws.client("s3"))
