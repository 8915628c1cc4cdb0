"""The independent oracle, on input small enough to check by hand."""

import json

import pytest

from tests import reconciliation_oracle as oracle

pytestmark = pytest.mark.unit


def line(
    event_id, key, event_type, amount, currency="USD", time="2024-03-05T10:01:00.000Z", entity="AMZN_US"
):
    return json.dumps(
        {
            "event_id": event_id,
            "artifact_key": key,
            "entity": entity,
            "event_type": event_type,
            "amount": amount,
            "currency": currency,
            "event_time": time,
        }
    )


GOOD = json.loads(line("e-1", "ORD-1", "receivable", 100))


def variant(**changes):
    event = {**GOOD, **changes}
    return json.dumps({name: value for name, value in event.items() if value is not ...})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not_json"),
        ('{"event_id": "e-1", ', "not_json"),
        ("[1, 2]", "not_json"),
        (b"\xff\xfe", "not_json"),
        (variant(event_id=...), "missing_event_id"),
        (variant(event_id=""), "missing_event_id"),
        (variant(artifact_key=None), "missing_artifact_key"),
        (variant(entity=7), "missing_entity"),
        (variant(event_type=...), "missing_event_type"),
        (variant(amount=...), "missing_amount"),
        (variant(currency=...), "missing_currency"),
        (variant(amount=""), "missing_amount"),
        (variant(event_time=None), "missing_event_time"),
        (variant(event_type="refund"), "unknown_event_type"),
        (variant(event_type="RECEIVABLE"), "unknown_event_type"),
        (variant(amount=12.5), "amount_not_integer"),
        (variant(amount=12.0), "amount_not_integer"),
        (variant(amount="12"), "amount_not_integer"),
        (variant(amount=True), "amount_not_integer"),
        (variant(amount=10**15), "amount_not_integer"),
        (variant(amount=-1), "negative_amount"),
        (variant(currency="usd"), "bad_currency"),
        (variant(currency="USDX"), "bad_currency"),
        (variant(event_time="2024-03-05T10:01:00"), "bad_event_time"),
        (variant(event_time="2024-02-30T10:01:00Z"), "bad_event_time"),
        (variant(event_time="2024-03-05 10:01:00Z"), "bad_event_time"),
        (variant(event_time=1709632860), "bad_event_time"),
    ],
)
def test_each_problem_gets_its_reason(raw, reason):
    assert oracle.validate(raw) == (None, reason)


def test_valid_lines_pass_including_signed_corrections_and_zero_amounts():
    for raw in (
        variant(),
        variant(amount=0),
        variant(event_type="correction", amount=-(10**15 - 1)),
        variant(event_time="2024-03-05T10:01:00Z"),
        variant(event_time="2024-03-05T10:01:00.123456Z"),
    ):
        event, reason = oracle.validate(raw)
        assert reason is None and event["artifact_key"] == "ORD-1"


BATCHES = [
    (
        "b1",
        [
            line("e-1", "ORD-1", "receivable", 1000, time="2024-03-05T10:01:00Z"),
            line("e-2", "ORD-1", "remittance", 1000, time="2024-03-05T10:02:03.456789Z"),
            line("e-3", "ORD-2", "receivable", 500),
            line("e-4", "ORD-3", "receivable", 100, entity="AMZN_UK"),
            line("e-5", "ORD-3", "remittance", 150, entity="AMZN_DE"),
            line("e-6", "ORD-4", "receivable", 300, currency="USD"),
            line("e-7", "ORD-4", "remittance", 400, currency="EUR"),
            line("e-8", "ORD-5", "royalty", 70),
            "garbage",
            variant(event_id="e-9", amount=-5),
            line("e-3", "ORD-2", "receivable", 500),  # redelivered within the batch
        ],
    ),
    (
        "b2",
        [
            line("e-1", "ORD-1", "receivable", 1000, time="2024-03-05T10:01:00Z"),  # redelivery
            line("e-10", "ORD-2", "correction", -200, time="2024-03-04T23:59:59.999Z"),
            line("e-11", "ORD-5", "payable", 30, time="2024-03-05T10:15:00.000Z"),
        ],
    ),
]


