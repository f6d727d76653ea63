"""One delivery's gate and lanes: the deadline, failed deliveries counted, outages handed back."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from kinesis_eo.errors import KinesisEOError
from kinesis_eo.ledger import Ledger
from kinesis_eo.records import Record
from kinesis_eo.sinks import (
    BatchReport,
    Sink,
)
from lambda_handlers.decisions import (
    Ordering,
    dead_letter_now,
    deadline_reached,
    order_scope,
    segments,
)

if TYPE_CHECKING:
    from lambda_handlers.handler import LambdaConfig

__all__ = ["DeliveryGate", "lane_flow"]

log = logging.getLogger("lambda_handlers.handler")
Flow = Generator[Any, Any, Any]


class DeliveryGate:
    """The gate of one lane of one delivery: the deadline, and the scopes a failure stopped.

    A record's failure is counted in the ledger; below the config's limit the
    record is deferred (reported to the ESM) and so is every later record of
    its order scope; at the limit it is dead-lettered. Once the deadline is
    reached, nothing more is admitted.
    """

    def __init__(
        self, ledger: Ledger, config: LambdaConfig, remaining_ms: Callable[[], int | None]
    ) -> None:
        self.ledger = ledger
        self.config = config
        self.remaining_ms = remaining_ms
        self.blocked: set[Hashable] = set()
        self.deadline_hit = False

    @property
    def open(self) -> bool:
        """Whether any later record may still be admitted."""
        if self.deadline_hit:
            return False
        return self.config.ordering is Ordering.PARTITION_KEY or not self.blocked

    def admits(self, record: Record) -> bool:
        if self.deadline_hit or order_scope(record, self.config.ordering) in self.blocked:
            return False
        if deadline_reached(self.remaining_ms(), self.config.deadline_margin_ms):
            self.deadline_hit = True
            log.warning(
                "less than %s ms left: stopping before %s %s",
                self.config.deadline_margin_ms,
                record.shard_id,
                record.position,
            )
            return False
        return True

    def admit(self, record: Record) -> Generator[Any, Any, bool]:
        return self.admits(record)
        yield  # a flow that makes no calls

    def on_failure(
        self, record: Record, error: BaseException, attempts: int
    ) -> Generator[Any, Any, bool]:
        failed = yield from self.ledger.record_failure(record)
        if dead_letter_now(failed, self.config.max_failed_deliveries):
            return True
        self.blocked.add(order_scope(record, self.config.ordering))
        log.warning(
            "%s %s failed in %d of %d deliveries (%s): reported for the next delivery",
            record.shard_id,
            record.position,
            failed,
            self.config.max_failed_deliveries,
            error,
        )
        return False


def lane_flow(sink: Sink, records: Sequence[Record], gate: DeliveryGate) -> Flow:
    """Process one lane's records in order through ``sink``; returns a BatchReport.

    An outage (throttling, a table or the sink down) is the world's fault,
    not the records': the rest of the lane is reported for the next delivery
    and nothing is dead-lettered or counted as a failed delivery.
    """
    report = BatchReport()
    for segment in segments(records):
        if report.outage is not None or not gate.open:
            report.deferred += segment
            continue
        if segment[0].deaggregation_error is not None and not gate.admits(segment[0]):
            report.deferred += segment
            continue
        try:
            report.merge((yield from sink.process(segment, gate=gate)))
        except KinesisEOError as exc:
            if not exc.retryable:
                raise
            # The commit itself met the outage: what got through comes back as duplicates.
            report.outage = exc
            report.deferred += segment
        if report.outage is not None:
            log.warning(
                "an outage stopped the lane at %s; the rest goes back to the event source "
                "mapping (nothing dead-lettered): %s",
                segment[0].shard_id,
                report.outage,
            )
    return report
