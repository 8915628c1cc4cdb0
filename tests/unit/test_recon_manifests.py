"""Landing batches: discovery (manifest written last) and manifest verification against the files."""

import hashlib
import json
from datetime import UTC, datetime

import pytest

from dataplatform.reconciliation.generator import GeneratorConfig, generate_batches, write_batch
from dataplatform.reconciliation.manifests import ManifestError, discover_batches, read_and_verify
from spark_jobs.common.storage import Storage

pytestmark = pytest.mark.unit

START = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
CONFIG = GeneratorConfig(seed=3, n_keys=20, events_per_batch=40, files_per_batch=3)


@pytest.fixture
def landing(tmp_path):
    return f"file://{tmp_path}/landing/"


def land(storage, landing, batches=2):
    generated = generate_batches(CONFIG, batches=batches, start=START)
    for batch in generated:
        write_batch(storage, landing, batch, CONFIG.files_per_batch)
    return generated


def rewrite_manifest(tmp_path, folder, changes):
    path = tmp_path / "landing" / folder / "_manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))
    return manifest


def test_discovery_lists_batches_with_a_manifest_only(tmp_path, landing):
    storage = Storage()
    generated = land(storage, landing)
    # A batch still being written: part files, no manifest yet.
    storage.write_bytes(f"{landing}20240305T1100/part-00000.jsonl", b"{}\n")
    storage.write_bytes(f"{landing}stray-file.txt", b"not a batch")
    (tmp_path / "landing" / "bad name!").mkdir()

    found = discover_batches(storage, landing)

    assert found == [(b.batch_id, f"{landing}{b.batch_id}/_manifest.json") for b in generated]


def test_discovery_of_a_missing_landing_folder_is_empty(landing):
    assert discover_batches(Storage(), landing) == []


def test_verified_manifest_describes_the_batch(landing):
    storage = Storage()
    batch = land(storage, landing, batches=1)[0]

    manifest = read_and_verify(storage, landing, batch.batch_id)

    assert manifest.batch_id == batch.batch_id == "20240305T1000"
    assert (manifest.window_start, manifest.window_end) == (batch.window_start, batch.window_end)
    assert manifest.rows == len(batch.lines) == 40
    assert manifest.files == ("part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl")
    assert manifest.file_uris == tuple(f"{landing}20240305T1000/{name}" for name in manifest.files)
    expected_sha = hashlib.sha256("".join(line + "\n" for line in batch.lines).encode()).hexdigest()
    assert manifest.sha256 == expected_sha


def test_files_are_streamed_not_read_whole(landing):
    class StreamOnly(Storage):
        def read_bytes(self, uri):
            assert uri.endswith("_manifest.json"), f"{uri} read whole"
            return super().read_bytes(uri)

    storage = StreamOnly()
    batch = land(storage, landing, batches=1)[0]
    assert read_and_verify(storage, landing, batch.batch_id).rows == 40


def test_a_last_line_without_newline_is_a_row(landing):
    storage = Storage()
    data = b'{"a": 1}\n{"b": 2}'
    storage.write_bytes(f"{landing}b1/part-00000.jsonl", data)
    storage.write_json(
        f"{landing}b1/_manifest.json",
        {
            "batch_id": "b1",
            "window_start": "2024-03-05T10:00:00Z",
            "window_end": "2024-03-05T10:10:00Z",
            "rows": 2,
            "files": ["part-00000.jsonl"],
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert read_and_verify(storage, landing, "b1").rows == 2


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sha256": "0" * 64}, "sha256 mismatch"),
        ({"rows": 41}, "manifest says 41 rows, the files hold 40"),
        ({"batch_id": "20240305T0000"}, "does not match its folder"),
        ({"window_end": "2024-03-05T10:00:00Z"}, "is not before window_end"),
        ({"window_start": "yesterday"}, "bad window"),
        ({"files": ["../20240305T1010/part-00000.jsonl"]}, "bad file name"),
        ({"files": []}, "non-empty list"),
        ({"rows": -1}, "non-negative integer"),
        ({"sha256": "XYZ"}, "64 lower-case hex"),
    ],
)
def test_bad_manifest_is_rejected_with_the_reason(tmp_path, landing, changes, reason):
    storage = Storage()
    land(storage, landing, batches=1)
    rewrite_manifest(tmp_path, "20240305T1000", changes)

    with pytest.raises(ManifestError) as caught:
        read_and_verify(storage, landing, "20240305T1000")

    assert reason in caught.value.reason
    assert caught.value.batch_id == "20240305T1000"


def test_missing_file_is_named(tmp_path, landing):
    storage = Storage()
    land(storage, landing, batches=1)
    (tmp_path / "landing" / "20240305T1000" / "part-00001.jsonl").unlink()

    with pytest.raises(ManifestError) as caught:
        read_and_verify(storage, landing, "20240305T1000")

    assert caught.value.reason == "file part-00001.jsonl listed in the manifest is missing"


def test_manifest_that_is_not_json_or_lacks_fields(tmp_path, landing):
    storage = Storage()
    land(storage, landing, batches=2)
    (tmp_path / "landing" / "20240305T1000" / "_manifest.json").write_text('{"batch_id": ')
    (tmp_path / "landing" / "20240305T1010" / "_manifest.json").write_text('{"batch_id": "20240305T1010"}')

    with pytest.raises(ManifestError, match="not valid JSON"):
        read_and_verify(storage, landing, "20240305T1000")
    with pytest.raises(ManifestError, match="lacks window_start, window_end, rows, files, sha256"):
        read_and_verify(storage, landing, "20240305T1010")
    with pytest.raises(ManifestError, match=r"_manifest\.json not found"):
        read_and_verify(storage, landing, "20240305T1020")
