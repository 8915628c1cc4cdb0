"""What a workflow launch used, as plain values: the input of the cost functions in ``costs``.

``collect`` builds these from the AWS APIs (Batch, ECS, EC2, FSx); tests and the benchmark build them by
hand. Every interval is what the resource ran *for this launch*: the collector clips it to the launch's
own start and end, so a compute environment shared over a day is not charged to one launch in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


class PricingError(Exception):
    """A launch or job cannot be priced (resources not found, no price for a type). The message is the
    reason stored on the launch; the launch is retried by the next run and never priced at zero."""


def require_aware(value: datetime, what: str) -> datetime:
    """``value`` in UTC; a naive datetime is refused (it would silently mean local time)."""
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


def as_utc(value: datetime | str) -> datetime:
    """A time from an AWS API or a launch record (datetime or ISO-8601, ``Z`` accepted) in UTC. AWS and the
    workflow manager write UTC: a time without an offset is read as UTC, not local time."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", require_aware(self.start, "Interval.start"))
        object.__setattr__(self, "end", require_aware(self.end, "Interval.end"))
        if self.end < self.start:
            raise ValueError(f"interval ends ({self.end}) before it starts ({self.start})")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def clip(self, other: Interval) -> Interval | None:
        """The part of this interval inside ``other``; None when they do not overlap."""
        start, end = max(self.start, other.start), min(self.end, other.end)
        return Interval(start, end) if start < end else None


@dataclass(frozen=True)
class InstanceUsage:
    """One EC2 instance: ``lifecycle`` is ``on-demand`` or ``spot`` (EC2's InstanceLifecycle)."""

    instance_id: str
    instance_type: str
    lifecycle: str
    availability_zone: str
    interval: Interval

    def __post_init__(self) -> None:
        if self.lifecycle not in ("on-demand", "spot"):
            raise ValueError(f"instance {self.instance_id}: lifecycle must be on-demand or spot")


@dataclass(frozen=True)
class VolumeUsage:
    """One EBS volume. ``iops`` / ``throughput_mibps``: provisioned values (None where the type has none)."""

    volume_id: str
    volume_type: str
    size_gib: int
    interval: Interval
    iops: int | None = None
    throughput_mibps: int | None = None


@dataclass(frozen=True)
class FileSystemUsage:
    """One FSx for Lustre file system. ``throughput_per_tib``: PerUnitStorageThroughput (MB/s/TiB) of
    PERSISTENT_1/2 deployments, None for SCRATCH."""

    file_system_id: str
    deployment_type: str
    storage_type: str
    storage_capacity_gib: int
    interval: Interval
    throughput_per_tib: int | None = None


@dataclass(frozen=True)
class LaunchUsage:
    """Everything one workflow launch used, in the region it ran in."""

    launch_id: str
    region: str
    interval: Interval
    instances: tuple[InstanceUsage, ...] = field(default_factory=tuple)
    volumes: tuple[VolumeUsage, ...] = field(default_factory=tuple)
    file_systems: tuple[FileSystemUsage, ...] = field(default_factory=tuple)


def instance_family(instance_type: str) -> str:
    """``m6g.xlarge`` -> ``m6g``."""
    return instance_type.split(".", 1)[0]


def architecture(instance_type: str) -> str:
    """``arm64`` for Graviton families (a ``g`` after the generation digit: m6g, c7gn, r6gd, x2gd),
    ``x86_64`` for the rest. Graviton has no other marker in the type name, and DescribeInstanceTypes
    (the exact answer) is one more API call per type for a rule that holds for every family AWS sells."""
    family = instance_family(instance_type)
    if family == "a1":  # the first Graviton, named before the rule
        return "arm64"
    digits = [position for position, char in enumerate(family) if char.isdigit()]
    if not digits:
        return "x86_64"
    return "arm64" if family[digits[0] + 1 : digits[0] + 2] == "g" else "x86_64"
