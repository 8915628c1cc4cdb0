"""Billing rules and Price List parsing, against costs computed by hand (in the comments)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dataplatform.config import REPO_ROOT
from dataplatform.pricing import prices
from dataplatform.pricing.costs import (
    EmrInstanceUsage,
    EmrServerlessUsage,
    cents,
    emr_cluster_cost,
    emr_serverless_cost,
    filesystem_cost,
    money,
    on_demand_instance_cost,
    price_launch,
    spot_instance_cost,
    volume_cost,
)
from dataplatform.pricing.prices import PriceCatalog, PriceStore, SnapshotPriceList
from dataplatform.pricing.resources import (
    FileSystemUsage,
    InstanceUsage,
    Interval,
    LaunchUsage,
    PricingError,
    VolumeUsage,
    architecture,
)
from dataplatform.pricing.spot import SnapshotSpotHistory, spot_price_points

pytestmark = pytest.mark.unit

SNAPSHOT = REPO_ROOT / "include" / "pricing"
REGION = "us-east-1"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
D = Decimal


def hours(h: float, start: datetime = T0) -> Interval:
    return Interval(start, start + timedelta(hours=h))


@pytest.fixture
def catalog():
    return PriceCatalog(SnapshotPriceList(SNAPSHOT), "snapshot")


def no_spot(*_args):
    raise AssertionError("no Spot history expected")


# --- EC2 ------------------------------------------------------------------------------------------


def test_on_demand_is_per_second_with_a_60_second_minimum():
    rate = D("0.192")  # m5.xlarge
    assert on_demand_instance_cost(hours(2.5), rate) == D("0.48")  # 2.5 h x 0.192
    assert on_demand_instance_cost(Interval(T0, T0 + timedelta(seconds=30)), rate) == D("0.0032")  # 60 s
    # 90.4 s bills 91 s: 0.192 x 91 / 3600 = 0.0048533...
    assert money(on_demand_instance_cost(Interval(T0, T0 + timedelta(seconds=90.4)), rate)) == "0.0049"


def test_spot_integrates_the_price_changes_inside_the_run():
    history = [
        (T0 - timedelta(minutes=30), D("0.10")),  # in force at the start
        (T0 + timedelta(minutes=30), D("0.12")),
        (T0 + timedelta(hours=2), D("0.08")),
        (T0 + timedelta(hours=4), D("0.50")),  # after the end: not used
    ]
    # 0.5 h x 0.10 + 1.5 h x 0.12 + 1 h x 0.08 = 0.05 + 0.18 + 0.08
    assert spot_instance_cost(hours(3), history) == D("0.31")


def test_spot_short_run_bills_the_minute_and_needs_a_price_in_force():
    history = [(T0 - timedelta(days=1), D("0.10"))]
    short = Interval(T0, T0 + timedelta(seconds=30))
    assert spot_instance_cost(short, history) * 60 == D("0.10")  # 60 s at 0.10/h
    with pytest.raises(PricingError, match="no Spot price in force"):
        spot_instance_cost(hours(1), [(T0 + timedelta(minutes=1), D("0.10"))])


def test_snapshot_spot_history_applies_the_api_window_rule(tmp_path):
    records = [
        {"AvailabilityZone": "us-east-1a", "InstanceType": "m5.xlarge", "ProductDescription": "Linux/UNIX",
         "SpotPrice": price, "Timestamp": when.isoformat()}
        for when, price in [
            (T0 - timedelta(days=2), "0.05"),
            (T0 - timedelta(hours=1), "0.07"),  # the last change before the start
            (T0 + timedelta(minutes=20), "0.09"),
            (T0 + timedelta(hours=5), "0.11"),  # after the end
        ]
    ] + [
        {"AvailabilityZone": "us-east-1b", "InstanceType": "m5.xlarge", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "9.99", "Timestamp": T0.isoformat()}
    ]  # fmt: skip
    path = tmp_path / "spot.json"
    path.write_text(json.dumps({"SpotPriceHistory": records}))
    points = spot_price_points(SnapshotSpotHistory(path), "m5.xlarge", "us-east-1a", hours(1))
    assert points == [(T0 - timedelta(hours=1), D("0.07")), (T0 + timedelta(minutes=20), D("0.09"))]
    # 20 min x 0.07 + 40 min x 0.09 = 0.023333 + 0.06
    assert money(spot_instance_cost(hours(1), points)) == "0.0833"


# --- EBS and FSx ----------------------------------------------------------------------------------


def gp3(iops=None, throughput=None, size=500, h=730.0):
    return VolumeUsage("vol-1", "gp3", size, hours(h), iops=iops, throughput_mibps=throughput)


def test_gp3_bills_iops_and_throughput_above_the_free_baseline(catalog):
    # one month: 500 GiB x 0.08 + (6000 - 3000) IOPS x 0.005 + (250 - 125) MiB/s x 0.040 = 40 + 15 + 5
    assert volume_cost(gp3(6000, 250), catalog, REGION) == D("60")
    # a tenth of the month (73 h) costs a tenth
    assert volume_cost(gp3(6000, 250, h=73), catalog, REGION) == D("6")
    # at the baseline only storage is billed
    assert volume_cost(gp3(3000, 125), catalog, REGION) == D("40")
    assert volume_cost(gp3(), catalog, REGION) == D("40")
    # 10 seconds are billed as 60: 60 x 60 / (730 x 3600) = 0.0013698...
    assert money(volume_cost(gp3(6000, 250, h=10 / 3600), catalog, REGION)) == "0.0014"


def test_io1_bills_every_provisioned_iops_and_gp2_storage_only(catalog):
    io1 = VolumeUsage("vol-2", "io1", 100, hours(730), iops=5000)
    assert volume_cost(io1, catalog, REGION) == D("337.5")  # 100 x 0.125 + 5000 x 0.065
    gp2 = VolumeUsage("vol-3", "gp2", 100, hours(365))
    assert volume_cost(gp2, catalog, REGION) == D("5")  # 100 x 0.10 / 2
    with pytest.raises(PricingError, match="vol-4"):
        volume_cost(VolumeUsage("vol-4", "io1", 100, hours(1)), catalog, REGION)


def test_fsx_lustre_per_gb_month_by_deployment_and_throughput_tier(catalog):
    scratch = FileSystemUsage("fs-1", "SCRATCH_2", "SSD", 1200, hours(365))
    assert filesystem_cost(scratch, catalog, REGION) == D("84")  # 1200 x 0.140 / 2
    persistent = FileSystemUsage("fs-2", "PERSISTENT_2", "SSD", 2400, hours(730), throughput_per_tib=125)
    assert filesystem_cost(persistent, catalog, REGION) == D("348")  # 2400 x 0.145
    unknown_tier = FileSystemUsage("fs-3", "PERSISTENT_2", "SSD", 2400, hours(1), throughput_per_tib=999)
    with pytest.raises(PricingError, match="PERSISTENT_2 SSD 999 MB/s/TiB"):
        filesystem_cost(unknown_tier, catalog, REGION)


# --- a whole launch -------------------------------------------------------------------------------


def test_a_launch_is_the_sum_of_its_resources_written_as_strings(catalog):
    spot_history = [(T0 - timedelta(hours=1), D("0.06")), (T0 + timedelta(hours=1), D("0.08"))]
    usage = LaunchUsage(
        "launch-1",
        REGION,
        hours(2),
        instances=(
            InstanceUsage("i-1", "m5.xlarge", "on-demand", "us-east-1a", hours(2)),  # 0.384
            InstanceUsage("i-2", "m6g.xlarge", "on-demand", "us-east-1a", hours(1.5)),  # 0.231
            InstanceUsage("i-3", "c5.2xlarge", "spot", "us-east-1b", hours(2)),  # 0.06 + 0.08 = 0.14
        ),
        volumes=(
            VolumeUsage("vol-1", "gp3", 730, hours(2), iops=4000, throughput_mibps=125),
        ),  # (730 x 0.08 + 1000 x 0.005) / 365 = (58.4 + 5) / 365 = 0.173698...
        file_systems=(
            FileSystemUsage("fs-1", "SCRATCH_2", "SSD", 1200, hours(2)),
        ),  # 168 / 365 = 0.460273...
    )
    seen = []

    def spot(instance_type, zone, interval):
        seen.append((instance_type, zone, interval))
        return spot_history

    cost = price_launch(usage, catalog, spot)
    assert seen == [("c5.2xlarge", "us-east-1b", hours(2))]
    assert cost.attributes() == {
        "total_cost": "1.3890",
        "instance_cost": "0.7550",
        "volume_cost": "0.1737",
        "filesystem_cost": "0.4603",
        "currency": "USD",
    }
    assert [line.resource_id for line in cost.lines] == ["i-1", "i-2", "i-3", "vol-1", "fs-1"]


def test_an_instance_type_without_a_price_is_an_error_naming_it(catalog):
    usage = LaunchUsage(
        "launch-2",
        REGION,
        hours(1),
        instances=(InstanceUsage("i-9", "x9.huge", "on-demand", "us-east-1a", hours(1)),),
    )
    with pytest.raises(
        PricingError, match=r"no price for AmazonEC2 instance x9\.huge in us-east-1 in snapshot"
    ):
        price_launch(usage, catalog, no_spot)


# --- EMR ------------------------------------------------------------------------------------------


def test_reference_06_emr_serverless_examples_to_the_cent(catalog):
    # x86_64: 404 vCPU, 1,616 GB, 18,000 billable storage GB for 0.82 h
    x86 = emr_serverless_cost(
        EmrServerlessUsage.from_capacity(D(404), D(1616), D(18000), D("0.82")), catalog, REGION
    )
    assert (x86.vcpu_cost, x86.memory_cost) == (D("17.4333"), D("7.6572"))  # as in the post
    # 18,000 x 0.82 x 0.000111 = 1.63836; the post prints 1.6386 (its total 26.7291 carries the slip)
    assert x86.storage_cost == D("1.6384")
    assert cents(x86.total_cost) == "26.73"
    # Graviton2: 0.74 h at the arm64 rates; 20,000 GB over 100 workers, 20 GB each free
    arm = emr_serverless_cost(
        EmrServerlessUsage.from_capacity(D(404), D(1616), D(20000), D("0.74"), "arm64", workers=100),
        catalog,
        REGION,
    )
    assert (arm.vcpu_cost, arm.memory_cost, arm.storage_cost) == (D("12.5844"), D("5.5343"), D("1.4785"))
    assert arm.total_cost == D("19.5972")  # the post's breakdown
    # to the cent 19.5972 is 19.60; the post's table says $19.59, which its own breakdown does not give
    assert cents(arm.total_cost) == "19.60"


def test_emr_on_ec2_adds_the_surcharge_to_the_ec2_price(catalog):
    instances = [
        EmrInstanceUsage("i-1", "m5.xlarge", "ON_DEMAND", "us-east-1a", hours(1)),
        EmrInstanceUsage("i-2", "m5.xlarge", "ON_DEMAND", "us-east-1a", hours(1)),
        EmrInstanceUsage("i-3", "r5.8xlarge", "SPOT", "us-east-1a", hours(0.5)),
    ]
    cost = emr_cluster_cost(instances, catalog, lambda *_: [(T0 - timedelta(hours=1), D("0.80"))], REGION)
    # EC2: 2 x 0.192 + 0.5 h x 0.80 Spot = 0.784; EMR: 2 x 0.048 + 0.5 x 0.27 (capped) = 0.231
    assert (cost.ec2_cost, cost.emr_cost, cost.total_cost) == (D("0.784"), D("0.231"), D("1.015"))
    assert cost.instance_hours == D("2.5")


# --- Price List parsing ---------------------------------------------------------------------------

# The aws-cli documentation's GetProducts example (an io1 product in Singapore), as the API returns it.
AWS_CLI_EXAMPLE = (
    '{"product":{"productFamily":"Storage","attributes":{"storageMedia":"SSD-backed","maxThroughputvolume":'
    '"320 MB/sec","volumeType":"Provisioned IOPS","maxIopsvolume":"20000","servicecode":"AmazonEC2","usagetype"'
    ':"APS1-EBS:VolumeUsage.piops","locationType":"AWS Region","location":"Asia Pacific (Singapore)",'
    '"servicename":"Amazon Elastic Compute Cloud","maxVolumeSize":"16 TiB","operation":""},"sku":'
    '"3MKHN58N7RDDVGKJ"},"serviceCode":"AmazonEC2","terms":{"OnDemand":{"3MKHN58N7RDDVGKJ.JRTCKXETXF":'
    '{"priceDimensions":{"3MKHN58N7RDDVGKJ.JRTCKXETXF.6YS6EN2CT7":{"unit":"GB-Mo","endRange":"Inf",'
    '"description":"$0.138 per GB-month of Provisioned IOPS SSD (io1)  provisioned storage - Asia Pacific '
    '(Singapore)","appliesTo":[],"rateCode":"3MKHN58N7RDDVGKJ.JRTCKXETXF.6YS6EN2CT7","beginRange":"0",'
    '"pricePerUnit":{"USD":"0.1380000000"}}},"sku":"3MKHN58N7RDDVGKJ","effectiveDate":"2018-08-01T00:00:00Z",'
    '"offerTermCode":"JRTCKXETXF","termAttributes":{}}}},"version":"20180808005701","publicationDate":'
    '"2018-08-08T00:57:01Z"}'
)


def test_parse_on_demand_reads_a_real_price_list_entry():
    key = prices.ebs_key("io1", "storage", "ap-southeast-1")
    price = prices.parse_on_demand(AWS_CLI_EXAMPLE, key)
    assert (price.usd, price.unit, price.sku, price.published) == (
        D("0.138"),
        "GB-Mo",
        "3MKHN58N7RDDVGKJ",
        "2018-08-08T00:57:01Z",
    )
    with pytest.raises(PricingError, match="priced per 'GB-Mo', expected 'Hrs'"):
        prices.parse_on_demand(AWS_CLI_EXAMPLE, prices.ec2_instance_key("m5.large", "ap-southeast-1"))
    document = json.loads(AWS_CLI_EXAMPLE)
    term = next(iter(document["terms"]["OnDemand"].values()))
    term["priceDimensions"]["second"] = dict(next(iter(term["priceDimensions"].values())))
    with pytest.raises(PricingError, match="2 On-Demand price dimensions"):
        prices.parse_on_demand(json.dumps(document), key)


class PagedPriceList:
    """GetProducts with pages of ``page_size`` however many are asked for (the API may return fewer)."""

    def __init__(self, entries, page_size):
        self.entries, self.page_size, self.requests = entries, page_size, []

    def get_products(self, **request):
        self.requests.append(request)
        start = int(request.get("NextToken") or 0)
        page = {"FormatVersion": "aws_v1", "PriceList": self.entries[start : start + self.page_size]}
        if start + self.page_size < len(self.entries):
            page["NextToken"] = str(start + self.page_size)
        return page


def test_catalog_follows_next_token_and_caches_per_key():
    key = prices.ebs_key("io1", "storage", "ap-southeast-1")
    # 250 entries with one price (e.g. the same product listed per offer version): 3 pages
    client = PagedPriceList([AWS_CLI_EXAMPLE] * 250, page_size=100)
    catalog = PriceCatalog(client, "test")
    assert catalog.price(key).usd == D("0.138")
    assert catalog.calls == 3
    assert [r.get("NextToken") for r in client.requests] == [None, "100", "200"]
    assert {r["MaxResults"] for r in client.requests} == {100}
    assert client.requests[0]["Filters"][0] == {
        "Type": "TERM_MATCH",
        "Field": "productFamily",
        "Value": "Storage",
    }
    assert catalog.price(key).usd == D("0.138")
    assert catalog.calls == 3  # cached
    uncached = PriceCatalog(client, "test", cache=False)
    uncached.price(key)
    uncached.price(key)
    assert uncached.calls == 6


def test_catalog_refuses_filters_that_match_different_prices_and_caches_misses():
    cheaper = AWS_CLI_EXAMPLE.replace("0.1380000000", "0.1000000000")
    catalog = PriceCatalog(PagedPriceList([AWS_CLI_EXAMPLE, cheaper], 100), "test")
    with pytest.raises(PricingError, match="2 products match in test with different prices"):
        catalog.price(prices.ebs_key("io1", "storage", "ap-southeast-1"))
    empty = PriceCatalog(PagedPriceList([], 100), "empty")
    key = prices.ec2_instance_key("m5.large", "us-east-1")
    for _ in range(2):
        with pytest.raises(
            PricingError, match=r"no price for AmazonEC2 instance m5\.large in us-east-1 in empty"
        ):
            empty.price(key)
    assert empty.calls == 1


def test_snapshot_pages_like_the_api_and_filters_out_capacity_reservations():
    snapshot = SnapshotPriceList(SNAPSHOT)
    everything = []
    request = {"ServiceCode": "AmazonEC2", "Filters": [], "MaxResults": 20}
    pages = 0
    while True:
        page = snapshot.get_products(**request)
        pages += 1
        assert len(page["PriceList"]) <= 20
        everything.extend(page["PriceList"])
        if "NextToken" not in page:
            break
        request["NextToken"] = page["NextToken"]
    # 20 instance types (and their capacity-reservation SKUs) + 11 EBS prices, every entry once
    assert (pages, len(everything), len(set(everything))) == (3, 51, 51)
    assert all(isinstance(entry, str) for entry in everything)  # JSON strings, as the API returns
    reservations = [e for e in everything if '"UnusedCapacityReservation"' in e]
    assert reservations  # present in the offer ...
    key = prices.ec2_instance_key("m5.xlarge", "us-east-1")
    matches = snapshot.get_products(ServiceCode="AmazonEC2", Filters=key.get_products_filters())["PriceList"]
    assert len(matches) == 1  # ... and left out by the filters
    with pytest.raises(ValueError, match="MaxResults"):
        snapshot.get_products(ServiceCode="AmazonEC2", MaxResults=101)


def test_snapshot_holds_the_reference_prices(catalog):
    expected = {
        prices.ec2_instance_key("m5.xlarge", REGION): "0.192",
        prices.ec2_instance_key("m6g.xlarge", REGION): "0.154",
        prices.ec2_instance_key("r6g.4xlarge", REGION): "0.8064",
        prices.emr_surcharge_key("r5.4xlarge", REGION): "0.252",
        prices.emr_surcharge_key("m4.large", REGION): "0.030",
        prices.ebs_key("gp3", "throughput", REGION): "0.040",
        prices.fsx_lustre_key("SCRATCH_2", "SSD", None, REGION): "0.140",
        prices.emr_serverless_key("x86_64", "memory", REGION): "0.0057785",
        prices.emr_serverless_key("arm64", "vcpu", REGION): "0.042094",
    }
    assert {key: catalog.price(key).usd for key in expected} == {key: D(v) for key, v in expected.items()}
    with pytest.raises(PricingError, match=r"no price for AmazonEC2 instance m5\.large in eu-west-1"):
        catalog.price(prices.ec2_instance_key("m5.large", "eu-west-1"))


def test_price_store_serves_the_next_task_without_a_request(tmp_path):
    store = PriceStore(f"file://{tmp_path}/cache/", max_age_hours=24)
    key = prices.ec2_instance_key("m5.xlarge", REGION)
    first = PriceCatalog(SnapshotPriceList(SNAPSHOT), "snapshot", store=store)
    assert first.price(key).usd == D("0.192") and first.calls == 1
    second = PriceCatalog(SnapshotPriceList(SNAPSHOT), "snapshot", store=store)
    assert second.price(key).usd == D("0.192") and second.calls == 0
    other_source = PriceCatalog(SnapshotPriceList(SNAPSHOT), "another", store=store)
    other_source.price(key)
    assert other_source.calls == 1  # entries are per source
    expired = PriceCatalog(
        SnapshotPriceList(SNAPSHOT), "snapshot", store=PriceStore(store.uri, max_age_hours=0)
    )
    expired.price(key)
    assert expired.calls == 1


def test_architecture_of_instance_types():
    assert [
        architecture(t) for t in ("m6g.xlarge", "c7gn.large", "r6gd.4xlarge", "a1.large", "t4g.micro")
    ] == ["arm64"] * 5
    assert [architecture(t) for t in ("m5.xlarge", "m4.large", "g5.xlarge", "m7i.large", "i3.2xlarge")] == [
        "x86_64"
    ] * 5
