"""Benchmark pricing of finished workflow launches. Wiring only: see dataplatform.pricing and
dataplatform.operators.pricing."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, TriggerRule, dag, task

from dataplatform.operators.deadlines import dag_deadlines
from dataplatform.operators.notifiers import dag_alerts, task_alerts
from dataplatform.task_retries import retry_args

DOC = """
### Benchmark pricing

Every 15 minutes. Prices the genomics workflow launches the workflow manager marked COMPLETE in DynamoDB
`workflow_launches` (status index `by_status`) and writes the cost back onto each launch:

1. **select_launches**: the `launch_ids` of the trigger form (each must exist and be COMPLETE, else the
   run fails here, before anything is written), or up to `pricing.batch_size` COMPLETE launches without
   a `total_cost`, oldest first.
2. **price_launch** (mapped, one per launch): collects what the launch used (Batch jobs -> compute
   environment -> ECS container instances -> EC2 instances with their lifecycle and running interval;
   EBS volumes with size, IOPS and throughput; the FSx for Lustre file system), prices it (On-Demand
   from the Price List API, cached per key across tasks under `pricing.price_cache_uri`; Spot from the
   price history integrated over the run; EBS and FSx per GB-month prorated; per-second billing with a
   60-second minimum) and writes `total_cost`, `instance_cost`, `volume_cost`, `filesystem_cost`,
   `currency`, `price_source`, `price_date` with a conditional update that only succeeds while
   `total_cost` is absent (a rerun or a concurrent run writes nothing). A launch that cannot be priced
   (resources not found, no price for a type) gets `pricing_error` with the reason and is retried by
   the next run: it is never priced at zero.
3. **build_report** (when launches were selected): the run's outcomes and a comparison of the last `pricing.report_period_days` (runs,
   median duration, median cost, cost per run per workflow type and instance family or architecture;
   Graviton against x86 where both ran) as CSV and PNG chart under `reports_uri`, linked from the run's
   JSON report.

Prices come from `pricing.source`: the Price List API in AWS, the snapshot in `include/pricing/` locally.
The CLI prices one launch or an EMR Serverless capacity: `python -m dataplatform.pricing --help`.

Deadline (README, *Deadlines and data freshness*): a run still going `health.deadlines.benchmark_pricing_minutes`
after it was queued alerts DEADLINE MISSED: it is stuck (0: no deadline).

Alerts (README, *Alerts*): a failed run, a task failed after its retries and the first success after a
failed run are published to `alerts.sns_topic_arn` (empty: logged only).
"""


@dag(
    dag_id="benchmark_pricing",
    description="Every 15 minutes: price the workflow launches that finished and record each one's cost.",
    schedule=timedelta(minutes=15),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "data-platform",
        **retry_args(2, timedelta(minutes=2)),
        **task_alerts(),
    },
    **dag_alerts(),
    # README, *Deadlines and data freshness*: health.deadlines in the config.
    deadline=dag_deadlines("benchmark_pricing"),
    tags=["pricing", "benchmark", "genomics"],
    doc_md=DOC,
    params={
        "launch_ids": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1, "maxLength": 256},
            title="Launch ids",
            description="Price these COMPLETE launches instead of the oldest unpriced ones.",
        ),
    },
)
def benchmark_pricing():
    @task
    def select_launches(params: dict) -> list[str]:
        from dataplatform.operators.pricing import select_launches

        return select_launches(params)

    @task(map_index_template="{{ launch_id }}")
    def price_launch(launch_id: str) -> dict:
        from dataplatform.operators.pricing import price_launch

        return price_launch(launch_id)

    # Also after some launches failed for an unexpected reason (the report names them, then fails the
    # run); skipped when nothing was selected or the selection failed.
    @task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
    def build_report(selected: list[str], outcomes: list[dict], **context) -> dict:
        from dataplatform.operators.pricing import build_report

        return build_report(selected, outcomes, context)

    selected = select_launches()
    build_report(selected, price_launch.expand(launch_id=selected))


benchmark_pricing()
