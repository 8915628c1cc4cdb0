"""How a table's partitions map to S3 paths, in both directions.

A layout is a path template with one segment per directory level. Hive tables get ``dt={dt}/hour={hour}``
generated from their keys; templated tables (CloudTrail's ``{year}/{month}/{day}``) give their own. The same
template renders the partitions of a data interval (interval mode) and parses listed prefixes back into
values (discover mode), so the two modes can never disagree about where a partition lives.

Time keys are checked alone (their strftime format, canonical spelling) and together: ``2024/02/30`` fits
``%Y``, ``%m`` and ``%d`` one by one, but names no day, so it is not a partition.
"""

from __future__ import annotations

import calendar
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from dataplatform.config import GlueTable, PartitionKey

PartitionValues = tuple[str, ...]

# Directories and files that writers leave behind and that are never partitions nor data (Spark's
# _temporary and _SUCCESS, Hadoop's .staging and .crc files). MSCK REPAIR and Athena skip them too.
_IGNORED_PREFIX_CHARS = ("_", ".")
# The empty "directory" objects of Hadoop's S3 file systems (EMRFS, s3n): ``hour=07_$folder$``.
_FOLDER_MARKER = "$folder$"
# The calendar fields a strftime directive sets, for checking the date that several keys form together.
_DIRECTIVE_FIELDS = {"Y": "year", "y": "year", "m": "month", "b": "month", "B": "month", "d": "day"}
# The year assumed while a partition's year is not known (yet): a leap year, so that 02-29 is possible.
_ANY_LEAP_YEAR = 2000


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
        self._date_fields = {key.name: _date_fields(key.format) for key in self.keys if key.format}

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

    def parse_level(self, level: int, segment: str, above: dict[str, str]) -> dict[str, str]:
        """Values of a prefix one level deeper: those of the levels ``above`` and this ``segment``'s,
        checked together (the date the time keys form so far must exist). Discovery calls it level by
        level, so an impossible day is refused before anything below it is listed."""
        own = self.parse_segment(level, segment)
        values = {**above, **own}
        if any(self._date_fields.get(name) for name in own):
            self._check_date(values)
        return values

    def parse_prefix(self, relative_path: str) -> dict[str, str]:
        """Values of the first levels of a partition path (``2024/02/``), checked alone and together."""
        parts = [part for part in relative_path.strip("/").split("/") if part]
        if len(parts) > self.depth:
            raise InvalidPartitionPath(
                f"{relative_path!r} has {len(parts)} levels, expected {self.depth} ({self.template!r})"
            )
        values: dict[str, str] = {}
        for level, part in enumerate(parts):
            values = self.parse_level(level, part, values)
        return values

    def parse(self, relative_path: str) -> PartitionValues:
        """Values of a whole relative partition path such as ``2023/06/01/``."""
        depth = len([part for part in relative_path.strip("/").split("/") if part])
        if depth != self.depth:
            raise InvalidPartitionPath(
                f"{relative_path!r} has {depth} levels, expected {self.depth} ({self.template!r})"
            )
        return self.in_key_order(self.parse_prefix(relative_path))

    def in_key_order(self, values: dict[str, str]) -> PartitionValues:
        """``{"hour": "05", "dt": "2023-06-01"}`` -> ``("2023-06-01", "05")`` (Glue's order)."""
        return tuple(values[key.name] for key in self.keys)

    def _check_date(self, values: dict[str, str]) -> None:
        """Raise InvalidPartitionPath if the time keys among ``values`` disagree or name no real day."""
        fields: dict[str, tuple[int, str]] = {}  # year / month / day -> (value, the key=value that says so)
        for name, value in values.items():
            if name not in self._date_fields:
                continue  # keys with a pattern are not dates, whatever their name
            parsed = _strptime(value, self._by_name[name].format)  # type: ignore[arg-type]
            for field_name in self._date_fields[name]:
                number, source = getattr(parsed, field_name), f"{name}={value!r}"
                known = fields.setdefault(field_name, (number, source))
                if known[0] != number:
                    raise InvalidPartitionPath(
                        f"{source} says {field_name} {number} but {known[1]} says {known[0]}"
                    )
        if "month" not in fields or "day" not in fields:
            return
        (month, _), (day, _) = fields["month"], fields["day"]
        year = fields["year"][0] if "year" in fields else None
        try:
            date(_ANY_LEAP_YEAR if year is None else year, month, day)
        except ValueError:
            in_year = "" if year is None else f" {year}"
            raise InvalidPartitionPath(
                f"day {day} is out of range for {calendar.month_name[month]}{in_year}"
            ) from None

    @staticmethod
    def is_ignored(segment: str) -> bool:
        return segment.startswith(_IGNORED_PREFIX_CHARS)


def is_data_key(key_below_directory: str) -> bool:
    """Whether an object, named relative to a directory (``part-0.json``, ``_temporary/0/x``), is data.

    Writer leftovers are not: anything under or named ``_*`` / ``.*`` (``_SUCCESS``, ``_temporary/``,
    ``.spark-staging-*/``, ``.crc`` files), Hadoop's ``*$folder$`` markers and directory objects
    (``hour=07/`` itself, as the S3 console creates them)."""
    if not key_below_directory or key_below_directory.endswith(("/", _FOLDER_MARKER)):
        return False
    return not any(PartitionLayout.is_ignored(part) for part in key_below_directory.split("/"))


def _fits_format(value: str, key_format: str) -> bool:
    # Round-trip so that non-canonical spellings (month=6 for %m) are rejected: Glue compares partition
    # values as strings, and 6 and 06 would become two partitions.
    try:
        return _strptime(value, key_format).strftime(key_format) == value
    except ValueError:
        return False


def _strptime(value: str, key_format: str) -> datetime:
    # strptime fills a missing year with 1900, which has no 02-29: parse yearless formats in a leap year.
    if "year" in _date_fields(key_format):
        return datetime.strptime(value, key_format)
    return datetime.strptime(f"{value}|{_ANY_LEAP_YEAR}", f"{key_format}|%Y")


def _date_fields(key_format: str) -> tuple[str, ...]:
    """The calendar fields a strftime format sets: ``%Y-%m`` -> ``("year", "month")``."""
    directives = re.findall(r"%(.)", key_format.replace("%%", ""))
    return tuple(dict.fromkeys(_DIRECTIVE_FIELDS[d] for d in directives if d in _DIRECTIVE_FIELDS))


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
