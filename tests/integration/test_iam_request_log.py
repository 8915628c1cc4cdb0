"""The IAM check on the endpoint's real request log: real boto3 calls, the operations the endpoint
resolved from the wire, held to the policies rendered for the local config."""

from __future__ import annotations

import boto3
import pytest

from dataplatform.devstack.iam_check import check
from dataplatform.devstack.moto_server import MotoServer
from dataplatform.spark import SPARK_JOB_UA_APP_ID

pytestmark = pytest.mark.integration

LAKE = "dataplatform-local-lake"


def _s3(server, app_id=None):
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=boto3.session.Config(user_agent_appid=app_id) if app_id else None,
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    log = tmp_path_factory.mktemp("iam") / "requests.jsonl"
    with MotoServer(request_log=log) as server:
        s3 = _s3(server)
        server.set_phase("seed")
        s3.create_bucket(Bucket=LAKE)
        s3.put_bucket_versioning(Bucket=LAKE, VersioningConfiguration={"Status": "Enabled"})
        landed = s3.put_object(Bucket=LAKE, Key="recon/landing/b-1/events.json", Body=b"{}")
        server.set_phase("recon_stateless")
        s3.head_object(Bucket=LAKE, Key="recon/landing/b-1/events.json")
        s3.get_object(Bucket=LAKE, Key="recon/landing/b-1/events.json", VersionId=landed["VersionId"])
        s3.list_objects_v2(Bucket=LAKE, Prefix="recon/landing/")
        # A Spark job's boto3 (tagged as local spark-submit tags it) writing the work area.
        _s3(server, SPARK_JOB_UA_APP_ID).put_object(Bucket=LAKE, Key="recon/work/part-0", Body=b"x")
        server.set_phase("glue_partition_loader")
        s3.get_object(Bucket=LAKE, Key="recon/landing/b-1/events.json")
    return check(log)


def test_real_requests_map_to_the_actions_the_roles_grant(result):
    assert result["requests_unchecked"] == 3  # the seeding
    assert result["requests_checked"] == 5
    # Two calls outside the policies: the Glue loader reading reconciliation's landing area, and a
    # versioned read (GetObject?versionId= is s3:GetObjectVersion, which reconciliation is not granted).
    key = f"arn:aws:s3:::{LAKE}/recon/landing/b-1/events.json"
    assert [(m["role"], m["action"], m["resource"], m["phase"]) for m in result["missing_grants"]] == [
        ("mwaa-glue-partition-loader", "s3:GetObject", key, "glue_partition_loader"),
        ("mwaa-reconciliation", "s3:GetObjectVersion", key, "recon_stateless"),
    ]


def test_calls_count_as_used_by_the_documents_of_the_role_that_made_them(result):
    unused = set(result["iam_unused_grants"])
    assert "mwaa-reconciliation: s3:GetObject" not in unused  # HeadObject and GetObject
    assert "mwaa-reconciliation: s3:ListBucket" not in unused  # ListObjectsV2
    assert "emr-job-role: s3:PutObject" not in unused  # the job's boto3
    # The worker itself never wrote the work area here: the job did.
    assert "mwaa-reconciliation: s3:PutObject" in unused
