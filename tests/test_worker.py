"""Workers sharing a stream through leases, on moto: balance, failover, fencing, effects once."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.records import Record
from kinesis_eo.sinks import EffectContext
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import (
    LEASES,
    SCHEDULING_SLACK_S,
    create_tables,
    effect,
    lease_items,
    lease_owners,
    sink,
    start,
    stop,
    wait_for,
    worker,
)


def test_three_workers_settle_to_3_3_2_and_a_killed_ones_shards_move_within_failover(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 8)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 400)
    workers = [worker(kinesis, dynamodb, "orders", f"w{i}") for i in range(3)]
    threads = start(workers)
    try:
        wait_for(
            lambda: sorted(lease_owners(dynamodb).values()) == [2, 3, 3],
            timeout=20,
            what="leases to settle to 3/3/2",
        )
        wait_for(lambda: len(applied(dynamodb)) == 400, timeout=30, what="the first 400 effects")
        victim = workers[0]
        victim.pause()  # as good as dead: no renewal, no reading, no release
        moved = wait_for(
            lambda: victim.worker_id not in lease_owners(dynamodb),
            timeout=20,
            what="the dead worker's leases to move",
        )
        ids += produce(kinesis, "orders", 200, start=400)
        wait_for(lambda: len(applied(dynamodb)) == 600, timeout=30, what="all 600 effects")
    finally:
        stop(workers, threads)

    assert moved <= LEASES.failover_s + LEASES.renew_interval + SCHEDULING_SLACK_S, moved
    # Stopping released every lease held. A coordinator's last round may still have assigned
    # one to a worker on its way out (no token: never taken); the next coordinator places it
    # in its first round, as a late worker shows.
    assert not [i for i in lease_items(dynamodb) if "eoOwnerToken" in i]
    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    late = worker(kinesis, dynamodb, "orders", "late")
    threads = start([late])
    try:
        wait_for(lambda: lease_owners(dynamodb) == {"late": 8}, 20, "the late worker to own all")
    finally:
        stop([late], threads)


def test_a_worker_paused_past_its_lease_cannot_commit_when_it_resumes(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 50)
    in_handler = threading.Event()
    release_handler = threading.Event()

    def slow_effect(record: Record, ctx: EffectContext) -> list[Any]:
        if not release_handler.is_set():
            in_handler.set()
            release_handler.wait(timeout=30)
        return effect(record, ctx)

    zombie = worker(kinesis, dynamodb, "orders", "zombie", sink=sink(slow_effect))
    threads = start([zombie])
    try:
        assert in_handler.wait(timeout=20)
        zombie.pause()  # the whole process stops, mid-batch, holding its writes
        rescuer = worker(kinesis, dynamodb, "orders", "rescuer")
        threads += start([rescuer])
        wait_for(lambda: len(applied(dynamodb)) == 50, timeout=30, what="the rescuer's effects")
        zombie.resume()
        release_handler.set()  # the zombie's handler returns its writes and it tries to commit
        wait_for(lambda: zombie.metrics.fenced_commits == 1, timeout=10, what="the fenced commit")
        time.sleep(0.5)
    finally:
        release_handler.set()
        stop([zombie, rescuer], threads)

    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert zombie.metrics.applied == 0
    assert rescuer.metrics.applied == 50


def test_stopping_hands_the_leases_over_at_once_with_no_gap_and_no_duplicate(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 4)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 200)
    leaving = worker(kinesis, dynamodb, "orders", "leaving")
    threads = start([leaving])
    wait_for(lambda: len(applied(dynamodb)) == 200, timeout=30, what="the first effects")
    staying = worker(kinesis, dynamodb, "orders", "staying")
    threads += start([staying])
    try:
        leaving.stop()
        threads[0].join(timeout=10)
        handed_over = wait_for(
            lambda: lease_owners(dynamodb) == {"staying": 4},
            timeout=10,
            what="the leases to reach the staying worker",
        )
        ids += produce(kinesis, "orders", 100, start=200)
        wait_for(lambda: len(applied(dynamodb)) == 300, timeout=30, what="all effects")
    finally:
        stop([leaving, staying], threads)

    # Released leases are free at once: no waiting for the failover time.
    assert handed_over < LEASES.failover_s
    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert staying.metrics.duplicates == 0


def test_a_shard_loop_that_fails_gives_its_lease_up_instead_of_holding_it_idle(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    produce(kinesis, "orders", 5)

    def always_fails(record: Record, ctx: EffectContext) -> list[Any]:
        raise RuntimeError("broken handler")

    # No dead-letter target: a record that keeps failing stops its shard loop loudly.
    failing = worker(kinesis, dynamodb, "orders", "failing", sink=sink(always_fails))
    threads = start([failing])
    try:
        wait_for(
            lambda: failing.metrics.leases_taken >= 2, 20, "the lease to be given up and retaken"
        )
    finally:
        stop([failing], threads)

    assert applied(dynamodb) == {}
    assert failing.metrics.applied == 0


def test_the_coordinator_keeps_a_health_file_with_its_leases_and_counters(
    kinesis: Any, dynamodb: Any, tmp_path: Any
) -> None:
    make_stream(kinesis, "orders", 2)
    create_tables(dynamodb)
    produce(kinesis, "orders", 20)
    health = tmp_path / "health.json"
    healthy = worker(kinesis, dynamodb, "orders", "healthy")
    healthy.config = replace(healthy.config, health_file=str(health))
    threads = start([healthy])
    try:
        wait_for(lambda: len(applied(dynamodb)) == 20, 20, "the effects")
        wait_for(
            lambda: health.exists() and json.loads(health.read_text())["metrics"]["applied"] == 20,
            10,
            "the health file to show the effects",
        )
        state = json.loads(health.read_text())
    finally:
        stop([healthy], threads)

    assert state["worker"] == "healthy"
    assert len(state["leases"]) == 2
    assert time.time() - state["time"] < 10


def test_a_health_file_in_a_missing_folder_gets_the_folder_made(
    kinesis: Any, dynamodb: Any, tmp_path: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    produce(kinesis, "orders", 3)
    health = tmp_path / "var" / "run" / "kinesis-eo" / "health.json"
    fresh = worker(kinesis, dynamodb, "orders", "fresh")
    fresh.config = replace(fresh.config, health_file=str(health))
    threads = start([fresh])
    try:
        wait_for(lambda: len(applied(dynamodb)) == 3, 20, "the effects")
        wait_for(health.exists, 10, "the health file")
    finally:
        stop([fresh], threads)
    assert json.loads(health.read_text())["worker"] == "fresh"


def test_a_health_file_that_cannot_be_written_is_refused_before_any_shard_is_read(
    kinesis: Any, dynamodb: Any, tmp_path: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    not_a_folder = tmp_path / "plain-file"
    not_a_folder.write_text("")
    refused = worker(kinesis, dynamodb, "orders", "refused")
    refused.config = replace(refused.config, health_file=str(not_a_folder / "health.json"))
    with pytest.raises(ConfigurationError, match=r"health file .*plain-file/health\.json"):
        refused.run()
    assert refused.metrics.leases_taken == 0
