"""What the reconciliation Spark jobs agree on: event types, reason codes, statuses, the schemas of the
stateless artifacts (Parquet) and of the stateful ARTIFACT JSON lines, and small helpers for job specs.

pyspark is imported for its types only; this module is imported by the Spark jobs alone (the Airflow
side reads the same files with plain JSON).
"""

from __future__ import annotations

from typing import Any

from pyspark.sql.types import (
    ArrayType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from spark_jobs.common.storage import Storage, is_s3

# Every amount of an event goes into the column of its type; the order is the order of the totals.
EVENT_TYPES = ("receivable", "payable", "royalty", "amortization", "remittance", "correction")
# The only event type whose amount may be negative (a correction is signed).
SIGNED_EVENT_TYPE = "correction"
EVENT_FIELDS = ("event_id", "artifact_key", "entity", "event_type", "amount", "currency", "event_time")

# Quarantine reason codes, in the order the checks run: a row gets the first one that applies.
NOT_JSON = "not_json"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
AMOUNT_NOT_INTEGER = "amount_not_integer"
NEGATIVE_AMOUNT = "negative_amount"
BAD_CURRENCY = "bad_currency"
BAD_EVENT_TIME = "bad_event_time"


def missing(field: str) -> str:
    return f"missing_{field}"


REASON_CODES = (
    NOT_JSON,
    *(missing(field) for field in EVENT_FIELDS),
    UNKNOWN_EVENT_TYPE,
    AMOUNT_NOT_INTEGER,
    NEGATIVE_AMOUNT,
    BAD_CURRENCY,
    BAD_EVENT_TIME,
)

# |amount| < 10^15: at most 15 digits.
AMOUNT_PATTERN = r"^-?[0-9]{1,15}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
# ISO-8601 in UTC, written with "Z"; the calendar check (no 30 February) is the timestamp cast's.
EVENT_TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$"

# Artifact statuses.
RECONCILED = "RECONCILED"
OVERPAID = "OVERPAID"
OPEN = "OPEN"
STATUSES = (OPEN, RECONCILED, OVERPAID)

# How the stateful job writes timestamps (the session time zone is UTC).
ISO_MILLIS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"

# -- schemas -------------------------------------------------------------------------------------------

# Events are parsed with every field as a string so that a wrong type is seen (and quarantined with its
# reason) instead of silently becoming null.
EVENT_TEXT_SCHEMA = StructType([StructField(field, StringType()) for field in EVENT_FIELDS])

STATELESS_TOTAL_SCHEMA = StructType(
    [StructField("currency", StringType())] + [StructField(name, LongType()) for name in EVENT_TYPES]
)

STATELESS_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("batches", ArrayType(StringType())),
        StructField("event_count", LongType()),
        StructField("first_event_time", TimestampType()),
        StructField("last_event_time", TimestampType()),
        StructField("entities", ArrayType(StringType())),
        StructField("totals", ArrayType(STATELESS_TOTAL_SCHEMA)),
    ]
)

SEEN_SCHEMA = StructType([StructField("event_id", StringType()), StructField("event_date", StringType())])
# A group's seen/ holds the ids it applied, partitioned by a hash bucket of the id, so that a lookup by id
# names the one folder per group that can hold it, whatever the event's time. The count is part of the
# layout: every group within the dedup horizon must have been written with the same one.
SEEN_BUCKET = "id_bucket"
SEEN_BUCKETS = 8
# Groups written before the buckets partitioned seen/ by event date; a lookup reads all of such a group.
LEGACY_SEEN_PARTITION = "event_date"

ARTIFACT_TOTAL_SCHEMA = StructType([*STATELESS_TOTAL_SCHEMA.fields, StructField("balance", LongType())])

# The ARTIFACT JSON line, fields in the contract's order (to_json keeps the struct's order). Times are
# ISO strings in the JSON; the jobs turn them into timestamps after parsing.
ARTIFACT_JSON_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("version", LongType()),
        StructField("batches", ArrayType(StringType())),
        StructField("entities", ArrayType(StringType())),
        StructField("event_count", LongType()),
        StructField("first_event_time", StringType()),
        StructField("last_event_time", StringType()),
        StructField("totals", ArrayType(ARTIFACT_TOTAL_SCHEMA)),
        StructField("status", StringType()),
        StructField("seq", LongType()),
    ]
)
ARTIFACT_FIELDS = tuple(field.name for field in ARTIFACT_JSON_SCHEMA.fields)

# -- job specs and folders -----------------------------------------------------------------------------

STATELESS_SPEC_KEYS = ("group_id", "batches", "dedup_group_uris", "output_uri")
STATEFUL_SPEC_KEYS = (
    "seq",
    "stateless_uris",
    "inflight_state_uris",
    "state_uri",
    "output_uri",
    "state_part_files",
)


def check_spec(spec: dict[str, Any], required: tuple[str, ...], what: str) -> dict[str, Any]:
    """``spec`` itself, after checking it names everything the job needs."""
    absent = [key for key in required if key not in spec]
    if absent:
        raise ValueError(f"{what} job spec lacks {absent}; it has {sorted(spec)}")
    for key in ("output_uri", "state_uri"):
        if key in spec and not str(spec[key]).endswith("/"):
            raise ValueError(f"{what} job spec: {key} must end with '/', got {spec[key]!r}")
    return spec


def folder_exists(storage: Storage, uri: str) -> bool:
    """A folder exists locally when its directory does; on S3 when any object lies under it."""
    if not is_s3(uri) and storage.exists(uri):
        return True
    return bool(storage.list_children(uri))


def read_committed_stats(storage: Storage, committed_uri: str, stats_uri: str, job: str) -> dict | None:
    """The stats of a committed run (the rerun is a no-op), or None when ``committed_uri`` is absent."""
    if not storage.exists(committed_uri):
        return None
    print(f"{job}: {committed_uri} exists, the run is committed; nothing to do")
    if not storage.exists(stats_uri):
        print(f"{job}: warning: {stats_uri} is missing although the run is committed")
        return {}
    return storage.read_json(stats_uri)
