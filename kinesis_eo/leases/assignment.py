"""Who holds what: a pure function over the lease table and the workers' reports.

The coordinator calls :func:`plan_assignment` once a round. Leases nobody
holds (free, expired, or owned by a worker that stopped reporting) are placed
at once, heaviest first, on the worker with the most room. Held leases move
only when a worker's load is off its share by more than the threshold, then
until every worker is within half of it (hysteresis: a measurement's noise
does not start the next round of moves), at most a budget of moves a round,
and never a lease moved in the last rounds (dampening: no lease flaps).

A lease's load is its measured throughput (records per second), or 1 for
each lease when balancing by count. A lease whose throughput is not measured
yet weighs as the average one; an idle lease weighs a twentieth of the
average, and at least one record a second, since polling it still costs its
holder something (on a quiet stream every lease weighs alike: balance by count).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from kinesis_eo.leases.model import Lease, LeaseConfig, WorkerReport

__all__ = [
    "Assignment",
    "Kind",
    "lease_weights",
    "plan_assignment",
    "workable_leases",
]

# An idle lease weighs this fraction of the average lease,
_IDLE_WEIGHT = 0.05
# and never less than this many records a second: below it a lease's cost is its polling
# and renewals, not its records, and rates measured from a handful of records are noise
# the plan would chase from worker to worker.
_FLOOR_RPS = 1.0
# No worker holds more than this many times its share of the leases by count.
_COUNT_CEILING = 2.0


class Kind(Enum):
    """What an assignment asks of a lease: take it, hand it over, or keep it."""

    ASSIGN = "assign"  # nobody holds it: the target owns it now
    MOVE = "move"  # its holder hands it to the target at its next checkpoint
    CANCEL = "cancel"  # a handoff to a worker that is gone: keep it


@dataclass(frozen=True, slots=True)
class Assignment:
    """One decision of the coordinator: a lease, what happens to it, its holder and its target."""

    shard_id: str
    kind: Kind
    owner: str | None
    target: str | None


def workable_leases(leases: Sequence[Lease]) -> list[Lease]:
    """Leases to be held: not finished, and every parent still in the table finished."""
    by_shard = {lease.shard_id: lease for lease in leases}
    return [
        lease
        for lease in leases
        if not lease.finished and all(by_shard[p].finished for p in lease.parents if p in by_shard)
    ]


def lease_weights(leases: Sequence[Lease], balance: str) -> dict[str, float]:
    """Each lease's load: its throughput, or 1 each when balancing by count."""
    known = [lease.throughput for lease in leases if lease.throughput is not None]
    mean = sum(known) / len(known) if known else 0.0
    if balance == "count" or mean <= 0:
        return {lease.shard_id: 1.0 for lease in leases}
    floor = max(mean * _IDLE_WEIGHT, _FLOOR_RPS)
    return {
        lease.shard_id: max(mean if lease.throughput is None else lease.throughput, floor)
        for lease in leases
    }


class _Loads:
    """Each live worker's load, lease count, capacity and limit as the plan goes on."""

    def __init__(self, workers: Mapping[str, WorkerReport], leases: int) -> None:
        self.capacity = {w: max(r.capacity, 1e-9) for w, r in workers.items()}
        mean = sum(self.capacity.values()) / len(workers)
        # Never more than twice a worker's share of the count: many idle leases still
        # cost their polling and renewals.
        self.limit = {
            w: min(
                r.max_leases or math.inf,
                max(1, math.ceil(_COUNT_CEILING * leases / len(workers) * self.capacity[w] / mean)),
            )
            for w, r in workers.items()
        }
        self.load = dict.fromkeys(workers, 0.0)
        self.count = dict.fromkeys(workers, 0)

    def add(self, worker: str, weight: float, sign: int = 1) -> None:
        self.load[worker] += sign * weight
        self.count[worker] += sign

    def roomiest(self, weight: float) -> str | None:
        open_ = [w for w in self.load if self.count[w] < self.limit[w]]
        if not open_:
            return None
        return min(open_, key=lambda w: ((self.load[w] + weight) / self.capacity[w], w))

    def ratios(self) -> dict[str, float]:
        total, capacity = sum(self.load.values()), sum(self.capacity.values())
        if total <= 0:
            return dict.fromkeys(self.load, 1.0)
        return {w: self.load[w] / (total * self.capacity[w] / capacity) for w in self.load}


