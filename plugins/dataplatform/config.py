"""Typed settings for one environment, loaded from ``include/config/<env>.yaml``.

``DATAPLATFORM_ENV`` (default ``local``) picks the file; ``DATAPLATFORM_CONFIG`` names a file directly
(tests and benchmarks use it). Every key is validated when the file is loaded, so a typo or a missing key
fails the first task that reads the config with a message naming the key, not halfway through a run.

The AWS endpoint is deliberately absent: it comes only from the Airflow connection (see ``aws.py``).
"""

from __future__ import annotations

import functools
import os
import re
import string
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "include" / "config"

# Every pattern here is applied with ``fullmatch``: ``$`` alone would let a trailing newline through.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,254}")
_ENV_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
# (AWS wants 3-63 characters; shorter names are kept for the tests' stand-in buckets such as s3://b/.)
_S3_BUCKET = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")
# Characters a URI of the config may hold: S3's "safe" key characters (no quotes, spaces, shell
# metacharacters or control characters); ``{local_dir}`` is replaced after the check.
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9/_.=+:-]*")
# A name that other systems receive as a plain token (workgroups, crawlers, Spark masters, ids).
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,255}")
# An SQS standard queue name (S3 event notifications cannot target FIFO queues, so no ``.fifo``).
_SQS_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,80}")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid; the message names the key."""


class _Strict(BaseModel):
    # strict: YAML gives numbers and booleans their own types, so "5", 2.5 or true for an integer (and
    # "yes" or 1 for a boolean) are typos to refuse, not values to coerce.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


LOCAL_DIR_ENV = "DATAPLATFORM_LOCAL_DIR"


def local_dir() -> Path:
    """Where local runs keep files (``{local_dir}`` in URIs): ``$DATAPLATFORM_LOCAL_DIR`` or ``.local/``."""
    return Path(os.environ.get(LOCAL_DIR_ENV) or REPO_ROOT / ".local").resolve()


def is_region(value: object) -> bool:
    return isinstance(value, str) and _REGION.fullmatch(value) is not None


def glue_identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{value!r} is not a lower-case Glue identifier")
    return value


def _require_s3_uri(value: str) -> str:
    value = _require_s3_or_file_uri(value)
    if not value.startswith("s3://"):
        raise ValueError("must be an s3:// URI")
    return value


def _identifier_keys(value: dict, what: str) -> dict:
    # A key names mapped tasks, task groups and report files.
    bad = [key for key in value if not _IDENTIFIER.fullmatch(key)]
    if bad:
        raise ValueError(f"{what} keys must be lower-case identifiers, got {bad}")
    return value


def _require_s3_or_file_uri(value: str) -> str:
    # ``file://{local_dir}/...`` keeps local paths out of the repository's config and lets the tests
    # point every local file at their own temporary directory.
    if not _URI_CHARACTERS.fullmatch(value.replace("{local_dir}", "")):
        raise ValueError(f"must be an s3:// or file:// URI of letters, digits and /_.=+:-, got {value!r}")
    value = value.replace("{local_dir}", str(local_dir()))
    if not re.match(r"^(s3|file)://[^/]+", value) and not value.startswith("file:///"):
        raise ValueError(f"must be an s3:// or file:// URI, got {value!r}")
    scheme, _, rest = value.partition("://")
    segments = rest.split("/")
    if "." in segments or ".." in segments:
        raise ValueError(f"must not contain '.' or '..' path segments, got {value!r}")
    if scheme == "s3" and not _S3_BUCKET.fullmatch(segments[0]):
        raise ValueError(f"{segments[0]!r} is not an S3 bucket name")
    return value.rstrip("/") + "/"


def _optional_s3_uri(value: str | None) -> str | None:
    return None if value is None else _require_s3_uri(value)


_CONN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")


def _connection_id(value: str) -> str:
    if not _CONN_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid Airflow connection id")
    return value


ConnectionId = Annotated[str, AfterValidator(_connection_id)]


def _optional_match(value: str | None, pattern: str, what: str) -> str | None:
    if value is not None and not re.fullmatch(pattern, value):
        raise ValueError(f"{value!r} is not {what}")
    return value


def _token(value: str | None, what: str) -> str | None:
    if value is not None and not _TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid {what} (1-255 letters, digits, '_', '.', '-')")
    return value


def _region_name(value: str) -> str:
    if not is_region(value):
        raise ValueError(f"{value!r} is not an AWS region name such as us-east-1")
    return value


class AwsSettings(_Strict):
    conn_id: ConnectionId = "aws_default"
    region: Annotated[str, AfterValidator(_region_name)]


