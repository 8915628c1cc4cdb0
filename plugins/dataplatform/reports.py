"""Run reports: one JSON object per DAG run and task, under the configured ``reports_uri``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+\-]")


def report_key(dag_id: str, run_id: str, name: str) -> str:
    """``<dag_id>/<run_id>/<name>.json`` with characters S3 consoles dislike (``:``) made safe."""
    return "/".join(_UNSAFE.sub("_", part) for part in (dag_id, run_id, name)) + ".json"


def write_report(reports_uri: str, key: str, report: dict, s3=None) -> str:
    """Write ``report`` as JSON and return its URI. ``s3`` is required for s3:// URIs."""
    body = json.dumps(report, indent=2, sort_keys=True, default=str).encode()
    uri = reports_uri.rstrip("/") + "/" + key
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if s3 is None:
            raise ValueError("an S3 client is needed to write a report to " + uri)
        s3.put_object(
            Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=body, ContentType="application/json"
        )
    else:
        path = Path(parsed.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return uri
