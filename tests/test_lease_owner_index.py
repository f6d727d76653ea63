"""The owner index on moto: made with the table, queried for a worker's leases, missed safely."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from kinesis_eo import preflight
from kinesis_eo.flow import run_sync
from kinesis_eo.leases import DynamoDBLeaseStore, Lease, create_lease_table
from kinesis_eo.leases.model import COORDINATOR_KEY, WorkerReport
from kinesis_eo.retry import RetryConfig
from kinesis_eo.tables import create_table, create_table_flow

RETRY = RetryConfig(max_attempts=1)


def count_calls(dynamodb: Any) -> Counter[str]:
    calls: Counter[str] = Counter()

    def seen(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    dynamodb.meta.events.register("before-call.dynamodb", seen)
    return calls


def fill(dynamodb: Any, store: DynamoDBLeaseStore) -> None:
    for i, owner in enumerate(["a", "b", "a", None, "a"]):
        run_sync(
            store.create(Lease(f"s{i}", owner=owner, token="t" if owner else None)), dynamodb, RETRY
        )


def test_the_lease_table_is_made_with_the_kcl_owner_index(dynamodb: Any) -> None:
    create_lease_table(dynamodb, "leases")

    (index,) = dynamodb.describe_table(TableName="leases")["Table"]["GlobalSecondaryIndexes"]

    assert index["IndexName"] == "LeaseOwnerToLeaseKeyIndex"
    assert index["KeySchema"] == [{"AttributeName": "leaseOwner", "KeyType": "HASH"}]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert preflight.check_tables(dynamodb, [(preflight.LEASE_TABLE, "leases")]) == []


def test_a_worker_finds_its_leases_by_querying_the_index_without_a_scan(dynamodb: Any) -> None:
    create_lease_table(dynamodb, "leases")
    store = DynamoDBLeaseStore("leases")
    fill(dynamodb, store)
    calls = count_calls(dynamodb)

    keys = run_sync(store.owned_keys("a"), dynamodb, RETRY)

    assert keys == ["s0", "s2", "s4"]
    assert calls == {"Query": 1}


def test_a_table_without_the_index_is_scanned_instead_with_one_warning(
    dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # As kinesis_eo made lease tables before the index: the key only.
    create_table(dynamodb, create_table_flow("old-leases", [("leaseKey", "HASH")]))
    store = DynamoDBLeaseStore("old-leases")
    fill(dynamodb, store)

    with caplog.at_level(logging.WARNING):
        first = run_sync(store.owned_keys("a"), dynamodb, RETRY)
        second = run_sync(store.owned_keys("b"), dynamodb, RETRY)
        warned = preflight.check_tables(dynamodb, [(preflight.LEASE_TABLE, "old-leases")])

    assert (first, second) == (["s0", "s2", "s4"], ["s1"])
    store_warnings = [r for r in caplog.records if r.name == "kinesis_eo.leases.dynamodb"]
    assert len(store_warnings) == 1
    assert "LeaseOwnerToLeaseKeyIndex" in store_warnings[0].getMessage()
    assert warned == [
        "the lease table 'old-leases' has no index LeaseOwnerToLeaseKeyIndex on leaseOwner: "
        "every worker will scan the whole table to find its leases (read units grow with "
        "shards times workers); add the index (infra/worker.yaml and --create-tables make it)"
    ]


def test_the_coordinators_and_workers_items_are_not_listed_as_leases(dynamodb: Any) -> None:
    create_lease_table(dynamodb, "leases")
    store = DynamoDBLeaseStore("leases")
    fill(dynamodb, store)
    run_sync(store.create(Lease(COORDINATOR_KEY, owner="a", token="c")), dynamodb, RETRY)
    run_sync(store.report(WorkerReport("a", capacity=2.0, max_leases=7)), dynamodb, RETRY)
    run_sync(store.report(WorkerReport("a", capacity=2.0, max_leases=7)), dynamodb, RETRY)

    leases = run_sync(store.list_leases(), dynamodb, RETRY)
    snapshot = run_sync(store.snapshot(), dynamodb, RETRY)

    assert [lease.shard_id for lease in leases] == ["s0", "s1", "s2", "s3", "s4"]
    assert snapshot.coordinator is not None
    assert snapshot.coordinator.owner == "a"
    assert snapshot.workers == [WorkerReport("a", counter=2, capacity=2.0, max_leases=7)]
