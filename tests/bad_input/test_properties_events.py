"""Event validation, property-based: lines built field by field from good and bad values (hypothesis,
derandomized), classified by the stateless job's ``classify_events`` on the shared Spark session, must get
the reason the contract gives (``tests/reconciliation_oracle.validate``, written without pipeline code):
the first failing check in the contract's order, or none. Each example is one Spark action over a batch of
lines, so the examples are few and the batches large."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.reconciliation_oracle import validate

pytestmark = [pytest.mark.integration, pytest.mark.spark]

_MISSING = object()

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
FIELDS = {
    # Non-string ids (a number, a list) are left to test_a_non_string_id_is_quarantined below: the job
    # accepts them today (a known bug, see there).
    "event_id": st.one_of(
        st.from_regex(r"e-[a-z0-9]{1,8}", fullmatch=True), st.sampled_from(["", None, _MISSING]), TEXT
    ),
    "artifact_key": st.one_of(
        st.from_regex(r"K[0-9]{1,4}", fullmatch=True), st.sampled_from(["", None, _MISSING])
    ),
    "entity": st.one_of(st.sampled_from(["AMZN_US", "AMZN_DE"]), st.sampled_from(["", None, _MISSING])),
    "event_type": st.one_of(
        st.sampled_from(["receivable", "payable", "royalty", "amortization", "remittance", "correction"]),
        st.sampled_from(["Receivable", "refund", "", None, 1, _MISSING]),
    ),
    "amount": st.one_of(
        st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1),
        st.sampled_from([10**15, -(10**15), 12.0, 1.5, "12", True, None, "", _MISSING]),
    ),
    "currency": st.one_of(
        st.sampled_from(["USD", "EUR", "GBP"]),
        st.sampled_from(["usd", "US", "USDX", "", None, 840, _MISSING]),
    ),
    "event_time": st.one_of(
        st.datetimes().map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S") + "Z"),
        st.datetimes().map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"),
        st.sampled_from(
            [
                "2024-02-30T10:00:00Z",
                "2024-03-05T25:00:00Z",
                "2024-03-05T10:00:00",
                "2024-03-05 10:00:00Z",
                "2024-03-05T10:00:00+01:00",
                "yesterday",
                "",
                None,
                1709632800,
                _MISSING,
            ]
        ),
    ),
}


@st.composite
def lines(draw):
    kind = draw(st.sampled_from(["event", "event", "event", "text"]))
    if kind == "text":
        return draw(st.one_of(TEXT, st.sampled_from(["[]", "[{}]", "null", '{"a": 1} trailing', "{}"])))
    event = {name: draw(strategy) for name, strategy in FIELDS.items()}
    return json.dumps({name: value for name, value in event.items() if value is not _MISSING})


# No shrinking: each step would be a Spark action; a failing batch is reported whole.
@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)
@given(batch=st.lists(lines(), min_size=20, max_size=60, unique=True))
def test_every_line_gets_the_contract_s_reason(spark, batch):
    from spark_jobs.recon_stateless import classify_events

    frame = spark.createDataFrame(
        [("b", "f", line) for line in batch], "batch_id string, file string, raw string"
    )
    got = {row["raw"]: row["reason"] for row in classify_events(frame).select("raw", "reason").collect()}
    expected = {line: validate(line)[1] for line in batch}
    assert got == expected


@pytest.mark.xfail(
    strict=True,
    reason="known bug: classify_events parses ids as strings, so a JSON number or list as event_id, "
    "artifact_key or entity passes (the contract quarantines it as missing_<field>); found by the "
    "property above, not fixed in issue 14's bad-input part",
)
def test_a_non_string_id_is_quarantined(spark):
    from spark_jobs.recon_stateless import classify_events

    good = {
        "event_id": "e-1",
        "artifact_key": "K1",
        "entity": "AMZN_US",
        "event_type": "receivable",
        "amount": 1,
        "currency": "USD",
        "event_time": "2024-03-05T10:00:00Z",
    }
    batch = [
        json.dumps({**good, "event_id": 7}),
        json.dumps({**good, "artifact_key": 3}),
        json.dumps({**good, "entity": ["AMZN_US"]}),
    ]
    frame = spark.createDataFrame(
        [("b", "f", line) for line in batch], "batch_id string, file string, raw string"
    )
    got = {row["raw"]: row["reason"] for row in classify_events(frame).select("raw", "reason").collect()}
    assert got == {line: validate(line)[1] for line in batch}
