"""Coalescing artifact byte ranges of one part file into few ranged reads, and slicing them apart."""

from __future__ import annotations

import itertools
import random

import pytest

from spark_jobs.common.ranges import ReadPlan, coalesce_ranges, iter_coalesced, slice_members

pytestmark = pytest.mark.unit


def spans(plans: list[ReadPlan]) -> list[tuple[int, int, list[str]]]:
    return [(plan.start, plan.length, [key for key, _, _ in plan.members]) for plan in plans]


def test_empty_input_gives_no_plans():
    assert coalesce_ranges([], max_gap_bytes=10, max_range_bytes=100) == []
    assert list(iter_coalesced([], 10, 100)) == []


def test_adjacent_ranges_merge_into_one_read():
    plans = coalesce_ranges([(0, 10, "a"), (11, 5, "b"), (17, 3, "c")], max_gap_bytes=1, max_range_bytes=100)
    assert plans == [ReadPlan(0, 20, (("a", 0, 10), ("b", 11, 5), ("c", 17, 3)))]


def test_gap_at_the_limit_merges_and_one_byte_more_splits():
    assert spans(coalesce_ranges([(0, 10, "a"), (15, 5, "b")], 5, 100)) == [(0, 20, ["a", "b"])]
    assert spans(coalesce_ranges([(0, 10, "a"), (16, 5, "b")], 5, 100)) == [(0, 10, ["a"]), (16, 5, ["b"])]


def test_zero_gap_merges_only_touching_ranges():
    plans = coalesce_ranges([(0, 10, "a"), (10, 10, "b"), (21, 4, "c")], 0, 100)
    assert spans(plans) == [(0, 20, ["a", "b"]), (21, 4, ["c"])]


def test_unsorted_input_is_sorted_by_offset():
    plans = coalesce_ranges([(200, 5, "far"), (10, 5, "b"), (0, 5, "a")], 10, 100)
    assert spans(plans) == [(0, 15, ["a", "b"]), (200, 5, ["far"])]


def test_merged_span_never_exceeds_max_range_bytes():
    ranges = [(offset, 9, f"k{offset}") for offset in range(0, 100, 10)]  # 10 ranges, gaps of 1 byte
    plans = coalesce_ranges(ranges, max_gap_bytes=1, max_range_bytes=30)
    assert spans(plans) == [
        (0, 29, ["k0", "k10", "k20"]),
        (30, 29, ["k30", "k40", "k50"]),
        (60, 29, ["k60", "k70", "k80"]),
        (90, 9, ["k90"]),
    ]
    assert all(plan.length <= 30 for plan in plans)


def test_span_exactly_max_range_bytes_merges():
    assert spans(coalesce_ranges([(0, 10, "a"), (10, 10, "b")], 0, 20)) == [(0, 20, ["a", "b"])]
    assert spans(coalesce_ranges([(0, 10, "a"), (10, 11, "b")], 0, 20)) == [(0, 10, ["a"]), (10, 11, ["b"])]


def test_range_longer_than_max_is_its_own_plan():
    plans = coalesce_ranges([(0, 5, "a"), (5, 50, "big"), (55, 5, "c")], 10, 20)
    assert spans(plans) == [(0, 5, ["a"]), (5, 50, ["big"]), (55, 5, ["c"])]


def test_overlapping_ranges_share_one_read():
    plans = coalesce_ranges([(0, 10, "a"), (5, 10, "b"), (6, 2, "inner")], 0, 100)
    assert plans == [ReadPlan(0, 15, (("a", 0, 10), ("b", 5, 10), ("inner", 6, 2)))]


def test_range_inside_a_full_plan_still_joins_it():
    # The inner range does not grow the span, so the span limit does not stop it.
    plans = coalesce_ranges([(0, 20, "a"), (5, 5, "inner")], 0, 20)
    assert spans(plans) == [(0, 20, ["a", "inner"])]


def test_duplicate_ranges_are_read_once():
    plans = coalesce_ranges([(0, 10, "a"), (0, 10, "a"), (20, 5, "b"), (20, 5, "b")], 100, 1000)
    assert plans == [ReadPlan(0, 25, (("a", 0, 10), ("b", 20, 5)))]


