"""Which tags to create and which snapshots to expire: pure functions of the table metadata and the policy.

Expiry follows Iceberg's rules, plus ``retain_last`` (pyiceberg has none): a snapshot is expired when it
is not the head of a tag or branch, not among the last ``retain_last`` snapshots of main's ancestry, and
older than the maximum age. Tags and branches whose ``max_ref_age_ms`` has passed are removed first (as
Iceberg's own expire_snapshots does), which can leave their snapshots to expire in the same commit.

A rule's tag naming day D is kept through day D + ``keep_days`` (UTC), whatever the age of the snapshot it
points at. Iceberg ages a ref from its snapshot's timestamp, so the tag is created with the
``max_ref_age_ms`` that ends at that moment (``tag_keep_until``): any Iceberg engine's expiry then removes
it on time. A tag that would already be past that moment (a rerun or backfill of an old day) is not
created: it would only be removed again by the same run's expiry.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType

from dataplatform.config import TagRule

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TagToCreate:
    name: str
    snapshot_id: int
    max_ref_age_ms: int
    rule: str
    kept_through: date


@dataclass(frozen=True)
class TagPlan:
    create: list[TagToCreate] = field(default_factory=list)
    # Names the rules call for that exist already (a rerun): left as they are.
    existing: list[str] = field(default_factory=list)
    # Rules due today for which main has no snapshot yet at the end of the day.
    no_snapshot: list[str] = field(default_factory=list)
    # Names past their retention at the time of the run, with the reason: not created.
    past_retention: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExpiryPlan:
    expire_ids: list[int]
    remove_refs: list[str]
    retained_ids: list[int]
    # Why each retained snapshot stays: ref:<name>, retain_last, too_young.
    reasons: dict[int, str]

    @property
    def empty(self) -> bool:
        return not self.expire_ids and not self.remove_refs


def to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return int(moment.timestamp() * 1000)


def rule_is_due(rule: TagRule, day: date) -> bool:
    if rule.every == "day":
        return True
    return day.day == calendar.monthrange(day.year, day.month)[1]


def main_ancestry(metadata: TableMetadata) -> list[int]:
    """Snapshot ids from main's head back through its parents (newest first)."""
    ids: list[int] = []
    snapshot = metadata.snapshot_by_name(MAIN_BRANCH)
    while snapshot is not None:
        ids.append(snapshot.snapshot_id)
        parent = snapshot.parent_snapshot_id
        snapshot = metadata.snapshot_by_id(parent) if parent is not None else None
    return ids


def snapshot_at(metadata: TableMetadata, before_ms: int) -> int | None:
    """The newest snapshot of main's ancestry committed before ``before_ms``."""
    for snapshot_id in main_ancestry(metadata):
        snapshot = metadata.snapshot_by_id(snapshot_id)
        if snapshot is not None and snapshot.timestamp_ms < before_ms:
            return snapshot_id
    return None


def start_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def tag_keep_until(rule: TagRule, day: date) -> datetime:
    """The end of the last day the rule's tag naming ``day`` is kept: ``day`` + ``keep_days``, UTC."""
    return start_of_day(day) + timedelta(days=rule.keep_days + 1)


def past_retention(rule: TagRule, day: date, now_ms: int) -> str | None:
    """Why the rule's tag naming ``day`` is not to be created at ``now_ms`` (it is past its retention),
    or None. The same moment at which the expiry removes the tag (see ``plan_tags``)."""
    keep_until = tag_keep_until(rule, day)
    if now_ms < to_ms(keep_until):
        return None
    return (
        f"past its retention: kept through {(keep_until - timedelta(days=1)).date()} "
        f"({day} + keep_days {rule.keep_days}), the run is at "
        f"{datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec='seconds')}"
    )


def ref_is_aged(snapshot_ms: int, max_ref_age_ms: int, now_ms: int) -> bool:
    """Iceberg's rule: a ref is past its age when its snapshot is older than ``max_ref_age_ms``."""
    return now_ms - snapshot_ms > max_ref_age_ms


def plan_tags(metadata: TableMetadata, rules: list[TagRule], day: date, now_ms: int) -> TagPlan:
    """The tags the rules call for on ``day``: each points at main's snapshot as of the end of that day
    (UTC), so a rerun or a backfill of the same day names and tags the same snapshot, and is kept through
    ``day`` + ``keep_days``. A tag already past that at ``now_ms`` is left out (``past_retention``)."""
    end_of_day_ms = to_ms(start_of_day(day) + timedelta(days=1))
    plan = TagPlan()
    for rule in rules:
        if not rule_is_due(rule, day):
            continue
        name = rule.name.format(date=day)
        if name in metadata.refs:
            plan.existing.append(name)
            continue
        reason = past_retention(rule, day, now_ms)
        if reason is not None:
            plan.past_retention[name] = reason
            continue
        snapshot_id = snapshot_at(metadata, end_of_day_ms)
        if snapshot_id is None:
            plan.no_snapshot.append(name)
            continue
        keep_until = tag_keep_until(rule, day)
        # Aged from the first millisecond after the last kept day (Iceberg: age > max_ref_age_ms).
        max_ref_age_ms = to_ms(keep_until) - 1 - metadata.snapshot_by_id(snapshot_id).timestamp_ms
        kept_through = (keep_until - timedelta(days=1)).date()
        plan.create.append(TagToCreate(name, snapshot_id, max_ref_age_ms, rule.name, kept_through))
    return plan


def aged_refs(metadata: TableMetadata, now_ms: int) -> list[str]:
    """Tags and branches (never main) older than their ``max_ref_age_ms``."""
    aged = []
    for name, ref in metadata.refs.items():
        if name == MAIN_BRANCH or ref.max_ref_age_ms is None:
            continue
        snapshot = metadata.snapshot_by_id(ref.snapshot_id)
        if snapshot is None or ref_is_aged(snapshot.timestamp_ms, ref.max_ref_age_ms, now_ms):
            aged.append(name)
    return sorted(aged)


def plan_expiry(metadata: TableMetadata, retain_last: int, max_age_ms: int, now_ms: int) -> ExpiryPlan:
    if retain_last < 1:
        raise ValueError(f"retain_last must be >= 1, got {retain_last}")
    remove_refs = aged_refs(metadata, now_ms)
    reasons: dict[int, str] = {}
    for name, ref in metadata.refs.items():
        if name not in remove_refs and ref.snapshot_ref_type in (SnapshotRefType.TAG, SnapshotRefType.BRANCH):
            reasons.setdefault(ref.snapshot_id, f"ref:{name}")
    for snapshot_id in main_ancestry(metadata)[:retain_last]:
        reasons.setdefault(snapshot_id, "retain_last")
    expire_before_ms = now_ms - max_age_ms
    expire_ids = []
    for snapshot in metadata.snapshots:
        if snapshot.snapshot_id in reasons:
            continue
        if snapshot.timestamp_ms >= expire_before_ms:
            reasons[snapshot.snapshot_id] = "too_young"
            continue
        expire_ids.append(snapshot.snapshot_id)
    retained = [s.snapshot_id for s in metadata.snapshots if s.snapshot_id not in set(expire_ids)]
    return ExpiryPlan(sorted(expire_ids), remove_refs, retained, reasons)
