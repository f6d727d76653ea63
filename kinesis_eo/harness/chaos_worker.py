"""One worker process of the chaos harness: ``python -m kinesis_eo.harness.chaos_worker SPEC``.

It runs the worker ``kinesis-eo run`` runs, built by
:func:`kinesis_eo.runner.build_worker` from a :class:`~kinesis_eo.runner.RunOptions`,
against the harness's emulators, with faults injected inside it: throttling and connection errors
on its own AWS calls (seeded), and, now and then, a SIGKILL of itself right
after a sink commit and before the checkpoint. Its sink applies an effect
that is *not* idempotent (``ADD applied 1`` per event id), so the harness can
see any effect applied twice. It writes its counters to a stats file every
half second, which is all the harness learns from a process it may kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kinesis_eo import runner
from kinesis_eo.harness.capacity import TableMeter
from kinesis_eo.harness.chaos_faults import SinkOutage, invalid_write, invalid_write_kind
from kinesis_eo.harness.scenario import POISON_PREFIX, client
from kinesis_eo.records import Record
from kinesis_eo.retrieval import Batch, ReaderConfig
from kinesis_eo.retrieval.subscription import SubscriptionConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.runner import RunOptions
from kinesis_eo.sinks import BatchReport, EffectContext, FailurePolicy, update
from kinesis_eo.testing.faults import Always, FaultInjector, FaultKind, Probability
from kinesis_eo.worker import Worker

__all__ = [
    "IDLE_POLLS_PER_SECOND",
    "QUICK_RETRY",
    "READ_CALLS",
    "ReadCalls",
    "WorkerSpec",
    "build_worker",
    "effect_handler",
    "idle_interval_for",
    "main",
    "run_options",
    "write_stats",
]

# The AWS-call retries of the reader, the ledger and the worker: quick, on emulators.
QUICK_RETRY = RetryConfig(max_attempts=10, initial_backoff_s=0.02, max_backoff_s=0.5)
# A dropped subscription is followed by a new one after this back-off.
EFO_RECONNECT = RetryConfig(initial_backoff_s=0.1, max_backoff_s=1.0)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a chaos worker needs, passed as one JSON argument."""

    worker_id: str
    stream: str
    kinesis_endpoint: str
    dynamodb_endpoint: str
    lease_table: str
    ledger_table: str
    effects_table: str
    dead_letter_table: str
    consumer_group: str
    stats_file: str
    seed: int
    failover_s: float = 3.0
    throttle_probability: float = 0.02
    disconnect_probability: float = 0.01
    crash_after_commit_probability: float = 0.0
    # A SIGSTOP of itself inside the handler, writes in hand and the commit
    # next: a GC pause at the worst moment. The harness sends the SIGCONT.
    pause_in_handler_probability: float = 0.0
    # Record faults: this share of events gets a handler result DynamoDB refuses,
    # chosen from invalid_write_seed (the run's seed, the same in every process).
    invalid_write_rate: float = 0.0
    invalid_write_seed: int = 0
    # World faults: while this file says so, the sink is down (see chaos_faults).
    outage_marker: str = ""
    # Read by subscription through this enhanced fan-out consumer (`kinesis-eo run --efo`);
    # empty: poll with GetRecords.
    efo_consumer: str = ""
    # Bill the lease table's requests in DynamoDB units (see capacity.TableMeter) and write
    # the totals to the stats file under "lease_table"; off: the chaos run does not.
    meter_lease_table: bool = False
    # Seconds between GetRecords of a shard with nothing new (see idle_interval_for), and
    # between its checkpoints: many shards on one emulator need them longer than a few do.
    idle_interval_s: float = 0.2
    checkpoint_interval_s: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# Idle GetRecords the whole fleet makes a second, at most: one emulator process answers
# every call, and a queue of idle polls in front of it delays every lease renewal.
IDLE_POLLS_PER_SECOND = 100.0


def idle_interval_for(shards: int) -> float:
    """The readers' wait after an empty read: 0.2 s, longer for many shards (at most
    :data:`IDLE_POLLS_PER_SECOND` idle reads a second in all)."""
    return max(0.2, shards / IDLE_POLLS_PER_SECOND)


