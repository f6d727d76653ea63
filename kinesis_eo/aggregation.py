"""KPL aggregation: many user records in one Kinesis record, and back.

The Kinesis Producer Library packs user records into one Kinesis record as::

    MAGIC (f3 89 9a c2) + protobuf AggregatedRecord + MD5 digest of the protobuf bytes

    message AggregatedRecord {
      repeated string partition_key_table = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records = 3;
    }
    message Record {
      required uint64 partition_key_index = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes data = 3;
      repeated Tag tags = 4;
    }
    message Tag { required string key = 1; optional string value = 2; }

The protobuf reader and writer here are a few dozen lines so that the package
needs no protobuf runtime; tags and unknown fields are skipped.

Corrupt aggregates. When the bytes start with the magic but are not a valid
aggregate (too short, MD5 mismatch, protobuf that does not parse, a missing
required field, a table index out of range, an explicit hash key that is not a
128-bit decimal, or no user records at all), :func:`deaggregate` delivers the
Kinesis record whole and unchanged, with ``deaggregation_error`` set to a short
reason. It never raises for bad bytes. The KCL also passes such bytes through
as a plain record, because a user payload may legitimately start with those
four bytes; the flag is added so that a failure policy can dead-letter the
record instead of it vanishing or being half-delivered. An aggregate with no
user records counts as corrupt for the same reason: delivering nothing would
make a stored record disappear without a trace (the KPL never writes one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace

from kinesis_eo.errors import InvalidRecordError
from kinesis_eo.records import MAX_HASH_KEY, HashKeyRange, Record, hash_key_of

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST_SIZE = 16
_MAX_UINT64 = 2**64 - 1
# Kinesis' own limit on partition keys; the KPL enforces it for every user record.
_MAX_PARTITION_KEY_LENGTH = 256

_VARINT = 0
_FIXED64 = 1
_LENGTH_DELIMITED = 2
_START_GROUP = 3
_END_GROUP = 4
_FIXED32 = 5


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One record as a producer hands it over for aggregation."""

    partition_key: str
    data: bytes
    explicit_hash_key: str | None = None


@dataclass(frozen=True, slots=True)
class AggregatedRecord:
    """One Kinesis PutRecords entry holding several user records."""

    data: bytes
    partition_key: str
    explicit_hash_key: str | None


@dataclass(frozen=True, slots=True)
class Deaggregated:
    """The user records of one or more Kinesis records."""

    records: list[Record]
    outside_hash_range: list[Record]


_PER_USER_RECORD = frozenset(
    {"partition_key", "explicit_hash_key", "data", "sub_sequence_number", "aggregated"}
)
_RECORD_FIELDS = tuple(f.name for f in fields(Record) if f.init)


class _CorruptAggregate(InvalidRecordError):
    """Never leaves this module: it becomes ``Record.deaggregation_error``."""


# --- writing -----------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_bytes(out: bytearray, tag: int, payload: bytes) -> None:
    out.append(tag)
    _put_varint(out, len(payload))
    out += payload


def _check_explicit_hash_key(text: str) -> int:
    # Leading/trailing blanks and signs pass int(); Kinesis accepts digits only.
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"an explicit hash key is a decimal string, got {text!r}")
    value = int(text)
    if value > MAX_HASH_KEY:
        raise ValueError(f"explicit hash key {text!r} is above 2**128 - 1")
    return value


