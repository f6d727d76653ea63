"""The demo's phases: the emulator and its clients, then setup, produce, consume, verify.

:func:`kinesis_eo.harness.demo.run_demo` runs them in order; each prints one
numbered progress entry (:class:`Progress`) and hands the next what it needs.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from kinesis_eo.checkpoint import (
    CheckpointStore,
    DynamoDBCheckpointStore,
    MemoryCheckpointStore,
    create_checkpoint_table,
)
from kinesis_eo.consumer import Consumer, ConsumerConfig
from kinesis_eo.deadletter import (
    DynamoDBDeadLetterTable,
    create_dead_letter_table,
    read_dead_letters,
)
from kinesis_eo.errors import ConfigurationError, translate_aws_error
from kinesis_eo.harness.scenario import (
    EventPlan,
    Names,
    Verdict,
    _SimulatedCrash,
    applied_counts,
    client,
    create_effects_table,
    orders,
    verify,
)
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.metrics import Recorder
from kinesis_eo.metrics.catalogue import APP
from kinesis_eo.producer import Producer, ProducerConfig
from kinesis_eo.records import Record
from kinesis_eo.retrieval import Batch, ReaderConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import BatchReport, EffectContext, FailurePolicy, TransactionalSink, update
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.faults import FaultInjector, FaultKind, Probability

__all__ = [
    "CONSUMER_GROUP",
    "GET_THROTTLE_P",
    "HANDLER_POLICY",
    "POISON_EVERY",
    "PRODUCER_BATCH",
    "PUT_RETRY",
    "PUT_THROTTLE_P",
    "QUICK",
    "READ_BATCH",
    "STORED_BUT_FAILED_P",
    "Consumed",
    "Produced",
    "Progress",
    "Session",
    "Tally",
    "consume",
    "plural",
    "produce",
    "require_moto_server",
    "setup",
    "start",
    "verify_sink",
]

CONSUMER_GROUP = "demo"
# One event in this many is poison; at least one always is, so that every run
# shows a dead letter.
POISON_EVERY = 400
# Small PutRecords batches make more calls, so the throttling has calls to hit.
PRODUCER_BATCH = 100
READ_BATCH = 100
PUT_THROTTLE_P = 0.25
STORED_BUT_FAILED_P = 0.03
GET_THROTTLE_P = 0.05

# Everything here is local and instant: waiting the AWS-sized back-offs would
# only make the demo slow, the code paths are the same.
QUICK = RetryConfig(max_attempts=8, initial_backoff_s=0.005, max_backoff_s=0.05)
# A quarter of the PutRecords calls are throttled: enough tries that no seed
# makes the producer give up.
PUT_RETRY = RetryConfig(max_attempts=14, initial_backoff_s=0.005, max_backoff_s=0.05)
HANDLER_POLICY = FailurePolicy(max_attempts=3, initial_backoff_s=0.005, max_backoff_s=0.02)


def plural(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` followed by the noun, in the plural unless ``count`` is 1."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


@dataclass
class Tally:
    """Counts taken from every committed batch, the crashed one included.

    ``ConsumerStats`` would miss that one: the crash happens in ``after_commit``,
    before the consumer counts the batch, yet its effects are committed.
    """

    batches: int = 0
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    # Whether the consumer died (the scenario's crash) after its last batch's commit.
    crashed: bool = False

    def add(self, batch: Batch, report: BatchReport) -> None:
        self.batches += 1
        self.delivered += len(batch.records)
        self.applied += len(report.applied)
        self.duplicates += len(report.duplicates)
        self.dead_lettered += len(report.dead_lettered) + len(report.mismatched)

    def summary(self) -> str:
        return (
            f"{plural(self.delivered, 'record')} in {plural(self.batches, 'batch', 'batches')}, "
            f"{plural(self.applied, 'effect')}, {plural(self.duplicates, 'duplicate')} dropped"
        )


class Progress:
    """One numbered line per phase: its name when it starts, its time and result when it ends."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.total = total
        self.number = 0
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[list[str]]:
        """Time a phase; the lines the body appends complete its entry."""
        self.number += 1
        head = f"[{self.number}/{self.total}] {name:<8}"
        print(head, end="", file=self.out, flush=True)
        lines: list[str] = []
        started = time.monotonic()
        try:
            yield lines
        except BaseException:
            print(" failed", file=self.out, flush=True)
            raise
        elapsed = time.monotonic() - started
        self.times[name] = round(elapsed, 3)
        timing = f" {elapsed:5.1f} s  "
        indent = " " * (len(head) + len(timing))
        first, *rest = lines or [""]
        print(f"{timing}{first}", file=self.out)
        for line in rest:
            print(f"{indent}{line}", file=self.out)
        self.out.flush()


