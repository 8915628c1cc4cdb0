"""The ``emr_transient_clusters`` pool holds its cap in a real scheduler: a backfill of more days than the
pool has slots, all runs allowed at once, never has more transient EMR clusters alive than slots.

On the shared `make up` stack (tests/e2e/conftest.py), with the DAG of tests/e2e/dags (its own bundle):
each run's ``run_on_cluster`` creates a cluster on the stack's moto server and waits, deferred, until it
has terminated. moto never ends a step, so ``EmrStepEnder`` plays EMR: it ends each cluster's step a
moment after the cluster appears, and the cluster terminates. What is counted is moto's own record of the
clusters (creation and end times from DescribeCluster), not Airflow's.
"""

from __future__ import annotations

import os

import pytest

from dataplatform.config import settings
from dataplatform.devstack.moto_server import MotoServer
from tests.e2e.airflow_api import (
    dag_parsed,
    dag_runs,
    describe_run,
    most_at_once,
    task_instances,
    wait_for,
    wait_for_run,
)
from tests.moto_helpers import EmrStepEnder

DAG_ID = "e2e_emr_cluster_pool"
DAYS = 4  # runs of the backfill, all allowed at once: twice the local pool's 2 slots
# How long each cluster lives at least: the runs start together, so without the pool their clusters
# would overlap (with the pool taken off, all 4 were alive at once).
HOLD_SECONDS = 3

# Not in `make test`: flaky. In 4 of 6 runs (holds of 3, 10 and 30 s) the scheduler set a deferred or
# just resumed run_on_cluster to failed; its teardown then ended the cluster under the step, or the task's
# own success was refused ("TI was not in the running state"). The one scheduler log kept shows why once:
# "Executor LocalExecutor reported that the task instance ... finished with state success, but the task
# instance's state attribute is running", the LocalExecutor's report of the process that deferred the
# task (same try number) arriving 16 s late, after the task had resumed. That is Airflow's open bug
# apache/airflow#72716 (the scheduler's resume-after-defer guard covers a resumed task that is SCHEDULED
# or QUEUED, not one already RUNNING; fix proposed in apache/airflow#72767, not in 3.3.1 nor 3.3.2, whose
# scheduler_job_runner.py still has the guard for SCHEDULED only). On EMR a cluster lives minutes, far
# longer than that late report; here moto ends it in seconds. The test runs on demand until the fix ships.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("DATAPLATFORM_E2E_EMR_POOL") != "1",
        reason="flaky on a real scheduler (see the module): run with DATAPLATFORM_E2E_EMR_POOL=1",
    ),
]


def test_a_backfill_never_has_more_transient_clusters_alive_than_the_pool_has_slots(running_up_stack):
    stack = running_up_stack
    airflow = stack.airflow_client()
    slots = settings().pools.emr_transient_clusters.slots
    assert slots < DAYS
    moto = MotoServer(port=stack.moto_port)
    emr = _emr_client(moto.url)
    assert not _clusters(emr), "no EMR cluster before the backfill"

    wait_for(lambda: dag_parsed(airflow, DAG_ID), 180, f"{DAG_ID} to be parsed", interval=2.0)
    airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    with EmrStepEnder(moto, emr, "COMPLETED", hold_seconds=HOLD_SECONDS):
        airflow.api(
            "POST",
            "/backfills",
            json={
                "dag_id": DAG_ID,
                "from_date": "2024-03-01T00:00:00Z",
                "to_date": f"2024-03-0{DAYS}T00:00:00Z",
                "run_backwards": False,
                "dag_run_conf": {},
                "reprocess_behavior": "none",
                "max_active_runs": DAYS,
            },
        )
        runs = dag_runs(airflow, DAG_ID, "backfill")
        assert len(runs) == DAYS, runs
        for run in runs:
            finished = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=300)
            assert finished["state"] == "success", describe_run(airflow, DAG_ID, run["dag_run_id"])

    # Every run got its cluster (named after the run), each ended, and no more than `slots` were alive at
    # any instant (moto's creation and end times).
    clusters = _clusters(emr)
    assert sorted(c["Name"] for c in clusters) == sorted(
        f"profile_day ({DAG_ID} {run['dag_run_id']})" for run in runs
    )
    assert {c["Status"]["State"] for c in clusters} == {"TERMINATED"}
    spans = [
        (c["Status"]["Timeline"]["CreationDateTime"], c["Status"]["Timeline"]["EndDateTime"])
        for c in clusters
    ]
    most = most_at_once(spans)
    print(
        f"\nemr_transient_clusters: at most {most} of {len(clusters)} clusters alive at once, {slots} slots"
    )
    assert 1 <= most <= slots, sorted(spans)

    # The pool as configured, deferred tasks counted, and every cluster's task held a slot of it.
    pool = airflow.api("GET", "/pools/emr_transient_clusters")
    assert (pool["slots"], pool["include_deferred"]) == (slots, True)
    held = {
        ti["pool"]
        for run in runs
        for ti in task_instances(airflow, DAG_ID, run["dag_run_id"])
        if ti["task_id"] == "profile_day.run_on_cluster"
    }
    assert held == {"emr_transient_clusters"}


def _emr_client(endpoint_url: str):
    import boto3

    return boto3.client(
        "emr",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _clusters(emr) -> list[dict]:
    """Every cluster moto knows, whatever its state, with its timeline (DescribeCluster)."""
    ids = [c["Id"] for page in emr.get_paginator("list_clusters").paginate() for c in page["Clusters"]]
    return [emr.describe_cluster(ClusterId=cluster_id)["Cluster"] for cluster_id in ids]
