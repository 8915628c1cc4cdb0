"""Reconciliation, stateful half: a run of ``recon_stateful`` (claim the READY group, prefetch the touched
orders' current artifacts, process, commit the part files, index each part file in its own mapped task,
commit the index). The seed lands the batches and runs, in the harness, the stateless run that makes the
READY group (one Spark job in the harness's session: each crash point reseeds)."""

from __future__ import annotations

from datetime import timedelta

from tests.crash.harness import Pipeline, Step
from tests.crash.pipelines import recon_common

STATELESS_RUN = "scheduled__2024-03-05T11:00:00+00:00"
RUN_ID = "asset_triggered__2024-03-05T11:00:05+00:00"


def seed(lake) -> None:
    from dataplatform.reconciliation.local_runner import LocalRunner

    recon_common.land(lake)
    runner = LocalRunner(recon_common.harness_context(lake), lake.spark)
    runner.stateless(
        STATELESS_RUN, max_batches=recon_common.BATCHES, now=recon_common.START + timedelta(hours=1)
    )


def setup_tables(inputs: dict) -> dict:
    from dataplatform.reconciliation.pipeline import setup_tables

    return setup_tables(recon_common.task_context())


def begin_stateful(inputs: dict) -> dict | None:
    from dataplatform.reconciliation.pipeline import begin_stateful

    return begin_stateful(recon_common.task_context(), RUN_ID)


def prefetch(inputs: dict) -> dict:
    from dataplatform.operators.reconciliation import prefetch_job

    return recon_common.spark_submit(prefetch_job(), inputs["begin_stateful"]["spec_uri"])


def prefetch_in_session(lake, inputs: dict) -> dict:
    return recon_common.in_session(lake, "recon_prefetch", inputs["begin_stateful"]["spec_uri"])


def process(inputs: dict) -> dict:
    from dataplatform.operators.reconciliation import stateful_job
    from dataplatform.reconciliation.pipeline import previous_run_reached

    # wait_for_previous_process: this is run 1, so the sensor passes at once.
    assert previous_run_reached(recon_common.task_context(), inputs["begin_stateful"]["seq"], "PROCESSED")
    return recon_common.spark_submit(stateful_job(), inputs["begin_stateful"]["spec_uri"])


def process_in_session(lake, inputs: dict) -> dict:
    return recon_common.in_session(lake, "recon_stateful", inputs["begin_stateful"]["spec_uri"])


def commit_process(inputs: dict) -> list[str]:
    from dataplatform.reconciliation.pipeline import commit_process

    return commit_process(recon_common.task_context(), inputs["begin_stateful"]["seq"])


def index_part_file(inputs: dict, part_uri: str) -> dict:
    from dataplatform.reconciliation.pipeline import index_part_file

    return index_part_file(recon_common.task_context(), inputs["begin_stateful"]["seq"], part_uri)


def commit_index(inputs: dict) -> dict:
    from dataplatform.operators.reconciliation import write_run_report
    from dataplatform.reconciliation.pipeline import commit_index

    report = commit_index(
        recon_common.task_context(), inputs["begin_stateful"]["seq"], inputs["index_part_file"]
    )
    write_run_report("recon_stateful", RUN_ID, "commit", report)
    return report


PIPELINE = Pipeline(
    name="recon_stateful",
    seed=seed,
    steps=(
        Step("setup_tables", setup_tables),
        Step("begin_stateful", begin_stateful),
        Step("prefetch", prefetch, spark=True, in_harness=prefetch_in_session),
        Step("process", process, spark=True, in_harness=process_in_session),
        Step("commit_process", commit_process),
        Step("index_part_file", index_part_file, expand=lambda inputs: inputs["commit_process"]),
        Step("commit_index", commit_index),
    ),
    snapshot=recon_common.snapshot,
)
