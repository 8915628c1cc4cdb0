"""Property-based tests (hypothesis) of the parsers and the arithmetic the pipelines trust: Glue partition
layouts, landing manifests, price calculations and byte-range coalescing. Runs are bounded and
derandomized (the same examples on every run: CI is reproducible), with no deadline (the machine is
shared)."""

from __future__ import annotations

import calendar
import hashlib
import json
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.unit]

BOUNDED = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# -- Glue partition layouts --------------------------------------------------------------------------------


def _layouts():
    from dataplatform.config import settings as config
    from dataplatform.glue.layout import PartitionLayout

    return {name: PartitionLayout(table) for name, table in config().glue.tables.items()}


MOMENTS = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59))


@BOUNDED
@given(moment=MOMENTS)
def test_a_partition_path_parses_back_to_its_values(moment):
    for layout in _layouts().values():
        values = layout.values_at(moment)
        assert layout.parse(layout.render(values)) == values
        assert layout.render(layout.parse(layout.render(values))) == layout.render(values)


@BOUNDED
@given(start=MOMENTS, hours=st.integers(min_value=1, max_value=24 * 40))
def test_the_partitions_of_an_interval_cover_it_without_duplicates(start, hours):
    end = start + timedelta(hours=hours)
    for layout in _layouts().values():
        partitions = layout.values_for_interval(start, end)
        assert len(set(partitions)) == len(partitions)
        assert partitions == sorted(partitions)
        for moment in (start, end - timedelta(seconds=1), start + (end - start) / 2):
            assert layout.values_at(moment) in partitions


@st.composite
def impossible_days(draw):
    year = draw(st.integers(min_value=1971, max_value=2099))
    # Months that can miss a day (every one but the 31-day months); day 0 never exists.
    month = draw(st.sampled_from([2, 4, 6, 9, 11]))
    last = calendar.monthrange(year, month)[1]
    day = draw(st.sampled_from([0, *range(last + 1, 32)]))
    return year, month, day


@BOUNDED
@given(date=impossible_days())
def test_a_day_that_does_not_exist_is_never_a_partition(date):
    from dataplatform.glue.layout import InvalidPartitionPath

    year, month, day = date
    layouts = _layouts()
    paths = {
        "web_events": f"dt={year:04d}-{month:02d}-{day:02d}/hour=00/",
        "cloudtrail": f"{year:04d}/{month:02d}/{day:02d}/",
    }
    for name, path in paths.items():
        with pytest.raises(InvalidPartitionPath):
            layouts[name].parse(path)


@BOUNDED
@given(segment=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=30))
def test_any_text_either_parses_to_a_canonical_partition_or_is_refused(segment):
    from dataplatform.glue.layout import InvalidPartitionPath

    for layout in _layouts().values():
        path = "/".join([segment] * layout.depth) + "/"
        try:
            values = layout.parse(path)
        except (InvalidPartitionPath, ValueError):
            continue
        # Accepted: the path is the canonical rendering of what it parsed to (no second spelling).
        assert layout.render(values) == path


# -- landing manifests -------------------------------------------------------------------------------------

LINE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=40)
WINDOW_START = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1))


def _land(root: str, batch_id: str, files: list[list[str]], start: datetime, minutes: int) -> dict:
    from dataplatform.reconciliation.manifests import MANIFEST_NAME, format_utc
    from spark_jobs.common.storage import Storage, join

    storage, digest, names = Storage(), hashlib.sha256(), []
    for number, lines in enumerate(files):
        data = "".join(line + "\n" for line in lines).encode()
        name = f"part-{number:05d}.jsonl"
        storage.write_bytes(join(root, batch_id, name), data)
        digest.update(data)
        names.append(name)
    manifest = {
        "batch_id": batch_id,
        "window_start": format_utc(start),
        "window_end": format_utc(start + timedelta(minutes=minutes)),
        "rows": sum(len(lines) for lines in files),
        "files": names,
        "sha256": digest.hexdigest(),
    }
    storage.write_bytes(join(root, batch_id, MANIFEST_NAME), json.dumps(manifest).encode())
    return manifest


