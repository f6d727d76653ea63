"""What every sink shares: the template of processing a batch, and dead-lettering.

A sink processes one shard's batch as a flow: screen it against the ledger,
run the user's handler for what is new (retrying per the failure policy,
:mod:`kinesis_eo.sinks.policy`), dead-letter what keeps failing, and commit
the marks. Handlers are plain callables, sync or async; the flow calls them
through :class:`Invoke`, so one sink serves the sync and the asyncio consumer.
What sinks and callers agree on is in :mod:`kinesis_eo.sinks.protocols`, the
batch report in :mod:`kinesis_eo.sinks.report`, outages in
:mod:`kinesis_eo.sinks.outages`; their names are importable from here too.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime
from typing import Any

from kinesis_eo.aggregation import MAGIC
from kinesis_eo.deadletter import DeadLetter, DeadLetterReason
from kinesis_eo.errors import InvalidWriteError, KinesisEOError, SinkUnavailableError
from kinesis_eo.flow import Invoke
from kinesis_eo.ledger import Entry, Ledger, LedgerMode, MarkStatus
from kinesis_eo.records import Record
from kinesis_eo.sinks.lanes import in_lanes
from kinesis_eo.sinks.outages import OutageBackoff, process_through_outages
from kinesis_eo.sinks.policy import Attempted, FailurePolicy, attempt
from kinesis_eo.sinks.protocols import (
    BatchHandler,
    DeadLetterSink,
    EffectContext,
    FlowRunner,
    Gate,
    RecordHandler,
    Sink,
)
from kinesis_eo.sinks.report import BatchReport

__all__ = [
    "Attempted",
    "BatchHandler",
    "BatchReport",
    "DeadLetterSink",
    "EffectContext",
    "FailurePolicy",
    "FlowRunner",
    "Gate",
    "OutageBackoff",
    "PoisonRecordError",
    "RecordHandler",
    "Sink",
    "SinkBase",
    "attempt",
    "idempotency_key",
    "process_through_outages",
    "send_dead_letter",
]


class PoisonRecordError(KinesisEOError):
    """A record failed every attempt and there is no dead-letter target to put it in.

    Raised instead of dropping the record: the shard stops here until a
    target is configured or the handler is fixed.
    """


def idempotency_key(ledger: Ledger, record: Record) -> str:
    """A compact stable key (64 hex characters): fits SQS, S3 and HTTP headers alike."""
    return hashlib.sha256(ledger.record_key(record).encode("utf-8", "surrogatepass")).hexdigest()


def send_dead_letter(
    ledger: Ledger,
    dead_letters: DeadLetterSink | None,
    record: Record,
    reason: DeadLetterReason,
    error: BaseException,
    attempts: int,
    failure: str = "",
) -> Generator[Any, Any, DeadLetter]:
    """Send ``record``'s dead letter to ``dead_letters``; without a target, a poison record stops
    the shard (``PoisonRecordError``). ``failure`` says what went wrong, for that error.
    """
    letter = DeadLetter.from_exception(
        record,
        reason,
        error,
        attempts=attempts,
        consumer_group=ledger.config.consumer_group,
        failed_at=datetime.now(UTC),
    )
    if dead_letters is None:
        failure = failure or f"failed {attempts} time(s)"
        raise PoisonRecordError(
            f"record {letter.describe()} {failure} ({letter.error}) "
            "and no dead-letter target is configured"
        ) from error
    yield Invoke(dead_letters.send, ([letter],))
    return letter


class SinkBase:
    """The steps every sink takes around its own way of applying effects.

    :meth:`process` is the template: screen, run the handlers, turn each
    outcome into a ledger entry (:meth:`entry_for`, the one step each sink
    fills in), and commit.
    """

    def __init__(
        self,
        ledger: Ledger,
        handler: RecordHandler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        policy: FailurePolicy | None = None,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("give a sink either a handler or a batch_handler")
        self.ledger = ledger
        self.handler = handler
        self.batch_handler = batch_handler
        self.policy = policy or FailurePolicy()
        self.dead_letters = dead_letters

    # Partition keys applied at once (see kinesis_eo.sinks.lanes); the runtime sets it.
    lanes = 1

    def key_of(self, record: Record) -> str:
        return idempotency_key(self.ledger, record)

    def bind(self, run_flow: FlowRunner) -> None:
        """Called by the runtime that drives this sink (consumer, worker, Lambda handler)
        with the way it runs a flow, for sinks that run flows of their own outside
        :meth:`process`. Most sinks need nothing."""

    def process(
        self, records: Sequence[Record], guards: Sequence[Any] = (), gate: Gate | None = None
    ) -> Generator[Any, Any, BatchReport]:
        """Apply one shard's batch: the flow every runtime drives."""
        report = BatchReport()
        new, entries = yield from self.prepare(records, report)
        outcomes = yield from self.run_handlers(new, report, gate)
        for record, outcome in zip(new, outcomes, strict=True):
            if outcome.deferred:
                report.deferred.append(record)
                continue
            entry = yield from self.entry_for(record, outcome, report)
            if entry is not None:
                entries.append(entry)
        yield from self.commit(entries, guards, report, self.retry_rejected(report))
        return report

    def entry_for(
        self, record: Record, outcome: Attempted, report: BatchReport
    ) -> Generator[Any, Any, Entry | None]:
        """The ledger entry for a record's outcome: its mark, or its dead letter's mark."""
        if outcome.ok:
            return Entry(record)
        assert outcome.error is not None
        yield from self.dead_letter(
            record, DeadLetterReason.PROCESSING_FAILED, outcome.error, outcome.attempts, report
        )
        return Entry(record, status=MarkStatus.DEAD_LETTERED)

    def retry_rejected(
        self, report: BatchReport
    ) -> Callable[[Record, int, str], Generator[Any, Any, Entry | None]] | None:
        """How to try again a record whose own writes a commit refused (sinks with writes)."""
        return None

    def context(self, record: Record, attempt_number: int) -> EffectContext:
        return EffectContext(None, attempt_number, key_of=lambda: self.key_of(record))

    def run_handlers(
        self, records: Sequence[Record], report: BatchReport, gate: Gate | None = None
    ) -> Generator[Any, Any, list[Attempted]]:
        """One outcome per record, in order: the whole batch at once where the
        handler takes batches, one record at a time to single out a poison record."""
        batch = list(records)
        if gate is not None and self.batch_handler is not None and len(batch) > 1:
            batch = yield from self._admitted(batch, gate)
        if self.batch_handler is not None and len(batch) > 1:
            try:
                whole = yield from attempt(
                    self.batch_handler,
                    lambda n: (batch, [self.context(r, n) for r in batch]),
                    self.policy,
                )
            except SinkUnavailableError as exc:
                report.outage = exc
                return [Attempted(deferred=True) for _ in records]
            report.took(whole)
            if whole.ok:
                values = list(whole.value) if whole.value is not None else [None] * len(batch)
                if len(values) != len(batch):
                    raise TypeError(
                        f"a batch handler returned {len(values)} results for {len(batch)} records"
                    )
                refused = [Attempted(deferred=True) for _ in range(len(records) - len(batch))]
                return [Attempted(value, None, whole.attempts) for value in values] + refused
        if self.lanes > 1 and gate is None:
            return (yield from in_lanes(records, self.lanes, self._record_step, report))
        outcomes = []
        for record in records:
            outcomes.append((yield from self._record_step(record, report, gate)))
        return outcomes

    def _record_step(
        self, record: Record, report: BatchReport, gate: Gate | None = None
    ) -> Generator[Any, Any, Attempted]:
        """One record's outcome in :meth:`run_handlers`' record-at-a-time loop (or a lane)."""
        if report.outage is not None or (gate is not None and not (yield from gate.admit(record))):
            return Attempted(deferred=True)
        try:
            outcome = yield from self.run_handler(record)
        except SinkUnavailableError as exc:
            # Commit what came before; this record and the rest wait for the outage to end.
            report.outage = exc
            return Attempted(deferred=True)
        report.took(outcome)
        if outcome.error is not None and gate is not None:
            dead_letter_now = yield from gate.on_failure(record, outcome.error, outcome.attempts)
            outcome.deferred = not dead_letter_now
        return outcome

    @staticmethod
    def admits(record: Record, report: BatchReport, gate: Gate | None) -> Generator[Any, Any, bool]:
        """Whether to go on with ``record``: not after an outage, nor past the gate."""
        if report.outage is not None:
            return False
        return gate is None or (yield from gate.admit(record))

    @staticmethod
    def _admitted(records: list[Record], gate: Gate) -> Generator[Any, Any, list[Record]]:
        """The records ``gate`` admits before it refuses one."""
        for index, record in enumerate(records):
            if not (yield from gate.admit(record)):
                return records[:index]
        return records

    def run_handler(self, record: Record, first_attempt: int = 1) -> Generator[Any, Any, Attempted]:
        """Run the handler for one record under the failure policy."""
        if self.batch_handler is not None:
            outcome = yield from attempt(
                self.batch_handler,
                lambda n: ([record], [self.context(record, n)]),
                self.policy,
                first_attempt,
            )
            if outcome.ok and outcome.value is not None:
                (outcome.value,) = outcome.value
            return outcome
        assert self.handler is not None
        return (
            yield from attempt(
                self.handler,
                lambda n: (record, self.context(record, n)),
                self.policy,
                first_attempt,
            )
        )

    # Whether screening may skip reading the ledger because the commit's
    # conditions catch what was done before (true of the transactional sink).
    commit_detects_duplicates = False

    def prepare(
        self, records: Sequence[Record], report: BatchReport
    ) -> Generator[Any, Any, tuple[list[Record], list[Entry]]]:
        """Screen a batch: the new records, and marks for the ones dead-lettered on sight."""
        # Undecodable records are screened too: a replay must not dead-letter them again.
        screened = yield from self.ledger.screen(records, read=not self.commit_detects_duplicates)
        undecodable = [r for r in screened.new if r.deaggregation_error is not None]
        decodable = [r for r in screened.new if r.deaggregation_error is None]
        report.duplicates += screened.duplicates
        report.inbound_duplicates += screened.inbound
        report.mismatched += screened.mismatched
        # A clashing payload cannot be marked (its key is taken): dead-letter it so it is seen.
        for mismatch in screened.mismatched:
            yield from self.dead_letter(
                mismatch.record, DeadLetterReason.PAYLOAD_MISMATCH, mismatch, 0, report
            )
        marks: list[Entry] = []
        for record in undecodable:
            kpl = record.data.startswith(MAGIC)
            what = "corrupt KPL aggregate" if kpl else "undecodable record"
            error = ValueError(f"{what}: {record.deaggregation_error}")
            yield from self.dead_letter(record, DeadLetterReason.UNDECODABLE, error, 0, report)
            marks.append(Entry(record, status=MarkStatus.DEAD_LETTERED))
        return decodable, marks

    def dead_letter(
        self,
        record: Record,
        reason: DeadLetterReason,
        error: BaseException,
        attempts: int,
        report: BatchReport,
    ) -> Generator[Any, Any, None]:
        letter = yield from send_dead_letter(
            self.ledger, self.dead_letters, record, reason, error, attempts
        )
        report.dead_lettered.append(letter)

    def commit(
        self,
        entries: Sequence[Entry],
        guards: Sequence[Any],
        report: BatchReport,
        retry_rejected: Callable[[Record, int, str], Generator[Any, Any, Entry | None]]
        | None = None,
    ) -> Generator[Any, Any, None]:
        """Commit marks and writes; a record whose writes are refused is tried again."""
        pending = self.before_deferred(sorted(entries, key=lambda e: e.record.position), report)
        tries: dict[int, int] = {}
        while pending:
            dead = {id(e.record) for e in pending if e.status is MarkStatus.DEAD_LETTERED}
            started = time.perf_counter()
            result = yield from self.ledger.commit(pending, guards)
            report.committed(result, time.perf_counter() - started)
            report.applied += [r for r in result.committed if id(r) not in dead]
            for mismatch in result.mismatched:
                yield from self.dead_letter(
                    mismatch.record, DeadLetterReason.PAYLOAD_MISMATCH, mismatch, 0, report
                )
            again: list[Entry] = []
            for record, reason in result.invalid:
                error = InvalidWriteError(f"DynamoDB refused the record's writes: {reason}")
                yield from self.dead_letter(
                    record, DeadLetterReason.INVALID_WRITE, error, 1, report
                )
                again.append(Entry(record, status=MarkStatus.DEAD_LETTERED))
            for record, reason in result.rejected:
                if retry_rejected is None:
                    raise AssertionError(f"a sink without writes had a write refused: {reason}")
                tries[id(record)] = tries.get(id(record), 1) + 1
                entry = yield from retry_rejected(record, tries[id(record)], reason)
                if entry is not None:
                    again.append(entry)
            pending = sorted(again + list(result.held_back), key=lambda e: e.record.position)

    def before_deferred(self, entries: Sequence[Entry], report: BatchReport) -> list[Entry]:
        """The entries a watermark may cover while records of the batch are deferred.

        A watermark past a deferred record would make its next delivery a
        duplicate; what comes after it waits for that delivery too.
        """
        if not report.deferred or self.ledger.config.mode is not LedgerMode.WATERMARK:
            return list(entries)
        first = min(r.position for r in report.deferred)
        withheld = [e.record for e in entries if e.record.position >= first]
        known = {id(r) for r in report.deferred}
        report.deferred += [r for r in withheld if id(r) not in known]
        return [e for e in entries if e.record.position < first]
