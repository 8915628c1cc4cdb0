"""The stateless reconciliation job on local Spark: validation with reason codes, duplicates within a run
and across groups, the reduce to stateless artifacts, and reruns (committed: no-op; retry: same result)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spark_jobs.common.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.spark]

BASE_EVENT = {
    "event_id": "e-1",
    "artifact_key": "ORD-1",
    "entity": "AMZN_US",
    "event_type": "receivable",
    "amount": 1250,
    "currency": "USD",
    "event_time": "2024-03-05T10:03:12.123Z",
}


def event(**fields) -> str:
    """One event line: BASE_EVENT with ``fields`` replaced (a field set to ... is left out)."""
    body = {**BASE_EVENT, **fields}
    return json.dumps({name: value for name, value in body.items() if value is not ...})


def utc(*parts: int) -> datetime:
    """A UTC time as PySpark returns timestamps: naive, in the local zone of this process."""
    return datetime(*parts, tzinfo=UTC).astimezone().replace(tzinfo=None)


def ev(event_id, key, event_type, amount, currency, time, entity="AMZN_US") -> str:
    return event(
        event_id=event_id,
        artifact_key=key,
        entity=entity,
        event_type=event_type,
        amount=amount,
        currency=currency,
        event_time=time,
    )


# -- validation on the shared session ------------------------------------------------------------------

# (line, reason or None for a valid event)
CASES = [
    (event(), None),
    (event(event_type="correction", amount=-1), None),
    (event(amount=0, event_time="2024-03-05T10:03:12Z"), None),
    (event(amount=10**15 - 1), None),
    ("nope", "not_json"),
    ("[1, 2]", "not_json"),
    (f"[{event()}]", "not_json"),
    ("42", "not_json"),
    ('"text"', "not_json"),
    ("null", "not_json"),
    ("", "not_json"),
    ('{"event_id": "e-1"', "not_json"),
    (event() + " trailing", "not_json"),
    *((event(**{name: ...}), f"missing_{name}") for name in BASE_EVENT),
    (event(event_id=""), "missing_event_id"),
    (event(amount=None), "missing_amount"),
    # The first failing check wins: a missing field is named before a bad amount.
    (event(currency=..., amount="x"), "missing_currency"),
    (event(event_type="refund"), "unknown_event_type"),
    (event(event_type="Receivable"), "unknown_event_type"),
    (event(amount="12"), "amount_not_integer"),
    (event(amount=12.5), "amount_not_integer"),
    (event(amount=1e3), "amount_not_integer"),
    (event(amount=10**15), "amount_not_integer"),
    (event(amount=-1), "negative_amount"),
    (event(event_type="remittance", amount=-7), "negative_amount"),
    (event(currency="usd"), "bad_currency"),
    (event(currency="US"), "bad_currency"),
    (event(currency="USDX"), "bad_currency"),
    (event(currency=840), "bad_currency"),
    (event(event_time="2024-02-30T00:00:00Z"), "bad_event_time"),
    (event(event_time="2024-03-05T10:00:00+01:00"), "bad_event_time"),
    (event(event_time="2024-03-05 10:00:00Z"), "bad_event_time"),
    (event(event_time="yesterday"), "bad_event_time"),
]


def test_validate_events_names_the_first_failing_check(spark):
    from spark_jobs.common.recon_schema import REASON_CODES
    from spark_jobs.recon_stateless import classify_events

    lines = spark.createDataFrame(
        [("b1", "f", line) for line, _ in CASES], "batch_id string, file string, raw string"
    )
    rows = {row["raw"]: row for row in classify_events(lines).collect()}

    assert {raw: row["reason"] for raw, row in rows.items()} == {line: reason for line, reason in CASES}
    assert {reason for _, reason in CASES} - {None} == set(REASON_CODES)
    signed = rows[event(event_type="correction", amount=-1)]
    assert (signed["amount"], signed["event_time"], signed["event_date"]) == (
        -1,
        utc(2024, 3, 5, 10, 3, 12, 123000),
        "2024-03-05",
    )
    assert rows[event(amount=10**15 - 1)]["amount"] == 10**15 - 1


# -- the job end to end --------------------------------------------------------------------------------

G0_FILES = {
    "b0/part-00000.jsonl": [
        ev("e-old1", "K3", "receivable", 500, "USD", "2024-03-05T09:00:00.000Z"),
        ev("e-old2", "K3", "receivable", 1, "USD", "2024-03-01T00:00:00.000Z"),
    ]
}
DUPLICATE_E3 = ev("e3", "K1", "receivable", 999, "EUR", "2024-03-05T10:00:03.000Z", "AMZN_DE")
G1_FILES = {
    "b1/part-00000.jsonl": [
        ev("e1", "K1", "receivable", 1000, "USD", "2024-03-05T10:00:01.000Z"),
        ev("e2", "K1", "remittance", 400, "USD", "2024-03-05T10:00:02.500Z"),
        ev("e3", "K1", "receivable", 250, "EUR", "2024-03-05T10:00:03.000Z", "AMZN_DE"),
        "not json at all",
        ev("e4", "K2", "payable", 70, "GBP", "2024-03-06T00:00:00.000Z", "AMZN_UK"),
    ],
    "b1/part-00001.jsonl": [
        ev("e5", "K2", "correction", -30, "GBP", "2024-03-06T00:00:01.000Z", "AMZN_UK"),
        ev("e1", "K1", "receivable", 1000, "USD", "2024-03-05T10:00:01.000Z"),  # redelivered in the run
        ev("e8", "K2", "receivable", -5, "GBP", "2024-03-06T00:00:02.000Z", "AMZN_UK"),
    ],
    "b2/part-00000.jsonl": [
        ev("e6", "K1", "correction", 15, "USD", "2024-03-05T11:00:00.000Z"),
        DUPLICATE_E3,  # same id as b1's e3: the copy of the lower batch id is kept
        ev("e-old1", "K3", "receivable", 500, "USD", "2024-03-05T09:00:00.000Z"),  # applied by g0
        ev("e7", "K3", "royalty", 5, "USD", "2024-03-05T12:00:00.000Z"),
        ev("e9", "K3", "amortization", 3, "usd", "2024-03-05T12:00:01.000Z"),
    ],
}
G1_STATS = {
    "input_rows": 13,
    "valid_rows": 10,
    "quarantined": {"not_json": 1, "negative_amount": 1, "bad_currency": 1},
    "quarantined_rows": 3,
    "duplicates_in_run": 2,
    "duplicates_seen_before": 1,
    "events_applied": 7,
    "artifacts": 3,
}


def total(currency, **amounts) -> dict:
    kinds = ("receivable", "payable", "royalty", "amortization", "remittance", "correction")
    return {"currency": currency, **{kind: amounts.get(kind, 0) for kind in kinds}}


G1_ARTIFACTS = {
    "K1": {
        "batches": ["b1", "b2"],
        "event_count": 4,
        "first_event_time": utc(2024, 3, 5, 10, 0, 1),
        "last_event_time": utc(2024, 3, 5, 11, 0, 0),
        "entities": ["AMZN_DE", "AMZN_US"],
        "totals": [
            total("EUR", receivable=250),
            total("USD", receivable=1000, remittance=400, correction=15),
        ],
    },
    "K2": {
        "batches": ["b1"],
        "event_count": 2,
        "first_event_time": utc(2024, 3, 6, 0, 0, 0),
        "last_event_time": utc(2024, 3, 6, 0, 0, 1),
        "entities": ["AMZN_UK"],
        "totals": [total("GBP", payable=70, correction=-30)],
    },
    "K3": {
        "batches": ["b2"],
        "event_count": 1,
        "first_event_time": utc(2024, 3, 5, 12, 0, 0),
        "last_event_time": utc(2024, 3, 5, 12, 0, 0),
        "entities": ["AMZN_US"],
        "totals": [total("USD", royalty=5)],
    },
}
G1_SEEN = {
    ("e1", "2024-03-05"),
    ("e2", "2024-03-05"),
    ("e3", "2024-03-05"),
    ("e6", "2024-03-05"),
    ("e7", "2024-03-05"),
    ("e4", "2024-03-06"),
    ("e5", "2024-03-06"),
}


def land(landing: Path, files: dict[str, list[str]]) -> list[dict]:
    """Write the batch files; the spec's ``batches`` (files in name order)."""
    batches: dict[str, list[str]] = {}
    for name, lines in sorted(files.items()):
        path = landing / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        batches.setdefault(path.parent.name, []).append(path.as_uri())
    return [{"batch_id": batch_id, "files": uris} for batch_id, uris in batches.items()]


