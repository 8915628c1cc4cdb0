"""How a table's partitions map to S3 paths, in both directions.

A layout is a path template with one segment per directory level. Hive tables get ``dt={dt}/hour={hour}``
generated from their keys; templated tables (CloudTrail's ``{year}/{month}/{day}``) give their own. The same
template renders the partitions of a data interval (interval mode) and parses listed prefixes back into
values (discover mode), so the two modes can never disagree about where a partition lives.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dataplatform.config import GlueTable, PartitionKey

PartitionValues = tuple[str, ...]

# Directories that writers leave behind and that are never partitions (Spark's _temporary, _SUCCESS
# markers, Hadoop's .staging). MSCK REPAIR skips them too.
_IGNORED_PREFIX_CHARS = ("_", ".")


class InvalidPartitionPath(ValueError):
    """A prefix whose directories do not fit the table's partition keys."""


@dataclass(frozen=True)
class _Segment:
    template: str
    regex: re.Pattern[str]
    keys: tuple[str, ...]


def _compile_segment(template: str, keys: dict[str, PartitionKey]) -> _Segment:
    pattern, names = "", []
    for literal, name, _, _ in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if name is not None:
            # Time keys are matched loosely here and checked exactly by their strftime format below.
            value_pattern = r"[^/]+?" if keys[name].format else keys[name].pattern
            pattern += f"(?P<{name}>{value_pattern})"
            names.append(name)
    return _Segment(template, re.compile(f"^{pattern}$"), tuple(names))


class PartitionLayout:
    """Render and parse one table's partition paths (relative to the table location)."""

    def __init__(self, table: GlueTable):
        self.keys = tuple(table.partition_keys)
        self.granularity = table.granularity
        by_name = {key.name: key for key in self.keys}
        template = table.path_template or "/".join(f"{key.name}={{{key.name}}}" for key in self.keys)
        self.template = template.strip("/")
        self.segments = tuple(_compile_segment(part, by_name) for part in self.template.split("/"))
        self._by_name = by_name

    @property
    def depth(self) -> int:
        return len(self.segments)

    # -- values -> paths -------------------------------------------------------------------------------

    def render(self, values: Sequence[str]) -> str:
        """Relative path of a partition, with a trailing slash: ``dt=2023-06-01/hour=05/``."""
        if len(values) != len(self.keys):
            raise ValueError(f"expected {len(self.keys)} values, got {list(values)}")
        named = {key.name: value for key, value in zip(self.keys, values, strict=True)}
        return self.template.format(**named) + "/"

    def values_at(self, moment: datetime) -> PartitionValues:
        """The partition a timestamp falls in, for tables whose keys are all time-derived."""
        missing = [key.name for key in self.keys if not key.format]
        if missing:
            raise ValueError(f"keys {missing} have no format, so interval mode cannot render them")
        return tuple(moment.strftime(key.format) for key in self.keys)  # type: ignore[arg-type]

    def values_for_interval(self, start: datetime, end: datetime) -> list[PartitionValues]:
        """Every partition that overlaps [start, end), oldest first, without duplicates."""
        if end <= start:
            raise ValueError(f"empty data interval: {start.isoformat()} .. {end.isoformat()}")
        seen: dict[PartitionValues, None] = {}
        for moment in _steps(_floor(start, self.granularity), end, self.granularity):
            seen.setdefault(self.values_at(moment))
        return list(seen)

    # -- paths -> values -------------------------------------------------------------------------------

    def parse_segment(self, level: int, segment: str) -> dict[str, str]:
        """Values of one directory level; raises InvalidPartitionPath saying what was expected."""
        expected = self.segments[level]
        match = expected.regex.match(segment)
        if not match:
            raise InvalidPartitionPath(f"{segment!r} does not match {expected.template!r}")
        values = match.groupdict()
        for name, value in values.items():
            key_format = self._by_name[name].format
            if key_format and not _fits_format(value, key_format):
                raise InvalidPartitionPath(f"{name}={value!r} does not fit the format {key_format!r}")
        return values

    def parse(self, relative_path: str) -> PartitionValues:
        """Values of a whole relative partition path such as ``2023/06/01/``."""
        parts = [part for part in relative_path.strip("/").split("/") if part]
        if len(parts) != self.depth:
            raise InvalidPartitionPath(
                f"{relative_path!r} has {len(parts)} levels, expected {self.depth} ({self.template!r})"
            )
        values: dict[str, str] = {}
        for level, part in enumerate(parts):
            values.update(self.parse_segment(level, part))
        return tuple(values[key.name] for key in self.keys)

    @staticmethod
    def is_ignored(segment: str) -> bool:
        return segment.startswith(_IGNORED_PREFIX_CHARS)


def _fits_format(value: str, key_format: str) -> bool:
    # Round-trip so that non-canonical spellings (month=6 for %m) are rejected: Glue compares partition
    # values as strings, and 6 and 06 would become two partitions.
    try:
        return datetime.strptime(value, key_format).strftime(key_format) == value
    except ValueError:
        return False


def _floor(moment: datetime, granularity: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    if granularity in ("day", "month"):
        moment = moment.replace(hour=0)
    if granularity == "month":
        moment = moment.replace(day=1)
    return moment


def _steps(start: datetime, end: datetime, granularity: str) -> Iterator[datetime]:
    moment = start
    while moment < end:
        yield moment
        if granularity == "hour":
            moment += timedelta(hours=1)
        elif granularity == "day":
            moment += timedelta(days=1)
        else:
            moment = (moment.replace(day=28) + timedelta(days=4)).replace(day=1)
