"""One shard's loop in the worker: read from the checkpoint, commit each batch under the lease's
fence, checkpoint, follow the shard's end, and release on stop.

:func:`shard_flow` runs unchanged under threads and asyncio (see :mod:`kinesis_eo.worker`,
which starts one per lease the coordinator flow acquires).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from kinesis_eo.coordination import wait_while_paused as _wait_while_paused
from kinesis_eo.errors import KinesisEOError
from kinesis_eo.leases import Lease, LeaseLostError, LeaseManager, Sentinel
from kinesis_eo.ledger import FencedError
from kinesis_eo.read_ahead import ReadAhead
from kinesis_eo.records import Position
from kinesis_eo.retrieval import Batch, StartingPosition, StreamRef
from kinesis_eo.retrieval.source import ShardSource, open_shard
from kinesis_eo.sinks import BatchReport, Sink, process_through_outages

if TYPE_CHECKING:
    from kinesis_eo.worker import WorkerConfig, WorkerState

__all__ = [
    "AfterCommit",
    "shard_flow",
    "starting_position",
]

log = logging.getLogger("kinesis_eo.worker")


AfterCommit = Callable[[Batch, BatchReport], None]
"""Called after a batch's effects are committed and before its checkpoint (fault injection)."""


def starting_position(lease: Lease) -> StartingPosition:
    """Where a shard loop starts reading: after the lease's checkpoint, or at its sentinel."""
    position = lease.position
    if position is not None:
        return StartingPosition.after(position)
    if lease.checkpoint == Sentinel.LATEST.value:
        return StartingPosition.latest()
    return StartingPosition.trim_horizon()


def shard_flow(
    manager: LeaseManager,
    lease: Lease,
    stream: StreamRef,
    sink: Sink,
    config: WorkerConfig,
    state: WorkerState,
    clock: Callable[[], float] = time.monotonic,
    after_commit: AfterCommit | None = None,
) -> Generator[Any, Any, None]:
    """Process one shard while this acquisition of its lease lasts.

    A loop that ends without an error takes the shard out of the worker's
    health; one that fails leaves its failure counted there.
    """
    state.health.started(lease.shard_id)
    start = starting_position(lease)
    source = open_shard(stream, lease.shard_id, start, config.reader, lease.hash_range, config)
    try:
        yield from _shard_loop(manager, lease, source, sink, config, state, clock, after_commit)
    finally:
        source.close()
    state.health.left(lease.shard_id)


def _shard_loop(
    manager: LeaseManager,
    lease: Lease,
    cursor: ShardSource,
    sink: Sink,
    config: WorkerConfig,
    state: WorkerState,
    clock: Callable[[], float],
    after_commit: AfterCommit | None,
) -> Generator[Any, Any, None]:
    shard_id, token = lease.shard_id, lease.token
    unsaved: Position | None = None
    saved_at = clock()
    # The shard's running count across holders, for `status --watch`: this holder goes on
    # from what the lease says (absent on a lease no kinesis_eo worker has checkpointed).
    processed = lease.records_processed or 0

    def keep_going() -> bool:
        held = manager.held.get(shard_id)
        return not state.stopping and held is not None and held.token == token

    ahead: ReadAhead[Batch] = ReadAhead(lambda: cursor.step(clock), config.read_ahead)
    while keep_going():
        yield from _wait_while_paused(state)
        batch = yield from ahead.next()
        state.record.resubscribed(shard_id, cursor.take_counts())
        if batch is None:
            continue
        state.record.read(shard_id, batch.records, batch.millis_behind_latest)
        if batch.records:
            try:
                applying = _apply(manager, batch, sink, config, state, keep_going)
                report = yield from ahead.alongside(batch, applying)
            except FencedError:
                state.record.fenced(shard_id)
                log.warning("commit on %s fenced: the lease has a new owner", shard_id)
                return
            except LeaseLostError:
                return
            if report is None:
                break  # stopped or lost the lease while an outage paused the shard
            unsaved = batch.last_position
            processed += len(batch.records)
            if after_commit is not None:
                after_commit(batch, report)
        try:
            if batch.shard_end:
                yield from manager.end_shard(shard_id, batch.child_shards)
                state.record.shard_ended()
                yield from manager.release(shard_id)
                state.record.lease_released()
                return
            if unsaved is not None and clock() - saved_at >= config.checkpoint_interval_s:
                yield from manager.checkpoint(
                    shard_id, unsaved, batch.millis_behind_latest, processed
                )
                state.record.checkpointed()
                unsaved, saved_at = None, clock()
        except LeaseLostError:
            return
        except KinesisEOError as exc:
            if batch.shard_end or not exc.retryable:
                raise  # the loop ends; the next holder reads the end again
            # The lease table is down: the ledger holds the batch's progress, so reading on
            # loses nothing; the checkpoint is tried again after the next batch.
            log.warning("checkpoint of %s put off by an outage: %s", shard_id, exc)
    held = manager.held.get(shard_id)
    if state.stopping and held is not None and held.token == token:
        # Hand over at once: checkpoint what is done, then free the lease.
        with contextlib.suppress(LeaseLostError):
            if unsaved is not None:
                yield from manager.checkpoint(
                    shard_id, unsaved, cursor.millis_behind_latest, processed
                )
                state.record.checkpointed()
        yield from manager.release(shard_id)
        state.record.lease_released()


def _apply(
    manager: LeaseManager,
    batch: Batch,
    sink: Sink,
    config: WorkerConfig,
    state: WorkerState,
    keep_going: Callable[[], bool],
) -> Generator[Any, Any, BatchReport | None]:
    """Commit a batch under the lease's fence, paused through outages; None if it stopped."""
    shard_id = batch.shard_id
    state.health.waiting(shard_id)

    def on_pause(error: BaseException, delay: float) -> None:
        state.record.outage_pause(shard_id)
        state.health.paused(shard_id, f"{type(error).__name__}: {error}")
        log.warning(
            "%s paused for %.1f s by an outage (nothing dead-lettered): %s", shard_id, delay, error
        )

    report: BatchReport | None = yield from process_through_outages(
        lambda records: sink.process(records, guards=[manager.fence(shard_id)]),
        batch.records,
        config.outage_backoff,
        keep_going,
        on_pause,
    )
    if report is not None:
        state.health.progressed(shard_id)
        state.record.processed(shard_id, report)
    return report
