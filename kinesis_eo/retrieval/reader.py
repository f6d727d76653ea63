"""The shard reader: GetRecords turned into ordered batches of user records.

The decisions live in :class:`ShardCursor` (:mod:`kinesis_eo.retrieval.cursor`),
a plain state machine: which call comes next, when it may be made, what a
response means. Flows built on it (:func:`read_shard_flow`,
:func:`read_stream_flow` in :mod:`kinesis_eo.retrieval.stream`) are driven by
the thin sync and asyncio front classes here, so the same logic serves both.

Resuming is always "at the sequence number, then drop what is not after the
floor": a KPL aggregate holds many user records under one sequence number, so
AFTER_SEQUENCE_NUMBER would skip the rest of an aggregate that was only
partly processed. Re-reading that one Kinesis record costs nothing and gives
no gap and no duplicate, for iterator expiry and for checkpoints alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Collection, Generator, Iterator, Mapping
from typing import Any

from kinesis_eo.flow import drive_async, drive_sync, run_async, run_sync
from kinesis_eo.records import HashKeyRange, Position
from kinesis_eo.retrieval.config import MAX_RECORDS_PER_CALL, ReaderConfig
from kinesis_eo.retrieval.cursor import Batch, ShardCursor, read_shard_flow, step_flow
from kinesis_eo.retrieval.decoding import Decoded, to_records
from kinesis_eo.retrieval.position import StartingPosition, StartKind
from kinesis_eo.retrieval.shards import DEFAULT_PAGE_SIZE, ShardGraph, StreamRef, list_shards_flow
from kinesis_eo.retrieval.stream import StreamProgress, read_stream_flow
from kinesis_eo.retry import RetryConfig

__all__ = [
    "MAX_RECORDS_PER_CALL",
    "AsyncShardReader",
    "AsyncStreamReader",
    "Batch",
    "Decoded",
    "ReaderConfig",
    "ShardCursor",
    "ShardReader",
    "StartKind",
    "StartingPosition",
    "StreamProgress",
    "StreamReader",
    "alist_shards",
    "list_shards",
    "read_shard_flow",
    "read_stream_flow",
    "step_flow",
    "to_records",
]


class _ShardReaderBase:
    def __init__(
        self,
        client: Any,
        stream: str | StreamRef,
        shard_id: str,
        start: StartingPosition | None = None,
        config: ReaderConfig | None = None,
        *,
        hash_range: HashKeyRange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or ReaderConfig()
        self.cursor = ShardCursor(
            StreamRef.of(stream),
            shard_id,
            start or StartingPosition.trim_horizon(),
            self.config,
            hash_range,
        )
        self._client = client
        self._clock = clock

    @property
    def millis_behind_latest(self) -> int | None:
        return self.cursor.millis_behind_latest

    @property
    def position(self) -> Position | None:
        return self.cursor.position

    def _flow(self) -> Generator[Any, Any, None]:
        return read_shard_flow(self.cursor, self._clock)


class ShardReader(_ShardReaderBase):
    """Reads one shard with a boto3 client: ``for batch in ShardReader(...)``.

    Yields a batch per GetRecords call (possibly empty) and stops after the
    batch that reaches the end of a closed shard.
    """

    def __init__(
        self,
        client: Any,
        stream: str | StreamRef,
        shard_id: str,
        start: StartingPosition | None = None,
        config: ReaderConfig | None = None,
        *,
        hash_range: HashKeyRange | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            client, stream, shard_id, start, config, hash_range=hash_range, clock=clock
        )
        self._sleep = sleep

    def __iter__(self) -> Iterator[Batch]:
        return drive_sync(self._flow(), self._client, self.config.retry, self._sleep)


class AsyncShardReader(_ShardReaderBase):
    """Reads one shard with an aiobotocore/aioboto3 client: ``async for batch in ...``."""

    def __aiter__(self) -> AsyncIterator[Batch]:
        return drive_async(self._flow(), self._client, self.config.retry)


class _StreamReaderBase:
    def __init__(
        self,
        client: Any,
        stream: str | StreamRef,
        initial: StartingPosition | None = None,
        config: ReaderConfig | None = None,
        *,
        positions: Mapping[str, StartingPosition] | None = None,
        finished_shards: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = StreamRef.of(stream)
        self.config = config or ReaderConfig()
        self.initial = initial or StartingPosition.trim_horizon()
        self.progress = StreamProgress(ShardGraph(()), set(finished_shards), {})
        self._positions = dict(positions or {})
        self._client = client
        self._clock = clock

    def _flow(self) -> Generator[Any, Any, None]:
        return read_stream_flow(
            self.stream, self.config, self.initial, self._positions, self.progress, self._clock
        )


class StreamReader(_StreamReaderBase):
    """Reads every shard of a stream in one thread, following splits and merges.

    Shards take turns by when each may next be read, so pacing one shard never
    holds up another. ``finished_shards`` and ``positions`` come from
    checkpoints; a shard named in neither starts at ``initial``.
    """

    def __init__(
        self,
        client: Any,
        stream: str | StreamRef,
        initial: StartingPosition | None = None,
        config: ReaderConfig | None = None,
        *,
        positions: Mapping[str, StartingPosition] | None = None,
        finished_shards: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            client,
            stream,
            initial,
            config,
            positions=positions,
            finished_shards=finished_shards,
            clock=clock,
        )
        self._sleep = sleep

    def __iter__(self) -> Iterator[Batch]:
        return drive_sync(self._flow(), self._client, self.config.retry, self._sleep)


class AsyncStreamReader(_StreamReaderBase):
    """:class:`StreamReader` for an aiobotocore/aioboto3 client: ``async for batch in ...``."""

    def __aiter__(self) -> AsyncIterator[Batch]:
        return drive_async(self._flow(), self._client, self.config.retry)


def list_shards(
    client: Any,
    stream: str | StreamRef,
    retry: RetryConfig | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> ShardGraph:
    """Every shard of a stream, with its lineage (boto3 client)."""
    flow = list_shards_flow(StreamRef.of(stream), page_size)
    graph: ShardGraph = run_sync(flow, client, retry or RetryConfig())
    return graph


async def alist_shards(
    client: Any,
    stream: str | StreamRef,
    retry: RetryConfig | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> ShardGraph:
    """Every shard of a stream, with its lineage (aiobotocore/aioboto3 client)."""
    flow = list_shards_flow(StreamRef.of(stream), page_size)
    graph: ShardGraph = await run_async(flow, client, retry or RetryConfig())
    return graph
