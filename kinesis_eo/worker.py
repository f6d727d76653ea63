"""The long-running worker: many processes on many hosts share a stream through leases.

Three flows make a worker, and all run unchanged under threads (:class:`Worker`)
and under asyncio (:class:`AsyncWorker`):

- :func:`~kinesis_eo.coordination.lease_keeper_flow` renews what the worker
  holds and keeps it in the coordinator's election, in a thread or task of its own;
- :func:`coordinator_flow` takes what the coordinator assigns this worker (and,
  elected, creates leases for new shards and assigns), and hands each acquired
  lease to the front, which starts a shard loop;
- :func:`shard_flow` reads one shard from its checkpoint, lets the sink
  process each batch with the lease's *fence* in the commit, checkpoints in
  the lease, follows the shard's end to its children, and on stop
  checkpoints and releases the lease so another worker takes it at once.

A worker that paused past its lease (GC, SIGSTOP, a partition) cannot commit:
its fence names an acquisition that no longer holds the lease, so the
transaction fails and nothing is written; the fenced commit is counted.

What the worker does is recorded through :class:`~kinesis_eo.metrics.run.RunMetrics`:
its totals (:attr:`Worker.metrics`, the health file) and, when the worker is
given a back-end (``metrics=``), the catalogue's metrics per shard, which the
coordinator flushes once per round and the worker once more when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.coordination import Acquired, coordinator_flow, lease_keeper_flow
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.flow import drive_async, drive_sync, run_async, run_sync
from kinesis_eo.health import HealthBook, HealthLimits, prepare_health_file
from kinesis_eo.leases import (
    Coordinator,
    Lease,
    LeaseConfig,
    LeaseManager,
    Sentinel,
)
from kinesis_eo.metrics.hooks import attach_call_metrics
from kinesis_eo.metrics.model import Metrics, NullMetrics
from kinesis_eo.metrics.run import RunMetrics
from kinesis_eo.metrics.totals import RunTotals
from kinesis_eo.retrieval import ReaderConfig, StreamRef
from kinesis_eo.retrieval.source import with_consumer_arn
from kinesis_eo.retrieval.subscription import SubscriptionConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.shard_loop import AfterCommit, shard_flow, starting_position
from kinesis_eo.sinks import OutageBackoff, Sink
from kinesis_eo.sinks.lanes import set_lanes

__all__ = [
    "THREADED_MAX_SHARDS",
    "Acquired",
    "AfterCommit",
    "AsyncWorker",
    "Worker",
    "WorkerConfig",
    "WorkerMetrics",
    "WorkerState",
    "coordinator_flow",
    "shard_flow",
    "starting_position",
]

log = logging.getLogger(__name__)

# The threaded Worker runs a thread per shard it holds; past a few hundred, threads' stacks
# and switching cost more than the shards' work. AsyncWorker holds any number on one loop.
THREADED_MAX_SHARDS = 256


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a `Worker` or `AsyncWorker` leases, reads, checkpoints, pauses and judges health."""

    leases: LeaseConfig
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    # Where a shard without a checkpoint starts (children always start at TRIM_HORIZON).
    initial_position: Sentinel = Sentinel.TRIM_HORIZON
    retry: RetryConfig = field(default_factory=RetryConfig)
    checkpoint_interval_s: float = 5.0
    # How often to look for new shards besides the ends of closed shards.
    shard_sync_interval_s: float = 60.0
    # Touched by the coordinator on every round; `kinesis-eo health` reads it.
    health_file: str | None = None
    # An outage (throttling, a table or endpoint down) pauses the shard and retries
    # its batch with jittered back-off growing from the first figure up to the second.
    outage_initial_backoff_s: float = 0.5
    outage_max_backoff_s: float = 30.0
    # The health file turns unhealthy for a shard whose loop failed this many times
    # in a row, or that made no progress for stall_timeout_s while records waited.
    unhealthy_after_failures: int = 3
    stall_timeout_s: float = 300.0
    # The most shards this process holds (None: no limit of its own); the coordinator
    # assigns it no more. The threaded Worker holds at most THREADED_MAX_SHARDS.
    max_shards: int | None = None
    # Read every leased shard by enhanced fan-out through this consumer (name or ARN).
    efo_consumer: str | None = None
    subscription: SubscriptionConfig = field(default_factory=SubscriptionConfig)
    # Partition keys of a batch applied at once (kinesis_eo.sinks.lanes); 1: one record at a time.
    lanes: int = 1
    # Read a shard's next batch while its current one commits (kinesis_eo.read_ahead).
    read_ahead: bool = True

    @property
    def outage_backoff(self) -> OutageBackoff:
        return OutageBackoff(self.outage_initial_backoff_s, self.outage_max_backoff_s)

    @property
    def health_limits(self) -> HealthLimits:
        return HealthLimits(self.unhealthy_after_failures, self.stall_timeout_s)

    def __post_init__(self) -> None:
        interval = self.checkpoint_interval_s
        if not 0 <= interval < float("inf"):
            raise ValueError(f"checkpoint_interval_s must be 0 or more seconds, got {interval!r}")
        for name in (
            "shard_sync_interval_s",
            "outage_initial_backoff_s",
            "outage_max_backoff_s",
            "stall_timeout_s",
        ):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.outage_max_backoff_s < self.outage_initial_backoff_s:
            raise ValueError("outage_max_backoff_s must be at least outage_initial_backoff_s")
        if self.max_shards is not None and self.max_shards < 1:
            raise ValueError(f"max_shards must be at least 1, got {self.max_shards}")
        if self.unhealthy_after_failures < 1:
            raise ValueError(
                f"unhealthy_after_failures must be at least 1, got {self.unhealthy_after_failures}"
            )


