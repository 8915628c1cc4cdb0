"""Helpers shared by the Spark jobs (shipped inside spark_jobs.zip).

pyspark is imported inside ``spark_session`` only: ``spark_jobs.common.storage`` and the other pure
modules here are also imported by the Airflow tasks, which need not have pyspark.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_session(app_name: str) -> SparkSession:
    """The job's session; master and resources come from ``spark-submit`` (local, EMR or Serverless).

    Timestamps are read and written in UTC so that a job's output does not depend on the machine's zone.
    """
    from pyspark.sql import SparkSession

    return SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC").getOrCreate()


def read_spec(storage: Any, uri: str) -> dict[str, Any]:
    spec = storage.read_json(uri)
    if not isinstance(spec, dict):
        raise ValueError(f"job spec {uri} is not a JSON object")
    return spec


def main_with_spec(
    job: str,
    run: Callable[..., Any],
    argv: Sequence[str],
    check: Callable[[dict[str, Any]], dict[str, Any]] = lambda spec: spec,
    app_name: Callable[[dict[str, Any]], str] | None = None,
    spark: SparkSession | None = None,
) -> int:
    """The ``main`` of every job driven by a spec: ``--spec <uri>``, everything else is in the spec
    (read, then ``check``ed: it comes from S3). The job's storage makes its S3 calls with the spec's
    endpoint (moto locally, ``None`` on EMR). ``spark`` replaces the session in tests."""
    from spark_jobs.common.storage import Storage

    parser = argparse.ArgumentParser(prog=job)
    parser.add_argument("--spec", required=True, help="URI of the job spec (JSON)")
    args = parser.parse_args(list(argv))
    spec = check(read_spec(Storage(), args.spec))
    storage = Storage(endpoint_url=spec.get("aws_endpoint_url"), region=spec.get("region"))
    run(spark or spark_session(app_name(spec) if app_name else job), spec, storage)
    return 0
