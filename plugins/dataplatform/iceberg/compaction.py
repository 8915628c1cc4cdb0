"""Bin-pack compaction of an Iceberg table with pyiceberg: the ``compaction`` step of a maintenance run
(``maintenance.compact``) for tables whose policy has a ``compaction`` section.

``plan_compaction`` plans from the current snapshot (``compaction_plan.plan_bin_pack``: which small files,
grouped per partition, within the run's byte budget), then rewrites each group in a commit of its own:

1. read the group's rows through their delete files (pyiceberg applies position deletes; a table with
   equality deletes is refused before any change, with ``CompactionError``: only the Spark backend
   compacts it), so a deleted row stays deleted; sorted by the policy's ``sort_order`` when it has one;
2. write them as new files of the target size (pyiceberg's writer, the table's current spec and
   properties, ``write.target-file-size-bytes`` set to the policy's target);
3. commit one REPLACE snapshot: the group's files out, the new ones in. pyiceberg's commit requires main to
   be where the plan saw it; when another writer committed meanwhile, the group is checked on the fresh
   metadata: if every file it replaces is still live, the same new files are committed again (the rows
   they hold have not changed); if one is gone (rewritten or deleted by someone else), the group is
   skipped with that reason and its new files deleted. A concurrent append is never lost: it is in the
   fresh snapshot the retry commits on.

With manifest rules, the small manifests are rewritten into few (``manifest_rewrite``) before the groups'
commits (each of which rewrites every manifest holding one of its files) and after them.

The replaced files stay referenced by the previous snapshots: the maintenance run's expiry and its
``unreferenced`` action handle them as any other file. A dry run only plans, and reports the files the
plan would leave (``files_after_estimate``).

``plan_compaction`` reads only, and raises ``CompactionError`` for what cannot be compacted (a sort column
the table lacks, equality deletes): the maintenance run calls it before its first commit, and
``apply_compaction`` later. ``compact_table`` does both.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _OverwriteFiles

from dataplatform.config import Compaction
from dataplatform.iceberg.compaction_plan import (
    BinPackRules,
    CompactionPlan,
    DataFileInfo,
    ManifestRules,
    RewriteGroup,
    plan_bin_pack,
)
from dataplatform.iceberg.file_swap import ReplaceOperation, commit_file_swap
from dataplatform.iceberg.manifest_rewrite import rewrite_small_manifests

log = logging.getLogger(__name__)

# The snapshot summary says which run compacted: ``dataplatform.compaction`` = the policy's target size.
SUMMARY_KEY = "dataplatform.compaction"
# (column, "asc" | "desc"), as ``config.Compaction.sort_keys`` gives them.
SortKeys = Sequence[tuple[str, str]]


class CompactionError(ValueError):
    """The table cannot be compacted as configured; nothing was changed."""


def rules_for(policy: Compaction) -> tuple[BinPackRules, ManifestRules]:
    """The plan's rules from a table's ``compaction`` policy."""
    return (
        BinPackRules(policy.target_file_bytes, policy.min_input_files, policy.max_bytes_per_run),
        ManifestRules(policy.target_manifest_bytes, policy.max_small_manifests),
    )


@dataclass
class GroupOutcome:
    partition: tuple
    spec_id: int
    files_before: int
    bytes_before: int
    files_after: int = 0
    bytes_after: int = 0
    snapshot_id: int | None = None
    skipped: str | None = None


@dataclass
class CompactionReport:
    dry_run: bool
    files_before: int
    bytes_before: int
    plan: CompactionPlan
    groups: list[GroupOutcome] = field(default_factory=list)
    target_file_bytes: int = 0
    # The manifest rewrites of the run (before the groups' commits, after them), when rules were given.
    manifests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> list[GroupOutcome]:
        return [g for g in self.groups if g.snapshot_id is not None]

    @property
    def files_after(self) -> int:
        """Live data files after the run: the ones not rewritten, plus what the rewrites wrote."""
        return (
            self.files_before - sum(g.files_before for g in self.done) + sum(g.files_after for g in self.done)
        )

    @property
    def bytes_after(self) -> int:
        return (
            self.bytes_before - sum(g.bytes_before for g in self.done) + sum(g.bytes_after for g in self.done)
        )

    def files_after_estimate(self, target_file_bytes: int) -> int:
        """What the plan would leave: each group rewritten into files of the target size."""
        written = sum(group.expected_output_files(target_file_bytes) for group in self.plan.groups)
        return self.files_before - self.plan.files_rewritten + written

    def as_dict(self) -> dict[str, Any]:
        done = self.done
        report = {
            "dry_run": self.dry_run,
            "files_before": self.files_before,
            "bytes_before": self.bytes_before,
            "files_after": self.files_after,  # a dry run rewrites no group: files_before
            "bytes_after": self.bytes_after,
            "partitions_compacted": len(done),
            "manifests": self.manifests,
            "files_rewritten": sum(g.files_before for g in done),
            "planned": [
                {"partition": list(g.partition), "files": len(g.files), "bytes": g.size_bytes}
                for g in self.plan.groups
            ],
            "skipped": [
                {
                    "partition": list(s.partition),
                    "files": s.candidates,
                    "bytes": s.size_bytes,
                    "reason": s.reason,
                }
                for s in self.plan.skipped
            ]
            + [
                {
                    "partition": list(g.partition),
                    "files": g.files_before,
                    "bytes": g.bytes_before,
                    "reason": g.skipped,
                }
                for g in self.groups
                if g.skipped
            ],
        }
        if self.dry_run:
            report["files_after_estimate"] = self.files_after_estimate(self.target_file_bytes)
        return report


def live_data_files(table: Table) -> dict[str, FileScanTask]:
    """The current snapshot's data files, each with the delete files that apply to it, by path."""
    try:
        return {task.file.file_path: task for task in table.scan().plan_files()}
    except ValueError as exc:
        if "equality deletes" not in str(exc):
            raise
        raise CompactionError(
            f"{table.name()} has equality delete files, which pyiceberg cannot apply: compact it with "
            "backend 'spark' (rewrite_data_files), or leave its compaction out"
        ) from None


