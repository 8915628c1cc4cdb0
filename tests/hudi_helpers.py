"""Real Hudi tables for the tests: the app-log table both table types are seeded with, and the two Spark
programs that write them (``dataplatform.devstack.hudi_seed``) and read them back (``tests/hudi_inspect.py``),
each its own ``spark-submit`` with the locked Hudi bundle and S3A on the moto server, as the local backend
runs jobs (the shared ``spark`` fixture has no Hudi)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dataplatform import spark as spark_spec
from dataplatform.devstack import hudi_seed
from dataplatform.gdpr.spark_erasure import hudi_conf
from dataplatform.s3.objects import split_uri

REGION = "us-east-1"
CREDENTIALS = ("testing", "testing", None)
INSPECT = Path(__file__).with_name("hudi_inspect.py")
SCHEMA = "log_id string, log_date string, event_ts bigint, user_id string, peer_id string, message string"
COLUMNS = ["log_id", "log_date", "event_ts", "user_id", "peer_id", "message"]
# Three commits over three partitions; l1 and l4 are updated by the second (on merge-on-read: into log
# files), so subject rows sit in base files, in log files and in superseded file slices.
COMMITS = [
    {
        "operation": "insert",
        "rows": [
            ["l1", "2024-03-01", 1, "cust-000101", None, "a"],
            ["l2", "2024-03-01", 2, "cust-000999", "cust-000202", "b"],
            ["l3", "2024-03-02", 3, "cust-000101", "cust-000101", "c"],
            ["l4", "2024-03-02", 4, "cust-000999", None, "d"],
            ["l5", "2024-03-03", 5, "cust-000202", "cust-000101", "e"],
            ["l6", "2024-03-03", 6, None, None, "f"],
        ],
    },
    {
        "operation": "upsert",
        "rows": [
            ["l1", "2024-03-01", 11, "cust-000101", None, "a2"],
            ["l4", "2024-03-02", 14, "cust-000999", None, "d2"],
        ],
    },
    {
        "operation": "upsert",
        "rows": [
            ["l7", "2024-03-03", 7, "cust-000888", None, "g"],
            ["l8", "2024-03-01", 8, "cust-000202", None, "h"],
        ],
    },
]
# The rows after the three commits: log_id -> (log_date, event_ts, user_id, peer_id, message).
FINAL_ROWS = {
    "l1": ("2024-03-01", 11, "cust-000101", None, "a2"),
    "l2": ("2024-03-01", 2, "cust-000999", "cust-000202", "b"),
    "l3": ("2024-03-02", 3, "cust-000101", "cust-000101", "c"),
    "l4": ("2024-03-02", 14, "cust-000999", None, "d2"),
    "l5": ("2024-03-03", 5, "cust-000202", "cust-000101", "e"),
    "l6": ("2024-03-03", 6, None, None, "f"),
    "l7": ("2024-03-03", 7, "cust-000888", None, "g"),
    "l8": ("2024-03-01", 8, "cust-000202", None, "h"),
}
# Erasing cust-000101 and cust-000202 leaves these.
SURVIVORS = ["l4", "l6", "l7"]


def app_log_table(name: str, table_type: str, location: str) -> dict:
    return {
        "name": name,
        "location": location,
        "table_type": table_type,
        "record_key": "log_id",
        "partition_field": "log_date",
        "precombine_field": "event_ts",
        "schema": SCHEMA,
        "commits": COMMITS,
    }


def spark_env(endpoint: str) -> dict:
    import os

    return spark_spec.local_spark_env(
        os.environ, credentials=CREDENTIALS, region=REGION, endpoint_url=endpoint
    )


def checked(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, f"spark-submit failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    return run.stdout


def seed(tables: list[dict], endpoint: str) -> None:
    command = hudi_seed.seed_command(tables, endpoint, REGION)
    checked(subprocess.run(command, env=spark_env(endpoint), capture_output=True, text=True, timeout=900))


# Where ``seeded_tables`` has Hudi write the tables once per test run; emptied and removed after.
SEED_BUCKET = "hudi-seeded-tables"
TABLE_TYPES = {"cow": "COPY_ON_WRITE", "mor": "MERGE_ON_READ"}


def seeded_tables(endpoint: str) -> dict[str, dict[str, bytes]]:
    """The app-log table of each type (``cow``, ``mor``; table names the same) written by Hudi through
    S3A on moto in one ``seed`` (a spark-submit, three commits per table, about a minute), as every object
    it left under the table: key relative to the table's location -> bytes. ``put_table`` lays such a
    table at any location: Hudi keeps no absolute path in the table (timeline, metadata table and
    commit metadata name files relative to the base path), so the copy is the same table, and the tests
    that each erase one need not pay for a seed each."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    s3.create_bucket(Bucket=SEED_BUCKET)
    seed(
        [app_log_table(key, TABLE_TYPES[key], f"s3://{SEED_BUCKET}/{key}/") for key in TABLE_TYPES], endpoint
    )
    objects = {key: {} for key in TABLE_TYPES}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=SEED_BUCKET):
        for obj in page.get("Contents", []):
            table, relative = obj["Key"].split("/", 1)
            objects[table][relative] = s3.get_object(Bucket=SEED_BUCKET, Key=obj["Key"])["Body"].read()
            s3.delete_object(Bucket=SEED_BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=SEED_BUCKET)
    return objects


def put_table(s3, objects: dict[str, bytes], location: str) -> None:
    """A table of ``seeded_tables`` at ``location`` (``s3://bucket/prefix/``), object by object."""
    bucket, prefix = split_uri(location)
    for relative, body in sorted(objects.items()):
        s3.put_object(Bucket=bucket, Key=prefix + relative, Body=body)


def inspect(locations: dict[str, str], spec: dict, endpoint: str) -> dict:
    """Per table: the latest rows, and the subject rows at every commit Hudi still knows (active and
    archived), read by time travel (``"cleaned"`` where Hudi refuses: the files are gone)."""
    conf = {**spark_spec.local_conf(hudi_conf(), endpoint, REGION), "spark.ui.enabled": "false"}
    command = spark_spec.local_spark_submit_command(
        spark_submit=None,
        master="local[2]",
        conf=conf,
        application=str(INSPECT),
        application_args=[json.dumps({"locations": locations, "spec": spec, "columns": COLUMNS})],
    )
    stdout = checked(
        subprocess.run(command, env=spark_env(endpoint), capture_output=True, text=True, timeout=900)
    )
    (line,) = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def run_job(
    job, endpoint: str, extra_conf: dict | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``job`` (a ``SparkJob``) exactly as the local backend submits it, plus ``extra_conf``."""
    conf = {
        **spark_spec.local_conf(job.conf, endpoint, REGION),
        "spark.ui.enabled": "false",
        **(extra_conf or {}),
    }
    command = spark_spec.local_spark_submit_command(
        spark_submit=None,
        master="local[2]",
        conf=conf,
        application=spark_spec.local_application(job),
        application_args=list(job.args),
    )
    return subprocess.run(
        command, env={**spark_env(endpoint), **(env or {})}, capture_output=True, text=True, timeout=900
    )
