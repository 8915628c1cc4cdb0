from datetime import datetime

import pytest

from dataplatform.config import GlueTable
from dataplatform.glue.layout import InvalidPartitionPath, PartitionLayout
from tests.glue_tables import HOUR, YEAR_MONTH_DAY, glue_table

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


# -- the date the keys form together ----------------------------------------------------------------

HIVE_YMD = glue_table("ymd", YEAR_MONTH_DAY)
TRAIL_HOURLY = glue_table(
    "trail_hourly", [*YEAR_MONTH_DAY, HOUR], template="{year}/{month}/{day}/{hour}", granularity="hour"
)
MONTH_AND_DAY = glue_table("md", [{"name": "ym", "format": "%Y-%m"}, {"name": "day", "format": "%d"}])
DAY_FIRST = glue_table("dayfirst", YEAR_MONTH_DAY, template="{month}-{day}/{year}")
IMPOSSIBLE = [
    ("2024", "02", "30", "day 30 is out of range for February 2024"),
    ("2023", "02", "29", "day 29 is out of range for February 2023"),
    ("2024", "04", "31", "day 31 is out of range for April 2024"),
    ("1900", "02", "29", "day 29 is out of range for February 1900"),
]


@pytest.mark.parametrize(("year", "month", "day", "reason"), IMPOSSIBLE)
@pytest.mark.parametrize(
    ("table", "path"),
    [
        (TRAIL, "{y}/{m}/{d}/"),
        (HIVE_YMD, "year={y}/month={m}/day={d}/"),
        (TRAIL_HOURLY, "{y}/{m}/{d}/05/"),
        (MONTH_AND_DAY, "ym={y}-{m}/day={d}/"),
    ],
    ids=["template", "hive", "template-hourly", "hive-year-month-key"],
)
def test_impossible_dates_split_over_keys_are_invalid(table, path, year, month, day, reason):
    with pytest.raises(InvalidPartitionPath, match=f"^{reason}$"):
        PartitionLayout(table).parse(path.format(y=year, m=month, d=day))


@pytest.mark.parametrize(
    ("table", "path", "values"),
    [
        (TRAIL, "2024/02/29/", ("2024", "02", "29")),
        (TRAIL, "2000/02/29/", ("2000", "02", "29")),
        (HIVE_YMD, "year=2024/month=04/day=30/", ("2024", "04", "30")),
        (TRAIL_HOURLY, "2024/12/31/23/", ("2024", "12", "31", "23")),
        (MONTH_AND_DAY, "ym=2024-02/day=29/", ("2024-02", "29")),
        (DAY_FIRST, "02-29/2024/", ("2024", "02", "29")),
    ],
)
def test_real_dates_split_over_keys_parse(table, path, values):
    assert PartitionLayout(table).parse(path) == values


def test_a_date_is_refused_at_the_level_that_completes_it():
    # Discovery checks each level as it descends, so 2024/02/30/ is refused before its hours are listed.
    layout = PartitionLayout(TRAIL_HOURLY)
    assert layout.parse_prefix("2024/02/") == {"year": "2024", "month": "02"}
    with pytest.raises(InvalidPartitionPath, match="day 30 is out of range for February 2024"):
        layout.parse_prefix("2024/02/30/")
    # Without the year yet, only days that exist in no year are refused: 02-29 waits for its year.
    day_first = PartitionLayout(DAY_FIRST)
    assert day_first.parse_prefix("02-29/") == {"month": "02", "day": "29"}
    with pytest.raises(InvalidPartitionPath, match=r"day 30 is out of range for February$"):
        day_first.parse_prefix("02-30/")
    with pytest.raises(InvalidPartitionPath, match=r"^day 31 is out of range for April$"):
        day_first.parse("04-31/2024/")
    with pytest.raises(InvalidPartitionPath, match="day 29 is out of range for February 2023"):
        day_first.parse("02-29/2023/")


def test_keys_that_name_the_same_field_must_agree():
    layout = PartitionLayout(
        glue_table("both", [{"name": "year", "format": "%Y"}, {"name": "dt", "format": "%Y-%m-%d"}])
    )
    assert layout.parse("year=2024/dt=2024-03-05/") == ("2024", "2024-03-05")
    with pytest.raises(
        InvalidPartitionPath, match=r"dt='2023-03-05' says year 2023 but year='2024' says 2024"
    ):
        layout.parse("year=2024/dt=2023-03-05/")


def test_month_names_and_two_digit_years_are_dates_too():
    keys = [{"name": "mon", "format": "%b"}, {"name": "yy", "format": "%y"}, {"name": "day", "format": "%d"}]
    layout = PartitionLayout(glue_table("short", keys))
    assert layout.parse("mon=Feb/yy=24/day=29/") == ("Feb", "24", "29")
    with pytest.raises(InvalidPartitionPath, match=r"^day 29 is out of range for February 2023$"):
        layout.parse("mon=Feb/yy=23/day=29/")


def test_keys_with_a_pattern_are_not_dates():
    # The day key is a bucket number, whatever its name.
    table = glue_table("bucketed", [*YEAR_MONTH_DAY[:2], {"name": "day", "pattern": "[0-9]{2}"}])
    assert PartitionLayout(table).parse("year=2024/month=02/day=30/") == ("2024", "02", "30")


def test_only_data_files_count_as_data():
    from dataplatform.glue.layout import is_data_key

    for key in ("part-00000.json", "000000_0", "sub/part-1.parquet", "x.snappy.parquet"):
        assert is_data_key(key), key
    for key in (
        "_SUCCESS",
        "_temporary/0/_temporary/attempt_1/part-00000.json",
        "_temporary_$folder$",
        "hour=07_$folder$",
        "$folder$",
        ".spark-staging-1/part-0",
        "._SUCCESS.crc",
        "",  # the directory object itself (``hour=07/``, as the S3 console creates)
        "sub/",
    ):
        assert not is_data_key(key), key
