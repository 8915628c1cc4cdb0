"""Unit prices from the AWS Price List Query API (``GetProducts``), or from its offline snapshot.

A ``PriceKey`` names one price (service, product, region) and carries the ``GetProducts`` filters that
select exactly one product for it. ``PriceCatalog`` answers ``price(key)`` from any object with the
boto3 ``get_products`` signature:

- in AWS, the ``pricing`` client (its endpoint is in us-east-1 whatever region is priced);
- locally and in tests, ``SnapshotPriceList`` over ``include/pricing/<ServiceCode>.json``: real prices in
  the response shape of the API (``PriceList`` entries are JSON strings), filtered and paginated the
  way the API does it, so the parsing below is the same code in both places.

The catalog caches per key: pricing 2,000 launches over 20 instance types asks the API once per
distinct key, not once per launch (``benchmarks/pricing.py`` measures it). A key with no product is an
error naming the key and the source; it is cached too, so one run does not ask twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from dataplatform.pricing.resources import PricingError
from dataplatform.reports import read_bytes, write_bytes

log = logging.getLogger(__name__)

PAGE_SIZE = 100  # GetProducts' maximum MaxResults
PRICE_LIST_REGION = "us-east-1"  # where the Price List endpoint lives for every priced region

# EBS and FSx list prices are per GB-month; AWS prorates them per second over a 730-hour month.
HOURS_PER_MONTH = Decimal(730)


class PriceListClient(Protocol):
    def get_products(self, **kwargs: Any) -> dict: ...


@dataclass(frozen=True)
class PriceKey:
    """One price: ``service`` is the Price List service code, ``product`` a readable name for messages
    and cache keys (``instance m5.xlarge``), ``unit`` what the price must be per (``Hrs``, ``GB-Mo``).
    """

    service: str
    product: str
    region: str
    unit: str
    filters: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return f"{self.service} {self.product} in {self.region}"

    def get_products_filters(self) -> list[dict[str, str]]:
        return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in self.filters]


def ec2_instance_key(instance_type: str, region: str) -> PriceKey:
    """On-Demand Linux, shared tenancy: the filters Karpenter uses to get one SKU per type (capacitystatus
    ``Used`` leaves out the capacity-reservation SKUs, preInstalledSw ``NA`` the SQL Server ones)."""
    return PriceKey(
        "AmazonEC2",
        f"instance {instance_type}",
        region,
        "Hrs",
        (
            ("instanceType", instance_type),
            ("regionCode", region),
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
            ("marketoption", "OnDemand"),
        ),
    )


# EBS dimensions: the product family each lives under in the AmazonEC2 offer, and its unit.
_EBS_DIMENSIONS = {
    "storage": ("Storage", "GB-Mo"),
    "iops": ("System Operation", "IOPS-Mo"),
    "throughput": ("Provisioned Throughput", "MiBps-Mo"),
}


def ebs_key(volume_type: str, dimension: str, region: str) -> PriceKey:
    family, unit = _EBS_DIMENSIONS[dimension]
    return PriceKey(
        "AmazonEC2",
        f"EBS {volume_type} {dimension}",
        region,
        unit,
        (("productFamily", family), ("volumeApiName", volume_type), ("regionCode", region)),
    )


def fsx_lustre_key(
    deployment_type: str, storage_type: str, throughput_per_tib: int | None, region: str
) -> PriceKey:
    """Lustre storage per GB-month; PERSISTENT deployments are priced per throughput tier (MB/s/TiB)."""
    filters = [
        ("fileSystemType", "Lustre"),
        ("deploymentOption", deployment_type),
        ("storageType", storage_type),
        ("regionCode", region),
    ]
    product = f"FSx Lustre {deployment_type} {storage_type}"
    if throughput_per_tib is not None:
        filters.append(("throughputCapacity", str(throughput_per_tib)))
        product += f" {throughput_per_tib} MB/s/TiB"
    return PriceKey("AmazonFSx", product, region, "GB-Mo", tuple(filters))


def emr_surcharge_key(instance_type: str, region: str) -> PriceKey:
    """EMR on EC2's per-instance-hour charge, billed on top of the EC2 price."""
    return PriceKey(
        "ElasticMapReduce",
        f"EMR surcharge {instance_type}",
        region,
        "Hrs",
        (
            ("productFamily", "Elastic Map Reduce Instance"),
            ("instanceType", instance_type),
            ("softwareType", "EMR"),
            ("regionCode", region),
        ),
    )


EMR_SERVERLESS_DIMENSIONS = {"vcpu": "vCPU-Hours", "memory": "GB-Hours", "storage": "GB-Hours"}
EMR_SERVERLESS_ARCHITECTURES = ("x86_64", "arm64")