def file_info(task: FileScanTask) -> DataFileInfo:
    data_file = task.file
    return DataFileInfo(
        path=data_file.file_path,
        spec_id=data_file.spec_id,
        partition=tuple(data_file.partition),
        size_bytes=data_file.file_size_in_bytes,
        record_count=data_file.record_count,
        has_deletes=bool(task.delete_files),
    )


def check_sort_keys(table: Table, sort_keys: SortKeys) -> None:
    columns = {field.name for field in table.schema().fields}
    missing = [column for column, _ in sort_keys if column not in columns]
    if missing:
        raise CompactionError(
            f"{table.name()}: compaction sort_order names {missing}, not columns of the table "
            f"({sorted(columns)})"
        )


@dataclass
class PlannedCompaction:
    """A plan, the scan tasks of the files it rewrites, and the report the run fills in.

    ``write_ids``: the uuid in the name of every file each commit writes (a group's data files
    ``*-<uuid>.parquet``, its manifests ``<uuid>-m<n>.avro`` and manifest list ``snap-*-<uuid>.avro``), one
    per group and one per manifest rewrite (before, after), known before anything is written: a run killed
    between its writes and its commit leaves files that the next run can find by name
    (``leftover_writes``)."""

    rules: BinPackRules
    sort_keys: SortKeys
    tasks: dict[str, FileScanTask]
    report: CompactionReport
    write_ids: list[uuid.UUID] = field(default_factory=list)

    @property
    def plan(self) -> CompactionPlan:
        return self.report.plan

    def group_write_id(self, index: int) -> uuid.UUID:
        return self.write_ids[index]

    def manifest_write_id(self, which: int) -> uuid.UUID:
        """0: the rewrite before the groups, 1: after them."""
        return self.write_ids[len(self.plan.groups) + which]


