"""A single-process consumer: every shard of a stream, through a sink, with checkpoints.

The loop is one flow (:func:`consume_flow`): read a batch, let the sink
process it (screen, act, commit with the ledger), then checkpoint. The sync
and the asyncio consumer drive that same flow; the decisions (what to
checkpoint, when to stop, what to count) live in :class:`ConsumerState`.
Leases for many workers come on top of this loop; the sink already takes the
fencing checks (``guards``) a lease will add.

What the consumer does is recorded through :class:`~kinesis_eo.metrics.run.RunMetrics`:
its totals (:attr:`Consumer.stats`) and, when it is given a back-end
(``metrics=``), the catalogue's metrics per shard, flushed at each checkpoint
and at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.checkpoint import Checkpoint, CheckpointStore
from kinesis_eo.flow import pump, run_async, run_sync
from kinesis_eo.metrics.hooks import attach_call_metrics
from kinesis_eo.metrics.model import Metrics
from kinesis_eo.metrics.run import RunMetrics
from kinesis_eo.metrics.totals import RunTotals
from kinesis_eo.retrieval import Batch, ReaderConfig, ShardGraph, StartingPosition, StreamRef
from kinesis_eo.retrieval.reader import StreamProgress, read_stream_flow
from kinesis_eo.retrieval.source import with_consumer_arn
from kinesis_eo.retrieval.subscription import SubscriptionConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import BatchReport, OutageBackoff, Sink, process_through_outages
from kinesis_eo.sinks.lanes import set_lanes

__all__ = [
    "AfterCommit",
    "AsyncConsumer",
    "Consumer",
    "ConsumerConfig",
    "ConsumerState",
    "ConsumerStats",
    "consume_flow",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """How a `Consumer` or `AsyncConsumer` reads, retries, checkpoints and pauses in an outage."""

    reader: ReaderConfig = field(default_factory=ReaderConfig)
    initial_position: StartingPosition = field(default_factory=StartingPosition.trim_horizon)
    # For the ledger's and the checkpoint table's calls; the reader has its own.
    retry: RetryConfig = field(default_factory=RetryConfig)
    # Stop once every shard being read is at its tip with nothing new (demos, batch jobs).
    stop_when_caught_up: bool = False
    # A shard's checkpoint is written at most this often (and always at its end
    # and on stop). The ledger makes the replay after a crash harmless, so
    # checkpoints only bound how much is read again; writing one per batch
    # would cost as much as the ledger itself.
    checkpoint_interval_s: float = 5.0
    # An outage pauses a shard's batch and retries it with this back-off (see OutageBackoff).
    outage_backoff: OutageBackoff = field(default_factory=OutageBackoff)
    # Read by enhanced fan-out through this consumer (name or ARN; registered if absent).
    efo_consumer: str | None = None
    subscription: SubscriptionConfig = field(default_factory=SubscriptionConfig)
    # Partition keys of a batch applied at once (kinesis_eo.sinks.lanes); 1: one record at a time.
    lanes: int = 1


ConsumerStats = RunTotals
"""A consumer's totals (the name from before consumers and workers shared one model)."""


AfterCommit = Callable[[Batch, BatchReport], None]


