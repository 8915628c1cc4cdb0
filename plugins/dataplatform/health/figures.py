"""The figures of the lake-health page, per pipeline: one function per pipeline and ``lake_figures`` for
all of them. The page (plugin), the hourly ``lake_health`` DAG and ``python -m dataplatform.health status``
read these and nothing else; they read the pipelines' own domain functions (``ledger.status`` as the
recon CLI does, ``gdpr.requests`` as the gdpr CLI does, the run reports' latest copies).

Every function takes the settings, the AWS clients (``Clients``) and ``now`` (timezone-aware), and returns
a JSON-able dict (strings, numbers, booleans, None, lists, dicts; times as ISO-8601 UTC strings).

``lake_figures(config, clients, now)``::

    {
      "generated_at": "2026-12-05T15:00:00+00:00",
      "env": "local",
      "state": "ok" | "warning" | "failing" | "unknown",      # the worst pipeline state
      "findings": [Finding, ...],                             # every pipeline's, in pipeline order
      "pipelines": [Block, ...],                              # reconciliation, gdpr, iceberg, glue, pricing
    }

Block (one pipeline; ``<name>_figures`` returns one)::

    {
      "pipeline": "reconciliation" | "gdpr" | "iceberg" | "glue" | "pricing",
      "title": "Reconciliation",
      "dag_ids": ["recon_stateless", "recon_stateful"],       # the DAGs to link to
      "state": "ok" | "warning" | "failing" | "unknown",      # worst finding; unknown: figures unreadable
      "error": None | "ResourceNotFoundException: ...",       # why the figures could not be read
      "last_runs": [                                          # per DAG that has written a report, newest first
        {"dag_id": "recon_stateless", "run_id": "scheduled__...", "written_at": "...",
         "reports_uri": "s3://.../_reports/recon_stateless/scheduled__.../",   # the run's report folder
         "report_uri": "s3://.../_reports/recon_stateless/scheduled__.../commit.json"},
      ],
      "figures": {...},                                       # per pipeline, below; {} when error
      "findings": [Finding, ...],                             # dataplatform.health.findings
    }

Finding: ``{"id", "pipeline", "kind", "severity": "warning" | "failing", "dag_id", "summary"}`` (``id`` is
stable while the finding holds: the alert-once key; ``summary`` names no person, secret or payload).

Figures per pipeline:

- reconciliation: ``backlog`` (PENDING batches), ``latest_complete_window`` ([start, end] or None),
  ``complete_through``, ``first_incomplete_window`` ({start, end, reason} or None), ``incomplete_windows``,
  ``invalid_batches``, ``window_minutes``, ``completeness_sla_minutes``, ``status`` (``ledger.status`` as
  ``python -m dataplatform.reconciliation status --json`` prints it).
- gdpr: ``open``, ``overdue``, ``due_soon`` (open, within ``alert_days_before_deadline``, not overdue),
  ``completed_this_month`` (completed since the first of the month, UTC), ``by_status`` ({PENDING,
  IN_PROGRESS, FAILED: count}), ``alert_days_before_deadline``, ``urgent``: every overdue or due-soon
  request, most urgent first, ``{"request_id", "status", "deadline", "days_left", "overdue"}`` (no
  subject id).
- iceberg: ``tables``: per ``iceberg.tables`` key ``{"table", "identifier", "snapshots", "refs",
  "metadata_location", "last_updated", "last_maintenance" (when its last maintenance report was written, or
  None), "hours_since_maintenance", "unreferenced_files", "unreferenced_bytes", "unreferenced_action" (what
  that run did with the files its expiry unreferenced: delete or tag), "orphans", "report_uri",
  "error"}``; ``maintenance_period_hours``.
- glue: ``tables``: per ``glue.tables`` key ``{"table", "identifier", "granularity", "newest_partition"
  (values, e.g. ["2026-12-05", "13"], or None), "newest_partition_end", "lag_minutes" (now - end of the
  newest partition; None when none within the lookback), "freshness_minutes", "lookback_partitions",
  "error"}``.
- pricing: ``week``: ``{"start", "end", "launches_priced", "cost_usd", "unpriced", "pricing_errors"}``
  over the last 7 days; ``comparison``: ``report.Comparison.summary()`` over ``report_period_days`` (the
  comparison chart's data: ``groups`` and ``graviton_vs_x86``); ``chart_uri`` / ``csv_uri``: the last
  benchmark_pricing run's chart and CSV; ``repeatedly_failed``: ``[{"launch_id", "attempts", "reason",
  "completed_at"}]`` with at least ``health.pricing_failed_attempts`` failures, ``failed_attempts``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dataplatform import reports
from dataplatform.config import Settings
from dataplatform.dynamodb import TableNotCreatedError, table_must_exist
from dataplatform.health import findings as rules
from dataplatform.read_cache import ReadCache

OK, WARNING, FAILING, UNKNOWN = "ok", "warning", "failing", "unknown"
# The overall state: the worst pipeline's. Unknown (figures unreadable) ranks below a real finding.
_RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, FAILING: 3}

DAG_IDS = {
    "reconciliation": ["recon_stateless", "recon_stateful"],
    "gdpr": ["gdpr_erasure"],
    "iceberg": ["iceberg_maintenance"],
    "glue": ["glue_partition_loader"],
    "pricing": ["benchmark_pricing"],
}
TITLES = {
    "reconciliation": "Reconciliation",
    "gdpr": "GDPR erasure",
    "iceberg": "Iceberg maintenance",
    "glue": "Glue partitions",
    "pricing": "Benchmark pricing",
}
# Glue partitions looked up per table: one BatchGetPartition call (1,000 keys) back from now.
GLUE_LOOKBACK_PARTITIONS = 1000
# Concurrent reads per table list (Glue GetTable and S3 GETs for 100 tables).
WORKERS = 16


@dataclass(frozen=True)
class Clients:
    """The boto3 clients the figures read with (thread-safe; shared by the worker threads)."""

    dynamodb: Any
    s3: Any
    glue: Any


def clients_from_connection() -> Clients:
    """The clients of the Airflow AWS connection (``dataplatform.aws``), as the tasks and CLIs use."""
    from dataplatform import aws

    return Clients(dynamodb=aws.client("dynamodb"), s3=aws.client("s3"), glue=aws.client("glue"))


# -- all pipelines ----------------------------------------------------------------------------------------


def lake_figures(config: Settings, clients: Clients, now: datetime) -> dict[str, Any]:
    """Every pipeline's block (see the module docstring), read concurrently."""
    now = _utc(now)
    readers = [reconciliation_figures, gdpr_figures, iceberg_figures, glue_figures, pricing_figures]
    with ThreadPoolExecutor(max_workers=len(readers)) as pool:
        blocks = list(pool.map(lambda read: read(config, clients, now), readers))
    return {
        "generated_at": _iso(now),
        "env": config.env,
        "state": worst(block["state"] for block in blocks),
        "findings": [finding for block in blocks for finding in block["findings"]],
        "pipelines": blocks,
    }


