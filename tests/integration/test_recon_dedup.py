"""Deduplication by event id across stateless groups, through the real pipeline (local Spark, DynamoDB on
moto, file:// landing and work areas): an id re-sent with another event time is recognised within
``dedup_horizon_days`` of the group that applied it, applied again after it, and groups whose ``seen/``
index was written in the layout before the id buckets (by event date) are still read.

Results are read from the artifacts themselves: the index item in DynamoDB, then the bytes it points at
in the part file, and a scan of every part file on disk; never the ledger's or the job's counters.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from dataplatform.reconciliation.generator import GeneratedBatch, batch_id_for, write_batch
from dataplatform.reconciliation.local_runner import LocalRunner
from tests.reconciliation_oracle import expected, read_landing, without_run_fields

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.fixture
def recon(recon_on_file):
    """These tests read part files and rewrite ``seen/`` folders on disk, behind the pipeline's back: the
    file:// layout (the S3 one is tested in test_recon_pipeline.py)."""
    return recon_on_file


KEY = "ORD-X"
RESENT_ID = "evt-X"
FIRST_WINDOW = datetime(2024, 2, 20, 10, 0, tzinfo=UTC)
LATER_WINDOWS = [datetime(2024, 3, 5, 10, 0, tzinfo=UTC) + timedelta(minutes=10 * n) for n in range(4)]


def line(event_id: str, key: str, event_type: str, amount: int, event_time: str) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "artifact_key": key,
            "entity": "AMZN_US",
            "event_type": event_type,
            "amount": amount,
            "currency": "USD",
            "event_time": event_time,
        }
    )


# Batch 1: the receivable X and its remittance, both dated 2024-02-20. Batches 2-4: other orders.
# Batch 5: X again, byte for byte but for its event_time (2024-03-05), and nothing else of 2024-02-20.
BATCH_1 = [
    line(RESENT_ID, KEY, "receivable", 8000, "2024-02-20T10:01:00Z"),
    line("evt-R", KEY, "remittance", 8000, "2024-02-20T10:02:00Z"),
]
FILLER = [[line(f"evt-F{n}", f"ORD-F{n}", "receivable", 100 * n, "2024-03-05T10:05:00Z")] for n in (2, 3, 4)]
BATCH_5 = [
    line(RESENT_ID, KEY, "receivable", 8000, "2024-03-05T11:25:00Z"),
    line("evt-F5", "ORD-F5", "payable", 70, "2024-03-05T11:26:00Z"),
]


def land(runner: LocalRunner, window_start: datetime, lines: list[str]) -> str:
    batch_id = batch_id_for(window_start)
    batch = GeneratedBatch(0, batch_id, window_start, window_start + timedelta(minutes=10), lines)
    write_batch(runner.ctx.storage, runner.ctx.settings.landing_uri, batch, files=1)
    return batch_id


def land_all(runner: LocalRunner) -> None:
    land(runner, FIRST_WINDOW, BATCH_1)
    for window, lines in zip(LATER_WINDOWS, [*FILLER, BATCH_5], strict=True):
        land(runner, window, lines)


def process(runner: LocalRunner, run_id: str, batches: int, now: datetime | None = None) -> dict:
    """One stateless run of the ``batches`` oldest pending batches, then one stateful run."""
    plan = runner.stateless(f"{run_id}-stateless", max_batches=batches, now=now)
    assert plan is not None, "nothing was pending"
    assert runner.stateful(f"{run_id}-stateful") is not None
    return plan


def work_dir(runner: LocalRunner) -> Path:
    return Path(urlparse(runner.ctx.settings.work_uri).path)


def artifact_by_index(runner: LocalRunner, key: str) -> dict:
    """The artifact the index entry of ``key`` points at: the raw DynamoDB item, then those bytes of the
    part file read straight from disk."""
    ctx = runner.ctx
    item = ctx.dynamodb.get_item(
        TableName=ctx.settings.index_table, Key={"artifact_key": {"S": key}}, ConsistentRead=True
    )["Item"]
    with open(urlparse(item["file"]["S"]).path, "rb") as part:
        part.seek(int(item["offset"]["N"]))
        artifact = json.loads(part.read(int(item["length"]["N"])))
    assert artifact["key"] == key and artifact["version"] == int(item["version"]["N"])
    return artifact


def newest_in_part_files(runner: LocalRunner) -> dict[str, dict]:
    """The highest version of every artifact found in any part file under ``state/`` on disk."""
    newest: dict[str, dict] = {}
    for part in sorted((work_dir(runner) / "state").rglob("part-*")):
        if part.name.endswith(".crc"):
            continue
        for raw in part.read_bytes().splitlines():
            artifact = json.loads(raw)
            if artifact["version"] > newest.get(artifact["key"], {"version": 0})["version"]:
                newest[artifact["key"]] = artifact
    return newest


def usd(artifact: dict) -> dict:
    (total,) = artifact["totals"]
    assert total["currency"] == "USD"
    return total


