"""Erasing subjects from an Iceberg table with pyiceberg: delete, purge.

1. ``delete_subject_rows``: copy-on-write delete in one commit. Only data files whose min/max bounds on
   a subject column can hold a subject are opened (one pass over the manifests); they are fetched whole,
   filtered and rewritten in parallel; files with no row of the subjects are left as they are. pyiceberg's
   own ``Table.delete`` does the same rewrite one file at a time and may commit twice; its planning binds
   the id list again for every file. The commit's manifests name no subject (``iceberg_commit``: no
   DELETED entry, no subject id as a bound); when the current snapshot holds no row but its manifests
   still name a subject, that manifest rewrite is committed alone.
2. ``purge_subject_history``: every older snapshot that still reaches a file with a subject's rows, or
   a manifest naming a subject, is expired, whatever ``retain_last`` says; a tag or branch pinning one is handled by the dataset's
   ``pinned_refs`` policy (``fail``: nothing is changed and the refs are named; ``drop``: the ref goes in
   the same commit). The files the expiry unreferences are deleted for real, and so are their noncurrent
   versions in a versioned bucket, and so are the previous metadata files that list an expired snapshot
   (the log keeps their names). The commit, the reachable-file walk and the delete are Iceberg
   maintenance's (``dataplatform.iceberg``); the list of files to delete is saved before the commit's
   files are touched, and a run that dies in between finishes it on its next run.
Verification reads what is in S3, not what these steps recorded: ``dataplatform.gdpr.verify``. The
copies the metadata no longer reaches are ``dataplatform.gdpr.unreachable``'s.

Subject ids are never logged: counts are logged, and rows per subject are returned to the caller, who
names subjects by their HMAC.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, In, Or
from pyiceberg.io import FileIO, InputFile
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntry, ManifestEntryStatus, ManifestFile
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.types import IntegerType, LongType, PrimitiveType, StringType

from dataplatform.gdpr.iceberg_commit import commit_erasure, names_subject, subject_partition_positions
from dataplatform.iceberg import snapshots
from dataplatform.iceberg.files import METADATA, FileIndex, previous_metadata_listing, reachable_files
from dataplatform.iceberg.maintenance import expiry_commit, unreferenced_between
from dataplatform.iceberg.state import TableState, load_state, save_state
from dataplatform.s3 import objects

log = logging.getLogger(__name__)

# Snapshot summary property on the delete's snapshot: audits and later runs can tell erasures apart.
ERASURE_PROPERTY = "dataplatform.gdpr-erasure"
# On the same snapshot: the run that erased (``dataplatform.gdpr-run``) and the rows it deleted per subject,
# as a JSON list in the order of the sorted subject ids (counts only: no id reaches the table metadata).
# A retry of a run killed after its delete committed finds its rows gone and reads the counts here.
RUN_PROPERTY = "dataplatform.gdpr-run"
ROWS_PROPERTY = "dataplatform.gdpr-rows-deleted"


class ErasureError(RuntimeError):
    """The dataset cannot be erased as configured (wrong column, merge-on-read deletes, ...). Nothing was
    changed; a retry cannot help until someone fixes the cause."""


class PinnedRefsError(ErasureError):
    """Tags or branches pin snapshots that hold the subjects' rows and the policy is ``fail``."""

    def __init__(self, identifier: str, refs: dict[str, int]):
        self.refs = refs
        named = ", ".join(f"{name} (snapshot {snapshot_id})" for name, snapshot_id in sorted(refs.items()))
        super().__init__(
            f"{identifier}: refs {named} pin snapshots that hold rows of the subjects; the dataset's "
            "pinned_refs policy is 'fail': drop or move them (or set pinned_refs: drop), then rerun"
        )


# -- which rows belong to the subjects ------------------------------------------------------------------


_ID_TYPES = {StringType: str, LongType: int, IntegerType: int}