# --- the emulator -----------------------------------------------------------------------------


def _moto_version() -> str:
    try:
        import moto
    except ImportError:
        return "?"
    return str(getattr(moto, "__version__", "?"))


def require_moto_server() -> None:
    """Refuse to start the demo, in one sentence, without moto's server (the ``demo`` extra)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"the demo runs on moto's server, which is not installed ({exc}): "
            "pip install 'kinesis-eo[demo]'"
        ) from None


@contextlib.contextmanager
def _fast_transactions() -> Iterator[tuple[str, str | None]]:
    """Undo-log transactions for the emulator while the demo runs; (emulator, why stock).

    Stock moto copies a table for every item of a transaction, so the ledger's
    commits grow slower with every event committed; the undo log keeps them
    flat. The patch is removed afterwards, so that a test session running the
    demo keeps stock moto for everything else.
    """
    version = _moto_version()
    try:
        from kinesis_eo.harness import moto_transactions
    except ImportError as exc:
        yield f"moto {version} (stock transactions)", f"undo-log patch unavailable: {exc}"
        return
    was_installed = moto_transactions.installed()
    try:
        moto_transactions.install()
    except RuntimeError as exc:
        yield f"moto {version} (stock transactions)", str(exc)
        return
    try:
        yield f"moto {version} with undo-log transactions", None
    finally:
        if not was_installed:
            moto_transactions.uninstall()


@contextlib.contextmanager
def _translated(resource: str, action: str) -> Iterator[None]:
    """botocore errors of the demo's own boto3 calls as kinesis_eo errors (one line in the CLI)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate_aws_error(exc, resource=resource, action=action) from exc


# --- the scenario -----------------------------------------------------------------------------


def _handler(effects_table: str) -> Callable[[Record, EffectContext], list[Any]]:
    def apply(record: Record, ctx: EffectContext) -> list[Any]:
        order = json.loads(record.data)
        amount = order["amount_cents"]
        if not isinstance(amount, int):
            raise ValueError(f"order {order['order']}: amount_cents {amount!r} is not in cents")
        # ADD, not SET: applied twice, this item would say so.
        return [
            update(
                effects_table,
                {"id": record.event_id or ctx.idempotency_key},
                "ADD applied :one, total_cents :amount SET payload = :payload",
                values={":one": 1, ":amount": amount, ":payload": record.data.decode()},
            )
        ]

    return apply


def _consumer(
    session: Session,
    checkpoints: CheckpointStore,
    after_commit: Callable[[Batch, BatchReport], None],
) -> Consumer:
    names = session.names
    ledger = Ledger(
        DynamoDBLedgerStore(names.ledger, QUICK),
        # Keyed by event id: the only way to see a producer's retry as the same event.
        LedgerConfig(consumer_group=names.group, mode=LedgerMode.PER_RECORD),
    )
    sink = TransactionalSink(
        ledger,
        _handler(names.effects),
        policy=HANDLER_POLICY,
        dead_letters=DynamoDBDeadLetterTable(session.dynamodb, names.dead_letters),
    )
    config = ConsumerConfig(
        reader=ReaderConfig(
            max_records=READ_BATCH, min_read_interval_s=0.0, idle_interval_s=0.0, retry=QUICK
        ),
        retry=QUICK,
        stop_when_caught_up=True,
        # A checkpoint after every batch: the crash then costs the replay of
        # exactly one batch, the same one on every run with the same seed.
        checkpoint_interval_s=0.0,
    )
    return Consumer(
        session.consumer,
        session.dynamodb,
        names.stream,
        sink,
        checkpoints,
        config,
        after_commit=after_commit,
        metrics=session.metrics,
    )


