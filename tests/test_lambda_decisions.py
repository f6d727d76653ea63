"""The Lambda adapter's decisions and event parsing, as plain functions: no AWS, no Lambda."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from kinesis_eo.aggregation import UserRecord, aggregate
from kinesis_eo.envelope import wrap
from kinesis_eo.records import Record
from kinesis_eo.testing.lambda_esm import StreamRecord, kinesis_event, stream_arn
from lambda_handlers import LambdaConfig, Ordering, parse_event
from lambda_handlers.decisions import (
    batch_item_failures,
    dead_letter_now,
    deadline_reached,
    items_to_report,
    lanes,
    segments,
)


def rec(seq: int, key: str = "k", sub: int = 0, shard: str = "s-0", bad: bool = False) -> Record:
    return Record(
        "orders",
        shard,
        str(seq),
        key,
        b"x",
        sub_sequence_number=sub,
        deaggregation_error="corrupt" if bad else None,
    )


def test_shard_ordering_reports_the_first_deferred_record_and_everything_after_it() -> None:
    records = [rec(n) for n in range(1, 7)]

    reported = items_to_report(records, [records[2], records[4]], Ordering.SHARD)

    assert reported == ["3", "4", "5", "6"]


def test_partition_key_ordering_reports_only_the_deferred_keys_records() -> None:
    records = [rec(1, "a"), rec(2, "b"), rec(3, "a"), rec(4, "b"), rec(5, "a")]

    reported = items_to_report(records, [records[2], records[4]], Ordering.PARTITION_KEY)

    assert reported == ["3", "5"]


def test_sub_records_of_one_aggregate_are_reported_once_under_its_sequence_number() -> None:
    records = [rec(7, sub=0), rec(7, sub=1), rec(7, sub=2), rec(8)]

    # Sub-record 1 failed; sub-record 0 is done but shares the number: the
    # ESM brings the whole aggregate back and the ledger drops sub-record 0.
    assert items_to_report(records, records[1:], Ordering.SHARD) == ["7", "8"]


def test_reported_sequence_numbers_sort_as_numbers_and_shards_are_apart() -> None:
    records = [rec(9), rec(10), rec(11, shard="s-1"), rec(12, shard="s-1")]

    assert items_to_report(records, [records[0], records[3]], Ordering.SHARD) == ["9", "10", "12"]
    assert items_to_report(records, [], Ordering.SHARD) == []
    assert batch_item_failures(["9"]) == {"batchItemFailures": [{"itemIdentifier": "9"}]}


def test_the_deadline_is_reached_below_the_margin_and_never_without_a_context() -> None:
    assert deadline_reached(2_999, 3_000)
    assert not deadline_reached(3_000, 3_000)
    assert not deadline_reached(None, 3_000)


def test_a_record_is_dead_lettered_once_it_failed_the_configured_deliveries() -> None:
    assert [dead_letter_now(n, 3) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_lanes_keep_each_partition_key_whole_and_in_order() -> None:
    records = [rec(n, key=f"key-{n % 5}") for n in range(1, 41)]

    split = lanes(records, Ordering.PARTITION_KEY, 3)

    assert 1 < len(split) <= 3
    assert sorted(r.sequence_number for lane in split for r in lane) == sorted(
        r.sequence_number for r in records
    )
    for lane in split:
        assert [int(r.sequence_number) for r in lane] == sorted(
            int(r.sequence_number) for r in lane
        )
    lane_of = {r.partition_key: i for i, lane in enumerate(split) for r in lane}
    assert all(r in split[lane_of[r.partition_key]] for r in records)
    assert lanes(records, Ordering.SHARD, 1) == [records]


def test_segments_put_each_undecodable_record_alone_in_its_turn() -> None:
    records = [rec(1), rec(2), rec(3, bad=True), rec(4, bad=True), rec(5)]

    assert [[int(r.sequence_number) for r in s] for s in segments(records)] == [
        [1, 2],
        [3],
        [4],
        [5],
    ]


def test_concurrency_above_one_needs_partition_key_ordering() -> None:
    with pytest.raises(ValueError, match="PARTITION_KEY"):
        LambdaConfig(max_concurrency=4)
    with pytest.raises(ValueError, match="1 to 10"):
        LambdaConfig(parallelization_factor=11)


def test_an_event_becomes_the_records_the_worker_would_read() -> None:
    arrival = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    packed = aggregate([UserRecord("a", wrap("u-1", b"one")), UserRecord("b", b"two")])
    event = kinesis_event(
        [
            StreamRecord("shardId-000000000001", "20", packed.partition_key, packed.data, arrival),
            StreamRecord("shardId-000000000001", "10", "p", wrap("e-9", b"nine"), arrival),
        ],
        stream_arn("orders"),
    )
    # An enhanced fan-out mapping names its consumer after the stream.
    event["Records"][1]["eventSourceARN"] = stream_arn("orders") + "/consumer/efo:1700000000"

    (delivery,) = parse_event(event)

    assert (delivery.stream, delivery.shard_id) == ("orders", "shardId-000000000001")
    assert [(str(r.position), r.event_id, r.data) for r in delivery.records] == [
        ("10", "e-9", b"nine"),
        ("20", "u-1", b"one"),
        ("20/1", None, b"two"),
    ]
    assert all(r.arrival_time == arrival for r in delivery.records)


def test_data_that_is_not_base64_becomes_an_undecodable_record_not_an_error() -> None:
    event = kinesis_event([StreamRecord("s-0", "5", "p", b"fine")], stream_arn("orders"))
    event["Records"][0]["kinesis"]["data"] = "%%%"

    ((record,),) = [d.records for d in parse_event(event)]

    assert record.data == b"%%%"
    assert record.deaggregation_error is not None
    assert "base64" in record.deaggregation_error
    assert base64.b64encode(b"fine").decode() != "%%%"
