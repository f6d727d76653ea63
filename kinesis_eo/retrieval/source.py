"""What the worker and the consumer read a shard through: polling or a subscription.

:class:`ShardSource` is the interface both :class:`~kinesis_eo.retrieval.cursor.ShardCursor`
(GetRecords) and :class:`~kinesis_eo.retrieval.subscription.ShardSubscription`
(SubscribeToShard) offer; :func:`open_shard` picks one by whether an enhanced
fan-out consumer is given.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol, TypeVar

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.records import HashKeyRange, Position
from kinesis_eo.retrieval.config import ReaderConfig
from kinesis_eo.retrieval.consumers import consumer_arn_flow, is_consumer_arn
from kinesis_eo.retrieval.cursor import Batch, ShardCursor
from kinesis_eo.retrieval.position import StartingPosition
from kinesis_eo.retrieval.shards import StreamRef
from kinesis_eo.retrieval.subscription import ShardSubscription, SubscriptionConfig

__all__ = ["ReadingConfig", "ShardSource", "open_shard", "with_consumer_arn"]


class ShardSource(Protocol):
    """One shard being read: a step at a time, each a batch or nothing yet."""

    shard_id: str
    ready_at: float
    finished: bool
    millis_behind_latest: int | None

    @property
    def position(self) -> Position | None: ...

    def step(
        self, clock: Callable[[], float] = time.monotonic
    ) -> Generator[Any, Any, Batch | None]: ...

    def close(self) -> None: ...

    def take_counts(self) -> dict[str, int]: ...


class ReadingConfig(Protocol):
    """What decides how shards are read: WorkerConfig and ConsumerConfig both have it."""

    @property
    def efo_consumer(self) -> str | None: ...

    @property
    def subscription(self) -> SubscriptionConfig: ...


C = TypeVar("C", bound=ReadingConfig)


def open_shard(
    stream: StreamRef,
    shard_id: str,
    start: StartingPosition,
    reader: ReaderConfig,
    hash_range: HashKeyRange | None = None,
    reading: ReadingConfig | None = None,
) -> ShardSource:
    """A subscription if ``reading`` names an EFO consumer (by ARN), else a GetRecords cursor."""
    if reading is None or reading.efo_consumer is None:
        return ShardCursor(stream, shard_id, start, reader, hash_range)
    if not is_consumer_arn(reading.efo_consumer):
        raise ConfigurationError(
            f"consumer '{reading.efo_consumer}' of {stream} must be resolved to its ARN first "
            "(with_consumer_arn)"
        )
    return ShardSubscription(
        stream,
        shard_id,
        start,
        reading.efo_consumer,
        reading.subscription,
        hash_range,
        reader=reader,
    )


def with_consumer_arn(stream: StreamRef, config: C) -> Generator[Any, Any, C]:
    """``config`` with its EFO consumer as an ARN, registered if only named and absent.

    Run once at start, before any shard is read: every shard's subscription uses the ARN.
    """
    if config.efo_consumer is None:
        return config
    arn = yield from consumer_arn_flow(stream, config.efo_consumer)
    return dataclasses.replace(config, efo_consumer=arn)  # type: ignore[type-var]
