"""The reconciliation ledger against the moto server: registration, claims, commits, stateful runs, status."""

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from dataplatform.reconciliation import ledger
from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
from spark_jobs.common.storage import Storage
from tests.moto_helpers import AtomicWrites, ResendingClient

pytestmark = pytest.mark.integration

TABLE = "recon_ledger_it"
START = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
NOW = datetime(2024, 3, 5, 14, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=120)
TINY = GeneratorConfig(seed=5, n_keys=10, events_per_batch=4, files_per_batch=1)


@pytest.fixture
def dynamodb(aws):
    client = aws.client("dynamodb")
    ledger.create_ledger_table(client, TABLE)
    return client


@pytest.fixture
def landing(tmp_path):
    return f"file://{tmp_path}/landing/"


def land(landing, batches, first_index=0):
    """Tiny batches 10 minutes apart from START; returns their ids."""
    manifests = write_batches(Storage(), landing, TINY, batches=batches, start=START, first_index=first_index)
    return [manifest["batch_id"] for manifest in manifests]


def item(dynamodb, pk):
    return ledger._get(dynamodb, TABLE, pk)


def batch_ids(batches):
    return [batch["batch_id"] for batch in batches]


def committed_group(dynamodb, group_id, limit, now=NOW):
    claimed = ledger.claim_batches(dynamodb, TABLE, group_id, limit, now, TIMEOUT)
    ledger.commit_group(dynamodb, TABLE, group_id, {"input_rows": 4 * len(claimed)}, now)
    return batch_ids(claimed)


# -- table and registration --------------------------------------------------------------------------------


def test_table_is_created_once_with_the_state_index(aws):
    client = aws.client("dynamodb")
    assert ledger.create_ledger_table(client, TABLE) is True
    assert ledger.create_ledger_table(client, TABLE) is False
    table = client.describe_table(TableName=TABLE)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_state"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["state_key", "pk"]


def test_batches_are_registered_once(dynamodb, landing):
    ids = land(landing, 3)
    storage = Storage()

    first = ledger.register_batches(dynamodb, TABLE, storage, landing, NOW)
    again = ledger.register_batches(dynamodb, TABLE, storage, landing, NOW + timedelta(minutes=5))

    assert first == {"registered": ids, "invalid": [], "already_known": 0}
    assert again == {"registered": [], "invalid": [], "already_known": 3}
    registered = item(dynamodb, f"batch#{ids[0]}")
    manifest = json.loads(storage.read_bytes(f"{landing}{ids[0]}/_manifest.json"))
    assert registered == {
        "pk": "batch#20240305T1000",
        "kind": "batch",
        "batch_id": "20240305T1000",
        "state": "PENDING",
        "state_key": "batch#PENDING",
        "window_start": "2024-03-05T10:00:00Z",
        "window_end": "2024-03-05T10:10:00Z",
        "rows": 4,
        "sha256": manifest["sha256"],
        "manifest_uri": f"{landing}20240305T1000/_manifest.json",
        "files": [f"{landing}20240305T1000/part-00000.jsonl"],
        "registered_at": "2024-03-05T14:00:00.000000Z",
    }
    assert ledger.count_by_state(dynamodb, TABLE)["PENDING"] == 3


def test_invalid_manifests_are_marked_with_the_reason_and_unfinished_batches_wait(
    dynamodb, landing, tmp_path
):
    land(landing, 4)
    root = tmp_path / "landing"

    def edit(batch_id, **changes):
        path = root / batch_id / "_manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    edit("20240305T1000", sha256="0" * 64)
    edit("20240305T1010", rows=5)
    (root / "20240305T1020" / "part-00000.jsonl").unlink()
    unfinished = root / "20240305T1030" / "_manifest.json"
    manifest_text = unfinished.read_text()
    unfinished.unlink()  # still being written: part file there, manifest not yet

    result = ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)

    reasons = {bad["batch_id"]: bad["reason"] for bad in result["invalid"]}
    assert result["registered"] == []
    assert set(reasons) == {"20240305T1000", "20240305T1010", "20240305T1020"}
    assert reasons["20240305T1000"].startswith("sha256 mismatch")
    assert reasons["20240305T1010"] == "manifest says 5 rows, the files hold 4"
    assert reasons["20240305T1020"] == "file part-00000.jsonl listed in the manifest is missing"
    for batch_id, reason in reasons.items():
        stored = item(dynamodb, f"batch#{batch_id}")
        assert (stored["state"], stored["state_key"], stored["reason"]) == (
            "INVALID",
            "batch#INVALID",
            reason,
        )
    assert item(dynamodb, "batch#20240305T1030") is None
    counts = ledger.count_by_state(dynamodb, TABLE)
    assert (counts["INVALID"], counts["PENDING"]) == (3, 0)

    unfinished.write_text(manifest_text)  # the producer finishes the batch
    later = ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    assert later == {"registered": ["20240305T1030"], "invalid": [], "already_known": 3}


