"""Records of up to 10 MiB: the producer follows the stream's limit, dead letters keep them whole.

moto 5.2 knows neither ``UpdateMaxRecordSize`` nor ``MaxRecordSizeInKiB``, and
its PutRecords refuses any record over 1 MiB and any request over 5 MiB. The
``large_record_moto`` fixture bridges exactly that: a stream gets a record
limit that ``UpdateMaxRecordSize`` sets and ``DescribeStreamSummary``
reports, and PutRecords on a stream whose limit was raised checks records
against it and the request against 10 MiB, as the API reference says.
Everything else (storage, GetRecords, SQS, DynamoDB) is moto's own.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import boto3
import pytest
from moto.core.responses import ActionResult, EmptyResult
from moto.kinesis import models as kinesis_models
from moto.kinesis import responses as kinesis_responses
from moto.kinesis.exceptions import ValidationException

from kinesis_eo.deadletter import (
    DeadLetter,
    DeadLetterReason,
    DynamoDBDeadLetterTable,
    SqsDeadLetterQueue,
    create_dead_letter_table,
    read_dead_letters,
    reassemble,
)
from kinesis_eo.errors import RecordTooLargeError
from kinesis_eo.producer import MIB, Event, Producer, ProducerConfig
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ShardReader
from tests.streams import make_stream, read_until

SHARD = "shardId-000000000000"
TEN_MIB = 10 * MIB
DEFAULT_KIB = 1024


@pytest.fixture
def large_record_moto(kinesis: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """In-process moto with the large-record API bridged (see the module docstring)."""
    summary = kinesis_models.Stream.to_json_summary
    put_records = kinesis_models.KinesisBackend.put_records

    def to_json_summary(self: Any) -> dict[str, Any]:
        document: dict[str, Any] = summary(self)
        limit = getattr(self, "max_record_size_kib", DEFAULT_KIB)
        document["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] = limit
        return document

    def update_max_record_size(self: Any) -> ActionResult:
        kib = int(self._get_param("MaxRecordSizeInKiB"))
        if not 1024 <= kib <= 10240:
            raise ValidationException(f"MaxRecordSizeInKiB {kib} is outside 1024..10240")
        stream = self.kinesis_backend.describe_stream(self._get_param("StreamARN"), None)
        stream.max_record_size_kib = kib
        return EmptyResult()

    def large_put_records(
        self: Any, stream_arn: str, stream_name: str, records: list[dict[str, Any]]
    ) -> dict[str, Any]:
        import base64

        stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
        limit = getattr(stream, "max_record_size_kib", DEFAULT_KIB) * 1024
        if limit <= MIB:
            return put_records(self, stream_arn, stream_name, records)  # type: ignore[no-any-return]
        sizes = [len(base64.b64decode(r["Data"])) + len(r["PartitionKey"]) for r in records]
        if len(records) > 500 or sum(sizes) > TEN_MIB or max(sizes, default=0) > limit:
            raise ValidationException("PutRecords request over the large-record limits")
        response: dict[str, Any] = {"FailedRecordCount": 0, "Records": []}
        for record in records:
            sequence_number, shard_id = stream.put_record(
                record["PartitionKey"], record.get("ExplicitHashKey"), record["Data"]
            )
            response["Records"].append({"SequenceNumber": sequence_number, "ShardId": shard_id})
        return response

    monkeypatch.setattr(kinesis_models.Stream, "to_json_summary", to_json_summary)
    monkeypatch.setattr(kinesis_models.KinesisBackend, "put_records", large_put_records)
    monkeypatch.setattr(
        kinesis_responses.KinesisResponse,
        "update_max_record_size",
        update_max_record_size,
        raising=False,
    )
    return kinesis


def large_stream(kinesis: Any, name: str, kib: int) -> None:
    make_stream(kinesis, name, 1)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    kinesis.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=kib)


def count_calls(client: Any, operation: str) -> list[str]:
    seen: list[str] = []
    client.meta.events.register(
        f"before-call.kinesis.{operation}", lambda **_: seen.append(operation)
    )
    return seen


# --- the producer ---------------------------------------------------------------------------


def test_a_10_mib_record_goes_to_a_stream_that_allows_it_and_reads_back_whole(
    large_record_moto: Any,
) -> None:
    kinesis = large_record_moto
    large_stream(kinesis, "large", 10240)
    payload = os.urandom(TEN_MIB - 64)
    describes = count_calls(kinesis, "DescribeStreamSummary")
    producer = Producer(kinesis, "large")

    producer.put([Event(payload, "k", "big")])
    producer.put([Event(b"small", "k", "small")])

    (big, small) = read_until(ShardReader(kinesis, "large", SHARD), 2)
    assert hashlib.sha256(big.data).digest() == hashlib.sha256(payload).digest()
    assert (big.event_id, small.data) == ("big", b"small")
    # The stream's limit is read once per producer.
    assert describes == ["DescribeStreamSummary"]


def test_records_over_the_streams_limit_are_refused_before_any_put(
    large_record_moto: Any,
) -> None:
    kinesis = large_record_moto
    large_stream(kinesis, "medium", 2048)
    make_stream(kinesis, "plain", 1)
    puts = count_calls(kinesis, "PutRecords")

    Producer(kinesis, "medium").put([Event(bytes(MIB + 1000), "k")])
    with pytest.raises(RecordTooLargeError, match="over the limit of 2097152 bytes"):
        Producer(kinesis, "medium").put([Event(bytes(2 * MIB), "k")])
    with pytest.raises(RecordTooLargeError, match="over the limit of 1048576 bytes"):
        Producer(kinesis, "plain").put([Event(bytes(MIB), "k")])

    assert puts == ["PutRecords"]


def test_large_records_are_batched_within_ten_mib_per_request(large_record_moto: Any) -> None:
    kinesis = large_record_moto
    large_stream(kinesis, "large", 10240)
    events = [Event(bytes(3 * MIB), "k", f"e{i}") for i in range(5)]

    result = Producer(kinesis, "large").put(events)

    # 3 MiB records: three fit in one 10 MiB request, the other two in a second.
    assert result.calls == 2
    assert len(read_until(ShardReader(kinesis, "large", SHARD), 5)) == 5


def test_a_given_record_limit_needs_no_describe_call(large_record_moto: Any) -> None:
    kinesis = large_record_moto
    large_stream(kinesis, "large", 10240)
    describes = count_calls(kinesis, "DescribeStreamSummary")

    Producer(kinesis, "large", ProducerConfig(max_record_bytes=TEN_MIB)).put(
        [Event(bytes(4 * MIB), "k")]
    )

    assert describes == []


# --- dead letters of 10 MiB -----------------------------------------------------------------


def letter_of(payload: bytes) -> DeadLetter:
    record = Record("large", SHARD, "49", "k", payload, event_id="big", event_namespace="billing")
    return DeadLetter.from_exception(
        record, DeadLetterReason.PROCESSING_FAILED, ValueError("no"), attempts=3, consumer_group="g"
    )


def test_a_10_mib_dead_letter_to_sqs_reassembles_byte_for_byte(moto_aws: None) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
    payload = os.urandom(TEN_MIB)

    SqsDeadLetterQueue(sqs, url).send([letter_of(payload)])

    messages: list[Any] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        messages += batch
    (letter,) = reassemble(messages)
    assert len(messages) > 1
    assert letter.record.data == payload
    assert (letter.record.event_id, letter.record.event_namespace) == ("big", "billing")


def test_a_10_mib_dead_letter_to_dynamodb_reassembles_byte_for_byte(dynamodb: Any) -> None:
    create_dead_letter_table(dynamodb, "dead-letters")
    payload = os.urandom(TEN_MIB)

    DynamoDBDeadLetterTable(dynamodb, "dead-letters").send([letter_of(payload)])

    (letter,) = read_dead_letters(dynamodb, "dead-letters")
    assert letter.record.data == payload
    assert letter.record.event_namespace == "billing"
