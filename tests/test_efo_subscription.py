"""Reading shards by subscription (SubscribeToShard) on kinesis-mock, through the EFO bridge.

kinesis-mock serves SubscribeToShard with real event-stream frames, one event a
second, and a 5-minute subscription; the bridge adds only the initial-response
event botocore requires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kinesis_eo.aggregation import UserRecord, aggregate
from kinesis_eo.flow import drive_sync
from kinesis_eo.records import Position, Record
from kinesis_eo.retrieval import Batch, StartingPosition, StreamRef, list_shards
from kinesis_eo.retrieval.consumers import ensure_consumer
from kinesis_eo.retrieval.subscription import (
    ShardSubscription,
    SubscriptionConfig,
    read_subscription_flow,
)
from kinesis_eo.retry import RetryConfig
from tests.streams import new_stream, put_numbered

pytestmark = pytest.mark.kinesis_mock

QUICK = SubscriptionConfig(in_use_wait_s=0.2, end_check_interval_s=None)


def subscription(
    client: Any, stream: str, start: StartingPosition | None = None, **config: Any
) -> ShardSubscription:
    arn = ensure_consumer(client, stream, "reader")
    (shard,) = list_shards(client, stream).shards
    settings = SubscriptionConfig(**{"in_use_wait_s": 0.2, "end_check_interval_s": None, **config})
    return ShardSubscription(
        StreamRef.of(stream),
        shard.shard_id,
        start or StartingPosition.trim_horizon(),
        arn,
        settings,
        shard.hash_range,
    )


def batches(client: Any, sub: ShardSubscription) -> Iterator[Batch]:
    return drive_sync(read_subscription_flow(sub), client, RetryConfig())


def read(batches: Iterator[Batch], count: int, timeout: float = 20) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    for batch in batches:
        records += batch.records
        if len(records) >= count:
            return records
        assert time.monotonic() < deadline, f"only {len(records)} of {count} records arrived"
    return records


def test_a_subscription_reads_records_in_order_with_the_floor_inside_an_aggregate(
    efo_bridge: Any,
) -> None:
    client = efo_bridge.client()
    stream = new_stream(client, 1)
    put_numbered(client, stream, 5)
    packed = aggregate([UserRecord("k", f"sub-{i}".encode()) for i in range(4)])
    client.put_record(StreamName=stream, Data=packed.data, PartitionKey=packed.partition_key)
    put_numbered(client, stream, 5, start=5)
    everything = read(batches(client, subscription(client, stream)), 14)
    assert [r.data for r in everything] == (
        [f"event-{i:06d}".encode() for i in range(5)]
        + [f"sub-{i}".encode() for i in range(4)]
        + [f"event-{i:06d}".encode() for i in range(5, 10)]
    )
    # A checkpoint in the middle of the aggregate: the rest of it, then what follows.
    middle = everything[6].position
    assert middle.sub_sequence_number == 1
    sub = subscription(client, stream, StartingPosition.after(middle))
    resumed = read(batches(client, sub), 7)
    assert [r.data for r in resumed] == [b"sub-2", b"sub-3"] + [
        f"event-{i:06d}".encode() for i in range(5, 10)
    ]
    assert sub.position == everything[-1].position
