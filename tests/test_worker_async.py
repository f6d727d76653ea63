"""The asyncio worker with asyncio clients over the moto server: balance, failover, fencing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager
from kinesis_eo.records import Record
from kinesis_eo.sinks import EffectContext
from kinesis_eo.worker import AsyncWorker
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import (
    CONFIG,
    LEASES,
    SCHEDULING_SLACK_S,
    create_tables,
    effect,
    lease_items,
    lease_owners,
    sink,
)


async def wait_for(condition: Any, limit_s: float, what: str) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > limit_s:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(0.05)
    return loop.time() - started


def async_worker(async_clients: tuple[Any, Any], name: str, handler: Any = effect) -> AsyncWorker:
    kinesis, dynamodb = async_clients
    manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, name)
    return AsyncWorker(kinesis, dynamodb, "orders", sink(handler), manager, CONFIG)


@pytest.mark.asyncio
async def test_async_workers_balance_fail_over_and_fence_a_paused_one(
    moto_server_reset: Any, async_clients: tuple[Any, Any]
) -> None:
    kinesis, dynamodb = moto_server_reset.client("kinesis"), moto_server_reset.client("dynamodb")
    make_stream(kinesis, "orders", 4)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 200)
    armed, gate, blocked = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def gated_effect(record: Record, ctx: EffectContext) -> list[Any]:
        if armed.is_set() and not gate.is_set():
            blocked.set()
            await gate.wait()  # the zombie holds its batch while it is "stopped"
        return effect(record, ctx)

    zombie = async_worker(async_clients, "zombie", gated_effect)
    other = async_worker(async_clients, "other")
    tasks = [asyncio.create_task(w.run()) for w in (zombie, other)]
    try:
        await wait_for(lambda: sorted(lease_owners(dynamodb).values()) == [2, 2], 20, "a 2/2 split")
        await wait_for(lambda: len(applied(dynamodb)) == 200, 30, "the first effects")
        armed.set()
        ids += produce(kinesis, "orders", 100, start=200)
        await asyncio.wait_for(blocked.wait(), 20)
        zombie.pause()
        moved = await wait_for(
            lambda: zombie.worker_id not in lease_owners(dynamodb), 20, "the zombie's leases"
        )
        await wait_for(lambda: len(applied(dynamodb)) == 300, 30, "every effect")
        zombie.resume()
        gate.set()
        await wait_for(lambda: zombie.metrics.fenced_commits >= 1, 10, "the fenced commit")
    finally:
        gate.set()
        for w in (zombie, other):
            w.resume()
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    assert moved <= LEASES.failover_s + LEASES.renew_interval + SCHEDULING_SLACK_S
    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    # Every lease held was released (one the last coordinator round assigned to a worker on
    # its way out carries no token; tests/test_worker.py shows the next coordinator places it).
    assert not [i for i in lease_items(dynamodb) if "eoOwnerToken" in i]
