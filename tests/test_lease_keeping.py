"""Renewals keep their pace whatever the coordinator's rounds cost: on a slow lease table too.

The product's worker flows (``lease_keeper_flow`` beside ``coordinator_flow``)
run in the scale simulation of ``bench/scale_sim.py``: one simulated clock, the
in-memory lease store, and every lease-table request costing a fixed round trip.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from bench.scale_sim import Simulation, shard_rates
from kinesis_eo.leases import LeaseConfig
from kinesis_eo.leases.model import COORDINATOR_KEY
from kinesis_eo.testing.faults import Always, FaultInjector
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import LEASES, create_tables, start, stop, wait_for, worker

SHARDS, WORKERS = 200, 8
SCALE = LeaseConfig(table_name="leases", failover_s=3.0)


def slow_table(latency_s: float) -> Simulation:
    sim = Simulation(
        SHARDS,
        SCALE,
        shard_rates(SHARDS, seed=1, sigma=1.0),
        checkpoint_interval_s=1.0,
        latency_s=latency_s,
    )
    sim.seed_leases()
    for i in range(WORKERS):
        sim.add_worker(f"w{i}")
    return sim


def coordinator_owner(sim: Simulation) -> str | None:
    item = sim.store.entities.get(COORDINATOR_KEY)
    return item.owner if item else None


@pytest.mark.parametrize("latency_s", [0.05, 0.2])
def test_a_slow_lease_table_unseats_no_coordinator_and_costs_no_worker_its_leases(
    latency_s: float,
) -> None:
    # At 200 shards a coordinator's round is a scan and up to 200 writes, far longer than
    # the failover time at 200 ms a request; renewals waiting behind it would lapse.
    sim = slow_table(latency_s)
    owners: list[str | None] = []

    def probe() -> None:
        owner = coordinator_owner(sim)
        if owner is not None and (not owners or owners[-1] != owner):
            owners.append(owner)

    sim.run_until(120.0, every=0.5, probe=probe)

    assert len(owners) == 1, f"the coordinator changed hands: {owners}"
    assert sum(w.state.metrics.leases_lost for w in sim.workers) == 0
    held = Counter(lease.owner for lease in sim.store.leases.values())
    assert None not in held
    assert len(held) == WORKERS
    # Balanced by throughput; by count no worker is far off its share either.
    assert max(held.values()) <= 2 * SHARDS / WORKERS


def test_a_dead_workers_leases_are_owned_again_soon_on_a_slow_lease_table() -> None:
    sim = slow_table(0.2)
    sim.run_until(60.0)
    victim = next(w for w in sim.workers if w.manager.held and w is not sim.workers[0])
    if victim.coordinator is not None and victim.coordinator.elected:
        victim = sim.workers[1]
    shards = set(victim.manager.held)
    died = sim.now
    sim.kill(victim)

    owned_again_at = None
    while sim.now < died + 30.0:
        sim.run_until(sim.now + 0.5)
        owners = {sim.store.leases[s].owner for s in shards}
        if all(o not in (None, victim.worker_id) for o in owners):
            owned_again_at = sim.now
            break

    assert owned_again_at is not None, "the dead worker's shards were not placed again"
    # The failover time, then a round or two (each request costs 200 ms here).
    assert owned_again_at - died <= SCALE.failover_s + 3 * SCALE.renew_interval + 2.0


def test_a_worker_whose_lease_table_is_gone_stops_and_raises_instead_of_reading_on(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "keeping", 2)
    create_tables(dynamodb)
    one = worker(kinesis, dynamodb, "keeping", "one")
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            one.run()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: len(one.manager.held) == 2, 20, "both leases held")
    dynamodb.delete_table(TableName="leases")
    thread.join(timeout=30)

    assert not thread.is_alive(), "the worker went on without its lease table"
    assert len(outcome) == 1
    assert "leases" in str(outcome[0])


LEASE_TABLE_CALLS = ("UpdateItem", "Query", "Scan", "GetItem", "PutItem", "DeleteItem")


def test_a_worker_rides_out_a_lease_table_outage_and_then_applies_everything_once(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "riding", 2)
    create_tables(dynamodb)
    one = worker(kinesis, dynamodb, "riding", "one")
    threads = start([one])
    produce(kinesis, "riding", 40)
    wait_for(lambda: len(applied(dynamodb)) == 40, 30, "the first 40 effects")

    # Every lease-table call (and the ledger's reads) throttled for longer than the
    # retries and the failover time: the worker must wait it out, not die.
    faults = FaultInjector(seed=3).attach(dynamodb)
    rules = [faults.throttle(call, schedule=Always()) for call in LEASE_TABLE_CALLS]
    produce(kinesis, "riding", 40, start=40)
    time.sleep(LEASES.failover_s * 2)
    for rule in rules:
        faults.remove(rule)

    assert threads[0].is_alive(), "the worker died of the outage"
    wait_for(lambda: len(applied(dynamodb)) == 80, 60, "every effect after the outage")
    stop([one], threads)
    assert set(applied(dynamodb).values()) == {1}


def test_at_a_cold_start_workers_coming_up_seconds_apart_all_get_a_share_at_once() -> None:
    # Worker processes start 5 s apart, longer than a round (a third of the failover time):
    # the first assignment waits for them, rather than giving every lease to the first.
    config = LeaseConfig(table_name="leases", failover_s=10.0)
    sim = Simulation(30, config, shard_rates(30, seed=2, sigma=0.5), latency_s=0.01)
    sim.seed_leases()
    for i in range(3):
        sim.add_worker(f"w{i}", at=5.0 * i)
    first: dict[str, int] = {}

    def probe() -> None:
        owners = Counter(lease.owner for lease in sim.store.leases.values() if lease.owner)
        if owners and not first:
            first.update(owners)

    sim.run_until(30.0, every=0.1, probe=probe)

    assert sorted(first) == ["w0", "w1", "w2"], first
    assert min(first.values()) >= 5
