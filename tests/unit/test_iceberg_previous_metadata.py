"""Which previous metadata files list a snapshot: plain and gzipped (``.gz.metadata.json``, what Iceberg
Java writes with ``write.metadata.compression-codec=gzip``), a file already gone lists nothing."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest
from pyiceberg.io.pyarrow import PyArrowFileIO

from dataplatform.iceberg.files import previous_metadata_listing

pytestmark = pytest.mark.unit


def test_previous_metadata_files_listing_a_snapshot(tmp_path):
    def write(name: str, snapshot_ids: list[int], gzipped: bool = False) -> str:
        body = json.dumps({"snapshots": [{"snapshot-id": n} for n in snapshot_ids]}).encode()
        (tmp_path / name).write_bytes(gzip.compress(body) if gzipped else body)
        return str(tmp_path / name)

    log = [
        write("00000-a.metadata.json", []),
        write("00001-b.gz.metadata.json", [7], gzipped=True),
        write("00002-c.metadata.json", [7, 8]),
        write("00003-d.metadata.json", [9]),
        str(tmp_path / "00004-gone.metadata.json"),
    ]
    metadata = SimpleNamespace(metadata_log=[SimpleNamespace(metadata_file=path) for path in log])

    assert previous_metadata_listing(PyArrowFileIO(), metadata, {7}) == log[1:3]
    assert previous_metadata_listing(PyArrowFileIO(), metadata, {8, 9}) == log[2:4]
    assert previous_metadata_listing(PyArrowFileIO(), metadata, set()) == []
