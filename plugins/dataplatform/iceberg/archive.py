"""Register an older metadata file of an Iceberg table as a read-only archive table (Glue catalog, S3).

Three steps, each usable alone (the DAG runs them as separate tasks):

1. ``prepare``: every input check, before anything is read from S3 in bulk or changed: the source table
   exists, the archive name is a lower-case Glue identifier other than the source's, the metadata file
   (a URI under the table's metadata location, or ``oldest`` / ``previous``) resolves, and the archive
   name is free or already points at that same metadata file (a rerun).
2. ``check_files``: read the metadata file, walk every snapshot it holds with ``files.FileIndex``, and
   HEAD every object a reader of the archive table needs (the metadata file, manifest lists, manifests,
   data and delete files; not the older metadata files of its log, which no reader opens), ``workers``
   at a time. Each is present, missing (404), archived and needing a restore (GLACIER or DEEP_ARCHIVE,
   or an Intelligent-Tiering archive tier, without a completed restore) or unreadable (any other error).
   GLACIER_IR and STANDARD_IA are read directly: present, with their storage class counted. A manifest
   list or manifest that cannot be read stops the walk below it: those snapshots are reported as not
   walked (restore, rerun, and the check goes one level further).
3. ``register``: ``catalog.register_table`` of the archive name on the metadata file, only when every
   file is present; an archive already registered on the same file is left alone.

``archive_register`` runs the three in order. Input errors raise ``ArchiveError`` (a ``ValueError``)
before any change. Nothing here imports Airflow.

The archive table shares the source table's files: it must stay read-only (a write would add files
under the source's location). Once registered, ``release_from_lifecycle`` removes the source's delete tag
from its files, and the source's maintenance finds the archive in Glue and never deletes, tags or calls
orphan a file it reaches (``maintenance.archive_table_files``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError as PydanticValidationError
from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError, ValidationError
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata

from dataplatform.config import glue_identifier
from dataplatform.iceberg.files import MANIFEST, MANIFEST_LIST, METADATA, FileIndex, reachable_files
from dataplatform.s3 import objects
from dataplatform.s3.objects import split_uri

log = logging.getLogger(__name__)

OLDEST, PREVIOUS = "oldest", "previous"
KEYWORDS = (OLDEST, PREVIOUS)
SAMPLE = 20

PRESENT, MISSING, NEEDS_RESTORE, UNREADABLE = "present", "missing", "needs_restore", "unreadable"
STATUSES = (PRESENT, MISSING, NEEDS_RESTORE, UNREADABLE)
# Objects in these classes (and Intelligent-Tiering's archive tiers) cannot be read until restored;
# GLACIER_IR, STANDARD_IA, ONEZONE_IA and INTELLIGENT_TIERING's access tiers are read directly.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


class ArchiveError(ValueError):
    """The request cannot be carried out as given (bad name, unknown table, wrong metadata file, name
    taken); nothing was changed."""


class FilesNotReadyError(RuntimeError):
    """``register`` was asked to register a metadata file whose files are not all present."""


@dataclass(frozen=True)
class ArchiveRequest:
    """A validated request: ``source`` and ``archive`` are ``database.table`` identifiers."""

    source: str
    archive: str
    requested: str  # what was asked: oldest, previous or the URI
    metadata_file: str  # the resolved URI
    in_metadata_log: bool
    skipped: tuple[str, ...] = ()  # ``oldest``: older log entries passed over, with the reason
    already_registered: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skipped": list(self.skipped)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchiveRequest:
        return cls(**{**data, "skipped": tuple(data.get("skipped", ()))})


@dataclass(frozen=True)
class ObjectStatus:
    status: str
    storage_class: str | None = None
    size: int | None = None
    detail: str | None = None  # error code, or the Restore header of an archived object


@dataclass
class FileCheck:
    """What ``check_files`` found: the status of every object checked and the report."""

    statuses: dict[str, ObjectStatus] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def uris(self, status: str) -> list[str]:
        return sorted(uri for uri, s in self.statuses.items() if s.status == status)


# -- 1. input checks ----------------------------------------------------------------------------------


# S3 keys are at most 1,024 bytes; with the scheme and bucket a URI stays well under this.
MAX_URI_LENGTH = 1100


def validate_archive_name(archive_table: Any, source_identifier: str) -> str:
    try:
        glue_identifier(archive_table if isinstance(archive_table, str) else "")
    except ValueError:
        raise ArchiveError(
            f"archive_table must be a lower-case Glue identifier (letters, digits, '_'; not starting with a "
            f"digit; at most 255 characters), got {archive_table!r}"
        ) from None
    database, table = source_identifier.rsplit(".", 1)
    if archive_table == table:
        raise ArchiveError(
            f"archive_table {archive_table!r} is the source table itself: choose another name, "
            f"e.g. {table}_archive"
        )
    return f"{database}.{archive_table}"


def load_source(catalog, identifier: str) -> Table:
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        raise ArchiveError(f"Iceberg table {identifier} does not exist in the catalog") from None


def metadata_dir(table: Table) -> str:
    """Where the table writes its metadata files (``write.metadata.path`` or ``<location>/metadata``)."""
    path = table.metadata.properties.get("write.metadata.path") or table.location().rstrip("/") + "/metadata"
    return path.rstrip("/") + "/"


def resolve_metadata_file(table: Table, requested: Any) -> tuple[str, tuple[str, ...]]:
    """The URI ``requested`` names, and the older log entries ``oldest`` passed over (with the reason).

    ``previous``: the newest entry of the metadata log (the metadata before the last commit).
    ``oldest``: the oldest entry of the log whose table had a current snapshot. Entries written before
    the table held any data (the one ``create_table`` writes) would register an empty table and are
    passed over, as are entries whose file no longer exists; an entry that cannot be read for another
    reason (archived) is chosen, and the check reports what it needs.
    A URI must name a ``.metadata.json`` under the table's metadata location."""
    if not isinstance(requested, str) or not requested.strip():
        raise ArchiveError(
            f"metadata_file must be {OLDEST!r}, {PREVIOUS!r} or the s3:// URI of a metadata file, "
            f"got {requested!r}"
        )
    requested = requested.strip()
    log_files = [entry.metadata_file for entry in table.metadata.metadata_log]
    if requested in KEYWORDS:
        if not log_files:
            raise ArchiveError(
                f"table {'.'.join(table.name())} has no earlier metadata file in its metadata log "
                "(only the current one): nothing to archive"
            )
        if requested == PREVIOUS:
            return log_files[-1], ()
        skipped: list[str] = []
        for uri in log_files:
            try:
                metadata = read_metadata(table.io, uri)
            except FileNotFoundError:
                skipped.append(f"{uri}: does not exist")
                continue
            except OSError as exc:
                log.warning("cannot read %s (%s): choosing it, the check will say what it needs", uri, exc)
                return uri, tuple(skipped)
            if metadata.current_snapshot_id is None:
                skipped.append(f"{uri}: no snapshot (the table was empty)")
                continue
            return uri, tuple(skipped)
        raise ArchiveError(
            f"no metadata file in the log of {'.'.join(table.name())} has a snapshot: "
            f"{len(log_files)} entries, {'; '.join(skipped[:3])}"
        )
    where = metadata_dir(table)
    parts = requested.split("/")
    shown = requested if len(requested) <= 300 else f"{requested[:300]}... ({len(requested)} characters)"
    if (
        not requested.startswith(where)
        or not requested.endswith(".metadata.json")
        or "." in parts
        or ".." in parts
        or "" in parts[3:]
        or len(requested) > MAX_URI_LENGTH
        or any(ord(char) < 32 or ord(char) == 127 for char in requested)
    ):
        raise ArchiveError(
            f"metadata_file {shown!r} is not a metadata file of table {'.'.join(table.name())}: give "
            f"{OLDEST!r}, {PREVIOUS!r} or the URI of a *.metadata.json under {where}"
        )
    # A URI that names no object is a typo: refused here, before the check task writes its report.
    if not table.io.new_input(requested).exists():
        raise ArchiveError(f"metadata_file {shown!r} does not exist")
    return requested, ()


