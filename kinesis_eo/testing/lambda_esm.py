"""A Kinesis event source mapping (ESM) in a test: events, a fake context, redelivery.

Lambda's ESM reads a shard, invokes the function with a batch, and decides
what to deliver next from the answer. This module does the same in-process,
so that a handler (any ``handler(event, context)`` callable) can be tested
without Lambda:

- :func:`kinesis_event` builds the event the ESM sends (base64 data, the
  ``eventID`` and ``eventSourceARN`` a handler reads the shard and stream from);
- :func:`read_stream` reads every Kinesis record of a stream (moto, kinesis-mock)
  as stored, KPL aggregates still packed, as the ESM hands them on;
- :class:`FakeContext` answers ``get_remaining_time_in_millis`` from a clock;
- :class:`EventSourceMapping` delivers batches per the ``ReportBatchItemFailures``
  contract: an empty ``batchItemFailures`` moves past the batch; failures
  restart the shard at the lowest sequence number reported; an invalid answer
  or a raised error fails the whole batch, which is split in two when
  ``bisect_on_function_error`` is set; after ``maximum_retry_attempts`` failed
  invocations at one starting point the batch is skipped and the on-failure
  record the ESM would send (:func:`kinesis_eo.on_failure.on_failure_record`:
  no payload) goes to ``on_failure``, as do records past
  ``maximum_record_age_s``. ``parallelization_factor`` splits a shard into
  lanes by partition key, each with its own batches and checkpoint, as the
  ESM's concurrent batches do. :class:`EsmConfig` holds the rest: batching
  window, starting position, ``FilterCriteria``, tumbling windows.

Tumbling windows: a batch never spans two windows; each event carries
``window``, ``state`` (what the last successful or partly failed invocation of
the lane returned), ``shardId``, ``eventSourceARN``, ``isFinalInvokeForWindow``
and ``isWindowTerminatedEarly``; the response must hold ``state``. A raised
error keeps the state from before the batch, so its records are delivered
again into that state; a partial failure keeps the returned state and
delivers the reported records again into it, which is where a fold that does
not track what it holds counts them twice. A window's final invocation (no
records, ``isFinalInvokeForWindow``) comes once the lane's next record is in
a later window or the lane has no records left; it is retried until it
succeeds. A state over 1 MB ends the window early: a final invocation with
``isWindowTerminatedEarly``, then the rest of the window with a fresh state.

Time is the records' arrival times and ``clock`` (record ages, ``LATEST``);
invocations run one at a time, lanes in turn.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from kinesis_eo.on_failure import BatchInfo, on_failure_record
from kinesis_eo.testing.esm_config import ACCOUNT, REGION, EsmConfig, function_arn, window_of
from kinesis_eo.testing.esm_filters import FilterCriteria
from kinesis_eo.testing.esm_records import StreamRecord, kinesis_event, read_stream, stream_arn

__all__ = [
    "EsmConfig",
    "EventSourceMapping",
    "FakeContext",
    "Invocation",
    "InvocationOutcome",
    "StreamRecord",
    "kinesis_event",
    "read_stream",
    "stream_arn",
]

# An invocation's payload is at most 6 MB.
MAX_EVENT_BYTES = 6 * 1024 * 1024
# Lambda keeps up to 1 MB of window state per shard, and ends a window early past it.
MAX_STATE_BYTES = 1024 * 1024

Handler = Callable[[dict[str, Any], Any], Any]


class FakeContext:
    """The parts of a Lambda context a handler reads; time runs on ``clock`` (seconds)."""

    def __init__(
        self,
        timeout: timedelta = timedelta(minutes=1),
        clock: Callable[[], float] = time.monotonic,
        function_name: str = "kinesis-eo-test",
    ) -> None:
        self._clock = clock
        self._deadline = clock() + timeout.total_seconds()
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))


class InvocationOutcome(Enum):
    """How an invocation ended, as the event source mapping sees it."""

    SUCCESS = "success"
    PARTIAL_FAILURE = "partial_failure"
    FUNCTION_ERROR = "function_error"
    INVALID_RESPONSE = "invalid_response"
    """An answer the contract does not allow: AWS then fails the whole batch."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """One invocation the simulated event source mapping made: its shard, lane, records, outcome and
    what was reported.
    """

    shard_id: str
    lane: int
    sequence_numbers: list[str]
    outcome: InvocationOutcome
    reported: list[str] = field(default_factory=list)
    error: BaseException | None = None
    final_for_window: bool = False


@dataclass
class _Lane:
    shard_id: str
    index: int
    records: list[StreamRecord]
    position: int = 0
    # Ranges [start, end) left by bisection, the first starting at ``position``.
    splits: list[tuple[int, int]] = field(default_factory=list)
    failed_at_start: int = 0
    # The open tumbling window (its start) and the state the function returned for it.
    window: datetime | None = None
    state: Any = None
    # The state grew past what Lambda keeps: the window ends early, then goes on afresh.
    terminated_early: bool = False

    @property
    def done(self) -> bool:
        return self.position >= len(self.records) and self.window is None


def _reported(response: Any, delivered: Sequence[str], windowed: bool) -> list[str] | None:
    """The sequence numbers a response reports, or None if the contract does not allow it."""
    if windowed and not (isinstance(response, Mapping) and "state" in response):
        return None  # with tumbling windows a response without state is a failed invocation
    if response is None:
        return []
    if not isinstance(response, Mapping):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return []
    if not isinstance(failures, list):
        return None
    reported = []
    for failure in failures:
        if not isinstance(failure, Mapping):
            return None
        identifier = failure.get("itemIdentifier")
        if not isinstance(identifier, str) or identifier not in delivered:
            return None
        reported.append(identifier)
    return reported


def _iso_second(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventSourceMapping:
    """Delivers ``records`` to ``handler`` as a Kinesis ESM with ``ReportBatchItemFailures``.

    ``consumer_arn``: the mapping reads through this enhanced fan-out consumer
    of ``stream`` instead of polling; events then carry it as their
    ``eventSourceARN``, as Lambda's do. The simulator delivers the records it is
    given either way (read them with :func:`read_stream`, which polls: a
    subscription delivers the same records in the same order).
    """

    def __init__(
        self,
        handler: Handler,
        records: Sequence[StreamRecord],
        *,
        stream: str = "stream",
        config: EsmConfig | None = None,
        context: Callable[[], Any] = FakeContext,
        region: str = REGION,
        consumer_arn: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.handler = handler
        self.config = config or EsmConfig()
        self.stream_arn = stream_arn(stream, region)
        if consumer_arn is not None and not consumer_arn.startswith(f"{self.stream_arn}/consumer/"):
            raise ValueError(f"{consumer_arn!r} is not a consumer of {self.stream_arn}")
        self.arn = consumer_arn or self.stream_arn
        self.region = region
        self.context = context
        self.clock = clock
        self.function_arn = function_arn(region=region)
        self.invocations: list[Invocation] = []
        self.on_failure: list[dict[str, Any]] = []
        self.filtered: list[StreamRecord] = []
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self._lanes = self._split(self._starting(records))
        self._turn = 0

    def _starting(self, records: Sequence[StreamRecord]) -> list[StreamRecord]:
        """The records past the starting position that the filters admit."""
        config = self.config
        since = {"AT_TIMESTAMP": config.starting_position_timestamp, "LATEST": self.clock()}
        floor = since.get(config.starting_position)
        criteria = FilterCriteria(config.filters)
        kept = []
        for record in records:
            if floor is not None and record.arrival < floor:
                continue
            if criteria.admits(record.data):
                kept.append(record)
            else:
                self.filtered.append(record)
        return kept

    def _split(self, records: Sequence[StreamRecord]) -> list[_Lane]:
        by_shard: dict[str, list[StreamRecord]] = {}
        for record in records:
            by_shard.setdefault(record.shard_id, []).append(record)
        lanes: list[_Lane] = []
        factor = self.config.parallelization_factor
        for shard_id, shard_records in by_shard.items():
            shard_records.sort(key=lambda r: int(r.sequence_number))
            split: dict[int, list[StreamRecord]] = {}
            for record in shard_records:
                digest = hashlib.md5(record.partition_key.encode("utf-8")).digest()
                split.setdefault(int.from_bytes(digest[:8], "big") % factor, []).append(record)
            lanes += [_Lane(shard_id, i, split[i]) for i in sorted(split)]
        return lanes

    @property
    def done(self) -> bool:
        return all(lane.done for lane in self._lanes)

    def run(self, max_invocations: int = 1000) -> list[Invocation]:
        """Deliver until every record is past its lane's checkpoint; the invocations made.

        Raises RuntimeError after ``max_invocations``: a handler that never
        lets a shard move on would otherwise be retried for ever.
        """
        made: list[Invocation] = []
        while not self.done:
            if len(made) >= max_invocations:
                raise RuntimeError(
                    f"the shards were not through after {max_invocations} invocations: "
                    f"last {made[-1] if made else None}"
                )
            invocation = self.step()
            if invocation is not None:
                made.append(invocation)
        return made

    def step(self) -> Invocation | None:
        """One invocation, for the next lane in turn with work left.

        None when there was nothing to invoke: the lane's next records were
        past their maximum age, and went to ``on_failure``.
        """
        lanes = [lane for lane in self._lanes if not lane.done]
        if not lanes:
            raise RuntimeError("every record has been delivered")
        lane = lanes[self._turn % len(lanes)]
        self._turn += 1
        if not lane.splits and self._expire(lane):
            return None
        if self._window_over(lane):
            return self._final(lane)
        start, end = lane.splits[0] if lane.splits else (lane.position, self._cut(lane))
        batch = lane.records[start:end]
        numbers = [r.sequence_number for r in batch]
        for number in numbers:
            self.deliveries[(lane.shard_id, number)] += 1
        window = self._window_fields(lane, batch[0]) if self.config.tumbling_window_s else {}
        response, error = self._invoke({**kinesis_event(batch, self.arn, self.region), **window})
        reported = None if error is not None else _reported(response, numbers, bool(window))
        if reported is None:
            outcome = (
                InvocationOutcome.FUNCTION_ERROR
                if error is not None
                else InvocationOutcome.INVALID_RESPONSE
            )
            self._whole_batch_failed(lane, start, end, error)
        else:
            if window:
                lane.state = response["state"]
                lane.window = window_of(batch[0].arrival, self.config.tumbling_window_s)[0]
                lane.terminated_early = len(json.dumps(lane.state)) > MAX_STATE_BYTES
            outcome = self._answered(lane, start, end, numbers, reported)
        invocation = Invocation(lane.shard_id, lane.index, numbers, outcome, reported or [], error)
        self.invocations.append(invocation)
        return invocation

    def _invoke(self, event: dict[str, Any]) -> tuple[Any, BaseException | None]:
        try:
            return self.handler(event, self.context()), None
        except Exception as exc:
            return None, exc

    def _answered(
        self, lane: _Lane, start: int, end: int, numbers: list[str], reported: list[str]
    ) -> InvocationOutcome:
        if not reported:
            if lane.splits:
                lane.splits.pop(0)
            lane.position, lane.failed_at_start = end, 0
            return InvocationOutcome.SUCCESS
        lowest = min(reported, key=int)
        restart = start + numbers.index(lowest)
        lane.splits.clear()
        if restart == lane.position:
            lane.failed_at_start += 1
        else:
            lane.position, lane.failed_at_start = restart, 1
        self._give_up_if_exhausted(lane, end, None)
        return InvocationOutcome.PARTIAL_FAILURE

    def _cut(self, lane: _Lane) -> int:
        """The end of the next batch: batch size, batching window, tumbling window, 6 MB."""
        config = self.config
        first = lane.records[lane.position]
        limit = min(lane.position + config.batch_size, len(lane.records))
        window = (
            window_of(first.arrival, config.tumbling_window_s) if config.tumbling_window_s else None
        )
        gather_until = first.arrival + timedelta(seconds=config.maximum_batching_window_s)
        size = 0
        for index in range(lane.position, limit):
            record = lane.records[index]
            size += len(json.dumps(kinesis_event([record], self.arn, self.region)))
            if index > lane.position and (
                size > MAX_EVENT_BYTES
                or (config.maximum_batching_window_s and record.arrival > gather_until)
                or (window is not None and record.arrival >= window[1])
            ):
                return index
        return limit

    def _expire(self, lane: _Lane) -> bool:
        """Send the lane's leading records past the maximum age to on-failure; whether any were."""
        age = self.config.maximum_record_age_s
        if age < 0:
            return False
        oldest = self.clock() - timedelta(seconds=age)
        end = lane.position
        while end < len(lane.records) and lane.records[end].arrival < oldest:
            end += 1
        if end == lane.position:
            return False
        self._send_on_failure(lane, lane.position, end, "RecordAgeExceeded", None)
        lane.position, lane.failed_at_start = end, 0
        return True

    def _window_fields(self, lane: _Lane, first: StreamRecord) -> dict[str, Any]:
        start, end = window_of(first.arrival, self.config.tumbling_window_s)
        return {
            "window": {"start": _iso_second(start), "end": _iso_second(end)},
            "state": lane.state if lane.window == start and lane.state is not None else {},
            "shardId": lane.shard_id,
            "eventSourceARN": self.arn,
            "isFinalInvokeForWindow": False,
            "isWindowTerminatedEarly": False,
        }

    def _window_over(self, lane: _Lane) -> bool:
        if lane.window is None or lane.splits:
            return False
        if lane.terminated_early:
            return True
        if lane.position >= len(lane.records):
            return True
        next_window = window_of(lane.records[lane.position].arrival, self.config.tumbling_window_s)
        return next_window[0] != lane.window

    def _final(self, lane: _Lane) -> Invocation:
        assert lane.window is not None
        end = lane.window + timedelta(seconds=self.config.tumbling_window_s)
        event = {
            "Records": [],
            "window": {"start": _iso_second(lane.window), "end": _iso_second(end)},
            "state": lane.state if lane.state is not None else {},
            "shardId": lane.shard_id,
            "eventSourceARN": self.arn,
            "isFinalInvokeForWindow": True,
            "isWindowTerminatedEarly": lane.terminated_early,
        }
        response, error = self._invoke(event)
        if error is None and _reported(response, [], True) is not None:
            outcome = InvocationOutcome.SUCCESS
            lane.window, lane.state, lane.terminated_early = None, None, False
        elif error is not None:
            outcome = InvocationOutcome.FUNCTION_ERROR
        else:
            outcome = InvocationOutcome.INVALID_RESPONSE
        invocation = Invocation(lane.shard_id, lane.index, [], outcome, [], error, True)
        self.invocations.append(invocation)
        return invocation

    def _whole_batch_failed(
        self, lane: _Lane, start: int, end: int, error: BaseException | None
    ) -> None:
        lane.failed_at_start += 1
        if self._give_up_if_exhausted(lane, end, error):
            return
        if self.config.bisect_on_function_error and end - start > 1:
            middle = (start + end) // 2
            rest = lane.splits[1:] if lane.splits else []
            lane.splits = [(start, middle), (middle, end), *rest]

    def _give_up_if_exhausted(self, lane: _Lane, end: int, error: BaseException | None) -> bool:
        limit = self.config.maximum_retry_attempts
        if limit < 0 or lane.failed_at_start <= limit:
            return False
        self._send_on_failure(lane, lane.position, end, "RetryAttemptsExhausted", error)
        lane.splits = [w for w in lane.splits if w[0] >= end]
        lane.position, lane.failed_at_start = end, 0
        return True

    def _send_on_failure(
        self, lane: _Lane, start: int, end: int, condition: str, error: BaseException | None
    ) -> None:
        skipped = lane.records[start:end]
        info = BatchInfo(
            self.stream_arn,
            lane.shard_id,
            skipped[0].sequence_number,
            skipped[-1].sequence_number,
            len(skipped),
            condition,
        )
        record = on_failure_record(
            info,
            function_arn=self.function_arn,
            invoke_count=lane.failed_at_start,
            first_arrival=skipped[0].arrival,
            last_arrival=skipped[-1].arrival,
            function_error="Unhandled" if error is not None else None,
            at=self.clock(),
        )
        self.on_failure.append(record)
