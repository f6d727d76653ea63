"""The asyncio Lambda handler: an asyncio client over moto's HTTP server, an async user handler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from kinesis_eo.envelope import wrap
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import EffectContext, FailurePolicy, update
from kinesis_eo.testing.effects import create_effects_table
from kinesis_eo.testing.fakes import AsyncMemoryDeadLetters
from kinesis_eo.testing.lambda_esm import FakeContext, StreamRecord, kinesis_event, stream_arn
from lambda_handlers import AsyncKinesisHandler, LambdaConfig, Ordering

QUICK = RetryConfig(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.01)


@pytest_asyncio.fixture
async def dynamodb(moto_server_reset: Any, async_client: Any) -> AsyncIterator[Any]:
    sync = moto_server_reset.client("dynamodb")
    create_ledger_table(sync, "ledger")
    create_effects_table(sync, "effects")
    async with async_client("dynamodb", **moto_server_reset.client_kwargs()) as client:
        yield client


async def apply_once(record: Record, ctx: EffectContext) -> list[Any]:
    await asyncio.sleep(0)
    if record.data.startswith(b"POISON"):
        raise ValueError("never")
    return [update("effects", {"id": str(record.event_id)}, "ADD applied :one", values={":one": 1})]


async def effects(client: Any) -> dict[str, int]:
    items = (await client.scan(TableName="effects"))["Items"]
    return {i["id"]["S"]: int(i["applied"]["N"]) for i in items}


@pytest.mark.asyncio
async def test_the_async_handler_applies_each_effect_once_and_dead_letters_a_poison_record(
    dynamodb: Any,
) -> None:
    records = [
        StreamRecord("shardId-000000000000", str(n), f"k{n % 3}", wrap(f"e-{n}", b"ok-%d" % n))
        for n in range(1, 13)
    ]
    records[4] = StreamRecord("shardId-000000000000", "5", "k2", wrap("e-5", b"POISON"))
    event = kinesis_event(records, stream_arn("orders"))
    dead = AsyncMemoryDeadLetters()
    handler = AsyncKinesisHandler(
        apply_once,
        ledger=Ledger(
            DynamoDBLedgerStore("ledger", QUICK), LedgerConfig("g", mode=LedgerMode.PER_RECORD)
        ),
        dynamodb=dynamodb,
        dead_letters=dead,
        config=LambdaConfig(
            ordering=Ordering.PARTITION_KEY,
            max_concurrency=3,
            policy=FailurePolicy(max_attempts=1),
            max_failed_deliveries=2,
            retry=QUICK,
        ),
    )

    first = await handler(event, FakeContext())
    second = await handler(event, FakeContext())
    third = await handler(event, FakeContext())

    # Key k2 stops at its poison record 5; its later records 8 and 11 wait with it.
    assert first == {"batchItemFailures": [{"itemIdentifier": n} for n in ("5", "8", "11")]}
    assert second == third == {"batchItemFailures": []}
    assert [letter.record.data for letter in dead.letters] == [b"POISON"]
    assert await effects(dynamodb) == {f"e-{n}": 1 for n in range(1, 13) if n != 5}
