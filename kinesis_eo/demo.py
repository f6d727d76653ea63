"""``kinesis-eo demo``: exactly-once effects shown end to end, on an embedded moto, in seconds.

The demo makes records arrive twice in both of the ways the notes in docs/design.md
describe, then counts what the sink really did:

- inbound duplicates: a seeded :class:`FaultInjector` reports some PutRecords
  entries failed after the stream stored them, so the producer's retry stores
  those events a second time (same event id, new sequence number); it also
  throttles some PutRecords and GetRecords calls;
- outbound duplicates: the first consumer "dies" right after a batch's sink
  commit and before its checkpoint, so the second consumer reads that batch
  again; a third consumer then re-reads the whole stream with no checkpoints.

The sink's effect is deliberately not idempotent (``ADD applied :one`` on an
item per event id), so an effect applied twice is visible as ``applied = 2``.
A few events are poison (the handler rejects them): they must end up in the
dead-letter table with their payload, never silently dropped.

Everything runs against moto's HTTP server in a thread of this process, with
fixed fake credentials handed to each client: no AWS account, no change to
``os.environ`` or to the user's AWS configuration.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kinesis_eo.checkpoint import (
    CheckpointStore,
    DynamoDBCheckpointStore,
    MemoryCheckpointStore,
    create_checkpoint_table,
)
from kinesis_eo.consumer import Consumer, ConsumerConfig
from kinesis_eo.deadletter import (
    DeadLetter,
    DynamoDBDeadLetterTable,
    create_dead_letter_table,
    read_dead_letters,
)
from kinesis_eo.errors import ConfigurationError, translate_aws_error
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.producer import Event, Producer, ProducerConfig
from kinesis_eo.records import Record
from kinesis_eo.retrieval import Batch, ReaderConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import BatchReport, EffectContext, FailurePolicy, TransactionalSink, update
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.faults import FaultInjector, FaultKind, Probability

__all__ = ["DemoReport", "format_report", "run_demo"]

DEFAULT_EVENTS = 2000
DEFAULT_SHARDS = 4
DEFAULT_SEED = 7
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


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo did and what it found in the sink; ``ok`` when nothing was lost or doubled."""

    produced: int
    delivered: int
    effects: int
    duplicates_suppressed: int
    dead_lettered: int
    missing: int
    duplicated: int
    producer_duplicates: int
    crashes: int
    wall_s: float
    emulator: str
    seed: int
    shards: int
    poison: int
    stored_records: int
    redelivered: int
    throttled_calls: int
    consumer_passes: int
    phase_s: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicated == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase_s"] = dict(self.phase_s)
        data["ok"] = self.ok
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _n(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


@dataclass
class _Tally:
    """Counts taken from every committed batch, the crashed one included.

    ``ConsumerStats`` would miss that one: the crash happens in ``after_commit``,
    before the consumer counts the batch, yet its effects are committed.
    """

    batches: int = 0
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0

    def add(self, batch: Batch, report: BatchReport) -> None:
        self.batches += 1
        self.delivered += len(batch.records)
        self.applied += len(report.applied)
        self.duplicates += len(report.duplicates)
        self.dead_lettered += len(report.dead_lettered) + len(report.mismatched)

    def summary(self) -> str:
        return (
            f"{_n(self.delivered, 'record')} in {_n(self.batches, 'batch', 'batches')}, "
            f"{_n(self.applied, 'effect')}, {_n(self.duplicates, 'duplicate')} dropped"
        )


class _SimulatedCrash(Exception):
    """Stands for the consumer's process dying between the sink commit and the checkpoint."""


@dataclass(frozen=True, slots=True)
class _Names:
    stream: str
    ledger: str
    checkpoints: str
    effects: str
    dead_letters: str

    @classmethod
    def fresh(cls) -> _Names:
        # Unique per run: moto's state is process-wide, and a test session may
        # run the demo next to other users of the same in-process backends.
        run = uuid.uuid4().hex[:8]
        prefix = f"kinesis-eo-demo-{run}"
        return cls(
            stream=f"{prefix}-orders",
            ledger=f"{prefix}-ledger",
            checkpoints=f"{prefix}-checkpoints",
            effects=f"{prefix}-effects",
            dead_letters=f"{prefix}-dead-letters",
        )


class _Progress:
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


def _require_moto_server() -> None:
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
        from kinesis_eo.testing import moto_transactions
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


def _client(server: MotoServer, stack: contextlib.ExitStack, service: str) -> Any:
    # The back-end's clients ignore HTTP(S)_PROXY. botocore's own retries stay
    # on; kinesis_eo's retries sit above them.
    client = server.client(service)
    stack.callback(client.close)
    return client


# --- the scenario -----------------------------------------------------------------------------


def _events(count: int, rng: random.Random) -> tuple[list[Event], dict[str, bytes]]:
    """Orders with stable ids; the poison ones (id -> payload) have an amount no handler takes."""
    poison_count = max(1, count // POISON_EVERY)
    poison_at = set(rng.sample(range(count), poison_count))
    events: list[Event] = []
    poison: dict[str, bytes] = {}
    for i in range(count):
        event_id = f"order-{i:06d}"
        order: dict[str, Any] = {
            "order": i,
            "customer": f"customer-{rng.randrange(97):02d}",
            "amount_cents": rng.randrange(100, 100_000),
        }
        if i in poison_at:
            order["amount_cents"] = "12,50 EUR"
        data = json.dumps(order, separators=(",", ":")).encode()
        if i in poison_at:
            poison[event_id] = data
        events.append(Event(data=data, partition_key=str(order["customer"]), event_id=event_id))
    return events, poison


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


def _create_resources(kinesis: Any, dynamodb: Any, names: _Names, shards: int) -> None:
    kinesis.create_stream(StreamName=names.stream, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=names.stream, WaiterConfig={"Delay": 0.1, "MaxAttempts": 300}
    )
    create_ledger_table(dynamodb, names.ledger)
    create_checkpoint_table(dynamodb, names.checkpoints)
    dynamodb.create_table(
        TableName=names.effects,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(
        TableName=names.effects, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    create_dead_letter_table(dynamodb, names.dead_letters)


def _consumer(
    kinesis: Any,
    dynamodb: Any,
    names: _Names,
    checkpoints: CheckpointStore,
    after_commit: Callable[[Batch, BatchReport], None],
) -> Consumer:
    ledger = Ledger(
        DynamoDBLedgerStore(names.ledger, QUICK),
        # Keyed by event id: the only way to see a producer's retry as the same event.
        LedgerConfig(consumer_group=CONSUMER_GROUP, mode=LedgerMode.PER_RECORD),
    )
    sink = TransactionalSink(
        ledger,
        _handler(names.effects),
        policy=HANDLER_POLICY,
        dead_letters=DynamoDBDeadLetterTable(dynamodb, names.dead_letters),
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
        kinesis, dynamodb, names.stream, sink, checkpoints, config, after_commit=after_commit
    )


def _scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**params)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@dataclass(frozen=True, slots=True)
class _Verdict:
    ok: int
    duplicated: list[str]
    missing: list[str]
    effects: int
    letters: int
    stray_letters: int


def _verify(
    applied: Mapping[str, int],
    letters: Sequence[DeadLetter],
    event_ids: Sequence[str],
    poison: Mapping[str, bytes],
) -> _Verdict:
    # A letter only saves an event if it holds the payload whole: a letter
    # without it is as lost as no letter.
    preserved: set[str] = set()
    for letter in letters:
        event_id = letter.record.event_id
        if event_id is not None and poison.get(event_id) == letter.record.data:
            preserved.add(event_id)
    ok, duplicated, missing = 0, [], []
    for event_id in event_ids:
        count = applied.get(event_id, 0)
        if count == 1:
            ok += 1
        elif count > 1:
            duplicated.append(event_id)
        elif event_id not in preserved:
            missing.append(event_id)
    stray = sum(1 for letter in letters if letter.record.event_id not in poison)
    return _Verdict(ok, duplicated, missing, sum(applied.values()), len(letters), stray)


def run_demo(
    events: int = DEFAULT_EVENTS,
    shards: int = DEFAULT_SHARDS,
    seed: int = DEFAULT_SEED,
    report_path: str | Path | None = None,
    out: TextIO | None = None,
) -> DemoReport:
    """Run the demo, print its progress and result table to ``out``, and return the report.

    ``report_path`` also gets the report as JSON. Raises
    :class:`~kinesis_eo.errors.KinesisEOError` subclasses for what the user
    can fix (moto missing, a report path that cannot be written).
    """
    if events < 1:
        raise ValueError("events must be at least 1")
    if shards < 1:
        raise ValueError("shards must be at least 1")
    out = out if out is not None else sys.stdout
    report_file = Path(report_path) if report_path is not None else None
    if report_file is not None and not report_file.parent.is_dir():
        # Found out now rather than after the run.
        raise ConfigurationError(f"cannot write the report to {report_file}: no such directory")
    _require_moto_server()

    started = time.monotonic()
    rng = random.Random(seed)
    names = _Names.fresh()
    progress = _Progress(out, total=6)
    with contextlib.ExitStack() as stack:
        emulator, why_stock = stack.enter_context(_fast_transactions())
        server = stack.enter_context(MotoServer())
        print(f"kinesis-eo demo: {events} events, {shards} shards, seed {seed}", file=out)
        print(f"emulator: {emulator}, embedded at {server.endpoint_url}", file=out)
        if why_stock is not None:
            print(f"note: stock moto transactions, expect a slow run: {why_stock}", file=out)
        kinesis_producer = _client(server, stack, "kinesis")
        kinesis_consumer = _client(server, stack, "kinesis")
        dynamodb = _client(server, stack, "dynamodb")

        with progress.phase("setup") as lines:
            with _translated(f"the demo's stream and tables on {server.endpoint_url}", "setup"):
                _create_resources(kinesis_consumer, dynamodb, names, shards)
            lines.append(
                f"a stream of {_n(shards, 'shard')}; the ledger (per record, keyed by event id), "
                "checkpoint, effects and dead-letter tables"
            )

        with progress.phase("produce") as lines:
            batch, poison = _events(events, rng)
            event_ids = [e.event_id for e in batch if e.event_id is not None]
            faults = FaultInjector(seed=seed)
            # Whole calls throttled first; a call that gets through may then
            # have entries stored and reported failed (a call suffers one fault).
            faults.throttle("PutRecords", schedule=Probability(PUT_THROTTLE_P))
            faults.fail_stored_entries(entries=STORED_BUT_FAILED_P)
            faults.attach(kinesis_producer)
            producer = Producer(
                kinesis_producer,
                names.stream,
                ProducerConfig(
                    max_batch_records=PRODUCER_BATCH, entry_retry=QUICK, call_retry=PUT_RETRY
                ),
                rng=random.Random(seed),
            )
            put = producer.put(batch)
            faults.detach(kinesis_producer)
            producer_duplicates = faults.injected[FaultKind.ENTRY_STORED_REPORTED_FAILED]
            put_throttled = faults.injected[FaultKind.ERROR_RESPONSE]
            lines.append(
                f"{_n(events, 'event')} ({len(poison)} poison) in "
                f"{_n(put.calls, 'PutRecords request')}"
            )
            lines.append(
                f"injected: {_n(put_throttled, 'throttled call')}; "
                f"{_n(producer_duplicates, 'entry', 'entries')} stored but reported failed "
                "(the producer's retry stored them again)"
            )

        stored = events + producer_duplicates
        read_faults = FaultInjector(seed=seed + 1)
        read_faults.throttle("GetRecords", schedule=Probability(GET_THROTTLE_P))
        read_faults.attach(kinesis_consumer)
        checkpoints = DynamoDBCheckpointStore(names.checkpoints)
        first, second, third = _Tally(), _Tally(), _Tally()
        tallies = [first, second, third]

        # Half the fewest batches the stored records can come in: the crash
        # then always lands before the first consumer could finish.
        crash_after = max(1, math.ceil(stored / READ_BATCH) // 2)
        crashes = 0

        def crash_after_commit(batch: Batch, report: BatchReport) -> None:
            first.add(batch, report)
            if first.batches == crash_after:
                raise _SimulatedCrash

        with progress.phase("consume") as lines:
            try:
                _consumer(kinesis_consumer, dynamodb, names, checkpoints, crash_after_commit).run()
            except _SimulatedCrash:
                crashes += 1
                lines.append(f"consumer 1: {first.summary()}")
                lines.append(
                    f"crash injected after the sink commit of its batch {first.batches}, "
                    "before that batch's checkpoint"
                )
            else:
                lines.append(f"consumer 1: {first.summary()}; finished before its crash")

        with progress.phase("recover") as lines:
            _consumer(kinesis_consumer, dynamodb, names, checkpoints, second.add).run()
            lines.append(f"consumer 2, from the checkpoints: {second.summary()}")
            lines.append(
                "(the producer's second copies, and the batch whose checkpoint the crash lost)"
            )

        with progress.phase("replay") as lines:
            _consumer(kinesis_consumer, dynamodb, names, MemoryCheckpointStore(), third.add).run()
            lines.append(f"consumer 3, from TRIM_HORIZON with no checkpoints: {third.summary()}")
        read_faults.detach(kinesis_consumer)

        with progress.phase("verify") as lines:
            with _translated(f"table {names.effects!r}", "Scan"):
                items = _scan(dynamodb, names.effects)
            applied = {item["id"]["S"]: int(item["applied"]["N"]) for item in items}
            letters = read_dead_letters(dynamodb, names.dead_letters, CONSUMER_GROUP, retry=QUICK)
            verdict = _verify(applied, letters, event_ids, poison)
            intact = verdict.letters - verdict.stray_letters
            lines.append(
                f"{_n(verdict.ok, 'event')} applied once; {verdict.letters} dead-lettered "
                f"({intact} poison, payload intact); {len(verdict.missing)} missing; "
                f"{len(verdict.duplicated)} applied more than once"
            )
            for label, ids in (("missing", verdict.missing), ("duplicated", verdict.duplicated)):
                if ids:
                    shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
                    lines.append(f"{label}: {shown}")

    delivered = sum(t.delivered for t in tallies)
    report = DemoReport(
        produced=events,
        delivered=delivered,
        effects=verdict.effects,
        duplicates_suppressed=sum(t.duplicates for t in tallies),
        dead_lettered=verdict.letters,
        missing=len(verdict.missing),
        duplicated=len(verdict.duplicated),
        producer_duplicates=producer_duplicates,
        crashes=crashes,
        wall_s=round(time.monotonic() - started, 2),
        emulator=emulator,
        seed=seed,
        shards=shards,
        poison=len(poison),
        stored_records=stored,
        redelivered=delivered - stored,
        throttled_calls=put_throttled + read_faults.injected[FaultKind.ERROR_RESPONSE],
        consumer_passes=len(tallies),
        phase_s=progress.times,
    )
    print(file=out)
    print(format_report(report), file=out)
    if report_file is not None:
        try:
            report_file.write_text(report.to_json())
        except OSError as exc:
            raise ConfigurationError(f"cannot write the report to {report_file}: {exc}") from exc
        print(f"report written to {report_file}", file=out)
    out.flush()
    return report


def format_report(report: DemoReport) -> str:
    """The result table, as the CLI prints it."""
    rows = [
        ("produced", f"{report.produced}", f"events, {report.poison} of them poison"),
        (
            "delivered (with redeliveries)",
            f"{report.delivered}",
            f"{report.stored_records} records stored "
            f"({report.producer_duplicates} by producer retries), "
            f"{report.redelivered} redelivered over {_n(report.consumer_passes, 'consumer')}",
        ),
        ("effects applied", f"{report.effects}", "in the sink: one per event that is not poison"),
        ("duplicates suppressed", f"{report.duplicates_suppressed}", "by the ledger"),
        ("dead-lettered", f"{report.dead_lettered}", "with their full payload"),
        ("lost (missing)", f"{report.missing}", ""),
        ("duplicated effects", f"{report.duplicated}", ""),
        ("crashes injected", f"{report.crashes}", "after a sink commit, before the checkpoint"),
        ("throttled calls", f"{report.throttled_calls}", "PutRecords and GetRecords"),
        ("wall time", f"{report.wall_s:.1f} s", ""),
        ("emulator", report.emulator, ""),
    ]
    label_width = max(len(label) for label, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows[:-1])
    lines = []
    for label, value, note in rows:
        cell = value.rjust(value_width) if label != "emulator" else value
        lines.append(f"  {label:<{label_width}}  {cell}  {note}".rstrip())
    verdict = (
        "exactly once: every event applied once or dead-lettered, none lost, none doubled"
        if report.ok
        else f"NOT exactly once: {report.missing} lost, {report.duplicated} applied more than once"
    )
    return "\n".join([*lines, "", verdict])
