"""GDPR erasure of subjects' rows in one Iceberg table with Spark SQL (``engine: spark``: tables too
large for the pyiceberg path in one Airflow worker).

``spark_jobs/gdpr_iceberg_delete.py --spec <uri of the spec JSON>``; the spec (see
``spark_jobs.common.gdpr_spec`` and ``dataplatform.gdpr.spark_erasure``) names the table, the subject
columns and ids, what to do with refs that pin the subjects' rows, and where the result goes. The Glue
catalog comes from the Spark conf the job is submitted with (``iceberg_sql.catalog_conf`` with S3 deletes
enabled: files that expiry leaves unreferenced are deleted, not tagged). The steps:

a. before any change: the snapshots that hold subject rows (``SELECT count(*) ... VERSION AS OF <id>``
   for every snapshot), and the refs other than main that point at one of them. ``pinned_refs: fail``
   with such a ref writes a ``pinned_refs`` result naming the refs and changes nothing; ``drop`` drops
   them (``ALTER TABLE ... DROP TAG|BRANCH``);
b. ``DELETE FROM ... WHERE c1 IN (...) OR c2 IN (...)`` after counting the rows per subject; skipped when
   the current snapshot has none. The table must delete copy-on-write (the default): a merge-on-read
   delete writes delete files and leaves the rows in the data files, so the job refuses such a table;
b2. ``CALL <catalog>.system.rewrite_manifests(...)`` after a DELETE: the DELETE's manifests record each
   removed file as a DELETED entry with its column bounds, so a subject who was the smallest or largest
   id of a file would stay readable in the current snapshot's metadata. The rewrite writes the live
   entries only, in a new snapshot (main's new head); the DELETE's snapshot joins the ones to expire;
c. ``CALL <catalog>.system.expire_snapshots(snapshot_ids => array(...))`` for every snapshot that still
   holds the rows, and the DELETE's, whatever the table's retention says. ``older_than`` is the epoch so
   the call expires exactly those snapshots and nothing the table's age policy would add. Main's head is
   clean, so it is never among them (Iceberg refuses to expire a ref's head). Iceberg deletes the data
   files and manifests no remaining snapshot references: the files that held the rows, the manifests
   that named them;
d. verify: subject rows at every remaining snapshot and in the current table, all 0. A snapshot never
   changes, so the counts of step a stand for the snapshots that were there; only the new ones are read.
   And ``manifest_entries``: entries (any status) of every manifest the remaining snapshots reach whose
   subject-column bound equals a subject id (the ``all_entries`` metadata table's ``readable_metrics``,
   Iceberg 1.2 or later), 0. Iceberg's rewrite_manifests does nothing when the snapshot has a single
   manifest below the target size (a DELETE that removed whole files and added none, on a small
   table); the DELETED entries then stay, and this check fails the run rather than call it verified;
e. the result JSON at the spec's ``result_uri`` (``spark_jobs.common.gdpr_spec.build_result``).

Subject ids never appear in the SQL text. They go into a temporary view, ``gdpr_subjects`` (a
``position`` and, per subject column, the id as a value of that column's type, or NULL where it cannot be
one), which the statements read with ``IN (SELECT ...)`` and joins. What Spark shows of a query (the
statement as the SQL execution's description, its plans in the UI and in an event log) then holds the
view's name, never an id; the view itself is an RDD of the driver's rows, whose plan node
(``Scan ExistingRDD``) prints no data. Statements can be printed as they are, and any exception is raised
again with the ids scrubbed from its message (Spark may quote a row). Safe to rerun: a rerun finds no
rows, deletes and expires nothing, and reports ``nothing_to_delete``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from spark_jobs.common import gdpr_spec, iceberg_sql
from spark_jobs.common.storage import Storage

JOB = gdpr_spec.ICEBERG_JOB
CURRENT = "current"
# The verification's entry for manifest entries naming a subject (beside the snapshots' row counts).
MANIFEST_ENTRIES = "manifest_entries"
BOUNDS = ("readable_metrics.{column}.lower_bound", "readable_metrics.{column}.upper_bound")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

SUBJECTS_VIEW = "gdpr_subjects"
# Subject columns in which at least one subject id can occur (see ``subjects_view``).
Columns = Sequence[str]


class Statement(NamedTuple):
    """SQL to run and the SQL as it is shown: the same text, since no subject id is in it."""

    sql: str
    shown: str


def plain(sql: str) -> Statement:
    return Statement(sql, sql)


class SubjectsView(NamedTuple):
    """The rows of ``gdpr_subjects`` and its schema (DDL), and the subject columns an id can occur in."""

    schema: str
    rows: list[tuple[Any, ...]]
    columns: list[str]


def subjects_view(spec: Mapping[str, Any], column_types: Mapping[str, str]) -> SubjectsView:
    """Subject ``i`` is the row with ``position`` i + 1 (1-based, as ``counts_by_position`` reads them);
    per subject column, its id typed as the column (so a comparison casts nothing and Iceberg can still
    prune files by column statistics), or NULL when no value of that type can equal it."""
    literals = gdpr_spec.subject_literals(spec, column_types)
    columns = list(spec["subject_columns"])
    schema = ", ".join(
        ["`position` INT", *(f"{gdpr_spec.quote_column(c)} {_view_type(column_types[c])}" for c in columns)]
    )
    rows = [
        (
            position + 1,
            *(_typed(subject_id, literals[column][position]) for column in columns),
        )
        for position, subject_id in enumerate(spec["subject_ids"])
    ]
    present = [column for column in columns if any(value is not None for value in literals[column])]
    return SubjectsView(schema, rows, present)


def _view_type(column_type: str) -> str:
    kind = column_type.strip().lower()
    return "STRING" if kind.startswith(("string", "varchar", "char")) else kind.upper()


def _typed(subject_id: str, literal: str | None) -> str | int | None:
    """The view's value for a subject id whose SQL literal (``gdpr_spec.literal_for``) is ``literal``."""
    if literal is None:
        return None
    return subject_id if literal.startswith("'") else int(literal)


