"""The Kinesis event a Lambda event source mapping sends, turned into the core's records.

An event holds Kinesis records as stored (base64 data, possibly a KPL
aggregate, possibly a kinesis_eo envelope with the producer's event id).
They become user records exactly as the worker's reader makes them
(:func:`kinesis_eo.retrieval.reader.to_records`), so that a ledger written by
the worker and one written by a Lambda function agree on every key.

Two kinds of trouble are kept apart:

- an event that is not a Kinesis event at all (no ``Records``, a record
  without a sequence number, an SQS event sent to this handler) raises
  :class:`MalformedEventError`: nothing in it can be trusted, not even which
  records to report;
- a record whose data cannot be decoded (not base64, a corrupt KPL aggregate)
  becomes a record with ``deaggregation_error`` set, which the sinks
  dead-letter with its payload: one bad record never fails a batch forever.

KPL aggregates are held to :class:`~kinesis_eo.aggregation.AggregateLimits`
(``LambdaConfig.aggregate_limits``): an aggregate over its own caps, or over
what is left of the event's (the per-batch caps count the whole event), is
delivered whole with ``deaggregation_error`` and dead-lettered with its
payload; unlike the worker's reader, a Lambda function cannot leave part of
its event for the next read. Keep the event source mapping's ``BatchSize``
such that an event's user records stay within the per-batch caps.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from kinesis_eo.aggregation import DEFAULT_LIMITS, AggregateLimits, DecodeBudget
from kinesis_eo.errors import InvalidRecordError
from kinesis_eo.records import Record, parse_sequence_number
from kinesis_eo.retrieval.reader import StartingPosition, to_records

EVENT_SOURCE = "aws:kinesis"

__all__ = ["EVENT_SOURCE", "MalformedEventError", "ShardDelivery", "parse_event"]


class MalformedEventError(InvalidRecordError):
    """The Lambda event is not a Kinesis event this handler can read."""


@dataclass(frozen=True, slots=True)
class ShardDelivery:
    """The user records of one shard in an event, in shard order."""

    stream: str
    shard_id: str
    records: list[Record]


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedEventError(f"{where} has no {name!r} string (got {value!r})")
    return value


def stream_name(arn: str, where: str) -> str:
    """The stream's name in an ``eventSourceARN`` (a stream or an EFO consumer ARN)."""
    # arn:aws:kinesis:us-east-1:123456789012:stream/orders[/consumer/name:1234]
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "kinesis":
        raise MalformedEventError(f"{where} has eventSourceARN {arn!r}, not a Kinesis stream ARN")
    kind, _, rest = parts[5].partition("/")
    name = rest.split("/", 1)[0]
    if kind != "stream" or not name:
        raise MalformedEventError(f"{where} has eventSourceARN {arn!r}, not a Kinesis stream ARN")
    return name


def _arrival(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedEventError(
            f"{where} has approximateArrivalTimestamp {value!r}, not epoch seconds"
        )
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True, slots=True)
class _StoredRecord:
    """One record of the event as the stream stored it, its fields checked, its data still text."""

    stream: str
    shard_id: str
    sequence_number: str
    partition_key: str
    data: str
    arrival: datetime | None
    encryption: str | None

    def set_aside(self, data: bytes, error: str) -> Record:
        """The record whole, holding ``data``, with ``error`` for the sinks to dead-letter it."""
        return Record(
            stream=self.stream,
            shard_id=self.shard_id,
            sequence_number=self.sequence_number,
            partition_key=self.partition_key,
            data=data,
            arrival_time=self.arrival,
            encryption_type=self.encryption,
            deaggregation_error=error,
        )


