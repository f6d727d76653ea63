"""PutRecords with stable event ids, size checks before sending, and retries of failed entries.

``PutRecords`` stores some entries of a request and fails others; it may also
report an entry as failed that it stored (a lost or late internal
acknowledgement), and a call whose response is lost may have stored all of
them. Retrying is still the only way not to lose events, so every event gets
an id, once, before its first attempt, and travels in an envelope
(:mod:`kinesis_eo.envelope`): a copy stored twice reaches the consumer as the
same event and the ledger drops it.

The decisions are one flow (:func:`put_records_flow`), run by
:class:`Producer` with a boto3 client and by :class:`AsyncProducer` with an
aiobotocore client. Batches go out one after the other and a batch's failed
entries are retried, in their order, before the next batch is sent, so an
event is never overtaken by one that was given to ``put`` after it, except by
entries of its own batch that were stored while it failed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from kinesis_eo.batching import plan_batches as plan_sized_batches
from kinesis_eo.envelope import check_namespace, wrap
from kinesis_eo.errors import (
    AwsCallError,
    InvalidRecordError,
    KinesisEOError,
    RecordTooLargeError,
    RetryableError,
    error_code,
)
from kinesis_eo.flow import Call, Sleep, run_async, run_sync
from kinesis_eo.records import MAX_HASH_KEY
from kinesis_eo.retry import RetryConfig, backoff_delay

__all__ = [
    "AsyncProducer",
    "Event",
    "PreparedRecord",
    "Producer",
    "ProducerConfig",
    "PutRecordsFailedError",
    "PutResult",
    "StoredRecord",
    "plan_batches",
    "prepare_records",
    "put_records_flow",
    "stream_max_record_bytes_flow",
]

MIB = 1_048_576
MAX_PARTITION_KEY_CHARS = 256
# A stream's record limit unless raised with UpdateMaxRecordSize (up to 10 MiB),
# and the PutRecords request limits: 5 MiB per request for 1 MiB records; the API
# reference allows 10 MiB per request (partition keys included) once a record
# may be larger than 1 MiB, else a 10 MiB record could never be sent at all.
DEFAULT_MAX_RECORD_BYTES = MIB
DEFAULT_MAX_BATCH_BYTES = 5 * MIB
LARGE_RECORD_MAX_BATCH_BYTES = 10 * MIB


@dataclass(frozen=True, slots=True)
class Event:
    """One event to send. Without ``event_id`` the producer makes one (a uuid4, hex)."""

    data: bytes
    partition_key: str
    event_id: str | None = None
    explicit_hash_key: str | None = None


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """Limits and retry policy of a producer.

    The size limits are those of Kinesis Data Streams; a record's size counts
    its data with the envelope and the UTF-8 bytes of its partition key.
    ``max_record_bytes`` left as None is the stream's own limit, read once per
    producer with ``DescribeStreamSummary`` (``MaxRecordSizeInKiB``, 1 MiB when
    the stream does not say; the caller then needs that permission); give it
    to skip the call. ``max_batch_bytes`` left as None is 5 MiB for streams of
    1 MiB records and 10 MiB for streams that allow larger ones, as PutRecords
    takes.
    ``entry_retry`` governs entries that PutRecords reported failed
    (``max_attempts`` counts the first send); ``call_retry`` governs calls that
    fail as a whole (throttled, unreachable) and is applied per call, inside
    one entry attempt.

    ``namespace`` scopes this producer's event ids on the consumer side: the
    ledger keys an event by (stream, namespace, id). Give every producer that
    chooses its own ids a namespace of its own, and keep it across restarts
    (a service name, not a process id), so that another producer's "42" is not
    taken for a duplicate of its own while its own retries still are. Ids the
    producer makes (uuid4) never collide, with or without one.
    """

    max_record_bytes: int | None = None
    max_batch_records: int = 500
    max_batch_bytes: int | None = None
    entry_retry: RetryConfig = field(default_factory=lambda: RetryConfig(max_attempts=10))
    call_retry: RetryConfig = field(default_factory=RetryConfig)
    namespace: str | None = None

    def __post_init__(self) -> None:
        if self.namespace is not None:
            check_namespace(self.namespace)
        for name in ("max_record_bytes", "max_batch_records", "max_batch_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if (
            self.max_record_bytes is not None
            and self.max_batch_bytes is not None
            and self.max_record_bytes > self.max_batch_bytes
        ):
            raise ValueError("max_record_bytes cannot be larger than max_batch_bytes")

    def for_stream(self, stream_max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> ProducerConfig:
        """This config with the limits it leaves open filled in for a stream's record limit."""
        record = self.max_record_bytes or stream_max_record_bytes
        batch = self.max_batch_bytes or (
            DEFAULT_MAX_BATCH_BYTES if record <= MIB else LARGE_RECORD_MAX_BATCH_BYTES
        )
        return replace(self, max_record_bytes=record, max_batch_bytes=max(batch, record))

    @property
    def record_limit(self) -> int:
        """``max_record_bytes``, or the default stream's limit if left open."""
        return self.max_record_bytes or DEFAULT_MAX_RECORD_BYTES

    @property
    def batch_limit(self) -> int:
        """``max_batch_bytes``, or what PutRecords takes for ``record_limit``."""
        return self.for_stream().max_batch_bytes or DEFAULT_MAX_BATCH_BYTES


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """Where the stream stored an event: its shard and sequence number."""

    shard_id: str
    sequence_number: str


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a ``put`` did.

    ``event_ids`` are in the order the events were given (with the ids the
    producer made). ``stored`` says where each event was stored; an event the
    stream stored twice is listed where it was last reported stored.
    ``calls`` counts PutRecords requests (the per-call retries of a throttled
    or unreachable call are not counted), ``retried_entries`` the entries sent
    again after PutRecords reported them failed.
    """

    event_ids: tuple[str, ...]
    stored: Mapping[str, StoredRecord]
    calls: int = 0
    retried_entries: int = 0


class PutRecordsFailedError(RetryableError):
    """Some events were not confirmed stored when ``put`` gave up.

    ``failures`` maps each such event id to the last error code PutRecords gave
    for it, or None if it was never sent (a later batch). Some of them may be
    in the stream all the same; their ids make a second ``put`` of the same
    events harmless. ``result`` says what was stored.
    """

    def __init__(self, message: str, *, failures: Mapping[str, str | None], result: PutResult):
        super().__init__(message)
        self.failures = dict(failures)
        self.result = result


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """An event as it goes on the wire: id chosen, envelope built, size known."""

    event_id: str
    entry: Mapping[str, Any]
    size: int


# --- validation and planning (pure) -----------------------------------------------------------


def _check_event(index: int, event: Event) -> tuple[bytes, int]:
    """The payload and the partition key's size in bytes, or ``InvalidRecordError``."""
    if not isinstance(event, Event):
        raise InvalidRecordError(f"event #{index} is a {type(event).__name__}, not an Event")
    if not isinstance(event.data, bytes | bytearray | memoryview):
        raise InvalidRecordError(
            f"event #{index}: data must be bytes, got {type(event.data).__name__}"
        )
    key = event.partition_key
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_PARTITION_KEY_CHARS:
        raise InvalidRecordError(
            f"event #{index}: a partition key is 1 to {MAX_PARTITION_KEY_CHARS} unicode "
            f"characters, got {key!r:.60}"
        )
    try:
        key_bytes = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRecordError(f"event #{index}: partition key {key!r:.60}: {exc}") from None
    hash_key = event.explicit_hash_key
    if hash_key is not None and not (
        isinstance(hash_key, str)
        and hash_key.isascii()
        and hash_key.isdigit()
        and int(hash_key) <= MAX_HASH_KEY
    ):
        raise InvalidRecordError(
            f"event #{index}: an explicit hash key is a decimal number from 0 to 2**128 - 1, "
            f"got {hash_key!r:.60}"
        )
    return bytes(event.data), len(key_bytes)