def worst(states) -> str:
    return max(states, key=_RANK.__getitem__, default=OK)


# -- per pipeline -----------------------------------------------------------------------------------------


def reconciliation_figures(config: Settings, clients: Clients, now: datetime) -> dict[str, Any]:
    now = _utc(now)

    def read() -> dict[str, Any]:
        from dataplatform.reconciliation import ledger

        recon = config.reconciliation
        with table_must_exist(recon.ledger_table, ledger.TABLES_CREATED_BY):
            status = ledger.status(
                clients.dynamodb, recon.ledger_table, recon.completeness_window_minutes, now
            )
        shown = status.as_dict()
        return {
            "backlog": status.backlog,
            "latest_complete_window": shown["latest_complete_window"],
            "complete_through": shown["complete_through"],
            "first_incomplete_window": shown["first_incomplete_window"],
            "incomplete_windows": status.incomplete_windows,
            "invalid_batches": status.batches.get("INVALID", 0),
            "window_minutes": recon.completeness_window_minutes,
            "completeness_sla_minutes": recon.completeness_sla_minutes,
            "status": shown,
        }

    return _block("reconciliation", config, clients, now, read, rules.reconciliation_findings)


def gdpr_figures(config: Settings, clients: Clients, now: datetime) -> dict[str, Any]:
    now = _utc(now)

    def read() -> dict[str, Any]:
        from dataplatform.gdpr import requests

        gdpr = config.gdpr
        due_by = now + timedelta(days=gdpr.alert_days_before_deadline)
        with table_must_exist(gdpr.requests_table, requests.CREATED_BY):
            open_requests = requests.open_requests_due(clients.dynamodb, gdpr.requests_table, due_by)
        urgent = [
            {
                **request,
                "days_left": round(requests.days_to_deadline(request["deadline"], now), 2),
                "overdue": requests.is_overdue(request["deadline"], now),
            }
            for request in open_requests.due
        ]
        urgent.sort(key=lambda item: (item["deadline"], item["request_id"]))
        overdue = sum(1 for item in urgent if item["overdue"])
        return {
            "open": sum(open_requests.by_status.values()),
            "overdue": overdue,
            "due_soon": len(urgent) - overdue,
            "completed_this_month": requests.completed_in_month(clients.dynamodb, gdpr.requests_table, now),
            "by_status": open_requests.by_status,
            "alert_days_before_deadline": gdpr.alert_days_before_deadline,
            "urgent": urgent,
        }

    return _block("gdpr", config, clients, now, read, rules.gdpr_findings)