def test_a_folder_named_unlike_its_manifest_is_invalid_until_an_operator_acknowledges_it(
    dynamodb, landing, tmp_path
):
    land(landing, 3)
    root = tmp_path / "landing"
    (root / "20240305T1010").rename(root / "20240305T1015")  # the manifest still says 20240305T1010

    registered = ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)

    reason = "manifest batch_id '20240305T1010' does not match its folder"
    assert registered["invalid"] == [{"batch_id": "20240305T1015", "reason": reason}]
    before = ledger.status(dynamodb, TABLE, 60, NOW)
    assert before.invalid == [{"batch_id": "20240305T1015", "reason": reason}]
    assert f"INVALID batch 20240305T1015: {reason}" in ledger.format_status(before)

    assert ledger.acknowledge_invalid(dynamodb, TABLE, "20240305T1015", NOW) is True

    stored = item(dynamodb, "batch#20240305T1015")
    assert (stored["state"], stored["state_key"], stored["reason"], stored["acknowledged_at"]) == (
        "INVALID_ACKNOWLEDGED",
        "batch#INVALID_ACKNOWLEDGED",
        reason,
        "2024-03-05T14:00:00.000000Z",
    )
    after = ledger.status(dynamodb, TABLE, 60, NOW)
    assert after.invalid == []
    assert (after.batches["INVALID"], after.batches["INVALID_ACKNOWLEDGED"], after.backlog) == (0, 1, 2)
    assert "20240305T1015" not in ledger.format_status(after)

    # Again: nothing changes (the first acknowledgement's time stays); the folder is not registered anew.
    assert ledger.acknowledge_invalid(dynamodb, TABLE, "20240305T1015", NOW + TIMEOUT) is False
    assert item(dynamodb, "batch#20240305T1015") == stored
    rescan = ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW + TIMEOUT)
    assert rescan == {"registered": [], "invalid": [], "already_known": 3}


def test_only_an_invalid_batch_can_be_acknowledged(dynamodb, landing):
    [pending] = land(landing, 1)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    stored = item(dynamodb, f"batch#{pending}")

    with pytest.raises(ledger.LedgerConflict, match=f"batch {pending} is PENDING: only an INVALID batch"):
        ledger.acknowledge_invalid(dynamodb, TABLE, pending, NOW)
    with pytest.raises(ledger.LedgerConflict, match="batch nope is not in the ledger"):
        ledger.acknowledge_invalid(dynamodb, TABLE, "nope", NOW)

    assert item(dynamodb, f"batch#{pending}") == stored
    assert item(dynamodb, "batch#nope") is None


def test_concurrent_acknowledgements_acknowledge_once(dynamodb, landing, tmp_path):
    land(landing, 1)
    (tmp_path / "landing" / "20240305T1000" / "_manifest.json").write_text("{")
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    atomic = AtomicWrites(dynamodb)
    results = []

    def acknowledge(minute):
        results.append(
            ledger.acknowledge_invalid(atomic, TABLE, "20240305T1000", NOW + timedelta(minutes=minute))
        )

    threads = [threading.Thread(target=acknowledge, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False] * 5 + [True]
    assert item(dynamodb, "batch#20240305T1000")["state"] == "INVALID_ACKNOWLEDGED"


# -- claims --------------------------------------------------------------------------------------------------


def test_claim_takes_the_oldest_batches_and_records_the_group(dynamodb, landing):
    ids = land(landing, 5)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)

    claimed = ledger.claim_batches(dynamodb, TABLE, "g1", 2, NOW, TIMEOUT)

    assert batch_ids(claimed) == ids[:2]
    assert claimed[0]["files"] == [f"{landing}{ids[0]}/part-00000.jsonl"]
    assert claimed[0]["window_start"] == "2024-03-05T10:00:00Z"
    group = item(dynamodb, "group#g1")
    assert (group["state"], group["batches"]) == ("CLAIMING", ids[:2])
    assert [item(dynamodb, f"batch#{i}")["group_id"] for i in ids[:2]] == ["g1", "g1"]
    counts = ledger.count_by_state(dynamodb, TABLE)
    assert (counts["PENDING"], counts["CLAIMED"]) == (3, 2)


