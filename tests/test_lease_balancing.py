"""How leases spread over workers and move when one dies, with simulated time."""

from __future__ import annotations

from collections import Counter

from kinesis_eo.flow import run_sync
from kinesis_eo.leases import (
    Lease,
    LeaseConfig,
    LeaseManager,
    MemoryLeaseStore,
    Observations,
    plan_takes,
)
from tests.leases import CONFIG, RETRY, Clock


def store_with(count: int) -> MemoryLeaseStore:
    store = MemoryLeaseStore()
    for i in range(count):
        run_sync(store.create(Lease(f"shard-{i:02d}")), None, RETRY)
    return store


def owners(store: MemoryLeaseStore) -> Counter[str | None]:
    return Counter(lease.owner for lease in store.leases.values())


def round_of(managers: list[LeaseManager]) -> None:
    for manager in managers:
        run_sync(manager.renew_all(), None, RETRY)
        run_sync(manager.take_round(), None, RETRY)


def test_three_workers_on_eight_shards_settle_to_three_three_two() -> None:
    store, clock = store_with(8), Clock()
    workers = [LeaseManager(store, CONFIG, f"w{i}", clock) for i in range(3)]

    for _ in range(12):
        round_of(workers)
        clock.now += CONFIG.renew_interval

    assert sorted(owners(store).values()) == [2, 3, 3]
    assert None not in owners(store)


def test_a_dead_workers_leases_move_within_failover_plus_one_renew_interval() -> None:
    store, clock = store_with(8), Clock()
    workers = [LeaseManager(store, CONFIG, f"w{i}", clock) for i in range(3)]
    for _ in range(12):
        round_of(workers)
        clock.now += CONFIG.renew_interval
    dead = workers.pop(0)
    orphaned = {shard for shard, lease in store.leases.items() if lease.owner == dead.worker_id}
    died_at = clock.now

    while any(store.leases[s].owner == dead.worker_id for s in orphaned):
        round_of(workers)
        clock.now += CONFIG.renew_interval
        assert clock.now - died_at <= CONFIG.failover_s + 2 * CONFIG.renew_interval

    assert sorted(owners(store).values()) == [4, 4]


def test_a_live_lease_is_not_taken_before_the_failover_time() -> None:
    store, clock = store_with(1), Clock()
    a = LeaseManager(store, CONFIG, "a", clock)
    b = LeaseManager(store, CONFIG, "b", clock)
    run_sync(a.take_round(), None, RETRY)
    run_sync(b.refresh(), None, RETRY)

    clock.now += CONFIG.failover_s - 0.5
    assert run_sync(b.take_round(), None, RETRY) == []
    run_sync(a.renew_all(), None, RETRY)  # a renews in time...
    run_sync(b.refresh(), None, RETRY)  # ...and b's clock starts again when it sees that
    clock.now += CONFIG.failover_s - 0.5
    assert run_sync(b.take_round(), None, RETRY) == []
    clock.now += 1.0
    assert [lease.shard_id for lease in run_sync(b.take_round(), None, RETRY)] == ["shard-00"]


def test_a_child_lease_waits_until_every_parent_reached_shard_end() -> None:
    leases = [
        Lease("p1", owner=None),
        Lease("p2", checkpoint="SHARD_END"),
        Lease("child", parents=frozenset({"p1", "p2"})),
    ]
    observations = Observations()
    observations.update(leases, 0.0)

    first = plan_takes(leases, "w", observations, 0.0, CONFIG)
    leases[0] = Lease("p1", checkpoint="SHARD_END", counter=3)
    after = plan_takes(leases, "w", observations, 0.0, CONFIG)

    assert [lease.shard_id for lease in first] == ["p1"]
    assert [lease.shard_id for lease in after] == ["child"]


def test_stealing_is_limited_per_round_and_stops_at_the_target() -> None:
    leases = [Lease(f"s{i}", owner="busy", counter=1) for i in range(6)]
    observations = Observations()
    observations.update(leases, 0.0)

    one = plan_takes(leases, "idle", observations, 1.0, CONFIG)
    two = plan_takes(
        leases,
        "idle",
        observations,
        1.0,
        LeaseConfig(table_name="-", failover_s=9.0, max_steals_per_round=5),
    )

    assert len(one) == 1
    assert len(two) == 3  # the target is 3 each: never take the victim below it
    assert all(lease.owner == "busy" for lease in two)


def test_a_worker_restarted_under_the_same_id_takes_its_old_leases_back_at_once() -> None:
    store, clock = store_with(3), Clock()
    before = LeaseManager(store, CONFIG, "same-id", clock)
    run_sync(before.take_round(), None, RETRY)
    assert len(before.held) == 3

    after = LeaseManager(store, CONFIG, "same-id", clock)  # the process restarted
    taken = run_sync(after.take_round(), None, RETRY)

    assert sorted(lease.shard_id for lease in taken) == ["shard-00", "shard-01", "shard-02"]
    assert len(after.held) == 3


def test_a_shard_given_up_after_a_failure_is_left_to_others_for_a_failover_time() -> None:
    store, clock = store_with(1), Clock()
    failing = LeaseManager(store, CONFIG, "failing", clock)
    run_sync(failing.take_round(), None, RETRY)

    run_sync(failing.give_up("shard-00"), None, RETRY)

    assert store.leases["shard-00"].owner is None  # others may take it at once
    assert run_sync(failing.take_round(), None, RETRY) == []
    clock.now += CONFIG.failover_s + 0.1
    assert len(run_sync(failing.take_round(), None, RETRY)) == 1


def test_a_take_from_a_live_worker_counts_as_a_steal_and_one_from_a_dead_worker_does_not() -> None:
    store, clock = store_with(4), Clock()
    first = LeaseManager(store, CONFIG, "first", clock)
    round_of([first])
    assert owners(store) == {"first": 4}
    second = LeaseManager(store, CONFIG, "second", clock)

    # "first" keeps renewing: what "second" takes to balance is stolen.
    stolen = 0
    for _ in range(6):
        round_of([first, second])
        stolen += second.stolen_last_round
        clock.now += CONFIG.renew_interval
    assert owners(store) == {"first": 2, "second": 2}
    assert stolen == 2

    # "first" dies: its leases expire, and taking them back steals from nobody.
    takes = []
    for _ in range(6):
        clock.now += CONFIG.renew_interval
        round_of([second])
        takes.append((len(second.held), second.stolen_last_round))
    assert owners(store) == {"second": 4}
    assert all(stolen_now == 0 for _, stolen_now in takes)