@dataclass(frozen=True, eq=False)
class SubjectFilter:
    """The rows any of ``columns`` of which holds one of the subject ids, as an Iceberg expression (for
    pruning and scans) and as an Arrow mask (for rewriting)."""

    columns: tuple[str, ...]
    # Per column, the ids converted to the column's type, with the raw id each one came from.
    values: dict[str, dict[Any, str]]
    field_ids: dict[str, int]
    field_types: dict[str, PrimitiveType]

    @functools.cached_property
    def sorted_values(self) -> dict[str, list[Any]]:
        return {column: sorted(values) for column, values in self.values.items()}

    @classmethod
    def build(cls, schema: Schema, columns: Sequence[str], subject_ids: Sequence[str]) -> SubjectFilter:
        if not columns:
            raise ErasureError("no subject columns configured")
        values: dict[str, dict[Any, str]] = {}
        field_ids, field_types = {}, {}
        for column in columns:
            try:
                schema_field = schema.find_field(column)
            except ValueError:
                raise ErasureError(f"subject column {column!r} is not in the table's schema") from None
            field_ids[column], field_types[column] = schema_field.field_id, schema_field.field_type
            field_type = type(schema_field.field_type)
            convert = _ID_TYPES.get(field_type)
            if convert is None:
                raise ErasureError(
                    f"subject column {column!r} has type {field_type.__name__}: string or integer"
                )
            try:
                values[column] = {convert(subject_id): subject_id for subject_id in subject_ids}
            except ValueError:
                raise ErasureError(f"a subject id is not an integer, but column {column!r} is") from None
        return cls(tuple(columns), values, field_ids, field_types)

    @property
    def expression(self) -> BooleanExpression:
        terms = [In(column, set(self.values[column])) for column in self.columns]
        return terms[0] if len(terms) == 1 else Or(*terms)

    def may_hold(self, data_file: DataFile) -> bool:
        """Whether the file's column bounds leave room for a subject id in any subject column (no bounds:
        yes). Writers truncate string bounds downwards for the lower and upwards for the upper one, so the
        answer errs on the side of reading the file."""
        for column in self.columns:
            lower, upper = (
                data_file.lower_bounds.get(self.field_ids[column]) if data_file.lower_bounds else None,
                data_file.upper_bounds.get(self.field_ids[column]) if data_file.upper_bounds else None,
            )
            if lower is None or upper is None:
                return True
            field_type = self.field_types[column]
            ids = self.sorted_values[column]
            low, high = from_bytes(field_type, lower), from_bytes(field_type, upper)
            at = bisect.bisect_left(ids, low)
            if at < len(ids) and ids[at] <= high:
                return True
        return False

    def mask(self, rows: pa.Table) -> pa.ChunkedArray:
        masks = [
            pc.is_in(rows[column], value_set=pa.array(list(self.values[column]))) for column in self.columns
        ]
        combined = masks[0]
        for other in masks[1:]:
            combined = pc.or_kleene(combined, other)
        return pc.fill_null(combined, False)

    def rows_per_subject(self, matched: pa.Table) -> Counter[str]:
        """Rows per raw subject id; a row naming two subjects (payer and payee) counts for each."""
        counts: Counter[str] = Counter()
        columns = [
            [self.values[column].get(value) for value in matched[column].to_pylist()]
            for column in self.columns
        ]
        for row in zip(*columns, strict=True):
            for subject_id in {subject for subject in row if subject is not None}:
                counts[subject_id] += 1
        return counts


@dataclass
class FileRewrite:
    """One data file that held subject rows: what replaces it (nothing when every row matched)."""

    original: DataFile
    replacements: list[DataFile]
    rows_deleted: int
    rows_per_subject: Counter[str]


class BufferInputFile(InputFile):
    """Bytes already fetched, for pyiceberg's readers."""

    def __init__(self, location: str, content: bytes):
        super().__init__(location)
        self._content = content

    def __len__(self) -> int:
        return len(self._content)

    def exists(self) -> bool:
        return True

    def open(self, seekable: bool = True) -> pa.BufferReader:
        return pa.BufferReader(self._content)


class _OneFileIO(FileIO):
    """Serves one already fetched file from memory; everything else goes to the table's FileIO."""

    def __init__(self, io: FileIO, location: str, content: bytes):
        super().__init__(io.properties)
        self._io, self._location, self._content = io, location, content

    def new_input(self, location: str) -> InputFile:
        if location == self._location:
            return BufferInputFile(location, self._content)
        return self._io.new_input(location)

    def new_output(self, location: str):
        return self._io.new_output(location)

    def delete(self, location: str | InputFile) -> None:
        self._io.delete(location)


