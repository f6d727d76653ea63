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
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
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
from kinesis_eo.harness.chaos_worker import WorkerSpec
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
from kinesis_eo.retrieval import list_shards
from kinesis_eo.retry import RetryConfig
from kinesis_eo.testing.backends import KinesisMock, MotoServer
from kinesis_eo.testing.faults import FaultInjector, FaultKind, Probability

__all__ = ["Adapter", "ChaosConfig", "ChaosReport", "KinesisBackend", "run_chaos"]

# A quarter of the producer's sends are flipped to "failed": enough tries that none gives up.
PRODUCER_RETRY = RetryConfig(max_attempts=20, initial_backoff_s=0.01, max_backoff_s=0.2)

Progress = Callable[[str], None]
# The file whose text tells every worker process that the sink is down (chaos_faults).
OUTAGE_MARKER = "sink-outage"


class KinesisBackend(Enum):
    MOTO = "moto"
    KINESIS_MOCK = "kinesis-mock"


class Adapter(Enum):
    """What consumes: worker processes sharing leases, or the Lambda handler under an ESM."""

    WORKER = "worker"
    LAMBDA = "lambda"


@dataclass(frozen=True)
class ChaosConfig:
    events: int = 2000
    workers: int = 3
    shards: int = 4
    seed: int = 1
    kinesis: KinesisBackend = KinesisBackend.MOTO
    adapter: Adapter = Adapter.WORKER
    failover_s: float = 3.0
    # Production is spread over this long, so that faults land while it runs.
    produce_s: float = 20.0
    # Mean seconds between SIGKILLs of a random worker, and between zombies.
    kill_every_s: float = 5.0
    zombie_every_s: float = 12.0
    # Every n-th event is poison (its handler always fails): it must be dead-lettered.
    poison_every: int = 500
    # Share of PutRecords entries stored but reported failed: the producer sends them again.
    producer_duplicate_rate: float = 0.02
    throttle_probability: float = 0.02
    disconnect_probability: float = 0.005
    crash_after_commit_probability: float = 0.01
    # Per handler call: the worker SIGSTOPs itself with a commit in hand; the
    # harness lets it sleep past its lease and wakes it: a zombie.
    pause_in_handler_probability: float = 0.0005
    # Split one shard, then merge two, while events are produced (kinesis-mock only).
    reshard: bool = True
    # Share of events whose handler result DynamoDB refuses: each must be dead-lettered
    # as INVALID_WRITE, never applied (see kinesis_eo.harness.chaos_faults).
    invalid_write_rate: float = 0.0
    # A window this long, starting at a seeded time while events are produced, in
    # which the sink is down: the shards pause, and nothing may be dead-lettered for it.
    sink_outage_s: float = 0.0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.events < 1 or self.workers < 1 or self.shards < 1:
            raise ValueError("events, workers and shards must be positive")
        if not 0.0 <= self.invalid_write_rate < 1.0:
            raise ValueError("invalid_write_rate is a share of the events, from 0 to below 1")
        if not 0.0 <= self.sink_outage_s < float("inf"):
            raise ValueError("sink_outage_s is 0 or more seconds")


