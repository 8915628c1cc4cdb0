"""The Spark backend of Iceberg maintenance (``backend: spark`` tables): the job spec and the catalog's
Spark conf from a table policy, and the steps that stay in Airflow (lifecycle rule, report).

The SQL itself is built by ``spark_jobs.common.iceberg_sql`` (shipped to EMR with the job; this module
only feeds it), and run by ``spark_jobs/iceberg_maintenance.py``. The same seven steps as the pyiceberg
path (``maintenance``), mapped onto Iceberg's Spark procedures:

1. tags: ``ALTER TABLE ... CREATE TAG IF NOT EXISTS`` on main's snapshot at the end of the day, retained
   until the end of the day + keep_days (rounded up to the minute); tags already past that are not
   created;
   compaction (with a ``compaction`` policy): ``rewrite_data_files`` with the pyiceberg plan's rules
   (``compaction_spec``), then ``rewrite_manifests`` when more than ``max_small_manifests`` data
   manifests are small; unlike the pyiceberg path, ``max_bytes_per_run`` caps each file group (Iceberg
   has no cap per run), manifests are rewritten to the table's ``commit.manifest.target-size-bytes``,
   equality deletes are applied too (pyiceberg refuses a table that has them);
2. expiry: ``CALL glue_catalog.system.expire_snapshots(older_than, retain_last)``;
3. unreferenced files: Iceberg's FileIO during expiry: deleted (``action: delete``), or tagged and kept
   (``action: tag``: ``s3.delete-enabled=false`` + ``s3.delete.tags.<key>=<value>``);
4. created files: ``s3.write.tags.<key>=<value>`` when ``created.enabled``. This tags files at write time,
   so it covers the files the maintenance job writes and those of writers configured with the same
   catalog property; unlike the pyiceberg path it does not tag earlier files after the fact;
5. lifecycle: the same bucket rule as the pyiceberg path, from an Airflow task (``ensure_lifecycle``);
6. orphans: ``CALL glue_catalog.system.remove_orphan_files(older_than, dry_run)``, handled by the same
   FileIO (tagged when ``action: tag``);
7. report: the job's JSON plus the lifecycle result (``final_report``).

On the same table, both backends keep the same snapshots and refs and tag (or delete) the same
unreferenced files (``tests/integration/test_iceberg_backend_parity.py``). Where they differ, by
Iceberg's SQL: a new tag's ``max_ref_age_ms`` is whole minutes, rounded up (pyiceberg's ends at the
millisecond: the Spark tag is kept at most a minute longer); ``created`` files (step 4); orphans need a
cutoff at least 24 hours before the wall clock (``remove_orphan_files`` refuses less), where pyiceberg
measures from the run's clock.

Nothing here imports Spark or Airflow.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from dataplatform.config import IcebergTablePolicy
from dataplatform.iceberg import maintenance, snapshots
from dataplatform.iceberg.compaction import rules_for
from dataplatform.iceberg.maintenance import RunClock
from dataplatform.s3 import objects
from spark_jobs.common import iceberg_sql
from spark_jobs.common.iceberg_sql import CATALOG, MIN_ORPHAN_AGE_HOURS, SPEC_VERSION, check_spec

JOB_ENTRY = "spark_jobs.iceberg_maintenance"


def spark_conf(policy: IcebergTablePolicy) -> dict[str, str]:
    """The Spark conf the maintenance job of ``policy``'s table is submitted with (steps 3 and 4)."""
    delete_tag = None
    if policy.unreferenced.action == "tag":
        delete_tag = (policy.unreferenced.tag.key, policy.unreferenced.tag.value)
    write_tag = (policy.created.tag.key, policy.created.tag.value) if policy.created.enabled else None
    return iceberg_sql.catalog_conf(delete_tag=delete_tag, write_tag=write_tag)


def build_spec(
    table_key: str,
    policy: IcebergTablePolicy,
    clock: RunClock,
    dry_run: bool,
    report_uri: str,
    region: str | None = None,
    aws_endpoint_url: str | None = None,
) -> dict[str, Any]:
    """The job spec of one run: the tags due on ``clock.day`` (named as the pyiceberg path names them, on
    main's snapshot as of the end of that day, UTC), the expiry and orphan cutoffs from ``clock.now``."""
    if policy.backend != "spark":
        raise ValueError(f"table {table_key!r} uses backend {policy.backend!r}, not spark")
    if policy.orphan_min_age_hours < MIN_ORPHAN_AGE_HOURS:
        raise ValueError(
            f"iceberg.tables.{table_key}.orphan_min_age_hours is {policy.orphan_min_age_hours:g}: Iceberg's "
            f"remove_orphan_files refuses less than {MIN_ORPHAN_AGE_HOURS:g} hours"
        )
    now = clock.now.astimezone(UTC)
    day = clock.day
    end_of_day = snapshots.start_of_day(day) + timedelta(days=1)
    tags, tags_skipped = [], {}
    for rule in policy.tag_rules:
        if not snapshots.rule_is_due(rule, day):
            continue
        name = rule.name.format(date=day)
        reason = snapshots.past_retention(rule, day, snapshots.to_ms(now))
        if reason is not None:
            tags_skipped[name] = reason
            continue
        tags.append(
            {
                "name": name,
                "rule": rule.name,
                "keep_days": rule.keep_days,
                "as_of_before": end_of_day.isoformat(),
                "keep_until": snapshots.tag_keep_until(rule, day).isoformat(),
            }
        )
    spec = {
        "version": SPEC_VERSION,
        "table_key": table_key,
        "catalog": CATALOG,
        "database": policy.database,
        "table": policy.table,
        "dry_run": dry_run,
        "day": day.isoformat(),
        "now": now.isoformat(),
        "tags": tags,
        "tags_skipped": tags_skipped,
        "expire": {
            "older_than": (now - timedelta(hours=policy.max_snapshot_age_hours)).isoformat(),
            "retain_last": policy.retain_last,
        },
        "orphans": {
            "older_than": (now - timedelta(hours=policy.orphan_min_age_hours)).isoformat(),
            "min_age_hours": policy.orphan_min_age_hours,
        },
        "unreferenced_action": policy.unreferenced.action,
        "compaction": compaction_spec(policy),
        "report_uri": report_uri,
        "region": region,
        "aws_endpoint_url": aws_endpoint_url,
    }
    return check_spec(spec)


