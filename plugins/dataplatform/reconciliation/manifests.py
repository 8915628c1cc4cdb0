"""Landing batches: find the complete ones and check each against its ``_manifest.json``.

A producer writes a batch's part files first and ``_manifest.json`` last, so a folder without a manifest
is still being written and is left alone. A manifest is trusted only after every file it lists has been
read back: the row count and the sha256 of the files' bytes (concatenated in listed order) must match.
Files are streamed, never loaded whole: a batch can hold millions of rows.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spark_jobs.common.storage import Storage, join

MANIFEST_NAME = "_manifest.json"
MANIFEST_FIELDS = ("batch_id", "window_start", "window_end", "rows", "files", "sha256")
BATCH_ID = re.compile(r"[A-Za-z0-9_.=-]{1,128}")  # applied with fullmatch
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A file name inside the batch folder: no separator, no control character, at most S3's 1,024 bytes.
_FILE_NAME = re.compile(r"[^/\x00-\x1f\x7f]{1,1024}")
_READ_CHUNK = 1024 * 1024


class ManifestError(ValueError):
    """A batch's manifest is missing, malformed or does not match its files; ``reason`` says which."""

    def __init__(self, batch_id: str, reason: str):
        super().__init__(f"batch {batch_id}: {reason}")
        self.batch_id = batch_id
        self.reason = reason


@dataclass(frozen=True)
class Manifest:
    batch_id: str
    window_start: datetime
    window_end: datetime
    rows: int
    sha256: str
    files: tuple[str, ...]  # names as listed in the manifest
    file_uris: tuple[str, ...]  # the same files as full URIs
    manifest_uri: str


def format_utc(moment: datetime) -> str:
    """``2024-03-05T10:00:00Z`` (microseconds only when there are some)."""
    moment = as_utc(moment)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_utc(text: Any) -> datetime:
    """An ISO-8601 UTC time ending in ``Z``; ValueError otherwise."""
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"not an ISO-8601 UTC time ending in Z: {text!r}")
    try:
        moment = datetime.fromisoformat(text[:-1])
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 UTC time ending in Z: {text!r} ({exc})") from None
    if moment.tzinfo is not None:
        raise ValueError(f"not an ISO-8601 UTC time ending in Z: {text!r}")
    return moment.replace(tzinfo=UTC)


def manifest_uri(landing_uri: str, batch_id: str) -> str:
    return join(landing_uri, batch_id, MANIFEST_NAME)


def discover_batches(storage: Storage, landing_uri: str) -> list[tuple[str, str]]:
    """``(batch_id, manifest_uri)`` of every batch folder under ``landing_uri`` that has its manifest,
    sorted by batch id. Names that are not valid batch ids (temporary files, ``_tmp``-style folders a
    tool may leave) are skipped."""
    return [
        (name, manifest_uri(landing_uri, name))
        for name in candidate_batch_ids(storage, landing_uri)
        if has_manifest(storage, landing_uri, name)
    ]


def candidate_batch_ids(storage: Storage, landing_uri: str) -> list[str]:
    """Names under ``landing_uri`` that can be batch folders (one listing; manifests not checked)."""
    return [
        name
        for name in storage.list_children(landing_uri)
        if BATCH_ID.fullmatch(name) and not name.startswith(".")
    ]


def has_manifest(storage: Storage, landing_uri: str, batch_id: str) -> bool:
    """Is the batch complete (its manifest written)? One request."""
    return storage.exists(manifest_uri(landing_uri, batch_id))


def read_and_verify(storage: Storage, landing_uri: str, batch_id: str) -> Manifest:
    """The batch's manifest, checked against its files; ManifestError naming the first problem.

    Other errors (the store cannot be reached, access denied) propagate: they say nothing about the batch
    and must not mark it invalid."""
    uri = manifest_uri(landing_uri, batch_id)
    raw = _read_manifest_bytes(storage, uri, batch_id)
    manifest = _parse_manifest(raw, landing_uri, batch_id, uri)
    rows, digest = 0, hashlib.sha256()
    for name, file_uri in zip(manifest.files, manifest.file_uris, strict=True):
        rows += _hash_and_count(storage, file_uri, name, digest, batch_id)
    if rows != manifest.rows:
        raise ManifestError(batch_id, f"manifest says {manifest.rows} rows, the files hold {rows}")
    if digest.hexdigest() != manifest.sha256:
        raise ManifestError(
            batch_id, f"sha256 mismatch: manifest {manifest.sha256}, files {digest.hexdigest()}"
        )
    return manifest


