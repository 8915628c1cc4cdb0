"""The ``backend: spark`` tables of iceberg_maintenance: one task group per table, built from the config
at parse time (both the aws and the local config have ``clickstream``), and its plan and finish tasks
against the moto server. The job itself runs for real in
tests/integration/test_iceberg_spark_maintenance.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dataplatform.config import CONFIG_DIR, settings

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "iceberg_maintenance.py"
GROUP = "spark_clickstream"
SPEC_ARG = "{{ ti.xcom_pull(task_ids='spark_clickstream.plan')['spec_uri'] }}"


@pytest.fixture
def use_config(monkeypatch):
    """Point ``settings()`` at another config file for one test (it is cached per process)."""

    def use(path: Path) -> None:
        monkeypatch.setenv("DATAPLATFORM_CONFIG", str(path))
        settings.cache_clear()

    yield use
    settings.cache_clear()


def parse_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["iceberg_maintenance"]


def aws_config_with(tmp_path: Path, **spark: object) -> Path:
    raw = yaml.safe_load((CONFIG_DIR / "aws.yaml").read_text())
    raw["spark"].update(spark)
    path = tmp_path / "aws.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.unit
def test_the_aws_config_gives_clickstream_a_spark_group_on_a_transient_emr_cluster(use_config):
    use_config(CONFIG_DIR / "aws.yaml")
    dag = parse_dag()
    ids = {task.task_id for task in dag.tasks}
    job = f"{GROUP}.iceberg_clickstream"
    assert {
        f"{GROUP}.plan",
        f"{job}.run_on_cluster",
        f"{job}.terminate_cluster",
        f"{job}.record_cost",
        f"{GROUP}.finish",
    } <= ids
    # orders stays on pyiceberg: no group of its own.
    assert not any(task_id.startswith("spark_orders") for task_id in ids)

    assert dag.get_task(f"{GROUP}.plan").upstream_task_ids == {"select_tables"}
    assert dag.get_task(f"{job}.run_on_cluster").upstream_task_ids == {f"{GROUP}.plan"}
    # finish waits for the step's cluster (not for the teardown) and reads the plan's XCom.
    assert dag.get_task(f"{GROUP}.finish").upstream_task_ids == {f"{job}.run_on_cluster", f"{GROUP}.plan"}
    assert dag.get_task(f"{job}.terminate_cluster").is_teardown

    (step,) = dag.get_task(f"{job}.run_on_cluster").job_flow_overrides["Steps"]
    args = step["HadoopJarStep"]["Args"]
    conf = {args[i + 1] for i, arg in enumerate(args) if arg == "--conf"}
    assert {
        "spark.sql.extensions=org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.catalog.glue_catalog=org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.glue_catalog.catalog-impl=org.apache.iceberg.aws.glue.GlueCatalog",
        "spark.sql.catalog.glue_catalog.io-impl=org.apache.iceberg.aws.s3.S3FileIO",
        "spark.sql.catalog.glue_catalog.s3.delete-enabled=false",
        "spark.sql.catalog.glue_catalog.s3.delete.tags.delete-tag-name=deleted",
    } <= conf
    # clickstream has created.enabled false: no write tags.
    assert not any(".s3.write.tags." in item for item in conf)
    assert args[-3:] == [
        "s3://example-datalake-ops/code/spark_jobs/iceberg_maintenance.py",
        "--spec",
        SPEC_ARG,
    ]


@pytest.mark.unit
def test_the_spec_argument_renders_to_the_plans_uri_as_a_string(use_config):
    """The DAG renders templates as native objects: the step's arguments must stay strings."""
    use_config(CONFIG_DIR / "aws.yaml")
    dag = parse_dag()
    run = dag.get_task(f"{GROUP}.iceberg_clickstream.run_on_cluster")
    spec_uri = "s3://example-datalake-ops/reports/iceberg_maintenance/manual__x/clickstream.spark_spec.json"

    class TI:
        def xcom_pull(self, task_ids):
            assert task_ids == f"{GROUP}.plan"
            return {"spec_uri": spec_uri, "report_uri": "s3://x/y.json", "dry_run": False}

    request = run.render_template(run.job_flow_overrides, {"ti": TI(), "dag": dag, "run_id": "manual__x"})
    assert request["Name"] == "iceberg_clickstream (iceberg_maintenance manual__x)"
    args = request["Steps"][0]["HadoopJarStep"]["Args"]
    assert args[-2:] == ["--spec", spec_uri]
    assert all(isinstance(arg, str) for arg in args)


