"""The whole Hudi delete job on local Spark with a real Hudi bundle, for a copy-on-write and a
merge-on-read table: exactly the subjects' rows go, the others stay as they were, no retained commit and
no base file still holds a subject row, and a rerun changes nothing.

Needs ``HUDI_BUNDLE_JAR``: the path of a Hudi Spark bundle that fits the installed pyspark (3.5: Hudi
0.15+, ``hudi-spark3.5-bundle_2.12``); none can be installed from the registries reachable here, so
without it every test skips. Run with ``HUDI_BUNDLE_JAR=/path/to.jar pytest -m hudi``.

Why subprocesses: the shared ``spark`` session fixture is started without the bundle, and a running JVM
cannot add Hudi's classes (``spark.jars`` is read once, when the SparkContext starts). So every Spark
program here is its own ``spark-submit`` with the bundle: the job itself exactly as the local backend
runs it (the ``SparkJob`` of ``dataplatform.gdpr.spark_erasure`` with ``hudi_jar`` set, through
``dataplatform.spark.local_spark_submit_command``), and one helper script (``HELPER`` below, written to
a temporary file) that seeds both tables before and reads them back after.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dataplatform import spark as spark_spec
from dataplatform.config import GdprDataset
from dataplatform.gdpr import spark_erasure

HUDI_JAR = os.environ.get("HUDI_BUNDLE_JAR", "")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.spark,
    pytest.mark.hudi,
    pytest.mark.skipif(
        not HUDI_JAR,
        reason="HUDI_BUNDLE_JAR is not set: no Hudi Spark bundle can be installed here (design.md, Environments)",
    ),
]

SUBJECTS = ["cust-000101", "cust-000202", "cust-000303"]
RUN_ID = "manual__2024-03-05T10:00:00+00:00"
TABLE_TYPES = {"cow": "COPY_ON_WRITE", "mor": "MERGE_ON_READ"}
# Spark programs here are tiny: fewer shuffle partitions and no UI keep them quick.
LOCAL_CONF = {"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"}

# Seeded in three commits; l1 and l4 are updated by the second (on merge-on-read: into log files), so
# subject rows sit in base files, in log files and in superseded file slices.
FINAL_ROWS = {
    # log_id: (log_date, event_ts, user_id, peer_id, message) after the three commits
    "l1": ("2024-03-01", 11, "cust-000101", None, "a2"),
    "l2": ("2024-03-01", 2, "cust-000999", "cust-000202", "b"),
    "l3": ("2024-03-02", 3, "cust-000101", "cust-000101", "c"),
    "l4": ("2024-03-02", 14, "cust-000999", None, "d2"),
    "l5": ("2024-03-03", 5, "cust-000202", "cust-000101", "e"),
    "l6": ("2024-03-03", 6, None, None, "f"),
    "l7": ("2024-03-03", 7, "cust-000888", None, "g"),
    "l8": ("2024-03-01", 8, "cust-000202", None, "h"),
}
SURVIVORS = ["l4", "l6", "l7"]

HELPER = r"""
import json
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from spark_jobs import gdpr_hudi_delete as job
from spark_jobs.common.storage import Storage

SCHEMA = "log_id string, log_date string, event_ts bigint, user_id string, peer_id string, message string"
COMMITS = [
    ("insert", [
        ("l1", "2024-03-01", 1, "cust-000101", None, "a"),
        ("l2", "2024-03-01", 2, "cust-000999", "cust-000202", "b"),
        ("l3", "2024-03-02", 3, "cust-000101", "cust-000101", "c"),
        ("l4", "2024-03-02", 4, "cust-000999", None, "d"),
        ("l5", "2024-03-03", 5, "cust-000202", "cust-000101", "e"),
        ("l6", "2024-03-03", 6, None, None, "f"),
    ]),
    ("upsert", [
        ("l1", "2024-03-01", 11, "cust-000101", None, "a2"),
        ("l4", "2024-03-02", 14, "cust-000999", None, "d2"),
    ]),
    ("upsert", [
        ("l7", "2024-03-03", 7, "cust-000888", None, "g"),
        ("l8", "2024-03-01", 8, "cust-000202", None, "h"),
    ]),
]


def seed(spark, tables):
    for name, (table_type, location) in tables.items():
        for operation, rows in COMMITS:
            (
                spark.createDataFrame(rows, SCHEMA).write.format("hudi")
                .option("hoodie.table.name", name)
                .option("hoodie.datasource.write.table.type", table_type)
                .option("hoodie.datasource.write.operation", operation)
                .option("hoodie.datasource.write.recordkey.field", "log_id")
                .option("hoodie.datasource.write.partitionpath.field", "log_date")
                .option("hoodie.datasource.write.precombine.field", "event_ts")
                .option("hoodie.datasource.write.hive_style_partitioning", "true")
                .option("hoodie.index.type", "BLOOM")
                # Column stats in the metadata table: cust-000101 is the smallest user_id of a file.
                .option("hoodie.metadata.enable", "true")
                .option("hoodie.metadata.index.column.stats.enable", "true")
                .mode("append")
                .save(location.rstrip("/"))
            )


