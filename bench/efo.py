"""Enhanced fan-out beside polling, on kinesis-mock, in one run.

    python bench/efo.py [--records N] [--rate R] [--seconds S] [--report out.json]

Starts kinesis-mock (for Kinesis, behind the bridge that supplies the
``initial-response`` event it leaves out; both ways of reading go through it)
and moto's HTTP server in a child process (for DynamoDB), then, once per way
of reading (``--read``, default ``polling,efo``), on a stream of its own:

- **throughput**: puts ``--records`` events, then starts one worker, built as
  ``kinesis-eo run`` builds it (:func:`kinesis_eo.runner.build_worker`, its
  default reader pacing, a transactional sink and the watermark ledger), and
  times the backlog from the worker's start (leases, subscriptions) to its
  last commit: records/s;
- **latency**: with the worker caught up, puts ``--rate`` events per second for
  ``--seconds`` in small batches, and records for each event the time from
  just before its ``PutRecords`` to just after the commit that applied it
  (the worker's ``after_commit`` hook): p50, p99 and max.

Then it checks the sink: every event applied once, or the run fails. Both
emulators are on this machine, so the figures compare the two ways of reading
on the same emulator; they are not what AWS would show: no network, no
per-shard limits, and kinesis-mock's own pace (it pushes a subscription's
events once a second, where AWS pushes records as they arrive).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kinesis_eo import runner
from kinesis_eo.deadletter import create_dead_letter_table
from kinesis_eo.harness.chaos_worker import ReadCalls
from kinesis_eo.harness.scenario import Names, client
from kinesis_eo.leases import create_lease_table
from kinesis_eo.ledger import create_ledger_table
from kinesis_eo.producer import Event, Producer
from kinesis_eo.records import Record
from kinesis_eo.retrieval import Batch
from kinesis_eo.sinks import BatchReport, EffectContext, update
from kinesis_eo.testing.backends import KinesisMock, MotoServer
from kinesis_eo.testing.backends.efo_bridge import EfoBridge
from kinesis_eo.testing.effects import applied_counts, create_effects_table
from kinesis_eo.worker import Worker

READS = ("polling", "efo")
CONSUMER = "bench-efo"


# --- the emulators -----------------------------------------------------------------------------


@dataclass
class Endpoints:
    """Where the workers send their Kinesis calls, where the producer does, and DynamoDB."""

    workers: str
    producer: str
    dynamodb: str
    description: str


@contextmanager
def emulators() -> Iterator[Endpoints]:
    with ExitStack() as stack:
        kinesis_mock = stack.enter_context(KinesisMock())
        # Both ways of reading go through the bridge, so that its hop is in both figures.
        bridge = stack.enter_context(EfoBridge(kinesis_mock.plain_port))
        moto = stack.enter_context(MotoServer(process=True, undo_log_transactions=True))
        yield Endpoints(
            bridge.endpoint_url,
            kinesis_mock.endpoint_url,
            moto.endpoint_url,
            "kinesis-mock behind the initial-response bridge (Kinesis) + moto server in a "
            "child process (DynamoDB, undo-log transactions), on this machine",
        )


def read_options(read: str) -> dict[str, Any]:
    """What ``kinesis-eo run`` is given for ``read`` beyond its other flags."""
    return {"efo": CONSUMER} if read == "efo" else {}


# --- one way of reading ------------------------------------------------------------------------


@dataclass
class Timings:
    """When each event was sent, and when the commit that applied it returned (monotonic s)."""

    sent: dict[str, float] = field(default_factory=dict)
    applied: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def after_commit(self, batch: Batch, report: BatchReport) -> None:
        now = time.monotonic()
        with self.lock:
            for record in report.applied:
                self.applied.setdefault(str(record.event_id), now)


@dataclass
class ReadResult:
    read: str
    backlog: int
    records_per_s: float
    first_effect_s: float
    latency_events: int
    latency_ms: dict[str, float]
    # The worker's GetRecords and SubscribeToShard calls: how it really read.
    calls: dict[str, int]
    sink: dict[str, int]
    ok: bool


def effect(table: str) -> Any:
    def apply(record: Record, ctx: EffectContext) -> list[Any]:
        key = record.event_id or ctx.idempotency_key
        return [update(table, {"id": key}, "ADD applied :one", values={":one": 1})]

    return apply


def events(prefix: str, start: int, count: int) -> list[Event]:
    return [
        Event(json.dumps({"n": i}).encode(), f"pk-{i}", f"{prefix}-{i:07d}")
        for i in range(start, start + count)
    ]


def put(producer: Producer, timings: Timings, batch: list[Event]) -> None:
    now = time.monotonic()
    with timings.lock:
        for event in batch:
            timings.sent[str(event.event_id)] = now
    producer.put(batch)


def wait_applied(timings: Timings, ids: Sequence[str], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with timings.lock:
            if all(i in timings.applied for i in ids):
                return
        time.sleep(0.05)
    raise SystemExit(f"bench/efo.py: timed out waiting for {what}")


@contextmanager
def running(worker: Worker) -> Iterator[None]:
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(timeout=60)


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(read: str, endpoints: Endpoints, args: argparse.Namespace) -> ReadResult:
    names = Names.fresh(f"bench-{read}", f"bench-{read}")
    kinesis = client("kinesis", endpoints.workers)
    calls = ReadCalls(kinesis)
    dynamodb = client("dynamodb", endpoints.dynamodb)
    kinesis.create_stream(StreamName=names.stream, ShardCount=args.shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=names.stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    create_lease_table(dynamodb, names.leases)
    create_ledger_table(dynamodb, names.ledger)
    create_effects_table(dynamodb, names.effects)
    create_dead_letter_table(dynamodb, names.dead_letters)
    timings = Timings()
    producer = Producer(client("kinesis", endpoints.producer), names.stream)

    backlog = events(read, 0, args.records)
    for offset in range(0, len(backlog), 500):
        put(producer, timings, backlog[offset : offset + 500])
    options = runner.RunOptions(
        stream=names.stream,
        app=names.group,
        # The handler object goes to build_worker; this names the factory that makes it.
        handler="efo:effect",
        lease_table=names.leases,
        ledger_table=names.ledger,
        dead_letter_table=names.dead_letters,
        **read_options(read),
    )
    runner.check_options(options)
    worker = runner.build_worker(
        options, kinesis, dynamodb, handler=effect(names.effects), after_commit=timings.after_commit
    )
    started = time.monotonic()
    with running(worker):
        ids = [str(e.event_id) for e in backlog]
        wait_applied(timings, ids, args.timeout, f"the {read} backlog")
        done = [timings.applied[i] for i in ids]
        # From the worker's start: taking the leases and subscribing are part of catching up.
        records_per_s = len(ids) / (max(done) - started)
        first_effect_s = min(done) - started

        paced = events(f"{read}-paced", 0, max(1, round(args.rate * args.seconds)))
        per_put = max(1, round(args.rate / 20))  # 20 puts a second
        started = time.monotonic()
        for index, offset in enumerate(range(0, len(paced), per_put)):
            time.sleep(max(0.0, started + index / 20 - time.monotonic()))
            put(producer, timings, paced[offset : offset + per_put])
        paced_ids = [str(e.event_id) for e in paced]
        wait_applied(timings, paced_ids, args.timeout, f"the {read} paced events")

    latencies = [(timings.applied[i] - timings.sent[i]) * 1000 for i in paced_ids]
    counts = applied_counts(dynamodb, names.effects)
    expected = set(ids) | set(paced_ids)
    sink = {
        "items": len(counts),
        "missing": len(expected - counts.keys()),
        "applied_twice": sum(1 for n in counts.values() if n > 1),
    }
    return ReadResult(
        read=read,
        backlog=len(ids),
        records_per_s=round(records_per_s, 1),
        first_effect_s=round(first_effect_s, 2),
        latency_events=len(latencies),
        latency_ms={
            "p50": round(percentile(latencies, 0.50), 1),
            "p99": round(percentile(latencies, 0.99), 1),
            "max": round(max(latencies), 1),
            "mean": round(statistics.fmean(latencies), 1),
        },
        calls=dict(calls.counts),
        sink=sink,
        ok=sink["missing"] == 0 and sink["applied_twice"] == 0 and sink["items"] == len(expected),
    )


# --- the command -------------------------------------------------------------------------------


def _reads(text: str) -> list[str]:
    reads = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in reads if r not in READS]
    if not reads or unknown:
        raise argparse.ArgumentTypeError(f"--read takes {', '.join(READS)}, not {text!r}")
    return reads


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--read", type=_reads, default=list(READS), metavar="polling,efo")
    parser.add_argument("--records", type=int, default=5000, help="the backlog, for records/s")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100.0, help="paced events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to pace them")
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase, in seconds")
    parser.add_argument("--report", metavar="PATH", help="write the figures as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    with emulators() as endpoints:
        results = [measure(read, endpoints, args) for read in args.read]
    print(f"{endpoints.description}; {args.shards} shards")
    print(f"backlog {args.records} events; paced {args.rate:g}/s for {args.seconds:g} s")
    print(f"  {'read':<9}{'records/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  sink")
    for r in results:
        lat = r.latency_ms
        verdict = "once each" if r.ok else f"FAILED {r.sink}"
        print(
            f"  {r.read:<9}{r.records_per_s:>11.0f}{lat['p50']:>9.1f}{lat['p99']:>9.1f}"
            f"{lat['max']:>9.1f}  {verdict}"
        )
    if args.report:
        report = {
            "emulator": endpoints.description,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "shards": args.shards,
            "backlog": args.records,
            "rate": args.rate,
            "seconds": args.seconds,
            "reads": [asdict(r) for r in results],
        }
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