def test_claim_retry_returns_the_same_batches_and_claims_nothing_more(dynamodb, landing):
    ids = land(landing, 3)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    first = ledger.claim_batches(dynamodb, TABLE, "g1", 2, NOW, TIMEOUT)
    land(landing, 2, first_index=3)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)

    retry = ledger.claim_batches(dynamodb, TABLE, "g1", 10, NOW + timedelta(minutes=1), TIMEOUT)

    assert batch_ids(retry) == batch_ids(first) == ids[:2]
    assert ledger.count_by_state(dynamodb, TABLE)["PENDING"] == 3


def test_a_resent_group_record_is_not_taken_for_a_concurrent_claim(dynamodb, landing):
    """Found by make chaos (read_timeout): the group's conditional put, resent after its first send had
    landed, failed on its own item and the claim raised LedgerConflict."""
    ids = land(landing, 3)
    ledger.register_batches(ResendingClient(dynamodb, "put_item"), TABLE, Storage(), landing, NOW)
    assert ledger.count_by_state(dynamodb, TABLE)["PENDING"] == 3

    claimed = ledger.claim_batches(ResendingClient(dynamodb, "put_item"), TABLE, "g1", 2, NOW, TIMEOUT)

    assert batch_ids(claimed) == ids[:2]
    assert item(dynamodb, "group#g1")["batches"] == ids[:2]


def test_claim_that_died_before_recording_its_group_is_found_again(dynamodb, landing):
    ids = land(landing, 4)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)

    class DiesBeforeGroupIsRecorded(AtomicWrites):
        def put_item(self, **kwargs):
            if kwargs["Item"]["pk"]["S"].startswith("group#"):
                raise ConnectionError("worker died")
            return self._client.put_item(**kwargs)

    with pytest.raises(ConnectionError):
        ledger.claim_batches(DiesBeforeGroupIsRecorded(dynamodb), TABLE, "g1", 2, NOW, TIMEOUT)
    assert item(dynamodb, "group#g1") is None

    retry = ledger.claim_batches(dynamodb, TABLE, "g1", 2, NOW, TIMEOUT)

    assert batch_ids(retry) == ids[:2]
    assert item(dynamodb, "group#g1")["batches"] == ids[:2]
    assert ledger.count_by_state(dynamodb, TABLE)["CLAIMED"] == 2