def compaction_spec(policy: IcebergTablePolicy) -> dict[str, Any] | None:
    """The job's compaction rules, the pyiceberg plan's (``compaction.rules_for``) in Iceberg's terms;
    None when the table is not compacted."""
    compaction = policy.compaction
    if compaction is None or not compaction.enabled:
        return None
    rules, manifests = rules_for(compaction)
    return {
        "target_file_bytes": rules.target_file_bytes,
        "min_file_bytes": rules.small_file_bytes,
        "min_input_files": rules.min_input_files,
        # rewrite_data_files has no cap per run: the run's cap bounds each file group instead.
        "max_file_group_bytes": rules.max_bytes_per_run,
        "sort_order": [list(key) for key in compaction.sort_keys],
        "max_small_manifests": manifests.max_small_manifests,
        "small_manifest_bytes": manifests.target_manifest_bytes,
    }


# -- steps that run in Airflow --------------------------------------------------------------------------------


def table_location(glue, policy: IcebergTablePolicy) -> str:
    """The table location from the Glue table Iceberg's catalog maintains (``StorageDescriptor.Location``,
    else the directory above ``metadata_location``)."""
    table = glue.get_table(DatabaseName=policy.database, Name=policy.table)["Table"]
    location = table.get("StorageDescriptor", {}).get("Location")
    if location:
        return location.rstrip("/")
    metadata_location = table.get("Parameters", {}).get("metadata_location", "")
    if "/metadata/" in metadata_location:
        return metadata_location.rsplit("/metadata/", 1)[0]
    raise ValueError(f"Glue table {policy.identifier} has no location and no metadata_location")


def ensure_lifecycle(
    s3, glue, policy: IcebergTablePolicy, dry_run: bool, calls: objects.CallCounter | None = None
) -> dict[str, Any]:
    """Step 5, as the pyiceberg path does it: the bucket rule for delete-tagged objects under the table
    location (read from Glue only when a rule is needed)."""
    if policy.unreferenced.action != "tag" or not policy.lifecycle.enabled:
        return {"status": "not_needed"}
    location = table_location(glue, policy)
    bucket, rule = maintenance.lifecycle_rule_for(policy, location)
    result = {"rule_id": rule["ID"], "bucket": bucket, "location": location}
    if dry_run:
        return {"status": "not_checked", **result}
    return {"status": objects.ensure_lifecycle_rule(s3, bucket, rule, calls), **result}


def created_files(policy: IcebergTablePolicy) -> dict[str, Any]:
    if not policy.created.enabled:
        return {"enabled": False}
    tag = policy.created.tag
    return {"enabled": True, "mode": "s3.write.tags", "tag": f"{tag.key}={tag.value}"}


def final_report(
    table_key: str, policy: IcebergTablePolicy, job_report: dict[str, Any], lifecycle: dict[str, Any]
) -> dict[str, Any]:
    """The run's report: the job's, with the lifecycle result, the created-files mode and a summary."""
    report = {
        **job_report,
        "table": table_key,
        "identifier": policy.identifier,
        "backend": "spark",
        "created": created_files(policy),
        "lifecycle": lifecycle,
    }
    report["summary"] = summarize(report)
    return report


def summarize(report: dict[str, Any]) -> str:
    expiry, files, orphans = report["expiry"], report["unreferenced"], report["orphans"]
    verb = "would " if report["dry_run"] else ""
    handled = "unknown until it runs" if files["files"] is None else str(files["files"])
    compacted = report.get("compaction") or {"enabled": False}
    compaction = ""
    if compacted["enabled"]:
        after = compacted["files_after"] if compacted["files_after"] is not None else "?"
        compaction = (
            f"{verb}compact {len(compacted['planned'])} partitions "
            f"({compacted['files_before']} -> {after} data files), "
        )
    return (
        f"{report['identifier']} (spark): {verb}create tags {report['tags']['created'] or 'none'}, "
        f"{compaction}{verb}expire {expiry['snapshots_expired']} of {expiry['snapshots_before']} snapshots, "
        f"unreferenced files to {files['action']}: {handled}, {orphans['found']} orphans "
        f"({orphans['action']}), lifecycle rule {report['lifecycle']['status']}"
    )
