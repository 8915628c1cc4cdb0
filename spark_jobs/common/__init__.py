"""Helpers shared by the Spark jobs (shipped inside spark_jobs.zip)."""

from __future__ import annotations

from pyspark.sql import SparkSession


def spark_session(app_name: str) -> SparkSession:
    """The job's session; master and resources come from ``spark-submit`` (local, EMR or Serverless).

    Timestamps are read and written in UTC so that a job's output does not depend on the machine's zone.
    """
    return SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC").getOrCreate()
