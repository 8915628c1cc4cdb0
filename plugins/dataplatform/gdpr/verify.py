"""Verification of an erasure that owes nothing to the erasure's own bookkeeping: what is in S3 is read,
not what the erasure says it deleted, nor only what the table's metadata reaches.

Every object and every object version under the table location is listed, and each is checked
(``subject_files``): each Parquet data file, reachable or not, for rows of the subjects (footer
statistics first; the subject columns are read only when they leave room for a subject); each manifest,
DELETED entries included, for a subject id in the bounds of a subject column; each manifest list for one
in an identity partition's summary; metadata JSON and statistics files for the id's bytes. Files the
table reaches outside its location (``write.data.path``, ``add_files`` from elsewhere) are checked too.
A version that cannot be decoded fails the verification (it cannot be vouched for). The result says how
many versions were listed and how many objects and bytes were read.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.partitioning import PartitionSpec
from pyiceberg.table import Table

from dataplatform.gdpr import subject_files
from dataplatform.gdpr.iceberg_erasure import SubjectFilter
from dataplatform.gdpr.subject_files import ReadCounter
from dataplatform.iceberg.files import FileIndex, reachable_files
from dataplatform.s3 import objects
from dataplatform.s3.objects import ObjectVersion, split_uri

log = logging.getLogger(__name__)


@dataclass
class Verification:
    passed: bool
    versions_listed: int
    objects_read: int
    bytes_read: int
    checked: dict[str, int] = field(default_factory=dict)
    # Version label (URI, with the version id) -> rows (data files) or entries (metadata) naming a subject.
    holding: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "method": "every object version under the table location read from S3",
            "versions_listed": self.versions_listed,
            "objects_read": self.objects_read,
            "bytes_read": self.bytes_read,
            "checked": self.checked,
            "holding_subjects": self.holding,
            "unreadable": self.unreadable,
        }


def verify_location(
    s3: Any,
    location: str,
    subjects: SubjectFilter,
    workers: int = 8,
    specs: dict[int, PartitionSpec] | None = None,
    also: list[ObjectVersion] | None = None,
) -> Verification:
    """Check every object version under ``location`` (and the versions ``also`` names) for the subjects."""
    versions = objects.list_versions(s3, location)
    todo = [
        v for v in versions if not v.delete_marker and subject_files.kind_of(v.key) != subject_files.OTHER
    ] + list(also or [])
    counter = ReadCounter()

    def check(version: ObjectVersion) -> tuple[int, str | None]:
        try:
            return subject_files.subject_hits(s3, version, subjects, counter, specs), None
        except Exception as exc:
            return 0, type(exc).__name__

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(check, todo))
    holding = {v.label: n for v, (n, _) in zip(todo, results, strict=True) if n}
    unreadable = {v.label: error for v, (_, error) in zip(todo, results, strict=True) if error}
    verification = Verification(
        passed=not holding and not unreadable,
        versions_listed=len(versions),
        objects_read=counter.objects,
        bytes_read=counter.bytes,
        checked=dict(sorted(Counter(subject_files.kind_of(v.key) for v in todo).items())),
        holding=dict(sorted(holding.items())),
        unreadable=dict(sorted(unreadable.items())),
    )
    log.info(
        "%s: verification %s: %d versions listed, %d checked %s, %d objects and %d bytes read; %d hold "
        "the subjects, %d unreadable",
        location,
        "passed" if verification.passed else "FAILED",
        len(versions),
        len(todo),
        verification.checked,
        counter.objects,
        counter.bytes,
        len(holding),
        len(unreadable),
    )
    return verification


def verify_iceberg_table(table: Table, s3: Any, subjects: SubjectFilter, workers: int = 8) -> Verification:
    """``verify_location`` on the table's location, plus the files its metadata reaches elsewhere."""
    table = table.refresh()
    location = table.location().rstrip("/") + "/"
    reached = reachable_files(FileIndex(table.io), table.metadata, table.metadata_location)
    elsewhere = [
        ObjectVersion(*split_uri(path), None, ref.size or 0, True)
        for path, ref in reached.items()
        if not path.startswith(location)
    ]
    return verify_location(s3, location, subjects, workers, table.specs(), elsewhere)
