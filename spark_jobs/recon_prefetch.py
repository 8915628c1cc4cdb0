"""Prefetch: read the current stateful artifact of every key a stateful run touches, with few ranged GETs.

``spark_jobs/recon_prefetch.py --spec <uri of _job.json>`` (the stateful run spec, see the contract):

1. the touched keys of every stateless group (``<stateless_uri>touched_keys/``), distinct across groups;
2. per partition, their index entries by BatchGetItem (100 keys a call, ConsistentRead, a thread pool);
   keys that are not indexed are new artifacts and drop out here;
3. a shuffle keyed by part file, sorted by offset, so one task sees all hits of a file in order and
   merges neighbours into read plans (``coalesce_ranges``): one GET serves many artifacts that lie close
   together, as artifacts written by one run do;
4. the plans spread over partitions and read on a thread pool (one ranged GET each); every artifact is
   sliced out, checked against its index entry and written as its exact line to ``<output>prefetched/``.

Counts come back through accumulators, so the driver never holds keys or artifacts. Exact unless Spark
recomputes a stage (a lost executor): then the stats may count the recomputed work twice.
"""

from __future__ import annotations

import itertools
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from spark_jobs.common import main_with_spec
from spark_jobs.common.dynamo import IndexEntry, check_artifact, client, iter_index_entries, map_in_threads
from spark_jobs.common.ranges import ReadPlan, iter_coalesced, slice_members
from spark_jobs.common.storage import Storage, join

STATS = ("touched_keys", "index_hits", "range_reads", "bytes_read", "prefetched_artifacts")
REQUIRED_SPEC_FIELDS = ("stateless_uris", "state_uri", "output_uri", "index_table", "region", "prefetch")

# ((file, offset, length, key), version): an index hit keyed so that Spark sorts it into read order.
Hit = tuple[tuple[str, int, int, str], int]
# (file, start, length, ((key, offset, length, version), ...)): one ranged GET and what it serves.
PlanRow = tuple[str, int, int, tuple[tuple[str, int, int, int], ...]]


@dataclass(frozen=True)
class PrefetchConfig:
    """What the executors need from the spec (small and picklable)."""

    index_table: str
    region: str
    aws_endpoint_url: str | None
    coalesce_gap_bytes: int
    max_range_bytes: int
    threads: int

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> PrefetchConfig:
        prefetch = spec["prefetch"]
        try:
            config = cls(
                index_table=spec["index_table"],
                region=spec["region"],
                aws_endpoint_url=spec.get("aws_endpoint_url") or None,
                coalesce_gap_bytes=int(prefetch["coalesce_gap_bytes"]),
                max_range_bytes=int(prefetch["max_range_bytes"]),
                threads=int(prefetch["threads"]),
            )
        except KeyError as exc:
            raise ValueError(f"prefetch spec lacks prefetch.{exc.args[0]}: {prefetch!r}") from None
        if config.coalesce_gap_bytes < 0 or config.max_range_bytes < 1 or config.threads < 1:
            raise ValueError(f"prefetch spec has a bad value: {prefetch!r}")
        return config

    def storage(self) -> Storage:
        return Storage(endpoint_url=self.aws_endpoint_url, region=self.region)


def run(spark: Any, spec: dict[str, Any], storage: Storage) -> dict[str, int]:
    """Prefetch the indexed artifacts of the run's touched keys; the stats (also written as JSON)."""
    missing = [name for name in REQUIRED_SPEC_FIELDS if name not in spec]
    if missing:
        raise ValueError(f"stateful job spec lacks {missing}; it has {sorted(spec)}")
    output_uri, stats_uri = spec["output_uri"], join(spec["output_uri"], "_prefetch_stats.json")
    committed_uri = join(spec["state_uri"], "_COMMITTED")
    if storage.exists(stats_uri) and storage.exists(committed_uri):
        stats = storage.read_json(stats_uri)
        print(f"recon_prefetch: {committed_uri} exists, run already committed; stats {stats}")
        return stats

    config = PrefetchConfig.from_spec(spec)
    counters = {name: spark.sparkContext.accumulator(0) for name in STATS}
    partitions = spark.sparkContext.defaultParallelism
    keys = touched_keys(spark, spec["stateless_uris"]).rdd.map(lambda row: row[0])
    plans = (
        keys.mapPartitions(partial(lookup_partition, config, counters))
        # All hits of one file meet in one partition, in offset order, for coalescing.
        .repartitionAndSortWithinPartitions(partitions, partitionFunc=_file_partition)
        .mapPartitions(partial(plan_partition, config))
        # Plans of a few large part files would otherwise be read by a few tasks only.
        .repartition(partitions)
    )
    lines = plans.mapPartitions(partial(read_partition, config, counters)).map(lambda line: (line,))
    prefetched_uri = join(output_uri, "prefetched/")
    spark.createDataFrame(lines, "value string").write.mode("overwrite").text(prefetched_uri)

    stats = {name: int(counters[name].value) for name in STATS}
    storage.write_json(stats_uri, stats)
    print(
        f"recon_prefetch: {stats['touched_keys']} touched keys, {stats['index_hits']} indexed; "
        f"prefetched {stats['prefetched_artifacts']} artifacts with {stats['range_reads']} ranged GETs "
        f"({stats['bytes_read']} bytes) into {prefetched_uri}"
    )
    return stats


