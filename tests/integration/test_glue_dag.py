"""The glue_partition_loader DAG run for real (in-process ``dag.test()``) against the moto server."""

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from dataplatform.config import settings
from dataplatform.devstack.airflow_env import query_metadata_db
from dataplatform.devstack.seed import seed_demo
from dataplatform.glue.discovery import split_s3_uri
from dataplatform.glue.layout import PartitionLayout
from dataplatform.reports import report_key
from tests.airflow_helpers import extra_links

pytestmark = pytest.mark.integration

DAG_ID = "glue_partition_loader"
SEED_START = datetime(2024, 3, 1)
REPO_ROOT = Path(__file__).resolve().parents[2]


class FreshDag:
    """Runs the DAG with ``dag.test()``, parsed afresh for every run: rendering templates in-process
    writes the rendered values back onto the task objects, so a reused DAG object would carry one run's
    params into the next (a real worker renders in a fresh process)."""

    def test(self, **kwargs):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "glue_partition_loader.py"))
        assert not bag.import_errors
        return bag.get_dag(DAG_ID).test(**kwargs)


@pytest.fixture
def dag(airflow_db):
    return FreshDag()


@pytest.fixture
def demo_lake(aws):
    seed_demo(aws.s3, aws.glue, settings(), start=SEED_START, days=10)
    return aws


def registered(glue, name):
    table = settings().glue.tables[name]
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName=table.database, TableName=table.table)
    return {
        tuple(p["Values"]): p["StorageDescriptor"]["Location"] for page in pages for p in page["Partitions"]
    }


def asset_events(run_ids: list[str]) -> dict[str, set[str]]:
    """Run id -> names of the assets glue_partition_loader's run updated, read from the metadata database."""
    rows = query_metadata_db(
        dict(os.environ),
        "SELECT e.source_run_id, a.name FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE e.source_dag_id = :dag",
        dag=DAG_ID,
    )
    events: dict[str, set[str]] = {}
    for run_id, name in rows:
        if run_id in run_ids:
            events.setdefault(run_id, set()).add(name)
    return events


def task_states(dagrun):
    return {(ti.task_id, ti.map_index): ti.state for ti in dagrun.get_task_instances()}


def read_report(s3, dagrun, table):
    bucket, prefix = split_s3_uri(settings().reports_uri)
    body = s3.get_object(Bucket=bucket, Key=prefix + report_key(DAG_ID, dagrun.run_id, table))["Body"].read()
    return json.loads(body)


def test_backfill_of_three_days_registers_exactly_those_days(dag, demo_lake):
    intervals, run_ids = [], []
    for day in (3, 4, 5):
        dagrun = dag.test(logical_date=datetime(2024, 3, day, tzinfo=UTC))
        assert dagrun.state == "success", task_states(dagrun)
        intervals.append((dagrun.data_interval_start, dagrun.data_interval_end))
        run_ids.append(dagrun.run_id)
    assert all(end - start == timedelta(days=1) for start, end in intervals), "daily data intervals"
    assert len({start for start, _ in intervals}) == 3

    web = PartitionLayout(settings().glue.tables["web_events"])
    trail = PartitionLayout(settings().glue.tables["cloudtrail"])
    assert set(registered(demo_lake.glue, "web_events")) == {
        values for start, end in intervals for values in web.values_for_interval(start, end)
    }
    assert set(registered(demo_lake.glue, "cloudtrail")) == {
        values for start, end in intervals for values in trail.values_for_interval(start, end)
    }
    assert len(registered(demo_lake.glue, "web_events")) == 72
    assert len(registered(demo_lake.glue, "cloudtrail")) == 3
    day = intervals[1][0].strftime("%Y-%m-%d")
    location = registered(demo_lake.glue, "web_events")[(day, "07")]
    assert location == f"s3://dataplatform-local-lake/web_events/dt={day}/hour=07/"

    # The report of the last run, in S3 as in XCom, says what the run did.
    report = read_report(demo_lake.s3, dagrun, "web_events")
    assert (report["mode"], report["listed"], report["created"], report["already_present"]) == (
        "interval",
        24,
        24,
        0,
    )
    assert report["interval_start"] == intervals[-1][0].isoformat()

    # Lineage: each run's loads left asset events for both Glue tables in the metadata database.
    tables = {f"glue://{t.database}/{t.table}" for t in settings().glue.tables.values()}
    events = asset_events(run_ids)
    assert {run_id: events.get(run_id) for run_id in run_ids} == dict.fromkeys(run_ids, tables)

    # Each load task links to its Glue table and to its run's reports on the lake-health page (relative
    # to the UI's base URL), as the UI reads them from the run's XCom.
    for ti in dagrun.get_task_instances():
        if ti.task_id != "load_partitions":
            continue
        table = settings().glue.tables[ti.rendered_map_index]
        assert extra_links(dagrun, ti.task_id, ti.map_index) == {
            "Glue table": "https://us-east-1.console.aws.amazon.com/glue/home?region=us-east-1"
            f"#/v2/data-catalog/tables/view/{table.table}?database={table.database}",
            "Run report": f"lake-health/report?dag_id={DAG_ID}&run_id={quote(dagrun.run_id, safe='')}",
        }

    # Rerunning a finished day changes nothing.
    before = registered(demo_lake.glue, "web_events"), registered(demo_lake.glue, "cloudtrail")
    dagrun = dag.test(logical_date=datetime(2024, 3, 4, tzinfo=UTC))
    assert dagrun.state == "success"
    assert (registered(demo_lake.glue, "web_events"), registered(demo_lake.glue, "cloudtrail")) == before
    report = read_report(demo_lake.s3, dagrun, "web_events")
    assert (report["created"], report["already_present"], report["glue_write_calls"]) == (0, 24, 0)


