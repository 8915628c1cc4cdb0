"""Canonical views of table files shared by the Iceberg and GDPR snapshots: the objects under a table's
location with their random parts taken out, and a table's rows."""

from __future__ import annotations

import re
from collections import Counter

_RANDOM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{10,}")


def canonical_name(key: str) -> str:
    """An object key with its UUIDs and snapshot ids (10+ digits) replaced by ``*``, and the counters in
    its file name (a writer's task and file numbers, which follow thread timing) by ``#``."""
    folder, _, name = _RANDOM.sub("*", key).rpartition("/")
    return f"{folder}/{re.sub(r'[0-9]+', '#', name)}"


def object_shapes(
    lake, location: str, versions: bool = False, only: set[str] | None = None
) -> dict[str, int]:
    """``{canonical key (+ its tags): how many}`` of the current objects under ``location`` (``only``: of
    those URIs), and with ``versions`` how many noncurrent versions each canonical key has."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    shapes: Counter[str] = Counter()
    for page in lake.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if only is not None and f"s3://{bucket}/{item['Key']}" not in only:
                continue
            tags = lake.s3.get_object_tagging(Bucket=bucket, Key=item["Key"])["TagSet"]
            tagged = ",".join(sorted(f"{t['Key']}={t['Value']}" for t in tags))
            shapes[canonical_name(item["Key"]) + (f" [{tagged}]" if tagged else "")] += 1
    if versions:
        for page in lake.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                if not version["IsLatest"]:
                    shapes["noncurrent " + canonical_name(version["Key"])] += 1
            for marker in page.get("DeleteMarkers", []):
                shapes["delete marker " + canonical_name(marker["Key"])] += 1
    return dict(shapes)


def table_rows(lake, identifier: str) -> list[str]:
    """The table's rows at its current snapshot, as sorted strings."""
    table = lake.catalog.load_table(identifier)
    return sorted(str(sorted(row.items())) for row in table.scan().to_arrow().to_pylist())


def reachable_uris(table) -> set[str]:
    """Every file the table's current metadata reaches (data, manifests, lists, metadata log)."""
    from dataplatform.iceberg.files import FileIndex, reachable_files

    return set(reachable_files(FileIndex(table.io), table.metadata, table.metadata_location))


def current_uris(lake, location: str) -> set[str]:
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return {
        f"s3://{bucket}/{item['Key']}"
        for page in lake.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    }