@dataclass
class ChaosReport:
    produced: int = 0
    effects: int = 0
    missing: int = 0
    duplicated: int = 0
    dead_lettered: int = 0
    poison: int = 0
    kills: int = 0
    zombies: int = 0
    zombies_fenced: int = 0
    reshards: int = 0
    throttles_injected: int = 0
    connection_faults_injected: int = 0
    producer_duplicates: int = 0
    # Distinct events given a write DynamoDB refuses; those of them with an
    # INVALID_WRITE letter; those of them applied all the same (must be 0).
    invalid_writes_injected: int = 0
    invalid_writes_dead_lettered: int = 0
    invalid_writes_applied: int = 0
    # How long the sink was down, the pauses it caused, and the events
    # dead-lettered for it (must be 0: an outage dead-letters nothing).
    outage_s: float = 0.0
    outage_pauses: int = 0
    outage_dead_lettered: int = 0
    wall_s: float = 0.0
    emulator: str = ""
    seed: int = 0
    workers: int = 0
    missing_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    invalid_writes_missing_ids: list[str] = field(default_factory=list)
    outage_dead_lettered_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.duplicated == 0
            and self.invalid_writes_dead_lettered == self.invalid_writes_injected
            and self.invalid_writes_applied == 0
            and self.outage_dead_lettered == 0
        )

    def failure(self) -> str:
        """What went wrong, in one line ("" when ok)."""
        problems = [
            f"{self.missing} effects lost" if self.missing else "",
            f"{self.duplicated} applied twice" if self.duplicated else "",
            (
                f"{self.invalid_writes_injected - self.invalid_writes_dead_lettered} invalid "
                "writes not dead-lettered"
            )
            if self.invalid_writes_dead_lettered != self.invalid_writes_injected
            else "",
            f"{self.invalid_writes_applied} invalid writes applied"
            if self.invalid_writes_applied
            else "",
            f"{self.outage_dead_lettered} dead-lettered for the outage"
            if self.outage_dead_lettered
            else "",
        ]
        return ", ".join(p for p in problems if p)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2, sort_keys=True)


class _Fleet:
    """The worker processes: start, kill, stop, continue, restart; and their stats files."""

    def __init__(self, base: WorkerSpec, count: int, directory: Path, rng: random.Random) -> None:
        self.base = base
        self.directory = directory
        self.rng = rng
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.incarnations: dict[int, int] = {}
        self.stopped: dict[int, float] = {}
        self.kills = 0
        self.stats_files: list[Path] = []
        self.logs: list[Path] = []
        for slot in range(count):
            self.start(slot)

    def start(self, slot: int) -> None:
        incarnation = self.incarnations.get(slot, -1) + 1
        self.incarnations[slot] = incarnation
        stats = self.directory / f"stats-{slot}-{incarnation}.json"
        log = self.directory / f"worker-{slot}-{incarnation}.log"
        self.stats_files.append(stats)
        self.logs.append(log)
        spec = WorkerSpec(
            **{
                **asdict(self.base),
                "worker_id": f"worker-{slot}.{incarnation}",
                "stats_file": str(stats),
                "seed": self.base.seed * 1000 + slot * 100 + incarnation,
            }
        )
        env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "*"}
        with open(log, "wb") as output:
            self.processes[slot] = subprocess.Popen(
                [sys.executable, "-m", "kinesis_eo.harness.chaos_worker", spec.to_json()],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def restart_dead(self) -> None:
        for slot, process in list(self.processes.items()):
            code = process.poll()
            if code is None:
                continue
            if code == -signal.SIGKILL:
                self.kills += 1
            self.start(slot)

    def kill_one(self) -> None:
        slot = self.rng.choice(sorted(self.processes))
        process = self.processes[slot]
        if process.poll() is None:
            self.stopped.pop(slot, None)
            process.send_signal(signal.SIGKILL)
            process.wait()
        # restart_dead counts it and starts the next incarnation

    def stop_one(self, now: float, pause_s: float) -> bool:
        running = [
            s for s, p in self.processes.items() if p.poll() is None and s not in self.stopped
        ]
        if len(running) < 2:
            return False  # someone must be left to take the leases over
        slot = self.rng.choice(running)
        self.processes[slot].send_signal(signal.SIGSTOP)
        self.stopped[slot] = now + pause_s
        return True

    def notice_self_stopped(self, now: float, pause_s: float) -> int:
        """Workers that stopped themselves: schedule their SIGCONT; how many were new."""
        found = 0
        for slot, process in self.processes.items():
            if slot not in self.stopped and process.poll() is None and _is_stopped(process.pid):
                self.stopped[slot] = now + pause_s
                found += 1
        return found

    def continue_due(self, now: float) -> None:
        for slot, until in list(self.stopped.items()):
            if now >= until:
                with contextlib.suppress(ProcessLookupError):
                    self.processes[slot].send_signal(signal.SIGCONT)
                del self.stopped[slot]

    def shut_down(self, timeout_s: float = 30.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for path in self.stats_files:
            try:
                stats = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # killed before its first report
            for section in ("metrics", "injected"):
                for name, value in stats[section].items():
                    totals[name] = totals.get(name, 0) + int(value)
        return totals


def _is_stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


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


class _Resharder:
    """One split, then one merge of two adjacent shards, while production runs."""

    def __init__(self, kinesis: Any, stream: str) -> None:
        self.kinesis = kinesis
        self.stream = stream
        self.done = 0

    def _wait_active(self) -> None:
        for _ in range(600):
            summary = self.kinesis.describe_stream_summary(StreamName=self.stream)
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            time.sleep(0.05)

    def step(self) -> None:
        open_shards = list_shards(self.kinesis, self.stream).open_shards()
        if self.done == 0:
            target = open_shards[0]
            middle = (target.hash_range.start + target.hash_range.end) // 2
            self.kinesis.split_shard(
                StreamName=self.stream, ShardToSplit=target.shard_id, NewStartingHashKey=str(middle)
            )
        else:
            ordered = sorted(open_shards, key=lambda s: s.hash_range.start)
            left, right = ordered[0], ordered[1]
            self.kinesis.merge_shards(
                StreamName=self.stream,
                ShardToMerge=left.shard_id,
                AdjacentShardToMerge=right.shard_id,
            )
        self._wait_active()
        self.done += 1


def _backends(config: ChaosConfig, stack: contextlib.ExitStack) -> tuple[MotoServer, str, str]:
    from kinesis_eo.harness import moto_transactions

    emulator = "moto (stock transactions)"
    with contextlib.suppress(RuntimeError):
        moto_transactions.install()
        stack.callback(moto_transactions.uninstall)
        emulator = "moto with undo-log transactions"
    moto = stack.enter_context(MotoServer())
    kinesis_endpoint = moto.endpoint_url
    if config.kinesis is KinesisBackend.KINESIS_MOCK:
        kinesis_mock = stack.enter_context(KinesisMock())
        kinesis_endpoint = kinesis_mock.endpoint_url
        emulator = f"kinesis-mock (Kinesis) + {emulator} (DynamoDB)"
    else:
        emulator = f"{emulator} (Kinesis and DynamoDB)"
    return moto, kinesis_endpoint, emulator


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
) -> _Fleet:
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
    )
    return _Fleet(base, config.workers, directory, rng)


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


