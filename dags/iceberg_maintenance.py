"""Nightly Iceberg table maintenance. Wiring only: see dataplatform.iceberg.maintenance (pyiceberg) and
dataplatform.iceberg.spark_sql with spark_jobs/iceberg_maintenance.py (Spark procedures)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from dataplatform.config import settings
from dataplatform.operators import assets
from dataplatform.operators.deadlines import dag_deadlines
from dataplatform.operators.iceberg import IcebergMaintenanceOperator
from dataplatform.operators.iceberg_spark import spark_maintenance_tasks, spark_tables
from dataplatform.operators.notifiers import dag_alerts, task_alerts
from dataplatform.task_retries import retry_args

DOC = """
### Iceberg maintenance

Nightly (02:00 UTC), for every table in `iceberg.tables` (`include/config/<env>.yaml`), one mapped task
per table:

1. **Tags** the table's `tag_rules` call for (e.g. `daily-2024-03-05` with `keep_days: 7`, kept through
   2024-03-12 UTC: a tag stays `keep_days` after the day it names; `month-end-2024-03` kept a year), on
   main's snapshot as of the end of the day before the run. Existing tags are kept. A tag already past
   its retention (a rerun or backfill of a day more than `keep_days` ago) is not created: the report
   lists it under `tags.skipped` with the reason, and the rerun writes nothing.
   **Compaction** (tables with a `compaction` policy): partitions with at least `min_input_files` small
   files (or a file with deletes) rewritten into `target_file_mb` files, one REPLACE commit each, within
   `max_bytes_per_run`; more than `max_small_manifests` small manifests rewritten into few. Planned
   before the first commit: a table it cannot compact fails before any change. A concurrent writer's
   append is kept (the commit checks that the files it replaces are still live).
2. **Expiry** of every snapshot that is not a tag or branch head, not among main's last `retain_last`,
   and older than `max_snapshot_age_hours`, and of tags past their retention: one commit, re-planned if
   another writer commits first.
3. **Unreferenced files** (data, delete, manifest, manifest-list and dropped metadata files): `delete`
   (DeleteObjects, 1,000 a call) or `tag` (`delete-tag-name=deleted`, merged with existing tags).
4. **Created files** since the last run get the `created` tag (when enabled).
5. **Lifecycle**: the bucket rule moving delete-tagged objects to Glacier IR and expiring them later,
   merged with the bucket's other rules.
6. **Orphans**: unreferenced objects older than `orphan_min_age_hours` (default 3 days) get the same
   action (listed only on a dry run).
7. **Report** per table: XCom and a JSON file under `reports_uri`.

Manual trigger: `tables` (empty: all) and `dry_run` (read and report, change nothing).

#### Tables with `backend: spark`

Tables too big for one worker run the same steps as Iceberg's Spark procedures on the configured Spark
backend (EMR steps on a transient or existing cluster, or EMR Serverless; locally spark-submit with the
pinned Iceberg runtime, as for `clickstream` in the local config), one task group
`spark_<table>` each: `plan` (skipped when the run's `tables` leave the table out) writes the job spec
under `reports_uri`, the Spark job runs it, `finish` sets the lifecycle rule and publishes the report.

1. `ALTER TABLE ... CREATE TAG IF NOT EXISTS ... AS OF VERSION <main's snapshot at the end of the day>
   RETAIN <n> MINUTES`, n running from that snapshot to the end of the day + `keep_days` (the same
   retention as above, rounded up to the minute); tags already past it are skipped by the plan.
   Compaction: `CALL glue_catalog.system.rewrite_data_files` with the same rules (`max_bytes_per_run`
   caps each file group), then `rewrite_manifests` past `max_small_manifests`.
2. `CALL glue_catalog.system.expire_snapshots(older_than, retain_last)`; it also drops aged tags.
3. Unreferenced files are deleted by Iceberg itself, or, with `action: tag`, tagged instead
   (catalog properties `s3.delete-enabled=false`, `s3.delete.tags.<key>=<value>`).
4. Created files: catalog property `s3.write.tags.<key>=<value>` tags files *as they are written*: those
   of the maintenance job and of every writer configured with the same property, not files written
   before (unlike the pyiceberg path, which tags them after the fact).
5. Lifecycle: the same bucket rule as above, from the `finish` task (table location from Glue).
6. `CALL glue_catalog.system.remove_orphan_files(older_than, dry_run, prefix_listing => true)` (the
   location listed through S3FileIO); Iceberg refuses an `orphan_min_age_hours` under 24.
7. The job's JSON report, completed by `finish`, under `reports_uri` as for the other tables.

A dry run creates no tag and calls neither rewrite_data_files nor expire_snapshots (they have no dry
run): it reports the tags it would create, the partitions with enough small files and the snapshots
expiry would remove, from the metadata tables, and lists orphans with `dry_run => true`.

Deadline (README, *Deadlines and data freshness*): a run not finished `health.deadlines.iceberg_maintenance_minutes`
after its scheduled time alerts DEADLINE MISSED (0: no deadline).

Alerts (README, *Alerts*): a failed run, a task failed after its retries and the first success after a
failed run are published to `alerts.sns_topic_arn` (empty: logged only).
"""


@dag(
    dag_id="iceberg_maintenance",
    description="Nightly: tag, compact, expire snapshots and clean up unreferenced files of Iceberg tables.",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={
        "owner": "data-platform",
        **retry_args(2, timedelta(minutes=5)),
        **task_alerts(),
    },
    **dag_alerts(),
    # README, *Deadlines and data freshness*: health.deadlines in the config.
    deadline=dag_deadlines("iceberg_maintenance"),
    tags=["iceberg", "maintenance"],
    doc_md=DOC,
    params={
        "tables": Param(
            [],
            type="array",
            items={"type": "string"},
            examples=list(settings().iceberg.tables),
            title="Tables",
            description="Keys of iceberg.tables in the config; empty for every table.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Report what would be tagged, compacted, expired, deleted; change nothing.",
        ),
    },
)
def iceberg_maintenance():
    pyiceberg_tables = [key for key, t in settings().iceberg.tables.items() if t.backend == "pyiceberg"]

    @task
    def select_tables(params: dict) -> list[str]:
        """Validate the params against the config (before any side effect) and pick the pyiceberg tables."""
        from dataplatform.operators.iceberg import check_tables, tables_for_backend

        config = settings().iceberg
        return tables_for_backend(
            check_tables(params["tables"], params["dry_run"], config), config, "pyiceberg"
        )

    selected = select_tables()
    IcebergMaintenanceOperator.partial(
        task_id="maintain_table",
        dry_run="{{ params.dry_run }}",
        map_index_template="{{ task.table }}",
        inlets=assets.iceberg_tables(pyiceberg_tables),
        outlets=[*assets.iceberg_tables(pyiceberg_tables), assets.iceberg_maintenance_state()],
    ).expand(table=selected)

    # One group per `backend: spark` table, known from the config at parse time.
    for table in spark_tables():
        selected >> spark_maintenance_tasks(table)


iceberg_maintenance()
