"""Helpers for the worker tests: the tables, a counting sink, workers in threads, and waiting."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kinesis_eo.leases import DynamoDBLeaseStore, LeaseConfig, LeaseManager, create_lease_table
from kinesis_eo.leases.model import is_entity_key
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import EffectContext, FailurePolicy, TransactionalSink, update
from kinesis_eo.testing.effects import create_effects_table, scan_table
from kinesis_eo.worker import Worker, WorkerConfig

QUICK = RetryConfig(max_attempts=6, initial_backoff_s=0.005, max_backoff_s=0.05)
LEASES = LeaseConfig(
    table_name="leases", failover_s=1.5, renew_interval_s=0.5, take_interval_s=0.25
)
# The bound under test is failover + one renew interval; threads and the
# emulator share two cores with everything else, so allow for scheduling.
SCHEDULING_SLACK_S = 1.0
CONFIG = WorkerConfig(
    leases=LEASES,
    reader=ReaderConfig(
        max_records=100, min_read_interval_s=0.0, idle_interval_s=0.05, retry=QUICK
    ),
    retry=QUICK,
    checkpoint_interval_s=0.2,
    shard_sync_interval_s=0.5,
)


def create_tables(dynamodb: Any) -> None:
    create_lease_table(dynamodb, "leases")
    create_ledger_table(dynamodb, "ledger")
    create_effects_table(dynamodb, "effects")


def effect(record: Record, ctx: EffectContext) -> list[Any]:
    # Deliberately not idempotent: a second application shows as applied == 2.
    return [update("effects", {"id": record.event_id}, "ADD applied :one", values={":one": 1})]


def sink(handler: Callable[[Record, EffectContext], Any] = effect) -> TransactionalSink:
    ledger = Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig("app", LedgerMode.WATERMARK))
    return TransactionalSink(
        ledger, handler, policy=FailurePolicy(max_attempts=3, initial_backoff_s=0.01)
    )


def worker(kinesis: Any, dynamodb: Any, stream: str, name: str, **kwargs: Any) -> Worker:
    manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, name)
    return Worker(kinesis, dynamodb, stream, kwargs.pop("sink", None) or sink(), manager, CONFIG)


def start(workers: list[Worker]) -> list[threading.Thread]:
    threads = [threading.Thread(target=w.run, name=w.worker_id) for w in workers]
    for thread in threads:
        thread.start()
    return threads


def stop(workers: list[Worker], threads: list[threading.Thread]) -> None:
    for w in workers:
        w.resume()
        w.stop()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), f"{thread.name} did not stop"


def lease_items(dynamodb: Any) -> list[dict[str, Any]]:
    """The lease table's items of shards not finished (no coordinator's or worker's items)."""
    return [
        i
        for i in scan_table(dynamodb, "leases")
        if not is_entity_key(i["leaseKey"]["S"]) and i["checkpoint"]["S"] != "SHARD_END"
    ]


def lease_owners(dynamodb: Any) -> Counter[str | None]:
    return Counter(i.get("leaseOwner", {}).get("S") for i in lease_items(dynamodb))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started
