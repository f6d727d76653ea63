"""Claim, act, complete: for effects that cannot be made idempotent (an e-mail, a card charge).

Before the effect, the record's ledger item goes to ``IN_PROGRESS`` with an
owner token and an expiry; after it, to ``COMPLETED``, only if the token is
still ours. A long effect extends its claim with ``ctx.heartbeat()``. If the
worker dies between act and complete, the claim expires and
:class:`~kinesis_eo.ledger.ExpiredClaimPolicy` decides: run again (at least
once) or quarantine (at most once). Nothing can do better for such an effect:
the crash may fall before or after the effect, and no one can tell which.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Generator, Sequence
from datetime import timedelta
from typing import Any

from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.errors import KinesisEOError, SinkUnavailableError
from kinesis_eo.flow import Sleep
from kinesis_eo.ledger import (
    ClaimLostError,
    ClaimOutcome,
    Entry,
    ExpiredClaimPolicy,
    Ledger,
    LedgerMode,
    MarkStatus,
)
from kinesis_eo.records import Record
from kinesis_eo.sinks.base import (
    BatchReport,
    DeadLetterSink,
    EffectContext,
    FailurePolicy,
    FlowRunner,
    Gate,
    RecordHandler,
    SinkBase,
)
from kinesis_eo.sinks.lanes import in_lanes

__all__ = [
    "ClaimExpiredError",
    "ClaimSink",
]

log = logging.getLogger(__name__)


class ClaimExpiredError(KinesisEOError):
    """Why a quarantined record was dead-lettered."""


class ClaimSink(SinkBase):
    """Runs a non-idempotent effect under a claim.

    ``run_flow`` runs a ledger flow for the heartbeat that handlers call in
    the middle of an effect; the consumer sets it (sync: a function; asyncio:
    a coroutine function, so handlers ``await ctx.heartbeat()``).
    """

    def __init__(
        self,
        ledger: Ledger,
        handler: RecordHandler,
        *,
        claim_for: timedelta = timedelta(minutes=5),
        expired_claims: ExpiredClaimPolicy = ExpiredClaimPolicy.QUARANTINE,
        owner: str | None = None,
        policy: FailurePolicy | None = None,
        dead_letters: DeadLetterSink | None = None,
        run_flow: FlowRunner | None = None,
    ) -> None:
        super().__init__(ledger, handler, policy=policy, dead_letters=dead_letters)
        self.claim_for = claim_for
        self.expired_claims = expired_claims
        self.owner = owner or uuid.uuid4().hex
        self.run_flow = run_flow
        self.claims_lost = 0

    def bind(self, run_flow: FlowRunner) -> None:
        """The heartbeat runs its ledger write with the runtime's clients, unless given its own."""
        if self.run_flow is None:
            self.run_flow = run_flow

    def context(self, record: Record, attempt_number: int) -> EffectContext:
        """The handler's context for ``record``, whose ``heartbeat`` extends the record's claim."""

        def heartbeat() -> Any:
            if self.run_flow is None:
                raise RuntimeError("heartbeat needs the sink to run under a consumer")
            return self.run_flow(self.ledger.heartbeat(record, self.owner, self.claim_for))

        return EffectContext(None, attempt_number, heartbeat, key_of=lambda: self.key_of(record))

    def process(
        self, records: Sequence[Record], guards: Sequence[Any] = (), gate: Gate | None = None
    ) -> Generator[Any, Any, BatchReport]:
        """A flow: claim, act and complete each new record of a batch; what became of each."""
        report = BatchReport()
        new, entries = yield from self.prepare(records, report)
        if self.lanes > 1 and gate is None:
            found = yield from in_lanes(new, self.lanes, self._claim_and_act, report)
        else:
            found = []
            for record in new:
                found.append((yield from self._claim_step(record, report, gate)))
        entries += [entry for entry in found if entry is not None]
        if self.ledger.config.mode is LedgerMode.WATERMARK:
            # The claims are the per-record marks; the watermark only spares re-reading
            # (and covers the undecodable records prepare dead-lettered).
            marks = [Entry(r) for r in records]
            started = time.perf_counter()
            result = yield from self.ledger.commit(self.before_deferred(marks, report), guards)
            report.commit_conflicts += result.conflicts
            report.commit_seconds.append(time.perf_counter() - started)
        else:
            yield from self.commit(entries, guards, report)
        return report

    def _claim_step(
        self, record: Record, report: BatchReport, gate: Gate | None
    ) -> Generator[Any, Any, Entry | None]:
        if gate is not None and report.outage is None and not (yield from gate.admit(record)):
            report.deferred.append(record)
            return None
        return (yield from self._claim_and_act(record, report, gate))

    def _claim_and_act(
        self, record: Record, report: BatchReport, gate: Gate | None = None
    ) -> Generator[Any, Any, Entry | None]:
        if report.outage is not None:
            report.deferred.append(record)
            return None
        while True:
            outcome = yield from self.ledger.claim(
                record, self.owner, self.claim_for, self.expired_claims
            )
            if outcome is not ClaimOutcome.HELD:
                break
            if gate is not None and not (yield from gate.admit(record)):
                report.deferred.append(record)
                return None
            # Another owner (or our own earlier life) holds it: wait for it to finish or expire.
            yield Sleep(min(self.claim_for.total_seconds() / 4, 5.0))
        if outcome is ClaimOutcome.DONE:
            report.duplicates.append(record)
            return None
        if outcome is ClaimOutcome.QUARANTINED:
            error = ClaimExpiredError(
                "the claim expired before completion: the effect may or may not have happened"
            )
            yield from self.dead_letter(record, DeadLetterReason.CLAIM_EXPIRED, error, 0, report)
            return None
        try:
            acted = yield from self.run_handler(record)
        except SinkUnavailableError as exc:
            # The world is down: give the claim back so the retry after the outage can take it.
            yield from self.ledger.release(record, self.owner)
            report.outage = exc
            report.deferred.append(record)
            return None
        report.took(acted)
        if acted.ok:
            try:
                yield from self.ledger.complete(record, self.owner)
            except ClaimLostError:
                # The effect ran, but our claim expired and someone took it over.
                self.claims_lost += 1
                log.error(
                    "claim lost after the effect ran for %s %s", record.shard_id, record.position
                )
                return None
            report.applied.append(record)
            return None
        assert acted.error is not None
        yield from self.ledger.release(record, self.owner)
        if gate is not None and not (
            yield from gate.on_failure(record, acted.error, acted.attempts)
        ):
            report.deferred.append(record)
            return None
        yield from self.dead_letter(
            record, DeadLetterReason.PROCESSING_FAILED, acted.error, acted.attempts, report
        )
        return Entry(record, status=MarkStatus.DEAD_LETTERED)
