"""The local endpoint's faster SQS (``devstack/moto_sqs.py``) answers as moto's own does."""

import json

import boto3
import pytest
from moto import mock_aws

from dataplatform.devstack.moto_sqs import speed_up_sqs

pytestmark = pytest.mark.unit

COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


def conversation() -> list:
    """What SQS answers to a drain with a delayed message, a redelivery and bad receipt handles."""
    answers = []
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "600"})["QueueUrl"]
        for start in (0, 10, 20):
            entries = [{"Id": str(n), "MessageBody": json.dumps({"n": start + n})} for n in range(10)]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)

        def counts():
            return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=COUNTS)["Attributes"]

        answers.append(counts())
        first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)["Messages"]
        answers.append((sorted(m["Body"] for m in first), counts()))
        handles = [m["ReceiptHandle"] for m in first]
        entries = [{"Id": f"d{n}", "ReceiptHandle": h} for n, h in enumerate(handles[:6])]
        answers.append(_outcome(sqs.delete_message_batch(QueueUrl=url, Entries=entries)))
        # Deleted again (SQS accepts it), a handle never issued, and the rest of the first batch.
        again = [
            {"Id": "again", "ReceiptHandle": handles[0]},
            {"Id": "bogus", "ReceiptHandle": "not-a-handle"},
            *({"Id": f"r{n}", "ReceiptHandle": h} for n, h in enumerate(handles[6:])),
        ]
        answers.append(_outcome(sqs.delete_message_batch(QueueUrl=url, Entries=again)))
        answers.append(counts())
        rest = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            rest += batch
        answers.append((sorted(m["Body"] for m in rest), counts()))
    return answers


def _outcome(answer: dict):
    return sorted(s["Id"] for s in answer.get("Successful", [])), sorted(
        (f["Id"], f["Code"], f["SenderFault"]) for f in answer.get("Failed", [])
    )


def test_the_faster_sqs_answers_as_motos_own(monkeypatch):
    own = conversation()
    speed_up_sqs(monkeypatch.setattr)
    faster = conversation()
    assert faster == own
    # The conversation exercises what was replaced: a redelivered handle, a bogus one, a delayed message.
    assert own[3][1] == [("bogus", "ReceiptHandleIsInvalid", True)]
    assert "again" in own[3][0]
    assert len(own[-1][0]) == 20 and "later" not in own[-1][0]
    assert own[0]["ApproximateNumberOfMessagesDelayed"] == "1"


def test_concurrent_batch_deletes_remove_exactly_their_messages(monkeypatch):
    """The endpoint serves requests on threads: eight deleters at once must neither lose a deletion nor
    delete a message they did not name."""
    from concurrent.futures import ThreadPoolExecutor

    speed_up_sqs(monkeypatch.setattr)
    with mock_aws():
        from moto.sqs.models import sqs_backends

        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        for start in range(0, 600, 10):
            entries = [{"Id": str(n), "MessageBody": str(start + n)} for n in range(10)]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        received = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
            "Messages"
        ):
            received += batch
        kept, deleted = received[:100], received[100:]
        backend = sqs_backends["123456789012"]["us-east-1"]
        chunks = [deleted[n : n + 10] for n in range(0, len(deleted), 10)]

        def delete(chunk):
            entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)]
            return backend.delete_message_batch("q", entries)

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(delete, chunks))
        assert all(not errors for _, errors in outcomes)
        left = {message.body for message in backend.queues["q"]._messages}
        assert left == {m["Body"] for m in kept}
