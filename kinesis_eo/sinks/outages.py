"""Outages: a shard paused while the world is down, and its batch tried again after a back-off."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from kinesis_eo.errors import KinesisEOError
from kinesis_eo.flow import Sleep
from kinesis_eo.records import Record
from kinesis_eo.sinks.report import BatchReport

__all__ = ["OutageBackoff", "process_through_outages"]


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
        """Seconds to wait after the ``pauses``-th pause: doubling up to the cap, half of it
        jittered.
        """
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
