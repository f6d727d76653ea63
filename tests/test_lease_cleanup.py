"""Removing finished shards' leases, and shard sync not bringing them back, on both lease stores."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from kinesis_eo.flow import run_sync
from kinesis_eo.leases import (
    DynamoDBLeaseStore,
    Lease,
    LeaseConfig,
    LeaseLostError,
    LeaseManager,
    LeaseStore,
    MemoryLeaseStore,
    create_lease_table,
)
from kinesis_eo.leases.store import Change, LeaseCondition
from kinesis_eo.records import MAX_HASH_KEY, HashKeyRange, Position
from kinesis_eo.retrieval import ChildShard, Shard, ShardGraph
from kinesis_eo.retry import RetryConfig
from kinesis_eo.status import FINISHED_REMOVED, NO_LEASE, shard_statuses

RETRY = RetryConfig(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01)
CONFIG = LeaseConfig(table_name="leases", failover_s=10.0, cleanup_interval_s=60.0)
WHOLE = HashKeyRange(0, MAX_HASH_KEY)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = CONFIG.cleanup_interval_s) -> None:
        self.now += seconds


@dataclass
class Table:
    store: LeaseStore
    client: Any
    clock: Clock

    def run(self, flow: Any) -> Any:
        return run_sync(flow, self.client, RETRY)

    def manager(self, worker: str) -> LeaseManager:
        return LeaseManager(self.store, CONFIG, worker, self.clock)

    def leases(self) -> dict[str, Lease]:
        return {lease.shard_id: lease for lease in self.run(self.store.list_leases())}

    def put(self, lease: Lease) -> None:
        assert self.run(self.store.create(lease))

    def clean_up(self, manager: LeaseManager, graph: ShardGraph | None = None) -> list[str]:
        """One cleanup round, a cleanup interval after the last."""
        self.clock.advance()
        deleted: list[str] = self.run(manager.clean_up(graph))
        return deleted


@pytest.fixture(params=["memory", "dynamodb"])
def table(request: pytest.FixtureRequest) -> Iterator[Table]:
    if request.param == "memory":
        yield Table(MemoryLeaseStore(), None, Clock())
        return
    dynamodb = request.getfixturevalue("dynamodb")
    create_lease_table(dynamodb, "leases")
    yield Table(DynamoDBLeaseStore("leases"), dynamodb, Clock())


def shard(shard_id: str, *parents: str) -> Shard:
    return Shard(
        shard_id,
        WHOLE,
        "1",
        parents[0] if parents else None,
        parents[1] if len(parents) > 1 else None,
    )


def child(shard_id: str, *parents: str) -> ChildShard:
    return ChildShard(shard_id, parents, WHOLE)


def read_to_end(table: Table, worker: LeaseManager, shard_id: str, *children: ChildShard) -> None:
    """Take, end and release a shard, as a worker does at the end of a closed shard."""
    assert table.run(worker.take(table.leases()[shard_id])) is not None
    table.run(worker.end_shard(shard_id, children))
    table.run(worker.release(shard_id))


def checkpoint(table: Table, worker: LeaseManager, shard_id: str, sequence: str) -> None:
    assert table.run(worker.take(table.leases()[shard_id])) is not None
    table.run(worker.checkpoint(shard_id, Position(sequence)))


SPLIT = ShardGraph([shard("s0"), shard("s1", "s0"), shard("s2", "s0")])


def split(table: Table, worker: LeaseManager) -> None:
    """s0 read to its end and split into s1 and s2, whose leases are still at TRIM_HORIZON."""
    table.run(worker.sync_shards(ShardGraph([shard("s0")])))
    read_to_end(table, worker, "s0", child("s1", "s0"), child("s2", "s0"))


def test_a_finished_parent_stays_until_every_child_is_checkpointed_then_goes(table: Table) -> None:
    worker = table.manager("a")
    split(table, worker)

    assert table.clean_up(worker) == []
    checkpoint(table, worker, "s1", "15")
    assert table.clean_up(worker) == []
    checkpoint(table, worker, "s2", "16")
    assert table.clean_up(worker) == ["s0"]

    assert set(table.leases()) == {"s1", "s2"}


def test_a_finished_parent_whose_child_has_no_lease_stays(table: Table) -> None:
    table.put(Lease("s0", checkpoint="SHARD_END", children=frozenset({"s1", "s2"})))
    table.put(Lease("s1", checkpoint="15", parents=frozenset({"s0"})))

    assert table.clean_up(table.manager("a")) == []
    assert set(table.leases()) == {"s0", "s1"}


def test_a_finished_parent_that_recorded_no_children_goes_by_the_listed_children(
    table: Table,
) -> None:
    table.put(Lease("s0", checkpoint="SHARD_END"))
    table.put(Lease("s1", checkpoint="15", parents=frozenset({"s0"})))
    table.put(Lease("s2", checkpoint="SHARD_END", parents=frozenset({"s0"})))
    worker = table.manager("a")

    assert table.clean_up(worker) == []  # without the stream's word, the children are unknown
    assert table.clean_up(worker, SPLIT) == ["s0"]


def test_cleanup_runs_at_most_once_per_interval(table: Table) -> None:
    worker = table.manager("a")
    split(table, worker)
    assert table.clean_up(worker) == []
    checkpoint(table, worker, "s1", "15")
    checkpoint(table, worker, "s2", "16")

    table.clock.advance(CONFIG.cleanup_interval_s / 2)
    early = table.run(worker.clean_up())
    table.clock.advance(CONFIG.cleanup_interval_s / 2)
    on_time = table.run(worker.clean_up())

    assert (early, on_time) == ([], ["s0"])


def test_a_lineage_goes_oldest_first_one_generation_a_round(table: Table) -> None:
    table.put(Lease("s0", checkpoint="SHARD_END", children=frozenset({"s1"})))
    table.put(
        Lease("s1", checkpoint="SHARD_END", parents=frozenset({"s0"}), children=frozenset({"s2"}))
    )
    table.put(Lease("s2", checkpoint="20", parents=frozenset({"s1"})))
    worker = table.manager("a")

    assert table.clean_up(worker) == ["s0"]
    assert table.clean_up(worker) == ["s1"]
    assert table.clean_up(worker) == []
    assert set(table.leases()) == {"s2"}


def test_both_parents_of_a_merge_go_once_the_merged_child_is_under_way(table: Table) -> None:
    worker = table.manager("a")
    table.run(worker.sync_shards(ShardGraph([shard("s0"), shard("s1")])))
    read_to_end(table, worker, "s0", child("s2", "s0", "s1"))
    read_to_end(table, worker, "s1", child("s2", "s0", "s1"))

    assert table.clean_up(worker) == []
    checkpoint(table, worker, "s2", "30")
    assert sorted(table.clean_up(worker)) == ["s0", "s1"]


def test_a_finished_lease_stays_while_its_owner_renews_it(table: Table) -> None:
    table.run(table.manager("setup").sync_shards(ShardGraph([shard("s0")])))
    owner, cleaner = table.manager("a"), table.manager("b")
    assert table.run(owner.take(table.leases()["s0"])) is not None
    table.run(owner.end_shard("s0", [child("s1", "s0")]))
    checkpoint(table, cleaner, "s1", "15")

    assert table.clean_up(cleaner) == []  # first seen: not known to be idle
    assert table.run(owner.renew("s0"))
    assert table.clean_up(cleaner) == []  # the counter moved: its owner is alive
    assert table.clean_up(cleaner) == ["s0"]  # unchanged for a failover time: its owner is gone


class RacingStore(LeaseStore):
    """A lease store where another worker acts right after a scan, before its reader goes on."""

    def __init__(self, inner: LeaseStore) -> None:
        self.inner = inner
        self.race: Callable[[], Generator[Any, Any, Any]] | None = None
        self.stale: Callable[[list[Lease]], list[Lease]] | None = None

    def list_leases(self) -> Generator[Any, Any, list[Lease]]:
        leases = yield from self.inner.list_leases()
        race, self.race = self.race, None
        if race is not None:
            yield from race()
        stale, self.stale = self.stale, None
        return stale(leases) if stale is not None else leases

    def create(self, lease: Lease) -> Generator[Any, Any, bool]:
        return self.inner.create(lease)

    def update(
        self, shard_id: str, change: Change, condition: LeaseCondition
    ) -> Generator[Any, Any, Lease]:
        return self.inner.update(shard_id, change, condition)

    def delete(self, shard_id: str, condition: LeaseCondition) -> Generator[Any, Any, None]:
        return self.inner.delete(shard_id, condition)

    def fence(self, shard_id: str, owner: str, token: str) -> Any:
        return self.inner.fence(shard_id, owner, token)


def test_two_workers_cleaning_at_once_delete_the_lease_once_without_error(table: Table) -> None:
    worker = table.manager("a")
    split(table, worker)
    checkpoint(table, worker, "s1", "15")
    checkpoint(table, worker, "s2", "16")
    racing = RacingStore(table.store)
    first = LeaseManager(racing, CONFIG, "c1", table.clock)
    second = LeaseManager(table.store, CONFIG, "c2", table.clock)
    # The second worker cleans between the first one's scan and its delete.
    racing.race = lambda: second.clean_up()

    assert table.clean_up(first) == []
    assert set(table.leases()) == {"s1", "s2"}


def test_a_delete_loses_to_a_take_made_after_the_scan(table: Table) -> None:
    worker = table.manager("a")
    split(table, worker)
    checkpoint(table, worker, "s1", "15")
    checkpoint(table, worker, "s2", "16")
    racing = RacingStore(table.store)
    cleaner = LeaseManager(racing, CONFIG, "c", table.clock)
    taker = table.manager("t")
    racing.race = lambda: taker.take(table.leases()["s0"])

    assert table.clean_up(cleaner) == []
    assert table.leases()["s0"].owner == "t"


# --- shard sync after cleanup ---------------------------------------------------------------------


def test_shard_sync_does_not_bring_back_a_cleaned_up_parent_the_stream_still_lists(
    table: Table,
) -> None:
    worker = table.manager("a")
    split(table, worker)
    checkpoint(table, worker, "s1", "15")
    checkpoint(table, worker, "s2", "16")
    assert table.clean_up(worker) == ["s0"]

    assert table.run(worker.sync_shards(SPLIT)) == 0
    assert set(table.leases()) == {"s1", "s2"}


def test_shard_sync_does_not_bring_back_a_cleaned_up_lineage(table: Table) -> None:
    graph = ShardGraph([shard("s0"), shard("s1", "s0"), shard("s2", "s1")])
    table.put(Lease("s2", checkpoint="25", parents=frozenset({"s1"})))
    worker = table.manager("a")

    assert table.run(worker.sync_shards(graph)) == 0
    assert set(table.leases()) == {"s2"}


def test_shard_sync_still_creates_the_missing_parent_of_a_child_not_read_yet(table: Table) -> None:
    table.put(Lease("s1", parents=frozenset({"s0"})))

    assert table.run(table.manager("a").sync_shards(SPLIT)) == 2
    assert table.leases()["s0"].checkpoint == "TRIM_HORIZON"


def test_shard_sync_looks_again_when_its_scan_saw_a_child_before_its_checkpoint(
    table: Table,
) -> None:
    table.put(Lease("s1", checkpoint="15", parents=frozenset({"s0"})))
    table.put(Lease("s2", checkpoint="16", parents=frozenset({"s0"})))
    racing = RacingStore(table.store)
    # As a scan that read the children before their first checkpoints, then found s0 deleted.
    racing.stale = lambda leases: [replace(lease, checkpoint="TRIM_HORIZON") for lease in leases]
    worker = LeaseManager(racing, CONFIG, "a", table.clock)

    assert table.run(worker.sync_shards(SPLIT)) == 0
    assert set(table.leases()) == {"s1", "s2"}


def test_a_worker_that_lost_the_lease_ends_the_shard_without_creating_child_leases(
    table: Table,
) -> None:
    table.run(table.manager("setup").sync_shards(ShardGraph([shard("s0")])))
    zombie, thief = table.manager("a"), table.manager("b")
    assert table.run(zombie.take(table.leases()["s0"])) is not None
    assert table.run(thief.take(table.leases()["s0"])) is not None

    with pytest.raises(LeaseLostError):
        table.run(zombie.end_shard("s0", [child("s1", "s0")]))

    assert set(table.leases()) == {"s0"}
    assert not table.leases()["s0"].finished


def test_status_shows_a_cleaned_up_parent_as_finished_not_as_waiting_for_a_lease(
    table: Table,
) -> None:
    graph = ShardGraph([*SPLIT.shards, shard("s3")])
    table.put(Lease("s1", checkpoint="15", parents=frozenset({"s0"})))
    table.put(Lease("s2", parents=frozenset({"s0"})))

    rows = {row.shard_id: row.state for row in shard_statuses(table.leases().values(), graph)}

    assert rows == {"s0": FINISHED_REMOVED, "s1": "free", "s2": "free", "s3": NO_LEASE}
