"""Register an older metadata file of an Iceberg table as an archive table. Wiring only: see
dataplatform.iceberg.archive."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from dataplatform.config import settings
from dataplatform.operators import assets
from dataplatform.operators.notifiers import dag_alerts, task_alerts
from dataplatform.task_retries import retry_args

DOC = """
### Iceberg archive register

Manual only. Registers an older metadata file of a table in `iceberg.tables` (`include/config/<env>.yaml`)
as a read-only Iceberg table `<database>.<archive_table>` in the Glue catalog, to query the table as it
was, after checking that the metadata file and every file it references exist and can be read.

| param | values | default | meaning |
|---|---|---|---|
| `table` | a key of `iceberg.tables` | - | the source table |
| `metadata_file` | `oldest`, `previous`, or an `s3://.../metadata/*.metadata.json` URI | `oldest` | `oldest`: the oldest metadata file in the table's metadata log that has a snapshot (the empty one `create_table` wrote is passed over); `previous`: the newest log entry, the table before its last commit; a URI must lie under the table's metadata location |
| `archive_table` | lower-case Glue identifier, not the source's name | - | created in the source's database |

Tasks:

1. **validate**: params, source table, metadata file, archive name (free, or already registered on
   the same file). Bad input fails here at once, without retries, before anything is touched.
2. **check**: reads the metadata file, walks all its snapshots and HEADs every object a reader needs
   (metadata file, manifest lists, manifests, data and delete files), `iceberg.tag_workers` at a time:
   present, missing, archived (GLACIER / DEEP_ARCHIVE without a completed restore: needs a restore
   first) or unreadable. A `metadata_file` that is not Iceberg table metadata (not JSON, or JSON of
   another shape) fails here at once, without retries, naming the file.
   GLACIER_IR and STANDARD_IA are readable: present, counted by storage class. The report is the task's
   XCom and `<reports_uri>/iceberg_archive_register/<run_id>/<table>.json`; when files need a restore,
   an S3 Batch Operations manifest of them is written under `<reports_uri>/restore_manifests/`.
3. **register**: `register_table` when every file is present. Otherwise the task fails naming the missing
   and archived files, with the counts and how to restore (`aws s3api restore-object ...` or a Batch Operations restore job on the manifest); run
   the DAG again with the same params once the restores have completed. A rerun on an archive table
   already registered on the same file changes nothing; an archive name already used for another
   metadata file is refused.

After registering, the source's delete tag is removed from every file the archive reaches, so the
lifecycle rule no longer archives or expires them, and the source's maintenance finds the archive in
Glue and never deletes, tags or calls orphan a file it reaches. Keep archive tables read-only: they
share the source table's files and location. Drop the archive table (Glue) when it is no longer needed:
its files are then unreferenced for the next maintenance run.

Alerts (README, *Alerts*): a failed run, a task failed after its retries and the first success after a
failed run are published to `alerts.sns_topic_arn` (empty: logged only).
"""


@dag(
    dag_id="iceberg_archive_register",
    description="On demand: register an older metadata file of an Iceberg table as an archive table.",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={
        "owner": "data-platform",
        **retry_args(1, timedelta(minutes=1), exponential=False),
        **task_alerts(),
    },
    **dag_alerts(),
    tags=["iceberg", "maintenance", "manual"],
    doc_md=DOC,
    params={
        "table": Param(
            None,
            type=["null", "string"],
            examples=list(settings().iceberg.tables),
            title="Table",
            description="A key of iceberg.tables in the config (the source table).",
        ),
        "metadata_file": Param(
            "oldest",
            type="string",
            title="Metadata file",
            description="oldest, previous, or the s3:// URI of a *.metadata.json under the table's "
            "metadata location.",
        ),
        "archive_table": Param(
            None,
            type=["null", "string"],
            title="Archive table",
            description="Name of the new table, in the source table's Glue database (lower-case).",
        ),
    },
)
def iceberg_archive_register():
    @task
    def validate(params: dict) -> dict:
        """Check every param against the config and the catalog before anything is changed."""
        from dataplatform.operators.iceberg_archive import validate_request

        return validate_request(params)

    @task(inlets=assets.iceberg_tables())
    def check(request: dict, **context) -> dict:
        """HEAD every file the metadata file needs; report present / missing / needs restore."""
        from dataplatform.operators.iceberg_archive import check_request

        return check_request(context, request)

    # The archive table's name is a param: the asset is the source table, whose files it un-tags.
    @task(outlets=assets.iceberg_tables())
    def register(request: dict, report: dict, **context) -> dict:
        """Register the archive table when every file is present; otherwise fail saying what to restore."""
        from dataplatform.operators.iceberg_archive import register_request

        return register_request(context, request, report)

    request = validate()
    register(request, check(request))


iceberg_archive_register()
