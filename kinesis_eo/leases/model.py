"""Leases: which worker owns which shard, in the Java KCL's lease-table schema.

| attribute | type | meaning |
| --- | --- | --- |
| ``leaseKey`` | S | the shard id (table key) |
| ``leaseOwner`` | S | the worker holding the lease; absent when free |
| ``leaseCounter`` | N | bumped by every take, renewal and release: others judge expiry by it |
| ``checkpoint`` | S | a sequence number, ``TRIM_HORIZON``, ``LATEST`` or ``SHARD_END`` |
| ``checkpointSubSequenceNumber`` | N | position inside a KPL aggregate |
| ``ownerSwitchesSinceCheckpoint`` | N | owner changes since the last checkpoint |
| ``parentShardId`` | SS | parents; the lease is not taken before they reach ``SHARD_END`` |
| ``childShardIds`` | SS | children, recorded when the shard ends |
| ``startingHashKey``, ``endingHashKey`` | S | the shard's hash key range |
| ``eoOwnerToken`` | S | kinesis_eo: a fresh token per acquisition, the fencing token |
| ``eoMillisBehindLatest`` | N | kinesis_eo: the owner's last lag, for ``kinesis-eo status`` |
| ``eoRecordsProcessed`` | N | kinesis_eo: records its holders processed, for ``status --watch`` |

The KCL ignores attributes it does not know, so a table moves between the two.
The fencing token is separate from the counter on purpose: a renewal bumps the
counter, and a routine renewal must not make an honest commit fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from kinesis_eo.errors import KinesisEOError
from kinesis_eo.records import HashKeyRange, Position

__all__ = [
    "CHECKPOINT",
    "CHILDREN",
    "COUNTER",
    "ENDING_HASH_KEY",
    "LEASE_KEY",
    "MILLIS_BEHIND",
    "OWNER",
    "OWNER_SWITCHES",
    "PARENTS",
    "RECORDS_PROCESSED",
    "STARTING_HASH_KEY",
    "SUB_SEQUENCE",
    "TOKEN",
    "Lease",
    "LeaseConfig",
    "LeaseLostError",
    "Sentinel",
]

LEASE_KEY = "leaseKey"
OWNER = "leaseOwner"
COUNTER = "leaseCounter"
CHECKPOINT = "checkpoint"
SUB_SEQUENCE = "checkpointSubSequenceNumber"
OWNER_SWITCHES = "ownerSwitchesSinceCheckpoint"
PARENTS = "parentShardId"
CHILDREN = "childShardIds"
STARTING_HASH_KEY = "startingHashKey"
ENDING_HASH_KEY = "endingHashKey"
TOKEN = "eoOwnerToken"
MILLIS_BEHIND = "eoMillisBehindLatest"
# Records its holders have processed, written with each checkpoint: `status --watch` rates.
RECORDS_PROCESSED = "eoRecordsProcessed"


class Sentinel(Enum):
    """Checkpoint values that are not sequence numbers (the KCL's spelling)."""

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    SHARD_END = "SHARD_END"


class LeaseLostError(KinesisEOError):
    """A lease write found the lease in other hands: stop working on the shard."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One shard's lease as stored in the lease table (the KCL's schema plus the fencing token
    ``eoOwnerToken``).
    """

    shard_id: str
    counter: int = 0
    owner: str | None = None
    token: str | None = None
    checkpoint: str = Sentinel.TRIM_HORIZON.value
    checkpoint_sub_sequence: int = 0
    owner_switches: int = 0
    parents: frozenset[str] = field(default_factory=frozenset)
    children: frozenset[str] = field(default_factory=frozenset)
    hash_range: HashKeyRange | None = None
    millis_behind_latest: int | None = None
    records_processed: int | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == Sentinel.SHARD_END.value

    @property
    def position(self) -> Position | None:
        """The checkpointed position, if the checkpoint is a sequence number."""
        if self.checkpoint.isdigit():
            return Position(self.checkpoint, self.checkpoint_sub_sequence)
        return None


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """Timing of lease ownership, near the KCL's defaults.

    A lease is expired when its counter has not moved for ``failover_s`` as
    measured on the observer's own monotonic clock, so hosts' clocks are never
    compared. Owners renew every ``renew_interval_s`` (a third of the failover
    time leaves two renewals of slack); takers look every ``take_interval_s``.
    The leases of finished shards whose children are under way are removed at
    most every ``cleanup_interval_s`` (the KCL's lease cleanup interval).
    """

    table_name: str
    failover_s: float = 10.0
    renew_interval_s: float | None = None
    take_interval_s: float | None = None
    max_steals_per_round: int = 1
    max_leases_per_worker: int | None = None
    cleanup_interval_s: float = 60.0

    def __post_init__(self) -> None:
        # A renewal is a conditional write per lease, a DynamoDB round trip of tens of
        # milliseconds that a retry or a pause of the process stretches to hundreds.
        # Below a second of failover (a renewal every third of it) one slow renewal
        # lets another worker take the lease: leases flap between workers, each move
        # replays the batch in flight, and every lease costs three writes a second or
        # more. The KCL's default is 10 s; 1 s is the shortest that stays calm.
        min_failover_s = 1.0
        # Renewing or looking for leases more often than this is a busy loop of writes.
        min_interval_s = 0.05
        failover = self.failover_s
        if not min_failover_s <= failover < float("inf"):
            raise ValueError(
                f"failover_s must be at least {min_failover_s:g} s (leases are renewed every "
                f"third of it), got {failover!r}"
            )
        for name in ("renew_interval_s", "take_interval_s"):
            value = getattr(self, name)
            if value is not None and not min_interval_s <= value < float("inf"):
                raise ValueError(f"{name} must be at least {min_interval_s:g} s, got {value!r}")
        if not 0 < self.cleanup_interval_s < float("inf"):
            raise ValueError(
                f"cleanup_interval_s must be a positive number of seconds, "
                f"got {self.cleanup_interval_s!r}"
            )
        renew = self.renew_interval
        if not 0 < renew < self.failover_s:
            raise ValueError("renew_interval_s must be positive and below failover_s")
        if self.max_steals_per_round < 0:
            raise ValueError("max_steals_per_round cannot be negative")
        if self.max_leases_per_worker is not None and self.max_leases_per_worker < 1:
            raise ValueError(
                f"max_leases_per_worker must be at least 1, got {self.max_leases_per_worker}"
            )

    @property
    def renew_interval(self) -> float:
        return self.renew_interval_s or self.failover_s / 3

    @property
    def take_interval(self) -> float:
        return self.take_interval_s or self.renew_interval
