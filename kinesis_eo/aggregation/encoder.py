"""Packing user records into one Kinesis record in the KPL format."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from kinesis_eo.aggregation.wire import MAGIC, put_bytes, put_varint
from kinesis_eo.records import MAX_HASH_KEY, hash_key_of

__all__ = ["AggregatedRecord", "UserRecord", "aggregate", "check_explicit_hash_key"]

# Kinesis' own limit on partition keys; the KPL enforces it for every user record.
_MAX_PARTITION_KEY_LENGTH = 256


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


def check_explicit_hash_key(text: str) -> int:
    """The value of an explicit hash key, or ValueError if Kinesis would refuse it."""
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
        put_varint(entry, partition_keys.setdefault(key, len(partition_keys)))
        explicit = user_record.explicit_hash_key
        if explicit is not None:
            check_explicit_hash_key(explicit)
            entry.append(0x10)
            put_varint(entry, explicit_hash_keys.setdefault(explicit, len(explicit_hash_keys)))
        put_bytes(entry, 0x1A, bytes(user_record.data))
        put_bytes(body, 0x1A, bytes(entry))

    message = bytearray()
    for key in partition_keys:
        put_bytes(message, 0x0A, key.encode("utf-8"))
    for explicit in explicit_hash_keys:
        put_bytes(message, 0x12, explicit.encode("ascii"))
    message += body
    payload = bytes(message)
    first = user_records[0]
    return AggregatedRecord(
        data=MAGIC + payload + hashlib.md5(payload, usedforsecurity=False).digest(),
        partition_key=first.partition_key,
        explicit_hash_key=str(hash_key_of(first.partition_key, first.explicit_hash_key)),
    )
