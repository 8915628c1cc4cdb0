"""Pools: which tasks take a slot of which pool (the task that holds the capped thing for its lifetime,
on every Spark backend), and the pool definitions the local stack imports and MWAA receives. That the
scheduler holds a pool's cap, and that the local stack creates the pools and resizes them, is checked in a
real Airflow by tests/e2e/test_glue_partition_loader_e2e.py (glue_api) and
tests/e2e/test_emr_cluster_pool_e2e.py (emr_transient_clusters)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dataplatform.config import CONFIG_DIR, EmrServerlessSettings, EmrSettings, SparkSettings, load_settings
from dataplatform.pools import (
    EMR_TRANSIENT_CLUSTERS,
    GLUE_API,
    SPARK_JOBS,
    pool_bulk_request,
    pool_import_file,
)
from dataplatform.spark import SparkJob

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
JOB = SparkJob(name="job", entry="spark_jobs.recon_stateless", args=[])
CODE_URI = "s3://ops-code/releases/42/"


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def pools_of(tasks) -> dict[str, str]:
    """Task id -> pool, for the tasks outside the default pool."""
    return {task.task_id: task.pool for task in tasks if task.pool != "default_pool"}


def group_pools(spark_settings: SparkSettings) -> dict[str, str]:
    """Every task of one Spark job group on ``spark_settings``' backend -> its pool."""
    from airflow.sdk import DAG

    from dataplatform.operators.spark import spark_job_tasks

    with DAG(dag_id="pools", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        spark_job_tasks(JOB, spark_settings, aws_conn_id="aws_default", region_name="us-east-1")
    return {task.task_id: task.pool for task in dag.tasks}


def test_the_local_dags_put_spark_jobs_and_glue_loads_in_their_pools(dags):
    pooled = {dag_id: pools_of(dag.tasks) for dag_id, dag in dags.items()}
    assert pooled["glue_partition_loader"] == {"load_partitions": GLUE_API}
    spark_tasks = {
        (dag_id, task.task_id)
        for dag_id, dag in dags.items()
        for task in dag.tasks
        if type(task).__name__ == "LocalSparkSubmitOperator"
    }
    # recon (stateless, prefetch, process), the Spark maintenance table, the Spark GDPR datasets.
    assert len(spark_tasks) == 7, spark_tasks
    assert {
        (dag_id, task_id)
        for dag_id, tasks in pooled.items()
        for task_id, pool in tasks.items()
        if pool == SPARK_JOBS
    } == spark_tasks
    assert {pool for tasks in pooled.values() for pool in tasks.values()} == {GLUE_API, SPARK_JOBS}


def test_on_emr_and_emr_serverless_the_task_holding_the_job_takes_the_slot():
    shared_cluster = SparkSettings(backend="emr", code_uri=CODE_URI, emr=EmrSettings(cluster_id="j-1"))
    assert group_pools(shared_cluster) == {"job.run_step": SPARK_JOBS, "job.record_cost": "default_pool"}
    serverless = SparkSettings(
        backend="emr_serverless",
        code_uri=CODE_URI,
        emr_serverless=EmrServerlessSettings(
            application_id="00abc", execution_role_arn="arn:aws:iam::123456789012:role/job"
        ),
    )
    assert group_pools(serverless) == {"job.start_job_run": SPARK_JOBS, "job.record_cost": "default_pool"}


def test_a_transient_cluster_is_held_by_one_task_in_the_cluster_pool():
    """run_on_cluster lives from RunJobFlow to the cluster's termination, deferred while it waits
    (dataplatform.pools); the teardowns take no slot: a terminate waiting for one would leave a cluster."""
    transient = SparkSettings(backend="emr", code_uri=CODE_URI)
    assert group_pools(transient) == {
        "job.run_on_cluster": EMR_TRANSIENT_CLUSTERS,
        "job.terminate_cluster": "default_pool",
        "job.record_cost": "default_pool",
    }


@pytest.mark.parametrize("env", ["local", "aws"])
def test_the_pool_definitions_come_from_the_config_and_fit_airflows_api(env):
    from airflow.api_fastapi.core_api.datamodels.common import BulkBody
    from airflow.api_fastapi.core_api.datamodels.pools import PoolBody

    pools = load_settings(CONFIG_DIR / f"{env}.yaml").pools
    definitions = pool_import_file(pools)
    assert definitions == {
        SPARK_JOBS: {
            "slots": pools.spark_jobs.slots,
            "description": pools.spark_jobs.description,
            # The EMR and EMR Serverless job tasks wait deferred: the wait is the job.
            "include_deferred": True,
        },
        EMR_TRANSIENT_CLUSTERS: {
            "slots": pools.emr_transient_clusters.slots,
            "description": pools.emr_transient_clusters.description,
            # run_on_cluster waits deferred for the cluster's termination: the wait is the cluster.
            "include_deferred": True,
        },
        GLUE_API: {
            "slots": pools.glue_api.slots,
            "description": pools.glue_api.description,
            # A load deferred on _SUCCESS markers makes no Glue call.
            "include_deferred": False,
        },
    }
    # The MWAA body is one request Airflow 3's PATCH /pools accepts: create, or overwrite what exists.
    body = BulkBody[PoolBody].model_validate(pool_bulk_request(pools))
    (action,) = body.actions
    assert (action.action.value, action.action_on_existence.value) == ("create", "overwrite")
    assert {p.pool: (p.slots, p.description, p.include_deferred) for p in action.entities} == {
        name: (d["slots"], d["description"], d["include_deferred"]) for name, d in definitions.items()
    }