BATCH = {
    "batch_id": st.from_regex(r"[A-Za-z0-9_=-][A-Za-z0-9_.=-]{0,30}", fullmatch=True),
    "files": st.lists(st.lists(LINE, max_size=8), min_size=1, max_size=3),
    "start": WINDOW_START,
    "minutes": st.integers(min_value=1, max_value=24 * 60),
}


@BOUNDED
@given(**BATCH)
def test_a_landed_manifest_verifies_to_what_was_written(batch_id, files, start, minutes):
    from dataplatform.reconciliation.manifests import read_and_verify
    from spark_jobs.common.storage import Storage

    with tempfile.TemporaryDirectory() as folder:
        root = f"file://{folder}/landing/"
        written = _land(root, batch_id, files, start, minutes)
        manifest = read_and_verify(Storage(), root, batch_id)
    assert (manifest.batch_id, manifest.rows, manifest.sha256, list(manifest.files)) == (
        written["batch_id"],
        written["rows"],
        written["sha256"],
        written["files"],
    )
    assert manifest.window_start == start.replace(tzinfo=UTC)
    assert manifest.window_end - manifest.window_start == timedelta(minutes=minutes)


TAMPERINGS = st.one_of(
    st.tuples(
        st.just("field"),
        st.sampled_from(["batch_id", "window_start", "window_end", "rows", "files", "sha256"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.text(max_size=5), max_size=2)),
    ),
    st.tuples(
        st.just("drop"),
        st.sampled_from(["batch_id", "window_start", "window_end", "rows", "files", "sha256"]),
        st.none(),
    ),
    st.tuples(st.just("add"), st.text(min_size=1, max_size=10), st.integers()),
    st.tuples(st.just("data"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
)


@BOUNDED
@given(**BATCH, tampering=TAMPERINGS)
def test_any_tampering_is_detected(batch_id, files, start, minutes, tampering):
    from dataplatform.reconciliation.manifests import MANIFEST_NAME, ManifestError, read_and_verify
    from spark_jobs.common.storage import Storage, join

    kind, what, value = tampering
    storage = Storage()
    with tempfile.TemporaryDirectory() as folder:
        root = f"file://{folder}/landing/"
        manifest = _land(root, batch_id, files, start, minutes)
        if kind == "data":
            data = b"".join(storage.read_bytes(join(root, batch_id, name)) for name in manifest["files"])
            if not data:
                return  # nothing to flip: an empty batch has no byte to tamper with
            position = what % len(data)
            name, offset = _file_at(storage, root, batch_id, manifest["files"], position)
            body = bytearray(storage.read_bytes(join(root, batch_id, name)))
            body[offset] ^= value
            storage.write_bytes(join(root, batch_id, name), bytes(body))
        else:
            changed = dict(manifest)
            if kind == "drop":
                changed.pop(what)
            elif kind == "add":
                if what in changed:
                    return
                changed[what] = value
            else:
                if value == manifest[what]:
                    return
                changed[what] = value
            storage.write_bytes(join(root, batch_id, MANIFEST_NAME), json.dumps(changed).encode())
        with pytest.raises(ManifestError):
            read_and_verify(storage, root, batch_id)


def _file_at(storage, root, batch_id, names, position):
    from spark_jobs.common.storage import join

    for name in names:
        size = len(storage.read_bytes(join(root, batch_id, name)))
        if position < size:
            return name, position
        position -= size
    raise AssertionError("position past the end")


# -- prices ------------------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
SECONDS = st.integers(min_value=0, max_value=90 * 24 * 3600)
INSTANCE_TYPES = st.sampled_from(["m5.large", "m5.xlarge", "m5.2xlarge", "m6g.xlarge", "m7g.xlarge"])
VOLUMES = st.builds(
    lambda volume_type, size, seconds, iops, throughput: (volume_type, size, seconds, iops, throughput),
    st.sampled_from(["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"]),
    st.integers(min_value=1, max_value=16_384),
    SECONDS,
    st.integers(min_value=100, max_value=64_000),
    st.integers(min_value=125, max_value=1000),
)


def _catalog():
    from dataplatform.config import REPO_ROOT
    from dataplatform.pricing.prices import PriceCatalog, SnapshotPriceList

    return PriceCatalog(SnapshotPriceList(REPO_ROOT / "include" / "pricing"), "snapshot")


def _interval(seconds: int, start: datetime = T0):
    from dataplatform.pricing.resources import Interval

    return Interval(start, start + timedelta(seconds=seconds))


def _volume(spec, seconds=None, size=None):
    from dataplatform.pricing.resources import VolumeUsage

    volume_type, own_size, own_seconds, iops, throughput = spec
    return VolumeUsage(
        f"vol-{volume_type}",
        volume_type,
        size if size is not None else own_size,
        _interval(seconds if seconds is not None else own_seconds),
        iops=iops if volume_type in ("gp3", "io1", "io2") else None,
        throughput_mibps=throughput if volume_type == "gp3" else None,
    )


@BOUNDED
@given(instance_type=INSTANCE_TYPES, shorter=SECONDS, extra=SECONDS)
def test_on_demand_cost_is_non_negative_and_grows_with_time(instance_type, shorter, extra):
    from dataplatform.pricing import prices
    from dataplatform.pricing.costs import on_demand_instance_cost

    rate = _catalog().price(prices.ec2_instance_key(instance_type, "us-east-1")).usd
    short, long = (
        on_demand_instance_cost(_interval(shorter), rate),
        on_demand_instance_cost(_interval(shorter + extra), rate),
    )
    assert Decimal(0) <= short <= long
    # Per second with a 60-second minimum, exactly: rate x max(60, seconds) / 3600.
    assert short == rate * max(60, shorter) / Decimal(3600)


@BOUNDED
@given(spec=VOLUMES, extra_seconds=SECONDS, extra_size=st.integers(min_value=0, max_value=4096))
def test_volume_cost_is_non_negative_and_grows_with_time_and_size(spec, extra_seconds, extra_size):
    from dataplatform.pricing.costs import volume_cost

    catalog = _catalog()
    base = volume_cost(_volume(spec), catalog, "us-east-1")
    longer = volume_cost(_volume(spec, seconds=spec[2] + extra_seconds), catalog, "us-east-1")
    bigger = volume_cost(_volume(spec, size=spec[1] + extra_size), catalog, "us-east-1")
    assert Decimal(0) <= base <= longer
    assert base <= bigger


@BOUNDED
@given(
    instances=st.lists(st.tuples(INSTANCE_TYPES, SECONDS), max_size=4),
    volumes=st.lists(VOLUMES, max_size=3),
    split=st.integers(min_value=0, max_value=7),
)
def test_a_launch_costs_the_sum_of_its_resources(instances, volumes, split):
    """Additive across resources: the line items of a launch are those of any split of its resources,
    each component is the sum of its lines rounded to 4 places, and the total the exact sum of the
    rounded components (the stored strings add up)."""
    from dataplatform.pricing.costs import money, price_launch
    from dataplatform.pricing.resources import InstanceUsage, LaunchUsage

    catalog = _catalog()
    instance_usages = tuple(
        InstanceUsage(f"i-{n:017x}", kind, "on-demand", "us-east-1a", _interval(seconds))
        for n, (kind, seconds) in enumerate(instances)
    )
    volume_usages = tuple(_volume(spec) for spec in volumes)

    def launch(instances_part, volumes_part):
        usage = LaunchUsage("l", "us-east-1", _interval(3600), instances=instances_part, volumes=volumes_part)
        return price_launch(usage, catalog, lambda *_: [])

    whole = launch(instance_usages, volume_usages)
    cut_i, cut_v = split % (len(instance_usages) + 1), split % (len(volume_usages) + 1)
    first = launch(instance_usages[:cut_i], volume_usages[:cut_v])
    second = launch(instance_usages[cut_i:], volume_usages[cut_v:])
    assert sorted(whole.lines, key=str) == sorted(first.lines + second.lines, key=str)
    for component in ("instance", "volume"):
        lines = sum((line.cost for line in whole.lines if line.component == component), Decimal(0))
        assert getattr(whole, f"{component}_cost") == Decimal(money(lines))
    assert whole.total_cost == whole.instance_cost + whole.volume_cost + whole.filesystem_cost
    attributes = whole.attributes()
    assert Decimal(attributes["total_cost"]) == sum(
        Decimal(attributes[name]) for name in ("instance_cost", "volume_cost", "filesystem_cost")
    )
    assert all(Decimal(attributes[name]) >= 0 for name in ("total_cost", "instance_cost", "volume_cost"))


AMOUNT = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10_000), places=3)