def prepare_records(events: Iterable[Event], config: ProducerConfig) -> list[PreparedRecord]:
    """Check every event and give each its id and envelope; raises before anything is sent."""
    prepared: list[PreparedRecord] = []
    seen: dict[str, int] = {}
    for index, event in enumerate(events):
        payload, key_size = _check_event(index, event)
        # Chosen here, once: every retry of this event sends these very bytes.
        event_id = event.event_id if event.event_id is not None else uuid.uuid4().hex
        if event_id in seen:
            raise InvalidRecordError(
                f"events #{seen[event_id]} and #{index} have the same id {event_id!r}; "
                "the consumer would keep only one of them"
            )
        seen[event_id] = index
        data = wrap(event_id, payload, config.namespace)
        size = len(data) + key_size
        if size > config.record_limit:
            raise RecordTooLargeError(
                f"event {event_id!r} (#{index}) is {size} bytes with its envelope and partition "
                f"key ({len(payload)} bytes of data), over the limit of "
                f"{config.record_limit} bytes"
            )
        entry: dict[str, Any] = {"Data": data, "PartitionKey": event.partition_key}
        if event.explicit_hash_key is not None:
            entry["ExplicitHashKey"] = event.explicit_hash_key
        prepared.append(PreparedRecord(event_id, entry, size))
    return prepared


def plan_batches(sizes: Sequence[int], config: ProducerConfig) -> list[range]:
    """Split records of these sizes, in order, into PutRecords batches within both limits."""
    max_bytes = config.batch_limit
    for index, size in enumerate(sizes):
        if size > max_bytes:
            raise ValueError(f"record #{index} ({size} bytes) cannot fit in any batch")
    return plan_sized_batches(sizes, config.max_batch_records, max_bytes)


# --- the flow ---------------------------------------------------------------------------------


def _stream_params(stream: str) -> dict[str, str]:
    return {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}


