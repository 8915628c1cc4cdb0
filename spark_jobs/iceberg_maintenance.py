"""Iceberg maintenance of one table with Iceberg's Spark procedures (the ``backend: spark`` tables).

``spark_jobs/iceberg_maintenance.py --spec <uri of the spec JSON>``; the spec (written by the Airflow
task that plans the run, see ``dataplatform.iceberg.spark_sql``) names the table, the tags due, the
expiry and orphan cutoffs, dry_run and where the report goes. The catalog itself (Glue, S3FileIO, the
S3 delete and write tags) comes from the Spark conf the job is submitted with. The steps:

1. tags: for each tag due, main's snapshot as of the end of the tagged day, then
   ``ALTER TABLE ... CREATE TAG IF NOT EXISTS ... AS OF VERSION ... RETAIN n MINUTES``, n running to the end
   of the day the tag names + keep_days, rounded up (tags already past that are in the spec's
   ``tags_skipped``);
   compaction (when the spec has one): ``CALL <catalog>.system.rewrite_data_files`` with the spec's rules,
   then ``rewrite_manifests`` when more data manifests than allowed are small;
2. expiry: ``CALL <catalog>.system.expire_snapshots`` (older_than, retain_last); it also drops tags past
   their retention; after a compaction the cutoff moves by the time the compaction took (its own
   snapshots are not younger than the policy's age);
3. unreferenced files: handled inside the procedures by the catalog's FileIO (deleted, or tagged when
   the conf sets ``s3.delete-enabled=false`` with ``s3.delete.tags``);
6. orphans: ``CALL <catalog>.system.remove_orphan_files`` (older_than, dry_run, prefix_listing: the
   location is listed with the catalog's S3FileIO);
7. the report, JSON, at the spec's ``report_uri``.

(4, created files, is the ``s3.write.tags`` conf; 5, the lifecycle rule, is an Airflow task.)

A dry run reads metadata tables only, to report the tags it would make, the partitions compaction would
rewrite and the snapshots expiry would remove (neither procedure has a dry run), and lists orphans with
``dry_run => true``: it creates no tag, rewrites and expires nothing. Everything is safe to rerun: tags are ``IF NOT EXISTS``, and expiry and orphan
removal find nothing left to do.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from spark_jobs.common import iceberg_sql, main_with_spec
from spark_jobs.common.storage import Storage

JOB = "iceberg_maintenance"


class Statements:
    """Runs SQL on the session, keeping every statement for the report; rows come back as dicts."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.executed: list[str] = []

    def rows(self, statement: str) -> list[dict[str, Any]]:
        print(f"{JOB}: {statement}", flush=True)
        self.executed.append(statement)
        return [row.asDict(recursive=True) for row in self.spark.sql(statement).collect()]


def create_tags(sql: Statements, spec: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "created": [],
        "existing": [],
        "no_snapshot_yet": [],
        "skipped": dict(spec["tags_skipped"]),
        "snapshot_ids": {},
    }
    if not spec["tags"]:
        return result
    existing = {row["name"] for row in sql.rows(iceberg_sql.ref_names_sql(spec))}
    for tag in spec["tags"]:
        name = tag["name"]
        if name in existing:
            result["existing"].append(name)
            continue
        found = sql.rows(iceberg_sql.snapshot_as_of_sql(spec, tag["as_of_before"], tag["keep_until"]))
        if not found:
            result["no_snapshot_yet"].append(name)
            continue
        snapshot_id = int(found[0]["snapshot_id"])
        if not spec["dry_run"]:
            sql.rows(iceberg_sql.create_tag_sql(spec, name, snapshot_id, int(found[0]["retain_minutes"])))
        result["created"].append(name)
        result["snapshot_ids"][name] = snapshot_id
    return result


def compact(sql: Statements, spec: dict[str, Any]) -> dict[str, Any]:
    """The compaction step's report; ``last_commit_ms``: when its last commit was made (None: no commit)."""
    if spec["compaction"] is None:
        return {"enabled": False}
    before = sql.rows(iceberg_sql.data_files_sql(spec))[0]
    manifests = sql.rows(iceberg_sql.small_manifests_sql(spec))[0]
    result: dict[str, Any] = {
        "enabled": True,
        "files_before": int(before["files"]),
        "bytes_before": int(before["bytes"]),
        "planned": [
            {"partition": row["partition"], "files": int(row["files"]), "bytes": int(row["bytes"])}
            for row in sql.rows(iceberg_sql.compaction_candidates_sql(spec))
        ],
        "manifests_before": int(manifests["manifests"]),
        "small_manifests": int(manifests["small"]),
        "manifests_rewritten": 0,
        "last_commit_ms": None,
    }
    manifests_needed = result["small_manifests"] > spec["compaction"]["max_small_manifests"]
    if spec["dry_run"]:
        # Estimated from the data files alone: rewrite_data_files also takes files with deletes.
        return {**result, "estimate": True, "manifests_needed": manifests_needed, "files_after": None}
    snapshot_before = sql.rows(iceberg_sql.last_commit_ms_sql(spec))[0]["ms"]
    rewritten = sql.rows(iceberg_sql.rewrite_data_files_sql(spec))
    result["rewrite"] = {key: int(value or 0) for key, value in (rewritten[0] if rewritten else {}).items()}
    manifests = sql.rows(iceberg_sql.small_manifests_sql(spec))[0]
    if int(manifests["small"]) > spec["compaction"]["max_small_manifests"]:
        done = sql.rows(iceberg_sql.rewrite_manifests_sql(spec))
        result["manifests_rewritten"] = int(done[0]["rewritten_manifests_count"]) if done else 0
    after = sql.rows(iceberg_sql.data_files_sql(spec))[0]
    result.update(files_after=int(after["files"]), bytes_after=int(after["bytes"]))
    result["manifests_after"] = int(sql.rows(iceberg_sql.small_manifests_sql(spec))[0]["manifests"])
    last_commit = sql.rows(iceberg_sql.last_commit_ms_sql(spec))[0]["ms"]
    if last_commit != snapshot_before:
        result["last_commit_ms"] = int(last_commit)
    return result