def leftover_writes(uris, write_ids) -> list[str]:
    """The ``uris`` a compaction with these ``write_ids`` wrote (by the uuid in their names)."""
    ids = {str(write_id) for write_id in write_ids}
    return [uri for uri in uris if any(write_id in uri.rsplit("/", 1)[-1] for write_id in ids)]


def plan_compaction(
    table: Table, rules: BinPackRules, *, sort_keys: SortKeys = (), dry_run: bool = False
) -> PlannedCompaction:
    """What a run would rewrite, from the current snapshot; reads only. Raises ``CompactionError`` for a
    table this path cannot compact."""
    check_sort_keys(table, sort_keys)
    tasks = live_data_files(table)
    infos = [file_info(task) for task in tasks.values()]
    plan = plan_bin_pack(infos, rules)
    report = CompactionReport(
        dry_run, len(infos), sum(i.size_bytes for i in infos), plan, target_file_bytes=rules.target_file_bytes
    )
    log.info(
        "%s: %d data files, %d groups to rewrite (%d files), %d partitions skipped%s",
        table.name(),
        len(infos),
        len(plan.groups),
        plan.files_rewritten,
        len(plan.skipped),
        " (dry run)" if dry_run else "",
    )
    write_ids = [uuid.uuid4() for _ in range(len(plan.groups) + 2)]
    return PlannedCompaction(rules, tuple(sort_keys), tasks, report, write_ids)


def apply_compaction(
    table: Table,
    planned: PlannedCompaction,
    *,
    manifests: ManifestRules | None = None,
    commit_retries: int = 4,
) -> CompactionReport:
    """Rewrite each planned group in its own commit; then, with ``manifests``, the small manifests. A dry
    run's plan changes nothing. ``table`` may be newer than the plan's (e.g. a tag committed since): a
    group whose files are no longer all live is skipped."""
    report = planned.report
    if report.dry_run:
        if manifests is not None:
            report.manifests.append(rewrite_small_manifests(table, manifests, dry_run=True))
        return report
    if manifests is not None and planned.plan.groups:
        # Each group's commit rewrites every manifest holding one of its files: a few large manifests
        # first, instead of one small manifest per earlier commit, make that a few writes per group.
        report.manifests.append(
            _rewrite_manifests_retrying(table, manifests, commit_retries, planned.manifest_write_id(0))
        )
        table = table.refresh()
    for index, group in enumerate(planned.plan.groups):
        # The groups are disjoint partitions: the plan's tasks of the next group stay valid after this
        # group's commit (manifests rewritten meanwhile name the same files); a commit by someone else is
        # checked when it makes ours fail.
        report.groups.append(rewrite_group(table, group, planned, index, commit_retries))
        table = table.refresh()
    if manifests is not None:
        report.manifests.append(
            _rewrite_manifests_retrying(table, manifests, commit_retries, planned.manifest_write_id(1))
        )
    return report


def compact_table(
    table: Table,
    rules: BinPackRules,
    *,
    manifests: ManifestRules | None = None,
    dry_run: bool = False,
    commit_retries: int = 4,
    sort_keys: SortKeys = (),
) -> CompactionReport:
    """``plan_compaction`` then ``apply_compaction`` (module docstring)."""
    planned = plan_compaction(table, rules, sort_keys=sort_keys, dry_run=dry_run)
    return apply_compaction(table, planned, manifests=manifests, commit_retries=commit_retries)


def _rewrite_manifests_retrying(
    table: Table, rules: ManifestRules, commit_retries: int, write_id: uuid.UUID
) -> dict[str, Any]:
    """The manifest rewrite, re-planned on fresh metadata when another writer committed meanwhile."""
    for attempt in range(commit_retries + 1):
        try:
            return rewrite_small_manifests(table, rules, commit_uuid=write_id)
        except CommitFailedException as exc:
            log.warning(
                "%s: manifest rewrite lost a race (%s); retrying (attempt %d)", table.name(), exc, attempt + 1
            )
            table = table.refresh()
    return {"rewritten": False, "skipped": f"commit failed {commit_retries + 1} times"}


