"""Spot price history for one instance type in one Availability Zone over an interval.

``DescribeSpotPriceHistory`` returns the price changes inside the window plus the last change before it
starts (the price in force at the start). In AWS the EC2 client answers; locally ``SnapshotSpotHistory``
answers the same request from ``include/pricing/spot_price_history.json`` (moto's history is one fixed
price with no dates, which cannot test a price change inside a run).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from dataplatform.pricing.resources import Interval, as_utc

PRODUCT_DESCRIPTION = "Linux/UNIX"


def spot_price_points(ec2: Any, instance_type: str, availability_zone: str, interval: Interval):
    """``[(time, USD per hour), ...]`` sorted by time, for ``instance_type`` in ``availability_zone``."""
    request: dict[str, Any] = {
        "InstanceTypes": [instance_type],
        "ProductDescriptions": [PRODUCT_DESCRIPTION],
        "AvailabilityZone": availability_zone,
        "StartTime": interval.start,
        "EndTime": interval.end,
    }
    points = []
    while True:
        page = ec2.describe_spot_price_history(**request)
        for record in page.get("SpotPriceHistory", []):
            # A history request filtered on one type and zone can still list other zones' records
            # (moto does); keep exactly ours.
            if record.get("AvailabilityZone") not in (None, availability_zone):
                continue
            if record.get("InstanceType") != instance_type:
                continue
            points.append((as_utc(record["Timestamp"]), Decimal(record["SpotPrice"])))
        token = page.get("NextToken")
        if not token:
            break
        request["NextToken"] = token
    return sorted(set(points))


class SnapshotSpotHistory:
    """``describe_spot_price_history`` over ``{"SpotPriceHistory": [records...]}`` (the response shape),
    with the API's window rule: the records inside [StartTime, EndTime] plus the last one before
    StartTime, per type and zone."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._records: list[dict] | None = None
        self._lock = threading.Lock()

    def describe_spot_price_history(
        self,
        InstanceTypes: list[str],
        ProductDescriptions: list[str],
        AvailabilityZone: str,
        StartTime: datetime,
        EndTime: datetime,
        NextToken: str | None = None,
    ) -> dict:
        start, end = as_utc(StartTime), as_utc(EndTime)
        ours = sorted(
            (
                record
                for record in self._load()
                if record["InstanceType"] in InstanceTypes
                and record["ProductDescription"] in ProductDescriptions
                and record["AvailabilityZone"] == AvailabilityZone
            ),
            key=lambda record: as_utc(record["Timestamp"]),
        )
        before = [record for record in ours if as_utc(record["Timestamp"]) < start][-1:]
        inside = [record for record in ours if start <= as_utc(record["Timestamp"]) <= end]
        return {"SpotPriceHistory": before + inside}

    def _load(self) -> list[dict]:
        with self._lock:
            if self._records is None:
                self._records = json.loads(self.path.read_text())["SpotPriceHistory"]
            return self._records
