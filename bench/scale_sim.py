"""The simulation behind bench/scale.py: real lease code, simulated clock and shards.

Every worker runs the product's own :func:`kinesis_eo.coordination.coordinator_flow`
(elections, reports, renewals, the coordinator's scans and assignments,
discovery through the owner index) against one :class:`MemoryLeaseStore`,
through a :class:`MeteredStore` per worker that counts what each request would
cost in DynamoDB. Only the shard loops are stand-ins: each checkpoints its
lease every few seconds with the records its shard carried meanwhile (the
lease calls the real shard loop makes), and on stop checkpoints and releases.
A discrete-event scheduler drives all flows on one simulated clock.

Importable (``from bench.scale_sim import Simulation``), so a run against
DynamoDB or moto can reuse the scenario and the measures.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.coordination import Acquired, coordinator_flow, lease_keeper_flow
from kinesis_eo.flow import Call, Sleep, Together
from kinesis_eo.harness.capacity import read_units, write_units
from kinesis_eo.leases import (
    Coordinator,
    Lease,
    LeaseConfig,
    LeaseLostError,
    LeaseManager,
    MemoryLeaseStore,
)
from kinesis_eo.leases.model import WorkerReport
from kinesis_eo.leases.store import Change, LeaseCondition, LeaseStore, TableSnapshot
from kinesis_eo.records import Position
from kinesis_eo.retrieval import ReaderConfig, StreamRef
from kinesis_eo.worker import WorkerConfig, WorkerState

__all__ = ["Meter", "MeteredStore", "SimWorker", "Simulation", "item_size", "shard_rates"]

_MAX_HASH = 2**128 - 1


def _number_size(value: float) -> int:
    digits = len(str(value).replace(".", "").replace("-", "").lstrip("0")) or 1
    return (digits + 1) // 2 + 1


def item_size(lease: Lease) -> int:
    """Bytes of the lease's DynamoDB item (attribute names plus values, as DynamoDB counts)."""
    size = 8 + len(lease.shard_id) + 12 + _number_size(lease.counter)
    size += 10 + len(lease.checkpoint) + 27 + 1 + 28 + 1
    if lease.owner:
        size += 10 + len(lease.owner)
    if lease.token:
        size += 12 + len(lease.token)
    if lease.hash_range is not None:
        size += 15 + len(str(lease.hash_range.start)) + 13 + len(str(lease.hash_range.end))
    if lease.records_processed is not None:
        size += 19 + _number_size(lease.records_processed)
    if lease.throughput is not None:
        size += 18 + _number_size(lease.throughput)
    if lease.handoff_to:
        size += 11 + len(lease.handoff_to)
    size += sum(len(p) for p in lease.parents | lease.children)
    return size


@dataclass
class Meter:
    """Requests and the DynamoDB capacity units they would cost."""

    read_units: float = 0.0
    write_units: float = 0.0
    items_read: int = 0
    requests: int = 0

    def read(self, size: int, items: int, consistent: bool = True) -> None:
        self.read_units += read_units(size, consistent=consistent)
        self.items_read += items
        self.requests += 1

    def write(self, before: Lease | None, after: Lease | None) -> None:
        size = max(item_size(x) for x in (before, after) if x is not None)
        self.write_units += write_units(size)
        # The owner index (keys only) is written when the owner changes, not on renewals.
        old, new = (before.owner if before else None), (after.owner if after else None)
        if old != new:
            self.write_units += (old is not None) + (new is not None)
        self.requests += 1


