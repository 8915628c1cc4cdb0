"""The artifact index on moto's DynamoDB: part files on file:// and on S3, read back one artifact at a time."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from dataplatform.reconciliation import index
from spark_jobs.common.storage import Storage

pytestmark = [pytest.mark.integration]

TABLE = "recon_index"
# Multi-byte UTF-8 in the artifacts, so byte offsets and character offsets differ.
ENTITIES = ["AMZN_US", "Zürich_€", "日本_JP", "😀_EMOJI"]


def artifact(key: str, version: int, seq: int, entity: str = "AMZN_US") -> dict:
    return {
        "key": key,
        "version": version,
        "batches": [f"b{seq}"],
        "entities": [entity],
        "event_count": version,
        "first_event_time": "2024-03-05T10:03:12.123Z",
        "last_event_time": "2024-03-05T10:09:00.000Z",
        "totals": [
            {
                "currency": "EUR",
                "receivable": 100 * version,
                "payable": 0,
                "royalty": 0,
                "amortization": 0,
                "remittance": 0,
                "correction": 0,
                "balance": 100 * version,
            }
        ],
        "status": "OPEN",
        "seq": seq,
    }


def part_file_bytes(artifacts: list[dict]) -> tuple[bytes, dict[str, tuple[int, int, bytes]]]:
    """The part file and, per key, the (byte offset, byte length, line) it must be indexed at."""
    data, where = b"", {}
    for item in artifacts:
        line = json.dumps(item, ensure_ascii=False).encode()
        where[item["key"]] = (len(data), len(line), line)
        data += line + b"\n"
    return data, where


def artifacts_of_run(keys: list[str], version: int, seq: int) -> list[dict]:
    return [artifact(key, version, seq, ENTITIES[i % len(ENTITIES)]) for i, key in enumerate(keys)]


class CountingClient:
    """A boto3 client that counts the calls made through it."""

    def __init__(self, client):
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in {"get_waiter", "get_paginator"}:
            return attribute

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


class UnprocessedOnFirstCalls(CountingClient):
    """DynamoDB under throttling: the first ``failing_calls`` batch calls write (or read) only the first
    item and hand the rest back unprocessed, as DynamoDB does when it runs out of capacity."""

    def __init__(self, client, failing_calls: int = 1):
        super().__init__(client)
        self.failing_calls = failing_calls

    def batch_write_item(self, RequestItems):
        self.calls["batch_write_item"] += 1
        if self.calls["batch_write_item"] > self.failing_calls:
            return self._client.batch_write_item(RequestItems=RequestItems)
        ((table, requests),) = RequestItems.items()
        self._client.batch_write_item(RequestItems={table: requests[:1]})
        return {"UnprocessedItems": {table: requests[1:]}} if requests[1:] else {}

    def batch_get_item(self, RequestItems):
        self.calls["batch_get_item"] += 1
        if self.calls["batch_get_item"] > self.failing_calls:
            return self._client.batch_get_item(RequestItems=RequestItems)
        ((table, request),) = RequestItems.items()
        first = self._client.batch_get_item(RequestItems={table: {**request, "Keys": request["Keys"][:1]}})
        rest = {table: {**request, "Keys": request["Keys"][1:]}} if request["Keys"][1:] else {}
        return {"Responses": first["Responses"], "UnprocessedKeys": rest}


@pytest.fixture
def dynamodb(aws):
    client = aws.client("dynamodb")
    index.create_index_table(client, TABLE)
    return client


@pytest.fixture(params=["file", "s3"])
def location(request, aws, tmp_path) -> tuple[Storage, str]:
    """(storage, folder URI) for part files on the local disk or in a moto S3 bucket."""
    if request.param == "file":
        return Storage(), f"file://{tmp_path}/state/"
    aws.s3.create_bucket(Bucket="recon-work")
    return Storage(aws.s3), "s3://recon-work/state/"


def write_part(storage: Storage, uri: str, artifacts: list[dict]) -> dict[str, tuple[int, int, bytes]]:
    data, where = part_file_bytes(artifacts)
    storage.write_bytes(uri, data)
    return where


def test_create_index_table_is_idempotent(aws):
    client = aws.client("dynamodb")
    assert index.create_index_table(client, TABLE) is True
    assert index.create_index_table(client, TABLE) is False
    table = client.describe_table(TableName=TABLE)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "artifact_key", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_create_index_table_rejects_a_table_with_another_key(aws):
    client = aws.client("dynamodb")
    client.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    with pytest.raises(ValueError, match="recon_index exists with key schema"):
        index.create_index_table(client, TABLE)


def test_index_part_file_then_get_each_artifact_back(dynamodb, location):
    storage, folder = location
    keys = [f"ORD-{n:07d}" for n in range(130)]  # > 100 (BatchGetItem) and > 25 (BatchWriteItem) per call
    part_uri = folder + "00000003/part-00000.txt"
    where = write_part(storage, part_uri, artifacts_of_run(keys, version=2, seq=3))

    stats = index.index_part_file(dynamodb, storage, TABLE, part_uri, seq=3, writers=4)

    assert {k: stats[k] for k in ("entries", "written", "skipped_newer", "batch_calls", "retries")} == {
        "entries": 130,
        "written": 130,
        "skipped_newer": 0,
        "batch_calls": 6,  # ceil(130 / 25)
        "retries": 0,
    }
    assert dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"] == 130
    found = index.lookup(dynamodb, TABLE, [*keys, "ORD-UNKNOWN"], threads=3)
    assert found == {
        key: index.IndexEntry(key, part_uri, offset, length, 2, 3)
        for key, (offset, length, _) in where.items()
    }
    for key, (offset, length, line) in where.items():
        assert storage.read_range(part_uri, offset, length) == line
        assert index.get_artifact(dynamodb, storage, TABLE, key) == json.loads(line)


def test_offsets_are_bytes_not_characters(dynamodb, tmp_path):
    storage = Storage()
    part_uri = f"file://{tmp_path}/part-00000.txt"
    artifacts = [artifact(f"K{n}", 1, 1, entity="日本😀€" * (n + 1)) for n in range(5)]
    where = write_part(storage, part_uri, artifacts)
    entries = list(index.part_file_entries(storage, part_uri))
    assert [(e.key, e.offset, e.length, e.version) for e in entries] == [
        (key, offset, length, 1) for key, (offset, length, _) in where.items()
    ]
    # Character offsets would fall short: the file is longer in bytes than in characters.
    last = entries[-1]
    size = (tmp_path / "part-00000.txt").stat().st_size
    assert last.offset + last.length + 1 == size > len((tmp_path / "part-00000.txt").read_text())
    index.index_part_file(dynamodb, storage, TABLE, part_uri, seq=1)
    assert index.get_artifact(dynamodb, storage, TABLE, "K4")["entities"] == ["日本😀€" * 5]


def test_get_makes_one_index_read_and_one_range_read(dynamodb, tmp_path):
    storage = Storage()
    part_uri = f"file://{tmp_path}/part-00000.txt"
    write_part(storage, part_uri, artifacts_of_run([f"K{n}" for n in range(40)], version=1, seq=1))
    index.index_part_file(dynamodb, storage, TABLE, part_uri, seq=1)

    reader, counting = Storage(), CountingClient(dynamodb)
    got = index.get_artifact(counting, reader, TABLE, "K17")

    assert got["key"] == "K17" and got["version"] == 1
    assert dict(counting.calls) == {"get_item": 1}
    assert reader.stats.as_dict()["range_reads"] == 1
    assert reader.stats.as_dict()["reads"] == 0
    assert reader.stats.as_dict()["lists"] == 0


def test_get_of_a_missing_key_returns_none(dynamodb):
    reader, counting = Storage(), CountingClient(dynamodb)
    assert index.get_artifact(counting, reader, TABLE, "ORD-NOPE") is None
    assert dict(counting.calls) == {"get_item": 1}
    assert reader.stats.as_dict()["range_reads"] == 0


def test_get_rejects_bytes_that_are_not_the_indexed_artifact(dynamodb, tmp_path):
    storage = Storage()
    part_uri = f"file://{tmp_path}/part-00000.txt"
    first = artifacts_of_run(["A", "B"], version=1, seq=1)
    write_part(storage, part_uri, first)
    index.index_part_file(dynamodb, storage, TABLE, part_uri, seq=1)
    # The file is rewritten behind the index's back: B's version moves to A's offset.
    write_part(storage, part_uri, [artifact("A", 2, 1), artifact("B", 1, 1)])
    with pytest.raises(ValueError, match=r"index entry 'A' \(version 1\) -> .*version 2"):
        index.get_artifact(dynamodb, storage, TABLE, "A")


def test_unprocessed_items_are_retried(dynamodb, tmp_path):
    storage = Storage()
    part_uri = f"file://{tmp_path}/part-00000.txt"
    keys = [f"K{n:03d}" for n in range(60)]
    write_part(storage, part_uri, artifacts_of_run(keys, version=1, seq=1))
    flaky = UnprocessedOnFirstCalls(dynamodb, failing_calls=2)

    stats = index.index_part_file(flaky, storage, TABLE, part_uri, seq=1, writers=1)

    # 3 batches (25, 25, 10): the first needs 2 retries (each failing call writes one item), so 5 calls.
    assert (stats["written"], stats["batch_calls"], stats["retries"]) == (60, 5, 2)
    assert sorted(index.lookup(dynamodb, TABLE, keys)) == keys


def test_unprocessed_items_give_up_after_bounded_attempts(dynamodb, tmp_path):
    storage = Storage()
    part_uri = f"file://{tmp_path}/part-00000.txt"
    write_part(storage, part_uri, artifacts_of_run([f"K{n}" for n in range(10)], version=1, seq=1))
    always_throttled = UnprocessedOnFirstCalls(dynamodb, failing_calls=10**6)
    with pytest.raises(RuntimeError, match=r"for file://.*part-00000.txt: 7 items still unprocessed after 3"):
        index.index_part_file(always_throttled, storage, TABLE, part_uri, seq=1, max_attempts=3)


def test_lookup_retries_unprocessed_keys(dynamodb, tmp_path):
    storage = Storage()
    part_uri = f"file://{tmp_path}/part-00000.txt"
    keys = [f"K{n:03d}" for n in range(150)]
    write_part(storage, part_uri, artifacts_of_run(keys, version=1, seq=1))
    index.index_part_file(dynamodb, storage, TABLE, part_uri, seq=1)
    flaky = UnprocessedOnFirstCalls(dynamodb, failing_calls=1)

    found = index.lookup(flaky, TABLE, keys + keys[:5], threads=1)  # repeats are looked up once

    assert sorted(found) == keys
    assert flaky.calls["batch_get_item"] == 3  # 2 chunks (100 + 50) + 1 retry


def test_plain_mode_in_run_order_ends_with_the_newest(dynamodb, tmp_path):
    storage = Storage()
    keys = ["A", "B", "C"]
    run1 = f"file://{tmp_path}/00000001/part-00000.txt"
    run2 = f"file://{tmp_path}/00000002/part-00000.txt"
    write_part(storage, run1, artifacts_of_run(keys, version=1, seq=1))
    where2 = write_part(storage, run2, artifacts_of_run(["B", "C"], version=2, seq=2))

    index.index_part_file(dynamodb, storage, TABLE, run1, seq=1)
    index.index_part_file(dynamodb, storage, TABLE, run2, seq=2)

    found = index.lookup(dynamodb, TABLE, keys)
    assert {key: (e.file, e.version, e.seq) for key, e in found.items()} == {
        "A": (run1, 1, 1),
        "B": (run2, 2, 2),
        "C": (run2, 2, 2),
    }
    assert index.get_artifact(dynamodb, storage, TABLE, "B") == json.loads(where2["B"][2])


def test_conditional_mode_never_replaces_a_newer_version(dynamodb, tmp_path):
    storage = Storage()
    run1 = f"file://{tmp_path}/00000001/part-00000.txt"
    run2 = f"file://{tmp_path}/00000002/part-00000.txt"
    write_part(storage, run1, artifacts_of_run(["A", "B", "C"], version=1, seq=1))
    write_part(storage, run2, artifacts_of_run(["B", "C"], version=2, seq=2))
    index.index_part_file(dynamodb, storage, TABLE, run2, seq=2)

    # Run 1 is indexed again after run 2 (cleared and rerun by hand).
    stats = index.index_part_file(dynamodb, storage, TABLE, run1, seq=1, conditional=True)

    assert (stats["entries"], stats["written"], stats["skipped_newer"], stats["batch_calls"]) == (3, 1, 2, 0)
    found = index.lookup(dynamodb, TABLE, ["A", "B", "C"])
    assert {key: (e.version, e.seq) for key, e in found.items()} == {"A": (1, 1), "B": (2, 2), "C": (2, 2)}
    assert index.get_artifact(dynamodb, storage, TABLE, "C")["version"] == 2

    # A rerun of the newest run changes nothing, and a newer version still replaces an older one.
    again = index.index_part_file(dynamodb, storage, TABLE, run2, seq=2, conditional=True)
    assert (again["written"], again["skipped_newer"]) == (0, 2)
    run3 = f"file://{tmp_path}/00000003/part-00000.txt"
    write_part(storage, run3, [artifact("A", 2, 3)])
    newer = index.index_part_file(dynamodb, storage, TABLE, run3, seq=3, conditional=True)
    assert (newer["written"], newer["skipped_newer"]) == (1, 0)
    assert index.lookup(dynamodb, TABLE, ["A"])["A"] == index.IndexEntry(
        "A", run3, 0, newer_length(run3), 2, 3
    )


def newer_length(part_uri: str) -> int:
    return len(Path(part_uri.removeprefix("file://")).read_bytes().rstrip(b"\n"))


def test_a_key_twice_in_a_part_file_is_an_error(dynamodb, tmp_path):
    storage = Storage()
    part_uri = f"file://{tmp_path}/part-00000.txt"
    where = write_part(storage, part_uri, [artifact("A", 1, 1), artifact("B", 1, 1), artifact("A", 2, 1)])
    second = part_file_bytes([artifact("A", 1, 1), artifact("B", 1, 1)])[0]
    assert where["A"][0] == len(second)
    with pytest.raises(ValueError, match=rf"key 'A' appears twice \(byte offsets 0 and {len(second)}\)"):
        index.index_part_file(dynamodb, storage, TABLE, part_uri, seq=1)


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b"not json", "not an artifact JSON line"),
        (b"[1, 2]", "not an artifact"),
        (b'{"version": 1}', "no string 'key'"),
        (b'{"key": "B", "version": "1"}', "no positive integer 'version'"),
        (b"", "not an artifact JSON line"),
    ],
)
def test_a_line_that_is_not_an_artifact_names_file_and_offset(tmp_path, bad_line, reason):
    storage = Storage()
    part_uri = f"file://{tmp_path}/part-00000.txt"
    good = json.dumps(artifact("A", 1, 1)).encode() + b"\n"
    storage.write_bytes(part_uri, good + bad_line + b"\n")
    with pytest.raises(ValueError, match=rf"part-00000.txt at byte offset {len(good)}: .*{reason}"):
        list(index.part_file_entries(storage, part_uri))


def test_storage_reads_of_a_missing_object_and_delete_tree_agree_on_file_and_s3(location):
    storage, folder = location
    for read in (
        lambda: storage.read_bytes(folder + "missing.json"),
        lambda: storage.read_range(folder + "missing.json", 0, 1),
        lambda: storage.open_stream(folder + "missing.json"),
    ):
        with pytest.raises(FileNotFoundError, match=r"missing\.json"):
            read()
    storage.write_bytes(folder + "00000001/part-00000.txt", b"a\n")
    storage.write_bytes(folder + "00000001/_SUCCESS", b"")
    storage.write_bytes(folder + "00000002/part-00000.txt", b"b\n")
    assert storage.delete_tree(folder + "00000001/") == 2
    assert [uri.removeprefix(folder) for uri, _ in storage.list_files(folder)] == ["00000002/part-00000.txt"]
    assert storage.delete_tree(folder + "00000001/") == 0
