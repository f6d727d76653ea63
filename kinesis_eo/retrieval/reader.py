"""The shard reader: GetRecords turned into ordered batches of user records.

The decisions live in :class:`ShardCursor`, a plain state machine: which call
comes next, when it may be made, what a response means. Flows built on it
(:func:`read_shard_flow`, :func:`read_stream_flow`) are driven by thin sync
and asyncio front classes, so the same logic serves both.

Resuming is always "at the sequence number, then drop what is not after the
floor": a KPL aggregate holds many user records under one sequence number, so
AFTER_SEQUENCE_NUMBER would skip the rest of an aggregate that was only
partly processed. Re-reading that one Kinesis record costs nothing and gives
no gap and no duplicate, for iterator expiry and for checkpoints alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple

from kinesis_eo.aggregation import DEFAULT_LIMITS, AggregateLimits, DecodeBudget, deaggregate
from kinesis_eo.envelope import unwrap_event
from kinesis_eo.errors import IteratorExpiredError
from kinesis_eo.flow import Call, Sleep, drive_async, drive_sync, run_async, run_sync
from kinesis_eo.records import HashKeyRange, Position, Record
from kinesis_eo.retrieval.shards import (
    DEFAULT_PAGE_SIZE,
    ChildShard,
    Shard,
    ShardGraph,
    StreamRef,
    list_shards_flow,
)
from kinesis_eo.retry import RetryConfig

log = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 10_000


class StartKind(Enum):
    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"
    AT_POSITION = "AT_POSITION"
    AFTER_POSITION = "AFTER_POSITION"


@dataclass(frozen=True, slots=True)
class StartingPosition:
    """Where reading a shard begins; also the floor below which records are dropped."""

    kind: StartKind
    position: Position | None = None
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        needs_position = self.kind in (StartKind.AT_POSITION, StartKind.AFTER_POSITION)
        if needs_position != (self.position is not None):
            raise ValueError(
                f"{self.kind.value} {'needs' if needs_position else 'takes no'} position"
            )
        if (self.kind is StartKind.AT_TIMESTAMP) != (self.timestamp is not None):
            raise ValueError("AT_TIMESTAMP needs a timestamp, and only it takes one")

    @classmethod
    def trim_horizon(cls) -> StartingPosition:
        return cls(StartKind.TRIM_HORIZON)

    @classmethod
    def latest(cls) -> StartingPosition:
        return cls(StartKind.LATEST)

    @classmethod
    def at_timestamp(cls, timestamp: datetime) -> StartingPosition:
        return cls(StartKind.AT_TIMESTAMP, timestamp=timestamp)

    @classmethod
    def at(cls, position: Position) -> StartingPosition:
        """Start with the record at ``position`` (inclusive)."""
        return cls(StartKind.AT_POSITION, position=position)

    @classmethod
    def after(cls, position: Position) -> StartingPosition:
        """Start with the first record after ``position`` (a checkpoint)."""
        return cls(StartKind.AFTER_POSITION, position=position)

    def iterator_params(self) -> dict[str, Any]:
        if self.position is not None:
            return {
                "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                "StartingSequenceNumber": self.position.sequence_number,
            }
        if self.timestamp is not None:
            return {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": self.timestamp}
        return {"ShardIteratorType": self.kind.value}

    def admits(self, position: Position) -> bool:
        if self.position is None:
            return True
        if self.kind is StartKind.AT_POSITION:
            return position >= self.position
        return position > self.position


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    """How a shard is polled.

    AWS allows 5 GetRecords calls per second per shard, shared by every
    consumer of the shard; ``min_read_interval_s`` keeps one reader at or under
    that. After a read that came back empty at the tip of the shard the reader
    waits ``idle_interval_s`` instead, so an idle stream costs little.
    ``aggregate_limits`` caps what KPL aggregates unpack into, per aggregate
    and per batch (see :class:`~kinesis_eo.aggregation.AggregateLimits`): an
    aggregate over its own cap is delivered whole with ``deaggregation_error``
    (the sinks dead-letter it); one that does not fit what is left of a batch
    ends the batch and opens the next.
    """

    max_records: int = 1000
    min_read_interval_s: float = 0.2
    idle_interval_s: float = 1.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    list_shards_page_size: int = DEFAULT_PAGE_SIZE
    aggregate_limits: AggregateLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= MAX_RECORDS_PER_CALL:
            raise ValueError(
                f"max_records must be within 1..{MAX_RECORDS_PER_CALL}, got {self.max_records!r}"
            )
        for name in ("min_read_interval_s", "idle_interval_s"):
            value = getattr(self, name)
            # NaN fails both comparisons: it would reach time.sleep as an error.
            if not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be 0 or more seconds, got {value!r}")
        # ListShards takes MaxResults from 1 to 10,000.
        if not 1 <= self.list_shards_page_size <= 10_000:
            raise ValueError(
                f"list_shards_page_size must be within 1..10000, got {self.list_shards_page_size!r}"
            )


@dataclass(frozen=True, slots=True)
class Batch:
    """The user records of one GetRecords call, in shard order.

    ``records`` may be empty (an idle shard still reports its lag). At the end
    of a closed shard ``shard_end`` is set and ``child_shards`` names what to
    read next. ``outside_hash_range`` counts aggregated user records dropped
    because their hash key belongs to another shard (the KPL re-sent them there).
    """

    shard_id: str
    records: list[Record]
    millis_behind_latest: int | None
    shard_end: bool = False
    child_shards: tuple[ChildShard, ...] = ()
    outside_hash_range: int = 0

    @property
    def last_position(self) -> Position | None:
        return self.records[-1].position if self.records else None


class Decoded(NamedTuple):
    """User records of a GetRecords response (or a Lambda event's records).

    ``dropped``: aggregated user records outside the hash range. ``unread``:
    the index of the first Kinesis record left undecoded because the batch's
    caps were reached (``len(raw_records)`` when all were decoded).
    """

    records: list[Record]
    dropped: int
    unread: int


def to_records(
    stream: str,
    shard_id: str,
    raw_records: list[Mapping[str, Any]],
    hash_range: HashKeyRange | None,
    floor: StartingPosition,
    budget: DecodeBudget | None = None,
) -> Decoded:
    """Kinesis records -> user records after the floor, within the caps of ``budget``."""
    records: list[Record] = []
    dropped = 0
    budget = budget or DecodeBudget()
    for index, raw in enumerate(raw_records):
        kinesis_record = Record(
            stream=stream,
            shard_id=shard_id,
            sequence_number=raw["SequenceNumber"],
            partition_key=raw["PartitionKey"],
            data=raw["Data"],
            arrival_time=raw.get("ApproximateArrivalTimestamp"),
            encryption_type=raw.get("EncryptionType"),
        )
        expanded = deaggregate(kinesis_record, hash_range, budget=budget)
        if expanded.batch_full:
            return Decoded(records, dropped, index)
        dropped += len(expanded.outside_hash_range)
        for record in expanded.records:
            if not floor.admits(record.position):
                continue
            event_id, namespace, payload = unwrap_event(record.data)
            records.append(
                record
                if event_id is None
                else Record(
                    stream=record.stream,
                    shard_id=record.shard_id,
                    sequence_number=record.sequence_number,
                    partition_key=record.partition_key,
                    data=payload,
                    arrival_time=record.arrival_time,
                    sub_sequence_number=record.sub_sequence_number,
                    explicit_hash_key=record.explicit_hash_key,
                    aggregated=record.aggregated,
                    deaggregation_error=record.deaggregation_error,
                    encryption_type=record.encryption_type,
                    event_id=event_id,
                    event_namespace=namespace,
                )
            )
    return Decoded(records, dropped, len(raw_records))


class ShardCursor:
    """The reading state of one shard and every decision about it; does no I/O."""

    def __init__(
        self,
        stream: StreamRef,
        shard_id: str,
        start: StartingPosition,
        config: ReaderConfig,
        hash_range: HashKeyRange | None = None,
    ) -> None:
        self.stream = stream
        self.shard_id = shard_id
        self.config = config
        self.hash_range = hash_range
        # Advances past every record handed out: the resume point after an expired iterator.
        self.floor = start
        self.iterator: str | None = None
        self.ready_at = 0.0
        self.finished = False
        self.millis_behind_latest: int | None = None
        self.iterators_expired = 0
        # Where the next iterator starts after a batch ended at the caps of its aggregates.
        self.resume_at: str | None = None
        self._resource = f"shard '{shard_id}' of {stream}"

    @property
    def position(self) -> Position | None:
        """The last position handed out (or the starting position, if given)."""
        return self.floor.position

    def next_call(self) -> Call:
        if self.iterator is None:
            start = (
                self.floor.iterator_params()
                if self.resume_at is None
                else {
                    "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                    "StartingSequenceNumber": self.resume_at,
                }
            )
            return Call(
                "get_shard_iterator",
                {**self.stream.params(), "ShardId": self.shard_id, **start},
                self._resource,
                "GetShardIterator",
                "kinesis",
            )
        params: dict[str, Any] = {"ShardIterator": self.iterator, "Limit": self.config.max_records}
        if self.stream.arn:
            params["StreamARN"] = self.stream.arn
        return Call("get_records", params, self._resource, "GetRecords", "kinesis")

    def iterator_expired(self) -> None:
        self.iterators_expired += 1
        log.info("iterator expired for %s; resuming from %s", self._resource, self.floor)
        self.iterator = None

    def handle(self, call: Call, response: Mapping[str, Any], now: float) -> Batch | None:
        """Take a response to ``next_call()``; a GetRecords response becomes a Batch."""
        if call.method == "get_shard_iterator":
            self.iterator = response["ShardIterator"]
            self.resume_at = None
            return None
        raw_records = response.get("Records", [])
        records, dropped, unread = to_records(
            self.stream.label,
            self.shard_id,
            raw_records,
            self.hash_range,
            self.floor,
            DecodeBudget(self.config.aggregate_limits),
        )
        if records:
            self.floor = StartingPosition.after(records[-1].position)
        if dropped:
            log.warning(
                "%s: dropped %d aggregated user records outside the shard's hash range",
                self._resource,
                dropped,
            )
        self.millis_behind_latest = response.get("MillisBehindLatest")
        if unread < len(raw_records):
            # The batch's caps were reached: what is left is read again, first
            # thing, by a new iterator (one GetShardIterator call per cut batch).
            log.info(
                "%s: batch ended at the caps of its KPL aggregates; %d records are read again",
                self._resource,
                len(raw_records) - unread,
            )
            self.resume_at = raw_records[unread]["SequenceNumber"]
            self.iterator = None
            self.ready_at = now + self.config.min_read_interval_s
            return Batch(self.shard_id, records, self.millis_behind_latest, False, (), dropped)
        self.iterator = response.get("NextShardIterator")
        self.finished = self.iterator is None
        at_tip = not raw_records and not self.millis_behind_latest
        pause = self.config.idle_interval_s if at_tip else self.config.min_read_interval_s
        self.ready_at = now + pause
        return Batch(
            shard_id=self.shard_id,
            records=records,
            millis_behind_latest=self.millis_behind_latest,
            shard_end=self.finished,
            child_shards=tuple(ChildShard.from_aws(c) for c in response.get("ChildShards") or ()),
            outside_hash_range=dropped,
        )


def step_flow(cursor: ShardCursor, clock: Callable[[], float]) -> Generator[Any, Any, Batch | None]:
    """One call for ``cursor``, waiting for its turn first; the batch if it read one."""
    wait = cursor.ready_at - clock()
    if wait > 0:
        yield Sleep(wait)
    call = cursor.next_call()
    try:
        response = yield call
    except IteratorExpiredError:
        cursor.iterator_expired()
        return None
    return cursor.handle(call, response, clock())


def read_shard_flow(
    cursor: ShardCursor, clock: Callable[[], float] = time.monotonic
) -> Generator[Any, Any, None]:
    """Batches of one shard until its end (forever, for an open shard)."""
    while not cursor.finished:
        batch = yield from step_flow(cursor, clock)
        if batch is not None:
            yield batch


@dataclass
class StreamProgress:
    """What a stream reader knows about every shard: where it is and what is done."""

    graph: ShardGraph
    finished: set[str]
    cursors: dict[str, ShardCursor]


def read_stream_flow(
    stream: StreamRef,
    config: ReaderConfig,
    initial: StartingPosition,
    positions: Mapping[str, StartingPosition],
    progress: StreamProgress,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[Any, Any, None]:
    """Batches from every shard of a stream, parents read to their end before children.

    ``positions`` holds where to resume each shard (its checkpoint); a shard
    without one starts at ``initial`` if it was there at start-up, at
    TRIM_HORIZON if it appeared later (a child: every record of it is new).
    Ends when every shard is finished, which only happens once a stream's
    shards are all closed.
    """
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
                state.cursors[shard.shard_id] = ShardCursor(
                    stream,
                    shard.shard_id,
                    positions.get(shard.shard_id, default),
                    config,
                    shard.hash_range,
                )
        if not state.cursors:
            return
        cursor = min(state.cursors.values(), key=lambda c: c.ready_at)
        batch = yield from step_flow(cursor, clock)
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