class MeteredStore(LeaseStore):
    """A worker's view of the shared in-memory store, metered as DynamoDB would bill it."""

    def __init__(self, inner: MemoryLeaseStore, latency_s: float = 0.0) -> None:
        self.inner = inner
        self.meter = Meter()
        # What each request costs on the simulated clock (0: answered at once).
        self.latency_s = latency_s

    def _wait(self) -> Generator[Any, Any, None]:
        if self.latency_s:
            yield Sleep(self.latency_s)

    def _run(self, flow: Generator[Any, Any, Any]) -> Any:
        try:
            next(flow)
        except StopIteration as stop:
            return stop.value
        raise AssertionError("the in-memory store makes no calls")

    def list_leases(self) -> Generator[Any, Any, list[Lease]]:
        snapshot = yield from self.snapshot()
        return snapshot.leases

    def snapshot(self, consistent: bool = True) -> Generator[Any, Any, TableSnapshot]:
        yield from self._wait()
        snapshot: TableSnapshot = self._run(self.inner.snapshot())
        size = sum(item_size(lease) for lease in snapshot.leases) + 60 * len(snapshot.workers)
        self.meter.read(size, len(snapshot.leases) + len(snapshot.workers) + 1, consistent)
        return snapshot

    def owned_keys(self, owner: str) -> Generator[Any, Any, list[str]]:
        yield from self._wait()
        keys: list[str] = self._run(self.inner.owned_keys(owner))
        # Keys-only index items: the lease key and the owner.
        self.meter.read(sum(8 + len(k) + 10 + len(owner) for k in keys), len(keys), False)
        return keys

    def get(self, key: str, consistent: bool = True) -> Generator[Any, Any, Lease | None]:
        yield from self._wait()
        lease: Lease | None = self._run(self.inner.get(key))
        self.meter.read(item_size(lease) if lease else 1, 1, consistent)
        return lease

    def report(self, report: WorkerReport) -> Generator[Any, Any, None]:
        yield from self._wait()
        self._run(self.inner.report(report))
        self.meter.write_units += 1
        self.meter.requests += 1

    def remove_report(self, worker_id: str) -> Generator[Any, Any, None]:
        yield from self._wait()
        self._run(self.inner.remove_report(worker_id))
        self.meter.write_units += 1
        self.meter.requests += 1

    def create(self, lease: Lease) -> Generator[Any, Any, bool]:
        yield from self._wait()
        created: bool = self._run(self.inner.create(lease))
        self.meter.write(None, lease)
        return created

    def _current(self, key: str) -> Lease | None:
        current: Lease | None = self._run(self.inner.get(key))
        return current

    def update(
        self, shard_id: str, change: Change, condition: LeaseCondition
    ) -> Generator[Any, Any, Lease]:
        yield from self._wait()
        before = self._current(shard_id)
        try:
            after: Lease = self._run(self.inner.update(shard_id, change, condition))
        except Exception:
            self.meter.write(before, before)  # a failed condition is billed too
            raise
        self.meter.write(before, after)
        return after

    def delete(self, shard_id: str, condition: LeaseCondition) -> Generator[Any, Any, None]:
        yield from self._wait()
        before = self._current(shard_id)
        self.meter.write(before, None)
        self._run(self.inner.delete(shard_id, condition))

    def fence(self, shard_id: str, owner: str, token: str) -> Any:
        return self.inner.fence(shard_id, owner, token)


def shard_rates(count: int, seed: int, sigma: float) -> list[float]:
    """Records per second of each shard: lognormal (median 100/s), seeded, shuffled."""
    rng = random.Random(seed)
    return [100.0 * math.exp(rng.gauss(0.0, sigma)) for _ in range(count)]


def _shards(count: int) -> list[dict[str, Any]]:
    step = (_MAX_HASH + 1) // count
    return [
        {
            "ShardId": f"shardId-{i:012d}",
            "HashKeyRange": {
                "StartingHashKey": str(i * step),
                "EndingHashKey": str(_MAX_HASH if i == count - 1 else (i + 1) * step - 1),
            },
            "SequenceNumberRange": {"StartingSequenceNumber": "1"},
        }
        for i in range(count)
    ]


@dataclass(eq=False)
class SimWorker:
    worker_id: str
    manager: LeaseManager
    store: MeteredStore
    state: WorkerState = field(default_factory=WorkerState)
    dead: bool = False
    legacy: bool = False
    coordinator: Coordinator | None = None


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    flow: Generator[Any, Any, Any] = field(compare=False)
    worker: SimWorker = field(compare=False)
    send: Any = field(default=None, compare=False)


