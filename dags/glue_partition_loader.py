"""Register new S3 partitions in the Glue Data Catalog. Wiring only: see dataplatform.glue.loader."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from dataplatform.config import settings
from dataplatform.operators import assets
from dataplatform.operators.glue import MODES, GluePartitionLoaderOperator
from dataplatform.operators.notifiers import dag_alerts, task_alerts
from dataplatform.task_retries import retry_args

DOC = """
### Glue partition loader

Registers the partitions of every table in `glue.tables` (`include/config/<env>.yaml`) in the Glue Data
Catalog, idempotently: partitions Glue already has are left alone, new ones are created 100 per
BatchCreatePartition call with the table's schema, SerDe and formats and their own S3 location.

* **Scheduled** (daily, 00:00 UTC): `mode=interval` registers the partitions of the run's data interval
  that have data in S3 (waiting, deferred, for `_SUCCESS` markers on tables that ask for them). History:
  `airflow backfill create --dag-id glue_partition_loader --from-date 2024-03-01 --to-date 2024-03-03`
  (locally: `make airflow ARGS="backfill create ..."`). Runs of a paused DAG stay queued: unpause it.
  Every `load_partitions` takes a slot of the `glue_api` pool (README, *Concurrency limits*): however
  many days a backfill covers, at most `pools.glue_api.slots` loads call Glue at once.
* **Manual**: `table` (empty = all), `mode` (`interval` | `discover` | `events` | `msck` | `crawler`),
  `dry_run`. `discover` lists the table location level by level and registers everything missing.
* **Events** (tables with `mode: events` and `events_queue` in the config): the bucket sends its
  ObjectCreated notifications under the table location to the table's SQS queue, which `setup_event_queues`
  (a setup task, idempotent, keeping the bucket's other notifications) creates. Their scheduled runs (and
  `mode=interval` or `mode=events`) drain the queue instead of listing S3: 10 messages a call, the keys'
  partitions validated as in discover, registered in batches, and each message deleted only once its
  partitions exist in Glue. A partition that fails keeps its messages for the next run. Keys outside the
  layout are reported as invalid and their messages deleted (redelivery cannot fix them; `discover`
  finds anything skipped); `_SUCCESS`, `_temporary/` and S3's test event are ignored.

Prefixes that do not fit the partition keys (`dt=garbage`, a missing level, an unexpected key) or name a
day that does not exist (`2024/02/30`, checked on the date the keys form together) are reported as
invalid and never registered. Prefixes that hold only writer leftovers (`_SUCCESS`, `_temporary/`,
`$folder$` markers) are empty: skipped and counted. Each table's report (listed, already present,
created, invalid, empty, failed) is the task's XCom and a JSON file under `reports_uri`.

Alerts (README, *Alerts*): a failed run, a task failed after its retries and the first success after a
failed run are published to `alerts.sns_topic_arn` (empty: logged only).
"""


@dag(
    dag_id="glue_partition_loader",
    description="Daily: register the new S3 partitions of the configured tables in the Glue Data Catalog.",
    # Explicit data intervals: a run for 2023-06-01 covers [06-01, 06-02), which is what interval mode
    # registers (Airflow 3's cron presets would give zero-length intervals).
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2023, 6, 1),
    catchup=False,
    max_active_runs=4,
    render_template_as_native_obj=True,
    default_args={
        "owner": "data-platform",
        **retry_args(2, timedelta(minutes=2)),
        **task_alerts(),
    },
    **dag_alerts(),
    tags=["glue", "catalog", "partitions"],
    doc_md=DOC,
    params={
        "table": Param(
            None,
            type=["null", "string"],
            examples=list(settings().glue.tables),
            title="Table",
            description="A key of glue.tables in the config; empty for every table.",
        ),
        "mode": Param(
            "interval",
            type="string",
            enum=list(MODES),
            title="Mode",
            description="interval: the run's data interval (tables with mode: events drain their queue); "
            "discover: everything in S3; events: the queues of the tables with mode: events; "
            "msck / crawler: Athena or the table's crawler (AWS only).",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="List what would be registered, register nothing.",
        ),
    },
)
def glue_partition_loader():
    @task
    def select_tables(params: dict) -> list[str]:
        """Validate the params against the config (before any side effect) and pick the tables."""
        from dataplatform.operators.glue import check_request

        return check_request(params["table"], params["mode"], params["dry_run"], settings())

    @task
    def setup_event_queues(tables: list[str], params: dict) -> list[dict]:
        """The queue and bucket notification of each selected table with mode: events (idempotent)."""
        from dataplatform.operators.glue import ensure_event_queues

        return ensure_event_queues(tables, params["mode"], settings())

    tables = select_tables()
    queues = setup_event_queues(tables).as_setup()
    loads = GluePartitionLoaderOperator.partial(
        task_id="load_partitions",
        mode="{{ params.mode }}",
        dry_run="{{ params.dry_run }}",
        map_index_template="{{ task.table }}",
        inlets=assets.glue_table_locations(),
        outlets=assets.glue_tables(),
    ).expand(table=tables)
    queues >> loads


glue_partition_loader()