def test_manual_discover_of_one_table_with_dry_run_then_for_real(dag, demo_lake):
    dagrun = dag.test(run_conf={"table": "web_events", "mode": "discover", "dry_run": True})
    assert dagrun.state == "success"
    assert registered(demo_lake.glue, "web_events") == {}
    assert read_report(demo_lake.s3, dagrun, "web_events")["would_create"] == 240

    dagrun = dag.test(run_conf={"table": "web_events", "mode": "discover"})
    assert dagrun.state == "success"
    assert len(registered(demo_lake.glue, "web_events")) == 240
    assert registered(demo_lake.glue, "cloudtrail") == {}, "the table param limits the run to one table"
    report = read_report(demo_lake.s3, dagrun, "web_events")
    assert (report["created"], report["invalid"]) == (240, 5)
    assert "dt=garbage/" in report["invalid_prefixes"]


@pytest.mark.parametrize(
    "conf",
    [
        {"table": "no_such_table", "mode": "discover"},
        {"mode": "msck", "dry_run": True},
        {"mode": "discover", "dry_run": "yes"},
    ],
)
def test_bad_params_fail_before_any_side_effect(dag, demo_lake, conf):
    from airflow.sdk.exceptions import ParamValidationError

    try:
        dagrun = dag.test(run_conf=conf)
    except ParamValidationError:
        # The params' JSON schema rejected it (the UI form does the same): no run at all.
        assert conf.get("dry_run") == "yes"
    else:
        assert dagrun.state == "failed"
        states = task_states(dagrun)
        assert states[("select_tables", -1)] == "failed"
        assert all(state != "success" for (task, _), state in states.items() if task == "load_partitions")
    assert registered(demo_lake.glue, "web_events") == {}
    assert registered(demo_lake.glue, "cloudtrail") == {}


def test_msck_mode_runs_the_repair_statement_in_athena(dag, demo_lake):
    dagrun = dag.test(run_conf={"table": "web_events", "mode": "msck"})
    assert dagrun.state == "success", task_states(dagrun)
    athena = demo_lake.client("athena")
    queries = [
        athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
        for qid in athena.list_query_executions()["QueryExecutionIds"]
    ]
    assert [q["Query"] for q in queries] == ["MSCK REPAIR TABLE `demo_lake`.`web_events`"]
    assert queries[0]["ResultConfiguration"]["OutputLocation"].startswith(
        "s3://dataplatform-local-lake/_athena/"
    )
    assert read_report(demo_lake.s3, dagrun, "web_events")["state"] == "SUCCEEDED"