def test_racing_claimers_never_share_a_batch_and_together_claim_all(dynamodb, landing):
    ids = land(landing, 40)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    client = AtomicWrites(dynamodb)
    start = threading.Barrier(4)
    results: dict[str, list[str]] = {}

    def claimer(group_id):
        start.wait()
        results[group_id] = batch_ids(ledger.claim_batches(client, TABLE, group_id, 12, NOW, TIMEOUT))

    threads = [threading.Thread(target=claimer, args=(f"g{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [batch_id for claimed in results.values() for batch_id in claimed]
    assert sorted(everything) == ids  # all claimed, none twice
    assert all(len(claimed) <= 12 for claimed in results.values())
    for group_id, claimed in results.items():
        assert item(dynamodb, f"group#{group_id}")["batches"] == claimed
        assert {item(dynamodb, f"batch#{b}")["group_id"] for b in claimed} <= {group_id}


def test_a_stale_claim_is_taken_over_and_the_dead_group_cannot_commit(dynamodb, landing):
    ids = land(landing, 2)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    ledger.claim_batches(dynamodb, TABLE, "dead", 5, NOW, TIMEOUT)

    too_early = ledger.claim_batches(dynamodb, TABLE, "g2", 5, NOW + TIMEOUT - timedelta(minutes=1), TIMEOUT)
    taken = ledger.claim_batches(dynamodb, TABLE, "g3", 5, NOW + TIMEOUT + timedelta(minutes=1), TIMEOUT)

    assert too_early == []
    assert item(dynamodb, "group#g2") is None  # nothing claimed: no group recorded
    assert batch_ids(taken) == ids
    assert {(b["group_id"], b["taken_over_from"]) for b in taken} == {("g3", "dead")}
    with pytest.raises(ledger.LedgerConflict, match="batch 20240305T1000 is CLAIMED for group g3"):
        ledger.commit_group(dynamodb, TABLE, "dead", {}, NOW + TIMEOUT)
    with pytest.raises(ledger.LedgerConflict, match="taken over by group g3"):
        ledger.claim_batches(dynamodb, TABLE, "dead", 5, NOW + TIMEOUT, TIMEOUT)
    assert ledger.commit_group(dynamodb, TABLE, "g3", {}, NOW + TIMEOUT)["state"] == "READY"
    assert {item(dynamodb, f"batch#{b}")["state"] for b in ids} == {"STATELESS_DONE"}


# -- commits -------------------------------------------------------------------------------------------------


def test_commit_marks_the_group_ready_once_and_it_joins_the_dedup_horizon(dynamodb, landing):
    ids = land(landing, 3)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    ledger.claim_batches(dynamodb, TABLE, "g1", 2, NOW, TIMEOUT)
    stats = {"input_rows": 8, "quarantined": {"not_json": 1}, "ratio": 0.25}

    first = ledger.commit_group(dynamodb, TABLE, "g1", stats, NOW)
    rerun = ledger.commit_group(dynamodb, TABLE, "g1", {"input_rows": 999}, NOW + timedelta(hours=1))

    assert first == {"group_id": "g1", "state": "READY", "batches": ids[:2], "already_committed": False}
    assert rerun == {**first, "already_committed": True}
    group = item(dynamodb, "group#g1")
    assert (group["state"], group["stats"], group["committed_at"]) == (
        "READY",
        stats,
        "2024-03-05T14:00:00.000000Z",
    )
    assert [item(dynamodb, f"batch#{b}")["state"] for b in ids] == [
        "STATELESS_DONE",
        "STATELESS_DONE",
        "PENDING",
    ]
    assert ledger.dedup_group_ids(dynamodb, TABLE, NOW + timedelta(days=6), 7) == ["g1"]
    assert ledger.dedup_group_ids(dynamodb, TABLE, NOW + timedelta(days=8), 7) == []
    with pytest.raises(ledger.LedgerError, match="group nope is not in the ledger"):
        ledger.commit_group(dynamodb, TABLE, "nope", {}, NOW)


# -- stateful runs -------------------------------------------------------------------------------------------


def test_begin_without_ready_groups_takes_no_seq(dynamodb, landing):
    land(landing, 1)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    ledger.claim_batches(dynamodb, TABLE, "g1", 1, NOW, TIMEOUT)  # claimed, not committed: not READY

    assert ledger.begin_stateful_run(dynamodb, TABLE, "run-1", NOW) is None
    with pytest.raises(ValueError, match="max_groups"):
        ledger.begin_stateful_run(dynamodb, TABLE, "run-1", NOW, max_groups=0)
    assert item(dynamodb, "counter#stateful") is None
    assert item(dynamodb, "stateful_run#run-1") is None
    assert ledger.highest_indexed_seq(dynamodb, TABLE) == 0


def test_begin_claims_ready_groups_and_a_retry_returns_the_same_run(dynamodb, landing):
    land(landing, 4)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    committed_group(dynamodb, "g1", 1)
    committed_group(dynamodb, "g2", 1, NOW + timedelta(minutes=1))

    run = ledger.begin_stateful_run(dynamodb, TABLE, "run-1", NOW)
    committed_group(dynamodb, "g3", 1)
    retry = ledger.begin_stateful_run(dynamodb, TABLE, "run-1", NOW + timedelta(minutes=5))

    assert (run.seq, run.groups, run.watermark, run.inflight_seqs, run.resumed) == (
        1,
        ("g1", "g2"),
        0,
        [],
        False,
    )
    assert (retry.seq, retry.groups, retry.resumed) == (1, ("g1", "g2"), True)
    assert item(dynamodb, "group#g3")["state"] == "READY"  # the retry claimed nothing more
    for group_id in ("g1", "g2"):
        group = item(dynamodb, f"group#{group_id}")
        assert (group["state"], group["claimed_by_seq"]) == ("CLAIMED", 1)
    stored = item(dynamodb, "stateful#00000001")
    assert (stored["state"], stored["run_id"], stored["groups"], stored["watermark"]) == (
        "BEGUN",
        "run-1",
        ["g1", "g2"],
        0,
    )
    assert item(dynamodb, "stateful_run#run-1")["seq"] == 1
    assert item(dynamodb, "counter#stateful")["value"] == 1

    second = ledger.begin_stateful_run(dynamodb, TABLE, "run-2", NOW)
    assert (second.seq, second.groups, second.watermark, second.inflight_seqs) == (2, ("g3",), 0, [1])


def test_concurrent_begins_take_distinct_contiguous_seqs_and_each_group_once(dynamodb, landing):
    land(landing, 12)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    groups = [f"g{n:02d}" for n in range(12)]
    for group_id in groups:
        committed_group(dynamodb, group_id, 1)
    client = AtomicWrites(dynamodb)
    start = threading.Barrier(4)
    runs: list[ledger.StatefulRun] = []
    errors: list[BaseException] = []

    def beginner(worker):
        start.wait()
        try:
            for attempt in range(20):
                run = ledger.begin_stateful_run(client, TABLE, f"run-{worker}-{attempt}", NOW, max_groups=2)
                if run is None:
                    return
                runs.append(run)
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=beginner, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(run.seq for run in runs) == list(range(1, len(runs) + 1))
    claimed = [group_id for run in runs for group_id in run.groups]
    assert sorted(claimed) == groups  # every group, each in exactly one run
    for run in runs:
        assert 1 <= len(run.groups) <= 2
        assert {item(dynamodb, f"group#{g}")["claimed_by_seq"] for g in run.groups} == {run.seq}
        assert item(dynamodb, f"stateful#{run.seq:08d}")["run_id"] == run.run_id
    assert item(dynamodb, "counter#stateful")["value"] == len(runs)


def test_processed_then_indexed_moves_batches_groups_and_runs_and_sets_the_watermark(dynamodb, landing):
    ids = land(landing, 3)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    committed_group(dynamodb, "g1", 2)
    run1 = ledger.begin_stateful_run(dynamodb, TABLE, "run-1", NOW)
    with pytest.raises(ledger.LedgerError, match="stateful run 1 is BEGUN: it must be PROCESSED"):
        ledger.mark_indexed(dynamodb, TABLE, 1, {})

    parts = ["file:///work/state/00000001/part-00000.txt"]
    ledger.mark_processed(dynamodb, TABLE, run1.seq, parts, {"artifacts_written": 5}, NOW)
    assert ledger.mark_processed(dynamodb, TABLE, run1.seq, ["other"], {}, NOW)["already"] is True

    assert ledger.run_state(dynamodb, TABLE, 1) == "PROCESSED"
    assert item(dynamodb, "stateful#00000001")["part_files"] == parts
    batch = item(dynamodb, f"batch#{ids[0]}")
    assert (batch["state"], batch["stateful_seq"]) == ("STATEFUL_DONE", 1)
    assert ledger.highest_indexed_seq(dynamodb, TABLE) == 0

    ledger.mark_indexed(dynamodb, TABLE, 1, {"written": 5}, NOW)
    assert ledger.mark_indexed(dynamodb, TABLE, 1, {"written": 0}, NOW)["already"] is True

    assert ledger.run_state(dynamodb, TABLE, 1) == "INDEXED"
    assert item(dynamodb, "stateful#00000001")["indexed_stats"] == {"written": 5}
    assert [item(dynamodb, f"batch#{b}")["state"] for b in ids] == ["INDEXED", "INDEXED", "PENDING"]
    assert item(dynamodb, "group#g1")["state"] == "APPLIED"
    assert ledger.highest_indexed_seq(dynamodb, TABLE) == 1
    assert ledger.run_state(dynamodb, TABLE, 9) is None

    committed_group(dynamodb, "g2", 1)
    run2 = ledger.begin_stateful_run(dynamodb, TABLE, "run-2", NOW)
    assert (run2.seq, run2.watermark, run2.inflight_seqs) == (2, 1, [])
    assert ledger.dedup_group_ids(dynamodb, TABLE, NOW, 7) == ["g1", "g2"]  # APPLIED and CLAIMED groups


def test_watermark_stops_at_the_first_run_not_indexed(dynamodb, landing):
    land(landing, 3)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    seqs = []
    for n in range(3):
        committed_group(dynamodb, f"g{n}", 1)
        seqs.append(ledger.begin_stateful_run(dynamodb, TABLE, f"run-{n}", NOW).seq)
    for seq in (1, 3):  # run 2 is still in flight (out of order by hand)
        ledger.mark_processed(dynamodb, TABLE, seq, [], {}, NOW)
        ledger.mark_indexed(dynamodb, TABLE, seq, {}, NOW)

    assert seqs == [1, 2, 3]
    assert ledger.highest_indexed_seq(dynamodb, TABLE) == 3
    assert ledger.index_watermark(dynamodb, TABLE) == 1


# -- status --------------------------------------------------------------------------------------------------


def run_everything(dynamodb, group_id, limit, run_id, now=NOW):
    committed_group(dynamodb, group_id, limit, now)
    run = ledger.begin_stateful_run(dynamodb, TABLE, run_id, now)
    ledger.mark_processed(dynamodb, TABLE, run.seq, [], {}, now)
    ledger.mark_indexed(dynamodb, TABLE, run.seq, {}, now)


def test_status_complete_windows(dynamodb, landing):
    land(landing, 12)  # 10:00 .. 12:00 in 10-minute batches
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    run_everything(dynamodb, "g1", 12, "run-1")

    status = ledger.status(dynamodb, TABLE, 60, NOW)

    assert status.complete_through == datetime(2024, 3, 5, 12, 0, tzinfo=UTC)
    assert status.latest_complete_window == (
        datetime(2024, 3, 5, 11, tzinfo=UTC),
        datetime(2024, 3, 5, 12, tzinfo=UTC),
    )
    assert status.first_incomplete_window is None
    assert (status.backlog, status.batches["INDEXED"], status.runs["INDEXED"], status.last_seq) == (
        0,
        12,
        1,
        1,
    )
    text = ledger.format_status(status)
    assert "complete through: 2024-03-05T12:00:00Z (60-minute windows; 120 minutes before now)" in text
    assert "batches: PENDING 0, CLAIMED 0, STATELESS_DONE 0, STATEFUL_DONE 0, INDEXED 12, INVALID 0" in text


def test_status_gap_and_unindexed_batches_stop_completeness(dynamodb, landing, tmp_path):
    land(landing, 12)
    # 11:20 never arrives: its folder has no manifest.
    (tmp_path / "landing" / "20240305T1120" / "_manifest.json").unlink()
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    run_everything(dynamodb, "g1", 11, "run-1")
    land(landing, 6, first_index=12)  # 12:00 .. 13:00 registered, not processed
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    land(landing, 1, first_index=18)  # 13:00 .. 13:10 registered only
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)

    status = ledger.status(dynamodb, TABLE, 60, NOW)

    hour = lambda h: datetime(2024, 3, 5, h, tzinfo=UTC)  # noqa: E731
    assert status.complete_through == hour(11)
    assert status.latest_complete_window == (hour(10), hour(11))
    assert status.first_incomplete_window == {
        "start": hour(11),
        "end": hour(12),
        "reason": "gap: no batch covers 2024-03-05T11:20:00Z",
    }
    assert status.incomplete_windows == 2  # 11:00 (gap) and 12:00 (not indexed); 13:00 is not over
    assert status.backlog == 7

    run_everything(dynamodb, "g2", 6, "run-2")  # 12:00 .. 13:00 indexed; 11:00 still has its gap
    status = ledger.status(dynamodb, TABLE, 60, NOW)
    assert status.complete_through == hour(11)
    assert status.latest_complete_window == (hour(12), hour(13))
    assert (
        "first incomplete window: 2024-03-05T11:00:00Z .. 2024-03-05T12:00:00Z: gap"
        in ledger.format_status(status)
    )


def test_status_names_windows_waiting_for_the_index(dynamodb, landing):
    land(landing, 12)
    ledger.register_batches(dynamodb, TABLE, Storage(), landing, NOW)
    run_everything(dynamodb, "g1", 6, "run-1")
    committed_group(dynamodb, "g2", 6)  # 11:00 .. 12:00 stateless only

    status = ledger.status(dynamodb, TABLE, 60, NOW)

    assert status.complete_through == datetime(2024, 3, 5, 11, tzinfo=UTC)
    assert status.first_incomplete_window["reason"] == "6 overlapping batches not INDEXED"
    assert status.batches["STATELESS_DONE"] == 6
    assert status.groups == {"CLAIMING": 0, "READY": 1, "CLAIMED": 0, "APPLIED": 1}
    assert status.as_dict()["complete_through"] == "2024-03-05T11:00:00Z"