def test_artifacts_by_hand():
    artifacts, stats = oracle.expected(BATCHES)

    def totals(currency, balance, **sums):
        row = dict.fromkeys(oracle.EVENT_TYPES, 0)
        row.update(sums)
        return {"currency": currency, **row, "balance": balance}

    assert artifacts == {
        "ORD-1": {
            "key": "ORD-1",
            "batches": ["b1"],  # the redelivery in b2 contributes nothing
            "entities": ["AMZN_US"],
            "event_count": 2,
            "first_event_time": "2024-03-05T10:01:00.000Z",
            "last_event_time": "2024-03-05T10:02:03.456Z",  # truncated to milliseconds
            "totals": [totals("USD", 0, receivable=1000, remittance=1000)],
            "status": "RECONCILED",
        },
        "ORD-2": {
            "key": "ORD-2",
            "batches": ["b1", "b2"],
            "entities": ["AMZN_US"],
            "event_count": 2,
            "first_event_time": "2024-03-04T23:59:59.999Z",  # the late correction
            "last_event_time": "2024-03-05T10:01:00.000Z",
            "totals": [totals("USD", 300, receivable=500, correction=-200)],
            "status": "OPEN",
        },
        "ORD-3": {
            "key": "ORD-3",
            "batches": ["b1"],
            "entities": ["AMZN_DE", "AMZN_UK"],
            "event_count": 2,
            "first_event_time": "2024-03-05T10:01:00.000Z",
            "last_event_time": "2024-03-05T10:01:00.000Z",
            "totals": [totals("USD", -50, receivable=100, remittance=150)],
            "status": "OVERPAID",
        },
        "ORD-4": {
            "key": "ORD-4",
            "batches": ["b1"],
            "entities": ["AMZN_US"],
            "event_count": 2,
            "first_event_time": "2024-03-05T10:01:00.000Z",
            "last_event_time": "2024-03-05T10:01:00.000Z",
            "totals": [totals("EUR", -400, remittance=400), totals("USD", 300, receivable=300)],
            "status": "OVERPAID",  # any negative balance wins over an open one
        },
        "ORD-5": {
            "key": "ORD-5",
            "batches": ["b1", "b2"],
            "entities": ["AMZN_US"],
            "event_count": 2,
            "first_event_time": "2024-03-05T10:01:00.000Z",
            "last_event_time": "2024-03-05T10:15:00.000Z",
            "totals": [totals("USD", 0, royalty=70, payable=30)],
            "status": "RECONCILED",  # nothing owed
        },
    }
    assert list(artifacts["ORD-1"]) == [
        "key",
        "batches",
        "entities",
        "event_count",
        "first_event_time",
        "last_event_time",
        "totals",
        "status",
    ]
    assert stats == {
        "input_rows": 14,
        "valid_rows": 12,
        "quarantined": {"negative_amount": 1, "not_json": 1},
        "quarantined_rows": 2,
        "duplicates": 2,
        "events_applied": 10,
        "artifacts": 5,
    }


def test_the_first_delivery_by_batch_order_wins():
    swapped = [BATCHES[1], BATCHES[0]]
    artifacts = oracle.expected_artifacts(swapped)
    assert artifacts["ORD-1"]["batches"] == ["b1", "b2"]  # e-1 now counts in b2, e-2 in b1


def test_an_id_is_a_duplicate_whatever_its_time_and_again_new_after_the_horizon():
    from datetime import UTC, datetime, timedelta

    first = line("e-1", "ORD-1", "receivable", 100, time="2024-02-20T10:00:00Z")
    moved = line("e-1", "ORD-1", "receivable", 100, time="2024-03-05T11:25:00Z")
    batches = [("b1", [first]), ("b2", [moved]), ("b3", [moved])]
    assert oracle.expected(batches)[0]["ORD-1"]["totals"][0]["receivable"] == 100

    day = datetime(2026, 1, 1, tzinfo=UTC)
    when = {"b1": day, "b2": day + timedelta(days=7), "b3": day + timedelta(days=7, seconds=1)}
    artifacts, stats = oracle.expected(batches, processed_at=when, horizon=timedelta(days=7))
    # b2 is exactly at the horizon (still a duplicate); b3 is past it and applied again.
    assert artifacts["ORD-1"]["totals"][0]["receivable"] == 200 and stats["duplicates"] == 1
    with pytest.raises(ValueError, match="both"):
        oracle.expected(batches, horizon=timedelta(days=7))


def test_pipeline_artifacts_compare_without_run_fields():
    artifact = {"key": "K", "version": 3, "batches": ["b"], "seq": 7}
    assert oracle.without_run_fields(artifact) == {"key": "K", "batches": ["b"]}


def test_read_landing_orders_batches_by_window_and_skips_unfinished_ones(tmp_path):
    def batch(batch_id, start, lines, manifest=True):
        folder = tmp_path / batch_id
        folder.mkdir()
        (folder / "part-0.jsonl").write_text("".join(text + "\n" for text in lines[:1]))
        (folder / "part-1.jsonl").write_text("\n".join(lines[1:]))  # last line without newline
        if manifest:
            body = {"batch_id": batch_id, "window_start": start, "files": ["part-0.jsonl", "part-1.jsonl"]}
            (folder / "_manifest.json").write_text(json.dumps(body))

    batch("zz", "2024-03-05T10:00:00Z", ["a", "b", "c"])
    batch("aa", "2024-03-05T10:10:00Z", ["d", "e"])
    batch("mm", "2024-03-05T09:50:00Z", ["f"], manifest=False)

    assert oracle.read_landing(f"file://{tmp_path}/") == [("zz", [b"a", b"b", b"c"]), ("aa", [b"d", b"e"])]
