"""Spark on S3 as the local backend runs it: ``s3://`` URIs through S3A on the moto server, with the
connection's credentials, in a spark-submit subprocess (the local backend) and in the shared session (with
Iceberg's Glue catalog on moto). What landed is read back with boto3 and Glue, not through Spark."""

from __future__ import annotations

import textwrap

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.spark]

BUCKET = "spark-s3-tests"


def test_a_local_job_writes_and_reads_s3_uris_through_s3a(aws, tmp_path):
    from dataplatform.operators.spark import LocalSparkSubmitOperator

    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.put_object(Bucket=BUCKET, Key="in/events.json", Body=b'{"id": 1}\n{"id": 2}\n{"id": 3}\n')
    script = tmp_path / "s3_copy.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from pyspark.sql import SparkSession
            spark = SparkSession.builder.getOrCreate()
            rows = spark.read.json("s3://{BUCKET}/in/")
            rows.write.mode("overwrite").parquet("s3://{BUCKET}/out/")
            print("copied", spark.read.parquet("s3://{BUCKET}/out/").count(), flush=True)
            """
        )
    )
    operator = LocalSparkSubmitOperator(
        task_id="copy",
        application=str(script),
        master="local[1]",
        conf={"spark.ui.enabled": "false"},
    )
    operator.execute({})

    keys = [obj["Key"] for obj in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]]
    assert "out/_SUCCESS" in keys
    parts = [key for key in keys if key.endswith(".parquet")]
    assert parts
    import io

    import pyarrow.parquet as pq

    ids = sorted(
        value
        for key in parts
        for value in pq.read_table(io.BytesIO(aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
        .column("id")
        .to_pylist()
    )
    assert ids == [1, 2, 3]


def test_the_shared_session_reaches_s3_and_the_glue_catalog_on_moto(aws, spark):
    aws.s3.create_bucket(Bucket=BUCKET)
    spark.createDataFrame([(1, "a"), (2, "b")], "id int, v string").write.mode("overwrite").parquet(
        f"s3://{BUCKET}/plain/"
    )
    assert sorted(row.id for row in spark.read.parquet(f"s3://{BUCKET}/plain/").collect()) == [1, 2]

    aws.glue.create_database(DatabaseInput={"Name": "spark_s3_tests"})
    spark.sql(
        "CREATE TABLE glue_catalog.spark_s3_tests.t (id int, v string) USING iceberg "
        f"LOCATION 's3://{BUCKET}/iceberg/t'"
    )
    spark.sql("INSERT INTO glue_catalog.spark_s3_tests.t VALUES (1, 'x'), (2, 'y')")
    table = aws.glue.get_table(DatabaseName="spark_s3_tests", Name="t")["Table"]
    assert table["Parameters"]["table_type"].upper() == "ICEBERG"
    metadata = table["Parameters"]["metadata_location"]
    assert metadata.startswith(f"s3://{BUCKET}/iceberg/t/metadata/")
    data = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="iceberg/t/data/")["Contents"]
    assert [obj["Key"] for obj in data if obj["Key"].endswith(".parquet")]
