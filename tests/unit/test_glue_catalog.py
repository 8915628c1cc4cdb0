"""Per-partition error handling of BatchCreatePartition / BatchGetPartition.

moto never answers with per-partition throttling or UnprocessedKeys, so these cases use a scripted Glue
client; everything moto can do is covered against the moto server in tests/integration.
"""

import threading

import pytest

from dataplatform.glue import catalog
from dataplatform.glue.catalog import (
    TableDescriptor,
    all_partitions,
    chunked,
    create_partitions,
    existing_partitions,
)

pytestmark = pytest.mark.unit

DESCRIPTOR = TableDescriptor(
    database="db",
    table="t",
    partition_keys=("dt",),
    storage_descriptor={
        "Columns": [{"Name": "a", "Type": "string"}],
        "SerdeInfo": {"SerializationLibrary": "x"},
    },
)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(catalog.time, "sleep", lambda _: None)


class ScriptedGlue:
    """Answers BatchCreatePartition with scripted per-partition errors: ``create_errors`` maps partition
    values to the error codes of its successive attempts (then success). Order-independent, since chunks
    are written concurrently."""

    def __init__(self, create_errors=None, get_unprocessed=()):
        self.create_errors = {values: list(codes) for values, codes in (create_errors or {}).items()}
        self.get_unprocessed = list(get_unprocessed)
        self.create_calls: list[list[dict]] = []
        self.get_calls: list[list[dict]] = []
        self._lock = threading.Lock()

    def batch_create_partition(self, DatabaseName, TableName, PartitionInputList):
        assert len(PartitionInputList) <= catalog.BATCH_CREATE_LIMIT, "Glue rejects more than 100 a call"
        errors = []
        with self._lock:
            self.create_calls.append(PartitionInputList)
            for partition in PartitionInputList:
                codes = self.create_errors.get(tuple(partition["Values"]))
                if codes:
                    code = codes.pop(0)
                    errors.append(
                        {
                            "PartitionValues": partition["Values"],
                            "ErrorDetail": {
                                "ErrorCode": code,
                                "ErrorMessage": f"{code} for {partition['Values']}",
                            },
                        }
                    )
        return {"Errors": errors}

    def batch_get_partition(self, DatabaseName, TableName, PartitionsToGet):
        assert len(PartitionsToGet) <= catalog.BATCH_GET_LIMIT
        self.get_calls.append(PartitionsToGet)
        unprocessed = self.get_unprocessed.pop(0) if self.get_unprocessed else 0
        done, left = PartitionsToGet[unprocessed:], PartitionsToGet[:unprocessed]
        return {
            "Partitions": [{"Values": p["Values"]} for p in done if p["Values"][0].endswith("0")],
            "UnprocessedKeys": left,
        }


def _partitions(n):
    return [((f"2023-{i:05d}",), f"s3://lake/t/dt=2023-{i:05d}/") for i in range(n)]


def test_chunked_respects_the_limit_and_keeps_everything():
    chunks = list(chunked(list(range(250)), 100))
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert [x for c in chunks for x in c] == list(range(250))
    with pytest.raises(ValueError):
        list(chunked([1], 0))


def test_creates_in_calls_of_at_most_100_with_the_table_schema():
    glue = ScriptedGlue()
    result = create_partitions(glue, DESCRIPTOR, _partitions(250))
    assert sorted(len(call) for call in glue.create_calls) == [50, 100, 100]
    assert result.write_calls == 3 and sorted(result.created) == [v for v, _ in _partitions(250)]
    assert not result.failed
    first = next(call for call in glue.create_calls if call[0]["Values"] == ["2023-00000"])[0]
    assert first["StorageDescriptor"]["Location"] == "s3://lake/t/dt=2023-00000/"
    assert first["StorageDescriptor"]["Columns"] == DESCRIPTOR.storage_descriptor["Columns"]
    assert "Location" not in DESCRIPTOR.storage_descriptor, "the table's descriptor must not be mutated"


def test_already_exists_counts_as_present():
    glue = ScriptedGlue(create_errors={("2023-00001",): ["AlreadyExistsException"]})
    result = create_partitions(glue, DESCRIPTOR, _partitions(3))
    assert result.already_present == [("2023-00001",)]
    assert sorted(result.created) == [("2023-00000",), ("2023-00002",)]


def test_throttled_partitions_are_retried_alone():
    glue = ScriptedGlue(create_errors={("2023-00001",): ["ThrottlingException"]})
    result = create_partitions(glue, DESCRIPTOR, _partitions(3))
    assert [len(call) for call in glue.create_calls] == [3, 1]
    assert glue.create_calls[1][0]["Values"] == ["2023-00001"]
    assert len(result.created) == 3 and not result.failed


def test_other_errors_fail_only_their_partition_and_the_rest_is_registered():
    glue = ScriptedGlue(create_errors={("2023-00001",): ["InvalidInputException"]})
    result = create_partitions(glue, DESCRIPTOR, _partitions(201))
    assert result.failed == {
        ("2023-00001",): "InvalidInputException: InvalidInputException for ['2023-00001']"
    }
    assert len(result.created) == 200


def test_throttling_that_never_ends_becomes_a_failure():
    always = {("2023-00000",): ["ThrottlingException"] * 5}
    result = create_partitions(ScriptedGlue(create_errors=always), DESCRIPTOR, _partitions(1), max_attempts=5)
    assert list(result.failed) == [("2023-00000",)]
    assert result.failed[("2023-00000",)].startswith("ThrottlingException")


def test_existing_partitions_reads_1000_a_call_and_retries_unprocessed_keys():
    glue = ScriptedGlue(get_unprocessed=[10, 0, 0])
    values = [(f"2023-{i:05d}",) for i in range(1500)]
    found, calls = existing_partitions(glue, "db", "t", values)
    assert [len(c) for c in glue.get_calls] == [1000, 10, 500]
    assert calls == 3
    assert found == {v for v in values if v[0].endswith("0")}


def test_existing_partitions_gives_up_loudly():
    glue = ScriptedGlue(get_unprocessed=[1] * 3)
    with pytest.raises(RuntimeError, match="still unprocessed"):
        existing_partitions(glue, "db", "t", [("a",)], max_attempts=3)


def test_all_partitions_reads_every_page_without_column_schemas():
    class PagedGlue:
        def __init__(self):
            self.kwargs = None

        def get_paginator(self, name):
            assert name == "get_partitions"
            return self

        def paginate(self, **kwargs):
            self.kwargs = kwargs
            yield {"Partitions": [{"Values": [f"2023-{i:05d}"]} for i in range(1000)]}
            yield {"Partitions": [{"Values": [f"2023-{i:05d}"]} for i in range(1000, 1500)]}

    glue = PagedGlue()
    found, calls = all_partitions(glue, "db", "t")
    assert calls == 2 and len(found) == 1500 and ("2023-01499",) in found
    assert glue.kwargs["ExcludeColumnSchema"] is True
    assert glue.kwargs["PaginationConfig"] == {"PageSize": 1000}