def subject_condition(columns: Columns, expressions: Sequence[str] = ("{column}",)) -> str:
    """``(`c1` IN (SELECT `c1` FROM gdpr_subjects ...) OR ...)``: a row is a subject's when any subject
    column holds one of the ids. ``expressions``: what is compared per column, ``{column}`` standing for
    the quoted column (Iceberg's metadata tables compare ``readable_metrics.{column}.lower_bound``)."""
    parts = [
        f"{expression.format(column=quoted)} IN "
        f"(SELECT {quoted} FROM {SUBJECTS_VIEW} WHERE {quoted} IS NOT NULL)"
        for quoted in (gdpr_spec.quote_column(column) for column in columns)
        for expression in expressions
    ]
    return "(" + " OR ".join(parts) + ")" if parts else "false"


# -- statements (pure) ---------------------------------------------------------------------------------------


def quote_ref(name: Any) -> str:
    """A tag or branch name as a backtick-quoted identifier (backticks doubled). Refs come from the table,
    whose writers may name them more freely than the maintenance tags are named."""
    if not isinstance(name, str) or not name or _CONTROL.search(name):
        raise ValueError(f"ref name {name!r} cannot be quoted")
    return "`" + name.replace("`", "``") + "`"


def describe_sql(spec: Mapping[str, Any]) -> Statement:
    return plain(f"DESCRIBE TABLE {iceberg_sql.table_ref(spec)}")


def properties_sql(spec: Mapping[str, Any]) -> Statement:
    return plain(f"SHOW TBLPROPERTIES {iceberg_sql.table_ref(spec)}")


def snapshots_sql(spec: Mapping[str, Any]) -> Statement:
    return plain(
        f"SELECT snapshot_id FROM {iceberg_sql.metadata_table(spec, 'snapshots')} ORDER BY committed_at, snapshot_id"
    )


def refs_sql(spec: Mapping[str, Any]) -> Statement:
    return plain(f"SELECT name, type, snapshot_id FROM {iceberg_sql.metadata_table(spec, 'refs')}")


def _version(snapshot_id: int | None) -> str:
    if snapshot_id is None:
        return ""
    if isinstance(snapshot_id, bool) or not isinstance(snapshot_id, int):
        raise ValueError(f"snapshot id must be an integer, got {snapshot_id!r}")
    return f" VERSION AS OF {snapshot_id}"


def count_sql(spec: Mapping[str, Any], columns: Columns, snapshot_id: int | None = None) -> Statement:
    """Subject rows at a snapshot (None: the current table)."""
    source = iceberg_sql.table_ref(spec) + _version(snapshot_id)
    return plain(f"SELECT count(*) AS n FROM {source} WHERE {subject_condition(columns)}")


