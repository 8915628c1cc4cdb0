"""Batched Glue Data Catalog partition reads and writes.

Glue limits (field notes): BatchGetPartition <= 1,000 keys, BatchCreatePartition <= 100 partitions a call,
errors reported per partition in the response. Throttling of a whole call is retried by botocore's adaptive
retry mode (see ``dataplatform.aws``); throttling reported for single partitions inside a successful
response is retried here, because botocore never sees it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dataplatform.glue.layout import PartitionValues

log = logging.getLogger(__name__)

BATCH_GET_LIMIT = 1000
BATCH_CREATE_LIMIT = 100
GET_PARTITIONS_PAGE = 1000
# BatchCreatePartition calls in flight at once: enough to hide round trips, few enough to stay under
# Glue's request rate (whole-call throttling is absorbed by botocore's adaptive retries).
CREATE_CONCURRENCY = 4
# Per-partition error codes worth another try; anything else is a real failure of that partition.
_RETRYABLE = {"ThrottlingException", "InternalServiceException", "ConcurrentModificationException"}
_ALREADY_EXISTS = "AlreadyExistsException"

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class CreateResult:
    created: list[PartitionValues] = field(default_factory=list)
    already_present: list[PartitionValues] = field(default_factory=list)
    failed: dict[PartitionValues, str] = field(default_factory=dict)  # values -> "Code: message"
    write_calls: int = 0


@dataclass(frozen=True)
class TableDescriptor:
    """The parts of a Glue table that its partitions inherit."""

    database: str
    table: str
    partition_keys: tuple[str, ...]
    storage_descriptor: dict[str, Any]

    def partition_input(self, values: PartitionValues, location: str) -> dict[str, Any]:
        # Columns, SerDe and input/output formats come from the table so that every partition reads the
        # same way the table does; only the location is the partition's own.
        descriptor = copy.deepcopy(self.storage_descriptor)
        descriptor["Location"] = location
        return {"Values": list(values), "StorageDescriptor": descriptor}


def describe_table(glue, database: str, table: str) -> TableDescriptor:
    response = glue.get_table(DatabaseName=database, Name=table)["Table"]
    return TableDescriptor(
        database=database,
        table=table,
        partition_keys=tuple(key["Name"] for key in response.get("PartitionKeys", [])),
        storage_descriptor={
            key: value for key, value in response["StorageDescriptor"].items() if key != "Location"
        },
    )


def existing_partitions(
    glue, database: str, table: str, candidates: Iterable[PartitionValues], max_attempts: int = 5
) -> tuple[set[PartitionValues], int]:
    """Which candidates Glue already has, and how many read calls that took (BatchGetPartition in
    chunks of 1,000, UnprocessedKeys retried)."""
    found: set[PartitionValues] = set()
    calls = 0
    for chunk in chunked(list(candidates), BATCH_GET_LIMIT):
        pending = [{"Values": list(values)} for values in chunk]
        for attempt in range(1, max_attempts + 1):
            response = glue.batch_get_partition(
                DatabaseName=database, TableName=table, PartitionsToGet=pending
            )
            calls += 1
            found.update(tuple(partition["Values"]) for partition in response.get("Partitions", []))
            pending = response.get("UnprocessedKeys", [])
            if not pending:
                break
            log.warning("BatchGetPartition left %d keys unprocessed (attempt %d)", len(pending), attempt)
            _backoff(attempt)
        else:
            raise RuntimeError(
                f"{database}.{table}: {len(pending)} partitions still unprocessed by BatchGetPartition "
                f"after {max_attempts} attempts"
            )
    return found, calls


def all_partitions(glue, database: str, table: str) -> tuple[set[PartitionValues], int]:
    """Every partition the table has (GetPartitions, 1,000 a page, without the column schema, which
    every partition repeats), and how many read calls that took."""
    found: set[PartitionValues] = set()
    calls = 0
    pages = glue.get_paginator("get_partitions").paginate(
        DatabaseName=database,
        TableName=table,
        ExcludeColumnSchema=True,
        PaginationConfig={"PageSize": GET_PARTITIONS_PAGE},
    )
    for page in pages:
        calls += 1
        found.update(tuple(partition["Values"]) for partition in page.get("Partitions", []))
    return found, calls


def create_partitions(
    glue,
    descriptor: TableDescriptor,
    partitions: Sequence[tuple[PartitionValues, str]],
    max_attempts: int = 5,
    concurrency: int = CREATE_CONCURRENCY,
) -> CreateResult:
    """Create partitions (values, S3 location) with BatchCreatePartition, 100 a call, a few calls at once.

    AlreadyExists counts as present (another writer got there first, or a rerun). Throttled partitions are
    retried with backoff. Other per-partition errors are collected and returned, never raised here, so that
    one bad partition does not stop the other 9,999.
    """
    result = CreateResult()
    chunks = list(chunked(list(partitions), BATCH_CREATE_LIMIT))
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="glue-create") as pool:
        for chunk_result in pool.map(
            lambda chunk: _create_chunk(glue, descriptor, chunk, max_attempts), chunks
        ):
            result.created += chunk_result.created
            result.already_present += chunk_result.already_present
            result.failed.update(chunk_result.failed)
            result.write_calls += chunk_result.write_calls
    return result


def _create_chunk(glue, descriptor: TableDescriptor, chunk, max_attempts: int) -> CreateResult:
    result = CreateResult()
    pending = dict(chunk)
    for attempt in range(1, max_attempts + 1):
        response = glue.batch_create_partition(
            DatabaseName=descriptor.database,
            TableName=descriptor.table,
            PartitionInputList=[descriptor.partition_input(v, loc) for v, loc in pending.items()],
        )
        result.write_calls += 1
        retry: dict[PartitionValues, str] = {}
        errors = {tuple(e["PartitionValues"]): e["ErrorDetail"] for e in response.get("Errors", [])}
        for values, location in pending.items():
            error = errors.get(values)
            if error is None:
                result.created.append(values)
            elif error.get("ErrorCode") == _ALREADY_EXISTS:
                result.already_present.append(values)
            elif error.get("ErrorCode") in _RETRYABLE and attempt < max_attempts:
                retry[values] = location
            else:
                result.failed[values] = f"{error.get('ErrorCode')}: {error.get('ErrorMessage', '')}"
        if not retry:
            break
        log.warning("retrying %d throttled partitions (attempt %d)", len(retry), attempt)
        pending = retry
        _backoff(attempt)
    return result


def _backoff(attempt: int) -> None:
    time.sleep(min(0.2 * 2**attempt, 5.0))
