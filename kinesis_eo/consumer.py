"""A single-process consumer: every shard of a stream, through a sink, with checkpoints.

The loop is thin: read a batch, let the sink process it (screen, act, commit
with the ledger), then checkpoint. The decisions (what to checkpoint, when to
stop, what to count) live in :class:`ConsumerState`, which the sync and the
asyncio consumer share. Leases for many workers come on top of this loop; the
sink already takes the fencing checks (``guards``) a lease will add.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kinesis_eo.checkpoint import Checkpoint, CheckpointStore
from kinesis_eo.flow import run_async, run_sync
from kinesis_eo.retrieval import (
    AsyncStreamReader,
    Batch,
    ReaderConfig,
    StartingPosition,
    StreamReader,
)
from kinesis_eo.retrieval.reader import StreamProgress
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import BatchReport, ClaimSink

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What the consumer needs of a sink: a flow that processes one shard's batch."""

    def process(self, records: Any, guards: Any = ()) -> Generator[Any, Any, BatchReport]: ...


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
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


@dataclass
class ConsumerStats:
    batches: int = 0
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    mismatched: int = 0
    ledger_writes: int = 0
    checkpoints: int = 0
    shards_finished: int = 0


AfterCommit = Callable[[Batch, BatchReport], None]


class ConsumerState:
    """The consumer's decisions, shared by the sync and the asyncio loop."""

    def __init__(self, config: ConsumerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.stats = ConsumerStats()
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
        stats = self.stats
        stats.batches += 1
        stats.delivered += len(batch.records)
        if report is not None:
            stats.applied += len(report.applied)
            stats.duplicates += len(report.duplicates)
            stats.dead_lettered += len(report.dead_lettered)
            stats.mismatched += len(report.mismatched)
            stats.ledger_writes += report.ledger_writes
        self._caught_up[batch.shard_id] = not batch.records and not batch.millis_behind_latest
        if batch.shard_end:
            stats.shards_finished += 1
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


class Consumer:
    """Consumes a stream with boto3 clients until stopped (or caught up, if so configured)."""

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
    ) -> None:
        self.kinesis = kinesis
        self.dynamodb = dynamodb
        self.stream = stream
        self.sink = sink
        self.checkpoints = checkpoints
        self.state = ConsumerState(config or ConsumerConfig())
        if isinstance(sink, ClaimSink) and sink.run_flow is None:
            sink.run_flow = self._run
        # Runs after a batch's effects are committed and before its checkpoint:
        # the place where a crash costs a replay, which the ledger absorbs.
        self.after_commit = after_commit

    @property
    def stats(self) -> ConsumerStats:
        return self.state.stats

    def stop(self) -> None:
        """Finish the batch in hand, checkpoint it, and return from :meth:`run`."""
        self.state.stopping = True

    def _run(self, flow: Generator[Any, Any, Any]) -> Any:
        return run_sync(flow, self.dynamodb, self.state.config.retry)

    def run(self) -> ConsumerStats:
        config = self.state.config
        positions, finished = self.state.starting_points(self._run(self.checkpoints.load()))
        reader = StreamReader(
            self.kinesis,
            self.stream,
            config.initial_position,
            config.reader,
            positions=positions,
            finished_shards=finished,
        )
        for batch in reader:
            report = self._run(self.sink.process(batch.records)) if batch.records else None
            if report is not None and self.after_commit is not None:
                self.after_commit(batch, report)
            checkpoint = self.state.on_batch(batch, report)
            if checkpoint is not None:
                self._run(self.checkpoints.save(batch.shard_id, checkpoint))
                self.stats.checkpoints += 1
            if self.state.done(reader.progress):
                break
        for shard_id, checkpoint in self.state.unsaved().items():
            self._run(self.checkpoints.save(shard_id, checkpoint))
            self.stats.checkpoints += 1
        return self.stats


class AsyncConsumer:
    """:class:`Consumer` for aiobotocore/aioboto3 clients and async handlers."""

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
    ) -> None:
        self.kinesis = kinesis
        self.dynamodb = dynamodb
        self.stream = stream
        self.sink = sink
        self.checkpoints = checkpoints
        self.state = ConsumerState(config or ConsumerConfig())
        if isinstance(sink, ClaimSink) and sink.run_flow is None:
            sink.run_flow = self._run
        self.after_commit = after_commit

    @property
    def stats(self) -> ConsumerStats:
        return self.state.stats

    def stop(self) -> None:
        self.state.stopping = True

    async def _run(self, flow: Generator[Any, Any, Any]) -> Any:
        return await run_async(flow, self.dynamodb, self.state.config.retry)

    async def run(self) -> ConsumerStats:
        config = self.state.config
        positions, finished = self.state.starting_points(await self._run(self.checkpoints.load()))
        reader = AsyncStreamReader(
            self.kinesis,
            self.stream,
            config.initial_position,
            config.reader,
            positions=positions,
            finished_shards=finished,
        )
        async for batch in reader:
            report = await self._run(self.sink.process(batch.records)) if batch.records else None
            if report is not None and self.after_commit is not None:
                self.after_commit(batch, report)
            checkpoint = self.state.on_batch(batch, report)
            if checkpoint is not None:
                await self._run(self.checkpoints.save(batch.shard_id, checkpoint))
                self.stats.checkpoints += 1
            if self.state.done(reader.progress):
                break
        for shard_id, checkpoint in self.state.unsaved().items():
            await self._run(self.checkpoints.save(shard_id, checkpoint))
            self.stats.checkpoints += 1
        return self.stats
