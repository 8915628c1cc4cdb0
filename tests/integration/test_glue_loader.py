"""The partition loader against the moto server: the data that lands in Glue, reruns, bad input."""

from datetime import datetime, timedelta

import pytest

from dataplatform.config import GlueTable
from dataplatform.devstack.seed import create_table, put_partitions, put_raw_prefixes
from dataplatform.glue import catalog
from dataplatform.glue.layout import PartitionLayout
from dataplatform.glue.loader import PartitionLoadError, load_partitions

pytestmark = pytest.mark.integration

TABLE = GlueTable(
    database="it_lake",
    table="clicks",
    location="s3://it-lake/clicks/",
    granularity="hour",
    partition_keys=[{"name": "dt", "format": "%Y-%m-%d"}, {"name": "hour", "format": "%H"}],
)
START = datetime(2023, 1, 1)
INVALID = [
    "dt=garbage/hour=00/",
    "dt=2023-13-01/hour=00/",
    "dt=2023-02-30/hour=00/",
    "dt=2023-01-01/hour=99/",
    "dt=2023-01-01/hour=5/",
    "dt=2023-01-02/minute=00/",
    "region=eu/dt=2023-01-01/",
    "dt=2024-06-01/",  # files, but no hour level
    "year=2023/",
    "dt=/hour=00/",
]


class LimitCheckingGlue:
    """The moto Glue client, plus Glue's per-call limits that moto does not enforce, and call counts."""

    def __init__(self, glue, fail_values=()):
        self._glue = glue
        self.fail_values = {tuple(v) for v in fail_values}
        self.calls: dict[str, int] = {}

    def __getattr__(self, name):
        return getattr(self._glue, name)

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def batch_get_partition(self, **kwargs):
        assert len(kwargs["PartitionsToGet"]) <= 1000, "BatchGetPartition takes at most 1,000 keys"
        self._count("BatchGetPartition")
        return self._glue.batch_get_partition(**kwargs)

    def batch_create_partition(self, **kwargs):
        assert len(kwargs["PartitionInputList"]) <= 100, "BatchCreatePartition takes at most 100 partitions"
        self._count("BatchCreatePartition")
        ok = [p for p in kwargs["PartitionInputList"] if tuple(p["Values"]) not in self.fail_values]
        response = self._glue.batch_create_partition(**{**kwargs, "PartitionInputList": ok}) if ok else {}
        injected = [
            {
                "PartitionValues": p["Values"],
                "ErrorDetail": {"ErrorCode": "InvalidInputException", "ErrorMessage": "bad"},
            }
            for p in kwargs["PartitionInputList"]
            if tuple(p["Values"]) in self.fail_values
        ]
        return {"Errors": response.get("Errors", []) + injected}

    def get_table(self, **kwargs):
        self._count("GetTable")
        return self._glue.get_table(**kwargs)


def all_partitions(glue, table=TABLE):
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName=table.database, TableName=table.table)
    return {tuple(p["Values"]): p for page in pages for p in page["Partitions"]}


def hourly(hours, start=START):
    return PartitionLayout(TABLE).values_for_interval(start, start + timedelta(hours=hours))


@pytest.fixture
def lake(aws):
    create_table(aws.glue, TABLE)
    return aws


def test_1000_prefixes_register_exactly_the_valid_set(lake):
    valid = hourly(990)
    put_partitions(lake.s3, TABLE, valid)
    put_raw_prefixes(lake.s3, TABLE, INVALID)
    glue = LimitCheckingGlue(lake.glue)

    report = load_partitions(glue, lake.s3, "clicks", TABLE, "discover")

    registered = all_partitions(lake.glue)
    assert set(registered) == set(valid)
    table_sd = lake.glue.get_table(DatabaseName=TABLE.database, Name=TABLE.table)["Table"][
        "StorageDescriptor"
    ]
    for values, partition in registered.items():
        sd = partition["StorageDescriptor"]
        assert sd["Location"] == f"s3://it-lake/clicks/dt={values[0]}/hour={values[1]}/"
        assert sd["Columns"] == table_sd["Columns"]
        assert sd["SerdeInfo"] == table_sd["SerdeInfo"]
        assert (sd["InputFormat"], sd["OutputFormat"]) == (table_sd["InputFormat"], table_sd["OutputFormat"])
    assert (report.listed, report.created, report.already_present) == (990, 990, 0)
    assert report.invalid == len(INVALID)
    assert set(report.invalid_prefixes) >= {"dt=garbage/", "region=eu/", "dt=2024-06-01/", "year=2023/"}
    assert glue.calls["BatchCreatePartition"] == 10
    # discover reads the table's partitions with GetPartitions (one page: the table was empty) + GetTable.
    assert "BatchGetPartition" not in glue.calls
    assert report.glue_read_calls == 2


