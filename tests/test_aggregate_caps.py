"""KPL aggregate bombs: user records and bytes capped per aggregate and per batch.

A bomb is a valid aggregate of very many tiny user records. It must be
delivered whole with ``deaggregation_error`` (so the sinks dead-letter it with
reason UNDECODABLE), and decoding must stop at the cap rather than unpack it
all first. A legitimate batch that only exceeds the per-batch caps is split
by the reader, never dead-lettered.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from kinesis_eo.aggregation import AggregateLimits, UserRecord, aggregate, deaggregate
from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.envelope import wrap
from kinesis_eo.ledger import LedgerMode
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig, ShardReader
from kinesis_eo.testing.lambda_esm import FakeContext, StreamRecord, kinesis_event, stream_arn
from lambda_handlers.events import parse_event
from tests.helpers import DeadLetterQueue, applied
from tests.streams import make_stream, read_until
from tests.test_lambda_handler import lambda_handler, tables  # noqa: F401 (fixture)

SHARD = "shardId-000000000000"


def bomb(count: int) -> bytes:
    """A valid aggregate of ``count`` one-byte user records under one partition key."""
    return aggregate([UserRecord("k", b"x")] * count).data


def kinesis_record(data: bytes, sequence_number: str = "1") -> Record:
    return Record("orders", SHARD, sequence_number, "k", data)


def test_a_bomb_over_the_record_cap_comes_back_whole_with_a_deaggregation_error() -> None:
    data = bomb(175_000)  # about 1 MiB, as the KPL never writes one

    result = deaggregate(kinesis_record(data))

    (record,) = result.records
    assert record.data == data
    assert record.deaggregation_error == "aggregate holds more than 50000 user records"


def test_an_aggregate_over_the_byte_cap_comes_back_whole() -> None:
    data = aggregate([UserRecord("k", bytes(300_000))] * 4).data
    limits = AggregateLimits(max_bytes_per_aggregate=1_000_000)

    (record,) = deaggregate(kinesis_record(data), limits=limits).records

    assert record.data == data
    assert "more than 1000000 bytes" in (record.deaggregation_error or "")


def test_decoding_a_bomb_stops_at_the_cap_instead_of_unpacking_it_all() -> None:
    data = bomb(40_000)
    capped = AggregateLimits(max_records_per_aggregate=100)
    unbounded = AggregateLimits(max_records_per_aggregate=10**6, max_records_per_batch=10**6)

    def peak(limits: AggregateLimits) -> int:
        tracemalloc.start()
        try:
            deaggregate(kinesis_record(data), limits=limits)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # Unpacked whole, its 40,000 records cost some 10 MiB; stopped at 100, what
    # remains is the copy of the aggregate's 240 KB that the digest check takes.
    assert peak(unbounded) > 5 * 1_048_576
    assert peak(capped) < 500_000


def test_an_aggregate_within_the_caps_is_unpacked_as_before() -> None:
    data = bomb(50_000)
    assert len(deaggregate(kinesis_record(data)).records) == 50_000


@pytest.mark.parametrize(
    "limits",
    [
        {"max_records_per_aggregate": 0},
        {"max_records_per_batch": 10, "max_records_per_aggregate": 11},
        {"max_bytes_per_batch": 10, "max_bytes_per_aggregate": 11},
    ],
)
def test_limits_that_cannot_work_are_refused(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="max_"):
        AggregateLimits(**limits)


# --- the reader (worker and consumer) ---------------------------------------------------------


def test_the_reader_delivers_a_bomb_whole_and_the_records_around_it(kinesis: Any) -> None:
    make_stream(kinesis, "orders", 1)
    data = bomb(2_000)
    for payload in (b"before", data, b"after"):
        kinesis.put_record(StreamName="orders", Data=payload, PartitionKey="k")
    config = ReaderConfig(
        min_read_interval_s=0,
        idle_interval_s=0,
        aggregate_limits=AggregateLimits(max_records_per_aggregate=1_000),
    )

    records = read_until(ShardReader(kinesis, "orders", SHARD, config=config), 3)

    assert [r.data for r in records] == [b"before", data, b"after"]
    assert [r.deaggregation_error for r in records] == [
        None,
        "aggregate holds more than 1000 user records",
        None,
    ]


def test_the_reader_ends_a_batch_at_its_caps_and_reads_the_rest_next_without_loss(
    kinesis: Any,
) -> None:
    make_stream(kinesis, "orders", 1)
    expected = []
    for n in range(5):
        users = [UserRecord("k", b"%d-%d" % (n, i)) for i in range(60)]
        expected += [u.data for u in users]
        kinesis.put_record(StreamName="orders", Data=aggregate(users).data, PartitionKey="k")
    limits = AggregateLimits(max_records_per_aggregate=60, max_records_per_batch=100)
    config = ReaderConfig(min_read_interval_s=0, idle_interval_s=0, aggregate_limits=limits)

    batches = []
    for batch in ShardReader(kinesis, "orders", SHARD, config=config):
        batches.append(batch)
        if sum(len(b.records) for b in batches) >= len(expected) or len(batches) > 50:
            break

    records = [r for b in batches for r in b.records]
    assert [r.data for r in records] == expected
    assert all(r.deaggregation_error is None for r in records)
    assert max(len(b.records) for b in batches) <= 100


# --- the Lambda handler -----------------------------------------------------------------------


def test_lambda_parse_event_delivers_a_bomb_whole() -> None:
    data = bomb(2_000)
    event = kinesis_event(
        [StreamRecord(SHARD, "1", "k", b"plain"), StreamRecord(SHARD, "2", "k", data)],
        stream_arn("orders"),
    )

    (delivery,) = parse_event(event, AggregateLimits(max_records_per_aggregate=1_000))

    assert [r.data for r in delivery.records] == [b"plain", data]
    assert delivery.records[1].deaggregation_error == (
        "aggregate holds more than 1000 user records"
    )


def test_lambda_an_aggregate_past_the_events_caps_is_delivered_whole() -> None:
    first = aggregate([UserRecord("k", b"a%d" % i) for i in range(80)]).data
    second = aggregate([UserRecord("k", b"b%d" % i) for i in range(80)]).data
    event = kinesis_event(
        [StreamRecord(SHARD, "1", "k", first), StreamRecord(SHARD, "2", "k", second)],
        stream_arn("orders"),
    )
    limits = AggregateLimits(max_records_per_aggregate=100, max_records_per_batch=100)

    (delivery,) = parse_event(event, limits)

    assert len(delivery.records) == 81
    assert delivery.records[-1].data == second
    assert "lower the event source mapping's BatchSize" in (
        delivery.records[-1].deaggregation_error or ""
    )


def test_lambda_handler_dead_letters_a_bomb_as_undecodable_and_applies_the_rest(
    tables: Any,  # noqa: F811
) -> None:
    data = bomb(175_000)
    records = [
        StreamRecord(SHARD, "1", "p", wrap("e-1", b"one")),
        StreamRecord(SHARD, "2", "p", data),
        StreamRecord(SHARD, "3", "p", wrap("e-3", b"three")),
    ]
    dead = DeadLetterQueue()
    handler = lambda_handler(tables, LedgerMode.PER_RECORD, dead_letters=dead)

    response = handler(kinesis_event(records, stream_arn("orders")), FakeContext())

    assert response == {"batchItemFailures": []}
    (letter,) = dead.letters
    assert letter.reason is DeadLetterReason.UNDECODABLE
    assert letter.record.data == data
    assert applied(tables) == {"e-1": 1, "e-3": 1}
