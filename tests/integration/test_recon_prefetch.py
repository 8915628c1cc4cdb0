"""The prefetch Spark job: touched keys -> index lookups on moto's DynamoDB -> coalesced ranged reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataplatform.reconciliation import index
from spark_jobs import recon_prefetch
from spark_jobs.common.ranges import coalesce_ranges
from spark_jobs.common.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.spark]

TABLE = "recon_index"
ENTITIES = ["AMZN_US", "Zürich_€", "日本_JP", "😀_EMOJI"]


def artifact_line(key: str, version: int, seq: int, n: int) -> bytes:
    item = {
        "key": key,
        "version": version,
        "batches": [f"b{s}" for s in range(1, seq + 1)],
        "entities": [ENTITIES[n % len(ENTITIES)]],
        "event_count": version,
        "first_event_time": "2024-03-05T10:03:12.123Z",
        "last_event_time": "2024-03-05T10:09:00.000Z",
        "totals": [
            {"currency": "EUR", "receivable": 100 * n, "remittance": 0, "correction": 0, "balance": 1}
        ],
        "status": "OPEN",
        "seq": seq,
    }
    return json.dumps(item, ensure_ascii=False).encode()


class Lake:
    """Part files of two stateful runs under ``tmp_path``, indexed in run order, and the lines the index
    points at (key -> (file, offset, length, line))."""

    def __init__(self, tmp_path: Path, dynamodb):
        self.root = tmp_path
        self.dynamodb = dynamodb
        self.storage = Storage()
        self.current: dict[str, tuple[str, int, int, bytes]] = {}
        index.create_index_table(dynamodb, TABLE)

    @property
    def work_uri(self) -> str:
        return f"file://{self.root}/work/"

    def write_run(self, seq: int, parts: list[list[tuple[str, int]]]) -> None:
        """One run's part files: each a list of (key, version) lines; then index them in order."""
        for number, lines in enumerate(parts):
            uri = f"{self.work_uri}state/{seq:08d}/part-{number:05d}.txt"
            data = b""
            where = {}
            for n, (key, version) in enumerate(lines):
                line = artifact_line(key, version, seq, n)
                where[key] = (uri, len(data), len(line), line)
                data += line + b"\n"
            self.storage.write_bytes(uri, data)
            index.index_part_file(self.dynamodb, self.storage, TABLE, uri, seq)
            self.current.update(where)

    def write_touched_keys(self, spark, group: str, keys: list[str]) -> str:
        uri = f"{self.work_uri}stateless/{group}/"
        spark.createDataFrame([(key,) for key in keys], "key string").write.mode("overwrite").parquet(
            uri + "touched_keys/"
        )
        return uri

    def spec(self, aws, groups: list[str], gap: int = 65536, max_range: int = 8 * 1024 * 1024) -> dict:
        return {
            "seq": 3,
            "run_id": "manual__test",
            "groups": groups,
            "stateless_uris": [f"{self.work_uri}stateless/{group}/" for group in groups],
            "inflight_state_uris": [],
            "state_uri": f"{self.work_uri}state/00000003/",
            "output_uri": f"{self.work_uri}stateful/00000003/",
            "index_table": TABLE,
            "region": "us-east-1",
            "aws_endpoint_url": aws.url,
            "prefetch": {"coalesce_gap_bytes": gap, "max_range_bytes": max_range, "threads": 4},
            "state_part_files": 2,
        }


def prefetched_lines(spec: dict) -> list[bytes]:
    folder = Path(spec["output_uri"].removeprefix("file://")) / "prefetched"
    assert folder.is_dir()
    return sorted(line for part in folder.glob("part-*") for line in part.read_bytes().split(b"\n") if line)


def expected_reads(lake: Lake, keys: set[str], gap: int, max_range: int) -> tuple[int, int]:
    """(ranged reads, bytes read) that coalescing the hits of each file must give."""
    files: dict[str, list] = {}
    for key in keys & set(lake.current):
        file, offset, length, _ = lake.current[key]
        files.setdefault(file, []).append((offset, length, key))
    plans = [plan for ranges in files.values() for plan in coalesce_ranges(ranges, gap, max_range)]
    return len(plans), sum(plan.length for plan in plans)


@pytest.fixture
def lake(aws, tmp_path) -> Lake:
    lake = Lake(tmp_path, aws.client("dynamodb"))
    # Run 1: two part files of 60 artifacts each. Run 2 updates every third key of the first file into a
    # part file of its own, so the index points into three files and some keys moved to a newer version.
    lake.write_run(1, [[(f"A{n:03d}", 1) for n in range(60)], [(f"B{n:03d}", 1) for n in range(60)]])
    lake.write_run(2, [[(f"A{n:03d}", 2) for n in range(0, 60, 3)]])
    return lake