def spec_for(work: Path, group_id: str, batches: list[dict], dedup: list[str]) -> dict:
    return {
        "group_id": group_id,
        "batches": batches,
        "dedup_group_uris": [(work / "stateless" / group).as_uri() + "/" for group in dedup],
        "output_uri": (work / "stateless" / group_id).as_uri() + "/",
    }


def read_outputs(spark, output: Path) -> dict:
    from spark_jobs.common.recon_schema import SEEN_SCHEMA

    artifacts = {
        row["key"]: {name: row[name] for name in row.asDict() if name != "key"}
        for row in spark.read.parquet(str(output / "artifacts")).collect()
    }
    for artifact in artifacts.values():
        artifact["totals"] = [t.asDict() for t in artifact["totals"]]
    quarantine = [
        json.loads(line)
        for part in sorted((output / "quarantine").glob("part-*.json"))
        for line in part.read_text().splitlines()
    ]
    seen = {
        (row["event_id"], row["event_date"])
        for row in spark.read.schema(SEEN_SCHEMA).parquet(str(output / "seen")).collect()
    }
    return {
        "artifacts": artifacts,
        "touched_keys": sorted(
            row["key"] for row in spark.read.parquet(str(output / "touched_keys")).collect()
        ),
        "quarantine": sorted(
            (q["batch_id"], Path(q["file"]).name, q["raw"], q["reason"]) for q in quarantine
        ),
        "seen": seen,
        "stats": json.loads((output / "_stats.json").read_text()),
    }


