"""Run reports: one JSON object per DAG run and task, under the configured ``reports_uri``.

``<dag_id>/<run_id>/<name>.json`` is the run's report. Beside it, ``<dag_id>/_latest/<name>.json`` holds
the newest report of that name with the run it came from, so that the lake-health figures find the last
run of a DAG (and the last maintenance of a table) with one GET, not by listing every run ever made.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from dataplatform.read_cache import ReadCache

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+\-]")


def safe_key_part(part: str) -> str:
    """One part of an object key with characters S3 consoles dislike (``:``) made ``_``."""
    return _UNSAFE.sub("_", part)


def report_key(dag_id: str, run_id: str, name: str) -> str:
    """``<dag_id>/<run_id>/<name>.json`` with characters S3 consoles dislike (``:``) made safe."""
    return "/".join(safe_key_part(part) for part in (dag_id, run_id, name)) + ".json"


LATEST = "_latest"


def latest_key(dag_id: str, name: str) -> str:
    """``<dag_id>/_latest/<name>.json``: the newest report of that name (``write_run_report``)."""
    return "/".join(safe_key_part(part) for part in (dag_id, LATEST, name)) + ".json"


def write_run_report(reports_uri: str, dag_id: str, run_id: str, name: str, report: dict, s3=None) -> str:
    """Write a run's report (``report_key``) and then its latest copy (``latest_key``: ``dag_id``,
    ``run_id``, ``report_uri``, ``written_at`` and the report); return the report's URI."""
    uri = write_report(reports_uri, report_key(dag_id, run_id, name), report, s3)
    latest = {
        "dag_id": dag_id,
        "run_id": run_id,
        "name": name,
        "report_uri": uri,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "report": report,
    }
    write_report(reports_uri, latest_key(dag_id, name), latest, s3)
    return uri


def write_report(reports_uri: str, key: str, report: dict, s3=None) -> str:
    """Write ``report`` as JSON and return its URI. ``s3`` is required for s3:// URIs."""
    body = json.dumps(report, indent=2, sort_keys=True, default=str).encode()
    uri = reports_uri.rstrip("/") + "/" + key
    write_bytes(uri, body, "application/json", s3)
    return uri


def write_bytes(uri: str, body: bytes, content_type: str, s3=None) -> None:
    """Put ``body`` at an s3:// URI (``s3`` required) or write it to a file:// URI's path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if s3 is None:
            raise ValueError("an S3 client is needed to write to " + uri)
        s3.put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=body, ContentType=content_type)
    else:
        path = Path(parsed.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def read_bytes(uri: str, s3=None) -> bytes | None:
    """The object or file at ``uri``; None when there is none."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        try:
            return s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
    path = Path(parsed.path)
    return path.read_bytes() if path.is_file() else None


def run_reports(reports_uri: str, dag_id: str, run_id: str, s3=None) -> list[dict]:
    """The JSON reports one DAG run wrote (``<name>.json`` under its prefix), in key order. A run may leave
    other files beside them (pricing's CSV and chart, a Spark table's job spec and job report
    ``<table>.spark_spec.json`` / ``.spark_job.json``): those are not reports."""
    prefix_uri = reports_uri.rstrip("/") + "/" + report_key(dag_id, run_id, "x").rsplit("/", 1)[0] + "/"
    parsed = urlparse(prefix_uri)
    if parsed.scheme == "s3":
        bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]
        bodies = [
            s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in sorted(keys) if _is_report(key)
        ]
    else:
        folder = Path(parsed.path)
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        bodies = [path.read_bytes() for path in files if _is_report(path.name)]
    return [json.loads(body) for body in bodies]


def latest_reports(reports_uri: str, dag_id: str, s3=None, cache: ReadCache | None = None) -> list[dict]:
    """The latest copy of every report name the DAG has written (``write_run_report``), in name order;
    with a ``cache`` (bodies by bucket, key and ETag), only the copies rewritten since it last read them
    are read."""
    folder_uri = reports_uri.rstrip("/") + "/" + latest_key(dag_id, "x").rsplit("/", 1)[0] + "/"
    parsed = urlparse(folder_uri)
    if parsed.scheme == "s3":
        bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
        listed = sorted(
            (obj["Key"], obj["ETag"])
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
            if _is_report(obj["Key"])
        )
        with ThreadPoolExecutor(max_workers=16) as pool:  # a maintenance DAG writes one per table
            bodies = list(pool.map(lambda listed_key: _body(s3, bucket, *listed_key, cache), listed))
    else:
        folder = Path(parsed.path)
        bodies = [path.read_bytes() for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [json.loads(body) for body in bodies]


def _body(s3, bucket: str, key: str, etag: str, cache: ReadCache | None) -> bytes:
    """The object's body, from ``cache`` when it holds that ETag's. Kept under the ETag read back: a copy
    rewritten since the listing is the newer body, and the next listing names that ETag."""
    body = cache.get((bucket, key, etag)) if cache is not None else None
    if body is None:
        response = s3.get_object(Bucket=bucket, Key=key)
        body = response["Body"].read()
        if cache is not None:
            cache.put((bucket, key, response["ETag"]), body)
    return body


def _is_report(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.endswith(".json") and name.count(".") == 1