class LocalSparkSettings(_Strict):
    master: str = "local[2]"
    spark_submit: str | None = None  # default: the spark-submit of the installed pyspark

    @field_validator("master")
    @classmethod
    def _master(cls, value: str) -> str:
        # Passed to spark-submit --master: local[N], local[*], local[N,F] or a cluster URL.
        if not re.fullmatch(r"local(\[([0-9]+|\*)(,[0-9]+)?\])?|yarn|(spark|k8s)://[A-Za-z0-9.:/_-]+", value):
            raise ValueError(f"{value!r} is not a Spark master (local[2], local[*], yarn, spark://host:port)")
        return value


class EmrSettings(_Strict):
    # Run steps on this cluster; when empty a transient cluster is created from the template.
    cluster_id: str | None = None
    cluster_template: str = "include/emr/transient_cluster.json"
    release_label: str = "emr-7.5.0"
    log_uri: str | None = None
    step_timeout_minutes: Annotated[int, Field(gt=0)] = 180
    poll_seconds: Annotated[int, Field(gt=0)] = 30

    @field_validator("cluster_id")
    @classmethod
    def _cluster_id(cls, value: str | None) -> str | None:
        return _optional_match(value, r"j-[A-Z0-9]{1,64}", "an EMR cluster id (j-XXXXXXXXXXXXX)")

    @field_validator("release_label")
    @classmethod
    def _release_label(cls, value: str) -> str:
        return _optional_match(value, r"emr-[0-9]+\.[0-9]+\.[0-9]+", "an EMR release label (emr-7.5.0)")

    @field_validator("log_uri")
    @classmethod
    def _log_uri(cls, value: str | None) -> str | None:
        return _optional_s3_uri(value)


class EmrServerlessSettings(_Strict):
    application_id: str | None = None
    execution_role_arn: str | None = None
    log_uri: str | None = None
    job_timeout_minutes: Annotated[int, Field(gt=0)] = 180
    poll_seconds: Annotated[int, Field(gt=0)] = 30

    @field_validator("application_id")
    @classmethod
    def _application_id(cls, value: str | None) -> str | None:
        return _optional_match(value, r"[0-9a-z]{1,64}", "an EMR Serverless application id")

    @field_validator("execution_role_arn")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        return _optional_match(
            value, r"arn:aws[a-z-]*:iam::[0-9]{1,12}:role/[A-Za-z0-9+=,.@_/-]{1,512}", "an IAM role ARN"
        )

    @field_validator("log_uri")
    @classmethod
    def _log_uri(cls, value: str | None) -> str | None:
        return _optional_s3_uri(value)


class SparkSettings(_Strict):
    backend: Literal["local", "emr", "emr_serverless"]
    # Where the packaged spark_jobs zip and entry scripts live for EMR (s3://...); unused locally.
    code_uri: str | None = None
    local: LocalSparkSettings = LocalSparkSettings()
    emr: EmrSettings = EmrSettings()
    emr_serverless: EmrServerlessSettings = EmrServerlessSettings()

    @field_validator("code_uri")
    @classmethod
    def _code_uri(cls, value: str | None) -> str | None:
        return _optional_s3_uri(value)

    @model_validator(mode="after")
    def _backend_has_what_it_needs(self) -> SparkSettings:
        if self.backend in ("emr", "emr_serverless") and not self.code_uri:
            raise ValueError(f"spark.code_uri is required for backend {self.backend!r}")
        if self.backend == "emr_serverless":
            missing = [
                key
                for key in ("application_id", "execution_role_arn")
                if not getattr(self.emr_serverless, key)
            ]
            if missing:
                raise ValueError(
                    "spark.emr_serverless." + ", spark.emr_serverless.".join(missing) + " required"
                )
        return self


class PartitionKey(_Strict):
    """One partition column and how its value looks in a path.

    ``format`` is a strftime pattern for time-derived keys (``%Y-%m-%d`` for dt, ``%H`` for hour): it lets
    interval mode render the keys of a data interval and lets discovery reject values like
    ``dt=garbage``. Keys without a format (a region, a tenant) accept values matching ``pattern``.
    """

    name: str
    format: str | None = None
    pattern: str = r"[A-Za-z0-9_.\-]+"

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"partition key {value!r} is not a lower-case Glue identifier")
        return value


