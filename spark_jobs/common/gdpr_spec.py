"""The GDPR erasure jobs' spec and result, and the subject predicates both jobs build.

``spark_jobs/gdpr_hudi_delete.py`` and ``spark_jobs/gdpr_iceberg_delete.py`` read a spec (written by the
Airflow task that plans the run, see ``dataplatform.gdpr.spark_erasure``) and write a result JSON that
the run's ``finish`` task checks and records. Pure: no pyspark, no Airflow, no ``dataplatform``; shipped
to EMR in spark_jobs.zip and imported by the Airflow side too.

Subject ids are personal data. They travel in the spec (a private prefix) and into the SQL the jobs run,
and nowhere else: every message here, every line the jobs print and the result JSON name a subject by its
index in the spec's ``subject_ids`` list. ``scrub`` replaces ids in text that did not come from us (a
Spark or Hudi exception can quote the query plan, literals included) before it is raised again.

Subject ids reach SQL as literals typed after the column they are compared with: quoted and escaped for
string columns, plain integers for integer columns (so Parquet and Iceberg can still prune files by
column statistics, which a cast of the column would defeat). An id that cannot be a value of a column's
type (``cust-1`` in a ``bigint`` column) simply matches nothing in that column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

SPEC_VERSION = 1
HUDI_JOB = "gdpr_hudi_delete"
ICEBERG_JOB = "gdpr_iceberg_delete"
FORMAT_OF_JOB = {HUDI_JOB: "hudi", ICEBERG_JOB: "iceberg"}
TABLE_TYPES = ("COPY_ON_WRITE", "MERGE_ON_READ")
PINNED_REFS_POLICIES = ("fail", "drop")

ERASED, NOTHING_TO_DELETE, PINNED_REFS = "erased", "nothing_to_delete", "pinned_refs"
STATUSES = (ERASED, NOTHING_TO_DELETE, PINNED_REFS)

SPEC_KEYS = (
    "version",
    "job",
    "dataset",
    "format",
    "database",
    "table",
    "subject_columns",
    "partition_column",
    "subject_ids",
    "result_uri",
    "aws_endpoint_url",
    "region",
    # Iceberg only (None for Hudi).
    "catalog",
    "pinned_refs",
    # Hudi only (None for Iceberg).
    "location",
    "record_key",
    "precombine_field",
    "table_type",
)

RESULT_KEYS = (
    "job",
    "dataset",
    "format",
    "status",
    "rows_deleted",
    "rows_deleted_by_subject",
    "files_rewritten",
    "commit",
    "expired_snapshots",
    "dropped_refs",
    "pinned_refs",
    "verification",
    "started_at",
    "finished_at",
)

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,254}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SUBJECT_ID_LENGTH = 256

# Spark's simpleString of the column types a subject id can be compared with.
_STRING_TYPE = re.compile(r"^(string|varchar\(\d+\)|char\(\d+\))$")
_INTEGER_RANGES = {
    "tinyint": (-(2**7), 2**7 - 1),
    "smallint": (-(2**15), 2**15 - 1),
    "int": (-(2**31), 2**31 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
_INTEGER = re.compile(r"^-?[0-9]{1,20}$")


# -- the spec ------------------------------------------------------------------------------------------------


def _identifier(spec: Mapping[str, Any], key: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"gdpr spec {key} {value!r} is not a lower-case identifier ([a-z_][a-z0-9_]*)")
    return value


def _uri(spec: Mapping[str, Any], key: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value.startswith(("s3://", "file://")):
        raise ValueError(f"gdpr spec {key} must be an s3:// or file:// URI, got {value!r}")
    return value


def _optional_text(spec: Mapping[str, Any], key: str) -> None:
    value = spec.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"gdpr spec {key} must be a string or null, got {type(value).__name__}")


def check_subject_ids(subject_ids: Any) -> list[str]:
    """A non-empty list of distinct, non-empty strings without control characters. Messages name the
    position of a bad id, never the id."""
    if not isinstance(subject_ids, list) or not subject_ids:
        raise ValueError("gdpr spec subject_ids must be a non-empty list")
    first_at: dict[str, int] = {}
    for position, subject_id in enumerate(subject_ids):
        if not isinstance(subject_id, str) or not subject_id:
            raise ValueError(f"gdpr spec subject_ids[{position}] is not a non-empty string")
        if len(subject_id) > MAX_SUBJECT_ID_LENGTH or _CONTROL.search(subject_id):
            raise ValueError(
                f"gdpr spec subject_ids[{position}] is longer than {MAX_SUBJECT_ID_LENGTH} characters or "
                "holds control characters"
            )
        if subject_id in first_at:
            raise ValueError(f"gdpr spec subject_ids[{position}] repeats subject_ids[{first_at[subject_id]}]")
        first_at[subject_id] = position
    return subject_ids


def _check_subject_columns(spec: Mapping[str, Any]) -> None:
    columns = spec.get("subject_columns")
    if not isinstance(columns, list) or not columns:
        raise ValueError("gdpr spec subject_columns must be a non-empty list")
    for position, column in enumerate(columns):
        if not isinstance(column, str) or not _NAME.match(column):
            raise ValueError(
                f"gdpr spec subject_columns[{position}] {column!r} is not a lower-case identifier"
            )
    if len(set(columns)) != len(columns):
        raise ValueError(f"gdpr spec subject_columns must be distinct, got {columns}")


def _check_hudi_fields(spec: Mapping[str, Any]) -> None:
    _uri(spec, "location")
    for key in ("record_key", "partition_column", "precombine_field"):
        _identifier(spec, key)
    if spec.get("table_type") not in TABLE_TYPES:
        raise ValueError(
            f"gdpr spec table_type must be one of {list(TABLE_TYPES)}, got {spec.get('table_type')!r}"
        )


def _check_iceberg_fields(spec: Mapping[str, Any]) -> None:
    _identifier(spec, "catalog")
    if spec.get("partition_column") is not None:
        _identifier(spec, "partition_column")
    if spec.get("pinned_refs") not in PINNED_REFS_POLICIES:
        raise ValueError(
            f"gdpr spec pinned_refs must be one of {list(PINNED_REFS_POLICIES)}, got {spec.get('pinned_refs')!r}"
        )


def check_spec(spec: Any) -> dict[str, Any]:
    """``spec`` itself after checking every field the jobs use (it is read from S3: trust nothing).
    Raises ValueError naming the field; subject ids are named by position only."""
    if not isinstance(spec, dict):
        raise ValueError(f"gdpr spec must be a JSON object, got {type(spec).__name__}")
    absent = [key for key in SPEC_KEYS if key not in spec]
    if absent:
        raise ValueError(f"gdpr spec lacks {absent}")
    if spec["version"] != SPEC_VERSION:
        raise ValueError(f"gdpr spec version {spec['version']!r}, expected {SPEC_VERSION}")
    if spec["job"] not in FORMAT_OF_JOB:
        raise ValueError(f"gdpr spec job must be one of {sorted(FORMAT_OF_JOB)}, got {spec['job']!r}")
    if spec["format"] != FORMAT_OF_JOB[spec["job"]]:
        raise ValueError(f"gdpr spec format {spec['format']!r} does not fit job {spec['job']!r}")
    for key in ("dataset", "database", "table"):
        _identifier(spec, key)
    _check_subject_columns(spec)
    check_subject_ids(spec["subject_ids"])
    _uri(spec, "result_uri")
    _optional_text(spec, "aws_endpoint_url")
    _optional_text(spec, "region")
    if spec["format"] == "hudi":
        _check_hudi_fields(spec)
    else:
        _check_iceberg_fields(spec)
    return spec


# -- ids out of text -----------------------------------------------------------------------------------------


def scrub(text: str, subject_ids: Sequence[str]) -> str:
    """``text`` with every subject id replaced by ``<subject #i>`` (longest ids first, so an id inside a
    longer one cannot leave a fragment behind). Over-eager on purpose: a number that merely contains a
    numeric id is masked too."""
    order = sorted(range(len(subject_ids)), key=lambda i: len(subject_ids[i]), reverse=True)
    for index in order:
        text = text.replace(subject_ids[index], f"<subject #{index}>")
    return text


@contextmanager
def ids_scrubbed(job: str, subject_ids: Sequence[str]) -> Iterator[None]:
    """Re-raise any exception as a RuntimeError whose message has no subject id. The original is not
    chained (``from None``): a traceback printer would print its message, ids included."""
    try:
        yield
    except Exception as exc:
        message = scrub(str(exc), subject_ids)
        if not message.startswith(f"{job}: "):
            message = f"{job}: {type(exc).__name__}: {message}"
        raise RuntimeError(message) from None


# -- subject predicates (Spark SQL) ------------------------------------------------------------------------


def quote_column(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"column {name!r} is not a lower-case identifier")
    return f"`{name}`"


def string_literal(value: str) -> str:
    """A Spark SQL string literal. Spark's parser reads backslash escapes (``spark.sql.parser.
    escapedStringLiterals`` is off by default), so backslashes and quotes are escaped with one."""
    if _CONTROL.search(value):
        raise ValueError("a string literal cannot hold control characters")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def literal_for(subject_id: str, column_type: str) -> str | None:
    """``subject_id`` as a literal of ``column_type`` (Spark's simpleString), or None when no value of
    that type can equal it. Raises ValueError for types a subject id is never compared with."""
    column_type = column_type.strip().lower()
    if _STRING_TYPE.match(column_type):
        return string_literal(subject_id)
    if column_type in _INTEGER_RANGES:
        if not _INTEGER.match(subject_id):
            return None
        value = int(subject_id)
        low, high = _INTEGER_RANGES[column_type]
        return str(value) if low <= value <= high else None
    raise ValueError(f"type {column_type}: subject ids are compared with string or integer columns only")


def subject_literals(spec: Mapping[str, Any], column_types: Mapping[str, str]) -> dict[str, list[str | None]]:
    """Per subject column, one literal per subject (None where the id cannot occur in that column), in
    the spec's subject order: position ``i`` is subject ``i``."""
    literals: dict[str, list[str | None]] = {}
    for column in spec["subject_columns"]:
        if column not in column_types:
            raise ValueError(
                f"subject column {column!r} is not a column of {spec['database']}.{spec['table']}"
            )
        try:
            literals[column] = [
                literal_for(subject_id, column_types[column]) for subject_id in spec["subject_ids"]
            ]
        except ValueError as exc:
            raise ValueError(f"subject column {column!r}: {exc}") from None
    return literals


def subject_values(
    spec: Mapping[str, Any], column_types: Mapping[str, str]
) -> dict[str, list[tuple[int, str | int]]]:
    """Per subject column, ``(position, value)`` of each subject id that can be a value of the column's
    type: 1-based positions in the spec's ``subject_ids``, the id itself for string columns and as an int
    for integer columns. For matching subjects by joining with a DataFrame of them instead of comparing
    with SQL literals: data never reaches a query plan, the Spark UI or an event log; literals do."""
    values: dict[str, list[tuple[int, str | int]]] = {}
    for column, literals in subject_literals(spec, column_types).items():
        integer = column_types[column].strip().lower() in _INTEGER_RANGES
        values[column] = [
            (position, int(subject_id) if integer else subject_id)
            for position, (subject_id, literal) in enumerate(
                zip(spec["subject_ids"], literals, strict=True), start=1
            )
            if literal is not None
        ]
    return values


def _present(values: Sequence[str | None]) -> list[str]:
    return [value for value in values if value is not None]


def _listed(values: Sequence[str], redact: bool) -> str:
    return f"<{len(values)} subject ids>" if redact else ", ".join(values)


def subject_condition(
    literals: Mapping[str, Sequence[str | None]],
    redact: bool = False,
    expressions: Sequence[str] = ("{column}",),
) -> str:
    """``(`c1` IN (...) OR `c2` IN (...))``: a row is a subject's when any subject column holds the id.
    ``redact`` writes ``<n subject ids>`` instead of the literals (for logs). ``expressions``: what is
    compared per column, ``{column}`` standing for the quoted column (Iceberg's metadata tables compare
    ``readable_metrics.{column}.lower_bound``, say)."""
    parts = [
        f"{expression.format(column=quote_column(column))} IN ({_listed(_present(values), redact)})"
        for column, values in literals.items()
        if _present(values)
        for expression in expressions
    ]
    if not parts:
        return "false"
    return "(" + " OR ".join(parts) + ")"


def subject_positions(literals: Mapping[str, Sequence[str | None]], redact: bool = False) -> str:
    """An ``array<int>`` expression: the 1-based positions of the subjects a row matches, each once (a
    row naming a subject in two columns counts once for it; a row naming two subjects, once for each)."""
    lookups = []
    for column, values in literals.items():
        if not _present(values):
            continue
        listed = f"<{len(values)} subject ids>" if redact else ", ".join(v or "NULL" for v in values)
        lookups.append(f"array_position(array({listed}), {quote_column(column)})")
    if not lookups:
        return "array()"
    return f"array_distinct(filter(array({', '.join(lookups)}), p -> p > 0))"


def counts_by_position(rows: Sequence[Mapping[str, Any]], subjects: int) -> list[int]:
    """``[{position: 1-based, n}]`` -> one count per subject index."""
    counts = [0] * subjects
    for row in rows:
        counts[int(row["position"]) - 1] = int(row["n"])
    return counts


# -- the result ----------------------------------------------------------------------------------------------


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def verification(rows_found: Mapping[str, int], cleaned: Sequence[str] = ()) -> dict[str, Any]:
    """Passed when every version read holds none of the subjects' rows. ``cleaned``: versions that could
    not be read because their files are gone (Hudi refuses to time-travel before the cleaner's earliest
    retained commit)."""
    found = {str(version): int(count) for version, count in rows_found.items()}
    return {
        "passed": bool(found) and all(count == 0 for count in found.values()),
        "checked": list(found),
        "rows_found": found,
        "cleaned": [str(version) for version in cleaned],
    }


def status_of(
    rows_deleted: int,
    expired_snapshots: Sequence[str],
    dropped_refs: Sequence[str],
    commit: str | None = None,
) -> str:
    """``erased`` when the run changed the table: rows deleted, old versions expired or purged (a commit
    without rows deleted: Hudi's purge of old file slices), refs dropped."""
    changed = rows_deleted or expired_snapshots or dropped_refs or commit is not None
    return ERASED if changed else NOTHING_TO_DELETE


def build_result(
    spec: Mapping[str, Any],
    *,
    status: str,
    rows_deleted: int,
    rows_deleted_by_subject: Sequence[int],
    files_rewritten: int | None,
    commit: str | None,
    verification: Mapping[str, Any],
    started_at: str,
    expired_snapshots: Sequence[str] = (),
    dropped_refs: Sequence[str] = (),
    pinned_refs: Sequence[str] = (),
) -> dict[str, Any]:
    """The result JSON both jobs write, checked before it is written."""
    result = {
        "job": spec["job"],
        "dataset": spec["dataset"],
        "format": spec["format"],
        "status": status,
        "rows_deleted": int(rows_deleted),
        "rows_deleted_by_subject": [int(count) for count in rows_deleted_by_subject],
        "files_rewritten": None if files_rewritten is None else int(files_rewritten),
        "commit": None if commit is None else str(commit),
        "expired_snapshots": [str(snapshot) for snapshot in expired_snapshots],
        "dropped_refs": sorted(dropped_refs),
        "pinned_refs": sorted(pinned_refs),
        "verification": dict(verification),
        "started_at": started_at,
        "finished_at": utc_now(),
    }
    check_result_fields(result, subjects=len(spec["subject_ids"]))
    return result


def _int_at_least(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"result {what} must be an integer >= {minimum}, got {value!r}")
    return value


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"result {what} must be a list of strings, got {value!r}")
    return value


