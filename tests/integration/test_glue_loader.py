"""The partition loader against the moto server: the data that lands in Glue, reruns, bad input."""

from datetime import datetime, timedelta

import pytest

from dataplatform.config import GlueTable
from dataplatform.devstack.seed import create_table, ensure_bucket, put_partitions, put_raw_prefixes
from dataplatform.glue import catalog
from dataplatform.glue.discovery import list_partitions, split_s3_uri
from dataplatform.glue.layout import PartitionLayout
from dataplatform.glue.loader import PartitionLoadError, load_partitions
from tests.glue_tables import YEAR_MONTH_DAY, glue_table

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


# -- impossible dates and prefixes that hold only writer leftovers ----------------------------------

TRAIL = glue_table("trail", YEAR_MONTH_DAY, template="{year}/{month}/{day}", bucket="it-lake")
HIVE_YMD = glue_table("ymd", YEAR_MONTH_DAY, bucket="it-lake")
IMPOSSIBLE_DAYS = {
    ("2024", "02", "30"): "day 30 is out of range for February 2024",
    ("2023", "02", "29"): "day 29 is out of range for February 2023",
    ("2024", "04", "31"): "day 31 is out of range for April 2024",
}


def put_keys(s3, table, relative_keys):
    """Objects at exact keys under the table location (writer leftovers: empty bodies)."""
    bucket, root = split_s3_uri(table.location)
    for key in relative_keys:
        s3.put_object(Bucket=bucket, Key=root + key, Body=b"")


@pytest.mark.parametrize("table", [TRAIL, HIVE_YMD], ids=["template", "hive"])
def test_impossible_dates_split_over_keys_are_reported_and_never_registered(aws, table):
    create_table(aws.glue, table)
    layout = PartitionLayout(table)
    days = [
        *layout.values_for_interval(datetime(2024, 2, 27), datetime(2024, 3, 2)),  # 2024-02-29 exists
        *layout.values_for_interval(datetime(2023, 2, 27), datetime(2023, 3, 2)),
        *layout.values_for_interval(datetime(2024, 4, 29), datetime(2024, 5, 2)),
    ]
    put_partitions(aws.s3, table, days, success_marker=True)
    put_partitions(aws.s3, table, IMPOSSIBLE_DAYS, success_marker=True)

    report = load_partitions(aws.glue, aws.s3, table.table, table, "discover")

    assert set(all_partitions(aws.glue, table)) == set(days)
    assert report.invalid_prefixes == {layout.render(day): reason for day, reason in IMPOSSIBLE_DAYS.items()}
    assert (report.created, report.invalid, report.empty) == (len(days), 3, 0)

    before = all_partitions(aws.glue, table)
    rerun = load_partitions(aws.glue, aws.s3, table.table, table, "discover")
    assert all_partitions(aws.glue, table) == before
    assert (rerun.created, rerun.already_present, rerun.invalid, rerun.glue_write_calls) == (
        0,
        len(days),
        3,
        0,
    )


# Hours of 2023-01-01 whose prefix holds no data, only what a writer leaves behind.
LEFTOVERS = {
    "05": ["_SUCCESS"],
    "06": ["_temporary/0/_temporary/attempt_202301010600_0001_m_000000_0/part-00000.json"],
    "07": ["_temporary_$folder$", "_SUCCESS"],
    "08": [""],  # a directory object, "dt=2023-01-01/hour=08/", as the S3 console creates it
    "09": [".spark-staging-1/part-00000.json", "._SUCCESS.crc"],
}


def seed_leftover_hours(s3):
    put_keys(s3, TABLE, [f"dt=2023-01-01/hour={h}/{key}" for h, keys in LEFTOVERS.items() for key in keys])
    # Hadoop's marker for the hour directory itself sits beside it, and a day holds nothing but markers.
    put_keys(s3, TABLE, ["dt=2023-01-01/hour=05_$folder$", "dt=2023-01-03/hour=00_$folder$"])
    put_keys(s3, TABLE, ["dt=2023-01-03/_SUCCESS", "dt=2023-01-03_$folder$"])