@BOUNDED
@given(
    vcpu=AMOUNT,
    memory=AMOUNT,
    storage=AMOUNT,
    hours=AMOUNT,
    more=AMOUNT,
    arch=st.sampled_from(["x86_64", "arm64"]),
)
def test_emr_serverless_cost_is_non_negative_monotonic_and_exact(vcpu, memory, storage, hours, more, arch):
    from dataplatform.pricing.costs import EmrServerlessUsage, emr_serverless_cost

    catalog = _catalog()

    def cost(**changes):
        args = {"vcpu": vcpu, "memory_gb": memory, "storage_gb": storage, "hours": hours, **changes}
        usage = EmrServerlessUsage.from_capacity(
            args["vcpu"], args["memory_gb"], args["storage_gb"], args["hours"], arch
        )
        return emr_serverless_cost(usage, catalog, "us-east-1")

    base = cost()
    assert min(base.vcpu_cost, base.memory_cost, base.storage_cost) >= 0
    for grown in (
        cost(hours=hours + more),
        cost(vcpu=vcpu + more),
        cost(memory_gb=memory + more),
        cost(storage_gb=storage + more),
    ):
        assert grown.total_cost >= base.total_cost
    # Each dimension is a Decimal with at most 4 places: the printed figures add up exactly.
    for part in (base.vcpu_cost, base.memory_cost, base.storage_cost):
        assert part == part.quantize(Decimal("0.0001"))
    assert base.total_cost == base.vcpu_cost + base.memory_cost + base.storage_cost