class Simulation:
    """N workers sharing S shards on one simulated clock."""

    def __init__(
        self,
        shards: int,
        lease_config: LeaseConfig,
        rates: list[float],
        checkpoint_interval_s: float = 5.0,
        seed: int = 7,
        latency_s: float = 0.0,
    ) -> None:
        self.now = 0.0
        # What every lease-table request costs on the simulated clock.
        self.latency_s = latency_s
        self.store = MemoryLeaseStore()
        self.lease_config = lease_config
        self.config = WorkerConfig(
            leases=lease_config,
            reader=ReaderConfig(),
            checkpoint_interval_s=checkpoint_interval_s,
            shard_sync_interval_s=60.0,
        )
        self.shards = _shards(shards)
        self.rate = {s["ShardId"]: rates[i] for i, s in enumerate(self.shards)}
        self.workers: list[SimWorker] = []
        self.rng = random.Random(seed)
        self._heap: list[_Event] = []
        self._seq = itertools.count()
        self.stream = StreamRef.of("scale")

    def clock(self) -> float:
        return self.now

    # --- workers -------------------------------------------------------------------------------

    def add_worker(
        self, worker_id: str, at: float | None = None, legacy: bool = False
    ) -> SimWorker:
        store = MeteredStore(self.store, self.latency_s)
        manager = LeaseManager(store, self.lease_config, worker_id, self.clock, self.rng)
        worker = SimWorker(worker_id, manager, store, legacy=legacy)
        self.workers.append(worker)
        start = self.now if at is None else at
        if legacy:
            self._schedule(start, self._legacy_flow(worker), worker)
            return worker
        coordinator = Coordinator(manager)
        keeper = lease_keeper_flow(manager, coordinator, worker.state, self.clock)
        self._schedule(start, keeper, worker)
        self._schedule(start, self._coordinating(worker, coordinator), worker)
        worker.coordinator = coordinator
        return worker

    def live(self) -> list[SimWorker]:
        return [w for w in self.workers if not w.dead and not w.state.stopping]

    def kill(self, worker: SimWorker) -> None:
        """The process dies: its flows stop where they are, nothing is released."""
        worker.dead = True

    def stop(self, worker: SimWorker) -> None:
        """SIGTERM: shard loops finish their batch, checkpoint and release; the coordinator
        flow resigns."""
        worker.state.stopping = True
        for shard in list(worker.manager.held):
            # A real loop notices the stop within its batch, not at its next checkpoint.
            flow = self._stop_shard(worker, shard)
            self._schedule(self.now + self.rng.uniform(0.0, 0.5), flow, worker)

    def _stop_shard(self, worker: SimWorker, shard: str) -> Iterator[Any]:
        held = worker.manager.held.get(shard)
        if held is None:
            return
        processed = int(held.records_processed or 0)
        position = Position(str(10**20 + processed), 0)
        yield from worker.manager.checkpoint(shard, position, 0, processed)
        yield from worker.manager.release(shard)

    def _coordinating(
        self, worker: SimWorker, coordinator: Coordinator
    ) -> Generator[Any, Any, None]:
        """The coordinator flow, then what the worker frees when it leaves, as the worker runs
        them (its keeper removed the report)."""
        manager = worker.manager
        yield from coordinator_flow(
            manager, coordinator, self.stream, self.config, worker.state, self.clock
        )
        yield from manager.free_unclaimed()

    def _legacy_flow(self, worker: SimWorker) -> Generator[Any, Any, None]:
        """The protocol before the coordinator: every worker scans and takes each round."""
        manager, config = worker.manager, self.lease_config
        while not worker.state.stopping:
            yield from manager.renew_all()
            for lease in (yield from manager.take_round()):
                yield Acquired(lease)
            yield Sleep(config.renew_interval)

    def seed_leases(self) -> None:
        """Create every shard's lease up front (for runs that skip the shard sync)."""
        for shard in self.shards:
            self.store.leases[shard["ShardId"]] = Lease(shard["ShardId"])

    # --- the scheduler -------------------------------------------------------------------------

    def _schedule(
        self, at: float, flow: Generator[Any, Any, Any], worker: SimWorker, send: Any = None
    ) -> None:
        heapq.heappush(self._heap, _Event(at, next(self._seq), flow, worker, send))

    def run_until(
        self, until: float, every: float = 0.0, probe: Callable[[], None] | None = None
    ) -> None:
        """Advance the clock to ``until``, calling ``probe`` every ``every`` seconds."""
        next_probe = self.now + every if probe and every else math.inf
        while self._heap and self._heap[0].at <= until:
            event = heapq.heappop(self._heap)
            while next_probe <= event.at:
                self.now = next_probe
                probe()  # type: ignore[misc]
                next_probe += every
            self.now = max(self.now, event.at)
            if not event.worker.dead:
                self._step(event)
        while next_probe <= until:
            self.now = next_probe
            probe()  # type: ignore[misc]
            next_probe += every
        self.now = until

    def _step(self, event: _Event) -> None:
        flow, worker, send = event.flow, event.worker, event.send
        while True:
            try:
                step = flow.send(send)
            except StopIteration:
                return
            except LeaseLostError:
                return
            send = None
            if isinstance(step, Sleep):
                self._schedule(self.now + max(step.seconds, 1e-3), flow, worker)
                return
            if isinstance(step, Together):
                self._together(step, flow, worker)
                return
            if isinstance(step, Call):
                send = {"Shards": self.shards} if step.method == "list_shards" else {}
            elif isinstance(step, Acquired):
                self._schedule(self.now, self._shard_loop(worker, step.lease), worker)

    def _together(
        self, step: Together, parent: Generator[Any, Any, Any], worker: SimWorker
    ) -> None:
        """Run the sub-flows side by side, ``step.width`` at a time, then resume the parent."""
        values: list[Any] = [None] * len(step.flows)
        pending = list(enumerate(step.flows))
        left = [len(step.flows)]

        def start_next() -> None:
            if pending:
                index, sub = pending.pop(0)
                self._schedule(self.now, one(index, sub), worker)

        def one(index: int, sub: Generator[Any, Any, Any]) -> Generator[Any, Any, None]:
            values[index] = yield from sub
            left[0] -= 1
            start_next()
            if not left[0]:
                self._schedule(self.now, parent, worker, values)

        for _ in range(step.width):
            start_next()

    def _shard_loop(self, worker: SimWorker, lease: Lease) -> Iterator[Any]:
        """The lease calls of the real shard loop: checkpoint as records come, release on stop."""
        manager, shard, token = worker.manager, lease.shard_id, lease.token
        processed = float(lease.records_processed or 0)
        interval = self.config.checkpoint_interval_s
        # Each holder's first checkpoint comes at its own phase, as batches would.
        last = self.now
        yield Sleep(self.rng.uniform(0.2, interval))

        def holding() -> bool:
            held = manager.held.get(shard)
            return held is not None and held.token == token

        while holding() and not worker.state.stopping:
            processed += self.rate[shard] * (self.now - last)
            last = self.now
            position = Position(str(10**20 + int(processed)), 0)
            yield from manager.checkpoint(shard, position, 0, int(processed))
            yield Sleep(interval)
