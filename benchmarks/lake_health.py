"""Benchmark: the lake-health page's data functions (``dataplatform.health.figures.lake_figures``) on a
lake of 100 Iceberg tables, 100 Glue tables and 10,000 GDPR requests, against reading the same figures
the direct way, in the same run on the same moto server.

Seeded: 100 Iceberg tables (pyiceberg, Glue catalog on moto, two commits each) with 30 nightly
maintenance reports each (``write_run_report``: the run's report and the latest copy); 100 hourly Glue
tables with 48 partitions each; 10,000 GDPR requests (80% completed, the rest open, deadlines spread so
that some are near or past); 144 reconciliation batches; 500 launches. The baseline reads the same
figures one table after another the direct way: pyiceberg ``load_table`` per table, the maintenance
reports found by listing every run of the DAG, every Glue partition (``GetPartitions``), every GDPR
request of every status loaded. Prints one JSON line; the target (issue 15): the page's data within
2 s, cold (a new process) and warm (a reload: ``figures`` keeps the immutable Iceberg metadata and the
report bodies by ETag).

    .venv/bin/python benchmarks/lake_health.py [--tables 100] [--requests 10000]
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from dataplatform.devstack.airflow_env import airflow_env  # noqa: E402
from dataplatform.devstack.moto_server import MotoServer  # noqa: E402

BUCKET = "dataplatform-local-lake"
NOW = datetime.now(UTC).replace(microsecond=0)
HOURLY = [{"name": "dt", "format": "%Y-%m-%d"}, {"name": "hour", "format": "%H"}]


def bench_config(home: Path, tables: int) -> Path:
    """local.yaml with ``tables`` Iceberg and ``tables`` Glue tables instead of the demo's."""
    raw = yaml.safe_load((REPO / "include" / "config" / "local.yaml").read_text())
    raw["iceberg"]["tables"] = {
        f"t{i:03d}": {
            "database": "bench",
            "table": f"t{i:03d}",
            "backend": "pyiceberg",
            "retain_last": 2,
            "max_snapshot_age_hours": 0,
            "unreferenced": {"action": "delete"},
            "created": {"enabled": False},
            "orphan_min_age_hours": 72,
        }
        for i in range(tables)
    }
    raw["glue"]["tables"] = {
        f"g{i:03d}": {
            "database": "bench_glue",
            "table": f"g{i:03d}",
            "location": f"s3://{BUCKET}/glue/g{i:03d}/",
            "granularity": "hour",
            "partition_keys": HOURLY,
        }
        for i in range(tables)
    }
    raw["health"]["glue_freshness_minutes"] = {}
    path = home / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def seed_iceberg(config, catalog, s3, pool) -> None:
    from dataplatform.iceberg.sample import write_sample_table
    from dataplatform.reports import write_run_report

    def one(name: str) -> None:
        policy = config.iceberg.tables[name]
        write_sample_table(
            catalog, policy.identifier, f"s3://{BUCKET}/iceberg/{name}", commits=2, n_regions=1
        )
        for night in range(30, 0, -1):
            run_id = f"scheduled__{(NOW - timedelta(days=night)):%Y-%m-%dT02:00:00+00:00}"
            report = {"table": name, "unreferenced": {"action": "delete", "files": 1, "bytes": 100}}
            write_run_report(config.reports_uri, "iceberg_maintenance", run_id, name, report, s3)

    catalog.create_namespace("bench")
    list(pool.map(one, config.iceberg.tables))


def seed_glue(config, glue, pool) -> None:
    from dataplatform.devstack.seed import create_table
    from dataplatform.glue.layout import PartitionLayout

    def one(table) -> None:
        create_table(glue, table)
        values = PartitionLayout(table).values_for_interval(NOW - timedelta(hours=48), NOW)
        glue.batch_create_partition(
            DatabaseName=table.database,
            TableName=table.table,
            PartitionInputList=[
                {"Values": list(v), "StorageDescriptor": {"Location": f"{table.location}{'/'.join(v)}/"}}
                for v in values
            ],
        )

    tables = list(config.glue.tables.values())
    one(tables[0])  # creates the database: not 8 threads racing for it
    list(pool.map(one, tables[1:]))