def id_buckets(spark, event_ids) -> dict[str, int]:
    """The seen/ bucket of each id, by the documented rule: pmod(xxhash64(id), 8)."""
    return {
        event_id: spark.sql(f"SELECT pmod(xxhash64('{event_id}'), 8) AS b").first()["b"]
        for event_id in event_ids
    }


def seen_folders(seen: Path) -> dict[str, set[str]]:
    """Each partition folder of a seen/ and the ids its Parquet files hold (read file by file)."""
    import pyarrow.parquet as pq

    return {
        folder.name: {
            event_id
            for part in folder.glob("*.parquet")
            for event_id in pq.read_table(part)["event_id"].to_pylist()
        }
        for folder in sorted(seen.iterdir())
        if folder.is_dir()
    }


def test_stateless_job_reduces_dedups_quarantines_and_reruns_safely(spark, tmp_path, capsys):
    from spark_jobs.recon_stateless import run

    storage = Storage()
    work = tmp_path / "work"
    g0 = spec_for(work, "g0", land(tmp_path / "landing", G0_FILES), [])
    assert run(spark, g0, storage)["events_applied"] == 2

    # g1 reads only the folders of g0's seen/ whose bucket one of its valid ids falls in.
    g1_valid_ids = {"e1", "e2", "e3", "e4", "e5", "e6", "e7", "e-old1"}
    g0_buckets = set(id_buckets(spark, ["e-old1", "e-old2"]).values())
    g1_stats = {
        **G1_STATS,
        "seen_folders_read": len(g0_buckets & set(id_buckets(spark, g1_valid_ids).values())),
    }
    g1 = spec_for(work, "g1", land(tmp_path / "landing", G1_FILES), ["g0"])
    assert run(spark, g1, storage) == g1_stats
    output = work / "stateless" / "g1"
    got = read_outputs(spark, output)
    assert got["artifacts"] == G1_ARTIFACTS
    assert got["touched_keys"] == ["K1", "K2", "K3"]
    assert got["seen"] == G1_SEEN
    assert got["stats"] == g1_stats
    # seen/ holds each applied id once, in the folder of its bucket (one file a folder).
    applied = {event_id for event_id, _ in G1_SEEN}
    buckets = id_buckets(spark, applied)
    assert seen_folders(output / "seen") == {
        f"id_bucket={bucket}": {i for i in applied if buckets[i] == bucket}
        for bucket in set(buckets.values())
    }
    assert all(len(list(folder.glob("*.parquet"))) == 1 for folder in (output / "seen").glob("id_bucket=*"))
    assert got["quarantine"] == [
        ("b1", "part-00000.jsonl", "not json at all", "not_json"),
        ("b1", "part-00001.jsonl", G1_FILES["b1/part-00001.jsonl"][2], "negative_amount"),
        ("b2", "part-00000.jsonl", G1_FILES["b2/part-00000.jsonl"][4], "bad_currency"),
    ]

    # A retry after a crash (no _stats.json, half the output gone) rewrites the same output.
    (output / "_stats.json").unlink()
    for part in (output / "artifacts").glob("part-*"):
        part.unlink()
    assert run(spark, g1, storage) == g1_stats
    assert read_outputs(spark, output) == got

    # Committed: a rerun returns the recorded stats and touches nothing (its batches are not even read).
    (output / "_COMMITTED").write_text("{}")
    before = {path: path.stat().st_mtime_ns for path in output.rglob("*")}
    capsys.readouterr()
    rerun = {**g1, "batches": [{"batch_id": "gone", "files": [(tmp_path / "gone.jsonl").as_uri()]}]}
    assert run(spark, rerun, storage) == g1_stats
    assert "is committed" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in output.rglob("*")} == before


