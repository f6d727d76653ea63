"""Gates: a sink's caller stops a batch part-way and delivers the rest again later.

A Lambda function needs this (a deadline, a failure left to the next delivery);
the tests here use the in-memory ledger and a plain gate, so they are about
what every sink promises: nothing from the deferred record on is applied or
marked, and a later delivery applies it exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest

from kinesis_eo.flow import run_sync
from kinesis_eo.ledger import Ledger, LedgerConfig, LedgerMode, MemoryLedgerStore, MemoryWrite
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import (
    BatchReport,
    ClaimSink,
    EffectContext,
    FailurePolicy,
    IdempotentKeySink,
    TransactionalSink,
)
from kinesis_eo.testing.fakes import MemoryDeadLetters

RETRY = RetryConfig(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.001)
ONE_TRY = FailurePolicy(max_attempts=1)
SINKS = ["transactional", "idempotent_key", "claim"]


class StopGate:
    """Admits ``admit`` records, then none; defers failures unless ``dead_letter``."""

    def __init__(self, admit: int = 1_000, dead_letter: bool = False) -> None:
        self.left = admit
        self.dead_letter = dead_letter
        self.stopped = False
        self.failures: list[str] = []

    def admit(self, record: Record) -> Generator[Any, Any, bool]:
        if self.stopped or self.left == 0:
            return False
        self.left -= 1
        return True
        yield

    def on_failure(
        self, record: Record, error: BaseException, attempts: int
    ) -> Generator[Any, Any, bool]:
        self.failures.append(record.sequence_number)
        self.stopped = not self.dead_letter
        return self.dead_letter
        yield


def batch(count: int, corrupt: int | None = None) -> list[Record]:
    return [
        Record(
            "orders",
            "shard-0",
            str(i),
            "pk",
            b"order-%d" % i,
            deaggregation_error="bad MD5" if i == corrupt else None,
        )
        for i in range(1, count + 1)
    ]


class Effects:
    """A sink's target: effects by sequence number, and handler calls in order."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.applied: dict[str, int] = {}
        self.calls: list[str] = []
        self.fail = fail or set()

    def apply(self, record: Record) -> None:
        self.applied[record.sequence_number] = self.applied.get(record.sequence_number, 0) + 1

    def handler(self, kind: str) -> Callable[[Record, EffectContext], Any]:
        def handle(record: Record, ctx: EffectContext) -> Any:
            self.calls.append(record.sequence_number)
            if record.sequence_number in self.fail:
                raise RuntimeError("cannot process this record")
            if kind == "transactional":
                return [MemoryWrite(lambda: self.apply(record), item=record.sequence_number)]
            self.apply(record)
            return None

        return handle


def make_sink(kind: str, ledger: Ledger, effects: Effects, dead: MemoryDeadLetters) -> Any:
    handler = effects.handler(kind)
    if kind == "transactional":
        return TransactionalSink(ledger, handler, policy=ONE_TRY, dead_letters=dead)
    if kind == "idempotent_key":
        return IdempotentKeySink(ledger, handler, policy=ONE_TRY, dead_letters=dead)
    return ClaimSink(ledger, handler, policy=ONE_TRY, dead_letters=dead)


def process(sink: Any, records: list[Record], gate: Any = None) -> BatchReport:
    report: BatchReport = run_sync(sink.process(records, gate=gate), None, RETRY)
    return report


def ledger(store: MemoryLedgerStore, mode: LedgerMode) -> Ledger:
    return Ledger(store, LedgerConfig(consumer_group="g", mode=mode))


def numbers(records: list[Record]) -> list[str]:
    return [r.sequence_number for r in records]


@pytest.mark.parametrize("mode", [LedgerMode.WATERMARK, LedgerMode.PER_RECORD])
@pytest.mark.parametrize("kind", SINKS)
def test_a_deferred_failure_leaves_it_and_every_later_record_for_the_next_delivery(
    kind: str, mode: LedgerMode
) -> None:
    store, effects, dead = MemoryLedgerStore(), Effects(fail={"3"}), MemoryDeadLetters()
    records = batch(6)

    first = process(make_sink(kind, ledger(store, mode), effects, dead), records, StopGate())
    effects.fail.clear()
    again = process(make_sink(kind, ledger(store, mode), effects, dead), records, StopGate())

    assert numbers(first.applied) == ["1", "2"]
    assert numbers(first.deferred) == ["3", "4", "5", "6"]
    # Order is kept: nothing after the failed record ran before it succeeded.
    assert effects.calls[:3] == ["1", "2", "3"]
    assert numbers(again.applied) == ["3", "4", "5", "6"]
    assert numbers(again.duplicates) == ["1", "2"]
    assert effects.applied == dict.fromkeys(numbers(records), 1)
    assert dead.letters == []


