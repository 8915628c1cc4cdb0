"""The task group that erases one ``engine: spark`` GDPR dataset: ``plan`` writes the job spec, the Spark
job runs (Hudi: on a transient EMR cluster, torn down also when the step fails, when the configured
backend is EMR or EMR Serverless, else local ``spark-submit``; Iceberg: on the configured Spark
backend), ``record`` checks the job's result and records progress and audit per request exactly as the
pyiceberg path does (``dataplatform.gdpr.erasure.record_outcome``).

Group ``erase_<dataset>``: ``plan >> gdpr_<dataset> (spark_job_tasks) >> record``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup, TriggerRule, task
from airflow.sdk.exceptions import AirflowSkipException

from dataplatform.config import GdprDataset, SparkSettings, settings
from dataplatform.task_retries import retry_args


def spark_datasets() -> list[str]:
    """Keys of the ``engine: spark`` datasets (read at parse time: one local YAML file, cached)."""
    return [key for key, dataset in settings().gdpr.datasets.items() if dataset.engine == "spark"]


def spark_settings_for(dataset: GdprDataset, configured: SparkSettings) -> SparkSettings:
    """In AWS (``spark.backend`` emr or emr_serverless) Hudi deletes run on their own transient EMR
    cluster (instance fleets, Spot task nodes, ending with its step: ``include/emr/transient_cluster.json``),
    apart from the clusters that ingest, as in the reference. On the local backend they run as local
    ``spark-submit`` with the locked Hudi bundle. Iceberg with ``engine: spark`` uses the configured
    backend."""
    if dataset.format != "hudi" or configured.backend == "local":
        return configured
    return configured.model_copy(
        update={"backend": "emr", "emr": configured.emr.model_copy(update={"cluster_id": None})}
    )


# A local job retried once, soon: the jobs are idempotent (a retry after a kill finishes the purge).
LOCAL_RETRY_DELAY = timedelta(seconds=30)


def group_retries(spark_settings: SparkSettings) -> dict[str, Any]:
    """On EMR no task retries: a retried step would rerun the whole job on a cluster that is being paid
    for, and fail the same way; the requests stay retriable, and the next run starts afresh. Locally a
    retry costs nothing."""
    if spark_settings.backend != "local":
        return {"retries": 0}
    return retry_args(1, LOCAL_RETRY_DELAY, exponential=False)


def spark_erasure_tasks(key: str, accepted: Any, claimed: Any) -> TaskGroup:
    from dataplatform.gdpr import spark_erasure
    from dataplatform.operators import assets
    from dataplatform.operators.spark import spark_job_tasks

    config = settings()
    dataset = config.gdpr.datasets[key]
    spark_settings = spark_settings_for(dataset, config.spark)
    table, specs = assets.gdpr_dataset(key), assets.gdpr_job_specs()
    with TaskGroup(
        group_id=f"erase_{key}",
        tooltip=f"GDPR erasure of {dataset.identifier} with Spark",
        default_args=group_retries(spark_settings),
    ) as group:

        @task(task_id="plan", inlets=[assets.gdpr_requests()], outlets=[specs])
        def plan(accepted: dict, claimed: list[str], run_id: str) -> dict:
            return plan_spark_erasure(key, accepted, claimed, run_id)

        planned = plan(accepted, claimed)
        spec = "{{ ti.xcom_pull(task_ids='" + f"erase_{key}.plan" + "')['spec_uri'] }}"
        job = spark_erasure.spark_job(key, dataset, spec)
        run_job = spark_job_tasks(job, spark_settings, inlets=[specs, table])

        @task(
            task_id="record",
            trigger_rule=TriggerRule.ALL_DONE,
            inlets=[specs],
            outlets=[table, assets.gdpr_requests(), assets.gdpr_audit()],
        )
        def record(planned: dict | None, **context) -> dict:
            return record_spark_erasure(key, planned, context)

        planned >> run_job >> record(planned)
    return group


def plan_spark_erasure(key: str, accepted: dict, claimed: list[str], run_id: str) -> dict:
    """Write the job spec (it holds the subject ids: under the private ``gdpr.work_uri``); skip the group
    when there is nothing to erase or the run leaves the dataset out."""
    from dataplatform import aws
    from dataplatform.gdpr import requests, spark_erasure
    from dataplatform.gdpr.erasure import distinct_subjects
    from spark_jobs.common.storage import Storage

    if key not in accepted["datasets"] or not claimed:
        raise AirflowSkipException(f"{key}: no claimed requests, or the run's datasets leave it out")
    config = settings()
    dynamodb = aws.client("dynamodb")
    subjects = distinct_subjects(requests.get_requests(dynamodb, config.gdpr.requests_table, claimed))
    spec = spark_erasure.build_spec(
        key,
        config.gdpr.datasets[key],
        subjects,
        run_id,
        config.gdpr.work_uri,
        aws.endpoint_url(),
        config.aws.region,
    )
    spec_uri = spark_erasure.spec_uri(config.gdpr.work_uri, key, run_id)
    Storage(aws.client("s3")).write_json(spec_uri, spec)
    return {"spec_uri": spec_uri, "result_uri": spec["result_uri"], "subjects": len(subjects)}


def record_spark_erasure(key: str, planned: dict | None, context: Any) -> dict:
    """Turn the job's result into each request's progress and audit; a job that failed or wrote no
    valid result is recorded as failed (the requests stay retriable). The spec is deleted afterwards."""
    from dataplatform.gdpr import requests
    from dataplatform.gdpr.erasure import record_outcome, spark_outcome
    from dataplatform.operators.gdpr import erasure_context
    from dataplatform.operators.iceberg import publish_report
    from spark_jobs.common.storage import Storage

    if not planned:
        raise AirflowSkipException(f"{key}: nothing was planned")
    ctx = erasure_context(context)
    claimed = requests.get_requests(
        ctx.dynamodb, ctx.settings.requests_table, context["ti"].xcom_pull(task_ids="claim_requests")
    )
    storage = Storage(ctx.s3)
    outcome = spark_outcome(ctx, key, claimed, storage, planned["result_uri"])
    report = record_outcome(ctx, key, claimed, outcome)
    storage.delete(planned["spec_uri"])
    return publish_report(context, key, report, ctx.s3)
