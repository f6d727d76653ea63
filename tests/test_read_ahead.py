"""Read-ahead on moto: GetRecords overlaps the batch being applied, effects stay exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager, create_lease_table
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, LedgerMode
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.sinks import EffectContext, IdempotentKeySink
from kinesis_eo.worker import Worker
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import CONFIG, LEASES, QUICK, create_tables, effect, sink, start, stop, wait_for

BATCH = 10
READ_LATENCY_S = 0.04
RECORD_S = 0.004  # a batch of ten takes about as long to apply as a read takes


class Calls:
    """When each GetRecords ran (a latency added, as a network has) and when handlers ran."""

    def __init__(self, kinesis: Any, latency: float = READ_LATENCY_S) -> None:
        self.reads: list[tuple[float, float]] = []
        self.applies: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.latency = latency
        self.started: dict[int, float] = {}
        kinesis.meta.events.register("before-call.kinesis.GetRecords", self.before)
        kinesis.meta.events.register("after-call.kinesis.GetRecords", self.after)

    def before(self, **_: Any) -> None:
        self.started[threading.get_ident()] = time.monotonic()
        time.sleep(self.latency)

    def after(self, **_: Any) -> None:
        with self.lock:
            self.reads.append((self.started.pop(threading.get_ident()), time.monotonic()))

    def applied(self, began: float) -> None:
        with self.lock:
            self.applies.append((began, time.monotonic()))

    def overlapping_reads(self) -> int:
        return sum(
            1 for r0, r1 in self.reads if any(a0 < r1 and r0 < a1 for a0, a1 in self.applies)
        )


def keyed_worker(
    kinesis: Any, dynamodb: Any, calls: Calls, read_ahead: bool
) -> tuple[Worker, Counter[str]]:
    done: Counter[str] = Counter()

    def handle(record: Record, ctx: EffectContext) -> None:
        began = time.monotonic()
        time.sleep(RECORD_S)
        assert record.event_id is not None
        done[record.event_id] += 1
        calls.applied(began)

    group = f"app-{read_ahead}"
    ledger = Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig(group, LedgerMode.WATERMARK))
    config = replace(
        CONFIG,
        leases=replace(LEASES, table_name=f"leases-{read_ahead}"),
        reader=ReaderConfig(max_records=BATCH, min_read_interval_s=0.0, idle_interval_s=0.05),
        read_ahead=read_ahead,
    )
    manager = LeaseManager(DynamoDBLeaseStore(f"leases-{read_ahead}"), config.leases, "w")
    built = Worker(kinesis, dynamodb, "orders", IdempotentKeySink(ledger, handle), manager, config)
    return built, done


def test_read_ahead_overlaps_get_records_with_the_batch_being_applied(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 120)
    seconds, overlaps = {}, {}
    for read_ahead in (False, True):
        create_lease_table(dynamodb, f"leases-{read_ahead}")
        calls = Calls(kinesis)
        w, done = keyed_worker(kinesis, dynamodb, calls, read_ahead)
        threads = start([w])
        try:
            seconds[read_ahead] = wait_for(
                lambda done=done: len(done) == len(ids),  # type: ignore[misc]
                timeout=30,
                what="every effect",
            )
        finally:
            stop([w], threads)
            kinesis.meta.events.unregister("before-call.kinesis.GetRecords", calls.before)
            kinesis.meta.events.unregister("after-call.kinesis.GetRecords", calls.after)
        overlaps[read_ahead] = calls.overlapping_reads()
        assert done == dict.fromkeys(ids, 1)
    print(f"read-ahead: seconds {seconds}, overlapping reads {overlaps}")
    assert overlaps[False] == 0
    assert overlaps[True] >= 6  # most of the twelve batches had their successor read meanwhile
    # How much sooner a shard is read through is a timing, measured by the bench
    # (bench/run.py, the Worker rows), not asserted here on a shared machine.


def test_a_batch_read_ahead_by_a_worker_that_lost_its_lease_is_never_applied(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 50)
    calls = Calls(kinesis, latency=0.0)
    in_handler = threading.Event()
    release_handler = threading.Event()

    def slow_effect(record: Record, ctx: EffectContext) -> list[Any]:
        if not release_handler.is_set():
            in_handler.set()
            release_handler.wait(timeout=30)
        return effect(record, ctx)

    def made(name: str, handler: Any = effect) -> Worker:
        config = replace(CONFIG, reader=replace(CONFIG.reader, max_records=BATCH))
        manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, name)
        return Worker(kinesis, dynamodb, "orders", sink(handler), manager, config)

    zombie = made("zombie", slow_effect)
    threads = start([zombie])
    try:
        assert in_handler.wait(timeout=20)
        wait_for(lambda: len(calls.reads) >= 2, timeout=10, what="the read ahead")
        zombie.pause()  # as good as dead, holding its first batch and the one read ahead
        rescuer = made("rescuer")
        threads += start([rescuer])
        wait_for(lambda: len(applied(dynamodb)) == 50, timeout=30, what="the rescuer's effects")
        zombie.resume()
        release_handler.set()
        wait_for(lambda: zombie.metrics.fenced_commits == 1, timeout=10, what="the fenced commit")
        time.sleep(0.5)
    finally:
        release_handler.set()
        stop([zombie, rescuer], threads)

    # The effects table counts applications: a second one of any record would show as 2.
    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert zombie.metrics.applied == 0
    assert rescuer.metrics.applied == 50
