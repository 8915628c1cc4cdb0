"""The ``backend: spark`` Iceberg maintenance for real: the local config's ``clickstream`` table (written by
pyiceberg into the moto Glue catalog and S3) maintained by ``spark_jobs/iceberg_maintenance.py`` through
the iceberg_maintenance DAG (``dag.test()``; the local backend's spark-submit with the pinned Iceberg
runtime). One seeded table serves the dry run, the run and the rerun, in order. What is checked is read
from the table (pyiceberg) and from S3, not from the job's report: the snapshots kept, the tag, the
unreferenced files tagged and still there, the reachable ones untouched."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from dataplatform import spark as spark_spec
from dataplatform.config import settings
from dataplatform.devstack.seed import seed_iceberg
from dataplatform.iceberg.files import FileIndex, reachable_files
from dataplatform.iceberg.snapshots import main_ancestry, start_of_day, to_ms
from dataplatform.reports import report_key
from dataplatform.s3.objects import list_objects, split_uri
from tests.airflow_helpers import run_repo_dag, task_states
from tests.moto_lake import fresh_lake

pytestmark = [pytest.mark.integration, pytest.mark.spark]

DAG_ID = "iceberg_maintenance"
TABLE = "clickstream"
GROUP = f"spark_{TABLE}"
SPARK_TASKS = (f"{GROUP}.plan[-1]", f"{GROUP}.iceberg_{TABLE}.spark_submit[-1]", f"{GROUP}.finish[-1]")


@pytest.fixture(scope="module")
def lake(moto_server, airflow_db):
    """The local config's Iceberg tables on a fresh moto state; ``clickstream`` is the Spark one."""
    lake = fresh_lake(moto_server)
    seed_iceberg(lake.catalog, lake.s3, settings())
    lake.policy = settings().iceberg.tables[TABLE]
    assert lake.policy.backend == "spark"
    return lake


def load(lake):
    return lake.catalog.load_table(lake.policy.identifier)


def reachable(table) -> set[str]:
    return set(reachable_files(FileIndex(table.io), table.metadata, table.metadata_location))


def object_tags(s3, uris) -> dict[str, dict[str, str]]:
    tags = {}
    for uri in uris:
        bucket, key = split_uri(uri)
        tag_set = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        tags[uri] = {tag["Key"]: tag["Value"] for tag in tag_set}
    return tags