def iceberg_figures(config: Settings, clients: Clients, now: datetime) -> dict[str, Any]:
    now = _utc(now)
    latest = _latest_reports(config, clients, "iceberg")

    def read() -> dict[str, Any]:
        by_table = {copy["name"]: copy for copy in latest}
        items = list(config.iceberg.tables.items())
        locations = _metadata_locations(clients.glue, [policy for _, policy in items])
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            tables = list(
                pool.map(
                    lambda item: _iceberg_table(
                        clients, now, item[0], item[1], locations[item[1].identifier], by_table.get(item[0])
                    ),
                    items,
                )
            )
        return {"tables": tables, "maintenance_period_hours": config.health.iceberg_maintenance_period_hours}

    return _block("iceberg", config, clients, now, read, rules.iceberg_findings, latest)


def glue_figures(config: Settings, clients: Clients, now: datetime) -> dict[str, Any]:
    now = _utc(now)

    def read() -> dict[str, Any]:
        items = list(config.glue.tables.items())
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            tables = list(pool.map(lambda item: _glue_table(config, clients, now, *item), items))
        return {"tables": tables}

    return _block("glue", config, clients, now, read, rules.glue_findings)


def pricing_figures(config: Settings, clients: Clients, now: datetime) -> dict[str, Any]:
    now = _utc(now)
    latest = _latest_reports(config, clients, "pricing")

    def read() -> dict[str, Any]:
        from dataplatform.pricing import launches
        from dataplatform.pricing.report import compare

        pricing = config.pricing
        week_start = now - timedelta(days=7)
        period_start = now - timedelta(days=pricing.report_period_days)
        with table_must_exist(pricing.launches_table, launches.CREATED_BY):
            completed = launches.completed_launches(
                clients.dynamodb, pricing.launches_table, _iso(min(week_start, period_start)), _iso(now)
            )
        week = compare(completed, week_start, now, by=pricing.report_group_by).summary()
        report = next((copy["report"] for copy in latest if copy["name"] == "benchmark_pricing"), {})
        failed = launches.repeatedly_failed(
            clients.dynamodb, pricing.launches_table, config.health.pricing_failed_attempts
        )
        return {
            "week": {
                "start": _iso(week_start),
                "end": _iso(now),
                "launches_priced": week["launches"],
                "cost_usd": week["total_cost_usd"],
                "unpriced": week["unpriced"],
                "pricing_errors": week["pricing_errors"],
            },
            "comparison": compare(completed, period_start, now, by=pricing.report_group_by).summary(),
            "chart_uri": report.get("comparison_chart"),
            "csv_uri": report.get("comparison_csv"),
            "failed_attempts": config.health.pricing_failed_attempts,
            "repeatedly_failed": [
                {
                    "launch_id": launch["launch_id"],
                    "attempts": int(launch.get("pricing_attempts", 0)),
                    "reason": launch.get("pricing_error"),
                    "completed_at": launch.get("completed_at"),
                }
                for launch in failed
            ],
        }

    return _block("pricing", config, clients, now, read, rules.pricing_findings, latest)


# -- one table ----------------------------------------------------------------------------------------------


def _metadata_locations(glue: Any, policies: list) -> dict[str, str | Exception]:
    """Per table identifier, its current metadata file (the Glue table's ``metadata_location``) or why
    there is none: one paginated GetTables per database, not a GetTable per table (100 tables: one call,
    and far from Glue's GetTable rate limit)."""
    found: dict[str, str | Exception] = {}
    for database in sorted({policy.database for policy in policies}):
        try:
            parameters = {
                table["Name"].lower(): table.get("Parameters", {})
                for page in glue.get_paginator("get_tables").paginate(DatabaseName=database)
                for table in page["TableList"]
            }
        except Exception as exc:  # a missing database: every table in it shows the error
            parameters = exc
        for policy in (p for p in policies if p.database == database):
            if isinstance(parameters, Exception):
                found[policy.identifier] = parameters
            elif (table := parameters.get(policy.table.lower())) is None:
                found[policy.identifier] = _not_found(glue, policy.identifier)
            else:
                found[policy.identifier] = table.get("metadata_location") or ValueError(
                    f"{policy.identifier} has no metadata_location: not an Iceberg table"
                )
    return found


