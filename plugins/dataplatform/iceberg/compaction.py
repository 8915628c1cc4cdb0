"""Bin-pack compaction of an Iceberg table with pyiceberg (issue 16; no maintenance run calls it yet).

``compact_table`` plans from the current snapshot (``compaction_plan.plan_bin_pack``: which small files,
grouped per partition, within the run's byte budget), then rewrites each group in a commit of its own:

1. read the group's rows through their delete files (pyiceberg applies position deletes; it refuses a
   table with equality deletes, which only the Spark backend compacts), so a deleted row stays deleted;
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
``unreferenced`` action handle them as any other file. A dry run only plans.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _OverwriteFiles

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
    # The manifest rewrites of the run (before the groups' commits, after them), when rules were given.
    manifests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def files_after(self) -> int:
        """Live data files after the run: the ones not rewritten, plus what the rewrites wrote."""
        rewritten = sum(g.files_before for g in self.groups if g.snapshot_id is not None)
        return self.files_before - rewritten + sum(g.files_after for g in self.groups)

    def as_dict(self) -> dict[str, Any]:
        done = [g for g in self.groups if g.snapshot_id is not None]
        return {
            "dry_run": self.dry_run,
            "files_before": self.files_before,
            "bytes_before": self.bytes_before,
            "files_after": self.files_after,  # a dry run rewrites no group: files_before
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


def live_data_files(table: Table) -> dict[str, FileScanTask]:
    """The current snapshot's data files, each with the delete files that apply to it, by path."""
    return {task.file.file_path: task for task in table.scan().plan_files()}


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


def compact_table(
    table: Table,
    rules: BinPackRules,
    *,
    manifests: ManifestRules | None = None,
    dry_run: bool = False,
    commit_retries: int = 4,
) -> CompactionReport:
    """Plan, then rewrite each planned group in its own commit (module docstring); then, with
    ``manifests``, the small manifests (``manifest_rewrite``)."""
    tasks = live_data_files(table)
    infos = [file_info(task) for task in tasks.values()]
    plan = plan_bin_pack(infos, rules)
    report = CompactionReport(dry_run, len(infos), sum(i.size_bytes for i in infos), plan)
    log.info(
        "%s: %d data files, %d groups to rewrite (%d files), %d partitions skipped%s",
        table.name(),
        len(infos),
        len(plan.groups),
        plan.files_rewritten,
        len(plan.skipped),
        " (dry run)" if dry_run else "",
    )
    if dry_run:
        if manifests is not None:
            report.manifests.append(rewrite_small_manifests(table, manifests, dry_run=True))
        return report
    if manifests is not None and plan.groups:
        # Each group's commit rewrites every manifest holding one of its files: a few large manifests
        # first, instead of one small manifest per earlier commit, make that a few writes per group.
        report.manifests.append(_rewrite_manifests_retrying(table, manifests, commit_retries))
        table = table.refresh()
    for group in plan.groups:
        # The groups are disjoint partitions: the plan's tasks of the next group stay valid after this
        # group's commit (manifests rewritten meanwhile name the same files); a commit by someone else is
        # checked when it makes ours fail.
        report.groups.append(rewrite_group(table, group, tasks, rules, commit_retries))
        table = table.refresh()
    if manifests is not None:
        report.manifests.append(_rewrite_manifests_retrying(table, manifests, commit_retries))
    return report


def _rewrite_manifests_retrying(table: Table, rules: ManifestRules, commit_retries: int) -> dict[str, Any]:
    """The manifest rewrite, re-planned on fresh metadata when another writer committed meanwhile."""
    for attempt in range(commit_retries + 1):
        try:
            return rewrite_small_manifests(table, rules)
        except CommitFailedException as exc:
            log.warning(
                "%s: manifest rewrite lost a race (%s); retrying (attempt %d)", table.name(), exc, attempt + 1
            )
            table = table.refresh()
    return {"rewritten": False, "skipped": f"commit failed {commit_retries + 1} times"}


def rewrite_group(
    table: Table,
    group: RewriteGroup,
    tasks: dict[str, FileScanTask],
    rules: BinPackRules,
    commit_retries: int,
) -> GroupOutcome:
    outcome = GroupOutcome(group.partition, group.spec_id, len(group.files), group.size_bytes)
    group_tasks = [tasks[f.path] for f in group.files]
    rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(group_tasks)
    written = _write(table, rows, rules.target_file_bytes)
    replaced = [t.file for t in group_tasks]
    for attempt in range(commit_retries + 1):
        try:
            outcome.snapshot_id = _commit_replace(table, replaced, written, rules)
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


def _write(table: Table, rows, target_file_bytes: int) -> list[DataFile]:
    """The rows as new data files of about ``target_file_bytes`` (pyiceberg's writer splits by it)."""
    properties = {
        **table.metadata.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES: str(target_file_bytes),
    }
    metadata = table.metadata.model_copy(update={"properties": properties})
    return list(
        _dataframe_to_data_files(table_metadata=metadata, df=rows, io=table.io, write_uuid=uuid.uuid4())
    )


class _ReplaceFiles(ReplaceOperation, _OverwriteFiles):
    """pyiceberg's overwrite (the group's files out, the new ones in) as a REPLACE snapshot."""


def _commit_replace(
    table: Table, replaced: list[DataFile], written: list[DataFile], rules: BinPackRules
) -> int:
    """One REPLACE snapshot on main (``replaced`` out, ``written`` in); its id. Raises
    CommitFailedException when main moved since ``table`` was loaded."""
    properties = {SUMMARY_KEY: f"bin-pack target {rules.target_file_bytes} bytes"}
    return commit_file_swap(
        table,
        lambda transaction: _ReplaceFiles(
            operation=Operation.REPLACE, transaction=transaction, io=table.io, snapshot_properties=properties
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
