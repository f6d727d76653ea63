"""The elected coordinator, assignment and handoffs: in memory on a simulated clock, and on moto."""

from __future__ import annotations

from typing import Any

import pytest

from kinesis_eo.flow import run_sync
from kinesis_eo.leases import (
    Coordinator,
    DynamoDBLeaseStore,
    Lease,
    LeaseConfig,
    LeaseManager,
    LeaseStore,
    MemoryLeaseStore,
    create_lease_table,
)
from kinesis_eo.leases.model import COORDINATOR_KEY, HANDOFF
from kinesis_eo.leases.store import Change, Held
from kinesis_eo.records import Position
from kinesis_eo.testing.effects import create_effects_table
from tests.leases import CONFIG, RETRY, Clock


class Fleet:
    """Workers on one store, each with its manager and its part in the election."""

    def __init__(self, store: LeaseStore, client: Any = None) -> None:
        self.store, self.client, self.clock = store, client, Clock()
        self.managers: dict[str, LeaseManager] = {}
        self.coordinators: dict[str, Coordinator] = {}

    def run(self, flow: Any) -> Any:
        return run_sync(flow, self.client, RETRY)

    def add(self, name: str, config: LeaseConfig = CONFIG) -> LeaseManager:
        manager = LeaseManager(self.store, config, name, self.clock)
        self.managers[name] = manager
        self.coordinators[name] = Coordinator(manager)
        return manager

    def round(self, *names: str) -> None:
        """What coordinator_flow does each round, for the workers named."""
        for name in names:
            manager, coordinator = self.managers[name], self.coordinators[name]
            self.run(manager.report())
            self.run(manager.renew_all())
            self.run(coordinator.elect())
            self.run(coordinator.assign_round())
            self.run(manager.discover())
        self.clock.now += CONFIG.renew_interval

    def owners(self) -> dict[str, str | None]:
        leases = self.run(self.store.list_leases())
        return {lease.shard_id: lease.owner for lease in leases}


def memory_fleet(leases: int) -> Fleet:
    fleet = Fleet(MemoryLeaseStore())
    for i in range(leases):
        fleet.run(fleet.store.create(Lease(f"s{i}")))
    return fleet


def test_one_worker_is_elected_and_another_takes_over_only_after_the_failover_time() -> None:
    fleet = memory_fleet(0)
    a, b = fleet.add("a"), fleet.add("b")
    ca, cb = fleet.coordinators["a"], fleet.coordinators["b"]

    assert fleet.run(ca.elect()) is True
    for _ in range(6):  # a renews every round: b never takes over
        fleet.clock.now += CONFIG.renew_interval
        assert fleet.run(ca.elect()) is True
        assert fleet.run(cb.elect()) is False
    fleet.clock.now += CONFIG.failover_s - 0.5  # a falls silent (b saw its last renewal)
    assert fleet.run(cb.elect()) is False
    fleet.clock.now += 1.0
    assert fleet.run(cb.elect()) is True
    assert fleet.run(ca.elect()) is False  # a's renewal is fenced: it stops coordinating
    assert fleet.run(fleet.store.get(COORDINATOR_KEY)).owner == b.worker_id
    assert a.worker_id != b.worker_id


def test_the_coordinator_spreads_free_leases_and_each_worker_takes_only_its_own() -> None:
    fleet = memory_fleet(6)
    for name in ("a", "b", "c"):
        fleet.add(name)

    for _ in range(4):
        fleet.round("a", "b", "c")

    owners = fleet.owners()
    assert sorted(list(owners.values()).count(n) for n in "abc") == [2, 2, 2]
    for name, manager in fleet.managers.items():
        assert sorted(manager.held) == sorted(s for s, o in owners.items() if o == name)


def test_a_dead_coordinators_leases_are_placed_in_the_first_round_after_takeover() -> None:
    fleet = memory_fleet(4)
    fleet.add("a"), fleet.add("b")
    for _ in range(4):
        fleet.round("a", "b")
    assert sorted(fleet.owners().values()) == ["a", "a", "b", "b"]
    silent_from = fleet.clock.now

    # "a" dies. "b" sees the coordinator's item silent for a failover time, takes
    # over, and knows a's leases have been silent as long: no second failover wait.
    while fleet.coordinators["b"].token is None:
        fleet.round("b")
    fleet.round("b")

    assert set(fleet.owners().values()) == {"b"}
    assert fleet.clock.now - silent_from <= CONFIG.failover_s + 3 * CONFIG.renew_interval


def test_an_idle_holder_hands_a_lease_over_at_renewal_after_the_handoff_timeout() -> None:
    fleet = memory_fleet(1)
    a = fleet.add("a")
    fleet.add("b")
    lease = fleet.run(a.take(fleet.run(fleet.store.get("s0"))))
    # What the coordinator writes to move a held lease: the request, on the holder's fence.
    fleet.run(fleet.store.update("s0", Change(set={HANDOFF: "b"}), Held("a", str(lease.token))))

    fleet.run(a.renew("s0"))  # sees the request: waits for a checkpoint to carry it out
    assert fleet.owners() == {"s0": "a"}
    fleet.clock.now += CONFIG.handoff_timeout
    fleet.run(a.renew("s0"))  # nothing came to checkpoint: hands over without one

    assert fleet.owners() == {"s0": "b"}
    assert "s0" not in a.held
    taken = fleet.run(fleet.managers["b"].discover())
    assert [t.shard_id for t in taken] == ["s0"]


def test_a_handoff_rides_on_the_givers_checkpoint_and_fences_its_later_commits(
    dynamodb: Any,
) -> None:
    create_lease_table(dynamodb, "leases")
    create_effects_table(dynamodb, "effects")
    fleet = Fleet(DynamoDBLeaseStore("leases"), dynamodb)
    for shard in ("s0", "s1"):
        fleet.run(fleet.store.create(Lease(shard)))
    giver = fleet.add("giver")
    for _ in range(3):
        fleet.round("giver")
    assert sorted(giver.held) == ["s0", "s1"]
    taker = fleet.add("taker")
    for _ in range(3):  # the taker reports; the coordinator asks the giver to hand one over
        fleet.round("taker", "giver")
    moving = next(s for s in giver.held if giver.handing_over(s) == "taker")
    fence = giver.fence(moving)

    # The giver finishes its batch and checkpoints: the same write hands the lease over.
    fleet.run(giver.checkpoint(moving, Position("42", 0), records_processed=42))
    item = dynamodb.get_item(
        TableName="leases", Key={"leaseKey": {"S": moving}}, ConsistentRead=True
    )
    assert item["Item"]["leaseOwner"] == {"S": "taker"}
    assert item["Item"]["checkpoint"] == {"S": "42"}
    assert "eoOwnerToken" not in item["Item"]
    assert "eoHandoffTo" not in item["Item"]
    assert moving not in giver.held

    put = {"Put": {"TableName": "effects", "Item": {"id": {"S": "e1"}}}}
    with pytest.raises(dynamodb.exceptions.TransactionCanceledException):
        dynamodb.transact_write_items(TransactItems=[fence, put])  # a slow giver cannot commit
    taken = fleet.run(taker.discover())
    assert [lease.shard_id for lease in taken] == [moving]
    assert taken[0].position == Position("42", 0)
    dynamodb.transact_write_items(TransactItems=[taker.fence(moving), put])
