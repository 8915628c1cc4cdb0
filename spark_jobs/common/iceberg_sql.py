"""Iceberg maintenance as Spark SQL: the job spec, the catalog's Spark conf and every statement the
``spark_jobs/iceberg_maintenance.py`` job runs, for the ``backend: spark`` tables.

This is the one implementation of that SQL. It lives in ``spark_jobs.common`` because only ``spark_jobs``
is shipped to EMR; the Airflow side (``dataplatform.iceberg.spark_sql``) builds the spec and the conf
from a table policy with the functions here. Pure: no pyspark, no Airflow, no ``dataplatform``.

Identifiers are validated and backtick-quoted before they reach SQL (also when they come back from a
spec read from S3); timestamps are UTC literals ``TIMESTAMP 'YYYY-MM-DD HH:MM:SS.ffffff'``, which Spark
reads in the session time zone: the conf sets it to UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

CATALOG = "glue_catalog"
SPEC_VERSION = 3
# Where EMR (on EC2 and Serverless) installs the Iceberg Spark runtime.
EMR_ICEBERG_JAR = "/usr/share/aws/iceberg/lib/iceberg-spark3-runtime.jar"
# Iceberg's remove_orphan_files refuses an older_than less than a day in the past.
MIN_ORPHAN_AGE_HOURS = 24.0
ORPHAN_SAMPLE = 10

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,254}$")
_TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# S3 allows spaces and '=' in tag keys and spaces in values; a Spark conf key cannot hold '=' (``--conf
# k=v``) and EMR Serverless' sparkSubmitParameters cannot carry whitespace.
_CONF_TAG_KEY = re.compile(r"^[A-Za-z0-9+\-._:/@]{1,128}$")
_CONF_TAG_VALUE = re.compile(r"^[A-Za-z0-9+\-=._:/@]{0,256}$")

SPEC_KEYS = (
    "version",
    "table_key",
    "catalog",
    "database",
    "table",
    "dry_run",
    "day",
    "now",
    "tags",
    "tags_skipped",
    "expire",
    "orphans",
    "unreferenced_action",
    "report_uri",
    "compaction",
)
# The spec's ``compaction`` (null: the table is not compacted).
COMPACTION_KEYS = (
    "target_file_bytes",
    "min_file_bytes",
    "min_input_files",
    "max_file_group_bytes",
    "sort_order",
    "max_small_manifests",
    "small_manifest_bytes",
)


# -- identifiers and literals ------------------------------------------------------------------------------


def quote(name: Any, what: str = "identifier") -> str:
    """```name``` for a lower-case catalog, database or table name; anything else raises ValueError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{what} {name!r} is not a lower-case identifier ([a-z_][a-z0-9_]*)")
    return f"`{name}`"


def quote_tag(name: Any) -> str:
    if not isinstance(name, str) or not _TAG_NAME.match(name):
        raise ValueError(
            f"tag name {name!r} is not 1-128 letters, digits, '.', '_' or '-' starting with a letter or digit"
        )
    return f"`{name}`"


