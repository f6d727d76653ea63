"""What every sink shares: the failure policy, dead-lettering, and the batch report.

A sink processes one shard's batch as a flow: screen it against the ledger,
run the user's handler for what is new (retrying per the failure policy),
dead-letter what keeps failing, and commit the marks. Handlers are plain
callables, sync or async; the flow calls them through :class:`Invoke`, so
one sink serves the sync and the asyncio consumer.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kinesis_eo.aggregation import MAGIC
from kinesis_eo.deadletter import DeadLetter, DeadLetterReason
from kinesis_eo.errors import (
    InvalidWriteError,
    KinesisEOError,
    SinkUnavailableError,
    is_outage,
    is_setup_fault,
    translate_aws_error,
)
from kinesis_eo.flow import Invoke, Sleep
from kinesis_eo.ledger import Entry, Ledger, LedgerMode, MarkStatus, PayloadMismatchError
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig, backoff_delay


class PoisonRecordError(KinesisEOError):
    """A record failed every attempt and there is no dead-letter target to put it in.

    Raised instead of dropping the record: the shard stops here until a
    target is configured or the handler is fixed.
    """


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """How often a failing record is tried before it is dead-lettered.

    ``max_attempts`` counts the first try; waits between tries grow from
    ``initial_backoff_s`` up to ``max_backoff_s`` (jittered exponential).
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        RetryConfig(self.max_attempts, self.initial_backoff_s, self.max_backoff_s)  # validates

    @property
    def backoff(self) -> RetryConfig:
        return RetryConfig(self.max_attempts, self.initial_backoff_s, self.max_backoff_s)


@dataclass(frozen=True, slots=True)
class EffectContext:
    """What a handler gets beside its record.

    ``idempotency_key`` is stable for the record in this consumer group: hand
    it to the sink (S3 object key, SQS deduplication id, HTTP
    ``Idempotency-Key``) so that a repeated call changes nothing.
    """

    idempotency_key: str
    attempt: int
    heartbeat: Callable[[], Any] | None = None


class RecordHandler(Protocol):
    """What users implement per record: ``handler(record, ctx)``, sync or ``async def``.

    What it returns depends on the sink: the writes for a transactional sink,
    nothing for the others.
    """

    def __call__(self, record: Record, ctx: EffectContext, /) -> Any: ...


class BatchHandler(Protocol):
    """What users implement per batch: ``handler(records, contexts)``, sync or ``async def``.

    Returns one result per record, in order (or None where the sink wants no
    results). If it raises, the sink calls it again one record at a time, so
    that only a poison record is dead-lettered.
    """

    def __call__(self, records: list[Record], contexts: list[EffectContext], /) -> Any: ...


class Gate(Protocol):
    """Lets the caller of a sink stop a batch part-way, to finish it in a later delivery.

    A Lambda function uses it to stop before its deadline and to leave a failed
    record to the event source mapping's next delivery instead of
    dead-lettering it at once. Both methods are flows. ``admit`` is asked
    before each handler call (and before waiting on another owner's claim);
    ``on_failure`` after a record failed every attempt of the policy, and says
    whether to dead-letter it now (True) or defer it (False). Records refused
    or deferred are not committed and come back in :attr:`BatchReport.deferred`.
    A gate that refused or deferred one record must refuse every later record
    that has to stay in order after it.
    """

    def admit(self, record: Record) -> Generator[Any, Any, bool]: ...

    def on_failure(
        self, record: Record, error: BaseException, attempts: int
    ) -> Generator[Any, Any, bool]: ...


class DeadLetterSink(Protocol):
    """A dead-letter target: sync (``send`` returns None) or async (``send`` is awaitable)."""

    def send(self, letters: Sequence[DeadLetter]) -> Any: ...


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


