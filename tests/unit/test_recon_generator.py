"""The synthetic event generator: deterministic, skewed, with redeliveries, late corrections and bad rows."""

import itertools
import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from dataplatform.reconciliation.generator import (
    MALFORMED_KINDS,
    GeneratorConfig,
    generate_batches,
    write_batches,
)
from dataplatform.reconciliation.manifests import read_and_verify
from spark_jobs.common.storage import Storage
from tests import reconciliation_oracle as oracle

pytestmark = pytest.mark.unit

START = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
CONFIG = GeneratorConfig(seed=11, n_keys=500, events_per_batch=2_000, files_per_batch=3, malformed_share=0.02)


@pytest.fixture(scope="module")
def batches():
    return generate_batches(CONFIG, batches=6, start=START)


def valid_events(batch):
    return [event for event, _ in map(oracle.validate, batch.lines) if event is not None]


def test_same_config_same_bytes_other_seed_other_bytes(batches):
    again = generate_batches(CONFIG, batches=6, start=START)
    other = generate_batches(GeneratorConfig(**{**CONFIG.__dict__, "seed": 12}), batches=6, start=START)
    assert [b.lines for b in again] == [b.lines for b in batches]
    assert [b.lines for b in other] != [b.lines for b in batches]


def test_batches_tile_time_in_windows(batches):
    assert [b.batch_id for b in batches] == [f"20240305T10{m:02d}" for m in (0, 10, 20, 30, 40, 50)]
    for before, after in itertools.pairwise(batches):
        assert before.window_end == after.window_start
    assert all(len(b.lines) == 2_000 for b in batches)


def test_every_malformed_kind_is_there_and_the_oracle_agrees_on_each(batches):
    intended = Counter()
    for batch in batches:
        intended.update(batch.malformed)
    found = Counter(reason for b in batches for _, reason in map(oracle.validate, b.lines) if reason)
    assert set(intended) == set(MALFORMED_KINDS)
    assert found == intended
    assert 0.01 < sum(found.values()) / (6 * 2_000) < 0.03  # malformed_share 0.02


def test_redeliveries_repeat_lines_byte_for_byte_within_and_across_batches(batches):
    first_batch: dict[str, int] = {}
    line_of: dict[str, str] = {}
    across = within = 0
    for batch in batches:
        seen_here: set[str] = set()
        for line in batch.lines:
            event, _ = oracle.validate(line)
            if event is None:
                continue
            event_id = event["event_id"]
            if event_id in line_of:
                assert line_of[event_id] == line  # same payload, not just the same id
                if event_id in seen_here:
                    within += 1
                else:
                    across += first_batch[event_id] < batch.index
            else:
                line_of[event_id] = line
                first_batch[event_id] = batch.index
            seen_here.add(event_id)
    assert across > 50
    assert within > 10
    assert across + within == sum(b.redelivered for b in batches)


def test_late_corrections_are_signed_and_before_the_window(batches):
    corrections = [(b, e) for b in batches for e in valid_events(b) if e["event_type"] == "correction"]
    assert len(corrections) > 50
    assert all(event["event_time"] < batch.window_start for batch, event in corrections)
    assert any(event["amount"] < 0 for _, event in corrections)
    assert any(event["amount"] > 0 for _, event in corrections)
    # Everything else happens inside its batch's window (redeliveries: inside the first delivery's).
    first_window = {}
    for batch in batches:
        for event in valid_events(batch):
            first_window.setdefault(event["event_id"], (batch.window_start, batch.window_end, event))
    others = [(s, e, event) for s, e, event in first_window.values() if event["event_type"] != "correction"]
    assert all(start <= event["event_time"] < end for start, end, event in others)


def test_keys_are_zipf_skewed_with_a_fixed_entity_and_currency(batches):
    events = [event for batch in batches for event in valid_events(batch)]
    per_key = Counter(event["artifact_key"] for event in events)
    hottest, hot_count = per_key.most_common(1)[0]
    assert hottest == "ORD-0000000"
    assert hot_count / len(events) > 0.08  # one key of 500 takes a large share
    assert sum(1 for count in per_key.values() if count <= 5) > 100  # and a long cold tail
    attributes = {}
    for event in events:
        assert attributes.setdefault(event["artifact_key"], (event["entity"], event["currency"])) == (
            event["entity"],
            event["currency"],
        )


def test_final_states_mix_reconciled_open_and_overpaid(batches):
    artifacts = oracle.expected_artifacts((b.batch_id, b.lines) for b in batches)
    statuses = Counter(artifact["status"] for artifact in artifacts.values())
    assert statuses["RECONCILED"] > statuses["OPEN"] > 0
    assert statuses["OVERPAID"] > 0
    remittances = [e for b in batches for e in valid_events(b) if e["event_type"] == "remittance"]
    assert remittances and all(e["amount"] > 0 for e in remittances)


def test_written_batches_verify_and_the_manifest_is_written_last(tmp_path):
    class Recording(Storage):
        written: list[str] = []

        def write_bytes(self, uri, data):
            self.written.append(uri.rsplit("/", 2)[-2] + "/" + uri.rsplit("/", 1)[-1])
            return super().write_bytes(uri, data)

    storage, landing = Recording(), f"file://{tmp_path}/landing/"
    manifests = write_batches(storage, landing, CONFIG, batches=2, start=START)

    assert storage.written == [
        "20240305T1000/part-00000.jsonl",
        "20240305T1000/part-00001.jsonl",
        "20240305T1000/part-00002.jsonl",
        "20240305T1000/_manifest.json",
        "20240305T1010/part-00000.jsonl",
        "20240305T1010/part-00001.jsonl",
        "20240305T1010/part-00002.jsonl",
        "20240305T1010/_manifest.json",
    ]
    for manifest in manifests:
        verified = read_and_verify(storage, landing, manifest["batch_id"])
        assert verified.rows == manifest["rows"] == 2_000
        assert verified.sha256 == manifest["sha256"]
    assert json.loads((tmp_path / "landing/20240305T1000/_manifest.json").read_text()) == manifests[0]


def test_one_more_batch_later_equals_the_series_and_leaves_earlier_ones_alone(tmp_path):
    storage, landing = Storage(), f"file://{tmp_path}/landing/"
    write_batches(storage, landing, CONFIG, batches=2, start=START)
    before = {path: path.read_bytes() for path in (tmp_path / "landing").rglob("*") if path.is_file()}
    writes_before = storage.stats.writes

    [manifest] = write_batches(storage, landing, CONFIG, batches=1, start=START, first_index=2)

    assert storage.stats.writes - writes_before == 4  # three part files and one manifest
    assert {path: path.read_bytes() for path in before} == before
    series = generate_batches(CONFIG, batches=3, start=START)
    written = b"".join(
        (tmp_path / "landing" / "20240305T1020" / name).read_bytes() for name in manifest["files"]
    )
    assert written == "".join(line + "\n" for line in series[2].lines).encode()
    assert manifest["window_start"] == "2024-03-05T10:20:00Z"


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="n_keys"):
        GeneratorConfig(n_keys=0)
    with pytest.raises(ValueError, match="malformed_share"):
        GeneratorConfig(malformed_share=1.5)
