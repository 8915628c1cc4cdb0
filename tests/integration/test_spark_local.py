"""The partition profile job on local Spark, and the local backend for real (spark-submit under dag.test)."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dataplatform import spark_jars
from dataplatform.config import LocalSparkSettings, SparkSettings
from dataplatform.spark import SparkJob
from tests.airflow_helpers import serialize_to_db

pytestmark = [pytest.mark.integration, pytest.mark.spark]

LOCAL = SparkSettings(backend="local", local=LocalSparkSettings(master="local[2]"))
# Small and quiet: no UI port, few shuffle partitions.
QUICK_CONF = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"}
LOGICAL_DATE = datetime(2024, 1, 2, tzinfo=UTC)

# (dt, hour) -> event minutes; one JSON line per event, split over two part files per partition.
EVENTS = {
    ("2024-01-01", "00"): [5, 17, 42],
    ("2024-01-01", "01"): [30],
    ("2024-01-02", "23"): [1, 2, 3, 4, 59],
}


def write_dataset(root: Path) -> Path:
    for (dt, hour), minutes in EVENTS.items():
        partition = root / f"dt={dt}" / f"hour={hour}"
        partition.mkdir(parents=True)
        lines = [
            json.dumps({"id": f"{dt}-{hour}-{minute}", "event_time": f"{dt}T{hour}:{minute:02d}:00Z"})
            for minute in minutes
        ]
        half = (len(lines) + 1) // 2
        (partition / "part-0.json").write_text("\n".join(lines[:half]) + "\n")
        if lines[half:]:
            (partition / "part-1.json").write_text("\n".join(lines[half:]) + "\n")
    return root


def expected_profile() -> list[dict]:
    return [
        {
            "dt": dt,
            "hour": hour,
            "rows": len(minutes),
            "min_event_time": f"{dt}T{hour}:{min(minutes):02d}:00.000Z",
            "max_event_time": f"{dt}T{hour}:{max(minutes):02d}:00.000Z",
        }
        for (dt, hour), minutes in sorted(EVENTS.items())
    ]


# -- the pure function on the shared session -----------------------------------------------------------


def test_profile_partitions_counts_rows_and_event_time_range(spark):
    from pyspark.sql import functions as F

    from spark_jobs.partition_profile import profile_partitions

    rows = [
        (dt, hour, f"{dt}T{hour}:{minute:02d}:00Z", f"{dt}-{hour}-{minute}")
        for (dt, hour), minutes in EVENTS.items()
        for minute in minutes
    ]
    df = spark.createDataFrame(rows, "dt string, hour string, event_time string, id string")
    profile = profile_partitions(df, ["dt", "hour"])
    iso = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"
    got = [
        row.asDict()
        for row in profile.select(
            "dt",
            "hour",
            "rows",
            F.date_format("min_event_time", iso).alias("min_event_time"),
            F.date_format("max_event_time", iso).alias("max_event_time"),
        ).collect()
    ]
    assert got == expected_profile()

    by_day = [row.asDict() for row in profile_partitions(df.drop("event_time"), ["dt"]).collect()]
    assert by_day == [{"dt": "2024-01-01", "rows": 4}, {"dt": "2024-01-02", "rows": 5}]

    with pytest.raises(ValueError, match=r"partition columns \['region'\] not in the dataset"):
        profile_partitions(df, ["dt", "region"])


# -- the local backend under dag.test ------------------------------------------------------------------


def run_job(dag_id: str, job: SparkJob):
    from airflow.sdk import DAG

    from dataplatform.operators.spark import spark_job_tasks

    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False) as dag:
        group = spark_job_tasks(job, LOCAL, aws_conn_id="aws_default", region_name="us-east-1")
    assert group.group_id == job.name
    assert sorted(dag.task_dict) == [f"{job.name}.spark_submit"]
    serialize_to_db(dag)
    return dag.test(logical_date=LOGICAL_DATE)


def test_factory_defaults_come_from_the_config():
    from airflow.sdk import DAG

    from dataplatform.config import settings
    from dataplatform.operators.spark import LocalSparkSubmitOperator, spark_job_tasks

    job = SparkJob(
        name="partition_profile", entry="spark_jobs.partition_profile", args=["--input", "{{ ds }}"]
    )
    with DAG(dag_id="defaults", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        spark_job_tasks(job)

    config = settings().spark  # tests run with include/config/local.yaml
    assert config.backend == "local"
    (task,) = dag.tasks
    assert isinstance(task, LocalSparkSubmitOperator)
    assert task.task_id == "partition_profile.spark_submit"
    assert (task.master, task.spark_submit) == (config.local.master, config.local.spark_submit)
    assert task.application == str(
        Path(__file__).resolve().parents[2] / "spark_jobs" / "partition_profile.py"
    )
    assert task.application_args == ["--input", "{{ ds }}"]
    assert "application_args" in LocalSparkSubmitOperator.template_fields


def test_local_backend_profiles_a_partitioned_dataset(airflow_db, tmp_path):
    events = write_dataset(tmp_path / "events")
    job = SparkJob(
        name="partition_profile",
        entry="spark_jobs.partition_profile",
        # The output path holds Jinja: the operator must render the application args.
        args=[
            "--input",
            str(events),
            "--output",
            f"{tmp_path}/profile/ds={{{{ ds }}}}",
            "--partition-columns",
            "dt,hour",
        ],
        conf=QUICK_CONF,
    )

    dagrun = run_job("test_spark_local_profile", job)

    assert dagrun.state == "success"
    assert dagrun.get_task_instance("partition_profile.spark_submit").state == "success"
    output = tmp_path / "profile" / "ds=2024-01-02"
    parts = sorted(output.glob("part-*.json"))
    assert len(parts) == 1, f"coalesce(1) should write one part file, got {parts}"
    assert (output / "_SUCCESS").exists()
    assert [json.loads(line) for line in parts[0].read_text().splitlines()] == expected_profile()


def test_local_backend_fails_the_task_when_the_job_fails(airflow_db, tmp_path):
    job = SparkJob(
        name="partition_profile",
        entry="spark_jobs.partition_profile",
        args=[
            "--input",
            str(tmp_path / "no-such-dataset"),
            "--output",
            str(tmp_path / "profile"),
            "--partition-columns",
            "dt,hour",
        ],
        conf=QUICK_CONF,
    )

    dagrun = run_job("test_spark_local_failure", job)

    assert dagrun.state == "failed"
    assert dagrun.get_task_instance("partition_profile.spark_submit").state == "failed"
    assert not (tmp_path / "profile").exists()


# -- the operator itself: failure message, streaming, on_kill -------------------------------------------


def write_script(path: Path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


class RecordingLog:
    """Stands in for the task logger: keeps every message, formatted."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def _record(self, message: str, *args) -> None:
        self.messages.append(message % args if args else message)

    info = warning = error = debug = exception = _record


