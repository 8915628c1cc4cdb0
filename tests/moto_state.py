"""A raw fingerprint of everything a moto server holds that the pipelines write: every S3 object version
(key, version id, ETag, size), every DynamoDB table (key schema) with every item, every Glue database,
table (parameters, location, columns) and partition (values, location).

Read with plain boto3 straight from the server (not through the product's clients or bookkeeping), so a
test can say "nothing changed" by comparing two fingerprints. Requests run in a small thread pool: a
fingerprint of the bad-input tests' seeded state costs a few tens of milliseconds.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=16)


def _clients(endpoint_url: str, region: str = "us-east-1") -> dict[str, Any]:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    return {
        name: session.client(name, endpoint_url=endpoint_url, config=_CONFIG)
        for name in ("s3", "dynamodb", "glue")
    }


class MotoState:
    """``MotoState(url).fingerprint()`` -> a plain, JSON-comparable dict of the server's state."""

    def __init__(self, endpoint_url: str):
        self._clients = _clients(endpoint_url)
        self._pool = ThreadPoolExecutor(max_workers=8)

    def fingerprint(self) -> dict[str, Any]:
        s3, dynamodb, glue = (self._clients[name] for name in ("s3", "dynamodb", "glue"))
        listings = (
            self._pool.submit(lambda: [b["Name"] for b in s3.list_buckets().get("Buckets", [])]),
            self._pool.submit(_pages, dynamodb, "list_tables", "TableNames"),
            self._pool.submit(lambda: [db["Name"] for db in _pages(glue, "get_databases", "DatabaseList")]),
        )
        buckets, tables, databases = (sorted(listing.result()) for listing in listings)
        jobs = {
            **{("s3", name): self._pool.submit(_bucket, s3, name) for name in buckets},
            **{("dynamodb", name): self._pool.submit(_table, dynamodb, name) for name in tables},
            **{("glue", name): self._pool.submit(_database, glue, name) for name in databases},
        }
        state: dict[str, Any] = {"s3": {}, "dynamodb": {}, "glue": {}}
        for (service, name), job in jobs.items():
            state[service][name] = job.result()
        return state

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _pages(client: Any, operation: str, result_key: str, **kwargs: Any) -> list[Any]:
    return [item for page in client.get_paginator(operation).paginate(**kwargs) for item in page[result_key]]


def _bucket(s3: Any, bucket: str) -> list[tuple]:
    """Every version and delete marker (an unversioned bucket lists its objects as version ``null``)."""
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        found += [
            (v["Key"], v.get("VersionId"), v.get("ETag"), v.get("Size")) for v in page.get("Versions", [])
        ]
        found += [(m["Key"], m.get("VersionId"), "delete-marker", 0) for m in page.get("DeleteMarkers", [])]
    return sorted(found, key=lambda row: tuple(str(part) for part in row))


def _table(dynamodb: Any, table: str) -> dict[str, Any]:
    description = dynamodb.describe_table(TableName=table)["Table"]
    items = _pages(dynamodb, "scan", "Items", TableName=table, ConsistentRead=True)
    return {
        "key_schema": description["KeySchema"],
        "indexes": sorted(index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])),
        "items": sorted(json.dumps(item, sort_keys=True) for item in items),
    }


def _database(glue: Any, database: str) -> dict[str, Any]:
    tables = {}
    for table in _pages(glue, "get_tables", "TableList", DatabaseName=database):
        descriptor = table.get("StorageDescriptor", {})
        partitions = _pages(
            glue, "get_partitions", "Partitions", DatabaseName=database, TableName=table["Name"]
        )
        tables[table["Name"]] = {
            "parameters": table.get("Parameters", {}),
            "location": descriptor.get("Location"),
            "columns": descriptor.get("Columns", []),
            "partitions": sorted(
                (tuple(p["Values"]), p.get("StorageDescriptor", {}).get("Location")) for p in partitions
            ),
        }
    return tables


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed between two fingerprints, one line per bucket / table / database (empty: nothing)."""
    lines = []
    for service in sorted(set(before) | set(after)):
        old, new = before.get(service, {}), after.get(service, {})
        for name in sorted(set(old) | set(new)):
            if name not in new:
                lines.append(f"{service} {name}: removed")
            elif name not in old:
                lines.append(f"{service} {name}: created")
            elif old[name] != new[name]:
                lines.append(f"{service} {name}: changed")
    return lines