class SubjectScanner:
    """Finds the data files that hold subject rows, reading each candidate file at most once, and the
    snapshots whose manifests still name a subject (in a bound or a partition value, any entry status)."""

    def __init__(self, table: Table, subject_filter: SubjectFilter, workers: int = 8):
        self.table = table
        self.filter = subject_filter
        self.workers = workers
        self._matches: dict[str, int] = {}
        self._manifests_of: dict[int, list[ManifestFile]] = {}
        self._entries: dict[str, list[ManifestEntry]] = {}
        self._naming: dict[str, bool] = {}
        self.files_read = 0

    def manifests(self, snapshot_id: int | None = None) -> list[ManifestFile]:
        """Every manifest of the snapshot (default: current), each read once per scanner (manifests are
        immutable and shared by snapshots)."""
        table = self.table
        snapshot = table.current_snapshot() if snapshot_id is None else table.snapshot_by_id(snapshot_id)
        if snapshot is None:
            return []
        if snapshot.snapshot_id not in self._manifests_of:
            self._manifests_of[snapshot.snapshot_id] = list(snapshot.manifests(table.io))
        manifests = self._manifests_of[snapshot.snapshot_id]
        unread = [m for m in manifests if m.manifest_path not in self._entries]
        positions = subject_partition_positions(table.metadata, self.filter)
        with ThreadPoolExecutor(self.workers) as pool:
            for manifest, entries in zip(unread, pool.map(self._read_entries, unread), strict=True):
                self._entries[manifest.manifest_path] = entries
                self._naming[manifest.manifest_path] = any(
                    names_subject(self.filter, positions, entry.data_file) for entry in entries
                )
        return manifests

    def entries(self, manifest: ManifestFile) -> list[ManifestEntry]:
        """Every entry of the manifest, DELETED ones included."""
        if manifest.manifest_path not in self._entries:
            self._entries[manifest.manifest_path] = self._read_entries(manifest)
        return self._entries[manifest.manifest_path]

    def candidates(self, snapshot_id: int | None = None) -> list[FileScanTask]:
        """Live data files of the snapshot (default: current) whose column bounds may hold a subject.

        pyiceberg's scan planning would find the same files, but it builds a metrics evaluator for every
        file and binds the whole id list again each time; here bounds are compared with the sorted ids."""
        return [
            FileScanTask(entry.data_file)
            for manifest in self.manifests(snapshot_id)
            if manifest.content == ManifestContent.DATA
            for entry in self._entries[manifest.manifest_path]
            if entry.status != ManifestEntryStatus.DELETED and self.filter.may_hold(entry.data_file)
        ]

    def names_subjects(self, snapshot_id: int | None = None) -> bool:
        """Whether a manifest of the snapshot carries a subject id in an entry's bounds or partition."""
        return any(self._naming[m.manifest_path] for m in self.manifests(snapshot_id))

    def _read_entries(self, manifest: ManifestFile) -> list[ManifestEntry]:
        return manifest.fetch_manifest_entry(self.table.io, discard_deleted=False)

    def read(self, data_file: DataFile) -> pa.Table:
        """Every row the file holds, in the table's current schema (positional or equality deletes are not
        applied: a row that is only marked deleted is still in the bytes). The whole file is fetched with
        one GET (every column is needed to rewrite it) instead of one for the footer and one per column
        range, then pyiceberg's ArrowScan reads it from memory, mapping field ids and schema changes."""
        self.files_read += 1
        with self.table.io.new_input(data_file.file_path).open(seekable=False) as stream:
            content = stream.read()
        metadata = self.table.metadata
        in_memory = _OneFileIO(self.table.io, data_file.file_path, content)
        return ArrowScan(metadata, in_memory, metadata.schema(), AlwaysTrue()).to_table(
            [FileScanTask(data_file)]
        )

    def matching_rows(self, tasks: Iterable[FileScanTask]) -> dict[str, int]:
        """Subject rows per data file path, for files not looked at before (in parallel)."""
        todo = {task.file.file_path: task.file for task in tasks if task.file.file_path not in self._matches}
        with ThreadPoolExecutor(self.workers) as pool:
            counts = pool.map(lambda f: pc.sum(self.filter.mask(self.read(f))).as_py() or 0, todo.values())
            self._matches.update(zip(todo, counts, strict=True))
        return self._matches


# -- 1. delete ------------------------------------------------------------------------------------------


