"""The erasure's snapshot, written so that its manifests name no subject.

A manifest entry keeps a data file's column bounds (``lower_bounds`` / ``upper_bounds``) and partition
values. pyiceberg's overwrite records each removed file as a DELETED entry, bounds included, and carries
manifests holding DELETED entries of earlier commits into every later snapshot: a subject who was the
smallest or largest id of a rewritten file would stay readable in the current snapshot's metadata after
the purge. The erasure's snapshot therefore differs from pyiceberg's overwrite in three ways:

- no DELETED entry: every manifest of the parent that holds a removed file or any DELETED entry is
  written again with its live entries only (as EXISTING); one left with none is dropped. Readers of a
  snapshot only use live entries; what is lost is the record of which files this snapshot removed, which
  only incremental (changelog) reads and Iceberg Java's incremental expiry use. The purge computes what
  to delete from reachability, not from DELETED entries.
- a bound of a subject column equal to a subject id is dropped from the replacements and from the entries
  written again. The replacements hold no subject row, so this only happens when a truncated string bound
  (``truncate(16)``, the default metrics mode) of other values coincides with an id; a file without that
  bound is simply read by the next erasure instead of being pruned.
- nothing else changes: the same operation (overwrite), summary and concurrency check as pyiceberg's
  (the commit fails when main moved since the table was loaded).

``names_subject`` is the test both sides use: the scanner marks snapshots whose manifests still name a
subject (the purge expires them), and this commit rewrites the manifests that do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntry, ManifestEntryStatus, ManifestFile
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _OverwriteFiles
from pyiceberg.transforms import IdentityTransform

from dataplatform.iceberg.file_swap import carried_entry, commit_file_swap

if TYPE_CHECKING:
    from dataplatform.gdpr.iceberg_erasure import SubjectFilter

# Spec id -> positions, in a partition tuple, of identity partitions on a subject column.
PartitionPositions = dict[int, list[int]]


def subject_partition_positions(metadata: TableMetadata, subject_filter: SubjectFilter) -> PartitionPositions:
    """Identity partitions on a subject column hold the id itself as the partition value."""
    subject_field_ids = set(subject_filter.field_ids.values())
    return {
        spec_id: [
            position
            for position, partition_field in enumerate(spec.fields)
            if isinstance(partition_field.transform, IdentityTransform)
            and partition_field.source_id in subject_field_ids
        ]
        for spec_id, spec in metadata.specs().items()
    }


def _subject_bounds(subject_filter: SubjectFilter, data_file: DataFile):
    """(bounds dict, field id) of every subject-column bound equal to a subject id."""
    for column in subject_filter.columns:
        field_id, field_type = subject_filter.field_ids[column], subject_filter.field_types[column]
        for bounds in (data_file.lower_bounds, data_file.upper_bounds):
            raw = bounds.get(field_id) if bounds else None
            if raw is not None and from_bytes(field_type, raw) in subject_filter.values[column]:
                yield bounds, field_id


def names_subject(subject_filter: SubjectFilter, positions: PartitionPositions, data_file: DataFile) -> bool:
    """Whether the entry of ``data_file`` carries a subject id: as a bound of a subject column, or as an
    identity partition value of one."""
    if next(_subject_bounds(subject_filter, data_file), None) is not None:
        return True
    ids = {value for values in subject_filter.values.values() for value in values}
    partition = data_file.partition
    return any(partition[at] in ids for at in positions.get(data_file.spec_id, ()) if partition is not None)


def scrub_bounds(subject_filter: SubjectFilter, data_file: DataFile) -> DataFile:
    """Drop (in place) every subject-column bound equal to a subject id; no bound means "may hold any
    value", which stays true."""
    for bounds, field_id in list(_subject_bounds(subject_filter, data_file)):
        del bounds[field_id]
    return data_file


class ErasureOverwrite(_OverwriteFiles):
    """pyiceberg's overwrite without DELETED entries and with subject bounds scrubbed (module docstring).

    ``entries_of`` returns every entry of a manifest, DELETED ones included (the scanner has read them
    already)."""

    def __init__(
        self,
        table: Table,
        transaction,
        subject_filter: SubjectFilter,
        positions: PartitionPositions,
        entries_of: Callable[[ManifestFile], list[ManifestEntry]],
        snapshot_properties: dict[str, str],
    ):
        super().__init__(
            operation=Operation.OVERWRITE,
            transaction=transaction,
            io=table.io,
            snapshot_properties=snapshot_properties,
        )
        self._filter, self._positions, self._entries_of = subject_filter, positions, entries_of

    def append_data_file(self, data_file: DataFile) -> ErasureOverwrite:
        super().append_data_file(scrub_bounds(self._filter, data_file))
        return self

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _existing_manifests(self) -> list[ManifestFile]:
        parent = self._transaction.table_metadata.snapshot_by_name(name=self._target_branch)
        if parent is None:
            return []
        return [m for manifest in parent.manifests(io=self._io) if (m := self._carry(manifest)) is not None]

    def _carry(self, manifest: ManifestFile) -> ManifestFile | None:
        """The manifest as it is when it names nothing to drop; else written again with its live
        entries, bounds scrubbed (None when none is left)."""
        entries = self._entries_of(manifest)
        live = [
            entry
            for entry in entries
            if entry.status != ManifestEntryStatus.DELETED and entry.data_file not in self._deleted_data_files
        ]
        if len(live) == len(entries) and not any(
            names_subject(self._filter, self._positions, entry.data_file) for entry in live
        ):
            return manifest
        if not live:
            return None
        if manifest.content != ManifestContent.DATA:
            # The erasure refuses tables with live delete files before it gets here.
            raise ValueError(f"{manifest.manifest_path}: live delete files in a copy-on-write erasure")
        with self.new_manifest_writer(self.spec(manifest.partition_spec_id)) as writer:
            for entry in live:
                writer.add_entry(carried_entry(entry, scrub_bounds(self._filter, entry.data_file)))
        return writer.to_manifest_file()


def commit_erasure(
    table: Table,
    removed: Sequence[DataFile],
    added: Sequence[DataFile],
    subject_filter: SubjectFilter,
    entries_of: Callable[[ManifestFile], list[ManifestEntry]],
    snapshot_properties: dict[str, str],
) -> int:
    """One snapshot on main: ``removed`` out, ``added`` in, no manifest naming a subject; its id."""
    positions = subject_partition_positions(table.metadata, subject_filter)
    return commit_file_swap(
        table,
        lambda transaction: ErasureOverwrite(
            table, transaction, subject_filter, positions, entries_of, snapshot_properties
        ),
        removed,
        added,
    )