def test_failure_message_has_exit_code_and_last_lines(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowException

    from dataplatform.operators.spark import LocalSparkSubmitOperator

    script = write_script(
        tmp_path / "noisy.py",
        """
        import sys
        import spark_jobs.common  # the repository root is on PYTHONPATH
        for number in range(100):
            print(f"line {number}", flush=True)
        sys.exit(3)
    """,
    )
    operator = LocalSparkSubmitOperator(
        task_id="noisy",
        application=script,
        application_args=[],
        conf=QUICK_CONF,
        master="local[1]",
        tail_lines=5,
    )
    log = RecordingLog()
    monkeypatch.setattr(LocalSparkSubmitOperator, "log", property(lambda self: log))
    with pytest.raises(AirflowException) as failure:
        operator.execute({})

    # Every line of output reached the task log, in order, one log call per line.
    (command,) = [index for index, message in enumerate(log.messages) if message.startswith("Running: ")]
    assert (
        "--master 'local[1]' --conf spark.ui.enabled=false --conf spark.sql.shuffle.partitions=2 "
        in (log.messages[command])
    )
    assert log.messages[command].endswith(f"{script}")
    # The locked jars stand in for EMR's; the connection's credentials are not in the logged command.
    assert str(spark_jars.jar_path("hadoop-aws")) in log.messages[command]
    assert "testing" not in log.messages[command]
    streamed = log.messages[command + 1 :]
    assert [line for line in streamed if line.startswith("line ")] == [f"line {n}" for n in range(100)]
    # The failure names the exit code and repeats the last 5 lines (spark-submit's shutdown lines follow
    # the script's own output).
    header, *tail = str(failure.value).splitlines()
    assert (
        header == f"spark-submit of {script} exited with code 3; last 5 of {len(streamed)} lines of output:"
    )
    assert tail == streamed[-5:]


def test_a_missing_jar_fails_the_task_naming_it_before_spark_starts(tmp_path, fake_jars):
    from airflow.sdk.exceptions import AirflowException

    from dataplatform.operators.spark import LocalSparkSubmitOperator

    marker = tmp_path / "started"
    script = write_script(tmp_path / "job.py", f"open({str(marker)!r}, 'w').write('ran')")
    fake_jars["aws-java-sdk-bundle"].unlink()
    operator = LocalSparkSubmitOperator(task_id="job", application=script, master="local[1]", conf=QUICK_CONF)
    with pytest.raises(AirflowException) as failure:
        operator.execute({})
    assert "not started" in str(failure.value)
    assert "org.example:aws-java-sdk-bundle:1.0" in str(failure.value)
    assert operator._process is None and not marker.exists()


def test_on_kill_terminates_the_process_group(tmp_path):
    from dataplatform.operators.spark import LocalSparkSubmitOperator

    pid_file = tmp_path / "driver.pid"
    script = write_script(
        tmp_path / "sleeper.py",
        f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(600)
    """,
    )
    operator = LocalSparkSubmitOperator(
        task_id="sleeper", application=script, master="local[1]", conf=QUICK_CONF, kill_timeout=10
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute({})
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the Python driver never started"
        time.sleep(0.2)
    driver_pid = int(pid_file.read_text())

    operator.on_kill()
    worker.join(timeout=30)

    assert not worker.is_alive()
    assert errors and "exited with code" in str(errors[0])
    assert operator._process.poll() is not None  # spark-submit (the JVM) is gone
    deadline = time.monotonic() + 10
    while running(driver_pid):  # and so is the Python driver it started
        assert time.monotonic() < deadline, f"the Python driver {driver_pid} survived on_kill"
        time.sleep(0.1)


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan may wait a moment to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