def plan_assignment(
    leases: Sequence[Lease],
    workers: Mapping[str, WorkerReport],
    expired: Collection[str],
    config: LeaseConfig,
    recently_moved: Collection[str] = (),
) -> list[Assignment]:
    """What the coordinator writes this round.

    ``workers`` are the live ones; ``expired`` the shards whose holder is
    presumed gone (the caller judges that on its own clock).
    """
    if not workers:
        return []
    workable = workable_leases(leases)
    weight = lease_weights(workable, config.balance)
    loads = _Loads(workers, len(workable))
    plan: list[Assignment] = []
    unplaced: list[Lease] = []
    for lease in workable:
        holder = lease.owner if lease.shard_id not in expired else None
        if holder is not None and holder not in workers:
            # A live holder that sends no reports (an older version): leave it be.
            continue
        if holder is None:
            unplaced.append(lease)
            continue
        target = lease.handoff_to
        if target is not None and target not in workers:
            plan.append(Assignment(lease.shard_id, Kind.CANCEL, holder, None))
            target = None
        loads.add(target or holder, weight[lease.shard_id])
    for lease in sorted(unplaced, key=lambda lease: (-weight[lease.shard_id], lease.shard_id)):
        target = loads.roomiest(weight[lease.shard_id])
        if target is None:
            break
        loads.add(target, weight[lease.shard_id])
        plan.append(Assignment(lease.shard_id, Kind.ASSIGN, lease.owner, target))
    placed = {a.shard_id for a in plan if a.kind is Kind.ASSIGN}
    movable = [
        lease
        for lease in workable
        if lease.shard_id not in placed
        and lease.shard_id not in expired
        and lease.shard_id not in recently_moved
        and lease.owner in workers
        and lease.token is not None
        and lease.handoff_to is None
    ]
    budget = config.max_moves_per_round
    if budget is None:
        budget = max(1, len(workable) // 10)
    return plan + _rebalance(movable, weight, loads, config.rebalance_threshold, budget)


def _rebalance(
    movable: Sequence[Lease],
    weight: Mapping[str, float],
    loads: _Loads,
    threshold: float,
    budget: int,
) -> list[Assignment]:
    ratios = loads.ratios()
    excess = any(loads.count[w] > loads.limit[w] for w in ratios)
    if len(ratios) < 2 or (not excess and all(abs(r - 1) <= threshold for r in ratios.values())):
        return []
    band = threshold / 2
    by_owner: dict[str, list[Lease]] = {}
    for lease in movable:
        by_owner.setdefault(str(lease.owner), []).append(lease)
    moves = _shed_excess(by_owner, weight, loads, budget)
    while len(moves) < budget:
        ratios = loads.ratios()
        room = [w for w in ratios if loads.count[w] < loads.limit[w]]
        if not room:
            break
        under = min(room, key=lambda w: (ratios[w], w))
        best, over = None, ""
        # The most loaded first; one with nothing that helps to move leaves it to the next.
        for over in sorted(ratios, key=lambda w: (-ratios[w], w)):
            if over == under or (ratios[over] - 1 <= band and 1 - ratios[under] <= band):
                break
            best = _best_move(by_owner.get(over, []), weight, loads, over, under)
            if best is not None:
                break
        if best is None:
            break
        by_owner[over].remove(best)
        loads.add(over, weight[best.shard_id], -1)
        loads.add(under, weight[best.shard_id])
        moves.append(Assignment(best.shard_id, Kind.MOVE, over, under))
    return moves


def _shed_excess(
    by_owner: dict[str, list[Lease]], weight: Mapping[str, float], loads: _Loads, budget: int
) -> list[Assignment]:
    """Move the lightest leases off workers above their count limit, to the least loaded."""
    moves: list[Assignment] = []
    for over, leases in by_owner.items():
        leases.sort(key=lambda lease: (weight[lease.shard_id], lease.shard_id))
        while loads.count[over] > loads.limit[over] and leases and len(moves) < budget:
            ratios = loads.ratios()
            room = [w for w in ratios if w != over and loads.count[w] < loads.limit[w]]
            if not room:
                return moves
            under = min(room, key=lambda w: (ratios[w], w))
            lease = leases.pop(0)
            loads.add(over, weight[lease.shard_id], -1)
            loads.add(under, weight[lease.shard_id])
            moves.append(Assignment(lease.shard_id, Kind.MOVE, over, under))
    return moves


def _best_move(
    candidates: Sequence[Lease], weight: Mapping[str, float], loads: _Loads, over: str, under: str
) -> Lease | None:
    """The lease of ``over`` whose move to ``under`` leaves the pair closest to their shares."""
    total, capacity = sum(loads.load.values()), sum(loads.capacity.values())
    share = {w: total * loads.capacity[w] / capacity for w in (over, under)}

    def spread(moved: float) -> float:
        a = (loads.load[over] - moved) / share[over]
        b = (loads.load[under] + moved) / share[under]
        return max(abs(a - 1), abs(b - 1))

    now = spread(0.0)
    best = min(
        candidates, key=lambda lease: (spread(weight[lease.shard_id]), lease.shard_id), default=None
    )
    if best is None or spread(weight[best.shard_id]) >= now:
        return None
    return best