def files_and_index(runner: LocalRunner) -> tuple[dict, list]:
    ctx = runner.ctx
    items = [
        item
        for page in ctx.dynamodb.get_paginator("scan").paginate(TableName=ctx.settings.index_table)
        for item in page["Items"]
    ]
    files = {path: path.read_bytes() for path in sorted(work_dir(runner).rglob("*")) if path.is_file()}
    return files, sorted(items, key=lambda item: item["artifact_key"]["S"])


def test_an_event_resent_with_a_moved_event_date_is_applied_once(recon):
    land_all(recon)
    assert process(recon, "x1", 1)["batches"] == [batch_id_for(FIRST_WINDOW)]
    process(recon, "x2", 3)
    assert process(recon, "x3", 1)["batches"] == [batch_id_for(LATER_WINDOWS[-1])]

    artifact = artifact_by_index(recon, KEY)
    assert usd(artifact)["receivable"] == 8000 and usd(artifact)["remittance"] == 8000
    assert usd(artifact)["balance"] == 0 and artifact["status"] == "RECONCILED"
    # Batch 5 brought nothing new to the order: the artifact is the one batch 1 made.
    assert artifact["batches"] == [batch_id_for(FIRST_WINDOW)] and artifact["event_count"] == 2
    assert artifact["version"] == 1
    assert newest_in_part_files(recon)[KEY] == artifact
    want, _ = expected(read_landing(recon.ctx.settings.landing_uri, recon.ctx.storage.s3))
    assert {k: without_run_fields(a) for k, a in newest_in_part_files(recon).items()} == want

    # The same Airflow runs again: nothing changes, on disk or in the index.
    before = files_and_index(recon)
    process(recon, "x3", 1)
    assert files_and_index(recon) == before


def test_an_event_resent_after_the_dedup_horizon_is_applied_again(recon):
    """Dedup looks back ``dedup_horizon_days`` from the run, over the groups committed since: an id that
    comes back within that time is dropped; one that comes back later is a new event."""
    horizon = timedelta(days=recon.ctx.settings.dedup_horizon_days)
    first_run = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    land(recon, FIRST_WINDOW, BATCH_1)
    process(recon, "h1", 1, now=first_run)

    # Just inside the horizon: dropped.
    land(recon, LATER_WINDOWS[0], [BATCH_5[0]])
    process(recon, "h2", 1, now=first_run + horizon - timedelta(minutes=1))
    assert usd(artifact_by_index(recon, KEY))["receivable"] == 8000

    # Past it: applied again, as the README says.
    land(recon, LATER_WINDOWS[1], [BATCH_5[0]])
    process(recon, "h3", 1, now=first_run + horizon + timedelta(minutes=1))
    artifact = artifact_by_index(recon, KEY)
    assert usd(artifact)["receivable"] == 16000 and usd(artifact)["balance"] == 8000
    assert artifact["status"] == "OPEN"
    assert artifact["batches"] == [batch_id_for(FIRST_WINDOW), batch_id_for(LATER_WINDOWS[1])]
    assert newest_in_part_files(recon)[KEY] == artifact

    # The oracle, told when each batch was processed, agrees.
    processed_at = {
        batch_id_for(FIRST_WINDOW): first_run,
        batch_id_for(LATER_WINDOWS[0]): first_run + horizon - timedelta(minutes=1),
        batch_id_for(LATER_WINDOWS[1]): first_run + horizon + timedelta(minutes=1),
    }
    want, _ = expected(
        read_landing(recon.ctx.settings.landing_uri, recon.ctx.storage.s3),
        processed_at=processed_at,
        horizon=horizon,
    )
    assert without_run_fields(artifact) == want[KEY]


def rewrite_seen_by_event_date(spark, group_dir: Path) -> None:
    """Turn a group's ``seen/`` into the layout jobs wrote before the id buckets: the same rows,
    partitioned by ``event_date`` (as a lake deployed before this change holds it)."""
    seen = group_dir / "seen"
    ids = spark.read.schema("event_id string, event_date string").parquet(str(seen)).collect()
    rows = [(row["event_id"], row["event_date"]) for row in ids]
    assert rows, f"{seen} holds no ids"
    shutil.rmtree(seen)
    (
        spark.createDataFrame(rows, "event_id string, event_date string")
        .repartition("event_date")
        .write.partitionBy("event_date")
        .parquet(str(seen))
    )
    assert sorted(path.name for path in seen.iterdir() if path.is_dir()) == sorted(
        {f"event_date={date}" for _, date in rows}
    )


def test_seen_ids_written_in_the_event_date_layout_are_still_recognised(recon, spark):
    land_all(recon)
    first = process(recon, "o1", 1)
    process(recon, "o2", 3)
    # Group 1 (holding X, dated 2024-02-20) in the old layout; group 2 stays in the new one.
    rewrite_seen_by_event_date(spark, work_dir(recon) / "stateless" / first["group_id"])

    process(recon, "o3", 1)
    artifact = artifact_by_index(recon, KEY)
    assert usd(artifact)["receivable"] == 8000 and artifact["status"] == "RECONCILED"
    assert artifact["version"] == 1
    want, _ = expected(read_landing(recon.ctx.settings.landing_uri, recon.ctx.storage.s3))
    assert {k: without_run_fields(a) for k, a in newest_in_part_files(recon).items()} == want
