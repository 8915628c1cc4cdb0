"""The pipelines under crash test: one module each, with ``PIPELINE`` (a ``tests.crash.harness.Pipeline``).

``Lake`` is what the seeds and snapshots get: clients straight to the moto server (never through the crash
proxy) and the settings the tasks run with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

NAMES = ("glue", "recon_stateless", "recon_stateful", "iceberg", "gdpr", "pricing")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def without_uuids(text: str) -> str:
    """A name with its random parts (Spark part-file and Iceberg file UUIDs) replaced by ``<uuid>``."""
    return _UUID.sub("<uuid>", text)


def is_clock_reading(name: str) -> bool:
    """Fields that say when, not what (two runs of the same work differ in them)."""
    return name == "at" or name.endswith("_at") or name in ("deadline", "lease_until") or "seconds" in name


def without_clock(value: Any) -> Any:
    """``value`` (nested dicts and lists) without the fields that hold clock readings."""
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items() if not is_clock_reading(str(k))}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


@dataclass
class Lake:
    server: Any  # MotoServer
    settings: Any  # dataplatform.config.Settings
    s3: Any
    glue: Any
    dynamodb: Any
    catalog: Any = None
    spark: Any = None  # a SparkSession on moto, for the stateless steps' unbroken jobs (see recon_*)

    def reset(self) -> None:
        self.server.reset()

    def objects(self, bucket: str, prefix: str) -> dict[str, bytes]:
        found = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = self.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def items(self, table: str) -> list[dict]:
        from boto3.dynamodb.types import TypeDeserializer

        plain = TypeDeserializer()
        return [
            {name: plain.deserialize(value) for name, value in item.items()}
            for page in self.dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
            for item in page["Items"]
        ]
