"""Which data files a bin-pack compaction rewrites, and in which groups (``compaction`` rewrites them,
for the maintenance run's ``compaction`` step).

Iceberg's own ``rewrite_data_files`` (Spark) and AWS Glue's table optimizer work the same way, which is
what this plan follows so that a table compacts the same on both backends:

- a data file is *small* when it is under ``min_file_fraction`` of the target size (Iceberg's
  ``min-file-size-bytes`` defaults to 75 % of ``target-file-size-bytes``); a file with row-level deletes
  is rewritten whatever its size, so that its deletes are applied and can be dropped;
- files are only grouped with files of the same partition and partition spec: a rewrite never moves a
  row to another partition;
- a partition is rewritten when it has at least ``min_input_files`` candidates (Iceberg's
  ``min-input-files``, default 5): rewriting two files into one is a commit that buys almost nothing;
  or when one of them has deletes (even alone: the rewrite applies them, and readers stop paying for
  them);
- the groups with the most files go first, and a run stops adding groups when the next would pass
  ``max_bytes_per_run`` (Iceberg's ``max-file-group-size-bytes`` per group; here for the whole run, so a
  nightly run has a bounded cost); what is left is reported with the reason and compacted by a later run.

Manifests: a table written by many small commits has as many small manifests, and planning a scan reads
every one. When a snapshot has more than ``max_small_manifests`` data manifests under the target size
(Iceberg's ``commit.manifest.target-size-bytes``, 8 MiB), they are rewritten into manifests of about that
size, their entries sorted by partition (``needs_manifest_rewrite``; Spark's ``rewrite_manifests``).

Plain data in, plain data out: no pyiceberg, no AWS, so every rule is tested on its own.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class DataFileInfo:
    """What the plan needs of a live data file (from the current snapshot's manifests)."""

    path: str
    spec_id: int
    partition: tuple
    size_bytes: int
    record_count: int
    has_deletes: bool = False


@dataclass(frozen=True)
class BinPackRules:
    target_file_bytes: int
    min_input_files: int
    max_bytes_per_run: int
    min_file_fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.target_file_bytes < 1:
            raise ValueError(f"target_file_bytes must be >= 1, got {self.target_file_bytes}")
        if self.min_input_files < 2:
            raise ValueError(f"min_input_files must be >= 2, got {self.min_input_files}")
        if self.max_bytes_per_run < 1:
            raise ValueError(f"max_bytes_per_run must be >= 1, got {self.max_bytes_per_run}")
        if not 0 < self.min_file_fraction <= 1:
            raise ValueError(f"min_file_fraction must be in (0, 1], got {self.min_file_fraction}")

    @property
    def small_file_bytes(self) -> int:
        return int(self.target_file_bytes * self.min_file_fraction)


@dataclass(frozen=True)
class RewriteGroup:
    """The files of one partition rewritten together, in one commit."""

    spec_id: int
    partition: tuple
    files: tuple[DataFileInfo, ...]

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def record_count(self) -> int:
        return sum(f.record_count for f in self.files)

    def expected_output_files(self, target_file_bytes: int) -> int:
        """How many files the rewrite writes at the target size (at least one)."""
        return max(1, math.ceil(self.size_bytes / target_file_bytes))


@dataclass(frozen=True)
class SkippedPartition:
    spec_id: int
    partition: tuple
    candidates: int
    size_bytes: int
    reason: str


@dataclass(frozen=True)
class CompactionPlan:
    groups: tuple[RewriteGroup, ...]
    skipped: tuple[SkippedPartition, ...]

    @property
    def files_rewritten(self) -> int:
        return sum(len(group.files) for group in self.groups)

    @property
    def bytes_rewritten(self) -> int:
        return sum(group.size_bytes for group in self.groups)


def plan_bin_pack(files: Iterable[DataFileInfo], rules: BinPackRules) -> CompactionPlan:
    """The rewrite groups of a run (module docstring: the rules) and the partitions left, with why.

    A partition with one small file (and no deletes) or none is neither a group nor a skip: there is
    nothing to compact."""
    candidates: dict[tuple[int, tuple], list[DataFileInfo]] = defaultdict(list)
    for data_file in files:
        if data_file.has_deletes or data_file.size_bytes < rules.small_file_bytes:
            candidates[(data_file.spec_id, data_file.partition)].append(data_file)

    eligible: list[RewriteGroup] = []
    skipped: list[SkippedPartition] = []
    for (spec_id, partition), group_files in candidates.items():
        group = RewriteGroup(spec_id, partition, tuple(sorted(group_files, key=lambda f: f.path)))
        if len(group_files) >= rules.min_input_files or any(f.has_deletes for f in group_files):
            eligible.append(group)
        elif len(group_files) > 1:
            skipped.append(_skip(group, f"{len(group_files)} small files, fewer than min_input_files"))

    # Most files first (the biggest gain per commit), then the partition for a stable order.
    eligible.sort(key=lambda g: (-len(g.files), g.spec_id, repr(g.partition)))
    chosen: list[RewriteGroup] = []
    budget = rules.max_bytes_per_run
    for group in eligible:
        if group.size_bytes <= budget:
            chosen.append(group)
            budget -= group.size_bytes
        else:
            skipped.append(_skip(group, "over max_bytes_per_run for this run"))
    skipped.sort(key=lambda s: (s.spec_id, repr(s.partition)))
    return CompactionPlan(tuple(chosen), tuple(skipped))


def _skip(group: RewriteGroup, reason: str) -> SkippedPartition:
    return SkippedPartition(group.spec_id, group.partition, len(group.files), group.size_bytes, reason)


@dataclass(frozen=True)
class ManifestRules:
    target_manifest_bytes: int = 8 * MIB
    max_small_manifests: int = 16

    def __post_init__(self) -> None:
        if self.target_manifest_bytes < 1:
            raise ValueError(f"target_manifest_bytes must be >= 1, got {self.target_manifest_bytes}")
        if self.max_small_manifests < 1:
            raise ValueError(f"max_small_manifests must be >= 1, got {self.max_small_manifests}")


def small_manifests(sizes: Iterable[int], rules: ManifestRules) -> int:
    """How many of the data manifests (their sizes) are under the target size."""
    return sum(1 for size in sizes if size < rules.target_manifest_bytes)


def needs_manifest_rewrite(sizes: Iterable[int], rules: ManifestRules) -> bool:
    """More small data manifests than ``max_small_manifests``: planning pays for each of them."""
    return small_manifests(sizes, rules) > rules.max_small_manifests


def manifests_after_rewrite(total_bytes: int, rules: ManifestRules) -> int:
    """How many manifests ``total_bytes`` of small manifests become (at least one)."""
    return max(1, math.ceil(total_bytes / rules.target_manifest_bytes))
