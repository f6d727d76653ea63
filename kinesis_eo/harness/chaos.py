"""The fault-injection harness: the claim "no event lost, none applied twice", made runnable.

:func:`run_chaos` starts the emulators (moto over HTTP in this process, and
kinesis-mock for Kinesis if asked), creates a stream and the tables, starts N
worker processes (:mod:`kinesis_eo.harness.chaos_worker`), produces events
through a producer whose sends are sometimes stored twice, and meanwhile, on
a seeded schedule: SIGKILLs workers (and restarts them), SIGSTOPs one past
its lease expiry and SIGCONTs it (a zombie that wakes up and tries to
commit), splits and merges the stream (kinesis-mock only: moto never closes
a parent shard), while the workers throttle and drop their own calls and
sometimes SIGKILL themselves between a sink commit and its checkpoint.

Then a verifier reads the sink and the dead-letter table and counts, per
produced event: applied once, applied twice, missing, dead-lettered.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinesis_eo.deadletter import (
    DeadLetter,
    DeadLetterReason,
    create_dead_letter_table,
    read_dead_letters,
)
from kinesis_eo.harness.chaos_faults import (
    InvalidWrite,
    OutageSwitch,
    distinct_events,
    invalid_write_kind,
    outage_letters,
)
from kinesis_eo.harness.chaos_fleet import Fleet, Resharder, SubscriptionCutter
from kinesis_eo.harness.chaos_model import (
    Adapter,
    ChaosConfig,
    ChaosReport,
    KinesisBackend,
    ReadMode,
)
from kinesis_eo.harness.chaos_worker import WorkerSpec, idle_interval_for
from kinesis_eo.harness.scenario import (
    EventPlan,
    Names,
    applied_counts,
    client,
    create_effects_table,
    numbered_events,
    verify,
)
from kinesis_eo.leases import create_lease_table
from kinesis_eo.ledger import create_ledger_table
from kinesis_eo.producer import Event, Producer, ProducerConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.testing.backends import KinesisMock, MotoServer
from kinesis_eo.testing.backends.efo_bridge import EfoBridge
from kinesis_eo.testing.faults import FaultInjector, FaultKind, Probability

__all__ = [
    "EFO_CONSUMER",
    "Adapter",
    "ChaosConfig",
    "ChaosReport",
    "KinesisBackend",
    "Production",
    "ReadMode",
    "backends",
    "create_resources",
    "run_chaos",
]

# A quarter of the producer's sends are flipped to "failed": enough tries that none gives up.
PRODUCER_RETRY = RetryConfig(max_attempts=20, initial_backoff_s=0.01, max_backoff_s=0.2)

Progress = Callable[[str], None]
# The file whose text tells every worker process that the sink is down (chaos_faults).
OUTAGE_MARKER = "sink-outage"
# The enhanced fan-out consumer every worker of a run reading by subscription registers (or
# finds registered by another) and subscribes through.
EFO_CONSUMER = "chaos-efo"


@dataclass
class _Planned:
    """What the run's events were made to do: poison ones fail, invalid ones are refused."""

    plan: EventPlan
    invalid: dict[str, InvalidWrite]

    @classmethod
    def of(cls, config: ChaosConfig) -> _Planned:
        plan = numbered_events(config.events, config.seed, config.poison_every)
        invalid = {}
        for event_id in plan.event_ids:
            kind = invalid_write_kind(config.seed, config.invalid_write_rate, event_id)
            if kind is not None and event_id not in plan.poison:
                invalid[event_id] = kind
        return cls(plan, invalid)

    @property
    def events(self) -> list[Event]:
        return self.plan.events

    @property
    def poison(self) -> set[str]:
        return set(self.plan.poison)

    @property
    def to_apply(self) -> set[str]:
        return set(self.plan.event_ids) - self.poison - self.invalid.keys()

    @property
    def letter_reasons(self) -> dict[str, DeadLetterReason]:
        """The reason each event that must be dead-lettered gets its letter for."""
        reasons = dict.fromkeys(self.poison, DeadLetterReason.PROCESSING_FAILED)
        reasons.update(dict.fromkeys(self.invalid, DeadLetterReason.INVALID_WRITE))
        return reasons

    def done(self, applied: set[str], letters: list[DeadLetter]) -> bool:
        """Whether every event is applied, or dead-lettered for what it was made to do."""
        dead = {str(letter.record.event_id) for letter in letters}
        invalid = distinct_events(letters, DeadLetterReason.INVALID_WRITE)
        return self.to_apply <= applied and self.poison <= dead and self.invalid.keys() <= invalid


