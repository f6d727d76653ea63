"""What the ledger stores and the few conditional operations every store must support.

The ledger's protocol (:mod:`kinesis_eo.ledger.ledger`) is written once over
these operations; a store (DynamoDB, in-memory) only has to read items and
apply a list of operations atomically, all or none, telling which conditions
failed. Conditions are small values that the in-memory store evaluates itself
and the DynamoDB store turns into condition expressions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum

from kinesis_eo.errors import KinesisEOError
from kinesis_eo.records import Record

__all__ = [
    "CLAIM_EXPIRES_AT",
    "DONE_STATUSES",
    "EXPIRES_AT",
    "FAILURES",
    "KEY",
    "OWNER",
    "PAYLOAD_HASH",
    "POSITION",
    "SHARD",
    "STATUS",
    "STREAM",
    "UPDATED_AT",
    "Absent",
    "AbsentOrClaimExpired",
    "ClaimExpiredFor",
    "Condition",
    "Delete",
    "HeldBy",
    "Increment",
    "Item",
    "LedgerConfig",
    "LedgerConflict",
    "LedgerConflictError",
    "LedgerMode",
    "MarkStatus",
    "Op",
    "PayloadMismatchError",
    "PositionBelow",
    "Put",
    "Update",
    "Value",
    "event_id_or_position",
    "payload_hash",
]

Value = str | int | bytes
Item = Mapping[str, Value]

# Attribute names, shared by every store so that items read the same everywhere.
KEY = "pk"
POSITION = "position"
STATUS = "status"
PAYLOAD_HASH = "payload_hash"
OWNER = "owner"
CLAIM_EXPIRES_AT = "claim_expires_at"
EXPIRES_AT = "expires_at"  # the table's TTL attribute
UPDATED_AT = "updated_at"
STREAM = "stream"
SHARD = "shard"
FAILURES = "failures"


class LedgerMode(Enum):
    """How the ledger remembers what is done.

    WATERMARK: one item per (consumer group, shard) with the highest committed
    position; one conditional write covers a whole batch. Needs one reader per
    shard reading in order. Does not see inbound duplicates.
    PER_RECORD: one item per key (event id or position), written with
    ``attribute_not_exists``; drops inbound duplicates and stays right when a
    shard's records are processed out of order.
    """

    WATERMARK = "watermark"
    PER_RECORD = "per_record"


class MarkStatus(Enum):
    """The status a per-record mark holds; all but ``IN_PROGRESS`` mean the record is done."""

    COMPLETED = "COMPLETED"
    IN_PROGRESS = "IN_PROGRESS"
    DEAD_LETTERED = "DEAD_LETTERED"
    QUARANTINED = "QUARANTINED"


DONE_STATUSES = frozenset({MarkStatus.COMPLETED, MarkStatus.DEAD_LETTERED, MarkStatus.QUARANTINED})


def event_id_or_position(record: Record) -> str:
    """The default per-record key: the producer's event id in its scope, else the position.

    An event id is scoped by the stream and the producer's namespace
    (``ProducerConfig.namespace``, carried in the envelope):
    ``event:<stream>:<namespace>:<id>``, the namespace empty for a producer
    without one. Two producers that give the same id to different events on
    one stream are thus kept apart as long as their namespaces differ, while a
    producer's retries, and its sends after a restart under the same
    namespace, keep the same key and are dropped as duplicates. The stream is
    its name (a stream given by ARN is named by its last part), and neither it
    nor a namespace can hold ':', so the key is unambiguous.
    """
    if record.event_id is not None:
        stream = (
            record.stream.rsplit("/", 1)[-1] if record.stream.startswith("arn:") else record.stream
        )
        return f"event:{stream}:{record.event_namespace or ''}:{record.event_id}"
    return f"position:{record.stream}:{record.shard_id}:{record.position.key()}"


def payload_hash(data: bytes) -> str:
    """The short SHA-256 of a record's data that a mark keeps, to tell a duplicate from a payload
    mismatch.
    """
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """Whose ledger it is and how it keys records (where it lives is the store's business).

    ``record_ttl`` must outlast the stream's retention plus any replay you may
    run: a per-record mark that expired cannot stop a late duplicate.
    """

    consumer_group: str
    mode: LedgerMode = LedgerMode.WATERMARK
    key_of: Callable[[Record], str] = field(default=event_id_or_position)
    record_ttl: timedelta = timedelta(days=8)
    # DynamoDB allows 100 items per transaction; one slot stays free for the
    # lease's fencing check that a worker adds to every commit.
    max_transaction_items: int = 100
    reserved_transaction_items: int = 1

    def __post_init__(self) -> None:
        if not self.consumer_group or "#" in self.consumer_group:
            raise ValueError("consumer_group must be non-empty and free of '#'")
        if self.max_transaction_items - self.reserved_transaction_items < 2:
            raise ValueError("a transaction needs room for at least one record and its mark")
        if self.max_transaction_items > 100 or self.reserved_transaction_items < 0:
            raise ValueError(
                "DynamoDB takes at most 100 items per transaction and reserved items "
                "cannot be negative"
            )
        # A mark that expires at once (or before it is written) guards nothing.
        if self.record_ttl <= timedelta(0):
            raise ValueError(f"record_ttl must be positive, got {self.record_ttl}")


# --- conditions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Absent:
    """No item under the key."""

    def holds(self, item: Item | None) -> bool:
        return item is None


@dataclass(frozen=True, slots=True)
class PositionBelow:
    """No item, or its position is below ``position`` (fixed-width keys compare as text)."""

    position: str

    def holds(self, item: Item | None) -> bool:
        return item is None or str(item.get(POSITION, "")) < self.position


@dataclass(frozen=True, slots=True)
class HeldBy:
    """An IN_PROGRESS claim whose owner token is ``owner``."""

    owner: str

    def holds(self, item: Item | None) -> bool:
        return (
            item is not None
            and item.get(STATUS) == MarkStatus.IN_PROGRESS.value
            and item.get(OWNER) == self.owner
        )


@dataclass(frozen=True, slots=True)
class AbsentOrClaimExpired:
    """No item, or an IN_PROGRESS claim that expired before ``now`` (epoch milliseconds)."""

    now_ms: int

    def holds(self, item: Item | None) -> bool:
        return item is None or (
            item.get(STATUS) == MarkStatus.IN_PROGRESS.value
            and int(item.get(CLAIM_EXPIRES_AT, 0)) < self.now_ms
        )


@dataclass(frozen=True, slots=True)
class ClaimExpiredFor:
    """An IN_PROGRESS claim of ``owner`` that expired before ``now_ms``."""

    owner: str
    now_ms: int

    def holds(self, item: Item | None) -> bool:
        return HeldBy(self.owner).holds(item) and int(item.get(CLAIM_EXPIRES_AT, 0)) < self.now_ms  # type: ignore[union-attr]


Condition = Absent | PositionBelow | HeldBy | AbsentOrClaimExpired | ClaimExpiredFor


# --- operations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Put:
    """Write the whole item under ``key``."""

    key: str
    item: Item
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """Set attributes of the item under ``key`` (creating it if absent and allowed)."""

    key: str
    values: Item
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the item under ``key`` (if ``condition`` holds)."""

    key: str
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class Increment:
    """Add ``by`` to the number ``attribute`` of the item under ``key`` and set ``values``.

    An absent item or attribute counts from 0, so concurrent increments never
    lose one: counting needs no read-modify-write.
    """

    key: str
    attribute: str
    by: int = 1
    values: Item = field(default_factory=dict)
    condition: Condition | None = None


Op = Put | Update | Delete | Increment


class LedgerConflictError(KinesisEOError):
    """Some conditions of an atomic write did not hold; nothing was written.

    ``failed`` maps the index of each failed operation to the item as it was
    (None if absent or not returned). Indexes past the ledger's own operations
    belong to the extra writes (sink writes, fencing checks), in their order.
    """

    def __init__(self, failed: Mapping[int, Item | None]) -> None:
        super().__init__(f"conditions failed at operations {sorted(failed)}")
        self.failed = dict(failed)


# The name before errors took the Error suffix; kept for existing imports.
LedgerConflict = LedgerConflictError


class PayloadMismatchError(KinesisEOError):
    """One ledger key, two payloads: reported, never applied or dropped silently."""

    def __init__(self, key: str, record: Record, stored_hash: str) -> None:
        super().__init__(
            f"ledger key {key!r} was committed for a different payload "
            f"(stored {stored_hash}, now {payload_hash(record.data)}) at {record.shard_id} "
            f"{record.position}: two events share an id"
        )
        self.key = key
        self.record = record
        self.stored_hash = stored_hash