def test_stateless_job_refuses_a_dedup_group_without_seen(spark, tmp_path):
    from spark_jobs.recon_stateless import run

    spec = spec_for(tmp_path / "work", "g2", land(tmp_path / "landing", G0_FILES), ["never-ran"])
    with pytest.raises(FileNotFoundError, match="never-ran"):
        run(spark, spec, Storage())
    assert not (tmp_path / "work" / "stateless" / "g2").exists()


def test_seen_folders_to_read_for_each_layout(tmp_path):
    from spark_jobs.recon_stateless import folders_to_read, seen_partitions

    seen = tmp_path / "g" / "seen"
    for name in ("id_bucket=3/part-0.parquet", "_SUCCESS", "id_bucket=3_$folder$"):
        (seen / name).parent.mkdir(parents=True, exist_ok=True)
        (seen / name).write_bytes(b"")
    group = (tmp_path / "g").as_uri() + "/"
    assert seen_partitions(Storage(), [group]) == {group: ["id_bucket=3"]}

    buckets = ["id_bucket=0", "id_bucket=3", "id_bucket=7"]
    assert folders_to_read(buckets, {3, 5}) == ["id_bucket=3"]
    assert folders_to_read(buckets, set()) == []
    # The layout before the buckets: an id may sit under any event date, so every folder is read.
    dates = ["event_date=2024-02-20", "event_date=2024-03-05"]
    assert folders_to_read(dates, {3}) == dates
    with pytest.raises(ValueError, match="more than one layout"):
        folders_to_read([*buckets, *dates], {3})
    with pytest.raises(ValueError, match="none known"):
        folders_to_read(["region=eu"], {3})
