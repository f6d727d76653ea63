"""The idempotent-key sink and claim/act/complete, through the consumer, on moto's Kinesis.

The ledger here is the in-memory store (the same contract as DynamoDB, see
test_ledger_contract), so these tests are about what each sink guarantees.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from kinesis_eo.checkpoint import MemoryCheckpointStore
from kinesis_eo.consumer import Consumer, ConsumerConfig
from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.ledger import (
    ExpiredClaimPolicy,
    Ledger,
    LedgerConfig,
    LedgerMode,
    MarkStatus,
    MemoryLedgerStore,
)
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import (
    ClaimSink,
    EffectContext,
    FailurePolicy,
    IdempotentKeySink,
    PoisonRecordError,
)
from kinesis_eo.testing.fakes import MemoryDeadLetters
from tests import helpers
from tests.streams import make_stream

QUICK = RetryConfig(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.005)
POLICY = FailurePolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01)
CONFIG = ConsumerConfig(
    reader=ReaderConfig(max_records=25, min_read_interval_s=0.0, idle_interval_s=0.0),
    retry=QUICK,
    stop_when_caught_up=True,
    checkpoint_interval_s=0.0,
)


class ProcessDied(BaseException):
    """Not an Exception: the failure policy must not catch it, as it cannot catch a SIGKILL."""


def produce(kinesis: Any, count: int) -> list[str]:
    make_stream(kinesis, "mail", 1)
    return helpers.produce(kinesis, "mail", count, ids="m-{i}", data="message-{i}", keys=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def ledger(mode: LedgerMode, store: MemoryLedgerStore, clock: Clock | None = None) -> Ledger:
    config = LedgerConfig(consumer_group="mailer", mode=mode)
    return Ledger(store, config, clock or time.time)


class KeyedStore:
    """An external system that deduplicates by idempotency key, and counts the calls it got."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.calls = 0
        self.keys_by_event: dict[str, set[str]] = {}

    def __call__(self, record: Record, ctx: EffectContext) -> None:
        self.calls += 1
        self.objects.setdefault(ctx.idempotency_key, record.data)
        self.keys_by_event.setdefault(str(record.event_id), set()).add(ctx.idempotency_key)


@pytest.mark.parametrize("mode", [LedgerMode.WATERMARK, LedgerMode.PER_RECORD])
def test_idempotent_key_sink_repeats_calls_with_the_same_key_after_a_crash(
    kinesis: Any, mode: LedgerMode
) -> None:
    ids = produce(kinesis, 60)
    store, checkpoints, external = MemoryLedgerStore(), MemoryCheckpointStore(), KeyedStore()
    calls_before_crash = 40

    def dies_after_forty_calls(record: Record, ctx: EffectContext) -> None:
        external(record, ctx)
        if external.calls == calls_before_crash:
            raise ProcessDied  # after the effect, before the ledger mark

    with pytest.raises(ProcessDied):
        Consumer(
            kinesis,
            None,
            "mail",
            IdempotentKeySink(ledger(mode, store), dies_after_forty_calls),
            checkpoints,
            CONFIG,
        ).run()
    stats = Consumer(
        kinesis, None, "mail", IdempotentKeySink(ledger(mode, store), external), checkpoints, CONFIG
    ).run()

    # Batches of 25: the crash came 15 calls into the second batch, which was
    # called again whole; the external system kept one copy of each.
    assert external.calls == 40 + 35
    assert len(external.objects) == 60
    assert sorted(external.objects.values()) == sorted(b"message-%d" % i for i in range(60))
    assert all(len(keys) == 1 for keys in external.keys_by_event.values())
    assert set(external.keys_by_event) == set(ids)
    assert stats.duplicates == 0
    assert stats.applied == 35


def test_idempotent_key_sink_dead_letters_a_poison_record_and_moves_on(kinesis: Any) -> None:
    produce(kinesis, 30)
    dead = MemoryDeadLetters()
    seen: list[str] = []

    def fails_on_m7(record: Record, ctx: EffectContext) -> None:
        if record.event_id == "m-7":
            raise RuntimeError("bad address")
        seen.append(str(record.event_id))

    stats = Consumer(
        kinesis,
        None,
        "mail",
        IdempotentKeySink(
            ledger(LedgerMode.WATERMARK, MemoryLedgerStore()),
            fails_on_m7,
            policy=POLICY,
            dead_letters=dead,
        ),
        MemoryCheckpointStore(),
        CONFIG,
    ).run()

    assert len(seen) == 29
    assert [(letter.record.event_id, letter.record.data) for letter in dead.letters] == [
        ("m-7", b"message-7")
    ]
    assert dead.letters[0].error == "RuntimeError: bad address"
    assert stats.dead_lettered == 1


def test_a_poison_record_without_a_dead_letter_target_stops_the_shard_loudly(kinesis: Any) -> None:
    produce(kinesis, 5)

    def always_fails(record: Record, ctx: EffectContext) -> None:
        raise RuntimeError("broken")

    with pytest.raises(PoisonRecordError, match="no dead-letter target"):
        Consumer(
            kinesis,
            None,
            "mail",
            IdempotentKeySink(
                ledger(LedgerMode.WATERMARK, MemoryLedgerStore()), always_fails, policy=POLICY
            ),
            MemoryCheckpointStore(),
            CONFIG,
        ).run()


class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, record: Record, ctx: EffectContext) -> None:
        self.sent.append(str(record.event_id))


