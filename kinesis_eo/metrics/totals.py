"""A run's totals: what a consumer, worker or Lambda handler did since it started, in one place.

The dimensional metrics (:mod:`kinesis_eo.metrics.model`) go to a back-end and
are drained there; these plain totals stay with the runtime, for its return
value, its health file and tests. Both are updated by the same calls in
:mod:`kinesis_eo.metrics.batches`, so they cannot disagree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields

__all__ = ["RunTotals"]

# Earlier spellings of a total, still readable and countable under that name.
_ALIASES = {"shards_finished": "shards_ended"}


@dataclass
class RunTotals:
    """Totals of one run. ``count(**amounts)`` is thread-safe (a worker's shard threads share one).

    ``delivered`` counts records read, ``applied`` records whose effect
    committed, ``duplicates`` every record found done already (of which
    ``duplicates_inbound`` were sent again by a producer under a new position;
    the rest were read again), ``mismatched`` payloads that clashed with a
    committed key, ``dead_lettered`` records sent to the dead-letter target.
    """

    batches: int = 0
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    duplicates_inbound: int = 0
    dead_lettered: int = 0
    mismatched: int = 0
    handler_errors: int = 0
    commit_conflicts: int = 0
    ledger_writes: int = 0
    checkpoints: int = 0
    shards_ended: int = 0
    # Batches held back by an outage and tried again (nothing dead-lettered for it).
    outage_pauses: int = 0
    fenced_commits: int = 0
    leases_taken: int = 0
    leases_stolen: int = 0
    leases_lost: int = 0
    leases_released: int = 0
    loop_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def shards_finished(self) -> int:
        """Shards read to their end (the consumer's earlier name for ``shards_ended``)."""
        return self.shards_ended

    @shards_finished.setter
    def shards_finished(self, value: int) -> None:
        self.shards_ended = value

    def count(self, **amounts: int) -> None:
        """Add each amount to the total of that name."""
        with self._lock:
            for name, amount in amounts.items():
                name = _ALIASES.get(name, name)
                setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, int]:
        """Every total by name (the health file's ``metrics``)."""
        # Not dataclasses.asdict: it would try to deep-copy the lock.
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}
