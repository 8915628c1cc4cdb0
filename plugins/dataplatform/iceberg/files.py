"""Every file a table's metadata reaches: metadata files, manifest lists, manifests, data and delete files.

Manifests are immutable and shared by many snapshots, so one ``FileIndex`` reads each manifest list and
manifest once (in parallel) and answers for any set of snapshots: the files reachable before an expiry and
after it come from the same reads, and the difference is what became unreferenced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFileContent, ManifestFile
from pyiceberg.serializers import Compressor
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

METADATA, MANIFEST_LIST, MANIFEST, DATA, DELETE = "metadata", "manifest_list", "manifest", "data", "delete"
# Puffin statistics and partition-statistics files, registered per snapshot in the metadata.
STATISTICS = "statistics"


@dataclass(frozen=True)
class FileRef:
    path: str
    kind: str
    # Known from the metadata for data, delete and manifest files; None for the others.
    size: int | None = None


class FileIndex:
    """Reads manifest lists and manifests on demand, at most once each, ``workers`` at a time."""

    def __init__(self, io: FileIO, workers: int = 16):
        self.io = io
        self.workers = workers
        self._manifests_of: dict[int, list[ManifestFile]] = {}
        self._files_in: dict[str, list[FileRef]] = {}
        self.reads = 0

    def files_of(self, snapshots: Iterable[Snapshot]) -> dict[str, FileRef]:
        """Manifest lists, manifests and live data and delete files of ``snapshots``."""
        snapshots = list(snapshots)
        todo = [s for s in snapshots if s.snapshot_id not in self._manifests_of]
        with ThreadPoolExecutor(self.workers) as pool:
            for snapshot, manifests in zip(todo, pool.map(self._read_manifest_list, todo), strict=True):
                self._manifests_of[snapshot.snapshot_id] = manifests
            manifests = {m.manifest_path: m for s in snapshots for m in self._manifests_of[s.snapshot_id]}
            unread = [m for path, m in manifests.items() if path not in self._files_in]
            for manifest, entries in zip(unread, pool.map(self._read_manifest, unread), strict=True):
                self._files_in[manifest.manifest_path] = entries
        files: dict[str, FileRef] = {}
        for snapshot in snapshots:
            if snapshot.manifest_list:
                files[snapshot.manifest_list] = FileRef(snapshot.manifest_list, MANIFEST_LIST)
        for path, manifest in manifests.items():
            files[path] = FileRef(path, MANIFEST, manifest.manifest_length)
            for ref in self._files_in[path]:
                files[ref.path] = ref
        return files

    def _read_manifest_list(self, snapshot: Snapshot) -> list[ManifestFile]:
        self.reads += 1
        return list(snapshot.manifests(self.io))

    def _read_manifest(self, manifest: ManifestFile) -> list[FileRef]:
        self.reads += 1
        refs = []
        # Deleted entries are skipped: the file they name belongs to the parent snapshot, not this one.
        for entry in manifest.fetch_manifest_entry(self.io, discard_deleted=True):
            data_file = entry.data_file
            kind = DATA if data_file.content == DataFileContent.DATA else DELETE
            refs.append(FileRef(data_file.file_path, kind, data_file.file_size_in_bytes))
        return refs


def metadata_files(metadata: TableMetadata, metadata_location: str) -> dict[str, FileRef]:
    """The current metadata file and the previous ones its metadata log keeps."""
    paths = [entry.metadata_file for entry in metadata.metadata_log] + [metadata_location]
    return {path: FileRef(path, METADATA) for path in paths}


def statistics_files(metadata: TableMetadata, snapshot_ids: set[int] | None = None) -> dict[str, FileRef]:
    """The statistics and partition-statistics files registered for ``snapshot_ids`` (default: all)."""
    registered = [*metadata.statistics, *metadata.partition_statistics]
    return {
        stats.statistics_path: FileRef(stats.statistics_path, STATISTICS, stats.file_size_in_bytes)
        for stats in registered
        if snapshot_ids is None or stats.snapshot_id in snapshot_ids
    }


def reachable_files(
    index: FileIndex,
    metadata: TableMetadata,
    metadata_location: str,
    snapshot_ids: Iterable[int] | None = None,
) -> dict[str, FileRef]:
    """Every file the metadata reaches through ``snapshot_ids`` (default: all its snapshots)."""
    wanted = None if snapshot_ids is None else set(snapshot_ids)
    snapshots = [s for s in metadata.snapshots if wanted is None or s.snapshot_id in wanted]
    return {
        **index.files_of(snapshots),
        **statistics_files(metadata, wanted),
        **metadata_files(metadata, metadata_location),
    }


def previous_metadata_listing(io: FileIO, metadata: TableMetadata, snapshot_ids: set[int]) -> list[str]:
    """The previous metadata files in ``metadata``'s log that list any of ``snapshot_ids`` (read in
    parallel; a file already gone lists nothing)."""

    def lists_any(path: str) -> bool:
        try:
            with io.new_input(path).open(seekable=False) as stream:
                # ``.gz.metadata.json`` with write.metadata.compression-codec=gzip.
                content = Compressor.get_compressor(path).stream_decompressor(stream).read()
        except FileNotFoundError:
            return False
        listed = json.loads(content).get("snapshots", [])
        return any(snapshot["snapshot-id"] in snapshot_ids for snapshot in listed)

    paths = [entry.metadata_file for entry in metadata.metadata_log]
    if not snapshot_ids or not paths:
        return []
    with ThreadPoolExecutor(16) as pool:
        return [path for path, hit in zip(paths, pool.map(lists_any, paths), strict=True) if hit]