@dataclass(frozen=True, slots=True)
class Session:
    """What every phase works with: the run's names, the emulator's clients, the progress lines."""

    names: Names
    seed: int
    endpoint: str
    progress: Progress
    # The producer's Kinesis client gets the producer's faults; the consumers' one, theirs.
    producer: Any
    consumer: Any
    dynamodb: Any
    # What `kinesis-eo run --metrics emf` would have emitted for the consumers' work.
    metrics: Recorder


def start(
    stack: contextlib.ExitStack, progress: Progress, events: int, shards: int, seed: int
) -> tuple[Session, str]:
    """The emulator (undo-log transactions where moto allows), its clients; the emulator's name."""
    out = progress.out
    emulator, why_stock = stack.enter_context(_fast_transactions())
    server = stack.enter_context(MotoServer())
    print(f"kinesis-eo demo: {events} events, {shards} shards, seed {seed}", file=out)
    print(f"emulator: {emulator}, embedded at {server.endpoint_url}", file=out)
    if why_stock is not None:
        print(f"note: stock moto transactions, expect a slow run: {why_stock}", file=out)

    def emulator_client(service: str) -> Any:
        # botocore's own retries stay on; kinesis_eo's retries sit above them.
        made = client(service, server.endpoint_url)
        stack.callback(made.close)
        return made

    session = Session(
        names=Names.fresh("kinesis-eo-demo", CONSUMER_GROUP),
        seed=seed,
        endpoint=server.endpoint_url,
        progress=progress,
        producer=emulator_client("kinesis"),
        consumer=emulator_client("kinesis"),
        dynamodb=emulator_client("dynamodb"),
        metrics=Recorder({APP: CONSUMER_GROUP}),
    )
    return session, emulator


def setup(session: Session, shards: int) -> None:
    """The stream, and the ledger, checkpoint, effects and dead-letter tables."""
    names, kinesis, dynamodb = session.names, session.consumer, session.dynamodb
    with session.progress.phase("setup") as lines:
        with _translated(f"the demo's stream and tables on {session.endpoint}", "setup"):
            kinesis.create_stream(StreamName=names.stream, ShardCount=shards)
            kinesis.get_waiter("stream_exists").wait(
                StreamName=names.stream, WaiterConfig={"Delay": 0.1, "MaxAttempts": 300}
            )
            create_ledger_table(dynamodb, names.ledger)
            create_checkpoint_table(dynamodb, names.checkpoints)
            create_effects_table(dynamodb, names.effects)
            create_dead_letter_table(dynamodb, names.dead_letters)
        lines.append(
            f"a stream of {plural(shards, 'shard')}; the ledger (per record, keyed by event id), "
            "checkpoint, effects and dead-letter tables"
        )


@dataclass(frozen=True, slots=True)
class Produced:
    """What the demo's producing phase returns: events, producer duplicates, throttles."""

    plan: EventPlan
    producer_duplicates: int
    throttled: int

    @property
    def stored(self) -> int:
        """Records the stream holds: every event, and the copies the producer's retries stored."""
        return len(self.plan.events) + self.producer_duplicates


def produce(session: Session, events: int) -> Produced:
    """Phase: put the events through throttling and entries stored but reported failed."""
    with session.progress.phase("produce") as lines:
        plan = orders(events, random.Random(session.seed), POISON_EVERY)
        faults = FaultInjector(seed=session.seed)
        # Whole calls throttled first; a call that gets through may then
        # have entries stored and reported failed (a call suffers one fault).
        faults.throttle("PutRecords", schedule=Probability(PUT_THROTTLE_P))
        faults.fail_stored_entries(entries=STORED_BUT_FAILED_P)
        faults.attach(session.producer)
        producer = Producer(
            session.producer,
            session.names.stream,
            ProducerConfig(
                max_batch_records=PRODUCER_BATCH, entry_retry=QUICK, call_retry=PUT_RETRY
            ),
            rng=random.Random(session.seed),
        )
        put = producer.put(plan.events)
        faults.detach(session.producer)
        produced = Produced(
            plan,
            faults.injected[FaultKind.ENTRY_STORED_REPORTED_FAILED],
            faults.injected[FaultKind.ERROR_RESPONSE],
        )
        lines.append(
            f"{plural(events, 'event')} ({len(plan.poison)} poison) in "
            f"{plural(put.calls, 'PutRecords request')}"
        )
        lines.append(
            f"injected: {plural(produced.throttled, 'throttled call')}; "
            f"{plural(produced.producer_duplicates, 'entry', 'entries')} stored but reported "
            "failed (the producer's retry stored them again)"
        )
    return produced


