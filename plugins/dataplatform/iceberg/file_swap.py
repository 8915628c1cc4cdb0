"""One snapshot on main that takes data files out and puts others in: the commit under the GDPR erasure's
rewrite (``gdpr.iceberg_commit``) and the compaction's (``iceberg.compaction``), each with its own
snapshot producer (what the manifests and the summary say); and ``ReplaceOperation``, which makes a
producer's snapshot Iceberg's REPLACE (the compaction's and the manifest rewrite's)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyiceberg.manifest import DataFile, ManifestEntry, ManifestEntryStatus
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _SnapshotProducer


class ReplaceOperation:
    """Mixin (before the pyiceberg producer) for a snapshot that rewrites files or manifests without
    changing the table's data: Iceberg's REPLACE, which incremental readers (streaming, changelog) skip.
    pyiceberg computes snapshot summaries only for append, overwrite and delete: the totals are computed
    as an overwrite's, the operation is REPLACE."""

    _operation: Operation

    def _summary(self, snapshot_properties: dict[str, str] | None = None) -> Summary:
        self._operation = Operation.OVERWRITE
        try:
            summary = super()._summary(snapshot_properties or {})  # type: ignore[misc]
        finally:
            self._operation = Operation.REPLACE
        return Summary(Operation.REPLACE, **summary.additional_properties)


def commit_file_swap(
    table: Table,
    producer_for: Callable[[Transaction], _SnapshotProducer],
    removed: Sequence[DataFile],
    added: Sequence[DataFile],
) -> int:
    """``removed`` out, ``added`` in, in one snapshot made by ``producer_for(transaction)``; its id.
    pyiceberg's commit requires main to be where ``table`` saw it (CommitFailedException otherwise)."""
    with table.transaction() as transaction, producer_for(transaction) as producer:
        for data_file in removed:
            producer.delete_data_file(data_file)
        for data_file in added:
            producer.append_data_file(data_file)
    snapshot = table.refresh().current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def carried_entry(entry: ManifestEntry, data_file: DataFile | None = None) -> ManifestEntry:
    """A live entry as a manifest written again carries it: EXISTING, with the snapshot id and sequence
    numbers of the commit that added the file (``data_file``: the same file with other metadata)."""
    return ManifestEntry.from_args(
        status=ManifestEntryStatus.EXISTING,
        snapshot_id=entry.snapshot_id,
        sequence_number=entry.sequence_number,
        file_sequence_number=entry.file_sequence_number,
        data_file=data_file or entry.data_file,
    )
