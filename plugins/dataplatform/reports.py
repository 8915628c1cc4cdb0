"""Run reports: one JSON object per DAG run and task, under the configured ``reports_uri``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+\-]")


def safe_key_part(part: str) -> str:
    """One part of an object key with characters S3 consoles dislike (``:``) made ``_``."""
    return _UNSAFE.sub("_", part)


def report_key(dag_id: str, run_id: str, name: str) -> str:
    """``<dag_id>/<run_id>/<name>.json`` with characters S3 consoles dislike (``:``) made safe."""
    return "/".join(safe_key_part(part) for part in (dag_id, run_id, name)) + ".json"


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
