"""What happened to a batch, for metrics and for the caller's checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from kinesis_eo.deadletter import DeadLetter
from kinesis_eo.ledger import PayloadMismatchError
from kinesis_eo.records import Record

__all__ = ["BatchReport"]


@dataclass
class BatchReport:
    """What happened to a batch, for metrics and for the caller's checkpoint."""

    applied: list[Record] = field(default_factory=list)
    duplicates: list[Record] = field(default_factory=list)
    dead_lettered: list[DeadLetter] = field(default_factory=list)
    mismatched: list[PayloadMismatchError] = field(default_factory=list)
    # Records a gate or an outage stopped: neither applied nor marked; deliver them again.
    deferred: list[Record] = field(default_factory=list)
    attempts: int = 0
    ledger_writes: int = 0
    # The outage that stopped the batch part-way (the handler's sink was unavailable):
    # what came before it is committed, what is deferred waits for the world to recover.
    outage: BaseException | None = None

    def merge(self, other: BatchReport) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.dead_lettered += other.dead_lettered
        self.mismatched += other.mismatched
        self.deferred += other.deferred
        self.attempts += other.attempts
        self.ledger_writes += other.ledger_writes
        self.outage = self.outage or other.outage
