"""Small data manifests rewritten into few, with pyiceberg (Spark's ``rewrite_manifests`` does the same).

A table written by many small commits has one manifest per commit, and a compaction's per-group commits
add more; planning a scan reads every manifest. ``rewrite_small_manifests`` commits one REPLACE snapshot
whose manifest list keeps the delete manifests and the data manifests already at the target size, and
replaces the small data manifests by manifests of about the target size holding the same live entries
(EXISTING, with their snapshot ids and sequence numbers: what a reader or a later expiry sees of a file is
unchanged), sorted by partition so that a partition's files sit in one manifest and a filtered scan skips
the others. DELETED entries of earlier commits, which pyiceberg carries from snapshot to snapshot, are
left out: no reader of this snapshot uses them. No data file changes; the rows are the same.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import defaultdict
from typing import Any

from pyiceberg.manifest import (
    ManifestContent,
    ManifestEntry,
    ManifestFile,
)
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _SnapshotProducer

from dataplatform.iceberg.compaction_plan import (
    ManifestRules,
    manifests_after_rewrite,
    needs_manifest_rewrite,
    small_manifests,
)
from dataplatform.iceberg.file_swap import ReplaceOperation, carried_entry

log = logging.getLogger(__name__)

SUMMARY_KEY = "dataplatform.manifest-rewrite"


def data_manifest_sizes(table: Table) -> list[int]:
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    return [m.manifest_length for m in snapshot.manifests(table.io) if m.content == ManifestContent.DATA]


def rewrite_small_manifests(
    table: Table, rules: ManifestRules, *, dry_run: bool = False, commit_uuid: uuid.UUID | None = None
) -> dict[str, Any]:
    """Rewrite the small data manifests when there are more than the rules allow (module docstring);
    what was found and done. ``commit_uuid`` names the files the commit writes (``<uuid>-m<n>.avro``)."""
    sizes = data_manifest_sizes(table)
    report: dict[str, Any] = {
        "manifests_before": len(sizes),
        "small_manifests": small_manifests(sizes, rules),
        "needed": needs_manifest_rewrite(sizes, rules),
        "rewritten": False,
        "manifests_after": len(sizes),
        "snapshot_id": None,
    }
    if not needs_manifest_rewrite(sizes, rules) or dry_run:
        return report
    with (
        table.transaction() as transaction,
        _RewriteManifests(
            transaction=transaction,
            io=table.io,
            commit_uuid=commit_uuid,
            rules=rules,
            snapshot_properties={SUMMARY_KEY: f"target {rules.target_manifest_bytes} bytes"},
        ),
    ):
        pass  # the producer's _existing_manifests does the work when the context commits
    table = table.refresh()
    report.update(rewritten=True, manifests_after=len(data_manifest_sizes(table)))
    report["snapshot_id"] = table.current_snapshot().snapshot_id
    log.info(
        "%s: %d data manifests (%d small) rewritten into %d, snapshot %d",
        table.name(),
        report["manifests_before"],
        report["small_manifests"],
        report["manifests_after"],
        report["snapshot_id"],
    )
    return report


class _RewriteManifests(ReplaceOperation, _SnapshotProducer["_RewriteManifests"]):
    def __init__(
        self,
        *,
        transaction,
        io,
        commit_uuid: uuid.UUID | None,
        rules: ManifestRules,
        snapshot_properties: dict[str, str],
    ):
        super().__init__(
            operation=Operation.REPLACE,
            transaction=transaction,
            io=io,
            commit_uuid=commit_uuid,
            snapshot_properties=snapshot_properties,
        )
        self._rules = rules

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _existing_manifests(self) -> list[ManifestFile]:
        metadata = self._transaction.table_metadata
        snapshot = metadata.snapshot_by_name(self._target_branch)
        if snapshot is None:
            return []
        kept: list[ManifestFile] = []
        small: dict[int, list[ManifestFile]] = defaultdict(list)
        for manifest in snapshot.manifests(self._io):
            if (
                manifest.content == ManifestContent.DATA
                and manifest.manifest_length < self._rules.target_manifest_bytes
            ):
                small[manifest.partition_spec_id].append(manifest)
            else:
                kept.append(manifest)
        for spec_id, manifests in small.items():
            entries = [
                entry
                for manifest in manifests
                for entry in manifest.fetch_manifest_entry(self._io, discard_deleted=True)
            ]
            entries.sort(key=lambda entry: _partition_order(entry.data_file.partition))
            total = sum(manifest.manifest_length for manifest in manifests)
            count = manifests_after_rewrite(total, self._rules)
            per_manifest = max(1, math.ceil(len(entries) / count))
            for start in range(0, len(entries), per_manifest):
                kept.append(self._write(spec_id, entries[start : start + per_manifest]))
        return kept

    def _write(self, spec_id: int, entries: list[ManifestEntry]) -> ManifestFile:
        with self.new_manifest_writer(self.spec(spec_id)) as writer:
            for entry in entries:
                writer.add_entry(carried_entry(entry))
        return writer.to_manifest_file()


def _partition_order(partition) -> tuple:
    """A sort key for partition values of any type, nulls first."""
    return tuple((value is not None, str(value)) for value in partition)