class ConsumerState:
    """The consumer's decisions, shared by the sync and the asyncio loop."""

    def __init__(
        self,
        config: ConsumerConfig,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.record = RunMetrics(metrics)
        self.stats: RunTotals = self.record.totals
        self.stopping = False
        self._clock = clock
        self._caught_up: dict[str, bool] = {}
        self._unsaved: dict[str, Checkpoint] = {}
        self._saved_at: dict[str, float] = {}

    def starting_points(
        self, checkpoints: dict[str, Checkpoint]
    ) -> tuple[dict[str, StartingPosition], set[str]]:
        positions = {
            shard: cp.starting_position() for shard, cp in checkpoints.items() if not cp.shard_end
        }
        finished = {shard for shard, cp in checkpoints.items() if cp.shard_end}
        return positions, finished

    def on_batch(self, batch: Batch, report: BatchReport | None) -> Checkpoint | None:
        """Count a processed batch; the checkpoint to write now, if one is due."""
        self.record.read(batch.shard_id, batch.records, batch.millis_behind_latest)
        if report is not None:
            self.record.processed(batch.shard_id, report)
        self._caught_up[batch.shard_id] = not batch.records and not batch.millis_behind_latest
        if batch.shard_end:
            self.record.shard_ended()
            self._caught_up.pop(batch.shard_id, None)
            self._unsaved.pop(batch.shard_id, None)
            return Checkpoint(shard_end=True)
        if batch.last_position is None:
            return None
        checkpoint = Checkpoint(batch.last_position)
        now = self._clock()
        last = self._saved_at.get(batch.shard_id)
        if last is not None and now - last < self.config.checkpoint_interval_s:
            self._unsaved[batch.shard_id] = checkpoint
            return None
        self._saved_at[batch.shard_id] = now
        self._unsaved.pop(batch.shard_id, None)
        return checkpoint

    def unsaved(self) -> dict[str, Checkpoint]:
        """Checkpoints held back by the interval, to write when the consumer stops."""
        pending, self._unsaved = self._unsaved, {}
        return pending

    def done(self, progress: StreamProgress) -> bool:
        if self.stopping:
            return True
        if not self.config.stop_when_caught_up:
            return False
        reading = set(progress.cursors)
        return bool(reading) and all(self._caught_up.get(shard, False) for shard in reading)


def consume_flow(
    stream: str,
    sink: Sink,
    checkpoints: CheckpointStore,
    state: ConsumerState,
    progress: StreamProgress,
    after_commit: AfterCommit | None,
) -> Generator[Any, Any, ConsumerStats]:
    """The consumer as one flow: Kinesis calls go to the "kinesis" client, the
    ledger's and the checkpoints' to the "dynamodb" one."""
    config = state.config
    positions, finished = state.starting_points((yield from checkpoints.load()))
    progress.finished.update(finished)
    ref = StreamRef.of(stream)
    efo = yield from with_consumer_arn(ref, config)
    reading = read_stream_flow(
        ref, config.reader, config.initial_position, positions, progress, reading=efo
    )

    def on_batch(batch: Batch) -> Generator[Any, Any, bool]:
        source = progress.cursors.get(batch.shard_id)
        if source is not None:
            state.record.resubscribed(batch.shard_id, source.take_counts())

        def on_pause(error: BaseException, delay: float) -> None:
            state.record.outage_pause(batch.shard_id)
            log.warning("paused for %.1f s by an outage (nothing dead-lettered): %s", delay, error)

        report = None
        if batch.records:
            report = yield from process_through_outages(
                sink.process,
                batch.records,
                config.outage_backoff,
                lambda: not state.stopping,
                on_pause,
            )
            if report is None:
                return True  # stopped while paused: no checkpoint past the batch
        checkpoint = state.on_batch(batch, report)
        if report is not None and after_commit is not None:
            after_commit(batch, report)
        if checkpoint is not None:
            yield from checkpoints.save(batch.shard_id, checkpoint)
            state.record.checkpointed()
            state.record.flush()
        return state.done(progress)

    yield from pump(reading, on_batch)
    for shard_id, checkpoint in state.unsaved().items():
        yield from checkpoints.save(shard_id, checkpoint)
        state.record.checkpointed()
    state.record.flush()
    return state.stats


class _ConsumerBase:
    def __init__(
        self,
        kinesis: Any,
        dynamodb: Any,
        stream: str,
        sink: Sink,
        checkpoints: CheckpointStore,
        config: ConsumerConfig | None = None,
        *,
        after_commit: AfterCommit | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.clients = {"kinesis": kinesis, "dynamodb": dynamodb}
        self.stream = stream
        self.sink = sink
        self.checkpoints = checkpoints
        self.state = ConsumerState(config or ConsumerConfig(), metrics=metrics)
        set_lanes(sink, self.state.config.lanes)
        if self.state.record.enabled:
            for client in self.clients.values():
                attach_call_metrics(client, self.state.record.metrics)
        self.progress = StreamProgress(ShardGraph(()), set(), {})
        # Runs after a batch's effects are committed (and counted) and before
        # its checkpoint: where a crash costs a replay, which the ledger absorbs.
        # Not called for batches without records.
        self.after_commit = after_commit

    @property
    def stats(self) -> RunTotals:
        """This run's totals."""
        return self.state.stats

    def stop(self) -> None:
        """Finish the batch in hand, checkpoint, and return from ``run``."""
        self.state.stopping = True

    def _flow(self) -> Generator[Any, Any, ConsumerStats]:
        return consume_flow(
            self.stream, self.sink, self.checkpoints, self.state, self.progress, self.after_commit
        )


class Consumer(_ConsumerBase):
    """Consumes a stream with boto3 clients until stopped (or caught up, if so configured).

    ``config.retry`` governs every AWS call the consumer makes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink.bind(self._run)

    def _run(self, flow: Generator[Any, Any, Any]) -> Any:
        return run_sync(flow, self.clients, self.state.config.retry)

    def run(self) -> ConsumerStats:
        """Read and apply until stopped (or caught up, with ``stop_when_caught_up``); the run's
        totals.
        """
        try:
            stats: ConsumerStats = self._run(self._flow())
        finally:
            self.state.record.flush()  # what a failed run recorded too
        return stats


class AsyncConsumer(_ConsumerBase):
    """:class:`Consumer` for aiobotocore/aioboto3 clients and async handlers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink.bind(self._run)

    async def _run(self, flow: Generator[Any, Any, Any]) -> Any:
        return await run_async(flow, self.clients, self.state.config.retry)

    async def run(self) -> ConsumerStats:
        """Read and apply until stopped (or caught up, with ``stop_when_caught_up``); the run's
        totals.
        """
        try:
            stats: ConsumerStats = await self._run(self._flow())
        finally:
            self.state.record.flush()  # what a failed run recorded too
        return stats
