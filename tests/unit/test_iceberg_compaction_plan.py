"""The bin-pack plan, rule by rule (``dataplatform.iceberg.compaction_plan``): which files are small, that
groups never cross a partition or a spec, the min_input_files threshold, files with deletes, the per-run
byte budget and the order groups are admitted in, and the reasons reported for what is left."""

from __future__ import annotations

import re

import pytest

from dataplatform.iceberg.compaction_plan import (
    MIB,
    BinPackRules,
    DataFileInfo,
    ManifestRules,
    manifests_after_rewrite,
    needs_manifest_rewrite,
    plan_bin_pack,
    small_manifests,
)

pytestmark = pytest.mark.unit

RULES = BinPackRules(target_file_bytes=128 * MIB, min_input_files=5, max_bytes_per_run=10_000 * MIB)


def files(partition: str, count: int, size_mib: float = 1, spec_id: int = 0, **extra) -> list[DataFileInfo]:
    return [
        DataFileInfo(
            path=f"s3://lake/t/data/{partition}/{spec_id}-{n:04d}.parquet",
            spec_id=spec_id,
            partition=(partition,),
            size_bytes=int(size_mib * MIB),
            record_count=100,
            **extra,
        )
        for n in range(count)
    ]


def partitions(plan) -> list[tuple]:
    return [(group.spec_id, group.partition, len(group.files)) for group in plan.groups]


def test_only_files_under_three_quarters_of_the_target_are_small():
    near_target = files("a", 5, size_mib=96)  # exactly 75 %: not small
    under = files("b", 5, size_mib=95.9)
    plan = plan_bin_pack(near_target + under, RULES)
    assert partitions(plan) == [(0, ("b",), 5)]
    assert plan.skipped == ()


def test_a_group_never_mixes_partitions_or_specs():
    plan = plan_bin_pack(files("a", 5) + files("b", 6) + files("a", 7, spec_id=1), RULES)
    assert partitions(plan) == [(1, ("a",), 7), (0, ("b",), 6), (0, ("a",), 5)]
    for group in plan.groups:
        assert {(f.spec_id, f.partition) for f in group.files} == {(group.spec_id, group.partition)}
    assert plan.files_rewritten == 18


def test_fewer_small_files_than_min_input_files_is_skipped_with_the_reason():
    plan = plan_bin_pack(files("a", 4) + files("b", 1) + files("c", 5), RULES)
    assert partitions(plan) == [(0, ("c",), 5)]
    ((skipped),) = plan.skipped
    assert (skipped.partition, skipped.candidates, skipped.reason) == (
        ("a",),
        4,
        "4 small files, fewer than min_input_files",
    )


def test_a_file_with_deletes_is_rewritten_whatever_its_size_and_however_few():
    big_with_deletes = files("a", 1, size_mib=500, has_deletes=True)
    plan = plan_bin_pack(big_with_deletes + files("b", 1, has_deletes=True) + files("c", 2), RULES)
    assert partitions(plan) == [(0, ("a",), 1), (0, ("b",), 1)]
    assert [s.partition for s in plan.skipped] == [("c",)]


def test_the_run_budget_admits_the_groups_with_most_files_first_and_reports_the_rest():
    rules = BinPackRules(target_file_bytes=128 * MIB, min_input_files=5, max_bytes_per_run=20 * MIB)
    plan = plan_bin_pack(files("a", 5, size_mib=2) + files("b", 8) + files("c", 6, size_mib=2), rules)
    # b (8 files, 8 MiB) first, then c (6 files, 12 MiB): 20 MiB; a (10 MiB) would pass the budget.
    assert partitions(plan) == [(0, ("b",), 8), (0, ("c",), 6)]
    assert plan.bytes_rewritten == 20 * MIB
    assert [(s.partition, s.reason) for s in plan.skipped] == [
        (("a",), "over max_bytes_per_run for this run")
    ]


def test_a_group_over_the_whole_budget_is_skipped_and_smaller_ones_still_run():
    rules = BinPackRules(target_file_bytes=128 * MIB, min_input_files=5, max_bytes_per_run=10 * MIB)
    plan = plan_bin_pack(files("huge", 9, size_mib=50) + files("small", 5), rules)
    assert partitions(plan) == [(0, ("small",), 5)]
    assert [s.partition for s in plan.skipped] == [("huge",)]


def test_output_files_at_the_target_size():
    plan = plan_bin_pack(files("a", 300, size_mib=1), RULES)
    (group,) = plan.groups
    assert (group.size_bytes, group.record_count) == (300 * MIB, 30_000)
    assert group.expected_output_files(RULES.target_file_bytes) == 3
    assert plan_bin_pack(files("b", 5), RULES).groups[0].expected_output_files(RULES.target_file_bytes) == 1


def test_nothing_to_compact_is_an_empty_plan():
    assert plan_bin_pack([], RULES).groups == ()
    assert plan_bin_pack(files("a", 3, size_mib=200), RULES).groups == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_file_bytes": 0}, "target_file_bytes must be >= 1"),
        ({"min_input_files": 1}, "min_input_files must be >= 2"),
        ({"max_bytes_per_run": 0}, "max_bytes_per_run must be >= 1"),
        ({"min_file_fraction": 0}, "min_file_fraction must be in (0, 1]"),
        ({"min_file_fraction": 1.5}, "min_file_fraction must be in (0, 1]"),
    ],
)
def test_bad_rules_fail_clearly(kwargs, message):
    values = {"target_file_bytes": MIB, "min_input_files": 5, "max_bytes_per_run": MIB} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        BinPackRules(**values)


def test_manifests_are_rewritten_when_more_than_max_small_ones_are_under_the_target():
    rules = ManifestRules(target_manifest_bytes=8 * MIB, max_small_manifests=3)
    small, large = MIB, 9 * MIB
    assert not needs_manifest_rewrite([small] * 3 + [large] * 10, rules)
    assert needs_manifest_rewrite([small] * 4, rules)
    assert small_manifests([small, 8 * MIB, large], rules) == 1  # at the target is not small
    assert manifests_after_rewrite(20 * MIB, rules) == 3
    assert manifests_after_rewrite(1, rules) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_manifest_bytes": 0}, "target_manifest_bytes must be >= 1"),
        ({"max_small_manifests": 0}, "max_small_manifests must be >= 1"),
    ],
)
def test_bad_manifest_rules_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ManifestRules(**kwargs)