def batch_put(dynamodb, table: str, items: list[dict]) -> None:
    from dataplatform.dynamodb import to_item

    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": to_item(item)}} for item in items[start : start + 25]]
        while requests:
            requests = (
                dynamodb.batch_write_item(RequestItems={table: requests})
                .get("UnprocessedItems", {})
                .get(table)
            )


def seed_gdpr(config, dynamodb, count: int) -> None:
    from dataplatform.gdpr import requests

    table = config.gdpr.requests_table
    requests.create_requests_table(dynamodb, table)
    items = []
    for i in range(count):
        received = NOW - timedelta(days=i % 45, minutes=i)
        item = {
            "request_id": f"req-{i:06d}",
            "subject_id": f"cust-{i:06d}",
            "received_at": received.isoformat(timespec="seconds"),
            "deadline": (received + timedelta(days=config.gdpr.deadline_days)).isoformat(timespec="seconds"),
            "status": "COMPLETED" if i % 5 else ("PENDING", "FAILED", "IN_PROGRESS")[i % 3],
            "progress": {},
            "attempts": 1,
        }
        if item["status"] == "COMPLETED":
            item["completed_at"] = (received + timedelta(days=2)).isoformat(timespec="seconds")
        items.append(item)
    batch_put(dynamodb, table, items)
    # Written directly, the requests bypassed the completion path: the month's counter is rebuilt as for
    # a table that predates it.
    requests.recount_completed(dynamodb, table, NOW)


def seed_reconciliation(config, dynamodb, home: Path) -> None:
    from dataplatform.devstack.seed import seed_ledger

    start = NOW.replace(minute=0, second=0) - timedelta(days=1)
    seed_ledger(dynamodb, config.reconciliation.ledger_table, f"file://{home}/landing/", start, 144, NOW)


def seed_pricing(config, dynamodb, count: int = 500) -> None:
    from dataplatform.pricing.launches import ensure_launches_table

    table = config.pricing.launches_table
    ensure_launches_table(dynamodb, table)
    items = []
    for i in range(count):
        completed = NOW - timedelta(hours=i)
        item = {
            "launch_id": f"L{i:05d}",
            "status": "COMPLETE",
            "workflow_type": ("wgs", "rnaseq")[i % 2],
            "started_at": (completed - timedelta(hours=2)).isoformat(timespec="seconds"),
            "completed_at": completed.isoformat(timespec="seconds"),
        }
        if i % 10:
            item.update(
                total_cost=f"{i % 50 + 1}.0000",
                currency="USD",
                instance_types=[("m6g.xlarge", "m6i.xlarge")[i % 2]],
            )
        else:
            item.update(pricing_error="no price", pricing_attempts=i % 4 + 1)
        items.append(item)
    batch_put(dynamodb, table, items)


def baseline(config, clients, catalog) -> dict:
    """The same figures read the direct way, one table after another."""
    from dataplatform.gdpr import requests
    from dataplatform.glue.catalog import all_partitions
    from dataplatform.reconciliation import ledger

    recon = config.reconciliation
    ledger.status(clients.dynamodb, recon.ledger_table, recon.completeness_window_minutes, NOW)
    every = {
        status: requests.requests_by_status(clients.dynamodb, config.gdpr.requests_table, status)
        for status in (*requests.OPEN_STATUSES, requests.COMPLETED)
    }
    snapshots = sum(
        len(catalog.load_table(p.identifier).metadata.snapshots) for p in config.iceberg.tables.values()
    )
    prefix = config.reports_uri.removeprefix(f"s3://{BUCKET}/") + "iceberg_maintenance/"
    reports = [
        obj["Key"]
        for page in clients.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for obj in page.get("Contents", [])
        if "/_latest/" not in obj["Key"]
    ]
    newest = {key.rsplit("/", 1)[1]: key for key in sorted(reports)}
    for key in newest.values():
        clients.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    partitions = sum(
        len(all_partitions(clients.glue, t.database, t.table)[0]) for t in config.glue.tables.values()
    )
    month = NOW.strftime("%Y-%m")
    completed_this_month = sum(1 for r in every[requests.COMPLETED] if (r.completed_at or "")[:7] == month)
    return {
        "requests": sum(map(len, every.values())),
        "completed_this_month": completed_this_month,
        "snapshots": snapshots,
        "partitions": partitions,
    }


