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
| ``eoRecordsPerSecond`` | N | kinesis_eo: the holder's measured throughput, for assignment |
| ``eoHandoffTo`` | S | kinesis_eo: the worker the coordinator asks the holder to hand it to |

The owner index ``LeaseOwnerToLeaseKeyIndex`` (hash key ``leaseOwner``, keys
only; the KCL 3.x's) lets a worker read its own leases without a scan. Items
whose key starts with ``eo#`` are not leases: the coordinator's (``eo#coordinator``,
fenced like a lease) and each worker's report (``eo#worker#<id>``).

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
    "CAPACITY",
    "CHECKPOINT",
    "CHILDREN",
    "COORDINATOR_KEY",
    "COUNTER",
    "ENDING_HASH_KEY",
    "ENTITY_PREFIX",
    "HANDOFF",
    "LEASE_KEY",
    "MAX_LEASES",
    "MILLIS_BEHIND",
    "OWNER",
    "OWNER_INDEX",
    "OWNER_SWITCHES",
    "PARENTS",
    "RECORDS_PROCESSED",
    "STARTING_HASH_KEY",
    "SUB_SEQUENCE",
    "THROUGHPUT",
    "TOKEN",
    "WORKER_PREFIX",
    "Lease",
    "LeaseConfig",
    "LeaseLostError",
    "Sentinel",
    "WorkerReport",
    "is_entity_key",
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
# Records per second the holder processed lately: the coordinator balances on it.
THROUGHPUT = "eoRecordsPerSecond"
# Set by the coordinator on a held lease: hand it to this worker at the next checkpoint.
HANDOFF = "eoHandoffTo"
OWNER_INDEX = "LeaseOwnerToLeaseKeyIndex"
# Keys of items that are not leases; no shard id (nor a KCL multi-stream key) starts so.
ENTITY_PREFIX = "eo#"
COORDINATOR_KEY = "eo#coordinator"
WORKER_PREFIX = "eo#worker#"
CAPACITY = "eoCapacity"
MAX_LEASES = "eoMaxLeases"


def is_entity_key(key: str) -> bool:
    """Whether an item of the lease table is the coordinator's or a worker's, not a lease."""
    return key.startswith(ENTITY_PREFIX)


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
    throughput: float | None = None
    handoff_to: str | None = None

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
class WorkerReport:
    """A worker's item in the lease table: alive while ``counter`` moves.

    ``capacity`` weighs the worker's share of the load (1.0: an ordinary one);
    ``max_leases`` is the most it holds (None: no limit).
    """

    worker_id: str
    counter: int = 0
    capacity: float = 1.0
    max_leases: int | None = None


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """Timing of lease ownership, near the KCL's defaults.

    A lease is expired when its counter has not moved for ``failover_s`` as
    measured on the observer's own monotonic clock, so hosts' clocks are never
    compared. Owners renew every ``renew_interval_s`` (a third of the failover
    time leaves two renewals of slack); takers look every ``take_interval_s``.
    The leases of finished shards whose children are under way are removed at
    most every ``cleanup_interval_s`` (the KCL's lease cleanup interval).

    Assignment: one elected coordinator decides who holds what, by measured
    throughput (``balance="throughput"``) or by lease count (``"count"``). It
    moves leases only when a worker's load is off its share by more than
    ``rebalance_threshold`` (the KCL's reBalanceThresholdPercentage, as a
    fraction), at most ``max_moves_per_round`` a round (None: a tenth of the
    leases), and not a lease it moved in the last ``move_cooldown_rounds``
    rounds. A holder asked to hand a lease over does so at its next checkpoint,
    or after ``handoff_timeout_s`` (None: the failover time) if none comes.
    ``capacity`` is this worker's weight (2.0 takes twice an ordinary share);
    ``load_window_s`` the span throughput is measured over.

    Lease-table writes that do not depend on each other (a worker's renewals,
    the coordinator's assignments, a worker's takes) go up to
    ``write_concurrency`` at a time, as the KCL's renewer and assignment
    threads do: one slow round trip must not delay the rest past the failover
    time.
    """

    table_name: str
    failover_s: float = 10.0
    renew_interval_s: float | None = None
    take_interval_s: float | None = None
    max_steals_per_round: int = 1
    max_leases_per_worker: int | None = None
    cleanup_interval_s: float = 60.0
    balance: str = "throughput"
    rebalance_threshold: float = 0.10
    max_moves_per_round: int | None = None
    move_cooldown_rounds: int = 10
    handoff_timeout_s: float | None = None
    capacity: float = 1.0
    load_window_s: float = 30.0
    write_concurrency: int = 20

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
        self._check_assignment()

    def _check_assignment(self) -> None:
        if self.balance not in ("throughput", "count"):
            raise ValueError(f"balance must be 'throughput' or 'count', got {self.balance!r}")
        if not 0 <= self.rebalance_threshold < 1:
            raise ValueError(
                f"rebalance_threshold must be a fraction from 0 to 1, "
                f"got {self.rebalance_threshold!r}"
            )
        if self.max_moves_per_round is not None and self.max_moves_per_round < 0:
            raise ValueError("max_moves_per_round cannot be negative")
        if self.move_cooldown_rounds < 0:
            raise ValueError("move_cooldown_rounds cannot be negative")
        if self.write_concurrency < 1:
            raise ValueError(f"write_concurrency must be at least 1, got {self.write_concurrency}")
        for name in ("handoff_timeout_s", "capacity", "load_window_s"):
            value = getattr(self, name)
            if value is not None and not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number, got {value!r}")

    @property
    def renew_interval(self) -> float:
        return self.renew_interval_s or self.failover_s / 3

    @property
    def take_interval(self) -> float:
        return self.take_interval_s or self.renew_interval

    @property
    def handoff_timeout(self) -> float:
        return self.handoff_timeout_s or self.failover_s
