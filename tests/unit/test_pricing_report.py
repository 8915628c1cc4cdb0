import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from PIL import Image

from dataplatform.pricing.report import (
    CSV_COLUMNS,
    compare,
    comparison_chart_png,
    comparison_csv,
    median,
    write_comparison,
)

pytestmark = pytest.mark.unit

START = datetime(2026, 12, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def launch(launch_id, workflow_type, instance_types, cost, completed, seconds, **extra):
    """A priced COMPLETE launch item that ran ``seconds`` up to ``completed`` (ISO-8601)."""
    started = datetime.fromisoformat(completed) - timedelta(seconds=seconds)
    item = {
        "launch_id": launch_id,
        "workflow_type": workflow_type,
        "status": "COMPLETE",
        "started_at": started.isoformat(),
        "completed_at": completed,
        "currency": "USD",
        "instance_types": instance_types,
    }
    if cost is not None:
        item.update(total_cost=cost, instance_cost=cost, volume_cost="0.0000", filesystem_cost="0.0000")
    item.update(extra)
    return item


# Seven launches are compared; every other one is left out for the reason in its id.
LAUNCHES = [
    # completed exactly at START: in (start inclusive)
    launch("L1", "germline-wgs", ["m6g.xlarge"], "10.0000", "2026-12-01T00:00:00+00:00", 3600),
    # one family, listed twice
    launch("L2", "germline-wgs", ["m6g.2xlarge", "m6g.xlarge"], "12.0001", "2026-12-05T10:00:00+00:00", 4000),
    launch("L3", "germline-wgs", ["c7g.4xlarge"], "20.0000", "2026-12-06T10:00:00+00:00", 5000),
    launch("L4", "germline-wgs", ["m6i.xlarge"], "14.0000", "2026-12-07T10:00:00+00:00", 4500),
    # +02:00 offset: 2026-12-31T23:30Z, in
    launch("L5", "germline-wgs", ["m6i.xlarge"], "16.0000", "2027-01-01T01:30:00+02:00", 5500),
    # two families, two architectures
    launch("L6", "germline-wgs", ["m6g.large", "c6i.large"], "9.9999", "2026-12-08T10:00:00+00:00", 3000),
    launch("L7", "somatic-wes", ["r6g.xlarge"], "2.5000", "2026-12-09T10:00:00+00:00", 1800),
    # completed exactly at END: out (end exclusive)
    launch("at-end", "germline-wgs", ["m6g.xlarge"], "99.0000", "2027-01-01T00:00:00+00:00", 60),
    launch("before-start", "germline-wgs", ["m6i.xlarge"], "99.0000", "2026-11-30T23:59:59+00:00", 60),
    launch("unpriced", "germline-wgs", ["m6g.xlarge"], None, "2026-12-10T10:00:00+00:00", 60),
    launch(
        "errored",
        "germline-wgs",
        ["m6g.xlarge"],
        "99.0000",
        "2026-12-11T10:00:00+00:00",
        60,
        pricing_error="no price for m6g.xlarge",
    ),
    launch("unpriced-before-start", "germline-wgs", ["m6g.xlarge"], None, "2026-11-01T00:00:00+00:00", 60),
    {
        "launch_id": "running",
        "workflow_type": "germline-wgs",
        "status": "RUNNING",
        "started_at": "2026-12-12T00:00:00+00:00",
    },
]

# by family (sorted by workflow type, then group):
#   c6i+m6g  L6            cost 9.9999, 3000 s
#   c7g      L3            cost 20.0000, 5000 s
#   m6g      L1, L2        median cost (10.0000 + 12.0001) / 2 = 11.00005 (exact), duration (3600 + 4000) / 2
#                          = 3800, total 22.0001, per run 11.00005 -> 11.0001 (half-up, 4 decimals)
#   m6i      L4, L5        median (14 + 16) / 2 = 15.0000, duration (4500 + 5500) / 2 = 5000, total 30.0000
#   somatic-wes r6g L7     2.5000, 1800 s
FAMILY_ROWS = [
    ("germline-wgs", "c6i+m6g", "1", "3000", "9.9999", "9.9999", "9.9999"),
    ("germline-wgs", "c7g", "1", "5000", "20.0000", "20.0000", "20.0000"),
    ("germline-wgs", "m6g", "2", "3800", "11.00005", "11.0001", "22.0001"),
    ("germline-wgs", "m6i", "2", "5000", "15.0000", "15.0000", "30.0000"),
    ("somatic-wes", "r6g", "1", "1800", "2.5000", "2.5000", "2.5000"),
]
# by architecture:
#   arm64   L1, L2, L3     costs 10.0000, 12.0001, 20.0000 -> median 12.0001; durations 3600, 4000, 5000 -> 4000;
#                          total 42.0001, per run 14.000033.. -> 14.0000
#   mixed   L6
#   x86_64  L4, L5         median 15.0000, 5000 s, total 30.0000
ARCHITECTURE_ROWS = [
    ("germline-wgs", "arm64", "3", "4000", "12.0001", "14.0000", "42.0001"),
    ("germline-wgs", "mixed", "1", "3000", "9.9999", "9.9999", "9.9999"),
    ("germline-wgs", "x86_64", "2", "5000", "15.0000", "15.0000", "30.0000"),
    ("somatic-wes", "arm64", "1", "1800", "2.5000", "2.5000", "2.5000"),
]
# Graviton vs x86, germline-wgs only (somatic-wes never ran on x86; L6 is mixed, in neither side):
#   cost     12.0001 / 15.0000 = 0.80000667 -> change -19.999333 % -> -20.00, gain +20.00
#   duration  4000 / 5000 = 0.8 -> change -20.00
GRAVITON = ("-20.00", "-20.00", "20.00")

STAT_COLUMNS = CSV_COLUMNS[3:8]


def expected_row(workflow_type, group_by, group, *stats, changes=("", "", "")):
    return dict(
        zip(CSV_COLUMNS, (workflow_type, group_by, group, *stats, *changes), strict=True),
    )


def parse_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_median_odd_and_even_counts():
    assert median([Decimal("3"), Decimal("1"), Decimal("2")]) == Decimal("2")
    assert median([Decimal("4"), Decimal("1"), Decimal("3"), Decimal("2")]) == Decimal("2.5")
    # exact in Decimal: the mean of two 4-decimal amounts keeps the 5th decimal
    assert median([Decimal("0.0001"), Decimal("0.0002")]) == Decimal("0.00015")
    assert median([Decimal("7.1234")]) == Decimal("7.1234")
    with pytest.raises(ValueError):
        median([])


def test_compare_by_family():
    comparison = compare(LAUNCHES, START, END, by="family")
    assert comparison.launches == 7
    assert comparison.unpriced == 1  # "unpriced-before-start" is outside the period, not counted
    assert comparison.pricing_errors == 1
    got = [
        (g.workflow_type, g.group, g.runs, g.median_duration_s, g.median_cost, g.cost_per_run, g.total_cost)
        for g in comparison.groups
    ]
    assert got == [
        (wt, group, int(runs), Decimal(dur), Decimal(med), Decimal(per_run), Decimal(total))
        for wt, group, runs, dur, med, per_run, total in FAMILY_ROWS
    ]
    # 9.9999 + 20 + 22.0001 + 30 + 2.5
    assert comparison.total_cost == Decimal("84.5000")


def test_compare_by_architecture():
    comparison = compare(LAUNCHES, START, END, by="architecture")
    got = [
        (g.workflow_type, g.group, g.runs, g.median_duration_s, g.median_cost, g.cost_per_run, g.total_cost)
        for g in comparison.groups
    ]
    assert got == [
        (wt, group, int(runs), Decimal(dur), Decimal(med), Decimal(per_run), Decimal(total))
        for wt, group, runs, dur, med, per_run, total in ARCHITECTURE_ROWS
    ]


@pytest.mark.parametrize("by", ["family", "architecture"])
def test_graviton_vs_x86_does_not_depend_on_grouping(by):
    (item,) = compare(LAUNCHES, START, END, by=by).graviton_vs_x86
    assert item.workflow_type == "germline-wgs"
    assert (item.arm.runs, item.arm.median_cost, item.arm.median_duration_s) == (3, Decimal("12.0001"), 4000)
    assert (item.x86.runs, item.x86.median_cost, item.x86.median_duration_s) == (2, Decimal("15.0000"), 5000)
    assert (item.cost_change_pct, item.duration_change_pct, item.price_performance_gain_pct) == tuple(
        Decimal(value) for value in GRAVITON
    )


def test_graviton_vs_x86_reference_06_numbers():
    # Reference 06's benchmark as two launches: x86 $26.7291 in 2,959 s, Graviton2 $19.5972 in 2,670 s.
    #   cost      19.5972 / 26.7291 = 0.733178.. -> change -26.682 % -> -26.68; gain 26.68 ("27%")
    #   duration  2670 / 2959       = 0.902332.. -> change  -9.767 % -> -9.77        ("10%")
    launches = [
        launch("x86", "tpcds", ["m5.xlarge"], "26.7291", "2026-12-02T00:00:00+00:00", 2959),
        launch("arm", "tpcds", ["m6g.xlarge"], "19.5972", "2026-12-03T00:00:00+00:00", 2670),
    ]
    (item,) = compare(launches, START, END, by="family").graviton_vs_x86
    assert item.cost_change_pct == Decimal("-26.68")
    assert item.duration_change_pct == Decimal("-9.77")
    assert item.price_performance_gain_pct == Decimal("26.68")


def test_graviton_slower_and_dearer_is_positive_change():
    # arm 12.0000 in 6000 s vs x86 10.0000 in 5000 s: +20.00 % cost, +20.00 % duration, gain -20.00
    launches = [
        launch("x86", "w", ["c6i.large"], "10.0000", "2026-12-02T00:00:00+00:00", 5000),
        launch("arm", "w", ["c7g.large"], "12.0000", "2026-12-03T00:00:00+00:00", 6000),
    ]
    (item,) = compare(launches, START, END, by="architecture").graviton_vs_x86
    assert (item.cost_change_pct, item.duration_change_pct, item.price_performance_gain_pct) == (
        Decimal("20.00"),
        Decimal("20.00"),
        Decimal("-20.00"),
    )


def test_zero_cost_x86_baseline_gives_no_percentages():
    launches = [
        launch("x86", "w", ["c6i.large"], "0.0000", "2026-12-02T00:00:00+00:00", 0),
        launch("arm", "w", ["c7g.large"], "1.0000", "2026-12-03T00:00:00+00:00", 60),
    ]
    comparison = compare(launches, START, END, by="family")
    (item,) = comparison.graviton_vs_x86
    assert (item.cost_change_pct, item.duration_change_pct, item.price_performance_gain_pct) == (
        None,
        None,
        None,
    )
    json.dumps(comparison.summary())
    assert parse_csv(comparison_csv(comparison))[-2]["cost_change_pct"] == ""


def test_fractional_seconds_and_missing_instance_types():
    launches = [
        {
            "launch_id": "a",
            "workflow_type": "w",
            "status": "COMPLETE",
            "started_at": "2026-12-01T10:00:00+00:00",
            "completed_at": "2026-12-01T10:00:01.5+00:00",
            "total_cost": "0.1000",
        }
    ]
    (group,) = compare(launches, START, END, by="family").groups
    assert (group.group, group.median_duration_s) == ("unknown", Decimal("1.5"))


def test_comparison_csv_round_trip():
    text = comparison_csv(compare(LAUNCHES, START, END, by="family"))
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert "\n\n" not in text
    expected = [expected_row(wt, "family", group, *stats) for wt, group, *stats in FAMILY_ROWS]
    arm, _mixed, x86, _somatic = ARCHITECTURE_ROWS
    expected += [
        expected_row(arm[0], "graviton_vs_x86", arm[1], *arm[2:], changes=GRAVITON),
        expected_row(x86[0], "graviton_vs_x86", x86[1], *x86[2:]),
    ]
    assert parse_csv(text) == expected


def test_comparison_csv_by_architecture_labels_the_section():
    rows = parse_csv(comparison_csv(compare(LAUNCHES, START, END, by="architecture")))
    assert [row["group_by"] for row in rows] == ["architecture"] * 4 + ["graviton_vs_x86"] * 2
    assert [tuple(row[c] for c in ("workflow_type", "group", *STAT_COLUMNS)) for row in rows[:4]] == (
        ARCHITECTURE_ROWS
    )


def test_summary_is_json_serializable():
    summary = json.loads(json.dumps(compare(LAUNCHES, START, END, by="family").summary()))
    assert summary["period"] == {
        "start": "2026-12-01T00:00:00+00:00",
        "end": "2027-01-01T00:00:00+00:00",
        "end_exclusive": True,
    }
    assert (summary["launches"], summary["unpriced"], summary["pricing_errors"]) == (7, 1, 1)
    assert summary["total_cost_usd"] == "84.5000"
    assert summary["groups"][2] == {
        "workflow_type": "germline-wgs",
        "group": "m6g",
        "runs": 2,
        "median_duration_s": "3800",
        "median_cost_usd": "11.00005",
        "cost_per_run_usd": "11.0001",
        "total_cost_usd": "22.0001",
    }
    (graviton,) = summary["graviton_vs_x86"]
    assert graviton["workflow_type"] == "germline-wgs"
    assert graviton["arm64"]["median_cost_usd"] == "12.0001"
    assert graviton["x86_64"]["median_cost_usd"] == "15.0000"
    assert (
        graviton["cost_change_pct"],
        graviton["duration_change_pct"],
        graviton["price_performance_gain_pct"],
    ) == GRAVITON


def test_chart_png_opens_and_is_deterministic():
    comparison = compare(LAUNCHES, START, END, by="family")
    png = comparison_chart_png(comparison)
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 800 <= width <= 2400 and height == 800
    assert comparison_chart_png(comparison) == png


def test_empty_comparison():
    comparison = compare(
        LAUNCHES, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC), "family"
    )
    assert (comparison.groups, comparison.graviton_vs_x86, comparison.launches) == ((), (), 0)
    assert comparison.total_cost == 0
    assert comparison_csv(comparison) == ",".join(CSV_COLUMNS) + "\n"
    assert parse_csv(comparison_csv(comparison)) == []
    summary = json.loads(json.dumps(comparison.summary()))
    assert (summary["groups"], summary["graviton_vs_x86"], summary["total_cost_usd"]) == ([], [], "0.0000")
    png = comparison_chart_png(comparison)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (800, 300)
    assert compare([], START, END, by="architecture").groups == ()