def effect_handler(
    effects_table: str,
    pause_probability: float = 0.0,
    rng: random.Random | None = None,
    *,
    invalid_write_rate: float = 0.0,
    invalid_write_seed: int = 0,
    outage: SinkOutage | None = None,
) -> Any:
    """The chaos sink's handler: ``ADD applied 1`` on the event's item, which is not idempotent.

    Poison events raise; the events :func:`invalid_write_kind` chooses return a
    write DynamoDB refuses; while ``outage`` says the sink is down, every call raises.
    """
    chance = rng or random.Random()

    def apply(record: Record, ctx: EffectContext) -> list[Any]:
        if outage is not None:
            # The world first: a sink that is down fails every record alike.
            outage.check(record, ctx.attempt)
        if record.data.startswith(POISON_PREFIX):
            raise ValueError(f"poison record {record.event_id}")
        key = record.event_id or ctx.idempotency_key
        kind = invalid_write_kind(invalid_write_seed, invalid_write_rate, record.event_id)
        if kind is not None:
            writes = [invalid_write(kind, effects_table, key)]
        else:
            writes = [update(effects_table, {"id": key}, "ADD applied :one", values={":one": 1})]
        if pause_probability and chance.random() < pause_probability:
            os.kill(os.getpid(), signal.SIGSTOP)
        return writes

    return apply


def run_options(spec: WorkerSpec) -> RunOptions:
    """What ``kinesis-eo run`` would be given for this worker, with the harness's quick timings."""
    return RunOptions(
        stream=spec.stream,
        app=spec.consumer_group,
        # The handler object goes to build_worker; this names the factory that makes it.
        handler="kinesis_eo.harness.chaos_worker:effect_handler",
        sink="transactional",
        mode="per-record",
        lease_table=spec.lease_table,
        ledger_table=spec.ledger_table,
        dead_letter_table=spec.dead_letter_table,
        failover_s=spec.failover_s,
        worker_id=spec.worker_id,
        failure_policy=FailurePolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05),
        ledger_retry=QUICK_RETRY,
        worker={
            "reader": ReaderConfig(
                max_records=200,
                min_read_interval_s=0.05,
                idle_interval_s=spec.idle_interval_s,
                retry=QUICK_RETRY,
            ),
            "retry": QUICK_RETRY,
            "checkpoint_interval_s": spec.checkpoint_interval_s,
            # Children are found at their parents' ends; a full ListShards is slow on
            # kinesis-mock once the stream is large (seconds), so not often.
            "shard_sync_interval_s": 15.0,
            # Short pauses: an outage of a few seconds is over in a few seconds here, and
            # every retry through it is one more chance to dead-letter what must not be.
            "outage_initial_backoff_s": 0.05,
            "outage_max_backoff_s": 0.25,
            **_subscribing(spec),
        },
        # `kinesis-eo run --efo NAME`; None: polling.
        efo=spec.efo_consumer or None,
    )


def _subscribing(spec: WorkerSpec) -> dict[str, Any]:
    """The harness's quick subscription timings, if ``spec`` reads by subscription."""
    if not spec.efo_consumer:
        return {}
    return {
        # kinesis-mock sends no closing event with ChildShards: a parent's end is found by
        # the end check, and a reshard here must not wait the default minute for it.
        "subscription": SubscriptionConfig(
            end_check_interval_s=2.0, reconnect_backoff=EFO_RECONNECT
        ),
    }


def _throttled(spec: WorkerSpec, kinesis: bool) -> tuple[str, str]:
    """The call a worker's throttling hits, and the error code AWS throttles it with."""
    if not kinesis:
        return "TransactWriteItems", "ProvisionedThroughputExceededException"
    if spec.efo_consumer:
        # Over 1 SubscribeToShard per second per consumer and shard.
        return "SubscribeToShard", "LimitExceededException"
    return "GetRecords", "ProvisionedThroughputExceededException"