def _check_counts(result: Mapping[str, Any], subjects: int | None) -> None:
    rows = _int_at_least(result["rows_deleted"], "rows_deleted")
    by_subject = result["rows_deleted_by_subject"]
    if not isinstance(by_subject, list):
        raise ValueError("result rows_deleted_by_subject must be a list of counts")
    for index, count in enumerate(by_subject):
        _int_at_least(count, f"rows_deleted_by_subject[{index}]")
    if subjects is not None and len(by_subject) != subjects:
        raise ValueError(
            f"result rows_deleted_by_subject has {len(by_subject)} counts for {subjects} subjects"
        )
    # A row naming two subjects counts once in rows_deleted and once for each subject.
    if by_subject and not (max(by_subject) <= rows <= sum(by_subject)):
        raise ValueError(
            f"result rows_deleted {rows} does not fit rows_deleted_by_subject (max {max(by_subject)}, "
            f"sum {sum(by_subject)})"
        )
    if result["files_rewritten"] is not None:
        _int_at_least(result["files_rewritten"], "files_rewritten")


def _check_verification(value: Any) -> None:
    if not isinstance(value, dict) or set(value) != {"passed", "checked", "rows_found", "cleaned"}:
        raise ValueError("result verification must hold passed, checked, rows_found and cleaned")
    if not isinstance(value["passed"], bool):
        raise ValueError("result verification.passed must be true or false")
    checked = _strings(value["checked"], "verification.checked")
    _strings(value["cleaned"], "verification.cleaned")
    found = value["rows_found"]
    if not isinstance(found, dict):
        raise ValueError("result verification.rows_found must be an object")
    for version, count in found.items():
        _int_at_least(count, f"verification.rows_found[{version}]")
    if sorted(checked) != sorted(found):
        raise ValueError("result verification.checked and rows_found name different versions")
    if value["passed"] != (bool(found) and all(count == 0 for count in found.values())):
        raise ValueError("result verification.passed does not agree with rows_found")


