"""What happened to a batch, for metrics and for the caller's checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kinesis_eo.deadletter import DeadLetter
from kinesis_eo.ledger import CommitResult, PayloadMismatchError
from kinesis_eo.records import Record

if TYPE_CHECKING:
    from kinesis_eo.sinks.policy import Attempted

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
    # The duplicates that are inbound ones: the event was committed under another
    # position (a producer's retry). The others are redeliveries of a done position.
    inbound_duplicates: list[Record] = field(default_factory=list)
    # Timings for the runtime to record (the sink records nothing itself): each call
    # of the user's handler, and each ledger commit, in seconds.
    handler_seconds: list[float] = field(default_factory=list)
    commit_seconds: list[float] = field(default_factory=list)
    # Handler calls that raised (each failed attempt, before a record is dead-lettered).
    handler_errors: int = 0
    # Ledger conditions that failed in commits: marks someone else had written first.
    commit_conflicts: int = 0

    @property
    def redelivered_duplicates(self) -> int:
        """Duplicates whose own position was already done (read again, not sent again)."""
        return len(self.duplicates) - len(self.inbound_duplicates)

    def took(self, outcome: Attempted, attempts: int | None = None) -> None:
        """Count a handler run: its attempts (``attempts`` when only some are new), timings
        and failures."""
        self.attempts += outcome.attempts if attempts is None else attempts
        self.handler_seconds += outcome.durations
        self.handler_errors += outcome.failures

    def committed(self, result: CommitResult, seconds: float) -> None:
        """Count what a ledger commit found besides what it committed."""
        self.ledger_writes += result.writes
        self.duplicates += result.duplicates
        self.inbound_duplicates += result.inbound
        self.mismatched += result.mismatched
        self.commit_conflicts += result.conflicts
        self.commit_seconds.append(seconds)

    def merge(self, other: BatchReport) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.dead_lettered += other.dead_lettered
        self.mismatched += other.mismatched
        self.deferred += other.deferred
        self.attempts += other.attempts
        self.ledger_writes += other.ledger_writes
        self.outage = self.outage or other.outage
        self.inbound_duplicates += other.inbound_duplicates
        self.handler_seconds += other.handler_seconds
        self.commit_seconds += other.commit_seconds
        self.handler_errors += other.handler_errors
        self.commit_conflicts += other.commit_conflicts
