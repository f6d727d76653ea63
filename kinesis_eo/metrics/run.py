"""What a runtime records, in one place: the catalogue's metrics and the run's totals together.

Every runtime (consumer, worker, Lambda handler; sync and asyncio) holds one
:class:`RunMetrics` and calls it at the same moments: a batch read, a batch
processed (its :class:`~kinesis_eo.sinks.BatchReport`), a lease taken or
given up, a round of the coordinator. Each call updates the user's
:class:`~kinesis_eo.metrics.Metrics` back-end with the catalogue's names and
dimensions, and the :class:`~kinesis_eo.metrics.totals.RunTotals` the runtime
returns, so the two cannot disagree. A batch costs a handful of calls with
``value=N``, plus one timing per handler call and per ledger commit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kinesis_eo.metrics import catalogue as names
from kinesis_eo.metrics.model import Metrics, NullMetrics
from kinesis_eo.metrics.totals import RunTotals
from kinesis_eo.records import Record

if TYPE_CHECKING:
    from kinesis_eo.sinks.report import BatchReport

__all__ = ["RunMetrics"]

log = logging.getLogger(__name__)


class RunMetrics:
    """A runtime's recording: ``metrics`` (the back-end) and ``totals`` (this run's sums)."""

    def __init__(self, metrics: Metrics | None = None, totals: RunTotals | None = None) -> None:
        self.metrics: Metrics = metrics if metrics is not None else NullMetrics()
        self.totals = totals if totals is not None else RunTotals()
        self._flush_failed = False

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded beyond the totals (worth hooking clients for)."""
        return not isinstance(self.metrics, NullMetrics)

    def read(self, shard: str, records: Sequence[Record], millis_behind: int | None) -> None:
        """A batch read from a shard (records may be empty: an idle shard still has a lag)."""
        self.totals.count(batches=1, delivered=len(records))
        if records and self.enabled:  # no sum over every record's bytes for nothing
            self.metrics.count(names.RECORDS_READ, len(records), shard=shard)
            self.metrics.count(names.BYTES_READ, sum(len(r.data) for r in records), shard=shard)
        if millis_behind is not None:
            self.metrics.gauge(names.MILLIS_BEHIND_LATEST, millis_behind, shard=shard)

    def processed(self, shard: str, report: BatchReport) -> None:
        """What a sink did with a batch: effects, duplicates by kind, dead letters, timings."""
        inbound = len(report.inbound_duplicates)
        redelivered = report.redelivered_duplicates
        self.totals.count(
            applied=len(report.applied),
            duplicates=len(report.duplicates),
            duplicates_inbound=inbound,
            dead_lettered=len(report.dead_lettered),
            mismatched=len(report.mismatched),
            handler_errors=report.handler_errors,
            commit_conflicts=report.commit_conflicts,
            ledger_writes=report.ledger_writes,
        )
        metrics = self.metrics
        for name, value in (
            (names.RECORDS_APPLIED, len(report.applied)),
            (names.DUPLICATES_REDELIVERED, redelivered),
            (names.DUPLICATES_INBOUND, inbound),
            (names.PAYLOAD_MISMATCHES, len(report.mismatched)),
            (names.HANDLER_ERRORS, report.handler_errors),
            (names.COMMIT_CONFLICTS, report.commit_conflicts),
        ):
            if value:
                metrics.count(name, value, shard=shard)
        if report.dead_lettered:
            reasons = Counter(letter.reason.value for letter in report.dead_lettered)
            for reason, value in reasons.items():
                metrics.count(names.DEAD_LETTERED, value, shard=shard, reason=reason)
        for seconds in report.handler_seconds:
            metrics.timing(names.HANDLER_LATENCY, seconds, shard=shard)
        for seconds in report.commit_seconds:
            metrics.timing(names.COMMIT_LATENCY, seconds, shard=shard)

    def resubscribed(self, shard: str, counts: Mapping[str, int]) -> None:
        """Subscriptions a shard had to make again, by reason (enhanced fan-out only)."""
        for reason, count in counts.items():
            if count:
                self.metrics.count(names.RESUBSCRIPTIONS, count, shard=shard, reason=reason)

    def outage_pause(self, shard: str) -> None:
        """A batch paused by an outage, to be tried again (nothing dead-lettered)."""
        self.totals.count(outage_pauses=1)
        self.metrics.count(names.OUTAGE_PAUSES, shard=shard)

    def fenced(self, shard: str) -> None:
        """A commit refused because the lease moved to another worker."""
        self.totals.count(fenced_commits=1)
        self.metrics.count(names.FENCED_COMMITS, shard=shard)

    def shard_ended(self) -> None:
        """A shard read to its end (its children are next)."""
        self.totals.count(shards_ended=1)
        self.metrics.count(names.SHARDS_ENDED)

    def checkpointed(self) -> None:
        self.totals.count(checkpoints=1)

    def leases_taken(self, count: int) -> None:
        if count:
            self.totals.count(leases_taken=count)
            self.metrics.count(names.LEASES_TAKEN, count)

    def leases_stolen(self, count: int) -> None:
        """Leases taken from a worker that was still renewing them (balancing)."""
        if count:
            self.totals.count(leases_stolen=count)
            self.metrics.count(names.LEASES_STOLEN, count)

    def lease_released(self) -> None:
        self.totals.count(leases_released=1)
        self.metrics.count(names.LEASES_RELEASED)

    def leases_lost(self, count: int) -> None:
        if count:
            self.totals.count(leases_lost=count)

    def leases_held(self, count: int) -> None:
        self.metrics.gauge(names.LEASES_HELD, count)

    def loop_failed(self) -> None:
        self.totals.count(loop_failures=1)

    def flush(self) -> None:
        """Publish what accumulated, if the back-end writes (EMF); never fails the caller.

        A back-end that cannot write (a closed stream) costs metrics, not records:
        the failure is logged once and the run goes on.
        """
        flush: Any = getattr(self.metrics, "flush", None)
        if flush is None:
            return
        try:
            flush()
        except Exception:
            if not self._flush_failed:
                log.exception("writing metrics failed; processing goes on without them")
            self._flush_failed = True
