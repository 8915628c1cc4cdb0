"""The reconciliation pipeline end to end in this process (moto DynamoDB, local Spark writing its part
files to S3 on moto through S3A; one test on the file:// layout): its results against an independent
computation, reruns, crashes and overlapping runs.

The stages are driven by ``LocalRunner`` (the same stage functions and Spark ``run`` functions the DAG
tasks call) so that stages of different runs can be interleaved on purpose; ``test_recon_dags.py`` runs
the DAGs themselves.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

import pytest

from dataplatform.reconciliation import index, ledger, pipeline
from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
from dataplatform.reconciliation.local_runner import LocalRunner
from dataplatform.reconciliation.pipeline import StageError
from spark_jobs.common.storage import Storage, join, split_s3
from tests.moto_helpers import AtomicWrites, recorded_s3_gets
from tests.reconciliation_oracle import expected, read_landing, without_run_fields

pytestmark = [pytest.mark.integration, pytest.mark.spark]

START = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
# Small, but with every feature: a skewed key distribution (a few hot orders), redeliveries across and
# within batches, late corrections and malformed rows of every kind.
GENERATOR = GeneratorConfig(
    seed=11, n_keys=300, events_per_batch=600, files_per_batch=2, malformed_share=0.03, redelivery_share=0.05
)


def land(runner: LocalRunner, batches: int, first_index: int = 0) -> None:
    write_batches(
        runner.ctx.storage,
        runner.ctx.settings.landing_uri,
        GENERATOR,
        batches=first_index + batches,
        start=START,
        first_index=first_index,
    )


def oracle(runner: LocalRunner):
    return expected(read_landing(runner.ctx.settings.landing_uri, runner.ctx.storage.s3))


def indexed_state(runner: LocalRunner) -> dict[str, dict]:
    """Every indexed artifact, each fetched alone (one index read, one ranged GET)."""
    ctx = runner.ctx
    keys = [
        item["artifact_key"]["S"]
        for page in ctx.dynamodb.get_paginator("scan").paginate(TableName=ctx.settings.index_table)
        for item in page["Items"]
    ]
    return {key: index.get_artifact(ctx.dynamodb, ctx.storage, ctx.settings.index_table, key) for key in keys}


def scanned_state(runner: LocalRunner) -> dict[str, dict]:
    """The newest version of every artifact, by reading every committed part file in full."""
    import json

    ctx = runner.ctx
    latest: dict[str, dict] = {}
    state_root = join(ctx.settings.work_uri, "state") + "/"
    for run_dir in ctx.storage.list_children(state_root):
        committed = join(state_root, run_dir, "_COMMITTED")
        if not ctx.storage.exists(committed):
            continue
        for part in ctx.storage.read_json(committed)["part_files"]:
            for line in ctx.storage.read_bytes(part["uri"]).splitlines():
                artifact = json.loads(line)
                if artifact["version"] > latest.get(artifact["key"], {"version": 0})["version"]:
                    latest[artifact["key"]] = artifact
    return latest


def comparable(state: dict[str, dict]) -> dict[str, dict]:
    return {key: without_run_fields(artifact) for key, artifact in state.items()}


def index_items(runner: LocalRunner) -> dict[str, dict]:
    ctx = runner.ctx
    return {
        item["artifact_key"]["S"]: item
        for page in ctx.dynamodb.get_paginator("scan").paginate(TableName=ctx.settings.index_table)
        for item in page["Items"]
    }


def run_everything(runner: LocalRunner, tag: str, max_batches: int | None = None) -> list[dict]:
    """Stateless and stateful runs until nothing pends; the stateless plans."""
    plans = []
    number = 0
    while True:
        number += 1
        plan = runner.stateless(f"{tag}-stateless-{number}", max_batches=max_batches)
        if plan is None:
            return plans
        plans.append(plan)
        assert runner.stateful(f"{tag}-stateful-{number}") is not None


@pytest.fixture(params=["s3", "file"])
def any_recon(request):
    """The pipeline with its landing and work areas on S3 (the config's) and on file://."""
    return request.getfixturevalue({"s3": "recon", "file": "recon_on_file"}[request.param])


def test_final_state_equals_an_independent_computation_over_the_raw_events(any_recon):
    recon = any_recon
    land(recon, batches=5)
    plans = run_everything(recon, "a", max_batches=2)

    want, want_stats = oracle(recon)
    assert [len(plan["batches"]) for plan in plans] == [2, 2, 1]
    got = indexed_state(recon)
    assert comparable(got) == want
    # A hot order was updated by several runs; its version counts them.
    assert max(artifact["version"] for artifact in got.values()) == 3
    # Every artifact fetched alone equals the newest one in a full scan of the part files.
    assert got == scanned_state(recon)

    quarantined = sum(plan["stats"]["quarantined_rows"] for plan in plans)
    duplicates = sum(
        plan["stats"]["duplicates_in_run"] + plan["stats"]["duplicates_seen_before"] for plan in plans
    )
    assert quarantined == want_stats["quarantined_rows"] > 0
    assert duplicates == want_stats["duplicates"] > 0
    assert sum(plan["stats"]["input_rows"] for plan in plans) == want_stats["input_rows"]
    # Malformed rows are kept, with their reason, in each group's quarantine.
    reasons: dict[str, int] = {}
    for plan in plans:
        for reason, count in plan["stats"]["quarantined"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons == want_stats["quarantined"]

    counts = ledger.count_by_state(recon.ctx.dynamodb, recon.ctx.settings.ledger_table)
    assert counts["INDEXED"] == 5 and counts["PENDING"] == 0


def test_part_files_are_on_s3_and_one_artifact_is_read_with_one_ranged_get(recon, moto_server):
    land(recon, batches=2)
    run_everything(recon, "s3")
    state_root = join(recon.ctx.settings.work_uri, "state") + "/"
    assert state_root.startswith("s3://")
    bucket, prefix = split_s3(state_root)
    keys = sorted(
        obj["Key"][len(prefix) :]
        for obj in recon.ctx.storage.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    )
    # What S3A's committer left: the part files, Spark's _SUCCESS and the pipeline's _COMMITTED, no
    # _temporary/ folder and no directory marker.
    assert [k.split("/", 1)[1] for k in keys if not k.split("/", 1)[1].startswith("part-")] == [
        "_COMMITTED",
        "_SUCCESS",
    ]
    assert sum(k.split("/", 1)[1].startswith("part-") for k in keys) == recon.ctx.settings.state_part_files

    key, entry = next(iter(index_items(recon).items()))
    part_uri = entry["file"]["S"]
    part_bucket, part_key = split_s3(part_uri)
    reader = Storage(recon.ctx.storage.s3)
    moto_server.start_recording()
    try:
        artifact = index.get_artifact(recon.ctx.dynamodb, reader, recon.ctx.settings.index_table, key)
    finally:
        moto_server.stop_recording()
    gets = recorded_s3_gets(moto_server, part_bucket, part_key)
    offset, length = int(entry["offset"]["N"]), int(entry["length"]["N"])
    assert [get.get("range") for get in gets] == [f"bytes={offset}-{offset + length - 1}"]
    assert reader.stats.as_dict()["range_reads"] == 1 and reader.stats.as_dict()["reads"] == 0
    assert artifact == scanned_state(recon)[key]


def test_a_rerun_of_every_stage_changes_nothing(recon):
    land(recon, batches=3)
    run_everything(recon, "b")
    before_index = index_items(recon)
    before_files = recon.ctx.storage.list_files(recon.ctx.settings.work_uri)

    # The same Airflow runs again (cleared and rerun): same groups, same runs, no-op jobs.
    assert recon.stateless("b-stateless-1")["batches"] == recon.stateless("b-stateless-1")["batches"]
    report = recon.stateful("b-stateful-1")
    assert report["seq"] == 1
    # And new runs find nothing to do.
    assert recon.stateless("b-stateless-new") is None
    assert recon.stateful("b-stateful-new") is None

    assert index_items(recon) == before_index
    assert recon.ctx.storage.list_files(recon.ctx.settings.work_uri) == before_files


def test_each_stage_killed_and_rerun_converges_to_the_same_state(recon):
    land(recon, batches=4)
    ctx = recon.ctx

    # Stateless: the Spark job wrote its output, the commit never happened (worker lost); the retry of
    # the same run claims the same batches, rewrites the output and commits.
    pipeline.register_batches(ctx)
    plan = pipeline.plan_stateless(ctx, "c-stateless-1", 2)
    recon._run_job("recon_stateless", plan["spec_uri"])
    assert recon.stateless("c-stateless-1")["batches"] == plan["batches"]

    # Stateful: the process job failed after writing part files (no stats, no commit), then its retry.
    run = recon.begin("c-stateful-1")
    recon.prefetch(run)
    recon._run_job("recon_stateful", run["spec_uri"])
    ctx.storage.delete(join(pipeline.stateful_uri(ctx, run["seq"]), "_process_stats.json"))
    with pytest.raises(FileNotFoundError):
        pipeline.commit_process(ctx, run["seq"])
    parts = recon.process(run)
    # The indexer died after one part file; the retry indexes all of them.
    pipeline.index_part_file(ctx, run["seq"], parts[0])
    recon.index(run, parts)

    run_everything(recon, "c-rest")
    want, _ = oracle(recon)
    assert comparable(indexed_state(recon)) == want


def test_two_runs_claiming_at_once_never_take_the_same_batch(recon):
    land(recon, batches=6)
    pipeline.register_batches(recon.ctx)
    # DynamoDB applies each conditional write atomically; moto needs the wrapper for that (see it).
    racing = dataclasses.replace(recon.ctx, dynamodb=AtomicWrites(recon.ctx.dynamodb))
    plans: dict[str, dict | None] = {}
    barrier = threading.Barrier(3)

    def claim(run_id: str) -> None:
        barrier.wait()
        plans[run_id] = pipeline.plan_stateless(racing, run_id, 6)

    threads = [threading.Thread(target=claim, args=(f"race-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [batch for plan in plans.values() if plan for batch in plan["batches"]]
    assert len(claimed) == len(set(claimed)) == 6


def test_overlapping_stateful_runs_give_the_serial_result(recon):
    """Run 2 prefetches while run 1 has processed but not indexed; run 3 prefetches while run 2 is half
    indexed. The in-flight join must still give every key its serial result."""
    ctx = recon.ctx
    land(recon, batches=3)
    recon.stateless("d-stateless-1", max_batches=1)
    run1 = recon.begin("d-stateful-1")
    recon.prefetch(run1)
    parts1 = recon.process(run1)

    recon.stateless("d-stateless-2", max_batches=1)
    run2 = recon.begin("d-stateful-2")
    assert recon.ctx.storage.read_json(run2["spec_uri"])["inflight_state_uris"] == [
        pipeline.state_uri(ctx, 1)
    ]
    recon.prefetch(run2)  # the index knows nothing of run 1 yet
    with pytest.raises(StageError, match="cannot index before run 1"):
        recon.index(run2, [])
    recon.index(run1, parts1)
    parts2 = recon.process(run2)

    recon.stateless("d-stateless-3", max_batches=1)
    run3 = recon.begin("d-stateful-3")
    pipeline.index_part_file(ctx, run2["seq"], parts2[0])  # run 2 half indexed
    recon.prefetch(run3)
    recon.index(run2, parts2)
    recon.index(run3, recon.process(run3))

    overlapped = comparable(indexed_state(recon))
    want, _ = oracle(recon)
    assert overlapped == want


def test_process_waits_for_the_previous_run(recon):
    land(recon, batches=2)
    recon.stateless("e-stateless-1", max_batches=1)
    run1 = recon.begin("e-stateful-1")
    recon.stateless("e-stateless-2", max_batches=1)
    run2 = recon.begin("e-stateful-2")
    recon.prefetch(run2)
    assert not pipeline.previous_run_reached(recon.ctx, run2["seq"], "PROCESSED")
    with pytest.raises(StageError, match="cannot process before run 1"):
        recon.process(run2)
    recon.prefetch(run1)
    recon.index(run1, recon.process(run1))
    recon.index(run2, recon.process(run2))
    want, _ = oracle(recon)
    assert comparable(indexed_state(recon)) == want


def test_reindexing_an_older_run_by_hand_never_overwrites_newer_versions(recon):
    land(recon, batches=2)
    run_everything(recon, "f", max_batches=1)
    newest = index_items(recon)
    part_files_of_run_1 = recon.ctx.storage.read_json(join(pipeline.state_uri(recon.ctx, 1), "_COMMITTED"))

    stats = [
        pipeline.index_part_file(recon.ctx, 1, part["uri"]) for part in part_files_of_run_1["part_files"]
    ]
    assert sum(s["skipped_newer"] for s in stats) > 0
    assert index_items(recon) == newest


def test_bad_max_batches_is_rejected_before_anything_is_claimed(recon):
    land(recon, batches=2)
    pipeline.register_batches(recon.ctx)
    with pytest.raises(ValueError, match="max_batches"):
        pipeline.plan_stateless(recon.ctx, "g-1", 0)
    counts = ledger.count_by_state(recon.ctx.dynamodb, recon.ctx.settings.ledger_table)
    assert counts["PENDING"] == 2 and counts["CLAIMED"] == 0


def test_status_reports_backlog_and_the_latest_complete_window(recon):
    land(recon, batches=6)  # 10-minute batches: one complete hour
    recon.stateless("h-stateless-1", max_batches=6)
    before = ledger.status(recon.ctx.dynamodb, recon.ctx.settings.ledger_table, 60, datetime.now(UTC))
    assert before.as_dict()["latest_complete_window"] is None
    recon.stateful("h-stateful-1")
    after = ledger.status(recon.ctx.dynamodb, recon.ctx.settings.ledger_table, 60, datetime.now(UTC))
    text = ledger.format_status(after)
    assert "2024-03-05T10:00:00Z" in text
    assert after.as_dict()["latest_complete_window"] == ["2024-03-05T10:00:00Z", "2024-03-05T11:00:00Z"]