def _consume_with_crash(session: Session, checkpoints: CheckpointStore, stored: int) -> Tally:
    """Phase: the first consumer dies after a sink commit, before that batch's checkpoint."""
    first = Tally()
    # Half the fewest batches the stored records can come in: the crash
    # then always lands before the first consumer could finish.
    crash_after = max(1, math.ceil(stored / READ_BATCH) // 2)

    def crash_after_commit(batch: Batch, report: BatchReport) -> None:
        first.add(batch, report)
        if first.batches == crash_after:
            raise _SimulatedCrash

    with session.progress.phase("consume") as lines:
        try:
            _consumer(session, checkpoints, crash_after_commit).run()
        except _SimulatedCrash:
            first.crashed = True
            lines.append(f"consumer 1: {first.summary()}")
            lines.append(
                f"crash injected after the sink commit of its batch {first.batches}, "
                "before that batch's checkpoint"
            )
        else:
            lines.append(f"consumer 1: {first.summary()}; finished before its crash")
    return first


def _recover(session: Session, checkpoints: CheckpointStore) -> Tally:
    """Phase: a second consumer goes on from the checkpoints the first one left."""
    second = Tally()
    with session.progress.phase("recover") as lines:
        _consumer(session, checkpoints, second.add).run()
        lines.append(f"consumer 2, from the checkpoints: {second.summary()}")
        lines.append(
            "(the producer's second copies, and the batch whose checkpoint the crash lost)"
        )
    return second


def _replay(session: Session) -> Tally:
    """Phase: a third consumer reads the whole stream again, with no checkpoints."""
    third = Tally()
    with session.progress.phase("replay") as lines:
        _consumer(session, MemoryCheckpointStore(), third.add).run()
        lines.append(f"consumer 3, from TRIM_HORIZON with no checkpoints: {third.summary()}")
    return third


@dataclass(frozen=True, slots=True)
class Consumed:
    """What the demo's consuming phase returns: a tally per consumer run, and throttles."""

    tallies: list[Tally]
    throttled: int


def consume(session: Session, stored: int) -> Consumed:
    """The three consumers, their GetRecords calls throttled now and then."""
    read_faults = FaultInjector(seed=session.seed + 1)
    read_faults.throttle("GetRecords", schedule=Probability(GET_THROTTLE_P))
    read_faults.attach(session.consumer)
    checkpoints = DynamoDBCheckpointStore(session.names.checkpoints)
    tallies = [
        _consume_with_crash(session, checkpoints, stored),
        _recover(session, checkpoints),
        _replay(session),
    ]
    read_faults.detach(session.consumer)
    return Consumed(tallies, read_faults.injected[FaultKind.ERROR_RESPONSE])


def verify_sink(session: Session, plan: EventPlan) -> Verdict:
    """Phase: every event applied once, or dead-lettered with its payload; none lost or doubled."""
    names = session.names
    with session.progress.phase("verify") as lines:
        with _translated(f"table {names.effects!r}", "Scan"):
            applied = applied_counts(session.dynamodb, names.effects)
        letters = read_dead_letters(session.dynamodb, names.dead_letters, names.group, retry=QUICK)
        verdict = verify(applied, letters, plan.event_ids, plan.poison)
        intact = verdict.letters - verdict.stray_letters
        lines.append(
            f"{plural(verdict.ok, 'event')} applied once; {verdict.letters} dead-lettered "
            f"({intact} poison, payload intact); {len(verdict.missing)} missing; "
            f"{len(verdict.duplicated)} applied more than once"
        )
        for label, ids in (("missing", verdict.missing), ("duplicated", verdict.duplicated)):
            if ids:
                shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
                lines.append(f"{label}: {shown}")
    return verdict
