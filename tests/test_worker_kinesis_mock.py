"""Workers through a split and a merge on kinesis-mock (moto cannot close a parent shard).

Kinesis is kinesis-mock; the lease, ledger and effect tables are on the moto server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager
from kinesis_eo.records import Record
from kinesis_eo.retrieval import list_shards
from kinesis_eo.sinks import EffectContext
from kinesis_eo.worker import AsyncWorker
from tests.helpers import applied, produce
from tests.streams import new_stream, wait_active
from tests.workers import CONFIG, LEASES, create_tables, effect, sink, start, stop, wait_for, worker

pytestmark = pytest.mark.kinesis_mock


def test_a_split_and_a_merge_mid_run_apply_every_effect_once_parents_first(
    kinesis_mock: Any, moto_server_reset: Any
) -> None:
    kinesis = kinesis_mock.client("kinesis")
    dynamodb = moto_server_reset.client("dynamodb")
    stream = new_stream(kinesis, 2)
    create_tables(dynamodb)
    seen: list[tuple[str, float]] = []
    lock = threading.Lock()

    def logged_effect(record: Record, ctx: EffectContext) -> list[Any]:
        with lock:
            seen.append((record.shard_id, time.monotonic()))
        return effect(record, ctx)

    workers = [
        worker(kinesis, dynamodb, stream, f"w{i}", sink=sink(logged_effect)) for i in range(2)
    ]
    threads = start(workers)
    try:
        ids = produce(kinesis, stream, 200)
        wait_for(lambda: len(applied(dynamodb)) == 200, 30, "effects before the split")
        first, second = list_shards(kinesis, stream).shards
        middle = (first.hash_range.start + first.hash_range.end) // 2
        kinesis.split_shard(
            StreamName=stream, ShardToSplit=first.shard_id, NewStartingHashKey=str(middle + 1)
        )
        wait_active(kinesis, stream)
        ids += produce(kinesis, stream, 200, start=200)
        wait_for(lambda: len(applied(dynamodb)) == 400, 30, "effects after the split")
        upper = next(
            s
            for s in list_shards(kinesis, stream).shards
            if first.shard_id in s.parent_ids and s.hash_range.end == first.hash_range.end
        )
        kinesis.merge_shards(
            StreamName=stream, ShardToMerge=upper.shard_id, AdjacentShardToMerge=second.shard_id
        )
        wait_active(kinesis, stream)
        ids += produce(kinesis, stream, 200, start=400)
        wait_for(lambda: len(applied(dynamodb)) == 600, 40, "effects after the merge")
    finally:
        stop(workers, threads)

    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    graph = list_shards(kinesis, stream)
    assert len(graph) == 5
    times: dict[str, list[float]] = {}
    for shard_id, at in seen:
        times.setdefault(shard_id, []).append(at)
    for shard in graph.shards:
        for parent in graph.parents_of(shard.shard_id):
            if times.get(shard.shard_id) and times.get(parent):
                assert max(times[parent]) < min(times[shard.shard_id]), (
                    f"{shard.shard_id} was processed before its parent {parent} ended"
                )
    merged = next(s for s in graph.shards if len(s.parent_ids) == 2)
    assert times.get(merged.shard_id), "the merged child was never processed"
    assert sum(w.metrics.shards_ended for w in workers) == 3


@pytest.mark.asyncio
async def test_async_workers_follow_a_split_to_the_children_with_every_effect_once(
    kinesis_mock: Any, moto_server_reset: Any, async_client: Any
) -> None:
    kinesis = kinesis_mock.client("kinesis")
    dynamodb = moto_server_reset.client("dynamodb")
    stream = new_stream(kinesis, 1)
    create_tables(dynamodb)
    async with (
        async_client("kinesis", **kinesis_mock.client_kwargs()) as async_kinesis,
        async_client("dynamodb", **moto_server_reset.client_kwargs()) as async_dynamodb,
    ):
        workers = [
            AsyncWorker(
                async_kinesis,
                async_dynamodb,
                stream,
                sink(),
                LeaseManager(DynamoDBLeaseStore("leases"), LEASES, f"a{i}"),
                CONFIG,
            )
            for i in range(2)
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            ids = produce(kinesis, stream, 100)
            (parent,) = list_shards(kinesis, stream).shards
            middle = (parent.hash_range.start + parent.hash_range.end) // 2
            kinesis.split_shard(
                StreamName=stream, ShardToSplit=parent.shard_id, NewStartingHashKey=str(middle)
            )
            wait_active(kinesis, stream)
            ids += produce(kinesis, stream, 200, start=100)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 40
            while len(applied(dynamodb)) < 300:
                assert loop.time() < deadline, "effects after the split did not all arrive"
                await asyncio.sleep(0.1)
        finally:
            for w in workers:
                w.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert sum(w.metrics.shards_ended for w in workers) == 1
