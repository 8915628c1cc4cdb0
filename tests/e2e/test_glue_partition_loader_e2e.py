"""glue_partition_loader in a real Airflow: `airflow standalone` (scheduler, DAG processor, triggerer,
api-server, LocalExecutor) against the moto server, driven only through the REST API.

One Airflow for this module and the Iceberg and reconciliation ones (``local_airflow``,
tests/e2e/conftest.py: a start costs about a minute); the tests share it and the seeded lake, in this
order: a manual discover run registers web_events, a backfill registers cloudtrail day by day (its
`_SUCCESS` markers checked first) and finds web_events already present, its loads never more at once
than the `glue_api` pool's slots, and bad params are refused or fail fast without touching Glue.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from dataplatform import aws as aws_clients
from dataplatform.config import settings
from dataplatform.devstack.airflow_env import query_metadata_db
from dataplatform.devstack.seed import INVALID_WEB_EVENT_PREFIXES, seed_demo
from dataplatform.devstack.standalone import AirflowApiError, StandaloneAirflow
from dataplatform.glue.layout import PartitionLayout
from dataplatform.pools import pool_bulk_request
from tests.e2e.airflow_api import (
    ON_POSTGRES,
    describe_run,
    most_at_once,
    pause,
    run_path,
    task_instances,
    task_log,
    wait_for,
    wait_for_run,
)

pytestmark = pytest.mark.e2e

DAG_ID = "glue_partition_loader"
SEED_START = datetime(2024, 3, 1)  # seed_demo's default start; web_events: 10 days of hours
SEED_DAYS = 10


# -- helpers -----------------------------------------------------------------------------------------


def create_backfill(airflow: StandaloneAirflow, body: dict) -> dict:
    """POST /backfills. On SQLite (DATAPLATFORM_E2E_DB=sqlite) Airflow refuses it with 503 "Database is
    locked" while the scheduler holds the database (it says to retry or use PostgreSQL): retry there, as
    someone at the CLI would. On PostgreSQL a refusal is a failure."""
    attempts = 1 if ON_POSTGRES else 6
    for attempt in range(1, attempts + 1):
        try:
            return airflow.api("POST", "/backfills", json=body)
        except AirflowApiError as exc:
            if exc.status_code != 503 or attempt == attempts:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def trigger(airflow: StandaloneAirflow, conf: dict) -> dict:
    return airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})


def dag_runs(airflow: StandaloneAirflow, **params) -> list[dict]:
    return airflow.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100, **params})["dag_runs"]


def xcom_report(airflow: StandaloneAirflow, run_id: str, map_index: int) -> dict:
    entry = airflow.api(
        "GET",
        f"{run_path(DAG_ID, run_id)}/taskInstances/load_partitions/xcomEntries/return_value",
        params={"map_index": map_index},
    )
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value


def mapped_reports(airflow: StandaloneAirflow, run_id: str) -> dict[str, dict]:
    """The load_partitions report of each mapped task instance of a run, by table."""
    mapped = airflow.api("GET", f"{run_path(DAG_ID, run_id)}/taskInstances/load_partitions/listMapped")
    reports = {}
    for ti in mapped["task_instances"]:
        assert ti["state"] == "success", describe_run(airflow, DAG_ID, run_id)
        report = xcom_report(airflow, run_id, ti["map_index"])
        assert ti["rendered_map_index"] in (None, report["table"])
        reports[report["table"]] = report
    return reports


def glue_partitions(glue, table) -> dict[tuple[str, ...], str]:
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName=table.database, TableName=table.table)
    return {
        tuple(p["Values"]): p["StorageDescriptor"]["Location"] for page in pages for p in page["Partitions"]
    }


def glue_snapshot(glue) -> dict[str, dict]:
    return {name: glue_partitions(glue, table) for name, table in settings().glue.tables.items()}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def glue(moto_server):
    return aws_clients.client("glue")


@pytest.fixture(scope="module")
def airflow(moto_server, glue, local_airflow):
    """The shared standalone Airflow (tests/e2e/conftest.py) against the session moto server, with the
    demo lake seeded; the DAG paused again when the module is done."""
    moto_server.reset()
    counts = seed_demo(aws_clients.client("s3"), glue, settings())
    assert counts["web_events"] == {
        "partitions": 240,
        "invalid_prefixes": len(INVALID_WEB_EVENT_PREFIXES),
    }
    yield local_airflow
    pause(local_airflow, DAG_ID)


@pytest.fixture(scope="module")
def dag_ready(airflow):
    """The DAG, parsed by the DAG processor and unpaused."""

    def parsed():
        try:
            return airflow.api("GET", f"/dags/{DAG_ID}")
        except AirflowApiError as exc:
            if exc.status_code == 404:
                return None
            raise

    dag = wait_for(parsed, 120, f"{DAG_ID} to be parsed", interval=2.0)
    assert dag["is_paused"], "dags_are_paused_at_creation: a new DAG starts paused"
    import_errors = airflow.api("GET", "/importErrors")["import_errors"]
    assert not import_errors, import_errors
    dag = airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    assert dag["is_paused"] is False
    return dag


@pytest.fixture(scope="module")
def discover_run(airflow, dag_ready):
    """A manual run registering every web_events partition found in S3."""
    run = trigger(airflow, {"mode": "discover", "table": "web_events"})
    assert run["conf"] == {"mode": "discover", "table": "web_events"}
    assert run["logical_date"] is None
    return wait_for_run(airflow, DAG_ID, run["dag_run_id"])


# -- tests -------------------------------------------------------------------------------------------


def test_manual_discover_run_registers_every_web_events_partition(airflow, discover_run, glue):
    run_id = discover_run["dag_run_id"]
    assert discover_run["state"] == "success", describe_run(airflow, DAG_ID, run_id)
    assert discover_run["run_type"] == "manual"
    assert airflow.api("GET", f"/dags/{DAG_ID}")["is_paused"] is False

    tables = settings().glue.tables
    web_events = tables["web_events"]
    layout = PartitionLayout(web_events)
    expected_values = layout.values_for_interval(SEED_START, SEED_START + timedelta(days=SEED_DAYS))
    assert len(expected_values) == 240
    expected = {values: web_events.location + layout.render(values) for values in expected_values}

    registered = glue_partitions(glue, web_events)
    assert registered == expected
    for prefix in INVALID_WEB_EVENT_PREFIXES:
        assert not any(loc.startswith(web_events.location + prefix) for loc in registered.values()), prefix
    # The table param limited the run to web_events.
    assert glue_partitions(glue, tables["cloudtrail"]) == {}

    # One mapped task instance, for web_events; its report is the XCom.
    reports = mapped_reports(airflow, run_id)
    assert list(reports) == ["web_events"]
    report = reports["web_events"]
    assert report["mode"] == "discover"
    assert report["dry_run"] is False
    assert report["listed"] == 240
    assert report["created"] == 240
    assert report["already_present"] == 0
    assert report["invalid"] == len(INVALID_WEB_EVENT_PREFIXES) == 5
    assert report["failed"] == 0
    assert report["report_uri"].startswith(settings().reports_uri)


@pytest.fixture(scope="module")
def backfill(airflow, discover_run, glue):
    """Three days of glue_partition_loader backfilled (3 runs at once allowed), each run finished; with
    the Glue state from before it."""
    assert discover_run["state"] == "success", "needs web_events registered by the discover run"
    before = glue_snapshot(glue)
    assert before["cloudtrail"] == {}

    from_date, to_date = "2024-03-02T00:00:00Z", "2024-03-04T00:00:00Z"
    backfill = create_backfill(
        airflow,
        {
            "dag_id": DAG_ID,
            "from_date": from_date,
            "to_date": to_date,
            "run_backwards": False,
            "dag_run_conf": {},
            "reprocess_behavior": "none",
            "max_active_runs": 3,
        },
    )
    assert backfill["dag_id"] == DAG_ID

    # The runs are created with the backfill; to_date is inclusive (logical dates in [from, to]).
    runs = dag_runs(airflow, run_type="backfill")
    assert len(runs) == 3, [r["dag_run_id"] for r in runs]
    intervals = sorted(
        (parse_time(r["data_interval_start"]), parse_time(r["data_interval_end"])) for r in runs
    )
    assert intervals[0][0] == parse_time(from_date)
    assert intervals[-1][0] == parse_time(to_date)
    assert all(end - start == timedelta(days=1) for start, end in intervals)

    finished = [wait_for_run(airflow, DAG_ID, r["dag_run_id"], timeout=180) for r in runs]
    for run in finished:
        assert run["state"] == "success", describe_run(airflow, DAG_ID, run["dag_run_id"])
    wait_for(
        lambda: airflow.api("GET", f"/backfills/{backfill['id']}")["completed_at"],
        60,
        "the scheduler to mark the backfill complete",
        interval=2.0,
    )
    return {"before": before, "intervals": intervals, "finished": finished}


def test_backfill_registers_cloudtrail_days_and_finds_web_events_present(backfill, airflow, glue):
    tables = settings().glue.tables
    before, intervals, finished = backfill["before"], backfill["intervals"], backfill["finished"]

    # cloudtrail: exactly the days of the backfill runs, each at its own location.
    cloudtrail = tables["cloudtrail"]
    layout = PartitionLayout(cloudtrail)
    expected_days = {
        values
        for start, end in intervals
        for values in layout.values_for_interval(start.replace(tzinfo=None), end.replace(tzinfo=None))
    }
    assert len(expected_days) == 3
    assert glue_partitions(glue, cloudtrail) == {
        values: cloudtrail.location + layout.render(values) for values in expected_days
    }

    # web_events: untouched, nothing outside the seeded range.
    web_events = glue_partitions(glue, tables["web_events"])
    assert web_events == before["web_events"]
    first, last = SEED_START.date(), (SEED_START + timedelta(days=SEED_DAYS)).date()
    assert all(first <= datetime.strptime(dt, "%Y-%m-%d").date() < last for dt, _ in web_events)

    # Each run: cloudtrail created its one day (after the deferred wait), web_events found 24 present.
    for run in finished:
        reports = mapped_reports(airflow, run["dag_run_id"])
        assert set(reports) == {"cloudtrail", "web_events"}
        assert reports["cloudtrail"]["mode"] == "interval"
        assert (reports["cloudtrail"]["created"], reports["cloudtrail"]["missing_in_s3"]) == (1, 0)
        assert reports["web_events"]["already_present"] == 24
        assert reports["web_events"]["created"] == 0
        assert parse_time(reports["cloudtrail"]["interval_start"]) == parse_time(run["data_interval_start"])


def test_the_backfill_held_the_glue_api_pool(backfill, airflow):
    """The backfill above ran 3 days x 2 tables = 6 load_partitions at once if it could (3 active runs,
    4 tasks of a DAG on the LocalExecutor); the glue_api pool has 2 slots. Read from the metadata database
    itself, not the API: the pool exists as configured, every load took a slot of it, and no instant saw
    more loads running than slots. (The loads did not defer: the seeded markers are there, and a deferred
    load would hold no slot while its recorded span kept running.)"""
    pools = settings().pools
    slots = pools.glue_api.slots
    assert query_metadata_db(
        airflow.env, "SELECT slots, include_deferred FROM slot_pool WHERE pool = 'glue_api'"
    ) == [(slots, False)]
    rows = query_metadata_db(
        airflow.env,
        "SELECT ti.pool, ti.state, ti.start_date, ti.end_date FROM task_instance ti "
        "JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id "
        "WHERE ti.dag_id = :dag AND ti.task_id = 'load_partitions' AND r.run_type = 'backfill'",
        dag=DAG_ID,
    )
    assert len(rows) == 6 > slots, rows
    assert {(pool, state) for pool, state, _, _ in rows} == {("glue_api", "success")}
    spans = [(_aware(start), _aware(end)) for _, _, start, end in rows]
    most = most_at_once(spans)
    print(f"\nglue_api: at most {most} of {len(rows)} loads at once, {slots} slots")
    assert 1 <= most <= slots, sorted(spans)


def test_creating_the_pools_again_resizes_them_without_duplicating(backfill, airflow):
    """What `make up` sends at every start (and MWAA once): over existing pools it overwrites them."""
    pools = settings().pools
    stored = "SELECT pool, slots, description, include_deferred FROM slot_pool WHERE pool <> 'default_pool'"
    bigger = pools.model_copy(update={"glue_api": pools.glue_api.model_copy(update={"slots": 7})})
    airflow.api("PATCH", "/pools", json=pool_bulk_request(bigger))
    transient = pools.emr_transient_clusters
    assert sorted(query_metadata_db(airflow.env, stored)) == [
        ("emr_transient_clusters", transient.slots, transient.description, True),
        ("glue_api", 7, pools.glue_api.description, False),
        ("spark_jobs", pools.spark_jobs.slots, pools.spark_jobs.description, True),
    ]
    created = airflow.create_pools()
    assert (sorted(created["success"]), created["errors"]) == (
        ["emr_transient_clusters", "glue_api", "spark_jobs"],
        [],
    )
    assert sorted(query_metadata_db(airflow.env, stored))[1][:2] == ("glue_api", pools.glue_api.slots)


def _aware(value) -> datetime:
    """A timestamp as SQLite (text) or PostgreSQL (datetime) returns it, in UTC."""
    moment = parse_time(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_bad_params_are_refused_or_fail_fast_without_touching_glue(airflow, dag_ready, glue):
    before = glue_snapshot(glue)
    runs_before = {r["dag_run_id"] for r in dag_runs(airflow)}

    # Not in the param's enum: the API refuses the trigger and creates no run.
    with pytest.raises(AirflowApiError) as refused:
        trigger(airflow, {"mode": "nonsense"})
    assert refused.value.status_code in (400, 422), refused.value
    assert "nonsense" in str(refused.value.body), refused.value.body
    assert {r["dag_run_id"] for r in dag_runs(airflow)} == runs_before

    # Valid for the schema but not for the config: select_tables fails at once, without retries.
    run = trigger(airflow, {"table": "no_such_table", "mode": "discover"})
    run = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=120)
    assert run["state"] == "failed", describe_run(airflow, DAG_ID, run["dag_run_id"])
    states = {ti["task_id"]: ti for ti in task_instances(airflow, DAG_ID, run["dag_run_id"])}
    assert states["select_tables"]["state"] == "failed"
    assert states["select_tables"]["try_number"] == 1, "AirflowFailException: no retry"
    assert states["load_partitions"]["state"] == "upstream_failed"
    # Well inside the 2-minute retry delay a retry would have waited.
    assert parse_time(run["end_date"]) - parse_time(run["start_date"]) < timedelta(seconds=90)
    assert "no_such_table" in task_log(airflow, DAG_ID, run["dag_run_id"], states["select_tables"])

    assert glue_snapshot(glue) == before
