"""The Lambda handler: a Kinesis event in, the core's sinks and ledger, ``batchItemFailures`` out.

The event source mapping (ESM) owns the shards and hands the function one
shard's batch at a time; the handler brings the exactly-once part. It parses
the event into user records (base64, KPL aggregates, event ids), lets the
sink drop what the ledger already holds, runs the user's handler, commits
effects and marks through the same sinks the worker uses, and reports what
is not done so that the ESM delivers it again (``ReportBatchItemFailures``).

What the ESM cannot tell the function, the handler keeps in the ledger or is
told in :class:`LambdaConfig`:

- how often a record failed: a Lambda invocation has no memory of the last
  one, so each failed delivery is counted in the ledger table
  (:meth:`~kinesis_eo.ledger.Ledger.record_failure`). A record that failed in
  ``max_failed_deliveries`` deliveries is dead-lettered with its payload and
  marked done, so the next delivery moves past it;
- the ESM's ``ParallelizationFactor``: declare it in
  ``LambdaConfig.parallelization_factor``. Above 1 the ESM processes one
  shard's records in several batches at once, out of order, and the handler
  refuses a watermark ledger.

Set the ESM's ``MaximumRetryAttempts`` above ``max_failed_deliveries`` (or
to -1): if the ESM gives up first, it skips the batch and its on-failure
destination gets only the batch's shard and sequence numbers, not the payload.

Metrics: give the handler a back-end (``metrics=build_metrics("emf", ...)``)
and it records the catalogue's metrics per shard and writes them once per
invocation, at its end; or give it your Powertools ``Metrics`` object
(``powertools_metrics=``) and the same values go into the document Powertools
writes, instead of a second one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from kinesis_eo.aggregation import DEFAULT_LIMITS, AggregateLimits
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.flow import run_async, run_sync
from kinesis_eo.ledger import ExpiredClaimPolicy, Ledger, LedgerMode
from kinesis_eo.metrics import Metrics
from kinesis_eo.metrics.emf import PowertoolsMetrics
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import (
    BatchReport,
    ClaimSink,
    DeadLetterSink,
    FailurePolicy,
    IdempotentKeySink,
    TransactionalSink,
)
from kinesis_eo.sinks.base import BatchHandler, RecordHandler
from lambda_handlers.decisions import (
    Ordering,
    batch_item_failures,
    deadline_reached,
    items_to_report,
    lanes,
)
from lambda_handlers.delivery import DeliveryGate, lane_flow
from lambda_handlers.events import ShardDelivery, parse_event
from lambda_handlers.metrics import InvocationMetrics
from lambda_handlers.windows import (
    Folding,
    TumblingWindow,
    WindowClose,
    is_window_event,
    window_flow,
)

__all__ = [
    "AsyncKinesisHandler",
    "DeliveryGate",
    "Flow",
    "InvocationReport",
    "KinesisHandler",
    "LambdaConfig",
    "Response",
    "SinkKind",
    "build_sink",
    "check_ledger_mode",
    "exactly_once",
    "lane_flow",
    "remaining_time",
]

log = logging.getLogger(__name__)

Response = dict[str, Any]
Flow = Generator[Any, Any, Any]

# The ESM allows ParallelizationFactor 1 to 10.
_MAX_PARALLELIZATION_FACTOR = 10


class SinkKind(Enum):
    """Which sink commits the effects (see :mod:`kinesis_eo.sinks`)."""

    TRANSACTIONAL = "transactional"
    IDEMPOTENT_KEY = "idempotent_key"
    CLAIM = "claim"


@dataclass(frozen=True, slots=True)
class LambdaConfig:
    """How the handler processes a delivery.

    ``parallelization_factor``: the ESM's ``ParallelizationFactor``, which the
    function cannot see; declare it here (the sample reads it from an
    environment variable that the template sets from the same parameter).
    ``ordering`` / ``max_concurrency``: see :class:`Ordering`; lanes of
    partition keys run in threads (or tasks) at once, so the user's handler
    must then be thread-safe.
    ``policy``: tries of a record within one delivery; ``max_failed_deliveries``:
    deliveries that may fail before the record is dead-lettered. A poison record
    thus runs ``policy.max_attempts * max_failed_deliveries`` times in all.
    ``deadline_margin``: no record is started once less time than this is
    left of the invocation; keep it above the longest record plus a commit.
    ``claim_for`` / ``expired_claims``: the claim sink's claim lifetime and what
    happens to a claim whose invocation died. A claim at least as long as the
    function's timeout cannot expire while its invocation still runs.
    ``retry``: AWS calls of the ledger and the sinks.
    ``aggregate_limits``: the user records and bytes KPL aggregates may unpack
    into, per aggregate and per event (see :mod:`lambda_handlers.events`).
    """

    sink: SinkKind = SinkKind.TRANSACTIONAL
    ordering: Ordering = Ordering.SHARD
    max_concurrency: int = 1
    parallelization_factor: int = 1
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    max_failed_deliveries: int = 3
    deadline_margin: timedelta = timedelta(seconds=5)
    claim_for: timedelta = timedelta(minutes=15)
    expired_claims: ExpiredClaimPolicy = ExpiredClaimPolicy.QUARANTINE
    retry: RetryConfig = field(default_factory=RetryConfig)
    aggregate_limits: AggregateLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if not 1 <= self.parallelization_factor <= _MAX_PARALLELIZATION_FACTOR:
            raise ValueError(
                f"parallelization_factor is 1 to {_MAX_PARALLELIZATION_FACTOR}, as the ESM "
                f"allows; got {self.parallelization_factor}"
            )
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency}")
        if self.max_concurrency > 1 and self.ordering is not Ordering.PARTITION_KEY:
            raise ValueError(
                "max_concurrency above 1 needs ordering=Ordering.PARTITION_KEY: "
                "with SHARD ordering a shard's records run one after the other"
            )
        if self.max_failed_deliveries < 1:
            raise ValueError(
                f"max_failed_deliveries must be at least 1, got {self.max_failed_deliveries}"
            )
        if self.deadline_margin < timedelta(0):
            raise ValueError("deadline_margin cannot be negative")
        if self.claim_for <= timedelta(0):
            raise ValueError("claim_for must be positive")

    @property
    def deadline_margin_ms(self) -> int:
        return int(self.deadline_margin.total_seconds() * 1000)


def check_ledger_mode(config: LambdaConfig, mode: LedgerMode) -> None:
    """Refuse a watermark ledger where a shard's records are committed out of order."""
    if mode is not LedgerMode.WATERMARK:
        return
    fix = "use LedgerConfig(mode=LedgerMode.PER_RECORD)"
    if config.parallelization_factor > 1:
        raise ConfigurationError(
            f"LambdaConfig(parallelization_factor={config.parallelization_factor}) says the "
            f"event source mapping's ParallelizationFactor is {config.parallelization_factor}: "
            "Lambda then processes one shard's records in several batches at once, out of "
            f"order, which a watermark ledger cannot follow; {fix}"
        )
    if config.ordering is Ordering.PARTITION_KEY:
        raise ConfigurationError(
            "LambdaConfig(ordering=Ordering.PARTITION_KEY) commits a shard's records out of "
            f"order, which a watermark ledger cannot follow; {fix}"
        )


