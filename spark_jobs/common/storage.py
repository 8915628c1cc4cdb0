"""Object storage for ``s3://`` and ``file://`` URIs: whole reads, byte-range reads, writes, listings.

Used in three places that must agree on how bytes are addressed: the Spark jobs (driver and executors,
shipped in spark_jobs.zip, so nothing here imports pyspark or Airflow), the Airflow tasks (indexer,
ledger, manifests) and the ``get`` command. Locally the same calls go to S3 on the moto server (the
config's default) or to ``file://`` folders; in AWS to S3 with boto3, which EMR ships.

Every call is counted in ``Storage.stats`` (requests, bytes), so benchmarks and reports can say how many
reads and writes a stage made. A ``Storage`` is cheap: make one per task or per Spark partition.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

_READ_CHUNK = 1024 * 1024


@dataclass
class StorageStats:
    """Request and byte counts of one ``Storage`` (thread-safe)."""

    reads: int = 0  # whole-object reads and streams
    range_reads: int = 0  # ranged GETs
    writes: int = 0  # PUTs / files written
    lists: int = 0  # listing requests
    bytes_read: int = 0
    bytes_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {
                name: getattr(self, name)
                for name in ("reads", "range_reads", "writes", "lists", "bytes_read", "bytes_written")
            }


def join(base: str, *parts: str) -> str:
    """``join("s3://b/work/", "state", "00000001/")`` -> ``s3://b/work/state/00000001/``."""
    uri = base
    for part in parts:
        uri = uri.rstrip("/") + "/" + part.lstrip("/")
    return uri


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"not a file:// URI: {uri!r}")
    return Path(parsed.path)


def _check_scheme(uri: str) -> None:
    if not (uri.startswith("s3://") or uri.startswith("file://")):
        raise ValueError(f"storage URIs are s3:// or file://, got {uri!r}")