def touched_keys(spark: Any, stateless_uris: Sequence[str]) -> Any:
    """Distinct ``key`` of every group's ``touched_keys/`` Parquet."""
    if not stateless_uris:
        return spark.createDataFrame([], "key string")
    paths = [join(uri, "touched_keys/") for uri in stateless_uris]
    return spark.read.schema("key string").parquet(*paths).select("key").distinct()


def lookup_partition(config: PrefetchConfig, counters: dict[str, Any], keys: Iterable[str]) -> Iterator[Hit]:
    """Index hits of one partition's keys (BatchGetItem on a thread pool)."""
    keys = iter(keys)
    first = next(keys, None)
    if first is None:
        return  # no client for an empty partition
    touched = 0

    def counted(all_keys: Iterable[str]) -> Iterator[str]:
        nonlocal touched
        for key in all_keys:
            if not key:
                raise ValueError(f"touched_keys holds an empty or null key ({key!r})")
            touched += 1
            yield key

    dynamodb = client("dynamodb", config.aws_endpoint_url, config.region, max_pool_connections=config.threads)
    hits = 0
    for entry in iter_index_entries(
        dynamodb, config.index_table, counted(itertools.chain([first], keys)), config.threads
    ):
        hits += 1
        yield (entry.file, entry.offset, entry.length, entry.key), entry.version
    counters["touched_keys"].add(touched)
    counters["index_hits"].add(hits)


def plan_partition(config: PrefetchConfig, hits: Iterable[Hit]) -> Iterator[PlanRow]:
    """Read plans of hits sorted by (file, offset): streamed, one plan in memory at a time."""
    for file, file_hits in itertools.groupby(hits, key=lambda hit: hit[0][0]):
        yield from _plans_of_file(config, file, file_hits)


def _plans_of_file(config: PrefetchConfig, file: str, hits: Iterable[Hit]) -> Iterator[PlanRow]:
    # coalescing needs only (offset, length, key); the versions of the members not yet planned wait here.
    versions: dict[str, int] = {}

    def ranges() -> Iterator[tuple[int, int, str]]:
        for (_, offset, length, key), version in hits:
            versions[key] = version
            yield offset, length, key

    for plan in iter_coalesced(ranges(), config.coalesce_gap_bytes, config.max_range_bytes):
        members = tuple((key, offset, length, versions.pop(key)) for key, offset, length in plan.members)
        yield file, plan.start, plan.length, members


def read_partition(
    config: PrefetchConfig, counters: dict[str, Any], plans: Iterable[PlanRow]
) -> Iterator[str]:
    """Artifact lines of one partition's read plans, one ranged GET per plan on a thread pool."""
    storage = config.storage()
    artifacts = 0
    for lines in map_in_threads(partial(read_plan, storage), plans, config.threads):
        artifacts += len(lines)
        yield from lines
    counters["range_reads"].add(storage.stats.range_reads)
    counters["bytes_read"].add(storage.stats.bytes_read)
    counters["prefetched_artifacts"].add(artifacts)


def read_plan(storage: Storage, row: PlanRow) -> list[str]:
    """The checked artifact lines one plan covers (their exact bytes, as text)."""
    file, start, length, members = row
    plan = ReadPlan(start, length, tuple((key, offset, size) for key, offset, size, _ in members))
    data = storage.read_range(file, start, length)
    lines = []
    for (_, line), (key, offset, size, version) in zip(slice_members(plan, data), members, strict=True):
        check_artifact(line, IndexEntry(key, file, offset, size, version))
        lines.append(line.decode("utf-8"))
    return lines


def _file_partition(hit_key: tuple[str, int, int, str]) -> int:
    # crc32, not hash(): the same file must land in the same partition in every Python worker.
    return zlib.crc32(hit_key[0].encode())


def main(argv: Sequence[str] | None = None) -> int:
    return main_with_spec("recon_prefetch", run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
