"""Taking, renewing, handing over, releasing and checkpointing leases: the protocol, once.

Decisions are plain functions over what a worker has observed
(:func:`~kinesis_eo.leases.assignment.plan_assignment`, :meth:`Observations.expired`);
the I/O is a few flows over a :class:`~kinesis_eo.leases.store.LeaseStore`.
Every write is conditional: takes on the counter and owner last seen,
renewals, checkpoints, handoffs and releases on this acquisition's owner and token.

A worker reads only its own leases (:meth:`LeaseManager.discover`, through the
owner index) and takes what the coordinator assigned it; renewals carry the
throughput it measured and bring back the coordinator's requests to hand a
lease over, which the next checkpoint carries out in the same write.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import Any

from kinesis_eo.flow import gather
from kinesis_eo.leases.balancing import Observations, plan_takes
from kinesis_eo.leases.cleanup import plan_cleanup, retired_shards
from kinesis_eo.leases.load import RateMeter
from kinesis_eo.leases.model import (
    CHECKPOINT,
    CHILDREN,
    HANDOFF,
    MILLIS_BEHIND,
    OWNER,
    OWNER_SWITCHES,
    RECORDS_PROCESSED,
    SUB_SEQUENCE,
    THROUGHPUT,
    TOKEN,
    Lease,
    LeaseConfig,
    LeaseLostError,
    Sentinel,
    WorkerReport,
    is_entity_key,
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
        # The most leases this worker holds (the threaded worker lowers it to its thread limit).
        self.max_leases = config.max_leases_per_worker
        self._meters: dict[str, RateMeter] = {}
        # When this worker first saw a request to hand a held lease over.
        self._handoff_seen: dict[str, float] = {}
        # The tokens of acquisitions this worker handed over: a renewal of one, in flight
        # as it went, fails its condition but lost nothing.
        self._handed_over: set[str] = set()

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
            remove=(HANDOFF,),
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
        meter = self._meters[lease.shard_id] = RateMeter(self.config.load_window_s)
        meter.add(self.clock(), taken.records_processed or 0)
        return taken

    # --- the coordinated protocol: report, discover, hand over ----------------------------------

    def report(self) -> Generator[Any, Any, None]:
        """Tell the coordinator this worker is alive, and how much it may take."""
        report = WorkerReport(
            self.worker_id, capacity=self.config.capacity, max_leases=self.max_leases
        )
        yield from self.store.report(report)

    def leave(self) -> Generator[Any, Any, None]:
        """Remove this worker's report, then free what was assigned to it and not taken."""
        yield from self.store.remove_report(self.worker_id)
        yield from self.free_unclaimed()

    def free_unclaimed(self) -> Generator[Any, Any, None]:
        """Give back every lease the table names this worker owner of and it never took."""
        for key in (yield from self.store.owned_keys(self.worker_id)):
            if key in self.held or is_entity_key(key):
                continue
            lease = yield from self.store.get(key)
            if lease is not None and lease.owner == self.worker_id and lease.token is None:
                yield from self._give_back(lease)

    def discover(self) -> Generator[Any, Any, list[Lease]]:
        """Take the leases the table names this worker owner of but it does not hold; those taken.

        The owner index is read (eventually consistent), each new lease then
        read on its own (strongly) before it is taken on its counter. Leases
        past this worker's limit, or of shards it is cooling off from, are given
        back for the coordinator to place elsewhere.
        """
        keys = yield from self.store.owned_keys(self.worker_id)
        now = self.clock()
        self.cooling = {shard: until for shard, until in self.cooling.items() if until > now}
        new = [key for key in keys if key not in self.held and not is_entity_key(key)]
        concurrency = self.config.write_concurrency
        read = yield from gather([self.store.get(key) for key in new], concurrency)
        room = math.inf if self.max_leases is None else self.max_leases - len(self.held)
        takes: list[Lease] = []
        returns: list[Lease] = []
        for lease in read:
            if lease is None or lease.owner != self.worker_id or lease.finished:
                continue
            wanted = lease.shard_id not in self.cooling and len(takes) < room
            (takes if wanted else returns).append(lease)
        taken = yield from gather([self.take(lease) for lease in takes], concurrency)
        yield from gather([self._give_back(lease) for lease in returns], concurrency)
        return [lease for lease in taken if lease is not None]

    def _give_back(self, lease: Lease) -> Generator[Any, Any, None]:
        with contextlib.suppress(LeaseConflict):
            yield from self.store.update(
                lease.shard_id,
                Change(remove=(OWNER, TOKEN, HANDOFF), bump_counter=True),
                Unchanged(lease.counter, lease.owner),
            )

    def handing_over(self, shard_id: str) -> str | None:
        """The worker the coordinator asked this one to hand ``shard_id`` to, if any."""
        lease = self.held.get(shard_id)
        return None if lease is None else lease.handoff_to

    def hand_over(
        self, shard_id: str, values: dict[str, Any] | None = None
    ) -> Generator[Any, Any, Lease]:
        """Give a held lease to the worker the coordinator named, with ``values`` in the same write.

        The owner changes and the token goes: this acquisition's fence fails
        from now on, and the target takes the lease at its next round.
        """
        lease = self.held[shard_id]
        change = Change(
            set={
                **(values or {}),
                OWNER: str(lease.handoff_to),
                OWNER_SWITCHES: lease.owner_switches + 1,
            },
            remove=(TOKEN, HANDOFF),
            bump_counter=True,
        )
        given = yield from self._write(shard_id, change)
        if len(self._handed_over) > 1024:
            self._handed_over.clear()  # each is looked at within a round; old ones are moot
        self._handed_over.add(str(lease.token))
        self._forget(shard_id)
        log.info("handed %s over to %s", shard_id, lease.handoff_to)
        return given

    def _forget(self, shard_id: str) -> None:
        self.held.pop(shard_id, None)
        self._meters.pop(shard_id, None)
        self._handoff_seen.pop(shard_id, None)

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
            self._forget(shard_id)
            holder = conflict.current.owner if conflict.current else None
            raise LeaseLostError(
                f"the lease of {shard_id} is no longer this worker's (now: {holder or 'nobody'})"
            ) from conflict
        self.held[shard_id] = lease
        return lease

    def renew(self, shard_id: str) -> Generator[Any, Any, bool]:
        """Bump the counter so others see the lease alive, with the throughput measured.

        False if the lease was lost. A handoff the coordinator asked for and
        no checkpoint carried out within the handoff timeout (an idle shard:
        nothing is left to checkpoint) is carried out here.
        """
        now = self.clock()
        before = self.held.get(shard_id)
        if before is None:
            return True  # handed over or released since the renewals began: not lost
        meter = self._meters.get(shard_id)
        rate = None if meter is None else meter.rate(now)
        values: dict[str, Any] = {} if rate is None else {THROUGHPUT: round(rate, 3)}
        try:
            lease = yield from self._write(shard_id, Change(set=values, bump_counter=True))
            if lease.handoff_to is not None:
                seen = self._handoff_seen.setdefault(shard_id, now)
                if now - seen >= self.config.handoff_timeout:
                    yield from self.hand_over(shard_id)
        except LeaseLostError:
            if before.token in self._handed_over:
                self._handed_over.discard(str(before.token))
                return True  # handed over meanwhile, by the shard loop's checkpoint
            log.warning("lost the lease of %s", shard_id)
            return False
        return True

    def renew_all(self) -> Generator[Any, Any, list[str]]:
        """Renew every held lease, ``write_concurrency`` at a time; the shards lost."""
        shards = list(self.held)
        kept = yield from gather(
            [self.renew(shard_id) for shard_id in shards], self.config.write_concurrency
        )
        return [shard_id for shard_id, ok in zip(shards, kept, strict=True) if not ok]

    def release(self, shard_id: str) -> Generator[Any, Any, None]:
        """Give the lease up at once, so another worker takes it without waiting for expiry."""
        # If someone else has it already, there is nothing to give up.
        # Free, even with a handoff asked for: the target may be stopping too, and the
        # coordinator places a free lease within a round.
        try:
            with contextlib.suppress(LeaseLostError):
                change = Change(remove=(OWNER, TOKEN, HANDOFF), bump_counter=True)
                yield from self._write(shard_id, change)
        finally:
            # Even when the write failed (the table is down): a lease this worker goes on
            # renewing with no loop reading its shard would stall the shard for good, where
            # one it forgets expires and is placed again after the failover time.
            self._forget(shard_id)

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
        processed by every holder (each new holder continues from the lease's);
        this worker measures the lease's throughput from it. If the coordinator
        asked for the lease to be handed over, this write hands it over too: the
        batch is done and saved, and the shard loop ends as the lease is no
        longer held.
        """
        if records_processed is not None and shard_id in self._meters:
            self._meters[shard_id].add(self.clock(), records_processed)
        values: dict[str, Any] = {
            CHECKPOINT: position.sequence_number,
            SUB_SEQUENCE: position.sub_sequence_number,
            OWNER_SWITCHES: 0,
        }
        if millis_behind_latest is not None:
            values[MILLIS_BEHIND] = millis_behind_latest
        if records_processed is not None:
            values[RECORDS_PROCESSED] = records_processed
        if self.handing_over(shard_id) is not None:
            return (yield from self.hand_over(shard_id, values))
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
        new = []
        for shard in missing:
            parents = frozenset(graph.parents_of(shard.shard_id))
            start = Sentinel.TRIM_HORIZON if parents else initial
            lease = Lease(
                shard.shard_id,
                checkpoint=start.value,
                parents=parents,
                hash_range=shard.hash_range,
            )
            new.append(lease)
        # A thousand shards at a cold start: not a thousand round trips one after another.
        done = yield from gather(
            [self.store.create(lease) for lease in new], self.config.write_concurrency
        )
        return sum(1 for created in done if created)

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
