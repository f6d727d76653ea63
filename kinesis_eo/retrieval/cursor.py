"""The reading state of one shard, as a state machine that does no I/O, and its flows.

:class:`ShardCursor` makes every decision: which call comes next, when it may
be made, what a response means. :func:`step_flow` and :func:`read_shard_flow`
turn it into calls a sync or asyncio driver makes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

from kinesis_eo.aggregation import DecodeBudget
from kinesis_eo.errors import IteratorExpiredError
from kinesis_eo.flow import Call, Sleep
from kinesis_eo.records import HashKeyRange, Position, Record
from kinesis_eo.retrieval.config import ReaderConfig
from kinesis_eo.retrieval.decoding import to_records
from kinesis_eo.retrieval.position import StartingPosition
from kinesis_eo.retrieval.shards import ChildShard, StreamRef

__all__ = ["Batch", "ShardCursor", "read_shard_flow", "step_flow"]

# Logged under the reader's name: the cursor is the reader's state machine, and
# levels and filters for the reader are set on ``kinesis_eo.retrieval.reader``.
log = logging.getLogger("kinesis_eo.retrieval.reader")


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

    def handle(
        self, call: Call, response: Mapping[str, Any], now: float, sent: float | None = None
    ) -> Batch | None:
        """Take a response to ``next_call()``; a GetRecords response becomes a Batch.

        ``now`` is when the answer came, ``sent`` when the call went out: the next
        read of a busy shard is due ``min_read_interval_s`` after this one was
        sent (5 a second keeps under Kinesis's limit per shard whatever the round
        trip), the next read at the tip ``idle_interval_s`` after the answer.
        """
        start = now if sent is None else sent
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
            self.ready_at = start + self.config.min_read_interval_s
            return Batch(self.shard_id, records, self.millis_behind_latest, False, (), dropped)
        self.iterator = response.get("NextShardIterator")
        self.finished = self.iterator is None
        at_tip = not raw_records and not self.millis_behind_latest
        if at_tip:
            self.ready_at = now + self.config.idle_interval_s
        else:
            self.ready_at = start + self.config.min_read_interval_s
        return Batch(
            shard_id=self.shard_id,
            records=records,
            millis_behind_latest=self.millis_behind_latest,
            shard_end=self.finished,
            child_shards=tuple(ChildShard.from_aws(c) for c in response.get("ChildShards") or ()),
            outside_hash_range=dropped,
        )

    def step(
        self, clock: Callable[[], float] = time.monotonic
    ) -> Generator[Any, Any, Batch | None]:
        """One call after waiting for its turn; the batch if it read one (:func:`step_flow`)."""
        return (yield from step_flow(self, clock))

    def close(self) -> None:
        """Nothing to release: an iterator needs no closing (the shard-source interface)."""

    def take_counts(self) -> dict[str, int]:
        """Nothing to count: polling never subscribes (the shard-source interface)."""
        return {}


def step_flow(cursor: ShardCursor, clock: Callable[[], float]) -> Generator[Any, Any, Batch | None]:
    """One call for ``cursor``, waiting for its turn first; the batch if it read one."""
    wait = cursor.ready_at - clock()
    if wait > 0:
        yield Sleep(wait)
    call = cursor.next_call()
    sent = clock()
    try:
        response = yield call
    except IteratorExpiredError:
        cursor.iterator_expired()
        return None
    return cursor.handle(call, response, clock(), sent)


def read_shard_flow(
    cursor: ShardCursor, clock: Callable[[], float] = time.monotonic
) -> Generator[Any, Any, None]:
    """Batches of one shard until its end (forever, for an open shard)."""
    while not cursor.finished:
        batch = yield from step_flow(cursor, clock)
        if batch is not None:
            yield batch
