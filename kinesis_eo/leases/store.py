"""Lease stores: list, create, and conditionally update leases, in memory (DynamoDB: dynamodb.py).

As with the ledger, the protocol (taking, renewing, stealing, checkpointing)
lives once in :mod:`kinesis_eo.leases.manager`; a store fills in these
primitives, as flows, and both stores pass the same contract tests. A store
also builds the *fence*: the check a ledger commit carries so that it only
succeeds while the lease is still held by the same acquisition.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kinesis_eo.errors import KinesisEOError
from kinesis_eo.leases.model import (
    CHECKPOINT,
    CHILDREN,
    HANDOFF,
    MILLIS_BEHIND,
    OWNER,
    OWNER_SWITCHES,
    PARENTS,
    RECORDS_PROCESSED,
    SUB_SEQUENCE,
    THROUGHPUT,
    TOKEN,
    Lease,
    WorkerReport,
    is_entity_key,
)
from kinesis_eo.ledger.store import MemoryWrite

__all__ = [
    "Change",
    "Held",
    "LeaseCondition",
    "LeaseConflict",
    "LeaseConflictError",
    "LeaseStore",
    "LeaseValue",
    "MemoryLeaseStore",
    "TableSnapshot",
    "Unchanged",
]

LeaseValue = str | int | float | frozenset[str]


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The lease is as last seen: same counter, same owner (None: free).

    With ``checkpoint``, the checkpoint must be that too: a checkpoint write
    does not bump the counter, so the counter alone does not prove it unchanged.
    """

    counter: int
    owner: str | None
    checkpoint: str | None = None

    def holds(self, lease: Lease | None) -> bool:
        return (
            lease is not None
            and lease.counter == self.counter
            and lease.owner == self.owner
            and (self.checkpoint is None or lease.checkpoint == self.checkpoint)
        )


@dataclass(frozen=True, slots=True)
class Held:
    """The lease is still held by this acquisition (owner and token)."""

    owner: str
    token: str

    def holds(self, lease: Lease | None) -> bool:
        return lease is not None and lease.owner == self.owner and lease.token == self.token


LeaseCondition = Unchanged | Held


@dataclass(frozen=True, slots=True)
class Change:
    """What a lease write sets, removes, and whether it bumps the counter."""

    set: Mapping[str, LeaseValue] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    bump_counter: bool = False


class LeaseConflictError(KinesisEOError):
    """The condition of a lease write failed; ``current`` is the lease as it is (if known)."""

    def __init__(self, shard_id: str, current: Lease | None) -> None:
        super().__init__(f"the lease of {shard_id} changed hands or was never there")
        self.current = current


# The name before errors took the Error suffix; kept for existing imports.
LeaseConflict = LeaseConflictError


@dataclass(frozen=True, slots=True)
class TableSnapshot:
    """The whole lease table as one scan saw it: leases, workers' reports, the coordinator."""

    leases: list[Lease]
    workers: list[WorkerReport]
    coordinator: Lease | None


