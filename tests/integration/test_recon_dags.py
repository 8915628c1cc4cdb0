"""The recon_stateless and recon_stateful DAGs run for real (in-process ``dag.test()``): spark-submit of
the three Spark jobs (S3A on the moto server), the ledger and the index on the moto server, the config's
landing and work areas on s3://."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dataplatform.config import settings
from dataplatform.reconciliation import index, ledger
from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
from dataplatform.reports import report_key
from spark_jobs.common.storage import Storage, split_s3
from tests.airflow_helpers import run_repo_dag as run_dag
from tests.airflow_helpers import task_states as states
from tests.reconciliation_oracle import expected, read_landing, without_run_fields

pytestmark = [pytest.mark.integration, pytest.mark.spark]

START = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)


@pytest.fixture
def landing(aws, airflow_db):
    config = settings().reconciliation
    # moto starts empty for each test (the aws fixture): the lake bucket holds the landing and work areas
    # and the run reports.
    buckets = {split_s3(uri)[0] for uri in (config.landing_uri, config.work_uri, settings().reports_uri)}
    for bucket in buckets:
        aws.s3.create_bucket(Bucket=bucket)
    write_batches(
        Storage(aws.s3),
        config.landing_uri,
        GeneratorConfig(seed=5, n_keys=200, events_per_batch=400, malformed_share=0.02),
        batches=3,
        start=START,
    )
    return aws


def test_the_dags_reconcile_landed_batches_into_indexed_artifacts(landing):
    config = settings().reconciliation
    dynamodb = landing.client("dynamodb")

    first = run_dag("recon_stateless", run_conf={"max_batches": 2})
    assert first.state == "success", states(first)
    stateful = run_dag("recon_stateful")
    assert stateful.state == "success", states(stateful)
    second = run_dag("recon_stateless")
    assert second.state == "success", states(second)
    assert run_dag("recon_stateful").state == "success"

    want, want_stats = expected(read_landing(config.landing_uri, landing.s3))
    storage = Storage(landing.s3)
    # The index points into part files that spark-submit wrote to S3 through S3A.
    part_files = {
        item["file"]["S"]
        for page in dynamodb.get_paginator("scan").paginate(TableName=config.index_table)
        for item in page["Items"]
    }
    state_bucket, state_prefix = split_s3(config.work_uri + "state/")
    stored = {
        f"s3://{state_bucket}/{obj['Key']}"
        for obj in landing.s3.list_objects_v2(Bucket=state_bucket, Prefix=state_prefix)["Contents"]
    }
    assert part_files and part_files <= stored
    got = {key: index.get_artifact(dynamodb, storage, config.index_table, key) for key in want}
    assert {key: without_run_fields(artifact) for key, artifact in got.items()} == want
    counts = ledger.count_by_state(dynamodb, config.ledger_table)
    assert counts["INDEXED"] == 3 and counts["PENDING"] == 0

    # The stateless run's report says what it did, in numbers.
    bucket, prefix = split_s3(settings().reports_uri)
    key = prefix + report_key("recon_stateless", first.run_id, "commit")
    report = json.loads(landing.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert report["batches"] == sorted(report["batches"]) and len(report["batches"]) == 2
    assert report["stats"]["input_rows"] == 800
    assert "2 batches" in report["summary"]
    assert want_stats["quarantined_rows"] > 0


def test_a_stateful_run_with_nothing_ready_skips_its_work(landing):
    dagrun = run_dag("recon_stateful")
    assert dagrun.state == "success"
    got = states(dagrun)
    assert got["begin_stateful[-1]"] == "success"
    assert got["process.spark_submit[-1]"] == "skipped"


def test_a_bad_max_batches_fails_before_any_side_effect(landing):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="max_batches"):
        run_dag("recon_stateless", run_conf={"max_batches": 0})
    tables = landing.client("dynamodb").list_tables()["TableNames"]
    assert settings().reconciliation.ledger_table not in tables
