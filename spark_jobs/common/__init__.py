"""Helpers shared by the Spark jobs (shipped inside spark_jobs.zip).

pyspark is imported inside ``spark_session`` only: ``spark_jobs.common.storage`` and the other pure
modules here are also imported by the Airflow tasks, which need not have pyspark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_session(app_name: str) -> SparkSession:
    """The job's session; master and resources come from ``spark-submit`` (local, EMR or Serverless).

    Timestamps are read and written in UTC so that a job's output does not depend on the machine's zone.
    """
    from pyspark.sql import SparkSession

    return SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC").getOrCreate()
