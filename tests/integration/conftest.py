"""Fixtures shared by the integration tests of one pipeline and another."""

from __future__ import annotations

import pytest


@pytest.fixture
def recon(aws, spark, tmp_path):
    """The reconciliation stages in this process (``LocalRunner``): DynamoDB on moto, local Spark,
    landing and work areas on ``file://`` under the test's temporary directory."""
    from dataplatform.config import settings
    from dataplatform.reconciliation import pipeline
    from dataplatform.reconciliation.local_runner import LocalRunner
    from dataplatform.reconciliation.pipeline import ReconContext
    from spark_jobs.common.storage import Storage

    config = settings().reconciliation.model_copy(
        update={
            "landing_uri": f"file://{tmp_path}/landing/",
            "work_uri": f"file://{tmp_path}/work/",
            "state_part_files": 3,
        }
    )
    ctx = ReconContext(
        settings=config,
        dynamodb=aws.client("dynamodb"),
        storage=Storage(aws.s3),
        region="us-east-1",
        aws_endpoint_url=aws.url,
    )
    pipeline.setup_tables(ctx)
    return LocalRunner(ctx, spark)


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
