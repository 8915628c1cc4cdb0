"""Reconciliation, stateless half: one run of ``recon_stateless`` (set up the tables, register the landed
batches, claim a group and write its job spec, the Spark reduce, commit the group)."""

from __future__ import annotations

from tests.crash.harness import Pipeline, Step
from tests.crash.pipelines import recon_common

RUN_ID = "scheduled__2024-03-05T11:00:00+00:00"


def seed(lake) -> None:
    recon_common.land(lake)


def setup_tables(inputs: dict) -> dict:
    from dataplatform.reconciliation.pipeline import setup_tables

    return setup_tables(recon_common.task_context())


def register_batches(inputs: dict) -> dict:
    from dataplatform.reconciliation.pipeline import register_batches

    result = register_batches(recon_common.task_context())
    return {**result, "registered": len(result["registered"])}


def plan_stateless(inputs: dict) -> dict | None:
    from dataplatform.reconciliation.pipeline import plan_stateless

    return plan_stateless(recon_common.task_context(), RUN_ID, None)


def stateless_reduce(inputs: dict) -> dict:
    from dataplatform.operators.reconciliation import stateless_job

    return recon_common.spark_submit(stateless_job(), inputs["plan_stateless"]["spec_uri"])


def stateless_reduce_in_session(lake, inputs: dict) -> dict:
    return recon_common.in_session(lake, "recon_stateless", inputs["plan_stateless"]["spec_uri"])


def commit_stateless(inputs: dict) -> dict:
    from dataplatform.operators.reconciliation import write_run_report
    from dataplatform.reconciliation.pipeline import commit_stateless, stateless_summary

    plan = inputs["plan_stateless"]
    stats = commit_stateless(recon_common.task_context(), plan["group_id"])
    report = {**plan, "stats": stats, "summary": stateless_summary(plan, stats)}
    write_run_report("recon_stateless", RUN_ID, "commit", report)
    return report


PIPELINE = Pipeline(
    name="recon_stateless",
    seed=seed,
    steps=(
        Step("setup_tables", setup_tables),
        Step("register_batches", register_batches),
        Step("plan_stateless", plan_stateless),
        Step("stateless_reduce", stateless_reduce, spark=True, in_harness=stateless_reduce_in_session),
        Step("commit_stateless", commit_stateless),
    ),
    snapshot=recon_common.snapshot,
)
