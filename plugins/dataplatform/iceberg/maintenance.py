"""One maintenance run of one Iceberg table (pyiceberg, Glue catalog, S3), step by step:

1. tags the tag rules call for (one commit; existing tags are left alone);
   compaction (tables with a ``compaction`` policy): the small files of each partition that has enough
   of them rewritten into files of the target size, one commit per partition, then the small manifests
   (``compaction``; planned before the first commit, so a table it cannot compact changes nothing);
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

import copy
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.update import (
    AssertRefSnapshotId,
    AssertTableUUID,
    RemovePartitionStatisticsUpdate,
    RemoveSnapshotRefUpdate,
    RemoveSnapshotsUpdate,
)

from dataplatform.config import IcebergTablePolicy
from dataplatform.iceberg import compaction, snapshots
from dataplatform.iceberg.archive import tables_sharing_files
from dataplatform.iceberg.compaction_plan import needs_manifest_rewrite
from dataplatform.iceberg.files import FileIndex, FileRef, reachable_files
from dataplatform.iceberg.manifest_rewrite import data_manifest_sizes
from dataplatform.iceberg.state import TableState, load_state, save_state, state_uri_for
from dataplatform.s3 import objects
from dataplatform.s3.objects import CallCounter

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


@dataclass
class TableRun:
    """One table's run: what every step reads, and the table and state they move forward."""

    ctx: MaintenanceContext
    name: str
    policy: IcebergTablePolicy
    clock: RunClock
    dry_run: bool
    table: Table
    index: FileIndex
    state: TableState
    state_uri: str
    # Files of archive tables registered on this table's older metadata: never acted on.
    protected: set[str] = field(default_factory=set)

    def reload(self) -> Table:
        self.table = self.ctx.catalog.load_table(self.policy.identifier)
        return self.table

    def reachable(self, table: Table | None = None) -> dict[str, FileRef]:
        table = table or self.table
        return reachable_files(self.index, table.metadata, table.metadata_location)

    def save_state(self) -> None:
        save_state(self.ctx.s3, self.state_uri, self.state)


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
    run = TableRun(
        ctx,
        name,
        policy,
        clock,
        dry_run,
        table,
        FileIndex(table.io),
        load_state(ctx.s3, state_uri),
        state_uri,
    )
    loaded = copy.deepcopy(run.state)  # the steps change run.state
    sizes = list_sizes(run)
    report: dict[str, Any] = {"table": name, "identifier": policy.identifier, "dry_run": dry_run}
    log.info("%s: %d objects under %s", policy.identifier, len(sizes), table.location())

    run.protected, report["archive_tables"] = archive_table_files(run)
    planned = plan_compaction(run)
    if run.state.pending and not dry_run:
        report["resumed_pending"] = finish_pending(run)
    if run.state.compaction_writes and not dry_run:
        report["compaction_leftovers_deleted"] = delete_compaction_leftovers(run, list(sizes))
    report["tags"] = create_tags(run)
    if planned is not None:
        report["compaction"], sizes = compact(run, planned, sizes)
    report["expiry"], unreferenced = expire_snapshots(run)
    report["unreferenced"] = handle_unreferenced(run, unreferenced, sizes)
    report["created"] = tag_created(run)
    report["lifecycle"] = ensure_lifecycle(run)
    report["orphans"] = handle_orphans(run)
    if not dry_run:
        save_what_the_run_saw(run, loaded)
    report["manifest_reads"] = run.index.reads
    report["s3_calls"] = ctx.calls.as_dict()
    report["summary"] = summarize(report)
    log.info("%s", report["summary"])
    return report


def save_what_the_run_saw(run: TableRun, loaded: TableState) -> None:
    """Record the files the table reaches now (the next run tags those it has not seen as created). A
    state that did not change is not written again, so a rerun writes nothing."""
    run.state.files = sorted(run.reachable())
    run.state.metadata_location = run.table.metadata_location
    if replace(run.state, updated_at=None) == replace(loaded, updated_at=None):
        return
    run.state.updated_at = run.clock.now.isoformat()
    run.save_state()


