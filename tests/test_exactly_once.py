"""Exactly-once effects through the public API, on moto: replays, crashes, duplicates, poison.

The sink's effect is deliberately not idempotent (``ADD applied 1``), so an
effect applied twice shows up as ``applied == 2``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

import pytest

from kinesis_eo.checkpoint import (
    DynamoDBCheckpointStore,
    MemoryCheckpointStore,
    create_checkpoint_table,
)
from kinesis_eo.consumer import Consumer, ConsumerConfig
from kinesis_eo.deadletter import (
    DynamoDBDeadLetterTable,
    create_dead_letter_table,
    read_dead_letters,
)
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
from kinesis_eo.sinks import EffectContext, FailurePolicy, TransactionalSink, update
from kinesis_eo.testing.effects import create_effects_table
from kinesis_eo.testing.fakes import MemoryDeadLetters
from kinesis_eo.testing.faults import FaultInjector, Probability
from tests import helpers
from tests.helpers import DeadLetterQueue
from tests.streams import make_stream

QUICK = RetryConfig(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.01)
FAST_POLICY = FailurePolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01)


def reader(max_records: int = 100) -> ReaderConfig:
    return ReaderConfig(max_records=max_records, min_read_interval_s=0.0, idle_interval_s=0.0)


def consumer_config(max_records: int = 100, checkpoint_interval_s: float = 5.0) -> ConsumerConfig:
    return ConsumerConfig(
        reader=reader(max_records),
        retry=QUICK,
        stop_when_caught_up=True,
        checkpoint_interval_s=checkpoint_interval_s,
    )


class Crash(Exception):
    """Stands for the process dying."""


def apply_once(record: Record, ctx: EffectContext) -> list[Any]:
    if record.data.startswith(b"POISON"):
        raise ValueError("this record can never be processed")
    return [
        update(
            "effects",
            {"id": record.event_id or record.sequence_number},
            "ADD applied :one SET payload = :p",
            values={":one": 1, ":p": record.data.decode()},
        )
    ]


@pytest.fixture
def tables(dynamodb: Any) -> Any:
    create_ledger_table(dynamodb, "ledger")
    create_checkpoint_table(dynamodb, "checkpoints")
    create_effects_table(dynamodb, "effects")
    return dynamodb


def produce(kinesis: Any, stream: str, count: int, poison: Collection[int] = ()) -> list[str]:
    return helpers.produce(kinesis, stream, count, data="event-{i}", keys=17, poison=poison)


def sink(dynamodb: Any, mode: LedgerMode, dead_letters: Any = None) -> TransactionalSink:
    ledger = Ledger(
        DynamoDBLedgerStore("ledger", QUICK),
        LedgerConfig(consumer_group="billing", mode=mode),
    )
    return TransactionalSink(ledger, apply_once, policy=FAST_POLICY, dead_letters=dead_letters)


@pytest.mark.parametrize("mode", [LedgerMode.WATERMARK, LedgerMode.PER_RECORD])
def test_the_same_batches_replayed_three_times_apply_every_effect_once(
    kinesis: Any, tables: Any, mode: LedgerMode
) -> None:
    make_stream(kinesis, "orders", 2)
    ids = produce(kinesis, "orders", 300)
    runs = []

    for _ in range(3):
        # A fresh checkpoint store each time: the whole stream is delivered again.
        runs.append(
            Consumer(
                kinesis,
                tables,
                "orders",
                sink(tables, mode),
                MemoryCheckpointStore(),
                consumer_config(),
            ).run()
        )

    assert helpers.applied(tables) == dict.fromkeys(ids, 1)
    assert [r.delivered for r in runs] == [300, 300, 300]
    assert [r.applied for r in runs] == [300, 0, 0]
    assert [r.duplicates for r in runs] == [0, 300, 300]


def test_a_crash_after_the_commit_and_before_the_checkpoint_applies_every_effect_once(
    kinesis: Any, tables: Any
) -> None:
    make_stream(kinesis, "orders", 2)
    ids = produce(kinesis, "orders", 400)
    checkpoints = DynamoDBCheckpointStore("checkpoints")
    committed_batches = 0

    def crash_on_third_batch(batch: Any, report: Any) -> None:
        nonlocal committed_batches
        committed_batches += 1
        if committed_batches == 3:
            raise Crash

    first = Consumer(
        kinesis,
        tables,
        "orders",
        sink(tables, LedgerMode.WATERMARK),
        checkpoints,
        consumer_config(max_records=50, checkpoint_interval_s=0.0),
        after_commit=crash_on_third_batch,
    )
    with pytest.raises(Crash):
        first.run()
    second = Consumer(
        kinesis,
        tables,
        "orders",
        sink(tables, LedgerMode.WATERMARK),
        checkpoints,
        consumer_config(50),
    ).run()

    assert helpers.applied(tables) == dict.fromkeys(ids, 1)
    assert second.duplicates == 50  # the batch whose checkpoint the crash lost
    # The crashed batch counts as applied: its effects were committed before the crash.
    assert first.stats.applied == 150
    assert first.stats.applied + second.applied == 400


def test_inbound_duplicates_under_different_sequence_numbers_apply_once_in_per_record_mode(
    kinesis: Any, tables: Any
) -> None:
    make_stream(kinesis, "orders", 2)
    faults = FaultInjector(seed=11)
    faults.fail_stored_entries(entries=0.2, schedule=Probability(1.0))
    faults.attach(kinesis)
    ids = produce(kinesis, "orders", 300)
    faults.detach(kinesis)
    resent = faults.injected[next(k for k in faults.injected if k.value.startswith("entry_stored"))]
    assert resent > 20

    stats = Consumer(
        kinesis,
        tables,
        "orders",
        sink(tables, LedgerMode.PER_RECORD),
        MemoryCheckpointStore(),
        consumer_config(),
    ).run()

    assert helpers.applied(tables) == dict.fromkeys(ids, 1)
    assert stats.delivered == 300 + resent
    assert stats.duplicates == resent


class TableLetters:
    """The DynamoDB dead-letter target, read back whole."""

    def __init__(self, dynamodb: Any) -> None:
        create_dead_letter_table(dynamodb, "dead-letters")
        self.dynamodb = dynamodb
        self.target = DynamoDBDeadLetterTable(dynamodb, "dead-letters")

    def send(self, letters: Any) -> None:
        self.target.send(letters)

    @property
    def letters(self) -> list[Any]:
        return read_dead_letters(self.dynamodb, "dead-letters")


@pytest.mark.parametrize("target", ["memory", "sqs", "dynamodb"])
def test_a_poison_record_is_dead_lettered_with_its_payload_and_the_shard_moves_on(
    kinesis: Any, tables: Any, target: str
) -> None:
    make_stream(kinesis, "orders", 1)
    ids = produce(kinesis, "orders", 120, poison={7, 80})
    dead: Any = {
        "memory": MemoryDeadLetters,
        "sqs": DeadLetterQueue,
        "dynamodb": lambda: TableLetters(tables),
    }[target]()

    stats = Consumer(
        kinesis,
        tables,
        "orders",
        sink(tables, LedgerMode.WATERMARK, dead_letters=dead),
        MemoryCheckpointStore(),
        consumer_config(),
    ).run()

    poison_ids = {"e-00007", "e-00080"}
    assert helpers.applied(tables) == {i: 1 for i in ids if i not in poison_ids}
    assert sorted(letter.record.event_id for letter in dead.letters) == sorted(poison_ids)
    assert {letter.record.data for letter in dead.letters} == {b"POISON-7", b"POISON-80"}
    assert all(letter.attempts == FAST_POLICY.max_attempts for letter in dead.letters)
    assert stats.dead_lettered == 2
    # A replay does not send them again: the ledger marked them done.
    Consumer(
        kinesis,
        tables,
        "orders",
        sink(tables, LedgerMode.WATERMARK, dead),
        MemoryCheckpointStore(),
        consumer_config(),
    ).run()
    assert len(dead.letters) == 2


def test_watermark_mode_costs_at_most_two_hundredths_of_a_call_per_record_beyond_the_sink(
    kinesis: Any, tables: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    produce(kinesis, "orders", 1000)
    calls: Counter[str] = Counter()
    tables.meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.update([model.name])
    )

    stats = Consumer(
        kinesis,
        tables,
        "orders",
        sink(tables, LedgerMode.WATERMARK),
        DynamoDBCheckpointStore("checkpoints"),
        consumer_config(max_records=100),
    ).run()

    assert stats.applied == 1000
    batches = 10
    # Alone, the sink's 100 writes per batch would fit one transaction per batch.
    sink_alone = batches
    extra = sum(calls.values()) - sink_alone
    assert extra / stats.applied <= 0.02, calls