def test_prefixes_with_only_writer_leftovers_are_empty_in_discover(lake):
    with_data = [v for v in hourly(48) if v[1] not in LEFTOVERS or v[0] != "2023-01-01"]
    put_partitions(lake.s3, TABLE, with_data, success_marker=True)
    # A partition with data keeps it, whatever else its writer left there.
    put_keys(lake.s3, TABLE, ["dt=2023-01-01/hour=10/_temporary/0/part-00000.json"])
    seed_leftover_hours(lake.s3)

    report = load_partitions(lake.glue, lake.s3, "clicks", TABLE, "discover")

    assert set(all_partitions(lake.glue)) == set(with_data)
    assert (report.listed, report.created, report.invalid) == (43, 43, 0)
    assert sorted(report.empty_prefixes) == [
        *(f"dt=2023-01-01/hour={h}/" for h in LEFTOVERS),
        "dt=2023-01-03/",
    ]
    # No listing per partition: the root, then one listing per day (each a few dozen keys).
    assert report.s3_list_calls == 1 + 3

    rerun = load_partitions(lake.glue, lake.s3, "clicks", TABLE, "discover")
    assert set(all_partitions(lake.glue)) == set(with_data)
    assert (rerun.created, rerun.already_present, rerun.empty, rerun.glue_write_calls) == (0, 43, 6, 0)


def test_prefixes_with_only_writer_leftovers_are_empty_in_interval(lake):
    day = hourly(24)
    with_data = [v for v in day if v[1] not in LEFTOVERS and v[1] != "23"]
    put_partitions(lake.s3, TABLE, with_data, success_marker=True)
    seed_leftover_hours(lake.s3)
    interval = (datetime(2023, 1, 1), datetime(2023, 1, 2))

    report = load_partitions(lake.glue, lake.s3, "clicks", TABLE, "interval", interval=interval)

    assert set(all_partitions(lake.glue)) == set(with_data)
    assert (report.listed, report.created, report.empty, report.missing_in_s3) == (24, 18, 5, 1)
    assert report.s3_list_calls == 1, "a day of hourly partitions is still one listing"

    rerun = load_partitions(lake.glue, lake.s3, "clicks", TABLE, "interval", interval=interval)
    assert set(all_partitions(lake.glue)) == set(with_data)
    assert (rerun.created, rerun.already_present, rerun.empty, rerun.glue_write_calls) == (0, 18, 5, 0)


def test_listing_a_partitions_parent_skips_what_it_does_not_need(aws):
    """Pages of 2 keys make the skipping visible: without it these 25 keys would take 13 calls."""
    ensure_bucket(aws.s3, "it-lake")
    put_keys(
        aws.s3,
        TABLE,
        [
            *(f"p/a/part-{i:02d}.json" for i in range(10)),  # data: the rest of a/ is skipped
            "p/b/_SUCCESS",
            *(f"p/b/_temporary/0/task-{i:02d}" for i in range(10)),  # leftovers: _temporary/ is skipped
            "p/c/_temporary/0/task-00",
            "p/c/part-00.json",
            "p/d/_SUCCESS",
        ],
    )
    listing = list_partitions(aws.s3, "it-lake", "clicks/p/", page_size=2)
    assert sorted(listing.children) == ["a", "b", "c", "d"]
    assert listing.without_data == {"b", "d"}
    assert listing.calls == 4  # [a/part-00, a/part-01] [b/_SUCCESS, b/_temporary/..] [c/.., c/part] [d]

    # Interval mode asks for some children only, and jumps to them.
    listing = list_partitions(aws.s3, "it-lake", "clicks/p/", only=["b", "d"], page_size=2)
    assert listing.without_data == {"b", "d"}
    assert "a" not in listing.children
    assert listing.calls == 3  # [b/_SUCCESS, b/_temporary/..] [c/_temporary/.., c/part] [d]
