"""Benchmark: price 2,000 genomics workflow launches with the price cache and without, in the same run.

Workload (deterministic, ``--seed``): ``--launches`` launches in us-east-1 starting between 2026-11-24
and 2026-12-24 (after the last Spot price change of the snapshot's history, 2026-11-22), each running
10 minutes to 10 hours, with

- 1-8 EC2 instances of the 20 instance types of the price snapshot (``include/pricing/AmazonEC2.json``),
  about 80% On-Demand and 20% Spot, in us-east-1a/b/c, each running from a few minutes to the rest of
  the launch (about 3% run less than the 60-second billing minimum);
- 1-3 EBS volumes, each over one of the launch's instances' intervals: gp3 at the free baseline, gp3
  with extra IOPS and/or throughput, gp2, io1;
- for about half the launches, an FSx for Lustre file system over the whole launch: SCRATCH_2, or
  PERSISTENT_2 at 125 or 250 MB/s/TiB.

Both runs call ``costs.price_launch`` on every launch in order, one thread, with a ``PriceCatalog`` over
the offline snapshot (``SnapshotPriceList``) and the snapshot's Spot history
(``spot.SnapshotSpotHistory``): the **cached** run with ``cache=True`` (the production setting), the
**uncached** run with ``cache=False`` (one GetProducts request per price lookup). The offline snapshot
answers in microseconds where the Price List API is a remote round trip, so every ``get_products``
request of both runs first sleeps a modelled latency (``--api-latency-ms``, 5 by default). Spot history
requests get no latency and are made the same way in both runs: they are not what the cache changes.

The default latency is low so that the uncached run prices all 2,000 launches (about 14,000 requests,
about 75 s) and every figure is measured, none extrapolated. A real GetProducts round trip is tens of ms
or more, which makes the uncached side slower still (its launches/s scales as 1 / latency) and changes
no call count. ``--api-latency-ms 20 --uncached-sample 200`` prices an evenly spread sample of 200
launches uncached instead; ``uncached_calls`` is then extrapolated to all launches (``uncached_sampled``
says so, ``uncached_calls_measured`` is what the sample made).

``distinct_price_keys`` is counted from the generated usage, not from the catalog: the ``PriceKey``s
the billing rules of ``costs`` need (the On-Demand instance types; EBS storage of every volume type
used, gp3 IOPS / throughput when provisioned above the free 3,000 / 125 MiB/s, io1 IOPS; the FSx
deployment / storage / throughput tiers). ``price_lookups`` is the same walk with repeats: the requests
an uncached catalog makes (one page each). ``checks`` cross-checks these against what the client saw.

    .venv/bin/python benchmarks/pricing.py [--launches 2000] [--api-latency-ms 5] [--uncached-sample 0]
        [--seed 6]

Targets (issue #6): cached GetProducts calls <= distinct (service, product, region) keys, and >= 50x
fewer than uncached. Checks: both runs give identical costs for every launch both priced
(``totals_match``), the cached run asks once per distinct key, the uncached once per lookup. Prints one
JSON line; progress on stderr; exits 1 when a target or a check is missed.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from dataplatform.pricing import prices  # noqa: E402
from dataplatform.pricing.costs import (  # noqa: E402
    GP3_FREE_IOPS,
    GP3_FREE_THROUGHPUT_MIBPS,
    PROVISIONED_IOPS_TYPES,
    LaunchCost,
    money,
    price_launch,
)
from dataplatform.pricing.prices import PriceCatalog, PriceKey, SnapshotPriceList  # noqa: E402
from dataplatform.pricing.resources import (  # noqa: E402
    FileSystemUsage,
    InstanceUsage,
    Interval,
    LaunchUsage,
    VolumeUsage,
)
from dataplatform.pricing.spot import SnapshotSpotHistory, spot_price_points  # noqa: E402

SNAPSHOT = REPO / "include" / "pricing"
REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
WINDOW_START = datetime(2026, 11, 24, tzinfo=UTC)
WINDOW_DAYS = 30
SPOT_SHARE = 0.2
FSX_SHARE = 0.5
SHORT_INSTANCE_SHARE = 0.03
# (label, weight): the EBS volume kinds drawn.
VOLUME_KINDS = (
    ("gp3", 40),
    ("gp3+iops", 15),
    ("gp3+throughput", 10),
    ("gp3+iops+throughput", 10),
    ("gp2", 15),
    ("io1", 10),
)
# (deployment type, storage type, MB/s/TiB, capacity step GiB, weight)
FILE_SYSTEM_KINDS = (
    ("SCRATCH_2", "SSD", None, 2400, 40),
    ("PERSISTENT_2", "SSD", 125, 1200, 35),
    ("PERSISTENT_2", "SSD", 250, 1200, 25),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def snapshot_instance_types() -> list[str]:
    """The instance types with an On-Demand Linux product in the snapshot, in file order."""
    offer = json.loads((SNAPSHOT / "AmazonEC2.json").read_text())["PriceList"]
    types = []
    for entry in offer:
        product = json.loads(entry)["product"]
        attributes = product.get("attributes", {})
        if product.get("productFamily") == "Compute Instance" and attributes.get("capacitystatus") == "Used":
            types.append(attributes["instanceType"])
    return list(dict.fromkeys(types))


class RemotePriceList:
    """A ``get_products`` client in front of the snapshot that sleeps ``latency_s`` per request (the
    modelled Price List round trip), counts requests and records the distinct filter sets asked for."""

    def __init__(self, inner: SnapshotPriceList, latency_s: float):
        self.inner = inner
        self.latency_s = latency_s
        self.requests = 0
        self.distinct: set[tuple] = set()

    def get_products(self, **request) -> dict:
        self.requests += 1
        filters = tuple(sorted((f["Type"], f["Field"], f["Value"]) for f in request.get("Filters", ())))
        self.distinct.add((request["ServiceCode"], filters))
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        return self.inner.get_products(**request)


# -- workload ----------------------------------------------------------------------------------------------


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return start + timedelta(seconds=rng.uniform(0, (end - start).total_seconds()))


def _instance_interval(rng: random.Random, launch: Interval) -> Interval:
    start = _between(rng, launch.start, launch.start + (launch.end - launch.start) / 2)
    if rng.random() < SHORT_INSTANCE_SHARE:
        return Interval(start, start + timedelta(seconds=rng.uniform(15, 59)))
    remaining = (launch.end - start).total_seconds()
    seconds = rng.uniform(min(120, remaining), remaining)
    return Interval(start, start + timedelta(seconds=seconds))


def _volume(rng: random.Random, volume_id: str, interval: Interval) -> VolumeUsage:
    kind = rng.choices([k for k, _ in VOLUME_KINDS], weights=[w for _, w in VOLUME_KINDS])[0]
    size = rng.choice((20, 50, 100, 200, 500, 1000, 2000))
    if kind == "gp2":
        return VolumeUsage(volume_id, "gp2", size, interval)
    if kind == "io1":
        return VolumeUsage(volume_id, "io1", size, interval, iops=rng.choice((1000, 4000, 10000)))
    iops = rng.choice((4000, 6000, 16000)) if "iops" in kind else GP3_FREE_IOPS
    throughput = rng.choice((250, 500, 1000)) if "throughput" in kind else GP3_FREE_THROUGHPUT_MIBPS
    return VolumeUsage(volume_id, "gp3", size, interval, iops=iops, throughput_mibps=throughput)


def generate_launches(count: int, instance_types: list[str], seed: int) -> list[LaunchUsage]:
    rng = random.Random(seed)
    launches = []
    for number in range(count):
        start = _between(rng, WINDOW_START, WINDOW_START + timedelta(days=WINDOW_DAYS))
        launch = Interval(start, start + timedelta(seconds=rng.uniform(600, 10 * 3600)))
        instances = tuple(
            InstanceUsage(
                instance_id=f"i-{rng.getrandbits(68):017x}",
                instance_type=rng.choice(instance_types),
                lifecycle="spot" if rng.random() < SPOT_SHARE else "on-demand",
                availability_zone=rng.choice(ZONES),
                interval=_instance_interval(rng, launch),
            )
            for _ in range(rng.randint(1, 8))
        )
        volumes = tuple(
            _volume(rng, f"vol-{rng.getrandbits(68):017x}", rng.choice(instances).interval)
            for _ in range(rng.randint(1, 3))
        )
        file_systems: tuple[FileSystemUsage, ...] = ()
        if rng.random() < FSX_SHARE:
            deployment, storage, throughput, step, _ = rng.choices(
                FILE_SYSTEM_KINDS, weights=[kind[-1] for kind in FILE_SYSTEM_KINDS]
            )[0]
            file_systems = (
                FileSystemUsage(
                    file_system_id=f"fs-{rng.getrandbits(68):017x}",
                    deployment_type=deployment,
                    storage_type=storage,
                    storage_capacity_gib=step * rng.randint(1, 4 if step == 2400 else 8),
                    interval=launch,
                    throughput_per_tib=throughput,
                ),
            )
        launches.append(LaunchUsage(f"launch-{number:05d}", REGION, launch, instances, volumes, file_systems))
    return launches


def price_lookups(usage: LaunchUsage) -> list[PriceKey]:
    """The prices a launch needs, repeats included, from the published billing rules (see ``costs``):
    On-Demand instances by type (Spot is priced from the Spot history), every volume's storage, gp3
    IOPS / throughput above the free baseline, io1 / io2 IOPS, each file system's Lustre tier."""
    keys = [
        prices.ec2_instance_key(instance.instance_type, usage.region)
        for instance in usage.instances
        if instance.lifecycle == "on-demand"
    ]
    for volume in usage.volumes:
        keys.append(prices.ebs_key(volume.volume_type, "storage", usage.region))
        if volume.volume_type == "gp3":
            if (volume.iops or GP3_FREE_IOPS) > GP3_FREE_IOPS:
                keys.append(prices.ebs_key("gp3", "iops", usage.region))
            if (volume.throughput_mibps or GP3_FREE_THROUGHPUT_MIBPS) > GP3_FREE_THROUGHPUT_MIBPS:
                keys.append(prices.ebs_key("gp3", "throughput", usage.region))
        elif volume.volume_type in PROVISIONED_IOPS_TYPES:
            keys.append(prices.ebs_key(volume.volume_type, "iops", usage.region))
    keys.extend(
        prices.fsx_lustre_key(fs.deployment_type, fs.storage_type, fs.throughput_per_tib, usage.region)
        for fs in usage.file_systems
    )
    return keys


