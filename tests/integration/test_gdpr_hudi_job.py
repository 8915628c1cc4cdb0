"""The whole Hudi delete job for real: Hudi 1.0.2's Spark bundle on local Spark, the tables on moto S3
through S3A (``s3://`` as on EMR), a copy-on-write and a merge-on-read table, partitioned, seeded in
three commits that hold the subjects' rows (on merge-on-read, in base files and log files).

What is checked comes from the data, not from the job's result alone: the table read back (latest
snapshot and every commit still on the timeline, archived ones included, by time travel), and every
object under the table on S3 read by this test itself (base files with pyarrow, log files and every
other object for the ids' bytes). Also: a rerun changes nothing; a dataset config that does not fit the
table fails before anything is read or written; and no subject id reaches the job's stdout/stderr, its
result, or the Spark event log (what the Spark UI shows: job and SQL descriptions, plans).

Why subprocesses: the shared ``spark`` session has no Hudi (its Kryo serializer and catalog would change
the session for everyone), so every Spark program here is its own ``spark-submit``: the job exactly as the
local backend runs it (the ``SparkJob`` of ``dataplatform.gdpr.spark_erasure`` through
``dataplatform.spark.local_spark_submit_command``), and the two helper programs of ``tests/hudi_helpers.py``:
the seed, which Hudi writes once per test run (the session fixture ``hudi_tables``; each test that erases a
table gets its own copy of the objects), and the read-back after.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from dataplatform.config import GdprDataset
from dataplatform.gdpr import spark_erasure
from spark_jobs import gdpr_hudi_delete as hudi_job
from spark_jobs.common import hudi_layout
from spark_jobs.common.storage import Storage
from tests import hudi_helpers
from tests.hudi_helpers import FINAL_ROWS, SURVIVORS, TABLE_TYPES

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.hudi]

SUBJECTS = ["cust-000101", "cust-000202", "cust-000303"]
RUN_ID = "manual__2024-03-05T10:00:00+00:00"
BUCKET = "hudi-job-lake"


def dataset(key: str, location: str, **changes) -> GdprDataset:
    return GdprDataset.model_validate(
        {
            "format": "hudi",
            "database": "lake",
            "table": key,
            "location": location,
            "subject_columns": ["user_id", "peer_id"],
            "partition_column": "log_date",
            "record_key": "log_id",
            "precombine_field": "event_ts",
            "hudi_table_type": TABLE_TYPES[key],
            "engine": "spark",
            **changes,
        }
    )


def run_job(key: str, spec: dict, endpoint: str, event_log: Path) -> tuple[dict, str]:
    """The job as the local backend runs it, with the Spark event log on (the job's conf turns it off;
    this test turns it on to read what the Spark UI would show). Its result and its whole output."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    spec_key = f"_gdpr/{key}/spec.json"
    s3.put_object(Bucket=BUCKET, Key=spec_key, Body=json.dumps(spec).encode())
    job = spark_erasure.spark_job(key, dataset(key, spec["location"]), f"s3://{BUCKET}/{spec_key}")
    (event_log / key).mkdir(exist_ok=True)
    event_conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": (event_log / key).as_uri()}
    run = hudi_helpers.run_job(job, endpoint, event_conf)
    stdout = hudi_helpers.checked(run)
    result_text = Storage(s3).read_bytes(spec["result_uri"]).decode()
    return json.loads(result_text), stdout + run.stderr + result_text


def run_jobs(specs: dict[str, dict], endpoint: str, event_log: Path) -> dict[str, tuple[dict, str]]:
    """``run_job`` for every table at once, as the DAG's mapped tasks of two datasets may run: two
    spark-submits on separate tables (each its own event-log folder). Each job waits on S3 much of its
    time, so on two cores the pair finishes sooner than one job after the other."""
    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        running = {key: pool.submit(run_job, key, spec, endpoint, event_log) for key, spec in specs.items()}
        return {key: job.result() for key, job in running.items()}


