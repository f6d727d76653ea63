"""What recording metrics costs per record in a worker's hot path.

    .venv/bin/python bench/metrics_overhead.py [--batch 100] [--batches 20000]

A batch of N records is recorded the way a runtime does it: a handful of calls
with ``value=N`` (records read, bytes read, records applied, handler and commit
latency, lag), not one call per record. Prints microseconds per record for
NullMetrics, the Recorder itself and the EMF back-end (which delegates to it),
and, for comparison, the Recorder called once per record. The target is under
2 µs per record of overhead.
"""

from __future__ import annotations

import argparse
import io
import threading
import time
from collections.abc import Callable

from kinesis_eo.metrics import EmfBackend, Metrics, NullMetrics, Recorder
from kinesis_eo.metrics import catalogue as names
from kinesis_eo.metrics.run import RunMetrics
from kinesis_eo.records import Record
from kinesis_eo.sinks import BatchReport


def per_batch(metrics: Metrics, batch: int, shard: str) -> None:
    metrics.count(names.RECORDS_READ, batch, shard=shard)
    metrics.count(names.BYTES_READ, batch * 512, shard=shard)
    metrics.count(names.RECORDS_APPLIED, batch, shard=shard)
    metrics.timing(names.HANDLER_LATENCY, 0.0123, shard=shard)
    metrics.timing(names.COMMIT_LATENCY, 0.0087, shard=shard)
    metrics.gauge(names.MILLIS_BEHIND_LATEST, 1500, shard=shard)


_RUNTIME_BATCHES: dict[int, tuple[list[Record], BatchReport]] = {}


def _runtime_batch(batch: int) -> tuple[list[Record], BatchReport]:
    """A batch and its sink report as a worker sees them (built once, outside the timing)."""
    if batch not in _RUNTIME_BATCHES:
        records = [
            Record("orders", "shardId-000000000000", str(i), "pk", b"x" * 512)
            for i in range(1, batch + 1)
        ]
        report = BatchReport(applied=list(records), handler_seconds=[0.0123] * batch)
        report.commit_seconds = [0.0087]
        _RUNTIME_BATCHES[batch] = (records, report)
    return _RUNTIME_BATCHES[batch]


def as_the_worker_records(metrics: Metrics, batch: int, shard: str) -> None:
    """RunMetrics.read + processed, as the worker calls them: one handler timing per record."""
    records, report = _runtime_batch(batch)
    run = RunMetrics(metrics)
    run.read(shard, records, 1500)
    run.processed(shard, report)


def per_record(metrics: Metrics, batch: int, shard: str) -> None:
    for _ in range(batch):
        metrics.count(names.RECORDS_APPLIED, 1, shard=shard)


def micros_per_record(
    record: Callable[[Metrics, int, str], None], metrics: Metrics, batch: int, batches: int
) -> float:
    shards = [f"shardId-{i:012d}" for i in range(8)]
    started = time.perf_counter()
    for i in range(batches):
        record(metrics, batch, shards[i % len(shards)])
    elapsed = time.perf_counter() - started
    return elapsed / (batch * batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=20000)
    args = parser.parse_args()
    emf = EmfBackend(Recorder({"app": "bench"}), namespace="KinesisEO", stream=io.StringIO())
    cases: list[tuple[str, Callable[[Metrics, int, str], None], Metrics]] = [
        ("NullMetrics, per batch", per_batch, NullMetrics()),
        ("Recorder, per batch", per_batch, Recorder({"app": "bench"})),
        ("EmfBackend, per batch", per_batch, emf),
        ("Recorder, one call per record", per_record, Recorder({"app": "bench"})),
        ("worker path, NullMetrics", as_the_worker_records, NullMetrics()),
        ("worker path, Recorder", as_the_worker_records, Recorder({"app": "bench"})),
    ]
    print(f"batch of {args.batch} records, {args.batches} batches, 8 shards")
    results = {}
    for label, record, metrics in cases:
        micros_per_record(record, metrics, args.batch, min(args.batches, 1000))  # warm up
        results[label] = micros_per_record(record, metrics, args.batch, args.batches)
        print(f"  {label:<32} {results[label]:8.4f} µs/record")
    overhead = results["Recorder, per batch"] - results["NullMetrics, per batch"]
    print(f"  Recorder over NullMetrics: {overhead:.4f} µs/record (target < 2)")
    worker = results["worker path, Recorder"] - results["worker path, NullMetrics"]
    print(f"  worker path, metrics on over off: {worker:.4f} µs/record (target < 2)")

    # The same with four threads recording at once: the lock is shared.
    recorder = Recorder({"app": "bench"})
    threads = [
        threading.Thread(
            target=micros_per_record, args=(per_batch, recorder, args.batch, args.batches)
        )
        for _ in range(4)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total_records = 4 * args.batch * args.batches
    print(f"  Recorder, 4 threads at once: {elapsed / total_records * 1e6:.4f} µs/record (wall)")
    emf.flush()


if __name__ == "__main__":
    main()
