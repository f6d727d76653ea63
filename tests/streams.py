"""Helpers shared by the tests that write to and read from streams."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from kinesis_eo.records import Position, Record
from kinesis_eo.retrieval import Batch, ReaderConfig

FAST = ReaderConfig(max_records=1000, min_read_interval_s=0.0, idle_interval_s=0.01)


def make_stream(client: Any, name: str, shards: int) -> None:
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )


def put_numbered(client: Any, stream: str, count: int, start: int = 0) -> list[bytes]:
    payloads = [f"event-{i:06d}".encode() for i in range(start, start + count)]
    for offset in range(0, count, 500):
        chunk = payloads[offset : offset + 500]
        response = client.put_records(
            StreamName=stream,
            Records=[{"Data": p, "PartitionKey": p.decode()} for p in chunk],
        )
        assert response["FailedRecordCount"] == 0
    return payloads


def read_until(batches: Iterable[Batch], count: int, max_empty: int = 200) -> list[Record]:
    """Records from ``batches`` until ``count`` arrived; fails if the stream runs dry first."""
    records: list[Record] = []
    empty = 0
    for batch in batches:
        records.extend(batch.records)
        if len(records) >= count:
            return records
        empty = 0 if batch.records else empty + 1
        assert empty < max_empty, f"stream went quiet after {len(records)} of {count} records"
    return records


def assert_in_shard_order_each_once(records: list[Record], expected: list[bytes]) -> None:
    by_shard: dict[str, list[Position]] = defaultdict(list)
    for record in records:
        by_shard[record.shard_id].append(record.position)
    for shard_id, positions in by_shard.items():
        assert positions == sorted(positions), f"{shard_id} read out of order"
        assert len(set(positions)) == len(positions), f"{shard_id} has a repeated position"
    assert sorted(r.data for r in records) == sorted(expected)


def wait_active(client: Any, stream: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        summary = client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise AssertionError(f"{stream} did not become ACTIVE")


def new_stream(client: Any, shards: int) -> str:
    name = f"s-{uuid.uuid4().hex[:10]}"
    client.create_stream(StreamName=name, ShardCount=shards)
    wait_active(client, name)
    return name