def objects_under(s3, prefix: str) -> dict[str, str]:
    """Every object under ``prefix``: key -> ETag."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {obj["Key"]: obj["ETag"] for page in pages for obj in page.get("Contents", [])}


def stored_subjects(s3, prefix: str) -> dict[str, int]:
    """Read by this test from S3, not through Hudi: every base file's rows naming a subject (pyarrow), and
    every other object (log files, the timeline, the metadata table) holding a subject id's bytes."""
    holding = {}
    for key in objects_under(s3, prefix):
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        is_base_file = key.endswith(".parquet") and "/.hoodie/" not in key
        if is_base_file:
            rows = pq.read_table(io.BytesIO(body), columns=["user_id", "peer_id"]).to_pylist()
            found = sum(1 for row in rows if row["user_id"] in SUBJECTS or row["peer_id"] in SUBJECTS)
        else:
            found = sum(1 for subject in SUBJECTS if subject.encode() in body)
        if found:
            holding[key] = found
    return holding


def log_file_keys(s3, prefix: str) -> list[str]:
    """The table's log files (not the metadata table's, under ``.hoodie/``)."""
    return [
        key
        for key in objects_under(s3, prefix)
        if "/.hoodie/" not in key and hudi_layout.LOG_FILE.match(key.rsplit("/", 1)[-1])
    ]


@pytest.fixture(scope="module")
def erased(moto_server, hudi_tables, tmp_path_factory):
    """Both seeded tables on moto S3, erased, erased again; what each step left behind."""
    moto_server.reset()
    endpoint = moto_server.url
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    work = tmp_path_factory.mktemp("gdpr_hudi")
    event_log = work / "event-log"
    event_log.mkdir()
    locations = {key: f"s3://{BUCKET}/{key}/" for key in TABLE_TYPES}
    for key in TABLE_TYPES:
        hudi_helpers.put_table(s3, hudi_tables[key], locations[key])
    seeded = {
        key: {"subjects": stored_subjects(s3, f"{key}/"), "log_files": log_file_keys(s3, f"{key}/")}
        for key in TABLE_TYPES
    }
    specs = {
        key: spark_erasure.build_spec(
            key,
            dataset(key, locations[key]),
            SUBJECTS,
            RUN_ID,
            f"s3://{BUCKET}/_gdpr/",
            endpoint,
            "us-east-1",
        )
        for key in TABLE_TYPES
    }
    first = run_jobs(specs, endpoint, event_log)
    after_first = {key: objects_under(s3, f"{key}/") for key in TABLE_TYPES}
    stored = {key: stored_subjects(s3, f"{key}/") for key in TABLE_TYPES}
    second = run_jobs(specs, endpoint, event_log)
    after_second = {key: objects_under(s3, f"{key}/") for key in TABLE_TYPES}
    inspected = hudi_helpers.inspect(locations, specs["cow"], endpoint)
    event_log_text = "".join(
        path.read_text(errors="replace") for path in event_log.rglob("*") if path.is_file()
    )
    return {
        "s3": s3,
        "specs": specs,
        "seeded": seeded,
        "first": first,
        "second": second,
        "after_first": after_first,
        "after_second": after_second,
        "stored": stored,
        "inspected": inspected,
        "event_log": event_log_text,
    }


def test_the_seeded_tables_hold_the_subjects_in_base_and_log_files(erased):
    """The erasure below has something to do: subject rows in base files of both tables, and on
    merge-on-read in log files too."""
    for key in TABLE_TYPES:
        assert any(k.endswith(".parquet") for k in erased["seeded"][key]["subjects"]), key
    assert erased["seeded"]["mor"]["log_files"]
    assert set(erased["seeded"]["mor"]["log_files"]) & set(erased["seeded"]["mor"]["subjects"])


