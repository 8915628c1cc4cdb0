"""The ``engine: spark`` Iceberg erasure for real: the local config's ``payment_ledger`` (written by pyiceberg
into the moto Glue catalog and a versioned S3 bucket) erased by ``spark_jobs/gdpr_iceberg_delete.py``
through the gdpr_erasure DAG (``dag.test()``; the local backend's spark-submit with the pinned Iceberg
runtime), beside the pyiceberg datasets (a request completes once every dataset verified it). The
expected rows come from the table as read before the run, filtered in plain Python.

The first run has the Spark event log on (into a temporary directory): it records what the Spark UI
shows, job and SQL descriptions and query plans. Neither it, nor anything the run printed or logged, nor
the reports and the job's result hold a subject id."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from dataplatform import spark as spark_spec
from dataplatform.config import settings
from dataplatform.devstack.seed import GDPR_DEMO, seed_gdpr
from dataplatform.gdpr import audit, requests, spark_erasure
from dataplatform.reports import report_key
from dataplatform.s3.objects import split_uri
from tests.airflow_helpers import run_repo_dag, task_states
from tests.gdpr_helpers import without_hudi_config_file
from tests.moto_lake import fresh_lake

pytestmark = [pytest.mark.integration, pytest.mark.spark]

DAG_ID = "gdpr_erasure"
KEY = "payment_ledger"
ERASE = GDPR_DEMO["erase"]
GROUP = f"erase_{KEY}"


@pytest.fixture(scope="module")
def lake(moto_server, airflow_db, tmp_path_factory):
    """The local config's Iceberg GDPR datasets on a fresh moto state; ``payment_ledger`` is the Spark one
    (the Hudi datasets are left out of the config: their tables are not seeded here)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATAPLATFORM_CONFIG", str(without_hudi_config_file(tmp_path_factory.mktemp("config"))))
        settings.cache_clear()
        lake = fresh_lake(moto_server)
        seed_gdpr(lake.catalog, lake.s3, settings())
        lake.dataset = settings().gdpr.datasets[KEY]
        assert lake.dataset.engine == "spark" and lake.dataset.format == "iceberg"
        yield lake
    settings.cache_clear()


def load(lake):
    return lake.catalog.load_table(lake.dataset.identifier)


def rows_of(table, snapshot_id: int | None = None) -> list[dict]:
    rows = table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()
    return sorted(rows, key=lambda row: row["payment_id"])


def holds_subject(row: dict) -> bool:
    return any(row[column] in ERASE for column in ("payer_id", "payee_id"))


def parquet_versions(lake, location: str) -> list[tuple[str, list[dict]]]:
    """Every version of every Parquet object under ``location``, read."""
    bucket, prefix = split_uri(location.rstrip("/") + "/")
    pages = lake.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    found = []
    for version in (v for page in pages for v in page.get("Versions", [])):
        if version["Key"].endswith(".parquet"):
            body = lake.s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
            found.append((version["Key"], pq.read_table(io.BytesIO(body["Body"].read())).to_pylist()))
    return found


