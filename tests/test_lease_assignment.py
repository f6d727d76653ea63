"""The coordinator's plan: who holds what, by throughput or count, with dampening."""

from __future__ import annotations

from collections import Counter

from kinesis_eo.leases import Lease, LeaseConfig, WorkerReport, plan_assignment
from kinesis_eo.leases.assignment import Assignment, Kind

CONFIG = LeaseConfig("-", failover_s=9.0)


def workers(*names: str, **overrides: WorkerReport) -> dict[str, WorkerReport]:
    found = {name: WorkerReport(name) for name in names}
    found.update(overrides)
    return found


def held(shard: str, owner: str, rate: float | None = None) -> Lease:
    return Lease(shard, counter=1, owner=owner, token=f"t-{shard}", throughput=rate)


def targets(plan: list[Assignment]) -> Counter[str | None]:
    return Counter(a.target for a in plan)


def test_free_leases_are_placed_heaviest_first_so_throughput_evens_out() -> None:
    rates = [400, 100, 100, 100, 100, 50, 50, 50, 50]
    leases = [Lease(f"s{i}", throughput=r) for i, r in enumerate(rates)]

    plan = plan_assignment(leases, workers("a", "b"), {"-"}, CONFIG)

    load = Counter[str]()
    for a in plan:
        load[str(a.target)] += rates[int(a.shard_id[1:])]
    assert {a.kind for a in plan} == {Kind.ASSIGN}
    assert sorted(load.values()) == [500, 500]
    assert len(plan) == 9


def test_balancing_by_count_ignores_throughput() -> None:
    leases = [Lease(f"s{i}", throughput=1000.0 if i == 0 else 1.0) for i in range(6)]
    config = LeaseConfig("-", failover_s=9.0, balance="count")

    plan = plan_assignment(leases, workers("a", "b"), set(), config)

    assert sorted(targets(plan).values()) == [3, 3]


def test_within_the_threshold_nothing_moves() -> None:
    leases = [held("s0", "a", 105.0), held("s1", "b", 100.0), held("s2", "b", 1.0)]

    assert plan_assignment(leases, workers("a", "b"), set(), CONFIG) == []


def test_an_overloaded_worker_hands_leases_over_within_the_move_budget() -> None:
    leases = [held(f"s{i}", "a", 10.0) for i in range(10)]
    budget = LeaseConfig("-", failover_s=9.0, max_moves_per_round=2)

    unlimited = plan_assignment(leases, workers("a", "b"), set(), CONFIG)
    limited = plan_assignment(leases, workers("a", "b"), set(), budget)

    assert all(a.kind is Kind.MOVE and a.owner == "a" and a.target == "b" for a in unlimited)
    assert len(unlimited) == 1  # the default budget: a tenth of the leases
    assert len(limited) == 2
    five = LeaseConfig("-", failover_s=9.0, max_moves_per_round=50)
    assert len(plan_assignment(leases, workers("a", "b"), set(), five)) == 5


def test_a_lease_moved_lately_is_not_moved_again() -> None:
    leases = [held(f"s{i}", "a", 10.0) for i in range(4)]
    config = LeaseConfig("-", failover_s=9.0, max_moves_per_round=10)

    plan = plan_assignment(leases, workers("a", "b"), set(), config, {"s0", "s1", "s2", "s3"})

    assert plan == []


def test_capacity_weighs_the_share_and_a_limit_caps_the_count() -> None:
    leases = [Lease(f"s{i}", throughput=10.0) for i in range(9)]
    big = workers("small", big=WorkerReport("big", capacity=2.0))
    capped = workers("a", b=WorkerReport("b", max_leases=2))

    assert targets(plan_assignment(leases, big, set(), CONFIG)) == {"big": 6, "small": 3}
    assert targets(plan_assignment(leases, capped, set(), CONFIG)) == {"a": 7, "b": 2}


def test_expired_leases_are_placed_and_a_handoff_to_a_gone_worker_is_cancelled() -> None:
    gone = Lease("s0", counter=4, owner="dead", token="t")
    pending = Lease("s1", counter=2, owner="a", token="t", handoff_to="dead")

    plan = plan_assignment([gone, pending], workers("a", "b"), {"s0"}, CONFIG)

    assert Assignment("s1", Kind.CANCEL, "a", None) in plan
    assert [a for a in plan if a.shard_id == "s0"] == [Assignment("s0", Kind.ASSIGN, "dead", "b")]


def test_children_wait_for_their_parents_and_finished_leases_are_left_alone() -> None:
    leases = [
        Lease("p", checkpoint="SHARD_END"),
        Lease("q"),
        Lease("child", parents=frozenset({"p", "q"})),
    ]

    plan = plan_assignment(leases, workers("a"), set(), CONFIG)

    assert [a.shard_id for a in plan] == ["q"]


def test_on_a_quiet_stream_rates_of_a_few_records_move_nothing_when_counts_are_even() -> None:
    # Four leases each, their rates a handful of records over the window: noise, not load.
    rates = {"a": [0.9, 0.7, 0.8, 0.6], "b": [0.03, 0.0, 0.1, 0.05]}
    leases = [
        held(f"{owner}{i}", owner, rate)
        for owner, owned in rates.items()
        for i, rate in enumerate(owned)
    ]

    assert plan_assignment(leases, workers("a", "b"), set(), CONFIG) == []
