"""The idempotent-key sink: effects in an external system that deduplicates by key.

S3 objects with deterministic keys, SQS FIFO deduplication ids, HTTP APIs
that honour ``Idempotency-Key``: the handler gets a stable key per record,
is called at least once, and the ledger is marked after it returned. A crash
between the call and the mark repeats the call with the same key, which the
external system absorbs.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.ledger import Entry, Ledger, MarkStatus
from kinesis_eo.records import Record
from kinesis_eo.sinks.base import (
    BatchHandler,
    BatchReport,
    DeadLetterSink,
    FailurePolicy,
    Gate,
    RecordHandler,
    SinkBase,
)


class IdempotentKeySink(SinkBase):
    """Calls ``handler(record, ctx)`` or ``batch_handler(records, contexts)``, then marks."""

    def __init__(
        self,
        ledger: Ledger,
        handler: RecordHandler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        policy: FailurePolicy | None = None,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        super().__init__(ledger, handler, batch_handler, policy, dead_letters)

    def process(
        self, records: Sequence[Record], guards: Sequence[Any] = (), gate: Gate | None = None
    ) -> Generator[Any, Any, BatchReport]:
        report = BatchReport()
        new, entries = yield from self.prepare(records, report)
        outcomes = yield from self.run_handlers(new, report, gate)
        for record, outcome in zip(new, outcomes, strict=True):
            if outcome.deferred:
                report.deferred.append(record)
                continue
            if outcome.ok:
                entries.append(Entry(record))
                continue
            assert outcome.error is not None
            yield from self.dead_letter(
                record, DeadLetterReason.PROCESSING_FAILED, outcome.error, outcome.attempts, report
            )
            entries.append(Entry(record, status=MarkStatus.DEAD_LETTERED))
        yield from self.commit(entries, guards, report)
        return report
