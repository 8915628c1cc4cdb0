"""Benchmark: register 10,000 new partitions with the loader vs one CreatePartition call per partition,
and the same partitions arriving as S3 events (issue 16).

Everything runs in the same process against the same moto server, on identical tables over the same S3
prefixes: the loader (discover mode: S3 listing, GetPartitions existence check, BatchCreatePartition 100
a call) and the baseline (the same S3 discovery code, then one CreatePartition call per partition). Then
the loader runs again with nothing new. Then the events side (``glue/events.py``): the bucket's
ObjectCreated notifications, which moto's S3 delivered to the table's SQS queue while the lake was
written (set up before it by ``ensure_event_queue``), drained into the same partitions (ReceiveMessage 10
a call, BatchGetPartition, BatchCreatePartition 100 a call, DeleteMessageBatch 10 a call), then drained
again with the queue empty. Each partition holds a data file and a ``_SUCCESS`` marker, as Spark leaves it
(two events a partition); ``--empty`` more hour prefixes hold only writer leftovers (``_SUCCESS`` and a
failed attempt under ``_temporary/``), which every side must skip without a listing per partition.

Two passes, each on its own tables and queue: without and with a modelled latency (``--latency-ms``, 20
by default: every S3, SQS and Glue request of every side first sleeps that long, a botocore
``before-send`` hook, ``benchmarks/modelled_latency.py``). On moto a request costs about a millisecond of
the server's CPU (an S3 listing scans the whole bucket); in AWS it costs 10-30 ms of waiting, which
concurrent requests overlap: the modelled pass shows what a design does about round trips, though the
moto CPU stays in both. moto delivers every object's event to both passes' queues (AWS would refuse two
configurations over the same prefix and events; here it gives each pass the same events).

Prints one JSON line: the plain pass's figures under the keys of issue 2 (``speedup`` end to end,
``register_speedup`` for the Glue part alone, ``rerun_*``), the events side (``events_list_calls``,
``events_glue_write_calls``, ``events_seconds``, ...), and the modelled pass's (``modelled_latency_ms``,
``modelled_speedup``, ``modelled_rerun_seconds``, ``modelled_events_*``, ...).

    .venv/bin/python benchmarks/glue_partitions.py [--partitions 10000] [--empty 100] [--latency-ms 20]

Targets (issue #2): loader <= 100 write calls for 10,000 partitions and >= 20x faster than the baseline;
a rerun with nothing new makes 0 write calls and at most 10 read calls. "read/write calls" count Glue
API calls; the S3 listing calls are reported separately. Issue 16: events mode 0 list calls and <= 100
Glue writes; with the model, the loader >= 20x the baseline and a discover rerun <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from benchmarks.modelled_latency import DEFAULT_LATENCY_MS, add_latency  # noqa: E402
from dataplatform.config import GlueTable  # noqa: E402
from dataplatform.devstack.airflow_env import airflow_env  # noqa: E402
from dataplatform.devstack.moto_server import MotoServer  # noqa: E402
from dataplatform.devstack.seed import create_table, ensure_bucket  # noqa: E402
from dataplatform.glue.layout import PartitionLayout  # noqa: E402

WRITE_PREFIXES = ("Create", "BatchCreate", "Update", "BatchUpdate", "Delete", "BatchDelete")
# An empty queue answers a long poll after this wait; the drain ends on the first empty answer.
EVENTS_WAIT_SECONDS = 1


def table(name: str, **events) -> GlueTable:
    return GlueTable(
        database="bench",
        table=name,
        location="s3://bench-lake/events/",
        granularity="hour",
        partition_keys=[{"name": "dt", "format": "%Y-%m-%d"}, {"name": "hour", "format": "%H"}],
        **events,
    )


def events_source(tag: str) -> GlueTable:
    """The table of one pass's events side, and its queue."""
    return table(f"events_{tag}", mode="events", events_queue=f"bench-events-{tag}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class CallCounter:
    """Counts API calls per operation on a boto3 client (before retries, i.e. what the code asked for)."""

    def __init__(self, *clients):
        self.calls: Counter[str] = Counter()
        for client in clients:
            client.meta.events.register("before-call", self._count)

    def _count(self, event_name: str, **_):
        _, service, operation = event_name.split(".")
        self.calls[f"{service}.{operation}"] += 1

    def reset(self):
        self.calls.clear()

    def glue(self, writes: bool) -> int:
        return sum(
            n
            for op, n in self.calls.items()
            if op.startswith("glue.") and op.split(".")[1].startswith(WRITE_PREFIXES) == writes
        )

    def s3_lists(self) -> int:
        return sum(n for op, n in self.calls.items() if op.startswith("s3.List"))

    def sqs(self) -> int:
        return sum(n for op, n in self.calls.items() if op.startswith("sqs."))


def seed(s3, partitions, empty, layout):
    ensure_bucket(s3, "bench-lake")

    def put(values, names):
        for name in names:
            s3.put_object(Bucket="bench-lake", Key=f"events/{layout.render(values)}{name}", Body=b"{}\n")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, partitions, [("part-00000.json", "_SUCCESS")] * len(partitions)))
        list(pool.map(put, empty, [("_SUCCESS", "_temporary/0/part-00000.json")] * len(empty)))


