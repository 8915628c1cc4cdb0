"""Four of moto's SQS costs cut in the local endpoint, without changing what SQS answers.

moto (5.2) keeps a queue's messages in a list and, for every message it takes in or hands out, computes
every attribute of the queue (``ApproximateNumberOfMessages`` and the rest, each a pass over all messages,
each message asking the clock) just to read one setting; and it deletes a message with two passes over all
messages. Draining a queue of n messages therefore costs O(n^2) clock reads per 10 messages:
about 0.2 s per ReceiveMessage at 300 messages, hours for the 20,000 events of 10,000 new partitions,
where SQS answers in milliseconds whatever the depth. Here:

- the visible, in-flight and delayed messages are counted with one clock read per pass instead of one or
  two per message;
- the retention period is read from the queue, not from a freshly computed attribute table;
- DeleteMessageBatch removes its (up to 10) messages in one pass over the queue (an unknown receipt handle
  gets moto's own ``ReceiptHandleIsInvalid`` entry);
- a receipt handle (185 random lower-case letters, from moto's seedable generator) is drawn in one call.

Answers, errors and message states are the same as moto's own (``tests/unit/test_moto_sqs.py`` compares
them on the same sequence of calls).
"""

from __future__ import annotations

import string
import threading
from typing import Any


def speed_up_sqs(set_attribute=setattr) -> None:
    """Replace the three costs on moto's classes (``set_attribute``: how, e.g. a test's monkeypatch)."""
    from moto.core.utils import unix_time, unix_time_millis
    from moto.moto_api._internal import mock_random
    from moto.sqs import models

    def generate_receipt_handle() -> str:
        # moto's own draws the 185 letters one random.choice call at a time (7 ms per ReceiveMessage).
        return "".join(mock_random.choices(string.ascii_lowercase, k=185))

    def messages(self) -> list:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def delayed_count(self) -> int:
        now = unix_time_millis()
        return sum(now < m.delayed_until for m in self._messages)

    def not_visible_count(self) -> int:
        now = unix_time_millis()
        return sum(not now > m.visible_at for m in self._messages)

    def is_message_valid_based_on_retention_period(self, queue_name: str, message) -> bool:
        retention_period = int(self.get_queue(queue_name).message_retention_period)
        return retention_period + message.sent_timestamp / 1000 > unix_time()

    deleting = threading.Lock()

    def delete_message_batch(self, queue_name: str, receipts: list[dict[str, Any]]):
        queue = self.get_queue(queue_name)
        with deleting:
            wanted = {receipt["ReceiptHandle"] for receipt in receipts} - queue.deleted_messages
            messages = queue._messages
            positions = [
                position
                for position, message in enumerate(messages)
                # all_receipt_handles builds a list per message: test the current handle first.
                if message.receipt_handle in wanted or not wanted.isdisjoint(message._old_receipt_handles)
            ]
            # In place, from the end: positions stay right while senders append, and one batch's removals
            # cannot undo another's (moto swaps in a rebuilt list, which loses concurrent changes).
            for position in reversed(positions):
                message = messages.pop(position)
                queue.pending_messages.discard(message)
                queue.deleted_messages.update(message.all_receipt_handles)
        success, errors = [], []
        for receipt in receipts:
            handle = receipt["ReceiptHandle"]
            if handle in queue.deleted_messages:
                success.append(receipt["Id"])
            else:
                errors.append(
                    {
                        "Id": receipt["Id"],
                        "SenderFault": True,
                        "Code": "ReceiptHandleIsInvalid",
                        "Message": f'The input receipt handle "{handle}" is not a valid receipt handle.',
                    }
                )
        return success, errors

    set_attribute(models.Queue, "messages", property(messages))
    set_attribute(models.Queue, "approximate_number_of_messages_delayed", property(delayed_count))
    set_attribute(models.Queue, "approximate_number_of_messages_not_visible", property(not_visible_count))
    set_attribute(
        models.SQSBackend,
        "is_message_valid_based_on_retention_period",
        is_message_valid_based_on_retention_period,
    )
    set_attribute(models.SQSBackend, "delete_message_batch", delete_message_batch)
    set_attribute(models, "generate_receipt_handle", generate_receipt_handle)