class GlueTable(_Strict):
    database: str
    table: str
    location: str
    partition_keys: list[PartitionKey] = Field(min_length=1)
    # ``hive`` paths are key=value per level; ``template`` paths follow path_template, e.g. CloudTrail's
    # ``{year}/{month}/{day}``.
    layout: Literal["hive", "template"] = "hive"
    path_template: str | None = None
    granularity: Literal["hour", "day", "month"] = "day"
    # Wait (deferrable) for ``<partition>/_SUCCESS`` before registering scheduled intervals.
    wait_for_success_marker: bool = False
    success_marker_timeout_minutes: Annotated[int, Field(gt=0)] = 60
    success_marker_poke_seconds: Annotated[int, Field(gt=0)] = 60
    # AWS-only alternatives to the Glue API: Athena MSCK REPAIR TABLE or the table's crawler.
    crawler_name: str | None = None
    # How scheduled runs find new partitions: ``interval`` lists the run's data interval in S3;
    # ``events`` drains ``events_queue``, which the bucket's ObjectCreated notifications feed.
    mode: Literal["interval", "events"] = "interval"
    events_queue: str | None = None

    @field_validator("location")
    @classmethod
    def _location_uri(cls, value: str) -> str:
        return _require_s3_or_file_uri(value)

    @field_validator("database", "table")
    @classmethod
    def _glue_identifier(cls, value: str) -> str:
        return glue_identifier(value)

    @field_validator("crawler_name")
    @classmethod
    def _crawler_name(cls, value: str | None) -> str | None:
        return _token(value, "crawler name")

    @field_validator("events_queue")
    @classmethod
    def _events_queue(cls, value: str | None) -> str | None:
        if value is not None and not _SQS_QUEUE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an SQS standard queue name (1-80 letters, digits, '_', '-'; "
                "S3 notifications cannot target a FIFO queue)"
            )
        return value

    @model_validator(mode="after")
    def _events_need_a_queue(self) -> GlueTable:
        # A queue without mode events would fill with notifications that no scheduled run drains.
        if self.mode == "events" and not self.events_queue:
            raise ValueError("events_queue is required when mode is 'events'")
        if self.events_queue and self.mode != "events":
            raise ValueError("events_queue is only used with mode 'events'")
        if self.mode == "events" and not self.location.startswith("s3://"):
            raise ValueError("mode 'events' needs an s3:// location (S3 sends the event notifications)")
        return self

    @model_validator(mode="after")
    def _template_matches_keys(self) -> GlueTable:
        keys = [key.name for key in self.partition_keys]
        if self.layout == "template":
            if not self.path_template:
                raise ValueError("path_template is required when layout is 'template'")
            fields = [name for _, name, _, _ in string.Formatter().parse(self.path_template) if name]
            if sorted(fields) != sorted(keys):
                raise ValueError(f"path_template fields {fields} must be exactly the partition keys {keys}")
        elif self.path_template:
            raise ValueError("path_template is only used with layout 'template'")
        return self


class GlueSettings(_Strict):
    athena_output_location: str | None = None
    athena_workgroup: str = "primary"
    tables: dict[str, GlueTable] = Field(min_length=1)

    @field_validator("athena_output_location")
    @classmethod
    def _athena_output(cls, value: str | None) -> str | None:
        return _optional_s3_uri(value)

    @field_validator("athena_workgroup")
    @classmethod
    def _workgroup(cls, value: str) -> str:
        return _token(value, "Athena workgroup")

    @field_validator("tables")
    @classmethod
    def _table_keys(cls, value: dict[str, GlueTable]) -> dict[str, GlueTable]:
        return _identifier_keys(value, "table")


class BacklogSettings(_Strict):
    """How many pending batches one stateless run claims: ``batches_per_run`` when there is no backlog,
    growing by ``growth`` batches per batch of backlog beyond that, never more than
    ``max_batches_per_run`` (the reference's backlog grouping)."""

    batches_per_run: Annotated[int, Field(ge=1)] = 2
    growth: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_batches_per_run: Annotated[int, Field(ge=1)] = 24

    @model_validator(mode="after")
    def _max_covers_base(self) -> BacklogSettings:
        if self.max_batches_per_run < self.batches_per_run:
            raise ValueError("max_batches_per_run must be >= batches_per_run")
        return self


class PrefetchSettings(_Strict):
    # Ranges of one part file closer than this are read with one GET (the bytes between are discarded).
    coalesce_gap_bytes: Annotated[int, Field(ge=0)] = 65536
    # A coalesced GET never spans more than this.
    max_range_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    # Concurrent index reads and GETs per Spark task.
    threads: Annotated[int, Field(ge=1, le=256)] = 16