def test_rerun_creates_nothing_and_changes_nothing(lake):
    put_partitions(lake.s3, TABLE, hourly(250))
    load_partitions(lake.glue, lake.s3, "clicks", TABLE, "discover")
    before = all_partitions(lake.glue)

    glue = LimitCheckingGlue(lake.glue)
    report = load_partitions(glue, lake.s3, "clicks", TABLE, "discover")

    assert all_partitions(lake.glue) == before
    assert (report.created, report.already_present, report.glue_write_calls) == (0, 250, 0)
    assert "BatchCreatePartition" not in glue.calls and "GetTable" not in glue.calls


def test_interval_registers_only_the_interval_and_only_where_s3_has_data(lake):
    day = hourly(24, datetime(2023, 3, 2))
    put_partitions(lake.s3, TABLE, hourly(72, datetime(2023, 3, 1)))
    lake.s3.delete_object(Bucket="it-lake", Key="clicks/dt=2023-03-02/hour=07/part-00000.json")

    glue = LimitCheckingGlue(lake.glue)
    report = load_partitions(
        glue, lake.s3, "clicks", TABLE, "interval", interval=(datetime(2023, 3, 2), datetime(2023, 3, 3))
    )

    assert set(all_partitions(lake.glue)) == set(day) - {("2023-03-02", "07")}
    assert (report.listed, report.created, report.missing_in_s3) == (24, 23, 1)
    assert report.s3_list_calls == 1, "a day of hourly partitions is one delimiter listing"
    # An interval asks Glue for just its partitions: one BatchGetPartition, one GetTable, one write.
    assert glue.calls == {"BatchGetPartition": 1, "GetTable": 1, "BatchCreatePartition": 1}


def test_dry_run_registers_nothing(lake):
    put_partitions(lake.s3, TABLE, hourly(30))
    report = load_partitions(lake.glue, lake.s3, "clicks", TABLE, "discover", dry_run=True)
    assert all_partitions(lake.glue) == {}
    assert (report.would_create, report.created, report.glue_write_calls) == (30, 0, 0)


def test_a_failing_partition_fails_the_run_after_the_rest_are_registered(lake):
    values = hourly(150)
    put_partitions(lake.s3, TABLE, values)
    bad = values[120]
    glue = LimitCheckingGlue(lake.glue, fail_values=[bad])

    with pytest.raises(
        PartitionLoadError, match=r"1 partitions failed.*2023-01-06/00 -> InvalidInputException"
    ):
        load_partitions(glue, lake.s3, "clicks", TABLE, "discover")

    assert set(all_partitions(lake.glue)) == set(values) - {bad}
    # The retry (next run, or the task's retry) registers what is left and nothing else.
    report = load_partitions(lake.glue, lake.s3, "clicks", TABLE, "discover")
    assert (report.created, report.already_present) == (1, 149)
    assert set(all_partitions(lake.glue)) == set(values)


def test_keys_that_differ_from_glue_fail_before_any_write(lake):
    put_partitions(lake.s3, TABLE, hourly(5))
    lake.glue.update_table(
        DatabaseName=TABLE.database,
        TableInput={
            "Name": TABLE.table,
            "PartitionKeys": [{"Name": "day", "Type": "string"}],
            "StorageDescriptor": {"Columns": [], "Location": TABLE.location},
        },
    )
    with pytest.raises(ValueError, match=r"Glue partition keys \['day'\] differ from the configured keys"):
        load_partitions(lake.glue, lake.s3, "clicks", TABLE, "discover")
    assert all_partitions(lake.glue) == {}


def test_partition_created_concurrently_counts_as_present(lake):
    values = hourly(3)
    put_partitions(lake.s3, TABLE, values)
    descriptor = catalog.describe_table(lake.glue, TABLE.database, TABLE.table)

    class RacingGlue(LimitCheckingGlue):
        def batch_create_partition(self, **kwargs):
            # Another writer registers one partition between our existence check and our write.
            catalog.create_partitions(
                self._glue,
                descriptor,
                [(values[0], TABLE.location + PartitionLayout(TABLE).render(values[0]))],
            )
            return super().batch_create_partition(**kwargs)

    report = load_partitions(RacingGlue(lake.glue), lake.s3, "clicks", TABLE, "discover")
    assert (report.created, report.already_present, report.failed) == (2, 1, 0)
    assert set(all_partitions(lake.glue)) == set(values)
