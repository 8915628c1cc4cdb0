"""Benchmark pricing: one run of the DAG (select the unpriced launches, price each in its own mapped task,
build the comparison report), through the functions the tasks call."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from tests.crash.harness import Pipeline, Step

DAG_ID = "benchmark_pricing"
RUN_ID = "scheduled__2024-03-02T00:15:00+00:00"
CONTEXT = {"dag": SimpleNamespace(dag_id=DAG_ID), "run_id": RUN_ID}
# What a launch record says that does not depend on the seeding (moto's resource ids and clocks differ
# between two seedings of the same launches).
_STABLE = (
    "launch_id",
    "status",
    "workflow_type",
    "instance_types",
    "price_source",
    "price_date",
    "pricing_attempts",
)
_AMOUNTS = ("total_cost", "instance_cost", "volume_cost", "filesystem_cost")


def seed(lake) -> None:
    from dataplatform.devstack.seed import ensure_bucket, seed_pricing

    ensure_bucket(lake.s3, lake.settings.reports_uri.removeprefix("s3://").split("/")[0])
    seed_pricing(lake.settings)


def select_launches(inputs: dict) -> list[str]:
    from dataplatform.operators.pricing import select_launches

    return select_launches({"launch_ids": []})


def price_launch(inputs: dict, launch_id: str) -> dict:
    from dataplatform.operators.pricing import price_launch

    return price_launch(launch_id)


def build_report(inputs: dict) -> dict:
    from dataplatform.operators.pricing import build_report

    return build_report(inputs["select_launches"], inputs["price_launch"], CONTEXT)


def snapshot(lake) -> dict:
    """Per launch: its record without clock-dependent fields, whether it has a cost and whether the cost
    adds up (the amounts depend on how long moto's instances ran in this seeding); the report objects."""
    launches = {}
    for item in lake.items(lake.settings.pricing.launches_table):
        record = {k: v for k, v in item.items() if k in _STABLE}
        record["pricing_error"] = "pricing_error" in item
        if "total_cost" in item:
            parts = sum(Decimal(str(item.get(name, 0))) for name in _AMOUNTS[1:])
            record["priced"] = True
            record["cost_adds_up"] = abs(Decimal(str(item["total_cost"])) - parts) < Decimal("0.01")
        launches[item["launch_id"]] = record
    bucket, _, prefix = lake.settings.reports_uri.removeprefix("s3://").partition("/")
    reports = sorted(lake.objects(bucket, prefix + DAG_ID))
    return {"launches": launches, "reports": reports}


PIPELINE = Pipeline(
    name="pricing",
    seed=seed,
    steps=(
        Step("select_launches", select_launches),
        Step("price_launch", price_launch, expand=lambda inputs: inputs["select_launches"]),
        Step("build_report", build_report),
    ),
    snapshot=snapshot,
)
