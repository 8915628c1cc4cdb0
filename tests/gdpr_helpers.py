"""What the GDPR erasure tests set up alike: a versioned bucket, the Glue catalog, the request and audit
tables, all on the session's moto server."""

from __future__ import annotations

from pathlib import Path

import yaml

from dataplatform.config import CONFIG_DIR
from dataplatform.gdpr import audit, requests
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog


def pii_lake(aws, bucket: str, requests_table: str = "gdpr_requests", audit_table: str = "gdpr_audit"):
    """``aws`` with a versioned ``bucket``, ``catalog`` (Glue) and ``dynamodb`` holding empty request and
    audit tables."""
    aws.s3.create_bucket(Bucket=bucket)
    aws.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    aws.catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    aws.dynamodb = aws.client("dynamodb")
    requests.create_requests_table(aws.dynamodb, requests_table)
    audit.create_audit_table(aws.dynamodb, audit_table)
    return aws


def pyiceberg_only_config_file(folder: Path) -> Path:
    """The local config without its ``backend: spark`` tables and ``engine: spark`` datasets (Hudi and
    Spark Iceberg), written to ``folder``: for the tests of the pyiceberg paths through whole DAG runs,
    which seed no table for them (those run in their own tests and in ``make demo``)."""
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    tables, datasets = raw["iceberg"]["tables"], raw["gdpr"]["datasets"]
    raw["iceberg"]["tables"] = {k: v for k, v in tables.items() if v.get("backend") != "spark"}
    raw["gdpr"]["datasets"] = {k: v for k, v in datasets.items() if v.get("engine") != "spark"}
    path = folder / "local-pyiceberg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def without_hudi_config_file(folder: Path) -> Path:
    """The local config without its Hudi datasets, written to ``folder``: for DAG tests of the Iceberg
    datasets, which seed no Hudi table (Hudi runs in test_gdpr_hudi_dag.py and ``make demo``)."""
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    datasets = raw["gdpr"]["datasets"]
    raw["gdpr"]["datasets"] = {k: v for k, v in datasets.items() if v.get("format") != "hudi"}
    path = folder / "local-without-hudi.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
