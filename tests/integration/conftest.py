"""Fixtures shared by the integration tests of one pipeline and another."""

from __future__ import annotations

import pytest


def recon_runner(aws, spark, **locations: str):
    """``LocalRunner`` over DynamoDB on moto and the shared Spark session, with the config's landing and
    work areas unless ``locations`` (``landing_uri``, ``work_uri``) says otherwise."""
    from dataplatform.config import settings
    from dataplatform.reconciliation import pipeline
    from dataplatform.reconciliation.local_runner import LocalRunner
    from dataplatform.reconciliation.pipeline import ReconContext
    from spark_jobs.common.storage import Storage

    config = settings().reconciliation.model_copy(update={**locations, "state_part_files": 3})
    ctx = ReconContext(
        settings=config,
        dynamodb=aws.client("dynamodb"),
        storage=Storage(aws.s3),
        region="us-east-1",
        aws_endpoint_url=aws.url,
    )
    pipeline.setup_tables(ctx)
    return LocalRunner(ctx, spark)


@pytest.fixture(scope="session")
def hudi_tables(moto_server):
    """The app-log Hudi tables (``cow``, ``mor``) seeded once for the run; ``hudi_helpers.put_table`` lays
    a fresh copy wherever a test erases one."""
    from tests import hudi_helpers

    return hudi_helpers.seeded_tables(moto_server.url)


@pytest.fixture
def pyiceberg_only_config(tmp_path, monkeypatch):
    """The local config without its ``backend: spark`` tables and ``engine: spark`` datasets, for the
    tests of the pyiceberg paths through whole DAG runs (the Spark ones run in
    test_iceberg_spark_maintenance.py and test_gdpr_iceberg_spark.py: a spark-submit per DAG run here
    would cost the suite minutes and test nothing new)."""
    from dataplatform.config import settings
    from tests.gdpr_helpers import pyiceberg_only_config_file

    path = pyiceberg_only_config_file(tmp_path)
    monkeypatch.setenv("DATAPLATFORM_CONFIG", str(path))
    settings.cache_clear()
    yield path
    settings.cache_clear()


@pytest.fixture
def recon(aws, spark):
    """The reconciliation stages in this process (``LocalRunner``): DynamoDB on moto, local Spark, the
    config's landing and work areas (``s3://`` on moto: Spark writes its part files through S3A)."""
    from dataplatform.config import settings
    from spark_jobs.common.storage import split_s3

    config = settings().reconciliation
    for uri in {config.landing_uri, config.work_uri}:
        aws.s3.create_bucket(Bucket=split_s3(uri)[0])
    return recon_runner(aws, spark)


@pytest.fixture
def recon_on_file(aws, spark, tmp_path):
    """``recon`` with the landing and work areas on ``file://`` under the test's temporary directory:
    the layout that stays possible besides S3."""
    return recon_runner(
        aws, spark, landing_uri=f"file://{tmp_path}/landing/", work_uri=f"file://{tmp_path}/work/"
    )
