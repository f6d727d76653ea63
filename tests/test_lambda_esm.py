"""The event source mapping simulator redelivers as the ReportBatchItemFailures contract says."""

from __future__ import annotations

import base64
from typing import Any

from kinesis_eo.aggregation import UserRecord, aggregate
from kinesis_eo.testing.lambda_esm import (
    EsmConfig,
    EventSourceMapping,
    InvocationOutcome,
    StreamRecord,
    read_stream,
)
from tests.streams import make_stream


def shard(count: int, shard_id: str = "shardId-000000000000") -> list[StreamRecord]:
    return [
        StreamRecord(shard_id, str(n), f"key-{n % 4}", b"r-%d" % n) for n in range(1, count + 1)
    ]


def numbers(event: dict[str, Any]) -> list[str]:
    return [e["kinesis"]["sequenceNumber"] for e in event["Records"]]


def test_reported_failures_restart_the_shard_at_the_lowest_reported_number() -> None:
    batches: list[list[str]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        batches.append(numbers(event))
        if len(batches) == 1:
            return {"batchItemFailures": [{"itemIdentifier": "5"}, {"itemIdentifier": "4"}]}
        return {"batchItemFailures": []}

    esm = EventSourceMapping(handler, shard(12), config=EsmConfig(batch_size=5))
    esm.run()

    assert batches == [
        ["1", "2", "3", "4", "5"],
        ["4", "5", "6", "7", "8"],
        ["9", "10", "11", "12"],
    ]


def test_a_function_error_bisects_the_batch_until_the_bad_record_is_alone_then_skips_it() -> None:
    seen: list[list[str]] = []

    def fails_on_six(event: dict[str, Any], context: Any) -> Any:
        seen.append(numbers(event))
        if "6" in numbers(event):
            raise RuntimeError("boom")
        return None

    esm = EventSourceMapping(
        fails_on_six, shard(8), config=EsmConfig(batch_size=8, maximum_retry_attempts=3)
    )
    esm.run()

    # Halves until "6" is alone, then 1 + 3 retries of it, then the rest.
    assert seen == [
        [str(n) for n in range(1, 9)],
        ["1", "2", "3", "4"],
        ["5", "6", "7", "8"],
        ["5", "6"],
        ["5"],
        *[["6"]] * 4,
        ["7", "8"],
    ]
    (record,) = esm.on_failure
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 4
    assert record["responseContext"]["functionError"] == "Unhandled"
    batch = record["KinesisBatchInfo"]
    assert (batch["shardId"], batch["startSequenceNumber"], batch["endSequenceNumber"]) == (
        "shardId-000000000000",
        "6",
        "6",
    )
    assert (batch["batchSize"], batch["streamArn"]) == (1, esm.arn)
    delivered_ok = {
        n
        for i in esm.invocations
        if i.outcome is InvocationOutcome.SUCCESS
        for n in i.sequence_numbers
    }
    assert delivered_ok == {"1", "2", "3", "4", "5", "7", "8"}


def test_an_answer_outside_the_contract_fails_the_whole_batch() -> None:
    answers = iter([{"batchItemFailures": [{"itemIdentifier": "99"}]}, {"batchItemFailures": []}])

    esm = EventSourceMapping(
        lambda event, context: next(answers),
        shard(3),
        config=EsmConfig(bisect_on_function_error=False),
    )
    invocations = esm.run()

    assert [i.outcome for i in invocations] == [
        InvocationOutcome.INVALID_RESPONSE,
        InvocationOutcome.SUCCESS,
    ]
    assert invocations[1].sequence_numbers == ["1", "2", "3"]


def test_a_parallelization_factor_keeps_each_partition_key_in_order_in_one_lane() -> None:
    by_key: dict[str, list[int]] = {}
    lanes_of_key: dict[str, set[int]] = {}

    def handler(event: dict[str, Any], context: Any) -> Any:
        for entry in event["Records"]:
            key = entry["kinesis"]["partitionKey"]
            by_key.setdefault(key, []).append(int(entry["kinesis"]["sequenceNumber"]))
        return None

    esm = EventSourceMapping(
        handler, shard(40), config=EsmConfig(batch_size=3, parallelization_factor=3)
    )
    for invocation in esm.run():
        for number in invocation.sequence_numbers:
            lanes_of_key.setdefault(f"key-{int(number) % 4}", set()).add(invocation.lane)

    assert len({i.lane for i in esm.invocations}) > 1
    assert all(len(lanes) == 1 for lanes in lanes_of_key.values())
    assert all(numbers == sorted(numbers) for numbers in by_key.values())
    assert sum(len(n) for n in by_key.values()) == 40


def test_read_stream_hands_on_records_as_stored_with_aggregates_still_packed(kinesis: Any) -> None:
    make_stream(kinesis, "orders", 1)
    packed = aggregate([UserRecord("a", b"one"), UserRecord("b", b"two")])
    kinesis.put_record(StreamName="orders", Data=b"plain", PartitionKey="p")
    kinesis.put_record(StreamName="orders", Data=packed.data, PartitionKey=packed.partition_key)

    stored = read_stream(kinesis, "orders")

    assert [r.data for r in stored] == [b"plain", packed.data]
    captured: list[str] = []
    EventSourceMapping(
        lambda event, context: captured.extend(e["kinesis"]["data"] for e in event["Records"]),
        stored,
        stream="orders",
    ).run()
    assert [base64.b64decode(d) for d in captured] == [b"plain", packed.data]