def expire(sql: Statements, spec: dict[str, Any], new_tag_heads: Sequence[int]) -> tuple[dict, dict]:
    """(expiry report, unreferenced-files report)."""
    before = sql.rows(iceberg_sql.snapshots_sql(spec))
    action = spec["unreferenced_action"]
    if spec["dry_run"]:
        estimate = iceberg_sql.expiry_estimate(
            before,
            sql.rows(iceberg_sql.refs_sql(spec)),
            [row["snapshot_id"] for row in sql.rows(iceberg_sql.last_ancestors_sql(spec))],
            spec["now"],
            also_kept=new_tag_heads,
        )
        # Which files the expiry would leave unreferenced is only known once it runs.
        return {**estimate, "estimate": True}, {"action": action, "files": None}
    refs_before = {row["name"] for row in sql.rows(iceberg_sql.ref_names_sql(spec))}
    result = sql.rows(iceberg_sql.expire_snapshots_sql(spec))
    counts = iceberg_sql.deleted_counts(result[0] if result else {})
    after = {row["snapshot_id"] for row in sql.rows(iceberg_sql.snapshots_sql(spec))}
    refs_after = {row["name"] for row in sql.rows(iceberg_sql.ref_names_sql(spec))}
    # Compared by id, not by count: a writer that commits meanwhile adds snapshots (and maybe refs).
    expired = sorted({row["snapshot_id"] for row in before} - after)
    expiry = {
        "snapshots_before": len(before),
        "snapshots_expired": len(expired),
        "expired_ids": expired,
        "tags_removed": sorted(refs_before - refs_after),
        "snapshots_after": len(after),
    }
    return expiry, {"action": action, "files": sum(counts.values()), "by_kind": counts}


def remove_orphans(sql: Statements, spec: dict[str, Any]) -> dict[str, Any]:
    rows = sql.rows(iceberg_sql.remove_orphan_files_sql(spec))
    return iceberg_sql.orphan_summary([row["orphan_file_location"] for row in rows], spec)


def run(spark: Any, spec: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Maintain the spec's table; the report, also written to the spec's ``report_uri``."""
    iceberg_sql.check_spec(spec)
    iceberg_sql.check_session(
        spark, spec["catalog"], JOB, "dataplatform.iceberg.spark_sql.spark_conf(policy)"
    )
    started = datetime.now(UTC)
    sql = Statements(spark)
    tags = create_tags(sql, spec)
    compaction = compact(sql, spec)
    if compaction.get("last_commit_ms") is not None:
        spec = iceberg_sql.expire_after_compaction(spec, compaction["last_commit_ms"])
    expiry, unreferenced = expire(sql, spec, list(tags["snapshot_ids"].values()))
    orphans = remove_orphans(sql, spec)
    report = {
        "job": JOB,
        "table": spec["table_key"],
        "identifier": f"{spec['database']}.{spec['table']}",
        "dry_run": spec["dry_run"],
        "day": spec["day"],
        "tags": tags,
        "compaction": compaction,
        "expiry": expiry,
        "unreferenced": unreferenced,
        "orphans": orphans,
        "statements": sql.executed,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    storage.write_json(spec["report_uri"], report)
    verb = "would " if spec["dry_run"] else ""
    print(
        f"{JOB}: {report['identifier']}: {verb}create tags {tags['created'] or 'none'} "
        f"({len(tags['existing'])} existing), {verb}expire {expiry['snapshots_expired']} of "
        f"{expiry['snapshots_before']} snapshots, {unreferenced['files']} unreferenced files "
        f"({unreferenced['action']}), {orphans['found']} orphans ({orphans['action']}); "
        f"{len(sql.executed)} statements; report {spec['report_uri']}",
        flush=True,
    )
    return report


def main(argv: Sequence[str] | None = None, spark: Any = None) -> int:
    return main_with_spec(
        JOB,
        run,
        sys.argv[1:] if argv is None else argv,
        check=iceberg_sql.check_spec,
        app_name=lambda spec: f"{JOB}:{spec['table_key']}",
        spark=spark,
    )


if __name__ == "__main__":
    sys.exit(main())