class LeaseStore(ABC):
    """Where leases live; every write is conditional, and ``fence`` gives the commit guard for a
    held lease.
    """

    @abstractmethod
    def list_leases(self) -> Generator[Any, Any, list[Lease]]:
        """Every lease (strongly consistent)."""

    def snapshot(self, consistent: bool = True) -> Generator[Any, Any, TableSnapshot]:
        """Every item of the table: what the coordinator decides on.

        ``consistent=False`` reads at half the cost; the coordinator can, as
        every write it makes is conditional on what it read.
        """
        leases = yield from self.list_leases()
        return TableSnapshot(leases, [], None)

    def owned_keys(self, owner: str) -> Generator[Any, Any, list[str]]:
        """The keys of the items naming ``owner`` (eventually consistent; the coordinator's too)."""
        leases = yield from self.list_leases()
        return [lease.shard_id for lease in leases if lease.owner == owner]

    def get(self, key: str, consistent: bool = True) -> Generator[Any, Any, Lease | None]:
        """One lease (or the coordinator's item) as it is now, or None."""
        leases = yield from self.list_leases()
        return next((lease for lease in leases if lease.shard_id == key), None)

    def report(self, report: WorkerReport) -> Generator[Any, Any, None]:
        """Write this worker's report and move its counter: it is alive."""
        raise NotImplementedError(f"{type(self).__name__} keeps no workers' reports")
        yield  # a flow

    def remove_report(self, worker_id: str) -> Generator[Any, Any, None]:
        """Delete a worker's report (it left, or died long ago)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no workers' reports")
        yield  # a flow

    @abstractmethod
    def create(self, lease: Lease) -> Generator[Any, Any, bool]:
        """Create ``lease`` unless one exists for the shard; True if it was created."""

    @abstractmethod
    def update(
        self, shard_id: str, change: Change, condition: LeaseCondition
    ) -> Generator[Any, Any, Lease]:
        """Apply ``change`` if ``condition`` holds; the lease as written, or LeaseConflict."""

    @abstractmethod
    def delete(self, shard_id: str, condition: LeaseCondition) -> Generator[Any, Any, None]:
        """Delete the lease if ``condition`` holds; LeaseConflict if not (or if it is gone)."""

    @abstractmethod
    def fence(self, shard_id: str, owner: str, token: str) -> Any:
        """A check for the ledger's commit: holds while ``owner``'s acquisition holds the lease."""


# --- in memory ----------------------------------------------------------------------------------

_FIELDS = {
    OWNER: "owner",
    TOKEN: "token",
    CHECKPOINT: "checkpoint",
    SUB_SEQUENCE: "checkpoint_sub_sequence",
    OWNER_SWITCHES: "owner_switches",
    PARENTS: "parents",
    CHILDREN: "children",
    MILLIS_BEHIND: "millis_behind_latest",
    RECORDS_PROCESSED: "records_processed",
    THROUGHPUT: "throughput",
    HANDOFF: "handoff_to",
}


class MemoryLeaseStore(LeaseStore):
    """Leases in a dict; fences are :class:`~kinesis_eo.ledger.MemoryWrite` checks.

    The coordinator's item is kept apart in ``entities``, workers' reports in ``workers``.
    """

    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}
        self.entities: dict[str, Lease] = {}
        self.workers: dict[str, WorkerReport] = {}
        self._lock = threading.Lock()

    def _items(self, key: str) -> dict[str, Lease]:
        return self.entities if is_entity_key(key) else self.leases

    def list_leases(self) -> Generator[Any, Any, list[Lease]]:
        with self._lock:
            return sorted(self.leases.values(), key=lambda lease: lease.shard_id)
        yield  # a flow that makes no calls

    def snapshot(self, consistent: bool = True) -> Generator[Any, Any, TableSnapshot]:
        leases = yield from self.list_leases()
        with self._lock:
            workers = sorted(self.workers.values(), key=lambda report: report.worker_id)
            return TableSnapshot(leases, workers, next(iter(self.entities.values()), None))

    def owned_keys(self, owner: str) -> Generator[Any, Any, list[str]]:
        with self._lock:
            items = [*self.leases.values(), *self.entities.values()]
            return sorted(lease.shard_id for lease in items if lease.owner == owner)
        yield  # a flow that makes no calls

    def get(self, key: str, consistent: bool = True) -> Generator[Any, Any, Lease | None]:
        with self._lock:
            return self._items(key).get(key)
        yield  # a flow that makes no calls

    def report(self, report: WorkerReport) -> Generator[Any, Any, None]:
        with self._lock:
            before = self.workers.get(report.worker_id)
            counter = (before.counter if before else 0) + 1
            self.workers[report.worker_id] = replace(report, counter=counter)
        return
        yield  # a flow that makes no calls

    def remove_report(self, worker_id: str) -> Generator[Any, Any, None]:
        with self._lock:
            self.workers.pop(worker_id, None)
        return
        yield  # a flow that makes no calls

    def create(self, lease: Lease) -> Generator[Any, Any, bool]:
        with self._lock:
            items = self._items(lease.shard_id)
            if lease.shard_id in items:
                return False
            items[lease.shard_id] = lease
            return True
        yield  # a flow that makes no calls

    def update(
        self, shard_id: str, change: Change, condition: LeaseCondition
    ) -> Generator[Any, Any, Lease]:
        with self._lock:
            items = self._items(shard_id)
            current = items.get(shard_id)
            if current is None or not condition.holds(current):
                raise LeaseConflict(shard_id, current)
            values: dict[str, Any] = {_FIELDS[k]: v for k, v in change.set.items()}
            values.update({_FIELDS[k]: None for k in change.remove})
            if change.bump_counter:
                values["counter"] = current.counter + 1
            updated = replace(current, **values)
            items[shard_id] = updated
            return updated
        yield  # a flow that makes no calls

    def delete(self, shard_id: str, condition: LeaseCondition) -> Generator[Any, Any, None]:
        with self._lock:
            items = self._items(shard_id)
            current = items.get(shard_id)
            if current is None or not condition.holds(current):
                raise LeaseConflict(shard_id, current)
            del items[shard_id]
            return
        yield  # a flow that makes no calls

    def fence(self, shard_id: str, owner: str, token: str) -> Any:
        held = Held(owner, token)

        def check() -> bool:
            with self._lock:
                return held.holds(self.leases.get(shard_id))

        return MemoryWrite(lambda: None, check=check)
