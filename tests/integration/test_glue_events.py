"""Event-driven partition registration against the moto server.

moto's S3 delivers ObjectCreated notifications to SQS when objects are put (``moto/s3/notifications.py``:
``send_event`` -> ``_send_sqs_message``; an ``s3:TestEvent`` first when the configuration is put, then
one message per object with the key URL-encoded, as AWS sends them), so these tests put objects and drain
what S3 delivered. Only the bodies that S3 never sends (a message that is no S3 notification) are sent
by the test itself, and say so.
"""

import json
import time
from datetime import timedelta

import pytest

from dataplatform.config import GlueSettings, GlueTable, settings
from dataplatform.devstack.seed import create_table, ensure_bucket, put_partitions, put_raw_prefixes
from dataplatform.glue import events
from dataplatform.glue.layout import PartitionLayout
from dataplatform.glue.loader import PartitionLoadError, validate_request
from tests.integration.test_glue_loader import INVALID, START, LimitCheckingGlue, all_partitions
from tests.integration.test_glue_loader import TABLE as LOADER_TABLE

pytestmark = pytest.mark.integration

QUEUE = "it-clicks-events"
# The loader tests' table, fed by its queue.
TABLE = GlueTable.model_validate({**LOADER_TABLE.model_dump(), "mode": "events", "events_queue": QUEUE})


def hourly(hours, start=START):
    return PartitionLayout(TABLE).values_for_interval(start, start + timedelta(hours=hours))


def location_of(values):
    return f"s3://it-lake/clicks/dt={values[0]}/hour={values[1]}/"


