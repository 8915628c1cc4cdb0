"""Glue partition loading: the DAG's two mapped ``load_partitions`` tasks of one daily run (``web_events``
in interval mode, ``cloudtrail`` discovering everything), through the operator itself."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from tests.crash.harness import Pipeline, Step

DAG_ID = "glue_partition_loader"
RUN_ID = "scheduled__2024-03-02T00:00:00+00:00"
INTERVAL = (datetime(2024, 3, 2, tzinfo=UTC), datetime(2024, 3, 3, tzinfo=UTC))


def seed(lake) -> None:
    from dataplatform.devstack.seed import seed_demo

    seed_demo(lake.s3, lake.glue, lake.settings, days=3)


def _load(table: str, mode: str) -> dict:
    from dataplatform.operators.glue import GluePartitionLoaderOperator

    operator = GluePartitionLoaderOperator(task_id="load_partitions", table=table, mode=mode)
    context = {
        "dag": SimpleNamespace(dag_id=DAG_ID),
        "run_id": RUN_ID,
        "data_interval_start": INTERVAL[0],
        "data_interval_end": INTERVAL[1],
    }
    return operator.execute(context)


def load_web_events(inputs: dict) -> dict:
    return _load("web_events", "interval")


def load_cloudtrail(inputs: dict) -> dict:
    return _load("cloudtrail", "discover")


def snapshot(lake) -> dict:
    """Every table's partitions (values -> location, formats, columns) and the run's report objects."""
    state = {}
    for name, table in lake.settings.glue.tables.items():
        partitions = {}
        pages = lake.glue.get_paginator("get_partitions").paginate(
            DatabaseName=table.database, TableName=table.table
        )
        for page in pages:
            for partition in page["Partitions"]:
                descriptor = partition["StorageDescriptor"]
                partitions["/".join(partition["Values"])] = {
                    "location": descriptor["Location"],
                    "columns": descriptor.get("Columns"),
                    "input_format": descriptor.get("InputFormat"),
                    "serde": descriptor.get("SerdeInfo"),
                }
        state[name] = partitions
    bucket, _, prefix = lake.settings.reports_uri.removeprefix("s3://").partition("/")
    state["reports"] = sorted(lake.objects(bucket, prefix + DAG_ID))
    return state


PIPELINE = Pipeline(
    name="glue",
    seed=seed,
    steps=(
        Step("load_partitions[web_events]", load_web_events),
        Step("load_partitions[cloudtrail]", load_cloudtrail),
    ),
    snapshot=snapshot,
)