# An Iceberg metadata file is never rewritten (every commit writes a new one), so its summary is kept by
# location for the life of the process: a page reload reads only the tables committed to since.
_METADATA_SUMMARIES = ReadCache()


def _metadata_summary(s3: Any, location: str) -> dict[str, Any]:
    """``snapshots``, ``refs`` and ``last_updated`` of the metadata file at ``location`` (one S3 GET, once
    per location)."""
    summary = _METADATA_SUMMARIES.get(location)
    if summary is None:
        bucket, _, key = location.removeprefix("s3://").removeprefix("s3a://").partition("/")
        metadata = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        summary = {
            "snapshots": len(metadata.get("snapshots") or []),
            "refs": len(metadata.get("refs") or {}),
            "last_updated": _iso(datetime.fromtimestamp(metadata["last-updated-ms"] / 1000, UTC)),
        }
        _METADATA_SUMMARIES.put(location, summary)
    return summary


def _not_found(glue: Any, identifier: str) -> Exception:
    """The error GetTable raises for a missing table (what the page showed when it called GetTable)."""
    error = {"Code": "EntityNotFoundException", "Message": f"Table {identifier} not found."}
    return glue.exceptions.EntityNotFoundException({"Error": error}, "GetTables")


def _iceberg_table(
    clients: Clients, now: datetime, name: str, policy, location: str | Exception, latest: dict | None
) -> dict[str, Any]:
    """Snapshots from the table's current metadata file (``location``, from ``_metadata_locations``; one S3
    GET: no manifest is read); the last maintenance from the latest copy of its maintenance report."""

    row: dict[str, Any] = {"table": name, "identifier": policy.identifier, "error": None}
    try:
        if isinstance(location, Exception):
            raise location
        row.update(_metadata_summary(clients.s3, location), metadata_location=location)
    except Exception as exc:  # one unreadable table must not hide the others
        row.update(snapshots=None, refs=None, metadata_location=None, last_updated=None, error=_error(exc))
    report = (latest or {}).get("report", {})
    unreferenced = report.get("unreferenced") or {}
    maintained = (latest or {}).get("written_at")
    row.update(
        last_maintenance=maintained,
        hours_since_maintenance=(
            round((now - datetime.fromisoformat(maintained)).total_seconds() / 3600, 2)
            if maintained
            else None
        ),
        unreferenced_files=unreferenced.get("files"),
        unreferenced_bytes=unreferenced.get("bytes"),
        unreferenced_action=unreferenced.get("action"),
        orphans=(report.get("orphans") or {}).get("found"),
        report_uri=(latest or {}).get("report_uri"),
    )
    return row