def _check_status(result: Mapping[str, Any]) -> None:
    status = result["status"]
    changed = bool(
        result["rows_deleted"] or result["expired_snapshots"] or result["dropped_refs"] or result["commit"]
    )
    if status == PINNED_REFS and (changed or not result["pinned_refs"]):
        raise ValueError("result status pinned_refs must name the refs and change nothing")
    if status == NOTHING_TO_DELETE and changed:
        raise ValueError("result status nothing_to_delete with rows deleted, snapshots expired or a commit")
    if status == ERASED and not changed:
        raise ValueError("result status erased without a commit, a snapshot expired or a ref dropped")
    if result["rows_deleted"] and result["commit"] is None:
        raise ValueError("result rows_deleted > 0 without the commit that deleted them")


def check_result_fields(result: Any, subjects: int | None = None) -> dict[str, Any]:
    """``result`` after checking its shape and that its fields agree with each other (not whether the
    verification passed: that is the caller's decision)."""
    if not isinstance(result, dict):
        raise ValueError(f"result must be a JSON object, got {type(result).__name__}")
    absent = [key for key in RESULT_KEYS if key not in result]
    extra = sorted(set(result) - set(RESULT_KEYS))
    if absent or extra:
        raise ValueError(f"result lacks {absent} / has unexpected {extra}")
    if result["job"] not in FORMAT_OF_JOB or result["format"] != FORMAT_OF_JOB[result["job"]]:
        raise ValueError(f"result job {result['job']!r} / format {result['format']!r} unknown or mismatched")
    if result["status"] not in STATUSES:
        raise ValueError(f"result status must be one of {list(STATUSES)}, got {result['status']!r}")
    _check_counts(result, subjects)
    if result["commit"] is not None and not isinstance(result["commit"], str):
        raise ValueError(f"result commit must be a string or null, got {result['commit']!r}")
    for key in ("expired_snapshots", "dropped_refs", "pinned_refs"):
        _strings(result[key], key)
    _check_verification(result["verification"])
    _check_status(result)
    for key in ("started_at", "finished_at"):
        try:
            datetime.fromisoformat(result[key])
        except (TypeError, ValueError):
            raise ValueError(f"result {key} must be an ISO timestamp, got {result[key]!r}") from None
    return result


