"""Airflow side of Iceberg maintenance (``dataplatform.iceberg``): request checks, the per-table operator,
and the pyiceberg catalog built from the Airflow AWS connection."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from dataplatform.config import IcebergSettings, Settings, settings
from dataplatform.operators.links import RunReportLink
from dataplatform.operators.params import configured_names


def check_tables(tables: Any, dry_run: Any, config: IcebergSettings) -> list[str]:
    """The configured tables a run covers (``tables`` empty: all), validated before anything is read or
    changed: an unknown name or a bad type fails the task at once, without retries."""
    if not isinstance(dry_run, bool):
        raise AirflowFailException(f"param dry_run must be true or false, got {dry_run!r}")
    return configured_names(tables, config.tables, "tables", "table")


def tables_for_backend(names: list[str], config: IcebergSettings, backend: str) -> list[str]:
    return [name for name in names if config.tables[name].backend == backend]


def glue_catalog():
    """The pyiceberg Glue catalog on the Airflow connection's endpoint (moto locally)."""
    from dataplatform import aws
    from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog

    config = settings()
    key, secret, token = aws.explicit_credentials()
    return load_glue_catalog(AwsAccess(config.aws.region, aws.endpoint_url(), key, secret, token))


def run_clock(context) -> Any:
    """Tag rules are evaluated for the day before the run's logical date (a nightly run tags the day
    that just ended); ages are measured from now."""
    from dataplatform.iceberg.maintenance import RunClock

    logical = context.get("logical_date") or datetime.now(UTC)
    day: date = (logical - timedelta(days=1)).date()
    return RunClock(day=day, now=datetime.now(UTC))


class IcebergMaintenanceOperator(BaseOperator):
    """Maintain one configured Iceberg table with pyiceberg: tags, compaction, expiry, unreferenced files,
    created files, lifecycle rule, orphans. Returns the report, which also lands under ``reports_uri``."""

    template_fields: Sequence[str] = ("table", "dry_run")
    ui_color = "#d7f0e0"
    operator_extra_links = (RunReportLink(),)

    def __init__(self, *, table: str, dry_run: Any = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.dry_run = dry_run

    def execute(self, context) -> dict:
        from dataplatform import aws
        from dataplatform.iceberg.maintenance import MaintenanceContext, MaintenanceError, maintain_table

        config: Settings = settings()
        check_tables([self.table], self.dry_run, config.iceberg)
        policy = config.iceberg.tables[self.table]
        s3 = aws.client("s3")
        ctx = MaintenanceContext(
            catalog=glue_catalog(),
            s3=s3,
            state_root=config.iceberg.state_uri,
            tag_workers=config.iceberg.tag_workers,
            commit_retries=config.iceberg.commit_retries,
        )
        try:
            report = maintain_table(ctx, self.table, policy, run_clock(context), dry_run=self.dry_run)
        except MaintenanceError as exc:  # a missing table or a wrong backend: retrying cannot fix it
            raise AirflowFailException(str(exc)) from None
        return publish_report(context, self.table, report, s3)


def publish_report(context, name: str, report: dict, s3) -> dict:
    from dataplatform.reports import write_run_report

    report["report_uri"] = write_run_report(
        settings().reports_uri, context["dag"].dag_id, context["run_id"], name, report, s3=s3
    )
    return report
