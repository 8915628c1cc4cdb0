"""What a Hudi table is on storage: its timeline, active and archived, and the names of its data files.

Read with ``Storage`` (``s3://`` or ``file://``), no Hudi library: the GDPR delete job
(``spark_jobs/gdpr_hudi_delete.py``) lists every commit to verify by time travel, finds the commit its
delete made and the file groups it wrote, and the log files to search. Layouts:

- Hudi 0.x: ``.hoodie/<instant>.<action>`` (commit metadata JSON);
- Hudi 1.x: ``.hoodie/timeline/<instant>_<completion>.<action>`` (metadata in Avro), and archived
  instants in an LSM tree of Parquet files under ``.hoodie/timeline/history`` whose live files the
  latest manifest (``manifest_<_version_>``) lists;
- base files ``<file id>_<write token>_<instant>.parquet``; log files
  ``.<file id>_<instant>.log.<version>_<write token>`` (1.x names a log file for the delta commit that
  wrote it); ``.hoodie/`` also holds the metadata table, which is not data.

Pure Python (``archived_commits`` takes a Spark session to read the history's Parquet); shipped in
spark_jobs.zip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from spark_jobs.common.storage import Storage, join

HOODIE_DIR = ".hoodie"
# The commit actions that change data; clean, rollback, savepoint ... do not.
DATA_ACTIONS = ("commit", "deltacommit", "replacecommit")
_INSTANT = r"(\d{14,17})"
_V0_COMPLETED = re.compile(rf"^{_INSTANT}\.({'|'.join(DATA_ACTIONS)})$")
_V1_COMPLETED = re.compile(rf"^{_INSTANT}_{_INSTANT}\.({'|'.join(DATA_ACTIONS)})$")
BASE_FILE = re.compile(rf"^(?P<file_id>[^_/]+)_[^_/]+_{_INSTANT}\.parquet$")
LOG_FILE = re.compile(rf"^\.(?P<file_id>[^_/]+)_{_INSTANT}\.log\.\d+(_[^/]*)?$")


# -- the timeline --------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Commit:
    """A completed data commit, active or archived. ``completed`` is the completion time (1.x only);
    ``name`` the file's path under ``.hoodie/`` (archived: the history folder)."""

    instant: str
    action: str
    completed: str | None
    name: str

    @property
    def as_of(self) -> str:
        """The time to travel to so that this commit is included: its completion time where the timeline
        records one (1.x), else its instant."""
        return self.completed or self.instant


HISTORY = "timeline/history"


def parse_timeline(hoodie_names: Iterable[str], timeline_names: Iterable[str] = ()) -> list[Commit]:
    """Completed commits from the names in ``.hoodie/`` (0.x: ``<instant>.<action>``) and in
    ``.hoodie/timeline/`` (1.x: ``<instant>_<completion>.<action>``); requested and inflight files,
    cleans, rollbacks and the archive are ignored."""
    commits = []
    for name in hoodie_names:
        match = _V0_COMPLETED.match(name)
        if match:
            commits.append(Commit(match.group(1), match.group(2), None, name))
    for name in timeline_names:
        match = _V1_COMPLETED.match(name)
        if match:
            commits.append(Commit(match.group(1), match.group(3), match.group(2), f"timeline/{name}"))
    return sorted(commits)


def completed_commits(storage: Storage, location: str) -> list[Commit]:
    """The completed data commits on the active timeline."""
    hoodie = join(location, HOODIE_DIR)
    names = storage.list_children(hoodie)
    timeline = storage.list_children(join(hoodie, "timeline")) if "timeline" in names else []
    return parse_timeline(names, timeline)


def history_files(storage: Storage, location: str) -> list[str]:
    """The Parquet files of Hudi 1.x's archived timeline (an LSM tree under ``.hoodie/timeline/history``):
    the ones the latest manifest (``manifest_<_version_>``) lists; older layers may linger until Hudi
    deletes them."""
    history = join(location, HOODIE_DIR, HISTORY)
    if "_version_" not in storage.list_children(history):
        return []
    version = storage.read_bytes(join(history, "_version_")).decode("utf-8").strip()
    manifest = json.loads(storage.read_bytes(join(history, f"manifest_{version}")))
    return [join(history, entry["fileName"]) for entry in manifest.get("files", [])]


def archived_commits(spark: Any, storage: Storage, location: str) -> list[Commit]:
    """The completed data commits Hudi 1.x archived (0.x archives are not read)."""
    files = history_files(storage, location)
    if not files:
        return []
    rows = spark.read.parquet(*files).select("instantTime", "completionTime", "action").distinct().collect()
    return sorted(
        Commit(row.instantTime, row.action, row.completionTime, HISTORY)
        for row in rows
        if row.action in DATA_ACTIONS
    )


def all_commits(spark: Any, storage: Storage, location: str) -> list[Commit]:
    """Archived and active completed data commits, oldest first."""
    active = completed_commits(storage, location)
    seen = {commit.instant for commit in active}
    archived = [c for c in archived_commits(spark, storage, location) if c.instant not in seen]
    return sorted([*archived, *active])


def commit_metadata(storage: Storage, location: str, commit: Commit) -> dict[str, Any] | None:
    """The commit file's JSON (Hudi 0.x); None where it is not JSON (1.x writes Avro) or unreadable."""
    try:
        metadata = json.loads(storage.read_bytes(join(location, HOODIE_DIR, commit.name)))
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) else None


def delete_commit(
    storage: Storage, location: str, before: Iterable[Commit], after: Sequence[Commit], table_type: str
) -> Commit | None:
    """The commit the delete made: new since ``before``, of the table type's write action, preferring the
    one whose metadata says DELETE (another writer may have committed meanwhile; a merge-on-read table
    also gains the compaction's commit)."""
    seen = {commit.instant for commit in before}
    action = "deltacommit" if table_type == "MERGE_ON_READ" else "commit"
    new = [commit for commit in after if commit.instant not in seen and commit.action == action]
    for commit in new:
        metadata = commit_metadata(storage, location, commit)
        if metadata and metadata.get("operationType") == "DELETE":
            return commit
    return new[0] if new else None


# -- data files --------------------------------------------------------------------------------------------


def data_files(storage: Storage, location: str) -> list[str]:
    """URIs of every file under the table but ``.hoodie/`` (base files, log files, partition metadata)."""
    root = location.rstrip("/") + "/"
    return [uri for uri, _ in storage.list_files(root) if not uri[len(root) :].startswith(HOODIE_DIR + "/")]


def file_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def log_files(storage: Storage, location: str) -> list[str]:
    return [uri for uri in data_files(storage, location) if LOG_FILE.match(file_name(uri))]


def files_of_commit(storage: Storage, location: str, instant: str) -> int:
    """File groups with a base or log file named for ``instant``: what that commit wrote (a copy-on-write
    delete: the files rewritten without the rows; merge-on-read: the files given a delete block)."""
    groups = set()
    for uri in data_files(storage, location):
        name = file_name(uri)
        match = BASE_FILE.match(name) or LOG_FILE.match(name)
        if match and match.group(2) == instant:
            groups.add((uri.rsplit("/", 1)[0], match.group("file_id")))
    return len(groups)
