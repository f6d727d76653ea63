"""Many shards per process: the asyncio worker holds 500 on one event loop; the threaded one
refuses more than its thread limit."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.leases import LeaseConfig, LeaseManager, MemoryLeaseStore
from kinesis_eo.ledger import Ledger, LedgerConfig, LedgerMode, MemoryLedgerStore, MemoryWrite
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.sinks import EffectContext, TransactionalSink
from kinesis_eo.worker import THREADED_MAX_SHARDS, AsyncWorker, Worker, WorkerConfig

SHARDS = 500
LEASES = LeaseConfig("leases", failover_s=3.0)
CONFIG = WorkerConfig(
    leases=LEASES,
    reader=ReaderConfig(min_read_interval_s=0.0, idle_interval_s=2.0),
    checkpoint_interval_s=0.5,
)


class StreamInMemory:
    """An aiobotocore-shaped Kinesis client over a stream of SHARDS shards, one record each."""

    def __init__(self) -> None:
        self.reads: Counter[str] = Counter()

    async def list_shards(self, **_: Any) -> dict[str, Any]:
        step = 2**128 // SHARDS
        return {
            "Shards": [
                {
                    "ShardId": f"shardId-{i:012d}",
                    "HashKeyRange": {
                        "StartingHashKey": str(i * step),
                        "EndingHashKey": str((i + 1) * step - 1),
                    },
                    "SequenceNumberRange": {"StartingSequenceNumber": "1"},
                }
                for i in range(SHARDS)
            ]
        }

    async def get_shard_iterator(self, ShardId: str, **_: Any) -> dict[str, Any]:
        return {"ShardIterator": f"{ShardId}|0"}

    async def get_records(self, ShardIterator: str, **_: Any) -> dict[str, Any]:
        shard, at = ShardIterator.split("|")
        self.reads[shard] += 1
        records = []
        if at == "0":
            records = [{"SequenceNumber": "1", "PartitionKey": shard, "Data": shard.encode()}]
        return {"Records": records, "NextShardIterator": f"{shard}|1", "MillisBehindLatest": 0}


@pytest.mark.asyncio
async def test_the_asyncio_worker_holds_and_reads_500_shards_without_a_thread_each() -> None:
    applied: Counter[str] = Counter()

    def handler(record: Record, ctx: EffectContext) -> list[MemoryWrite]:
        return [MemoryWrite(apply=lambda: applied.update([record.shard_id]))]

    sink = TransactionalSink(
        Ledger(MemoryLedgerStore(), LedgerConfig("app", LedgerMode.WATERMARK)), handler
    )
    stream = StreamInMemory()
    manager = LeaseManager(MemoryLeaseStore(), LEASES, "one-process")
    worker = AsyncWorker(stream, None, "orders", sink, manager, CONFIG)
    threads_before = threading.active_count()
    most_held = 0
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(600):
            most_held = max(most_held, len(manager.held))
            if len(applied) == SHARDS:
                break
            await asyncio.sleep(0.05)
        threads_during = threading.active_count()
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)

    assert most_held == SHARDS
    assert applied == dict.fromkeys(applied, 1)
    assert len(applied) == SHARDS
    assert len(stream.reads) == SHARDS
    assert threads_during - threads_before < 5  # a task per shard, not a thread


def test_the_threaded_worker_refuses_more_shards_than_its_thread_limit() -> None:
    too_many = WorkerConfig(leases=LEASES, max_shards=THREADED_MAX_SHARDS + 1)
    manager = LeaseManager(MemoryLeaseStore(), LEASES, "threads")
    sink = TransactionalSink(Ledger(MemoryLedgerStore(), LedgerConfig("app")), lambda r, c: [])

    with pytest.raises(ConfigurationError, match="thread per shard and holds at most 256"):
        Worker(None, None, "orders", sink, manager, too_many)
    Worker(None, None, "orders", sink, manager, CONFIG)
    assert manager.max_leases == THREADED_MAX_SHARDS  # what it reports to the coordinator