def _glue_table(config: Settings, clients: Clients, now: datetime, name: str, table) -> dict[str, Any]:
    """The newest registered partition among the last ``GLUE_LOOKBACK_PARTITIONS`` periods (rendered from
    the table's time keys, looked up with BatchGetPartition, newest first), and how long ago it ended."""
    from dataplatform.glue.catalog import existing_partitions
    from dataplatform.glue.layout import PartitionLayout

    period = _period(table.granularity)
    row: dict[str, Any] = {
        "table": name,
        "identifier": f"{table.database}.{table.table}",
        "granularity": table.granularity,
        "freshness_minutes": config.health.glue_freshness_minutes.get(
            name, int(2 * period.total_seconds() // 60)
        ),
        "lookback_partitions": GLUE_LOOKBACK_PARTITIONS,
        "newest_partition": None,
        "newest_partition_end": None,
        "lag_minutes": None,
        "error": None,
    }
    try:
        layout = PartitionLayout(table)
        newest = None
        for starts in _newest_first_chunks(now, table.granularity):
            by_values = {layout.values_at(start): start for start in starts}
            found, _ = existing_partitions(clients.glue, table.database, table.table, by_values)
            if found:
                newest = max(found, key=by_values.__getitem__)
                break
    except Exception as exc:  # a missing table, or keys that are not all time-derived
        row["error"] = _error(exc)
        return row
    if newest is not None:
        end = _next_period(by_values[newest], table.granularity)
        row.update(
            newest_partition=list(newest),
            newest_partition_end=_iso(end),
            lag_minutes=max(0, int((now - end).total_seconds() // 60)),
        )
    return row


def _newest_first_chunks(now: datetime, granularity: str) -> Iterator[list[datetime]]:
    """The last ``GLUE_LOOKBACK_PARTITIONS`` period starts, newest first, in growing chunks (4, 12, 128,
    the rest), each made when asked for: a fresh table is answered by one small lookup, only a stale one
    pays for the rest. Small, because Glue returns every partition found whole (its storage descriptor):
    on moto, serialising 16 of them doubled a lookup's cost."""
    starts = _period_starts(now, granularity)
    for size in (4, 12, 128, GLUE_LOOKBACK_PARTITIONS - 144):
        yield list(itertools.islice(starts, size))


# -- plumbing ---------------------------------------------------------------------------------------------


def _block(
    pipeline: str,
    config: Settings,
    clients: Clients,
    now: datetime,
    read: Callable[[], dict[str, Any]],
    find: Callable[[dict[str, Any], Settings, datetime], list[dict[str, Any]]],
    latest: list[dict] | None = None,
) -> dict[str, Any]:
    """Read the figures; the state is the worst finding's severity, ``unknown`` when they could not be
    read (the error is shown instead: a missing table, an unreachable endpoint)."""
    if latest is None:
        latest = _latest_reports(config, clients, pipeline)
    try:
        figures, error = read(), None
    except Exception as exc:  # the page shows the other pipelines whatever happens to one
        figures, error = {}, _error(exc)
    found = find(figures, config, now) if error is None else []
    return {
        "pipeline": pipeline,
        "title": TITLES[pipeline],
        "dag_ids": list(DAG_IDS[pipeline]),
        "state": UNKNOWN if error else worst(finding["severity"] for finding in found),
        "error": error,
        "last_runs": _last_runs(latest),
        "figures": figures,
        "findings": found,
    }


# The latest report copies read so far, by ETag (``reports.latest_reports``): a reload reads the rewritten
# ones.
_REPORT_BODIES = ReadCache()


def forget_cached_reads() -> None:
    """Empty the metadata and report caches (the next figures read everything, as a new process does)."""
    _METADATA_SUMMARIES.clear()
    _REPORT_BODIES.clear()


def _latest_reports(config: Settings, clients: Clients, pipeline: str) -> list[dict]:
    """The latest copy of every report the pipeline's DAGs wrote (``reports.write_run_report``)."""
    found: list[dict] = []
    for dag_id in DAG_IDS[pipeline]:
        try:
            found += reports.latest_reports(config.reports_uri, dag_id, clients.s3, _REPORT_BODIES)
        except Exception:  # no report yet, or none readable: the block says so by having no last run
            continue
    return found


def _last_runs(latest: list[dict]) -> list[dict[str, Any]]:
    """Per DAG, its newest report's run (by when it was written), newest DAG first."""
    newest: dict[str, dict] = {}
    for copy in latest:
        if copy["written_at"] > newest.get(copy["dag_id"], {}).get("written_at", ""):
            newest[copy["dag_id"]] = copy
    return [
        {
            "dag_id": copy["dag_id"],
            "run_id": copy["run_id"],
            "written_at": copy["written_at"],
            "reports_uri": copy["report_uri"].rsplit("/", 1)[0] + "/",
            "report_uri": copy["report_uri"],
        }
        for copy in sorted(newest.values(), key=lambda copy: copy["written_at"], reverse=True)
    ]


def _period(granularity: str) -> timedelta:
    return {"hour": timedelta(hours=1), "day": timedelta(days=1), "month": timedelta(days=31)}[granularity]


def _period_starts(now: datetime, granularity: str) -> Iterator[datetime]:
    """The starts of the periods up to the one ``now`` is in, newest first."""
    start = now.replace(minute=0, second=0, microsecond=0)
    if granularity in ("day", "month"):
        start = start.replace(hour=0)
    if granularity == "month":
        start = start.replace(day=1)
    period = _period(granularity)
    while True:
        yield start
        start = (start - timedelta(days=1)).replace(day=1) if granularity == "month" else start - period


def _next_period(start: datetime, granularity: str) -> datetime:
    if granularity == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + _period(granularity)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _error(exc: BaseException) -> str:
    """What the page shows for unreadable figures: the error's type and first line, cut short; a table
    not created yet is the sentence the CLIs print (what creates it), not an error type."""
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, TableNotCreatedError):
        return first_line[:300]
    return f"{type(exc).__name__}: {first_line}"[:300]
