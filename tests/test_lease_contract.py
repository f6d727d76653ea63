"""One contract for every lease store (in memory, DynamoDB on moto), through the LeaseManager."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
    Sentinel,
    create_lease_table,
)
from kinesis_eo.leases.store import LeaseConflict, Unchanged
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Entry,
    FencedError,
    Ledger,
    LedgerConfig,
    LedgerStore,
    MemoryLedgerStore,
    create_ledger_table,
)
from kinesis_eo.records import MAX_HASH_KEY, HashKeyRange, Position, Record
from kinesis_eo.retrieval import ChildShard, Shard, ShardGraph
from kinesis_eo.retry import RetryConfig

RETRY = RetryConfig(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01)
CONFIG = LeaseConfig(table_name="leases", failover_s=10.0)


@dataclass
class Stores:
    leases: LeaseStore
    ledger: LedgerStore
    client: Any

    def run(self, flow: Any) -> Any:
        return run_sync(flow, self.client, RETRY)

    def manager(self, worker: str, clock: Any = None) -> LeaseManager:
        return LeaseManager(self.leases, CONFIG, worker, clock or (lambda: 0.0))

    def lease(self, shard_id: str) -> Lease:
        leases = {lease.shard_id: lease for lease in self.run(self.leases.list_leases())}
        return leases[shard_id]


@pytest.fixture(params=["memory", "dynamodb"])
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    if request.param == "memory":
        yield Stores(MemoryLeaseStore(), MemoryLedgerStore(), None)
        return
    dynamodb = request.getfixturevalue("dynamodb")
    create_lease_table(dynamodb, "leases")
    create_ledger_table(dynamodb, "ledger")
    yield Stores(DynamoDBLeaseStore("leases"), DynamoDBLedgerStore("ledger", RETRY), dynamodb)


def shard(shard_id: str, *parents: str) -> Shard:
    return Shard(
        shard_id,
        HashKeyRange(0, MAX_HASH_KEY),
        "1",
        parents[0] if parents else None,
        parents[1] if len(parents) > 1 else None,
    )


def with_leases(stores: Stores, *shard_ids: str) -> None:
    stores.run(stores.manager("setup").sync_shards(ShardGraph([shard(s) for s in shard_ids])))


def test_a_free_lease_is_taken_and_a_stale_take_loses(stores: Stores) -> None:
    with_leases(stores, "s1")
    seen = stores.lease("s1")
    a, b = stores.manager("a"), stores.manager("b")

    taken = stores.run(a.take(seen))
    late = stores.run(b.take(seen))

    assert taken is not None
    assert taken.owner == "a"
    assert taken.counter == seen.counter + 1
    assert late is None
    assert stores.lease("s1").owner == "a"


def test_renewal_bumps_the_counter_and_keeps_the_fencing_token(stores: Stores) -> None:
    with_leases(stores, "s1")
    a = stores.manager("a")
    taken = stores.run(a.take(stores.lease("s1")))

    assert stores.run(a.renew("s1")) is True

    renewed = stores.lease("s1")
    assert renewed.counter == taken.counter + 1
    assert renewed.token == taken.token


def test_a_stolen_lease_cannot_be_renewed_or_checkpointed_by_its_old_owner(stores: Stores) -> None:
    with_leases(stores, "s1")
    a, b = stores.manager("a"), stores.manager("b")
    stores.run(a.take(stores.lease("s1")))
    stolen = stores.run(b.take(stores.lease("s1")))

    assert stolen is not None
    assert stolen.owner_switches == 2
    assert stores.run(a.renew("s1")) is False
    assert "s1" not in a.held
    with pytest.raises(LeaseLostError):
        stores.run(a.checkpoint("s1", Position("5")))


def test_a_released_lease_is_free_at_once(stores: Stores) -> None:
    with_leases(stores, "s1")
    a, b = stores.manager("a"), stores.manager("b")
    stores.run(a.take(stores.lease("s1")))

    stores.run(a.release("s1"))

    free = stores.lease("s1")
    assert free.owner is None
    assert free.token is None
    assert b.observations.expired(free, now=0.0, failover_s=10.0)
    assert stores.run(b.take(free)) is not None


def test_checkpoints_are_kept_in_the_lease_and_reset_owner_switches(stores: Stores) -> None:
    with_leases(stores, "s1")
    a = stores.manager("a")
    stores.run(a.take(stores.lease("s1")))

    stores.run(
        a.checkpoint(
            "s1", Position("49590338271490256608559692538361571095921575989136588898", 3), 1500
        )
    )

    lease = stores.lease("s1")
    assert lease.position == Position("49590338271490256608559692538361571095921575989136588898", 3)
    assert lease.owner_switches == 0
    assert lease.millis_behind_latest == 1500


def entry(n: int) -> Entry:
    return Entry(Record("orders", "s1", str(n), "pk", b"x%d" % n))


def test_the_fence_lets_the_owner_commit_across_renewals_and_stops_a_zombie(stores: Stores) -> None:
    with_leases(stores, "s1")
    a, b = stores.manager("a"), stores.manager("b")
    stores.run(a.take(stores.lease("s1")))
    ledger = Ledger(stores.ledger, LedgerConfig("billing"))
    fence = a.fence("s1")

    stores.run(a.renew("s1"))
    stores.run(a.renew("s1"))
    honest = stores.run(ledger.commit([entry(1)], guards=[fence]))
    stores.run(b.take(stores.lease("s1")))

    assert honest.committed == [entry(1).record]
    with pytest.raises(FencedError):
        stores.run(ledger.commit([entry(2)], guards=[fence]))
    assert stores.run(Ledger(stores.ledger, LedgerConfig("billing")).screen([entry(2).record])).new


def test_shard_sync_creates_missing_leases_children_from_trim_horizon(stores: Stores) -> None:
    graph = ShardGraph([shard("s0"), shard("s1"), shard("s2", "s0"), shard("s3", "s0", "s1")])
    manager = stores.manager("a")

    created = stores.run(manager.sync_shards(graph, Sentinel.LATEST))
    again = stores.run(manager.sync_shards(graph, Sentinel.LATEST))

    assert (created, again) == (4, 0)
    leases = {lease.shard_id: lease for lease in stores.run(stores.leases.list_leases())}
    assert leases["s0"].checkpoint == "LATEST"
    assert leases["s3"].checkpoint == "TRIM_HORIZON"
    assert leases["s3"].parents == frozenset({"s0", "s1"})


def test_ending_a_shard_records_shard_end_and_creates_its_children(stores: Stores) -> None:
    with_leases(stores, "s0")
    a = stores.manager("a")
    stores.run(a.take(stores.lease("s0")))
    halves = [
        ChildShard("s1", ("s0",), HashKeyRange(0, MAX_HASH_KEY // 2)),
        ChildShard("s2", ("s0",), HashKeyRange(MAX_HASH_KEY // 2 + 1, MAX_HASH_KEY)),
    ]

    stores.run(a.end_shard("s0", halves))

    parent = stores.lease("s0")
    assert parent.finished
    assert parent.children == frozenset({"s1", "s2"})
    assert stores.lease("s2").parents == frozenset({"s0"})
    assert stores.lease("s2").hash_range == halves[1].hash_range


SHARD_END = Sentinel.SHARD_END.value


def finished_lease(stores: Stores, shard_id: str) -> Lease:
    """A lease taken, ended and released, as a worker leaves a closed shard."""
    with_leases(stores, shard_id)
    a = stores.manager("a")
    stores.run(a.take(stores.lease(shard_id)))
    stores.run(a.end_shard(shard_id, []))
    stores.run(a.release(shard_id))
    return stores.lease(shard_id)


def lease_ids(stores: Stores) -> set[str]:
    return {lease.shard_id for lease in stores.run(stores.leases.list_leases())}


def test_a_delete_removes_a_lease_as_last_seen(stores: Stores) -> None:
    seen = finished_lease(stores, "s0")

    stores.run(stores.leases.delete("s0", Unchanged(seen.counter, seen.owner, SHARD_END)))

    assert lease_ids(stores) == set()


def test_a_delete_loses_to_a_change_made_since_the_lease_was_seen(stores: Stores) -> None:
    with_leases(stores, "s0")
    seen = stores.lease("s0")
    stores.run(stores.manager("b").take(seen))

    with pytest.raises(LeaseConflict) as conflict:
        stores.run(stores.leases.delete("s0", Unchanged(seen.counter, seen.owner)))

    assert conflict.value.current is not None
    assert conflict.value.current.owner == "b"
    assert stores.lease("s0").owner == "b"


def test_a_delete_that_requires_shard_end_keeps_a_lease_still_being_read(stores: Stores) -> None:
    with_leases(stores, "s0")
    seen = stores.lease("s0")

    with pytest.raises(LeaseConflict):
        stores.run(stores.leases.delete("s0", Unchanged(seen.counter, None, SHARD_END)))

    assert stores.lease("s0").checkpoint == "TRIM_HORIZON"


def test_a_delete_requiring_shard_end_sees_a_checkpoint_that_did_not_bump_the_counter(
    stores: Stores,
) -> None:
    with_leases(stores, "s0")
    a = stores.manager("a")
    taken = stores.run(a.take(stores.lease("s0")))
    seen = Lease("s0", counter=taken.counter, owner="a", checkpoint=SHARD_END)
    stores.run(a.checkpoint("s0", Position("7")))

    with pytest.raises(LeaseConflict):
        stores.run(stores.leases.delete("s0", Unchanged(seen.counter, "a", SHARD_END)))

    assert stores.lease("s0").checkpoint == "7"


def test_of_two_deletes_of_one_lease_the_second_finds_it_gone(stores: Stores) -> None:
    seen = finished_lease(stores, "s0")
    condition = Unchanged(seen.counter, seen.owner, SHARD_END)
    stores.run(stores.leases.delete("s0", condition))

    with pytest.raises(LeaseConflict) as conflict:
        stores.run(stores.leases.delete("s0", condition))

    assert conflict.value.current is None
    assert lease_ids(stores) == set()


def test_dynamodb_lease_items_use_the_kcl_types(dynamodb: Any) -> None:
    create_lease_table(dynamodb, "leases")
    store = DynamoDBLeaseStore("leases")
    graph = ShardGraph([shard("s0"), shard("s1", "s0")])
    manager = LeaseManager(store, CONFIG, "worker-1", lambda: 0.0)
    run_sync(manager.sync_shards(graph), dynamodb, RETRY)
    leases = {lease.shard_id: lease for lease in run_sync(store.list_leases(), dynamodb, RETRY)}
    run_sync(manager.take(leases["s1"]), dynamodb, RETRY)

    item = dynamodb.get_item(TableName="leases", Key={"leaseKey": {"S": "s1"}})["Item"]

    assert item["leaseOwner"] == {"S": "worker-1"}
    assert set(item["leaseCounter"]) == {"N"}
    assert item["checkpoint"] == {"S": "TRIM_HORIZON"}
    assert item["checkpointSubSequenceNumber"] == {"N": "0"}
    assert item["ownerSwitchesSinceCheckpoint"] == {"N": "1"}
    assert item["parentShardId"] == {"SS": ["s0"]}
    assert set(item["startingHashKey"]) == {"S"}