def _read_manifest_bytes(storage: Storage, uri: str, batch_id: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except Exception as exc:
        if _is_not_found(exc):
            raise ManifestError(batch_id, f"{MANIFEST_NAME} not found at {uri}") from None
        raise


def _parse_manifest(raw: bytes, landing_uri: str, batch_id: str, uri: str) -> Manifest:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(batch_id, f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ManifestError(batch_id, f"{MANIFEST_NAME} is nested too deeply to be a manifest") from None
    if not isinstance(body, dict):
        raise ManifestError(batch_id, f"{MANIFEST_NAME} is not a JSON object")
    missing = [f for f in MANIFEST_FIELDS if f not in body]
    if missing:
        raise ManifestError(batch_id, f"{MANIFEST_NAME} lacks {', '.join(missing)}")
    # The manifest is the producer's contract: a key it does not define (a typo such as "row", or a field
    # the pipeline would silently ignore) is refused rather than guessed at.
    unknown = sorted(set(body) - set(MANIFEST_FIELDS))
    if unknown:
        raise ManifestError(batch_id, f"{MANIFEST_NAME} has unknown key(s) {', '.join(map(repr, unknown))}")
    if body["batch_id"] != batch_id:
        raise ManifestError(batch_id, f"manifest batch_id {body['batch_id']!r} does not match its folder")
    if not BATCH_ID.fullmatch(batch_id):
        raise ManifestError(batch_id, "batch id does not match ^[A-Za-z0-9_.=-]{1,128}$")
    start, end = (_window_bound(body, name, batch_id) for name in ("window_start", "window_end"))
    if not start < end:
        raise ManifestError(
            batch_id, f"window_start {body['window_start']} is not before window_end {body['window_end']}"
        )
    rows = body["rows"]
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise ManifestError(batch_id, f"rows must be a non-negative integer, got {rows!r}")
    sha = body["sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise ManifestError(batch_id, f"sha256 must be 64 lower-case hex digits, got {sha!r}")
    files = _check_file_names(body["files"], batch_id)
    return Manifest(
        batch_id=batch_id,
        window_start=start,
        window_end=end,
        rows=rows,
        sha256=sha,
        files=files,
        file_uris=tuple(join(landing_uri, batch_id, name) for name in files),
        manifest_uri=uri,
    )


def _window_bound(body: dict[str, Any], name: str, batch_id: str) -> datetime:
    try:
        return parse_utc(body[name])
    except ValueError as exc:
        raise ManifestError(batch_id, f"bad {name}: {exc}") from None


def _check_file_names(files: Any, batch_id: str) -> tuple[str, ...]:
    if not isinstance(files, list) or not files:
        raise ManifestError(batch_id, "files must be a non-empty list of file names")
    for name in files:
        # Names stay inside the batch folder: a manifest cannot point the pipeline at other data.
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or name in (".", "..", MANIFEST_NAME):
            shown = (
                name
                if not isinstance(name, str) or len(name) <= 200
                else f"{name[:200]}... ({len(name)} characters)"
            )
            raise ManifestError(batch_id, f"bad file name in manifest: {shown!r}")
    if len(set(files)) != len(files):
        raise ManifestError(batch_id, "manifest lists a file twice")
    return tuple(files)


def _hash_and_count(storage: Storage, uri: str, name: str, digest: Any, batch_id: str) -> int:
    """Feed the file's bytes to ``digest``; return its line count (a last line without ``\\n`` counts)."""
    lines, last = 0, b"\n"
    try:
        stream = storage.open_stream(uri)
    except Exception as exc:
        if _is_not_found(exc):
            raise ManifestError(batch_id, f"file {name} listed in the manifest is missing") from None
        raise
    with stream:
        while chunk := stream.read(_READ_CHUNK):
            storage.stats.add(bytes_read=len(chunk))
            digest.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines if last == b"\n" else lines + 1


def _is_not_found(exc: Exception) -> bool:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return True
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("NoSuchKey", "404", "NotFound")
