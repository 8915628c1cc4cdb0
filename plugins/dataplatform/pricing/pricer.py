"""Price one launch end to end: read the record, collect its resources, price them, write the cost back.

``Pricer`` holds what every launch of a run shares (the price catalog with its cache, the Spot history,
AWS clients per region) so the DAG task, the CLI and the tests price the same way. The price source
(``pricing.source``) decides where unit prices come from:

- ``price_list``: the Price List Query API (client in us-east-1) and EC2 DescribeSpotPriceHistory in the
  launch's region;
- ``snapshot``: the offline copies of both under ``pricing.snapshot_dir``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dataplatform.config import PricingSettings
from dataplatform.pricing import launches
from dataplatform.pricing.collect import collect_launch_usage
from dataplatform.pricing.costs import LaunchCost, price_launch
from dataplatform.pricing.prices import PRICE_LIST_REGION, PriceCatalog, PriceStore, SnapshotPriceList
from dataplatform.pricing.resources import LaunchUsage, PricingError
from dataplatform.pricing.spot import SnapshotSpotHistory, spot_price_points

log = logging.getLogger(__name__)

# (service, region) -> boto3 client: ``dataplatform.aws.client`` in tasks, plain boto3 in tests.
ClientFactory = Callable[[str, str], Any]

PRICED, ALREADY_PRICED, FAILED = "priced", "already_priced", "failed"


@dataclass
class _Clients:
    batch: Any
    ecs: Any
    ec2: Any
    fsx: Any


@dataclass
class Pricer:
    settings: PricingSettings
    client: ClientFactory
    dynamodb: Any
    store: PriceStore | None = None
    _catalog: PriceCatalog | None = field(default=None, init=False)

    @property
    def source(self) -> str:
        return source_label(self.settings)

    @property
    def catalog(self) -> PriceCatalog:
        if self._catalog is None:
            self._catalog = price_catalog(self.settings, self.client, self.store)
        return self._catalog

    def spot_history(self, region: str):
        return spot_history(self.settings, self.client, region)

    def clients(self, region: str) -> _Clients:
        return _Clients(*(self.client(service, region) for service in ("batch", "ecs", "ec2", "fsx")))

    def price(self, launch: dict[str, Any]) -> tuple[LaunchUsage, LaunchCost]:
        """What one launch record used and cost (nothing written). Raises ``PricingError`` with the reason."""
        region = launches.check_launch_record(launch)["region"]
        usage = collect_launch_usage(launch, self.clients(region))
        return usage, price_launch(usage, self.catalog, self.spot_history(region))

    def price_and_record(self, launch_id: str) -> dict[str, Any]:
        """Price one launch and write the result back (or the reason it cannot be priced). Returns the
        outcome for the run's report: ``priced``, ``already_priced`` (by an earlier or a concurrent run:
        nothing written) or ``failed`` (``pricing_error`` recorded, retried by the next run)."""
        table = self.settings.launches_table
        launch = launches.get_launch(self.dynamodb, table, launch_id)
        if launch is None:
            raise PricingError(f"launch {launch_id} is not in {table}")
        outcome = {"launch_id": launch_id, "workflow_type": launch.get("workflow_type")}
        if "total_cost" in launch:
            return {**outcome, "outcome": ALREADY_PRICED, "total_cost": launch["total_cost"]}
        if launch.get("status") != launches.COMPLETE:
            raise PricingError(f"launch {launch_id} is {launch.get('status')}, not COMPLETE")
        try:
            usage, cost = self.price(launch)
        except PricingError as exc:
            reason = str(exc)
            log.warning("launch %s not priced: %s", launch_id, reason)
            if not launches.record_error(self.dynamodb, table, launch_id, reason):
                return {**outcome, "outcome": ALREADY_PRICED}
            return {**outcome, "outcome": FAILED, "reason": reason}
        attributes = {
            **cost.attributes(),
            "price_source": self.source,
            "price_date": self.catalog.price_date(),
            "instance_types": sorted({instance.instance_type for instance in usage.instances}),
        }
        if not launches.write_cost(self.dynamodb, table, launch_id, attributes):
            log.info("launch %s was priced by another run meanwhile: nothing written", launch_id)
            return {**outcome, "outcome": ALREADY_PRICED}
        log.info(
            "launch %s priced: total %s USD (instances %s, volumes %s, file systems %s; %d resources)",
            launch_id,
            attributes["total_cost"],
            attributes["instance_cost"],
            attributes["volume_cost"],
            attributes["filesystem_cost"],
            len(cost.lines),
        )
        return {
            **outcome,
            "outcome": PRICED,
            **{k: attributes[k] for k in ("total_cost", "instance_cost", "volume_cost", "filesystem_cost")},
        }


def source_label(settings: PricingSettings) -> str:
    """Written next to every cost as ``price_source``."""
    if settings.source == "snapshot":
        return f"snapshot:{settings.snapshot_dir}"
    return "aws-price-list-api"


def price_catalog(
    settings: PricingSettings, client: ClientFactory, store: PriceStore | None = None
) -> PriceCatalog:
    """The catalog for the configured source (the snapshot needs no AWS client)."""
    price_list = (
        SnapshotPriceList(settings.snapshot_path())
        if settings.source == "snapshot"
        else client("pricing", PRICE_LIST_REGION)
    )
    return PriceCatalog(price_list, source_label(settings), store=store)


def spot_history(settings: PricingSettings, client: ClientFactory, region: str):
    """``(instance type, zone, interval) -> [(time, USD/hour)]`` from the configured source."""
    if settings.source == "snapshot":
        history = _snapshot_spot_history(str(settings.snapshot_path() / "spot_price_history.json"))
    else:
        history = client("ec2", region)
    return functools.partial(spot_price_points, history)


@functools.cache
def _snapshot_spot_history(path: str) -> SnapshotSpotHistory:
    return SnapshotSpotHistory(path)