@dataclass
class InvocationReport:
    """What one invocation did: for logs, metrics and tests."""

    records: int = 0
    report: BatchReport = field(default_factory=BatchReport)
    reported: list[str] = field(default_factory=list)
    stopped_for_deadline: bool = False

    def summary(self) -> str:
        r = self.report
        return (
            f"{self.records} records: {len(r.applied)} applied, {len(r.duplicates)} duplicates, "
            f"{len(r.dead_lettered)} dead-lettered, {len(r.deferred)} deferred, "
            f"{len(self.reported)} sequence numbers reported"
            + (" (stopped for the deadline)" if self.stopped_for_deadline else "")
        )


def remaining_time(context: Any) -> Callable[[], int | None]:
    """The context's ``get_remaining_time_in_millis`` (no deadline without one)."""
    get = getattr(context, "get_remaining_time_in_millis", None)
    if get is None:
        return lambda: None
    return lambda: int(get())


def build_sink(
    ledger: Ledger,
    handler: RecordHandler | None,
    batch_handler: BatchHandler | None,
    dead_letters: DeadLetterSink | None,
    config: LambdaConfig,
) -> TransactionalSink | IdempotentKeySink | ClaimSink:
    """The sink ``LambdaConfig.sink`` names, over ``ledger``, with the handler and dead letters."""
    if config.sink is not SinkKind.CLAIM:
        kind = TransactionalSink if config.sink is SinkKind.TRANSACTIONAL else IdempotentKeySink
        return kind(
            ledger,
            handler,
            batch_handler=batch_handler,
            policy=config.policy,
            dead_letters=dead_letters,
        )
    if handler is None or batch_handler is not None:
        raise ConfigurationError(
            "the claim sink claims, acts and completes one record at a time: "
            "give it a handler, not a batch_handler"
        )
    return ClaimSink(
        ledger,
        handler,
        claim_for=config.claim_for,
        expired_claims=config.expired_claims,
        policy=config.policy,
        dead_letters=dead_letters,
    )