def aggregate(user_records: Sequence[UserRecord]) -> AggregatedRecord:
    """Pack user records into one Kinesis record in the KPL format.

    The Kinesis-level keys route the aggregate to the shard that owns its first
    user record; the others may belong elsewhere after a reshard, which is what
    the hash-range filter of :func:`deaggregate` deals with.
    """
    if not user_records:
        raise ValueError("cannot aggregate an empty list of user records")
    partition_keys: dict[str, int] = {}
    explicit_hash_keys: dict[str, int] = {}
    body = bytearray()
    for user_record in user_records:
        key = user_record.partition_key
        if not 1 <= len(key) <= _MAX_PARTITION_KEY_LENGTH:
            raise ValueError(
                f"a partition key has 1 to {_MAX_PARTITION_KEY_LENGTH} characters, got {len(key)}"
            )
        entry = bytearray()
        entry.append(0x08)
        _put_varint(entry, partition_keys.setdefault(key, len(partition_keys)))
        explicit = user_record.explicit_hash_key
        if explicit is not None:
            _check_explicit_hash_key(explicit)
            entry.append(0x10)
            _put_varint(entry, explicit_hash_keys.setdefault(explicit, len(explicit_hash_keys)))
        _put_bytes(entry, 0x1A, bytes(user_record.data))
        _put_bytes(body, 0x1A, bytes(entry))

    message = bytearray()
    for key in partition_keys:
        _put_bytes(message, 0x0A, key.encode("utf-8"))
    for explicit in explicit_hash_keys:
        _put_bytes(message, 0x12, explicit.encode("ascii"))
    message += body
    payload = bytes(message)
    first = user_records[0]
    return AggregatedRecord(
        data=MAGIC + payload + hashlib.md5(payload, usedforsecurity=False).digest(),
        partition_key=first.partition_key,
        explicit_hash_key=str(hash_key_of(first.partition_key, first.explicit_hash_key)),
    )


