"""Regenerate the offline Price List snapshot in this directory: ``python include/pricing/build_snapshot.py``.

The local stack and the tests price from these files instead of the Price List API (moto has none). Each
``<ServiceCode>.json`` is a ``GetProducts`` response body holding every product (``PriceList`` entries are
JSON strings, as the API returns them); ``spot_price_history.json`` is a ``DescribeSpotPriceHistory``
response body.

Where each price comes from (us-east-1, Linux, On-Demand, shared tenancy), with the confidence labels of
``../shared/reference/aws-prices.md`` (compiled 2026-11-23), is in ``SOURCES`` below and in every
product's ``snapshotSource`` attribute (not an AWS attribute: it marks what a reader should trust).
The Spot history is illustrative, not real: no public record of us-east-1 Spot prices was reachable.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGION = "us-east-1"
LOCATION = "US East (N. Virginia)"
PUBLISHED = "2026-11-23T00:00:00Z"
VERSION = "20261123000000"
EFFECTIVE = "2026-11-01T00:00:00Z"

SOURCES = {
    "ec2": "aws/karpenter-provider-aws zz_generated.pricing_aws.go (generated 2026-07-20 from the Price List API) [direct]",
    "ec2-c5": "Price List c5.xlarge fixture ('$0.17 per On Demand Linux c5.xlarge Instance Hour'); c5.large half of it [computed]",
    "emr-direct": "named sources in aws-prices.md section 2 [direct]",
    "emr-weak": "unattributed table, equals 25% of EC2 [weak]",
    "emr-derived": "25% of the EC2 price, capped at $0.27/h [derived]",
    "ebs": "infracost ebs_volume_test golden file, us-east-1 [direct]",
    "fsx-direct": "named sources in aws-prices.md section 4 [direct]",
    "fsx-weak": "one unattributed FSx cost analyzer [weak]: check before relying on it",
    "emr-serverless": "PerfKitBenchmarker aws_dpb_emr_serverless_prices.py and aws-samples pricing calculator [direct]",
}

# type: (USD/hour, vCPU, memory GiB, EMR surcharge USD/hour or None, EMR source)
EC2 = {
    "m5.large": ("0.096", 2, 8, "0.024", "emr-derived"),
    "m5.xlarge": ("0.192", 4, 16, "0.048", "emr-direct"),
    "m5.2xlarge": ("0.384", 8, 32, "0.096", "emr-weak"),
    "m5.4xlarge": ("0.768", 16, 64, "0.192", "emr-weak"),
    "m6g.xlarge": ("0.154", 4, 16, "0.0385", "emr-derived"),
    "m6g.2xlarge": ("0.308", 8, 32, "0.077", "emr-derived"),
    "m7g.xlarge": ("0.1632", 4, 16, "0.0408", "emr-derived"),
    "c5.large": ("0.085", 2, 4, None, None),
    "c5.xlarge": ("0.17", 4, 8, None, None),
    "c5.2xlarge": ("0.34", 8, 16, "0.085", "emr-weak"),
    "c5.4xlarge": ("0.68", 16, 32, "0.17", "emr-derived"),
    "c6g.4xlarge": ("0.544", 16, 32, "0.136", "emr-derived"),
    "r5.2xlarge": ("0.504", 8, 64, "0.126", "emr-weak"),
    "r5.4xlarge": ("1.008", 16, 128, "0.252", "emr-direct"),
    "r5.8xlarge": ("2.016", 32, 256, "0.27", "emr-derived"),
    "r5.12xlarge": ("3.024", 48, 384, "0.27", "emr-derived"),
    "r5.16xlarge": ("4.032", 64, 512, "0.27", "emr-derived"),
    "r6g.4xlarge": ("0.8064", 16, 128, "0.2016", "emr-derived"),
    "m4.large": ("0.10", 2, 8, "0.030", "emr-direct"),
    "i3.2xlarge": ("0.624", 8, 61, "0.156", "emr-derived"),
}

# volumeApiName: {dimension: USD per unit}
EBS = {
    "gp2": {"storage": "0.10"},
    "gp3": {"storage": "0.08", "iops": "0.005", "throughput": "0.040"},
    "io1": {"storage": "0.125", "iops": "0.065"},
    "io2": {"storage": "0.125", "iops": "0.065"},
    "st1": {"storage": "0.045"},
    "sc1": {"storage": "0.015"},
    "standard": {"storage": "0.05"},
}
EBS_FAMILY = {
    "storage": ("Storage", "GB-Mo"),
    "iops": ("System Operation", "IOPS-Mo"),
    "throughput": ("Provisioned Throughput", "MiBps-Mo"),
}

# (deployment type, storage type, MB/s/TiB or None): (USD per GB-month, source)
FSX_LUSTRE = {
    ("SCRATCH_2", "SSD", None): ("0.140", "fsx-direct"),
    ("PERSISTENT_1", "SSD", 50): ("0.140", "fsx-weak"),
    ("PERSISTENT_1", "SSD", 100): ("0.190", "fsx-weak"),
    ("PERSISTENT_1", "SSD", 200): ("0.290", "fsx-weak"),
    ("PERSISTENT_2", "SSD", 125): ("0.145", "fsx-direct"),
    ("PERSISTENT_2", "SSD", 250): ("0.210", "fsx-weak"),
    ("PERSISTENT_2", "SSD", 500): ("0.340", "fsx-weak"),
    ("PERSISTENT_2", "SSD", 1000): ("0.600", "fsx-weak"),
    ("PERSISTENT_1", "HDD", 12): ("0.025", "fsx-weak"),
    ("PERSISTENT_1", "HDD", 40): ("0.083", "fsx-weak"),
}

# architecture: {dimension: (USD per unit, unit)}; x86 memory: PKB's 0.0057785 (the aws-samples calculator's
# 0.005786 looks like its rounding), the rate that reproduces reference 06's $26.73.
EMR_SERVERLESS = {
    "x86_64": {
        "vcpu": ("0.052624", "vCPU-Hours"),
        "memory": ("0.0057785", "GB-Hours"),
        "storage": ("0.000111", "GB-Hours"),
    },
    "arm64": {
        "vcpu": ("0.042094", "vCPU-Hours"),
        "memory": ("0.004628", "GB-Hours"),
        "storage": ("0.000111", "GB-Hours"),
    },
}

# Illustrative Spot prices (fraction of On-Demand) and the times they changed, per zone.
SPOT_ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
SPOT_STEPS = (
    (datetime(2026, 11, 1, tzinfo=UTC), "0.38"),
    (datetime(2026, 11, 9, 6, tzinfo=UTC), "0.41"),
    (datetime(2026, 11, 17, 18, tzinfo=UTC), "0.36"),
    (datetime(2026, 11, 22, 12, tzinfo=UTC), "0.39"),
)


def sku(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16].upper()


def entry(
    service: str, family: str, attributes: dict, usd: str, unit: str, description: str, source: str
) -> str:
    code = sku(service, family, sorted(attributes.items()))
    term = f"{code}.JRTCKXETXF"
    rate = f"{term}.6YS6EN2CT7"
    document = {
        "product": {
            "productFamily": family,
            "attributes": {
                "servicecode": service,
                "location": LOCATION,
                "locationType": "AWS Region",
                "regionCode": REGION,
                **attributes,
                "snapshotSource": SOURCES[source],
            },
            "sku": code,
        },
        "serviceCode": service,
        "terms": {
            "OnDemand": {
                term: {
                    "priceDimensions": {
                        rate: {
                            "unit": unit,
                            "endRange": "Inf",
                            "description": description,
                            "appliesTo": [],
                            "rateCode": rate,
                            "beginRange": "0",
                            "pricePerUnit": {"USD": str(Decimal(usd).quantize(Decimal("1E-10")))},
                        }
                    },
                    "sku": code,
                    "effectiveDate": EFFECTIVE,
                    "offerTermCode": "JRTCKXETXF",
                    "termAttributes": {},
                }
            }
        },
        "version": VERSION,
        "publicationDate": PUBLISHED,
    }
    return json.dumps(document, sort_keys=True)


def ec2_offer() -> list[str]:
    products = []
    for instance_type, (usd, vcpu, memory, _, _) in EC2.items():
        source = "ec2-c5" if instance_type in ("c5.large", "c5.xlarge") else "ec2"
        products.append(
            entry(
                "AmazonEC2",
                "Compute Instance",
                {
                    "instanceType": instance_type,
                    "vcpu": str(vcpu),
                    "memory": f"{memory} GiB",
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "preInstalledSw": "NA",
                    "capacitystatus": "Used",
                    "marketoption": "OnDemand",
                    "licenseModel": "No License required",
                    "operation": "RunInstances",
                    "usagetype": f"BoxUsage:{instance_type}",
                },
                usd,
                "Hrs",
                f"${float(usd):g} per On Demand Linux {instance_type} Instance Hour",
                source,
            )
        )
        # The same type with a capacity reservation: the capacitystatus filter must leave it out.
        products.append(
            entry(
                "AmazonEC2",
                "Compute Instance",
                {
                    "instanceType": instance_type,
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "preInstalledSw": "NA",
                    "capacitystatus": "UnusedCapacityReservation",
                    "marketoption": "OnDemand",
                    "usagetype": f"Reservation:{instance_type}",
                },
                usd,
                "Hrs",
                f"${float(usd):g} per Unused Reservation Linux {instance_type} Instance Hour",
                source,
            )
        )
    for volume_type, dimensions in EBS.items():
        for dimension, usd in dimensions.items():
            family, unit = EBS_FAMILY[dimension]
            attributes = {"volumeApiName": volume_type}
            if dimension == "iops":
                attributes["group"] = "EBS IOPS"
            if dimension == "throughput":
                attributes["group"] = "EBS Throughput"
            products.append(
                entry(
                    "AmazonEC2",
                    family,
                    attributes,
                    usd,
                    unit,
                    f"${usd} per {unit} of {volume_type} {dimension}",
                    "ebs",
                )
            )
    return products


def emr_offer() -> list[str]:
    products = []
    for instance_type, (_, _, _, emr, source) in EC2.items():
        if emr is None:
            continue
        products.append(
            entry(
                "ElasticMapReduce",
                "Elastic Map Reduce Instance",
                {
                    "instanceType": instance_type,
                    "softwareType": "EMR",
                    "usagetype": f"BoxUsage:{instance_type}",
                },
                emr,
                "Hrs",
                f"${float(emr):g} per hour for EMR {instance_type}",
                source,
            )
        )
    for architecture, dimensions in EMR_SERVERLESS.items():
        for dimension, (usd, unit) in dimensions.items():
            products.append(
                entry(
                    "ElasticMapReduce",
                    "EMR Serverless",
                    {"processorArchitecture": architecture, "resourceType": dimension},
                    usd,
                    unit,
                    f"${usd} per {unit} for EMR Serverless {architecture} {dimension}",
                    "emr-serverless",
                )
            )
    return products


def fsx_offer() -> list[str]:
    products = []
    for (deployment, storage, throughput), (usd, source) in FSX_LUSTRE.items():
        attributes = {"fileSystemType": "Lustre", "deploymentOption": deployment, "storageType": storage}
        if throughput is not None:
            attributes["throughputCapacity"] = str(throughput)
        products.append(
            entry(
                "AmazonFSx",
                "Storage",
                attributes,
                usd,
                "GB-Mo",
                f"${usd} per GB-month of Lustre {deployment} {storage}"
                + (f" {throughput} MB/s/TiB" if throughput else ""),
                source,
            )
        )
    return products


def spot_history() -> list[dict]:
    records = []
    for instance_type, (usd, *_rest) in EC2.items():
        for zone_number, zone in enumerate(SPOT_ZONES):
            for step_number, (when, fraction) in enumerate(SPOT_STEPS):
                # Zones differ a little, like real Spot markets.
                price = float(usd) * (float(fraction) + 0.01 * zone_number)
                records.append(
                    {
                        "AvailabilityZone": zone,
                        "InstanceType": instance_type,
                        "ProductDescription": "Linux/UNIX",
                        "SpotPrice": f"{price:.6f}",
                        "Timestamp": (when + timedelta(minutes=7 * zone_number + step_number)).isoformat(),
                    }
                )
    return records


def main() -> None:
    offers = {"AmazonEC2": ec2_offer(), "ElasticMapReduce": emr_offer(), "AmazonFSx": fsx_offer()}
    for service, products in offers.items():
        body = {"FormatVersion": "aws_v1", "PriceList": products}
        (HERE / f"{service}.json").write_text(json.dumps(body, indent=1) + "\n")
    (HERE / "spot_price_history.json").write_text(
        json.dumps({"SpotPriceHistory": spot_history(), "Illustrative": True}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