# -- archive tables ---------------------------------------------------------------------------------------


def archive_table_files(run: TableRun) -> tuple[set[str], list[str]]:
    """Files of the archive tables registered on older metadata files of the table (by
    ``iceberg_archive_register``; ``archive.tables_sharing_files``). The table no longer reaches them,
    but they are not unreferenced: they are never deleted, tagged or called orphans."""
    sharing = tables_sharing_files(run.ctx.catalog, run.table)
    protected = set(sharing.values())
    archives = list(sharing)
    for identifier in archives:
        try:
            protected |= set(run.reachable(run.ctx.catalog.load_table(identifier)))
        except (OSError, ValueError) as exc:  # its files are archived or gone: protect what is known
            log.warning("archive table %s: cannot walk its files (%s)", identifier, exc)
    if archives:
        log.info("protecting %d files of archive tables %s", len(protected), archives)
    return protected, archives


# -- 1. tags ----------------------------------------------------------------------------------------------


def create_tags(run: TableRun) -> dict:
    """Create the tags the rules call for, in one commit (retried on a lost race); a tag already past its
    retention is not created (reported under ``skipped``, with the reason)."""
    for attempt in range(run.ctx.commit_retries + 1):
        plan = snapshots.plan_tags(
            run.table.metadata, run.policy.tag_rules, run.clock.day, snapshots.to_ms(run.clock.now)
        )
        result = {
            "created": [t.name for t in plan.create],
            "existing": plan.existing,
            "no_snapshot_yet": plan.no_snapshot,
            "skipped": plan.past_retention,
            "commits": 0,
        }
        for name, reason in plan.past_retention.items():
            log.info("not creating tag %s: %s", name, reason)
        if not plan.create or run.dry_run:
            return result
        try:
            with run.table.manage_snapshots() as manage:
                for tag in plan.create:
                    manage.create_tag(tag.snapshot_id, tag.name, max_ref_age_ms=tag.max_ref_age_ms)
        except CommitFailedException as exc:
            log.warning("tag commit lost a race (%s); reloading (attempt %d)", exc, attempt + 1)
            run.reload()
            continue
        result["commits"] = 1
        for tag in plan.create:
            log.info(
                "created tag %s on snapshot %d (kept through %s)", tag.name, tag.snapshot_id, tag.kept_through
            )
        run.reload()
        return result
    raise CommitFailedException(
        f"{run.policy.identifier}: tag commit failed {run.ctx.commit_retries + 1} times"
    )


# -- compaction ---------------------------------------------------------------------------------------------


def plan_compaction(run: TableRun) -> compaction.PlannedCompaction | None:
    """The compaction plan, read before the run's first commit; None without a compaction policy."""
    policy = run.policy.compaction
    if policy is None or not policy.enabled:
        return None
    rules, _ = compaction.rules_for(policy)
    try:
        return compaction.plan_compaction(run.table, rules, sort_keys=policy.sort_keys, dry_run=run.dry_run)
    except compaction.CompactionError as exc:
        raise MaintenanceError(f"table {run.name!r}: {exc}") from None


def compact(
    run: TableRun, planned: compaction.PlannedCompaction, sizes: dict[str, int]
) -> tuple[dict, dict[str, int]]:
    """Rewrite the planned partitions and the small manifests (``compaction``), on the table as the tag
    step left it: the report per table, and the objects under the table after it (its writes added some).

    The names of the files it will write are saved in the state first (``compaction_writes``); after
    the step, those no commit made part of the table (a group skipped after a lost race) are deleted,
    as the next run deletes those of a run killed before its commit."""
    _, manifest_rules = compaction.rules_for(run.policy.compaction)
    writes = not run.dry_run and bool(
        planned.plan.groups or needs_manifest_rewrite(data_manifest_sizes(run.table), manifest_rules)
    )
    if writes:
        run.state.compaction_writes = [str(write_id) for write_id in planned.write_ids]
        run.save_state()
    report = compaction.apply_compaction(
        run.table, planned, manifests=manifest_rules, commit_retries=run.ctx.commit_retries
    ).as_dict()
    report["manifests_rewritten"] = sum(1 for m in report["manifests"] if m.get("rewritten"))
    if not writes:
        return report, sizes
    sizes = list_sizes(run)
    deleted = set(delete_compaction_leftovers(run, list(sizes)))
    report["leftovers_deleted"] = sorted(deleted)
    sizes = {uri: size for uri, size in sizes.items() if uri not in deleted}
    if report["partitions_compacted"] or report["manifests_rewritten"]:
        # The run's clock started before these commits: measured from it, the compaction's own snapshots
        # would be younger than any max_snapshot_age_hours and kept until the next run expires them.
        newest_ms = max(snapshot.timestamp_ms for snapshot in run.table.snapshots())
        run.clock = replace(run.clock, now=max(run.clock.now, datetime.fromtimestamp(newest_ms / 1000, UTC)))
    return report, sizes


