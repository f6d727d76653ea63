"""Reading a shard by enhanced fan-out: SubscribeToShard's event stream turned into batches.

:class:`ShardSubscription` stands beside :class:`~kinesis_eo.retrieval.cursor.ShardCursor`
and behind the same interface (``step(clock)``, ``millis_behind_latest``,
``position``, ``finished``), so the worker and the consumer read a shard either
way and leases, fencing, the ledger and checkpoints never know which one fed a
batch. It is a plain state machine over its flow: which call comes next, what an
event means, when to subscribe again. Pulling the next event is the
:class:`~kinesis_eo.flow.Receive` instruction, which the sync driver satisfies
with ``next()`` on boto3's event stream and the asyncio driver with ``anext()``
on aiobotocore's.

What AWS does and what the machine does about it:

- A subscription lasts 5 minutes; the machine subscribes again before that
  (``lifetime_s``), from the last ``ContinuationSequenceNumber`` (which advances
  even when no records come), at most once per second per shard.
- Resuming is "at the sequence number, then drop what is not after the floor",
  as in the polling reader: KPL aggregates and the lease's sub-sequence floor
  come out the same, whichever way the shard is read.
- A read timeout or a reset connection is a *drop*: counted, backed off, and
  followed by a new subscription from the continuation; never an error.
- ``ResourceInUseException`` (another subscription on this consumer and shard,
  such as the one a worker that just lost the lease still holds) is waited out.
- The closing event of a shard carries ``ChildShards`` and no continuation: it
  becomes a batch with ``shard_end`` and ``child_shards``, as polling gives them.
- A subscription that stays quiet for ``end_check_interval_s`` is checked against
  the end of the shard by polling (GetShardIterator + GetRecords from the floor):
  the closing event is the only notice of a reshard, and an endpoint that never
  sends it (kinesis-mock 0.6.2 sends no ``ChildShards``) would otherwise hold the
  children back for ever.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.aggregation import DEFAULT_LIMITS, AggregateLimits, DecodeBudget
from kinesis_eo.errors import AwsCallError, KinesisEOError
from kinesis_eo.flow import Call, Receive, Sleep
from kinesis_eo.records import HashKeyRange, Position
from kinesis_eo.retrieval.config import ReaderConfig
from kinesis_eo.retrieval.cursor import Batch, ShardCursor, step_flow
from kinesis_eo.retrieval.decoding import to_records
from kinesis_eo.retrieval.position import StartingPosition
from kinesis_eo.retrieval.shards import ChildShard, StreamRef
from kinesis_eo.retry import RetryConfig, backoff_delay

__all__ = [
    "SUBSCRIPTION_LIFETIME_S",
    "ShardSubscription",
    "SubscriptionConfig",
    "read_subscription_flow",
]

log = logging.getLogger(__name__)

# AWS ends every subscription after 5 minutes.
SUBSCRIPTION_LIFETIME_S = 300.0


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    """How a shard is read by subscription.

    ``lifetime_s``: subscribe again after this long, ahead of the 5-minute end.
    ``min_subscribe_interval_s``: SubscribeToShard allows 1 call per second per
    consumer and shard. ``in_use_wait_s``: the wait before trying again when
    another subscription holds the shard (AWS lets a new one take over 5 s
    after the last). Drops are followed by a new subscription after a
    jittered back-off growing from ``reconnect_backoff.initial_backoff_s`` to
    ``reconnect_backoff.max_backoff_s``. ``end_check_interval_s``: quiet time
    after which the shard's end is checked by polling (None: never).
    """

    lifetime_s: float = SUBSCRIPTION_LIFETIME_S - 10.0
    min_subscribe_interval_s: float = 1.0
    in_use_wait_s: float = 1.0
    reconnect_backoff: RetryConfig = field(
        default_factory=lambda: RetryConfig(initial_backoff_s=0.5, max_backoff_s=10.0)
    )
    end_check_interval_s: float | None = 60.0
    aggregate_limits: AggregateLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if not 0 < self.lifetime_s <= SUBSCRIPTION_LIFETIME_S:
            raise ValueError(
                f"lifetime_s must be more than 0 and at most {SUBSCRIPTION_LIFETIME_S:g} s, "
                f"got {self.lifetime_s!r}"
            )
        for name in ("min_subscribe_interval_s", "in_use_wait_s"):
            value = getattr(self, name)
            if not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be 0 or more seconds, got {value!r}")
        check = self.end_check_interval_s
        if check is not None and not 0 < check < float("inf"):
            raise ValueError(f"end_check_interval_s must be a positive number, got {check!r}")


class ShardSubscription:
    """The subscription state of one shard and every decision about it; does no I/O itself."""

    def __init__(
        self,
        stream: StreamRef,
        shard_id: str,
        start: StartingPosition,
        consumer_arn: str,
        config: SubscriptionConfig | None = None,
        hash_range: HashKeyRange | None = None,
        *,
        reader: ReaderConfig | None = None,
    ) -> None:
        self.stream = stream
        self.shard_id = shard_id
        self.consumer_arn = consumer_arn
        self.config = config or SubscriptionConfig()
        self.hash_range = hash_range
        # The polling settings of the end check (and nothing else).
        self.reader = reader or ReaderConfig()
        self.floor = start
        self.continuation: str | None = None
        self.events: Any = None
        self.opened_at = 0.0
        # When SubscribeToShard may next be called (1/s), and when this shard next wants a
        # turn among others read by one flow (after every step, behind the rest).
        self.subscribe_at = 0.0
        self.ready_at = 0.0
        self.finished = False
        self.millis_behind_latest: int | None = None
        # Raw records of an event left over when a batch reached its aggregate caps,
        # and the closing event's children, which wait for them.
        self.pending: list[Mapping[str, Any]] = []
        self.closing: tuple[ChildShard, ...] | None = None
        self.quiet_since: float | None = None
        self.probe: ShardCursor | None = None
        self.subscriptions = 0
        self.resubscriptions = 0
        self.drops = 0
        self.in_use_waits = 0
        self._failures = 0
        self._reported = (0, 0, 0)
        self._resource = f"shard '{shard_id}' of {stream} (consumer {consumer_arn})"

    @property
    def position(self) -> Position | None:
        """The last position handed out (or the starting position, if given)."""
        return self.floor.position

    # --- decisions -------------------------------------------------------------------

    def starting_position(self) -> dict[str, Any]:
        """SubscribeToShard's StartingPosition: the continuation, or the floor if newer."""
        sequence = self.continuation
        floor = self.floor.position
        if floor is not None and (sequence is None or int(floor.sequence_number) > int(sequence)):
            sequence = floor.sequence_number
        if sequence is not None:
            return {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": sequence}
        if self.floor.timestamp is not None:
            return {"Type": "AT_TIMESTAMP", "Timestamp": self.floor.timestamp}
        return {"Type": self.floor.kind.value}

    def subscribe_call(self) -> Call:
        """The SubscribeToShard call for the current position (never retried by the driver)."""
        return Call(
            "subscribe_to_shard",
            {
                "ConsumerARN": self.consumer_arn,
                "ShardId": self.shard_id,
                "StartingPosition": self.starting_position(),
            },
            self._resource,
            "SubscribeToShard",
            "kinesis",
            # Pacing and back-off are this machine's: a call-level retry would break 1/s.
            retry=False,
        )

    def subscribed(self, response: Mapping[str, Any], now: float) -> None:
        """Take SubscribeToShard's response: its event stream is now the one to pull from."""
        self.events = response["EventStream"]
        self.opened_at = now
        self.subscriptions += 1

    def take_counts(self) -> dict[str, int]:
        """Renewals, drops and in-use waits since the last call, by reason (for metrics)."""
        now = (self.resubscriptions, self.drops, self.in_use_waits)
        deltas = [a - b for a, b in zip(now, self._reported, strict=True)]
        self._reported = now
        return dict(zip(("renewed", "dropped", "in_use"), deltas, strict=True))

    def expired(self, now: float) -> bool:
        """Whether the open subscription is due for renewal (``lifetime_s``)."""
        return self.events is not None and now - self.opened_at >= self.config.lifetime_s

    def ended(self, now: float, *, resubscribe: bool = True) -> None:
        """The event stream is closed (by us at its lifetime, or by the server)."""
        self.events = None
        if resubscribe and not self.finished:
            self.resubscriptions += 1
            log.debug("%s: subscribing again from %s", self._resource, self.starting_position())

    def failed(self, error: KinesisEOError, now: float) -> None:
        """A subscribe or a pull failed: wait out a competing subscription, back off a drop."""
        self.events = None
        if isinstance(error, AwsCallError) and error.code == "ResourceInUseException":
            self.in_use_waits += 1
            self.subscribe_at = max(self.subscribe_at, now + self.config.in_use_wait_s)
            log.debug("%s: another subscription holds the shard; waiting", self._resource)
            return
        if not error.retryable:
            raise error
        self.drops += 1
        self._failures += 1
        delay = backoff_delay(self._failures, self.config.reconnect_backoff)
        self.subscribe_at = max(self.subscribe_at, now + delay)
        log.info(
            "%s: subscription dropped (%s); subscribing again in %.2f s from %s",
            self._resource,
            error,
            delay,
            self.starting_position(),
        )

    def wants_end_check(self, now: float) -> bool:
        """Whether the subscription has been quiet long enough to check the shard's end."""
        interval = self.config.end_check_interval_s
        return (
            interval is not None
            and self.quiet_since is not None
            and now - self.quiet_since >= interval
        )

    def handle_event(self, event: Mapping[str, Any], now: float) -> Batch | None:
        """Take one event of the stream; a SubscribeToShardEvent becomes a Batch."""
        body = event.get("SubscribeToShardEvent")
        if body is None:
            return None
        self._failures = 0
        self.millis_behind_latest = body.get("MillisBehindLatest")
        continuation = body.get("ContinuationSequenceNumber")
        if continuation is None:
            self.closing = tuple(ChildShard.from_aws(c) for c in body.get("ChildShards") or ())
        else:
            self.continuation = continuation
        return self.decode(list(body.get("Records") or ()), now)

    def decode(self, raw: Sequence[Mapping[str, Any]], now: float) -> Batch:
        """User records of ``raw`` after the floor, up to the batch's aggregate caps."""
        records, dropped, unread = to_records(
            self.stream.label,
            self.shard_id,
            list(raw),
            self.hash_range,
            self.floor,
            DecodeBudget(self.config.aggregate_limits),
        )
        if records:
            self.floor = StartingPosition.after(records[-1].position)
            self.quiet_since = None
        elif self.quiet_since is None:
            self.quiet_since = now
        if dropped:
            log.warning(
                "%s: dropped %d aggregated user records outside the shard's hash range",
                self._resource,
                dropped,
            )
        self.pending = list(raw[unread:])
        end = self.closing is not None and not self.pending
        self.finished = self.finished or end
        return Batch(
            shard_id=self.shard_id,
            records=records,
            millis_behind_latest=self.millis_behind_latest,
            shard_end=end,
            child_shards=self.closing if end and self.closing else (),
            outside_hash_range=dropped,
        )

    def start_end_check(self) -> None:
        """Poll from the floor until the shard's end or its tip (see the module's notes)."""
        self.probe = ShardCursor(
            self.stream, self.shard_id, self.floor, self.reader, self.hash_range
        )

    def end_checked(self, batch: Batch, now: float) -> Batch:
        """Take a batch the end check polled: the end, records to hand out, or back to events."""
        assert self.probe is not None
        self.floor = self.probe.floor
        self.millis_behind_latest = batch.millis_behind_latest
        if batch.shard_end:
            self.finished = True
            self.probe = None
        elif not batch.records and self.probe.resume_at is None:
            # Open and at its tip: the subscription was right, listen again.
            self.probe = None
            self.quiet_since = now
        return batch

    # --- the flow --------------------------------------------------------------------

    def step(
        self, clock: Callable[[], float] = time.monotonic
    ) -> Generator[Any, Any, Batch | None]:
        """One move: a subscribe, one event, or one poll of the end check; the batch if any."""
        batch = yield from self._move(clock)
        self.ready_at = self.subscribe_at if self.events is None else clock()
        return batch

    def _move(self, clock: Callable[[], float]) -> Generator[Any, Any, Batch | None]:
        if self.pending:
            return self.decode(self.pending, clock())
        if self.probe is not None:
            batch = yield from step_flow(self.probe, clock)
            return None if batch is None else self.end_checked(batch, clock())
        if self.events is None:
            yield from self._subscribe(clock)
            return None
        if self.expired(clock()) or self.wants_end_check(clock()):
            if self.wants_end_check(clock()):
                self.start_end_check()
            self.close()
            self.ended(clock(), resubscribe=self.probe is None)
            return None
        try:
            event = yield Receive(self.events, self._resource, "SubscribeToShard")
        except KinesisEOError as exc:
            self.close()
            self.failed(exc, clock())
            return None
        if event is None:
            self.close()  # the server ended it (its lifetime): free the connection too
            self.ended(clock())
            return None
        batch = self.handle_event(event, clock())
        if self.finished:
            self.close()
            self.ended(clock(), resubscribe=False)
        return batch

    def _subscribe(self, clock: Callable[[], float]) -> Generator[Any, Any, None]:
        wait = self.subscribe_at - clock()
        if wait > 0:
            yield Sleep(wait)
        call = self.subscribe_call()
        self.subscribe_at = clock() + self.config.min_subscribe_interval_s
        try:
            response = yield call
        except KinesisEOError as exc:
            self.failed(exc, clock())
            return
        self.subscribed(response, clock())

    def close(self) -> None:
        """Close the open event stream, if any (synchronous in boto3 and aiobotocore alike).

        The server holds a subscription until its connection closes: the next
        owner of the shard would meet ResourceInUseException until then.
        """
        events, self.events = self.events, None
        if events is not None:
            # A stream whose connection already broke may fail to close; it is gone either way.
            with contextlib.suppress(OSError):
                events.close()


def read_subscription_flow(
    subscription: ShardSubscription, clock: Callable[[], float] = time.monotonic
) -> Generator[Any, Any, None]:
    """Batches of one shard by subscription until its end (forever, for an open shard)."""
    try:
        while not subscription.finished:
            batch = yield from subscription.step(clock)
            if batch is not None:
                yield batch
    finally:
        # A reader left early (its consumer stopped) must not keep the subscription.
        subscription.close()
