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


class EmrStepEnder:
    """EMR's side of transient clusters, which moto never plays (its steps stay RUNNING and its clusters
    never end): a thread that ends the running step of every cluster that starts, ``hold_seconds`` after
    it first saw it, in ``state`` (``MotoServer.end_emr_step``: the cluster then ends as EMR ends it).

    Use as a context manager around the runs. ``ended`` maps each cluster it ended to the step's
    outcome; ``errors`` holds what went wrong in the thread (checked on exit)."""

    ACTIVE = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]

    def __init__(self, server, emr, state: str = "COMPLETED", reason: str | None = None, hold_seconds=0.0):
        self.server, self.emr = server, emr
        self.state, self.reason, self.hold_seconds = state, reason, hold_seconds
        self.ended: dict[str, dict] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EmrStepEnder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self.errors, self.errors

    def _run(self) -> None:
        import time

        first_seen: dict[str, float] = {}
        while not self._stop.is_set():
            try:
                pages = self.emr.get_paginator("list_clusters").paginate(ClusterStates=self.ACTIVE)
                alive = [cluster["Id"] for page in pages for cluster in page["Clusters"]]
                now = time.monotonic()
                for cluster_id in alive:
                    seen = first_seen.setdefault(cluster_id, now)
                    if cluster_id not in self.ended and now - seen >= self.hold_seconds:
                        self.ended[cluster_id] = self.server.end_emr_step(cluster_id, self.state, self.reason)
            except Exception as exc:  # reported on exit, in the test's thread
                self.errors.append(repr(exc))
                return
            self._stop.wait(0.2)