def inspect(spark, tables, spec):
    out = {}
    for name, (table_type, location) in tables.items():
        spec = {**spec, "location": location}
        latest = job.read_table(spark, location).select(
            "log_id", "log_date", "event_ts", "user_id", "peer_id", "message"
        )
        commits = {}
        for commit in job.completed_commits(Storage(), location):
            try:
                commits[commit.instant] = job.count_subject_rows(job.read_table(spark, location, commit.as_of), spec)
            except Exception as exc:
                if job.CLEANED_MESSAGE not in str(exc):
                    raise
                commits[commit.instant] = "cleaned"
        root = Path(location.removeprefix("file://"))
        base_files = [str(p) for p in root.rglob("*.parquet") if ".hoodie" not in p.parts]
        base = spark.read.parquet(*base_files) if base_files else None
        out[name] = {
            "latest": {row.log_id: list(row)[1:] for row in latest.collect()},
            "commits": commits,
            "base_files": len(base_files),
            "subject_rows_in_base_files": job.count_subject_rows(base, spec) if base is not None else 0,
        }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    mode, arguments = sys.argv[1], json.loads(sys.argv[2])
    spark = SparkSession.builder.getOrCreate()
    if mode == "seed":
        seed(spark, arguments["tables"])
    else:
        inspect(spark, arguments["tables"], arguments["spec"])
    spark.stop()
"""


def dataset(key: str, location: str) -> GdprDataset:
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
        }
    )


def spark_submit(conf: dict, application: str, args: list[str]) -> str:
    """stdout of one ``spark-submit`` on ``local[2]`` (the job's output and the helper's)."""
    command = spark_spec.local_spark_submit_command(
        spark_submit=None,
        master="local[2]",
        conf={**conf, **LOCAL_CONF},
        application=application,
        application_args=args,
    )
    run = subprocess.run(
        command,
        env=spark_spec.local_spark_env(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (
        f"{' '.join(command[:3])} ... failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    )
    return run.stdout


def helper(tmp_path: Path, mode: str, arguments: dict) -> dict | None:
    script = tmp_path / "gdpr_hudi_helper.py"
    script.write_text(HELPER)
    stdout = spark_submit(spark_erasure.hudi_conf(HUDI_JAR), str(script), [mode, json.dumps(arguments)])
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1].removeprefix("RESULT ")) if lines else None


def run_job(key: str, spec: dict, work: Path) -> tuple[dict, str]:
    spec_path = work / f"{key}.spec.json"
    spec_path.write_text(json.dumps(spec))
    job = spark_erasure.spark_job(key, dataset(key, spec["location"]), spec_path.as_uri(), hudi_jar=HUDI_JAR)
    stdout = spark_submit(dict(job.conf), spark_spec.local_application(job), list(job.args))
    result_text = Path(spec["result_uri"].removeprefix("file://")).read_text()
    return json.loads(result_text), stdout + result_text


def files_under(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_size for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def erased(tmp_path_factory):
    """Seed both tables, erase, erase again; what each step left behind."""
    assert Path(HUDI_JAR).is_file(), f"HUDI_BUNDLE_JAR={HUDI_JAR} is not a file"
    tmp_path = tmp_path_factory.mktemp("gdpr_hudi")
    work = tmp_path / "work"
    work.mkdir()
    locations = {key: (tmp_path / key).as_uri() + "/" for key in TABLE_TYPES}
    tables = {key: (TABLE_TYPES[key], locations[key]) for key in TABLE_TYPES}
    helper(tmp_path, "seed", {"tables": tables})
    specs = {
        key: spark_erasure.build_spec(
            key, dataset(key, locations[key]), SUBJECTS, RUN_ID, work.as_uri(), None, "us-east-1"
        )
        for key in TABLE_TYPES
    }
    first = {key: run_job(key, specs[key], work) for key in TABLE_TYPES}
    files_after_first = {key: files_under(tmp_path / key) for key in TABLE_TYPES}
    second = {key: run_job(key, specs[key], work) for key in TABLE_TYPES}
    files_after_second = {key: files_under(tmp_path / key) for key in TABLE_TYPES}
    inspected = helper(tmp_path, "inspect", {"tables": tables, "spec": specs["cow"]})
    return first, second, files_after_first, files_after_second, inspected


@pytest.mark.parametrize("key", list(TABLE_TYPES))
def test_exactly_the_subjects_rows_are_deleted_and_verified(erased, key):
    first, _, _, _, inspected = erased
    result, output = first[key]
    assert result["status"] == "erased"
    assert (result["rows_deleted"], result["rows_deleted_by_subject"]) == (5, [3, 3, 0])
    check = result["verification"]
    assert result["commit"] is not None and check["passed"] and check["rows_found"]["base_files"] == 0
    # No live column-stats or record-index record of the metadata table names a subject.
    assert check["rows_found"]["metadata_table"] == 0
    # Merge-on-read: the delta commit is cleaned by the purge that follows the compaction.
    assert result["commit"] in [*check["rows_found"], *check["cleaned"]]
    spark_erasure.check_result(result, key, subjects=len(SUBJECTS))
    latest = {log_id: tuple(values) for log_id, values in inspected[key]["latest"].items()}
    assert latest == {log_id: FINAL_ROWS[log_id] for log_id in SURVIVORS}
    for subject_id in SUBJECTS:
        assert subject_id not in output


@pytest.mark.parametrize("key", list(TABLE_TYPES))
def test_no_retained_commit_and_no_base_file_holds_a_subject_row(erased, key):
    _, _, _, _, inspected = erased
    commits = inspected[key]["commits"]
    assert commits and all(count in (0, "cleaned") for count in commits.values()), commits
    assert any(count == 0 for count in commits.values())
    assert inspected[key]["base_files"] > 0
    assert inspected[key]["subject_rows_in_base_files"] == 0


@pytest.mark.parametrize("key", list(TABLE_TYPES))
def test_a_rerun_changes_nothing(erased, key):
    _, second, files_after_first, files_after_second, _ = erased
    result, output = second[key]
    assert (result["status"], result["rows_deleted"], result["commit"]) == ("nothing_to_delete", 0, None)
    assert result["rows_deleted_by_subject"] == [0, 0, 0] and result["verification"]["passed"]
    assert files_after_second[key] == files_after_first[key]
    for subject_id in SUBJECTS:
        assert subject_id not in output