def test_crawler_mode_starts_the_tables_crawler_and_waits(dag, demo_lake):
    import urllib.request

    # moto advances a crawl one state per describe; make it finish at the first poll.
    request = urllib.request.Request(
        f"{demo_lake.url}/moto-api/state-manager/set-transition",
        data=json.dumps({"model_name": "glue::crawl", "transition": {"progression": "immediate"}}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request).close()
    demo_lake.glue.create_crawler(
        Name="cloudtrail_logs_crawler",
        Role="arn:aws:iam::123456789012:role/crawler",
        DatabaseName="demo_lake",
        Targets={"S3Targets": [{"Path": "s3://dataplatform-local-lake/cloudtrail/"}]},
    )
    dagrun = dag.test(run_conf={"table": "cloudtrail", "mode": "crawler"})
    assert dagrun.state == "success", task_states(dagrun)
    crawler = demo_lake.glue.get_crawler(Name="cloudtrail_logs_crawler")["Crawler"]
    assert crawler["LastCrawl"]["Status"] in ("COMPLETED", "SUCCEEDED")
    assert read_report(demo_lake.s3, dagrun, "cloudtrail")["crawler"] == "cloudtrail_logs_crawler"


def test_interval_waits_deferred_for_a_late_success_marker(dag, demo_lake):
    import threading
    import time

    # The cloudtrail partition of 2024-03-07 has data but its writer has not finished: no marker yet.
    marker = {"Bucket": "dataplatform-local-lake", "Key": "cloudtrail/2024/03/07/_SUCCESS"}
    demo_lake.s3.delete_object(**marker)
    arrival = threading.Timer(4.0, lambda: demo_lake.s3.put_object(**marker, Body=b""))
    arrival.start()
    started = time.monotonic()
    try:
        dagrun = dag.test(logical_date=datetime(2024, 3, 8, tzinfo=UTC))
    finally:
        arrival.cancel()

    assert dagrun.data_interval_start == datetime(2024, 3, 7, tzinfo=UTC)
    assert dagrun.state == "success", task_states(dagrun)
    assert time.monotonic() - started >= 4, "the task must have waited for the marker"
    assert set(registered(demo_lake.glue, "cloudtrail")) == {("2024", "03", "07")}
    assert read_report(demo_lake.s3, dagrun, "cloudtrail")["created"] == 1


def test_impossible_dates_and_leftover_only_prefixes_are_never_registered(dag, demo_lake):
    lake, s3 = "dataplatform-local-lake", demo_lake.s3
    # cloudtrail ({year}/{month}/{day}, waits for _SUCCESS): days that do not exist, each with data and
    # its marker; and 2024-03-06, whose writer succeeded with no rows (only its _SUCCESS is left).
    impossible = {
        "2024/02/30/": "day 30 is out of range for February 2024",
        "2023/02/29/": "day 29 is out of range for February 2023",
        "2024/04/31/": "day 31 is out of range for April 2024",
    }
    for prefix in impossible:
        s3.put_object(Bucket=lake, Key=f"cloudtrail/{prefix}part-00000.json", Body=b'{"event_id": "x"}\n')
        s3.put_object(Bucket=lake, Key=f"cloudtrail/{prefix}_SUCCESS", Body=b"")
    s3.delete_object(Bucket=lake, Key="cloudtrail/2024/03/06/part-00000.json")
    # web_events: three hours of 2024-03-06 whose writers left only a marker, a failed attempt, or
    # Hadoop's $folder$ markers.
    leftovers = {
        "05": "_SUCCESS",
        "06": "_temporary/0/_temporary/attempt_0001_m_000000_0/part-00000.json",
        "07": "_temporary_$folder$",
    }
    for hour, key in leftovers.items():
        s3.delete_object(Bucket=lake, Key=f"web_events/dt=2024-03-06/hour={hour}/part-00000.json")
        s3.put_object(Bucket=lake, Key=f"web_events/dt=2024-03-06/hour={hour}/{key}", Body=b"")
    s3.put_object(Bucket=lake, Key="web_events/dt=2024-03-06/hour=07_$folder$", Body=b"")
    web = PartitionLayout(settings().glue.tables["web_events"])
    web_day = web.values_for_interval(datetime(2024, 3, 6), datetime(2024, 3, 7))
    web_with_data = {v for v in web_day if v[1] not in leftovers}

    # The scheduled run whose data interval is 2024-03-06.
    dagrun = dag.test(logical_date=datetime(2024, 3, 7, tzinfo=UTC))
    assert dagrun.state == "success", task_states(dagrun)
    assert dagrun.data_interval_start == datetime(2024, 3, 6, tzinfo=UTC)
    assert set(registered(demo_lake.glue, "web_events")) == web_with_data
    assert registered(demo_lake.glue, "cloudtrail") == {}
    web_report, trail_report = read_report(s3, dagrun, "web_events"), read_report(s3, dagrun, "cloudtrail")
    assert (web_report["created"], web_report["empty"], web_report["missing_in_s3"]) == (21, 3, 0)
    assert (trail_report["created"], trail_report["empty"], trail_report["missing_in_s3"]) == (0, 1, 0)
    assert trail_report["empty_prefixes"] == ["2024/03/06/"]

    # Discover everything: the impossible days are reported with their reason, the empty prefixes skipped.
    dagrun = dag.test(run_conf={"mode": "discover"})
    assert dagrun.state == "success", task_states(dagrun)
    seeded_web = web.values_for_interval(SEED_START, SEED_START + timedelta(days=10))
    trail = PartitionLayout(settings().glue.tables["cloudtrail"])
    seeded_trail = trail.values_for_interval(SEED_START, SEED_START + timedelta(days=90))
    assert set(registered(demo_lake.glue, "web_events")) == set(seeded_web) - (set(web_day) - web_with_data)
    assert set(registered(demo_lake.glue, "cloudtrail")) == set(seeded_trail) - {("2024", "03", "06")}
    trail_report = read_report(s3, dagrun, "cloudtrail")
    assert {p: trail_report["invalid_prefixes"][p] for p in impossible} == impossible
    assert (trail_report["created"], trail_report["invalid"], trail_report["empty"]) == (89, 2 + 3, 1)
    web_report = read_report(s3, dagrun, "web_events")
    assert (web_report["created"], web_report["invalid"], web_report["empty"]) == (240 - 21 - 3, 5, 3)

    # A rerun registers nothing.
    before = registered(demo_lake.glue, "web_events"), registered(demo_lake.glue, "cloudtrail")
    dagrun = dag.test(run_conf={"mode": "discover"})
    assert dagrun.state == "success", task_states(dagrun)
    assert (registered(demo_lake.glue, "web_events"), registered(demo_lake.glue, "cloudtrail")) == before
    for table in ("web_events", "cloudtrail"):
        assert read_report(s3, dagrun, table)["glue_write_calls"] == 0


@pytest.fixture
def events_config(tmp_path, monkeypatch):
    """local.yaml with web_events in mode events (its queue ``it-web-events``), for one test."""
    import yaml

    from dataplatform.config import CONFIG_DIR

    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["glue"]["tables"]["web_events"].update(mode="events", events_queue="it-web-events")
    path = tmp_path / "local-events.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DATAPLATFORM_CONFIG", str(path))
    settings.cache_clear()
    yield settings()
    settings.cache_clear()


