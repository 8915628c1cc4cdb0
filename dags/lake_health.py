"""The lake's domain deadlines, checked hourly. Wiring only: see dataplatform.health and
dataplatform.operators.health."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from dataplatform.operators.notifiers import dag_alerts, task_alerts
from dataplatform.task_retries import retry_args

DOC = """
### Lake health

Every hour: reads the figures of every pipeline (the ones the lake-health page shows and
`python -m dataplatform.health status` prints) and checks the deadlines Airflow cannot see:

* GDPR requests within `gdpr.alert_days_before_deadline` days of their deadline (warning) or past it;
* reconciliation windows still incomplete `reconciliation.completeness_sla_minutes` after their end;
* Glue tables whose newest registered partition is older than `health.glue_freshness_minutes` (per
  table; default two partition periods);
* Iceberg tables not maintained for two `health.iceberg_maintenance_period_hours`;
* launches whose pricing failed `health.pricing_failed_attempts` times.

Each finding alerts once (SNS topic `alerts.sns_topic_arn`, subject `lake_health: FINDING: <id>`), and
once more when it clears (`lake_health: CLEARED: <id>`): the open findings are kept in the DynamoDB table
`health.findings_table`. The run's report (every finding, each pipeline's state) is under
`reports_uri/lake_health/<run_id>/lake_health.json`.

Alerts (README, *Alerts*): a failed run, a task failed after its retries and the first success after a
failed run are published to `alerts.sns_topic_arn` (empty: logged only).
"""


@dag(
    dag_id="lake_health",
    description="Hourly: the lake's domain deadlines and data freshness; each finding alerts once.",
    schedule=CronTriggerTimetable("5 * * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    # Two checks at once would race for the same findings (the conditional writes keep them apart).
    max_active_runs=1,
    default_args={"owner": "data-platform", **retry_args(2, timedelta(minutes=1)), **task_alerts()},
    **dag_alerts(),
    tags=["health"],
    doc_md=DOC,
)
def lake_health():
    @task
    def check_and_alert(run_id: str | None = None) -> dict:
        """Figures, findings, one alert per new finding and per cleared one, the run's report."""
        from dataplatform.operators.health import check_lake_health

        return check_lake_health(run_id)

    check_and_alert()


lake_health()
