"""Benchmark comparison of priced genomics workflow launches over a period (issue 6).

Input: launch items as plain dicts (the DynamoDB items after pricing). A launch counts when its
``status`` is ``COMPLETE``, its ``completed_at`` lies in ``[start, end)`` and it is priced: it has a
``total_cost`` and no ``pricing_error``. Unpriced and errored launches of the period are counted, not
compared.

Output: per ``(workflow_type, group)`` the runs, median duration, median cost, cost per run and total
cost, where the group is the instance family or the architecture; and, per workflow type that ran on
both architectures, Graviton (arm64) against x86_64. Written as one CSV and one PNG chart
(``write_comparison``) and summarised as a JSON-serializable dict (``Comparison.summary``).

Money is ``decimal.Decimal`` throughout (the items hold strings with 4 decimals); no float ever touches
a sum. Medians are exact: the median of an even count is the mean of the two middle values (at most one
more decimal place). Cost per run is rounded half-up to 4 decimals, percentages to 2.

No Airflow import; matplotlib is imported only when a chart is drawn.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from dataplatform.pricing.resources import architecture, instance_family, require_aware
from dataplatform.reports import safe_key_part, write_bytes

GroupBy = Literal["family", "architecture"]
GRAVITON_VS_X86 = "graviton_vs_x86"
ARM64, X86_64, MIXED, UNKNOWN = "arm64", "x86_64", "mixed", "unknown"
CURRENCY = "USD"

CSV_COLUMNS = (
    "workflow_type",
    "group_by",
    "group",
    "runs",
    "median_duration_s",
    "median_cost_usd",
    "cost_per_run_usd",
    "total_cost_usd",
    "cost_change_pct",
    "duration_change_pct",
    "price_performance_gain_pct",
)

_CENT_FRACTION = Decimal("0.0001")
_PERCENT = Decimal("0.01")


@dataclass(frozen=True)
class GroupStats:
    """The priced runs of one workflow type on one group (instance family or architecture)."""

    workflow_type: str
    group: str
    runs: int
    median_duration_s: Decimal
    median_cost: Decimal
    cost_per_run: Decimal  # total_cost / runs, rounded half-up to 4 decimals
    total_cost: Decimal


@dataclass(frozen=True)
class GravitonVsX86:
    """One workflow type's arm64 runs against its x86_64 runs (launches on both are in neither).

    * ``cost_change_pct`` = (median_cost_arm / median_cost_x86 - 1) x 100: negative = Graviton cheaper.
    * ``duration_change_pct`` = (median_duration_arm / median_duration_x86 - 1) x 100: negative =
      Graviton faster.
    * ``price_performance_gain_pct`` = (1 - median_cost_arm / median_cost_x86) x 100: positive =
      Graviton better. This is reference 06's measure: the same benchmark work run on both
      architectures, and the gain is the saving on its cost (x86 $26.73 vs Graviton2 $19.59 -> 27%).
      A run's cost is already rate x runtime, so it includes both the lower hourly price and the
      speed-up; multiplying by the duration change again would count the speed-up twice. It is
      therefore ``-cost_change_pct``, stated in the direction the reference reports it. It is only a
      fair comparison when the runs of a workflow type process comparable inputs.

    Percentages are None when the x86_64 denominator is zero.
    """

    workflow_type: str
    arm: GroupStats
    x86: GroupStats
    cost_change_pct: Decimal | None
    duration_change_pct: Decimal | None
    price_performance_gain_pct: Decimal | None


@dataclass(frozen=True)
class Comparison:
    """The result of ``compare``: ``groups`` sorted by (workflow_type, group), ``graviton_vs_x86`` by
    workflow type. ``launches`` counts the compared launches; ``unpriced`` and ``pricing_errors`` the
    COMPLETE launches of the period left out because they have no cost yet or a pricing error."""

    start: datetime
    end: datetime
    group_by: str
    groups: tuple[GroupStats, ...]
    graviton_vs_x86: tuple[GravitonVsX86, ...]
    launches: int
    unpriced: int
    pricing_errors: int

    @property
    def period(self) -> str:
        """``2026-12-01 00:00 to 2027-01-01 00:00 UTC`` (the end is excluded)."""
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"

    @property
    def total_cost(self) -> Decimal:
        return sum((group.total_cost for group in self.groups), Decimal(0))

    def summary(self) -> dict[str, Any]:
        """JSON-serializable (Decimals as strings, missing percentages as None) for reports and XCom."""
        return {
            "period": {"start": self.start.isoformat(), "end": self.end.isoformat(), "end_exclusive": True},
            "group_by": self.group_by,
            "currency": CURRENCY,
            "launches": self.launches,
            "unpriced": self.unpriced,
            "pricing_errors": self.pricing_errors,
            "total_cost_usd": _money(self.total_cost),
            "groups": [_group_dict(group) for group in self.groups],
            GRAVITON_VS_X86: [
                {
                    "workflow_type": item.workflow_type,
                    ARM64: _group_dict(item.arm, workflow_type=False),
                    X86_64: _group_dict(item.x86, workflow_type=False),
                    "cost_change_pct": _pct(item.cost_change_pct),
                    "duration_change_pct": _pct(item.duration_change_pct),
                    "price_performance_gain_pct": _pct(item.price_performance_gain_pct),
                }
                for item in self.graviton_vs_x86
            ],
        }


@dataclass(frozen=True)
class _Run:
    workflow_type: str
    instance_types: frozenset[str]
    duration_s: Decimal
    cost: Decimal


# ---------------------------------------------------------------------------------------------- compare


def compare(
    launches: Iterable[Mapping[str, Any]], start: datetime, end: datetime, by: GroupBy = "family"
) -> Comparison:
    """Group the priced COMPLETE launches with ``start <= completed_at < end`` per (workflow_type,
    group): ``by="family"`` groups by instance family (several families joined with ``+``, sorted:
    ``c6i+m6g``), ``by="architecture"`` by ``arm64``, ``x86_64`` or ``mixed``; a launch without
    instance types is under ``unknown``. The Graviton-vs-x86 part always uses the architecture.

    Raises ValueError for a naive ``start``/``end``, an empty period, or a compared launch whose
    timestamps or cost cannot be read (bad data is reported, not silently left out)."""
    if by not in ("family", "architecture"):
        raise ValueError(f"by must be 'family' or 'architecture', got {by!r}")
    start, end = require_aware(start, "start"), require_aware(end, "end")
    if end <= start:
        raise ValueError(f"the period is empty: end ({end}) is not after start ({start})")

    runs: list[_Run] = []
    unpriced = errors = 0
    for item in launches:
        if item.get("status") != "COMPLETE" or not item.get("completed_at"):
            continue
        launch_id = item.get("launch_id", "?")
        completed = _timestamp(item["completed_at"], launch_id, "completed_at")
        if not start <= completed < end:
            continue
        if item.get("pricing_error"):
            errors += 1
            continue
        if item.get("total_cost") in (None, ""):
            unpriced += 1
            continue
        runs.append(_run(item, launch_id, completed))

    groups = _group(runs, _family_group if by == "family" else _architecture_group)
    by_architecture = groups if by == "architecture" else _group(runs, _architecture_group)
    return Comparison(
        start=start,
        end=end,
        group_by=by,
        groups=groups,
        graviton_vs_x86=_graviton_vs_x86(by_architecture),
        launches=len(runs),
        unpriced=unpriced,
        pricing_errors=errors,
    )


def _run(item: Mapping[str, Any], launch_id: str, completed: datetime) -> _Run:
    currency = item.get("currency") or CURRENCY
    if currency != CURRENCY:
        raise ValueError(f"launch {launch_id}: currency {currency!r}, the comparison is in {CURRENCY}")
    if not item.get("started_at"):
        raise ValueError(f"launch {launch_id}: priced but has no started_at")
    started = _timestamp(item["started_at"], launch_id, "started_at")
    if completed < started:
        raise ValueError(f"launch {launch_id}: completed_at {completed} is before started_at {started}")
    try:
        cost = Decimal(str(item["total_cost"]))
    except InvalidOperation:
        raise ValueError(f"launch {launch_id}: total_cost {item['total_cost']!r} is not a number") from None
    if not cost.is_finite():
        raise ValueError(f"launch {launch_id}: total_cost {item['total_cost']!r} is not a number")
    return _Run(
        workflow_type=str(item.get("workflow_type") or UNKNOWN),
        instance_types=frozenset(item.get("instance_types") or ()),
        duration_s=_seconds(completed - started),
        cost=cost,
    )


def _family_group(run: _Run) -> str:
    return "+".join(sorted({instance_family(t) for t in run.instance_types})) or UNKNOWN


def _architecture_group(run: _Run) -> str:
    architectures = {architecture(t) for t in run.instance_types}
    if not architectures:
        return UNKNOWN
    return architectures.pop() if len(architectures) == 1 else MIXED


def _group(runs: list[_Run], key) -> tuple[GroupStats, ...]:
    grouped: dict[tuple[str, str], list[_Run]] = defaultdict(list)
    for run in runs:
        grouped[(run.workflow_type, key(run))].append(run)
    stats = []
    for (workflow_type, group), members in sorted(grouped.items()):
        total = sum((run.cost for run in members), Decimal(0))
        stats.append(
            GroupStats(
                workflow_type=workflow_type,
                group=group,
                runs=len(members),
                median_duration_s=median([run.duration_s for run in members]),
                median_cost=median([run.cost for run in members]),
                cost_per_run=(total / len(members)).quantize(_CENT_FRACTION, ROUND_HALF_UP),
                total_cost=total,
            )
        )
    return tuple(stats)


def _graviton_vs_x86(by_architecture: tuple[GroupStats, ...]) -> tuple[GravitonVsX86, ...]:
    index = {(group.workflow_type, group.group): group for group in by_architecture}
    result = []
    for workflow_type in sorted({group.workflow_type for group in by_architecture}):
        arm, x86 = index.get((workflow_type, ARM64)), index.get((workflow_type, X86_64))
        if arm is None or x86 is None:
            continue
        cost_ratio = _ratio(arm.median_cost, x86.median_cost)
        duration_ratio = _ratio(arm.median_duration_s, x86.median_duration_s)
        result.append(
            GravitonVsX86(
                workflow_type=workflow_type,
                arm=arm,
                x86=x86,
                cost_change_pct=_percent(cost_ratio - 1) if cost_ratio is not None else None,
                duration_change_pct=_percent(duration_ratio - 1) if duration_ratio is not None else None,
                price_performance_gain_pct=_percent(1 - cost_ratio) if cost_ratio is not None else None,
            )
        )
    return tuple(result)


def median(values: list[Decimal]) -> Decimal:
    """The middle value; for an even count the mean of the two middle values (exact in Decimal)."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    return numerator / denominator if denominator else None


