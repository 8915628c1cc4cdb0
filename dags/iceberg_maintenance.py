"""Nightly Iceberg table maintenance. Wiring only: see dataplatform.iceberg.maintenance."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from dataplatform.operators.iceberg import IcebergMaintenanceOperator

DOC = """
### Iceberg maintenance

Nightly (02:00 UTC), for every table in `iceberg.tables` (`include/config/<env>.yaml`), one mapped task
per table:

1. **Tags** the table's `tag_rules` call for (e.g. `daily-2024-03-05` kept 7 days, `month-end-2024-03`
   kept a year), on main's snapshot as of the end of the day before the run. Existing tags are kept.
2. **Expiry** of every snapshot that is not a tag or branch head, not among main's last `retain_last`,
   and older than `max_snapshot_age_hours`, and of tags past their age: one commit, re-planned if another
   writer commits first.
3. **Unreferenced files** (data, delete, manifest, manifest-list and dropped metadata files): `delete`
   (DeleteObjects, 1,000 a call) or `tag` (`delete-tag-name=deleted`, merged with existing tags).
4. **Created files** since the last run get the `created` tag (when enabled).
5. **Lifecycle**: the bucket rule moving delete-tagged objects to Glacier IR and expiring them later,
   merged with the bucket's other rules.
6. **Orphans**: unreferenced objects older than `orphan_min_age_hours` (default 3 days) get the same
   action (listed only on a dry run).
7. **Report** per table: XCom and a JSON file under `reports_uri`.

Manual trigger: `tables` (empty: all) and `dry_run` (read and report, change nothing).
"""


@dag(
    dag_id="iceberg_maintenance",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
    },
    tags=["iceberg", "maintenance"],
    doc_md=DOC,
    params={
        "tables": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Tables",
            description="Keys of iceberg.tables in the config; empty for every table.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Report what would be tagged, expired, deleted; change nothing.",
        ),
    },
)
def iceberg_maintenance():
    @task
    def select_tables(params: dict) -> list[str]:
        """Validate the params against the config (before any side effect) and pick the pyiceberg tables."""
        from dataplatform.config import settings
        from dataplatform.operators.iceberg import check_tables, tables_for_backend

        config = settings().iceberg
        return tables_for_backend(
            check_tables(params["tables"], params["dry_run"], config), config, "pyiceberg"
        )

    IcebergMaintenanceOperator.partial(
        task_id="maintain_table",
        dry_run="{{ params.dry_run }}",
        map_index_template="{{ task.table }}",
    ).expand(table=select_tables())


iceberg_maintenance()