def read_metadata(io, uri: str) -> TableMetadata:
    """The table metadata in ``uri``. A file that is not Iceberg table metadata (not JSON, not UTF-8, or
    JSON of another shape) is an ``ArchiveError`` naming it; a file that cannot be read raises OSError."""
    try:
        return FromInputFile.table_metadata(io.new_input(uri))
    except (ValidationError, ValueError) as exc:  # pyiceberg's ValidationError is no ValueError
        raise ArchiveError(f"{uri} is not an Iceberg table metadata file: {why_not_metadata(exc)}") from None


def why_not_metadata(exc: Exception) -> str:
    """The first parse error, without the file's content (pydantic quotes the input)."""
    cause = exc.__cause__ if isinstance(exc, ValidationError) else exc
    if isinstance(cause, PydanticValidationError):
        errors = cause.errors(include_url=False, include_input=False)
        where = ".".join(str(part) for part in errors[0]["loc"])
        return f"{errors[0]['msg']}{f' at {where}' if where else ''} ({len(errors)} errors)"
    return "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else type(exc).__name__


def registered_location(catalog, identifier: str) -> str | None:
    """The metadata location a catalog table ``identifier`` points at; None when there is no such table.
    A table of that name that is not an Iceberg table is an ``ArchiveError`` (the name is taken).

    For the Glue catalog the location is read from the Glue table's parameters, without opening the
    metadata file (which may have been archived since)."""
    glue = getattr(catalog, "glue", None)
    if glue is None:  # another catalog type
        try:
            return catalog.load_table(identifier).metadata_location
        except NoSuchTableError:
            return None
    database, name = identifier.rsplit(".", 1)
    try:
        table = glue.get_table(DatabaseName=database, Name=name)["Table"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "EntityNotFoundException":
            return None
        raise
    parameters = table.get("Parameters") or {}
    if (parameters.get("table_type") or "").lower() != "iceberg" or not parameters.get("metadata_location"):
        raise ArchiveError(f"{identifier} already exists and is not an Iceberg table: choose another name")
    return parameters["metadata_location"]


def prepare(catalog, source_identifier: str, metadata_file: Any, archive_table: Any) -> ArchiveRequest:
    """Check the whole request; raise ``ArchiveError`` naming what is wrong. Changes nothing."""
    archive = validate_archive_name(archive_table, source_identifier)
    source = load_source(catalog, source_identifier)
    uri, skipped = resolve_metadata_file(source, metadata_file)
    existing = registered_location(catalog, archive)
    if existing is not None and existing != uri:
        raise ArchiveError(
            f"{archive} already exists with metadata {existing}, not {uri}: choose another archive_table "
            "(or drop that table first if it is no longer needed)"
        )
    return ArchiveRequest(
        source=source_identifier,
        archive=archive,
        requested=metadata_file.strip(),
        metadata_file=uri,
        in_metadata_log=uri in {entry.metadata_file for entry in source.metadata.metadata_log},
        skipped=skipped,
        already_registered=existing == uri,
    )


# -- 2. file check ------------------------------------------------------------------------------------


def head_status(s3, uri: str) -> ObjectStatus:
    bucket, key = split_uri(uri)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchKey", "NotFound"):
            return ObjectStatus(MISSING, detail=code)
        return ObjectStatus(UNREADABLE, detail=code)
    return classify(head)


def classify(head: dict) -> ObjectStatus:
    """A HEAD response: present, or archived and needing a restore first."""
    storage_class = head.get("StorageClass") or "STANDARD"
    restore = head.get("Restore")
    archived = storage_class in ARCHIVE_CLASSES or bool(head.get("ArchiveStatus"))
    if archived and (restore is None or 'ongoing-request="true"' in restore):
        return ObjectStatus(NEEDS_RESTORE, storage_class, head.get("ContentLength"), restore)
    return ObjectStatus(PRESENT, storage_class, head.get("ContentLength"), restore)


def head_all(s3, uris: Iterable[str], workers: int) -> dict[str, ObjectStatus]:
    uris = sorted(set(uris))
    if not uris:
        return {}
    with ThreadPoolExecutor(max(1, min(workers, len(uris)))) as pool:
        return dict(zip(uris, pool.map(lambda uri: head_status(s3, uri), uris), strict=True))


def check_files(catalog, s3, request: ArchiveRequest, workers: int = 32) -> FileCheck:
    """HEAD every object a reader of the archive table needs; see the module docstring."""
    source = load_source(catalog, request.source)
    io = source.io
    check = FileCheck()
    uri = request.metadata_file
    check.kinds[uri] = METADATA
    check.statuses.update(head_all(s3, [uri], workers))
    metadata: TableMetadata | None = None
    not_walked: dict[int, str] = {}
    if check.statuses[uri].status == PRESENT:
        metadata = read_metadata(io, uri)
        if metadata.location.rstrip("/") != source.location().rstrip("/"):
            raise ArchiveError(
                f"{uri} describes a table at {metadata.location}, not {request.source} at "
                f"{source.location()}: refusing to register it as an archive of {request.source}"
            )
        not_walked = _walk(io, s3, metadata, check, workers)
    check.report = _report(request, source, metadata, check, not_walked)
    log.info("%s", check.report["summary"])
    return check


def _walk(io, s3, metadata: TableMetadata, check: FileCheck, workers: int) -> dict[int, str]:
    """Walk the snapshots level by level, HEAD-checking each level before reading it; return the
    snapshots that could not be walked, with the reason."""
    not_walked: dict[int, str] = {}
    lists = {s.manifest_list: s for s in metadata.snapshots if s.manifest_list}
    check.kinds.update(dict.fromkeys(lists, MANIFEST_LIST))
    check.statuses.update(head_all(s3, lists, workers))
    walkable = []
    for path, snapshot in lists.items():
        if check.statuses[path].status == PRESENT:
            walkable.append(snapshot)
        else:
            not_walked[snapshot.snapshot_id] = f"manifest list {check.statuses[path].status}: {path}"
    index = FileIndex(io, workers)
    try:
        files = index.files_of(walkable)
    except OSError as exc:
        # A manifest (or a manifest list, since the HEAD) cannot be read: find which, one snapshot at a
        # time (the index keeps what it has read, so each manifest is read once more at most).
        log.warning("the walk stopped (%s); checking snapshot by snapshot", exc)
        files = {}
        for snapshot in walkable:
            try:
                files.update(index.files_of([snapshot]))
            except OSError as exc:
                not_walked[snapshot.snapshot_id] = _diagnose(io, s3, snapshot, check, workers, exc)
    for path, ref in files.items():
        check.kinds.setdefault(path, ref.kind)
    check.statuses.update(head_all(s3, [p for p in files if p not in check.statuses], workers))
    return not_walked


def _diagnose(io, s3, snapshot, check: FileCheck, workers: int, exc: OSError) -> str:
    try:
        manifests = [m.manifest_path for m in snapshot.manifests(io)]
    except OSError as list_exc:
        return f"manifest list unreadable: {snapshot.manifest_list} ({list_exc})"
    check.kinds.update({p: MANIFEST for p in manifests if p not in check.kinds})
    check.statuses.update(head_all(s3, [p for p in manifests if p not in check.statuses], workers))
    bad = [p for p in manifests if check.statuses[p].status != PRESENT]
    if bad:
        return f"{len(bad)} manifests {check.statuses[bad[0]].status}, e.g. {bad[0]}"
    return f"a manifest could not be read: {exc}"


def _report(
    request: ArchiveRequest,
    source: Table,
    metadata: TableMetadata | None,
    check: FileCheck,
    not_walked: dict[int, str],
) -> dict[str, Any]:
    counts = Counter(s.status for s in check.statuses.values())
    blocked_kinds = Counter(
        check.kinds.get(uri, "?") for uri, s in check.statuses.items() if s.status != PRESENT
    )
    report: dict[str, Any] = {
        "source": request.source,
        "archive": request.archive,
        "requested": request.requested,
        "metadata_file": request.metadata_file,
        "in_metadata_log": request.in_metadata_log,
        "skipped_log_entries": list(request.skipped),
        "metadata_readable": metadata is not None,
        "same_table_uuid": None if metadata is None else metadata.table_uuid == source.metadata.table_uuid,
        "snapshots": None if metadata is None else len(metadata.snapshots),
        "current_snapshot_id": None if metadata is None else metadata.current_snapshot_id,
        "walk_complete": metadata is not None and not not_walked,
        "snapshots_not_walked": len(not_walked),
        "not_walked_sample": [f"{sid}: {why}" for sid, why in sorted(not_walked.items())[:SAMPLE]],
        "files_checked": len(check.statuses),
        "by_kind": dict(sorted(Counter(check.kinds[uri] for uri in check.statuses).items())),
        **{status: counts.get(status, 0) for status in STATUSES},
        "restore_in_progress": sum(
            1 for s in check.statuses.values() if s.status == NEEDS_RESTORE and s.detail is not None
        ),
        "blocked_by_kind": dict(sorted(blocked_kinds.items())),
        "bytes_needing_restore": sum(
            s.size or 0 for s in check.statuses.values() if s.status == NEEDS_RESTORE
        ),
        "storage_classes": dict(
            sorted(Counter(s.storage_class for s in check.statuses.values() if s.storage_class).items())
        ),
        **{f"{status}_sample": check.uris(status)[:SAMPLE] for status in STATUSES},
    }
    report["ready"] = report["walk_complete"] and report["present"] == report["files_checked"]
    report["registered"] = False
    report["already_registered"] = request.already_registered
    report["summary"] = summarize(report)
    return report


def summarize(report: dict[str, Any]) -> str:
    name = report["metadata_file"].rsplit("/", 1)[-1]
    head = f"{report['source']} -> {report['archive']} ({report['requested']}: {name})"
    if report["registered"]:
        verdict = "registered"
    elif report["already_registered"]:
        verdict = "already registered, unchanged" if report["ready"] else "already registered, NOT readable"
    elif report["ready"]:
        verdict = "ready to register"
    else:
        verdict = "NOT registered"
    if not report["metadata_readable"]:
        return (
            f"{head}: {verdict}: the metadata file itself is {_status_of_metadata(report)}: "
            f"{report['metadata_file']}"
        )
    classes = ", ".join(f"{c} {n}" for c, n in report["storage_classes"].items())
    text = (
        f"{head}: {verdict}; {report['snapshots']} snapshots, {report['files_checked']} files checked: "
        f"{report['present']} present ({classes}), {report['missing']} missing, "
        f"{report['needs_restore']} need restore, {report['unreadable']} unreadable"
    )
    if not report["walk_complete"]:
        text += (
            f"; walk incomplete: {report['snapshots_not_walked']} snapshots not walked "
            "(their manifest list or manifests cannot be read; their data files were not checked)"
        )
    return text + blocking_files(report)


BLOCKING = {MISSING: "missing", NEEDS_RESTORE: "needing a restore", UNREADABLE: "unreadable"}


def blocking_files(report: dict[str, Any], limit: int = 5) -> str:
    """The files that keep the archive from being registered, by status (``limit`` of each named)."""
    parts = []
    for status, label in BLOCKING.items():
        sample = report.get(f"{status}_sample") or []
        if sample:
            more = report[status] - min(len(sample), limit)
            parts.append(f"{label}: {', '.join(sample[:limit])}{f' and {more} more' if more else ''}")
    return f"; files {'; '.join(parts)}" if parts else ""


def _status_of_metadata(report: dict[str, Any]) -> str:
    for status in (MISSING, NEEDS_RESTORE, UNREADABLE):
        if report[status]:
            return {MISSING: "missing", NEEDS_RESTORE: "archived (needs restore)", UNREADABLE: "unreadable"}[
                status
            ]
    return "unreadable"


# -- 3. register --------------------------------------------------------------------------------------


def register(catalog, request: ArchiveRequest, report: dict[str, Any]) -> dict[str, Any]:
    """Register the archive table on the checked metadata file; a no-op when it already is. Returns the
    report, updated. Raises ``FilesNotReadyError`` when the check did not find every file present, and
    ``ArchiveError`` when the name was taken (by another location) since the request was prepared."""
    if not report.get("ready"):
        raise FilesNotReadyError(f"not registering {request.archive}: {report.get('summary')}")
    if report.get("metadata_file") != request.metadata_file:
        raise FilesNotReadyError(
            f"the check was for {report.get('metadata_file')}, the request is for {request.metadata_file}"
        )
    report = dict(report)
    existing = registered_location(catalog, request.archive)
    if existing is None:
        try:
            table = catalog.register_table(request.archive, request.metadata_file)
        except TableAlreadyExistsError:  # created between the look-up and now
            existing = registered_location(catalog, request.archive)
        else:
            report["registered"] = True
            report["archive_metadata_location"] = table.metadata_location
            log.info("registered %s on %s", request.archive, request.metadata_file)
    if not report["registered"]:
        if existing != request.metadata_file:
            raise ArchiveError(
                f"{request.archive} already exists with metadata {existing}, not {request.metadata_file}"
            )
        report["already_registered"] = True
        report["archive_metadata_location"] = existing
        log.info("%s already registered on %s: unchanged", request.archive, existing)
    report["summary"] = summarize(report)
    return report


def archive_register(
    catalog, s3, source_identifier: str, metadata_file: Any, archive_table: Any, workers: int = 32
) -> dict[str, Any]:
    """Prepare, check and, when every file is present, register. Returns the report (``registered``
    false and the counts when files are missing or archived)."""
    request = prepare(catalog, source_identifier, metadata_file, archive_table)
    report = check_files(catalog, s3, request, workers).report
    return register(catalog, request, report) if report["ready"] else report


def release_from_lifecycle(
    catalog, s3, archive_identifier: str, delete_tag_key: str, workers: int = 32
) -> int:
    """Remove the source table's delete tag from every file the archive table reaches, so the lifecycle
    rule no longer archives or expires them (the source's maintenance protects them from then on: see
    ``maintenance.archive_table_files``). Returns the number of objects untagged."""
    archive = catalog.load_table(archive_identifier)
    files = reachable_files(FileIndex(archive.io), archive.metadata, archive.metadata_location)
    untagged = objects.remove_tag(s3, sorted(files), delete_tag_key, workers)
    log.info(
        "%s: removed %s from %d of its %d files", archive_identifier, delete_tag_key, untagged, len(files)
    )
    return untagged


def tables_sharing_files(catalog, table: Table) -> dict[str, str]:
    """The other Iceberg tables of the table's Glue database whose metadata file lies in its metadata
    folder: archive tables registered on its older metadata files (or, for an archive table, its source).
    They reach files under the same location that this table's metadata may no longer reach; both
    maintenance (which never touches their files) and GDPR erasure (which covers them) look for them.
    Returns ``database.table`` -> its metadata location (read from Glue, without opening the file)."""
    glue = getattr(catalog, "glue", None)
    if glue is None:
        return {}
    database, name = table.name()[-2], table.name()[-1]
    folder = metadata_dir(table)
    found = {}
    for page in glue.get_paginator("get_tables").paginate(DatabaseName=database):
        for glue_table in page["TableList"]:
            location = (glue_table.get("Parameters") or {}).get("metadata_location", "")
            if glue_table["Name"] != name and location.startswith(folder):
                found[f"{database}.{glue_table['Name']}"] = location
    return dict(sorted(found.items()))
