"""The asyncio readers with an asyncio client over moto's HTTP server.

The same cursor logic as the sync reader runs under the asyncio driver; these
tests prove that the asyncio front reads, resumes and lists shards the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from kinesis_eo.errors import ResourceNotFoundError
from kinesis_eo.records import Record
from kinesis_eo.retrieval import (
    AsyncShardReader,
    AsyncStreamReader,
    Batch,
    StartingPosition,
    alist_shards,
)
from tests.streams import FAST, assert_in_shard_order_each_once, make_stream, put_numbered


@pytest_asyncio.fixture
async def async_kinesis(moto_server: Any, async_client: Any) -> AsyncIterator[Any]:
    async with async_client("kinesis", **moto_server.client_kwargs()) as client:
        yield client


async def read_until_async(batches: AsyncIterable[Batch], count: int) -> list[Record]:
    records: list[Record] = []
    empty = 0
    async for batch in batches:
        records.extend(batch.records)
        if len(records) >= count:
            break
        empty = 0 if batch.records else empty + 1
        assert empty < 200, f"stream went quiet after {len(records)} of {count} records"
    return records


@pytest.mark.asyncio
async def test_async_stream_reader_reads_every_shard_in_order_each_once(
    moto_server: Any, async_kinesis: Any
) -> None:
    stream = f"async-{uuid.uuid4().hex[:8]}"
    sync_client = moto_server.client("kinesis")
    make_stream(sync_client, stream, 3)
    expected = put_numbered(sync_client, stream, 1500)

    records = await read_until_async(AsyncStreamReader(async_kinesis, stream, config=FAST), 1500)

    assert len(records) == 1500
    assert_in_shard_order_each_once(records, expected)


@pytest.mark.asyncio
async def test_async_shard_reader_resumes_after_a_checkpoint(
    moto_server: Any, async_kinesis: Any
) -> None:
    stream = f"async-{uuid.uuid4().hex[:8]}"
    sync_client = moto_server.client("kinesis")
    make_stream(sync_client, stream, 1)
    expected = put_numbered(sync_client, stream, 50)
    shard_id = "shardId-000000000000"
    first = await read_until_async(
        AsyncShardReader(async_kinesis, stream, shard_id, None, FAST), 20
    )

    rest = await read_until_async(
        AsyncShardReader(
            async_kinesis, stream, shard_id, StartingPosition.after(first[19].position), FAST
        ),
        30,
    )

    assert [r.data for r in first[:20] + rest] == expected


@pytest.mark.asyncio
async def test_async_listing_of_a_missing_stream_is_a_clear_error(async_kinesis: Any) -> None:
    with pytest.raises(ResourceNotFoundError, match="stream 'absent'"):
        await alist_shards(async_kinesis, "absent")