def delete_compaction_leftovers(run: TableRun, listed: list[str]) -> list[str]:
    """Delete the files named by the state's ``compaction_writes`` that the table does not reach (a
    compaction's writes that no commit took); clear the list (saved with the run's state)."""
    leftovers = compaction.leftover_writes(listed, run.state.compaction_writes)
    reached = set(run.reachable(run.reload())) | run.protected
    deleted = sorted(uri for uri in leftovers if uri not in reached)
    if deleted:
        objects.delete_objects(run.ctx.s3, deleted, run.ctx.calls)
        log.info("deleted %d files a compaction wrote and did not commit", len(deleted))
    run.state.compaction_writes = []
    return deleted


def list_sizes(run: TableRun) -> dict[str, int]:
    """Every object under the table location, with its size."""
    listed = objects.list_objects(run.ctx.s3, run.table.location(), run.ctx.calls)
    return {uri: obj.size for uri, obj in listed.items()}


# -- 2. expiry --------------------------------------------------------------------------------------------


def expire_snapshots(run: TableRun) -> tuple[dict, dict[str, FileRef]]:
    """Expire in one commit; return the expiry report and the files the commit left unreferenced (for a
    dry run: the files it would leave unreferenced), archive tables' files left out."""
    now_ms = snapshots.to_ms(run.clock.now)
    max_age_ms = int(run.policy.max_snapshot_age_hours * 3600 * 1000)
    conflicts = 0
    for _ in range(run.ctx.commit_retries + 1):
        table = run.table
        plan = snapshots.plan_expiry(table.metadata, run.policy.retain_last, max_age_ms, now_ms)
        result = {
            "snapshots_before": len(table.metadata.snapshots),
            "snapshots_expired": len(plan.expire_ids),
            "expired_ids": plan.expire_ids,
            "tags_removed": plan.remove_refs,
            "snapshots_retained": len(plan.retained_ids),
            "retained_because": dict(Counter(reason.split(":")[0] for reason in plan.reasons.values())),
            "commits": 0,
            "conflicts_retried": conflicts,
        }
        if plan.empty:
            return result, {}
        before = run.reachable()
        after = reachable_files(run.index, table.metadata, table.metadata_location, plan.retained_ids)
        if run.dry_run:
            return result, unreferenced_between(before, after, run.protected)
        record_pending(run, unreferenced_between(before, after, run.protected))
        try:
            response = table.catalog.commit_table(table, *expiry_commit(table, plan))
        except CommitFailedException as exc:
            run.state.pending = None
            conflicts += 1
            log.warning("expiry commit lost a race (%s); re-planning on fresh metadata", exc)
            run.reload()
            continue
        result["commits"] = 1
        run.reload()
        after = reachable_files(run.index, response.metadata, response.metadata_location)
        unreferenced = unreferenced_between(before, after, run.protected)
        log.info(
            "expired %d of %d snapshots (removed tags %s) in one commit; %d files unreferenced",
            len(plan.expire_ids),
            len(table.metadata.snapshots),
            plan.remove_refs or "none",
            len(unreferenced),
        )
        return result, unreferenced
    raise CommitFailedException(
        f"{run.policy.identifier}: expiry commit failed {run.ctx.commit_retries + 1} times"
    )