def test_scheduled_runs_drain_the_queue_of_a_table_in_events_mode(dag, demo_lake, events_config):
    from dataplatform.devstack.seed import put_partitions

    s3, bucket = demo_lake.s3, "dataplatform-local-lake"
    other = {
        "Id": "another-team",
        "QueueArn": "arn:aws:sqs:us-east-1:123456789012:x",
        "Events": ["s3:ObjectRemoved:*"],
    }
    demo_lake.client("sqs").create_queue(QueueName="x")
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [other]}
    )

    # The first scheduled run sets up the queue and its notification; the demo lake was written before,
    # so its queue holds only S3's test event (history is for mode=discover), while cloudtrail, still in
    # interval mode, registers its day.
    dagrun = dag.test(logical_date=datetime(2024, 3, 4, tzinfo=UTC))
    assert dagrun.state == "success", task_states(dagrun)
    assert task_states(dagrun)[("setup_event_queues", -1)] == "success"
    assert registered(demo_lake.glue, "web_events") == {}
    assert set(registered(demo_lake.glue, "cloudtrail")) == {("2024", "03", "03")}
    queues = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert sorted(q["Id"] for q in queues) == ["another-team", "glue-partitions-demo_lake-web_events"]

    # New hours land: the next scheduled run registers them from their events, listing nothing.
    web = events_config.glue.tables["web_events"]
    hours = PartitionLayout(web).values_for_interval(datetime(2024, 3, 20), datetime(2024, 3, 20, 6))
    put_partitions(s3, web, hours, success_marker=True)
    dagrun = dag.test(logical_date=datetime(2024, 3, 5, tzinfo=UTC))
    assert dagrun.state == "success", task_states(dagrun)
    assert registered(demo_lake.glue, "web_events") == {
        v: f"s3://{bucket}/web_events/dt={v[0]}/hour={v[1]}/" for v in hours
    }
    report = read_report(s3, dagrun, "web_events")
    assert (report["mode"], report["created"], report["s3_list_calls"]) == ("events", 6, 0)
    assert (report["messages_received"], report["messages_deleted"]) == (12, 12)

    # A rerun: the setup finds everything in place, the queue is empty, nothing is written.
    dagrun = dag.test(logical_date=datetime(2024, 3, 5, tzinfo=UTC))
    assert dagrun.state == "success", task_states(dagrun)
    report = read_report(s3, dagrun, "web_events")
    assert (report["messages_received"], report["created"], report["glue_write_calls"]) == (0, 0, 0)
    assert len(s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]) == 2