@pytest.mark.parametrize("key", list(TABLE_TYPES))
def test_exactly_the_subjects_rows_are_deleted_and_verified(erased, key):
    result, _ = erased["first"][key]
    assert result["status"] == "erased"
    assert (result["rows_deleted"], result["rows_deleted_by_subject"]) == (5, [3, 3, 0])
    # The file groups of l1, l2, l3, l5 and l8: one per partition; on merge-on-read l8's insert went to
    # a new file group of 2024-03-01 (l1's group had a log file by then).
    assert result["files_rewritten"] == {"cow": 3, "mor": 4}[key]
    check = result["verification"]
    assert result["commit"] is not None and check["passed"]
    found = check["rows_found"]
    assert (found["base_files"], found["log_files"], found["metadata_table"], found["latest"]) == (0, 0, 0, 0)
    # The delete commit was read back (time travel) or is gone with the files it read.
    assert result["commit"] in [*found, *check["cleaned"]]
    spark_erasure.check_result(result, key, subjects=len(SUBJECTS))
    latest = {log_id: tuple(values) for log_id, values in erased["inspected"][key]["latest"].items()}
    assert latest == {log_id: FINAL_ROWS[log_id] for log_id in SURVIVORS}


@pytest.mark.parametrize("key", list(TABLE_TYPES))
def test_no_commit_and_no_object_on_s3_holds_a_subject(erased, key):
    """Read back independently: every commit the timeline still knows (active and archived) by time
    travel, and every object under the table on S3 (base files, log files, timeline, metadata table)."""
    commits = erased["inspected"][key]["commits"]
    assert len(commits) >= 4, commits  # the three seeded commits and the delete (at least)
    assert all(count in (0, "cleaned") for count in commits.values()), commits
    assert erased["stored"][key] == {}
    assert not log_file_keys(erased["s3"], f"{key}/")


@pytest.mark.parametrize("key", list(TABLE_TYPES))
def test_a_rerun_changes_nothing(erased, key):
    result, _ = erased["second"][key]
    assert (result["status"], result["rows_deleted"], result["commit"]) == ("nothing_to_delete", 0, None)
    assert result["rows_deleted_by_subject"] == [0, 0, 0] and result["verification"]["passed"]
    assert erased["after_second"][key] == erased["after_first"][key]


def test_no_subject_id_in_output_results_or_the_spark_event_log(erased):
    """The event log holds what the Spark UI shows: job descriptions, SQL descriptions and plans."""
    event_log = erased["event_log"]
    assert "SparkListenerJobStart" in event_log and "SparkListenerSQLExecutionStart" in event_log
    assert "gdpr_hudi_delete: delete the subjects' rows" in event_log
    outputs = [
        output for key in TABLE_TYPES for output in (erased["first"][key][1], erased["second"][key][1])
    ]
    for subject_id in SUBJECTS:
        assert subject_id not in event_log
        for output in outputs:
            assert subject_id not in output


@pytest.mark.parametrize(
    "change",
    [{"record_key": "message"}, {"partition_column": "user_id"}, {"hudi_table_type": "COPY_ON_WRITE"}],
)
def test_a_dataset_that_does_not_fit_the_table_fails_before_any_write(erased, change):
    """The job's first step against the real table on S3 (it needs no Spark: ``object()`` stands in for
    the session, so any use of it would fail too)."""
    s3 = erased["s3"]
    before = objects_under(s3, "mor/")
    location = f"s3://{BUCKET}/mor/"
    spec = {
        **spark_erasure.build_spec(
            "mor",
            dataset("mor", location, **change),
            SUBJECTS,
            "manual__bad",
            f"s3://{BUCKET}/_gdpr/",
            None,
            "us-east-1",
        ),
    }
    with pytest.raises(RuntimeError, match=r"the Hudi table at .* has hoodie\.table") as raised:
        hudi_job.run(object(), spec, Storage(s3))
    assert all(subject not in str(raised.value) for subject in SUBJECTS)
    assert objects_under(s3, "mor/") == before
    assert not Storage(s3).exists(spec["result_uri"])
