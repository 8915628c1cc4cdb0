"""One snapshot on main that takes data files out and puts others in: the commit under the GDPR erasure's
rewrite (``gdpr.iceberg_commit``) and the compaction's (``iceberg.compaction``), each with its own
snapshot producer (what the manifests and the summary say)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.update.snapshot import _SnapshotProducer


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
