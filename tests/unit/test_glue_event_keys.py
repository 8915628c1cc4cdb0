"""Object keys -> partitions, and S3 notification bodies -> keys (``dataplatform.glue.events``)."""

import json

import pytest

from dataplatform.glue.events import InvalidKey, object_keys, partition_of_key, with_notification
from dataplatform.glue.layout import PartitionLayout
from tests.glue_tables import HOUR, YEAR_MONTH_DAY, glue_table

pytestmark = pytest.mark.unit

HIVE = PartitionLayout(glue_table("clicks", [{"name": "dt", "format": "%Y-%m-%d"}, HOUR], granularity="hour"))
TRAIL = PartitionLayout(glue_table("trail", YEAR_MONTH_DAY, template="{year}/{month}/{day}"))


@pytest.mark.parametrize(
    ("layout", "key", "expected"),
    [
        (HIVE, "clicks/dt=2024-03-05/hour=07/part-0.json", (("2024-03-05", "07"), "dt=2024-03-05/hour=07/")),
        # Data below the partition level belongs to the partition, as discover counts it.
        (
            HIVE,
            "clicks/dt=2024-03-05/hour=07/sub/part-0.json",
            (("2024-03-05", "07"), "dt=2024-03-05/hour=07/"),
        ),
        (TRAIL, "clicks/2024/02/29/x.json.gz", (("2024", "02", "29"), "2024/02/29/")),
        (HIVE, "clicks/dt=2024-03-05/hour=07/_SUCCESS", None),
        (HIVE, "clicks/dt=2024-03-05/hour=07/_temporary/0/part-0.json", None),
        (HIVE, "clicks/dt=2024-03-05/hour=07_$folder$", None),
        (HIVE, "clicks/dt=2024-03-05/hour=07/", None),
        (HIVE, "clicks/.spark-staging-1/dt=2024-03-05/hour=07/part-0.json", None),
    ],
)
def test_a_data_key_names_its_partition_and_leftovers_name_none(layout, key, expected):
    assert partition_of_key(layout, "clicks/", key) == expected


@pytest.mark.parametrize(
    ("layout", "key", "prefix", "reason"),
    [
        (HIVE, "clicks/dt=garbage/hour=00/p.json", "dt=garbage/", "does not fit the format"),
        (HIVE, "clicks/dt=2024-03-05/minute=00/p.json", "dt=2024-03-05/minute=00/", "does not match"),
        (HIVE, "clicks/dt=2024-03-05/p.json", "dt=2024-03-05/", "no 'hour={hour}' level"),
        (HIVE, "clicks/p.json", "p.json", "no 'dt={dt}' level"),
        (TRAIL, "clicks/2023/02/29/p.json", "2023/02/29/", "day 29 is out of range for February 2023"),
        (HIVE, "other/dt=2024-03-05/hour=07/p.json", "other/dt=2024-03-05/hour=07/p.json", "not under"),
    ],
)
def test_a_key_outside_the_layout_is_invalid_naming_the_level_that_does_not_fit(layout, key, prefix, reason):
    with pytest.raises(InvalidKey) as error:
        partition_of_key(layout, "clicks/", key)
    assert error.value.prefix == prefix
    assert reason in error.value.reason


def s3_body(*keys, event="ObjectCreated:Put"):
    return json.dumps(
        {
            "Records": [
                {"eventName": event, "s3": {"bucket": {"name": "b"}, "object": {"key": k}}} for k in keys
            ]
        }
    )


def test_notification_bodies_give_url_decoded_keys_of_created_objects_only():
    assert object_keys(s3_body("dt%3D2024-03-05/hour%3D07/a+b%2Bc.json")) == [
        ("b", "dt=2024-03-05/hour=07/a b+c.json")
    ]
    assert object_keys(s3_body("x", event="ObjectRemoved:Delete")) == []
    assert object_keys(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})) is None
    for body in (
        "not json",
        "[]",
        json.dumps({"Message": "{}"}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
    ):
        with pytest.raises(ValueError, match="not"):
            object_keys(body)


def test_the_tables_notification_replaces_only_its_own_configuration():
    ours = {"Id": "glue-partitions-db-t", "QueueArn": "arn:q", "Events": ["s3:ObjectCreated:*"]}
    other = {"Id": "x", "QueueArn": "arn:other", "Events": ["s3:ObjectRemoved:*"]}
    topic = {"TopicConfigurations": [{"Id": "t", "TopicArn": "arn:t", "Events": ["s3:ObjectCreated:*"]}]}
    current = {"QueueConfigurations": [other], **topic, "ResponseMetadata": {}}

    updated = with_notification(current, ours)
    assert updated == {"QueueConfigurations": [other, ours], **topic}
    assert with_notification(updated, ours) is None
    moved = {**ours, "QueueArn": "arn:q2"}
    assert with_notification(updated, moved) == {"QueueConfigurations": [other, moved], **topic}


def test_the_loaders_iam_policy_grants_the_queue_and_notification_calls_of_event_tables():
    from dataplatform.config import settings
    from dataplatform.devstack.iam_policies import Arns, glue_partition_loader

    config = settings()
    events_table = config.glue.tables["web_events"].model_copy(
        update={"mode": "events", "events_queue": "web-q"}
    )
    with_events = config.model_copy(
        update={
            "glue": config.glue.model_copy(
                update={"tables": {**config.glue.tables, "web_events": events_table}}
            )
        }
    )
    statements = {s["Sid"]: s for s in glue_partition_loader(with_events, Arns(with_events))["Statement"]}
    assert statements["EventQueues"]["Resource"] == ["arn:aws:sqs:us-east-1:${AccountId}:web-q"]
    assert "sqs:ReceiveMessage" in statements["EventQueues"]["Action"]
    assert statements["EventNotifications"]["Resource"] == ["arn:aws:s3:::dataplatform-local-lake"]
    # Without event tables the document is as before: no queue, no notification rights.
    plain = {s["Sid"] for s in glue_partition_loader(config, Arns(config))["Statement"]}
    assert not plain & {"EventQueues", "EventNotifications"}