def emr_serverless_key(architecture: str, dimension: str, region: str) -> PriceKey:
    if architecture not in EMR_SERVERLESS_ARCHITECTURES:
        raise PricingError(f"EMR Serverless architecture must be x86_64 or arm64, got {architecture!r}")
    return PriceKey(
        "ElasticMapReduce",
        f"EMR Serverless {architecture} {dimension}",
        region,
        EMR_SERVERLESS_DIMENSIONS[dimension],
        (
            ("productFamily", "EMR Serverless"),
            ("processorArchitecture", architecture),
            ("resourceType", dimension),
            ("regionCode", region),
        ),
    )


@dataclass(frozen=True)
class UnitPrice:
    usd: Decimal
    unit: str
    sku: str
    # The offer's publicationDate: the "price date" written next to every cost.
    published: str


def parse_on_demand(entry: str | Mapping[str, Any], key: PriceKey) -> UnitPrice:
    """The On-Demand price of one ``PriceList`` entry (a JSON string, as the API returns it):
    ``terms.OnDemand.<term>.priceDimensions.<dimension>.pricePerUnit.USD``. Both map keys are opaque
    codes, so the values are iterated. Tiered dimensions are taken from their first tier."""
    document = json.loads(entry) if isinstance(entry, str) else entry
    sku = document.get("product", {}).get("sku", "?")
    dimensions = [
        dimension
        for term in document.get("terms", {}).get("OnDemand", {}).values()
        for dimension in term.get("priceDimensions", {}).values()
    ]
    first_tier = [d for d in dimensions if d.get("beginRange", "0") == "0"]
    if len(first_tier) != 1:
        raise PricingError(
            f"{key}: product {sku} has {len(first_tier)} On-Demand price dimensions starting at 0, expected 1"
        )
    dimension = first_tier[0]
    if dimension.get("unit") != key.unit:
        raise PricingError(
            f"{key}: product {sku} is priced per {dimension.get('unit')!r}, expected {key.unit!r}"
        )
    try:
        usd = Decimal(dimension["pricePerUnit"]["USD"])
    except (KeyError, InvalidOperation) as exc:
        raise PricingError(f"{key}: product {sku} has no USD price") from exc
    return UnitPrice(usd=usd, unit=key.unit, sku=sku, published=document.get("publicationDate", ""))


class PriceCatalog:
    """Prices by key from one Price List source, cached (``cache=False`` only for the benchmark's
    baseline). ``calls`` counts GetProducts requests, pages included."""

    def __init__(
        self, client: PriceListClient, source: str, cache: bool = True, store: PriceStore | None = None
    ):
        self.client = client
        self.source = source
        self.cache = cache
        self.store = store
        self.calls = 0
        self._prices: dict[PriceKey, UnitPrice | PricingError] = {}
        self._lock = threading.Lock()

    def price(self, key: PriceKey) -> UnitPrice:
        if not self.cache:
            return self._fetch(key)
        with self._lock:
            # Under the lock: two threads asking for one key make one request between them.
            if key not in self._prices:
                try:
                    self._prices[key] = self._stored_or_fetched(key)
                except PricingError as exc:
                    self._prices[key] = exc
            found = self._prices[key]
        if isinstance(found, PricingError):
            raise found
        return found

    def prices_used(self) -> list[UnitPrice]:
        with self._lock:
            return [price for price in self._prices.values() if isinstance(price, UnitPrice)]

    def price_date(self) -> str:
        """The newest publication date of the offers the prices used so far come from (the ``price_date``
        written next to a cost)."""
        dates = [price.published for price in self.prices_used() if price.published]
        return max(dates) if dates else ""

    def _stored_or_fetched(self, key: PriceKey) -> UnitPrice:
        # The store only saves requests: when it cannot be read or written, the price is still right.
        if self.store is not None:
            try:
                stored = self.store.get(key, self.source)
            except Exception as exc:
                log.warning("price cache %s unreadable (%s): asking %s", self.store.uri, exc, self.source)
                stored = None
            if stored is not None:
                return stored
        price = self._fetch(key)
        if self.store is not None:
            try:
                self.store.put(key, self.source, price)
            except Exception as exc:
                log.warning("price cache %s not written (%s)", self.store.uri, exc)
        return price

    def _fetch(self, key: PriceKey) -> UnitPrice:
        entries = list(self._products(key))
        if not entries:
            raise PricingError(f"no price for {key} in {self.source}")
        prices = {parse_on_demand(entry, key) for entry in entries}
        if len({price.usd for price in prices}) > 1:
            raise PricingError(
                f"{key}: {len(entries)} products match in {self.source} with different prices "
                f"({sorted(str(price.usd) for price in prices)}); the filters must select one"
            )
        price = min(prices, key=lambda p: p.sku)
        log.debug("price of %s: %s USD per %s (%s)", key, price.usd, price.unit, self.source)
        return price

    def _products(self, key: PriceKey) -> Iterable[str]:
        request: dict[str, Any] = {
            "ServiceCode": key.service,
            "Filters": key.get_products_filters(),
            "FormatVersion": "aws_v1",
            "MaxResults": PAGE_SIZE,
        }
        while True:
            self.calls += 1
            page = self.client.get_products(**request)
            yield from page.get("PriceList", [])
            token = page.get("NextToken")
            if not token:
                return
            request["NextToken"] = token


