"""The fault plan and the request identification of the local AWS endpoint (no server)."""

from __future__ import annotations

import json

import pytest

from dataplatform.devstack.aws_requests import identify, rest_operation, signing_scope
from dataplatform.devstack.faults import ALL_KINDS, KINDS, FaultDice, FaultPlan, error_response

pytestmark = pytest.mark.unit

AUTH = "AWS4-HMAC-SHA256 Credential=testing/20261205/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=x"


def _auth(service: str) -> dict[str, str]:
    return {"authorization": AUTH.format(service=service)}


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "operation"),
    [
        ("GET", "/bkt/a/b.parquet", "", {}, "GetObject"),
        ("HEAD", "/bkt/a/b.parquet", "", {}, "HeadObject"),
        ("PUT", "/bkt/a/b.parquet", "", {}, "PutObject"),
        ("PUT", "/bkt/a/b.parquet", "", {"x-amz-copy-source": "bkt/c"}, "CopyObject"),
        ("PUT", "/bkt/a/b.parquet", "partNumber=1&uploadId=u", {}, "UploadPart"),
        ("PUT", "/bkt/a/b", "partNumber=1&uploadId=u", {"x-amz-copy-source": "bkt/c"}, "UploadPartCopy"),
        ("POST", "/bkt/a/b.parquet", "uploads", {}, "CreateMultipartUpload"),
        ("POST", "/bkt/a/b.parquet", "uploadId=u", {}, "CompleteMultipartUpload"),
        ("GET", "/bkt", "list-type=2&prefix=a%2F&delimiter=%2F", {}, "ListObjectsV2"),
        ("GET", "/bkt/", "prefix=a", {}, "ListObjects"),
        ("GET", "/bkt", "versions&prefix=a", {}, "ListObjectVersions"),
        ("POST", "/bkt", "delete", {}, "DeleteObjects"),
        ("GET", "/bkt/a/b.parquet", "tagging", {}, "GetObjectTagging"),
        ("PUT", "/bkt/a/b.parquet", "tagging&versionId=v", {}, "PutObjectTagging"),
        ("PUT", "/bkt", "lifecycle", {}, "PutBucketLifecycleConfiguration"),
        ("HEAD", "/bkt", "", {}, "HeadBucket"),
    ],
)
def test_s3_rest_requests_are_named_by_the_botocore_model(method, path, query, headers, operation):
    assert rest_operation("s3", method, path, query, headers) == operation


def test_json_query_and_rest_json_protocols_are_named():
    target = {**_auth("dynamodb"), "x-amz-target": "DynamoDB_20120810.TransactWriteItems"}
    assert identify("POST", "/", "", target).operation == "TransactWriteItems"
    form = {**_auth("sts"), "content-type": "application/x-www-form-urlencoded"}
    assert identify("POST", "/", "", form, b"Action=GetCallerIdentity&Version=2011-06-15").operation == (
        "GetCallerIdentity"
    )
    run = identify("POST", "/applications/app-1/jobruns", "", _auth("emr-serverless"))
    assert (run.service, run.operation) == ("emr-serverless", "StartJobRun")


def test_unsigned_requests_are_not_aws_calls_and_presigned_urls_are():
    assert identify("GET", "/moto-api/", "", {}) is None
    presigned = "X-Amz-Credential=testing%2F20261205%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Signature=x"
    assert signing_scope("", presigned) == ("s3", "eu-west-1")
    assert identify("GET", "/bkt/k", presigned, {}).operation == "GetObject"


def test_the_plan_is_off_by_default_and_read_from_one_file_with_env_overrides(tmp_path):
    assert not FaultPlan.load().enabled, "include/config/faults.yaml must keep faults off"
    assert set(FaultPlan.load().kinds) == set(ALL_KINDS)
    path = tmp_path / "faults.yaml"
    path.write_text("faults:\n  rate: 0.01\n  seed: 3\n  kinds: [s3_slow_down]\n")
    plan = FaultPlan.load(
        path, environ={"DATAPLATFORM_FAULT_RATE": "0.05", "DATAPLATFORM_FAULT_SERVICES": "s3,glue"}
    )
    assert (plan.rate, plan.seed, plan.kinds, plan.services) == (0.05, 3, ("s3_slow_down",), ("s3", "glue"))


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"rate": 1.5}, "rate"),
        ({"kinds": ["s3_slowdown"]}, "kinds"),
        ({"rat": 0.1}, "unknown key"),
        ({"latency_ms": -1}, "latency_ms"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_field(document, field):
    with pytest.raises(ValueError, match=field):
        FaultPlan.from_dict(document)


def test_kinds_apply_only_to_their_service_and_operation():
    plan = FaultPlan(rate=1.0)
    s3 = {kind.name for kind in plan.applicable_kinds("s3", "PutObject")}
    assert s3 == {"s3_slow_down", "s3_internal_error", "connection_reset", "read_timeout"}
    assert "dynamodb_transaction_conflict" not in {
        k.name for k in plan.applicable_kinds("dynamodb", "PutItem")
    }
    assert "dynamodb_transaction_conflict" in {
        k.name for k in plan.applicable_kinds("dynamodb", "TransactWriteItems")
    }
    assert FaultPlan(rate=1.0, services=("glue",)).applicable_kinds("s3", "PutObject") == []
    glue_reads = {kind.name for kind in plan.applicable_kinds("glue", "GetTable")}
    assert "glue_concurrent_modification" not in glue_reads, "Glue answers it to writes only"
    assert "glue_concurrent_modification" in {
        k.name for k in plan.applicable_kinds("glue", "BatchCreatePartition")
    }


def test_the_same_seed_draws_the_same_decisions_at_the_given_rate():
    def draws(seed):
        dice = FaultDice(FaultPlan(rate=0.05, seed=seed))
        return [getattr(dice.choose("s3", "GetObject"), "name", None) for _ in range(20_000)]

    first = draws(7)
    assert first == draws(7)
    assert first != draws(8)
    assert 0.04 < sum(1 for d in first if d) / len(first) < 0.06


def test_error_shapes_are_aws_shapes():
    status, headers, body = error_response(KINDS["s3_slow_down"], "rest-xml", "GET", None)
    assert status == 503 and b"<Code>SlowDown</Code>" in body
    assert error_response(KINDS["s3_slow_down"], "rest-xml", "HEAD", None)[2] == b""
    status, headers, body = error_response(
        KINDS["dynamodb_transaction_conflict"],
        "json",
        "POST",
        json.dumps({"TransactItems": [{}, {}, {}]}).encode(),
    )
    document = json.loads(body)
    assert document["__type"].endswith("TransactionCanceledException")
    assert [r["Code"] for r in document["CancellationReasons"]] == ["TransactionConflict", "None", "None"]
    status, headers, body = error_response(KINDS["emr_serverless_throttling"], "rest-json", "POST", None)
    assert status == 429 and ("x-amzn-ErrorType", "ThrottlingException") in headers


def test_the_modelled_latency_can_be_limited_to_some_services():
    from dataplatform.devstack.faults import FaultDice

    everywhere = FaultDice(FaultPlan(latency_ms=20))
    assert all(0.01 <= everywhere.latency_seconds(service) <= 0.03 for service in ("s3", "dynamodb", "glue"))
    s3_only = FaultDice(FaultPlan.from_dict({"latency_ms": 20, "latency_services": ["s3"]}))
    assert 0.01 <= s3_only.latency_seconds("s3") <= 0.03
    assert s3_only.latency_seconds("dynamodb") == 0.0