@pytest.mark.parametrize("kind", SINKS)
def test_a_failure_the_gate_dead_letters_lets_the_rest_of_the_batch_go_on(kind: str) -> None:
    store, effects, dead = MemoryLedgerStore(), Effects(fail={"2"}), MemoryDeadLetters()
    gate = StopGate(dead_letter=True)

    report = process(
        make_sink(kind, ledger(store, LedgerMode.WATERMARK), effects, dead), batch(4), gate
    )

    assert gate.failures == ["2"]
    assert [letter.record.data for letter in dead.letters] == [b"order-2"]
    assert numbers(report.applied) == ["1", "3", "4"]
    assert report.deferred == []


@pytest.mark.parametrize("kind", SINKS)
def test_records_the_gate_refuses_are_neither_run_nor_marked(kind: str) -> None:
    store, effects, dead = MemoryLedgerStore(), Effects(), MemoryDeadLetters()
    led = ledger(store, LedgerMode.WATERMARK)

    report = process(make_sink(kind, led, effects, dead), batch(5), StopGate(admit=2))

    assert effects.calls == ["1", "2"]
    assert numbers(report.deferred) == ["3", "4", "5"]
    assert run_sync(led.screen(batch(5)), None, RETRY).new == batch(5)[2:]


def test_a_batch_handler_gets_only_the_records_the_gate_admits() -> None:
    store, dead = MemoryLedgerStore(), MemoryDeadLetters()
    seen: list[list[str]] = []

    def whole_batch(records: list[Record], contexts: list[EffectContext]) -> list[Any]:
        seen.append(numbers(records))
        return [[] for _ in records]

    sink = TransactionalSink(
        ledger(store, LedgerMode.WATERMARK), batch_handler=whole_batch, dead_letters=dead
    )
    report = process(sink, batch(5), StopGate(admit=3))

    assert seen == [["1", "2", "3"]]
    assert numbers(report.applied) == ["1", "2", "3"]
    assert numbers(report.deferred) == ["4", "5"]


@pytest.mark.parametrize("kind", SINKS)
def test_an_undecodable_record_replayed_is_not_dead_lettered_again(kind: str) -> None:
    store, effects, dead = MemoryLedgerStore(), Effects(), MemoryDeadLetters()
    records = batch(3, corrupt=2)

    for _ in range(3):
        process(make_sink(kind, ledger(store, LedgerMode.PER_RECORD), effects, dead), records)

    assert [letter.record.sequence_number for letter in dead.letters] == ["2"]
    assert "corrupt KPL aggregate" not in dead.letters[0].error
    assert effects.applied == {"1": 1, "3": 1}


@pytest.mark.parametrize("kind", SINKS)
def test_a_watermark_never_passes_a_deferred_record_even_for_an_undecodable_one(
    kind: str,
) -> None:
    # The corrupt record is dead-lettered on sight, but its mark would carry
    # the watermark past the deferred record 2 and lose it.
    store, effects, dead = MemoryLedgerStore(), Effects(fail={"2"}), MemoryDeadLetters()
    records = batch(3, corrupt=3)

    first = process(
        make_sink(kind, ledger(store, LedgerMode.WATERMARK), effects, dead), records, StopGate()
    )
    effects.fail.clear()
    again = process(
        make_sink(kind, ledger(store, LedgerMode.WATERMARK), effects, dead), records, StopGate()
    )

    assert numbers(first.applied) == ["1"]
    assert numbers(first.deferred) == ["2", "3"]
    assert numbers(again.applied) == ["2"]
    assert effects.applied == {"1": 1, "2": 1}
    led = ledger(store, LedgerMode.WATERMARK)
    assert run_sync(led.screen(records), None, RETRY).new == []