class SnapshotPriceList:
    """``get_products`` over offline Price List documents (``<ServiceCode>.json``, each
    ``{"FormatVersion": "aws_v1", "PriceList": ["<JSON string>", ...]}``): TERM_MATCH filters on the
    product's attributes (``productFamily`` and ``ServiceCode`` too), pages of at most ``MaxResults``
    with an opaque ``NextToken``, like the API."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self._offers: dict[str, list[tuple[dict[str, str], str]]] = {}
        self._lock = threading.Lock()

    def get_products(
        self,
        ServiceCode: str,
        Filters: list[dict[str, str]] = (),
        FormatVersion: str = "aws_v1",
        MaxResults: int = PAGE_SIZE,
        NextToken: str | None = None,
    ) -> dict:
        if not 1 <= MaxResults <= PAGE_SIZE:
            raise ValueError(f"MaxResults must be 1..{PAGE_SIZE}, got {MaxResults}")
        wanted = [(f["Field"], f["Value"]) for f in Filters]
        matches = [
            entry
            for attributes, entry in self._offer(ServiceCode)
            if all(attributes.get(field) == value for field, value in wanted)
        ]
        start = int(NextToken) if NextToken else 0
        page = {"FormatVersion": FormatVersion, "PriceList": matches[start : start + MaxResults]}
        if start + MaxResults < len(matches):
            page["NextToken"] = str(start + MaxResults)
        return page

    def _offer(self, service_code: str) -> list[tuple[dict[str, str], str]]:
        with self._lock:
            if service_code not in self._offers:
                path = self.directory / f"{service_code}.json"
                if not path.is_file():
                    raise PricingError(f"the price snapshot {self.directory} has no offer for {service_code}")
                entries = json.loads(path.read_text())["PriceList"]
                self._offers[service_code] = [(_filterable(entry), entry) for entry in entries]
            return self._offers[service_code]


def _filterable(entry: str) -> dict[str, str]:
    document = json.loads(entry)
    product = document["product"]
    return {
        **product.get("attributes", {}),
        "productFamily": product.get("productFamily", ""),
        "ServiceCode": document.get("serviceCode", ""),
    }


class PriceStore:
    """Prices kept between tasks: one JSON object per key under ``uri`` (s3:// or file://), trusted for
    ``max_age_hours``. The DAG prices each launch in its own task (own process, own ``PriceCatalog``), so
    without it every task would ask the API again for the same instance types. One object per key means
    concurrent tasks never overwrite each other's entries."""

    def __init__(self, uri: str, max_age_hours: float, s3: Any = None):
        self.uri = uri.rstrip("/") + "/"
        self.max_age_seconds = max_age_hours * 3600
        self.s3 = s3

    def _location(self, key: PriceKey, source: str) -> str:
        digest = hashlib.sha256(repr((source, key.service, key.region, key.filters)).encode()).hexdigest()[
            :32
        ]
        return f"{self.uri}{key.service}/{key.region}/{digest}.json"

    def get(self, key: PriceKey, source: str) -> UnitPrice | None:
        body = read_bytes(self._location(key, source), self.s3)
        if body is None:
            return None
        stored = json.loads(body)
        age = datetime.now(UTC).timestamp() - stored["stored_at"]
        if age > self.max_age_seconds:
            return None
        return UnitPrice(Decimal(stored["usd"]), stored["unit"], stored["sku"], stored["published"])

    def put(self, key: PriceKey, source: str, price: UnitPrice) -> None:
        body = json.dumps(
            {
                "key": str(key),
                "usd": str(price.usd),
                "unit": price.unit,
                "sku": price.sku,
                "published": price.published,
                "stored_at": datetime.now(UTC).timestamp(),
            }
        ).encode()
        write_bytes(self._location(key, source), body, "application/json", self.s3)