class Storage:
    """Reads and writes ``s3://`` and ``file://`` URIs; ``s3`` is a boto3 S3 client (made on first use
    from the default credential chain and ``AWS_ENDPOINT_URL`` when not given)."""

    def __init__(self, s3: Any = None, endpoint_url: str | None = None, region: str | None = None):
        self._s3 = s3
        self._endpoint_url = endpoint_url or None
        self._region = region
        self._client_lock = threading.Lock()
        self.stats = StorageStats()

    @property
    def s3(self) -> Any:
        with self._client_lock:
            if self._s3 is None:
                import boto3
                from botocore.config import Config

                self._s3 = boto3.client(
                    "s3",
                    endpoint_url=self._endpoint_url,
                    region_name=self._region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                    config=Config(retries={"mode": "adaptive", "max_attempts": 10}, max_pool_connections=64),
                )
            return self._s3

    # -- reads -----------------------------------------------------------------------------------------

    def _get_object(self, uri: str, **kwargs: Any) -> Any:
        """GetObject of an ``s3://`` URI; a missing object raises ``FileNotFoundError`` as a missing
        file does, so callers handle one error whichever scheme the config names."""
        bucket, key = split_s3(uri)
        try:
            return self.s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"]
        except self.s3.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(f"{uri} does not exist") from exc

    def read_bytes(self, uri: str) -> bytes:
        _check_scheme(uri)
        data = self._get_object(uri).read() if is_s3(uri) else local_path(uri).read_bytes()
        self.stats.add(reads=1, bytes_read=len(data))
        return data

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``: one ranged GET on S3."""
        _check_scheme(uri)
        if offset < 0 or length <= 0:
            raise ValueError(f"bad byte range offset={offset} length={length} for {uri}")
        if is_s3(uri):
            data = self._get_object(uri, Range=f"bytes={offset}-{offset + length - 1}").read()
        else:
            with open(local_path(uri), "rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
        if len(data) != length:
            raise OSError(f"{uri}: asked for {length} bytes at {offset}, got {len(data)} (file truncated?)")
        self.stats.add(range_reads=1, bytes_read=len(data))
        return data

    def open_stream(self, uri: str) -> BinaryIO:
        """A readable binary stream of the whole object (one GET), for hashing or line scanning."""
        _check_scheme(uri)
        self.stats.add(reads=1)
        if is_s3(uri):
            return self._get_object(uri)
        return open(local_path(uri), "rb")

    def iter_lines_with_offsets(self, uri: str) -> Iterator[tuple[int, int, bytes]]:
        """``(offset, length, line)`` for every ``\\n``-terminated line; ``length`` excludes the newline.

        Offsets are counted in bytes as they are stored (UTF-8), so ``read_range(uri, offset, length)``
        returns exactly ``line``. A last line without a newline is returned too.
        """
        offset = 0
        pending = b""
        with self.open_stream(uri) as stream:
            while True:
                chunk = stream.read(_READ_CHUNK)
                if not chunk:
                    break
                self.stats.add(bytes_read=len(chunk))
                pending += chunk
                start = 0
                while True:
                    newline = pending.find(b"\n", start)
                    if newline < 0:
                        break
                    line = pending[start:newline]
                    yield offset, len(line), line
                    offset += len(line) + 1
                    start = newline + 1
                pending = pending[start:]
        if pending:
            yield offset, len(pending), pending

    def exists(self, uri: str) -> bool:
        _check_scheme(uri)
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.stats.add(lists=1)
            response = self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
            return any(obj["Key"] == key for obj in response.get("Contents", []))
        return local_path(uri).exists()

    def list_children(self, uri: str) -> list[str]:
        """Names of the immediate children of the folder ``uri`` (sub-folders without a slash), sorted."""
        _check_scheme(uri)
        uri = uri.rstrip("/") + "/"
        names: set[str] = set()
        if is_s3(uri):
            bucket, prefix = split_s3(uri)
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                self.stats.add(lists=1)
                names.update(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
                names.update(obj["Key"][len(prefix) :] for obj in page.get("Contents", []))
        else:
            path = local_path(uri)
            self.stats.add(lists=1)
            if path.is_dir():
                names.update(child.name for child in path.iterdir())
        return sorted(name for name in names if name)

    def list_files(self, uri: str) -> list[tuple[str, int]]:
        """``(uri, size)`` of every object under the folder ``uri``, recursively, sorted by URI."""
        _check_scheme(uri)
        uri = uri.rstrip("/") + "/"
        found: list[tuple[str, int]] = []
        if is_s3(uri):
            bucket, prefix = split_s3(uri)
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                self.stats.add(lists=1)
                found.extend((f"s3://{bucket}/{obj['Key']}", obj["Size"]) for obj in page.get("Contents", []))
        else:
            root = local_path(uri)
            self.stats.add(lists=1)
            if root.is_dir():
                found.extend(
                    (join(uri, path.relative_to(root).as_posix()), path.stat().st_size)
                    for path in root.rglob("*")
                    if path.is_file()
                )
        return sorted(found)

    # -- writes ----------------------------------------------------------------------------------------

    def write_bytes(self, uri: str, data: bytes) -> str:
        """Write ``data`` to ``uri``: one PUT on S3; locally a temporary file renamed into place, so a
        reader never sees half a file."""
        _check_scheme(uri)
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            path = local_path(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
            partial.write_bytes(data)
            partial.replace(path)
        self.stats.add(writes=1, bytes_written=len(data))
        return uri

    def write_json(self, uri: str, value: Any) -> str:
        return self.write_bytes(uri, json.dumps(value, indent=1, sort_keys=True, default=str).encode())

    def delete_tree(self, uri: str) -> int:
        """Delete everything under the folder ``uri`` (batched DeleteObjects on S3); the objects deleted."""
        _check_scheme(uri)
        uri = uri.rstrip("/") + "/"
        if not is_s3(uri):
            files = self.list_files(uri)
            shutil.rmtree(local_path(uri), ignore_errors=True)
            return len(files)
        bucket, prefix = split_s3(uri)
        deleted = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            self.stats.add(lists=1)
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                response = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                if response.get("Errors"):
                    raise OSError(f"could not delete under {uri}: {response['Errors'][:3]}")
                deleted += len(keys)
        return deleted

    def delete(self, uri: str) -> None:
        _check_scheme(uri)
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.delete_object(Bucket=bucket, Key=key)
        else:
            local_path(uri).unlink(missing_ok=True)
