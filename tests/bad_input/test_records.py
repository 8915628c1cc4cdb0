"""GDPR request fields and workflow launch record fields, one bad value at a time, through the functions
that accept them: ``submit_request`` (what the CLI and the DAG's accept_requests store) and
``Pricer.price`` (what price_launch and the CLI's ``launch`` run on a record before any AWS call for its
resources). Each is refused naming the field; the lake is unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.bad_input.lake import INJECTION_LIKE, good_launch_record, refuse

pytestmark = [pytest.mark.integration]

NOW = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def dynamodb(lake):
    from dataplatform import aws

    return aws.client("dynamodb")


REQUEST_IDS = {
    **INJECTION_LIKE,
    "empty": "",
    "int": 7,
    "null": None,
    "too_long": "r" * 129,
    "leading_dot": ".r",
}


@pytest.mark.bad_input
@pytest.mark.parametrize("value", list(REQUEST_IDS.values()), ids=list(REQUEST_IDS))
def test_gdpr_request_id(lake, dynamodb, value):
    from dataplatform.config import settings
    from dataplatform.gdpr.requests import RequestError, submit_request

    table = settings().gdpr.requests_table
    refuse(
        lake,
        lambda: submit_request(dynamodb, table, value, "cust-000005", NOW, 30),
        "request id",
        RequestError,
    )


SUBJECT_IDS = {
    **INJECTION_LIKE,
    "empty": "",
    "int": 7,
    "null": None,
    "list": ["cust-000001"],
    "wrong_format": "cust-01",
}


@pytest.mark.bad_input
@pytest.mark.parametrize("value", list(SUBJECT_IDS.values()), ids=list(SUBJECT_IDS))
def test_gdpr_subject_id(lake, value):
    """``check_subject_id`` is what every way in runs before a request is stored (the CLI's submit and
    the DAG's accept_requests); the message never quotes the id."""
    from dataplatform.config import settings
    from dataplatform.gdpr.subjects import SubjectIdError, check_subject_id

    message = refuse(
        lake,
        lambda: check_subject_id(value, settings().gdpr.subject_id_pattern),
        "subject id",
        SubjectIdError,
    )
    if isinstance(value, str) and value:
        assert value not in message


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("field", "value"),
    [("received_at", datetime(2024, 3, 1)), ("deadline_days", "30")],
    ids=["naive_received_at", "string_deadline_days"],
)
def test_gdpr_request_times(lake, dynamodb, field, value):
    from dataplatform.config import settings
    from dataplatform.gdpr.requests import submit_request

    args = {"received_at": NOW, "deadline_days": 30, field: value}
    refuse(
        lake,
        lambda: submit_request(
            dynamodb,
            settings().gdpr.requests_table,
            "req-times",
            "cust-000006",
            args["received_at"],
            args["deadline_days"],
        ),
        ("timezone", "deadline_days", "timedelta"),
        (ValueError, TypeError),
    )


LAUNCH_FIELDS = {
    "launch_id": {"null": None, "int": 5, "empty": "", "nul": "l\x00", "huge": "l" * 300},
    "status": {"unknown": "DONE", "lower": "complete", "null": None, "int": 1},
    "region": {
        "null": None,
        "empty": "",
        "upper": "US-EAST-1",
        "traversal": "../us-east-1",
        "shell": "us-east-1;id",
        "int": 1,
    },
    "started_at": {
        "null": None,
        "garbage": "yesterday",
        "int": 1709287200,
        "month_13": "2024-13-01T10:00:00Z",
        "huge": "2" * 100,
    },
    "completed_at": {
        "garbage": "soon",
        "before_start": "2024-03-01T09:00:00Z",
        "bad_offset": "2024-03-01T12:00:00+25:00",
    },
    "created_at": {"garbage": "x", "list": ["2024-03-01T09:55:00Z"]},
    "batch_job_ids": {
        "string": "8d3f1d1e-0000-4000-8000-000000000001",
        "ints": [1],
        "shell": ["id;rm -rf /"],
        "newline": ["job\n"],
        "dict": {"a": 1},
        "too_many": ["job"] * 10_001,
    },
    "instance_ids": {
        "string": "i-0123456789abcdef0",
        "malformed": ["i-XYZ"],
        "sql": ["i-0123' OR '1'='1"],
        "nested": [["i-0123456789abcdef0"]],
        "empty_id": [""],
    },
    "volume_ids": {"string": "vol-0123456789abcdef0", "malformed": ["vol-"], "traversal": ["../vol-1"]},
    "fsx_file_system_id": {
        "int": 1,
        "malformed": "fs-",
        "list": ["fs-0123456789abcdef0"],
        "shell": "fs-1;id",
    },
}


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(f, v, id=f"{f}-{case}")
        for f, values in LAUNCH_FIELDS.items()
        for case, v in values.items()
    ],
)
def test_launch_record_field(lake, field, value):
    from dataplatform.config import settings
    from dataplatform.pricing.pricer import Pricer
    from dataplatform.pricing.resources import PricingError

    def no_clients(service, region):
        raise AssertionError(f"a {service} client was asked for: the record should have been refused first")

    pricer = Pricer(settings().pricing, no_clients, dynamodb=None)
    record = good_launch_record(**{field: value})
    if value is None:
        record.pop(field, None)
    refuse(lake, lambda: pricer.price(record), field, PricingError)


def test_a_good_launch_record_passes_the_check(lake):
    """The control: the record the cases change passes (each case fails for its one field)."""
    from dataplatform.pricing.launches import check_launch_record

    assert check_launch_record(good_launch_record())["region"] == "us-east-1"
