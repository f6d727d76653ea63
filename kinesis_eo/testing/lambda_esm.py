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
  invocations at one starting point the batch is skipped and its details go
  to ``on_failure`` (as to the ESM's on-failure destination: no payload).
  ``parallelization_factor`` splits a shard into lanes by partition key, each
  with its own batches and checkpoint, as the ESM's concurrent batches do.

Not modelled: batching windows, record age limits, tumbling windows, and the
ESM's own timing; invocations run one at a time, lanes in turn.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

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

REGION = "us-east-1"
ACCOUNT = "123456789012"
_MAX_EMPTY_PAGES = 50

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One Kinesis record as stored in a shard (before any KPL de-aggregation)."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival: datetime = field(default_factory=lambda: datetime.now(UTC))
    encryption_type: str | None = None


def stream_arn(stream: str, region: str = REGION, account: str = ACCOUNT) -> str:
    """The ARN the simulator puts in its events for ``stream``."""
    return f"arn:aws:kinesis:{region}:{account}:stream/{stream}"


def kinesis_event(
    records: Sequence[StreamRecord], arn: str, region: str = REGION
) -> dict[str, Any]:
    """The event a Kinesis ESM sends for ``records`` of the stream ``arn``."""
    entries = []
    for record in records:
        kinesis: dict[str, Any] = {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record.partition_key,
            "sequenceNumber": record.sequence_number,
            "data": base64.b64encode(record.data).decode("ascii"),
            "approximateArrivalTimestamp": record.arrival.timestamp(),
        }
        if record.encryption_type is not None:
            kinesis["encryptionType"] = record.encryption_type
        entries.append(
            {
                "kinesis": kinesis,
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{record.shard_id}:{record.sequence_number}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/lambda-role",
                "awsRegion": region,
                "eventSourceARN": arn,
            }
        )
    return {"Records": entries}


def read_stream(kinesis: Any, stream: str) -> list[StreamRecord]:
    """Every record of every shard of ``stream``, from the trim horizon, shard by shard."""
    records: list[StreamRecord] = []
    shards: list[dict[str, Any]] = []
    params: dict[str, Any] = {"StreamName": stream}
    while True:
        page = kinesis.list_shards(**params)
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            break
        params = {"NextToken": token}
    for shard in shards:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        empty_pages = 0
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if not page["Records"]:
                # An empty page is the end only at the tip; before it Kinesis may
                # return a few while it skips gaps.
                empty_pages += 1
                if not page.get("MillisBehindLatest") or empty_pages >= _MAX_EMPTY_PAGES:
                    break
                iterator = page.get("NextShardIterator")
                continue
            empty_pages = 0
            for raw in page["Records"]:
                arrival = raw.get("ApproximateArrivalTimestamp") or datetime.now(UTC)
                records.append(
                    StreamRecord(
                        shard["ShardId"],
                        raw["SequenceNumber"],
                        raw["PartitionKey"],
                        bytes(raw["Data"]),
                        arrival,
                        raw.get("EncryptionType"),
                    )
                )
            iterator = page.get("NextShardIterator")
    return records


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


@dataclass(frozen=True, slots=True)
class EsmConfig:
    """The event source mapping's settings that change what is delivered.

    ``maximum_retry_attempts`` -1 retries for ever, as on AWS.
    """

    batch_size: int = 100
    bisect_on_function_error: bool = True
    maximum_retry_attempts: int = -1
    parallelization_factor: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("batch_size is 1 to 10000")
        if self.maximum_retry_attempts < -1:
            raise ValueError("maximum_retry_attempts is -1 (for ever) or more")
        if not 1 <= self.parallelization_factor <= 10:
            raise ValueError("parallelization_factor is 1 to 10")


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


@dataclass
class _Lane:
    shard_id: str
    index: int
    records: list[StreamRecord]
    position: int = 0
    # Windows [start, end) left by bisection, the first starting at ``position``.
    windows: list[tuple[int, int]] = field(default_factory=list)
    failed_at_start: int = 0

    @property
    def done(self) -> bool:
        return self.position >= len(self.records)


def _reported(response: Any, delivered: Sequence[str]) -> list[str] | None:
    """The sequence numbers a response reports, or None if the contract does not allow it."""
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


class EventSourceMapping:
    """Delivers ``records`` to ``handler`` as a Kinesis ESM with ``ReportBatchItemFailures``."""

    def __init__(
        self,
        handler: Handler,
        records: Sequence[StreamRecord],
        *,
        stream: str = "stream",
        config: EsmConfig | None = None,
        context: Callable[[], Any] = FakeContext,
        region: str = REGION,
    ) -> None:
        self.handler = handler
        self.config = config or EsmConfig()
        self.arn = stream_arn(stream, region)
        self.region = region
        self.context = context
        self.invocations: list[Invocation] = []
        self.on_failure: list[dict[str, Any]] = []
        self.deliveries: Counter[tuple[str, str]] = Counter()
        by_shard: dict[str, list[StreamRecord]] = {}
        for record in records:
            by_shard.setdefault(record.shard_id, []).append(record)
        self._lanes: list[_Lane] = []
        factor = self.config.parallelization_factor
        for shard_id, shard_records in by_shard.items():
            shard_records.sort(key=lambda r: int(r.sequence_number))
            split: dict[int, list[StreamRecord]] = {}
            for record in shard_records:
                digest = hashlib.md5(record.partition_key.encode("utf-8")).digest()
                split.setdefault(int.from_bytes(digest[:8], "big") % factor, []).append(record)
            self._lanes += [_Lane(shard_id, i, split[i]) for i in sorted(split)]
        self._turn = 0

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
            made.append(self.step())
        return made

    def step(self) -> Invocation:
        """One invocation, for the next lane in turn that has records left."""
        lanes = [lane for lane in self._lanes if not lane.done]
        if not lanes:
            raise RuntimeError("every record has been delivered")
        lane = lanes[self._turn % len(lanes)]
        self._turn += 1
        start, end = (
            lane.windows[0]
            if lane.windows
            else (lane.position, min(lane.position + self.config.batch_size, len(lane.records)))
        )
        batch = lane.records[start:end]
        numbers = [r.sequence_number for r in batch]
        for number in numbers:
            self.deliveries[(lane.shard_id, number)] += 1
        error: BaseException | None = None
        reported: list[str] | None = None
        try:
            response = self.handler(kinesis_event(batch, self.arn, self.region), self.context())
        except Exception as exc:
            error = exc
        else:
            reported = _reported(response, numbers)
        if reported is None:
            outcome = (
                InvocationOutcome.FUNCTION_ERROR
                if error is not None
                else InvocationOutcome.INVALID_RESPONSE
            )
            self._whole_batch_failed(lane, start, end)
        elif reported:
            outcome = InvocationOutcome.PARTIAL_FAILURE
            lowest = min(reported, key=int)
            restart = start + numbers.index(lowest)
            lane.windows.clear()
            if restart == lane.position:
                lane.failed_at_start += 1
            else:
                lane.position, lane.failed_at_start = restart, 1
            self._give_up_if_exhausted(lane, end)
        else:
            outcome = InvocationOutcome.SUCCESS
            if lane.windows:
                lane.windows.pop(0)
            lane.position, lane.failed_at_start = end, 0
        invocation = Invocation(lane.shard_id, lane.index, numbers, outcome, reported or [], error)
        self.invocations.append(invocation)
        return invocation

    def _whole_batch_failed(self, lane: _Lane, start: int, end: int) -> None:
        lane.failed_at_start += 1
        if self._give_up_if_exhausted(lane, end):
            return
        if self.config.bisect_on_function_error and end - start > 1:
            middle = (start + end) // 2
            rest = lane.windows[1:] if lane.windows else []
            lane.windows = [(start, middle), (middle, end), *rest]

    def _give_up_if_exhausted(self, lane: _Lane, end: int) -> bool:
        limit = self.config.maximum_retry_attempts
        if limit < 0 or lane.failed_at_start <= limit:
            return False
        skipped = lane.records[lane.position : end]
        self.on_failure.append(
            {
                "shardId": lane.shard_id,
                "startSequenceNumber": skipped[0].sequence_number,
                "endSequenceNumber": skipped[-1].sequence_number,
                "batchSize": len(skipped),
                "streamArn": self.arn,
            }
        )
        lane.windows = [w for w in lane.windows if w[0] >= end]
        lane.position, lane.failed_at_start = end, 0
        return True