def idempotency_key(ledger: Ledger, record: Record) -> str:
    """A compact stable key (64 hex characters): fits SQS, S3 and HTTP headers alike."""
    return hashlib.sha256(ledger.record_key(record).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Attempted:
    """The result of running a handler under the failure policy."""

    value: Any = None
    error: BaseException | None = None
    attempts: int = 0
    # A gate left the record for a later delivery (before or after running it).
    deferred: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def attempt(
    function: Callable[..., Any],
    args: Callable[[int], tuple[Any, ...]],
    policy: FailurePolicy,
    first_attempt: int = 1,
) -> Generator[Any, Any, Attempted]:
    """Call ``function(*args(n))`` until it returns, at most up to the policy's limit."""
    outcome = Attempted()
    for number in range(first_attempt, policy.max_attempts + 1):
        if number > first_attempt:
            yield Sleep(backoff_delay(number - 1, policy.backoff))
        outcome.attempts = number
        try:
            outcome.value = yield Invoke(function, args(number))
        except KinesisEOError:
            # Retryable ones are outages (the caller pauses the shard); the others
            # (lost lease, missing table) are not the record's fault either.
            raise
        except Exception as exc:
            if is_outage(exc):
                # The world is down, not the record bad: the caller pauses the shard.
                raise SinkUnavailableError(
                    f"the handler's sink is unavailable: {type(exc).__name__}: {exc}"
                ) from exc
            if is_setup_fault(exc):
                # Denied or missing: no record causes that, and none is dead-lettered.
                raise translate_aws_error(
                    exc, resource="the handler's sink", action="a call"
                ) from exc
            outcome.error = exc  # the handler's own failure: the record may be poison
            continue
        outcome.error = None
        return outcome
    return outcome


FlowRunner = Callable[[Generator[Any, Any, Any]], Any]
"""Runs a flow to its end with the runtime's clients: a function (sync) or a coroutine function."""


class Sink(Protocol):
    """What every runtime (consumer, worker, Lambda handler, redrive) needs of a sink.

    ``bind`` is called once with the runtime's way of running a flow;
    ``process`` is the flow that applies one shard's batch. ``guards`` are
    checks committed with it (the lease's fencing check); ``gate`` lets the
    caller stop part-way (see :class:`Gate`).
    """

    def bind(self, run_flow: FlowRunner) -> None: ...

    def process(
        self, records: Sequence[Record], guards: Sequence[Any] = (), gate: Gate | None = None
    ) -> Generator[Any, Any, BatchReport]: ...


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
        return EffectContext(self.key_of(record), attempt_number)

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
            report.attempts += whole.attempts
            if whole.ok:
                values = list(whole.value) if whole.value is not None else [None] * len(batch)
                if len(values) != len(batch):
                    raise TypeError(
                        f"a batch handler returned {len(values)} results for {len(batch)} records"
                    )
                refused = [Attempted(deferred=True) for _ in range(len(records) - len(batch))]
                return [Attempted(value, None, whole.attempts) for value in values] + refused
        outcomes = []
        for record in records:
            if report.outage is not None or (
                gate is not None and not (yield from gate.admit(record))
            ):
                outcomes.append(Attempted(deferred=True))
                continue
            try:
                outcome = yield from self.run_handler(record)
            except SinkUnavailableError as exc:
                # Commit what came before; this record and the rest wait for the outage to end.
                report.outage = exc
                outcomes.append(Attempted(deferred=True))
                continue
            report.attempts += outcome.attempts
            if outcome.error is not None and gate is not None:
                dead_letter_now = yield from gate.on_failure(
                    record, outcome.error, outcome.attempts
                )
                outcome.deferred = not dead_letter_now
            outcomes.append(outcome)
        return outcomes

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
        letter = DeadLetter.from_exception(
            record,
            reason,
            error,
            attempts=attempts,
            consumer_group=self.ledger.config.consumer_group,
            failed_at=datetime.now(UTC),
        )
        if self.dead_letters is None:
            raise PoisonRecordError(
                f"record {letter.describe()} failed {attempts} time(s) ({letter.error}) "
                "and no dead-letter target is configured"
            ) from error
        yield Invoke(self.dead_letters.send, ([letter],))
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
            result = yield from self.ledger.commit(pending, guards)
            report.ledger_writes += result.writes
            report.applied += [r for r in result.committed if id(r) not in dead]
            report.duplicates += result.duplicates
            report.mismatched += result.mismatched
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


@dataclass(frozen=True, slots=True)
class OutageBackoff:
    """How a shard paused by an outage waits before it tries its batch again.

    Waits double from ``initial_s`` up to ``max_s``, each drawn from the upper
    half of that bound, so that workers paused together do not return together
    and a long outage costs a call every ``max_s`` at most.
    """

    initial_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s < float("inf"):
            raise ValueError("need 0 < initial_s <= max_s for the outage back-off")

    def delay(self, pauses: int) -> float:
        cap = min(self.max_s, self.initial_s * 2.0 ** max(pauses - 1, 0))
        return cap / 2 + random.uniform(0, cap / 2)


def process_through_outages(
    process: Callable[[Sequence[Record]], Generator[Any, Any, BatchReport]],
    records: Sequence[Record],
    backoff: OutageBackoff,
    keep_going: Callable[[], bool],
    on_pause: Callable[[BaseException, float], None],
) -> Generator[Any, Any, BatchReport | None]:
    """Run ``process(records)`` (a sink's flow for one batch) until it gets through outages.

    A retryable failure (throttling, a table or endpoint down, a handler's
    :class:`SinkUnavailableError`) is the world's, not the batch's: nothing
    is dead-lettered and nothing is committed past it; after a back-off the
    records not yet done are processed again, for as long as ``keep_going()``
    says. Returns the whole batch's report, or None if it stopped first.
    """
    total = BatchReport()
    pending = list(records)
    pauses = 0
    while True:
        try:
            report = yield from process(pending)
        except KinesisEOError as exc:
            if not exc.retryable:
                raise
            # A commit or a dead letter failed: what got through shows as duplicates next time.
            outage: BaseException = exc
        else:
            pending, report.deferred = report.deferred, []
            total.merge(report)
            if report.outage is None:
                return total
            outage, total.outage = report.outage, None
        pauses += 1
        delay = backoff.delay(pauses)
        on_pause(outage, delay)
        yield Sleep(delay)
        if not keep_going():
            return None
