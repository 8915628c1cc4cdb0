"""Byte ranges of one file merged into few reads: the prefetch's answer to "one GET per artifact".

Artifacts written by one stateful run sit in a handful of part files, so the artifacts a run touches
often lie close together. Reading each with its own ranged GET costs one request per artifact; reading
one span that covers several neighbours (and the few bytes between them) costs one request for all of
them. ``max_gap_bytes`` bounds the bytes read for nothing, ``max_range_bytes`` bounds one read's memory.

Pure Python (no pyspark): the Spark job, the tests and anything else may use it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import NamedTuple

# (key, offset, length): one artifact inside a plan, offset absolute in the file.
Member = tuple[Hashable, int, int]


class ReadPlan(NamedTuple):
    """One ranged read: ``length`` bytes from ``start``, covering every member's bytes."""

    start: int
    length: int
    members: tuple[Member, ...]

    @property
    def end(self) -> int:
        return self.start + self.length


def coalesce_ranges(
    ranges: Iterable[tuple[int, int, Hashable]], max_gap_bytes: int, max_range_bytes: int
) -> list[ReadPlan]:
    """Merge the ``(offset, length, key)`` ranges of one file into read plans, in offset order.

    Neighbours are merged while the gap between them is at most ``max_gap_bytes`` (overlapping ranges
    have a negative gap) and the merged span stays within ``max_range_bytes``; a range longer than
    ``max_range_bytes`` is a plan of its own. The same ``(offset, length, key)`` given twice is read once.
    """
    ordered = sorted(set(_checked_ranges(ranges)), key=lambda item: (item[0], item[1], str(item[2])))
    return list(iter_coalesced(ordered, max_gap_bytes, max_range_bytes))


def iter_coalesced(
    sorted_ranges: Iterable[tuple[int, int, Hashable]], max_gap_bytes: int, max_range_bytes: int
) -> Iterator[ReadPlan]:
    """``coalesce_ranges`` for ranges already sorted by offset, as a stream: memory holds one plan.

    For callers that sort at scale (Spark sorts within partitions) and must not hold a whole file's
    ranges. Consecutive identical ranges are read once; unsorted input is an error.
    """
    if max_gap_bytes < 0:
        raise ValueError(f"max_gap_bytes must be >= 0, got {max_gap_bytes}")
    if max_range_bytes <= 0:
        raise ValueError(f"max_range_bytes must be > 0, got {max_range_bytes}")
    start = end = -1
    members: list[Member] = []
    previous: tuple[int, int, Hashable] | None = None
    for offset, length, key in _checked_ranges(sorted_ranges):
        if previous is not None and offset < previous[0]:
            raise ValueError(
                f"ranges are not sorted by offset: {key!r} at {offset} after {previous[2]!r} at {previous[0]}"
            )
        if (offset, length, key) == previous:
            continue
        previous = (offset, length, key)
        merged_end = max(end, offset + length)
        if members and offset - end <= max_gap_bytes and merged_end - start <= max_range_bytes:
            end = merged_end
            members.append((key, offset, length))
            continue
        if members:
            yield ReadPlan(start, end - start, tuple(members))
        start, end, members = offset, offset + length, [(key, offset, length)]
    if members:
        yield ReadPlan(start, end - start, tuple(members))


def slice_members(plan: ReadPlan, data: bytes) -> list[tuple[Hashable, bytes]]:
    """``(key, bytes)`` of every member of ``plan``, cut from ``data`` (the bytes the plan read)."""
    if len(data) != plan.length:
        raise ValueError(
            f"read plan at {plan.start} spans {plan.length} bytes but {len(data)} bytes were given"
        )
    return [
        (key, data[offset - plan.start : offset - plan.start + length])
        for key, offset, length in plan.members
    ]


def _checked_ranges(ranges: Iterable[tuple[int, int, Hashable]]) -> Iterator[tuple[int, int, Hashable]]:
    for offset, length, key in ranges:
        if offset < 0 or length <= 0:
            raise ValueError(f"bad byte range for {key!r}: offset={offset} length={length}")
        yield offset, length, key
