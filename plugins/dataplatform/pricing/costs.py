"""What a launch or a Spark job cost, from its usage (``resources``) and unit prices (``prices``, ``spot``).

Billing rules applied (AWS's published rules for Linux On-Demand and Spot):

- EC2: per second with a 60-second minimum per instance. On-Demand at the list price; Spot at the
  price in force second by second (the history's steps integrated over the running interval).
- EBS: per GB-month of provisioned size, prorated per second over a 730-hour month with a 60-second
  minimum (as AWS bills volumes). gp3 adds
  provisioned IOPS above the free 3,000 and throughput above the free 125 MiB/s; io1 / io2 add every
  provisioned IOPS (io2's cheaper tiers above 32,000 IOPS are not applied: the first tier's price is).
- FSx for Lustre: per GB-month of storage capacity (the throughput tier is part of the price key),
  prorated like EBS.
- EMR on EC2: the EC2 price plus EMR's per-instance-hour surcharge, both per second with a 60-second
  minimum.
- EMR Serverless: vCPU-hours, memory GB-hours and storage GB-hours above the free 20 GB per worker.

All arithmetic is ``Decimal``. Each component is rounded to 4 decimal places (half up) and the total is
the sum of the rounded components, so the strings written back add up exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from dataplatform.pricing import prices
from dataplatform.pricing.prices import HOURS_PER_MONTH, PriceCatalog
from dataplatform.pricing.resources import (
    FileSystemUsage,
    InstanceUsage,
    Interval,
    LaunchUsage,
    PricingError,
    VolumeUsage,
)

CURRENCY = "USD"
MINIMUM_BILLED_SECONDS = 60
SECONDS_PER_HOUR = Decimal(3600)
SECONDS_PER_MONTH = HOURS_PER_MONTH * SECONDS_PER_HOUR
GP3_FREE_IOPS = 3000
GP3_FREE_THROUGHPUT_MIBPS = 125
# EBS types that bill provisioned IOPS (all of them) besides storage.
PROVISIONED_IOPS_TYPES = ("io1", "io2")
EMR_SERVERLESS_FREE_STORAGE_GB_PER_WORKER = 20

_FOUR_PLACES = Decimal("0.0001")
_CENTS = Decimal("0.01")

# (instance type, availability zone, interval) -> [(time, USD per hour)], e.g. spot.spot_price_points
SpotHistory = Callable[[str, str, Interval], Sequence[tuple[datetime, Decimal]]]


def money(amount: Decimal) -> str:
    """``Decimal`` -> the stored string: 4 decimal places, half up (``"12.3457"``)."""
    return str(amount.quantize(_FOUR_PLACES, rounding=ROUND_HALF_UP))


def cents(amount: Decimal) -> str:
    return str(amount.quantize(_CENTS, rounding=ROUND_HALF_UP))


def billed_seconds(interval: Interval) -> Decimal:
    return Decimal(max(MINIMUM_BILLED_SECONDS, math.ceil(interval.seconds)))


def prorated_months(interval: Interval) -> Decimal:
    return Decimal(str(interval.seconds)) / SECONDS_PER_MONTH


def billed_months(interval: Interval) -> Decimal:
    """Per second with the 60-second minimum, in 730-hour months (EBS)."""
    return billed_seconds(interval) / SECONDS_PER_MONTH


@dataclass(frozen=True)
class LineItem:
    """One priced resource: shown in reports and the CLI, summed into the components."""

    component: str  # instance | volume | filesystem
    resource_id: str
    description: str
    cost: Decimal


@dataclass(frozen=True)
class LaunchCost:
    instance_cost: Decimal
    volume_cost: Decimal
    filesystem_cost: Decimal
    lines: tuple[LineItem, ...] = field(default_factory=tuple)

    @property
    def total_cost(self) -> Decimal:
        return self.instance_cost + self.volume_cost + self.filesystem_cost

    def attributes(self) -> dict[str, str]:
        """The strings written back on the launch (the reference's format)."""
        return {
            "total_cost": money(self.total_cost),
            "instance_cost": money(self.instance_cost),
            "volume_cost": money(self.volume_cost),
            "filesystem_cost": money(self.filesystem_cost),
            "currency": CURRENCY,
        }


def on_demand_instance_cost(interval: Interval, usd_per_hour: Decimal) -> Decimal:
    return usd_per_hour * billed_seconds(interval) / SECONDS_PER_HOUR


def spot_instance_cost(interval: Interval, history: Sequence[tuple[datetime, Decimal]]) -> Decimal:
    """The integral of the Spot price over the interval: each price from its change to the next. The
    price in force at the start is the last change at or before it; a run shorter than the minimum is
    billed the minimum at the price it ended with."""
    changes = sorted(history)
    in_force = [price for when, price in changes if when <= interval.start]
    if not in_force:
        raise PricingError(f"no Spot price in force at {interval.start.isoformat()} (history starts later)")
    price = in_force[-1]
    cost = Decimal(0)
    cursor = interval.start
    for when, next_price in changes:
        if when <= interval.start:
            continue
        if when >= interval.end:
            break
        cost += price * Decimal(str((when - cursor).total_seconds()))
        cursor, price = when, next_price
    cost += price * Decimal(str((interval.end - cursor).total_seconds()))
    shortfall = MINIMUM_BILLED_SECONDS - interval.seconds
    if shortfall > 0:
        cost += price * Decimal(str(shortfall))
    return cost / SECONDS_PER_HOUR


def volume_cost(volume: VolumeUsage, catalog: PriceCatalog, region: str) -> Decimal:
    months = billed_months(volume.interval)
    storage = catalog.price(prices.ebs_key(volume.volume_type, "storage", region)).usd
    monthly = storage * volume.size_gib
    if volume.volume_type == "gp3":
        extra_iops = max(0, (volume.iops or GP3_FREE_IOPS) - GP3_FREE_IOPS)
        extra_throughput = max(
            0, (volume.throughput_mibps or GP3_FREE_THROUGHPUT_MIBPS) - GP3_FREE_THROUGHPUT_MIBPS
        )
        if extra_iops:
            monthly += catalog.price(prices.ebs_key("gp3", "iops", region)).usd * extra_iops
        if extra_throughput:
            monthly += catalog.price(prices.ebs_key("gp3", "throughput", region)).usd * extra_throughput
    elif volume.volume_type in PROVISIONED_IOPS_TYPES:
        if not volume.iops:
            raise PricingError(
                f"volume {volume.volume_id} ({volume.volume_type}) reports no provisioned IOPS"
            )
        monthly += catalog.price(prices.ebs_key(volume.volume_type, "iops", region)).usd * volume.iops
    return monthly * months


def filesystem_cost(file_system: FileSystemUsage, catalog: PriceCatalog, region: str) -> Decimal:
    key = prices.fsx_lustre_key(
        file_system.deployment_type, file_system.storage_type, file_system.throughput_per_tib, region
    )
    return catalog.price(key).usd * file_system.storage_capacity_gib * prorated_months(file_system.interval)


def instance_cost(
    instance: InstanceUsage, catalog: PriceCatalog, spot_history: SpotHistory, region: str
) -> Decimal:
    if instance.lifecycle == "spot":
        history = spot_history(instance.instance_type, instance.availability_zone, instance.interval)
        try:
            return spot_instance_cost(instance.interval, history)
        except PricingError as exc:
            raise PricingError(
                f"instance {instance.instance_id} ({instance.instance_type} Spot in "
                f"{instance.availability_zone}): {exc}"
            ) from exc
    return on_demand_instance_cost(
        instance.interval, catalog.price(prices.ec2_instance_key(instance.instance_type, region)).usd
    )


def price_launch(usage: LaunchUsage, catalog: PriceCatalog, spot_history: SpotHistory) -> LaunchCost:
    """Every resource priced; the first one that cannot be raises ``PricingError`` (nothing is written)."""
    lines: list[LineItem] = []
    for instance in usage.instances:
        cost = instance_cost(instance, catalog, spot_history, usage.region)
        lines.append(
            LineItem(
                "instance",
                instance.instance_id,
                f"{instance.instance_type} {instance.lifecycle} {instance.interval.seconds:.0f}s",
                cost,
            )
        )
    for volume in usage.volumes:
        lines.append(
            LineItem(
                "volume",
                volume.volume_id,
                f"{volume.volume_type} {volume.size_gib} GiB"
                + (f" {volume.iops} IOPS" if volume.iops else "")
                + (f" {volume.throughput_mibps} MiB/s" if volume.throughput_mibps else ""),
                volume_cost(volume, catalog, usage.region),
            )
        )
    for file_system in usage.file_systems:
        lines.append(
            LineItem(
                "filesystem",
                file_system.file_system_id,
                f"Lustre {file_system.deployment_type} {file_system.storage_capacity_gib} GiB",
                filesystem_cost(file_system, catalog, usage.region),
            )
        )

    def component(name: str) -> Decimal:
        return Decimal(money(sum((line.cost for line in lines if line.component == name), Decimal(0))))

    return LaunchCost(component("instance"), component("volume"), component("filesystem"), tuple(lines))


# --- the platform's own Spark jobs ---------------------------------------------------------------


@dataclass(frozen=True)
class EmrServerlessUsage:
    """Billed usage of an EMR Serverless job run (GetJobRun's ``billedResourceUtilization``, or worker
    size x count x hours). ``storage_gb_hours`` is what is billed: above the free 20 GB per worker."""

    vcpu_hours: Decimal
    memory_gb_hours: Decimal
    storage_gb_hours: Decimal
    architecture: str = "x86_64"

    @classmethod
    def from_capacity(
        cls,
        vcpu: Decimal,
        memory_gb: Decimal,
        storage_gb: Decimal,
        hours: Decimal,
        architecture: str = "x86_64",
        workers: int = 0,
    ) -> EmrServerlessUsage:
        """Totals over all workers for ``hours``. ``storage_gb`` is the ephemeral storage configured;
        ``workers`` of them get 20 GB free each (0: ``storage_gb`` is already the billable part)."""
        billable_storage = max(Decimal(0), storage_gb - EMR_SERVERLESS_FREE_STORAGE_GB_PER_WORKER * workers)
        return cls(vcpu * hours, memory_gb * hours, billable_storage * hours, architecture)


@dataclass(frozen=True)
class EmrServerlessCost:
    vcpu_cost: Decimal
    memory_cost: Decimal
    storage_cost: Decimal

    @property
    def total_cost(self) -> Decimal:
        return self.vcpu_cost + self.memory_cost + self.storage_cost


def emr_serverless_cost(usage: EmrServerlessUsage, catalog: PriceCatalog, region: str) -> EmrServerlessCost:
    def rate(dimension: str) -> Decimal:
        return catalog.price(prices.emr_serverless_key(usage.architecture, dimension, region)).usd

    return EmrServerlessCost(
        vcpu_cost=Decimal(money(usage.vcpu_hours * rate("vcpu"))),
        memory_cost=Decimal(money(usage.memory_gb_hours * rate("memory"))),
        storage_cost=Decimal(money(usage.storage_gb_hours * rate("storage"))),
    )


@dataclass(frozen=True)
class EmrInstanceUsage:
    """One EC2 instance of an EMR cluster (ListInstances): type, market and how long it ran."""

    instance_id: str
    instance_type: str
    market: str  # ON_DEMAND | SPOT
    availability_zone: str
    interval: Interval


@dataclass(frozen=True)
class EmrClusterCost:
    ec2_cost: Decimal
    emr_cost: Decimal
    instance_hours: Decimal

    @property
    def total_cost(self) -> Decimal:
        return self.ec2_cost + self.emr_cost


def emr_cluster_cost(
    instances: Sequence[EmrInstanceUsage], catalog: PriceCatalog, spot_history: SpotHistory, region: str
) -> EmrClusterCost:
    ec2 = emr = hours = Decimal(0)
    for instance in instances:
        billed = billed_seconds(instance.interval)
        hours += billed / SECONDS_PER_HOUR
        emr += (
            catalog.price(prices.emr_surcharge_key(instance.instance_type, region)).usd
            * billed
            / SECONDS_PER_HOUR
        )
        lifecycle = "spot" if instance.market == "SPOT" else "on-demand"
        ec2 += instance_cost(
            InstanceUsage(
                instance.instance_id,
                instance.instance_type,
                lifecycle,
                instance.availability_zone,
                instance.interval,
            ),
            catalog,
            spot_history,
            region,
        )
    return EmrClusterCost(Decimal(money(ec2)), Decimal(money(emr)), hours)
