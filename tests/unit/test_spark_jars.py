"""The pinned Spark jars: the lock matches what EMR ships, a missing or corrupt jar is named before any Spark
starts, and the local conf stands the locked jars in for EMR's and reaches S3 on the connection's endpoint."""

from __future__ import annotations

import json

import pytest

from dataplatform import spark, spark_jars
from dataplatform.spark import EMR_HUDI_JAR
from spark_jobs.common.iceberg_sql import EMR_ICEBERG_JAR, catalog_conf

pytestmark = pytest.mark.unit


def test_the_lock_pins_what_emr_7_ships_with_checksums():
    lock = json.loads(spark_jars.LOCK_PATH.read_text())["jars"]
    coordinates = {entry["name"]: (entry["group"], entry["artifact"], entry["version"]) for entry in lock}
    assert coordinates == {
        "hudi-spark-bundle": ("org.apache.hudi", "hudi-spark3.5-bundle_2.12", "1.0.2"),
        "iceberg-spark-runtime": ("org.apache.iceberg", "iceberg-spark-runtime-3.5_2.12", "1.10.1"),
        "iceberg-aws-bundle": ("org.apache.iceberg", "iceberg-aws-bundle", "1.10.1"),
        "hadoop-aws": ("org.apache.hadoop", "hadoop-aws", "3.3.4"),
        "aws-java-sdk-bundle": ("com.amazonaws", "aws-java-sdk-bundle", "1.12.262"),
    }
    assert all(len(entry["sha256"]) == 64 and int(entry["sha256"], 16) >= 0 for entry in lock)


def test_hadoop_aws_matches_the_hadoop_of_the_installed_pyspark():
    import importlib.util
    from pathlib import Path

    pyspark_jars = Path(importlib.util.find_spec("pyspark").submodule_search_locations[0]) / "jars"
    hadoop = sorted(path.name for path in pyspark_jars.glob("hadoop-client-api-*.jar"))
    assert hadoop == [f"hadoop-client-api-{spark_jars.locked('hadoop-aws').version}.jar"]


def test_a_verified_jar_is_returned_and_stamped(fake_jars):
    assert spark_jars.jar_path("hadoop-aws") == fake_jars["hadoop-aws"]
    assert fake_jars["hadoop-aws"].with_name("hadoop-aws-1.0.jar.verified").is_file()
    assert spark_jars.jar_path("hadoop-aws") == fake_jars["hadoop-aws"]


def test_a_missing_jar_is_named_with_the_command_that_fetches_it(fake_jars):
    fake_jars["hudi-spark-bundle"].unlink()
    with pytest.raises(spark_jars.JarError) as error:
        spark_jars.jar_path("hudi-spark-bundle")
    assert "org.example:hudi-spark-bundle:1.0" in str(error.value)
    assert "make jars" in str(error.value)


def test_a_corrupt_jar_is_named_also_after_it_was_verified_once(fake_jars):
    path = fake_jars["iceberg-aws-bundle"]
    spark_jars.jar_path("iceberg-aws-bundle")
    path.write_bytes(b"truncated")
    with pytest.raises(spark_jars.JarError) as error:
        spark_jars.jar_path("iceberg-aws-bundle")
    assert "org.example:iceberg-aws-bundle:1.0" in str(error.value)
    assert "corrupt" in str(error.value)


def test_an_unknown_jar_name_is_refused(fake_jars):
    with pytest.raises(spark_jars.JarError, match="no jar named 'hive'"):
        spark_jars.jar_path("hive")


def test_local_conf_stands_the_locked_jars_in_for_emrs(fake_jars):
    hudi = spark.local_conf({"spark.jars": f"{EMR_HUDI_JAR},/opt/extra.jar"}, None, "eu-west-1")
    assert hudi["spark.jars"].split(",") == [
        str(fake_jars["hudi-spark-bundle"]),
        str(fake_jars["hadoop-aws"]),
        str(fake_jars["aws-java-sdk-bundle"]),
        "/opt/extra.jar",
    ]
    iceberg = spark.local_conf({"spark.jars": EMR_ICEBERG_JAR}, None, "eu-west-1")
    assert iceberg["spark.jars"].split(",")[:2] == [
        str(fake_jars["iceberg-spark-runtime"]),
        str(fake_jars["iceberg-aws-bundle"]),
    ]
    # A job with no jars of its own still gets S3A.
    assert spark.local_conf({}, None, "eu-west-1")["spark.jars"].split(",") == [
        str(fake_jars["hadoop-aws"]),
        str(fake_jars["aws-java-sdk-bundle"]),
    ]


def test_local_conf_maps_s3_to_s3a_on_the_endpoint_and_points_iceberg_catalogs_at_it(fake_jars):
    conf = spark.local_conf(
        catalog_conf(delete_tag=None, write_tag=None), "http://127.0.0.1:5123", "us-east-1"
    )
    assert conf["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:5123"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    for key in ("glue.endpoint", "s3.endpoint"):
        assert conf[f"spark.sql.catalog.glue_catalog.{key}"] == "http://127.0.0.1:5123"
    assert conf["spark.sql.catalog.glue_catalog.s3.path-style-access"] == "true"
    assert conf["spark.sql.catalog.glue_catalog.client.region"] == "us-east-1"
    # In AWS (no endpoint) S3A and Iceberg use the region's own endpoints.
    aws = spark.local_conf(catalog_conf(delete_tag=None, write_tag=None), None, "us-east-1")
    assert not any("endpoint" in key and "region" not in key for key in aws)


def test_credentials_reach_spark_submit_through_its_environment_only():
    env = spark.local_spark_env(
        {"AWS_SESSION_TOKEN": "old"}, credentials=("AKID", "SECRET", None), region="eu-west-1"
    )
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_REGION"]) == (
        "AKID",
        "SECRET",
        "eu-west-1",
    )
    assert "AWS_SESSION_TOKEN" not in env


def test_boto3_in_a_local_job_reaches_the_connections_endpoint():
    # A job reads its spec from s3:// with boto3 before it knows anything else: the endpoint S3A gets in
    # the conf must reach boto3 too, or the spec read goes to AWS.
    env = spark.local_spark_env({}, endpoint_url="http://127.0.0.1:5123")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5123"
    assert "AWS_ENDPOINT_URL" not in spark.local_spark_env({})


def test_the_hudi_bundle_is_on_the_drivers_class_path_and_only_for_hudi_jobs(fake_jars):
    hudi = spark.local_conf(
        {"spark.jars": EMR_HUDI_JAR, "spark.driver.extraClassPath": "/opt/x.jar"}, None, "us-east-1"
    )
    assert hudi["spark.driver.extraClassPath"] == f"{fake_jars['hudi-spark-bundle']}:/opt/x.jar"
    fake_jars["hudi-spark-bundle"].unlink()
    iceberg = spark.local_conf({"spark.jars": EMR_ICEBERG_JAR}, None, "us-east-1")
    assert "spark.driver.extraClassPath" not in iceberg
