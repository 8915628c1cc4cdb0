"""One maintenance run of one Iceberg table (pyiceberg, Glue catalog, S3), step by step:

1. tags the tag rules call for (one commit; existing tags are left alone);
2. expiry of the snapshots the policy does not keep, and of aged tags, in one commit, re-planned on fresh
   metadata when another writer commits first;
3. the files the expiry unreferenced: deleted (DeleteObjects, 1,000 a call) or tagged (merged, parallel);
4. the ``created`` tag on files written since the last run;
5. the bucket lifecycle rule for the delete tag;
6. orphans: objects under the table location that nothing references, older than the minimum age;
7. the report (a dict; the operator writes it to XCom and S3).

A dry run reads everything and reports what it would do; it commits, deletes, tags and saves nothing.
Files are only ever deleted or tagged after re-reading the table and checking that its current metadata
does not reach them: a writer that commits during the run keeps its files.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.update import (
    AssertRefSnapshotId,
    AssertTableUUID,
    RemoveSnapshotRefUpdate,
    RemoveSnapshotsUpdate,
)

from dataplatform.config import IcebergTablePolicy
from dataplatform.iceberg import objects, snapshots
from dataplatform.iceberg.files import FileIndex, FileRef, reachable_files
from dataplatform.iceberg.objects import CallCounter
from dataplatform.iceberg.state import TableState, load_state, save_state, state_uri_for

log = logging.getLogger(__name__)


class MaintenanceError(RuntimeError):
    """The table cannot be maintained as asked (missing table, bad request); nothing was changed."""


@dataclass
class MaintenanceContext:
    catalog: Any
    s3: Any
    state_root: str
    tag_workers: int = 32
    commit_retries: int = 4
    calls: CallCounter = field(default_factory=CallCounter)


@dataclass
class RunClock:
    """``day``: the day tag rules are evaluated for; ``now``: the instant ages are measured from."""

    day: date
    now: datetime


def load_table(catalog, policy: IcebergTablePolicy) -> Table:
    try:
        return catalog.load_table(policy.identifier)
    except NoSuchTableError:
        raise MaintenanceError(
            f"Iceberg table {policy.identifier} does not exist in the Glue catalog"
        ) from None


def maintain_table(
    ctx: MaintenanceContext, name: str, policy: IcebergTablePolicy, clock: RunClock, dry_run: bool = False
) -> dict:
    """Run every step for one table and return its report."""
    if policy.backend != "pyiceberg":
        raise MaintenanceError(f"table {name!r} uses backend {policy.backend!r}: run it as a Spark job")
    table = load_table(ctx.catalog, policy)
    state_uri = state_uri_for(ctx.state_root, policy.identifier)
    state = load_state(ctx.s3, state_uri)
    index = FileIndex(table.io)
    sizes = {uri: obj.size for uri, obj in objects.list_objects(ctx.s3, table.location(), ctx.calls).items()}
    report: dict[str, Any] = {"table": name, "identifier": policy.identifier, "dry_run": dry_run}
    log.info("%s: %d objects under %s", policy.identifier, len(sizes), table.location())

    protected, report["archive_tables"] = archive_table_files(ctx, table, index)
    if state.pending and not dry_run:
        report["resumed_pending"] = finish_pending(ctx, policy, table, index, state, state_uri, protected)

    table, report["tags"] = create_tags(ctx, table, policy, clock, dry_run)
    table, expiry, unreferenced = expire_snapshots(ctx, table, policy, clock, index, dry_run)
    report["expiry"] = expiry
    unreferenced = {path: f for path, f in unreferenced.items() if path not in protected}
    report["unreferenced"] = handle_unreferenced(
        ctx, policy, table, index, state, state_uri, unreferenced, sizes, dry_run, protected
    )
    reachable = reachable_files(index, table.metadata, table.metadata_location)
    report["created"] = tag_created(ctx, policy, state, reachable, dry_run)
    report["lifecycle"] = ensure_lifecycle(ctx, policy, table, dry_run)
    report["orphans"] = handle_orphans(ctx, policy, table, index, state, state_uri, clock, dry_run, protected)
    if not dry_run:
        state.files = sorted(reachable_files(index, table.metadata, table.metadata_location))
        state.metadata_location = table.metadata_location
        state.updated_at = clock.now.isoformat()
        save_state(ctx.s3, state_uri, state)
    report["manifest_reads"] = index.reads
    report["s3_calls"] = ctx.calls.as_dict()
    report["summary"] = summarize(report)
    log.info("%s", report["summary"])
    return report


# -- archive tables ---------------------------------------------------------------------------------------


def archive_table_files(
    ctx: MaintenanceContext, table: Table, index: FileIndex
) -> tuple[set[str], list[str]]:
    """Files of the archive tables registered on older metadata files of ``table`` (by
    ``iceberg_archive_register``; found in the Glue database as Iceberg tables whose metadata file lies
    in this table's metadata folder). The table no longer reaches them, but they are not unreferenced:
    they are never deleted, tagged or called orphans."""
    glue = getattr(ctx.catalog, "glue", None)
    if glue is None:
        return set(), []
    database, name = table.name()[-2], table.name()[-1]
    metadata_dir = table.location().rstrip("/") + "/metadata/"
    protected: set[str] = set()
    archives = []
    for page in glue.get_paginator("get_tables").paginate(DatabaseName=database):
        for glue_table in page["TableList"]:
            location = glue_table.get("Parameters", {}).get("metadata_location", "")
            if glue_table["Name"] == name or not location.startswith(metadata_dir):
                continue
            archives.append(f"{database}.{glue_table['Name']}")
            protected.add(location)
            try:
                archive = ctx.catalog.load_table(f"{database}.{glue_table['Name']}")
                protected |= set(reachable_files(index, archive.metadata, archive.metadata_location))
            except (OSError, ValueError) as exc:  # its files are archived or gone: protect what is known
                log.warning("archive table %s: cannot walk its files (%s)", archives[-1], exc)
    if archives:
        log.info("protecting %d files of archive tables %s", len(protected), archives)
    return protected, archives


# -- 1. tags ----------------------------------------------------------------------------------------------


def create_tags(
    ctx: MaintenanceContext, table: Table, policy: IcebergTablePolicy, clock: RunClock, dry_run: bool
) -> tuple[Table, dict]:
    for attempt in range(ctx.commit_retries + 1):
        plan = snapshots.plan_tags(table.metadata, policy.tag_rules, clock.day)
        result = {
            "created": [t.name for t in plan.create],
            "existing": plan.existing,
            "no_snapshot_yet": plan.no_snapshot,
            "commits": 0,
        }
        if not plan.create or dry_run:
            return table, result
        try:
            with table.manage_snapshots() as manage:
                for tag in plan.create:
                    manage.create_tag(tag.snapshot_id, tag.name, max_ref_age_ms=tag.max_ref_age_ms)
        except CommitFailedException as exc:
            log.warning("tag commit lost a race (%s); reloading (attempt %d)", exc, attempt + 1)
            table = ctx.catalog.load_table(policy.identifier)
            continue
        result["commits"] = 1
        for tag in plan.create:
            log.info(
                "created tag %s on snapshot %d (kept %d days)",
                tag.name,
                tag.snapshot_id,
                tag.max_ref_age_ms // snapshots.DAY_MS,
            )
        return ctx.catalog.load_table(policy.identifier), result
    raise CommitFailedException(f"{policy.identifier}: tag commit failed {ctx.commit_retries + 1} times")


# -- 2. expiry --------------------------------------------------------------------------------------------


def expire_snapshots(
    ctx: MaintenanceContext,
    table: Table,
    policy: IcebergTablePolicy,
    clock: RunClock,
    index: FileIndex,
    dry_run: bool,
) -> tuple[Table, dict, dict[str, FileRef]]:
    """Expire in one commit; return the table after it, the expiry report and the files the commit left
    unreferenced (for a dry run: the files it would leave unreferenced)."""
    now_ms = snapshots.to_ms(clock.now)
    max_age_ms = int(policy.max_snapshot_age_hours * 3600 * 1000)
    conflicts = 0
    for _ in range(ctx.commit_retries + 1):
        metadata, location = table.metadata, table.metadata_location
        plan = snapshots.plan_expiry(metadata, policy.retain_last, max_age_ms, now_ms)
        result = {
            "snapshots_before": len(metadata.snapshots),
            "snapshots_expired": len(plan.expire_ids),
            "expired_ids": plan.expire_ids,
            "tags_removed": plan.remove_refs,
            "snapshots_retained": len(plan.retained_ids),
            "retained_because": dict(Counter(reason.split(":")[0] for reason in plan.reasons.values())),
            "commits": 0,
            "conflicts_retried": conflicts,
        }
        if plan.empty:
            return table, result, {}
        before = reachable_files(index, metadata, location)
        if dry_run:
            after = reachable_files(index, metadata, location, plan.retained_ids)
            return table, result, {p: f for p, f in before.items() if p not in after}
        try:
            response = table.catalog.commit_table(table, *expiry_commit(table, plan))
        except CommitFailedException as exc:
            conflicts += 1
            log.warning("expiry commit lost a race (%s); re-planning on fresh metadata", exc)
            table = ctx.catalog.load_table(policy.identifier)
            continue
        result["commits"] = 1
        table = ctx.catalog.load_table(policy.identifier)
        after = reachable_files(index, response.metadata, response.metadata_location)
        unreferenced = {p: f for p, f in before.items() if p not in after}
        log.info(
            "expired %d of %d snapshots (removed tags %s) in one commit; %d files unreferenced",
            len(plan.expire_ids),
            len(metadata.snapshots),
            plan.remove_refs or "none",
            len(unreferenced),
        )
        return table, result, unreferenced
    raise CommitFailedException(f"{policy.identifier}: expiry commit failed {ctx.commit_retries + 1} times")


def expiry_commit(table: Table, plan: snapshots.ExpiryPlan) -> tuple[tuple, tuple]:
    """Requirements and updates of the expiry commit. Every ref must still point where the plan saw it:
    a concurrent append (main moves) or tag change makes the commit fail, and the plan is redone."""
    metadata = table.metadata
    requirements = (
        AssertTableUUID(uuid=metadata.table_uuid),
        *(AssertRefSnapshotId(ref=name, snapshot_id=ref.snapshot_id) for name, ref in metadata.refs.items()),
    )
    updates: tuple = tuple(RemoveSnapshotRefUpdate(ref_name=name) for name in plan.remove_refs)
    if plan.expire_ids:
        updates += (RemoveSnapshotsUpdate(snapshot_ids=plan.expire_ids),)
    return requirements, updates


# -- 3. unreferenced files --------------------------------------------------------------------------------


def handle_unreferenced(
    ctx: MaintenanceContext,
    policy: IcebergTablePolicy,
    table: Table,
    index: FileIndex,
    state: TableState,
    state_uri: str,
    unreferenced: dict[str, FileRef],
    sizes: dict[str, int],
    dry_run: bool,
    protected: set[str] = frozenset(),
) -> dict:
    result: dict[str, Any] = {
        "action": policy.unreferenced.action,
        "files": len(unreferenced),
        "bytes": sum(f.size if f.size is not None else sizes.get(p, 0) for p, f in unreferenced.items()),
        "by_kind": dict(Counter(f.kind for f in unreferenced.values())),
    }
    if dry_run or not unreferenced:
        return result
    state.pending = {"action": policy.unreferenced.action, "files": sorted(unreferenced)}
    save_state(ctx.s3, state_uri, state)
    result.update(
        apply_file_action(ctx, policy, table, index, state, sorted(unreferenced), protected=protected)
    )
    state.pending = None
    save_state(ctx.s3, state_uri, state)
    return result


def finish_pending(
    ctx: MaintenanceContext,
    policy: IcebergTablePolicy,
    table: Table,
    index: FileIndex,
    state: TableState,
    state_uri: str,
    protected: set[str] = frozenset(),
) -> dict:
    """Finish the file action an earlier run committed to but did not complete."""
    files = state.pending["files"]
    log.info("finishing %d unreferenced files left pending by an earlier run", len(files))
    # The action recorded with the list, even if the policy changed since: the earlier run committed to it.
    result = apply_file_action(
        ctx, policy, table, index, state, files, action=state.pending["action"], protected=protected
    )
    state.pending = None
    save_state(ctx.s3, state_uri, state)
    return {"files": len(files), **result}


def apply_file_action(
    ctx: MaintenanceContext,
    policy: IcebergTablePolicy,
    table: Table,
    index: FileIndex,
    state: TableState,
    uris: list[str],
    action: str | None = None,
    protected: set[str] = frozenset(),
) -> dict:
    """Delete or tag ``uris`` (``action``, default the policy's), after checking against freshly loaded
    metadata that none is referenced (by the table or by an archive table registered on it)."""
    current = ctx.catalog.load_table(policy.identifier)
    referenced = set(reachable_files(index, current.metadata, current.metadata_location)) | protected
    still_referenced = set(uris) & referenced
    if still_referenced:
        log.warning("%d files are referenced again and are left alone", len(still_referenced))
    targets = [uri for uri in uris if uri not in still_referenced]
    result: dict[str, Any] = {"skipped_referenced": len(still_referenced)}
    if (action or policy.unreferenced.action) == "delete":
        result["deleted"] = objects.delete_objects(ctx.s3, targets, ctx.calls)
        log.info("deleted %d unreferenced files", result["deleted"])
    else:
        tag = policy.unreferenced.tag
        tagged = objects.tag_objects(ctx.s3, targets, tag.key, tag.value, ctx.tag_workers, ctx.calls)
        state.handled = sorted(set(state.handled) | set(targets))
        result.update(tagged=tagged.tagged, already_tagged=tagged.already_tagged, missing=tagged.missing)
        log.info(
            "tagged %d unreferenced files %s=%s (%d had it already, %d missing)",
            tagged.tagged,
            tag.key,
            tag.value,
            tagged.already_tagged,
            tagged.missing,
        )
    return result


# -- 4. created files -------------------------------------------------------------------------------------


def tag_created(
    ctx: MaintenanceContext,
    policy: IcebergTablePolicy,
    state: TableState,
    reachable: dict[str, FileRef],
    dry_run: bool,
) -> dict:
    if not policy.created.enabled:
        return {"enabled": False}
    seen = set(state.files or ())
    new = sorted(p for p in reachable if p not in seen)
    result: dict[str, Any] = {"enabled": True, "files": len(new), "first_run": state.files is None}
    if dry_run or not new:
        return result
    tag = policy.created.tag
    tagged = objects.tag_objects(ctx.s3, new, tag.key, tag.value, ctx.tag_workers, ctx.calls)
    result.update(tagged=tagged.tagged, already_tagged=tagged.already_tagged, missing=tagged.missing)
    log.info("tagged %d new files %s=%s", tagged.tagged, tag.key, tag.value)
    return result


# -- 5. lifecycle -----------------------------------------------------------------------------------------


def lifecycle_rule_for(policy: IcebergTablePolicy, location: str) -> tuple[str, dict]:
    bucket, prefix = objects.split_uri(location.rstrip("/") + "/")
    rule = policy.lifecycle
    tag = policy.unreferenced.tag
    return bucket, objects.lifecycle_rule(
        f"iceberg-unreferenced-{policy.identifier}",
        prefix,
        tag.key,
        tag.value,
        rule.transition_days,
        rule.storage_class,
        rule.expiration_days,
    )


def ensure_lifecycle(
    ctx: MaintenanceContext, policy: IcebergTablePolicy, table: Table, dry_run: bool
) -> dict:
    if policy.unreferenced.action != "tag" or not policy.lifecycle.enabled:
        return {"status": "not_needed"}
    bucket, rule = lifecycle_rule_for(policy, table.location())
    if dry_run:
        return {"status": "not_checked", "rule_id": rule["ID"], "bucket": bucket}
    status = objects.ensure_lifecycle_rule(ctx.s3, bucket, rule, ctx.calls)
    log.info("lifecycle rule %s on s3://%s: %s", rule["ID"], bucket, status)
    return {"status": status, "rule_id": rule["ID"], "bucket": bucket}


# -- 6. orphans -------------------------------------------------------------------------------------------


def handle_orphans(
    ctx: MaintenanceContext,
    policy: IcebergTablePolicy,
    table: Table,
    index: FileIndex,
    state: TableState,
    state_uri: str,
    clock: RunClock,
    dry_run: bool,
    protected: set[str] = frozenset(),
) -> dict:
    listed = objects.list_objects(ctx.s3, table.location(), ctx.calls)
    # Read the metadata again now: a writer that committed during this run must not see its files called
    # orphans (files it wrote and has not committed yet are protected by the minimum age).
    current = ctx.catalog.load_table(policy.identifier)
    referenced = set(reachable_files(index, current.metadata, current.metadata_location)) | protected
    state.handled = sorted(uri for uri in state.handled if uri in listed)
    handled = set(state.handled)
    cutoff = clock.now - timedelta(hours=policy.orphan_min_age_hours)
    unreferenced = [
        o for uri, o in listed.items() if uri not in referenced and uri not in handled and uri != state_uri
    ]
    orphans = sorted((o for o in unreferenced if o.last_modified <= cutoff), key=lambda o: o.uri)
    result: dict[str, Any] = {
        "found": len(orphans),
        "bytes": sum(o.size for o in orphans),
        "younger_than_min_age": len(unreferenced) - len(orphans),
        "min_age_hours": policy.orphan_min_age_hours,
        "sample": [o.uri for o in orphans[:10]],
        "action": "listed" if dry_run else policy.unreferenced.action,
    }
    if dry_run or not orphans:
        return result
    result.update(
        apply_file_action(ctx, policy, current, index, state, [o.uri for o in orphans], protected=protected)
    )
    return result


# -- 7. report --------------------------------------------------------------------------------------------


def summarize(report: dict) -> str:
    expiry, files, orphans = report["expiry"], report["unreferenced"], report["orphans"]
    verb = "would " if report["dry_run"] else ""
    action = {"delete": "delete", "tag": "tag"}[files["action"]]
    return (
        f"{report['identifier']}: {verb}create tags {report['tags']['created'] or 'none'}, "
        f"{verb}expire {expiry['snapshots_expired']} of {expiry['snapshots_before']} snapshots, "
        f"{verb}{action} {files['files']} unreferenced files ({files['bytes']} bytes), "
        f"{orphans['found']} orphans"
    )
