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


def pyiceberg_only_config(folder: Path) -> Path:
    """The local config without its Hudi datasets, written to ``folder``: for the tests of the pyiceberg
    path, which seed no Hudi table (the Hudi datasets run in tests/integration/test_gdpr_hudi_*.py and in
    ``make demo``). Point ``DATAPLATFORM_CONFIG`` at it (and clear ``settings``' cache)."""
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["gdpr"]["datasets"] = {
        key: dataset for key, dataset in raw["gdpr"]["datasets"].items() if dataset["format"] != "hudi"
    }
    path = folder / "local-pyiceberg-gdpr.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
