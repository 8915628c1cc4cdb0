"""Event-driven partition registration: the bucket's ObjectCreated notifications, queued in SQS, become
Glue partitions without listing S3.

``ensure_event_queue`` (the DAG's setup) creates the table's queue, lets the bucket send to it, and adds
one QueueConfiguration (``s3:ObjectCreated:*`` under the table location's prefix) to the bucket's
notification configuration, keeping every other configuration and replacing only its own on a rerun.

``drain`` receives the queue's messages (ReceiveMessage, 10 a call, a few receivers at once) for a round of
up to ``ROUND_MESSAGES``, turns each object key into a partition with the layout's own validation (the
checks discover applies level by level), registers the round's new partitions with the loader's batched
writer (BatchGetPartition for what Glue has, BatchCreatePartition 100 a call), and only then deletes
(DeleteMessageBatch, 10 a call) the messages whose partitions Glue now holds. Delivery is at least once and
registration idempotent, so a message seen twice, or deleted late, changes nothing.

What a message holds and what becomes of it:
- a data object under a valid partition: deleted once the partition exists; if its creation fails the
  message stays and comes back after the visibility timeout (the next drain, or a retry, registers it);
- writer leftovers (``_SUCCESS``, ``_temporary/``, ``.crc``, ``$folder$``, directory objects), S3's
  ``s3:TestEvent`` and events other than ObjectCreated: nothing to register, deleted;
- a key outside the layout (``dt=garbage/``, a missing level, an impossible day), outside the table
  location, or a body that is no S3 notification: reported as invalid, like discover's invalid
  prefixes, and deleted. Redelivery cannot make such a message valid, so keeping it would only block
  the queue; the object is still in S3, and ``mode=discover`` finds whatever was dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from dataplatform.config import GlueTable
from dataplatform.glue import loader
from dataplatform.glue.catalog import chunked
from dataplatform.glue.discovery import split_s3_uri
from dataplatform.glue.layout import InvalidPartitionPath, PartitionLayout, PartitionValues, is_data_key

log = logging.getLogger(__name__)

# SQS's per-call maximum for ReceiveMessage and DeleteMessageBatch.
SQS_BATCH = 10
# Messages received before their partitions are registered and they are deleted: large enough that 10,000
# partitions take one existence check and 100 creates, small enough to finish well within the visibility
# timeout.
ROUND_MESSAGES = 20_000
# A run stops after this many messages (the rest wait for the next run), bounding its memory and time.
MAX_MESSAGES_PER_RUN = 200_000
# How long a received message stays hidden from other receivers: longer than a round takes.
VISIBILITY_SECONDS = 900
# ReceiveMessage calls in flight: each waits a round trip, so a few hide the latency.
RECEIVERS = 8
DELETERS = 8
# Long polling: an empty queue answers after this wait, and a busy queue at once. Short polling (0) may
# miss messages that a sampled server does not hold.
WAIT_SECONDS = 1
# Messages are kept 14 days (SQS's maximum): a paused DAG loses nothing for two weeks.
RETENTION_SECONDS = 14 * 24 * 3600
NOTIFICATION_EVENTS = ["s3:ObjectCreated:*"]
TEST_EVENT = "s3:TestEvent"


class InvalidKey(ValueError):
    """An object key that names no partition of the table: ``prefix`` (relative) and the reason."""

    def __init__(self, prefix: str, reason: str):
        super().__init__(f"{prefix}: {reason}")
        self.prefix, self.reason = prefix, reason


@dataclass
class MessageContent:
    """What one SQS message names: partitions (values -> relative path) and invalid keys."""

    message_id: str
    receipt_handle: str
    partitions: dict[PartitionValues, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)

    @property
    def ignored(self) -> bool:
        return not self.partitions and not self.invalid


# -- keys -> partitions ----------------------------------------------------------------------------------


def partition_of_key(layout: PartitionLayout, root: str, key: str) -> tuple[PartitionValues, str] | None:
    """The partition (values, relative path) a data object's key lies in, None for a writer leftover;
    raises InvalidKey for a key the layout does not allow, naming the first level that does not fit
    (as discover reports it)."""
    if not key.startswith(root):
        raise InvalidKey(key, f"not under the table location's prefix {root!r}")
    relative = key[len(root) :]
    if not is_data_key(relative):
        return None
    directories = relative.split("/")[:-1]
    path, values = "", {}
    for level, segment in enumerate(directories[: layout.depth]):
        try:
            values = layout.parse_level(level, segment, values)
        except InvalidPartitionPath as exc:
            raise InvalidKey(f"{path}{segment}/", str(exc)) from None
        path += f"{segment}/"
    if len(directories) < layout.depth:
        expected = layout.segments[len(directories)].template
        raise InvalidKey(path or relative, f"holds files but no {expected!r} level below it")
    return layout.in_key_order(values), path


def object_keys(body: str) -> list[tuple[str, str]] | None:
    """``(bucket, key)`` of each ObjectCreated record of an S3 notification body, with the key
    URL-decoded (S3 sends ``dt%3D2024-03-05/...``); None for S3's test event; ValueError for a body that is
    no S3 notification."""
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        raise ValueError("not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("not an S3 event notification")
    if document.get("Event") == TEST_EVENT:
        return None
    records = document.get("Records")
    if not isinstance(records, list):
        raise ValueError("not an S3 event notification (no Records)")
    keys = []
    for record in records:
        try:
            if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
                continue  # another event type sent to the same queue: nothing to register
            keys.append((record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])))
        except (AttributeError, KeyError, TypeError):
            raise ValueError("not an S3 event notification (a record without bucket or key)") from None
    return keys


def read_message(message: dict, layout: PartitionLayout, bucket: str, root: str) -> MessageContent:
    content = MessageContent(message["MessageId"], message["ReceiptHandle"])
    try:
        keys = object_keys(message.get("Body", ""))
    except ValueError as exc:
        content.invalid[f"message {message['MessageId']}"] = str(exc)
        return content
    for record_bucket, key in keys or []:
        if record_bucket != bucket:
            content.invalid[f"s3://{record_bucket}/{key}"] = f"not in the table's bucket {bucket!r}"
            continue
        try:
            found = partition_of_key(layout, root, key)
        except InvalidKey as exc:
            content.invalid[exc.prefix] = exc.reason
            continue
        if found is not None:
            content.partitions[found[0]] = found[1]
    return content


# -- the queue -------------------------------------------------------------------------------------------


class _Counter:
    def __init__(self):
        self.value = 0
        self._lock = threading.Lock()

    def add(self, amount: int = 1) -> int:
        with self._lock:
            self.value += amount
            return self.value


def receive_round(
    sqs, queue_url: str, limit: int, receivers: int = RECEIVERS, wait_seconds: int = WAIT_SECONDS
) -> tuple[list[dict], int]:
    """Up to about ``limit`` messages (each receiver stops at an empty answer or once ``limit`` are in),
    each once, and the ReceiveMessage calls it took."""
    received: dict[str, dict] = {}
    lock, calls = threading.Lock(), _Counter()

    def receive_until_empty() -> None:
        while True:
            with lock:
                if len(received) >= limit:
                    return
            answer = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=SQS_BATCH,
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=VISIBILITY_SECONDS,
            )
            calls.add()
            messages = answer.get("Messages", [])
            if not messages:
                return
            with lock:
                # At-least-once delivery: the same message can come twice; its newest handle deletes it.
                received.update((message["MessageId"], message) for message in messages)

    with ThreadPoolExecutor(max_workers=receivers, thread_name_prefix="sqs-receive") as pool:
        for future in [pool.submit(receive_until_empty) for _ in range(receivers)]:
            future.result()
    return list(received.values()), calls.value


def delete_messages(sqs, queue_url: str, receipt_handles: list[str]) -> tuple[int, int]:
    """DeleteMessageBatch, 10 a call; returns (deleted, calls). A message SQS fails to delete comes back
    after its visibility timeout, and registering its partition again changes nothing."""
    chunks = list(chunked(receipt_handles, SQS_BATCH))

    def delete(chunk) -> int:
        entries = [{"Id": str(number), "ReceiptHandle": handle} for number, handle in enumerate(chunk)]
        answer = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        for failure in answer.get("Failed", []):
            log.warning("SQS did not delete a message (it will come back): %s", failure.get("Code"))
        return len(answer.get("Successful", []))

    with ThreadPoolExecutor(max_workers=DELETERS, thread_name_prefix="sqs-delete") as pool:
        deleted = sum(pool.map(delete, chunks))
    return deleted, len(chunks)


def make_visible(sqs, queue_url: str, receipt_handles: list[str]) -> int:
    """Hand received messages back at once (a dry run registers nothing, so it must keep nothing)."""
    calls = 0
    for chunk in chunked(receipt_handles, SQS_BATCH):
        entries = [
            {"Id": str(number), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for number, handle in enumerate(chunk)
        ]
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        calls += 1
    return calls


# -- draining --------------------------------------------------------------------------------------------


def drain(
    glue,
    sqs,
    name: str,
    table: GlueTable,
    *,
    dry_run: bool = False,
    round_messages: int = ROUND_MESSAGES,
    max_messages: int = MAX_MESSAGES_PER_RUN,
    wait_seconds: int = WAIT_SECONDS,
) -> loader.LoadReport:
    """Register the partitions the table's queue announces, deleting each message once its partitions
    exist; raise PartitionLoadError (after the rest are registered and their messages deleted) if some
    partitions failed, whose messages stay in the queue."""
    if not table.events_queue:
        raise ValueError(f"{name}: mode 'events' needs glue.tables.{name}.events_queue")
    layout = PartitionLayout(table)
    bucket, root = split_s3_uri(table.location)
    report = loader.LoadReport(table=name, mode=loader.EVENTS, dry_run=dry_run)
    started = time.perf_counter()
    queue_url = sqs.get_queue_url(QueueName=table.events_queue)["QueueUrl"]
    report.sqs_calls += 1
    kept: list[str] = []  # a dry run's receipt handles, handed back at the end
    while report.messages_received < max_messages:
        messages, calls = receive_round(
            sqs,
            queue_url,
            min(round_messages, max_messages - report.messages_received),
            wait_seconds=wait_seconds,
        )
        report.sqs_calls += calls
        if not messages:
            break
        report.messages_received += len(messages)
        contents = [read_message(message, layout, bucket, root) for message in messages]
        done = _register_round(glue, table, layout, contents, report, dry_run)
        if dry_run:
            kept += [content.receipt_handle for content in contents]
            continue
        deleted, calls = delete_messages(sqs, queue_url, [content.receipt_handle for content in done])
        report.messages_deleted += deleted
        report.sqs_calls += calls
    if kept:
        report.sqs_calls += make_visible(sqs, queue_url, kept)
    report.glue_seconds = round(time.perf_counter() - started, 3)
    log.info(report.summary())
    loader.raise_if_failed(report)
    return report


def _register_round(
    glue, table: GlueTable, layout: PartitionLayout, contents: list[MessageContent], report, dry_run: bool
) -> list[MessageContent]:
    """Register what a round of messages names; return the messages that are done with (their
    partitions exist, or they name none)."""
    partitions: dict[PartitionValues, str] = {}
    invalid: dict[str, str] = {}
    for content in contents:
        partitions.update(content.partitions)
        invalid.update(content.invalid)
    report.listed += len(partitions)
    report.messages_ignored += sum(content.ignored for content in contents)
    loader.record_invalid(report, invalid)
    present = loader.register_missing(
        glue, table, layout, partitions, report, read_whole_table=False, dry_run=dry_run
    )
    return [content for content in contents if present.issuperset(content.partitions)]


# -- set-up ----------------------------------------------------------------------------------------------


def notification_id(table: GlueTable) -> str:
    """The Id of the table's QueueConfiguration: how a rerun finds (and replaces) its own."""
    return f"glue-partitions-{table.database}-{table.table}"


