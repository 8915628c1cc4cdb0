"""S3 operations on many objects: listings of objects and of every object version under a location,
batched deletes of objects and of versions, parallel tagging that keeps existing tags, the lifecycle rule
for the delete tag (merged with the bucket's other rules). Iceberg maintenance and GDPR erasure use them.

S3 limits that shape this (field notes): DeleteObjects takes at most 1,000 keys; there is no batch tagging
call and PutObjectTagging replaces the whole tag set (so read, merge, write; an object holds at most 10
tags); PutBucketLifecycleConfiguration replaces the whole configuration.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlparse

from botocore.exceptions import ClientError

DELETE_BATCH = 1000
MAX_TAGS_PER_OBJECT = 10


class ObjectActionError(RuntimeError):
    """Some objects could not be deleted or tagged; ``failures`` maps URI -> reason."""

    def __init__(self, what: str, failures: dict[str, str]):
        sample = "; ".join(f"{uri}: {reason}" for uri, reason in list(failures.items())[:5])
        super().__init__(f"{what} failed for {len(failures)} objects, e.g. {sample}")
        self.failures = failures


@dataclass(frozen=True)
class S3Object:
    uri: str
    size: int
    last_modified: datetime


@dataclass
class CallCounter:
    """S3 calls by operation name (thread-safe), for the run report and the benchmark."""

    counts: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, operation: str, n: int = 1) -> None:
        with self._lock:
            self.counts[operation] += n

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def split_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a", "s3n") or not parsed.netloc:
        raise ValueError(f"not an S3 URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def list_objects(s3, location: str, calls: CallCounter | None = None) -> dict[str, S3Object]:
    """Every object under ``location`` (a table location), by URI."""
    bucket, prefix = split_uri(location.rstrip("/") + "/")
    found: dict[str, S3Object] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        if calls:
            calls.add("ListObjectsV2")
        for obj in page.get("Contents", []):
            uri = f"s3://{bucket}/{obj['Key']}"
            found[uri] = S3Object(uri, obj["Size"], obj["LastModified"])
    return found


def delete_objects(s3, uris: Iterable[str], calls: CallCounter | None = None) -> int:
    """Delete with DeleteObjects, 1,000 keys a call per bucket; returns the number deleted. Keys that do
    not exist count as deleted (S3 says so too), so a rerun is harmless; any other error raises after
    every batch has been tried."""
    by_bucket: dict[str, list[str]] = {}
    for uri in uris:
        bucket, key = split_uri(uri)
        by_bucket.setdefault(bucket, []).append(key)
    deleted, failures = 0, {}
    for bucket, keys in by_bucket.items():
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            response = s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            if calls:
                calls.add("DeleteObjects")
            errors = response.get("Errors", [])
            for error in errors:
                failures[f"s3://{bucket}/{error['Key']}"] = f"{error.get('Code')}: {error.get('Message')}"
            deleted += len(batch) - len(errors)
    if failures:
        raise ObjectActionError("DeleteObjects", failures)
    return deleted


def bucket_is_versioned(s3, bucket: str) -> bool:
    """Versioning on, or suspended (objects written while it was on still have their versions)."""
    return s3.get_bucket_versioning(Bucket=bucket).get("Status") in ("Enabled", "Suspended")


def _versions_of(s3, uris: Iterable[str]) -> dict[str, list[dict]]:
    """Bucket -> every version and delete marker of the ``uris`` (``{"Key", "VersionId"}``). One listing
    per folder holding them, not one per object: a table's files share a few partition folders."""
    wanted: dict[str, set[str]] = {}
    for uri in uris:
        bucket, key = split_uri(uri)
        wanted.setdefault(bucket, set()).add(key)
    found: dict[str, list[dict]] = {}
    for bucket, keys in wanted.items():
        if not bucket_is_versioned(s3, bucket):
            continue
        for folder in sorted({key.rsplit("/", 1)[0] + "/" if "/" in key else "" for key in keys}):
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=folder):
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    if entry["Key"] in keys:
                        found.setdefault(bucket, []).append(
                            {"Key": entry["Key"], "VersionId": entry["VersionId"]}
                        )
    return found


