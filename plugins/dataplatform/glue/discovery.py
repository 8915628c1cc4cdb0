"""Find partition prefixes in S3.

Listing is delimiter-based and goes one directory level at a time, so the cost is one (paginated)
ListObjectsV2 call per directory rather than one page per 1,000 objects: a table of 10,000 partitions with
millions of files is still listed in a few hundred calls. Prefixes that do not fit the layout are reported
and never descended into.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse

from dataplatform.glue.layout import InvalidPartitionPath, PartitionLayout, PartitionValues

log = logging.getLogger(__name__)

# Concurrent ListObjectsV2 calls per discovery; S3 serves 5,500 reads a second per prefix.
LIST_CONCURRENCY = 16


@dataclass
class Discovery:
    """What a listing found: valid partitions (values -> relative path) and rejected prefixes."""

    partitions: dict[PartitionValues, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # relative prefix -> reason
    list_calls: int = 0


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b/")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def list_level(s3, bucket: str, prefix: str) -> tuple[list[str], bool, int]:
    """Child "directories" directly under ``prefix`` (names without slashes), whether objects sit
    directly under it, and how many ListObjectsV2 calls that took."""
    children, has_objects, calls = [], False, 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        calls += 1
        children.extend(
            common["Prefix"][len(prefix) :].rstrip("/") for common in page.get("CommonPrefixes", [])
        )
        has_objects = has_objects or bool(page.get("Contents"))
    return children, has_objects, calls


def discover(s3, location: str, layout: PartitionLayout, concurrency: int = LIST_CONCURRENCY) -> Discovery:
    """Walk the table location level by level and return every partition prefix that fits the layout.

    The directories of one level are listed concurrently (boto3 clients are thread-safe): each call is
    latency-bound, so a day-by-hour table of 417 days takes 417 calls' worth of round trips in parallel,
    not in series."""
    bucket, root = split_s3_uri(location)
    found = Discovery()
    frontier = [""]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-list") as pool:
        for level in range(layout.depth):
            listings = pool.map(lambda relative: list_level(s3, bucket, root + relative), frontier)
            next_frontier = []
            for relative, (children, has_objects, calls) in zip(frontier, listings, strict=True):
                found.list_calls += calls
                if not children and has_objects and relative:
                    found.invalid[relative] = (
                        f"holds files but no {layout.segments[level].template!r} level below it"
                    )
                next_frontier.extend(_valid_children(layout, level, relative, children, found))
            frontier = next_frontier
            log.info("level %d (%s): %d prefixes", level + 1, layout.segments[level].template, len(frontier))
    for path in frontier:
        found.partitions[layout.parse(path)] = path
    return found


def _valid_children(
    layout: PartitionLayout, level: int, relative: str, children: list[str], found: Discovery
):
    for child in children:
        if layout.is_ignored(child):
            continue
        path = f"{relative}{child}/"
        try:
            layout.parse_segment(level, child)
        except InvalidPartitionPath as exc:
            found.invalid[path] = str(exc)
            continue
        yield path


def present_in_s3(
    s3, location: str, layout: PartitionLayout, candidates: Iterable[PartitionValues]
) -> Discovery:
    """Which of the candidate partitions have data: one delimiter listing per distinct parent directory
    (a day of hourly partitions is one call), instead of one call per partition."""
    bucket, root = split_s3_uri(location)
    by_parent: dict[str, list[tuple[PartitionValues, str]]] = defaultdict(list)
    for values in candidates:
        path = layout.render(values)
        parent, _, leaf = path.rstrip("/").rpartition("/")
        by_parent[f"{parent}/" if parent else ""].append((values, leaf))
    found = Discovery()
    for parent, wanted in by_parent.items():
        children, _, calls = list_level(s3, bucket, root + parent)
        found.list_calls += calls
        existing = set(children)
        for values, leaf in wanted:
            if leaf in existing:
                found.partitions[values] = f"{parent}{leaf}/"
    return found


SUCCESS_MARKER = "_SUCCESS"


def success_marker_keys(location: str, layout: PartitionLayout, partitions: Iterable[PartitionValues]):
    """``(bucket, [key of each partition's _SUCCESS marker])``."""
    bucket, root = split_s3_uri(location)
    return bucket, [f"{root}{layout.render(values)}{SUCCESS_MARKER}" for values in partitions]


def missing_objects(s3, bucket: str, keys: Iterable[str]) -> list[str]:
    """The keys that do not exist (one HeadObject each)."""
    missing = []
    for key in keys:
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            missing.append(key)
    return missing