@pytest.mark.unit
def test_on_emr_serverless_the_group_starts_one_job_run(use_config, tmp_path):
    use_config(
        aws_config_with(
            tmp_path,
            backend="emr_serverless",
            emr_serverless={
                "application_id": "00abc",
                "execution_role_arn": "arn:aws:iam::123456789012:role/emr-serverless-job",
            },
        )
    )
    dag = parse_dag()
    start = dag.get_task(f"{GROUP}.iceberg_clickstream.start_job_run")
    assert start.upstream_task_ids == {f"{GROUP}.plan"}
    driver = start.job_driver["sparkSubmit"]
    assert driver["entryPoint"] == "s3://example-datalake-ops/code/spark_jobs/iceberg_maintenance.py"
    assert driver["entryPointArguments"] == ["--spec", SPEC_ARG]
    assert (
        "--conf spark.jars=/usr/share/aws/iceberg/lib/iceberg-spark3-runtime.jar"
        in (driver["sparkSubmitParameters"])
    )


@pytest.mark.unit
def test_the_local_config_runs_clickstream_with_local_spark_submit(use_config):
    use_config(CONFIG_DIR / "local.yaml")
    ids = {task.task_id for task in parse_dag().tasks}
    assert ids == {
        "select_tables",
        "maintain_table",
        f"{GROUP}.plan",
        f"{GROUP}.iceberg_clickstream.spark_submit",
        f"{GROUP}.finish",
    }


# -- plan and finish on the moto server ---------------------------------------------------------------------

RUN_ID = "manual__2024-04-01T02:00:00+00:00"


def local_config_with_spark_table(tmp_path: Path) -> Path:
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["iceberg"]["tables"]["clickstream"] = {
        "database": "demo_lake",
        "table": "clickstream",
        "backend": "spark",
        "retain_last": 5,
        "max_snapshot_age_hours": 48,
        # Kept a century: the tag of this test's 2024 date is still within its retention today (the plan
        # leaves out tags already past it).
        "tag_rules": [{"name": "month-end-{date:%Y-%m}", "every": "month_end", "keep_days": 36500}],
        "unreferenced": {"action": "tag", "tag": {"key": "delete-tag-name", "value": "deleted"}},
        "created": {"enabled": False},
        "orphan_min_age_hours": 72,
    }
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def context(logical_date=datetime(2024, 4, 1, 2, 0, tzinfo=UTC)) -> dict:
    return {
        "dag": SimpleNamespace(dag_id="iceberg_maintenance"),
        "run_id": RUN_ID,
        "logical_date": logical_date,
    }


@pytest.fixture
def spark_table(aws, use_config, tmp_path):
    use_config(local_config_with_spark_table(tmp_path))
    config = settings()
    bucket = config.reports_uri.split("/")[2]
    aws.s3.create_bucket(Bucket=bucket)
    aws.glue.create_database(DatabaseInput={"Name": "demo_lake"})
    aws.glue.create_table(
        DatabaseName="demo_lake",
        TableInput={
            "Name": "clickstream",
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {
                "table_type": "ICEBERG",
                "metadata_location": f"s3://{bucket}/clickstream/metadata/00003-abc.metadata.json",
            },
            "StorageDescriptor": {"Location": f"s3://{bucket}/clickstream"},
        },
    )
    return SimpleNamespace(aws=aws, bucket=bucket, config=config)


