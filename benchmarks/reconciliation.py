"""Benchmark: the batch reconciliation pipeline against the legacy transactional design, in the same run.

Data: 1,000,000 events over 100,000 order keys (Zipf-skewed: a few hot orders take a large share), in 5
landed batches, with redeliveries, late corrections and 1% malformed rows (the generator of
``dataplatform.reconciliation.generator``).

- **pipeline**: its local mode, as ``make demo`` runs it: local Spark (``local[2]``, the local backend's
  conf: the locked hadoop-aws jars, S3A on the moto endpoint) reading the landed batches from and writing
  its part files to ``s3://`` on the moto server, the ledger and the artifact index in DynamoDB there. Each batch goes through
  one stateless run and one stateful run (prefetch -> process -> index), as five 10-minute schedules
  would.
- **baseline** (the legacy design, written here for the comparison): per event, read-modify-write one
  S3 object per artifact (GET, apply, PUT) against the moto server, with the applied event ids kept in
  the object for idempotence. It runs on the first ``--baseline-events`` lines of the same batches;
  rates are compared. moto answers in about a millisecond where S3 takes 10-30 ms, which flatters the
  baseline.

Object writes are PUTs (baseline) and the objects under the pipeline's work prefix at the end (S3A's
FileOutputCommitter also copies each part file twice on its way there: task commit, then job commit). Reads are requests through the storage layer:
ranged GETs of the prefetch plus whole-object reads of specs and stats.

Then (issue 16), unless ``--latency-ms 0``: the same again with a modelled S3 latency (20 ms by default,
uniform 0.5x-1.5x) on every S3 request, added by the local endpoint (``FaultPlan.latency_services``) so
that it reaches every S3 client alike: the baseline's boto3 client, the pipeline's Python clients and
Spark's S3A in the JVM, which a client-side hook (``benchmarks/modelled_latency.py``) cannot reach.
DynamoDB's requests get none. The modelled pass has its own ledger, index and work area (the landed
batches are shared) and runs the baseline on ``--modelled-baseline-events`` lines (two S3 requests a line,
sequential: 50,000 lines would take over half an hour). It runs second, on a warm JVM: at small scales
(a few seconds of Spark per run) its pipeline is faster than the plain pass's for that reason alone, so
compare ``modelled_speedup`` with ``throughput_x`` only at the full scale. Keys: ``modelled_latency_ms``,
``modelled_speedup`` (events/s against the baseline's, both modelled), ``modelled_pipeline_*``,
``modelled_baseline_*``.

    .venv/bin/python benchmarks/reconciliation.py [--events 1000000] [--keys 100000] [--batches 5]
        [--baseline-events 50000] [--latency-ms 20] [--modelled-baseline-events 2000]

Targets (issue #3): object writes per event <= 0.2% of the baseline's, events/s >= 20x the baseline's,
prefetch GETs per prefetched artifact <= 0.2, driver memory flat in the number of keys (the state is
never collected to the driver: the figures per run show the driver's JVM heap and Python RSS). Issue #12
raised them to >= 40x and <= 0.05% with the dedup index by id bucket; ``seen_folders_read`` per run is
its lookup cost (folders of older groups' ``seen/`` read, at most 8 a group).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("DATAPLATFORM_CONFIG", str(REPO / "include" / "config" / "local.yaml"))

from dataplatform.config import settings  # noqa: E402
from dataplatform.devstack.faults import FaultPlan  # noqa: E402
from dataplatform.devstack.moto_server import MotoServer  # noqa: E402
from dataplatform.reconciliation import pipeline  # noqa: E402
from dataplatform.reconciliation.generator import GeneratorConfig, write_batches  # noqa: E402
from dataplatform.reconciliation.local_runner import LocalRunner  # noqa: E402
from dataplatform.spark import local_session  # noqa: E402
from spark_jobs.common.dynamo import client as aws_client  # noqa: E402
from spark_jobs.common.storage import Storage, join, split_s3  # noqa: E402

START = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
EVENT_TYPES = ("receivable", "payable", "royalty", "amortization", "remittance", "correction")
FIELDS = ("event_id", "artifact_key", "entity", "event_type", "amount", "currency", "event_time")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the legacy transactional baseline ------------------------------------------------------------------


def legacy_apply(s3, bucket: str, line: str, counts: dict[str, int]) -> None:
    """One event, the legacy way: GET the order's object, apply the event, PUT it back."""
    try:
        event = json.loads(line)
        if not isinstance(event, dict) or not all(event.get(field) for field in FIELDS if field != "amount"):
            raise ValueError("missing field")
        key, event_type, amount = event["artifact_key"], event["event_type"], event["amount"]
        currency = event["currency"]
        if event_type not in EVENT_TYPES or not isinstance(amount, int) or isinstance(amount, bool):
            raise ValueError(event_type)
    except (ValueError, KeyError, TypeError):
        counts["malformed"] += 1
        return
    object_key = f"legacy/artifacts/{key}.json"
    try:
        artifact = json.loads(s3.get_object(Bucket=bucket, Key=object_key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        artifact = {"key": key, "version": 0, "event_ids": [], "totals": {}}
    counts["gets"] += 1
    if event["event_id"] in artifact["event_ids"]:
        counts["duplicates"] += 1
        return
    totals = artifact["totals"].setdefault(currency, dict.fromkeys(EVENT_TYPES, 0))
    totals[event_type] += amount
    artifact["event_ids"].append(event["event_id"])
    artifact["version"] += 1
    s3.put_object(Bucket=bucket, Key=object_key, Body=json.dumps(artifact).encode())
    counts["puts"] += 1


def landed_lines(storage: Storage, landing: str, events: int) -> list[str]:
    """The first ``events`` lines of the landed batches, in batch order."""
    lines: list[str] = []
    for batch_id in storage.list_children(landing):
        manifest = storage.read_json(join(landing, batch_id, "_manifest.json"))
        for name in manifest["files"]:
            lines.extend(storage.read_bytes(join(landing, batch_id, name)).decode().splitlines())
            if len(lines) >= events:
                return lines[:events]
    return lines


def run_baseline(s3, lines: list[str], bucket: str = "legacy-recon-bench") -> dict:
    s3.create_bucket(Bucket=bucket)
    counts = {"gets": 0, "puts": 0, "malformed": 0, "duplicates": 0}
    started = time.perf_counter()
    for number, line in enumerate(lines, start=1):
        legacy_apply(s3, bucket, line, counts)
        if number % 10_000 == 0:
            log(f"  baseline: {number:,} events, {number / (time.perf_counter() - started):,.0f} events/s")
    seconds = time.perf_counter() - started
    return {"events": len(lines), "seconds": seconds, **counts}


# -- the pipeline ---------------------------------------------------------------------------------------


def driver_memory(spark) -> dict[str, float]:
    runtime = spark._jvm.java.lang.Runtime.getRuntime()
    spark._jvm.java.lang.System.gc()
    return {
        "jvm_heap_used_mb": round((runtime.totalMemory() - runtime.freeMemory()) / 2**20, 1),
        "python_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_pipeline(runner: LocalRunner, batches: int) -> dict:
    totals = {
        "events": 0,
        "prefetched_artifacts": 0,
        "prefetch_reads": 0,
        "index_writes": 0,
        "index_write_calls": 0,
        "artifacts_written": 0,
    }
    per_run = []
    started = time.perf_counter()
    for number in range(1, batches + 1):
        run_started = time.perf_counter()
        plan = runner.stateless(f"bench-stateless-{number}", max_batches=1)
        stateless_seconds = time.perf_counter() - run_started
        report = runner.stateful(f"bench-stateful-{number}")
        totals["events"] += plan["stats"]["input_rows"]
        totals["prefetched_artifacts"] += report["prefetch"]["prefetched_artifacts"]
        totals["prefetch_reads"] += report["prefetch"]["range_reads"]
        totals["index_writes"] += report["index"]["written"]
        totals["index_write_calls"] += report["index"]["batch_calls"]
        totals["artifacts_written"] += report["process"]["artifacts_written"]
        figures = {
            "run": number,
            "events": plan["stats"]["input_rows"],
            "seen_folders_read": plan["stats"]["seen_folders_read"],
            "touched_keys": report["prefetch"]["touched_keys"],
            "prefetched": report["prefetch"]["prefetched_artifacts"],
            "range_reads": report["prefetch"]["range_reads"],
            "stateless_s": round(stateless_seconds, 1),
            "run_s": round(time.perf_counter() - run_started, 1),
            **driver_memory(runner.spark),
        }
        per_run.append(figures)
        log(f"  pipeline run {number}: {figures}")
    totals["seconds"] = time.perf_counter() - started
    totals["object_writes"] = len(runner.ctx.storage.list_files(runner.ctx.settings.work_uri))
    totals["reads"] = runner.ctx.storage.stats.as_dict()["reads"] + totals["prefetch_reads"]
    totals["per_run"] = per_run
    return totals


def run_both(moto, spark, storage, landing: str, work: str, suffix: str, batches: int, baseline_events: int):
    """The pipeline on every landed batch (its own ledger, index and work area, so a second pass starts
    from nothing), then the baseline on the first ``baseline_events`` lines: (pipeline, baseline)."""
    recon = settings().reconciliation
    config = recon.model_copy(
        update={
            "landing_uri": landing,
            "work_uri": work,
            "ledger_table": recon.ledger_table + suffix,
            "index_table": recon.index_table + suffix,
        }
    )
    ctx = pipeline.ReconContext(
        settings=config,
        dynamodb=aws_client("dynamodb", moto.url, "us-east-1"),
        storage=Storage(aws_client("s3", moto.url, "us-east-1")),
        region="us-east-1",
        aws_endpoint_url=moto.url,
    )
    log(f"pipeline{suffix} ...")
    # The jobs print a summary line each: keep stdout to the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        piped = run_pipeline(LocalRunner(ctx, spark), batches)
    log(f"baseline{suffix} on the first {baseline_events:,} lines ...")
    lines = landed_lines(storage, landing, baseline_events)
    base = run_baseline(
        aws_client("s3", moto.url, "us-east-1"), lines, f"legacy-recon-bench{suffix.replace('_', '-')}"
    )
    return piped, base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--baseline-events", type=int, default=50_000)
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="modelled S3 latency of the second pass (0: no second pass)",
    )
    parser.add_argument(
        "--modelled-baseline-events",
        type=int,
        default=2_000,
        help="lines of the baseline's modelled pass (two S3 requests a line: 50,000 would take ~35 min)",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="recon-bench-"))
    landing, work = "s3://recon-bench/landing/", "s3://recon-bench/work/"
    with MotoServer(log_path=tmp / "moto.log") as moto:
        storage = Storage(aws_client("s3", moto.url, "us-east-1"))
        storage.s3.create_bucket(Bucket=split_s3(landing)[0])
        log(f"generating {args.events:,} events over {args.keys:,} keys in {args.batches} batches ...")
        generated = time.perf_counter()
        write_batches(
            storage,
            landing,
            GeneratorConfig(
                seed=2024,
                n_keys=args.keys,
                events_per_batch=args.events // args.batches,
                files_per_batch=4,
            ),
            batches=args.batches,
            start=START,
        )
        log(f"  generated in {time.perf_counter() - generated:.0f}s")

        # S3A reads the credentials from the environment (set above), as under the local backend.
        spark = local_session(
            "recon-bench",
            {},
            moto.url,
            "us-east-1",
            {"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "4g"},
        )
        piped, base = run_both(moto, spark, storage, landing, work, "", args.batches, args.baseline_events)
        modelled = None
        if args.latency_ms > 0:
            # Every S3 request from here on waits the modelled latency in the endpoint, whoever sends it:
            # the baseline's client, the pipeline's Python clients and Spark's S3A. DynamoDB's do not.
            moto.set_faults(FaultPlan(latency_ms=args.latency_ms, latency_services=("s3",)))
            log(f"modelled pass: {args.latency_ms:g} ms (0.5x-1.5x) per S3 request ...")
            modelled = run_both(
                moto, spark, storage, landing, work.replace("/work/", "/work-modelled/"), "_modelled",
                args.batches, args.modelled_baseline_events,
            )  # fmt: skip
            moto.set_faults(None)
        spark.stop()

    pipeline_rate = piped["events"] / piped["seconds"]
    baseline_rate = base["events"] / base["seconds"]
    writes_per_event = piped["object_writes"] / piped["events"]
    baseline_writes_per_event = base["puts"] / base["events"]
    result = {
        "benchmark": "reconciliation",
        "keys": args.keys,
        "batches": args.batches,
        "pipeline_events": piped["events"],
        "pipeline_seconds": round(piped["seconds"], 1),
        "pipeline_events_per_s": round(pipeline_rate, 1),
        "pipeline_object_writes": piped["object_writes"],
        "pipeline_reads": piped["reads"],
        "pipeline_index_writes": piped["index_writes"],
        "pipeline_index_write_calls": piped["index_write_calls"],
        "pipeline_artifacts_written": piped["artifacts_written"],
        "baseline_events": base["events"],
        "baseline_seconds": round(base["seconds"], 1),
        "baseline_events_per_s": round(baseline_rate, 1),
        "baseline_object_writes": base["puts"],
        "baseline_reads": base["gets"],
        "baseline_index_writes": 0,
        "prefetched_artifacts": piped["prefetched_artifacts"],
        "prefetch_reads": piped["prefetch_reads"],
        "prefetch_reads_per_artifact": round(
            piped["prefetch_reads"] / max(1, piped["prefetched_artifacts"]), 4
        ),
        "object_writes_per_event_vs_baseline_pct": round(
            100 * writes_per_event / baseline_writes_per_event, 4
        ),
        "throughput_x": round(pipeline_rate / baseline_rate, 1),
        "driver_per_run": piped["per_run"],
    }
    if modelled is not None:
        m_piped, m_base = modelled
        m_rate, m_base_rate = m_piped["events"] / m_piped["seconds"], m_base["events"] / m_base["seconds"]
        result |= {
            "modelled_latency_ms": args.latency_ms,
            "modelled_latency_applies_to": "every S3 request of both sides, Spark's S3A included "
            "(in the endpoint, uniform 0.5x-1.5x); not DynamoDB's",
            "modelled_pipeline_seconds": round(m_piped["seconds"], 1),
            "modelled_pipeline_events_per_s": round(m_rate, 1),
            "modelled_baseline_events": m_base["events"],
            "modelled_baseline_seconds": round(m_base["seconds"], 1),
            "modelled_baseline_events_per_s": round(m_base_rate, 1),
            "modelled_speedup": round(m_rate / m_base_rate, 1),
            "modelled_object_writes_per_event_vs_baseline_pct": round(
                100 * (m_piped["object_writes"] / m_piped["events"]) / (m_base["puts"] / m_base["events"]), 4
            ),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
