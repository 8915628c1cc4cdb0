"""Reconciliation, stateful half: join the stateless artifacts with the prior state and index the result.
Wiring only: see dataplatform.reconciliation.pipeline and spark_jobs/recon_{prefetch,stateful}.py."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task

from dataplatform.config import settings
from dataplatform.operators import assets
from dataplatform.operators.notifiers import dag_alerts, task_alerts
from dataplatform.operators.reconciliation import prefetch_job, stateful_job
from dataplatform.operators.spark import spark_job_tasks
from dataplatform.task_retries import retry_args

DOC = """
### Reconciliation: stateful join and index

Scheduled on the asset of the stateless artifacts (`<work_uri>stateless`, updated by `recon_stateless`). One run takes every READY stateless group:

1. **begin_stateful**: claims the groups, takes the next run number (`seq`) and records which earlier
   runs are not fully indexed yet (in flight).
2. **prefetch** (Spark): looks the touched orders up in the DynamoDB index and reads their current
   artifacts with ranged GETs, neighbouring ranges coalesced into one GET.
3. **process** (Spark), after run `seq-1` has processed: joins prefetched state, the in-flight part files
   and the stateless artifacts; writes a handful of part files, one JSON artifact per line.
4. **index_part_file** (one task per part file), after run `seq-1` has indexed: byte offset and length
   of every artifact into the index, so one artifact can be read alone:
   `python -m dataplatform.reconciliation get <order id>`.

Up to `reconciliation.max_in_flight` runs overlap like an assembly line; the waits keep the result equal
to running them one after another. A rerun of a finished run changes nothing.

Alerts (README, *Alerts*): a failed run, a task failed after its retries and the first success after a
failed run are published to `alerts.sns_topic_arn` (empty: logged only).
"""

_config = settings().reconciliation
_WAIT = {
    "mode": "reschedule",
    "poke_interval": 15,
    "timeout": _config.order_wait_timeout_minutes * 60,
}


@dag(
    dag_id="recon_stateful",
    description="After each stateless run: join its artifacts with the prior state and index the result.",
    schedule=[assets.recon_stateless_artifacts()],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=_config.max_in_flight,
    default_args={
        "owner": "data-platform",
        **retry_args(2, timedelta(minutes=1)),
        **task_alerts(),
    },
    **dag_alerts(),
    tags=["reconciliation", "spark"],
    doc_md=DOC,
)
def recon_stateful():
    @task
    def setup_tables() -> dict:
        """The ledger and index exist (recon_stateless creates them; a manual first run may come first)."""
        from dataplatform.operators.reconciliation import recon_context
        from dataplatform.reconciliation.pipeline import setup_tables

        return setup_tables(recon_context())

    @task.short_circuit(inlets=[assets.recon_ledger()], outlets=[assets.recon_ledger()])
    def begin_stateful(run_id: str) -> dict | None:
        """Claim the READY groups and write the job spec; skip the rest when none is ready."""
        from dataplatform.operators.reconciliation import recon_context
        from dataplatform.reconciliation.pipeline import begin_stateful

        return begin_stateful(recon_context(), run_id)

    @task.sensor(**_WAIT)
    def wait_for_previous_process(run: dict) -> bool:
        from dataplatform.operators.reconciliation import recon_context
        from dataplatform.reconciliation.pipeline import previous_run_reached

        return previous_run_reached(recon_context(), run["seq"], "PROCESSED")

    @task
    def commit_process(run: dict) -> list[str]:
        """Record the part files the process job wrote; they are the indexer's fan-out."""
        from dataplatform.operators.reconciliation import recon_context
        from dataplatform.reconciliation.pipeline import commit_process

        return commit_process(recon_context(), run["seq"])

    @task.sensor(**_WAIT)
    def wait_for_previous_index(run: dict) -> bool:
        from dataplatform.operators.reconciliation import recon_context
        from dataplatform.reconciliation.pipeline import previous_run_reached

        return previous_run_reached(recon_context(), run["seq"], "INDEXED")

    @task(
        map_index_template="{{ part_name }}",
        inlets=[assets.recon_stateful_artifacts()],
        outlets=[assets.recon_index()],
    )
    def index_part_file(part_uri: str, run: dict) -> dict:
        from dataplatform.operators.reconciliation import recon_context
        from dataplatform.reconciliation.pipeline import index_part_file

        get_current_context()["part_name"] = part_uri.rsplit("/", 1)[-1]
        return index_part_file(recon_context(), run["seq"], part_uri)

    @task(outlets=[assets.recon_stateful_artifacts(), assets.recon_ledger()])
    def commit_index(run: dict, part_stats: list[dict], run_id: str) -> dict:
        """Mark the run INDEXED (its batches' windows may now be complete) and write the run report."""
        from dataplatform.operators.reconciliation import recon_context, write_run_report
        from dataplatform.reconciliation.pipeline import commit_index

        report = commit_index(recon_context(), run["seq"], list(part_stats))
        write_run_report("recon_stateful", run_id, "commit", report)
        return report

    run = begin_stateful()
    setup_tables() >> run
    process_turn = wait_for_previous_process(run)
    parts = commit_process(run)
    index_turn = wait_for_previous_index(run)
    indexed = index_part_file.partial(run=run).expand(part_uri=parts)
    prefetch = spark_job_tasks(
        prefetch_job(), inlets=[assets.recon_index(), assets.recon_stateful_artifacts()]
    )
    process = spark_job_tasks(
        stateful_job(),
        inlets=[
            assets.recon_stateless_artifacts(),
            assets.recon_prefetched_state(),
            assets.recon_stateful_artifacts(),
        ],
    )
    run >> prefetch >> process_turn >> process >> parts
    parts >> index_turn >> indexed
    commit_index(run, indexed)


recon_stateful()