def test_prefetch_reads_the_indexed_artifacts_of_touched_keys_with_few_reads(spark, aws, lake):
    g1 = [f"A{n:03d}" for n in range(0, 40)] + ["NEW-1", "NEW-2"]
    g2 = [f"A{n:03d}" for n in range(30, 45)] + [f"B{n:03d}" for n in range(10, 50, 2)] + ["NEW-2"]
    lake.write_touched_keys(spark, "g1", g1)
    lake.write_touched_keys(spark, "g2", g2)
    spec = lake.spec(aws, ["g1", "g2"])
    touched = set(g1) | set(g2)
    hits = touched - {"NEW-1", "NEW-2"}

    stats = recon_prefetch.run(spark, spec, Storage())

    # Exactly the lines the index points at: the newest version of each touched key, unknown keys absent.
    assert prefetched_lines(spec) == sorted(lake.current[key][3] for key in hits)
    assert {json.loads(line)["version"] for line in prefetched_lines(spec) if b'"A000"' in line} == {2}
    reads, bytes_read = expected_reads(lake, touched, gap=65536, max_range=8 * 1024 * 1024)
    assert reads == 3  # one read per file: the hits of each file lie close together
    assert stats == {
        "touched_keys": len(touched),
        "index_hits": len(hits),
        "range_reads": reads,
        "bytes_read": bytes_read,
        "prefetched_artifacts": len(hits),
    }
    assert stats["range_reads"] < len(hits) / 10
    assert Storage().read_json(spec["output_uri"] + "_prefetch_stats.json") == stats


def test_distant_clusters_take_one_read_each(spark, aws, lake):
    # Two clusters of neighbouring lines in the B file, separated by untouched lines (each a few hundred
    # bytes); with a 16-byte gap limit only the newline between neighbours may be bridged.
    clusters = [[f"B{n:03d}" for n in range(5, 9)], [f"B{n:03d}" for n in range(20, 23)], ["B050"]]
    keys = [key for cluster in clusters for key in cluster]
    lake.write_touched_keys(spark, "g1", keys)
    spec = lake.spec(aws, ["g1"], gap=16)

    stats = recon_prefetch.run(spark, spec, Storage())

    assert prefetched_lines(spec) == sorted(lake.current[key][3] for key in keys)
    assert stats["range_reads"] == len(clusters)
    assert (stats["range_reads"], stats["bytes_read"]) == expected_reads(lake, set(keys), 16, 8 * 1024 * 1024)
    assert stats["bytes_read"] == sum(len(lake.current[key][3]) for key in keys) + (4 - 1) + (3 - 1)


def test_max_range_bytes_splits_a_long_run_of_neighbours(spark, aws, lake):
    keys = [f"B{n:03d}" for n in range(60)]
    lake.write_touched_keys(spark, "g1", keys)
    longest = max(len(lake.current[key][3]) for key in keys)
    spec = lake.spec(aws, ["g1"], max_range=4 * longest)

    stats = recon_prefetch.run(spark, spec, Storage())

    assert prefetched_lines(spec) == sorted(lake.current[key][3] for key in keys)
    reads, bytes_read = expected_reads(lake, set(keys), 65536, 4 * longest)
    assert 60 / 4 <= reads < 60
    assert (stats["range_reads"], stats["bytes_read"]) == (reads, bytes_read)


def test_no_hits_still_writes_the_output_folder_and_stats(spark, aws, lake):
    lake.write_touched_keys(spark, "g1", ["NEW-1", "NEW-2", "NEW-3"])
    spec = lake.spec(aws, ["g1"])

    stats = recon_prefetch.run(spark, spec, Storage())

    assert prefetched_lines(spec) == []
    assert stats == {
        "touched_keys": 3,
        "index_hits": 0,
        "range_reads": 0,
        "bytes_read": 0,
        "prefetched_artifacts": 0,
    }


def test_rerun_overwrites_and_a_committed_run_is_left_alone(spark, aws, lake):
    keys = ["A001", "A003", "B007"]
    lake.write_touched_keys(spark, "g1", keys)
    spec = lake.spec(aws, ["g1"])
    first = recon_prefetch.run(spark, spec, Storage())

    # A retry after a crash (no _COMMITTED yet) recomputes and overwrites: same lines, same stats.
    assert recon_prefetch.run(spark, spec, Storage()) == first
    assert prefetched_lines(spec) == sorted(lake.current[key][3] for key in keys)

    # Once the run is committed, a rerun reads nothing and returns the stats it finds.
    Storage().write_json(spec["state_uri"] + "_COMMITTED", {"seq": 3, "part_files": [], "artifacts": 0})
    lake.write_touched_keys(spark, "g1", ["A010"])
    counting = Storage()
    assert recon_prefetch.run(spark, spec, counting) == first
    assert prefetched_lines(spec) == sorted(lake.current[key][3] for key in keys)
    assert counting.stats.as_dict()["writes"] == 0


def test_bytes_that_are_not_the_indexed_artifact_fail_the_job(spark, aws, lake):
    # Run 2's part file is rewritten behind the index's back: A003's offset now holds another artifact.
    uri = lake.current["A003"][0]
    path = Path(uri.removeprefix("file://"))
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[1], lines[0], *lines[2:]]))
    lake.write_touched_keys(spark, "g1", ["A003"])
    spec = lake.spec(aws, ["g1"])

    with pytest.raises(Exception, match=r"index entry 'A003' \(version 2\)"):
        recon_prefetch.run(spark, spec, Storage())


def test_main_reads_the_spec_from_its_uri(spark, aws, lake):
    lake.write_touched_keys(spark, "g1", ["B001", "NEW-1"])
    spec = lake.spec(aws, ["g1"])
    spec_uri = f"{lake.work_uri}stateful/00000003/_job.json"
    Storage().write_json(spec_uri, spec)

    assert recon_prefetch.main(["--spec", spec_uri]) == 0

    assert prefetched_lines(spec) == [lake.current["B001"][3]]
    assert Storage().read_json(spec["output_uri"] + "_prefetch_stats.json")["index_hits"] == 1
