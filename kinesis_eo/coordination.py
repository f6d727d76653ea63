"""What every worker does besides reading shards: keep its leases, and coordinate when elected.

:func:`coordinator_flow` runs unchanged under threads and asyncio (see
:mod:`kinesis_eo.worker`); the lease protocol it drives is in :mod:`kinesis_eo.leases`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kinesis_eo.flow import Sleep
from kinesis_eo.health import write_health_file
from kinesis_eo.leases import Coordinator, Lease, LeaseManager
from kinesis_eo.retrieval import StreamRef
from kinesis_eo.retrieval.shards import list_shards_flow

if TYPE_CHECKING:
    from kinesis_eo.worker import WorkerConfig, WorkerState

__all__ = [
    "Acquired",
    "coordinator_flow",
    "wait_while_paused",
]


@dataclass(frozen=True, slots=True)
class Acquired:
    """Output of the coordinator: start a shard loop for this lease."""

    lease: Lease


def wait_while_paused(state: WorkerState) -> Generator[Any, Any, None]:
    """Do nothing while the worker is paused (as SIGSTOP would), until it stops."""
    while state.paused and not state.stopping:
        yield Sleep(0.01)


def coordinator_flow(
    manager: LeaseManager,
    stream: StreamRef,
    config: WorkerConfig,
    state: WorkerState,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[Any, Any, None]:
    """Keep this worker's leases and yield :class:`Acquired` for every lease taken.

    Every round: report alive, renew what is held, take what the table assigns
    to this worker (read through the owner index). The elected coordinator
    also syncs shards to leases and scans the table to assign (see
    :mod:`kinesis_eo.leases.coordinator`). On stop: resign and remove the report.
    """
    lease_config = manager.config
    coordinator = Coordinator(manager)
    next_renew = next_take = next_sync = clock()
    while not state.stopping:
        yield from wait_while_paused(state)
        now = clock()
        if now >= next_renew:
            yield from manager.report()
            lost = yield from manager.renew_all()
            state.record.leases_lost(len(lost))
            yield from coordinator.elect()
            next_renew = now + lease_config.renew_interval
        if coordinator.elected and now >= next_sync:
            graph = yield from list_shards_flow(stream, config.reader.list_shards_page_size)
            yield from manager.sync_shards(graph, config.initial_position)
            # Finished shards' leases, once their children are under way (rate-limited inside).
            yield from manager.clean_up(graph)
            next_sync = now + config.shard_sync_interval_s
        if now >= next_take and not state.stopping:
            yield from coordinator.assign_round()
            for lease in (yield from manager.discover()):
                state.record.leases_taken(1)
                yield Acquired(lease)
            next_take = now + lease_config.take_interval
        state.record.leases_held(len(manager.held))
        if config.health_file:
            _write_health(config.health_file, manager, config, state)
        # Once per round, not per batch: shard threads would write many small documents.
        state.record.flush()
        # Only the coordinator syncs shards: the others' sync time stays due, so one that
        # is elected syncs at once, and must not wake them.
        wake = min(next_renew, next_take, next_sync if coordinator.elected else next_take)
        yield Sleep(max(0.0, wake - clock()))
    yield from coordinator.resign()
    yield from manager.leave()


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
