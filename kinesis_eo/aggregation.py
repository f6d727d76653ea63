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

Aggregate bombs. A 1 MiB aggregate of empty user records unpacks into some
175,000 records (about 40 MiB of Python objects), a 10 MiB one into ten times
that. :class:`AggregateLimits` caps the user records and bytes one aggregate
may unpack into, and those of a whole batch; decoding stops at the cap, it
does not unpack everything and count afterwards. An aggregate over its own cap
is delivered whole with ``deaggregation_error`` set, like a corrupt one, so
the sinks dead-letter it with its payload. An aggregate that fits its own cap
but not what is left of the batch's comes back with ``batch_full`` set and no
records: the reader ends the batch before it and reads it again first thing
in the next one.
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


MIB = 1_048_576


@dataclass(frozen=True, slots=True)
class AggregateLimits:
    """How many user records, and bytes of their data, KPL aggregates may unpack into.

    Why these defaults. The KPL never writes an aggregate above 1 MiB (its
    ``AggregationMaxSize`` tops out there, default 50 KiB), and 50,000 user
    records fill 1 MiB only when each holds about 14 bytes: a denser
    aggregate is not data anyone meant to send, while each user record costs
    some 250 bytes of Python objects, so the cap keeps one aggregate under
    about 12 MiB of them. The data of an aggregate's user records is at most
    the Kinesis record itself, which a stream allows up to 10 MiB. A batch is
    one GetRecords call, at most 10 MiB and 10,000 Kinesis records (what the
    KCL reads at most per call); two aggregates at the cap per batch bound its
    user records at 100,000 (about 25 MiB), its data at the call's 10 MiB.
    Together a batch stays under about 50 MiB, raw bytes included, where an
    unbounded 10 MiB read could take several hundred.
    """

    max_records_per_aggregate: int = 50_000
    max_bytes_per_aggregate: int = 10 * MIB
    max_records_per_batch: int = 100_000
    max_bytes_per_batch: int = 10 * MIB

    def __post_init__(self) -> None:
        for name in (
            "max_records_per_aggregate",
            "max_bytes_per_aggregate",
            "max_records_per_batch",
            "max_bytes_per_batch",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"AggregateLimits.{name} must be at least 1")
        # Otherwise a lone aggregate within its own cap could never fit any batch.
        if self.max_records_per_batch < self.max_records_per_aggregate:
            raise ValueError("max_records_per_batch cannot be below max_records_per_aggregate")
        if self.max_bytes_per_batch < self.max_bytes_per_aggregate:
            raise ValueError("max_bytes_per_batch cannot be below max_bytes_per_aggregate")


DEFAULT_LIMITS = AggregateLimits()


@dataclass(slots=True)
class DecodeBudget:
    """What one batch has used of its caps while its Kinesis records are decoded."""

    limits: AggregateLimits = DEFAULT_LIMITS
    records: int = 0
    bytes: int = 0

    def add(self, records: int, data_bytes: int) -> None:
        self.records += records
        self.bytes += data_bytes


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


class _CorruptAggregate(InvalidRecordError):
    """Never leaves this module: it becomes ``Record.deaggregation_error``."""


class _OverCap(_CorruptAggregate):
    """Decoding reached a cap; ``batch`` when it was what is left of the batch's."""

    def __init__(self, message: str, *, batch: bool) -> None:
        super().__init__(message)
        self.batch = batch


@dataclass(frozen=True, slots=True)
class _Caps:
    """The caps one aggregate is decoded under: its own, or less if the batch has less left."""

    records: int
    data_bytes: int
    records_are_batch: bool
    bytes_are_batch: bool

    @classmethod
    def of(cls, limits: AggregateLimits, budget: DecodeBudget | None) -> _Caps:
        records, data_bytes = limits.max_records_per_aggregate, limits.max_bytes_per_aggregate
        if budget is None:
            return cls(records, data_bytes, False, False)
        records_left = budget.limits.max_records_per_batch - budget.records
        bytes_left = budget.limits.max_bytes_per_batch - budget.bytes
        return cls(
            min(records, records_left),
            min(data_bytes, bytes_left),
            records_left < records,
            bytes_left < data_bytes,
        )


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
    buf: bytes, pos: int, end: int, caps: _Caps
) -> tuple[list[str], list[str], list[tuple[int, int | None, bytes]]]:
    partition_keys: list[str] = []
    explicit_hash_keys: list[str] = []
    user_records: list[tuple[int, int | None, bytes]] = []
    data_bytes = 0
    while pos < end:
        field_number, wire_type, pos = _key(buf, pos, end)
        if field_number in (1, 2, 3):
            _expect(field_number, wire_type, _LENGTH_DELIMITED)
            start, pos = _length_delimited(buf, pos, end)
            if field_number == 3:
                # Checked before each record is decoded: a bomb stops here, at the cap.
                if len(user_records) == caps.records:
                    raise _OverCap(
                        f"aggregate holds more than {caps.records} user records",
                        batch=caps.records_are_batch,
                    )
                user_record = _user_record(buf, start, pos)
                data_bytes += len(user_record[2])
                if data_bytes > caps.data_bytes:
                    raise _OverCap(
                        f"aggregate's user records hold more than {caps.data_bytes} bytes",
                        batch=caps.bytes_are_batch,
                    )
                user_records.append(user_record)
            elif field_number == 1:
                partition_keys.append(_text(buf, start, pos, "a partition key"))
            else:
                explicit_hash_keys.append(_text(buf, start, pos, "an explicit hash key"))
        else:
            pos = _skip(buf, field_number, wire_type, pos, end)
    return partition_keys, explicit_hash_keys, user_records


def _unpack(record: Record, hash_range: HashKeyRange | None, caps: _Caps) -> Deaggregated:
    data = record.data
    end = len(data) - _DIGEST_SIZE
    if end < len(MAGIC):
        raise _CorruptAggregate("too short for an aggregate")
    if hashlib.md5(data[len(MAGIC) : end], usedforsecurity=False).digest() != data[end:]:
        raise _CorruptAggregate("MD5 digest does not match")
    partition_keys, explicit_hash_keys, user_records = _parse(data, len(MAGIC), end, caps)
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
    set (see the module docstring). User records of an aggregate whose hash key
    lies outside ``hash_range`` go to ``outside_hash_range``. With ``budget``
    (one per batch; its limits then apply) what comes back is counted in it,
    and an aggregate that does not fit what the batch has left comes back with
    ``batch_full`` set, unless it is the batch's first record.
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
            result = _unpack(record, hash_range, _Caps.of(limits, budget if started else None))
        except _OverCap as exc:
            if exc.batch:
                return Deaggregated([], [], batch_full=True)
            result = Deaggregated([replace(record, deaggregation_error=str(exc))], [])
        except _CorruptAggregate as exc:
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