def backends(
    config: ChaosConfig, stack: contextlib.ExitStack, moto_process: bool = False
) -> tuple[MotoServer, str, str, EfoBridge | None]:
    """Start the run's emulators on ``stack``: moto (undo-log transactions where it can), and
    kinesis-mock (behind the bridge when reading by subscription) if ``config`` asks.

    ``moto_process``: moto serves from a child process of its own (undo-log transactions
    required), so that this process's threads do not share its interpreter.
    Returns moto, the Kinesis endpoint, a description of the emulators, and the bridge.
    """
    from kinesis_eo.harness import moto_transactions

    if moto_process:
        moto = stack.enter_context(MotoServer(process=True, undo_log_transactions=True))
        emulator = "moto with undo-log transactions, in a process of its own"
    else:
        emulator = "moto (stock transactions)"
        with contextlib.suppress(RuntimeError):
            moto_transactions.install()
            stack.callback(moto_transactions.uninstall)
            emulator = "moto with undo-log transactions"
        moto = stack.enter_context(MotoServer())
    kinesis_endpoint = moto.endpoint_url
    bridge = None
    if config.kinesis is KinesisBackend.KINESIS_MOCK:
        kinesis_mock = stack.enter_context(KinesisMock())
        kinesis_endpoint = kinesis_mock.endpoint_url
        kinesis = "kinesis-mock"
        if config.read is ReadMode.EFO:
            # Every Kinesis call goes through the bridge, which adds to each subscription
            # the initial-response event kinesis-mock leaves out and changes nothing else.
            bridge = stack.enter_context(EfoBridge(kinesis_mock.plain_port))
            kinesis_endpoint = bridge.endpoint_url
            kinesis = "kinesis-mock behind the initial-response bridge"
        emulator = f"{kinesis} (Kinesis) + {emulator} (DynamoDB)"
    else:
        emulator = f"{emulator} (Kinesis and DynamoDB)"
    return moto, kinesis_endpoint, emulator, bridge


@contextlib.contextmanager
def _workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kinesis-eo-chaos-") as directory:
        yield Path(directory)


def _start_fleet(
    config: ChaosConfig,
    kinesis_endpoint: str,
    dynamodb_endpoint: str,
    names: Names,
    directory: Path,
    rng: random.Random,
) -> Fleet:
    base = WorkerSpec(
        worker_id="",
        stream=names.stream,
        kinesis_endpoint=kinesis_endpoint,
        dynamodb_endpoint=dynamodb_endpoint,
        lease_table=names.leases,
        ledger_table=names.ledger,
        effects_table=names.effects,
        dead_letter_table=names.dead_letters,
        consumer_group=names.group,
        stats_file="",
        seed=config.seed,
        failover_s=config.failover_s,
        throttle_probability=config.throttle_probability,
        disconnect_probability=config.disconnect_probability,
        crash_after_commit_probability=config.crash_after_commit_probability,
        pause_in_handler_probability=config.pause_in_handler_probability,
        invalid_write_rate=config.invalid_write_rate,
        invalid_write_seed=config.seed,
        outage_marker=str(directory / OUTAGE_MARKER) if config.sink_outage_s else "",
        efo_consumer=EFO_CONSUMER if config.read is ReadMode.EFO else "",
        idle_interval_s=idle_interval_for(config.shards),
    )
    return Fleet(base, config.workers, directory, rng)


def _verified(
    report: ChaosReport,
    planned: _Planned,
    dynamodb: Any,
    names: Names,
    producer_faults: FaultInjector,
    outage: OutageSwitch,
    started: float,
) -> ChaosReport:
    """Count, per produced event, what the sink and the dead-letter table hold."""
    report.producer_duplicates = producer_faults.injected[FaultKind.ENTRY_STORED_REPORTED_FAILED]
    applied = applied_counts(dynamodb, names.effects)
    letters = read_dead_letters(dynamodb, names.dead_letters)
    report.produced = len(planned.events)
    report.poison = len(planned.poison)
    report.effects = sum(1 for count in applied.values() if count >= 1)
    report.dead_lettered = len({str(letter.record.event_id) for letter in letters})
    # Invalid writes are never applied, as poison events are not: they are missing only
    # when their letter is, and that is counted apart.
    verdict = verify(applied, letters, planned.to_apply | planned.poison, planned.plan.poison)
    missing = sorted(verdict.missing)
    report.missing, report.missing_ids = len(missing), missing[:20]
    report.duplicated, report.duplicated_ids = len(verdict.duplicated), verdict.duplicated[:20]
    invalid = planned.invalid.keys()
    refused = distinct_events(letters, DeadLetterReason.INVALID_WRITE) & invalid
    report.invalid_writes_injected = len(invalid)
    report.invalid_writes_dead_lettered = len(refused)
    report.invalid_writes_missing_ids = sorted(invalid - refused)[:20]
    report.invalid_writes_applied = len(invalid & applied.keys())
    window = outage.window
    report.outage_s = outage.length_s
    wrongly = sorted(outage_letters(letters, planned.letter_reasons, window))
    report.outage_dead_lettered = len(wrongly)
    report.outage_dead_lettered_ids = wrongly[:20]
    report.wall_s = round(time.monotonic() - started, 1)
    return report