def delete_all_versions(s3, uris: Iterable[str]) -> int:
    """Delete every version and delete marker of ``uris`` in versioned buckets (a plain delete there only
    hides the bytes behind a delete marker). Returns the number of versions deleted; 0 when unversioned."""
    return sum(_delete_versions(s3, bucket, versions) for bucket, versions in _versions_of(s3, uris).items())


def _delete_versions(s3, bucket: str, versions: list[dict]) -> int:
    deleted, failures = 0, {}
    for start in range(0, len(versions), DELETE_BATCH):
        batch = versions[start : start + DELETE_BATCH]
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors", [])
        for error in errors:
            failures[f"s3://{bucket}/{error['Key']}?versionId={error.get('VersionId')}"] = (
                f"{error.get('Code')}: {error.get('Message')}"
            )
        deleted += len(batch) - len(errors)
    if failures:
        raise ObjectActionError("DeleteObjects (versions)", failures)
    return deleted


def delete_noncurrent_versions(s3, location: str) -> int:
    """In a versioned bucket, delete every noncurrent version and delete marker under ``location``: the
    bytes of files a table format deleted (Hudi's cleaner, Iceberg's expiry on EMR) whose names this
    process does not know. Current objects are left alone. Returns the number deleted."""
    return delete_versions(s3, [v for v in list_versions(s3, location) if not v.latest or v.delete_marker])


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an object, or a delete marker. ``version_id`` is None in an unversioned bucket,
    where the object is its only version."""

    bucket: str
    key: str
    version_id: str | None
    size: int
    latest: bool
    delete_marker: bool = False

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def label(self) -> str:
        """The URI, with the version id when there is one: how reports name one version."""
        return self.uri + (f"?versionId={self.version_id}" if self.version_id else "")


def list_versions(s3, location: str, calls: CallCounter | None = None) -> list[ObjectVersion]:
    """Every version and delete marker of every object under ``location``; in an unversioned bucket,
    every object (its only version)."""
    bucket, prefix = split_uri(location.rstrip("/") + "/")
    if not bucket_is_versioned(s3, bucket):
        return [
            ObjectVersion(bucket, split_uri(o.uri)[1], None, o.size, True)
            for o in list_objects(s3, location, calls).values()
        ]
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        if calls:
            calls.add("ListObjectVersions")
        found += [
            ObjectVersion(bucket, v["Key"], v["VersionId"], v["Size"], v["IsLatest"])
            for v in page.get("Versions", [])
        ]
        found += [
            ObjectVersion(bucket, m["Key"], m["VersionId"], 0, m["IsLatest"], delete_marker=True)
            for m in page.get("DeleteMarkers", [])
        ]
    return found


def delete_versions(s3, versions: Iterable[ObjectVersion]) -> int:
    """Delete exactly these versions (and delete markers); an entry without a version id deletes the
    object of an unversioned bucket. Returns the number deleted."""
    by_bucket: dict[str, list[dict]] = {}
    for v in versions:
        entry = {"Key": v.key} | ({"VersionId": v.version_id} if v.version_id else {})
        by_bucket.setdefault(v.bucket, []).append(entry)
    return sum(_delete_versions(s3, bucket, entries) for bucket, entries in by_bucket.items())


def existing_versions(s3, uris: Sequence[str]) -> list[str]:
    """Those of ``uris`` still readable in any form: the current object, or (versioned buckets) any
    version or delete marker left."""
    present = set()
    for uri in uris:
        bucket, key = split_uri(uri)
        try:
            s3.head_object(Bucket=bucket, Key=key)
            present.add(uri)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                raise
    for bucket, versions in _versions_of(s3, uris).items():
        present.update(f"s3://{bucket}/{v['Key']}" for v in versions)
    return sorted(present)


@dataclass
class TagResult:
    tagged: int = 0
    already_tagged: int = 0
    missing: int = 0


def tag_objects(
    s3, uris: Sequence[str], key: str, value: str, workers: int = 32, calls: CallCounter | None = None
) -> TagResult:
    """Add ``key=value`` to each object's tags, keeping the tags it has; objects that carry it already are
    not written again (a rerun makes only reads), missing objects are counted, not errors."""
    result = TagResult()
    lock = threading.Lock()
    failures: dict[str, str] = {}

    def tag_one(uri: str) -> None:
        outcome = "failed"
        try:
            outcome = _merge_tag(s3, uri, key, value, calls)
        except (ClientError, ValueError) as exc:  # recorded, raised together once every object was tried
            failures[uri] = str(exc)
        with lock:
            if outcome == "tagged":
                result.tagged += 1
            elif outcome == "already":
                result.already_tagged += 1
            elif outcome == "missing":
                result.missing += 1

    if workers <= 1:
        for uri in uris:
            tag_one(uri)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(tag_one, uris))
    if failures:
        raise ObjectActionError("tagging", failures)
    return result


def _merge_tag(s3, uri: str, key: str, value: str, calls: CallCounter | None) -> str:
    bucket, object_key = split_uri(uri)
    try:
        tags = s3.get_object_tagging(Bucket=bucket, Key=object_key)["TagSet"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return "missing"
        raise
    finally:
        if calls:
            calls.add("GetObjectTagging")
    current = {tag["Key"]: tag["Value"] for tag in tags}
    if current.get(key) == value:
        return "already"
    current[key] = value
    if len(current) > MAX_TAGS_PER_OBJECT:
        raise ValueError(f"would carry {len(current)} tags, S3 allows {MAX_TAGS_PER_OBJECT}")
    s3.put_object_tagging(
        Bucket=bucket,
        Key=object_key,
        Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in current.items()]},
    )
    if calls:
        calls.add("PutObjectTagging")
    return "tagged"


def remove_tag(s3, uris: Sequence[str], key: str, workers: int = 32, calls: CallCounter | None = None) -> int:
    """Remove the tag ``key`` from each object that carries it (keeping its other tags); returns how many
    objects changed. Objects without it, or missing, are left alone."""
    changed = 0
    lock = threading.Lock()

    def untag_one(uri: str) -> None:
        nonlocal changed
        bucket, object_key = split_uri(uri)
        try:
            tags = s3.get_object_tagging(Bucket=bucket, Key=object_key)["TagSet"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return
            raise
        finally:
            if calls:
                calls.add("GetObjectTagging")
        kept = [tag for tag in tags if tag["Key"] != key]
        if len(kept) == len(tags):
            return
        if kept:
            s3.put_object_tagging(Bucket=bucket, Key=object_key, Tagging={"TagSet": kept})
        else:
            s3.delete_object_tagging(Bucket=bucket, Key=object_key)
        if calls:
            calls.add("PutObjectTagging" if kept else "DeleteObjectTagging")
        with lock:
            changed += 1

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(untag_one, uris))
    return changed


def lifecycle_rule(
    rule_id: str,
    prefix: str,
    tag_key: str,
    tag_value: str,
    transition_days: int,
    storage_class: str,
    expiration_days: int,
) -> dict:
    """A rule for objects under ``prefix`` that carry the tag: transition, then expiry."""
    return {
        "ID": rule_id,
        "Status": "Enabled",
        "Filter": {"And": {"Prefix": prefix, "Tags": [{"Key": tag_key, "Value": tag_value}]}},
        "Transitions": [{"Days": transition_days, "StorageClass": storage_class}],
        "Expiration": {"Days": expiration_days},
    }


def ensure_lifecycle_rule(s3, bucket: str, rule: dict, calls: CallCounter | None = None) -> str:
    """Make the bucket's rule ``rule["ID"]`` equal to ``rule``, keeping every other rule; returns
    ``created``, ``updated`` or ``unchanged`` (nothing written)."""
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    finally:
        if calls:
            calls.add("GetBucketLifecycleConfiguration")
    current = next((r for r in rules if r.get("ID") == rule["ID"]), None)
    if current is not None and _same_rule(current, rule):
        return "unchanged"
    merged = [r for r in rules if r.get("ID") != rule["ID"]] + [rule]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": merged})
    if calls:
        calls.add("PutBucketLifecycleConfiguration")
    return "created" if current is None else "updated"


def _same_rule(current: dict, wanted: dict) -> bool:
    # S3 echoes rules back with defaults filled in (e.g. an empty NoncurrentVersion section): compare the
    # fields this module sets.
    return all(current.get(key) == value for key, value in wanted.items())