WorkerMetrics = RunTotals
"""A worker's totals (the name from before consumers and workers shared one model)."""


@dataclass
class WorkerState:
    """What the coordinator and the shard loops of one worker share."""

    stopping: bool = False
    # Stands for SIGSTOP in tests and the harness: nothing is renewed or read.
    paused: bool = False
    metrics: RunTotals = field(default_factory=RunTotals)
    health: HealthBook = field(default_factory=HealthBook)
    # The back-end the catalogue's metrics go to; ``record`` updates it and ``metrics``.
    backend: Metrics = field(default_factory=NullMetrics)
    record: RunMetrics = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.record = RunMetrics(self.backend, self.metrics)


class _WorkerBase:
    def __init__(
        self,
        kinesis: Any,
        dynamodb: Any,
        stream: str,
        sink: Sink,
        manager: LeaseManager,
        config: WorkerConfig,
        *,
        after_commit: AfterCommit | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.clients = {"kinesis": kinesis, "dynamodb": dynamodb}
        self.after_commit = after_commit
        self.stream = StreamRef.of(stream)
        self.sink = sink
        self.manager = manager
        self.coordinator = Coordinator(manager)
        # What stopped the lease keeper, raised again when the worker returns.
        self._keeper_error: BaseException | None = None
        self.config = config
        if config.max_shards is not None:
            limit = manager.max_leases or config.max_shards
            manager.max_leases = min(limit, config.max_shards)
        set_lanes(sink, config.lanes)
        self.state = WorkerState(backend=metrics if metrics is not None else NullMetrics())
        if self.state.record.enabled:
            for client in self.clients.values():
                attach_call_metrics(client, self.state.backend)

    @property
    def worker_id(self) -> str:
        return self.manager.worker_id

    @property
    def metrics(self) -> RunTotals:
        """This run's totals (the back-end given as ``metrics=`` is ``state.backend``)."""
        return self.state.metrics

    def stop(self) -> None:
        """Finish the batches in flight, checkpoint, release every lease, and return from run."""
        self.state.stopping = True

    def pause(self) -> None:
        """Freeze renewals and reading, as SIGSTOP would (for tests and the chaos harness)."""
        self.state.paused = True

    def resume(self) -> None:
        self.state.paused = False

    def _loop_failed(self, lease: Lease, error: Exception) -> None:
        log.exception("the loop of %s failed; giving its lease up", lease.shard_id)
        self.state.record.loop_failed()
        self.state.health.failed(lease.shard_id, error)

    def _prepare(self) -> None:
        if self.config.health_file:
            prepare_health_file(self.config.health_file)

    def _stopped(self) -> None:
        """Every shard loop has ended: record what is left and publish it."""
        self.state.record.leases_held(len(self.manager.held))
        self.state.record.flush()

    def _coordinator(self) -> Generator[Any, Any, None]:
        return coordinator_flow(
            self.manager, self.coordinator, self.stream, self.config, self.state
        )

    def _keeper(self) -> Generator[Any, Any, None]:
        return lease_keeper_flow(self.manager, self.coordinator, self.state)

    def _keeper_failed(self, error: BaseException) -> None:
        # Leases nobody renews are taken by others: stop rather than read on without them.
        log.error("the lease keeper failed; stopping: %s", error)
        self._keeper_error = error
        self.stop()

    def _leave(self) -> Generator[Any, Any, None]:
        """Free what the worker was assigned and did not take, once every flow of it has ended:
        its keeper removed its report first, so a coordinator's round that read the report
        before has had a shard loop's last batch to finish its writes."""
        try:
            yield from self.manager.free_unclaimed()
        except Exception as exc:  # the table may be what stopped the worker
            log.warning("could not leave the lease table: %s", exc)

    def _raise_keeper_error(self) -> None:
        if self._keeper_error is not None:
            raise self._keeper_error

    def _shard(self, lease: Lease) -> Generator[Any, Any, None]:
        return shard_flow(
            self.manager,
            lease,
            self.stream,
            self.sink,
            self.config,
            self.state,
            after_commit=self.after_commit,
        )


class Worker(_WorkerBase):
    """The worker with boto3 clients: a thread per owned shard."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        asked = self.config.max_shards or self.manager.config.max_leases_per_worker
        if asked is not None and asked > THREADED_MAX_SHARDS:
            raise ConfigurationError(
                f"the threaded Worker runs a thread per shard and holds at most "
                f"{THREADED_MAX_SHARDS} shards, not {asked}: use AsyncWorker for more"
            )
        self.manager.max_leases = min(
            self.manager.max_leases or asked or THREADED_MAX_SHARDS, THREADED_MAX_SHARDS
        )
        self._threads: list[threading.Thread] = []
        # Every wait of the worker's flows ends early when stop() is called.
        self._wake = threading.Event()
        self.sink.bind(self._run)

    def _run(self, flow: Generator[Any, Any, Any]) -> Any:
        return run_sync(flow, self.clients, self.config.retry, self._wake.wait)

    def stop(self) -> None:
        """Finish the batches in flight, checkpoint, release every lease, and return from run."""
        super().stop()
        self._wake.set()

    def _run_shard(self, lease: Lease) -> None:
        try:
            self._run(self._shard(lease))
        except Exception as exc:
            self._loop_failed(lease, exc)
            # Renewing a lease nobody works on would stall the shard: let it go.
            with contextlib.suppress(Exception):
                self._run(self.manager.give_up(lease.shard_id))
                self.state.record.lease_released()

    def run(self, handle_signals: bool = False) -> RunTotals:
        """Run until :meth:`stop` (or SIGTERM/SIGINT, with ``handle_signals``)."""
        self._prepare()
        self.config = self._run(with_consumer_arn(self.stream, self.config))
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        keeper = threading.Thread(target=self._keep_leases, name="lease-keeper")
        keeper.start()
        try:
            coordinator = drive_sync(
                self._coordinator(), self.clients, self.config.retry, self._wake.wait
            )
            for output in coordinator:
                lease = output.lease
                thread = threading.Thread(
                    target=self._run_shard, args=(lease,), name=f"shard-{lease.shard_id}"
                )
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
                thread.start()
        finally:
            self.stop()
            for thread in [keeper, *self._threads]:
                thread.join()
            self._run(self._leave())
            self._stopped()
        self._raise_keeper_error()
        return self.metrics

    def _keep_leases(self) -> None:
        try:
            self._run(self._keeper())
        except Exception as exc:
            self._keeper_failed(exc)


class AsyncWorker(_WorkerBase):
    """The worker with aiobotocore/aioboto3 clients: a task per owned shard."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sink.bind(lambda flow: run_async(flow, self.clients, self.config.retry))

    async def _run_shard(self, lease: Lease) -> None:
        try:
            await run_async(self._shard(lease), self.clients, self.config.retry)
        except Exception as exc:
            self._loop_failed(lease, exc)
            with contextlib.suppress(Exception):
                await run_async(
                    self.manager.give_up(lease.shard_id), self.clients, self.config.retry
                )
                self.state.record.lease_released()

    async def run(self, handle_signals: bool = False) -> RunTotals:
        """Run until :meth:`stop` (or SIGTERM/SIGINT, with ``handle_signals``); the run's totals."""
        self._prepare()
        self.config = await run_async(
            with_consumer_arn(self.stream, self.config), self.clients, self.config.retry
        )
        if handle_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        keeper = asyncio.create_task(self._keep_leases())
        try:
            async for output in drive_async(self._coordinator(), self.clients, self.config.retry):
                task = asyncio.create_task(self._run_shard(output.lease))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self.state.stopping = True
            await asyncio.gather(keeper, *self._tasks)
            await run_async(self._leave(), self.clients, self.config.retry)
            self._stopped()
        self._raise_keeper_error()
        return self.metrics

    async def _keep_leases(self) -> None:
        try:
            await run_async(self._keeper(), self.clients, self.config.retry)
        except Exception as exc:
            self._keeper_failed(exc)