def run_chaos(config: ChaosConfig, progress: Progress | None = None) -> ChaosReport:
    """Run one seeded chaos scenario and verify the sink; see the module docstring."""
    say = progress or (lambda _: None)
    started = time.monotonic()
    rng = random.Random(config.seed)
    report = ChaosReport(seed=config.seed, workers=config.workers)
    names = Names.fresh("chaos", "chaos")
    with contextlib.ExitStack() as stack:
        moto, kinesis_endpoint, report.emulator = _backends(config, stack)
        kinesis = client("kinesis", kinesis_endpoint)
        dynamodb = client("dynamodb", moto.endpoint_url)
        kinesis.create_stream(StreamName=names.stream, ShardCount=config.shards)
        kinesis.get_waiter("stream_exists").wait(
            StreamName=names.stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
        )
        create_lease_table(dynamodb, names.leases)
        create_ledger_table(dynamodb, names.ledger)
        create_effects_table(dynamodb, names.effects)
        create_dead_letter_table(dynamodb, names.dead_letters)
        say(f"emulators up ({report.emulator}); stream {names.stream} with {config.shards} shards")

        planned = _Planned.of(config)
        events = planned.events
        produced = threading.Event()
        producer_faults = FaultInjector(seed=config.seed)
        directory = stack.enter_context(_workspace())
        outage = OutageSwitch(directory / OUTAGE_MARKER, config.sink_outage_s)
        producer_client = client("kinesis", kinesis_endpoint)
        if config.producer_duplicate_rate:
            producer_faults.fail_stored_entries(
                entries=config.producer_duplicate_rate, schedule=Probability(0.5)
            )
        producer_faults.attach(producer_client)
        producer = Producer(
            producer_client,
            names.stream,
            ProducerConfig(entry_retry=PRODUCER_RETRY),
        )
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                chunks = max(1, int(config.produce_s / 0.25))
                size = max(1, -(-len(events) // chunks))
                for offset in range(0, len(events), size):
                    producer.put(events[offset : offset + size])
                    time.sleep(config.produce_s / chunks)
            except BaseException as exc:  # reported by the main loop
                errors.append(exc)
            finally:
                produced.set()

        # Its own generator, so that the seeded schedules of runs without an outage stay.
        outage_at = time.monotonic() + config.produce_s * random.Random(config.seed).uniform(
            0.2, 0.5
        )
        threading.Thread(target=produce, name="chaos-producer", daemon=True).start()
        if config.adapter is Adapter.LAMBDA:
            produced.wait()
            if errors:
                raise RuntimeError(f"the producer failed: {errors[0]}") from errors[0]
            from kinesis_eo.harness.chaos_lambda import consume_with_lambda

            consume_with_lambda(config, kinesis, dynamodb, names, report, rng, say, outage)
            return _verified(report, planned, dynamodb, names, producer_faults, outage, started)
        fleet = _start_fleet(config, kinesis_endpoint, moto.endpoint_url, names, directory, rng)
        stack.callback(fleet.shut_down)

        resharder = (
            _Resharder(kinesis, names.stream)
            if config.reshard and config.kinesis is KinesisBackend.KINESIS_MOCK
            else None
        )
        reshard_at = [started + config.produce_s * f for f in (0.3, 0.6)] if resharder else []
        next_kill = (
            started + rng.expovariate(1 / config.kill_every_s) if config.kill_every_s else None
        )
        next_zombie = (
            started + rng.expovariate(1 / config.zombie_every_s) if config.zombie_every_s else None
        )
        last_check = 0.0
        check_every_s = min(5.0, max(0.5, len(events) / 20_000))
        while True:
            now = time.monotonic()
            if errors:
                raise RuntimeError(f"the producer failed: {errors[0]}") from errors[0]
            report.zombies += fleet.notice_self_stopped(now, config.failover_s * 1.6)
            fleet.continue_due(now)
            fleet.restart_dead()
            outage.step(now, outage_at)
            faults_open = now < started + config.produce_s * 1.2
            if faults_open and next_kill is not None and now >= next_kill:
                fleet.kill_one()
                fleet.restart_dead()
                next_kill = now + rng.expovariate(1 / config.kill_every_s)
            if faults_open and next_zombie is not None and now >= next_zombie:
                if fleet.stop_one(now, config.failover_s * 1.6):
                    report.zombies += 1
                next_zombie = now + rng.expovariate(1 / config.zombie_every_s)
            if resharder is not None and reshard_at and now >= reshard_at[0]:
                reshard_at.pop(0)
                resharder.step()
                say(f"resharded ({'split' if resharder.done == 1 else 'merge'})")
            # Scanning the sink competes with the workers for the emulator: not too often.
            ready = produced.is_set() and not fleet.stopped and outage.over
            if ready and now - last_check >= check_every_s:
                applied = applied_counts(dynamodb, names.effects)
                letters = read_dead_letters(dynamodb, names.dead_letters)
                last_check = time.monotonic()
                if planned.done(set(applied), letters):
                    break
                say(f"{len(applied)}/{len(planned.to_apply)} effects, {len(letters)} letters")
            if now - started > config.timeout_s:
                say("timed out: verifying what is there")
                break
            time.sleep(0.2)

        fleet.shut_down()
        report.kills = fleet.kills
        report.reshards = resharder.done if resharder else 0
        totals = fleet.totals()
        report.zombies_fenced = totals.get("fenced_commits", 0)
        report.outage_pauses = totals.get("outage_pauses", 0)
        report.throttles_injected = totals.get(FaultKind.ERROR_RESPONSE.value, 0)
        report.connection_faults_injected = totals.get(
            FaultKind.CONNECTION_REFUSED.value, 0
        ) + totals.get(FaultKind.CONNECTION_LOST.value, 0)
        return _verified(report, planned, dynamodb, names, producer_faults, outage, started)