def test_write_comparison_to_file_uri(tmp_path):
    comparison = compare(LAUNCHES, START, END, by="family")
    reports_uri = f"file://{tmp_path}/reports/"
    uris = write_comparison(comparison, reports_uri, "benchmark_pricing/run:2026-12/comparison", s3=None)
    base = f"file://{tmp_path}/reports/benchmark_pricing/run_2026-12/comparison"
    assert uris == {"csv": base + ".csv", "png": base + ".png"}
    folder = tmp_path / "reports" / "benchmark_pricing" / "run_2026-12"
    assert (folder / "comparison.csv").read_text() == comparison_csv(comparison)
    assert (folder / "comparison.png").read_bytes() == comparison_chart_png(comparison)


@pytest.mark.parametrize("key_prefix", ["", "a//b", "../escape", "a/./b"])
def test_write_comparison_rejects_unsafe_key_prefix(tmp_path, key_prefix):
    with pytest.raises(ValueError, match="key_prefix"):
        write_comparison(compare([], START, END, "family"), f"file://{tmp_path}", key_prefix)


def test_write_comparison_to_s3_needs_a_client():
    with pytest.raises(ValueError, match="S3 client"):
        write_comparison(compare([], START, END, "family"), "s3://bucket/reports", "x")


@pytest.mark.integration
def test_write_comparison_to_s3(aws):
    aws.s3.create_bucket(Bucket="reports")
    comparison = compare(LAUNCHES, START, END, by="architecture")
    uris = write_comparison(comparison, "s3://reports/pricing/", "benchmark/2026-12", aws.s3)
    assert uris == {
        "csv": "s3://reports/pricing/benchmark/2026-12.csv",
        "png": "s3://reports/pricing/benchmark/2026-12.png",
    }
    csv_object = aws.s3.get_object(Bucket="reports", Key="pricing/benchmark/2026-12.csv")
    assert csv_object["ContentType"] == "text/csv"
    assert csv_object["Body"].read().decode() == comparison_csv(comparison)
    png_object = aws.s3.get_object(Bucket="reports", Key="pricing/benchmark/2026-12.png")
    assert png_object["ContentType"] == "image/png"
    assert png_object["Body"].read() == comparison_chart_png(comparison)


@pytest.mark.parametrize(
    ("start", "end", "by", "message"),
    [
        (datetime(2026, 12, 1), END, "family", "timezone-aware"),
        (START, START, "family", "period is empty"),
        (START, END, "instance_type", "by must be"),
    ],
)
def test_compare_rejects_bad_arguments(start, end, by, message):
    with pytest.raises(ValueError, match=message):
        compare([], start, end, by)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"completed_at": "2026-12-02T00:00:00"}, "no UTC offset"),
        ({"completed_at": "yesterday"}, "not an ISO-8601"),
        ({"started_at": "2026-12-03T00:00:00+00:00"}, "before started_at"),
        ({"total_cost": "twelve"}, "not a number"),
        ({"currency": "EUR"}, "currency"),
    ],
)
def test_bad_launch_data_is_reported(change, message):
    item = launch("bad", "w", ["m6g.large"], "1.0000", "2026-12-02T00:00:00+00:00", 60) | change
    with pytest.raises(ValueError, match=f"launch bad: .*{message}"):
        compare([item], START, END, "family")