def report(lake, run_id: str) -> dict:
    bucket, prefix = split_uri(settings().reports_uri)
    key = prefix + report_key(DAG_ID, run_id, TABLE)
    return json.loads(lake.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def run_spark_table(dry_run: bool = False):
    """The nightly run of tomorrow (it tags today, when the seed's snapshots were made), this table only."""
    logical = datetime.now(UTC) + timedelta(days=1)
    run = run_repo_dag(DAG_ID, logical_date=logical, run_conf={"tables": [TABLE], "dry_run": dry_run})
    states = task_states(run)
    assert run.state == "success", states
    assert all(states[task] == "success" for task in SPARK_TASKS), states
    return run


@pytest.fixture(scope="module")
def before(lake):
    table = load(lake)
    listed = list_objects(lake.s3, table.location())
    return SimpleNamespace(
        table=table,
        rows=table.scan().to_arrow().sort_by("order_id"),
        reachable=reachable(table),
        listed=set(listed),
        # What Iceberg's expire_snapshots must keep: main's last retain_last snapshots (the tag the run
        # makes points at main's head, among them).
        kept=set(main_ancestry(table.metadata)[: lake.policy.retain_last]),
    )


@pytest.fixture(scope="module")
def dry_run(lake, before):
    return run_spark_table(dry_run=True)


@pytest.fixture(scope="module")
def first_run(lake, before, dry_run):
    return run_spark_table()


def test_a_dry_run_changes_nothing_and_estimates_what_the_run_then_does(lake, before, dry_run, first_run):
    got = report(lake, dry_run.run_id)
    assert got["dry_run"] is True and got["expiry"]["estimate"] is True
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert got["tags"]["created"] == [f"daily-{today}"]
    expired = sorted(s.snapshot_id for s in before.table.snapshots() if s.snapshot_id not in before.kept)
    assert got["expiry"]["expired_ids"] == expired
    # The dry run's estimate is what the run then did.
    assert report(lake, first_run.run_id)["expiry"]["expired_ids"] == expired
    assert got["lifecycle"]["status"] == "not_checked"


def test_the_run_tags_expires_and_tags_the_unreferenced_files(lake, before, first_run):
    table = load(lake)
    assert table.scan().to_arrow().sort_by("order_id") == before.rows
    assert {s.snapshot_id for s in table.snapshots()} == before.kept

    # The day's tag: main's head at the end of today, kept through today + keep_days (whole minutes,
    # rounded up: at most a minute longer).
    today = datetime.now(UTC).date()
    tag = table.metadata.refs[f"daily-{today}"]
    head = table.metadata.snapshot_by_id(tag.snapshot_id)
    assert tag.snapshot_id == before.table.current_snapshot().snapshot_id
    keep_until = start_of_day(today) + timedelta(days=lake.policy.tag_rules[0].keep_days + 1)
    exact = to_ms(keep_until) - 1 - head.timestamp_ms
    assert exact < tag.max_ref_age_ms <= exact + 60_000

    # Unreferenced files are tagged and kept for the lifecycle rule; what the table reaches is untagged.
    now_reachable = reachable(table)
    unreferenced = before.reachable - now_reachable
    assert unreferenced and any(uri.endswith(".parquet") for uri in unreferenced)
    listed = set(list_objects(lake.s3, table.location()))
    assert unreferenced <= listed and now_reachable <= listed
    tag_key, tag_value = lake.policy.unreferenced.tag.key, lake.policy.unreferenced.tag.value
    tags = object_tags(lake.s3, listed)
    assert {uri for uri, t in tags.items() if t.get(tag_key) == tag_value} == unreferenced
    # The job's own metadata files are the only new objects.
    assert all(uri.endswith(".metadata.json") for uri in listed - before.listed)

    rules = lake.s3.get_bucket_lifecycle_configuration(Bucket=split_uri(table.location())[0])["Rules"]
    assert f"iceberg-unreferenced-{lake.policy.identifier}" in {rule["ID"] for rule in rules}
    got = report(lake, first_run.run_id)
    assert got["backend"] == "spark" and got["unreferenced"]["files"] == len(unreferenced)
    # One live file per partition: the compaction ran and had nothing to rewrite (no commit of its own).
    live_files = len(before.table.inspect.data_files())
    assert got["compaction"]["planned"] == [] and got["compaction"]["last_commit_ms"] is None
    assert got["compaction"]["files_before"] == got["compaction"]["files_after"] == live_files
    assert got["orphans"]["found"] == 0  # every listed object is younger than the minimum age


def test_a_rerun_changes_nothing(lake, first_run):
    table = load(lake)
    listed = list_objects(lake.s3, table.location())
    tags = object_tags(lake.s3, listed)

    rerun = run_spark_table()

    again = load(lake)
    assert again.metadata_location == table.metadata_location
    assert set(list_objects(lake.s3, again.location())) == set(listed)
    assert object_tags(lake.s3, listed) == tags
    got = report(lake, rerun.run_id)
    assert got["tags"]["created"] == [] and got["expiry"]["snapshots_expired"] == 0


def test_a_bad_spec_fails_before_spark_starts_and_changes_nothing(lake, first_run, tmp_path):
    """The job checks its spec (read from S3: trusted no more than input) before it starts a session."""
    from dataplatform.iceberg import spark_sql
    from dataplatform.iceberg.maintenance import RunClock
    from dataplatform.operators.iceberg_spark import maintenance_job

    now = datetime.now(UTC)
    spec = spark_sql.build_spec(
        TABLE, lake.policy, RunClock(now.date(), now), False, (tmp_path / "report.json").as_uri()
    )
    spec["table"] = "clickstream`; DROP TABLE x"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    table = load(lake)

    job = maintenance_job(TABLE, lake.policy, "plan")
    job = spark_spec.SparkJob(job.name, job.entry, ["--spec", spec_path.as_uri()], job.conf, job.sizing)
    argv = spark_spec.spark_submit_argv(job, settings().spark, endpoint_url=lake.server.url)
    env = spark_spec.local_spark_env(os.environ, credentials=("testing", "testing", None), region="us-east-1")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode != 0
    assert "table 'clickstream`; DROP TABLE x' is not a lower-case identifier" in done.stdout + done.stderr
    assert "SparkContext: Running Spark version" not in done.stderr
    assert load(lake).metadata_location == table.metadata_location
    assert not (tmp_path / "report.json").exists()