def unreferenced_between(
    before: dict[str, FileRef], after: dict[str, FileRef], protected: set[str]
) -> dict[str, FileRef]:
    return {path: f for path, f in before.items() if path not in after and path not in protected}


def expiry_commit(table: Table, plan: snapshots.ExpiryPlan) -> tuple[tuple, tuple]:
    """Requirements and updates of the expiry commit. Every ref must still point where the plan saw it:
    a concurrent append (main moves) or tag change makes the commit fail, and the plan is redone."""
    metadata = table.metadata
    requirements = (
        AssertTableUUID(uuid=metadata.table_uuid),
        *(AssertRefSnapshotId(ref=name, snapshot_id=ref.snapshot_id) for name, ref in metadata.refs.items()),
    )
    updates: tuple = tuple(RemoveSnapshotRefUpdate(ref_name=name) for name in plan.remove_refs)
    # pyiceberg drops an expired snapshot's statistics file from the metadata, not its partition
    # statistics file: without this the metadata would keep pointing at it.
    expired = set(plan.expire_ids)
    updates += tuple(
        RemovePartitionStatisticsUpdate(snapshot_id=stats.snapshot_id)
        for stats in metadata.partition_statistics
        if stats.snapshot_id in expired
    )
    if plan.expire_ids:
        updates += (RemoveSnapshotsUpdate(snapshot_ids=plan.expire_ids),)
    return requirements, updates


# -- 3. unreferenced files --------------------------------------------------------------------------------


def handle_unreferenced(run: TableRun, unreferenced: dict[str, FileRef], sizes: dict[str, int]) -> dict:
    """Apply the policy's action; the list is kept in the state until the action is done."""
    action = run.policy.unreferenced.action
    result: dict[str, Any] = {
        "action": action,
        "files": len(unreferenced),
        "bytes": sum(f.size if f.size is not None else sizes.get(p, 0) for p, f in unreferenced.items()),
        "by_kind": dict(Counter(f.kind for f in unreferenced.values())),
    }
    if run.dry_run or not unreferenced:
        return result
    record_pending(run, unreferenced)
    result.update(apply_file_action(run, sorted(unreferenced), action))
    run.state.pending = None
    run.save_state()
    return result


def record_pending(run: TableRun, unreferenced: dict[str, FileRef]) -> None:
    """Save the files an expiry leaves unreferenced as the state's pending action, BEFORE the expiry
    commits: a run killed between the commit and the action leaves the list to the next run, whose expiry
    finds nothing left to expire (so it could not compute the list again). If the commit never happened,
    the next run's ``finish_pending`` finds the files still referenced and leaves them alone."""
    pending = {"action": run.policy.unreferenced.action, "files": sorted(unreferenced)}
    if not unreferenced or run.state.pending == pending:
        return
    run.state.pending = pending
    run.save_state()


def finish_pending(run: TableRun) -> dict:
    """Finish the file action an earlier run committed to but did not complete, with the action recorded
    with the list (even if the policy changed since: the earlier run committed to it)."""
    files, action = run.state.pending["files"], run.state.pending["action"]
    log.info("finishing the %s of %d unreferenced files left pending by an earlier run", action, len(files))
    result = apply_file_action(run, files, action)
    run.state.pending = None
    run.save_state()
    return {"files": len(files), **result}


def apply_file_action(run: TableRun, uris: list[str], action: str) -> dict:
    """Delete or tag ``uris``, after checking against freshly loaded metadata that none is referenced (by
    the table or by an archive table registered on it)."""
    referenced = set(run.reachable(run.reload())) | run.protected
    still_referenced = set(uris) & referenced
    if still_referenced:
        log.warning("%d files are referenced again and are left alone", len(still_referenced))
    targets = [uri for uri in uris if uri not in still_referenced]
    result: dict[str, Any] = {"skipped_referenced": len(still_referenced)}
    ctx = run.ctx
    if action == "delete":
        result["deleted"] = objects.delete_objects(ctx.s3, targets, ctx.calls)
        log.info("deleted %d unreferenced files", result["deleted"])
        return result
    tag = run.policy.unreferenced.tag
    tagged = objects.tag_objects(ctx.s3, targets, tag.key, tag.value, ctx.tag_workers, ctx.calls)
    run.state.handled = sorted(set(run.state.handled) | set(targets))
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


