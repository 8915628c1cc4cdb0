"""Iceberg maintenance: one nightly run of the DAG on the pyiceberg tables (one mapped ``maintain_table``
task per table: tags, expiry, unreferenced and created files, lifecycle rule, orphans), through the
operator itself."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from tests.crash.harness import Pipeline, Step
from tests.crash.pipelines.lake_files import object_shapes, table_rows

DAG_ID = "iceberg_maintenance"
RUN_ID = "scheduled__2024-03-06T02:00:00+00:00"
LOGICAL_DATE = datetime(2024, 3, 6, 2, tzinfo=UTC)


def seed(lake) -> None:
    from dataplatform.devstack.seed import ensure_bucket, seed_iceberg

    ensure_bucket(lake.s3, lake.settings.reports_uri.removeprefix("s3://").split("/")[0])
    seed_iceberg(lake.catalog, lake.s3, lake.settings)


def maintain_table(inputs: dict, table: str) -> dict:
    from dataplatform.operators.iceberg import IcebergMaintenanceOperator

    operator = IcebergMaintenanceOperator(task_id="maintain_table", table=table)
    context = {"dag": SimpleNamespace(dag_id=DAG_ID), "run_id": RUN_ID, "logical_date": LOGICAL_DATE}
    return operator.execute(context)


def snapshot(lake) -> dict:
    """Per table: rows, snapshots (by sequence number), refs (name -> sequence number of the snapshot),
    the objects under its location with their tags; the bucket's lifecycle rules; the state objects."""
    state = {}
    bucket = None
    for name, policy in lake.settings.iceberg.tables.items():
        table = lake.catalog.load_table(policy.identifier)
        metadata = table.metadata
        sequence = {s.snapshot_id: s.sequence_number for s in metadata.snapshots}
        state[name] = {
            "rows": table_rows(lake, policy.identifier),
            "snapshots": sorted(sequence.values()),
            "refs": {ref: sequence.get(r.snapshot_id) for ref, r in metadata.refs.items()},
            "objects": object_shapes(lake, table.location()),
        }
        bucket = table.location().removeprefix("s3://").split("/")[0]
    try:
        rules = lake.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except lake.s3.exceptions.ClientError:
        rules = []
    state["lifecycle"] = sorted(str(sorted(rule.items())) for rule in rules)
    state["state_objects"] = object_shapes(lake, lake.settings.iceberg.state_uri)
    return state


PIPELINE = Pipeline(
    name="iceberg",
    seed=seed,
    steps=(
        Step(
            "maintain_table",
            maintain_table,
            expand=lambda inputs: ["orders", "customers"],
        ),
    ),
    snapshot=snapshot,
    # One task makes ~180 calls (commits, tagging, lifecycle, orphans): more points between.
    per_step=10,
)
