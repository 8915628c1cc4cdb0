"""The copies of an Iceberg table's data that its metadata no longer reaches, and their erasure.

A table's location holds more than its metadata reaches: files that maintenance left in place with
``unreferenced.action: tag`` (soft-deleted, expiring after months), files of a writer that failed before
its commit, and, in a versioned bucket, the noncurrent versions of any object. The delete and the purge
(``iceberg_erasure``) only see what the metadata reaches; this module looks at everything else:

1. every object and object version under the location is listed (``s3.objects.list_versions``);
2. the candidates are the versions that no table sharing the location reaches (the table itself and the
   archive tables registered on its older metadata, ``archive.tables_sharing_files``: their files are
   theirs to erase), and every noncurrent version;
3. each candidate is read (``subject_files``: Parquet footers first, the subject columns only when the
   statistics leave room for a subject; manifests decoded for subject ids in their bounds);
4. a candidate that holds a subject is deleted for real: every version and delete marker of an object no
   table reaches, or the one noncurrent version of an object that is still reached. Freshly loaded
   metadata is checked just before the delete: a file a writer committed meanwhile is left alone.

The URIs deleted go to the request's audit record; subject ids never leave this module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.table import Table

from dataplatform.gdpr import subject_files
from dataplatform.gdpr.iceberg_erasure import ErasureError, SubjectFilter
from dataplatform.gdpr.subject_files import ReadCounter
from dataplatform.iceberg.archive import tables_sharing_files
from dataplatform.iceberg.files import FileIndex, reachable_files
from dataplatform.s3 import objects
from dataplatform.s3.objects import ObjectVersion

log = logging.getLogger(__name__)


@dataclass
class CopiesResult:
    """What the sweep found and did. ``deleted``: the objects (URIs) whose versions held a subject and
    were deleted, every version of each."""

    versions_listed: int = 0
    candidates: int = 0
    objects_read: int = 0
    bytes_read: int = 0
    deleted: list[str] = field(default_factory=list)
    versions_deleted: int = 0
    left_referenced: list[str] = field(default_factory=list)

    def as_details(self) -> dict[str, Any]:
        return {
            "unreachable_versions_listed": self.versions_listed,
            "unreachable_candidates": self.candidates,
            "unreachable_objects_read": self.objects_read,
            "unreachable_bytes_read": self.bytes_read,
            "unreachable_files_deleted": self.deleted,
            "unreachable_versions_deleted": self.versions_deleted,
        }


def unconfigured_sharing_tables(catalog: Any, table: Table, configured: Iterable[str]) -> list[str]:
    """Archive tables registered on the table's older metadata (or the source, for an archive) that are
    not GDPR datasets themselves: their snapshots still hold what the table's erasure removes."""
    wanted = set(configured)
    return [identifier for identifier in tables_sharing_files(catalog, table) if identifier not in wanted]


def refuse_unconfigured_sharing_tables(catalog: Any, table: Table, configured: Iterable[str]) -> None:
    """Before anything changes: an archive table registered from this table that no dataset covers
    would keep the subjects' rows (and its files must not be deleted under it)."""
    missing = unconfigured_sharing_tables(catalog, table, configured)
    if missing:
        raise ErasureError(
            f"{'.'.join(table.name())}: archive tables {', '.join(missing)} share its files (registered by "
            "iceberg_archive_register) and are not GDPR datasets: add each to gdpr.datasets (the erasure "
            "then covers it) or drop it; nothing was changed"
        )


def files_of_sharing_tables(catalog: Any, table: Table) -> set[str]:
    """Every file the tables sharing the table's location reach (all their snapshots, metadata files and
    their logs). One that cannot be read stops the erasure: its files are unknown."""
    reached: set[str] = set()
    for identifier in tables_sharing_files(catalog, table):
        try:
            other = catalog.load_table(identifier)
        except (OSError, ValueError) as exc:
            raise ErasureError(
                f"{'.'.join(table.name())}: cannot read {identifier}, which shares its files ({exc}); "
                "restore its metadata or drop it, then rerun"
            ) from None
        reached |= set(reachable_files(FileIndex(other.io), other.metadata, other.metadata_location))
    return reached


def reached_by_sharing_tables(catalog: Any, table: Table) -> set[str]:
    """Every file the table or a table sharing its location reaches."""
    own = reachable_files(FileIndex(table.io), table.metadata, table.metadata_location)
    return set(own) | files_of_sharing_tables(catalog, table)


def candidates(versions: list[ObjectVersion], reached: set[str]) -> list[ObjectVersion]:
    """Versions no sharing table reaches, and noncurrent versions: the copies the metadata does not
    account for (objects that are never read, like Hudi's or unknown files, are left out)."""
    return [
        v
        for v in versions
        if not v.delete_marker
        and subject_files.kind_of(v.key) != subject_files.OTHER
        and (v.uri not in reached or not v.latest)
    ]


def purge_unreachable_copies(
    table: Table, catalog: Any, s3: Any, subjects: SubjectFilter, workers: int = 8
) -> CopiesResult:
    """Find and delete the copies of the subjects' data under the table location that no table's
    metadata reaches (see the module docstring)."""
    versions = objects.list_versions(s3, table.location())
    todo = candidates(versions, reached_by_sharing_tables(catalog, table))
    counter = ReadCounter()
    specs = table.specs()
    with ThreadPoolExecutor(workers) as pool:
        hits = list(pool.map(lambda v: subject_files.subject_hits(s3, v, subjects, counter, specs), todo))
    holding = [v for v, n in zip(todo, hits, strict=True) if n]
    result = CopiesResult(len(versions), len(todo), counter.objects, counter.bytes)
    if not holding:
        log.info(
            "%s: %d copies the metadata does not reach, none holds the subjects", _name(table), len(todo)
        )
        return result
    # Fresh metadata just before the delete: a writer may have committed one of these files meanwhile.
    reached_now = reached_by_sharing_tables(catalog, table.refresh())
    doomed: dict[str, ObjectVersion] = {}
    for version in holding:
        if version.uri in reached_now and version.latest:
            result.left_referenced.append(version.uri)
        elif version.uri in reached_now:
            doomed[version.label] = version
        else:  # no table reaches the object: every version of it goes, delete markers included
            doomed.update({v.label: v for v in versions if v.uri == version.uri})
    result.versions_deleted = objects.delete_versions(s3, doomed.values())
    result.deleted = sorted({v.uri for v in doomed.values()})
    log.info(
        "%s: %d of %d copies the metadata does not reach held the subjects: deleted %d versions of %d "
        "objects (%d objects, %d bytes read)",
        _name(table),
        len(holding),
        len(todo),
        result.versions_deleted,
        len(result.deleted),
        result.objects_read,
        result.bytes_read,
    )
    return result


def _name(table: Table) -> str:
    return ".".join(table.name())
