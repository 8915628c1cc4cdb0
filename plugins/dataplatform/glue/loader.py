"""Register a table's partitions in the Glue Data Catalog, idempotently.

Two ways to find the partitions, one way to register them:
- ``interval``: the partitions a data interval covers (scheduled runs and backfills), kept only where S3
  holds data for them;
- ``discover``: everything under the table location, listed level by level;
- ``events`` (``glue/events.py``): the object keys of the bucket's ObjectCreated notifications, drained
  from an SQS queue, with no listing at all.
Every way a prefix that holds only writer leftovers (``_SUCCESS``, ``_temporary/``, ``$folder$``) is
empty: counted, never registered.
Then (``register_missing``, shared by the three): which of them Glue already has (BatchGetPartition, or
GetPartitions for discover), and the rest created with BatchCreatePartition,
inheriting the table's storage descriptor. The table is read only when there is something to create, so a
rerun with nothing new costs just the existence check.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Literal

from dataplatform.config import GlueTable, Settings
from dataplatform.glue import catalog, discovery
from dataplatform.glue.layout import PartitionLayout, PartitionValues

log = logging.getLogger(__name__)

Mode = Literal["interval", "discover"]
MODES: tuple[str, ...] = ("interval", "discover")
# The two listing modes above; ``events`` (``glue.events``: an SQS queue of the bucket's ObjectCreated
# notifications, no listing); the AWS-only alternatives run by the operator (Athena, crawler).
EVENTS = "events"
ALL_MODES: tuple[str, ...] = (*MODES, EVENTS, "msck", "crawler")
# How many invalid or failed partitions a report names; the counts are always complete.
_REPORT_SAMPLE = 50


class PartitionLoadError(RuntimeError):
    """Some partitions could not be registered (the others were); the message names each one."""

    def __init__(self, message: str, report: LoadReport):
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    table: str
    mode: str
    dry_run: bool
    interval_start: str | None = None
    interval_end: str | None = None
    listed: int = 0  # partitions found (discover) or covered by the interval (interval)
    missing_in_s3: int = 0  # interval partitions with no prefix in S3 yet (not registered)
    empty: int = 0  # prefixes that hold only writer leftovers, no data (not registered)
    already_present: int = 0
    created: int = 0
    would_create: int = 0  # dry run only
    invalid: int = 0
    failed: int = 0
    invalid_prefixes: dict[str, str] = field(default_factory=dict)
    empty_prefixes: list[str] = field(default_factory=list)
    failed_partitions: dict[str, str] = field(default_factory=dict)
    s3_list_calls: int = 0
    # events mode: SQS messages received, deleted (their partitions exist) and the SQS calls made.
    messages_received: int = 0
    messages_deleted: int = 0
    messages_ignored: int = 0  # test events and writer leftovers: nothing to register, deleted
    sqs_calls: int = 0
    glue_read_calls: int = 0
    glue_write_calls: int = 0
    s3_seconds: float = 0.0  # finding the partitions in S3
    glue_seconds: float = 0.0  # existence check and registration

    def as_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}

    def summary(self) -> str:
        verb = f"would register {self.would_create}" if self.dry_run else f"registered {self.created}"
        messages = (
            f"{self.messages_received} messages received, {self.messages_deleted} deleted, "
            f"{self.sqs_calls} SQS calls; "
            if self.mode == EVENTS
            else ""
        )
        return (
            f"{self.table}: {verb} partitions, {self.already_present} already present, "
            f"{self.invalid} invalid, {self.empty} empty, {self.failed} failed, "
            f"{self.missing_in_s3} not in S3 yet "
            f"(listed {self.listed}; {messages}{self.s3_list_calls} S3 list, {self.glue_read_calls} Glue read, "
            f"{self.glue_write_calls} Glue write calls)"
        )


def validate_request(table: str | None, mode: str, dry_run: object, config: Settings) -> list[str]:
    """The tables a run works on; raises ValueError naming the bad param before anything is touched."""
    configured = sorted(config.glue.tables)
    if table not in (None, "") and (not isinstance(table, str) or table not in config.glue.tables):
        raise ValueError(f"param 'table': unknown table {_shown(table)}; configured tables: {configured}")
    if not isinstance(mode, str) or mode not in ALL_MODES:
        raise ValueError(f"param 'mode': must be one of {list(ALL_MODES)}, got {_shown(mode)}")
    if not isinstance(dry_run, bool):
        raise ValueError(f"param 'dry_run': must be true or false, got {_shown(dry_run)}")
    if mode in ("msck", "crawler") and dry_run:
        raise ValueError(f"param 'dry_run': mode {mode!r} has no dry run (Athena and crawlers act at once)")
    selected = [table] if table else configured
    if mode == "crawler":
        without = [name for name in selected if not config.glue.tables[name].crawler_name]
        if without:
            raise ValueError(
                f"param 'mode': crawler mode needs glue.tables.<name>.crawler_name for {without}"
            )
    if mode == EVENTS:
        selected = _event_tables(table, selected, config)
    if mode == "msck" and not config.glue.athena_output_location:
        raise ValueError("param 'mode': msck mode needs glue.athena_output_location in the config")
    return selected


def _event_tables(table: str | None, selected: list[str], config: Settings) -> list[str]:
    """The selected tables whose partitions arrive as events; every table (no ``table`` param) means
    every table with ``mode: events``."""
    with_events = [name for name in selected if config.glue.tables[name].mode == EVENTS]
    if table and not with_events:
        raise ValueError(
            f"param 'mode': mode 'events' needs glue.tables.{table}.mode: events (and its events_queue)"
        )
    if not with_events:
        raise ValueError("param 'mode': mode 'events' needs a table with mode: events in glue.tables")
    return with_events


def _shown(value: object, limit: int = 200) -> str:
    """A bad value for an error message: its repr, cut short (a param can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def load_partitions(
    glue,
    s3,
    name: str,
    table: GlueTable,
    mode: Mode,
    *,
    interval: tuple[datetime, datetime] | None = None,
    dry_run: bool = False,
) -> LoadReport:
    """Find and register the table's partitions; raise PartitionLoadError after registering the rest if
    any partition failed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "interval" and (interval is None or interval[0] is None or interval[0] >= interval[1]):
        raise ValueError(
            f"interval mode needs a non-empty data interval, got {interval}: trigger the run with a "
            "logical date (or backfill), or use mode=discover"
        )

    layout = PartitionLayout(table)
    report = LoadReport(table=name, mode=mode, dry_run=dry_run)
    started = time.perf_counter()
    found = _find(s3, table, layout, mode, interval, report)
    report.s3_seconds = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    report.s3_list_calls = found.list_calls
    record_invalid(report, found.invalid)
    report.empty = len(found.empty)
    report.empty_prefixes = found.empty[:_REPORT_SAMPLE]
    if found.empty:
        log.info(
            "%s: %d prefixes hold only writer leftovers, skipped: %s",
            name,
            len(found.empty),
            found.empty[:10],
        )

    register_missing(
        glue, table, layout, found.partitions, report, read_whole_table=mode == "discover", dry_run=dry_run
    )
    report.glue_seconds = round(time.perf_counter() - started, 3)
    log.info(report.summary())
    raise_if_failed(report)
    return report


def record_invalid(report: LoadReport, invalid: dict[str, str]) -> None:
    """Count and log prefixes that are not partitions (relative prefix -> reason); the report keeps a
    sample."""
    report.invalid += len(invalid)
    room = max(0, _REPORT_SAMPLE - len(report.invalid_prefixes))
    report.invalid_prefixes.update(dict(list(invalid.items())[:room]))
    for prefix, reason in invalid.items():
        log.warning("%s: not a partition, skipped: %s (%s)", report.table, prefix, reason)


def register_missing(
    glue,
    table: GlueTable,
    layout: PartitionLayout,
    partitions: dict[PartitionValues, str],
    report: LoadReport,
    *,
    read_whole_table: bool,
    dry_run: bool,
) -> set[PartitionValues]:
    """Create the ``partitions`` (values -> path relative to the location) that Glue lacks, counting
    into ``report``; return those that Glue holds afterwards (already there, or created now).

    ``read_whole_table``: read every partition with GetPartitions (a listing of the whole location
    finds them all anyway) instead of asking BatchGetPartition for just these."""
    candidates = list(partitions)
    if read_whole_table:
        existing, reads = catalog.all_partitions(glue, table.database, table.table)
    else:
        existing, reads = catalog.existing_partitions(glue, table.database, table.table, candidates)
    report.glue_read_calls += reads
    existing &= set(candidates)  # Glue may hold partitions whose prefix is gone from S3: not ours to count
    report.already_present += len(existing)
    to_create = [
        (values, table.location + partitions[values]) for values in candidates if values not in existing
    ]

    if dry_run:
        report.would_create += len(to_create)
        for values, location in to_create[:_REPORT_SAMPLE]:
            log.info("%s: would register %s at %s", report.table, list(values), location)
        return existing
    if not to_create:
        return existing
    result = _register(glue, table, layout, to_create, report)
    return existing | set(result.created) | set(result.already_present)


def raise_if_failed(report: LoadReport) -> None:
    """PartitionLoadError naming each partition that failed, once the others are registered."""
    if not report.failed:
        return
    raise PartitionLoadError(
        f"{report.table}: {report.failed} partitions failed to register (the other {report.created} were): "
        + "; ".join(f"{values} -> {error}" for values, error in report.failed_partitions.items())
        + (
            f" (first {_REPORT_SAMPLE}; every one is in the task log)"
            if report.failed > _REPORT_SAMPLE
            else ""
        ),
        report,
    )


def _find(s3, table: GlueTable, layout: PartitionLayout, mode: Mode, interval, report: LoadReport):
    if mode == "discover":
        found = discovery.discover(s3, table.location, layout)
        report.listed = len(found.partitions)
        return found
    start, end = interval
    report.interval_start, report.interval_end = start.isoformat(), end.isoformat()
    wanted = layout.values_for_interval(start, end)
    found = discovery.present_in_s3(s3, table.location, layout, wanted)
    report.listed = len(wanted)
    report.missing_in_s3 = len(wanted) - len(found.partitions) - len(found.empty)
    if report.missing_in_s3:
        empty = set(found.empty)
        missing = [v for v in wanted if v not in found.partitions and layout.render(v) not in empty]
        log.warning(
            "%s: %d partitions of %s..%s have no data in S3 yet and are not registered: %s",
            report.table,
            len(missing),
            report.interval_start,
            report.interval_end,
            missing[:10],
        )
    return found


def _register(
    glue, table: GlueTable, layout: PartitionLayout, to_create: list, report: LoadReport
) -> catalog.CreateResult:
    descriptor = catalog.describe_table(glue, table.database, table.table)
    report.glue_read_calls += 1
    expected_keys = tuple(key.name for key in layout.keys)
    if descriptor.partition_keys != expected_keys:
        raise ValueError(
            f"{table.database}.{table.table}: Glue partition keys {list(descriptor.partition_keys)} differ "
            f"from the configured keys {list(expected_keys)}; fix glue.tables in the config"
        )
    result = catalog.create_partitions(glue, descriptor, to_create)
    for values, error in result.failed.items():
        log.error("%s: partition %s failed to register: %s", report.table, _label(values), error)
    report.created += len(result.created)
    # A partition created by someone else between our read and our write is present, not new.
    report.already_present += len(result.already_present)
    report.failed += len(result.failed)
    sample = list(result.failed.items())[: max(0, _REPORT_SAMPLE - len(report.failed_partitions))]
    report.failed_partitions.update({_label(values): error for values, error in sample})
    report.glue_write_calls += result.write_calls
    return result


def _label(values: PartitionValues) -> str:
    return "/".join(values)