# --- reading -----------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise _CorruptAggregate(f"truncated varint at byte {pos}")
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _CorruptAggregate(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= 70:
            raise _CorruptAggregate(f"varint longer than 10 bytes at byte {pos}")
    if result > _MAX_UINT64:
        raise _CorruptAggregate(f"varint above 64 bits at byte {pos}")
    return result, pos


def _key(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(field number, wire type, position after the key)."""
    key, pos = _varint(buf, pos, end)
    field_number = key >> 3
    if field_number == 0:
        raise _CorruptAggregate(f"field number 0 at byte {pos}")
    return field_number, key & 7, pos


def _length_delimited(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of the payload that begins at ``pos``."""
    length, pos = _varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise _CorruptAggregate(f"field of {length} bytes runs past its message at byte {pos}")
    return pos, stop


def _skip(buf: bytes, field_number: int, wire_type: int, pos: int, end: int) -> int:
    """Position after the value of a field this module does not read."""
    if wire_type == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire_type == _LENGTH_DELIMITED:
        return _length_delimited(buf, pos, end)[1]
    if wire_type in (_FIXED64, _FIXED32):
        pos += 8 if wire_type == _FIXED64 else 4
        if pos > end:
            raise _CorruptAggregate("truncated fixed-width field")
        return pos
    if wire_type == _START_GROUP:
        # Groups nest; a stack rather than recursion so that hostile input
        # cannot exhaust the Python stack.
        open_groups = [field_number]
        while open_groups:
            inner, inner_type, pos = _key(buf, pos, end)
            if inner_type == _END_GROUP:
                if inner != open_groups.pop():
                    raise _CorruptAggregate(f"mismatched end of group {inner}")
            elif inner_type == _START_GROUP:
                open_groups.append(inner)
            else:
                pos = _skip(buf, inner, inner_type, pos, end)
        return pos
    raise _CorruptAggregate(f"wire type {wire_type} for field {field_number}")


def _expect(field_number: int, wire_type: int, expected: int) -> None:
    if wire_type != expected:
        raise _CorruptAggregate(f"field {field_number} has wire type {wire_type}, not {expected}")


def _text(buf: bytes, start: int, stop: int, what: str) -> str:
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise _CorruptAggregate(f"{what} is not UTF-8") from None


def _check_tag(buf: bytes, pos: int, end: int) -> None:
    has_key = False
    while pos < end:
        field_number, wire_type, pos = _key(buf, pos, end)
        if field_number == 1:
            _expect(field_number, wire_type, _LENGTH_DELIMITED)
            has_key = True
        pos = _skip(buf, field_number, wire_type, pos, end)
    if not has_key:
        raise _CorruptAggregate("tag without a key")


def _user_record(buf: bytes, pos: int, end: int) -> tuple[int, int | None, bytes]:
    """(partition key index, explicit hash key index, data) of one protobuf Record."""
    partition_key_index: int | None = None
    explicit_hash_key_index: int | None = None
    data: bytes | None = None
    while pos < end:
        field_number, wire_type, pos = _key(buf, pos, end)
        if field_number == 1:
            _expect(field_number, wire_type, _VARINT)
            partition_key_index, pos = _varint(buf, pos, end)
        elif field_number == 2:
            _expect(field_number, wire_type, _VARINT)
            explicit_hash_key_index, pos = _varint(buf, pos, end)
        elif field_number == 3:
            _expect(field_number, wire_type, _LENGTH_DELIMITED)
            start, pos = _length_delimited(buf, pos, end)
            data = buf[start:pos]
        elif field_number == 4:
            _expect(field_number, wire_type, _LENGTH_DELIMITED)
            start, pos = _length_delimited(buf, pos, end)
            _check_tag(buf, start, pos)
        else:
            pos = _skip(buf, field_number, wire_type, pos, end)
    if partition_key_index is None:
        raise _CorruptAggregate("user record without a partition key index")
    if data is None:
        raise _CorruptAggregate("user record without data")
    return partition_key_index, explicit_hash_key_index, data


def _parse(
    buf: bytes, pos: int, end: int
) -> tuple[list[str], list[str], list[tuple[int, int | None, bytes]]]:
    partition_keys: list[str] = []
    explicit_hash_keys: list[str] = []
    user_records: list[tuple[int, int | None, bytes]] = []
    while pos < end:
        field_number, wire_type, pos = _key(buf, pos, end)
        if field_number in (1, 2, 3):
            _expect(field_number, wire_type, _LENGTH_DELIMITED)
            start, pos = _length_delimited(buf, pos, end)
            if field_number == 3:
                user_records.append(_user_record(buf, start, pos))
            elif field_number == 1:
                partition_keys.append(_text(buf, start, pos, "a partition key"))
            else:
                explicit_hash_keys.append(_text(buf, start, pos, "an explicit hash key"))
        else:
            pos = _skip(buf, field_number, wire_type, pos, end)
    return partition_keys, explicit_hash_keys, user_records


def _unpack(record: Record, hash_range: HashKeyRange | None) -> Deaggregated:
    data = record.data
    end = len(data) - _DIGEST_SIZE
    if end < len(MAGIC):
        raise _CorruptAggregate("too short for an aggregate")
    if hashlib.md5(data[len(MAGIC) : end], usedforsecurity=False).digest() != data[end:]:
        raise _CorruptAggregate("MD5 digest does not match")
    partition_keys, explicit_hash_keys, user_records = _parse(data, len(MAGIC), end)
    if not user_records:
        raise _CorruptAggregate("aggregate holds no user records")

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
            raise _CorruptAggregate(
                f"partition key index {key_index} outside a table of {len(partition_keys)}"
            )
        partition_key = partition_keys[key_index]
        explicit_hash_key: str | None = None
        if explicit_index is not None:
            if explicit_index >= len(explicit_hash_keys):
                raise _CorruptAggregate(
                    f"explicit hash key index {explicit_index} outside a table of "
                    f"{len(explicit_hash_keys)}"
                )
            explicit_hash_key = explicit_hash_keys[explicit_index]
            if explicit_index not in checked_explicit:
                try:
                    _check_explicit_hash_key(explicit_hash_key)
                except ValueError:
                    raise _CorruptAggregate(
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


def deaggregate(record: Record, hash_range: HashKeyRange | None = None) -> Deaggregated:
    """The user records of one Kinesis record, in order.

    A record without the KPL magic comes back alone and unchanged, and is never
    filtered by ``hash_range``: Kinesis itself routed it to this shard. A
    corrupt aggregate comes back whole with ``deaggregation_error`` set (see the
    module docstring). User records of an aggregate whose hash key lies outside
    ``hash_range`` go to ``outside_hash_range``.
    """
    # A record that already came out of an aggregate holds user bytes, which may
    # start with the magic by chance; unpacking them again would invent records.
    if record.aggregated or not record.data.startswith(MAGIC):
        return Deaggregated([record], [])
    try:
        return _unpack(record, hash_range)
    except _CorruptAggregate as exc:
        return Deaggregated([replace(record, deaggregation_error=str(exc))], [])


def deaggregate_all(
    records: Iterable[Record], hash_range: HashKeyRange | None = None
) -> Deaggregated:
    """:func:`deaggregate` over a batch, keeping the order of the batch."""
    inside: list[Record] = []
    outside: list[Record] = []
    for record in records:
        result = deaggregate(record, hash_range)
        inside += result.records
        outside += result.outside_hash_range
    return Deaggregated(inside, outside)
