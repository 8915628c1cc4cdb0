"""The SparkJob spec and its pure builders: argv, EMR step, Serverless job driver, cluster config, zip."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dataplatform import spark
from dataplatform.config import EmrServerlessSettings, EmrSettings, LocalSparkSettings, SparkSettings
from dataplatform.spark import SparkJob, SparkSizing

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
PYSPARK_DIR = Path(importlib.util.find_spec("pyspark").submodule_search_locations[0])
PYSPARK_SUBMIT = str(PYSPARK_DIR / "bin" / "spark-submit")

ARGS = [
    "--input",
    "s3://lake/raw/web_events/",
    "--output",
    "s3://lake/profiles/ds={{ ds }}/",
    "--partition-columns",
    "dt,hour",
]


@pytest.fixture
def job() -> SparkJob:
    return SparkJob(
        name="partition_profile",
        entry="spark_jobs.partition_profile",
        args=ARGS,
        conf={"spark.sql.shuffle.partitions": "64", "spark.speculation": "false"},
        sizing=SparkSizing(
            driver_cores=2, driver_memory="4g", executor_cores=4, executor_memory="8g", executor_instances=3
        ),
    )


def emr_settings(**emr) -> SparkSettings:
    return SparkSettings(backend="emr", code_uri="s3://ops/code", emr=EmrSettings(**emr))


def serverless_settings(**serverless) -> SparkSettings:
    return SparkSettings(
        backend="emr_serverless",
        code_uri="s3://ops/code/",
        emr_serverless=EmrServerlessSettings(
            application_id="app", execution_role_arn="arn:aws:iam::1:role/r", **serverless
        ),
    )


# -- local ---------------------------------------------------------------------------------------------


def test_local_argv_uses_installed_pyspark_job_conf_s3a_and_the_locked_jars(job, fake_jars):
    settings = SparkSettings(backend="local", local=LocalSparkSettings(master="local[3]"))
    argv = spark.spark_submit_argv(job, settings, endpoint_url="http://127.0.0.1:5000", region="us-east-1")
    assert argv == [
        PYSPARK_SUBMIT,
        "--master",
        "local[3]",
        "--conf",
        "spark.sql.shuffle.partitions=64",
        "--conf",
        "spark.speculation=false",
        "--conf",
        "spark.hadoop.fs.s3.impl=org.apache.hadoop.fs.s3a.S3AFileSystem",
        "--conf",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl=org.apache.hadoop.fs.s3a.S3A",
        "--conf",
        "spark.hadoop.fs.s3a.endpoint.region=us-east-1",
        "--conf",
        "spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:5000",
        "--conf",
        "spark.hadoop.fs.s3a.path.style.access=true",
        "--conf",
        "spark.hadoop.fs.s3a.connection.ssl.enabled=false",
        "--conf",
        f"spark.jars={fake_jars['hadoop-aws']},{fake_jars['aws-java-sdk-bundle']}",
        str(REPO_ROOT / "spark_jobs" / "partition_profile.py"),
        "--input",
        "s3://lake/raw/web_events/",
        "--output",
        "s3://lake/profiles/ds={{ ds }}/",
        "--partition-columns",
        "dt,hour",
    ]


def test_local_argv_honours_configured_spark_submit(job, fake_jars):
    submit = "/opt/spark/bin/spark-submit"
    local = LocalSparkSettings(master="local[2]", spark_submit=submit)
    settings = SparkSettings(backend="local", local=local)
    assert spark.spark_submit_argv(job, settings)[:3] == [submit, "--master", "local[2]"]


def test_local_env_puts_repo_root_first_on_pythonpath():
    base = {"PYTHONPATH": "/somewhere/else", "HOME": "/home/x"}
    env = spark.local_spark_env(base, python="/venv/bin/python")
    assert env["PYTHONPATH"].split(":") == [str(REPO_ROOT), "/somewhere/else"]
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == "/venv/bin/python"
    assert env["HOME"] == "/home/x"
    assert spark.local_spark_env({}, python="/p")["PYTHONPATH"] == str(REPO_ROOT)
    # An interpreter the caller chose explicitly is kept.
    assert spark.local_spark_env({"PYSPARK_PYTHON": "/usr/bin/python3"}, python="/p")["PYSPARK_PYTHON"] == (
        "/usr/bin/python3"
    )


# -- EMR -----------------------------------------------------------------------------------------------


EXPECTED_CLUSTER_CONF = [
    "--conf",
    "spark.driver.cores=2",
    "--conf",
    "spark.driver.memory=4g",
    "--conf",
    "spark.executor.cores=4",
    "--conf",
    "spark.executor.memory=8g",
    "--conf",
    "spark.executor.instances=3",
    "--conf",
    "spark.sql.shuffle.partitions=64",
    "--conf",
    "spark.speculation=false",
]


def test_emr_step_is_exact(job):
    assert spark.emr_step(job, emr_settings()) == {
        "Name": "partition_profile",
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": [
                "spark-submit",
                "--deploy-mode",
                "cluster",
                *EXPECTED_CLUSTER_CONF,
                "--py-files",
                "s3://ops/code/spark_jobs.zip",
                "s3://ops/code/spark_jobs/partition_profile.py",
                "--input",
                "s3://lake/raw/web_events/",
                "--output",
                "s3://lake/profiles/ds={{ ds }}/",
                "--partition-columns",
                "dt,hour",
            ],
        },
    }


def test_emr_step_without_executor_instances_leaves_them_to_dynamic_allocation():
    job = SparkJob(name="p", entry="spark_jobs.partition_profile")
    assert spark.emr_step(job, emr_settings())["HadoopJarStep"]["Args"] == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--conf",
        "spark.driver.cores=1",
        "--conf",
        "spark.driver.memory=2g",
        "--conf",
        "spark.executor.cores=2",
        "--conf",
        "spark.executor.memory=4g",
        "--py-files",
        "s3://ops/code/spark_jobs.zip",
        "s3://ops/code/spark_jobs/partition_profile.py",
    ]


def test_emr_builders_need_a_code_uri(job):
    local = SparkSettings(backend="local")
    with pytest.raises(ValueError, match=r"spark\.code_uri is required"):
        spark.emr_step(job, local)
    with pytest.raises(ValueError, match=r"spark\.code_uri is required"):
        spark.emr_serverless_job_driver(job, local)


def test_transient_cluster_config_fills_template_from_settings(job):
    settings = emr_settings(release_label="emr-7.2.0", log_uri="s3://ops/emr-logs/")
    step = spark.emr_step(job, settings)
    config = spark.transient_cluster_config(
        "include/emr/transient_cluster.json",
        settings,
        "partition_profile (dag run)",
        step=step,
        tags={"dataplatform:spark-job": "partition_profile"},
    )
    assert config["Name"] == "partition_profile (dag run)"
    assert config["ReleaseLabel"] == "emr-7.2.0"
    assert config["LogUri"] == "s3://ops/emr-logs/"
    assert config["Applications"] == [{"Name": "Spark"}]
    # The cluster runs the job's step from its request and ends with it; a failed step ends it with errors.
    assert config["Steps"] == [{**step, "ActionOnFailure": "TERMINATE_CLUSTER"}]
    assert step["ActionOnFailure"] == "CONTINUE"  # the step given is not changed
    assert config["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert "AutoTerminationPolicy" not in config  # never idle: it ends with its only step
    assert config["Tags"] == [
        {"Key": "dataplatform:managed-by", "Value": "airflow"},
        {"Key": "dataplatform:spark-job", "Value": "partition_profile"},
    ]
    fleets = {fleet["InstanceFleetType"]: fleet for fleet in config["Instances"]["InstanceFleets"]}
    assert set(fleets) == {"MASTER", "CORE", "TASK"}
    for on_demand in ("MASTER", "CORE"):
        assert fleets[on_demand]["TargetOnDemandCapacity"] >= 1
        assert "TargetSpotCapacity" not in fleets[on_demand]
    task = fleets["TASK"]
    assert task["TargetSpotCapacity"] == 8
    assert "TargetOnDemandCapacity" not in task
    assert len({item["InstanceType"] for item in task["InstanceTypeConfigs"]}) >= 4
    spot = task["LaunchSpecifications"]["SpotSpecification"]
    assert spot["AllocationStrategy"] == "price-capacity-optimized"
    assert "InstanceGroups" not in config["Instances"]


def test_transient_cluster_config_without_log_uri_drops_the_key(job):
    step = spark.emr_step(job, emr_settings())
    config = spark.transient_cluster_config("include/emr/transient_cluster.json", emr_settings(), "n", step)
    assert "LogUri" not in config
    assert config["ReleaseLabel"] == "emr-7.5.0"  # the EmrSettings default


def test_transient_cluster_config_rejects_templates_that_cannot_work(tmp_path, job):
    step = spark.emr_step(job, emr_settings())
    template = json.loads((REPO_ROOT / "include/emr/transient_cluster.json").read_text())
    bad = tmp_path / "bad.json"
    for alive in (True, None):  # kept alive, or EMR's default for a missing key (alive)
        template["Instances"]["KeepJobFlowAliveWhenNoSteps"] = alive
        bad.write_text(json.dumps(template))
        with pytest.raises(ValueError, match="KeepJobFlowAliveWhenNoSteps must be false"):
            spark.transient_cluster_config(bad, emr_settings(), "n", step)
    template["Instances"]["KeepJobFlowAliveWhenNoSteps"] = False
    bad.write_text(json.dumps({**template, "Steps": [step]}))
    with pytest.raises(ValueError, match="Steps must not be set"):
        spark.transient_cluster_config(bad, emr_settings(), "n", step)
    template["Applications"] = [{"Name": "Hive"}]
    bad.write_text(json.dumps(template))
    with pytest.raises(ValueError, match="Applications must include Spark"):
        spark.transient_cluster_config(bad, emr_settings(), "n", step)
    with pytest.raises(ValueError, match="not found"):
        spark.transient_cluster_config(tmp_path / "missing.json", emr_settings(), "n", step)


def _listed_step(state: str, **status) -> dict:
    return {"Id": "s-1", "Name": "partition_profile", "Status": {"State": state, **status}}


def test_unfinished_steps_names_each_step_its_state_and_why():
    assert spark.unfinished_steps("j-1", [_listed_step("COMPLETED")]) is None
    failed = _listed_step(
        "FAILED",
        FailureDetails={"Reason": "Unknown", "Message": "Exception in thread main", "LogFile": "s3://l/s-1/"},
    )
    assert spark.unfinished_steps("j-1", [failed]) == (
        "step 'partition_profile' (s-1) on EMR cluster j-1 is FAILED: Exception in thread main (log: s3://l/s-1/)"
    )
    # Without failure details, the state change reason; a step still running (the wait timed out) fails too.
    cancelled = _listed_step("CANCELLED", StateChangeReason={"Message": "cluster terminated"})
    assert spark.unfinished_steps("j-1", [cancelled, _listed_step("RUNNING")]) == (
        "step 'partition_profile' (s-1) on EMR cluster j-1 is CANCELLED: cluster terminated; "
        "step 'partition_profile' (s-1) on EMR cluster j-1 is RUNNING"
    )
    assert spark.unfinished_steps("j-1", []) == "EMR cluster j-1 ended without running its step"


# -- EMR Serverless ------------------------------------------------------------------------------------


def test_emr_serverless_job_driver_is_exact(job):
    settings = serverless_settings()
    assert spark.emr_serverless_job_driver(job, settings) == {
        "sparkSubmit": {
            "entryPoint": "s3://ops/code/spark_jobs/partition_profile.py",
            "entryPointArguments": ARGS,
            "sparkSubmitParameters": (
                "--conf spark.driver.cores=2 --conf spark.driver.memory=4g --conf spark.executor.cores=4 "
                "--conf spark.executor.memory=8g --conf spark.executor.instances=3 "
                "--conf spark.sql.shuffle.partitions=64 --conf spark.speculation=false "
                "--py-files s3://ops/code/spark_jobs.zip"
            ),
        }
    }
    assert spark.emr_serverless_configuration_overrides(settings) is None


def test_emr_serverless_rejects_conf_values_with_whitespace():
    job = SparkJob(
        name="p", entry="spark_jobs.partition_profile", conf={"spark.driver.extraJavaOptions": "-Da=1 -Db=2"}
    )
    settings = serverless_settings()
    with pytest.raises(ValueError, match=r"spark\.driver\.extraJavaOptions.*whitespace"):
        spark.emr_serverless_job_driver(job, settings)


def test_emr_serverless_log_uri_goes_to_monitoring_configuration():
    settings = serverless_settings(log_uri="s3://ops/serverless/")
    assert spark.emr_serverless_configuration_overrides(settings) == {
        "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": "s3://ops/serverless/"}}
    }


def test_wait_attempts_cover_the_timeout():
    assert spark.wait_attempts(180, 30) == 360
    assert spark.wait_attempts(1, 45) == 2
    assert spark.wait_attempts(1, 60) == 1
    assert spark.wait_attempts(1, 600) == 1


# -- the spec ------------------------------------------------------------------------------------------


def test_spec_is_frozen_and_normalised():
    job = SparkJob(name="p", entry="spark_jobs.partition_profile", args=["a", "{{ ds }}"], conf={"k.x": "v"})
    assert job.args == ("a", "{{ ds }}")
    assert job.entry_path == "spark_jobs/partition_profile.py"
    with pytest.raises(AttributeError):
        job.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        job.conf["k.x"] = "w"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, r"SparkJob\.name must be 1-100 letters.*got ''"),
        ({"name": "has.dot"}, r"SparkJob\.name must be"),
        ({"name": "has space"}, r"SparkJob\.name must be"),
        ({"entry": "spark_jobs.does_not_exist"}, r"has no file spark_jobs/does_not_exist\.py under"),
        ({"entry": "spark_jobs.common"}, r"has no file spark_jobs/common\.py"),
        ({"entry": "os.path"}, r"entry must be a module under spark_jobs"),
        ({"entry": "spark_jobs/partition_profile.py"}, r"entry must be a module under spark_jobs"),
        ({"args": "--input x"}, r"args must be a list of strings"),
        ({"args": ["--limit", 3]}, r"args\[1\] must be a string, got 3 \(int\)"),
        (
            {"conf": {"spark.executor.memory": "8g"}},
            r"set \['spark\.executor\.memory'\] through SparkJob\.sizing",
        ),
        (
            {"conf": {"spark.sql.shuffle.partitions": 4}},
            r"conf\['spark\.sql\.shuffle\.partitions'\] must be a string",
        ),
        ({"conf": {"a=b": "c"}}, r"bad Spark conf key 'a=b'"),
    ],
)
def test_bad_specs_fail_clearly(kwargs, message):
    spec = {"name": "partition_profile", "entry": "spark_jobs.partition_profile", **kwargs}
    with pytest.raises(ValueError, match=message):
        SparkJob(**spec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"executor_cores": 0}, r"SparkSizing\.executor_cores must be a positive integer"),
        ({"executor_instances": 0}, r"SparkSizing\.executor_instances must be a positive integer"),
        ({"driver_memory": "4GB"}, r"SparkSizing\.driver_memory must look like"),
    ],
)
def test_bad_sizing_fails_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparkSizing(**kwargs)


# -- packaging -----------------------------------------------------------------------------------------


def test_py_files_zip_holds_the_package_sources_only(tmp_path, monkeypatch):
    # A copy of the package with a bytecode cache and a stray non-Python file, neither of which may be zipped.
    root = tmp_path / "repo"
    shutil.copytree(
        REPO_ROOT / "spark_jobs", root / "spark_jobs", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / "spark_jobs" / "__pycache__").mkdir()
    (root / "spark_jobs" / "__pycache__" / "partition_profile.cpython-311.pyc").write_bytes(b"\0")
    (root / "spark_jobs" / "common" / "__pycache__").mkdir()
    (root / "spark_jobs" / "common" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0")
    (root / "spark_jobs" / "notes.txt").write_text("not code")
    monkeypatch.setattr(spark, "REPO_ROOT", root)
    monkeypatch.setattr(spark, "SPARK_JOBS_DIR", root / "spark_jobs")

    out = spark.build_py_files_zip(tmp_path / "dist" / "spark_jobs.zip")

    assert out == tmp_path / "dist" / "spark_jobs.zip"
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert (
            archive.read("spark_jobs/partition_profile.py")
            == (REPO_ROOT / "spark_jobs" / "partition_profile.py").read_bytes()
        )
    assert "spark_jobs/partition_profile.py" in names
    assert "spark_jobs/common/__init__.py" in names
    assert "spark_jobs/__init__.py" in names
    assert all(name.startswith("spark_jobs/") and name.endswith(".py") for name in names)
    assert not any("__pycache__" in name for name in names)
    # Same sources, same bytes: an unchanged package need not be uploaded again.
    again = spark.build_py_files_zip(tmp_path / "again.zip")
    assert again.read_bytes() == out.read_bytes()


def test_package_command_writes_the_zip(tmp_path):
    out = tmp_path / "dist" / "spark_jobs.zip"
    result = subprocess.run(
        [sys.executable, "-m", "dataplatform.spark", "package", str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert f"wrote {out}" in result.stdout
    with zipfile.ZipFile(out) as archive:
        assert {"spark_jobs/partition_profile.py", "spark_jobs/common/__init__.py"} <= set(archive.namelist())
