"""Unpacking KPL aggregates into user records, within caps, filtered by hash range."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

from kinesis_eo.aggregation.encoder import check_explicit_hash_key
from kinesis_eo.aggregation.limits import DEFAULT_LIMITS, AggregateLimits, Caps, DecodeBudget
from kinesis_eo.aggregation.wire import (
    DIGEST_SIZE,
    LENGTH_DELIMITED,
    MAGIC,
    VARINT,
    CorruptAggregateError,
    OverCapError,
    expect_wire_type,
    read_key,
    read_length_delimited,
    read_text,
    read_varint,
    skip_field,
)
from kinesis_eo.records import HashKeyRange, Record, hash_key_of

__all__ = ["Deaggregated", "deaggregate", "deaggregate_all"]


@dataclass(frozen=True, slots=True)
class Deaggregated:
    """The user records of one or more Kinesis records.

    ``batch_full``: the aggregate fits its own cap but not what is left of the
    batch's; it was not unpacked (``records`` is empty).
    """

    records: list[Record]
    outside_hash_range: list[Record]
    batch_full: bool = False


_PER_USER_RECORD = frozenset(
    {"partition_key", "explicit_hash_key", "data", "sub_sequence_number", "aggregated"}
)
_RECORD_FIELDS = tuple(f.name for f in fields(Record) if f.init)


def _check_tag(buf: bytes, pos: int, end: int) -> None:
    has_key = False
    while pos < end:
        field_number, wire_type, pos = read_key(buf, pos, end)
        if field_number == 1:
            expect_wire_type(field_number, wire_type, LENGTH_DELIMITED)
            has_key = True
        pos = skip_field(buf, field_number, wire_type, pos, end)
    if not has_key:
        raise CorruptAggregateError("tag without a key")


def _user_record(buf: bytes, pos: int, end: int) -> tuple[int, int | None, bytes]:
    """(partition key index, explicit hash key index, data) of one protobuf Record."""
    partition_key_index: int | None = None
    explicit_hash_key_index: int | None = None
    data: bytes | None = None
    while pos < end:
        field_number, wire_type, pos = read_key(buf, pos, end)
        if field_number == 1:
            expect_wire_type(field_number, wire_type, VARINT)
            partition_key_index, pos = read_varint(buf, pos, end)
        elif field_number == 2:
            expect_wire_type(field_number, wire_type, VARINT)
            explicit_hash_key_index, pos = read_varint(buf, pos, end)
        elif field_number == 3:
            expect_wire_type(field_number, wire_type, LENGTH_DELIMITED)
            start, pos = read_length_delimited(buf, pos, end)
            data = buf[start:pos]
        elif field_number == 4:
            expect_wire_type(field_number, wire_type, LENGTH_DELIMITED)
            start, pos = read_length_delimited(buf, pos, end)
            _check_tag(buf, start, pos)
        else:
            pos = skip_field(buf, field_number, wire_type, pos, end)
    if partition_key_index is None:
        raise CorruptAggregateError("user record without a partition key index")
    if data is None:
        raise CorruptAggregateError("user record without data")
    return partition_key_index, explicit_hash_key_index, data


def _parse(
    buf: bytes, pos: int, end: int, caps: Caps
) -> tuple[list[str], list[str], list[tuple[int, int | None, bytes]]]:
    partition_keys: list[str] = []
    explicit_hash_keys: list[str] = []
    user_records: list[tuple[int, int | None, bytes]] = []
    data_bytes = 0
    while pos < end:
        field_number, wire_type, pos = read_key(buf, pos, end)
        if field_number in (1, 2, 3):
            expect_wire_type(field_number, wire_type, LENGTH_DELIMITED)
            start, pos = read_length_delimited(buf, pos, end)
            if field_number == 3:
                # Checked before each record is decoded: a bomb stops here, at the cap.
                if len(user_records) == caps.records:
                    raise OverCapError(
                        f"aggregate holds more than {caps.records} user records",
                        batch=caps.records_are_batch,
                    )
                user_record = _user_record(buf, start, pos)
                data_bytes += len(user_record[2])
                if data_bytes > caps.data_bytes:
                    raise OverCapError(
                        f"aggregate's user records hold more than {caps.data_bytes} bytes",
                        batch=caps.bytes_are_batch,
                    )
                user_records.append(user_record)
            elif field_number == 1:
                partition_keys.append(read_text(buf, start, pos, "a partition key"))
            else:
                explicit_hash_keys.append(read_text(buf, start, pos, "an explicit hash key"))
        else:
            pos = skip_field(buf, field_number, wire_type, pos, end)
    return partition_keys, explicit_hash_keys, user_records


def _unpack(record: Record, hash_range: HashKeyRange | None, caps: Caps) -> Deaggregated:
    data = record.data
    end = len(data) - DIGEST_SIZE
    if end < len(MAGIC):
        raise CorruptAggregateError("too short for an aggregate")
    if hashlib.md5(data[len(MAGIC) : end], usedforsecurity=False).digest() != data[end:]:
        raise CorruptAggregateError("MD5 digest does not match")
    partition_keys, explicit_hash_keys, user_records = _parse(data, len(MAGIC), end, caps)
    if not user_records:
        raise CorruptAggregateError("aggregate holds no user records")

    # Explicit hash keys are checked and hash keys computed once per table
    # entry, not per user record: the KPL shares table entries between records.
    checked_explicit: set[int] = set()
    # What the user records inherit from the Kinesis record, taken once: it is
    # twice as fast as dataclasses.replace per record and, unlike naming the
    # fields, keeps working when Record gains one.
    template = {
        name: getattr(record, name) for name in _RECORD_FIELDS if name not in _PER_USER_RECORD
    }
    hash_keys: dict[tuple[int, int | None], int] = {}
    inside: list[Record] = []
    outside: list[Record] = []
    for sub_sequence_number, (key_index, explicit_index, payload) in enumerate(user_records):
        if key_index >= len(partition_keys):
            raise CorruptAggregateError(
                f"partition key index {key_index} outside a table of {len(partition_keys)}"
            )
        partition_key = partition_keys[key_index]
        explicit_hash_key: str | None = None
        if explicit_index is not None:
            if explicit_index >= len(explicit_hash_keys):
                raise CorruptAggregateError(
                    f"explicit hash key index {explicit_index} outside a table of "
                    f"{len(explicit_hash_keys)}"
                )
            explicit_hash_key = explicit_hash_keys[explicit_index]
            if explicit_index not in checked_explicit:
                try:
                    check_explicit_hash_key(explicit_hash_key)
                except ValueError:
                    raise CorruptAggregateError(
                        f"explicit hash key {explicit_hash_key[:50]!r} is not a 128-bit decimal"
                    ) from None
                checked_explicit.add(explicit_index)
        user_record = Record(
            **template,
            partition_key=partition_key,
            explicit_hash_key=explicit_hash_key,
            data=payload,
            sub_sequence_number=sub_sequence_number,
            aggregated=True,
        )
        if hash_range is None:
            inside.append(user_record)
            continue
        # After a reshard the KPL can put an aggregate on a shard whose hash
        # range no longer covers all of its user records; it then re-sends those
        # records to the shard that owns their hash key, so the copies here are
        # duplicates. They are returned rather than dropped so that the reader
        # can log and count them.
        pair = (key_index, explicit_index)
        hash_key = hash_keys.get(pair)
        if hash_key is None:
            hash_key = hash_keys[pair] = hash_key_of(partition_key, explicit_hash_key)
        (inside if hash_key in hash_range else outside).append(user_record)
    return Deaggregated(inside, outside)


def deaggregate(
    record: Record,
    hash_range: HashKeyRange | None = None,
    limits: AggregateLimits | None = None,
    budget: DecodeBudget | None = None,
) -> Deaggregated:
    """The user records of one Kinesis record, in order.

    A record without the KPL magic comes back alone and unchanged, and is never
    filtered by ``hash_range``: Kinesis itself routed it to this shard. A
    corrupt aggregate, or one over the caps of ``limits`` (default
    :class:`AggregateLimits`), comes back whole with ``deaggregation_error``
    set (see :mod:`kinesis_eo.aggregation`). User records of an aggregate
    whose hash key lies outside ``hash_range`` go to ``outside_hash_range``.
    With ``budget`` (one per batch; its limits then apply) what comes back is
    counted in it, and an aggregate that does not fit what the batch has left
    comes back with ``batch_full`` set, unless it is the batch's first record.
    """
    limits = budget.limits if budget is not None else limits or DEFAULT_LIMITS
    # A record that already came out of an aggregate holds user bytes, which may
    # start with the magic by chance; unpacking them again would invent records.
    if record.aggregated or not record.data.startswith(MAGIC):
        result = Deaggregated([record], [])
    else:
        # The first record of a batch is always decoded: its own cap bounds it.
        started = budget is not None and budget.records > 0
        try:
            result = _unpack(record, hash_range, Caps.of(limits, budget if started else None))
        except OverCapError as exc:
            if exc.batch:
                return Deaggregated([], [], batch_full=True)
            result = Deaggregated([replace(record, deaggregation_error=str(exc))], [])
        except CorruptAggregateError as exc:
            result = Deaggregated([replace(record, deaggregation_error=str(exc))], [])
    if budget is not None:
        every = (*result.records, *result.outside_hash_range)
        budget.add(len(every), sum(len(r.data) for r in every))
    return result


def deaggregate_all(
    records: Iterable[Record],
    hash_range: HashKeyRange | None = None,
    limits: AggregateLimits | None = None,
) -> Deaggregated:
    """:func:`deaggregate` over a batch, keeping the order of the batch.

    Each aggregate is held to the per-aggregate caps of ``limits``; the
    per-batch caps do not apply here, since there is no later batch to carry
    what does not fit: the reader applies them (see :mod:`kinesis_eo.retrieval`).
    """
    inside: list[Record] = []
    outside: list[Record] = []
    for record in records:
        result = deaggregate(record, hash_range, limits)
        inside += result.records
        outside += result.outside_hash_range
    return Deaggregated(inside, outside)