def test_same_range_under_two_keys_keeps_both():
    plans = coalesce_ranges([(0, 10, "b"), (0, 10, "a")], 0, 100)
    assert plans == [ReadPlan(0, 10, (("a", 0, 10), ("b", 0, 10)))]


@pytest.mark.parametrize(("offset", "length"), [(-1, 5), (0, 0), (3, -2)])
def test_bad_ranges_are_rejected_naming_the_key(offset, length):
    with pytest.raises(ValueError, match="bad byte range for 'k1'"):
        coalesce_ranges([(offset, length, "k1")], 0, 100)


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="max_gap_bytes"):
        coalesce_ranges([(0, 1, "a")], -1, 100)
    with pytest.raises(ValueError, match="max_range_bytes"):
        coalesce_ranges([(0, 1, "a")], 0, 0)


def test_streaming_coalesce_rejects_unsorted_input():
    with pytest.raises(ValueError, match="not sorted by offset: 'a' at 0 after 'b' at 10"):
        list(iter_coalesced([(10, 5, "b"), (0, 5, "a")], 0, 100))


def test_streaming_coalesce_matches_the_list_version():
    rng = random.Random(7)
    ranges = [(rng.randrange(0, 10_000), rng.randrange(1, 300), f"k{i}") for i in range(400)]
    ordered = sorted(set(ranges), key=lambda item: (item[0], item[1], item[2]))
    assert list(iter_coalesced(ordered, 50, 2_000)) == coalesce_ranges(ranges, 50, 2_000)


def test_plans_cover_every_member_and_respect_the_limits():
    rng = random.Random(11)
    ranges = [(rng.randrange(0, 50_000), rng.randrange(1, 400), f"k{i}") for i in range(500)]
    plans = coalesce_ranges(ranges, max_gap_bytes=64, max_range_bytes=4_096)
    members = [member for plan in plans for member in plan.members]
    assert sorted(members) == sorted((key, offset, length) for offset, length, key in set(ranges))
    for plan in plans:
        assert all(plan.start <= offset and offset + length <= plan.end for _, offset, length in plan.members)
        assert plan.length <= 4_096 or len(plan.members) == 1
    # Plans are in offset order and never cover the same byte twice.
    assert all(earlier.end <= later.start for earlier, later in itertools.pairwise(plans))
    # Consecutive plans were split for a reason: a gap too wide, or a span too long.
    for earlier, later in itertools.pairwise(plans):
        first = later.members[0]
        too_far = first[1] - earlier.end > 64
        too_long = max(earlier.end, first[1] + first[2]) - earlier.start > 4_096
        assert too_far or too_long


def test_slice_members_cuts_each_artifact_out_of_the_read():
    data = b"alpha\nbeta\n\xc3\xa9t\xc3\xa9\ngamma"
    lines = [(0, 5, "a"), (6, 4, "b"), (11, 5, "c"), (17, 5, "g")]  # "été" is 5 bytes
    (plan,) = coalesce_ranges(lines[1:3], 2, 100)
    assert slice_members(plan, data[plan.start : plan.end]) == [("b", b"beta"), ("c", "été".encode())]
    (whole,) = coalesce_ranges(lines, 1, 100)
    assert slice_members(whole, data) == [
        ("a", b"alpha"),
        ("b", b"beta"),
        ("c", "été".encode()),
        ("g", b"gamma"),
    ]


def test_slice_members_of_overlapping_members():
    (plan,) = coalesce_ranges([(2, 4, "x"), (4, 4, "y")], 0, 100)
    assert slice_members(plan, b"234567") == [("x", b"2345"), ("y", b"4567")]


def test_slice_members_rejects_data_of_the_wrong_length():
    (plan,) = coalesce_ranges([(0, 5, "a")], 0, 100)
    with pytest.raises(ValueError, match="spans 5 bytes but 4 bytes were given"):
        slice_members(plan, b"abcd")
