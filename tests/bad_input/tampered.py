"""Tampered landing batches: a good batch's part files copied to ``tamper-<case>/`` with its manifest (or
its data) changed one way. ``write_tampered_batches`` lands them all in the seeded lake; each case says
which field the refusal must name."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from dataplatform.reconciliation.manifests import MANIFEST_NAME
from spark_jobs.common.storage import Storage, join

_DROP = object()


class Tamper(NamedTuple):
    changes: dict[str, Any]  # manifest key -> new value (_DROP: key removed)
    names: tuple[str, ...]  # the refusal must name one of these
    raw_manifest: bytes | None = None  # the manifest's bytes instead of JSON of the changed dict
    data: str | None = None  # "flip_byte" | "extra_line": the first part file changed instead
    # The part files are landed too, and the batch lands on S3 (the cases that get as far as reading the
    # files). The others land in a file:// area: every S3 object costs each fingerprint a millisecond.
    with_files: bool = False


def _bad_values(field: str, values: dict[str, Any], names: tuple[str, ...] | None = None) -> dict:
    return {f"{field}-{case}": Tamper({field: value}, names or (field,)) for case, value in values.items()}


BAD_TIMES = {
    "missing": _DROP,
    "int": 1709632800,
    "no_z": "2024-03-05T10:00:00",
    "offset": "2024-03-05T10:00:00+00:00",
    "offset_and_z": "2024-03-05T10:00:00+01:00Z",
    "month_13": "2024-13-05T10:00:00Z",
    "feb_30": "2024-02-30T10:00:00Z",
    "garbage": "yesterday",
    "empty": "",
    "null": None,
    "sql_quote": "2024-03-05T10:00:00Z' OR '1'='1",
    "newline": "2024-03-05T10:00:00Z\n",
}

CASES: dict[str, Tamper] = {
    **_bad_values(
        "batch_id",
        {
            "missing": _DROP,
            "other": "20240305T1010",
            "int": 7,
            "null": None,
            "traversal": "../x",
            "empty": "",
        },
    ),
    **_bad_values("window_start", BAD_TIMES),
    **_bad_values("window_end", BAD_TIMES),
    "window-reversed": Tamper(
        {"window_start": "2024-03-05T11:00:00Z", "window_end": "2024-03-05T10:00:00Z"}, ("window_start",)
    ),
    "window-empty": Tamper(
        {"window_start": "2024-03-05T10:00:00Z", "window_end": "2024-03-05T10:00:00Z"}, ("window_start",)
    ),
    **_bad_values(
        "rows",
        {
            "missing": _DROP,
            "negative": -1,
            "string": "30",
            "float": 30.0,
            "bool": True,
            "null": None,
            "huge": 10**30,
        },
    ),
    "rows-off-by-one": Tamper({"rows": "+1"}, ("rows",), with_files=True),
    **_bad_values(
        "sha256",
        {
            "missing": _DROP,
            "empty": "",
            "upper": "A" * 64,
            "short": "a" * 63,
            "int": 12,
            "newline": "a" * 64 + "\n",
        },
    ),
    "sha256-other-digest": Tamper({"sha256": "0" * 64}, ("sha256",), with_files=True),
    "files-absent-file": Tamper({"files": ["part-00009.jsonl"]}, ("file",), with_files=True),
    **_bad_values(
        "files",
        {
            "missing": _DROP,
            "empty_list": [],
            "string": "part-00000.jsonl",
            "empty_name": [""],
            "traversal": ["../20240305T1010/part-00000.jsonl"],
            "subfolder": ["a/part-00000.jsonl"],
            "dotdot": [".."],
            "itself": [MANIFEST_NAME],
            "duplicate": ["part-00000.jsonl", "part-00000.jsonl"],
            "int": [1],
            "nul": ["part-00000.jsonl\x00"],
            "huge": ["p" * 100_000],
        },
        names=("file",),
    ),
    "unknown-key": Tamper({"producer_note": "hi"}, ("producer_note",)),
    "unknown-key-typo": Tamper({"row": 30}, ("row",)),
    "manifest-not-json": Tamper({}, (MANIFEST_NAME,), raw_manifest=b"{not json"),
    "manifest-array": Tamper({}, (MANIFEST_NAME,), raw_manifest=b"[]"),
    "manifest-empty": Tamper({}, (MANIFEST_NAME,), raw_manifest=b""),
    "manifest-not-utf8": Tamper({}, (MANIFEST_NAME,), raw_manifest=b"\xff\xfe{}"),
    "manifest-huge-nesting": Tamper({}, (MANIFEST_NAME,), raw_manifest=b"[" * 100_000),
    "data-flipped-byte": Tamper({}, ("sha256",), data="flip_byte", with_files=True),
    "data-extra-line": Tamper({}, ("rows",), data="extra_line", with_files=True),
}


def folder(case: str) -> str:
    return f"tamper-{case.replace('_', '-')}"


def landing_of(case: str, s3_landing: str, local_landing: str) -> str:
    return s3_landing if CASES[case].with_files else local_landing


def write_tampered_batches(
    storage: Storage, s3_landing: str, local_landing: str, good: dict[str, Any]
) -> None:
    source = good["batch_id"]
    parts = {name: storage.read_bytes(join(s3_landing, source, name)) for name in good["files"]}
    for case, tamper in CASES.items():
        batch_id = folder(case)
        landing_uri = landing_of(case, s3_landing, local_landing)
        data = dict(parts)
        first = good["files"][0]
        if tamper.data == "flip_byte":
            data[first] = bytes([data[first][0] ^ 1]) + data[first][1:]
        elif tamper.data == "extra_line":
            data[first] = data[first] + b'{"event_id": "smuggled"}\n'
        for name, body in data.items() if tamper.with_files else ():
            storage.write_bytes(join(landing_uri, batch_id, name), body)
        manifest = {**good, "batch_id": batch_id}
        for key, value in tamper.changes.items():
            if value is _DROP:
                manifest.pop(key)
            elif key == "rows" and value == "+1":
                manifest["rows"] = good["rows"] + 1
            else:
                manifest[key] = value
        raw = tamper.raw_manifest if tamper.raw_manifest is not None else json.dumps(manifest).encode()
        storage.write_bytes(join(landing_uri, batch_id, MANIFEST_NAME), raw)
