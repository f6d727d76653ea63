"""The reader on kinesis-mock: real sequence numbers, pagination, splits and merges.

moto never closes a parent shard and has short sequence numbers, so these are
the tests that prove ordering and resharding.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from kinesis_eo.records import Record
from kinesis_eo.retrieval import StreamReader, list_shards
from tests.streams import (
    FAST,
    assert_in_shard_order_each_once,
    new_stream,
    put_numbered,
    read_until,
    wait_active,
)

pytestmark = pytest.mark.kinesis_mock


@pytest.fixture
def client(kinesis_mock: Any) -> Any:
    return kinesis_mock.client("kinesis")


def test_ten_thousand_records_over_four_shards_are_read_in_order_each_once(client: Any) -> None:
    stream = new_stream(client, 4)
    expected = put_numbered(client, stream, 10_000)

    records = read_until(StreamReader(client, stream, config=FAST), len(expected))

    assert len(records) == 10_000
    assert {len(r.sequence_number) for r in records} == {56}
    assert len({r.shard_id for r in records}) == 4
    assert_in_shard_order_each_once(records, expected)


def test_shards_are_listed_across_pages_in_the_aws_form(client: Any) -> None:
    stream = new_stream(client, 5)
    calls: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.kinesis.ListShards", lambda params, **_: calls.append(dict(params))
    )

    graph = list_shards(client, stream, page_size=2)

    assert len(graph) == 5
    assert len(calls) == 3
    assert all("StreamName" not in c for c in calls[1:])
    assert all("NextToken" in c for c in calls[1:])


def test_a_split_and_a_merge_during_reading_read_every_record_once_parents_first(
    client: Any,
) -> None:
    stream = new_stream(client, 2)
    reader = iter(StreamReader(client, stream, config=FAST))
    read: list[Record] = []
    expected: list[bytes] = []

    expected += put_numbered(client, stream, 400, start=0)
    read += read_until(reader, len(expected) - len(read))

    shards = list_shards(client, stream).shards
    first, second = shards[0], shards[1]
    middle = (first.hash_range.start + first.hash_range.end) // 2
    client.split_shard(
        StreamName=stream, ShardToSplit=first.shard_id, NewStartingHashKey=str(middle + 1)
    )
    wait_active(client, stream)
    expected += put_numbered(client, stream, 400, start=1000)
    read += read_until(reader, len(expected) - len(read))

    graph = list_shards(client, stream)
    upper_child = next(
        s
        for s in graph.shards
        if first.shard_id in s.parent_ids and s.hash_range.end == first.hash_range.end
    )
    client.merge_shards(
        StreamName=stream,
        ShardToMerge=upper_child.shard_id,
        AdjacentShardToMerge=second.shard_id,
    )
    wait_active(client, stream)
    expected += put_numbered(client, stream, 400, start=2000)
    read += read_until(reader, len(expected) - len(read))

    assert_in_shard_order_each_once(read, expected)
    final = list_shards(client, stream)
    assert len(final) == 5  # 2 original, 2 from the split, 1 from the merge
    order: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(read):
        order[record.shard_id].append(index)
    for shard in final.shards:
        for parent in final.parents_of(shard.shard_id):
            if order[shard.shard_id] and order[parent]:
                assert max(order[parent]) < min(order[shard.shard_id]), (
                    f"{shard.shard_id} was read before its parent {parent} was finished"
                )
    merged = next(s for s in final.shards if len(s.parent_ids) == 2)
    assert order[merged.shard_id], "the merged child was never read"
