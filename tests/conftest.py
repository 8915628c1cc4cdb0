"""Shared fixtures: one moto server, one Airflow metadata database and one Spark session per test run.

Airflow reads its configuration when first imported, so the environment (AIRFLOW_HOME, SQLite database,
dags and plugins folders) is set here, at import time, before any test module imports Airflow.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]

from dataplatform.devstack.airflow_env import airflow_env  # noqa: E402
from dataplatform.devstack.moto_server import MotoServer, connection_uri_json  # noqa: E402

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="dataplatform-tests-airflow-"))
# Placeholder endpoint until the moto server starts: a test that reaches AWS without the fixture fails
# fast on a closed port instead of talking to a real account.
os.environ.update(airflow_env(AIRFLOW_HOME, "http://127.0.0.1:9"))
os.environ["DATAPLATFORM_CONFIG"] = str(REPO_ROOT / "include" / "config" / "local.yaml")
# ``{local_dir}`` in the config (local Spark's file:// landing and work areas) points into this run's
# temporary directory, never at the checkout's .local/.
os.environ["DATAPLATFORM_LOCAL_DIR"] = str(AIRFLOW_HOME / "local")


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer(log_path=AIRFLOW_HOME / "moto.log").start()
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = connection_uri_json(server.url)
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server):
    """Empty AWS state for one test, and clients built the way the product builds them."""
    from dataplatform import aws as aws_clients

    moto_server.reset()
    return SimpleNamespace(
        server=moto_server,
        url=moto_server.url,
        s3=aws_clients.client("s3"),
        glue=aws_clients.client("glue"),
        client=aws_clients.client,
    )


@pytest.fixture(scope="session")
def airflow_db(moto_server):
    """A migrated SQLite metadata database for in-process ``dag.test()`` and ``airflow dags test``.

    Depends on the moto server so that its endpoint is in the environment before Airflow first looks up
    (and caches) the ``aws_default`` connection."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env=os.environ.copy(),
        capture_output=True,
        timeout=600,
    )
    return AIRFLOW_HOME


# Interim (issue 13, until dataplatform.spark_jars lands): hadoop-aws + its SDK from the local Maven
# repository, so the shared session reads and writes s3:// on the moto server through S3A.
_M2 = Path.home() / ".m2" / "repository"
S3A_JARS = (
    _M2 / "org/apache/hadoop/hadoop-aws/3.3.4/hadoop-aws-3.3.4.jar",
    _M2 / "com/amazonaws/aws-java-sdk-bundle/1.12.262/aws-java-sdk-bundle-1.12.262.jar",
)


@pytest.fixture(scope="session")
def spark(moto_server):
    """One local Spark session for every DataFrame test (starting one costs ~5 s); ``s3://`` URIs go to
    the moto server through S3A (credentials from the environment), as EMR's go to S3."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("dataplatform-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.jars", ",".join(str(jar) for jar in S3A_JARS))
        .config("spark.hadoop.fs.s3.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")
        .config("spark.hadoop.fs.s3a.endpoint", moto_server.url)
        .config("spark.hadoop.fs.s3a.path.style.access", "true")
        .config("spark.hadoop.fs.s3a.connection.ssl.enabled", "false")
        .getOrCreate()
    )
    yield session
    # py4j logs at INFO while the interpreter closes its streams, which prints "Logging error" noise.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session.stop()