def rows_by_subject_sql(
    spec: Mapping[str, Any], columns: Columns, snapshot_id: int | None = None
) -> Statement:
    """``(position, n)``: rows per subject (1-based position in the spec's list) at a snapshot. A row
    joins each subject it names once (naming one in two columns counts once for it)."""
    source = iceberg_sql.table_ref(spec) + _version(snapshot_id)
    quoted = [gdpr_spec.quote_column(column) for column in columns]
    on = " OR ".join(f"t.{column} = s.{column}" for column in quoted) or "false"
    return plain(
        f"SELECT s.position, count(*) AS n FROM {source} AS t JOIN {SUBJECTS_VIEW} AS s ON ({on}) "
        "GROUP BY s.position"
    )


def drop_ref_sql(spec: Mapping[str, Any], name: str, ref_type: str) -> Statement:
    kind = str(ref_type).upper()
    if kind not in ("TAG", "BRANCH"):
        raise ValueError(f"ref {name!r} has type {ref_type!r}, expected TAG or BRANCH")
    return plain(f"ALTER TABLE {iceberg_sql.table_ref(spec)} DROP {kind} IF EXISTS {quote_ref(name)}")


def delete_sql(spec: Mapping[str, Any], columns: Columns) -> Statement:
    return plain(f"DELETE FROM {iceberg_sql.table_ref(spec)} WHERE {subject_condition(columns)}")


def deleted_files_sql(spec: Mapping[str, Any], snapshot_id: int) -> Statement:
    """The data files the DELETE's snapshot removed (each rewritten without the rows, or dropped)."""
    return plain(
        "SELECT summary['deleted-data-files'] AS deleted_data_files "
        f"FROM {iceberg_sql.metadata_table(spec, 'snapshots')} WHERE snapshot_id = {_snapshot_id(snapshot_id)}"
    )


def _snapshot_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"snapshot id must be an integer, got {value!r}")
    return value


def expire_snapshots_sql(spec: Mapping[str, Any], snapshot_ids: Sequence[int]) -> Statement:
    """Exactly ``snapshot_ids``: explicit ids are expired whatever their age or place in a branch's
    history; ``older_than`` at the epoch keeps the age rules, which run beside them, from adding any."""
    if not snapshot_ids:
        raise ValueError("expire_snapshots needs at least one snapshot id")
    ids = ", ".join(str(_snapshot_id(snapshot_id)) for snapshot_id in snapshot_ids)
    return plain(
        f"CALL {iceberg_sql.procedure(spec, 'expire_snapshots')}(table => {iceberg_sql.procedure_table_arg(spec)}, "
        f"older_than => {iceberg_sql.timestamp_literal(EPOCH)}, snapshot_ids => array({ids}), "
        "stream_results => true)"
    )


def rewrite_manifests_sql(spec: Mapping[str, Any]) -> Statement:
    """Every manifest of the current snapshot written again with its live entries only."""
    return plain(
        f"CALL {iceberg_sql.procedure(spec, 'rewrite_manifests')}(table => {iceberg_sql.procedure_table_arg(spec)}, "
        "use_caching => false)"
    )


def manifest_entries_sql(spec: Mapping[str, Any], columns: Columns, every_snapshot: bool = True) -> Statement:
    """Entries, any status, whose subject-column bound is a subject id: in the manifests every snapshot
    reaches (``all_entries``), or the current snapshot's (``entries``)."""
    entries = iceberg_sql.metadata_table(spec, "all_entries" if every_snapshot else "entries")
    return plain(f"SELECT count(*) AS n FROM {entries} WHERE {subject_condition(columns, BOUNDS)}")


# -- running them --------------------------------------------------------------------------------------------


class Statements:
    """Runs SQL on the session, printing (and keeping) each statement as shown; rows come back as dicts."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.shown: list[str] = []

    def rows(self, statement: Statement) -> list[dict[str, Any]]:
        print(f"{JOB}: {statement.shown}", flush=True)
        self.shown.append(statement.shown)
        return [row.asDict(recursive=True) for row in self.spark.sql(statement.sql).collect()]

    def register_subjects(self, view: SubjectsView) -> None:
        """``gdpr_subjects`` from the driver's rows (no SQL text, so nothing with an id is printed)."""
        self.spark.createDataFrame(view.rows, view.schema).createOrReplaceTempView(SUBJECTS_VIEW)


