"""A fresh moto lake for a test module whose seeded tables serve several tests."""

from __future__ import annotations


def fresh_lake(moto_server):
    """An empty moto state for a module's seeded tables (the ``aws`` fixture resets it per test): S3 and
    DynamoDB clients as the product builds them, the pyiceberg Glue catalog, the reports bucket."""
    from types import SimpleNamespace

    from dataplatform import aws
    from dataplatform.config import settings
    from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
    from dataplatform.s3.objects import split_uri

    moto_server.reset()
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=split_uri(settings().reports_uri)[0])
    return SimpleNamespace(
        s3=s3,
        dynamodb=aws.client("dynamodb"),
        catalog=load_glue_catalog(AwsAccess("us-east-1", moto_server.url, "testing", "testing")),
        server=moto_server,
    )
