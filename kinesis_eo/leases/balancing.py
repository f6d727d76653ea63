"""Judging expiry on one's own clock, and the every-worker balancing plan.

:class:`Observations` records when each counter (of a lease, a worker's
report, the coordinator's item) last moved on this worker's monotonic clock.
:func:`plan_takes` is the protocol where every worker scans the table and takes
or steals for itself (by lease count); the coordinator's plan
(:mod:`kinesis_eo.leases.assignment`) replaced it in the worker, and it stays
as the baseline the scale bench measures against.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from kinesis_eo.leases.model import Lease, LeaseConfig

__all__ = [
    "Observations",
    "plan_takes",
]


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
        self.update_counters(((lease.shard_id, lease.counter) for lease in leases), now)

    def update_counters(self, counters: Iterable[tuple[str, int]], now: float) -> None:
        """Record ``(key, counter)`` pairs seen at ``now``; keys not among them are forgotten."""
        current: dict[str, _Seen] = {}
        for key, counter in counters:
            seen = self._seen.get(key)
            moved = seen is None or seen.counter != counter
            current[key] = _Seen(counter, now) if moved else seen  # type: ignore[assignment]
        self._seen = current

    def backdate(self, key: str, since: float) -> None:
        """Count ``key``'s counter as unmoved since ``since`` (its holder is known gone since)."""
        seen = self._seen.get(key)
        if seen is not None and since < seen.since:
            self._seen[key] = _Seen(seen.counter, since)

    def still_since(self, key: str, now: float) -> float:
        """For how long ``key``'s counter has not moved (0 if never seen)."""
        seen = self._seen.get(key)
        return 0.0 if seen is None else now - seen.since

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