def count_calls(clients) -> Counter:
    """AWS calls the page's clients make, by ``service.Operation`` (botocore's before-call event)."""
    calls: Counter = Counter()

    def count(model, **_) -> None:
        calls[f"{model.service_model.service_name}.{model.name}"] += 1

    for client in (clients.s3, clients.glue, clients.dynamodb):
        client.meta.events.register("before-call", count)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-health-"))
    with MotoServer(log_path=home / "moto.log") as moto:
        os.environ.update(airflow_env(home, moto.url))
        os.environ["DATAPLATFORM_CONFIG"] = str(bench_config(home, args.tables))
        from dataplatform.config import settings
        from dataplatform.devstack.seed import ensure_bucket
        from dataplatform.health.figures import clients_from_connection, lake_figures
        from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog

        config = settings()
        clients = clients_from_connection()
        catalog = load_glue_catalog(AwsAccess(config.aws.region, moto.url, "testing", "testing"))
        ensure_bucket(clients.s3, BUCKET)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            seed_iceberg(config, catalog, clients.s3, pool)
            seed_glue(config, clients.glue, pool)
        seed_gdpr(config, clients.dynamodb, args.requests)
        seed_reconciliation(config, clients.dynamodb, home)
        seed_pricing(config, clients.dynamodb)
        seed_seconds = time.perf_counter() - started

        from dataplatform.health import figures as health

        # Cold: what a new process (the hourly DAG, a restarted api-server) reads; warm: a page reload,
        # where nothing was committed since (the Iceberg metadata and report bodies are not read again).
        cold, warm = [], []
        calls = count_calls(clients)
        for _ in range(3):
            health.forget_cached_reads()
            calls.clear()
            started = time.perf_counter()
            figures = lake_figures(config, clients, NOW)
            cold.append(time.perf_counter() - started)
            calls_cold = dict(calls)
            calls.clear()
            started = time.perf_counter()
            lake_figures(config, clients, NOW)
            warm.append(time.perf_counter() - started)
            calls_warm = dict(calls)

        per_pipeline = {}
        for name in health.DAG_IDS:
            health.forget_cached_reads()
            started = time.perf_counter()
            getattr(health, f"{name}_figures")(config, clients, NOW)
            per_pipeline[name] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        direct = baseline(config, clients, catalog)
        baseline_seconds = time.perf_counter() - started

    blocks = {block["pipeline"]: block for block in figures["pipelines"]}
    errors = {name: block["error"] for name, block in blocks.items() if block["error"]}
    assert not errors, errors
    gdpr, iceberg = blocks["gdpr"]["figures"], blocks["iceberg"]["figures"]["tables"]
    assert direct["requests"] == args.requests
    assert (
        gdpr["open"] == sum(gdpr["by_status"].values()) == sum(1 for i in range(args.requests) if i % 5 == 0)
    )
    assert gdpr["completed_this_month"] == direct["completed_this_month"]
    assert sum(t["snapshots"] for t in iceberg) == direct["snapshots"]
    result = {
        "benchmark": "lake_health",
        "iceberg_tables": len(iceberg),
        "glue_tables": len(blocks["glue"]["figures"]["tables"]),
        "gdpr_requests": direct["requests"],
        "gdpr_open": gdpr["open"],
        "gdpr_urgent": len(gdpr["urgent"]),
        "gdpr_completed_this_month": gdpr["completed_this_month"],
        "findings": len(figures["findings"]),
        "seed_seconds": round(seed_seconds, 1),
        "figures_seconds_cold_best": round(min(cold), 2),
        "figures_seconds_cold_worst": round(max(cold), 2),
        "figures_seconds_warm_worst": round(max(warm), 2),
        "seconds_per_pipeline_cold": per_pipeline,
        "requests_cold": dict(sorted(calls_cold.items())),
        "requests_warm": dict(sorted(calls_warm.items())),
        "baseline_seconds": round(baseline_seconds, 2),
        "speedup_cold": round(baseline_seconds / max(cold), 1),
    }
    result["targets_met"] = {
        "figures_within_2s_cold": result["figures_seconds_cold_worst"] <= 2.0,
        "figures_within_2s_warm": result["figures_seconds_warm_worst"] <= 2.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