@dataclass
class DeleteResult:
    data_files: int
    files_scanned: int
    files_rewritten: int
    bytes_rewritten: int
    rows_deleted: int
    rows_by_subject: dict[str, int]
    snapshot_id: int | None
    removed_files: list[str] = field(default_factory=list)
    conflicts_retried: int = 0


def live_data_files(table: Table) -> int:
    """Data files of the current snapshot, from the manifest list's counts (no manifest is read)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0
    return sum(
        (m.added_files_count or 0) + (m.existing_files_count or 0)
        for m in snapshot.manifests(table.io)
        if m.content == ManifestContent.DATA
    )


def delete_subject_rows(
    table: Table,
    columns: Sequence[str],
    subject_ids: Sequence[str],
    workers: int = 8,
    commit_retries: int = 4,
    snapshot_properties: dict[str, str] | None = None,
) -> DeleteResult:
    """Remove the subjects' rows from the table's current snapshot in one overwrite commit. Nothing is
    committed when no row matches (a rerun is a no-op). A commit lost to another writer is redone on the
    new metadata, and the files written for the lost attempt are deleted."""
    conflicts = 0
    for _ in range(commit_retries + 1):
        subject_filter = SubjectFilter.build(table.schema(), columns, subject_ids)
        scanner = SubjectScanner(table, subject_filter, workers)
        refuse_delete_files(table)
        tasks = scanner.candidates()
        rewrites = rewrite_files(table, scanner, tasks)
        result = DeleteResult(
            data_files=live_data_files(table),
            files_scanned=len(tasks),
            files_rewritten=len(rewrites),
            bytes_rewritten=sum(r.original.file_size_in_bytes for r in rewrites),
            rows_deleted=sum(r.rows_deleted for r in rewrites),
            rows_by_subject=dict(sum((r.rows_per_subject for r in rewrites), Counter())),
            snapshot_id=None,
            removed_files=sorted(r.original.file_path for r in rewrites),
            conflicts_retried=conflicts,
        )
        if not rewrites and not scanner.names_subjects():
            log.info(
                "%s: no row of the %d subjects in %d candidate files",
                _name(table),
                len(subject_ids),
                len(tasks),
            )
            return result
        properties = {
            **(snapshot_properties or {}),
            ROWS_PROPERTY: json.dumps([result.rows_by_subject.get(s, 0) for s in sorted(subject_ids)]),
        }
        try:
            result.snapshot_id = commit_rewrites(table, rewrites, properties, scanner)
        except CommitFailedException as exc:
            conflicts += 1
            log.warning("%s: delete commit lost a race (%s); redoing it on fresh metadata", _name(table), exc)
            _delete_files(table, [f.file_path for r in rewrites for f in r.replacements])
            table = table.refresh()
            continue
        log.info(
            "%s: deleted %d rows of %d subjects: %d of %d data files rewritten (%d scanned), snapshot %d",
            _name(table),
            result.rows_deleted,
            len(result.rows_by_subject),
            result.files_rewritten,
            result.data_files,
            result.files_scanned,
            result.snapshot_id,
        )
        return result
    raise CommitFailedException(f"{_name(table)}: delete commit failed {commit_retries + 1} times")


def earlier_delete_of_run(table: Table, run_id: str, subject_ids: Sequence[str]) -> DeleteResult | None:
    """What the delete committed by an earlier attempt of run ``run_id`` removed (from its snapshot's
    properties), or None when this run committed no delete on the table."""
    for snapshot in reversed(table.snapshots()):
        summary = snapshot.summary
        if summary is None or summary[RUN_PROPERTY] != run_id or summary[ROWS_PROPERTY] is None:
            continue
        counts = json.loads(summary[ROWS_PROPERTY])
        by_subject = {s: n for s, n in zip(sorted(subject_ids), counts, strict=False) if n}
        return DeleteResult(
            data_files=live_data_files(table),
            files_scanned=0,
            files_rewritten=int(summary["deleted-data-files"] or 0),
            bytes_rewritten=0,
            rows_deleted=sum(by_subject.values()),
            rows_by_subject=by_subject,
            snapshot_id=snapshot.snapshot_id,
            removed_files=[],
            conflicts_retried=0,
        )
    return None


def refuse_delete_files(table: Table) -> None:
    """Merge-on-read delete files: a copy-on-write rewrite would bring equality-deleted rows back."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return
    live = sum(
        (m.added_files_count or 0) + (m.existing_files_count or 0)
        for m in snapshot.manifests(table.io)
        if m.content == ManifestContent.DELETES
    )
    if live:
        raise ErasureError(
            f"{_name(table)}: the table has {live} merge-on-read delete files; a copy-on-write rewrite would "
            "bring equality-deleted rows back. Compact it (rewrite_data_files) or use engine 'spark'"
        )