def tag_created(run: TableRun) -> dict:
    """Tag the files the table reaches now and did not reach at the last run."""
    if not run.policy.created.enabled:
        return {"enabled": False}
    seen = set(run.state.files or ())
    new = sorted(p for p in run.reachable() if p not in seen)
    result: dict[str, Any] = {"enabled": True, "files": len(new), "first_run": run.state.files is None}
    if run.dry_run or not new:
        return result
    tag, ctx = run.policy.created.tag, run.ctx
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


def ensure_lifecycle(run: TableRun) -> dict:
    if run.policy.unreferenced.action != "tag" or not run.policy.lifecycle.enabled:
        return {"status": "not_needed"}
    bucket, rule = lifecycle_rule_for(run.policy, run.table.location())
    if run.dry_run:
        return {"status": "not_checked", "rule_id": rule["ID"], "bucket": bucket}
    status = objects.ensure_lifecycle_rule(run.ctx.s3, bucket, rule, run.ctx.calls)
    log.info("lifecycle rule %s on s3://%s: %s", rule["ID"], bucket, status)
    return {"status": status, "rule_id": rule["ID"], "bucket": bucket}


# -- 6. orphans -------------------------------------------------------------------------------------------


def handle_orphans(run: TableRun) -> dict:
    """Objects under the table location that nothing reaches, older than the minimum age."""
    listed = objects.list_objects(run.ctx.s3, run.table.location(), run.ctx.calls)
    # Read the metadata again now: a writer that committed during this run must not see its files called
    # orphans (files it wrote and has not committed yet are protected by the minimum age).
    referenced = set(run.reachable(run.reload())) | run.protected
    run.state.handled = sorted(uri for uri in run.state.handled if uri in listed)
    handled = set(run.state.handled)
    cutoff = run.clock.now - timedelta(hours=run.policy.orphan_min_age_hours)
    unreferenced = [o for uri, o in listed.items() if uri not in referenced and uri not in handled]
    orphans = sorted((o for o in unreferenced if o.last_modified <= cutoff), key=lambda o: o.uri)
    result: dict[str, Any] = {
        "found": len(orphans),
        "bytes": sum(o.size for o in orphans),
        "younger_than_min_age": len(unreferenced) - len(orphans),
        "min_age_hours": run.policy.orphan_min_age_hours,
        "sample": [o.uri for o in orphans[:10]],
        "action": "listed" if run.dry_run else run.policy.unreferenced.action,
    }
    if run.dry_run or not orphans:
        return result
    result.update(apply_file_action(run, [o.uri for o in orphans], run.policy.unreferenced.action))
    return result


# -- 7. report --------------------------------------------------------------------------------------------


def summarize(report: dict) -> str:
    expiry, files, orphans = report["expiry"], report["unreferenced"], report["orphans"]
    verb = "would " if report["dry_run"] else ""
    action = {"delete": "delete", "tag": "tag"}[files["action"]]
    skipped = report["tags"]["skipped"]
    compacted = report.get("compaction")
    compaction_summary = ""
    if compacted is not None:
        compaction_summary = (
            f"{verb}compact {len(compacted['planned'])} partitions "
            f"({compacted['files_before']} -> "
            f"{compacted.get('files_after_estimate', compacted['files_after'])} data files), "
        )
    return (
        f"{report['identifier']}: {verb}create tags {report['tags']['created'] or 'none'}"
        f"{f' (skipped {sorted(skipped)}: past their retention)' if skipped else ''}, "
        f"{compaction_summary}"
        f"{verb}expire {expiry['snapshots_expired']} of {expiry['snapshots_before']} snapshots, "
        f"{verb}{action} {files['files']} unreferenced files ({files['bytes']} bytes), "
        f"{orphans['found']} orphans"
    )
