"""Benchmark: Iceberg maintenance of a table with 500 snapshots and 5,000 data files, against per-file
deletes and sequential tagging, in the same run.

Tables: real Iceberg tables written by pyiceberg to the moto server (Glue catalog + S3), each built by
``write_sample_table`` (250 full overwrites of 20 regions: pyiceberg commits a delete and an append
snapshot per overwrite, except the first on the empty table, which only appends) plus one empty append,
so 500 snapshots and 5,000 data files written. Two identical tables are built (in parallel processes,
with pyiceberg's transaction metadata memoized there: see ``memoize_transaction_metadata``):

- **delete**: ``maintain_table`` with ``retain_last=10``, ``max_snapshot_age_hours=0`` and
  ``unreferenced.action=delete``: expiry in one commit, then DeleteObjects (1,000 keys a call).
- **tag**: the same policy with ``unreferenced.action=tag``: expiry in one commit, then the delete tag
  merged into each unreferenced file's tags (GetObjectTagging + PutObjectTagging, ``tag_workers``
  threads), and the bucket lifecycle rule.
- **sequential tagging baseline**: the same ``tag_objects`` code with ``workers=1`` on the same
  unreferenced files of the tag table, with another tag key (the same Get + Put per file).
- **per-file delete baseline**: one DeleteObject call per file, on the tag table's unreferenced files
  (after both tagging runs): the same number of files of the same kinds as the delete run's.

``created`` tagging and tag rules are off, so the runs measure expiry and the unreferenced files; the
orphan step runs and finds nothing. moto answers a request in about a millisecond where S3 takes 10-30 ms,
so every request of the boto3 S3 clients used here (the maintenance runs' and both baselines') first
sleeps a modelled latency (``--latency-ms``, 20 by default: a botocore ``before-send`` hook). pyiceberg's
own reads and writes (its FileIO and the Glue catalog) get no added latency. The clients use the
production retry config (adaptive, 10 attempts) and ``max_pool_connections=64``: botocore's default pool
of 10 connections would make most of the 32 tagging threads open and drop a connection per request.

``tag_seconds`` and ``delete_seconds`` time the unreferenced-files step of the pipeline runs (the
``tag_objects`` / ``delete_objects`` call, timed by a wrapper); the whole runs are ``*_run_seconds``.

    .venv/bin/python benchmarks/iceberg_maintenance.py [--commits 250] [--regions 20] [--latency-ms 20]
        [--tag-workers 32] [--build-workers 2]

Targets (issue #4): 1 metadata commit for the expiry, at most ceil(files / 1000) delete calls, parallel
tagging >= 4x faster than sequential.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3  # noqa: E402

from benchmarks.modelled_latency import CLIENT_CONFIG, s3_client  # noqa: E402
from dataplatform.config import IcebergTablePolicy  # noqa: E402
from dataplatform.devstack.moto_server import MotoServer  # noqa: E402
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog  # noqa: E402
from dataplatform.iceberg.maintenance import MaintenanceContext, RunClock, maintain_table  # noqa: E402
from dataplatform.s3 import objects  # noqa: E402

REGION = "us-east-1"
BUCKET = "bench-iceberg"
DATABASE = "bench"
RETAIN_LAST = 10


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- building the tables (one process each) ----------------------------------------------------------------


def memoize_transaction_metadata() -> None:
    """Make pyiceberg's ``Transaction.table_metadata`` compute once per (base metadata, staged updates).

    pyiceberg (0.11) recomputes it on every access, ending in a deep copy of the whole metadata, and an
    overwrite reads it ~38 times: O(snapshots) each, so building a 500-snapshot table one commit at a
    time is quadratic (2.7 s an overwrite at 200 snapshots, 75% of it deep copies). The models are frozen
    and the updates tuple is only ever replaced, so returning the same object is safe. Only the builder
    processes do this: the maintenance runs measured in the main process use pyiceberg as it is."""
    from pyiceberg.table import Transaction
    from pyiceberg.table.update import update_table_metadata

    def table_metadata(self):
        cached = self.__dict__.get("_bench_metadata")
        if cached is not None and cached[0] is self._table.metadata and cached[1] is self._updates:
            return cached[2]
        metadata = update_table_metadata(self._table.metadata, self._updates)
        self.__dict__["_bench_metadata"] = (self._table.metadata, self._updates, metadata)
        return metadata

    Transaction.table_metadata = property(table_metadata)


def build_table(url: str, name: str, commits: int, n_regions: int) -> dict:
    """``commits`` overwrites and one empty append: 2 x ``commits`` snapshots and ``commits`` x
    ``n_regions`` data files written. Runs in a worker process; logs progress to stderr."""
    warnings.filterwarnings("ignore", "Delete operation did not match any records")
    memoize_transaction_metadata()
    from dataplatform.iceberg.sample import sample_rows, write_sample_table

    catalog = load_glue_catalog(AwsAccess(REGION, url, "testing", "testing"))
    identifier, location = f"{DATABASE}.{name}", f"s3://{BUCKET}/warehouse/{name}"
    started = time.perf_counter()
    step = 25
    # write_sample_table creates the table with the first chunk of overwrites; the rest continue the same
    # way (sample_rows of the next versions), in chunks for the progress lines.
    table = write_sample_table(catalog, identifier, location, min(step, commits), n_regions)
    done = min(step, commits)
    while True:
        log(
            f"  build {name}: {done}/{commits} overwrites, {len(table.metadata.snapshots)} snapshots, "
            f"{time.perf_counter() - started:.0f}s"
        )
        if done == commits:
            break
        for version in range(done, min(done + step, commits)):
            table.overwrite(sample_rows(version, n_regions))
        done = min(done + step, commits)
    # The first overwrite of the empty table deletes nothing and commits no delete snapshot: one empty
    # append makes the count 2 x commits without writing a data file.
    table.append(sample_rows(0, n_regions).slice(0, 0))
    snapshots = table.metadata.snapshots
    return {
        "name": name,
        "identifier": identifier,
        "seconds": time.perf_counter() - started,
        "snapshots": len(snapshots),
        "data_files_written": sum(
            int(s.summary.additional_properties.get("added-data-files", "0")) for s in snapshots if s.summary
        ),
    }


def build_tables(url: str, names: list[str], commits: int, n_regions: int, workers: int) -> list[dict]:
    boto3.client(
        "glue",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_database(DatabaseInput={"Name": DATABASE})
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(1, min(workers, len(names))), mp_context=context) as pool:
        futures = [pool.submit(build_table, url, name, commits, n_regions) for name in names]
        return [future.result() for future in futures]


# -- timing the file-action step inside maintain_table ----------------------------------------------------


class StepTimer:
    """Wraps ``objects.delete_objects`` / ``objects.tag_objects`` (which maintain_table calls through the
    module) to time each call and keep the URIs it was given."""

    def __init__(self):
        self.calls: list[dict] = []

    def wrap(self, function):
        @functools.wraps(function)
        def timed(s3, uris, *args, **kwargs):
            uris = list(uris)
            started = time.perf_counter()
            try:
                return function(s3, uris, *args, **kwargs)
            finally:
                self.calls.append({"uris": uris, "seconds": time.perf_counter() - started})

        return timed

    def __enter__(self):
        self._originals = objects.delete_objects, objects.tag_objects
        objects.delete_objects = self.wrap(objects.delete_objects)
        objects.tag_objects = self.wrap(objects.tag_objects)
        return self

    def __exit__(self, *exc):
        objects.delete_objects, objects.tag_objects = self._originals


def policy_for(name: str, action: str) -> IcebergTablePolicy:
    return IcebergTablePolicy.model_validate(
        {
            "database": DATABASE,
            "table": name,
            "retain_last": RETAIN_LAST,
            "max_snapshot_age_hours": 0,
            "tag_rules": [],
            "unreferenced": {"action": action},
            "created": {"enabled": False},
        }
    )


def run_maintenance(catalog, s3, name: str, action: str, tag_workers: int) -> dict:
    ctx = MaintenanceContext(
        catalog=catalog, s3=s3, state_root=f"s3://{BUCKET}/maintenance-state", tag_workers=tag_workers
    )
    now = datetime.now(UTC)
    started = time.perf_counter()
    with StepTimer() as timer:
        report = maintain_table(ctx, name, policy_for(name, action), RunClock(day=now.date(), now=now))
    seconds = time.perf_counter() - started
    if len(timer.calls) != 1:
        raise RuntimeError(f"{action} run: expected one file-action call, saw {len(timer.calls)}")
    table = catalog.load_table(f"{DATABASE}.{name}")
    return {
        "report": report,
        "seconds": seconds,
        "step_seconds": timer.calls[0]["seconds"],
        "uris": timer.calls[0]["uris"],
        "snapshots_after": len(table.metadata.snapshots),
    }


def remaining(s3, uris: list[str]) -> int:
    """How many of ``uris`` still exist (one listing of the table location)."""
    listed = set(objects.list_objects(s3, f"s3://{BUCKET}/warehouse/"))
    return sum(1 for uri in uris if uri in listed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=250, help="overwrites per table (2 snapshots each)")
    parser.add_argument("--regions", type=int, default=20, help="data files per overwrite")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="modelled S3 latency per request")
    parser.add_argument("--tag-workers", type=int, default=32)
    parser.add_argument("--build-workers", type=int, default=2, help="processes building the tables")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="  %(name)s: %(message)s")
    logging.getLogger("dataplatform").setLevel(logging.INFO)
    latency_s = args.latency_ms / 1000

    wall_started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="iceberg-bench-"))
    with MotoServer(log_path=tmp / "moto.log") as moto:
        plain = s3_client(moto.url, 0)
        plain.create_bucket(Bucket=BUCKET)

        log(
            f"building 2 tables of {args.commits} overwrites x {args.regions} regions "
            f"({args.build_workers} processes) ..."
        )
        build_started = time.perf_counter()
        built = build_tables(moto.url, ["t_delete", "t_tag"], args.commits, args.regions, args.build_workers)
        build_seconds = time.perf_counter() - build_started
        for table in built:
            log(
                f"  {table['identifier']}: {table['snapshots']} snapshots, {table['data_files_written']} "
                f"data files written, {table['seconds']:.0f}s"
            )
        catalog = load_glue_catalog(AwsAccess(REGION, moto.url, "testing", "testing"))

        log(f"delete run (retain_last={RETAIN_LAST}, {args.latency_ms:g} ms a request) ...")
        delete_client_calls: Counter[str] = Counter()
        deleted = run_maintenance(
            catalog,
            s3_client(moto.url, latency_s, delete_client_calls),
            "t_delete",
            "delete",
            args.tag_workers,
        )
        delete_report = deleted["report"]
        delete_left = remaining(plain, deleted["uris"])
        log(f"  {delete_report['summary']} in {deleted['seconds']:.1f}s; {delete_left} of them still exist")

        log(f"tag run ({args.tag_workers} workers) ...")
        tag_client_calls: Counter[str] = Counter()
        tagged = run_maintenance(
            catalog, s3_client(moto.url, latency_s, tag_client_calls), "t_tag", "tag", args.tag_workers
        )
        tag_report = tagged["report"]
        uris = tagged["uris"]
        log(f"  {tag_report['summary']} in {tagged['seconds']:.1f}s (tagging {tagged['step_seconds']:.1f}s)")

        log(f"sequential tagging baseline: the same {len(uris)} files, workers=1 ...")
        sequential_calls = objects.CallCounter()
        started = time.perf_counter()
        sequential = objects.tag_objects(
            s3_client(moto.url, latency_s), uris, "bench-sequential", "deleted", 1, sequential_calls
        )
        sequential_seconds = time.perf_counter() - started
        log(f"  tagged {sequential.tagged} files in {sequential_seconds:.1f}s")

        log(f"per-file delete baseline: one DeleteObject per file, {len(uris)} files ...")
        baseline_client_calls: Counter[str] = Counter()
        baseline_s3 = s3_client(moto.url, latency_s, baseline_client_calls)
        started = time.perf_counter()
        for uri in uris:
            bucket, key = objects.split_uri(uri)
            baseline_s3.delete_object(Bucket=bucket, Key=key)
        baseline_delete_seconds = time.perf_counter() - started
        baseline_left = remaining(plain, uris)
        log(f"  {baseline_client_calls['DeleteObject']} calls in {baseline_delete_seconds:.1f}s")

    unreferenced = delete_report["unreferenced"]
    delete_calls = delete_report["s3_calls"].get("DeleteObjects", 0)
    tag_seconds = tagged["step_seconds"]
    result = {
        "benchmark": "iceberg_maintenance",
        "snapshots_before": delete_report["expiry"]["snapshots_before"],
        "snapshots_after": deleted["snapshots_after"],
        "tag_table_snapshots_before": tag_report["expiry"]["snapshots_before"],
        "tag_table_snapshots_after": tagged["snapshots_after"],
        "data_files_written": built[0]["data_files_written"],
        "retain_last": RETAIN_LAST,
        "expiry_commits": delete_report["expiry"]["commits"],
        "tag_run_expiry_commits": tag_report["expiry"]["commits"],
        # Every metadata commit of the run: tag-rule tags (none configured) and the expiry.
        "metadata_commits": delete_report["tags"]["commits"] + delete_report["expiry"]["commits"],
        "tag_run_metadata_commits": tag_report["tags"]["commits"] + tag_report["expiry"]["commits"],
        "unreferenced_files": unreferenced["files"],
        "unreferenced_by_kind": unreferenced["by_kind"],
        "unreferenced_bytes": unreferenced["bytes"],
        "tag_run_unreferenced_files": tag_report["unreferenced"]["files"],
        "deleted_files": unreferenced.get("deleted"),
        "deleted_files_still_present": delete_left,
        "delete_calls": delete_calls,
        "delete_calls_limit": math.ceil(unreferenced["files"] / objects.DELETE_BATCH),
        "delete_seconds": round(deleted["step_seconds"], 3),
        "delete_run_seconds": round(deleted["seconds"], 2),
        "baseline_delete_files": len(uris),
        "baseline_delete_calls": baseline_client_calls["DeleteObject"],
        "baseline_delete_seconds": round(baseline_delete_seconds, 2),
        "baseline_deleted_files_still_present": baseline_left,
        "tagged_files": tag_report["unreferenced"].get("tagged"),
        "tag_seconds": round(tag_seconds, 2),
        "tag_run_seconds": round(tagged["seconds"], 2),
        "tag_workers": args.tag_workers,
        "sequential_tagged_files": sequential.tagged,
        "sequential_tag_seconds": round(sequential_seconds, 2),
        "sequential_tag_calls": sequential_calls.as_dict(),
        "tag_speedup": round(sequential_seconds / tag_seconds, 1),
        # As the maintenance code counts them, and as the boto3 client saw them (the orphan step and
        # pagination included in both).
        "s3_calls_delete_run": delete_report["s3_calls"],
        "s3_calls_tag_run": tag_report["s3_calls"],
        "s3_client_calls_delete_run": dict(sorted(delete_client_calls.items())),
        "s3_client_calls_tag_run": dict(sorted(tag_client_calls.items())),
        "orphans_found": [delete_report["orphans"]["found"], tag_report["orphans"]["found"]],
        "manifest_reads": delete_report["manifest_reads"],
        "modelled_s3_latency_ms": args.latency_ms,
        "modelled_latency_applies_to": [
            "delete run S3 calls",
            "tag run S3 calls",
            "sequential tagging",
            "per-file delete baseline",
        ],
        "s3_client_max_pool_connections": CLIENT_CONFIG["max_pool_connections"],
        "build_seconds": round(build_seconds, 1),
        "build_seconds_per_table": [round(table["seconds"], 1) for table in built],
        "wall_seconds": round(time.perf_counter() - wall_started, 1),
    }
    result["targets_met"] = {
        "expiry_one_commit": result["expiry_commits"] == 1 and result["tag_run_expiry_commits"] == 1,
        "delete_calls_le_ceil_files_over_1000": 0 < delete_calls <= result["delete_calls_limit"],
        "tag_speedup_ge_4x": result["tag_speedup"] >= 4,
    }
    shape = {
        "snapshots_500": result["snapshots_before"] == 2 * args.commits,
        "data_files_5000": result["data_files_written"] == args.commits * args.regions,
        "same_files_both_sides": (
            unreferenced["files"] == len(uris) == sequential.tagged == result["baseline_delete_calls"]
        ),
        "all_deleted": delete_left == 0 and baseline_left == 0,
    }
    for name, met in {**result["targets_met"], **shape}.items():
        if not met:
            log(f"MISSED: {name}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
