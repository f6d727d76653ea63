"""Reading shards: discovery, the parent/child graph, and the GetRecords loop."""

from kinesis_eo.retrieval.reader import (
    AsyncShardReader,
    AsyncStreamReader,
    Batch,
    ReaderConfig,
    ShardCursor,
    ShardReader,
    StartingPosition,
    StartKind,
    StreamReader,
    alist_shards,
    list_shards,
)
from kinesis_eo.retrieval.shards import ChildShard, Shard, ShardGraph, StreamRef

__all__ = [
    "AsyncShardReader",
    "AsyncStreamReader",
    "Batch",
    "ChildShard",
    "ReaderConfig",
    "Shard",
    "ShardCursor",
    "ShardGraph",
    "ShardReader",
    "StartKind",
    "StartingPosition",
    "StreamReader",
    "StreamRef",
    "alist_shards",
    "list_shards",
]
