"""The coordinator: one worker at a time scans the lease table and decides who holds what.

It is elected through an item of the lease table (``eo#coordinator``), fenced
like a lease: taken on its counter and owner, renewed on its owner and token,
and presumed dead when its counter has not moved for the failover time on the
observer's own monotonic clock. Any worker takes over then. The new
coordinator knows its predecessor has been silent since then, so it counts
the predecessor's leases and report as silent since then too, and places
them in its first round instead of watching them for a failover time more.

Each round the coordinator scans the table once (leases and workers'
reports), judges expiry on its clock, runs
:func:`~kinesis_eo.leases.assignment.plan_assignment` and writes the result:
the owner of a lease nobody holds, or a handoff request on a held one. Every
other worker reads only its own leases.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Generator
from typing import Any

from kinesis_eo.flow import gather
from kinesis_eo.leases.assignment import Assignment, Kind, plan_assignment
from kinesis_eo.leases.balancing import Observations
from kinesis_eo.leases.manager import LeaseManager
from kinesis_eo.leases.model import (
    COORDINATOR_KEY,
    HANDOFF,
    OWNER,
    OWNER_SWITCHES,
    TOKEN,
    WORKER_PREFIX,
    Lease,
    WorkerReport,
)
from kinesis_eo.leases.store import Change, Held, LeaseConflict, TableSnapshot, Unchanged

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)

# Reports silent this many failover times are deleted (their workers are long gone).
_FORGET_REPORTS_AFTER = 3


class Coordinator:
    """One worker's part in electing the coordinator, and the coordinator's rounds."""

    def __init__(self, manager: LeaseManager) -> None:
        self.manager = manager
        self.token: str | None = None
        # Counts this worker's elections; the rounds' state belongs to one term.
        self.term = 0
        self._round_term = 0
        self.rounds = 0
        self._item = Observations()
        self._leases = Observations()
        self._workers = Observations()
        # The previous coordinator, silent since (our clock), when we took over from it.
        self._predecessor: tuple[str, float] | None = None
        # Each report's counter when this coordinator first saw it: a report counts as a
        # live worker only once it moved since (a dead worker's report stays a while).
        self._first_seen: dict[str, int] = {}
        # When a round last found a worker's report it had not seen, and when this term's
        # rounds began (this coordinator's clock).
        self._last_arrival = -math.inf
        self._began = -math.inf
        # Shard -> the round it was last moved in (dampening).
        self._moved: dict[str, int] = {}
        self.last_plan: list[Assignment] = []

    @property
    def elected(self) -> bool:
        return self.token is not None

    def elect(self) -> Generator[Any, Any, bool]:
        """Renew the coordinator's item if we hold it, or take it if free or silent; whether we
        are the coordinator now."""
        manager, store = self.manager, self.manager.store
        me, now = manager.worker_id, manager.clock()
        if self.token is not None:
            try:
                yield from store.update(
                    COORDINATOR_KEY, Change(bump_counter=True), Held(me, self.token)
                )
            except LeaseConflict:
                log.warning("no longer the coordinator")
                self.token = None
            return self.token is not None
        # Watching for movement needs no strong read: taking over is conditional anyway.
        item = yield from store.get(COORDINATOR_KEY, consistent=False)
        created = False
        if item is None:
            created = yield from store.create(Lease(COORDINATOR_KEY))
            item = Lease(COORDINATOR_KEY) if created else (yield from store.get(COORDINATOR_KEY))
            if item is None:
                return False
        self._item.update([item], now)
        silent = self._item.still_since(COORDINATOR_KEY, now)
        if item.owner not in (None, me) and silent < manager.config.failover_s:
            return False
        token = uuid.uuid4().hex
        try:
            yield from store.update(
                COORDINATOR_KEY,
                Change(set={OWNER: me, TOKEN: token}, bump_counter=True),
                Unchanged(item.counter, item.owner),
            )
        except LeaseConflict:
            return False
        predecessor = item.owner if item.owner not in (None, me) else None
        self._predecessor = None if predecessor is None else (predecessor, now - silent)
        # The rounds start afresh at the next one (they may run beside this, in another flow).
        self.token, self.term = token, self.term + 1
        log.info("elected coordinator%s", f" after {predecessor}" if predecessor else "")
        return True

    def resign(self) -> Generator[Any, Any, None]:
        """Delete the coordinator's item if ours: another worker is elected at its next round."""
        if self.token is None:
            return
        with contextlib.suppress(LeaseConflict):
            yield from self.manager.store.delete(
                COORDINATOR_KEY, Held(self.manager.worker_id, self.token)
            )
        self.token = None

    def assign_round(self) -> Generator[Any, Any, list[Assignment]]:
        """Scan, decide, write; the assignments written.

        The first round after an election only watches: no report has been
        seen to move yet, so no worker is known to be alive. At a cold start (no
        lease held) it waits until a round brings no new report, and at a fleet's
        first start (no shard read yet) until no new worker has reported for half a
        failover time, for a failover time at most: worker processes come up seconds
        apart, and the first few would otherwise get every lease and hand most of them on.
        """
        if self.token is None:
            return []
        if self._round_term != self.term:
            self._round_term, self.rounds, self._moved, self._first_seen = self.term, 0, {}, {}
            self._last_arrival = -math.inf
            self._began = self.manager.clock()
            self._leases, self._workers = Observations(), Observations()
        snapshot = yield from self.manager.store.snapshot(consistent=False)
        now = self.manager.clock()
        self.rounds += 1
        new = [r for r in snapshot.workers if r.worker_id not in self._first_seen]
        self._observe(snapshot, now)
        failover = self.manager.config.failover_s
        if new:
            self._last_arrival = now
        cold = not any(lease.token for lease in snapshot.leases)
        # A fleet's first start (no shard read yet) waits for late workers a little longer;
        # not past a failover time: a fleet that keeps trickling in gets what is there, and
        # the rest by rebalancing. A fleet that handed its leases over takes them at once.
        first = all(lease.position is None for lease in snapshot.leases)
        waiting = first and now - self._last_arrival < failover / 2 and now - self._began < failover
        if cold and (new or waiting):
            # A cold start, with workers still coming up.
            self._first_seen.update((r.worker_id, r.counter) for r in new)
            return []
        live = {
            report.worker_id: report
            for report in snapshot.workers
            if self._first_seen.setdefault(report.worker_id, report.counter) != report.counter
            and not self._silent(WORKER_PREFIX + report.worker_id, now, failover)
        }
        expired = {
            lease.shard_id
            for lease in snapshot.leases
            if lease.owner is None
            or self._silent(lease.shard_id, now, failover)
            or (lease.token is None and lease.owner not in live)
        }
        cooldown = self.manager.config.move_cooldown_rounds
        recent = {shard for shard, at in self._moved.items() if self.rounds - at < cooldown}
        plan = plan_assignment(snapshot.leases, live, expired, self.manager.config, recent)
        by_shard = {lease.shard_id: lease for lease in snapshot.leases}
        done = yield from gather(
            [self._write(by_shard[a.shard_id], a) for a in plan],
            self.manager.config.write_concurrency,
        )
        written = [assignment for assignment, ok in zip(plan, done, strict=True) if ok]
        for assignment in written:
            if assignment.kind is Kind.MOVE:
                self._moved[assignment.shard_id] = self.rounds
        yield from self._forget_reports(snapshot.workers, now, failover)
        self.last_plan = written
        return written

    def _observe(self, snapshot: TableSnapshot, now: float) -> None:
        self._leases.update(snapshot.leases, now)
        self._workers.update_counters(
            ((WORKER_PREFIX + r.worker_id, r.counter) for r in snapshot.workers), now
        )
        if self._predecessor is not None and self.rounds == 1:
            gone, since = self._predecessor
            self._workers.backdate(WORKER_PREFIX + gone, since)
            for lease in snapshot.leases:
                if lease.owner == gone:
                    self._leases.backdate(lease.shard_id, since)

    def _silent(self, key: str, now: float, failover: float) -> bool:
        return self._leases_or_workers(key).still_since(key, now) >= failover

    def _leases_or_workers(self, key: str) -> Observations:
        return self._workers if key.startswith(WORKER_PREFIX) else self._leases

    def _write(self, lease: Lease, assignment: Assignment) -> Generator[Any, Any, bool]:
        store, target = self.manager.store, assignment.target
        try:
            if assignment.kind is Kind.ASSIGN:
                switches = lease.owner_switches + (lease.owner != target)
                change = Change(
                    set={OWNER: str(target), OWNER_SWITCHES: switches},
                    remove=(TOKEN, HANDOFF),
                    bump_counter=True,
                )
                yield from store.update(
                    lease.shard_id, change, Unchanged(lease.counter, lease.owner)
                )
            elif assignment.kind is Kind.MOVE:
                held = Held(str(lease.owner), str(lease.token))
                yield from store.update(lease.shard_id, Change(set={HANDOFF: str(target)}), held)
            else:
                held = Held(str(lease.owner), str(lease.token))
                yield from store.update(lease.shard_id, Change(remove=(HANDOFF,)), held)
        except LeaseConflict:
            return False  # changed since the scan: judged again next round
        return True

    def _forget_reports(
        self, reports: list[WorkerReport], now: float, failover: float
    ) -> Generator[Any, Any, None]:
        for report in reports:
            key = WORKER_PREFIX + report.worker_id
            if self._workers.still_since(key, now) >= _FORGET_REPORTS_AFTER * failover:
                yield from self.manager.store.remove_report(report.worker_id)