def _faulty_clients(spec: WorkerSpec) -> tuple[Any, Any, list[FaultInjector]]:
    """The worker's Kinesis and DynamoDB clients, each with its seeded faults attached."""
    retries = {"max_attempts": 2, "mode": "standard"}
    kinesis = client("kinesis", spec.kinesis_endpoint, retries=retries)
    dynamodb = client("dynamodb", spec.dynamodb_endpoint, retries=retries)
    injectors = []
    for index, target in enumerate((kinesis, dynamodb)):
        faults = FaultInjector(seed=spec.seed * 2 + index)
        if spec.throttle_probability:
            operation, code = _throttled(spec, target is kinesis)
            faults.throttle(operation, code=code, schedule=Probability(spec.throttle_probability))
        if spec.disconnect_probability:
            faults.disconnect("*", schedule=Probability(spec.disconnect_probability))
        injectors.append(faults.attach(target))
    return kinesis, dynamodb, injectors


def build_worker(spec: WorkerSpec) -> tuple[Worker, list[FaultInjector]]:
    """The worker of ``spec``, built as ``kinesis-eo run`` builds its own, and its fault injectors.

    The harness adds only what a program may add through :func:`runner.build_worker`:
    clients with faults attached, the handler object, and an ``after_commit`` hook
    that now and then kills the process between a sink commit and its checkpoint.
    """
    kinesis, dynamodb, injectors = _faulty_clients(spec)
    # Added last, so that the seeded draws of the rules above stay as they were.
    commit_throttle = (
        injectors[1].throttle("TransactWriteItems", schedule=Always())
        if spec.outage_marker
        else None
    )
    outage = SinkOutage(spec.outage_marker, commit_throttle)
    rng = random.Random(spec.seed)
    handler = effect_handler(
        spec.effects_table,
        spec.pause_in_handler_probability,
        rng,
        invalid_write_rate=spec.invalid_write_rate,
        invalid_write_seed=spec.invalid_write_seed,
        outage=outage,
    )

    def maybe_die(batch: Batch, report: BatchReport) -> None:
        if rng.random() < spec.crash_after_commit_probability:
            # The effects of this batch are committed; its checkpoint is not.
            os.kill(os.getpid(), signal.SIGKILL)

    options = run_options(spec)
    runner.check_options(options)
    worker = runner.build_worker(
        options, kinesis, dynamodb, handler=handler, after_commit=maybe_die
    )
    return worker, injectors


# The Kinesis reads a worker makes, counted so that a run shows how it read.
READ_CALLS = ("GetRecords", "SubscribeToShard")


class ReadCalls:
    """Counts a client's GetRecords and SubscribeToShard calls (a botocore ``before-call`` hook)."""

    def __init__(self, kinesis: Any) -> None:
        self.counts = dict.fromkeys(READ_CALLS, 0)
        kinesis.meta.events.register("before-call.kinesis", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        if model.name in self.counts:
            self.counts[model.name] += 1


def write_stats(
    path: str,
    worker: Worker,
    injectors: list[FaultInjector],
    calls: ReadCalls | None = None,
    lease_table: TableMeter | None = None,
) -> None:
    """Write the worker's totals, the faults its injectors fired, its read calls and (if metered)
    its lease-table units to ``path`` (whole, then renamed).
    """
    injected = {kind.value: sum(i.injected[kind] for i in injectors) for kind in FaultKind}
    payload = {
        "worker": worker.worker_id,
        "metrics": worker.metrics.as_dict(),
        "injected": injected,
        "calls": dict(calls.counts) if calls else {},
    }
    if lease_table is not None:
        payload["lease_table"] = lease_table.totals()
    temporary = f"{path}.tmp"
    Path(temporary).write_text(json.dumps(payload), encoding="utf-8")
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of one chaos worker process: run the worker its JSON spec describes and report
    its stats until it stops.
    """
    args = sys.argv[1:] if argv is None else argv
    spec = WorkerSpec(**json.loads(args[0]))
    worker, injectors = build_worker(spec)
    calls = ReadCalls(worker.clients["kinesis"])
    meter = None
    if spec.meter_lease_table:
        meter = TableMeter(spec.lease_table)
        meter.attach(worker.clients["dynamodb"])
    stopped = threading.Event()

    def report_stats() -> None:
        while not stopped.wait(0.5):
            write_stats(spec.stats_file, worker, injectors, calls, meter)

    threading.Thread(target=report_stats, daemon=True).start()
    try:
        worker.run(handle_signals=True)
    finally:
        stopped.set()
        write_stats(spec.stats_file, worker, injectors, calls, meter)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
