"""The fault-injecting AWS endpoint, driven by real clients: what botocore sees, what really happened."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from dataplatform.devstack.faults import FaultPlan
from dataplatform.devstack.moto_server import MotoServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    log = tmp_path_factory.mktemp("endpoint") / "requests.jsonl"
    with MotoServer(request_log=log) as server:
        yield server, log


def _client(server, service, attempts):
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": attempts}),
    )


def test_each_kind_reaches_the_client_as_aws_sends_it(endpoint):
    server, _ = endpoint
    s3, ddb, glue = (_client(server, s, 1) for s in ("s3", "dynamodb", "glue"))
    s3.create_bucket(Bucket="faults")
    ddb.create_table(
        TableName="faults",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    calls = {
        "s3_slow_down": (lambda: s3.list_objects_v2(Bucket="faults"), "SlowDown"),
        "s3_internal_error": (lambda: s3.list_objects_v2(Bucket="faults"), "InternalError"),
        "dynamodb_throughput_exceeded": (
            lambda: ddb.get_item(TableName="faults", Key={"k": {"S": "a"}}),
            "ProvisionedThroughputExceededException",
        ),
        "dynamodb_transaction_conflict": (
            lambda: ddb.transact_write_items(
                TransactItems=[{"Put": {"TableName": "faults", "Item": {"k": {"S": "a"}}}}]
            ),
            "TransactionCanceledException",
        ),
        "glue_concurrent_modification": (
            lambda: glue.create_database(DatabaseInput={"Name": "faults"}),
            "ConcurrentModificationException",
        ),
        "glue_throttling": (lambda: glue.get_databases(), "ThrottlingException"),
    }
    try:
        for kind, (call, code) in calls.items():
            server.set_faults(FaultPlan(rate=1.0, kinds=(kind,)))
            with pytest.raises(ClientError) as raised:
                call()
            assert raised.value.response["Error"]["Code"] == code, kind
        reasons = None
        server.set_faults(FaultPlan(rate=1.0, kinds=("dynamodb_transaction_conflict",)))
        try:
            ddb.transact_write_items(
                TransactItems=[{"Put": {"TableName": "faults", "Item": {"k": {"S": "a"}}}}]
            )
        except ClientError as error:
            reasons = error.response["CancellationReasons"]
        assert reasons == [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}]
        server.set_faults(FaultPlan(rate=1.0, kinds=("connection_reset",)))
        with pytest.raises(ConnectionClosedError):
            s3.put_object(Bucket="faults", Key="reset", Body=b"x")
        server.set_faults(FaultPlan(rate=1.0, kinds=("read_timeout",), timeout_seconds=0.2))
        with pytest.raises(ConnectionClosedError):
            s3.put_object(Bucket="faults", Key="timed-out", Body=b"x")
    finally:
        server.set_faults(None)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="faults").get("Contents", [])}
    # A reset comes before processing; a read timeout after: its write happened, the client never heard.
    assert keys == {"timed-out"}
    assert ddb.scan(TableName="faults")["Items"] == []
    assert glue.get_databases()["DatabaseList"] == []


def test_retrying_clients_converge_and_every_request_is_counted_and_logged(endpoint):
    server, log = endpoint
    s3 = _client(server, "s3", 10)
    s3.create_bucket(Bucket="converge")
    server.reset_fault_stats()
    server.set_phase("load")
    server.set_faults(FaultPlan(rate=0.3, seed=11, timeout_seconds=0.2))
    try:
        for i in range(40):
            s3.put_object(Bucket="converge", Key=f"k/{i:02d}", Body=str(i).encode())
    finally:
        server.set_faults(None)
    stats = server.fault_stats()
    server.set_phase("verify")
    objects = {
        o["Key"]: s3.get_object(Bucket="converge", Key=o["Key"])["Body"].read()
        for o in s3.list_objects_v2(Bucket="converge")["Contents"]
    }
    assert objects == {f"k/{i:02d}": str(i).encode() for i in range(40)}
    assert stats["faults"] == sum(stats["faults_by_kind"].values()) > 0
    # Every faulted attempt was retried: 40 answered puts plus one request per fault.
    assert stats["requests_by_service"] == {"s3": 40 + stats["faults"]}
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    load = [line for line in lines if line["phase"] == "load"]
    assert {line["operation"] for line in load} == {"PutObject"}
    assert sum(1 for line in load if line["fault"]) == stats["faults"]
    assert sum(1 for line in load if not line["fault"] and line["status"] == 200) == 40


def test_the_endpoint_log_keeps_failed_requests_and_the_request_log_every_request(tmp_path):
    """moto.log (werkzeug's log) shows the requests that failed, not every one (writing a line per request
    cost a tenth of the server's CPU); the request log has every request with its status."""
    log, requests = tmp_path / "moto.log", tmp_path / "requests.jsonl"
    with MotoServer(log_path=log, request_log=requests) as server:
        s3 = _client(server, "s3", 1)
        s3.create_bucket(Bucket="logged")
        s3.put_object(Bucket="logged", Key="there", Body=b"x")
        with pytest.raises(ClientError):
            s3.get_object(Bucket="logged", Key="missing")
    lines = log.read_text().splitlines()
    # werkzeug colours the request part of a line: match its pieces
    assert [line for line in lines if "GET /logged/missing HTTP" in line and " 404 " in line]
    assert not [line for line in lines if "/logged/there" in line or "PUT /logged HTTP" in line]
    statuses = {
        (r["method"], r["path"], r["status"]) for r in map(json.loads, requests.read_text().splitlines())
    }
    assert {
        ("PUT", "/logged", 200),
        ("PUT", "/logged/there", 200),
        ("GET", "/logged/missing", 404),
    } <= statuses