class _HandlerBase:
    def __init__(
        self,
        handler: RecordHandler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        ledger: Ledger,
        dead_letters: DeadLetterSink | None = None,
        config: LambdaConfig | None = None,
        dynamodb: Any,
        metrics: Metrics | None = None,
        powertools_metrics: PowertoolsMetrics | None = None,
        window: TumblingWindow | None = None,
    ) -> None:
        self.config = config or LambdaConfig()
        self.ledger = ledger
        self.folding = None
        if window is not None:
            self.folding = Folding(window, ledger, dead_letters, self.config.max_failed_deliveries)
        self.sink: TransactionalSink | IdempotentKeySink | ClaimSink | None = None
        if window is None or handler is not None or batch_handler is not None:
            check_ledger_mode(self.config, ledger.config.mode)
            self.sink = build_sink(ledger, handler, batch_handler, dead_letters, self.config)
        self.clients = {"dynamodb": dynamodb}
        self.last_invocation: InvocationReport | None = None
        self.metrics = InvocationMetrics(ledger, dynamodb, metrics, powertools_metrics)

    def _window_flow(self, event: Any) -> Flow | None:
        """The flow of a tumbling-window event, None for a plain one; refuses a mismatch."""
        if not is_window_event(event):
            if self.sink is None:
                raise ConfigurationError(
                    "this handler folds tumbling windows but the event has no 'window': set "
                    "the event source mapping's TumblingWindowInSeconds, or give a handler"
                )
            return None
        if self.folding is None:
            raise ConfigurationError(
                "the event source mapping sends tumbling windows (TumblingWindowInSeconds) "
                "but this handler has no window=TumblingWindow(...) to fold them"
            )
        deliveries = parse_event(event, self.config.aggregate_limits)
        return window_flow(self.folding, event, deliveries)

    def _lane_flows(self, work: list[tuple[list[Record], DeliveryGate]]) -> list[Flow]:
        assert self.sink is not None  # _window_flow refused the event otherwise
        return [lane_flow(self.sink, lane, gate) for lane, gate in work]

    def _plan(
        self, event: Any, context: Any
    ) -> tuple[list[ShardDelivery], list[tuple[list[Record], DeliveryGate]]]:
        deliveries = parse_event(event, self.config.aggregate_limits)
        remaining = remaining_time(context)
        left = remaining()
        margin = self.config.deadline_margin_ms
        if deliveries and deadline_reached(left, margin):
            # Reporting everything would only bring the same batch back with the same time.
            raise ConfigurationError(
                f"the invocation starts with {left} ms left, less than "
                f"LambdaConfig.deadline_margin ({margin} ms): raise the function's Timeout "
                "or lower deadline_margin"
            )
        work = []
        for delivery in deliveries:
            for lane in lanes(delivery.records, self.config.ordering, self.config.max_concurrency):
                work.append((lane, DeliveryGate(self.ledger, self.config, remaining)))
        return deliveries, work

    def _finish(
        self,
        deliveries: list[ShardDelivery],
        work: list[tuple[list[Record], DeliveryGate]],
        reports: list[BatchReport],
    ) -> Response:
        invocation = InvocationReport()
        for report in reports:
            invocation.report.merge(report)
        records = [r for d in deliveries for r in d.records]
        invocation.records = len(records)
        self.metrics.invocation(deliveries, [lane for lane, _ in work], reports)
        invocation.stopped_for_deadline = any(gate.deadline_hit for _, gate in work)
        invocation.reported = items_to_report(
            records, invocation.report.deferred, self.config.ordering
        )
        self.last_invocation = invocation
        log.info("kinesis_eo: %s", invocation.summary())
        return batch_item_failures(invocation.reported)


