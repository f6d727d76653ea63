"""Dead-letter targets: documents, SQS (with parts), DynamoDB (with part items), fakes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinesis_eo.deadletter import (
    MAX_ERROR_CHARS,
    AsyncDeadLetterTarget,
    AsyncDynamoDBDeadLetterTable,
    AsyncSqsDeadLetterQueue,
    DeadLetter,
    DeadLetterReason,
    DeadLetterSendError,
    DeadLetterTarget,
    DynamoDBDeadLetterConfig,
    DynamoDBDeadLetterTable,
    IncompleteDeadLetterError,
    SqsDeadLetterConfig,
    SqsDeadLetterQueue,
    acreate_dead_letter_table,
    aread_dead_letters,
    create_dead_letter_table,
    read_dead_letters,
    reassemble,
    sqs_messages,
    table_items,
)
from kinesis_eo.errors import InvalidRecordError, ResourceNotFoundError
from kinesis_eo.records import Position, Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.fakes import AsyncMemoryDeadLetters, MemoryDeadLetters

REGION = "us-east-1"
MIB = 1_048_576
SMALL_QUEUE_BYTES = 262_144
GROUP = "billing"
FAILED_AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
FAST_SQS = SqsDeadLetterConfig(
    entry_retry=RetryConfig(max_attempts=5, initial_backoff_s=0.0, max_backoff_s=0.0)
)
FAST_DDB = DynamoDBDeadLetterConfig(
    item_retry=RetryConfig(max_attempts=5, initial_backoff_s=0.0, max_backoff_s=0.0)
)


def letter(
    number: int,
    data: bytes | None = None,
    *,
    shard: str = "shardId-000000000001",
    group: str = GROUP,
    error: str = "ValueError: bad amount",
) -> DeadLetter:
    record = Record(
        stream="orders",
        shard_id=shard,
        sequence_number=str(number),
        partition_key=f"kéy-{number}-🚀",
        data=data if data is not None else f"payload {number}".encode(),
        arrival_time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        event_id=f"event-{number}",
    )
    return DeadLetter(record, DeadLetterReason.PROCESSING_FAILED, error, 3, group, FAILED_AT)


def big_payload() -> bytes:
    # Every byte value, in a pattern that no part boundary can hide a shift in.
    return bytes((i * 7 + i // 256) % 256 for i in range(MIB))


# --- documents --------------------------------------------------------------------------------

_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=59), max_value=timedelta(hours=23, minutes=59)
    ),
)
_records = st.builds(
    Record,
    stream=st.text(min_size=1, max_size=40),
    shard_id=st.text(min_size=1, max_size=40),
    sequence_number=st.integers(0, 10**129 - 1).map(str),
    partition_key=st.text(max_size=256),
    data=st.binary(max_size=2048),
    # Kinesis arrival times are recent; far from datetime.min every time moves to UTC exactly.
    arrival_time=st.none()
    | st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.none() | _offsets,
    ),
    sub_sequence_number=st.integers(0, 10**20 - 1),
    explicit_hash_key=st.none() | st.integers(0, 2**128 - 1).map(str),
    aggregated=st.booleans(),
    deaggregation_error=st.none() | st.text(),
    encryption_type=st.none() | st.sampled_from(["KMS", "NONE"]),
    event_id=st.none() | st.text(min_size=1, max_size=64),
)
_letters = st.builds(
    DeadLetter,
    record=_records,
    reason=st.sampled_from(DeadLetterReason),
    error=st.text(),
    attempts=st.integers(0, 10_000),
    consumer_group=st.text(min_size=1, max_size=40),
    failed_at=st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=_offsets
    ),
)


@given(_letters)
@settings(max_examples=300, deadline=None)
def test_document_round_trip_is_exact_through_json(dead: DeadLetter) -> None:
    doc = dead.to_document()
    text = json.dumps(doc)
    assert DeadLetter.from_document(json.loads(text)) == dead
    assert DeadLetter.from_document(doc).record.data == dead.record.data


def test_document_round_trip_of_empty_data() -> None:
    dead = letter(1, b"")
    assert dead.to_document()["data_base64"] == ""
    assert DeadLetter.from_document(dead.to_document()) == dead


def test_document_has_the_documented_fields() -> None:
    dead = letter(42)
    doc = dead.to_document()
    assert {
        "stream",
        "shard_id",
        "sequence_number",
        "sub_sequence_number",
        "partition_key",
        "event_id",
        "data_base64",
        "arrival_time",
        "reason",
        "error",
        "attempts",
        "consumer_group",
        "failed_at",
        "position_key",
    } <= set(doc)
    assert doc["position_key"] == Position("42").key()
    assert doc["reason"] == "PROCESSING_FAILED"
    assert doc["failed_at"] == "2024-05-01T12:30:00+00:00"
    assert doc["arrival_time"] == "2024-05-01T12:00:00+00:00"


def test_failed_at_is_kept_in_utc_and_must_have_a_zone() -> None:
    paris = timezone(timedelta(hours=2))
    dead = replace(letter(1), failed_at=datetime(2024, 5, 1, 14, 30, tzinfo=paris))
    assert dead.failed_at.utcoffset() == timedelta(0)
    assert dead.failed_at == FAILED_AT
    with pytest.raises(ValueError, match="timezone-aware"):
        replace(letter(1), failed_at=datetime(2024, 5, 1))


def test_from_exception_names_the_type_and_cuts_long_text() -> None:
    short = DeadLetter.from_exception(
        letter(1).record,
        DeadLetterReason.UNDECODABLE,
        KeyError("amount"),
        attempts=1,
        consumer_group=GROUP,
    )
    assert short.error == "KeyError: 'amount'"
    assert short.failed_at.tzinfo is not None
    long = DeadLetter.from_exception(
        letter(1).record,
        DeadLetterReason.PROCESSING_FAILED,
        ValueError("x" * 100_000),
        attempts=1,
        consumer_group=GROUP,
    )
    assert len(long.error) == MAX_ERROR_CHARS
    assert long.error.startswith("ValueError: xxx")
    assert "more characters cut]" in long.error


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("stream"), "no 'stream'"),
        (lambda d: d.update(data_base64="not base64!"), "not base64"),
        (lambda d: d.update(reason="BORED"), "unknown reason"),
        (lambda d: d.update(attempts=True), "'attempts' has the wrong type"),
        (lambda d: d.update(sequence_number="12a"), "decimal digits"),
        (lambda d: d.update(failed_at="yesterday"), "not an ISO time"),
        (lambda d: d.update(version=99), "version 99"),
    ],
)
def test_from_document_rejects_malformed_documents(change: Any, message: str) -> None:
    doc = letter(1).to_document()
    change(doc)
    with pytest.raises(InvalidRecordError, match=message):
        DeadLetter.from_document(doc)


def test_letter_id_is_stable_and_depends_on_group_and_position_only() -> None:
    first = letter(7)
    resent = replace(first, attempts=9, error="OtherError: later", failed_at=datetime.now(UTC))
    assert first.letter_id == resent.letter_id
    assert letter(8).letter_id != first.letter_id
    assert letter(7, group="other").letter_id != first.letter_id


# --- SQS, in-process moto ---------------------------------------------------------------------


@pytest.fixture
def sqs(moto_aws: None) -> Any:
    return boto3.client("sqs", region_name=REGION)


def make_queue(sqs: Any, name: str = "dead-letters", **attributes: str) -> str:
    if name.endswith(".fifo"):
        attributes["FifoQueue"] = "true"
    url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message in the queue, deleted as read (a FIFO group stays locked otherwise)."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def sent_batches(sqs: Any) -> list[list[dict[str, Any]]]:
    """The Entries of every SendMessageBatch call the sqs client makes."""
    batches: list[list[dict[str, Any]]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        batches.append(list(params["Entries"]))

    sqs.meta.events.register("provide-client-params.sqs.SendMessageBatch", record)
    return batches


def test_small_letters_arrive_in_one_message_each(sqs: Any) -> None:
    url = make_queue(sqs)
    letters = [letter(n) for n in range(1, 4)]
    SqsDeadLetterQueue(sqs, url).send(letters)
    messages = drain(sqs, url)
    assert len(messages) == 3
    body = json.loads(messages[0]["Body"])
    assert (body["part"], body["parts"]) == (1, 1)
    assert sorted(reassemble(messages), key=lambda d: d.position) == letters


def test_25_letters_use_3_batches(sqs: Any, sent_batches: list[list[dict[str, Any]]]) -> None:
    url = make_queue(sqs)
    letters = [letter(n) for n in range(25)]
    SqsDeadLetterQueue(sqs, url).send(letters)
    assert [len(b) for b in sent_batches] == [10, 10, 5]
    assert sorted(reassemble(drain(sqs, url)), key=lambda d: d.position) == letters


def test_1mib_payload_comes_back_byte_identical_from_sqs(
    sqs: Any, sent_batches: list[list[dict[str, Any]]]
) -> None:
    # The queue enforces the 256 KiB of an older queue: a part over it would be refused.
    url = make_queue(sqs, MaximumMessageSize=str(SMALL_QUEUE_BYTES))
    dead = letter(5, big_payload())
    SqsDeadLetterQueue(sqs, url).send([dead])
    bodies = [e["MessageBody"] for batch in sent_batches for e in batch]
    assert len(bodies) > 1
    assert all(len(b.encode()) <= SMALL_QUEUE_BYTES for b in bodies)
    messages = drain(sqs, url)
    assert len(messages) == len(bodies)
    messages.reverse()  # the order of arrival must not matter
    [back] = reassemble(messages)
    assert back.record.data == dead.record.data
    assert back == dead


def test_1mib_payload_fits_fewer_messages_on_a_1mib_queue(sqs: Any) -> None:
    url = make_queue(sqs)  # moto makes new queues with MaximumMessageSize 1 MiB, as AWS now does
    big = SqsDeadLetterConfig(max_message_bytes=MIB, max_batch_bytes=MIB)
    dead = letter(5, big_payload())
    assert len(sqs_messages(dead, big)) == 2
    SqsDeadLetterQueue(sqs, url, big).send([dead])
    assert reassemble(drain(sqs, url)) == [dead]


def test_the_longest_error_from_exception_fits_beside_a_1mib_payload(sqs: Any) -> None:
    # Characters outside the BMP take 12 bytes each as JSON escapes: the worst case.
    url = make_queue(sqs, MaximumMessageSize=str(SMALL_QUEUE_BYTES))
    record = replace(letter(5).record, data=big_payload(), partition_key="🚀" * 256)
    dead = DeadLetter.from_exception(
        record,
        DeadLetterReason.PROCESSING_FAILED,
        ValueError("🚀" * 100_000),
        attempts=1,
        consumer_group=GROUP,
    )
    SqsDeadLetterQueue(sqs, url).send([dead])
    assert reassemble(drain(sqs, url)) == [dead]


def test_the_same_letter_twice_in_one_send_is_one_message(sqs: Any) -> None:
    url = make_queue(sqs)
    SqsDeadLetterQueue(sqs, url).send([letter(1), letter(1), letter(2)])
    assert len(drain(sqs, url)) == 2


def test_parts_cut_the_payload_at_the_same_places_whatever_the_error_text() -> None:
    config = SqsDeadLetterConfig()
    first = sqs_messages(letter(5, big_payload()), config)
    resent = sqs_messages(letter(5, big_payload(), error="E: " + "é" * 5000), config)
    assert [m.deduplication_id for m in first] == [m.deduplication_id for m in resent]
    chunks = [[json.loads(m.body)["data_base64"] for m in ms] for ms in (first, resent)]
    assert chunks[0] == chunks[1]


def test_fifo_dedup_id_is_stable_across_resends(
    sqs: Any, sent_batches: list[list[dict[str, Any]]]
) -> None:
    url = make_queue(sqs, "dead-letters.fifo", MaximumMessageSize=str(SMALL_QUEUE_BYTES))
    letters = [letter(1), letter(2, big_payload()), letter(3, shard="shardId-000000000002")]
    target = SqsDeadLetterQueue(sqs, url)
    target.send(letters)
    first = [e for batch in sent_batches for e in batch]
    sent_batches.clear()
    # After a crash the letters are built again: later, another attempt count, another error.
    target.send(
        [replace(d, attempts=4, error="E: again", failed_at=datetime.now(UTC)) for d in letters]
    )
    second = [e for batch in sent_batches for e in batch]
    assert [e["MessageDeduplicationId"] for e in first] == [
        e["MessageDeduplicationId"] for e in second
    ]
    assert {e["MessageGroupId"] for e in first} == {"shardId-000000000001", "shardId-000000000002"}
    messages = drain(sqs, url)
    assert len(messages) == len(first)
    assert sorted(reassemble(messages), key=lambda d: d.position) == letters


def fail_first_entry(sqs: Any, *, sender_fault: bool, times: int = 1) -> list[str]:
    """Make the next ``times`` SendMessageBatch answers report their first entry failed.

    The entry was stored all the same: the answer is what is lost, as when SQS
    times out internally after writing.
    """
    failed_ids: list[str] = []

    def flip(parsed: dict[str, Any], **_: Any) -> None:
        if len(failed_ids) >= times or not parsed.get("Successful"):
            return
        entry = parsed["Successful"].pop(0)
        failed_ids.append(entry["Id"])
        parsed.setdefault("Failed", []).append(
            {
                "Id": entry["Id"],
                "SenderFault": sender_fault,
                "Code": "InvalidMessageContents" if sender_fault else "InternalError",
                "Message": "injected",
            }
        )

    sqs.meta.events.register("after-call.sqs.SendMessageBatch", flip)
    return failed_ids


def test_partial_batch_failure_is_retried_and_the_letter_arrives_once(
    sqs: Any, sent_batches: list[list[dict[str, Any]]]
) -> None:
    url = make_queue(sqs, "dead-letters.fifo")
    letters = [letter(n) for n in range(1, 6)]
    fail_first_entry(sqs, sender_fault=False)
    SqsDeadLetterQueue(sqs, url, FAST_SQS).send(letters)
    assert [len(b) for b in sent_batches] == [5, 1]
    assert sent_batches[1][0]["MessageBody"] == sent_batches[0][0]["MessageBody"]
    messages = drain(sqs, url)
    assert len(messages) == 5
    assert sorted(reassemble(messages), key=lambda d: d.position) == letters


def test_a_copy_on_a_standard_queue_is_reassembled_once(sqs: Any) -> None:
    url = make_queue(sqs)
    letters = [letter(n) for n in range(1, 6)]
    fail_first_entry(sqs, sender_fault=False)
    SqsDeadLetterQueue(sqs, url, FAST_SQS).send(letters)
    messages = drain(sqs, url)
    assert len(messages) == 6  # SQS stored the "failed" entry, and the retry stored it again
    assert sorted(reassemble(messages), key=lambda d: d.position) == letters


def test_entries_that_keep_failing_raise_a_retryable_error(sqs: Any) -> None:
    url = make_queue(sqs)
    fail_first_entry(sqs, sender_fault=False, times=100)
    with pytest.raises(DeadLetterSendError, match="after 5 attempts") as caught:
        SqsDeadLetterQueue(sqs, url, FAST_SQS).send([letter(1)])
    assert caught.value.retryable
    assert "orders/shardId-000000000001@1" in str(caught.value)


def test_a_sender_fault_is_an_error_that_names_the_letter(sqs: Any) -> None:
    url = make_queue(sqs)
    fail_first_entry(sqs, sender_fault=True)
    with pytest.raises(DeadLetterSendError, match="refused 1 dead-letter") as caught:
        SqsDeadLetterQueue(sqs, url, FAST_SQS).send([letter(1), letter(2)])
    assert not caught.value.retryable
    assert "orders/shardId-000000000001@1" in str(caught.value)
    assert "InvalidMessageContents" in str(caught.value)


def test_missing_queue_raises_resource_not_found_naming_it(sqs: Any) -> None:
    url = make_queue(sqs, "exists")
    missing = url.replace("exists", "no-such-queue")
    with pytest.raises(ResourceNotFoundError, match="no-such-queue"):
        SqsDeadLetterQueue(sqs, missing).send([letter(1)])


def test_reassemble_refuses_to_leave_out_an_incomplete_letter() -> None:
    dead = letter(5, big_payload())
    bodies = [m.body for m in sqs_messages(dead, SqsDeadLetterConfig())]
    with pytest.raises(IncompleteDeadLetterError, match=dead.letter_id) as caught:
        reassemble([*bodies[:2], *bodies[3:]])
    assert caught.value.missing == {dead.letter_id: [3]}


def test_reassemble_detects_parts_that_do_not_join_to_the_payload() -> None:
    dead = letter(5, big_payload())
    bodies = [json.loads(m.body) for m in sqs_messages(dead, SqsDeadLetterConfig())]
    bodies[1]["data_base64"] = bodies[2]["data_base64"]
    with pytest.raises(InvalidRecordError, match="do not match"):
        reassemble([json.dumps(b) for b in bodies])


def test_a_letter_whose_other_fields_do_not_fit_is_refused_before_sending(sqs: Any) -> None:
    url = make_queue(sqs)
    dead = letter(1, error="E: " + "x" * 300_000)
    with pytest.raises(InvalidRecordError, match=r"DeadLetter\.from_exception"):
        SqsDeadLetterQueue(sqs, url).send([dead])
    assert drain(sqs, url) == []


def test_sqs_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        SqsDeadLetterConfig(max_message_bytes=100)
    with pytest.raises(ValueError, match="max_batch_entries"):
        SqsDeadLetterConfig(max_batch_entries=11)
    with pytest.raises(ValueError, match="smaller than max_message_bytes"):
        SqsDeadLetterConfig(max_message_bytes=MIB, max_batch_bytes=SMALL_QUEUE_BYTES)


# --- DynamoDB, in-process moto ----------------------------------------------------------------

TABLE = "dead-letters"


@pytest.fixture
def table(dynamodb: Any) -> str:
    create_dead_letter_table(dynamodb, TABLE)
    return TABLE


def scan_all(dynamodb: Any, table_name: str) -> list[dict[str, Any]]:
    pages = dynamodb.get_paginator("scan").paginate(TableName=table_name)
    return [item for page in pages for item in page["Items"]]


def test_create_dead_letter_table_is_on_demand_and_idempotent(dynamodb: Any) -> None:
    create_dead_letter_table(dynamodb, TABLE)
    create_dead_letter_table(dynamodb, TABLE)
    described = dynamodb.describe_table(TableName=TABLE)["Table"]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]} == {
        "pk": "HASH",
        "sk": "RANGE",
    }


def test_letters_are_items_keyed_by_shard_and_sorted_by_position(dynamodb: Any, table: str) -> None:
    # "10" < "9" as text: the sort key is the fixed-width position key, not the raw number.
    letters = [letter(10), letter(9), letter(2, shard="shardId-000000000002")]
    DynamoDBDeadLetterTable(dynamodb, table).send(letters)
    items = scan_all(dynamodb, table)
    assert {i["pk"]["S"] for i in items} == {
        "billing#orders#shardId-000000000001",
        "billing#orders#shardId-000000000002",
    }
    assert {i["sk"]["S"] for i in items} == {d.position.key() for d in letters}
    assert all(isinstance(i["data"]["B"], bytes) for i in items)
    assert read_dead_letters(dynamodb, table) == [letters[1], letters[0], letters[2]]


def test_1mib_payload_comes_back_byte_identical_from_dynamodb(dynamodb: Any, table: str) -> None:
    dead = letter(5, big_payload())
    DynamoDBDeadLetterTable(dynamodb, table).send([dead])
    items = scan_all(dynamodb, table)
    assert len(items) == 4  # the head and three parts of at most 380,000 bytes
    assert sorted(i["sk"]["S"] for i in items)[1:] == [
        f"{dead.position.key()}#part-{n:04d}" for n in (1, 2, 3)
    ]
    [back] = read_dead_letters(dynamodb, table)
    assert back.record.data == dead.record.data
    assert back == dead


def test_every_part_is_written_before_any_head(dynamodb: Any, table: str) -> None:
    requests: list[list[str]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        puts = params["RequestItems"][table]
        requests.append(["part" if "part" in p["PutRequest"]["Item"] else "head" for p in puts])

    dynamodb.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", record)
    letters = [letter(1, big_payload()), letter(2), letter(3, big_payload())]
    DynamoDBDeadLetterTable(dynamodb, table).send(letters)
    order = [kind for request in requests for kind in request]
    assert order == ["part"] * 6 + ["head"] * 3
    # Requests stay under aiohttp's 1 MiB: two parts of 380,000 bytes as base64 at most.
    assert [len(r) for r in requests] == [2, 2, 2, 3]


def test_a_resend_to_dynamodb_leaves_one_copy(dynamodb: Any, table: str) -> None:
    letters = [letter(1), letter(2, big_payload()), letter(3)]
    target = DynamoDBDeadLetterTable(dynamodb, table)
    target.send(letters)
    count = len(scan_all(dynamodb, table))
    target.send(letters)
    assert len(scan_all(dynamodb, table)) == count
    assert read_dead_letters(dynamodb, table) == letters


def test_the_same_letter_twice_in_one_send_is_one_item(dynamodb: Any, table: str) -> None:
    # AWS refuses a BatchWriteItem that writes one key twice; moto only refuses
    # two identical items, so the request itself is checked.
    keys: list[list[tuple[str, str]]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        puts = [p["PutRequest"]["Item"] for p in params["RequestItems"][table]]
        keys.append([(i["pk"]["S"], i["sk"]["S"]) for i in puts])

    dynamodb.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", record)
    later = replace(letter(1), attempts=5, error="E: later")
    DynamoDBDeadLetterTable(dynamodb, table).send([letter(1), later])
    assert [len(k) for k in keys] == [1]
    assert read_dead_letters(dynamodb, table) == [later]


def test_parts_without_their_head_are_not_a_letter_until_the_resend(
    dynamodb: Any, table: str
) -> None:
    dead = letter(2, big_payload())
    *parts, _head = table_items(dead, DynamoDBDeadLetterConfig())
    for item in parts:  # what a crash between the two phases leaves behind
        dynamodb.put_item(TableName=table, Item=item)
    assert read_dead_letters(dynamodb, table) == []
    DynamoDBDeadLetterTable(dynamodb, table).send([dead])
    assert read_dead_letters(dynamodb, table) == [dead]


def test_a_missing_part_is_an_error_not_a_shorter_payload(dynamodb: Any, table: str) -> None:
    dead = letter(2, big_payload())
    DynamoDBDeadLetterTable(dynamodb, table).send([dead])
    key = {"pk": {"S": f"{GROUP}#orders#shardId-000000000001"}}
    dynamodb.delete_item(
        TableName=table, Key={**key, "sk": {"S": f"{dead.position.key()}#part-0002"}}
    )
    with pytest.raises(IncompleteDeadLetterError, match=r"lacks parts \[2\] of 3"):
        read_dead_letters(dynamodb, table)


def test_unprocessed_items_are_retried(dynamodb: Any, table: str) -> None:
    calls: list[int] = []

    def hold_back_one(parsed: dict[str, Any], params: Any = None, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            request = kwargs["context"]["dead_letter_request"]
            parsed["UnprocessedItems"] = {table: request[table][:1]}

    def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["dead_letter_request"] = params["RequestItems"]

    dynamodb.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", remember)
    dynamodb.meta.events.register("after-call.dynamodb.BatchWriteItem", hold_back_one)
    letters = [letter(n) for n in range(1, 4)]
    DynamoDBDeadLetterTable(dynamodb, table, FAST_DDB).send(letters)
    assert len(calls) == 2
    assert read_dead_letters(dynamodb, table) == letters


def test_read_dead_letters_filters_by_consumer_group(dynamodb: Any, table: str) -> None:
    ours = [letter(1), letter(2, big_payload())]
    theirs = [letter(1, group="shipping")]
    DynamoDBDeadLetterTable(dynamodb, table).send([*ours, *theirs])
    assert read_dead_letters(dynamodb, table, consumer_group=GROUP) == ours
    assert read_dead_letters(dynamodb, table, consumer_group="shipping") == theirs


def test_missing_table_raises_resource_not_found_naming_it(dynamodb: Any) -> None:
    with pytest.raises(ResourceNotFoundError, match="no-such-table"):
        DynamoDBDeadLetterTable(dynamodb, "no-such-table").send([letter(1)])
    with pytest.raises(ResourceNotFoundError, match="no-such-table"):
        read_dead_letters(dynamodb, "no-such-table")


# --- fakes ------------------------------------------------------------------------------------


def test_memory_dead_letters_keep_what_they_are_sent() -> None:
    memory = MemoryDeadLetters()
    target: DeadLetterTarget = memory
    target.send([letter(1), letter(2)])
    target.send([letter(3)])
    assert memory.letters == [letter(1), letter(2), letter(3)]
    assert memory.sends == 2
    memory.fail_with = ResourceNotFoundError("down", resource="queue")
    with pytest.raises(ResourceNotFoundError):
        target.send([letter(4)])
    assert len(memory.letters) == 3


@pytest.mark.asyncio
async def test_async_memory_dead_letters_keep_what_they_are_sent() -> None:
    memory = AsyncMemoryDeadLetters()
    target: AsyncDeadLetterTarget = memory
    await target.send([letter(1)])
    assert memory.letters == [letter(1)]


# --- async fronts on the moto HTTP server -----------------------------------------------------


@pytest.mark.asyncio
async def test_async_sqs_sends_batches_and_parts(
    moto_server_reset: MotoServer, async_client: Any
) -> None:
    sync = moto_server_reset.client("sqs")
    url = make_queue(sync, MaximumMessageSize=str(SMALL_QUEUE_BYTES))
    letters = [letter(n) for n in range(1, 25)] + [letter(99, big_payload())]
    async with async_client("sqs", **moto_server_reset.client_kwargs()) as client:
        await AsyncSqsDeadLetterQueue(client, url).send(letters)
    messages = drain(sync, url)
    assert len(messages) == 24 + len(sqs_messages(letters[-1], SqsDeadLetterConfig()))
    assert sorted(reassemble(messages), key=lambda d: d.position) == letters


@pytest.mark.asyncio
async def test_async_missing_queue_raises_resource_not_found(
    moto_server_reset: MotoServer, async_client: Any
) -> None:
    url = make_queue(moto_server_reset.client("sqs"), "exists")
    missing = url.replace("exists", "no-such-queue")
    async with async_client("sqs", **moto_server_reset.client_kwargs()) as client:
        with pytest.raises(ResourceNotFoundError, match="no-such-queue"):
            await AsyncSqsDeadLetterQueue(client, missing).send([letter(1)])


@pytest.mark.asyncio
async def test_async_dynamodb_round_trip_with_a_1mib_payload_and_a_resend(
    moto_server_reset: MotoServer, async_client: Any
) -> None:
    letters = [letter(1), letter(2, big_payload()), letter(3, shard="shardId-000000000002")]
    kwargs = moto_server_reset.client_kwargs()
    async with async_client("dynamodb", **kwargs) as client:
        await acreate_dead_letter_table(client, TABLE)
        target = AsyncDynamoDBDeadLetterTable(client, TABLE)
        await target.send(letters)
        await target.send(letters)
        back = await aread_dead_letters(client, TABLE)
    assert back == letters
    assert back[1].record.data == big_payload()
    sync = moto_server_reset.client("dynamodb")
    assert len(scan_all(sync, TABLE)) == 3 + 3  # three heads, three parts


@pytest.mark.asyncio
async def test_async_missing_table_raises_resource_not_found(
    moto_server_reset: MotoServer, async_client: Any
) -> None:
    async with async_client("dynamodb", **moto_server_reset.client_kwargs()) as c:
        with pytest.raises(ResourceNotFoundError, match="no-such-table"):
            await AsyncDynamoDBDeadLetterTable(c, "no-such-table").send([letter(1)])
        with pytest.raises(ResourceNotFoundError, match="no-such-table"):
            await aread_dead_letters(c, "no-such-table")