def summary(result: Mapping[str, Any]) -> str:
    """One line for the job's stdout: counts and versions, no subject id."""
    check = result["verification"]
    subjects_with_rows = sum(1 for count in result["rows_deleted_by_subject"] if count)
    line = (
        f"{result['job']}: {result['dataset']}: {result['status']}, {result['rows_deleted']} rows deleted "
        f"({subjects_with_rows} of {len(result['rows_deleted_by_subject'])} subjects had rows), "
        f"commit {result['commit']}, {result['files_rewritten']} files rewritten, "
        f"{len(result['expired_snapshots'])} snapshots expired, dropped refs {result['dropped_refs'] or 'none'}"
    )
    if result["pinned_refs"]:
        line += f", pinned by refs {result['pinned_refs']}"
    verdict = "passed" if check["passed"] else "FAILED"
    found = sum(check["rows_found"].values())
    return (
        f"{line}; verification {verdict}: {len(check['checked'])} versions read, {found} subject rows found, "
        f"{len(check['cleaned'])} cleaned"
    )


# -- the jobs' common frame ----------------------------------------------------------------------------------


def quiet_driver_logs(spark: Any) -> None:
    """WARN and above only: Spark, Hudi and Iceberg log write configs, plans and commit conflict filters at
    INFO, which can quote the subject predicate, literals included."""
    context = getattr(spark, "sparkContext", None)
    if context is not None:
        context.setLogLevel("WARN")


def job_main(job: str, run: Any, argv: Sequence[str] | None, spark: Any = None) -> int:
    """The ``main`` of both GDPR jobs: ``--spec <uri>``, the spec checked before the session starts."""
    import sys

    from spark_jobs.common import main_with_spec

    return main_with_spec(
        job,
        run,
        sys.argv[1:] if argv is None else argv,
        check=check_spec,
        app_name=lambda spec: f"{job}:{spec['dataset']}",
        spark=spark,
    )
