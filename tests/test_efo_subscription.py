"""Reading shards by subscription (SubscribeToShard) on kinesis-mock, through the EFO bridge.

kinesis-mock serves SubscribeToShard with real event-stream frames, one event a
second, and a 5-minute subscription; the bridge adds only the initial-response
event botocore requires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from kinesis_eo.aggregation import UserRecord, aggregate
from kinesis_eo.flow import drive_sync
from kinesis_eo.metrics.catalogue import RESUBSCRIPTIONS
from kinesis_eo.metrics.model import Recorder
from kinesis_eo.metrics.run import RunMetrics
from kinesis_eo.records import Record
from kinesis_eo.retrieval import (
    Batch,
    ChildShard,
    ShardReader,
    StartingPosition,
    StreamRef,
    list_shards,
)
from kinesis_eo.retrieval.consumers import ensure_consumer
from kinesis_eo.retrieval.subscription import (
    ShardSubscription,
    SubscriptionConfig,
    read_subscription_flow,
)
from kinesis_eo.retry import RetryConfig
from tests.streams import FAST, new_stream, put_numbered, wait_active

pytestmark = pytest.mark.kinesis_mock


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


def data(records: list[Record]) -> list[bytes]:
    return [r.data for r in records]


def numbered(start: int, stop: int) -> list[bytes]:
    return [f"event-{i:06d}".encode() for i in range(start, stop)]


def test_after_a_dropped_connection_reading_goes_on_from_the_continuation_without_gap_or_repeat(
    efo_bridge: Any,
) -> None:
    client = efo_bridge.client()
    stream = new_stream(client, 1)
    put_numbered(client, stream, 10)
    sub = subscription(client, stream)
    reading = batches(client, sub)
    first = read(reading, 10)
    continuation = sub.continuation
    assert continuation is not None
    assert efo_bridge.sever() == 1
    put_numbered(client, stream, 10, start=10)
    rest = read(reading, 10)
    assert data(first + rest) == numbered(0, 20)
    assert sub.drops >= 1
    assert sub.subscriptions >= 2
    # What a worker records per step: the drop reaches the resubscriptions metric.
    recorder = Recorder()
    RunMetrics(recorder).resubscribed(sub.shard_id, sub.take_counts())
    dropped = recorder.drain().total(RESUBSCRIPTIONS, shard=sub.shard_id, reason="dropped")
    assert dropped == sub.drops
    assert sub.take_counts()["dropped"] == 0  # counted once
    positions = [r.position for r in first + rest]
    assert positions == sorted(set(positions))


def test_a_subscription_past_its_lifetime_is_renewed_with_no_record_lost_or_repeated(
    efo_bridge: Any,
) -> None:
    client = efo_bridge.client()
    stream = new_stream(client, 1)
    sub = subscription(client, stream, lifetime_s=2.0)
    reading = batches(client, sub)
    records: list[Record] = []
    for round_ in range(3):
        put_numbered(client, stream, 5, start=5 * round_)
        records += read(reading, 5)
        time.sleep(1.0)
    assert data(records) == numbered(0, 15)
    assert sub.resubscriptions >= 2
    assert sub.drops == 0


def test_a_second_subscription_on_a_held_shard_waits_until_the_first_lets_go(
    efo_bridge: Any,
) -> None:
    client = efo_bridge.client()
    stream = new_stream(client, 1)
    put_numbered(client, stream, 5)
    first = subscription(client, stream)
    holding = batches(client, first)
    assert data(read(holding, 5)) == numbered(0, 5)
    assert first.events is not None  # still subscribed
    second = subscription(client, stream)
    got: list[Record] = []
    thread = threading.Thread(target=lambda: got.extend(read(batches(client, second), 5, 30)))
    thread.start()
    deadline = time.monotonic() + 10
    while second.in_use_waits == 0:
        assert time.monotonic() < deadline, "the second subscription was never refused"
        time.sleep(0.05)
    assert not got
    first.close()
    thread.join(30)
    assert data(got) == numbered(0, 5)
    assert second.in_use_waits >= 1
    assert second.drops == 0


def test_the_end_of_a_split_parent_gives_the_children_polling_gives(efo_bridge: Any) -> None:
    client = efo_bridge.client()
    stream = new_stream(client, 1)
    put_numbered(client, stream, 5)
    sub = subscription(client, stream, end_check_interval_s=1.0)
    (parent,) = list_shards(client, stream).shards
    middle = (parent.hash_range.start + parent.hash_range.end) // 2
    client.split_shard(
        StreamName=stream, ShardToSplit=parent.shard_id, NewStartingHashKey=str(middle)
    )
    wait_active(client, stream)
    got = list(batches(client, sub))  # ends with the shard
    assert data([r for b in got for r in b.records]) == numbered(0, 5)
    assert got[-1].shard_end
    assert sub.finished
    assert not any(b.shard_end for b in got[:-1])
    polled = list(ShardReader(client, stream, parent.shard_id, config=FAST))
    assert polled[-1].shard_end
    assert got[-1].child_shards == polled[-1].child_shards
    assert {c.shard_id for c in got[-1].child_shards} == {
        s.shard_id for s in list_shards(client, stream).shards if s.parent_ids
    }


def test_a_closing_event_becomes_a_shard_end_batch_with_its_children() -> None:
    # AWS's closing event (kinesis-mock never sends one): no continuation, ChildShards.
    sub = ShardSubscription(
        StreamRef.of("s"), "shardId-000000000000", StartingPosition.trim_horizon(), "arn:c"
    )
    children = [
        {
            "ShardId": f"shardId-00000000000{i}",
            "ParentShards": ["shardId-000000000000"],
            "HashKeyRange": {"StartingHashKey": str(i), "EndingHashKey": str(i)},
        }
        for i in (1, 2)
    ]
    record = {
        "SequenceNumber": "5",
        "PartitionKey": "k",
        "Data": b"last",
        "ApproximateArrivalTimestamp": datetime(2026, 1, 1),
    }
    open_event = {"Records": [record], "ContinuationSequenceNumber": "5", "MillisBehindLatest": 0}
    batch = sub.handle_event({"SubscribeToShardEvent": open_event}, 0.0)
    assert batch is not None
    assert not batch.shard_end
    assert data(batch.records) == [b"last"]
    closing = {"Records": [], "ContinuationSequenceNumber": None, "ChildShards": children}
    end = sub.handle_event({"SubscribeToShardEvent": closing}, 1.0)
    assert end is not None
    assert end.shard_end
    assert sub.finished
    assert end.child_shards == tuple(ChildShard.from_aws(c) for c in children)
