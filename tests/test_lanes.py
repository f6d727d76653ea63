"""Lanes: a batch's partition keys applied at once, in order per key, each effect once (moto)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from kinesis_eo.checkpoint import MemoryCheckpointStore
from kinesis_eo.consumer import AsyncConsumer, Consumer, ConsumerConfig
from kinesis_eo.errors import SinkUnavailableError
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, create_ledger_table
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import (
    ClaimSink,
    EffectContext,
    FailurePolicy,
    IdempotentKeySink,
    OutageBackoff,
)
from kinesis_eo.sinks.base import SinkBase
from kinesis_eo.testing.fakes import MemoryDeadLetters
from tests.helpers import produce
from tests.streams import make_stream

QUICK = RetryConfig(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.01)
READER = ReaderConfig(max_records=100, min_read_interval_s=0.0, idle_interval_s=0.0)
KEYS = 8
COUNT = 24  # three records per key, all in one batch
PAUSE_S = 0.05


def config(lanes: int) -> ConsumerConfig:
    return ConsumerConfig(reader=READER, retry=QUICK, stop_when_caught_up=True, lanes=lanes)


def ledger(group: str) -> Ledger:
    return Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig(consumer_group=group))


def setup(kinesis: Any, dynamodb: Any) -> list[str]:
    make_stream(kinesis, "orders", 1)
    create_ledger_table(dynamodb, "ledger")
    return produce(kinesis, "orders", COUNT, keys=KEYS)


class Effects:
    """What the handlers did, in the order they did it, from any thread."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def begin(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)

    def end(self, record: Record) -> None:
        with self.lock:
            self.running -= 1
            assert record.event_id is not None
            self.done.append((record.partition_key, record.event_id))

    def check(self, ids: list[str]) -> None:
        assert Counter(event_id for _, event_id in self.done) == dict.fromkeys(ids, 1)
        for key in {k for k, _ in self.done}:
            mine = [event_id for k, event_id in self.done if k == key]
            assert mine == [i for i in ids if i in set(mine)], f"{key} out of order"

    def handler(self) -> Callable[[Record, EffectContext], None]:
        def handle(record: Record, ctx: EffectContext) -> None:
            self.begin()
            time.sleep(PAUSE_S)
            self.end(record)

        return handle

    def async_handler(self) -> Callable[[Record, EffectContext], Any]:
        async def handle(record: Record, ctx: EffectContext) -> None:
            self.begin()
            await asyncio.sleep(PAUSE_S)
            self.end(record)

        return handle


def timed_run(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    stats = run()
    return stats, time.perf_counter() - started


SINKS: dict[str, Callable[[Ledger, Any], SinkBase]] = {
    "keyed": lambda led, handler: IdempotentKeySink(led, handler),
    "claim": lambda led, handler: ClaimSink(led, handler),
}


@pytest.mark.parametrize("kind", sorted(SINKS))
def test_four_lanes_apply_a_batch_of_eight_keys_in_a_fraction_of_the_time_in_order_per_key(
    kinesis: Any, dynamodb: Any, kind: str
) -> None:
    ids = setup(kinesis, dynamodb)
    timings = {}
    for lanes in (1, 4):
        effects = Effects()
        sink = SINKS[kind](ledger(f"group-{lanes}"), effects.handler())
        consumer = Consumer(
            kinesis, dynamodb, "orders", sink, MemoryCheckpointStore(), config(lanes)
        )
        stats, timings[lanes] = timed_run(consumer.run)
        assert stats.applied == COUNT
        effects.check(ids)
        assert effects.most == lanes
    # Sequential: 24 x 50 ms; four lanes over eight keys: about a quarter of it.
    print(f"lanes {kind}: {timings}")
    assert timings[4] < 0.6 * timings[1], timings
    # A replay of the same group applies nothing again.
    again = Effects()
    sink = SINKS[kind](ledger("group-4"), again.handler())
    stats = Consumer(kinesis, dynamodb, "orders", sink, MemoryCheckpointStore(), config(4)).run()
    assert stats.applied == 0
    assert again.done == []


@pytest.mark.asyncio
async def test_async_lanes_overlap_async_handlers_in_order_per_key(
    moto_server_reset: Any, async_clients: tuple[Any, Any]
) -> None:
    ids = setup(moto_server_reset.client("kinesis"), moto_server_reset.client("dynamodb"))
    kinesis, dynamodb = async_clients
    timings = {}
    for lanes in (1, 4):
        effects = Effects()
        sink = IdempotentKeySink(ledger(f"group-{lanes}"), effects.async_handler())
        consumer = AsyncConsumer(
            kinesis, dynamodb, "orders", sink, MemoryCheckpointStore(), config(lanes)
        )
        started = time.perf_counter()
        stats = await consumer.run()
        timings[lanes] = time.perf_counter() - started
        assert stats.applied == COUNT
        effects.check(ids)
        assert effects.most == lanes
    print(f"lanes async: {timings}")
    assert timings[4] < 0.6 * timings[1], timings


def test_a_failing_key_is_dead_lettered_while_other_keys_go_on(kinesis: Any, dynamodb: Any) -> None:
    ids = setup(kinesis, dynamodb)
    effects = Effects()
    poison = ids[3]

    def handle(record: Record, ctx: EffectContext) -> None:
        if record.event_id == poison:
            raise ValueError("cannot apply")
        effects.begin()
        effects.end(record)

    dead = MemoryDeadLetters()
    sink = IdempotentKeySink(
        ledger("g"),
        handle,
        policy=FailurePolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01),
        dead_letters=dead,
    )
    stats = Consumer(kinesis, dynamodb, "orders", sink, MemoryCheckpointStore(), config(4)).run()
    assert [letter.record.event_id for letter in dead.letters] == [poison]
    assert stats.applied == COUNT - 1
    effects.check([i for i in ids if i != poison])


def test_an_outage_in_one_lane_defers_the_rest_and_every_effect_lands_once_after_it(
    kinesis: Any, dynamodb: Any
) -> None:
    ids = setup(kinesis, dynamodb)
    effects = Effects()
    outages = [ids[5]]

    def handle(record: Record, ctx: EffectContext) -> None:
        if record.event_id in outages:
            outages.remove(record.event_id)
            raise SinkUnavailableError("the orders service is down")
        effects.begin()
        effects.end(record)

    sink = IdempotentKeySink(ledger("g"), handle)
    settings = ConsumerConfig(
        reader=READER,
        retry=QUICK,
        stop_when_caught_up=True,
        lanes=4,
        outage_backoff=OutageBackoff(0.01, 0.02),
    )
    stats = Consumer(kinesis, dynamodb, "orders", sink, MemoryCheckpointStore(), settings).run()
    assert stats.applied == COUNT
    # Effects that ran in other lanes before the outage ran again after it: the keyed
    # target absorbs them; the ledger counts each record applied once.
    assert set(event_id for _, event_id in effects.done) == set(ids)


def test_run_flags_reach_the_worker_and_bad_lanes_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kinesis_eo import cli, runner
    from tests.handlers import count_effect

    options = runner.RunOptions(stream="s", app="a", handler="h:f", lanes=4, read_ahead=False)
    worker = runner.build_worker(options, None, None, handler=count_effect)
    assert (worker.config.lanes, worker.config.read_ahead) == (4, False)
    assert worker.sink.lanes == 4  # type: ignore[attr-defined]
    args = ["run", "--stream", "s", "--app", "a", "--handler", "tests.handlers:count_effect"]
    code = cli.main([*args, "--lanes", "0", "--no-read-ahead"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "kinesis-eo: error: --lanes must be 1 or more, not 0\n"
