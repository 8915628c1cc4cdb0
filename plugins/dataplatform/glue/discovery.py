"""Find partition prefixes in S3, and whether they hold data.

Listing goes one directory level at a time, so the cost follows the number of directories, not of files.
The levels above the partitions are listed with a delimiter (one paginated ListObjectsV2 call per
directory). The partitions' parents are listed without one, so that the same calls also say which
partitions hold data and which hold only writer leftovers (``_SUCCESS``, ``_temporary/``, ``$folder$``
markers): those are empty, not partitions. That listing skips, with ``StartAfter``, the rest of every
partition once a data file is seen (and the rest of a ``_temporary/``-style directory), so a partition of
a few files costs a share of one call and one of a million data files one call, not a page per 1,000
files (only leftover *files* lying directly in a partition, before its first data file, are paged past).
Prefixes that do not fit the layout are reported and never descended into.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlparse

from dataplatform.glue.layout import InvalidPartitionPath, PartitionLayout, PartitionValues, is_data_key

log = logging.getLogger(__name__)

# Concurrent ListObjectsV2 calls per discovery; S3 serves 5,500 reads a second per prefix.
LIST_CONCURRENCY = 16
# Keys per ListObjectsV2 page (S3's maximum).
PAGE_SIZE = 1000


@dataclass
class Discovery:
    """What a listing found: partitions with data (values -> relative path), rejected prefixes, and
    prefixes that hold only writer leftovers."""

    partitions: dict[PartitionValues, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # relative prefix -> reason
    empty: list[str] = field(default_factory=list)  # relative prefixes
    list_calls: int = 0


@dataclass
class Listing:
    """The child directories of one prefix, whether data files sit directly in it, and what it cost.
    ``without_data`` is filled by ``list_partitions`` only: children that hold only writer leftovers."""

    children: list[str]
    has_data_files: bool
    calls: int
    without_data: set[str] = field(default_factory=set)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b/")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def list_level(s3, bucket: str, prefix: str) -> Listing:
    """Child "directories" directly under ``prefix`` (names without slashes), with a delimiter."""
    children, has_data_files, calls = [], False, 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=PAGE_SIZE):
        calls += 1
        children.extend(
            common["Prefix"][len(prefix) :].rstrip("/") for common in page.get("CommonPrefixes", [])
        )
        has_data_files = has_data_files or any(
            is_data_key(obj["Key"][len(prefix) :]) for obj in page.get("Contents", [])
        )
    return Listing(children, has_data_files, calls)


def list_partitions(
    s3, bucket: str, prefix: str, only: Iterable[str] | None = None, page_size: int = PAGE_SIZE
) -> Listing:
    """The child directories of ``prefix`` (partitions) and which of them hold no data, without a
    delimiter and without reading every file: see the module docstring. ``only`` limits the listing
    to those children (interval mode), jumping from one to the next."""
    wanted = sorted(set(only)) if only is not None else None
    with_data: dict[str, bool] = {}  # child -> holds a data file
    listing = Listing([], False, 0)
    start_after = prefix + wanted[0] if wanted else ""
    while True:
        page = s3.list_objects_v2(
            Bucket=bucket,
            Prefix=prefix,
            MaxKeys=page_size,
            **({"StartAfter": start_after} if start_after else {}),
        )
        listing.calls += 1
        keys = [obj["Key"][len(prefix) :] for obj in page.get("Contents", [])]
        for key in keys:
            child, slash, below = key.partition("/")
            if slash:
                with_data[child] = with_data.get(child, False) or is_data_key(below)
            else:
                listing.has_data_files = listing.has_data_files or is_data_key(key)
        if not page.get("IsTruncated") or not keys:
            break
        start_after = _resume_after(prefix, keys[-1], with_data, wanted)
        if start_after is None:
            break
    listing.children = list(with_data)
    listing.without_data = {child for child, has_data in with_data.items() if not has_data}
    return listing


def _resume_after(prefix: str, last_key: str, with_data: dict[str, bool], wanted: list[str] | None):
    """Where the next page of ``list_partitions`` starts (its ``StartAfter``), or None when nothing
    wanted is left: past the rest of a child already known to hold data (or not wanted, or ignored, like
    ``_temporary``), past the rest of an ignored directory inside a child, else right after the last key.
    Every key under ``a/`` sorts before ``a0`` (``/`` is 0x2F, ``0`` 0x30), so ``a0`` ends ``a/``."""
    child, slash, below = last_key.partition("/")
    inner, inner_slash, _ = below.partition("/")
    if slash and (with_data[child] or PartitionLayout.is_ignored(child) or (wanted and child not in wanted)):
        resume = f"{prefix}{child}0"
    elif slash and inner_slash and PartitionLayout.is_ignored(inner):
        resume = f"{prefix}{child}/{inner}0"
    else:
        resume = prefix + last_key
    if wanted is None:
        return resume
    # Jump to the next wanted child that is still undecided (the rest are known or already passed).
    pending = [w for w in wanted if not with_data.get(w) and f"{prefix}{w}0" > resume]
    return max(resume, prefix + pending[0]) if pending else None


def discover(s3, location: str, layout: PartitionLayout, concurrency: int = LIST_CONCURRENCY) -> Discovery:
    """Walk the table location level by level and return every partition prefix that fits the layout
    and holds data.

    The directories of one level are listed concurrently (boto3 clients are thread-safe): each call is
    latency-bound, so a day-by-hour table of 417 days takes 417 calls' worth of round trips in parallel,
    not in series."""
    bucket, root = split_s3_uri(location)
    found = Discovery()
    frontier: list[tuple[str, dict[str, str]]] = [("", {})]  # relative prefix, the values it names so far
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-list") as pool:
        for level in range(layout.depth):
            lister = list_partitions if level == layout.depth - 1 else list_level
            listings = pool.map(partial(lister, s3, bucket), [root + relative for relative, _ in frontier])
            next_frontier = []
            for (relative, values), listing in zip(frontier, listings, strict=True):
                found.list_calls += listing.calls
                next_frontier.extend(_valid_children(layout, level, relative, values, listing, found))
            frontier = next_frontier
            log.info("level %d (%s): %d prefixes", level + 1, layout.segments[level].template, len(frontier))
    for path, values in frontier:
        found.partitions[layout.in_key_order(values)] = path
    return found


def _valid_children(
    layout: PartitionLayout,
    level: int,
    relative: str,
    values: dict[str, str],
    listing: Listing,
    found: Discovery,
):
    children = [child for child in listing.children if not layout.is_ignored(child)]
    if not children and relative:
        if listing.has_data_files:
            found.invalid[relative] = f"holds files but no {layout.segments[level].template!r} level below it"
        else:
            found.empty.append(relative)  # only writer leftovers, e.g. ``_temporary/`` or ``_SUCCESS``
    for child in children:
        path = f"{relative}{child}/"
        try:
            child_values = layout.parse_level(level, child, values)
        except InvalidPartitionPath as exc:
            found.invalid[path] = str(exc)
            continue
        if child in listing.without_data:
            found.empty.append(path)
            continue
        yield path, child_values


def present_in_s3(
    s3, location: str, layout: PartitionLayout, candidates: Iterable[PartitionValues]
) -> Discovery:
    """Which of the candidate partitions hold data (``partitions``) or only writer leftovers (``empty``):
    one listing per distinct parent directory (a day of hourly partitions is usually one call),
    instead of one call per partition."""
    bucket, root = split_s3_uri(location)
    by_parent: dict[str, list[tuple[PartitionValues, str]]] = defaultdict(list)
    for values in candidates:
        path = layout.render(values)
        parent, _, leaf = path.rstrip("/").rpartition("/")
        by_parent[f"{parent}/" if parent else ""].append((values, leaf))
    found = Discovery()
    for parent, wanted in by_parent.items():
        listing = list_partitions(s3, bucket, root + parent, only=[leaf for _, leaf in wanted])
        found.list_calls += listing.calls
        existing = set(listing.children)
        for values, leaf in wanted:
            if leaf in listing.without_data:
                found.empty.append(f"{parent}{leaf}/")
            elif leaf in existing:
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