def table_columns(sql: Statements, spec: Mapping[str, Any]) -> dict[str, str]:
    """Column -> type from DESCRIBE TABLE (the partitioning section after the first blank or ``#`` row
    is not columns)."""
    columns = {}
    for row in sql.rows(describe_sql(spec)):
        name = (row.get("col_name") or "").strip()
        if not name or name.startswith("#"):
            break
        columns[name] = row.get("data_type") or ""
    return columns


def check_copy_on_write(sql: Statements, spec: Mapping[str, Any]) -> None:
    properties = {row["key"]: row["value"] for row in sql.rows(properties_sql(spec))}
    mode = properties.get("write.delete.mode", "copy-on-write")
    if mode != "copy-on-write":
        raise RuntimeError(
            f"{JOB}: {spec['database']}.{spec['table']} has write.delete.mode={mode}: a DELETE would write "
            "delete files and leave the rows in the data files; set it to copy-on-write, or erase this "
            "dataset with engine pyiceberg"
        )


def snapshot_ids(sql: Statements, spec: Mapping[str, Any]) -> list[int]:
    return [int(row["snapshot_id"]) for row in sql.rows(snapshots_sql(spec))]


def count_at(sql: Statements, spec: Mapping[str, Any], columns: Columns, snapshot_id: int | None) -> int:
    rows = sql.rows(count_sql(spec, columns, snapshot_id))
    return int(rows[0]["n"]) if rows else 0


def main_head(refs: Sequence[Mapping[str, Any]]) -> int | None:
    return next((int(ref["snapshot_id"]) for ref in refs if ref["name"] == "main"), None)


def pinning_refs(refs: Sequence[Mapping[str, Any]], holding: Mapping[int, int]) -> list[dict[str, Any]]:
    """Refs other than main whose snapshot holds subject rows, by name."""
    return sorted(
        (ref for ref in refs if ref["name"] != "main" and int(ref["snapshot_id"]) in holding),
        key=lambda ref: ref["name"],
    )


def rows_by_subject(
    sql: Statements, spec: Mapping[str, Any], columns: Columns, snapshot_id: int
) -> list[int]:
    rows = sql.rows(rows_by_subject_sql(spec, columns, snapshot_id))
    return gdpr_spec.counts_by_position(rows, len(spec["subject_ids"]))


def deleted_files(sql: Statements, spec: Mapping[str, Any], snapshot_id: int) -> int | None:
    rows = sql.rows(deleted_files_sql(spec, snapshot_id))
    value = rows[0]["deleted_data_files"] if rows else None
    return None if value is None else int(value)


def verify(
    sql: Statements,
    spec: Mapping[str, Any],
    columns: Columns,
    counted: Mapping[int, int],
    remaining: Sequence[int],
) -> dict[str, Any]:
    """Subject rows at every remaining snapshot (counted before when it was there then: a snapshot never
    changes) and in the current table."""
    rows_found = {
        str(snapshot): counted[snapshot] if snapshot in counted else count_at(sql, spec, columns, snapshot)
        for snapshot in remaining
    }
    rows_found[CURRENT] = count_at(sql, spec, columns, None)
    rows_found[MANIFEST_ENTRIES] = entries_naming(sql, spec, columns)
    return gdpr_spec.verification(rows_found)


def entries_naming(sql: Statements, spec: Mapping[str, Any], columns: Columns, every_snapshot=True) -> int:
    rows = sql.rows(manifest_entries_sql(spec, columns, every_snapshot))
    return int(rows[0]["n"]) if rows else 0


def pinned_result(
    spec: Mapping[str, Any], pinned: list[str], counted: Mapping[int, int], started: str
) -> dict:
    """``pinned_refs: fail``: nothing changed; the counts found are the verification (it fails)."""
    return gdpr_spec.build_result(
        spec,
        status=gdpr_spec.PINNED_REFS,
        rows_deleted=0,
        rows_deleted_by_subject=[0] * len(spec["subject_ids"]),
        files_rewritten=None,
        commit=None,
        verification=gdpr_spec.verification({str(snapshot): rows for snapshot, rows in counted.items()}),
        started_at=started,
        pinned_refs=pinned,
    )


