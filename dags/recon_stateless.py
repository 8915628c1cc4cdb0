"""Reconciliation, stateless half: claim landed batches and reduce them. Wiring only: see
dataplatform.reconciliation.pipeline and spark_jobs/recon_stateless.py."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from dataplatform.operators.deadlines import dag_deadlines
from dataplatform.operators.notifiers import dag_alerts, task_alerts
from dataplatform.operators.reconciliation import STATELESS_ARTIFACTS, stateless_job
from dataplatform.operators.spark import spark_job_tasks
from dataplatform.task_retries import retry_args

DOC = """
### Reconciliation: stateless reduce

Every 10 minutes: registers the batches whose `_manifest.json` has landed under
`reconciliation.landing_uri` (a batch whose manifest names another `batch_id` than its folder, or that
fails its row count or checksum, is recorded INVALID, never processed), claims pending batches for this run (conditional writes in the DynamoDB ledger: one run per
batch), and reduces them with Spark to one stateless artifact per order (malformed rows go to
`quarantine/` with the reason; redelivered event ids are dropped). A committed group updates the asset
`recon_stateless_artifacts`, which schedules `recon_stateful`.

* **Backlog**: a run claims `backlog.batches_per_run` batches, more when the backlog is long
  (`backlog.growth`, at most `backlog.max_batches_per_run`). Param `max_batches` overrides the limit
  (an integer from 1 to 1000, checked by `setup_tables` before anything is created or registered).
* **Status**: `python -m dataplatform.reconciliation status` (backlog, batches per state, latest
  complete window, INVALID batches with their reasons until `... ack-invalid <batch_id>` acknowledges
  them).

Deadline (README, *Deadlines and data freshness*): a run not finished `health.deadlines.recon_stateless_behind_minutes`
after its scheduled time alerts DEADLINE MISSED: reconciliation is that far behind (0: no deadline).

Alerts (README, *Alerts*): a failed run, a task failed after its retries and the first success after a
failed run are published to `alerts.sns_topic_arn` (empty: logged only).
"""


@dag(
    dag_id="recon_stateless",
    description="Every 10 minutes: claim landed batches of financial events and reduce them.",
    schedule=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    # One group at a time: a group drops the event ids of the groups committed before it.
    max_active_runs=1,
    default_args={
        "owner": "data-platform",
        **retry_args(2, timedelta(minutes=1)),
        **task_alerts(),
    },
    **dag_alerts(),
    # README, *Deadlines and data freshness*: health.deadlines in the config.
    deadline=dag_deadlines("recon_stateless"),
    tags=["reconciliation", "spark"],
    doc_md=DOC,
    params={
        "max_batches": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=1000,
            title="Max batches",
            description="Claim at most this many pending batches (empty: the backlog-driven limit).",
        ),
    },
)
def recon_stateless():
    @task
    def setup_tables(params: dict) -> dict:
        """Check the params (a bad one fails here, before anything is created), then the tables."""
        from dataplatform.operators.reconciliation import check_params, recon_context
        from dataplatform.reconciliation.pipeline import setup_tables

        check_params(params)
        return setup_tables(recon_context())

    @task
    def register_batches() -> dict:
        from dataplatform.operators.reconciliation import recon_context
        from dataplatform.reconciliation.pipeline import register_batches

        result = register_batches(recon_context())
        return {**result, "registered": len(result["registered"])}

    @task.short_circuit
    def plan_stateless(params: dict, run_id: str) -> dict | None:
        """Claim pending batches and write the Spark job spec; skip the rest when none pend."""
        from dataplatform.operators.reconciliation import recon_context
        from dataplatform.reconciliation.pipeline import plan_stateless

        return plan_stateless(recon_context(), run_id, params["max_batches"])

    @task(outlets=[STATELESS_ARTIFACTS])
    def commit_stateless(plan: dict, run_id: str) -> dict:
        """Mark the group READY (the asset event schedules recon_stateful) and report its counts."""
        from dataplatform.operators.reconciliation import recon_context, write_run_report
        from dataplatform.reconciliation.pipeline import commit_stateless, stateless_summary

        stats = commit_stateless(recon_context(), plan["group_id"])
        report = {**plan, "stats": stats, "summary": stateless_summary(plan, stats)}
        write_run_report("recon_stateless", run_id, "commit", report)
        return report

    plan = plan_stateless()
    setup_tables() >> register_batches() >> plan
    plan >> spark_job_tasks(stateless_job()) >> commit_stateless(plan)


recon_stateless()