def add_pass_clients(latency_s: float):
    """Fresh S3, SQS and Glue clients for one pass, each request of which waits ``latency_s`` first."""
    from dataplatform import aws

    return tuple(add_latency(aws.client(service), latency_s) for service in ("s3", "sqs", "glue"))


def server_cpu_seconds(moto) -> float:
    """CPU seconds the moto server process has used so far (Linux ``/proc``): what moto's own work
    costs, which no AWS request would."""
    fields = Path(f"/proc/{moto._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_pass(moto, tag: str, latency_s: float, layout, partitions, empty) -> dict:
    """Loader (discover), baseline, discover rerun, events drain and events rerun, each on its own table
    over the same S3 prefixes; the figures of one latency."""
    from dataplatform.glue.catalog import describe_table
    from dataplatform.glue.discovery import discover
    from dataplatform.glue.events import drain
    from dataplatform.glue.loader import load_partitions

    s3, sqs, glue = add_pass_clients(latency_s)
    counter = CallCounter(s3, sqs, glue)
    loader_table, baseline_table = table(f"loader_{tag}"), table(f"baseline_{tag}")
    events_table = events_source(tag)
    for each in (loader_table, baseline_table, events_table):
        create_table(glue, each)

    # Loader: discover everything under the location and register what is missing.
    counter.reset()
    started, cpu = time.perf_counter(), server_cpu_seconds(moto)
    report = load_partitions(glue, s3, loader_table.table, loader_table, "discover")
    loader_seconds, loader_cpu = time.perf_counter() - started, server_cpu_seconds(moto) - cpu
    loader = (counter.glue(writes=True), counter.glue(writes=False), counter.s3_lists())
    assert (report.created, report.empty) == (len(partitions), len(empty)), report.summary()

    # Baseline: the same S3 discovery (same code), then one CreatePartition call per partition.
    counter.reset()
    started = time.perf_counter()
    found = discover(s3, baseline_table.location, layout)
    baseline_listed = time.perf_counter()
    descriptor = describe_table(glue, "bench", baseline_table.table)
    for values, path in found.partitions.items():
        glue.create_partition(
            DatabaseName="bench",
            TableName=baseline_table.table,
            PartitionInput=descriptor.partition_input(values, baseline_table.location + path),
        )
    baseline_seconds = time.perf_counter() - started
    baseline_register_seconds = time.perf_counter() - baseline_listed
    baseline = (counter.glue(writes=True), counter.glue(writes=False))
    assert len(found.partitions) == len(partitions)

    # Rerun with nothing new.
    counter.reset()
    started, cpu = time.perf_counter(), server_cpu_seconds(moto)
    rerun = load_partitions(glue, s3, loader_table.table, loader_table, "discover")
    rerun_seconds, rerun_cpu = time.perf_counter() - started, server_cpu_seconds(moto) - cpu
    assert rerun.created == 0, rerun.summary()
    rerun_calls = (counter.glue(writes=True), counter.glue(writes=False), counter.s3_lists())

    # Events: the same partitions, announced by S3's notifications while the lake was written.
    counter.reset()
    started, cpu = time.perf_counter(), server_cpu_seconds(moto)
    drained = drain(glue, sqs, events_table.table, events_table, wait_seconds=EVENTS_WAIT_SECONDS)
    events_seconds, events_cpu = time.perf_counter() - started, server_cpu_seconds(moto) - cpu
    assert (drained.created, drained.messages_deleted) == (len(partitions), drained.messages_received), (
        drained.summary()
    )
    events_calls = (counter.glue(writes=True), counter.glue(writes=False), counter.s3_lists(), counter.sqs())
    counter.reset()
    started = time.perf_counter()
    events_rerun = drain(glue, sqs, events_table.table, events_table, wait_seconds=EVENTS_WAIT_SECONDS)
    events_rerun_seconds = time.perf_counter() - started
    assert events_rerun.messages_received == 0, events_rerun.summary()

    return {
        "empty_partitions": report.empty,
        "loader_write_calls": loader[0],
        "loader_read_calls": loader[1],
        "loader_s3_list_calls": loader[2],
        "loader_seconds": round(loader_seconds, 2),
        "loader_moto_cpu_seconds": round(loader_cpu, 2),
        "loader_s3_seconds": report.s3_seconds,
        "loader_register_seconds": report.glue_seconds,
        "baseline_write_calls": baseline[0],
        "baseline_read_calls": baseline[1],
        "baseline_seconds": round(baseline_seconds, 2),
        "baseline_register_seconds": round(baseline_register_seconds, 2),
        "speedup": round(baseline_seconds / loader_seconds, 1),
        "register_speedup": round(baseline_register_seconds / report.glue_seconds, 1),
        "rerun_write_calls": rerun_calls[0],
        "rerun_read_calls": rerun_calls[1],
        "rerun_s3_list_calls": rerun_calls[2],
        "rerun_seconds": round(rerun_seconds, 2),
        "rerun_moto_cpu_seconds": round(rerun_cpu, 2),
        "events_messages": drained.messages_received,
        "events_list_calls": events_calls[2],
        "events_glue_write_calls": events_calls[0],
        "events_glue_read_calls": events_calls[1],
        "events_sqs_calls": events_calls[3],
        "events_seconds": round(events_seconds, 2),
        "events_moto_cpu_seconds": round(events_cpu, 2),
        "events_rerun_seconds": round(events_rerun_seconds, 2),
        "events_rerun_glue_calls": counter.glue(writes=True) + counter.glue(writes=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--empty", type=int, default=100, help="hour prefixes with only writer leftovers")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=DEFAULT_LATENCY_MS,
        help="modelled latency of each S3, SQS and Glue request in the modelled pass (0: no modelled pass)",
    )
    args = parser.parse_args()
    latencies = {"plain": 0.0} | ({"modelled": args.latency_ms / 1000} if args.latency_ms > 0 else {})

    home = Path(tempfile.mkdtemp(prefix="bench-glue-"))
    with MotoServer(log_path=home / "moto.log") as moto:
        os.environ.update(airflow_env(home, moto.url))
        from dataplatform import aws
        from dataplatform.glue.events import ensure_event_queue

        s3, sqs = aws.client("s3"), aws.client("sqs")
        layout = PartitionLayout(table("any"))
        start = datetime(2022, 1, 1)
        end = start + timedelta(hours=args.partitions)
        partitions = layout.values_for_interval(start, end)
        empty = layout.values_for_interval(end, end + timedelta(hours=args.empty)) if args.empty else []
        ensure_bucket(s3, "bench-lake")
        # Each pass drains its own queue: moto delivers every object's event to both (AWS would refuse two
        # configurations over the same prefix and events; here it gives each pass the same 20,200 events).
        for tag in latencies:
            ensure_event_queue(sqs, s3, f"events_{tag}", events_source(tag))
        log(f"seeding {len(partitions):,} partitions and {len(empty)} leftover-only prefixes ...")
        seed(s3, partitions, empty, layout)
        figures = {}
        for tag, latency_s in latencies.items():
            log(f"{tag} pass ({latency_s * 1000:g} ms per S3 / SQS / Glue request) ...")
            figures[tag] = run_pass(moto, tag, latency_s, layout, partitions, empty)
            log(f"  {figures[tag]}")

    plain = figures["plain"]
    result = {"benchmark": "glue_partitions", "partitions": len(partitions), **plain}
    if "modelled" in figures:
        modelled = figures["modelled"]
        result |= {
            "modelled_latency_ms": args.latency_ms,
            "modelled_latency_applies_to": "every S3, SQS and Glue request of every side",
            "modelled_speedup": modelled["speedup"],
            "modelled_rerun_seconds": modelled["rerun_seconds"],
            "modelled_rerun_moto_cpu_seconds": modelled["rerun_moto_cpu_seconds"],
            "modelled_loader_seconds": modelled["loader_seconds"],
            "modelled_loader_s3_seconds": modelled["loader_s3_seconds"],
            "modelled_baseline_seconds": modelled["baseline_seconds"],
            "modelled_register_speedup": modelled["register_speedup"],
            "modelled_events_seconds": modelled["events_seconds"],
            "modelled_events_sqs_calls": modelled["events_sqs_calls"],
            "modelled_events_list_calls": modelled["events_list_calls"],
            "modelled_events_glue_write_calls": modelled["events_glue_write_calls"],
            "modelled_events_rerun_seconds": modelled["events_rerun_seconds"],
        }
    result["targets_met"] = targets(result)
    print(json.dumps(result))


def targets(result: dict) -> dict:
    met = {
        "write_calls_le_100": result["loader_write_calls"] <= 100,
        "speedup_ge_20x": result["speedup"] >= 20,
        "register_speedup_ge_20x": result["register_speedup"] >= 20,
        "rerun_0_writes": result["rerun_write_calls"] == 0,
        "rerun_reads_le_10": result["rerun_read_calls"] <= 10,
        "events_0_list_calls": result["events_list_calls"] == 0,
        "events_glue_writes_le_100": result["events_glue_write_calls"] <= 100,
    }
    if "modelled_speedup" in result:
        met |= {
            "modelled_speedup_ge_20x": result["modelled_speedup"] >= 20,
            "modelled_rerun_le_5s": result["modelled_rerun_seconds"] <= 5,
            "modelled_events_0_list_calls": result["modelled_events_list_calls"] == 0,
        }
    return met


if __name__ == "__main__":
    main()
