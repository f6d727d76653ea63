"""Workers reading by enhanced fan-out through a split: every effect once, sync and asyncio.

Kinesis is kinesis-mock behind the EFO bridge; the lease, ledger and effect tables are on
the moto server. kinesis-mock never sends the closing event of a shard (no ChildShards), so
the parent's end is found by the subscription's end check, which polls once it is quiet.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from aiobotocore.session import get_session

from kinesis_eo.checkpoint import MemoryCheckpointStore
from kinesis_eo.consumer import Consumer, ConsumerConfig
from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager
from kinesis_eo.metrics.catalogue import RESUBSCRIPTIONS
from kinesis_eo.metrics.model import Recorder
from kinesis_eo.retrieval import list_shards
from kinesis_eo.retrieval.consumers import list_consumers
from kinesis_eo.retrieval.subscription import SubscriptionConfig
from kinesis_eo.worker import AsyncWorker, Worker
from tests.helpers import applied, produce
from tests.streams import new_stream, wait_active
from tests.workers import CONFIG, LEASES, create_tables, sink, start, stop, wait_for

pytestmark = pytest.mark.kinesis_mock

EFO = dataclasses.replace(
    CONFIG,
    efo_consumer="app",
    subscription=SubscriptionConfig(in_use_wait_s=0.2, end_check_interval_s=1.0),
)


def split(kinesis: Any, stream: str) -> None:
    (parent,) = list_shards(kinesis, stream).shards
    middle = (parent.hash_range.start + parent.hash_range.end) // 2
    kinesis.split_shard(
        StreamName=stream, ShardToSplit=parent.shard_id, NewStartingHashKey=str(middle)
    )
    wait_active(kinesis, stream)


def test_efo_workers_follow_a_split_with_every_effect_once(
    efo_bridge: Any, moto_server_reset: Any
) -> None:
    kinesis = efo_bridge.client("kinesis")
    dynamodb = moto_server_reset.client("dynamodb")
    stream = new_stream(kinesis, 1)
    create_tables(dynamodb)
    subscribed_before = efo_bridge.subscriptions_bridged
    workers = [
        Worker(
            kinesis,
            dynamodb,
            stream,
            sink(),
            LeaseManager(DynamoDBLeaseStore("leases"), LEASES, f"w{i}"),
            EFO,
        )
        for i in range(2)
    ]
    threads = start(workers)
    try:
        ids = produce(kinesis, stream, 100)
        wait_for(lambda: len(applied(dynamodb)) == 100, 30, "effects before the split")
        split(kinesis, stream)
        ids += produce(kinesis, stream, 200, start=100)
        wait_for(lambda: len(applied(dynamodb)) == 300, 40, "effects after the split")
    finally:
        stop(workers, threads)

    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert sum(w.metrics.shards_ended for w in workers) == 1
    # Both workers started together and registered one consumer between them.
    assert [c.name for c in list_consumers(kinesis, stream)] == ["app"]
    assert all("/consumer/app:" in str(w.config.efo_consumer) for w in workers)
    # The parent and both children were read by subscription.
    assert efo_bridge.subscriptions_bridged - subscribed_before >= 3


@pytest.mark.asyncio
async def test_async_efo_workers_follow_a_split_with_every_effect_once(
    efo_bridge: Any, moto_server_reset: Any
) -> None:
    kinesis = efo_bridge.client("kinesis")
    dynamodb = moto_server_reset.client("dynamodb")
    stream = new_stream(kinesis, 1)
    create_tables(dynamodb)
    session = get_session()
    async with (
        session.create_client("kinesis", **efo_bridge.client_kwargs()) as async_kinesis,
        session.create_client("dynamodb", **moto_server_reset.client_kwargs()) as async_dynamodb,
    ):
        workers = [
            AsyncWorker(
                async_kinesis,
                async_dynamodb,
                stream,
                sink(),
                LeaseManager(DynamoDBLeaseStore("leases"), LEASES, f"a{i}"),
                EFO,
            )
            for i in range(2)
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            ids = produce(kinesis, stream, 100)
            split(kinesis, stream)
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


def subscribing_consumer(name: str) -> ConsumerConfig:
    """A consumer that reads by subscription through ``name`` until it has caught up."""
    return ConsumerConfig(
        reader=CONFIG.reader,
        retry=CONFIG.retry,
        stop_when_caught_up=True,
        checkpoint_interval_s=0.0,
        efo_consumer=name,
        subscription=SubscriptionConfig(in_use_wait_s=0.2, end_check_interval_s=None),
    )


def test_a_consumer_reading_by_subscription_applies_every_effect_once_and_resumes_after_a_stop(
    efo_bridge: Any, moto_server_reset: Any
) -> None:
    kinesis = efo_bridge.client("kinesis")
    dynamodb = moto_server_reset.client("dynamodb")
    stream = new_stream(kinesis, 2)
    create_tables(dynamodb)
    checkpoints = MemoryCheckpointStore()
    config = subscribing_consumer("payments")
    subscribed_before = efo_bridge.subscriptions_bridged
    ids = produce(kinesis, stream, 60)
    first = Consumer(kinesis, dynamodb, stream, sink(), checkpoints, config).run()
    ids += produce(kinesis, stream, 40, start=60)
    second = Consumer(kinesis, dynamodb, stream, sink(), checkpoints, config).run()
    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    # The second run started from the first one's checkpoints: nothing read twice.
    assert (first.delivered, second.delivered) == (60, 40)
    assert efo_bridge.subscriptions_bridged - subscribed_before >= 4


def test_a_consumer_counts_the_subscriptions_it_makes_again_after_a_cut(
    efo_bridge: Any, moto_server_reset: Any
) -> None:
    kinesis = efo_bridge.client("kinesis")
    dynamodb = moto_server_reset.client("dynamodb")
    stream = new_stream(kinesis, 1)
    create_tables(dynamodb)
    config = subscribing_consumer("cut")
    ids = produce(kinesis, stream, 20)
    cuts: list[int] = []

    def cut_once(batch: Any, report: Any) -> None:
        if not cuts:
            cuts.append(efo_bridge.sever())
            ids.extend(produce(kinesis, stream, 20, start=20))

    recorder = Recorder()
    consumer = Consumer(
        kinesis,
        dynamodb,
        stream,
        sink(),
        MemoryCheckpointStore(),
        config,
        after_commit=cut_once,
        metrics=recorder,
    )
    consumer.run()

    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert cuts[0] >= 1
    assert recorder.drain().total(RESUBSCRIPTIONS, reason="dropped") >= 1