def test_claim_act_complete_sends_every_message_once_across_replays(kinesis: Any) -> None:
    ids = produce(kinesis, 40)
    store, mailer = MemoryLedgerStore(), Mailer()

    for _ in range(3):
        Consumer(
            kinesis,
            None,
            "mail",
            ClaimSink(ledger(LedgerMode.PER_RECORD, store), mailer),
            MemoryCheckpointStore(),
            CONFIG,
        ).run()

    assert sorted(mailer.sent) == sorted(ids)
    assert {item["status"] for item in store.items.values()} == {MarkStatus.COMPLETED.value}


@pytest.mark.parametrize(
    ("policy", "sends_of_m3", "quarantined"),
    [(ExpiredClaimPolicy.QUARANTINE, 1, 1), (ExpiredClaimPolicy.RUN_AGAIN, 2, 0)],
)
def test_a_crash_between_act_and_complete_follows_the_expired_claim_policy(
    kinesis: Any, policy: ExpiredClaimPolicy, sends_of_m3: int, quarantined: int
) -> None:
    produce(kinesis, 10)
    store, mailer, dead = MemoryLedgerStore(), Mailer(), MemoryDeadLetters()

    def dies_after_sending_m3(record: Record, ctx: EffectContext) -> None:
        mailer(record, ctx)
        if record.event_id == "m-3":
            raise ProcessDied

    def sink(handler: Any) -> ClaimSink:
        return ClaimSink(
            ledger(LedgerMode.PER_RECORD, store),
            handler,
            claim_for=timedelta(milliseconds=200),
            expired_claims=policy,
            dead_letters=dead,
        )

    checkpoints = MemoryCheckpointStore()
    with pytest.raises(ProcessDied):
        Consumer(kinesis, None, "mail", sink(dies_after_sending_m3), checkpoints, CONFIG).run()
    Consumer(kinesis, None, "mail", sink(mailer), checkpoints, CONFIG).run()

    assert mailer.sent.count("m-3") == sends_of_m3
    assert sorted(set(mailer.sent)) == sorted(f"m-{i}" for i in range(10))
    assert all(mailer.sent.count(f"m-{i}") == 1 for i in range(10) if i != 3)
    claim_letters = [x for x in dead.letters if x.reason is DeadLetterReason.CLAIM_EXPIRED]
    assert len(claim_letters) == quarantined


def test_a_heartbeat_from_the_handler_extends_its_claim(kinesis: Any) -> None:
    produce(kinesis, 1)
    store, clock = MemoryLedgerStore(), Clock()
    seen: list[int] = []

    def long_effect(record: Record, ctx: EffectContext) -> None:
        key = next(iter(store.items))
        before = int(store.items[key]["claim_expires_at"])
        assert ctx.heartbeat is not None
        clock.now += 600
        ctx.heartbeat()
        seen.extend([before, int(store.items[key]["claim_expires_at"])])

    Consumer(
        kinesis,
        None,
        "mail",
        ClaimSink(
            ledger(LedgerMode.PER_RECORD, store, clock), long_effect, claim_for=timedelta(hours=1)
        ),
        MemoryCheckpointStore(),
        CONFIG,
    ).run()

    assert len(seen) == 2
    assert seen[1] == seen[0] + 600_000
    assert next(iter(store.items.values()))["status"] == MarkStatus.COMPLETED.value


def test_a_batch_handler_is_called_once_per_batch_and_isolates_a_poison_record(
    kinesis: Any,
) -> None:
    produce(kinesis, 50)
    dead = MemoryDeadLetters()
    calls: list[int] = []
    stored: dict[str, bytes] = {}

    def put_objects(records: list[Record], contexts: list[EffectContext]) -> None:
        calls.append(len(records))
        if any(r.event_id == "m-30" for r in records):
            raise RuntimeError("one object is rejected")
        for record, ctx in zip(records, contexts, strict=True):
            stored[ctx.idempotency_key] = record.data

    stats = Consumer(
        kinesis,
        None,
        "mail",
        IdempotentKeySink(
            ledger(LedgerMode.WATERMARK, MemoryLedgerStore()),
            batch_handler=put_objects,
            policy=POLICY,
            dead_letters=dead,
        ),
        MemoryCheckpointStore(),
        CONFIG,
    ).run()

    # Batches of 25: two whole-batch calls succeed; the second batch fails twice
    # whole, then goes one record at a time (m-30 twice, the 24 others once).
    assert calls[:1] == [25]
    assert sorted(stored.values()) == sorted(b"message-%d" % i for i in range(50) if i != 30)
    assert [letter.record.event_id for letter in dead.letters] == ["m-30"]
    assert stats.applied == 49
    assert calls.count(1) == 24 + POLICY.max_attempts


def test_a_sink_needs_exactly_one_kind_of_handler() -> None:
    led = ledger(LedgerMode.WATERMARK, MemoryLedgerStore())
    with pytest.raises(ValueError, match="either a handler or a batch_handler"):
        IdempotentKeySink(led)
    with pytest.raises(ValueError, match="either a handler or a batch_handler"):
        IdempotentKeySink(led, KeyedStore(), batch_handler=lambda records, contexts: None)


def test_an_effect_context_works_its_key_out_once_and_only_when_it_is_read() -> None:
    made: list[str] = []

    def key_of() -> str:
        made.append("k")
        return "a1b2"

    ctx = EffectContext(None, 2, key_of=key_of)
    assert made == []  # a handler that never reads the key never pays for it
    assert (ctx.idempotency_key, ctx.idempotency_key, ctx.attempt) == ("a1b2", "a1b2", 2)
    assert made == ["k"]
    assert ctx == EffectContext("a1b2", 2)
    assert hash(ctx) == hash(EffectContext("a1b2", 2))
    assert "a1b2" in repr(ctx)
    with pytest.raises(AttributeError):
        ctx.attempt = 3
    with pytest.raises(TypeError):
        EffectContext(None, 1)