def queue_depth(sqs) -> tuple[int, int]:
    """(visible, in flight) messages of the table's queue."""
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def wait_until_visible(sqs, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while queue_depth(sqs)[0] < count:
        assert time.monotonic() < deadline, f"messages never became visible: {queue_depth(sqs)}"
        time.sleep(0.2)


@pytest.fixture
def lake(aws):
    ensure_bucket(aws.s3, "it-lake")
    create_table(aws.glue, TABLE)
    aws.sqs = aws.client("sqs")
    events.ensure_event_queue(aws.sqs, aws.s3, "clicks", TABLE)
    return aws


def drain(lake, glue=None, **kwargs):
    return events.drain(glue or lake.glue, lake.sqs, "clicks", TABLE, wait_seconds=0, **kwargs)


def test_objects_put_into_the_lake_become_partitions_with_their_locations(lake):
    valid = hourly(30)
    put_partitions(lake.s3, TABLE, valid, success_marker=True)
    put_raw_prefixes(lake.s3, TABLE, INVALID)
    glue = LimitCheckingGlue(lake.glue)

    report = drain(lake, glue)

    registered = all_partitions(lake.glue)
    assert set(registered) == set(valid)
    assert {v: p["StorageDescriptor"]["Location"] for v, p in registered.items()} == {
        v: location_of(v) for v in valid
    }
    # S3's test event, 30 data files, 30 _SUCCESS markers, one file under each invalid prefix.
    assert report.messages_received == 1 + 30 + 30 + len(INVALID)
    assert report.messages_deleted == report.messages_received
    assert report.messages_ignored == 1 + 30
    assert (report.created, report.already_present, report.invalid) == (30, 0, len(INVALID))
    assert set(report.invalid_prefixes) >= {"dt=garbage/", "region=eu/", "dt=2024-06-01/", "year=2023/"}
    assert report.invalid_prefixes["dt=2023-02-30/"] == "dt='2023-02-30' does not fit the format '%Y-%m-%d'"
    assert report.s3_list_calls == 0
    assert glue.calls == {"BatchGetPartition": 1, "GetTable": 1, "BatchCreatePartition": 1}
    assert queue_depth(lake.sqs) == (0, 0)


def test_a_rerun_with_the_queue_empty_or_the_messages_redelivered_changes_nothing(lake):
    valid = hourly(12)
    put_partitions(lake.s3, TABLE, valid)
    drain(lake)
    before = all_partitions(lake.glue)

    empty = drain(lake, LimitCheckingGlue(lake.glue))
    assert (empty.messages_received, empty.created, empty.glue_write_calls, empty.glue_read_calls) == (
        0,
        0,
        0,
        0,
    )

    # The writer rewrites the same files (as a retried Spark job does): the same keys arrive again.
    put_partitions(lake.s3, TABLE, valid)
    glue = LimitCheckingGlue(lake.glue)
    again = drain(lake, glue)

    assert all_partitions(lake.glue) == before
    assert (again.messages_received, again.messages_deleted) == (12, 12)
    assert (again.created, again.already_present, again.glue_write_calls) == (0, 12, 0)
    assert glue.calls == {"BatchGetPartition": 1}
    assert queue_depth(lake.sqs) == (0, 0)


def test_partitions_that_fail_to_register_keep_their_messages_for_the_next_drain(lake, monkeypatch):
    monkeypatch.setattr(events, "VISIBILITY_SECONDS", 2)
    valid = hourly(150)
    put_partitions(lake.s3, TABLE, valid)
    bad = {valid[7], valid[120]}
    glue = LimitCheckingGlue(lake.glue, fail_values=bad)

    with pytest.raises(PartitionLoadError, match=r"2 partitions failed.*InvalidInputException") as failure:
        drain(lake, glue)

    report = failure.value.report
    assert set(all_partitions(lake.glue)) == set(valid) - bad
    assert (report.created, report.failed, report.messages_deleted) == (148, 2, 1 + 148)
    assert sum(queue_depth(lake.sqs)) == 2, "the two failed partitions' messages stay in the queue"

    wait_until_visible(lake.sqs, 2)  # their visibility timeout: SQS hands them out again
    retry = drain(lake)
    assert set(all_partitions(lake.glue)) == set(valid)
    assert (retry.messages_received, retry.created, retry.failed) == (2, 2, 0)
    assert queue_depth(lake.sqs) == (0, 0)


def test_keys_outside_the_layout_and_foreign_bodies_are_reported_and_leave_the_queue(lake):
    put_raw_prefixes(lake.s3, TABLE, ["dt=2023-01-01/hour=5/", "dt=2023-01-01/"])
    # Writer leftovers: never partitions, whatever level they sit at.
    for key in ("dt=2023-01-02/hour=00/_SUCCESS", "dt=2023-01-02/hour=01/_temporary/0/part-0.json",
                "dt=2023-01-02_$folder$", "_temporary/0/x.json", "dt=2023-01-02/hour=02/"):  # fmt: skip
        lake.s3.put_object(Bucket="it-lake", Key=f"clicks/{key}", Body=b"")
    # Written by the test: a message S3 never sends (a poison message) must not block the queue.
    url = lake.sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    lake.sqs.send_message(QueueUrl=url, MessageBody="not json")

    report = drain(lake)

    assert all_partitions(lake.glue) == {}
    assert report.invalid_prefixes == {
        "dt=2023-01-01/hour=5/": "hour='5' does not fit the format '%H'",
        "dt=2023-01-01/": "holds files but no 'hour={hour}' level below it",
        f"message {report_message_id(report)}": "not JSON",
    }
    assert (report.messages_received, report.messages_deleted, report.messages_ignored) == (9, 9, 6)
    assert queue_depth(lake.sqs) == (0, 0)


def report_message_id(report) -> str:
    return next(prefix for prefix in report.invalid_prefixes if prefix.startswith("message "))[
        len("message ") :
    ]


def test_keys_are_url_decoded_as_s3_encodes_them(lake):
    # S3 sends "+" as %2B (and a space as "+"): decoding the key as a plain URL would lose the "+".
    spaced = GlueTable(**{**TABLE.model_dump(), "location": "s3://it-lake/clicks+v2/"})
    events.ensure_event_queue(lake.sqs, lake.s3, "clicks", spaced)
    create_table(lake.glue, spaced)
    put_partitions(lake.s3, spaced, hourly(2))

    report = events.drain(lake.glue, lake.sqs, "clicks", spaced, wait_seconds=0)

    assert report.created == 2
    assert {p["StorageDescriptor"]["Location"] for p in all_partitions(lake.glue).values()} == {
        "s3://it-lake/clicks+v2/dt=2023-01-01/hour=00/",
        "s3://it-lake/clicks+v2/dt=2023-01-01/hour=01/",
    }


def test_dry_run_registers_nothing_and_hands_the_messages_back(lake):
    put_partitions(lake.s3, TABLE, hourly(5))

    report = drain(lake, dry_run=True)

    assert all_partitions(lake.glue) == {}
    assert (report.would_create, report.created, report.messages_deleted) == (5, 0, 0)
    assert queue_depth(lake.sqs) == (6, 0)
    assert drain(lake).created == 5


def test_setup_is_idempotent_and_keeps_the_buckets_other_notifications(lake):
    other = lake.sqs.create_queue(QueueName="it-other-consumer")["QueueUrl"]
    other_arn = lake.sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    current = lake.s3.get_bucket_notification_configuration(Bucket="it-lake")
    current.pop("ResponseMetadata")
    current["QueueConfigurations"].append(
        {
            "Id": "another-team",
            "QueueArn": other_arn,
            "Events": ["s3:ObjectRemoved:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "elsewhere/"}]}},
        }
    )
    lake.s3.put_bucket_notification_configuration(Bucket="it-lake", NotificationConfiguration=current)

    first = events.ensure_event_queue(lake.sqs, lake.s3, "clicks", TABLE)
    second = events.ensure_event_queue(lake.sqs, lake.s3, "clicks", TABLE)

    assert (first["notification"], second["notification"]) == ("unchanged", "unchanged")
    queues = lake.s3.get_bucket_notification_configuration(Bucket="it-lake")["QueueConfigurations"]
    assert sorted(q["Id"] for q in queues) == ["another-team", "glue-partitions-it_lake-clicks"]
    ours = next(q for q in queues if q["Id"] == "glue-partitions-it_lake-clicks")
    assert ours["Events"] == ["s3:ObjectCreated:*"]
    assert ours["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "clicks/"}]
    policy = json.loads(
        lake.sqs.get_queue_attributes(QueueUrl=first["queue_url"], AttributeNames=["Policy"])["Attributes"][
            "Policy"
        ]
    )
    assert policy["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}
    assert [q["queue_url"] for q in [first, second]] == [first["queue_url"]] * 2

    # A changed location replaces our configuration, still without touching the other.
    moved = GlueTable(**{**TABLE.model_dump(), "location": "s3://it-lake/clicks_v2/"})
    assert events.ensure_event_queue(lake.sqs, lake.s3, "clicks", moved)["notification"] == "set"
    queues = lake.s3.get_bucket_notification_configuration(Bucket="it-lake")["QueueConfigurations"]
    assert sorted(q["Id"] for q in queues) == ["another-team", "glue-partitions-it_lake-clicks"]
    assert next(q for q in queues if q["Id"] != "another-team")["Filter"]["Key"]["FilterRules"] == [
        {"Name": "prefix", "Value": "clicks_v2/"}
    ]


def test_events_mode_for_a_table_without_a_queue_is_refused_before_any_side_effect(aws):
    plain = GlueTable(**TABLE.model_dump(exclude={"mode", "events_queue"}))
    config = settings().model_copy(update={"glue": GlueSettings(tables={"plain": plain})})
    sqs = aws.client("sqs")
    with pytest.raises(ValueError, match=r"param 'mode': mode 'events' needs glue.tables.plain.mode: events"):
        validate_request("plain", "events", False, config)
    with pytest.raises(ValueError, match=r"needs a table with mode: events"):
        validate_request(None, "events", False, config)
    assert sqs.list_queues().get("QueueUrls", []) == []
