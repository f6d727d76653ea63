"""Records and their positions in a shard.

A Kinesis sequence number is a decimal string of up to 129 digits (the API's
pattern; AWS hands out 56 today, moto 1, 2, 3...). Emulators and AWS produce
numbers of different lengths, so positions compare as integers, and
wherever DynamoDB has to compare them (conditions, sort keys) they are written
as fixed-width zero-padded text, never as DynamoDB numbers (38 digits at most).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import total_ordering

__all__ = [
    "MAX_HASH_KEY",
    "SEQUENCE_KEY_WIDTH",
    "SUB_SEQUENCE_KEY_WIDTH",
    "HashKeyRange",
    "Position",
    "Record",
    "hash_key_of",
    "parse_sequence_number",
]

# The Kinesis API allows sequence numbers of up to 129 digits: ^(0|([1-9]\d{0,128}))$
SEQUENCE_KEY_WIDTH = 129
# Sub-sequence numbers are indexes inside one KPL aggregate (uint64 in the format).
SUB_SEQUENCE_KEY_WIDTH = 20
_MAX_SEQUENCE = 10**SEQUENCE_KEY_WIDTH - 1
_MAX_SUB_SEQUENCE = 10**SUB_SEQUENCE_KEY_WIDTH - 1
_DIGITS = re.compile(r"[0-9]+")


def parse_sequence_number(text: str) -> int:
    """The integer value of a sequence number, with a clear error for anything else."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        raise ValueError(f"a sequence number is a string of decimal digits, got {text!r}")
    value = int(text)
    if value > _MAX_SEQUENCE:
        raise ValueError(f"sequence number {text!r} is longer than {SEQUENCE_KEY_WIDTH} digits")
    return value


@total_ordering
@dataclass(frozen=True, slots=True)
class Position:
    """Where a user record sits in a shard: (sequence number, sub-sequence number).

    The sub-sequence number is the index of a user record inside a KPL aggregate,
    0 for records that were not aggregated. Order is numeric on both parts.
    """

    sequence_number: str
    sub_sequence_number: int = 0
    _value: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_value", parse_sequence_number(self.sequence_number))
        if not 0 <= self.sub_sequence_number <= _MAX_SUB_SEQUENCE:
            raise ValueError(f"sub-sequence number out of range: {self.sub_sequence_number}")

    @property
    def sequence_value(self) -> int:
        """The sequence number as an integer."""
        return self._value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Position):
            return NotImplemented
        return (self._value, self.sub_sequence_number) == (
            other._value,
            other.sub_sequence_number,
        )

    def __hash__(self) -> int:
        return hash((self._value, self.sub_sequence_number))

    def __lt__(self, other: Position) -> bool:
        if not isinstance(other, Position):
            return NotImplemented
        return (self._value, self.sub_sequence_number) < (
            other._value,
            other.sub_sequence_number,
        )

    def key(self) -> str:
        """Fixed-width text whose string order is the position order (for DynamoDB)."""
        sequence = f"{self._value:0{SEQUENCE_KEY_WIDTH}d}"
        return f"{sequence}.{self.sub_sequence_number:0{SUB_SEQUENCE_KEY_WIDTH}d}"

    @classmethod
    def from_key(cls, key: str) -> Position:
        """The position a fixed-width key (``Position.key()``) stands for."""
        sequence, _, sub = key.partition(".")
        if not sub:
            raise ValueError(f"not a position key: {key!r}")
        return cls(str(int(sequence)), int(sub))

    def __str__(self) -> str:
        if self.sub_sequence_number:
            return f"{self.sequence_number}/{self.sub_sequence_number}"
        return self.sequence_number


@dataclass(frozen=True, slots=True)
class Record:
    """One user record as the consumer sees it (after KPL de-aggregation).

    ``aggregated`` says whether it came out of a KPL aggregate; then
    ``sub_sequence_number`` is its index there. A record whose bytes start with
    the KPL magic but do not form a valid aggregate is delivered whole, with
    ``deaggregation_error`` saying why, so that the failure policy decides
    about it instead of the bytes vanishing. ``event_id`` is the producer's id
    for the event when the payload came in a kinesis_eo envelope (then ``data``
    is the payload without it); the same event sent twice has the same id.
    ``event_namespace`` is the producer's namespace from the envelope, which
    scopes the id (see :func:`kinesis_eo.ledger.event_id_or_position`).
    """

    stream: str
    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival_time: datetime | None = None
    sub_sequence_number: int = 0
    explicit_hash_key: str | None = None
    aggregated: bool = False
    deaggregation_error: str | None = None
    encryption_type: str | None = None
    event_id: str | None = None
    event_namespace: str | None = None
    # Parsed once: a commit asks a record for its position several times.
    _position: Position | None = field(default=None, init=False, repr=False, compare=False)
    # The ledger's key for it, with the ledger config it was made for (see
    # kinesis_eo.ledger.core.LedgerCore.record_key): screening and the commit ask often.
    _ledger_key: tuple[object, str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def with_event(self, event_id: str, namespace: str | None, payload: bytes) -> Record:
        """This record as its envelope's event: ``payload`` for data, with the event's id
        and namespace (its position, if already parsed, is kept, not parsed again)."""
        event = Record(
            stream=self.stream,
            shard_id=self.shard_id,
            sequence_number=self.sequence_number,
            partition_key=self.partition_key,
            data=payload,
            arrival_time=self.arrival_time,
            sub_sequence_number=self.sub_sequence_number,
            explicit_hash_key=self.explicit_hash_key,
            aggregated=self.aggregated,
            deaggregation_error=self.deaggregation_error,
            encryption_type=self.encryption_type,
            event_id=event_id,
            event_namespace=namespace,
        )
        object.__setattr__(event, "_position", self._position)
        return event

    @property
    def position(self) -> Position:
        """Where the record sits in its shard (parsed once, then kept)."""
        position = self._position
        if position is None:
            position = Position(self.sequence_number, self.sub_sequence_number)
            object.__setattr__(self, "_position", position)
        return position


MAX_HASH_KEY = 2**128 - 1


@dataclass(frozen=True, slots=True)
class HashKeyRange:
    """An inclusive range of 128-bit hash keys, as a shard owns it."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end <= MAX_HASH_KEY:
            raise ValueError(f"not a hash key range: {self.start}..{self.end}")

    def __contains__(self, hash_key: object) -> bool:
        return isinstance(hash_key, int) and self.start <= hash_key <= self.end

    @classmethod
    def from_aws(cls, value: dict[str, str]) -> HashKeyRange:
        """The range as ``ListShards`` gives it: ``StartingHashKey``, ``EndingHashKey``."""
        return cls(int(value["StartingHashKey"]), int(value["EndingHashKey"]))


def hash_key_of(partition_key: str, explicit_hash_key: str | None = None) -> int:
    """The 128-bit hash key Kinesis routes by: the explicit one, else MD5 of the partition key."""
    if explicit_hash_key is not None:
        return int(explicit_hash_key)
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")
