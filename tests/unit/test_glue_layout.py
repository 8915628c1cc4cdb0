from datetime import datetime

import pytest

from dataplatform.config import GlueTable
from dataplatform.glue.layout import InvalidPartitionPath, PartitionLayout

pytestmark = pytest.mark.unit

HIVE = GlueTable(
    database="db",
    table="events",
    location="s3://lake/events/",
    granularity="hour",
    partition_keys=[{"name": "dt", "format": "%Y-%m-%d"}, {"name": "hour", "format": "%H"}],
)
TRAIL = GlueTable(
    database="db",
    table="trail",
    location="s3://lake/trail/",
    layout="template",
    path_template="{year}/{month}/{day}",
    granularity="day",
    partition_keys=[
        {"name": "year", "format": "%Y"},
        {"name": "month", "format": "%m"},
        {"name": "day", "format": "%d"},
    ],
)
REGIONAL = GlueTable(
    database="db",
    table="regional",
    location="s3://lake/regional/",
    partition_keys=[
        {"name": "region", "pattern": "[a-z]{2}-[a-z]+-[0-9]"},
        {"name": "dt", "format": "%Y-%m-%d"},
    ],
)


def test_hive_render_and_parse_round_trip():
    layout = PartitionLayout(HIVE)
    assert layout.render(("2023-06-01", "05")) == "dt=2023-06-01/hour=05/"
    assert layout.parse("dt=2023-06-01/hour=05/") == ("2023-06-01", "05")


def test_template_render_and_parse_round_trip():
    layout = PartitionLayout(TRAIL)
    assert layout.render(("2023", "06", "01")) == "2023/06/01/"
    assert layout.parse("2023/06/01") == ("2023", "06", "01")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("dt=garbage/hour=05/", "does not fit the format '%Y-%m-%d'"),
        ("dt=2023-02-30/hour=05/", "does not fit the format"),
        ("dt=2023-06-01/hour=24/", "hour='24' does not fit"),
        ("dt=2023-06-01/", "has 1 levels, expected 2"),
        ("dt=2023-06-01/minute=05/", "'minute=05' does not match 'hour={hour}'"),
        ("region=eu/dt=2023-06-01/", "'region=eu' does not match 'dt={dt}'"),
        ("dt=2023-6-1/hour=05/", "does not fit the format"),  # non-canonical: would split a partition
    ],
)
def test_hive_rejects_prefixes_that_do_not_fit_the_keys(path, reason):
    with pytest.raises(InvalidPartitionPath, match=reason.replace("(", r"\(").replace("{", r"\{")):
        PartitionLayout(HIVE).parse(path)


def test_template_rejects_bad_values_and_depths():
    layout = PartitionLayout(TRAIL)
    with pytest.raises(InvalidPartitionPath, match="month='13'"):
        layout.parse("2023/13/01/")
    with pytest.raises(InvalidPartitionPath, match="has 4 levels"):
        layout.parse("2023/06/01/00/")


def test_keys_without_format_use_their_pattern():
    layout = PartitionLayout(REGIONAL)
    assert layout.parse("region=eu-west-1/dt=2023-06-01/") == ("eu-west-1", "2023-06-01")
    with pytest.raises(InvalidPartitionPath):
        layout.parse("region=EU/dt=2023-06-01/")
    with pytest.raises(ValueError, match=r"keys \['region'\] have no format"):
        layout.values_for_interval(datetime(2023, 6, 1), datetime(2023, 6, 2))


def test_hourly_interval_of_a_day_gives_24_partitions_in_order():
    values = PartitionLayout(HIVE).values_for_interval(datetime(2023, 6, 1), datetime(2023, 6, 2))
    assert values == [("2023-06-01", f"{h:02d}") for h in range(24)]


def test_daily_interval_covers_each_day_once_and_partial_days():
    layout = PartitionLayout(TRAIL)
    assert layout.values_for_interval(datetime(2023, 6, 1), datetime(2023, 6, 4)) == [
        ("2023", "06", "01"),
        ("2023", "06", "02"),
        ("2023", "06", "03"),
    ]
    # An hourly run of a daily table lands in that day's partition.
    assert layout.values_for_interval(datetime(2023, 6, 1, 5), datetime(2023, 6, 1, 6)) == [
        ("2023", "06", "01")
    ]


def test_monthly_granularity_steps_over_month_ends():
    table = TRAIL.model_copy(update={"granularity": "month"})
    values = PartitionLayout(table).values_for_interval(datetime(2023, 1, 31), datetime(2023, 4, 1))
    assert values == [("2023", "01", "01"), ("2023", "02", "01"), ("2023", "03", "01")]


def test_empty_interval_is_an_error():
    with pytest.raises(ValueError, match="empty data interval"):
        PartitionLayout(HIVE).values_for_interval(datetime(2023, 6, 2), datetime(2023, 6, 1))


def test_writer_leftovers_are_ignored():
    assert PartitionLayout.is_ignored("_temporary")
    assert PartitionLayout.is_ignored(".spark-staging-1")
    assert not PartitionLayout.is_ignored("dt=2023-06-01")
