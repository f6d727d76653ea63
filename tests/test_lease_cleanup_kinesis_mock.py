"""Lease cleanup through a real split and merge (kinesis-mock), with every effect applied once.

Kinesis is kinesis-mock; the lease, ledger and effect tables are on the moto server.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from kinesis_eo.flow import run_sync
from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager
from kinesis_eo.leases.model import is_entity_key
from kinesis_eo.retrieval import list_shards
from kinesis_eo.status import FINISHED_REMOVED, shard_statuses
from kinesis_eo.testing.effects import scan_table
from kinesis_eo.worker import Worker
from tests.helpers import applied, produce
from tests.streams import new_stream, wait_active
from tests.workers import CONFIG, LEASES, QUICK, create_tables, sink, start, stop, wait_for

pytestmark = pytest.mark.kinesis_mock

CLEANING = replace(CONFIG, leases=replace(LEASES, cleanup_interval_s=0.5))


def lease_keys(dynamodb: Any) -> set[str]:
    # The coordinator's and the workers' own items share the table; only leases count here.
    keys = {item["leaseKey"]["S"] for item in scan_table(dynamodb, "leases")}
    return {key for key in keys if not is_entity_key(key)}


def test_parents_leases_are_removed_after_a_split_and_a_merge_and_never_come_back(
    kinesis_mock: Any, moto_server_reset: Any
) -> None:
    kinesis = kinesis_mock.client("kinesis")
    dynamodb = moto_server_reset.client("dynamodb")
    stream = new_stream(kinesis, 2)
    create_tables(dynamodb)
    workers = [
        Worker(
            kinesis,
            dynamodb,
            stream,
            sink(),
            LeaseManager(DynamoDBLeaseStore("leases"), CLEANING.leases, f"w{i}"),
            CLEANING,
        )
        for i in range(2)
    ]
    threads = start(workers)
    try:
        ids = produce(kinesis, stream, 100)
        wait_for(lambda: len(applied(dynamodb)) == 100, 30, "effects before the split")
        first, second = list_shards(kinesis, stream).shards
        middle = (first.hash_range.start + first.hash_range.end) // 2
        kinesis.split_shard(
            StreamName=stream, ShardToSplit=first.shard_id, NewStartingHashKey=str(middle + 1)
        )
        wait_active(kinesis, stream)
        ids += produce(kinesis, stream, 100, start=100)
        wait_for(lambda: len(applied(dynamodb)) == 200, 30, "effects after the split")
        lower, upper = sorted(
            (s for s in list_shards(kinesis, stream).shards if first.shard_id in s.parent_ids),
            key=lambda s: s.hash_range.start,
        )
        kinesis.merge_shards(
            StreamName=stream, ShardToMerge=upper.shard_id, AdjacentShardToMerge=second.shard_id
        )
        wait_active(kinesis, stream)
        ids += produce(kinesis, stream, 200, start=200)
        wait_for(lambda: len(applied(dynamodb)) == 400, 30, "effects after the merge")
        graph = list_shards(kinesis, stream)
        merged = next(s for s in graph.shards if len(s.parent_ids) == 2)
        children = {lower.shard_id, merged.shard_id}
        wait_for(lambda: lease_keys(dynamodb) == children, 20, "the parents' leases to go")
        # Several shard syncs and cleanups later the parents, still listed, are not back.
        time.sleep(4 * CLEANING.shard_sync_interval_s)
        assert lease_keys(dynamodb) == children
    finally:
        stop(workers, threads)

    assert applied(dynamodb) == dict.fromkeys(ids, 1)
    assert len(graph) == 5
    # Each parent was read to its end once: none was given a fresh lease and read again.
    assert sum(w.metrics.shards_ended for w in workers) == 3
    leases = run_sync(DynamoDBLeaseStore("leases").list_leases(), dynamodb, QUICK)
    states = {row.shard_id: row.state for row in shard_statuses(leases, graph)}
    parents = {first.shard_id, second.shard_id, upper.shard_id}
    assert {states[p] for p in parents} == {FINISHED_REMOVED}
