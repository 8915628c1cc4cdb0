"""Airflow operator around the Glue partition loader (``dataplatform.glue.loader``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.hooks.athena import AthenaHook
from airflow.providers.amazon.aws.hooks.glue_crawler import GlueCrawlerHook
from airflow.providers.amazon.aws.triggers.s3 import S3KeyTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.bases.operator import partial as operator_partial
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dataplatform import aws
from dataplatform.config import GlueTable, Settings, settings
from dataplatform.glue import discovery, events, loader
from dataplatform.glue.layout import PartitionLayout
from dataplatform.operators.links import GlueTableLink, RunReportLink
from dataplatform.pools import GLUE_API
from dataplatform.reports import write_run_report

MODES = loader.ALL_MODES


def check_request(table: str | None, mode: str, dry_run: Any, config: Settings) -> list[str]:
    """``loader.validate_request`` for tasks: a bad param fails the task at once, without retries,
    since retrying cannot fix it."""
    try:
        return loader.validate_request(table, mode, dry_run, config)
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from None


def run_mode(requested: str, spec: GlueTable) -> str:
    """What a run does for one table: ``interval`` (the default, and the schedule's) means each table's
    own way, which for a table with ``mode: events`` is draining its queue."""
    return loader.EVENTS if requested == "interval" and spec.mode == loader.EVENTS else requested


def ensure_event_queues(tables: list[str], mode: str, config: Settings) -> list[dict]:
    """The setup of the selected tables that this run drains from a queue: their queue and the bucket
    notification that feeds it (idempotent; other notifications of the bucket are kept)."""
    draining = [name for name in tables if run_mode(mode, config.glue.tables[name]) == loader.EVENTS]
    if not draining:
        return []
    sqs, s3 = aws.client("sqs"), aws.client("s3")
    return [events.ensure_event_queue(sqs, s3, name, config.glue.tables[name]) for name in draining]


class GluePartitionLoaderOperator(BaseOperator):
    """Register one configured table's partitions in the Glue Data Catalog.

    ``mode``: ``interval`` (the run's data interval; waits, deferred, for ``_SUCCESS`` markers when the
    table asks for it; a table with ``mode: events`` drains its queue instead), ``discover`` (everything
    under the table location), ``events`` (the table's queue of S3 notifications), ``msck`` (Athena MSCK
    REPAIR TABLE) or ``crawler`` (the table's crawler). Returns the run report, which also lands under
    ``reports_uri``.

    Its instances share the ``glue_api`` pool (``dataplatform.pools``): mapped or not, created from the
    class, so no DAG can forget it.
    """

    template_fields: Sequence[str] = ("table", "mode", "dry_run")
    ui_color = "#c6e6ff"
    operator_extra_links = (RunReportLink(), GlueTableLink())

    @classmethod
    def partial(cls, **kwargs: Any):  # type: ignore[override]
        # A mapped task's pool is read from its partial arguments by the scheduler (__init__ runs only
        # when an instance executes), so the default goes in here as well as in __init__.
        return operator_partial(cls, **{"pool": GLUE_API, **kwargs})

    def __init__(
        self,
        *,
        table: str,
        mode: str = "interval",
        dry_run: bool = False,
        poke_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**{"pool": GLUE_API, **kwargs})
        self.table = table
        self.mode = mode
        self.dry_run = dry_run
        self.poke_interval = poke_interval

    # -- entry points ----------------------------------------------------------------------------------

    def execute(self, context) -> dict:
        config = settings()
        check_request(self.table, self.mode, self.dry_run, config)
        spec = config.glue.tables[self.table]
        # From here on the mode is what this table's run does (its report and log say so).
        self.mode = run_mode(self.mode, spec)
        if self.mode == "interval" and not _has_interval(context):
            raise AirflowFailException(
                "mode 'interval' needs the run's data interval, and this run has none: trigger it with a "
                "logical date (or use `airflow backfill create`), or use mode=discover"
            )
        s3 = aws.client("s3")
        if self.mode == "interval" and spec.wait_for_success_marker and not self.dry_run:
            self._wait_for_success_markers(context, config, spec, s3)
        return self._register(context, config, spec, s3)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        if not event or event.get("status") != "success":
            raise AirflowException(f"waiting for _SUCCESS markers failed: {event}")
        config = settings()
        return self._register(context, config, config.glue.tables[self.table], aws.client("s3"))

    # -- work ------------------------------------------------------------------------------------------

    def _register(self, context, config: Settings, spec: GlueTable, s3) -> dict:
        if self.mode in (*loader.MODES, loader.EVENTS):
            interval = (context.get("data_interval_start"), context.get("data_interval_end"))
            try:
                if self.mode == loader.EVENTS:
                    found = events.drain(
                        aws.client("glue"), aws.client("sqs"), self.table, spec, dry_run=self.dry_run
                    )
                else:
                    found = loader.load_partitions(
                        aws.client("glue"),
                        s3,
                        self.table,
                        spec,
                        self.mode,
                        interval=interval if self.mode == "interval" else None,
                        dry_run=self.dry_run,
                    )
                report = found.as_dict()
            except loader.PartitionLoadError as exc:
                self._publish(context, config, s3, exc.report.as_dict())
                raise
            except ValueError as exc:  # configuration and table mismatches: a retry cannot fix them
                raise AirflowFailException(str(exc)) from exc
        elif self.mode == "msck":
            report = self._msck_repair(config, spec)
        else:
            report = self._run_crawler(config, spec)
        return self._publish(context, config, s3, report)

    def _publish(self, context, config: Settings, s3, report: dict) -> dict:
        report["report_uri"] = write_run_report(
            config.reports_uri, context["dag"].dag_id, context["run_id"], self.table, report, s3=s3
        )
        self.log.info("report written to %s", report["report_uri"])
        return report

    def _wait_for_success_markers(self, context, config: Settings, spec: GlueTable, s3) -> None:
        """Defer until every partition of the interval has its ``_SUCCESS`` marker.

        The markers are checked here first and the task defers only for those still missing. Besides
        sparing the triggerer a round trip in the common case (backfills, late reruns), this avoids an
        Airflow 3.3 scheduler race: a trigger that fires within a second of deferring can have its
        resumed attempt failed by the stale "success" of the deferring attempt (apache/airflow#72716).
        """
        layout = PartitionLayout(spec)
        values = layout.values_for_interval(context["data_interval_start"], context["data_interval_end"])
        bucket, markers = discovery.success_marker_keys(spec.location, layout, values)
        missing = discovery.missing_objects(s3, bucket, markers)
        if not missing:
            self.log.info("all %d _SUCCESS markers present in s3://%s", len(markers), bucket)
            return
        self.log.info(
            "waiting (deferred, up to %d min) for %d of %d _SUCCESS markers in s3://%s, e.g. %s",
            spec.success_marker_timeout_minutes,
            len(missing),
            len(markers),
            bucket,
            missing[0],
        )
        self.defer(
            trigger=S3KeyTrigger(
                bucket_name=bucket,
                bucket_key=missing,
                aws_conn_id=config.aws.conn_id,
                region_name=config.aws.region,
                poke_interval=spec.success_marker_poke_seconds,
            ),
            method_name="execute_complete",
            timeout=timedelta(minutes=spec.success_marker_timeout_minutes),
        )

    def _msck_repair(self, config: Settings, spec: GlueTable) -> dict:
        # Identifiers are validated against ^[a-z_][a-z0-9_]*$ when the config loads, and quoted here.
        query = f"MSCK REPAIR TABLE `{spec.database}`.`{spec.table}`"
        hook = AthenaHook(
            aws_conn_id=config.aws.conn_id, region_name=config.aws.region, config=aws.retry_config()
        )
        query_id = hook.run_query(
            query=query,
            query_context={"Database": spec.database},
            result_configuration={"OutputLocation": config.glue.athena_output_location},
            workgroup=config.glue.athena_workgroup,
        )
        state = hook.poll_query_status(query_id, sleep_time=self.poke_interval)
        if state != "SUCCEEDED":
            raise AirflowException(
                f"{query} ended {state}: {hook.get_state_change_reason(query_id)} (query {query_id})"
            )
        self.log.info("%s succeeded (Athena query %s)", query, query_id)
        return {
            "table": self.table,
            "mode": "msck",
            "query": query,
            "query_execution_id": query_id,
            "state": state,
            "summary": f"{self.table}: {query} {state}",
        }

    def _run_crawler(self, config: Settings, spec: GlueTable) -> dict:
        hook = GlueCrawlerHook(
            aws_conn_id=config.aws.conn_id, region_name=config.aws.region, config=aws.retry_config()
        )
        hook.start_crawler(spec.crawler_name)
        # The provider's wait_for_crawler_completion also fetches GetCrawlerMetrics just to log them; that
        # call is not needed to know the outcome (and moto answers it with a 500), so wait and read the
        # last crawl's status directly.
        hook.get_waiter("crawler_ready").wait(
            Name=spec.crawler_name, WaiterConfig={"Delay": int(self.poke_interval), "MaxAttempts": 720}
        )
        status = hook.get_crawler(spec.crawler_name)["LastCrawl"]["Status"]
        self.log.info("crawler %s finished: %s", spec.crawler_name, status)
        if status in ("FAILED", "CANCELLED"):
            raise AirflowException(f"crawler {spec.crawler_name} ended {status}")
        return {
            "table": self.table,
            "mode": "crawler",
            "crawler": spec.crawler_name,
            "last_crawl_status": status,
            "summary": f"{self.table}: crawler {spec.crawler_name} finished, last crawl {status}",
        }


def _has_interval(context) -> bool:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    return start is not None and end is not None and start < end
