"""A batch committed in many transactions: a fault in a later one ends as in the first.

Ledgers here take 5 items per transaction, so a batch of 40 records is a
dozen or more transactions, and a bad record can sit at either end of one.
Shown on moto through the consumer: a poison record, a write whose condition
fails, an invalid write, an outage and a lost fence, each met past the first
transaction. (A refused write that ended its transaction once let the
transactions behind it commit: the watermark passed a record that was never
applied nor dead-lettered.)
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from kinesis_eo.checkpoint import MemoryCheckpointStore
from kinesis_eo.consumer import Consumer, ConsumerConfig, ConsumerStats
from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.flow import run_sync
from kinesis_eo.ledger import DynamoDBLedgerStore, FencedError, Ledger, LedgerConfig, LedgerMode
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig, ShardReader
from kinesis_eo.sinks import (
    EffectContext,
    FailurePolicy,
    OutageBackoff,
    TransactionalSink,
    condition_check,
    put,
    update,
)
from kinesis_eo.testing.fakes import MemoryDeadLetters
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import QUICK, create_tables

MODES = [LedgerMode.WATERMARK, LedgerMode.PER_RECORD]
SMALL_TRANSACTIONS = 5  # 3 records per transaction in watermark mode, 2 in per-record mode
POLICY = FailurePolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01)
CONFIG = ConsumerConfig(
    reader=ReaderConfig(max_records=50, min_read_interval_s=0.0, idle_interval_s=0.0),
    retry=QUICK,
    stop_when_caught_up=True,
    outage_backoff=OutageBackoff(initial_s=0.01, max_s=0.05),
)


def ledger(mode: LedgerMode) -> Ledger:
    config = LedgerConfig("app", mode, max_transaction_items=SMALL_TRANSACTIONS)
    return Ledger(DynamoDBLedgerStore("ledger", QUICK), config)


def bump(record: Record) -> list[Any]:
    return [update("effects", {"id": record.event_id}, "ADD applied :one", values={":one": 1})]


def consume(kinesis: Any, dynamodb: Any, sink: TransactionalSink) -> ConsumerStats:
    return Consumer(kinesis, dynamodb, "orders", sink, MemoryCheckpointStore(), CONFIG).run()


@pytest.fixture
def ids(kinesis: Any, dynamodb: Any) -> list[str]:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    return produce(kinesis, "orders", 40)


def refusing(bad: str, write: Any) -> Any:
    def handler(record: Record, ctx: EffectContext) -> list[Any]:
        return [write(record)] if record.event_id == bad else bump(record)

    return handler


def poison(record: Record) -> Any:
    raise ValueError("cannot apply")


def condition_that_fails(record: Record) -> Any:
    return put("effects", {"id": "taken", "applied": 1}, condition="attribute_not_exists(id)")


def malformed(record: Record) -> Any:
    return update("effects", {"id": record.event_id}, "SET SET applied = :one", values={":one": 1})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad_at", [24, 26])  # first, last of its transaction (watermark)
@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (poison, DeadLetterReason.PROCESSING_FAILED),
        (condition_that_fails, DeadLetterReason.PROCESSING_FAILED),
        (malformed, DeadLetterReason.INVALID_WRITE),
    ],
)
def test_a_bad_record_in_a_later_transaction_is_dead_lettered_and_the_rest_applied_once(
    kinesis: Any,
    dynamodb: Any,
    ids: list[str],
    mode: LedgerMode,
    bad_at: int,
    write: Any,
    reason: Any,
) -> None:
    dynamodb.put_item(TableName="effects", Item={"id": {"S": "taken"}, "applied": {"N": "1"}})
    bad = ids[bad_at]
    dead = MemoryDeadLetters()

    def sink() -> TransactionalSink:
        return TransactionalSink(
            ledger(mode), refusing(bad, write), policy=POLICY, dead_letters=dead
        )

    stats = consume(kinesis, dynamodb, sink())
    replay = consume(kinesis, dynamodb, sink())

    assert applied(dynamodb) == {"taken": 1} | {i: 1 for i in ids if i != bad}
    assert [(d.record.event_id, d.reason) for d in dead.letters] == [(bad, reason)]
    assert (stats.applied, stats.dead_lettered) == (39, 1)
    assert (replay.applied, replay.duplicates, replay.dead_lettered) == (0, 40, 0)


@pytest.mark.parametrize("mode", MODES)
def test_an_outage_in_a_later_transaction_keeps_what_came_before_and_letters_nothing(
    kinesis: Any, dynamodb: Any, ids: list[str], mode: LedgerMode
) -> None:
    down = {"calls": 6}
    seen: list[str] = []

    def handler(record: Record, ctx: EffectContext) -> list[Any]:
        seen.append(str(record.event_id))
        if record.event_id >= ids[20] and down["calls"] > 0:
            down["calls"] -= 1
            raise ClientError({"Error": {"Code": "ThrottlingException"}}, "PutItem")
        return bump(record)

    dead = MemoryDeadLetters()
    stats = consume(kinesis, dynamodb, TransactionalSink(ledger(mode), handler, dead_letters=dead))

    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert dead.letters == []
    assert stats.outage_pauses >= 1
    # What came before the outage was not run again: only the records from it on were.
    assert seen.count(ids[0]) == 1
    assert seen.count(ids[20]) > 1


def test_a_fence_lost_while_the_handlers_run_stops_the_batch_with_nothing_applied(
    kinesis: Any, dynamodb: Any, ids: list[str]
) -> None:
    dynamodb.put_item(TableName="effects", Item={"id": {"S": "fence"}, "applied": {"N": "0"}})
    fence = condition_check("effects", {"id": "fence"}, "attribute_exists(id)")
    lost_at = ids[20]

    def handler(record: Record, ctx: EffectContext) -> list[Any]:
        if record.event_id == lost_at:  # another worker takes the shard
            dynamodb.delete_item(TableName="effects", Key={"id": {"S": "fence"}})
        return bump(record)

    (shard,) = kinesis.list_shards(StreamName="orders")["Shards"]
    reader = ReaderConfig(max_records=50, min_read_interval_s=0.0, idle_interval_s=0.0)
    batch = next(iter(ShardReader(kinesis, "orders", shard["ShardId"], config=reader))).records
    sink = TransactionalSink(ledger(LedgerMode.WATERMARK), handler)

    with pytest.raises(FencedError):
        run_sync(sink.process(batch, guards=[fence]), dynamodb, QUICK)

    # Every handler runs before the first transaction: none of them got through.
    assert applied(dynamodb) == {}
