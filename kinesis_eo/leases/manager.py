"""Taking, renewing, stealing, releasing and checkpointing leases: the protocol, once.

Decisions are plain functions over what a worker has observed
(:func:`plan_takes`, :meth:`Observations.expired`); the I/O is a few flows over a
:class:`~kinesis_eo.leases.store.LeaseStore`. Every write is conditional:
takes and steals on the counter and owner last seen, renewals, checkpoints
and releases on this acquisition's owner and token.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kinesis_eo.leases.cleanup import plan_cleanup, retired_shards
from kinesis_eo.leases.model import (
    CHECKPOINT,
    CHILDREN,
    MILLIS_BEHIND,
    OWNER,
    OWNER_SWITCHES,
    RECORDS_PROCESSED,
    SUB_SEQUENCE,
    TOKEN,
    Lease,
    LeaseConfig,
    LeaseLostError,
    Sentinel,
)
from kinesis_eo.leases.store import Change, Held, LeaseConflict, LeaseStore, Unchanged
from kinesis_eo.records import Position
from kinesis_eo.retrieval.shards import ChildShard, Shard, ShardGraph

__all__ = [
    "LeaseManager",
    "Observations",
    "plan_takes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Seen:
    counter: int
    since: float


class Observations:
    """When each lease's counter last moved, on this worker's monotonic clock.

    Expiry is judged from these alone: no clock of another host is read.
    """

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def update(self, leases: Iterable[Lease], now: float) -> None:
        current: dict[str, _Seen] = {}
        for lease in leases:
            seen = self._seen.get(lease.shard_id)
            moved = seen is None or seen.counter != lease.counter
            current[lease.shard_id] = _Seen(lease.counter, now) if moved else seen  # type: ignore[assignment]
        self._seen = current

    def expired(self, lease: Lease, now: float, failover_s: float) -> bool:
        """Free, or its counter has not moved for the failover time."""
        if lease.owner is None:
            return True
        seen = self._seen.get(lease.shard_id)
        return seen is not None and now - seen.since >= failover_s


def plan_takes(
    leases: Sequence[Lease],
    me: str,
    observations: Observations,
    now: float,
    config: LeaseConfig,
    rng: random.Random | None = None,
    held: Collection[str] | None = None,
    avoid: Collection[str] = (),
) -> list[Lease]:
    """Which leases to take this round: expired ones first, then a few stolen.

    Work is spread by lease count. A lease whose parents have not reached
    SHARD_END is not available: a child is read only after its parents.
    ``held`` are the leases this worker works on; one that names it as owner
    but is not held (a restart under the same id) counts as expired.
    ``avoid`` are shards this worker must not take now (it just failed on them).
    """
    by_shard = {lease.shard_id: lease for lease in leases}

    def ready(lease: Lease) -> bool:
        return all(by_shard[p].finished for p in lease.parents if p in by_shard)

    def orphaned(lease: Lease) -> bool:
        return lease.owner == me and held is not None and lease.shard_id not in held

    workable = [
        lease
        for lease in leases
        if not lease.finished and ready(lease) and lease.shard_id not in avoid
    ]
    if not workable:
        return []
    expired = [
        lease
        for lease in workable
        if orphaned(lease)
        or (lease.owner != me and observations.expired(lease, now, config.failover_s))
    ]
    expired_ids = {lease.shard_id for lease in expired}
    live_owners = Counter(
        lease.owner
        for lease in workable
        if lease.owner not in (None, me) and lease.shard_id not in expired_ids
    )
    mine = sum(1 for lease in workable if lease.owner == me and not orphaned(lease))
    workers = len(live_owners) + 1
    target = math.ceil(len(workable) / workers)
    if config.max_leases_per_worker is not None:
        target = min(target, config.max_leases_per_worker)
    wanted = target - mine
    if wanted <= 0:
        return []
    if expired:
        # Free leases first, then expired ones; shuffled so that workers that
        # start together do not all reach for the same lease.
        shuffled = list(expired)
        (rng or random).shuffle(shuffled)
        shuffled.sort(key=lambda lease: lease.owner is not None)
        return shuffled[:wanted]
    victim, victim_holds = live_owners.most_common(1)[0] if live_owners else (None, 0)
    if victim is None or victim_holds <= target or config.max_steals_per_round == 0:
        return []
    # Steal only from a worker above the target, and only as much as keeps it there.
    count = min(wanted, config.max_steals_per_round, victim_holds - target)
    candidates = [lease for lease in workable if lease.owner == victim]
    (rng or random).shuffle(candidates)
    return candidates[:count]


class LeaseManager:
    """One worker's view of the lease table and every write it makes to it."""

    def __init__(
        self,
        store: LeaseStore,
        config: LeaseConfig,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.worker_id = worker_id or uuid.uuid4().hex
        self.clock = clock
        self.rng = rng
        self.observations = Observations()
        # The leases this worker holds, as last written by it.
        self.held: dict[str, Lease] = {}
        # Shards this worker gave up after failing on them, and until when it leaves them be.
        self.cooling: dict[str, float] = {}
        # Of the leases the last take_round acquired, how many were stolen (for metrics).
        self.stolen_last_round = 0
        self._next_cleanup = -math.inf

    # --- observing and taking ---------------------------------------------------------------

    def refresh(self) -> Generator[Any, Any, list[Lease]]:
        leases = yield from self.store.list_leases()
        self.observations.update(leases, self.clock())
        return leases

    def take_round(self) -> Generator[Any, Any, list[Lease]]:
        """Look at the table and take what the plan says; the leases acquired."""
        leases = yield from self.refresh()
        now = self.clock()
        self.cooling = {shard: until for shard, until in self.cooling.items() if until > now}
        acquired = []
        self.stolen_last_round = 0
        for lease in plan_takes(
            leases,
            self.worker_id,
            self.observations,
            now,
            self.config,
            self.rng,
            held=self.held,
            avoid=self.cooling,
        ):
            # A steal takes a lease whose owner is still renewing it (balancing), where a
            # take of a free or expired lease replaces nobody who is alive.
            stealing = lease.owner not in (None, self.worker_id) and not (
                self.observations.expired(lease, now, self.config.failover_s)
            )
            taken = yield from self.take(lease)
            if taken is not None:
                acquired.append(taken)
                self.stolen_last_round += stealing
        return acquired

    def take(self, lease: Lease) -> Generator[Any, Any, Lease | None]:
        """Take (or steal) ``lease`` as last seen; None if someone moved first."""
        switches = lease.owner_switches + (0 if lease.owner == self.worker_id else 1)
        change = Change(
            set={OWNER: self.worker_id, TOKEN: uuid.uuid4().hex, OWNER_SWITCHES: switches},
            bump_counter=True,
        )
        try:
            taken = yield from self.store.update(
                lease.shard_id, change, Unchanged(lease.counter, lease.owner)
            )
        except LeaseConflict:
            return None
        if lease.owner not in (None, self.worker_id):
            log.info("stole %s from %s", lease.shard_id, lease.owner)
        self.held[lease.shard_id] = taken
        return taken

    # --- holding ----------------------------------------------------------------------------

    def _held(self, shard_id: str) -> Held:
        lease = self.held.get(shard_id)
        if lease is None or lease.token is None:
            raise LeaseLostError(f"this worker does not hold the lease of {shard_id}")
        return Held(self.worker_id, lease.token)

    def _write(self, shard_id: str, change: Change) -> Generator[Any, Any, Lease]:
        condition = self._held(shard_id)
        try:
            lease = yield from self.store.update(shard_id, change, condition)
        except LeaseConflict as conflict:
            self.held.pop(shard_id, None)
            holder = conflict.current.owner if conflict.current else None
            raise LeaseLostError(
                f"the lease of {shard_id} is no longer this worker's (now: {holder or 'nobody'})"
            ) from conflict
        self.held[shard_id] = lease
        return lease

    def renew(self, shard_id: str) -> Generator[Any, Any, bool]:
        """Bump the counter so others see the lease alive; False if it was lost."""
        try:
            yield from self._write(shard_id, Change(bump_counter=True))
        except LeaseLostError:
            log.warning("lost the lease of %s", shard_id)
            return False
        return True

    def renew_all(self) -> Generator[Any, Any, list[str]]:
        """Renew every held lease; the shards lost."""
        lost = []
        for shard_id in list(self.held):
            if not (yield from self.renew(shard_id)):
                lost.append(shard_id)
        return lost

    def release(self, shard_id: str) -> Generator[Any, Any, None]:
        """Give the lease up at once, so another worker takes it without waiting for expiry."""
        # If someone else has it already, there is nothing to give up.
        with contextlib.suppress(LeaseLostError):
            yield from self._write(shard_id, Change(remove=(OWNER, TOKEN), bump_counter=True))
        self.held.pop(shard_id, None)

    def give_up(self, shard_id: str) -> Generator[Any, Any, None]:
        """Release a shard this worker failed on, and leave it be for a failover time.

        Another worker may take it at once (the failure may be this host's);
        this one does not, so a shard that fails everywhere is retried at the
        pace of the failover time, not in a tight loop.
        """
        self.cooling[shard_id] = self.clock() + self.config.failover_s
        yield from self.release(shard_id)

    def checkpoint(
        self,
        shard_id: str,
        position: Position,
        millis_behind_latest: int | None = None,
        records_processed: int | None = None,
    ) -> Generator[Any, Any, Lease]:
        """Record progress in the lease, only while this acquisition holds it.

        ``records_processed`` is the shard's running count of records read and
        processed by every holder (each new holder continues from the lease's).
        """
        values: dict[str, Any] = {
            CHECKPOINT: position.sequence_number,
            SUB_SEQUENCE: position.sub_sequence_number,
            OWNER_SWITCHES: 0,
        }
        if millis_behind_latest is not None:
            values[MILLIS_BEHIND] = millis_behind_latest
        if records_processed is not None:
            values[RECORDS_PROCESSED] = records_processed
        return (yield from self._write(shard_id, Change(set=values)))

    def fence(self, shard_id: str) -> Any:
        """The check that makes a commit succeed only while this acquisition holds the lease."""
        condition = self._held(shard_id)
        return self.store.fence(shard_id, condition.owner, condition.token)

    # --- shards and lineage -----------------------------------------------------------------

    def sync_shards(
        self, graph: ShardGraph, initial: Sentinel = Sentinel.TRIM_HORIZON
    ) -> Generator[Any, Any, int]:
        """Create a lease for every shard that has none and needs one; how many were created.

        A shard whose parents are listed starts at TRIM_HORIZON whatever
        ``initial`` says: all of a child's records come after its parents'.
        A listed shard with a descendant under way needs no lease: it was read
        to its end and its lease cleaned up (see :func:`retired_shards`).
        """
        leases = yield from self.store.list_leases()
        missing = _missing_shards(graph, leases)
        if any(graph.children_of(shard.shard_id) for shard in missing):
            # A scan is no snapshot: it may have read a child before its first
            # checkpoint and then missed the parent deleted after that checkpoint.
            # Any later read of the child sees the checkpoint, so look again.
            leases = yield from self.store.list_leases()
            missing = _missing_shards(graph, leases)
        created = 0
        for shard in missing:
            parents = frozenset(graph.parents_of(shard.shard_id))
            start = Sentinel.TRIM_HORIZON if parents else initial
            lease = Lease(
                shard.shard_id,
                checkpoint=start.value,
                parents=parents,
                hash_range=shard.hash_range,
            )
            created += int((yield from self.store.create(lease)))
        return created

    def end_shard(self, shard_id: str, children: Sequence[ChildShard]) -> Generator[Any, Any, None]:
        """Checkpoint SHARD_END, record the children, and create their leases.

        SHARD_END is written first, under this acquisition's fence: a worker
        that lost the lease creates nothing, so it cannot bring back a child's
        lease that was cleaned up after the child was read. A crash between
        the two writes leaves the children to the next shard sync.
        """
        change: dict[str, Any] = {
            CHECKPOINT: Sentinel.SHARD_END.value,
            SUB_SEQUENCE: 0,
            OWNER_SWITCHES: 0,
        }
        if children:
            change[CHILDREN] = frozenset(c.shard_id for c in children)
        yield from self._write(shard_id, Change(set=change))
        for child in children:
            yield from self.store.create(
                Lease(
                    child.shard_id,
                    checkpoint=Sentinel.TRIM_HORIZON.value,
                    parents=frozenset(child.parent_shard_ids),
                    hash_range=child.hash_range,
                )
            )

    def clean_up(self, graph: ShardGraph | None = None) -> Generator[Any, Any, list[str]]:
        """Delete the leases of finished shards whose children are under way; the shards.

        Runs at most every ``cleanup_interval_s`` (an earlier call returns at
        once). Each delete holds only if the lease is still as seen, finished
        and in the same hands, so no concurrent write is lost and workers
        cleaning at once are harmless: the second delete finds the lease gone.
        ``graph`` names the children of a lease that recorded none.
        """
        now = self.clock()
        if now < self._next_cleanup:
            return []
        self._next_cleanup = now + self.config.cleanup_interval_s
        leases = yield from self.refresh()
        now = self.clock()

        def idle(lease: Lease) -> bool:
            return lease.shard_id not in self.held and self.observations.expired(
                lease, now, self.config.failover_s
            )

        deleted = []
        for lease in plan_cleanup(leases, idle, graph):
            condition = Unchanged(lease.counter, lease.owner, Sentinel.SHARD_END.value)
            try:
                yield from self.store.delete(lease.shard_id, condition)
            except LeaseConflict:
                continue  # changed since seen, or removed by another worker: judged again later
            deleted.append(lease.shard_id)
        if deleted:
            log.info("removed the leases of finished shards %s", ", ".join(deleted))
        return deleted


def _missing_shards(graph: ShardGraph, leases: Sequence[Lease]) -> list[Shard]:
    """Listed shards that have no lease and need one."""
    existing = {lease.shard_id for lease in leases}
    retired = retired_shards(graph, leases)
    return [
        shard
        for shard in graph.shards
        if shard.shard_id not in existing and shard.shard_id not in retired
    ]