def report(lake, run_id: str, name: str) -> dict:
    bucket, prefix = split_uri(settings().reports_uri)
    key = prefix + report_key(DAG_ID, run_id, name)
    return json.loads(lake.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def all_text_under(folder: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def before(lake):
    table = load(lake)
    return SimpleNamespace(table=table, rows=rows_of(table))


@pytest.fixture(scope="module")
def erased(lake, before, tmp_path_factory):
    """The run, with the Spark event log on; everything it printed and logged, and the event log."""
    event_log = tmp_path_factory.mktemp("spark-events")
    patch = pytest.MonkeyPatch()
    patch.setattr(
        spark_erasure,
        "PRIVACY_CONF",
        {"spark.eventLog.enabled": "true", "spark.eventLog.dir": event_log.as_uri()},
    )
    capture = io.StringIO()
    handler = logging.StreamHandler(capture)
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stdout(capture):
            run = run_repo_dag(DAG_ID, run_conf={"subject_ids": ERASE})
    finally:
        logging.getLogger().removeHandler(handler)
        patch.undo()
    return SimpleNamespace(run=run, output=capture.getvalue(), event_log=event_log)


def test_the_subjects_rows_are_gone_from_the_table_every_snapshot_and_every_file(lake, before, erased):
    states = task_states(erased.run)
    assert erased.run.state == "success", states
    assert states[f"{GROUP}.gdpr_{KEY}.spark_submit[-1]"] == "success"
    table = load(lake)
    expected = [row for row in before.rows if not holds_subject(row)]
    assert len(expected) < len(before.rows)
    assert rows_of(table) == expected
    for snapshot in table.snapshots():
        assert not [row for row in rows_of(table, snapshot.snapshot_id) if holds_subject(row)]
    # Every Parquet version under the location, referenced or not: none holds a subject's row.
    versions = parquet_versions(lake, table.location())
    assert versions and not [key for key, rows in versions if any(holds_subject(row) for row in rows)]
    got = report(lake, erased.run.run_id, KEY)
    assert got["outcome"] == "verified"
    assert got["rows_deleted"] == len(before.rows) - len(expected)
    assert got["expired_snapshots"]
    config = settings().gdpr
    done = requests.requests_by_status(lake.dynamodb, config.requests_table, requests.COMPLETED)
    assert sorted(r.subject_id for r in done) == sorted(ERASE)
    for request in done:
        records = audit.records_for(lake.dynamodb, config.audit_table, request.request_id)
        assert sorted(r["dataset"] for r in records) == sorted(config.datasets)
        assert all(r["outcome"] == "verified" for r in records)


def test_no_subject_id_in_the_event_log_the_output_the_reports_or_the_result(lake, erased):
    events = all_text_under(erased.event_log)
    # The event log did record the job: the DELETE's copy-on-write plan reading the subjects view (an
    # RDD of the driver's rows, shown without its data), the procedures' job descriptions. A literal in
    # the SQL text would be in it (checked by hand: ``WHERE payer_id IN ('cust-000099')`` is).
    assert "ReplaceData" in events and "Scan ExistingRDD" in events
    assert "Expiring snapshots" in events and "Rewriting manifests" in events
    assert "DELETE FROM" in erased.output
    # Every JSON object the run left in the lake's bucket: the reports, the job's result (the spec, which
    # holds the ids under the private work prefix, is deleted once recorded).
    bucket = split_uri(settings().reports_uri)[0]
    keys = [
        o["Key"]
        for o in lake.s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        if o["Key"].endswith(".json") and not o["Key"].startswith("iceberg/")
    ]
    assert any(key.endswith(f"{KEY}.json") for key in keys)
    assert any(key.startswith(f"_gdpr/{KEY}/") and key.endswith("/result.json") for key in keys)
    assert not any(key.endswith("/spec.json") for key in keys)
    stored = "".join(lake.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode() for key in keys)
    for subject_id in ERASE:
        assert subject_id not in events
        assert subject_id not in erased.output
        assert subject_id not in stored


def test_a_rerun_of_the_same_subjects_changes_nothing(lake, erased):
    table = load(lake)
    bucket, prefix = split_uri(table.location() + "/")
    listed = lake.s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    versions = sorted(v["VersionId"] for v in listed.get("Versions", []))

    again = run_repo_dag(DAG_ID, run_conf={"subject_ids": ERASE})

    assert again.state == "success", task_states(again)
    assert load(lake).metadata_location == table.metadata_location
    listed = lake.s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    assert sorted(v["VersionId"] for v in listed.get("Versions", [])) == versions


def test_a_bad_spec_fails_before_spark_starts_and_changes_nothing(lake, erased, tmp_path):
    spec = spark_erasure.build_spec(
        KEY, lake.dataset, ["cust-000001"], "manual__bad", tmp_path.as_uri(), lake.server.url, "us-east-1"
    )
    spec["subject_ids"] = ["cust-000001", "cust-000001"]
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    table = load(lake)

    job = spark_erasure.spark_job(KEY, lake.dataset, spec_path.as_uri())
    argv = spark_spec.spark_submit_argv(job, settings().spark, endpoint_url=lake.server.url)
    env = spark_spec.local_spark_env(os.environ, credentials=("testing", "testing", None), region="us-east-1")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "gdpr spec subject_ids[1] repeats subject_ids[0]" in output
    assert "cust-000001" not in output
    assert "SparkContext: Running Spark version" not in output
    assert load(lake).metadata_location == table.metadata_location
    assert not Path(spec["result_uri"].removeprefix("file://")).exists()
