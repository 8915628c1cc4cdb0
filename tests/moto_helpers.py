"""Helpers for tests against the moto server."""

from __future__ import annotations

import threading


class AtomicWrites:
    """The DynamoDB client with each write applied alone, for the tests that race threads.

    DynamoDB applies every conditional write and transaction atomically. moto evaluates the condition and
    applies the write in separate Python steps, and cancels a transaction by restoring a snapshot of the
    whole table (undoing writes that other requests made meanwhile), so concurrent requests can interleave
    inside it. The lock restores DynamoDB's per-request atomicity; reads, decisions and the order in which
    the threads attempt their writes still race."""

    _WRITES = frozenset(
        {"put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"}
    )

    def __init__(self, client):
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if name not in self._WRITES:
            return attribute

        def write(*args, **kwargs):
            with self._lock:
                return attribute(*args, **kwargs)

        return write


def recorded_s3_gets(server, bucket: str, key: str) -> list[dict[str, str]]:
    """The GETs of ``s3://bucket/key`` the moto server received since ``server.start_recording()``
    (path-style URLs, as S3A and the boto3 clients here use), each as its lower-cased headers."""
    import json
    import urllib.request
    from urllib.parse import quote, urlparse

    with urllib.request.urlopen(f"{server.url}/moto-api/recorder/download-recording", timeout=30) as resp:
        entries = [json.loads(line) for line in resp.read().decode().splitlines()]
    path = f"/{bucket}/{quote(key)}"
    return [
        {name.lower(): value for name, value in (entry.get("headers") or {}).items()}
        for entry in entries
        if entry["method"] == "GET" and urlparse(entry["url"]).path == path
    ]


class ResendingClient:
    """A boto3 client whose ``operations`` (method names, e.g. ``"put_item"``) are each sent twice, as
    botocore resends a request after a read timeout whose first send was processed (``make chaos``'s
    ``read_timeout`` fault): the caller sees the second answer."""

    def __init__(self, client, *operations: str):
        self._client = client
        self._operations = set(operations)

    def __getattr__(self, name):
        method = getattr(self._client, name)
        if name not in self._operations:
            return method

        def resent(**kwargs):
            method(**kwargs)
            return method(**kwargs)

        return resent