@pytest.mark.integration
def test_plan_writes_the_spec_and_finish_sets_the_lifecycle_rule_and_publishes_the_report(spark_table):
    from dataplatform.operators.iceberg_spark import finish_run, plan_run
    from spark_jobs.common.storage import Storage

    s3, bucket = spark_table.aws.s3, spark_table.bucket
    storage = Storage(s3)
    planned = plan_run("clickstream", {"tables": [], "dry_run": False}, context())
    prefix = f"s3://{bucket}/_reports/iceberg_maintenance/manual__2024-04-01T02_00_00+00_00/"
    assert planned == {
        "spec_uri": prefix + "clickstream.spark_spec.json",
        "report_uri": prefix + "clickstream.spark_job.json",
        "dry_run": False,
    }
    spec = storage.read_json(planned["spec_uri"])
    # The nightly run of April 1st tags March 31st, a month end.
    assert [tag["name"] for tag in spec["tags"]] == ["month-end-2024-03"]
    assert (spec["database"], spec["table"], spec["report_uri"]) == (
        "demo_lake",
        "clickstream",
        planned["report_uri"],
    )
    assert spec["aws_endpoint_url"] == spark_table.aws.url

    # What the Spark job would write (it cannot run here: no Iceberg Spark runtime).
    job_report = {
        "job": "iceberg_maintenance",
        "table": "clickstream",
        "identifier": "demo_lake.clickstream",
        "dry_run": False,
        "day": "2024-03-31",
        "tags": {"created": ["month-end-2024-03"], "existing": [], "no_snapshot_yet": [], "snapshot_ids": {}},
        "expiry": {
            "snapshots_before": 9,
            "snapshots_expired": 4,
            "expired_ids": [1, 2, 3, 4],
            "snapshots_after": 5,
        },
        "unreferenced": {"action": "tag", "files": 21, "by_kind": {"data_files": 17, "manifest_lists": 4}},
        "orphans": {"found": 2, "sample": [], "action": "tag"},
        "statements": [],
    }
    storage.write_json(planned["report_uri"], job_report)
    report = finish_run("clickstream", planned, context())

    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [rule["ID"] for rule in rules] == ["iceberg-unreferenced-demo_lake.clickstream"]
    assert rules[0]["Filter"]["And"]["Prefix"] == "clickstream/"
    assert report["lifecycle"]["status"] == "created"
    assert report["summary"] == (
        "demo_lake.clickstream (spark): create tags ['month-end-2024-03'], expire 4 of 9 snapshots, "
        "unreferenced files to tag: 21, 2 orphans (tag), lifecycle rule created"
    )
    published = json.loads(
        s3.get_object(
            Bucket=bucket,
            Key="_reports/iceberg_maintenance/manual__2024-04-01T02_00_00+00_00/clickstream.json",
        )["Body"].read()
    )
    assert published["backend"] == "spark" and published["expiry"]["snapshots_expired"] == 4
    assert published["created"] == {"enabled": False}

    # A rerun of finish changes nothing.
    assert finish_run("clickstream", planned, context())["lifecycle"]["status"] == "unchanged"


@pytest.mark.integration
def test_plan_skips_a_table_the_run_leaves_out_and_fails_on_an_unknown_one(spark_table):
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.operators.iceberg_spark import plan_run

    assert plan_run("clickstream", {"tables": ["orders"], "dry_run": False}, context()) is None
    with pytest.raises(AirflowFailException, match=r"unknown table\(s\) \['nope'\]"):
        plan_run("clickstream", {"tables": ["nope"], "dry_run": False}, context())
    listed = spark_table.aws.s3.list_objects_v2(Bucket=spark_table.bucket).get("Contents", [])
    assert listed == []


@pytest.mark.integration
def test_finish_of_a_dry_run_checks_no_lifecycle_rule(spark_table):
    from dataplatform.operators.iceberg_spark import finish_run, plan_run
    from spark_jobs.common.storage import Storage

    planned = plan_run("clickstream", {"tables": ["clickstream"], "dry_run": True}, context())
    assert Storage(spark_table.aws.s3).read_json(planned["spec_uri"])["dry_run"] is True
    Storage(spark_table.aws.s3).write_json(
        planned["report_uri"],
        {
            "dry_run": True,
            "tags": {"created": []},
            "expiry": {"snapshots_expired": 2, "snapshots_before": 9, "estimate": True},
            "unreferenced": {"action": "tag", "files": None},
            "orphans": {"found": 0, "action": "listed"},
        },
    )
    report = finish_run("clickstream", planned, context())
    assert report["lifecycle"]["status"] == "not_checked"
    assert (
        "would expire 2 of 9 snapshots, unreferenced files to tag: unknown until it runs" in report["summary"]
    )
    with pytest.raises(Exception, match="NoSuchLifecycleConfiguration"):
        spark_table.aws.s3.get_bucket_lifecycle_configuration(Bucket=spark_table.bucket)