class Production:
    """The producer in a thread of its own, its sends now and then stored twice.

    It sends its events over ``config.produce_s``, or until :meth:`stop`; ``sent``
    counts the events it has put so far.
    """

    def __init__(self, config: ChaosConfig, kinesis_endpoint: str, stream: str) -> None:
        self.config = config
        self.faults = FaultInjector(seed=config.seed)
        producer_client = client("kinesis", kinesis_endpoint)
        if config.producer_duplicate_rate:
            self.faults.fail_stored_entries(
                entries=config.producer_duplicate_rate, schedule=Probability(0.5)
            )
        self.faults.attach(producer_client)
        self.producer = Producer(
            producer_client, stream, ProducerConfig(entry_retry=PRODUCER_RETRY)
        )
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        self.sent = 0
        self._stop = threading.Event()

    def start(self, events: list[Event]) -> None:
        threading.Thread(
            target=self._produce, args=(events,), name="chaos-producer", daemon=True
        ).start()

    def _produce(self, events: list[Event]) -> None:
        try:
            chunks = max(1, int(self.config.produce_s / 0.25))
            size = max(1, -(-len(events) // chunks))
            for offset in range(0, len(events), size):
                if self._stop.is_set():
                    break
                self.producer.put(events[offset : offset + size])
                self.sent = min(len(events), offset + size)
                time.sleep(self.config.produce_s / chunks)
        except BaseException as exc:  # reported by the main loop
            self.errors.append(exc)
        finally:
            self.done.set()

    def stop(self) -> None:
        """Send no more chunks after the one being sent; wait until it is."""
        self._stop.set()
        self.done.wait()

    def check(self) -> None:
        """Raise what stopped the producer, if anything did."""
        if self.errors:
            raise RuntimeError(f"the producer failed: {self.errors[0]}") from self.errors[0]


@dataclass
class _Run:
    """One chaos run: its settings, emulator clients, plan and report, shared by its steps."""

    config: ChaosConfig
    names: Names
    kinesis: Any
    dynamodb: Any
    planned: _Planned
    production: Production
    outage: OutageSwitch
    # When the sink goes down (if the run has an outage at all).
    outage_at: float
    report: ChaosReport
    rng: random.Random
    say: Progress
    started: float
    # In front of kinesis-mock when reading by subscription: it can cut every subscription.
    bridge: EfoBridge | None = None

    def verified(self) -> ChaosReport:
        return _verified(
            self.report,
            self.planned,
            self.dynamodb,
            self.names,
            self.production.faults,
            self.outage,
            self.started,
        )


def create_resources(config: ChaosConfig, kinesis: Any, dynamodb: Any, names: Names) -> None:
    """Create the stream of ``config.shards`` shards and the lease, ledger, effects and
    dead-letter tables of ``names``."""
    kinesis.create_stream(StreamName=names.stream, ShardCount=config.shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=names.stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    create_lease_table(dynamodb, names.leases)
    create_ledger_table(dynamodb, names.ledger)
    create_effects_table(dynamodb, names.effects)
    create_dead_letter_table(dynamodb, names.dead_letters)


def _supervise(run: _Run, fleet: Fleet) -> Resharder | None:
    """Kill, stop, wake and restart workers and reshard on schedule, until all is done."""
    config, report, rng, started = run.config, run.report, run.rng, run.started
    resharder = (
        Resharder(run.kinesis, run.names.stream)
        if config.reshard and config.kinesis is KinesisBackend.KINESIS_MOCK
        else None
    )
    reshard_at = [started + config.produce_s * f for f in (0.3, 0.6)] if resharder else []
    next_kill = started + rng.expovariate(1 / config.kill_every_s) if config.kill_every_s else None
    next_zombie = (
        started + rng.expovariate(1 / config.zombie_every_s) if config.zombie_every_s else None
    )
    # From now, when the workers are up: a cut before their first subscription cuts nothing.
    cutter = SubscriptionCutter(run.bridge, config.sever_every_s, config.seed, time.monotonic())
    last_check = 0.0
    check_every_s = min(5.0, max(0.5, len(run.planned.events) / 20_000))
    while True:
        now = time.monotonic()
        run.production.check()
        report.zombies += fleet.notice_self_stopped(now, config.failover_s * 1.6)
        fleet.continue_due(now)
        fleet.restart_dead()
        # Only a planned outage not yet started looks at the effects table.
        waiting = run.outage.duration_s > 0 and run.outage.started_at is None
        if not waiting or now < run.outage_at or _any_applied(run):
            run.outage.step(now, run.outage_at)
        faults_open = now < started + config.produce_s * 1.2
        if faults_open and next_kill is not None and now >= next_kill:
            fleet.kill_one()
            fleet.restart_dead()
            next_kill = now + rng.expovariate(1 / config.kill_every_s)
        if faults_open and next_zombie is not None and now >= next_zombie:
            if fleet.stop_one(now, config.failover_s * 1.6):
                report.zombies += 1
            next_zombie = now + rng.expovariate(1 / config.zombie_every_s)
        # Cuts land while faults are open, and until the first one landed: subscriptions open
        # only after a cold start (the consumer registered, leases assigned), which a busy
        # machine can stretch past production.
        if faults_open or (config.sever_every_s and not cutter.cut):
            cutter.step(now)
            report.subscriptions_severed = cutter.cut
        if resharder is not None and reshard_at and now >= reshard_at[0]:
            reshard_at.pop(0)
            resharder.step()
            run.say(f"resharded ({'split' if resharder.done == 1 else 'merge'})")
        # Scanning the sink competes with the workers for the emulator: not too often.
        ready = run.production.done.is_set() and not fleet.stopped and run.outage.over
        if ready and now - last_check >= check_every_s:
            done = _all_done(run)
            last_check = time.monotonic()
            if done:
                return resharder
        if now - started > config.timeout_s:
            run.say("timed out: verifying what is there")
            return resharder
        time.sleep(0.2)


def _any_applied(run: _Run) -> bool:
    """Whether the fleet has applied an effect: an outage before any shard is read (leases not yet
    assigned at a cold start) would pause nothing, so it waits for the first effect."""
    return bool(run.dynamodb.scan(TableName=run.names.effects, Limit=1).get("Items"))


def _all_done(run: _Run) -> bool:
    applied = applied_counts(run.dynamodb, run.names.effects)
    letters = read_dead_letters(run.dynamodb, run.names.dead_letters)
    if run.planned.done(set(applied), letters):
        return True
    run.say(f"{len(applied)}/{len(run.planned.to_apply)} effects, {len(letters)} letters")
    return False


def _count_fleet(report: ChaosReport, fleet: Fleet, resharder: Resharder | None) -> None:
    """What the workers' stats files say they saw and injected."""
    report.kills = fleet.kills
    report.reshards = resharder.done if resharder else 0
    totals = fleet.totals()
    report.zombies_fenced = totals.get("fenced_commits", 0)
    report.outage_pauses = totals.get("outage_pauses", 0)
    report.throttles_injected = totals.get(FaultKind.ERROR_RESPONSE.value, 0)
    report.connection_faults_injected = totals.get(
        FaultKind.CONNECTION_REFUSED.value, 0
    ) + totals.get(FaultKind.CONNECTION_LOST.value, 0)
    report.get_records_calls = totals.get("GetRecords", 0)
    report.subscribe_calls = totals.get("SubscribeToShard", 0)


def run_chaos(config: ChaosConfig, progress: Progress | None = None) -> ChaosReport:
    """Run one seeded chaos scenario and verify the sink; see the module docstring."""
    say = progress or (lambda _: None)
    started = time.monotonic()
    report = ChaosReport(seed=config.seed, workers=config.workers, read=config.read.value)
    names = Names.fresh("chaos", "chaos")
    with contextlib.ExitStack() as stack:
        moto, kinesis_endpoint, report.emulator, bridge = backends(config, stack)
        kinesis = client("kinesis", kinesis_endpoint)
        dynamodb = client("dynamodb", moto.endpoint_url)
        create_resources(config, kinesis, dynamodb, names)
        say(f"emulators up ({report.emulator}); stream {names.stream} with {config.shards} shards")
        directory = stack.enter_context(_workspace())
        run = _Run(
            config,
            names,
            kinesis,
            dynamodb,
            _Planned.of(config),
            Production(config, kinesis_endpoint, names.stream),
            OutageSwitch(directory / OUTAGE_MARKER, config.sink_outage_s),
            # Its own generator, so that the seeded schedules of runs without an outage stay.
            time.monotonic() + config.produce_s * random.Random(config.seed).uniform(0.2, 0.5),
            report,
            random.Random(config.seed),
            say,
            started,
            bridge,
        )
        run.production.start(run.planned.events)
        if config.adapter is Adapter.LAMBDA:
            run.production.done.wait()
            run.production.check()
            from kinesis_eo.harness.chaos_lambda import consume_with_lambda

            consume_with_lambda(config, kinesis, dynamodb, names, report, run.rng, say, run.outage)
            return run.verified()
        fleet = _start_fleet(config, kinesis_endpoint, moto.endpoint_url, names, directory, run.rng)
        stack.callback(fleet.shut_down)
        resharder = _supervise(run, fleet)
        fleet.shut_down()
        _count_fleet(report, fleet, resharder)
        return run.verified()