def rewrite_files(table: Table, scanner: SubjectScanner, tasks: Sequence[FileScanTask]) -> list[FileRewrite]:
    """Read the candidates in parallel; write each one that holds subject rows again without them."""
    write_uuid, counter = uuid.uuid4(), itertools.count(0)

    def rewrite(task: FileScanTask) -> FileRewrite | None:
        rows = scanner.read(task.file)
        mask = scanner.filter.mask(rows)
        matched = pc.sum(mask).as_py() or 0
        if not matched:
            return None
        kept = rows.filter(pc.invert(mask))
        replacements = (
            list(_dataframe_to_data_files(table.metadata, kept, table.io, write_uuid, counter))
            if kept.num_rows
            else []
        )
        return FileRewrite(
            task.file, replacements, matched, scanner.filter.rows_per_subject(rows.filter(mask))
        )

    with ThreadPoolExecutor(scanner.workers) as pool:
        return [r for r in pool.map(rewrite, tasks) if r is not None]


def commit_rewrites(
    table: Table, rewrites: Sequence[FileRewrite], properties: dict[str, str], scanner: SubjectScanner
) -> int:
    """One overwrite snapshot: the originals out, their replacements in, and no manifest entry left that
    names a subject (``iceberg_commit``); with no rewrite, it only cleans the manifests. pyiceberg
    asserts that main has not moved since the table was loaded, so a concurrent writer makes this fail
    instead of being lost."""
    return commit_erasure(
        table,
        [rewrite.original for rewrite in rewrites],
        [replacement for rewrite in rewrites for replacement in rewrite.replacements],
        scanner.filter,
        scanner.entries,
        {ERASURE_PROPERTY: "true", **properties},
    )


# -- 2. purge -------------------------------------------------------------------------------------------


@dataclass
class PurgeResult:
    snapshots_before: int
    expired_snapshots: list[int]
    dropped_refs: list[str]
    files_deleted: int
    versions_deleted: int
    # Deleted by this run: the expiry's unreferenced files, after those an earlier run left pending.
    deleted_files: list[str]
    resumed_pending: int = 0
    conflicts_retried: int = 0


def tainted_snapshots(table: Table, scanner: SubjectScanner) -> dict[int, int]:
    """Snapshots that reach a data file holding subject rows, or a manifest naming a subject (a DELETED
    entry's bounds, say) -> how many such data files."""
    tainted: dict[int, int] = {}
    for snapshot in table.metadata.snapshots:
        tasks = scanner.candidates(snapshot.snapshot_id)
        matches = scanner.matching_rows(tasks)
        holding = sum(1 for task in tasks if matches[task.file.file_path])
        if holding or scanner.names_subjects(snapshot.snapshot_id):
            tainted[snapshot.snapshot_id] = holding
    return tainted


def pinning_refs(table: Table, tainted: dict[int, int]) -> dict[str, int]:
    """Tags and branches other than main that point at a tainted snapshot."""
    return {
        name: ref.snapshot_id
        for name, ref in table.metadata.refs.items()
        if name != MAIN_BRANCH and ref.snapshot_id in tainted
    }


def check_pinned_refs(table: Table, scanner: SubjectScanner, policy: str) -> dict[str, int]:
    """Before anything changes: with the ``fail`` policy, refuse when a tag or branch pins a snapshot
    holding the subjects' rows (the current snapshot counts: the delete will not move a tag)."""
    pinned = pinning_refs(table, tainted_snapshots(table, scanner))
    if pinned and policy == "fail":
        raise PinnedRefsError(_name(table), pinned)
    return pinned


