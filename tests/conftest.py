"""Shared fixtures: one moto server, one Airflow metadata database and one Spark session per test run.

Airflow reads its configuration when first imported, so the environment (AIRFLOW_HOME, SQLite database,
dags and plugins folders) is set here, at import time, before any test module imports Airflow.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import warnings
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
# ``{local_dir}`` in the config (where local runs keep files, e.g. a file:// recon area) points into this run's
# temporary directory, never at the checkout's .local/.
os.environ["DATAPLATFORM_LOCAL_DIR"] = str(AIRFLOW_HOME / "local")
# Every Spark JVM the tests start (the shared session, each spark-submit of a job, a Hudi seed or a DAG
# run, the e2e stacks') reads this run's spark-defaults.conf: JIT compilation stops at C1 and the GC is
# serial. A test's Spark program lives for seconds on a few rows, so the optimising compiler's threads
# (C2) and a parallel GC only burn the two cores: a Hudi seed takes ~40% less CPU. Nothing a job computes
# changes; a job's own conf still wins (spark-submit's --conf overrides the defaults file).
SPARK_CONF_DIR = AIRFLOW_HOME / "spark-conf"
SPARK_CONF_DIR.mkdir()
# A JVM that crashes writes its report here (not into the working directory, which CI deletes).
JVM_CRASH_DIR = AIRFLOW_HOME / "jvm-crashes"
JVM_CRASH_DIR.mkdir()
(SPARK_CONF_DIR / "spark-defaults.conf").write_text(
    "spark.driver.extraJavaOptions -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    f" -XX:ErrorFile={JVM_CRASH_DIR}/hs_err_pid%p.log\n"
)
os.environ["SPARK_CONF_DIR"] = str(SPARK_CONF_DIR)


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


@pytest.fixture(scope="session")
def spark(moto_server):
    """One local Spark session for every DataFrame test (starting one costs ~5 s), configured as the local
    backend runs jobs (``dataplatform.spark.local_conf``): S3A on the moto server, so ``s3://`` URIs work,
    and Iceberg's runtime with the Glue catalog ``glue_catalog`` on moto. Not Hudi: its Kryo serializer
    and session catalog would change the session under every other test, so Hudi runs in spark-submit
    subprocesses. Catalogs with other properties can be added at runtime (``spark.conf.set``)."""
    from dataplatform.spark import local_session
    from spark_jobs.common.iceberg_sql import catalog_conf

    job_conf = catalog_conf(delete_tag=None, write_tag=None)
    session = local_session("dataplatform-tests", job_conf, moto_server.url, "us-east-1")
    yield session
    # py4j logs at INFO while the interpreter closes its streams, which prints "Logging error" noise.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    jvm = session.sparkContext._gateway.proc  # the JVM pyspark started (spark-submit pyspark-shell)
    if jvm.poll() is None:
        session.stop()
    else:
        # Every test that used the session has passed; the JVM ended since. Nothing is left to stop:
        # say how it ended (and its crash report, if any) instead of failing on the closed gateway.
        warnings.warn(_jvm_ended(jvm.returncode), stacklevel=1)


def _jvm_ended(returncode: int) -> str:
    how = f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
    reports = sorted(JVM_CRASH_DIR.glob("hs_err_pid*.log"))
    report = f"; crash report {reports[-1]}:\n{reports[-1].read_text()[:4000]}" if reports else ""
    return f"the shared Spark session's JVM ended before the run's end ({how}){report}"


@pytest.fixture
def fake_jars(tmp_path, monkeypatch):
    """A lock of small stand-in jars and a cache holding them (``dataplatform.spark_jars`` reads both), for
    tests of what is built from the jars without the real 500 MB: name -> cached path."""
    import hashlib
    import json

    from dataplatform import spark_jars

    cache = tmp_path / "jar-cache"
    cache.mkdir()
    entries, paths = [], {}
    for name in (
        "hudi-spark-bundle",
        "iceberg-spark-runtime",
        "iceberg-aws-bundle",
        "hadoop-aws",
        "aws-java-sdk-bundle",
    ):
        data = f"stand-in for {name}".encode()
        entry = {
            "name": name,
            "group": "org.example",
            "artifact": name,
            "version": "1.0",
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        (cache / f"{name}-1.0.jar").write_bytes(data)
        entries.append(entry)
        paths[name] = cache / f"{name}-1.0.jar"
    lock = tmp_path / "jars.lock.json"
    lock.write_text(json.dumps({"jars": entries}))
    monkeypatch.setattr(spark_jars, "LOCK_PATH", lock)
    monkeypatch.setenv(spark_jars.CACHE_ENV, str(cache))
    spark_jars.locked_jars.cache_clear()
    yield paths
    spark_jars.locked_jars.cache_clear()
