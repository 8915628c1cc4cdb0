"""The artifact index: artifact key -> (part file, byte offset, byte length, version, seq) in DynamoDB.

The stateful processor writes millions of artifacts into a handful of part files; this index lets one
artifact be read alone with a ranged GET, as if it were its own object. Indexing reads a part file once,
line by line (offsets in bytes as stored, UTF-8), and writes 25 items per BatchWriteItem on a thread
pool. Runs index in seq order, so a plain overwrite leaves the newest version; a run indexed again
after a later one (cleared and rerun by hand) writes conditionally so it never replaces a newer version.

No Airflow here: clients come in as arguments. The lookup loop and item format live in
``spark_jobs.common.dynamo`` so the prefetch Spark job shares them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from dataplatform.dynamodb import ensure_table, error_code, key
from spark_jobs.common.dynamo import (
    BATCH_WRITE_LIMIT,
    HASH_KEY,
    MAX_ATTEMPTS,
    IndexEntry,
    call_until_processed,
    check_artifact,
    chunked,
    entry_from_item,
    entry_to_item,
    iter_index_entries,
    map_in_threads,
    parse_artifact_line,
)
from spark_jobs.common.storage import Storage

__all__ = [
    "IndexEntry",
    "create_index_table",
    "get_artifact",
    "index_part_file",
    "lookup",
    "part_file_entries",
]

log = logging.getLogger(__name__)

# A conditional write fails when the index already holds this version or a newer one of the key.
NEWER_ONLY = f"attribute_not_exists({HASH_KEY}) OR version < :v"


def create_index_table(dynamodb: Any, table: str) -> bool:
    """Create the index table (on-demand, hash key ``artifact_key``) unless it exists; wait until it is
    ACTIVE. True when this call created it. An existing table with another key schema is an error."""
    return ensure_table(dynamodb, table, key(HASH_KEY), [HASH_KEY], wait_attempts=150)


def part_file_entries(storage: Storage, part_uri: str) -> Iterator[IndexEntry]:
    """The index entry of every line of a state part file (one streamed read); ``seq`` is left unset.

    A line that is not an artifact JSON object with ``key`` and ``version`` is an error naming the file
    and the byte offset."""
    for offset, length, line in storage.iter_lines_with_offsets(part_uri):
        artifact = parse_artifact_line(line, f"{part_uri} at byte offset {offset}")
        yield IndexEntry(artifact["key"], part_uri, offset, length, artifact["version"])


def index_part_file(
    dynamodb: Any,
    storage: Storage,
    table: str,
    part_uri: str,
    seq: int,
    *,
    conditional: bool = False,
    writers: int = 8,
    max_attempts: int = MAX_ATTEMPTS,
) -> dict[str, Any]:
    """Write the index entries of one part file of stateful run ``seq``.

    Plain mode: BatchWriteItem, 25 items a call, ``writers`` calls in flight; unprocessed items are
    retried with backoff up to ``max_attempts`` calls per batch. Conditional mode: one PutItem per item
    that only replaces an older version (a same or newer one already indexed counts as ``skipped_newer``).
    A key twice in the file is an error (the part file is corrupt, and DynamoDB rejects a batch naming a
    key twice); batches sent before it was found stay written, each pointing at a valid line.

    Returns ``{entries, written, skipped_newer, batch_calls, retries, seconds}``.
    """
    started = time.monotonic()
    counts = {"entries": 0, "written": 0, "skipped_newer": 0, "batch_calls": 0, "retries": 0}
    items = _distinct_items(part_file_entries(storage, part_uri), seq, part_uri, counts)
    if conditional:
        for written in map_in_threads(lambda item: _put_if_newer(dynamodb, table, item), items, writers):
            counts["written" if written else "skipped_newer"] += 1
    else:
        what = f"BatchWriteItem to {table} for {part_uri}"
        for batch, calls in map_in_threads(
            lambda batch: (batch, _write_batch(dynamodb, table, batch, what, max_attempts)),
            chunked(items, BATCH_WRITE_LIMIT),
            writers,
        ):
            counts["written"] += len(batch)
            counts["batch_calls"] += calls
            counts["retries"] += calls - 1
    result = {**counts, "seconds": round(time.monotonic() - started, 3)}
    log.info(
        "indexed %s (seq %d): %d entries, %d written, %d skipped (newer indexed), %d calls, %d retries",
        part_uri,
        seq,
        result["entries"],
        result["written"],
        result["skipped_newer"],
        result["batch_calls"],
        result["retries"],
    )
    return result


def lookup(dynamodb: Any, table: str, keys: Iterable[str], threads: int = 8) -> dict[str, IndexEntry]:
    """Index entries of the indexed ones among ``keys`` (BatchGetItem, 100 keys a call, ConsistentRead)."""
    return {entry.key: entry for entry in iter_index_entries(dynamodb, table, dict.fromkeys(keys), threads)}


def get_artifact(dynamodb: Any, storage: Storage, table: str, key: str) -> dict[str, Any] | None:
    """The current artifact of ``key`` (one GetItem, one ranged read), or None when it is not indexed.

    The bytes read must be that key's artifact at the indexed version, else an error naming the entry."""
    response = dynamodb.get_item(TableName=table, Key={HASH_KEY: {"S": key}}, ConsistentRead=True)
    if "Item" not in response:
        return None
    entry = entry_from_item(response["Item"])
    return check_artifact(storage.read_range(entry.file, entry.offset, entry.length), entry)


def _distinct_items(
    entries: Iterable[IndexEntry], seq: int, part_uri: str, counts: dict[str, int]
) -> Iterator[dict[str, dict[str, str]]]:
    first_offsets: dict[str, int] = {}
    for entry in entries:
        if entry.key in first_offsets:
            raise ValueError(
                f"{part_uri}: artifact key {entry.key!r} appears twice (byte offsets "
                f"{first_offsets[entry.key]} and {entry.offset}); a part file holds each key once"
            )
        first_offsets[entry.key] = entry.offset
        counts["entries"] += 1
        yield entry_to_item(entry._replace(seq=seq))


def _write_batch(dynamodb: Any, table: str, items: list[dict], what: str, max_attempts: int) -> int:
    """BatchWriteItem of up to 25 items, unprocessed ones retried; the number of calls it took."""
    request = {table: [{"PutRequest": {"Item": item}} for item in items]}
    responses = call_until_processed(
        dynamodb.batch_write_item, request, "UnprocessedItems", what=what, max_attempts=max_attempts
    )
    return len(responses)


def _put_if_newer(dynamodb: Any, table: str, item: dict) -> bool:
    try:
        dynamodb.put_item(
            TableName=table,
            Item=item,
            ConditionExpression=NEWER_ONLY,
            ExpressionAttributeValues={":v": item["version"]},
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True
