"""Benchmark: bin-pack compaction (``dataplatform.iceberg.compaction``) of a table of small files, against
the same table before it, in the same run (issue 16).

The table: pyiceberg on the moto server (Glue catalog + S3), partitioned by ``region``, built by
``--appends`` appends (200 by default) of ``--partitions`` regions (20) each, a few rows a region: one
small data file per partition per append (4,000 files) and one manifest per append. Measured on a fresh
load of the table, before and after the compaction: ``plan_seconds`` (``scan().plan_files()``: the
manifest list and every manifest read) and ``scan_seconds`` (``scan().to_arrow()``: every data file
read); the rows' count and a checksum of their content (every row, sorted, hashed) must be identical.

    .venv/bin/python benchmarks/iceberg_compaction.py [--appends 200] [--partitions 20] [--rows 5]

Targets (issue 16): files after <= 2% of before, full scan >= 5x faster, planning >= 10x faster, row
count and checksum identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3  # noqa: E402
import pyarrow as pa  # noqa: E402

from dataplatform.devstack.moto_server import MotoServer  # noqa: E402
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog  # noqa: E402
from dataplatform.iceberg.compaction import compact_table  # noqa: E402
from dataplatform.iceberg.compaction_plan import MIB, BinPackRules, ManifestRules  # noqa: E402
from dataplatform.iceberg.sample import ARROW_SCHEMA, EPOCH, create_sample_table, regions  # noqa: E402

BUCKET = "bench-compaction"
IDENTIFIER = "bench.small_files"
RULES = BinPackRules(target_file_bytes=128 * MIB, min_input_files=5, max_bytes_per_run=100 * 1024 * MIB)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def append_rows(append: int, partitions: int, rows: int) -> pa.Table:
    """One append: ``rows`` rows in each of ``partitions`` regions, ids unique across the table."""
    records = [
        {
            "order_id": (append * partitions + p) * rows + r,
            "region": region,
            "amount_cents": append * 100 + r,
            "updated_at": EPOCH,
        }
        for p, region in enumerate(regions(partitions))
        for r in range(rows)
    ]
    return pa.Table.from_pylist(records, schema=ARROW_SCHEMA)


def measure(catalog) -> dict:
    """Plan and scan times, files, manifests, and the content, on a fresh load of the table."""
    table = catalog.load_table(IDENTIFIER)
    started = time.perf_counter()
    tasks = list(table.scan().plan_files())
    plan_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rows = table.scan().to_arrow()
    scan_seconds = time.perf_counter() - started
    ordered = sorted(rows.to_pylist(), key=lambda row: row["order_id"])
    checksum = hashlib.sha256(json.dumps(ordered, default=str, sort_keys=True).encode()).hexdigest()
    return {
        "files": len(tasks),
        "manifests": len(table.current_snapshot().manifests(table.io)),
        "plan_seconds": plan_seconds,
        "scan_seconds": scan_seconds,
        "rows": rows.num_rows,
        "checksum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--rows", type=int, default=5, help="rows per partition per append")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-compaction-"))
    with MotoServer(log_path=home / "moto.log") as moto:
        boto3.client("s3", endpoint_url=moto.url).create_bucket(Bucket=BUCKET)
        catalog = load_glue_catalog(AwsAccess("us-east-1", moto.url, "testing", "testing"))
        table = create_sample_table(catalog, IDENTIFIER, f"s3://{BUCKET}/small_files")
        started = time.perf_counter()
        for append in range(args.appends):
            table.append(append_rows(append, args.partitions, args.rows))
            if (append + 1) % 50 == 0:
                log(f"{append + 1} appends ({time.perf_counter() - started:.0f} s)")
        build_seconds = time.perf_counter() - started

        before = measure(catalog)
        log(f"before: {before['files']} files, {before['manifests']} manifests; compacting ...")
        started = time.perf_counter()
        report = compact_table(catalog.load_table(IDENTIFIER), RULES, manifests=ManifestRules()).as_dict()
        compaction_seconds = time.perf_counter() - started
        after = measure(catalog)

    result = {
        "benchmark": "iceberg_compaction",
        "appends": args.appends,
        "partitions": args.partitions,
        "build_seconds": round(build_seconds, 1),
        "files_before": before["files"],
        "files_after": after["files"],
        "manifests_before": before["manifests"],
        "manifests_after": after["manifests"],
        "partitions_compacted": report["partitions_compacted"],
        "compaction_seconds": round(compaction_seconds, 2),
        "scan_seconds_before": round(before["scan_seconds"], 3),
        "scan_seconds_after": round(after["scan_seconds"], 3),
        "plan_seconds_before": round(before["plan_seconds"], 3),
        "plan_seconds_after": round(after["plan_seconds"], 3),
        "rows": after["rows"],
        "rows_identical": before["rows"] == after["rows"],
        "checksum_identical": before["checksum"] == after["checksum"],
    }
    result["targets_met"] = {
        "files_after_at_most_2_percent": after["files"] <= 0.02 * before["files"],
        "scan_at_least_5x_faster": before["scan_seconds"] >= 5 * after["scan_seconds"],
        "plan_at_least_10x_faster": before["plan_seconds"] >= 10 * after["plan_seconds"],
        "content_identical": result["rows_identical"] and result["checksum_identical"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
