"""A stream and the toolkit's tables, made on any boto3 client, handed to your tests.

The pytest plugin's fixtures (:mod:`kinesis_eo.testing.fixtures`) make these on
in-process moto; outside pytest, call the ``make_*`` functions with clients of
your own (moto server, kinesis-mock, an AWS test account).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kinesis_eo.testing.esm_config import REGION
from kinesis_eo.testing.esm_records import StreamRecord, read_stream, stream_arn

__all__ = [
    "DeadLetterQueue",
    "KinesisStream",
    "SinkTable",
    "Table",
    "make_dead_letter_queue",
    "make_stream",
]


@dataclass(frozen=True, slots=True)
class KinesisStream:
    """A stream and the boto3 Kinesis client it lives behind."""

    name: str
    kinesis: Any
    region: str = REGION

    @property
    def arn(self) -> str:
        """The ARN a Lambda event carries as ``eventSourceARN`` (fake account)."""
        return stream_arn(self.name, self.region)

    def records(self) -> list[StreamRecord]:
        """Every record stored in the stream, shard by shard, as the ESM delivers them."""
        return read_stream(self.kinesis, self.name)


@dataclass(frozen=True, slots=True)
class Table:
    """A DynamoDB table's name and the boto3 client it lives behind."""

    name: str
    dynamodb: Any


@dataclass(frozen=True, slots=True)
class SinkTable(Table):
    """A table keyed by the string ``id``, for effects counted per event.

    The convention of the toolkit's own tests: a handler returns
    ``update(sink_table.name, {"id": event_id}, "ADD applied :one", values={":one": 1})``,
    so ``applied(event_id)`` reads how many times that event's effect landed.
    """

    def applied(self, event_id: str) -> int:
        """How many times the effect of ``event_id`` was applied (0 if never)."""
        item = self.dynamodb.get_item(
            TableName=self.name, Key={"id": {"S": event_id}}, ConsistentRead=True
        ).get("Item")
        return int(item["applied"]["N"]) if item and "applied" in item else 0


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    """An SQS queue for :class:`~kinesis_eo.deadletter.SqsDeadLetterQueue`, read back whole."""

    url: str
    sqs: Any

    def letters(self) -> list[Any]:
        """The dead letters in the queue (receiving them makes them visible again at once)."""
        from kinesis_eo.deadletter import reassemble

        messages: list[Any] = []
        seen: set[str] = set()
        while batch := self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, VisibilityTimeout=30
        ).get("Messages"):
            messages += [m for m in batch if m["MessageId"] not in seen]
            seen.update(m["MessageId"] for m in batch)
        for message in messages:
            self.sqs.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        return list(reassemble(messages))


def make_stream(kinesis: Any, name: str, shards: int = 2) -> KinesisStream:
    """Create the stream ``name`` with ``shards`` shards and wait until it is active."""
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 600}
    )
    return KinesisStream(name, kinesis, kinesis.meta.region_name or REGION)


def make_dead_letter_queue(sqs: Any, name: str) -> DeadLetterQueue:
    """Create the SQS queue ``name`` for dead letters."""
    return DeadLetterQueue(sqs.create_queue(QueueName=name)["QueueUrl"], sqs)
