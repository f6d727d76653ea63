"""A handler's write that DynamoDB refuses is dead-lettered as INVALID_WRITE; the shard moves on.

DynamoDB refuses a whole transaction when one of its writes is invalid (a
``ValidationException``: a malformed expression, a key of the wrong type, an
item over 400 KB, two writes to one item). One such record must not hold back
the rest of its batch, stall its shard, or make the event source mapping retry
the batch until it drops it: the record is dead-lettered with its payload and
everything else is applied once. Each runtime is shown here on moto: the
consumer, the sync and asyncio workers, the sync and asyncio Lambda handlers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from kinesis_eo.checkpoint import MemoryCheckpointStore
from kinesis_eo.consumer import Consumer, ConsumerConfig
from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, LedgerMode
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.sinks import EffectContext, FailurePolicy, TransactionalSink, put, update
from kinesis_eo.testing.fakes import AsyncMemoryDeadLetters, MemoryDeadLetters
from kinesis_eo.testing.lambda_esm import (
    EsmConfig,
    EventSourceMapping,
    FakeContext,
    kinesis_event,
    read_stream,
    stream_arn,
)
from kinesis_eo.worker import AsyncWorker, Worker
from lambda_handlers import AsyncKinesisHandler, KinesisHandler, LambdaConfig
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import CONFIG, LEASES, QUICK, create_tables, wait_for

MODES = [LedgerMode.WATERMARK, LedgerMode.PER_RECORD]
BAD_EVENT = "e-00013"


def malformed_expression(key: str) -> list[Any]:
    return [update("effects", {"id": key}, "SET SET applied = :one", values={":one": 1})]


def key_of_the_wrong_type(key: str) -> list[Any]:
    return [put("effects", {"id": 13, "applied": 1})]


def item_over_400_kb(key: str) -> list[Any]:
    return [put("effects", {"id": key, "applied": 1, "blob": "x" * 410_000})]


def two_writes_to_one_item(key: str) -> list[Any]:
    bump = update("effects", {"id": key}, "ADD applied :one", values={":one": 1})
    return [bump, bump]


INVALID_WRITES = [malformed_expression, key_of_the_wrong_type, item_over_400_kb]


def handler_with(invalid: Callable[[str], list[Any]], bad: str = BAD_EVENT) -> Any:
    def apply(record: Record, ctx: EffectContext) -> list[Any]:
        key = str(record.event_id)
        if key == bad:
            return invalid(key)
        return [update("effects", {"id": key}, "ADD applied :one", values={":one": 1})]

    return apply


def transactional_sink(
    mode: LedgerMode, handler: Any, dead_letters: Any, group: str = "app"
) -> TransactionalSink:
    ledger = Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig(group, mode))
    policy = FailurePolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01)
    return TransactionalSink(ledger, handler, policy=policy, dead_letters=dead_letters)


def assert_dead_lettered_once_as_invalid(letters: list[Any], ids: list[str]) -> None:
    (letter,) = letters
    assert letter.reason is DeadLetterReason.INVALID_WRITE
    assert letter.record.event_id == BAD_EVENT
    assert letter.record.data == BAD_EVENT.encode()  # the payload, whole
    assert "refused" in letter.error


def consume(kinesis: Any, dynamodb: Any, sink: TransactionalSink) -> Any:
    config = ConsumerConfig(
        reader=ReaderConfig(max_records=50, min_read_interval_s=0.0, idle_interval_s=0.0),
        retry=QUICK,
        stop_when_caught_up=True,
    )
    checkpoints = MemoryCheckpointStore()
    return Consumer(kinesis, dynamodb, "orders", sink, checkpoints, config).run()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("invalid", [*INVALID_WRITES, two_writes_to_one_item])
def test_the_consumer_dead_letters_an_invalid_write_and_applies_the_rest_of_its_batch(
    kinesis: Any, dynamodb: Any, mode: LedgerMode, invalid: Callable[[str], list[Any]]
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 40)
    dead = MemoryDeadLetters()

    stats = consume(kinesis, dynamodb, transactional_sink(mode, handler_with(invalid), dead))

    assert applied(dynamodb) == {i: 1 for i in ids if i != BAD_EVENT}
    assert_dead_lettered_once_as_invalid(dead.letters, ids)
    assert (stats.applied, stats.dead_lettered) == (39, 1)
    # Read again from the start (a lost checkpoint): a duplicate, not a second letter.
    again = consume(kinesis, dynamodb, transactional_sink(mode, handler_with(invalid), dead))
    assert (again.applied, again.duplicates) == (0, 40)
    assert len(dead.letters) == 1


def test_the_worker_moves_past_an_invalid_write_instead_of_retrying_its_shard_forever(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 60)
    dead = MemoryDeadLetters()
    sink = transactional_sink(LedgerMode.WATERMARK, handler_with(item_over_400_kb), dead)
    worker = Worker(
        kinesis,
        dynamodb,
        "orders",
        sink,
        LeaseManager(DynamoDBLeaseStore("leases"), LEASES, "w"),
        CONFIG,
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: len(applied(dynamodb)) == 59, 30, "every valid effect")
    finally:
        worker.stop()
        thread.join()

    assert applied(dynamodb) == {i: 1 for i in ids if i != BAD_EVENT}
    assert_dead_lettered_once_as_invalid(dead.letters, ids)
    assert worker.metrics.loop_failures == 0
    assert worker.metrics.leases_taken == 1


@pytest.mark.asyncio
async def test_the_async_worker_moves_past_an_invalid_write_in_per_record_mode(
    moto_server_reset: Any, async_clients: tuple[Any, Any]
) -> None:
    kinesis, dynamodb = moto_server_reset.client("kinesis"), moto_server_reset.client("dynamodb")
    make_stream(kinesis, "orders", 2)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 60)
    dead = AsyncMemoryDeadLetters()
    sink = transactional_sink(LedgerMode.PER_RECORD, handler_with(malformed_expression), dead)
    manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, "async")
    worker = AsyncWorker(*async_clients, "orders", sink, manager, CONFIG)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(600):
            if len(applied(dynamodb)) == 59 and dead.letters:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task

    assert applied(dynamodb) == {i: 1 for i in ids if i != BAD_EVENT}
    assert_dead_lettered_once_as_invalid(dead.letters, ids)
    assert worker.metrics.loop_failures == 0


def lambda_config() -> LambdaConfig:
    return LambdaConfig(policy=FailurePolicy(max_attempts=1), retry=QUICK)


@pytest.mark.parametrize("mode", MODES)
def test_the_lambda_handler_dead_letters_an_invalid_write_on_its_first_delivery(
    kinesis: Any, dynamodb: Any, mode: LedgerMode
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 50)
    dead = MemoryDeadLetters()
    handler = KinesisHandler(
        handler_with(key_of_the_wrong_type),
        ledger=Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig("app", mode)),
        dead_letters=dead,
        config=lambda_config(),
        dynamodb=dynamodb,
    )
    esm = EventSourceMapping(
        handler, read_stream(kinesis, "orders"), stream="orders", config=EsmConfig(batch_size=25)
    )
    invocations = esm.run()

    assert [i.reported for i in invocations] == [[], []]  # nothing retried, nothing skipped
    assert applied(dynamodb) == {i: 1 for i in ids if i != BAD_EVENT}
    assert_dead_lettered_once_as_invalid(dead.letters, ids)


@pytest.mark.asyncio
async def test_the_async_lambda_handler_dead_letters_an_invalid_write(
    moto_server_reset: Any, async_clients: tuple[Any, Any]
) -> None:
    kinesis, dynamodb = moto_server_reset.client("kinesis"), moto_server_reset.client("dynamodb")
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 30)
    dead = AsyncMemoryDeadLetters()
    handler = AsyncKinesisHandler(
        handler_with(item_over_400_kb),
        ledger=Ledger(
            DynamoDBLedgerStore("ledger", QUICK), LedgerConfig("app", LedgerMode.WATERMARK)
        ),
        dead_letters=dead,
        config=lambda_config(),
        dynamodb=async_clients[1],
    )
    event = kinesis_event(read_stream(kinesis, "orders"), stream_arn("orders"))

    response = await handler(event, FakeContext())

    assert response == {"batchItemFailures": []}
    assert applied(dynamodb) == {i: 1 for i in ids if i != BAD_EVENT}
    assert_dead_lettered_once_as_invalid(dead.letters, ids)