def parse_utc(value: datetime | str) -> datetime:
    """An aware datetime (or its ISO string) in UTC; naive times are refused rather than guessed."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware, got {value!r}")
    return moment.astimezone(UTC)


def timestamp_literal(value: datetime | str) -> str:
    """``TIMESTAMP '2024-04-01 00:00:00.000000'`` (UTC; the job's session time zone is UTC)."""
    return f"TIMESTAMP '{parse_utc(value).strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def table_ref(spec: Mapping[str, Any]) -> str:
    """```glue_catalog`.`lake`.`clickstream```."""
    return ".".join(
        (
            quote(spec["catalog"], "catalog"),
            quote(spec["database"], "database"),
            quote(spec["table"], "table"),
        )
    )


def metadata_table(spec: Mapping[str, Any], name: str) -> str:
    if name not in ("snapshots", "refs", "history", "entries", "all_entries", "data_files", "manifests"):
        raise ValueError(f"unexpected metadata table {name!r}")
    return f"{table_ref(spec)}.`{name}`"


def procedure(spec: Mapping[str, Any], name: str) -> str:
    return f"{quote(spec['catalog'], 'catalog')}.system.{name}"


def procedure_table_arg(spec: Mapping[str, Any]) -> str:
    """The ``table`` argument of a procedure: a string the procedure parses as a multi-part identifier
    in its own catalog, so the quoted parts are inside the literal."""
    return f"'{quote(spec['database'], 'database')}.{quote(spec['table'], 'table')}'"


# -- the Spark conf of the catalog ---------------------------------------------------------------------------


def catalog_conf(
    *,
    delete_tag: tuple[str, str] | None,
    write_tag: tuple[str, str] | None,
    catalog: str = CATALOG,
    jars: str | None = EMR_ICEBERG_JAR,
) -> dict[str, str]:
    """Spark conf for the Glue catalog ``catalog`` with S3FileIO (no warehouse: tables exist already).

    ``delete_tag``: Iceberg tags the files it would delete with it instead of deleting them
    (``s3.delete-enabled=false`` + ``s3.delete.tags.<key>``), for expire_snapshots and remove_orphan_files
    alike; None deletes them. ``write_tag``: every file written through this catalog gets it
    (``s3.write.tags.<key>``): the job's own metadata files, and other writers' files only when they are
    configured the same way.
    """
    quote(catalog, "catalog")
    prefix = f"spark.sql.catalog.{catalog}"
    conf = {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        # Every statement reads the table's current metadata: the counts before and after expiry, and
        # the end-of-day snapshot, must not come from a table object cached before another commit.
        f"{prefix}.cache-enabled": "false",
        # TIMESTAMP literals in the statements are UTC.
        "spark.sql.session.timeZone": "UTC",
    }
    if jars:
        conf["spark.jars"] = jars
    if delete_tag is not None:
        key, value = _conf_tag(delete_tag, "delete")
        conf[f"{prefix}.s3.delete-enabled"] = "false"
        conf[f"{prefix}.s3.delete.tags.{key}"] = value
    if write_tag is not None:
        key, value = _conf_tag(write_tag, "write")
        conf[f"{prefix}.s3.write.tags.{key}"] = value
    return conf


def check_session(spark: Any, catalog: str, job: str, submit_with: str) -> None:
    """Fail at once, naming the missing conf, when ``job`` was submitted without the Iceberg catalog
    (``submit_with`` names the function that builds the right conf)."""
    wanted = catalog_conf(delete_tag=None, write_tag=None, catalog=catalog, jars=None)
    missing = [
        key
        for key in ("spark.sql.extensions", f"spark.sql.catalog.{catalog}")
        if wanted[key] not in (spark.conf.get(key, None) or "")
    ]
    if missing:
        raise RuntimeError(
            f"{job}: the Spark session lacks the Iceberg catalog conf {missing} (submit the job with {submit_with})"
        )


def _conf_tag(tag: tuple[str, str], what: str) -> tuple[str, str]:
    key, value = tag
    if not isinstance(key, str) or not _CONF_TAG_KEY.match(key):
        raise ValueError(
            f"S3 {what} tag key {key!r} cannot be a Spark catalog property: use letters, digits and "
            "+ - . _ : / @ (no spaces, no '=')"
        )
    if not isinstance(value, str) or not _CONF_TAG_VALUE.match(value):
        raise ValueError(
            f"S3 {what} tag value {value!r} cannot be a Spark catalog property: use letters, digits and "
            "+ - = . _ : / @ (no spaces)"
        )
    return key, value


# -- the spec ------------------------------------------------------------------------------------------------


def check_spec(spec: Any) -> dict[str, Any]:
    """``spec`` itself after checking every field the job uses (it is read from S3: trust nothing)."""
    if not isinstance(spec, dict):
        raise ValueError(f"iceberg maintenance spec must be a JSON object, got {type(spec).__name__}")
    absent = [key for key in SPEC_KEYS if key not in spec]
    if absent:
        raise ValueError(f"iceberg maintenance spec lacks {absent}; it has {sorted(spec)}")
    if spec["version"] != SPEC_VERSION:
        raise ValueError(f"iceberg maintenance spec version {spec['version']!r}, expected {SPEC_VERSION}")
    table_ref(spec)
    if not isinstance(spec["dry_run"], bool):
        raise ValueError(f"spec dry_run must be true or false, got {spec['dry_run']!r}")
    parse_utc(spec["now"])
    if spec["unreferenced_action"] not in ("delete", "tag"):
        raise ValueError(
            f"spec unreferenced_action must be delete or tag, got {spec['unreferenced_action']!r}"
        )
    if not isinstance(spec["tags"], list):
        raise ValueError("spec tags must be a list")
    for tag in spec["tags"]:
        quote_tag(tag["name"])
        _int(tag["keep_days"], f"tag {tag['name']} keep_days", 1)
        parse_utc(tag["as_of_before"])
        parse_utc(tag["keep_until"])
    if not isinstance(spec["tags_skipped"], dict):
        raise ValueError("spec tags_skipped must be an object (tag name -> reason)")
    _int(spec["expire"]["retain_last"], "expire.retain_last", 1)
    parse_utc(spec["expire"]["older_than"])
    parse_utc(spec["orphans"]["older_than"])
    if not str(spec["report_uri"]).startswith(("s3://", "file://")):
        raise ValueError(f"spec report_uri must be an s3:// or file:// URI, got {spec['report_uri']!r}")
    if spec["compaction"] is not None:
        check_compaction(spec["compaction"])
    return spec


def check_compaction(compaction: Any) -> None:
    if not isinstance(compaction, dict) or sorted(compaction) != sorted(COMPACTION_KEYS):
        raise ValueError(f"spec compaction must be null or an object with {list(COMPACTION_KEYS)}")
    for key in COMPACTION_KEYS:
        if key != "sort_order":
            _int(compaction[key], f"compaction.{key}", 1)
    sort_order_clause(compaction["sort_order"])


# -- 1. tags -------------------------------------------------------------------------------------------------


def ref_names_sql(spec: Mapping[str, Any]) -> str:
    """Tags and branches share one namespace: a tag cannot take the name of a branch either."""
    return f"SELECT name, type FROM {metadata_table(spec, 'refs')}"


def snapshot_as_of_sql(spec: Mapping[str, Any], before: datetime | str, keep_until: datetime | str) -> str:
    """The newest snapshot of main's ancestry committed before ``before`` (the end of the tagged day),
    as the pyiceberg path picks it: ``history.is_current_ancestor`` is main's ancestry; with the minutes
    from its commit to ``keep_until`` (the tag's RETAIN: Iceberg ages a ref from its snapshot's time),
    computed in SQL so that no timestamp crosses into Python.

    ``RETAIN`` takes whole minutes (DAYS, HOURS or MINUTES: Iceberg's SQL has no finer unit), so the
    minutes are rounded up: the tag is kept through the whole of its last day, and at most a minute
    longer than the pyiceberg path's tag, whose ``max_ref_age_ms`` ends exactly at ``keep_until``.
    Rounded down, an expiry in the last minute of that day would already drop it."""
    return (
        f"SELECT s.snapshot_id, CAST(CEIL((unix_millis({timestamp_literal(keep_until)}) - "
        "unix_millis(s.committed_at)) / 60000) AS BIGINT) AS retain_minutes "
        f"FROM {metadata_table(spec, 'snapshots')} AS s "
        f"JOIN {metadata_table(spec, 'history')} AS h ON s.snapshot_id = h.snapshot_id "
        f"WHERE h.is_current_ancestor AND s.committed_at < {timestamp_literal(before)} "
        "ORDER BY s.committed_at DESC, s.snapshot_id DESC LIMIT 1"
    )


def create_tag_sql(spec: Mapping[str, Any], name: str, snapshot_id: int, retain_minutes: int) -> str:
    """``IF NOT EXISTS``: a rerun, or a writer that made the tag meanwhile, leaves the tag as it is."""
    return (
        f"ALTER TABLE {table_ref(spec)} CREATE TAG IF NOT EXISTS {quote_tag(name)} "
        f"AS OF VERSION {_int(snapshot_id, 'snapshot id')} "
        f"RETAIN {_int(retain_minutes, 'retain minutes', 1)} MINUTES"
    )


# -- compaction --------------------------------------------------------------------------------------------


def sort_order_clause(keys: Any) -> str:
    """``order_id ASC NULLS LAST, ...`` from ``[[column, "asc" | "desc"], ...]`` (nulls last, as the
    pyiceberg path sorts); empty for no sort order. Column names are checked, not quoted: the procedure
    parses this string itself."""
    if not isinstance(keys, list):
        raise ValueError(f"compaction.sort_order must be a list of [column, direction], got {keys!r}")
    clauses = []
    for key in keys:
        if not (isinstance(key, list) and len(key) == 2 and key[1] in ("asc", "desc")):
            raise ValueError(f"compaction.sort_order entry {key!r} is not [column, 'asc' | 'desc']")
        quote(key[0], "sort column")
        clauses.append(f"{key[0]} {key[1].upper()} NULLS LAST")
    return ", ".join(clauses)


def data_files_sql(spec: Mapping[str, Any]) -> str:
    return (
        "SELECT count(*) AS files, coalesce(sum(file_size_in_bytes), 0) AS bytes "
        f"FROM {metadata_table(spec, 'data_files')}"
    )


def compaction_candidates_sql(spec: Mapping[str, Any]) -> str:
    """The partitions with at least ``min_input_files`` small data files (what a dry run reports; row-level
    deletes, which also make a file a candidate, are not counted here)."""
    compaction = spec["compaction"]
    return (
        "SELECT to_json(partition) AS partition, count(*) AS files, sum(file_size_in_bytes) AS bytes "
        f"FROM {metadata_table(spec, 'data_files')} "
        f"WHERE file_size_in_bytes < {_int(compaction['min_file_bytes'], 'compaction.min_file_bytes', 1)} "
        "GROUP BY to_json(partition) "
        f"HAVING count(*) >= {_int(compaction['min_input_files'], 'compaction.min_input_files', 1)} "
        "ORDER BY files DESC, partition"
    )


def rewrite_data_files_sql(spec: Mapping[str, Any]) -> str:
    """Bin-pack (or sort, with a sort order) of the small files, with the rules of the pyiceberg plan
    (``dataplatform.iceberg.compaction_plan``): small = under ``min_file_bytes``; a group needs
    ``min_input_files`` of them or a file with deletes (``delete-file-threshold`` 1); one commit per
    file group (``partial-progress``), groups with the most files first. Deletes are applied; the delete
    files stay (the new files get the sequence number the rewrite started from, Iceberg's default, so
    that an equality delete committed meanwhile cannot conflict: the old deletes are not older than
    them, which is what ``remove-dangling-deletes`` would need)."""
    compaction = spec["compaction"]
    options = {
        "target-file-size-bytes": _int(compaction["target_file_bytes"], "compaction.target_file_bytes", 1),
        "min-file-size-bytes": _int(compaction["min_file_bytes"], "compaction.min_file_bytes", 1),
        "min-input-files": _int(compaction["min_input_files"], "compaction.min_input_files", 1),
        "max-file-group-size-bytes": _int(
            compaction["max_file_group_bytes"], "compaction.max_file_group_bytes", 1
        ),
        "delete-file-threshold": 1,
        "partial-progress.enabled": "true",
        "rewrite-job-order": "files-desc",
    }
    option_map = ", ".join(f"'{key}', '{value}'" for key, value in options.items())
    sort_order = sort_order_clause(compaction["sort_order"])
    strategy = (
        f"strategy => 'sort', sort_order => '{sort_order}', " if sort_order else "strategy => 'binpack', "
    )
    return (
        f"CALL {procedure(spec, 'rewrite_data_files')}(table => {procedure_table_arg(spec)}, "
        f"{strategy}options => map({option_map}))"
    )


def small_manifests_sql(spec: Mapping[str, Any]) -> str:
    """The current snapshot's data manifests (content 0) under the small size."""
    small = _int(spec["compaction"]["small_manifest_bytes"], "compaction.small_manifest_bytes", 1)
    return (
        "SELECT count(*) AS manifests, coalesce(sum(CASE WHEN length < "
        f"{small} THEN 1 ELSE 0 END), 0) AS small FROM {metadata_table(spec, 'manifests')} WHERE content = 0"
    )


def rewrite_manifests_sql(spec: Mapping[str, Any]) -> str:
    """Iceberg's rewrite_manifests: every data manifest rewritten to the table's
    ``commit.manifest.target-size-bytes`` (8 MiB unless the table sets it), entries clustered by
    partition."""
    return f"CALL {procedure(spec, 'rewrite_manifests')}(table => {procedure_table_arg(spec)})"


def last_commit_ms_sql(spec: Mapping[str, Any]) -> str:
    return f"SELECT max(unix_millis(committed_at)) AS ms FROM {metadata_table(spec, 'snapshots')}"


def expire_after_compaction(spec: Mapping[str, Any], last_commit_ms: int) -> dict[str, Any]:
    """The spec with the expiry cutoff moved by the time from the spec's ``now`` to the compaction's last
    commit: measured from the plan, the job's own snapshots would be younger than any max age and kept
    until the next run (the pyiceberg path moves its clock the same way)."""
    now_ms = int(parse_utc(spec["now"]).timestamp() * 1000)
    if last_commit_ms <= now_ms:
        return dict(spec)
    older_than = parse_utc(spec["expire"]["older_than"]) + (
        datetime.fromtimestamp(last_commit_ms / 1000, UTC) - parse_utc(spec["now"])
    )
    return {**spec, "expire": {**spec["expire"], "older_than": older_than.isoformat()}}


# -- 2. expiry -----------------------------------------------------------------------------------------------


def snapshots_sql(spec: Mapping[str, Any]) -> str:
    """Every snapshot with whether it is older than the expiry cutoff (compared in SQL, so no timestamp
    has to cross into Python and its local time zone)."""
    return (
        f"SELECT snapshot_id, committed_at < {timestamp_literal(spec['expire']['older_than'])} AS old_enough "
        f"FROM {metadata_table(spec, 'snapshots')}"
    )


def refs_sql(spec: Mapping[str, Any]) -> str:
    return (
        "SELECT r.name, r.type, r.snapshot_id, r.max_reference_age_in_ms, "
        "unix_millis(s.committed_at) AS committed_ms "
        f"FROM {metadata_table(spec, 'refs')} AS r "
        f"LEFT JOIN {metadata_table(spec, 'snapshots')} AS s ON r.snapshot_id = s.snapshot_id"
    )


def last_ancestors_sql(spec: Mapping[str, Any]) -> str:
    """The last ``retain_last`` snapshots of main's ancestry (a snapshot made current twice, after a
    rollback, counts once)."""
    retain_last = _int(spec["expire"]["retain_last"], "expire.retain_last", 1)
    return (
        "SELECT snapshot_id, max(made_current_at) AS last_made_current_at "
        f"FROM {metadata_table(spec, 'history')} WHERE is_current_ancestor "
        f"GROUP BY snapshot_id ORDER BY last_made_current_at DESC LIMIT {retain_last}"
    )


def expire_snapshots_sql(spec: Mapping[str, Any]) -> str:
    """Iceberg keeps tag and branch heads and the last ``retain_last`` snapshots and drops refs past their
    max age itself; ``stream_results`` sends the deleted paths to the driver a partition at a time."""
    expire = spec["expire"]
    return (
        f"CALL {procedure(spec, 'expire_snapshots')}(table => {procedure_table_arg(spec)}, "
        f"older_than => {timestamp_literal(expire['older_than'])}, "
        f"retain_last => {_int(expire['retain_last'], 'expire.retain_last', 1)}, "
        "stream_results => true)"
    )


def expiry_estimate(
    snapshots: Iterable[Mapping[str, Any]],
    refs: Iterable[Mapping[str, Any]],
    last_ancestors: Iterable[int],
    now: datetime | str,
    also_kept: Iterable[int] = (),
) -> dict[str, Any]:
    """What expire_snapshots would do (it has no dry run), by the rules the pyiceberg path plans with:
    refs past ``max_reference_age_in_ms`` (never main) go; a snapshot goes when it is older than the
    cutoff, not the head of a remaining ref, not among main's last ``retain_last`` and not in
    ``also_kept`` (the heads of tags this run would create). Retain-last of branches other than main is
    not modelled: for such tables this can overstate what goes."""
    now_ms = int(parse_utc(now).timestamp() * 1000)
    refs = list(refs)
    aged = sorted(
        ref["name"]
        for ref in refs
        if ref["name"] != "main"
        and ref.get("max_reference_age_in_ms") is not None
        and (ref.get("committed_ms") is None or now_ms - ref["committed_ms"] > ref["max_reference_age_in_ms"])
    )
    kept_by_ref = {ref["snapshot_id"] for ref in refs if ref["name"] not in aged}
    kept = kept_by_ref | set(last_ancestors) | set(also_kept)
    snapshots = list(snapshots)
    expire_ids = sorted(
        row["snapshot_id"] for row in snapshots if row["old_enough"] and row["snapshot_id"] not in kept
    )
    return {
        "snapshots_before": len(snapshots),
        "snapshots_expired": len(expire_ids),
        "expired_ids": expire_ids,
        "tags_removed": aged,
    }


def deleted_counts(row: Mapping[str, Any]) -> dict[str, int]:
    """expire_snapshots' result row (``deleted_data_files_count`` ...) as ``{data_files: n, ...}``."""
    counts = {}
    for key, value in row.items():
        if key.startswith("deleted_") and key.endswith("_count"):
            counts[key[len("deleted_") : -len("_count")]] = int(value or 0)
    return counts


# -- 6. orphans ----------------------------------------------------------------------------------------------


def remove_orphan_files_sql(spec: Mapping[str, Any]) -> str:
    """``prefix_listing``: the table location is listed with the catalog's S3FileIO (ListObjectsV2), as
    everything else the job reads; without it Iceberg lists with a Hadoop FileSystem for ``s3://``,
    which only EMR's EMRFS provides (elsewhere: "No FileSystem for scheme s3")."""
    return (
        f"CALL {procedure(spec, 'remove_orphan_files')}(table => {procedure_table_arg(spec)}, "
        f"older_than => {timestamp_literal(spec['orphans']['older_than'])}, "
        f"dry_run => {'true' if spec['dry_run'] else 'false'}, prefix_listing => true)"
    )


def orphan_summary(locations: Sequence[str], spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "found": len(locations),
        "sample": sorted(locations)[:ORPHAN_SAMPLE],
        "older_than": parse_utc(spec["orphans"]["older_than"]).isoformat(),
        "min_age_hours": spec["orphans"].get("min_age_hours"),
        "action": "listed" if spec["dry_run"] else spec["unreferenced_action"],
    }