def _stored_record(entry: Mapping[str, Any], where: str) -> _StoredRecord:
    """The checked fields of one record of the event; the first that is wrong raises."""
    if not isinstance(entry, Mapping):
        raise MalformedEventError(f"{where} is not an object")
    source = entry.get("eventSource")
    if source is not None and source != EVENT_SOURCE:
        raise MalformedEventError(
            f"{where} comes from {source!r}, not {EVENT_SOURCE!r}: "
            "this handler takes events of a Kinesis event source mapping only"
        )
    kinesis = entry.get("kinesis")
    if not isinstance(kinesis, Mapping):
        raise MalformedEventError(f"{where} has no 'kinesis' object")
    stream = stream_name(_text(entry.get("eventSourceARN"), where, "eventSourceARN"), where)
    event_id = _text(entry.get("eventID"), where, "eventID")
    shard_id, colon, _ = event_id.partition(":")
    if not colon or not shard_id:
        raise MalformedEventError(
            f"{where} has eventID {event_id!r}, not '<shard id>:<sequence number>'"
        )
    sequence_number = _text(kinesis.get("sequenceNumber"), where, "kinesis.sequenceNumber")
    try:
        parse_sequence_number(sequence_number)
    except ValueError as exc:
        raise MalformedEventError(f"{where}: {exc}") from None
    partition_key = _text(kinesis.get("partitionKey"), where, "kinesis.partitionKey")
    data = kinesis.get("data")
    if not isinstance(data, str):
        raise MalformedEventError(f"{where} has no 'kinesis.data' string")
    arrival = _arrival(kinesis.get("approximateArrivalTimestamp"), where)
    encryption = kinesis.get("encryptionType")
    return _StoredRecord(
        stream,
        shard_id,
        sequence_number,
        partition_key,
        data,
        arrival,
        encryption if isinstance(encryption, str) else None,
    )


def _user_records(
    entry: Mapping[str, Any], index: int, budget: DecodeBudget
) -> tuple[str, str, list[Record]]:
    """(stream, shard id, user records) of the event's record number ``index``."""
    stored = _stored_record(entry, f"record {index} of the event")
    stream, shard_id = stored.stream, stored.shard_id
    try:
        payload = base64.b64decode(stored.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        # The record is real (it has a place in the shard) but its bytes are
        # lost to us: keep the text as its payload and let the sinks dead-letter it.
        undecodable = stored.set_aside(
            stored.data.encode("utf-8", "backslashreplace"),
            f"the event's data is not base64 ({exc})",
        )
        return stream, shard_id, [undecodable]
    raw = {
        "SequenceNumber": stored.sequence_number,
        "PartitionKey": stored.partition_key,
        "Data": payload,
        "ApproximateArrivalTimestamp": stored.arrival,
        "EncryptionType": stored.encryption,
    }
    # Lambda does not say which hash range the shard owns: no filter here. An
    # aggregate's user records that the KPL re-sent to a child shard after a
    # reshard arrive twice; a per-record ledger keyed by event id drops the copy.
    records, _, unread = to_records(
        stream, shard_id, [raw], None, StartingPosition.trim_horizon(), budget
    )
    if unread == 0:
        limits = budget.limits
        over_cap = stored.set_aside(
            payload,
            f"aggregate does not fit what is left of the event's caps "
            f"({budget.records} of {limits.max_records_per_batch} user records, "
            f"{budget.bytes} of {limits.max_bytes_per_batch} bytes used): lower the "
            "event source mapping's BatchSize or raise LambdaConfig.aggregate_limits",
        )
        return stream, shard_id, [over_cap]
    return stream, shard_id, records


def parse_event(event: Any, limits: AggregateLimits = DEFAULT_LIMITS) -> list[ShardDelivery]:
    """The event's user records, by shard, each shard's in order.

    KPL aggregates are unpacked within ``limits`` (see the module docstring).
    Raises :class:`MalformedEventError` with a sentence saying what is wrong
    when ``event`` is not a Kinesis event.
    """
    if not isinstance(event, Mapping):
        raise MalformedEventError(
            f"a Kinesis event is an object with a 'Records' list, got {type(event).__name__}"
        )
    entries = event.get("Records")
    if not isinstance(entries, list):
        raise MalformedEventError(
            "the event has no 'Records' list: is the function invoked by a Kinesis "
            "event source mapping?"
        )
    shards: dict[tuple[str, str], list[Record]] = {}
    budget = DecodeBudget(limits)
    for index, entry in enumerate(entries):
        stream, shard_id, records = _user_records(entry, index, budget)
        shards.setdefault((stream, shard_id), []).extend(records)
    deliveries = []
    for (stream, shard_id), records in shards.items():
        records.sort(key=lambda r: r.position)
        for earlier, later in pairwise(records):
            if earlier.position == later.position:
                raise MalformedEventError(
                    f"the event holds sequence number {later.sequence_number} of {shard_id} twice"
                )
        deliveries.append(ShardDelivery(stream, shard_id, records))
    return deliveries
