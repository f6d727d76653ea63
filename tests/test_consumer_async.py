"""The asyncio consumer with asyncio clients over moto's HTTP server, async handlers too."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from kinesis_eo.checkpoint import (
    DynamoDBCheckpointStore,
    MemoryCheckpointStore,
    create_checkpoint_table,
)
from kinesis_eo.consumer import AsyncConsumer, ConsumerConfig
from kinesis_eo.flow import run_async
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import ClaimSink, EffectContext, FailurePolicy, TransactionalSink, update
from kinesis_eo.testing.effects import create_effects_table
from kinesis_eo.testing.fakes import AsyncMemoryDeadLetters
from tests.helpers import applied, produce
from tests.streams import make_stream

QUICK = RetryConfig(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.01)
CONFIG = ConsumerConfig(
    reader=ReaderConfig(max_records=40, min_read_interval_s=0.0, idle_interval_s=0.0),
    retry=QUICK,
    stop_when_caught_up=True,
)


def setup(moto_server: Any, count: int, poison: int | None = None) -> list[str]:
    kinesis, dynamodb = moto_server.client("kinesis"), moto_server.client("dynamodb")
    make_stream(kinesis, "payments", 2)
    create_ledger_table(dynamodb, "ledger")
    create_checkpoint_table(dynamodb, "checkpoints")
    create_effects_table(dynamodb, "effects")
    poisoned = () if poison is None else (poison,)
    ids = produce(kinesis, "payments", count, ids="p-{i}", data="pay-{i}", keys=5, poison=poisoned)
    return [event_id for event_id in ids if event_id != f"p-{poison}"]


async def async_handler(record: Record, ctx: EffectContext) -> list[Any]:
    await asyncio.sleep(0)  # an async handler may await its own I/O
    if record.data.startswith(b"POISON"):
        raise ValueError("cannot pay")
    return [update("effects", {"id": record.event_id}, "ADD applied :one", values={":one": 1})]


def ledger(mode: LedgerMode) -> Ledger:
    return Ledger(
        DynamoDBLedgerStore("ledger", QUICK),
        LedgerConfig(consumer_group="payments", mode=mode),
    )


@pytest.mark.asyncio
async def test_async_consumer_applies_every_effect_once_across_a_replay(
    moto_server_reset: Any, async_clients: tuple[Any, Any]
) -> None:
    ids = setup(moto_server_reset, 150, poison=42)
    kinesis, dynamodb = async_clients
    dead = AsyncMemoryDeadLetters()

    def sink() -> TransactionalSink:
        return TransactionalSink(
            ledger(LedgerMode.PER_RECORD),
            async_handler,
            policy=FailurePolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01),
            dead_letters=dead,
        )

    checkpoints = DynamoDBCheckpointStore("checkpoints")
    first = await AsyncConsumer(kinesis, dynamodb, "payments", sink(), checkpoints, CONFIG).run()
    # A second pass with no checkpoints: every record is delivered again.
    replay = await AsyncConsumer(
        kinesis, dynamodb, "payments", sink(), MemoryCheckpointStore(), CONFIG
    ).run()
    saved = await run_async(checkpoints.load(), dynamodb, QUICK)

    assert applied(moto_server_reset.client("dynamodb")) == dict.fromkeys(ids, 1)
    assert first.applied == 149
    assert [letter.record.event_id for letter in dead.letters] == ["p-42"]
    assert replay.delivered == 150
    assert replay.applied == 0
    assert replay.duplicates == 150
    assert len(saved) == 2


@pytest.mark.asyncio
async def test_async_claim_sink_awaits_its_heartbeat(
    moto_server_reset: Any, async_clients: tuple[Any, Any]
) -> None:
    setup(moto_server_reset, 3)
    kinesis, dynamodb = async_clients
    beats: list[str] = []

    async def long_effect(record: Record, ctx: EffectContext) -> None:
        assert ctx.heartbeat is not None
        await ctx.heartbeat()
        beats.append(str(record.event_id))

    sink = ClaimSink(ledger(LedgerMode.PER_RECORD), long_effect, claim_for=timedelta(minutes=1))
    stats = await AsyncConsumer(
        kinesis, dynamodb, "payments", sink, DynamoDBCheckpointStore("checkpoints"), CONFIG
    ).run()

    assert sorted(beats) == ["p-0", "p-1", "p-2"]
    assert stats.applied == 3
