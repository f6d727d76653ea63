"""Reading every shard of a stream: parents to their end before children, across reshards."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

from kinesis_eo.retrieval.config import ReaderConfig
from kinesis_eo.retrieval.cursor import Batch
from kinesis_eo.retrieval.position import StartingPosition
from kinesis_eo.retrieval.shards import Shard, ShardGraph, StreamRef, list_shards_flow
from kinesis_eo.retrieval.source import ReadingConfig, ShardSource, open_shard

__all__ = ["StreamProgress", "read_stream_flow"]


@dataclass
class StreamProgress:
    """What a stream reader knows about every shard: where it is and what is done."""

    graph: ShardGraph
    finished: set[str]
    cursors: dict[str, ShardSource]


def read_stream_flow(
    stream: StreamRef,
    config: ReaderConfig,
    initial: StartingPosition,
    positions: Mapping[str, StartingPosition],
    progress: StreamProgress,
    clock: Callable[[], float] = time.monotonic,
    reading: ReadingConfig | None = None,
) -> Generator[Any, Any, None]:
    """Batches from every shard of a stream, parents read to their end before children.

    ``positions`` holds where to resume each shard (its checkpoint); a shard
    without one starts at ``initial`` if it was there at start-up, at
    TRIM_HORIZON if it appeared later (a child: every record of it is new).
    Ends when every shard is finished, which only happens once a stream's
    shards are all closed. With ``reading`` naming an EFO consumer (by ARN) the
    shards are read by subscription, else by GetRecords.
    """
    try:
        yield from _read_stream(stream, config, initial, positions, progress, clock, reading)
    finally:
        # Subscriptions hold their shard until closed: a stopped reader lets them go.
        for source in progress.cursors.values():
            source.close()


def _read_stream(
    stream: StreamRef,
    config: ReaderConfig,
    initial: StartingPosition,
    positions: Mapping[str, StartingPosition],
    progress: StreamProgress,
    clock: Callable[[], float],
    reading: ReadingConfig | None,
) -> Generator[Any, Any, None]:
    graph = yield from list_shards_flow(stream, config.list_shards_page_size)
    initial_shards = {shard.shard_id for shard in graph.shards}
    state = progress
    state.graph = graph
    while True:
        for shard in state.graph.ready(state.finished):
            if shard.shard_id not in state.cursors:
                default = (
                    initial if shard.shard_id in initial_shards else StartingPosition.trim_horizon()
                )
                state.cursors[shard.shard_id] = open_shard(
                    stream,
                    shard.shard_id,
                    positions.get(shard.shard_id, default),
                    config,
                    shard.hash_range,
                    reading,
                )
        if not state.cursors:
            return
        cursor = min(state.cursors.values(), key=lambda c: c.ready_at)
        batch = yield from cursor.step(clock)
        if batch is None:
            continue
        yield batch
        if batch.shard_end:
            state.finished.add(cursor.shard_id)
            del state.cursors[cursor.shard_id]
            state.graph = yield from _discover_children(stream, config, state.graph, batch)


def _discover_children(
    stream: StreamRef, config: ReaderConfig, graph: ShardGraph, batch: Batch
) -> Generator[Any, Any, ShardGraph]:
    fresh = yield from list_shards_flow(stream, config.list_shards_page_size)
    # ListShards can lag behind a reshard; the children GetRecords named are known for sure.
    known = {shard.shard_id: shard for shard in (*graph.shards, *fresh.shards)}
    for child in batch.child_shards:
        if child.shard_id not in known:
            parents = (*child.parent_shard_ids, None, None)
            known[child.shard_id] = Shard(
                shard_id=child.shard_id,
                hash_range=child.hash_range,
                starting_sequence_number="0",
                parent_shard_id=parents[0],
                adjacent_parent_shard_id=parents[1],
            )
    return ShardGraph(known.values())
