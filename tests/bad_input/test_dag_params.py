"""DAG params, one bad value at a time, through the function each DAG's first task calls (the task fails
there, before anything is read or written): refused with an error naming the param, the lake unchanged.
The Param schemas of the trigger form refuse most of these values in the UI already; the first task is
what protects runs triggered by the CLI (``-c``), the REST API or a backfill with a hand-written conf."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bad_input.lake import INJECTION_LIKE, LAUNCH_COMPLETE, LAUNCH_RUNNING, refuse

pytestmark = [pytest.mark.integration]

ORDERS_METADATA = "s3://dataplatform-local-lake/iceberg/demo_lake/orders/metadata/"


def _cases(param: str, values: dict[str, Any]) -> list:
    return [pytest.param(param, value, id=f"{param}-{case}") for case, value in values.items()]


def _injections(wrap=lambda value: value) -> dict[str, Any]:
    return {case: wrap(value) for case, value in INJECTION_LIKE.items()}


NOT_A_BOOL = {"string_true": "true", "string_false": "false", "one": 1, "zero": 0, "null": None, "list": []}

# -- glue_partition_loader: select_tables -> check_request(table, mode, dry_run) ---------------------------

GLUE = [
    *_cases(
        "table",
        {
            "unknown": "nope",
            "upper": "WEB_EVENTS",
            "int": 7,
            "list": ["web_events"],
            "dict": {"web_events": 1},
            "trailing_space": "web_events ",
            **_injections(),
        },
    ),
    *_cases(
        "mode",
        {
            "unknown": "everything",
            "empty": "",
            "null": None,
            "int": 1,
            "list": ["interval"],
            "upper": "INTERVAL",
            "shell": "interval; rm -rf /",
        },
    ),
    *_cases("dry_run", NOT_A_BOOL),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(("param", "value"), GLUE)
def test_glue_partition_loader(lake, param, value):
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.config import settings
    from dataplatform.operators.glue import check_request

    params = {"table": None, "mode": "interval", "dry_run": False, param: value}
    refuse(
        lake,
        lambda: check_request(params["table"], params["mode"], params["dry_run"], settings()),
        param,
        AirflowFailException,
    )


@pytest.mark.bad_input
@pytest.mark.parametrize("mode", ["msck", "crawler"])
def test_glue_partition_loader_dry_run_of_a_mode_without_one(lake, mode):
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.config import settings
    from dataplatform.operators.glue import check_request

    refuse(lake, lambda: check_request(None, mode, True, settings()), "dry_run", AirflowFailException)


# -- iceberg_maintenance: select_tables -> check_tables(tables, dry_run) -----------------------------------

ICEBERG = [
    *_cases(
        "tables",
        {
            "unknown": ["nope"],
            "one_unknown": ["orders", "nope"],
            "unknown_string": "orders,nope",
            "int": 5,
            "bool": True,
            "ints": [1],
            "nulls": [None],
            "nested": [["orders"]],
            "dict": {"orders": 1},
            **_injections(lambda value: [value]),
        },
    ),
    *_cases("dry_run", NOT_A_BOOL),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(("param", "value"), ICEBERG)
def test_iceberg_maintenance(lake, param, value):
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.config import settings
    from dataplatform.operators.iceberg import check_tables

    params = {"tables": [], "dry_run": False, param: value}
    refuse(
        lake,
        lambda: check_tables(params["tables"], params["dry_run"], settings().iceberg),
        param,
        AirflowFailException,
    )


# -- iceberg_archive_register: validate -> validate_request(params) ---------------------------------------

ARCHIVE = [
    *_cases(
        "table",
        {"null": None, "empty": "", "unknown": "nope", "int": 1, "list": ["orders"], "newline": "orders\n"},
    ),
    *_cases(
        "metadata_file",
        {
            "empty": "",
            "null": None,
            "int": 1,
            "keyword_typo": "newest",
            "other_bucket": "s3://elsewhere/iceberg/demo_lake/orders/metadata/v1.metadata.json",
            "relative": "../metadata/v1.metadata.json",
            "traversal": ORDERS_METADATA + "../../customers/metadata/v1.metadata.json",
            "not_metadata": ORDERS_METADATA + "snap-1.avro",
            "absent": ORDERS_METADATA + "99999-nope.metadata.json",
            "newline": ORDERS_METADATA + "x\n.metadata.json",
            "nul": ORDERS_METADATA + "x\x00.metadata.json",
            "local_file": "file:///etc/passwd",
            "huge": ORDERS_METADATA + "x" * 100_000 + ".metadata.json",
        },
    ),
    *_cases(
        "archive_table",
        {
            "null": None,
            "empty": "",
            "upper": "Orders_Archive",
            "source_itself": "orders",
            "dash": "orders-archive",
            "qualified": "demo_lake.orders_archive",
            "too_long": "a" * 256,
            "int": 1,
            **_injections(),
        },
    ),
]


@pytest.fixture(scope="module")
def catalog(lake):
    from dataplatform.operators.iceberg import glue_catalog

    return glue_catalog()


@pytest.mark.bad_input
@pytest.mark.parametrize(("param", "value"), ARCHIVE)
def test_iceberg_archive_register(lake, catalog, param, value):
    """``validate_request`` is ``source_identifier`` then ``prepare`` on a fresh catalog (~1 s to build):
    the two with one catalog for the module; ``validate_request`` itself in the test below."""
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.config import settings
    from dataplatform.iceberg.archive import ArchiveError, prepare
    from dataplatform.operators.iceberg_archive import source_identifier

    params = {"table": "orders", "metadata_file": "oldest", "archive_table": "orders_archive", param: value}

    def validate():
        identifier = source_identifier(params["table"], settings().iceberg)
        return prepare(catalog, identifier, params["metadata_file"], params["archive_table"])

    refuse(lake, validate, param, (AirflowFailException, ArchiveError))


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("param", "value"), [("metadata_file", ORDERS_METADATA + "nope.metadata.json"), ("archive_table", "Bad")]
)
def test_iceberg_archive_register_validate_task(lake, param, value):
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.operators.iceberg_archive import validate_request

    params = {"table": "orders", "metadata_file": "oldest", "archive_table": "orders_archive", param: value}
    refuse(lake, lambda: validate_request(params), param, AirflowFailException)


def test_iceberg_archive_register_accepts_good_params(lake, catalog):
    """The control: the defaults of the cases above are accepted (each case fails for its one value)."""
    from dataplatform.iceberg.archive import prepare

    request = prepare(catalog, "demo_lake.orders", "oldest", "orders_archive")
    assert request.metadata_file.startswith(ORDERS_METADATA)
    lake.check_unchanged("a good archive request")


# -- gdpr_erasure: accept_requests(params, run_id) ---------------------------------------------------------

GDPR = [
    *_cases(
        "subject_ids",
        {
            "string": "cust-000001",
            "int": 5,
            "dict": {"cust-000001": 1},
            "ints": [1],
            "nulls": [None],
            "empties": [""],
            "wrong_format": ["cust-1"],
            "nested": [["cust-000001"]],
            "one_bad_of_two": ["cust-000002", "cust-2"],
            "trailing_newline": ["cust-000001\n"],
            **_injections(lambda value: [value]),
        },
    ),
    *_cases(
        "datasets",
        {
            "unknown": ["nope"],
            "one_unknown": ["payments", "nope"],
            "int": 5,
            "ints": [1],
            "dict": {"payments": 1},
            "traversal": ["../payments"],
            "sql": ["payments'; --"],
        },
    ),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(("param", "value"), GDPR)
def test_gdpr_erasure(lake, param, value):
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.operators.gdpr import accept_requests

    params = {"subject_ids": ["cust-000002"], "datasets": [], param: value}
    refuse(lake, lambda: accept_requests(params, "manual__bad-input"), param, AirflowFailException)


# -- benchmark_pricing: select_launches(params) ------------------------------------------------------------

PRICING = _cases(
    "launch_ids",
    {
        "int": 5,
        "dict": {"a": 1},
        "ints": [1],
        "nulls": [None],
        "empties": [""],
        "unknown": ["nope"],
        "not_complete": [LAUNCH_RUNNING],
        "one_unknown": [LAUNCH_COMPLETE, "nope"],
        **_injections(lambda value: [value]),
    },
)


@pytest.mark.bad_input
@pytest.mark.parametrize(("param", "value"), PRICING)
def test_benchmark_pricing(lake, param, value):
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.operators.pricing import select_launches

    refuse(lake, lambda: select_launches({param: value}), param, AirflowFailException)


# -- recon_stateless: setup_tables -> check_params(params) -------------------------------------------------

RECON = _cases(
    "max_batches",
    {
        "zero": 0,
        "negative": -1,
        "above_maximum": 1001,
        "huge": 10**30,
        "string": "5",
        "float": 5.5,
        "bool": True,
        "list": [5],
        "sql": "5; DROP TABLE recon_ledger",
    },
)


@pytest.mark.bad_input
@pytest.mark.parametrize(("param", "value"), RECON)
def test_recon_stateless(lake, param, value):
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.operators.reconciliation import check_params

    refuse(lake, lambda: check_params({param: value}), param, AirflowFailException)