def rewrite_group(
    table: Table, group: RewriteGroup, planned: PlannedCompaction, index: int, commit_retries: int
) -> GroupOutcome:
    rules = planned.rules
    write_id = planned.group_write_id(index)
    outcome = GroupOutcome(group.partition, group.spec_id, len(group.files), group.size_bytes)
    group_tasks = [planned.tasks[f.path] for f in group.files]
    rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(group_tasks)
    if planned.sort_keys:
        # Nulls last in both directions, as the Spark backend's sort order says (``NULLS LAST``).
        order = {"asc": "ascending", "desc": "descending"}
        rows = rows.sort_by([(column, order[direction], "at_end") for column, direction in planned.sort_keys])
    written = _write(table, rows, rules.target_file_bytes, write_id)
    replaced = [t.file for t in group_tasks]
    for attempt in range(commit_retries + 1):
        try:
            outcome.snapshot_id = _commit_replace(table, replaced, written, rules, write_id)
            outcome.files_after = len(written)
            outcome.bytes_after = sum(f.file_size_in_bytes for f in written)
            log.info(
                "%s partition %s: %d files (%d bytes) -> %d files (%d bytes), snapshot %d",
                table.name(),
                group.partition,
                outcome.files_before,
                outcome.bytes_before,
                outcome.files_after,
                outcome.bytes_after,
                outcome.snapshot_id,
            )
            return outcome
        except CommitFailedException as exc:
            table = table.refresh()
            live = live_data_files(table)
            gone = [f.path for f in group.files if f.path not in live]
            if gone:
                outcome.skipped = f"{len(gone)} of its files changed since the plan (another writer rewrote or deleted them)"
                break
            log.warning(
                "%s partition %s: commit lost a race (%s); retrying (attempt %d)",
                table.name(),
                group.partition,
                exc,
                attempt + 1,
            )
    else:
        outcome.skipped = f"commit failed {commit_retries + 1} times"
    _delete_uncommitted(table, written)
    log.warning("%s partition %s: skipped: %s", table.name(), group.partition, outcome.skipped)
    return outcome


def _write(table: Table, rows, target_file_bytes: int, write_id: uuid.UUID) -> list[DataFile]:
    """The rows as new data files of about ``target_file_bytes`` (pyiceberg's writer splits by it)."""
    properties = {
        **table.metadata.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES: str(target_file_bytes),
    }
    metadata = table.metadata.model_copy(update={"properties": properties})
    return list(_dataframe_to_data_files(table_metadata=metadata, df=rows, io=table.io, write_uuid=write_id))


class _ReplaceFiles(ReplaceOperation, _OverwriteFiles):
    """pyiceberg's overwrite (the group's files out, the new ones in) as a REPLACE snapshot."""


def _commit_replace(
    table: Table,
    replaced: list[DataFile],
    written: list[DataFile],
    rules: BinPackRules,
    write_id: uuid.UUID | None = None,
) -> int:
    """One REPLACE snapshot on main (``replaced`` out, ``written`` in); its id. Raises
    CommitFailedException when main moved since ``table`` was loaded."""
    properties = {SUMMARY_KEY: f"bin-pack target {rules.target_file_bytes} bytes"}
    return commit_file_swap(
        table,
        lambda transaction: _ReplaceFiles(
            operation=Operation.REPLACE,
            transaction=transaction,
            io=table.io,
            commit_uuid=write_id,
            snapshot_properties=properties,
        ),
        replaced,
        written,
    )


def _delete_uncommitted(table: Table, written: list[DataFile]) -> None:
    """The new files of a group that was not committed: no snapshot references them."""
    for data_file in written:
        try:
            table.io.delete(data_file.file_path)
        except OSError as exc:  # left for the orphan clean-up, which finds unreferenced files by age
            log.warning("could not delete uncommitted %s: %s", data_file.file_path, exc)