def purge_subject_history(
    table: Table,
    scanner: SubjectScanner,
    s3: Any,
    state_uri: str,
    pinned_refs: str = "fail",
    commit_retries: int = 4,
    protected: frozenset[str] = frozenset(),
) -> PurgeResult:
    """Expire every snapshot that still reaches a subject's rows (dropping refs that pin one when the
    policy is ``drop``), then delete the files the expiry unreferenced and their noncurrent versions,
    except ``protected`` ones (files of archive tables sharing the location: their own erasure's)."""
    state = load_state(s3, state_uri)
    resumed = finish_pending_deletes(table, s3, state_uri, state)
    conflicts = 0
    for _ in range(commit_retries + 1):
        scanner.table = table
        tainted = tainted_snapshots(table, scanner)
        result = PurgeResult(len(table.metadata.snapshots), [], [], 0, 0, resumed, len(resumed), conflicts)
        if not tainted:
            return result
        current = table.current_snapshot()
        if current is not None and current.snapshot_id in tainted:
            raise ErasureError(
                f"{_name(table)}: the current snapshot still holds rows of the subjects or names them in "
                "its manifests"
            )
        pinned = pinning_refs(table, tainted)
        if pinned and pinned_refs == "fail":
            raise PinnedRefsError(_name(table), pinned)
        plan = snapshots.ExpiryPlan(
            expire_ids=sorted(tainted),
            remove_refs=sorted(pinned),
            retained_ids=[s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id not in tainted],
            reasons={},
        )
        index = FileIndex(table.io)
        before = reachable_files(index, table.metadata, table.metadata_location)
        try:
            response = table.catalog.commit_table(table, *expiry_commit(table, plan))
        except CommitFailedException as exc:
            conflicts += 1
            log.warning("%s: purge commit lost a race (%s); re-planning", _name(table), exc)
            table = table.refresh()
            continue
        after = reachable_files(index, response.metadata, response.metadata_location)
        # Previous metadata files that list an expired snapshot lead to its (deleted) manifests and data
        # files: they go too. The metadata log keeps their names, as it does for any file it outlived. A
        # file an archive table reaches (its own metadata file may be one of them) stays.
        superseded = previous_metadata_listing(table.io, response.metadata, set(plan.expire_ids))
        unreferenced = sorted(
            (set(unreferenced_between(before, after, protected=set(protected))) | set(superseded))
            - set(protected)
        )
        # Saved before any delete: a worker that dies now leaves the list for the next run to finish.
        state.pending = {"action": "delete", "files": unreferenced}
        save_state(s3, state_uri, state)
        table = table.refresh()
        deleted, versions = delete_unreferenced(table, s3, unreferenced)
        state.pending = None
        save_state(s3, state_uri, state)
        log.info(
            "%s: expired %d snapshots holding the subjects' rows (dropped refs %s); deleted %d files, "
            "%d noncurrent versions",
            _name(table),
            len(plan.expire_ids),
            plan.remove_refs or "none",
            deleted,
            versions,
        )
        result.expired_snapshots, result.dropped_refs = plan.expire_ids, plan.remove_refs
        result.files_deleted, result.versions_deleted = deleted, versions
        result.deleted_files = resumed + unreferenced
        return result
    raise CommitFailedException(f"{_name(table)}: purge commit failed {commit_retries + 1} times")


def finish_pending_deletes(table: Table, s3: Any, state_uri: str, state: TableState) -> list[str]:
    if not state.pending:
        return []
    files = state.pending["files"]
    log.info("%s: finishing the delete of %d files left pending by an earlier run", _name(table), len(files))
    delete_unreferenced(table, s3, files)
    state.pending = None
    save_state(s3, state_uri, state)
    return files


def delete_unreferenced(table: Table, s3: Any, uris: Sequence[str]) -> tuple[int, int]:
    """Delete ``uris`` unless freshly loaded metadata reaches them again, then every noncurrent version
    of them (a versioned bucket keeps the bytes of a deleted object otherwise)."""
    reachable = reachable_files(FileIndex(table.io), table.metadata, table.metadata_location)
    # A previous metadata file is only named by the log; the current one is never deleted.
    referenced = {path for path, ref in reachable.items() if ref.kind != METADATA} | {table.metadata_location}
    targets = [uri for uri in uris if uri not in referenced]
    if len(targets) < len(uris):
        log.warning(
            "%s: %d files are referenced again and are left alone", _name(table), len(uris) - len(targets)
        )
    deleted = objects.delete_objects(s3, targets)
    versions = objects.delete_all_versions(s3, targets)
    return deleted, versions


def _delete_files(table: Table, uris: Sequence[str]) -> None:
    for uri in uris:
        table.io.delete(uri)


def _name(table: Table) -> str:
    return ".".join(table.name())
