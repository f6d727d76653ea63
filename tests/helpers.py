"""Helpers shared by tests of every layer: numbered events in; applied effects and letters out."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import boto3

from kinesis_eo.deadletter import SqsDeadLetterQueue, reassemble
from kinesis_eo.producer import Event, Producer
from kinesis_eo.testing.effects import applied_counts


def produce(
    kinesis: Any,
    stream: str,
    count: int,
    *,
    start: int = 0,
    ids: str = "e-{i:05d}",
    data: str = "{id}",
    keys: int | None = None,
    poison: Collection[int] = (),
) -> list[str]:
    """Put events number ``start`` to ``start + count - 1`` on ``stream``; their ids, in order.

    ``ids`` and ``data`` are format strings over the event's number ``i`` (``data``
    also over its ``id``). Each event has a partition key of its own, or with
    ``keys`` one of that many shared ones. The data of a number in ``poison`` is
    ``POISON-<i>``, which the tests' handlers refuse.
    """
    events = []
    for i in range(start, start + count):
        event_id = ids.format(i=i)
        body = f"POISON-{i}" if i in poison else data.format(i=i, id=event_id)
        key = f"k-{event_id}" if keys is None else f"key-{i % keys}"
        events.append(Event(body.encode(), key, event_id))
    Producer(kinesis, stream).put(events)
    return [event.event_id for event in events if event.event_id is not None]


def applied(dynamodb: Any, table: str = "effects") -> dict[str, int]:
    """Event id -> times its effect was applied, from the tests' effects table."""
    return applied_counts(dynamodb, table)


class DeadLetterQueue:
    """The SQS dead-letter target, read back whole."""

    def __init__(self) -> None:
        self.sqs = boto3.client("sqs", region_name="us-east-1")
        self.url = self.sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
        self.target = SqsDeadLetterQueue(self.sqs, self.url)
        self._seen: list[Any] = []

    def send(self, letters: Any) -> None:
        self.target.send(letters)

    @property
    def letters(self) -> list[Any]:
        messages: list[Any] = []
        while batch := self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages"):
            messages += batch
            for message in batch:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        self._seen += reassemble(messages)
        return list(self._seen)


def pytest_plugin_args() -> list[str]:
    """What loads kinesis_eo's pytest plugin in a child pytest run of this interpreter.

    Nothing where the package is installed (its ``pytest11`` entry point loads it, and
    ``-p`` as well would register the module twice); ``-p`` in a bare checkout.
    """
    from importlib.metadata import entry_points

    if any(ep.name == "kinesis_eo" for ep in entry_points(group="pytest11")):
        return []
    return ["-p", "kinesis_eo.testing.pytest_plugin"]