def _percent(fraction: Decimal) -> Decimal:
    value = (fraction * 100).quantize(_PERCENT, ROUND_HALF_UP)
    return abs(value) if value == 0 else value  # no "-0.00"


def _timestamp(value: Any, launch_id: str, what: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"launch {launch_id}: {what} {value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"launch {launch_id}: {what} {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _seconds(delta: timedelta) -> Decimal:
    """Exact seconds of a timedelta (microsecond resolution), without float."""
    whole = Decimal(delta.days * 86400 + delta.seconds)
    return whole + Decimal(delta.microseconds) / 1_000_000 if delta.microseconds else whole


# ----------------------------------------------------------------------------------------------- output


def _text(value: Decimal) -> str:
    """Plain notation (never ``3.6E+3``), trailing zeros dropped: ``3600``, ``3600.5``."""
    return format(value.normalize(), "f")


def _pct(value: Decimal | None) -> str | None:
    """Two decimals: ``-20.00``."""
    return None if value is None else format(value, "f")


def _money(value: Decimal) -> str:
    """At least 4 decimals (the items' precision); an exact even-count median may carry a 5th."""
    return format(value.quantize(_CENT_FRACTION) if value.as_tuple().exponent >= -4 else value, "f")


def _group_dict(group: GroupStats, workflow_type: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {"workflow_type": group.workflow_type} if workflow_type else {}
    row.update(
        group=group.group,
        runs=group.runs,
        median_duration_s=_text(group.median_duration_s),
        median_cost_usd=_money(group.median_cost),
        cost_per_run_usd=_money(group.cost_per_run),
        total_cost_usd=_money(group.total_cost),
    )
    return row


def comparison_rows(comparison: Comparison) -> list[dict[str, str]]:
    """The CSV rows as dicts of strings (``""`` for an empty cell); see ``comparison_csv``."""
    rows = []
    for group in comparison.groups:
        rows.append(_csv_row(group, comparison.group_by))
    for item in comparison.graviton_vs_x86:
        arm = _csv_row(item.arm, GRAVITON_VS_X86)
        arm.update(
            cost_change_pct=_pct(item.cost_change_pct) or "",
            duration_change_pct=_pct(item.duration_change_pct) or "",
            price_performance_gain_pct=_pct(item.price_performance_gain_pct) or "",
        )
        rows += [arm, _csv_row(item.x86, GRAVITON_VS_X86)]
    return rows


def _csv_row(group: GroupStats, group_by: str) -> dict[str, str]:
    row = {column: "" for column in CSV_COLUMNS}
    row.update({key: str(value) for key, value in _group_dict(group).items()}, group_by=group_by)
    return row


def comparison_csv(comparison: Comparison) -> str:
    """One CSV (header ``CSV_COLUMNS``, no blank lines) in two sections told apart by ``group_by``:

    * ``group_by`` = ``family`` or ``architecture`` (the comparison's grouping): one row per
      (workflow_type, group) with runs, median duration (s), median cost, cost per run and total cost
      (USD); the last three percentage columns are empty.
    * ``group_by`` = ``graviton_vs_x86``: per workflow type that ran on both architectures, an
      ``arm64`` row then an ``x86_64`` row (group = architecture, same statistics). The ``arm64`` row
      carries ``cost_change_pct``, ``duration_change_pct`` and ``price_performance_gain_pct`` (see
      ``GravitonVsX86``); the ``x86_64`` row is the baseline and leaves them empty.

    An empty comparison is the header alone. Filter on ``group_by`` in pandas or ``csv.DictReader``.
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(comparison_rows(comparison))
    return out.getvalue()


def comparison_chart_png(comparison: Comparison) -> bytes:
    """A PNG: grouped bars of the median cost per run (top) and the median duration (bottom) per
    workflow type and group, titled with the period; Graviton-vs-x86 changes as a footnote. An empty
    comparison draws "no priced launches in <period>". Same comparison, same bytes (no timestamp or
    software metadata)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    title = f"Workflow launch benchmark, {comparison.period}"
    if not comparison.groups:
        figure = Figure(figsize=(8, 3), dpi=100)
        FigureCanvasAgg(figure)
        figure.suptitle(title, fontsize=11)
        figure.text(0.5, 0.5, f"no priced launches in {comparison.period}", ha="center", va="center")
        return _png(figure)

    workflow_types = sorted({group.workflow_type for group in comparison.groups})
    group_names = sorted({group.group for group in comparison.groups})
    index = {(group.workflow_type, group.group): group for group in comparison.groups}
    longest = max(group.median_duration_s for group in comparison.groups)
    unit, divisor = ("h", Decimal(3600)) if longest >= 3 * 3600 else ("min", Decimal(60))

    width = min(24.0, max(8.0, 1.0 + 0.45 * len(comparison.groups) + 0.6 * len(workflow_types)))
    figure = Figure(figsize=(width, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    cost_axes, duration_axes = figure.subplots(2, 1, sharex=True)
    # Each workflow type's bars sit side by side, centred on its tick; a group keeps its colour throughout.
    present = {wt: [name for name in group_names if (wt, name) in index] for wt in workflow_types}
    bar_width = 0.8 / max(len(names) for names in present.values())
    for number, name in enumerate(group_names):
        positions, costs, durations = [], [], []
        for position, workflow_type in enumerate(workflow_types):
            names = present[workflow_type]
            if name in names:
                group = index[(workflow_type, name)]
                positions.append(position + bar_width * (names.index(name) - (len(names) - 1) / 2))
                costs.append(float(group.median_cost))
                durations.append(float(group.median_duration_s / divisor))
        color = f"C{number % 10}"
        bars = cost_axes.bar(positions, costs, bar_width, label=name, color=color)
        cost_axes.bar_label(bars, labels=[f"${cost:,.2f}" for cost in costs], fontsize=7, padding=2)
        bars = duration_axes.bar(positions, durations, bar_width, label=name, color=color)
        duration_axes.bar_label(bars, labels=[f"{value:,.1f}" for value in durations], fontsize=7, padding=2)

    figure.suptitle(title, fontsize=12)
    cost_axes.set_title("Median cost per run", fontsize=10)
    cost_axes.set_ylabel("USD")
    duration_axes.set_title("Median duration per run", fontsize=10)
    duration_axes.set_ylabel(unit)
    if len(workflow_types) > 4:
        duration_axes.set_xticks(range(len(workflow_types)), workflow_types, rotation=20, ha="right")
    else:
        duration_axes.set_xticks(range(len(workflow_types)), workflow_types)
    duration_axes.set_xlabel("workflow type")
    for axes in (cost_axes, duration_axes):
        axes.margins(y=0.15)
        axes.grid(axis="y", alpha=0.3)
        axes.set_axisbelow(True)
    cost_axes.legend(
        title="instance family" if comparison.group_by == "family" else "architecture",
        fontsize=8,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    notes = [
        f"{item.workflow_type}: Graviton vs x86 cost {_signed(item.cost_change_pct)}, "
        f"duration {_signed(item.duration_change_pct)} (medians, {item.arm.runs} vs {item.x86.runs} runs)"
        for item in comparison.graviton_vs_x86
    ]
    if notes:
        figure.supxlabel("\n".join(notes), fontsize=8)
    return _png(figure)


def _signed(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _safe_key(key_prefix: str) -> str:
    parts = key_prefix.strip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"key_prefix {key_prefix!r} has an empty, '.' or '..' part")
    return "/".join(safe_key_part(part) for part in parts)


def write_comparison(comparison: Comparison, reports_uri: str, key_prefix: str, s3=None) -> dict[str, str]:
    """Write ``<reports_uri>/<key_prefix>.csv`` (text/csv) and ``.png`` (image/png) to S3, or to the
    local path of a file:// URI (as ``reports.write_report``), and return ``{"csv": uri, "png": uri}``.
    Each ``/``-separated part of ``key_prefix`` is made key-safe like ``reports.report_key`` (``:`` ->
    ``_``). ``s3`` is required for s3:// URIs."""
    base = reports_uri.rstrip("/") + "/" + _safe_key(key_prefix)
    uris = {"csv": base + ".csv", "png": base + ".png"}
    write_bytes(uris["csv"], comparison_csv(comparison).encode(), "text/csv", s3)
    write_bytes(uris["png"], comparison_chart_png(comparison), "image/png", s3)
    return uris
