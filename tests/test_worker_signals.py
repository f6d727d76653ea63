"""SIGTERM hands a worker's leases over at once, for the threaded and the asyncio worker.

The worker under test runs on the main thread with its signal handlers
installed; a real SIGTERM is sent to this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from typing import Any

import pytest

from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager
from kinesis_eo.worker import AsyncWorker
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import (
    CONFIG,
    LEASES,
    create_tables,
    lease_owners,
    sink,
    start,
    stop,
    wait_for,
    worker,
)


def sigterm_when(condition: Any, what: str) -> threading.Thread:
    def send() -> None:
        wait_for(condition, 30, what)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def restore_signals() -> Any:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_sigterm_hands_the_leases_over_with_no_gap_and_no_duplicate(
    kinesis: Any, dynamodb: Any, restore_signals: Any
) -> None:
    make_stream(kinesis, "orders", 4)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 200)
    leaving = worker(kinesis, dynamodb, "orders", "leaving")
    sigterm_when(lambda: len(applied(dynamodb)) == 200, "the first effects")

    leaving.run(handle_signals=True)  # returns once SIGTERM was handled

    assert lease_owners(dynamodb) == {None: 4}  # checkpointed and released, not left to expire
    staying = worker(kinesis, dynamodb, "orders", "staying")
    threads = start([staying])
    try:
        took = wait_for(lambda: lease_owners(dynamodb) == {"staying": 4}, 10, "the hand-over")
        ids += produce(kinesis, "orders", 100, start=200)
        wait_for(lambda: len(applied(dynamodb)) == 300, 30, "every effect")
    finally:
        stop([staying], threads)

    assert took < LEASES.failover_s
    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert staying.metrics.duplicates == 0  # the checkpoints were exact: nothing read twice


@pytest.mark.asyncio
async def test_sigterm_stops_the_asyncio_worker_and_releases_its_leases(
    moto_server_reset: Any, async_clients: tuple[Any, Any]
) -> None:
    kinesis, dynamodb = moto_server_reset.client("kinesis"), moto_server_reset.client("dynamodb")
    make_stream(kinesis, "orders", 3)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 150)
    manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, "async-leaving")
    leaving = AsyncWorker(*async_clients, "orders", sink(), manager, CONFIG)
    sigterm_when(lambda: len(applied(dynamodb)) == 150, "the first effects")

    metrics = await asyncio.wait_for(leaving.run(handle_signals=True), 60)
    asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
    asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    assert lease_owners(dynamodb) == {None: 3}
    assert metrics.applied == 150
    assert applied(dynamodb) == dict.fromkeys(ids, 1)
