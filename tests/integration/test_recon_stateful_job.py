"""The stateful reconciliation process job on local Spark: base state from prefetched and in-flight
artifacts, the business logic (totals, balances, statuses, versions), applying a batch twice, a partial
overlap, and reruns (committed: no-op; retry after a crash: same result)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spark_jobs.common.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.spark]

KINDS = ("receivable", "payable", "royalty", "amortization", "remittance", "correction")


def utc(*parts: int) -> datetime:
    """A UTC time as PySpark takes naive timestamps: in the local zone of this process."""
    return datetime(*parts, tzinfo=UTC).astimezone().replace(tzinfo=None)


def stateless_total(currency: str, **amounts: int) -> dict:
    return {"currency": currency, **{kind: amounts.get(kind, 0) for kind in KINDS}}


def artifact_total(currency: str, **amounts: int) -> dict:
    total = stateless_total(currency, **amounts)
    return {**total, "balance": total["receivable"] - total["remittance"] + total["correction"]}


def artifact_line(key, version, batches, entities, count, first, last, totals, status, seq) -> str:
    """An ARTIFACT JSON line exactly as the job writes it (keys in order, no spaces)."""
    body = {
        "key": key,
        "version": version,
        "batches": batches,
        "entities": entities,
        "event_count": count,
        "first_event_time": first,
        "last_event_time": last,
        "totals": totals,
        "status": status,
        "seq": seq,
    }
    return json.dumps(body, separators=(",", ":"))


def stateless_row(key, batches, entities, count, first, last, totals) -> dict:
    return {
        "key": key,
        "batches": batches,
        "event_count": count,
        "first_event_time": first,
        "last_event_time": last,
        "entities": entities,
        "totals": totals,
    }


# -- inputs of run 7 -----------------------------------------------------------------------------------

T_MAR4 = "2024-03-04T09:00:00.000Z"
T_MAR5 = "2024-03-05T10:00:00.000Z"

G1 = [  # group g1: batches b3 and b5
    stateless_row("A", ["b3"], ["AMZN_US"], 1, utc(2024, 3, 5, 10), utc(2024, 3, 5, 10),
                  [stateless_total("USD", remittance=1000)]),
    stateless_row("B", ["b5"], ["AMZN_DE"], 1, utc(2024, 3, 6, 8, 30, 0, 250000), utc(2024, 3, 6, 8, 30, 0, 250000),
                  [stateless_total("EUR", correction=-10)]),
    stateless_row("C", ["b3"], ["AMZN_US"], 1, utc(2024, 3, 5, 10), utc(2024, 3, 5, 10),
                  [stateless_total("USD", receivable=1)]),
    stateless_row("D", ["b3"], ["AMZN_US"], 2, utc(2024, 3, 5, 10), utc(2024, 3, 5, 11),
                  [stateless_total("EUR", receivable=10), stateless_total("USD", receivable=500)]),
    stateless_row("F", ["b5"], ["AMZN_US"], 1, utc(2024, 3, 6, 12), utc(2024, 3, 6, 12),
                  [stateless_total("USD", remittance=50)]),
]  # fmt: skip
G2 = [  # group g2: batch b6
    stateless_row("D", ["b6"], ["AMZN_UK"], 5, utc(2024, 3, 5, 9, 59, 59), utc(2024, 3, 7),
                  [stateless_total("EUR", payable=7, royalty=3, amortization=2, remittance=10),
                   stateless_total("USD", remittance=600)]),
    stateless_row("E", ["b6"], ["AMZN_UK"], 1, utc(2024, 3, 7), utc(2024, 3, 7),
                  [stateless_total("GBP", correction=25)]),
]  # fmt: skip

PREFETCHED_7 = [
    artifact_line("A", 2, ["b1"], ["AMZN_US"], 1, T_MAR4, T_MAR4,
                  [artifact_total("USD", receivable=1000)], "OPEN", 5),
    artifact_line("B", 1, ["b1"], ["AMZN_DE"], 1, T_MAR4, T_MAR4,
                  [artifact_total("EUR", receivable=100)], "OPEN", 4),
    artifact_line("C", 4, ["b1", "b3"], ["AMZN_US"], 3, T_MAR4, T_MAR5,
                  [artifact_total("USD", receivable=1)], "OPEN", 5),
    artifact_line("F", 3, ["b1", "b2", "b4"], ["AMZN_US"], 3, T_MAR4, T_MAR5,
                  [artifact_total("USD", receivable=300, remittance=300)], "RECONCILED", 6),
]  # fmt: skip
# Written by run 6, not indexed yet when run 7 prefetched: B is newer here, F older, Z untouched.
INFLIGHT_6 = [
    artifact_line("B", 2, ["b1", "b4"], ["AMZN_DE"], 2, T_MAR4, T_MAR5,
                  [artifact_total("EUR", receivable=100, remittance=40)], "OPEN", 6),
    artifact_line("F", 2, ["b1", "b2"], ["AMZN_US"], 2, T_MAR4, T_MAR4,
                  [artifact_total("USD", receivable=300, remittance=250)], "OPEN", 6),
    artifact_line("Z", 9, ["b4"], ["AMZN_US"], 1, T_MAR5, T_MAR5,
                  [artifact_total("USD", receivable=9)], "OPEN", 6),
]  # fmt: skip

EXPECTED_7 = {
    "A": artifact_line("A", 3, ["b1", "b3"], ["AMZN_US"], 2, T_MAR4, T_MAR5,
                       [artifact_total("USD", receivable=1000, remittance=1000)], "RECONCILED", 7),
    "B": artifact_line("B", 3, ["b1", "b4", "b5"], ["AMZN_DE"], 3, T_MAR4, "2024-03-06T08:30:00.250Z",
                       [artifact_total("EUR", receivable=100, remittance=40, correction=-10)], "OPEN", 7),
    "D": artifact_line("D", 1, ["b3", "b6"], ["AMZN_UK", "AMZN_US"], 7, "2024-03-05T09:59:59.000Z",
                       "2024-03-07T00:00:00.000Z",
                       [artifact_total("EUR", receivable=10, payable=7, royalty=3, amortization=2, remittance=10),
                        artifact_total("USD", receivable=500, remittance=600)], "OVERPAID", 7),
    "E": artifact_line("E", 1, ["b6"], ["AMZN_UK"], 1, "2024-03-07T00:00:00.000Z", "2024-03-07T00:00:00.000Z",
                       [artifact_total("GBP", correction=25)], "OPEN", 7),
    "F": artifact_line("F", 4, ["b1", "b2", "b4", "b5"], ["AMZN_US"], 4, T_MAR4, "2024-03-06T12:00:00.000Z",
                       [artifact_total("USD", receivable=300, remittance=350)], "OVERPAID", 7),
}  # fmt: skip
STATS_7 = {
    "stateless_artifacts": 7,
    "artifacts_written": 5,
    "created": 2,
    "updated": 3,
    "already_applied": 1,
    "inflight_artifacts_used": 1,
    "prefetched_artifacts_used": 3,
    "statuses": {"OPEN": 2, "RECONCILED": 1, "OVERPAID": 2},
}


# -- helpers -------------------------------------------------------------------------------------------


def write_stateless(spark, work: Path, group: str, rows: list[dict]) -> str:
    from spark_jobs.common.recon_schema import STATELESS_SCHEMA

    output = work / "stateless" / group
    spark.createDataFrame(rows, STATELESS_SCHEMA).coalesce(1).write.parquet(str(output / "artifacts"))
    (output / "_stats.json").write_text(json.dumps({"artifacts": len(rows)}))
    return output.as_uri() + "/"


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def commit_state(state: Path, seq: int) -> None:
    """``_COMMITTED`` as the Airflow commit task writes it after a process run."""
    parts = sorted(state.glob("part-*"))
    committed = {
        "seq": seq,
        "part_files": [{"uri": part.as_uri(), "bytes": part.stat().st_size} for part in parts],
        "artifacts": sum(len(part.read_text().splitlines()) for part in parts),
    }
    (state / "_COMMITTED").write_text(json.dumps(committed))


def stateful_spec(work: Path, seq: int, stateless_uris: list[str], inflight: list[int], part_files=2) -> dict:
    return {
        "seq": seq,
        "run_id": f"run-{seq}",
        "groups": [uri.rstrip("/").rsplit("/", 1)[-1] for uri in stateless_uris],
        "stateless_uris": stateless_uris,
        "inflight_state_uris": [(work / "state" / f"{n:08d}").as_uri() + "/" for n in inflight],
        "state_uri": (work / "state" / f"{seq:08d}").as_uri() + "/",
        "output_uri": (work / "stateful" / f"{seq:08d}").as_uri() + "/",
        "index_table": "recon_index",
        "region": "us-east-1",
        "aws_endpoint_url": None,
        "prefetch": {"coalesce_gap_bytes": 65536, "max_range_bytes": 8388608, "threads": 16},
        "state_part_files": part_files,
    }


def state_files(state: Path) -> dict[str, list[str]]:
    """Part file name -> its lines, for the non-empty part files; every file ends with a newline."""
    files = {}
    for part in sorted(state.glob("part-*")):
        text = part.read_text(encoding="utf-8")
        if text:
            assert text.endswith("\n")
            files[part.name] = text.splitlines()
    return files


# -- tests ---------------------------------------------------------------------------------------------


def test_stateful_job_applies_stateless_artifacts_once(spark, tmp_path, capsys):
    from spark_jobs.recon_stateful import run

    storage = Storage()
    work = tmp_path / "work"
    g1 = write_stateless(spark, work, "g1", G1)
    g2 = write_stateless(spark, work, "g2", G2)
    write_lines(work / "state" / "00000006" / "part-00000-x.txt", INFLIGHT_6)
    commit_state(work / "state" / "00000006", 6)
    write_lines(work / "stateful" / "00000007" / "prefetched" / "part-00000", PREFETCHED_7)
    spec7 = stateful_spec(work, 7, [g1, g2], [6])
    state7 = work / "state" / "00000007"

    assert run(spark, spec7, storage) == STATS_7
    files = state_files(state7)
    assert 1 <= len(files) <= 2
    for lines in files.values():
        keys = [json.loads(line)["key"] for line in lines]
        assert keys == sorted(keys)
    written = {json.loads(line)["key"]: line for lines in files.values() for line in lines}
    assert written == EXPECTED_7
    assert (state7 / "_SUCCESS").exists()
    stats_path = work / "stateful" / "00000007" / "_process_stats.json"
    assert json.loads(stats_path.read_text()) == STATS_7

    # A retry after a crash (stats gone, a part file gone) writes the same state.
    stats_path.unlink()
    next(iter(state7.glob("part-*"))).unlink()
    assert run(spark, spec7, storage) == STATS_7
    assert sorted(line for lines in state_files(state7).values() for line in lines) == sorted(
        EXPECTED_7.values()
    )

    # Committed: a rerun returns the recorded stats and reads or writes nothing.
    commit_state(state7, 7)
    before = {path: path.stat().st_mtime_ns for path in state7.rglob("*")}
    capsys.readouterr()
    gone = stateful_spec(work, 7, [(tmp_path / "gone").as_uri() + "/"], [6])
    assert run(spark, gone, storage) == STATS_7
    assert "is committed" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in state7.rglob("*")} == before

    # Run 8 gets g1 again: its batches are in every base (in flight from run 7, C prefetched), so
    # nothing changes and no artifact is written.
    write_lines(work / "stateful" / "00000008" / "prefetched" / "part-00000", [PREFETCHED_7[2]])
    assert run(spark, stateful_spec(work, 8, [g1], [7]), storage) == {
        "stateless_artifacts": 5,
        "artifacts_written": 0,
        "created": 0,
        "updated": 0,
        "already_applied": 5,
        "inflight_artifacts_used": 4,
        "prefetched_artifacts_used": 1,
        "statuses": {"OPEN": 0, "RECONCILED": 0, "OVERPAID": 0},
    }
    assert state_files(work / "state" / "00000008") == {}
    assert (work / "state" / "00000008" / "_SUCCESS").exists()


def test_stateful_job_fails_on_a_partial_overlap(spark, tmp_path):
    from spark_jobs.recon_stateful import run

    work = tmp_path / "work"
    group = write_stateless(
        spark,
        work,
        "gp",
        [stateless_row("P", ["b2", "b3"], ["AMZN_US"], 2, utc(2024, 3, 5), utc(2024, 3, 5), [stateless_total("USD", receivable=5)])],
    )  # fmt: skip
    prefetched = artifact_line(
        "P", 1, ["b1", "b2"], ["AMZN_US"], 2, T_MAR4, T_MAR4, [artifact_total("USD", receivable=5)], "OPEN", 3
    )
    write_lines(work / "stateful" / "00000004" / "prefetched" / "part-00000", [prefetched])
    spec = stateful_spec(work, 4, [group], [])

    with pytest.raises(
        ValueError, match=r"partial overlap for key P: .* \[b2, b3\] but version 1 already holds \[b1, b2\]"
    ):
        run(spark, spec, Storage())
    assert not (work / "state" / "00000004").exists()
    assert not (work / "stateful" / "00000004" / "_process_stats.json").exists()


def test_stateful_job_requires_the_prefetch_output(spark, tmp_path):
    from spark_jobs.recon_stateful import run

    work = tmp_path / "work"
    group = write_stateless(spark, work, "gq", [])
    with pytest.raises(FileNotFoundError, match="prefetched"):
        run(spark, stateful_spec(work, 3, [group], []), Storage())


def test_apply_stateless_refuses_overflow_and_a_batch_in_two_groups(spark):
    from pyspark.sql import functions as F

    from spark_jobs.common.recon_schema import STATELESS_SCHEMA
    from spark_jobs.recon_stateful import apply_stateless, latest_base_state, parse_artifact_lines

    def artifacts(lines):
        return parse_artifact_lines(spark.createDataFrame([(line,) for line in lines], "value string"))

    near_max = 2**63 - 10
    base = latest_base_state(
        artifacts([artifact_line("X", 1, ["b1"], ["E"], 1, T_MAR4, T_MAR4, [artifact_total("USD", receivable=near_max)], "OPEN", 1)]),
        artifacts([]),
    )  # fmt: skip
    row = stateless_row("X", ["b2"], ["E"], 1, utc(2024, 3, 5), utc(2024, 3, 5), [stateless_total("USD", receivable=100)])  # fmt: skip
    stateless = spark.createDataFrame([row], STATELESS_SCHEMA).withColumn("group", F.lit("g1"))

    with pytest.raises(Exception, match="a total of key X overflows a 64-bit long"):
        apply_stateless(base, stateless, 2).collect()
    twice = stateless.unionByName(stateless.withColumn("group", F.lit("g2")))
    with pytest.raises(Exception, match="stateless groups share a batch for key X"):
        apply_stateless(base.limit(0), twice, 2).collect()
