"""What the last maintenance run of a table saw, kept as one JSON object per table under ``state_uri``.

- ``files``: every file the table reached after the last run: the files reached now and not then are
  the ones created since, which get the ``created`` tag.
- ``handled``: unreferenced files this process tagged (kept until they are gone), so the orphan sweep
  does not read their tags again every night.
- ``pending``: unreferenced files of a committed expiry whose delete or tag has not finished. It is
  written right after the commit and cleared when the action is done: a run that dies in between leaves
  the list, and the next run finishes it first. Nothing an expiry unreferences is forgotten.
- ``compaction_writes``: the uuids that name every file the run's compaction writes (``compaction``'s
  ``write_ids``), saved before its first write and cleared when the step is done: the files of a run
  killed before its commit are found by name and deleted by the next run (those a commit made part of
  the table are kept).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from botocore.exceptions import ClientError

from dataplatform.s3.objects import split_uri


@dataclass
class TableState:
    files: list[str] | None = None
    handled: list[str] = field(default_factory=list)
    pending: dict | None = None
    compaction_writes: list[str] = field(default_factory=list)
    metadata_location: str | None = None
    updated_at: str | None = None


def state_uri_for(state_root: str, identifier: str) -> str:
    return f"{state_root.rstrip('/')}/{identifier}.json"


def load_state(s3, uri: str) -> TableState:
    bucket, key = split_uri(uri)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return TableState()
        raise
    return TableState(**json.loads(body))


def save_state(s3, uri: str, state: TableState) -> None:
    bucket, key = split_uri(uri)
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(asdict(state), sort_keys=True).encode(),
        ContentType="application/json",
    )
