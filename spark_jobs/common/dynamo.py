"""The artifact index in DynamoDB as the prefetch job and the Airflow tasks both see it.

One implementation of the item format, the BatchGetItem lookup loop (100 keys a call, ConsistentRead,
UnprocessedKeys retried) and the check that bytes read at an index entry are the artifact it names:
``dataplatform.reconciliation.index`` imports them from here because the Spark job, shipped in
spark_jobs.zip, cannot import ``dataplatform``. Pure Python plus boto3: no pyspark, no Airflow.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

HASH_KEY = "artifact_key"
BATCH_GET_LIMIT = 100  # keys per BatchGetItem call (DynamoDB's limit)
BATCH_WRITE_LIMIT = 25  # items per BatchWriteItem call (DynamoDB's limit)
MAX_ATTEMPTS = 8  # calls per batch before giving up on unprocessed items

T = TypeVar("T")
R = TypeVar("R")


class IndexEntry(NamedTuple):
    """Where one artifact version lives: ``length`` bytes at ``offset`` of ``file`` (newline excluded)."""

    key: str
    file: str
    offset: int
    length: int
    version: int
    seq: int | None = None  # the stateful run whose part file holds it; unknown before indexing


def client(service: str, endpoint_url: str | None, region: str, max_pool_connections: int = 32) -> Any:
    """A boto3 client with adaptive retries (backs off on throttling), for code outside Airflow."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint_url or None,
        region_name=region,
        config=Config(
            retries={"mode": "adaptive", "max_attempts": 10}, max_pool_connections=max_pool_connections
        ),
    )


# -- item format ----------------------------------------------------------------------------------------


def entry_to_item(entry: IndexEntry) -> dict[str, dict[str, str]]:
    if entry.seq is None:
        raise ValueError(f"index entry {entry.key!r} has no seq: only entries of an indexed run are stored")
    return {
        HASH_KEY: {"S": entry.key},
        "file": {"S": entry.file},
        "offset": {"N": str(entry.offset)},
        "length": {"N": str(entry.length)},
        "version": {"N": str(entry.version)},
        "seq": {"N": str(entry.seq)},
    }


def entry_from_item(item: dict[str, dict[str, str]]) -> IndexEntry:
    try:
        return IndexEntry(
            key=item[HASH_KEY]["S"],
            file=item["file"]["S"],
            offset=int(item["offset"]["N"]),
            length=int(item["length"]["N"]),
            version=int(item["version"]["N"]),
            seq=int(item["seq"]["N"]) if "seq" in item else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed index item {item!r}: {exc!r}") from None


# -- artifact lines -------------------------------------------------------------------------------------


def parse_artifact_line(line: bytes, where: str) -> dict[str, Any]:
    """The artifact JSON object of one part-file line; ``where`` names the line in the error."""
    try:
        artifact = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: not an artifact JSON line ({exc}): {line[:80]!r}") from None
    if not isinstance(artifact, dict):
        raise ValueError(f"{where}: not an artifact (a JSON {type(artifact).__name__}): {line[:80]!r}")
    key, version = artifact.get("key"), artifact.get("version")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: artifact has no string 'key': {line[:80]!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: artifact {key!r} has no positive integer 'version': {version!r}")
    return artifact


def check_artifact(line: bytes, entry: IndexEntry) -> dict[str, Any]:
    """The artifact read at ``entry``; an error naming the entry when the bytes are not that artifact
    (the part file was rewritten or the index points at the wrong place)."""
    where = (
        f"index entry {entry.key!r} (version {entry.version}) -> {entry.file} "
        f"offset {entry.offset} length {entry.length}"
    )
    artifact = parse_artifact_line(line, where)
    if artifact["key"] != entry.key or artifact["version"] != entry.version:
        raise ValueError(
            f"{where}: the bytes there are artifact {artifact['key']!r} version {artifact['version']}"
        )
    return artifact


# -- retries and threads --------------------------------------------------------------------------------


def backoff_seconds(attempt: int, base: float = 0.05, cap: float = 5.0) -> float:
    """Exponential backoff with jitter before retry ``attempt`` (1, 2, ...): retries of many threads
    spread out instead of hitting a throttled table together."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def call_until_processed(
    call: Callable[..., dict[str, Any]],
    request: dict[str, Any],
    unprocessed_field: str,
    what: str,
    max_attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Call ``call(RequestItems=request)`` again with the ``unprocessed_field`` of each response
    (UnprocessedItems / UnprocessedKeys) until nothing is left; the responses of every call.

    Gives up after ``max_attempts`` calls with an error naming ``what`` and how many are left."""
    responses: list[dict[str, Any]] = []
    for attempt in range(max_attempts):
        if attempt:
            sleep(backoff_seconds(attempt))
        response = call(RequestItems=request)
        responses.append(response)
        request = response.get(unprocessed_field) or {}
        if not request:
            return responses
    left = sum(len(value["Keys"]) if isinstance(value, dict) else len(value) for value in request.values())
    raise RuntimeError(f"{what}: {left} items still unprocessed after {max_attempts} attempts")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def map_in_threads(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """``fn`` of every item on ``threads`` threads, results in input order.

    At most ``2 * threads`` items are submitted ahead of the consumer, so a long input (a Spark
    partition) is streamed, never held in memory. The first error is raised; pending work is cancelled.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    pool = ThreadPoolExecutor(max_workers=threads)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- lookups --------------------------------------------------------------------------------------------


def get_entries_batch(
    dynamodb: Any, table: str, keys: list[str], max_attempts: int = MAX_ATTEMPTS
) -> list[IndexEntry]:
    """One BatchGetItem (plus retries of its unprocessed keys) for at most 100 distinct keys."""
    if len(keys) > BATCH_GET_LIMIT:
        raise ValueError(f"BatchGetItem takes at most {BATCH_GET_LIMIT} keys, got {len(keys)}")
    request = {table: {"Keys": [{HASH_KEY: {"S": key}} for key in keys], "ConsistentRead": True}}
    responses = call_until_processed(
        dynamodb.batch_get_item,
        request,
        "UnprocessedKeys",
        what=f"BatchGetItem on {table} ({len(keys)} keys from {keys[0]!r})",
        max_attempts=max_attempts,
    )
    return [
        entry_from_item(item)
        for response in responses
        for item in response.get("Responses", {}).get(table, [])
    ]


def iter_index_entries(
    dynamodb: Any, table: str, keys: Iterable[str], threads: int = 8
) -> Iterator[IndexEntry]:
    """Index entries of the indexed ones among ``keys`` (unknown keys are left out), streamed.

    DynamoDB rejects a BatchGetItem naming a key twice, so repeats within a call are dropped; callers
    that may pass a key in two different calls get its entry twice."""

    def distinct_chunks() -> Iterator[list[str]]:
        for chunk in chunked(keys, BATCH_GET_LIMIT):
            yield list(dict.fromkeys(chunk))

    for entries in map_in_threads(
        lambda chunk: get_entries_batch(dynamodb, table, chunk), distinct_chunks(), threads
    ):
        yield from entries