def delete_rows(
    sql: Statements, spec: Mapping[str, Any], columns: Columns, head: int
) -> tuple[list[int], int | None, int | None]:
    """(rows per subject at ``head``, the DELETE's snapshot, data files it removed)."""
    by_subject = rows_by_subject(sql, spec, columns, head)
    sql.rows(delete_sql(spec, columns))
    commit = main_head(sql.rows(refs_sql(spec)))
    return by_subject, commit, deleted_files(sql, spec, commit) if commit is not None else None


def clean_manifests(
    sql: Statements, spec: Mapping[str, Any], columns: Columns, head: int | None, deleted: bool
) -> int | None:
    """Main's head after rewriting its manifests, when the DELETE ran or they name a subject (a run that
    died between its DELETE and here left them); ``head`` when there was nothing to do, or Iceberg did
    nothing."""
    if head is None or not (deleted or entries_naming(sql, spec, columns, every_snapshot=False)):
        return head
    sql.rows(rewrite_manifests_sql(spec))
    return main_head(sql.rows(refs_sql(spec))) or head


def erase(sql: Statements, spec: Mapping[str, Any]) -> dict[str, Any]:
    started = gdpr_spec.utc_now()
    view = subjects_view(spec, table_columns(sql, spec))
    sql.register_subjects(view)
    columns = view.columns
    check_copy_on_write(sql, spec)
    # a. before any change
    before = snapshot_ids(sql, spec)
    counted = {snapshot: count_at(sql, spec, columns, snapshot) for snapshot in before}
    holding = {snapshot: rows for snapshot, rows in counted.items() if rows}
    refs = sql.rows(refs_sql(spec))
    pinning = pinning_refs(refs, holding)
    pinned = [ref["name"] for ref in pinning]
    if pinning and spec["pinned_refs"] == "fail":
        return pinned_result(spec, pinned, counted, started)
    for ref in pinning:
        sql.rows(drop_ref_sql(spec, ref["name"], ref["type"]))
    # b. the DELETE
    head = main_head(refs)
    rows = holding.get(head, 0) if head is not None else 0
    by_subject, commit, files = [0] * len(spec["subject_ids"]), None, None
    deleted_by: list[int] = []  # the snapshot the manifest rewrite replaced
    if rows:
        by_subject, commit, files = delete_rows(sql, spec, columns, head)
    # b2. the manifests written again: the snapshot they replace becomes one to expire
    before_rewrite = commit if commit is not None else head
    cleaned = clean_manifests(sql, spec, columns, before_rewrite, commit is not None)
    if cleaned != before_rewrite:
        deleted_by, commit = [before_rewrite], cleaned
    # c. expiry, d. verification
    ids = [snapshot for snapshot in holding if snapshot not in (commit, *deleted_by)] + deleted_by
    if ids:
        sql.rows(expire_snapshots_sql(spec, ids))
    remaining = snapshot_ids(sql, spec) if rows or ids else before
    expired = [snapshot for snapshot in ids if snapshot not in set(remaining)]
    return gdpr_spec.build_result(
        spec,
        status=gdpr_spec.status_of(rows, expired, pinned),
        rows_deleted=rows,
        rows_deleted_by_subject=by_subject,
        files_rewritten=files,
        commit=commit,
        verification=verify(sql, spec, columns, counted, remaining),
        started_at=started,
        expired_snapshots=[str(snapshot) for snapshot in expired],
        dropped_refs=pinned,
        pinned_refs=pinned,
    )


def run(spark: Any, spec: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Erase the spec's subjects from its table; the result, also written to the spec's ``result_uri``."""
    gdpr_spec.check_spec(spec)
    if spec["job"] != JOB:
        raise ValueError(f"{JOB} got a spec for {spec['job']}")
    iceberg_sql.check_session(spark, spec["catalog"], JOB, "dataplatform.gdpr.spark_erasure.spark_job")
    gdpr_spec.quiet_driver_logs(spark)
    sql = Statements(spark)
    with gdpr_spec.ids_scrubbed(JOB, spec["subject_ids"]):
        result = erase(sql, spec)
        storage.write_json(spec["result_uri"], result)
    print(
        f"{gdpr_spec.summary(result)}; {len(sql.shown)} statements; result {spec['result_uri']}", flush=True
    )
    return result


def main(argv: Sequence[str] | None = None, spark: Any = None) -> int:
    return gdpr_spec.job_main(JOB, run, argv, spark)


if __name__ == "__main__":
    sys.exit(main())
