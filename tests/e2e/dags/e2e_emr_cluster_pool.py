"""A Spark job on transient EMR clusters, for tests/e2e/test_emr_cluster_pool_e2e.py only.

The shared e2e stack (`make up`, tests/e2e/conftest.py) runs `spark.backend: local`, as a laptop does;
this DAG is loaded there from a DAG bundle of its own (this folder) and gives one job the AWS path:
``spark_job_tasks`` on backend ``emr`` without a cluster id, so each run creates a transient cluster on
the moto server in the ``emr_transient_clusters`` pool of the stack's config. The job's code is never
read: moto runs no step (the test ends each step as EMR would).

``end_date``: the backfill's days are the only runs (unpaused, the DAG schedules nothing after them).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG

from dataplatform.config import EmrSettings, SparkSettings
from dataplatform.operators.spark import spark_job_tasks
from dataplatform.spark import SparkJob

DAG_ID = "e2e_emr_cluster_pool"
SPARK = SparkSettings(
    backend="emr",
    code_uri="s3://e2e-code/releases/1/",
    # One look a second at the cluster: the test ends each step within seconds.
    emr=EmrSettings(step_timeout_minutes=10, poll_seconds=1),
)

with DAG(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=datetime(2024, 3, 1, tzinfo=UTC),
    end_date=datetime(2024, 3, 8, tzinfo=UTC),
    catchup=False,
    tags=["e2e"],
):
    spark_job_tasks(
        SparkJob(name="profile_day", entry="spark_jobs.partition_profile", args=["{{ ds }}"]), SPARK
    )
