"""What every worker does besides reading shards: keep its leases, and coordinate when elected.

Two flows, run side by side (a thread or a task each, see :mod:`kinesis_eo.worker`):

- :func:`lease_keeper_flow` reports the worker alive, renews what it holds and
  keeps or takes the coordinator's item, every renew interval;
- :func:`coordinator_flow` takes what the table assigns to this worker and,
  while elected, syncs shards to leases and assigns them.

They are apart so that nothing the coordinator does delays a renewal: its scan
and its writes take seconds on a large table or a slow one, and a renewal late
by the failover time is a lease (or the coordinator's item) taken by another
worker, which no one meant to move. The lease protocol they drive is in
:mod:`kinesis_eo.leases`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kinesis_eo.errors import KinesisEOError
from kinesis_eo.flow import Sleep, gather
from kinesis_eo.health import write_health_file
from kinesis_eo.leases import Coordinator, Lease, LeaseManager
from kinesis_eo.retrieval import StreamRef
from kinesis_eo.retrieval.shards import list_shards_flow

if TYPE_CHECKING:
    from kinesis_eo.worker import WorkerConfig, WorkerState

__all__ = [
    "Acquired",
    "coordinator_flow",
    "lease_keeper_flow",
    "wait_while_paused",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Acquired:
    """Output of the coordinator: start a shard loop for this lease."""

    lease: Lease


def wait_while_paused(state: WorkerState) -> Generator[Any, Any, None]:
    """Do nothing while the worker is paused (as SIGSTOP would), until it stops."""
    while state.paused and not state.stopping:
        yield Sleep(0.01)


def lease_keeper_flow(
    manager: LeaseManager,
    coordinator: Coordinator,
    state: WorkerState,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[Any, Any, None]:
    """Every renew interval: report alive, renew what is held, keep or take the coordinator's
    item. On stop: resign and remove the report (the worker frees what it was assigned and did
    not take once its other flows have ended too, see
    :meth:`~kinesis_eo.leases.LeaseManager.free_unclaimed`)."""
    interval = manager.config.renew_interval
    while not state.stopping:
        yield from wait_while_paused(state)
        started = clock()
        with _outage_skips_round("renewals"):
            # Side by side: a round costs one round trip, however slow the table answers.
            _, lost, _ = yield from gather(
                [manager.report(), manager.renew_all(), coordinator.elect()]
            )
            state.record.leases_lost(len(lost))
        yield Sleep(max(0.0, started + interval - clock()))
    # Here, in the flow that elects and reports, so that nothing in flight undoes either:
    # the coordinator's item goes, and the report, so no coordinator assigns this worker more.
    yield from coordinator.resign()
    yield from manager.store.remove_report(manager.worker_id)


def coordinator_flow(
    manager: LeaseManager,
    coordinator: Coordinator,
    stream: StreamRef,
    config: WorkerConfig,
    state: WorkerState,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[Any, Any, None]:
    """Yield :class:`Acquired` for every lease this worker takes, until it stops.

    Every round: take what the table assigns to this worker (read through the
    owner index). While :func:`lease_keeper_flow` holds the coordinator's item
    for this worker, also sync shards to leases and scan the table to assign
    (see :mod:`kinesis_eo.leases.coordinator`).
    """
    interval = manager.config.take_interval
    next_sync = clock()
    while not state.stopping:
        yield from wait_while_paused(state)
        started = clock()
        acquired: list[Lease] = []
        with _outage_skips_round("the coordinator's round"):
            if coordinator.elected and started >= next_sync:
                graph = yield from list_shards_flow(stream, config.reader.list_shards_page_size)
                yield from manager.sync_shards(graph, config.initial_position)
                # Finished shards' leases, once their children are under way (rate-limited).
                yield from manager.clean_up(graph)
                next_sync = started + config.shard_sync_interval_s
            yield from coordinator.assign_round()
            acquired = yield from manager.discover()
        for lease in acquired:
            # Even when stopping: its shard loop releases it at once.
            state.record.leases_taken(1)
            yield Acquired(lease)
        state.record.leases_held(len(manager.held))
        if config.health_file:
            _write_health(config.health_file, manager, config, state)
        # Once per round, not per batch: shard threads would write many small documents.
        state.record.flush()
        yield Sleep(max(0.0, started + interval - clock()))


@contextlib.contextmanager
def _outage_skips_round(what: str) -> Iterator[None]:
    """An outage of the table or the stream (its retries spent) skips the rest of this round;
    the next round tries again. Anything else (a table gone, a call denied) stops the worker."""
    try:
        yield
    except KinesisEOError as exc:
        if not exc.retryable:
            raise
        log.warning("%s skipped by an outage, tried again next round: %s", what, exc)


def _write_health(
    path: str, manager: LeaseManager, config: WorkerConfig, state: WorkerState
) -> None:
    problems = state.health.problems(config.health_limits)
    report = {
        "worker": manager.worker_id,
        "leases": sorted(manager.held),
        "metrics": state.metrics.as_dict(),
        "unhealthy": [{"shard": shard, "reason": why} for shard, why in problems.items()],
    }
    write_health_file(path, report)