# -- the runs ----------------------------------------------------------------------------------------------


def run(name: str, launches: list[LaunchUsage], catalog: PriceCatalog, spot_history) -> dict:
    costs: dict[str, LaunchCost] = {}
    started = time.perf_counter()
    for number, usage in enumerate(launches, 1):
        costs[usage.launch_id] = price_launch(usage, catalog, spot_history)
        if number % 250 == 0 or number == len(launches):
            elapsed = time.perf_counter() - started
            log(
                f"{name}: {number}/{len(launches)} launches, {catalog.calls} GetProducts calls, {elapsed:.1f}s"
            )
    seconds = time.perf_counter() - started
    return {"costs": costs, "seconds": seconds, "calls": catalog.calls}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=2000)
    parser.add_argument(
        "--api-latency-ms",
        type=float,
        default=5.0,
        help="modelled Price List round trip slept before every get_products request (both runs)",
    )
    parser.add_argument(
        "--uncached-sample",
        type=int,
        default=0,
        help="price only this many launches (evenly spread) uncached and extrapolate its calls; 0: all",
    )
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    wall_started = time.perf_counter()

    instance_types = snapshot_instance_types()
    launches = generate_launches(args.launches, instance_types, args.seed)
    lookups = [price_lookups(usage) for usage in launches]
    needed = {key for keys in lookups for key in keys}
    distinct_keys = len(needed)
    log(
        f"{len(launches)} launches over {len(instance_types)} instance types: "
        f"{sum(len(u.instances) for u in launches)} instances, {sum(len(u.volumes) for u in launches)} "
        f"volumes, {sum(len(u.file_systems) for u in launches)} file systems; "
        f"{sum(map(len, lookups))} price lookups over {distinct_keys} distinct price keys"
    )

    sample_size = args.uncached_sample if 0 < args.uncached_sample < len(launches) else len(launches)
    sampled = [launches[i * len(launches) // sample_size] for i in range(sample_size)]
    sampled_lookups = sum(len(price_lookups(usage)) for usage in sampled)
    latency_s = args.api_latency_ms / 1000
    log(
        f"uncached run: {len(sampled)} launches, {sampled_lookups} requests, "
        f"at least {sampled_lookups * latency_s:.0f}s at {args.api_latency_ms:g} ms a request"
    )

    # One snapshot and one Spot history, loaded before the timed runs (both load lazily on first use).
    snapshot = SnapshotPriceList(SNAPSHOT)
    for service in sorted({key.service for key in needed}):
        snapshot.get_products(ServiceCode=service, MaxResults=1)
    spot_source = SnapshotSpotHistory(SNAPSHOT / "spot_price_history.json")
    spot_history = functools.partial(spot_price_points, spot_source)
    spot_history(instance_types[0], ZONES[0], launches[0].interval)

    cached_client = RemotePriceList(snapshot, latency_s)
    cached = run("cached", launches, PriceCatalog(cached_client, "snapshot", cache=True), spot_history)
    uncached_client = RemotePriceList(snapshot, latency_s)
    uncached = run("uncached", sampled, PriceCatalog(uncached_client, "snapshot", cache=False), spot_history)

    is_sampled = len(sampled) < len(launches)
    uncached_calls = (
        round(uncached["calls"] * len(launches) / len(sampled)) if is_sampled else uncached["calls"]
    )
    mismatched = [
        usage.launch_id
        for usage in sampled
        if cached["costs"][usage.launch_id].attributes() != uncached["costs"][usage.launch_id].attributes()
        or cached["costs"][usage.launch_id].lines != uncached["costs"][usage.launch_id].lines
    ]
    needed_requests = {
        (key.service, tuple(sorted(("TERM_MATCH", f, v) for f, v in key.filters))) for key in needed
    }
    total = sum((cost.total_cost for cost in cached["costs"].values()), Decimal(0))

    result = {
        "benchmark": "pricing",
        "launches": len(launches),
        "instance_types": len(instance_types),
        "instances": sum(len(u.instances) for u in launches),
        "spot_instances": sum(i.lifecycle == "spot" for u in launches for i in u.instances),
        "volumes": sum(len(u.volumes) for u in launches),
        "file_systems": sum(len(u.file_systems) for u in launches),
        "distinct_price_keys": distinct_keys,
        "price_lookups": sum(map(len, lookups)),
        "cached_calls": cached["calls"],
        "uncached_calls": uncached_calls,
        "uncached_sampled": is_sampled,
        "uncached_sampled_launches": len(sampled),
        "uncached_calls_measured": uncached["calls"],
        "calls_ratio": round(uncached_calls / max(1, cached["calls"]), 1),
        "cached_seconds": round(cached["seconds"], 3),
        "uncached_seconds": round(uncached["seconds"], 3),
        "cached_launches_per_s": round(len(launches) / cached["seconds"], 1),
        "uncached_launches_per_s": round(len(sampled) / uncached["seconds"], 1),
        "launches_per_s_ratio": round(
            (len(launches) / cached["seconds"]) / (len(sampled) / uncached["seconds"]), 1
        ),
        "api_latency_ms": args.api_latency_ms,
        "api_latency_applies_to": "every get_products request of both runs (not Spot history requests)",
        "totals_match": not mismatched,
        "total_cost_usd": money(total),
        "seed": args.seed,
        "wall_seconds": round(time.perf_counter() - wall_started, 1),
    }
    if is_sampled:
        result["note"] = (
            f"uncached run priced {len(sampled)} of {len(launches)} launches (evenly spread); uncached_calls "
            f"is uncached_calls_measured x {len(launches)}/{len(sampled)}, price_lookups the exact count"
        )
    result["targets"] = {
        "calls_le_distinct_keys": cached["calls"] <= distinct_keys,
        "ge_50x_fewer_calls": uncached_calls >= 50 * cached["calls"],
    }
    result["checks"] = {
        "totals_match": not mismatched,
        "cached_one_request_per_distinct_key": cached_client.requests == cached["calls"] == distinct_keys,
        "cached_requests_are_the_needed_keys": cached_client.distinct == needed_requests,
        "uncached_one_request_per_lookup": uncached_client.requests == uncached["calls"] == sampled_lookups,
    }
    for name, met in {**result["targets"], **result["checks"]}.items():
        if not met:
            log(f"MISSED: {name}")
    if mismatched:
        log(f"cost differs between the runs for {len(mismatched)} launches, e.g. {mismatched[:5]}")
    print(json.dumps(result))
    return 0 if all(result["targets"].values()) and all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