class ReconciliationSettings(_Strict):
    # Input batches land here, one folder per batch with a ``_manifest.json`` written last.
    landing_uri: str
    # Stateless artifacts, prefetched state, state part files, quarantine and job specs.
    work_uri: str
    ledger_table: str = "recon_ledger"
    index_table: str = "recon_index"
    # A window is complete when batches cover all of it and every one is indexed.
    completeness_window_minutes: Annotated[int, Field(ge=1, le=1440)] = 60
    backlog: BacklogSettings = BacklogSettings()
    # A claim older than this (its run died) may be taken over by another run.
    claim_timeout_minutes: Annotated[int, Field(ge=1)] = 120
    # Event ids are remembered this long to drop redeliveries.
    dedup_horizon_days: Annotated[int, Field(ge=1)] = 7
    # Part files the stateful processor writes per run ("a handful", never one object per artifact).
    state_part_files: Annotated[int, Field(ge=1, le=1000)] = 4
    prefetch: PrefetchSettings = PrefetchSettings()
    # Concurrent BatchWriteItem calls per indexer task.
    index_writers: Annotated[int, Field(ge=1, le=64)] = 8
    # Stateful runs in flight at once (prefetch of one while earlier ones process and index).
    max_in_flight: Annotated[int, Field(ge=1, le=16)] = 3
    # How long a stateful stage waits for the same stage of the previous run.
    order_wait_timeout_minutes: Annotated[int, Field(ge=1)] = 120
    # A window still incomplete this long after its end is a lake_health finding.
    completeness_sla_minutes: Annotated[int, Field(ge=1, le=10080)] = 180

    @field_validator("landing_uri", "work_uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _require_s3_or_file_uri(value)

    @field_validator("ledger_table", "index_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        return _dynamodb_table_name(value)


# -- Iceberg maintenance ------------------------------------------------------------------------------------

_TAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_S3_TAG_KEY = re.compile(r"[A-Za-z0-9 +\-=._:/@]{1,128}")
_S3_TAG_VALUE = re.compile(r"[A-Za-z0-9 +\-=._:/@]{0,256}")


class TagRule(_Strict):
    """A snapshot tag made for each period: ``name`` is a template over ``{date}`` (a strftime format
    after the colon, e.g. ``daily-{date:%Y-%m-%d}``), ``every`` says which dates get one, ``keep_days`` is
    the number of days the tag stays after the day it names: the tag of day D stays through D +
    ``keep_days`` (UTC) and the expiry step removes it after that (``snapshots.tag_keep_until``)."""

    name: str
    every: Literal["day", "month_end"]
    keep_days: Annotated[int, Field(ge=1)]

    @field_validator("name")
    @classmethod
    def _renders_to_a_valid_tag(cls, value: str) -> str:
        from datetime import date

        fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        if fields != ["date"]:
            raise ValueError(
                f"tag name {value!r} must contain exactly one {{date}} or {{date:<strftime>}} field"
            )
        try:
            rendered = value.format(date=date(2024, 12, 31))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"tag name {value!r} does not render: {exc}") from None
        if not _TAG_NAME.fullmatch(rendered):
            raise ValueError(
                f"tag name {value!r} renders to {rendered!r}: a tag name is 1-128 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        return value


class S3Tag(_Strict):
    key: str
    value: str

    @model_validator(mode="after")
    def _valid_s3_tag(self) -> S3Tag:
        if not _S3_TAG_KEY.fullmatch(self.key) or self.key.lower().startswith("aws:"):
            raise ValueError(f"{self.key!r} is not a valid S3 tag key")
        if not _S3_TAG_VALUE.fullmatch(self.value):
            raise ValueError(f"{self.value!r} is not a valid S3 tag value")
        return self


class UnreferencedFiles(_Strict):
    """What happens to files no retained snapshot references any more: ``delete`` (DeleteObjects), or
    ``tag`` (Iceberg's ``s3.delete-enabled=false`` with ``s3.delete.tags``): the lifecycle rule below
    archives and later expires them."""

    action: Literal["delete", "tag"] = "tag"
    tag: S3Tag = S3Tag(key="delete-tag-name", value="deleted")


class LifecycleRule(_Strict):
    """The bucket lifecycle rule for objects carrying the delete tag under the table location."""

    enabled: bool = True
    transition_days: Annotated[int, Field(ge=0)] = 30
    storage_class: Literal["GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "STANDARD_IA"] = "GLACIER_IR"
    expiration_days: Annotated[int, Field(ge=1)] = 365

    @model_validator(mode="after")
    def _expires_after_transition(self) -> LifecycleRule:
        if self.expiration_days <= self.transition_days:
            raise ValueError("expiration_days must be greater than transition_days")
        return self


class CreatedFiles(_Strict):
    """Tag files written since the last maintenance run (Iceberg's ``s3.write.tags``)."""

    enabled: bool = True
    tag: S3Tag = S3Tag(key="write-tag-name", value="created")


_SORT_KEY = re.compile(r"^([a-z_][a-z0-9_]{0,254})(?:\s+((?i:asc|desc)))?$")


class Compaction(_Strict):
    """Bin-pack compaction of a table's small data files, and the rewrite of its small manifests
    (``dataplatform.iceberg.compaction_plan``: the rules; the same on both backends).

    ``target_file_mb``: the size files are rewritten to (a file under 75 % of it is small);
    ``min_input_files``: a partition is rewritten when it has at least this many small files (or one with
    row-level deletes); ``max_bytes_per_run``: the bytes one run rewrites at most (with ``backend: spark``
    Iceberg caps each file group at it instead: ``rewrite_data_files`` has no cap per run);
    ``sort_order``: columns (``"col"`` or ``"col desc"``) the rewritten rows are sorted by within each
    file, nulls last; ``max_small_manifests``: more data manifests than this under
    ``target_manifest_mb`` and they are rewritten into few."""

    enabled: bool = True
    target_file_mb: Annotated[float, Field(gt=0, le=4096)] = 128.0
    min_input_files: Annotated[int, Field(ge=2)] = 5
    max_bytes_per_run: Annotated[int, Field(ge=1024 * 1024)] = 100 * 1024**3
    sort_order: list[str] = Field(default_factory=list)
    max_small_manifests: Annotated[int, Field(ge=1)] = 16
    target_manifest_mb: Annotated[float, Field(gt=0, le=1024)] = 8.0

    @field_validator("sort_order")
    @classmethod
    def _sort_keys(cls, value: list[str]) -> list[str]:
        columns = []
        for key in value:
            match = _SORT_KEY.fullmatch(key.strip())
            if not match:
                raise ValueError(
                    f"sort_order entry {key!r}: expected a lower-case column name, optionally followed by "
                    "'asc' or 'desc'"
                )
            columns.append(match.group(1))
        if len(set(columns)) != len(columns):
            raise ValueError(f"sort_order names a column twice: {value}")
        return [key.strip() for key in value]

    @property
    def sort_keys(self) -> list[tuple[str, str]]:
        """``sort_order`` as (column, ``asc`` | ``desc``) pairs."""
        keys = []
        for key in self.sort_order:
            match = _SORT_KEY.fullmatch(key)
            keys.append((match.group(1), (match.group(2) or "asc").lower()))
        return keys

    @property
    def target_file_bytes(self) -> int:
        return int(self.target_file_mb * 1024 * 1024)

    @property
    def target_manifest_bytes(self) -> int:
        return int(self.target_manifest_mb * 1024 * 1024)


class _GlueTableRef(_Strict):
    """A table in the Glue catalog, named ``database``.``table`` (both lower-case Glue identifiers)."""

    database: str
    table: str

    @field_validator("database", "table")
    @classmethod
    def _glue_identifier(cls, value: str) -> str:
        return glue_identifier(value)

    @property
    def identifier(self) -> str:
        return f"{self.database}.{self.table}"


class IcebergTablePolicy(_GlueTableRef):
    """Maintenance policy of one Iceberg table in the Glue catalog."""

    # ``pyiceberg`` runs in the Airflow worker; ``spark`` runs Iceberg's Spark procedures on the configured
    # Spark backend (EMR / EMR Serverless), for tables too big for one worker.
    backend: Literal["pyiceberg", "spark"] = "pyiceberg"
    retain_last: Annotated[int, Field(ge=1)] = 10
    max_snapshot_age_hours: Annotated[float, Field(ge=0)] = 120.0
    tag_rules: list[TagRule] = Field(default_factory=list)
    unreferenced: UnreferencedFiles = UnreferencedFiles()
    lifecycle: LifecycleRule = LifecycleRule()
    created: CreatedFiles = CreatedFiles()
    # Younger unreferenced objects may belong to a write still in progress (Iceberg's default is 3 days).
    orphan_min_age_hours: Annotated[float, Field(ge=1)] = 72.0
    # Absent: no compaction (a table's writers may already write large files).
    compaction: Compaction | None = None

    @model_validator(mode="after")
    def _distinct_tags(self) -> IcebergTablePolicy:
        names = [rule.name for rule in self.tag_rules]
        if len(set(names)) != len(names):
            raise ValueError("tag_rules names must be distinct")
        if self.created.enabled and self.created.tag.key == self.unreferenced.tag.key:
            raise ValueError("created.tag.key and unreferenced.tag.key must differ")
        if self.backend == "spark":
            # Iceberg's remove_orphan_files refuses a younger cutoff, and the tags travel as Spark conf
            # keys and values (``s3.delete.tags.<key>=<value>``), which cannot hold spaces or '='.
            if self.orphan_min_age_hours < 24:
                raise ValueError("orphan_min_age_hours must be >= 24 with backend 'spark'")
            for tag in (self.unreferenced.tag, self.created.tag):
                if any(c in tag.key + tag.value for c in " ="):
                    raise ValueError(f"tag {tag.key}={tag.value}: no spaces or '=' with backend 'spark'")
        return self


class IcebergSettings(_Strict):
    # Where each table's maintenance state (what the last run saw, pending file actions) is kept.
    state_uri: str
    # S3 requests in flight at once when tagging files.
    tag_workers: Annotated[int, Field(ge=1, le=256)] = 32
    # A commit that lost a race to another writer is re-planned on fresh metadata this many times.
    commit_retries: Annotated[int, Field(ge=0, le=20)] = 4
    tables: dict[str, IcebergTablePolicy] = Field(min_length=1)

    @field_validator("tables")
    @classmethod
    def _table_keys(cls, value: dict[str, IcebergTablePolicy]) -> dict[str, IcebergTablePolicy]:
        return _identifier_keys(value, "table")

    @field_validator("state_uri")
    @classmethod
    def _state_uri(cls, value: str) -> str:
        return _require_s3_uri(value)


# -- GDPR erasure -------------------------------------------------------------------------------------------

_DYNAMODB_TABLE = re.compile(r"[A-Za-z0-9_.\-]{3,255}")


def _dynamodb_table_name(value: str) -> str:
    if not _DYNAMODB_TABLE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid DynamoDB table name")
    return value


class GdprDataset(_GlueTableRef):
    """A table that holds personal data, and how a subject's rows are found and erased in it.

    ``subject_columns``: every column that may hold a subject id (a row matches when any of them does).
    Iceberg tables are found through the Glue catalog (``database``.``table``); ``engine: pyiceberg``
    rewrites the files in the Airflow worker, ``spark`` runs ``DELETE FROM`` on EMR for large tables.
    Hudi tables are always erased by a Spark job on a transient EMR cluster and need their storage
    ``location``, ``record_key`` and ``precombine_field`` (Hudi's delete needs key, partition path and
    ordering field); ``partition_column`` is the partition path field.
    """

    format: Literal["iceberg", "hudi"]
    catalog: Literal["glue"] = "glue"
    subject_columns: list[str] = Field(min_length=1)
    partition_column: str | None = None
    engine: Literal["pyiceberg", "spark"] = "pyiceberg"
    # A tag or branch pinning a snapshot that still holds a subject's rows: ``fail`` stops the dataset and
    # names the refs (a person decides), ``drop`` removes the ref so the snapshot can be expired.
    pinned_refs: Literal["fail", "drop"] = "fail"
    # Hudi only.
    location: str | None = None
    record_key: str | None = None
    precombine_field: str | None = None
    hudi_table_type: Literal["COPY_ON_WRITE", "MERGE_ON_READ"] = "COPY_ON_WRITE"

    @field_validator("subject_columns")
    @classmethod
    def _columns(cls, value: list[str]) -> list[str]:
        bad = [column for column in value if not _IDENTIFIER.fullmatch(column)]
        if bad:
            raise ValueError(f"subject columns must be lower-case identifiers, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError("subject_columns must be distinct")
        return value

    @field_validator("partition_column", "record_key", "precombine_field")
    @classmethod
    def _column(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"{value!r} is not a lower-case column name")
        return value

    @field_validator("location")
    @classmethod
    def _location_uri(cls, value: str | None) -> str | None:
        return None if value is None else _require_s3_or_file_uri(value)

    @model_validator(mode="after")
    def _format_has_what_it_needs(self) -> GdprDataset:
        if self.format == "hudi":
            if self.engine != "spark":
                raise ValueError(
                    "a hudi dataset needs engine 'spark' (Hudi deletes run as a Spark job on EMR)"
                )
            missing = [
                key
                for key in ("location", "record_key", "precombine_field", "partition_column")
                if not getattr(self, key)
            ]
            if missing:
                raise ValueError(f"a hudi dataset needs {', '.join(missing)}")
        else:
            hudi_only = [key for key in ("location", "record_key", "precombine_field") if getattr(self, key)]
            if hudi_only:
                raise ValueError(f"{', '.join(hudi_only)}: hudi datasets only")
        return self


class GdprSettings(_Strict):
    requests_table: str = "gdpr_requests"
    # Append-only: records are only ever added (conditional puts), never updated or deleted.
    audit_table: str = "gdpr_audit"
    # The Airflow connection (or secrets backend entry) whose password is the HMAC key that stands in for
    # subject ids in logs, reports and the audit trail.
    hmac_conn_id: ConnectionId = "gdpr_hmac"
    # What a subject id looks like; anything else is refused before a request is stored.
    subject_id_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$"
    # Days between receipt and the legal deadline (GDPR: one month).
    deadline_days: Annotated[int, Field(ge=1, le=90)] = 30
    # An open request this close to its deadline (or past it) is a lake_health finding.
    alert_days_before_deadline: Annotated[int, Field(ge=0, le=90)] = 7
    # Requests one run claims.
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 100
    # An IN_PROGRESS claim older than this (its run died) may be claimed by another run.
    claim_timeout_minutes: Annotated[int, Field(ge=1)] = 360
    # Spark job specs (they hold subject ids: keep the prefix private), their results, and the purge's
    # list of files still to delete when a run dies between its commit and its deletes.
    work_uri: str
    # Concurrent file reads and writes of the pyiceberg engine.
    workers: Annotated[int, Field(ge=1, le=64)] = 8
    commit_retries: Annotated[int, Field(ge=0, le=20)] = 4
    datasets: dict[str, GdprDataset] = Field(min_length=1)

    @field_validator("requests_table", "audit_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        return _dynamodb_table_name(value)

    @model_validator(mode="after")
    def _alert_before_the_deadline(self) -> GdprSettings:
        if self.alert_days_before_deadline >= self.deadline_days:
            raise ValueError(
                f"alert_days_before_deadline ({self.alert_days_before_deadline}) must be below deadline_days "
                f"({self.deadline_days}): every request would be a finding the day it arrives"
            )
        return self

    @field_validator("subject_id_pattern")
    @classmethod
    def _anchored_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if not (value.startswith("^") and value.endswith("$")):
            raise ValueError("must be anchored with ^ and $ (a subject id is matched whole)")
        return value

    @field_validator("work_uri")
    @classmethod
    def _work_uri(cls, value: str) -> str:
        # Read by EMR jobs and by the purge's pending-delete state: S3 in every environment.
        return _require_s3_uri(value)

    @field_validator("datasets")
    @classmethod
    def _dataset_keys(cls, value: dict[str, GdprDataset]) -> dict[str, GdprDataset]:
        return _identifier_keys(value, "dataset")


# -- Benchmark pricing ----------------------------------------------------------------------------------


class PricingSettings(_Strict):
    """Benchmark pricing: where launches are, where prices come from, what the report compares."""

    # The workflow manager's launch records (DynamoDB, status index ``by_status``).
    launches_table: str = "workflow_launches"
    # One cost record per Spark job run on EMR or EMR Serverless.
    job_costs_table: str = "spark_job_costs"
    # ``price_list``: the Price List Query API and EC2 Spot price history (AWS). ``snapshot``: the offline
    # copy of both under ``snapshot_dir`` (the local stack and the tests: moto has no Price List API).
    source: Literal["price_list", "snapshot"]
    # Relative to the repository root unless absolute.
    snapshot_dir: str = "include/pricing"
    # Prices fetched by one task are kept here for the next tasks (one object per price key).
    price_cache_uri: str
    price_cache_hours: Annotated[float, Field(ge=0)] = 24.0
    # Launches priced per DAG run (oldest completed first); the rest wait for the next run.
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 200
    # The comparison report covers launches completed in the last ``report_period_days``.
    report_period_days: Annotated[int, Field(ge=1, le=3660)] = 30
    report_group_by: Literal["family", "architecture"] = "family"

    @field_validator("launches_table", "job_costs_table")
    @classmethod
    def _table_names(cls, value: str) -> str:
        return _dynamodb_table_name(value)

    @field_validator("price_cache_uri")
    @classmethod
    def _cache_uri(cls, value: str) -> str:
        return _require_s3_or_file_uri(value)

    @field_validator("snapshot_dir")
    @classmethod
    def _snapshot_dir(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9/_.-]{1,1024}", value):
            raise ValueError(f"must be a directory path of letters, digits and /_.-, got {value!r}")
        return value

    def snapshot_path(self) -> Path:
        path = Path(self.snapshot_dir)
        return path if path.is_absolute() else REPO_ROOT / path


# A standard SNS topic's ARN: arn:<partition>:sns:<region>:<account>:<name>. Not a FIFO topic (.fifo): its
# publishes need a message group and deduplication id, which the alerts do not send.
_SNS_TOPIC_ARN = re.compile(
    r"arn:aws[a-z-]*:sns:([a-z]{2}(-[a-z]+)+-[0-9]{1,2}):[0-9]{12}:[A-Za-z0-9_-]{1,256}"
)


class AlertSettings(_Strict):
    """Where the DAGs' alerts go (``dataplatform.alerts``). Both keys are required: an environment that
    forgot to say where its alerts go fails at load, not silently at the first failed run."""

    # Empty: alerts are only logged (by the task or the DAG processor that raised them).
    sns_topic_arn: str
    # Publish attempts per alert (the first and its retries) before the alert is logged as lost.
    publish_attempts: Annotated[int, Field(ge=1, le=10)] = 3

    @field_validator("sns_topic_arn")
    @classmethod
    def _topic_arn(cls, value: str) -> str:
        if value and not _SNS_TOPIC_ARN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>) nor empty"
            )
        return value

    def topic_region(self) -> str | None:
        match = _SNS_TOPIC_ARN.fullmatch(self.sns_topic_arn)
        return match.group(1) if match else None


# -- Lake health ----------------------------------------------------------------------------------------


class DagDeadlines(_Strict):
    """Airflow Deadline Alerts on the scheduled DAGs (``dags/``): minutes after which a run that has not
    finished alerts (through the same SNS path as the DAG alerts). 0 turns one off."""

    # The nightly Iceberg maintenance finished within this many minutes of its scheduled time.
    iceberg_maintenance_minutes: Annotated[int, Field(ge=0, le=1440)] = 180
    # recon_stateless not more than this many minutes behind its schedule (from its logical date).
    recon_stateless_behind_minutes: Annotated[int, Field(ge=0, le=1440)] = 30
    # benchmark_pricing not stuck: a run still going this many minutes after it was queued.
    benchmark_pricing_minutes: Annotated[int, Field(ge=0, le=1440)] = 60


class HealthSettings(_Strict):
    """The hourly ``lake_health`` DAG: domain deadlines Airflow cannot see, and where their open findings
    are kept (each alerts once, and again when it clears)."""

    # One item per open finding (created by the first lake_health run).
    findings_table: str = "lake_health_findings"
    # The Iceberg maintenance schedule's period: a table not maintained for two periods is a finding.
    iceberg_maintenance_period_hours: Annotated[int, Field(ge=1, le=24 * 31)] = 24
    # A launch whose pricing failed this many times (and is still unpriced) is a finding.
    pricing_failed_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    # Minutes after the end of a Glue table's newest registered partition before it is stale, per
    # ``glue.tables`` key; a table not named here gets two of its partition periods.
    glue_freshness_minutes: dict[str, Annotated[int, Field(ge=1, le=60 * 24 * 366)]] = {}
    deadlines: DagDeadlines = DagDeadlines()

    @field_validator("findings_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        return _dynamodb_table_name(value)


class PoolSpec(_Strict):
    """One Airflow pool: how many task instances it lets run at once, and what for (shown in the UI)."""

    slots: Annotated[int, Field(ge=1, le=1024)]
    description: str = Field(min_length=1, max_length=300)

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be one line of printable characters")
        return value


class PoolSettings(_Strict):
    """The pools the operators assign their tasks to (``dataplatform.operators.pools`` says what each
    caps); the local stack creates them from here, MWAA imports them (README, *Concurrency limits*)."""

    spark_jobs: PoolSpec
    emr_transient_clusters: PoolSpec
    glue_api: PoolSpec


class Settings(_Strict):
    env: str
    aws: AwsSettings
    alerts: AlertSettings
    # Run reports (JSON) are written under this URI, one object per DAG run and task.
    reports_uri: str
    spark: SparkSettings
    glue: GlueSettings
    reconciliation: ReconciliationSettings
    iceberg: IcebergSettings
    gdpr: GdprSettings
    pricing: PricingSettings
    health: HealthSettings = HealthSettings()
    pools: PoolSettings

    @field_validator("reports_uri")
    @classmethod
    def _reports_uri(cls, value: str) -> str:
        return _require_s3_or_file_uri(value)

    @model_validator(mode="after")
    def _freshness_of_known_tables(self) -> Settings:
        unknown = sorted(set(self.health.glue_freshness_minutes) - set(self.glue.tables))
        if unknown:
            raise ValueError(
                f"health.glue_freshness_minutes names {unknown}, not tables of glue.tables {sorted(self.glue.tables)}"
            )
        return self

    @model_validator(mode="after")
    def _topic_in_the_region(self) -> Settings:
        # The SNS client is the AWS connection's, in aws.region: a topic elsewhere would fail every publish.
        region = self.alerts.topic_region()
        if region and region != self.aws.region:
            raise ValueError(f"alerts.sns_topic_arn is in {region}, not in aws.region {self.aws.region}")
        return self

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an environment name (lower-case letters, digits, '_', '-')")
        return value


def config_path(env: str | None = None) -> Path:
    explicit = os.environ.get("DATAPLATFORM_CONFIG")
    if explicit and env is None:
        return Path(explicit)
    env = env or os.environ.get("DATAPLATFORM_ENV", "local")
    # The name becomes a file name under include/config/: nothing that could leave that folder.
    if not _ENV_NAME.fullmatch(env):
        raise ConfigError(
            f"DATAPLATFORM_ENV {env!r} is not an environment name (lower-case letters, digits, '_', '-'): "
            f"one of {sorted(path.stem for path in CONFIG_DIR.glob('*.yaml'))}"
        )
    return CONFIG_DIR / f"{env}.yaml"


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate one environment's settings; raise ConfigError naming the bad key."""
    path = Path(path) if path else config_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found (DATAPLATFORM_ENV={os.environ.get('DATAPLATFORM_ENV', 'local')})"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    try:
        return Settings.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path}:\n{_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "<root>"
        message = "missing" if error["type"] == "missing" else error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


@functools.cache
def settings() -> Settings:
    """The current environment's settings, loaded once per process."""
    return load_settings()