def queue_policy(queue_arn: str, bucket: str) -> str:
    """Let S3 send this bucket's notifications to the queue, and nothing else send to it."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "BucketNotifications",
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:*:*:{bucket}"}},
                }
            ],
        },
        sort_keys=True,
    )


def ensure_queue(sqs, queue_name: str, bucket: str) -> tuple[str, str]:
    """The queue's (url, arn), created if missing; its attributes and policy set either way."""
    try:
        queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_SECONDS),
            "MessageRetentionPeriod": str(RETENTION_SECONDS),
            "Policy": queue_policy(queue_arn, bucket),
        },
    )
    return queue_url, queue_arn


def table_notification(table: GlueTable, queue_arn: str) -> dict:
    _, root = split_s3_uri(table.location)
    configuration = {"Id": notification_id(table), "QueueArn": queue_arn, "Events": NOTIFICATION_EVENTS}
    if root:
        # The API's names are lower-case ("prefix"); AWS reads them in any case, moto only so.
        configuration["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": root}]}}
    return configuration


def with_notification(current: dict, ours: dict) -> dict | None:
    """The bucket's notification configuration with ``ours`` in place of any older one of the same Id,
    every other configuration kept; None when it is already there as it should be."""
    configuration = {key: value for key, value in current.items() if key != "ResponseMetadata"}
    queues = configuration.get("QueueConfigurations", [])
    existing = [queue for queue in queues if queue.get("Id") == ours["Id"]]
    if len(existing) == 1 and _same_notification(existing[0], ours):
        return None
    configuration["QueueConfigurations"] = [queue for queue in queues if queue.get("Id") != ours["Id"]] + [
        ours
    ]
    return configuration


def _same_notification(a: dict, b: dict) -> bool:
    def normal(configuration: dict):
        rules = configuration.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        filters = sorted((rule["Name"].lower(), rule["Value"]) for rule in rules)
        return configuration["QueueArn"], sorted(configuration["Events"]), filters

    return normal(a) == normal(b)


def ensure_event_queue(sqs, s3, name: str, table: GlueTable) -> dict:
    """Create the table's queue and its bucket notification if missing (idempotent); returns what it
    found or did."""
    if not table.events_queue:
        raise ValueError(f"{name}: mode 'events' needs glue.tables.{name}.events_queue")
    bucket, root = split_s3_uri(table.location)
    queue_url, queue_arn = ensure_queue(sqs, table.events_queue, bucket)
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    updated = with_notification(current, table_notification(table, queue_arn))
    if updated is not None:
        # The call replaces the whole configuration: ``updated`` carries every other one.
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=updated)
    outcome = "unchanged" if updated is None else "set"
    log.info(
        "%s: queue %s receives s3://%s/%s* ObjectCreated notifications (%s)",
        name,
        queue_arn,
        bucket,
        root,
        outcome,
    )
    return {"table": name, "queue_url": queue_url, "queue_arn": queue_arn, "notification": outcome}
