"""The Airflow pools of the platform: what each one caps, and its definition from the config.

An Airflow pool caps the task instances that hold one of its slots at once (running, plus deferred when
the pool counts deferred tasks). So a pool caps a thing only when one task lives exactly as long as it:

- ``spark_jobs``: the task that runs a Spark job from its start to its end holds the slot: the local
  ``spark_submit`` (the process lives inside the task), ``start_job_run`` on EMR Serverless and ``run_step``
  on the configured long-lived EMR cluster (both deferred while the job runs, so the pool counts deferred
  tasks). At most ``slots`` Spark jobs run at once across every DAG, backfills included.
- ``emr_transient_clusters``: ``run_on_cluster``, the task that creates a transient EMR cluster with the
  job's step in its RunJobFlow request (the cluster ends with the step) and waits, deferred, until the
  cluster has terminated: the task lives as long as the cluster, so at most ``slots`` transient clusters
  are billed at once, and a 90-day backfill creates the next cluster only when one has ended. The deferred
  wait is the cluster's life, so deferred tasks keep their slot. Not ``spark_jobs``: a cluster is a
  different, larger bill (and account quota: instances, vCPUs) than a step on a shared cluster.
- ``glue_api``: ``load_partitions`` (one task per table and run), whose work is Glue Data Catalog calls
  (GetPartitions pages, BatchCreatePartition); account-wide Glue quotas are what a 90-day backfill would
  exhaust. Its deferred wait for ``_SUCCESS`` markers calls no Glue API, so deferred tasks hold no slot.

No pool for Iceberg commits: commits conflict per table, not across tables, and a pool caps across all
of them; the writers re-plan a conflicting commit (``commit_retries``) and each DAG that commits to a table
runs one run at a time (``max_active_runs=1``).

This module imports no Airflow: the devstack builds the pools from it before Airflow runs.
"""

from __future__ import annotations

from dataplatform.config import PoolSettings

SPARK_JOBS = "spark_jobs"
EMR_TRANSIENT_CLUSTERS = "emr_transient_clusters"
GLUE_API = "glue_api"

# Whether a deferred task keeps its slot: yes where the deferred wait IS the thing capped.
_INCLUDE_DEFERRED = {SPARK_JOBS: True, EMR_TRANSIENT_CLUSTERS: True, GLUE_API: False}


def pool_import_file(pools: PoolSettings) -> dict[str, dict]:
    """The pools as ``airflow pools import`` reads them: name -> slots, description, include_deferred."""
    return {
        name: {
            "slots": spec.slots,
            "description": spec.description,
            "include_deferred": _INCLUDE_DEFERRED[name],
        }
        for name, spec in pools
    }


def pool_bulk_request(pools: PoolSettings) -> dict:
    """The same pools as one request to Airflow 3's REST API (``PATCH /api/v2/pools``): created, or
    overwritten (resized) when they exist. MWAA has no shell: ``aws mwaa invoke-rest-api`` sends it."""
    return {
        "actions": [
            {
                "action": "create",
                "action_on_existence": "overwrite",
                "entities": [{"name": name, **spec} for name, spec in pool_import_file(pools).items()],
            }
        ]
    }