def _cause_code(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return error_code(cause) or type(cause).__name__


def _failure_message(failures: Mapping[str, str | None], total: int, stream: str) -> str:
    shown = ", ".join(f"{i} ({code or 'not sent'})" for i, code in list(failures.items())[:5])
    more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
    return (
        f"{len(failures)} of {total} events were not confirmed stored in stream {stream!r}: "
        f"{shown}{more}"
    )


def put_records_flow(
    records: Sequence[PreparedRecord],
    stream: str,
    config: ProducerConfig,
    rng: random.Random | None = None,
) -> Generator[Any, Any, PutResult]:
    """Send ``records`` with PutRecords, retrying failed entries; returns where they were stored.

    ``stream`` is a stream name or ARN. Raises :class:`PutRecordsFailedError`
    when entries still fail after ``config.entry_retry.max_attempts`` sends or
    a call still fails after the driver's own retries; other errors (a missing
    stream, denied access) propagate as they are.
    """
    target = _stream_params(stream)
    resource = f"stream {stream!r}"
    event_ids = tuple(r.event_id for r in records)
    stored: dict[str, StoredRecord] = {}
    calls = retried = 0

    def give_up(failures: dict[str, str | None], unsent: Sequence[range]) -> Exception:
        failures.update((records[i].event_id, None) for batch in unsent for i in batch)
        result = PutResult(event_ids, stored, calls, retried)
        return PutRecordsFailedError(
            _failure_message(failures, len(records), stream), failures=failures, result=result
        )

    batches = plan_batches([r.size for r in records], config)
    for number, batch in enumerate(batches):
        pending = [records[i] for i in batch]
        attempt = 1
        while True:
            calls += 1
            params = {**target, "Records": [r.entry for r in pending]}
            try:
                response = yield Call("put_records", params, resource, "PutRecords", "kinesis")
            except KinesisEOError as exc:
                if not exc.retryable:
                    raise
                code = _cause_code(exc)
                raise give_up({r.event_id: code for r in pending}, batches[number + 1 :]) from exc
            outcomes = response.get("Records") or []
            if len(outcomes) != len(pending):
                raise AwsCallError(
                    f"PutRecords on {resource} answered {len(outcomes)} entries "
                    f"for {len(pending)} sent",
                    code="MalformedResponse",
                )
            failed: list[PreparedRecord] = []
            codes: dict[str, str | None] = {}
            for record, outcome in zip(pending, outcomes, strict=True):
                if outcome.get("ErrorCode"):
                    failed.append(record)
                    codes[record.event_id] = str(outcome["ErrorCode"])
                else:
                    stored[record.event_id] = StoredRecord(
                        str(outcome["ShardId"]), str(outcome["SequenceNumber"])
                    )
            if not failed:
                break
            if attempt >= config.entry_retry.max_attempts:
                raise give_up(codes, batches[number + 1 :])
            retried += len(failed)
            yield Sleep(backoff_delay(attempt, config.entry_retry, rng))
            attempt += 1
            pending = failed
    return PutResult(event_ids, stored, calls, retried)


def stream_max_record_bytes_flow(stream: str) -> Generator[Any, Any, int]:
    """The stream's record limit in bytes (``MaxRecordSizeInKiB``; 1 MiB if it does not say)."""
    response = yield Call(
        "describe_stream_summary",
        _stream_params(stream),
        f"stream {stream!r}",
        "DescribeStreamSummary",
        "kinesis",
    )
    kib = response.get("StreamDescriptionSummary", {}).get("MaxRecordSizeInKiB")
    return int(kib) * 1024 if kib else DEFAULT_MAX_RECORD_BYTES


# --- front classes ----------------------------------------------------------------------------


class _ProducerBase:
    def __init__(
        self,
        client: Any,
        stream_name: str,
        config: ProducerConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not stream_name:
            raise ValueError("a stream name or ARN is needed")
        self.client = client
        self.stream_name = stream_name
        self.config = config or ProducerConfig()
        self._rng = rng
        self._stream_max_record_bytes: int | None = None

    def _flow(self, events: Iterable[Event]) -> Generator[Any, Any, Any]:
        events = list(events)
        config = self.config
        if config.max_record_bytes is None and events:
            if self._stream_max_record_bytes is None:
                self._stream_max_record_bytes = yield from stream_max_record_bytes_flow(
                    self.stream_name
                )
            config = config.for_stream(self._stream_max_record_bytes)
        # Validated and given their ids before PutRecords, so a refused event
        # stops the whole put before anything is sent.
        records = prepare_records(events, config)
        result = yield from put_records_flow(records, self.stream_name, config, self._rng)
        return result


class Producer(_ProducerBase):
    """Sends events to one stream with a boto3 Kinesis client."""

    def put(self, events: Iterable[Event]) -> PutResult:
        """Send ``events``, retrying only the entries that failed; raises `PutRecordsFailedError` if
        some were not stored.
        """
        return cast(PutResult, run_sync(self._flow(events), self.client, self.config.call_retry))


class AsyncProducer(_ProducerBase):
    """Sends events to one stream with an aiobotocore (or aioboto3) Kinesis client."""

    async def put(self, events: Iterable[Event]) -> PutResult:
        result = await run_async(self._flow(events), self.client, self.config.call_retry)
        return cast(PutResult, result)