class KinesisHandler(_HandlerBase):
    """A Lambda entry point for the Python runtime: ``handler(event, context)``.

    ``handler(record, ctx)`` or ``batch_handler(records, contexts)`` is the
    user's code, as for the worker's sinks (``LambdaConfig.sink`` picks the
    sink). ``dynamodb`` is the boto3 client for the ledger and a transactional
    sink; by default one is made from the function's environment. Returns the
    ``ReportBatchItemFailures`` response; raises :class:`MalformedEventError`
    for an event it cannot read, and lets toolkit errors (a missing table, a
    denied call) fail the invocation, so the ESM retries the batch.
    ``metrics``: a back-end for the catalogue's metrics, written at the end of
    each invocation; ``powertools_metrics``: a Powertools ``Metrics`` object
    that receives them instead (see :mod:`lambda_handlers.metrics`).
    ``window``: fold the events of a mapping with ``TumblingWindowInSeconds``,
    each record once, and apply each window's aggregate once (see
    :mod:`lambda_handlers.windows`); with no ``handler`` the function takes
    window events only.
    """

    def __init__(
        self,
        handler: RecordHandler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        ledger: Ledger,
        dead_letters: DeadLetterSink | None = None,
        config: LambdaConfig | None = None,
        dynamodb: Any = None,
        metrics: Metrics | None = None,
        powertools_metrics: PowertoolsMetrics | None = None,
        window: TumblingWindow | None = None,
    ) -> None:
        if dynamodb is None:
            import boto3

            dynamodb = boto3.client("dynamodb")
        super().__init__(
            handler,
            batch_handler=batch_handler,
            ledger=ledger,
            dead_letters=dead_letters,
            config=config,
            dynamodb=dynamodb,
            metrics=metrics,
            powertools_metrics=powertools_metrics,
            window=window,
        )
        if self.sink is not None:
            self.sink.bind(self._run)

    def _run(self, flow: Flow) -> Any:
        return run_sync(flow, self.clients, self.config.retry)

    def __call__(self, event: Any, context: Any) -> Response:
        try:
            windowed = self._window_flow(event)
            if windowed is not None:
                return dict(self._run(windowed))
            deliveries, work = self._plan(event, context)
            flows = self._lane_flows(work)
            if len(flows) <= 1:
                reports = [self._run(flow) for flow in flows]
            else:
                with ThreadPoolExecutor(self.config.max_concurrency) as pool:
                    reports = list(pool.map(self._run, flows))
            return self._finish(deliveries, work, reports)
        finally:
            self.metrics.publish()


class AsyncKinesisHandler(_HandlerBase):
    """:class:`KinesisHandler` for asyncio: aiobotocore clients, handlers may be ``async def``.

    The Lambda Python runtime calls plain functions; run it with
    ``asyncio.run(handler(event, context))`` inside one, with clients made in
    that event loop.
    """

    def __init__(
        self,
        handler: RecordHandler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        ledger: Ledger,
        dynamodb: Any,
        dead_letters: DeadLetterSink | None = None,
        config: LambdaConfig | None = None,
        metrics: Metrics | None = None,
        powertools_metrics: PowertoolsMetrics | None = None,
        window: TumblingWindow | None = None,
    ) -> None:
        super().__init__(
            handler,
            batch_handler=batch_handler,
            ledger=ledger,
            dead_letters=dead_letters,
            config=config,
            dynamodb=dynamodb,
            metrics=metrics,
            powertools_metrics=powertools_metrics,
            window=window,
        )
        if self.sink is not None:
            self.sink.bind(self._run)

    async def _run(self, flow: Flow) -> Any:
        return await run_async(flow, self.clients, self.config.retry)

    async def __call__(self, event: Any, context: Any) -> Response:
        try:
            windowed = self._window_flow(event)
            if windowed is not None:
                return dict(await self._run(windowed))
            deliveries, work = self._plan(event, context)
            reports = await asyncio.gather(*(self._run(f) for f in self._lane_flows(work)))
            return self._finish(deliveries, work, list(reports))
        finally:
            self.metrics.publish()


def exactly_once(
    *,
    ledger: Ledger,
    dead_letters: DeadLetterSink | None = None,
    config: LambdaConfig | None = None,
    dynamodb: Any = None,
    metrics: Metrics | None = None,
    powertools_metrics: PowertoolsMetrics | None = None,
    window_close: WindowClose | None = None,
) -> Callable[[Any], KinesisHandler]:
    """Turn a record handler into a Lambda entry point::

    @exactly_once(ledger=ledger, dead_letters=queue)
    def handler(record, ctx):
        return [update(...)]

    With ``window_close`` the function is a tumbling window's fold instead
    (see :mod:`lambda_handlers.windows`)::

    @exactly_once(ledger=ledger, window_close=lambda total, window: [put(...)])
    def handler(total, records):
        return total + len(records)
    """

    def wrap(function: Any) -> KinesisHandler:
        window = None if window_close is None else TumblingWindow(function, window_close)
        return KinesisHandler(
            function if window is None else None,
            ledger=ledger,
            dead_letters=dead_letters,
            config=config,
            dynamodb=dynamodb,
            metrics=metrics,
            powertools_metrics=powertools_metrics,
            window=window,
        )

    return wrap