# -- byte-range coalescing ---------------------------------------------------------------------------------

RANGES = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=100_000),
        st.integers(min_value=1, max_value=5_000),
        st.integers(0, 50),
    ),
    max_size=60,
)
COALESCING = {
    "ranges": RANGES,
    "gap": st.integers(min_value=0, max_value=20_000),
    "limit": st.integers(min_value=1, max_value=30_000),
}


@BOUNDED
@given(**COALESCING)
def test_coalesced_reads_cover_every_range_within_their_bounds(ranges, gap, limit):
    from spark_jobs.common.ranges import coalesce_ranges, slice_members

    plans = coalesce_ranges(ranges, gap, limit)
    members = [member for plan in plans for member in plan.members]
    # Every distinct requested range is in exactly one plan, inside that plan's span.
    assert sorted((offset, length, key) for key, offset, length in members) == sorted(set(ranges))
    for plan in plans:
        assert plan.length > 0
        assert plan.start == min(offset for _, offset, _ in plan.members)
        assert plan.end == max(offset + length for _, offset, length in plan.members)
        # A plan is one range alone or within max_range_bytes.
        assert len(plan.members) == 1 or plan.length <= limit
        # Bounded waste: no hole inside a plan wider than max_gap_bytes.
        covered_to = plan.start
        for _, offset, length in sorted(plan.members, key=lambda m: (m[1], m[2])):
            assert offset - covered_to <= gap
            covered_to = max(covered_to, offset + length)
        # Slicing the plan's bytes gives every member its own bytes.
        data = bytes((plan.start + i) % 251 for i in range(plan.length))
        for (key, offset, length), (sliced_key, sliced) in zip(
            plan.members, slice_members(plan, data), strict=True
        ):
            assert sliced_key == key and sliced == bytes((offset + i) % 251 for i in range(length))
    # Plans come in offset order.
    assert [plan.start for plan in plans] == sorted(plan.start for plan in plans)


@BOUNDED
@given(**COALESCING)
def test_streamed_coalescing_equals_the_whole_list(ranges, gap, limit):
    from spark_jobs.common.ranges import coalesce_ranges, iter_coalesced

    ordered = sorted(set(ranges), key=lambda item: (item[0], item[1], str(item[2])))
    assert list(iter_coalesced(ordered, gap, limit)) == coalesce_ranges(ranges, gap, limit)


@BOUNDED
@given(offset=st.integers(max_value=-1) | st.integers(min_value=0), length=st.integers(max_value=0))
def test_a_negative_offset_or_empty_length_is_refused(offset, length):
    from spark_jobs.common.ranges import coalesce_ranges

    with pytest.raises(ValueError, match="bad byte range"):
        coalesce_ranges([(offset, length, "k")], 0, 10)
