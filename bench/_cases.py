"""The benchmark's cases: kinesis_eo's three sinks, Powertools, a naive ledger, and a plain read.

Every case consumes the same stream from TRIM_HORIZON through the same
reading loop (:class:`kinesis_eo.consumer.Consumer` with the same
:class:`ReaderConfig`), twice: a first pass, where every record is new, and a
replay with fresh checkpoints and a fresh ledger object (a restarted process),
where every record is a duplicate. Only what happens to a batch differs:

- ``watermark``, ``per_record``: :class:`TransactionalSink`; the handler
  returns the sink write, committed with the ledger mark in one transaction.
- ``keyed_watermark``: :class:`IdempotentKeySink` on a watermark ledger; the
  handler writes the sink item itself with a condition on
  ``ctx.idempotency_key`` (the sink deduplicates by that key), and one
  watermark write marks the batch.
- ``keyed_watermark_lanes``: the same with ``lanes=16`` (``--lanes 16``):
  a batch's partition keys applied 16 at once.
- ``watermark_worker``: the watermark case run by :class:`Worker` on its
  defaults (leases, read-ahead: the next GetRecords runs while a batch
  commits) instead of the single-process :class:`Consumer`; and
  ``watermark_worker_no_read_ahead``, the same with ``read_ahead=False``.
- ``claim``: :class:`ClaimSink` (per-record ledger); the same handler.
- ``powertools``: each batch becomes a Kinesis Lambda event and goes through
  Powertools' ``process_partial_response`` with a ``BatchProcessor`` for
  Kinesis, whose record handler is an ``idempotent_function`` on
  Powertools' DynamoDB persistence layer, keyed by the event id in the
  payload. Positions stay with the (simulated) event source mapping, so it
  writes no checkpoints.
- ``naive``: a conditional ``PutItem`` of a ledger item, then the sink write,
  per record; a checkpoint per batch.
- ``read_only``: reads, does nothing with the records: the speed of reading
  with no dedup at all.

Every case writes the same sink item per event, ``ADD applied :one``, so an
effect applied twice shows up as ``applied = 2`` when the bench checks the
sink table.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from kinesis_eo.checkpoint import (
    CheckpointStore,
    DynamoDBCheckpointStore,
    MemoryCheckpointStore,
    create_checkpoint_table,
)
from kinesis_eo.consumer import Consumer, ConsumerConfig, ConsumerStats
from kinesis_eo.flow import Invoke
from kinesis_eo.leases import (
    DynamoDBLeaseStore,
    LeaseConfig,
    LeaseManager,
    LeaseStore,
    create_lease_table,
)
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.producer import Event, Producer
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.sinks import (
    BatchReport,
    ClaimSink,
    EffectContext,
    IdempotentKeySink,
    TransactionalSink,
    update,
)
from kinesis_eo.sinks.base import FlowRunner, Gate
from kinesis_eo.testing.effects import applied_counts, create_effects_table
from kinesis_eo.testing.lambda_esm import FakeContext, StreamRecord, kinesis_event
from kinesis_eo.worker import Worker, WorkerConfig

SINK_UPDATE = "ADD applied :one SET payload = :p"
LANES = 16  # as the latency model's lanes variant (``--lanes 16``)
_COUNTING = threading.Lock()
POWERTOOLS_KEY = "powertools_json(powertools_base64(kinesis.data)).id"


@dataclass
class Env:
    """What every case shares: the clients, the stream and how it is read."""

    kinesis: Any
    dynamodb: Any
    stream: str
    records: int
    batch: int

    def reader_config(self) -> ReaderConfig:
        # No pacing: AWS's 5 reads/s per shard would bound every case alike, and
        # the emulator has no such limit. Everything else is the default.
        return ReaderConfig(max_records=self.batch, min_read_interval_s=0.0, idle_interval_s=0.0)

    def consumer_config(self, checkpoint_interval_s: float = 5.0, lanes: int = 1) -> ConsumerConfig:
        return ConsumerConfig(
            reader=self.reader_config(),
            stop_when_caught_up=True,
            checkpoint_interval_s=checkpoint_interval_s,
            lanes=lanes,
        )


def payload(index: int) -> tuple[str, bytes]:
    event_id = f"evt-{index:07d}"
    body = {"id": event_id, "account": f"acct-{index % 97:02d}", "amount_cents": 100 + index % 900}
    return event_id, json.dumps(body, separators=(",", ":")).encode()


def produce(env: Env) -> list[str]:
    """``env.records`` events with ids, over every shard; their ids."""
    events = []
    for index in range(env.records):
        event_id, data = payload(index)
        events.append(Event(data=data, partition_key=f"pk-{index}", event_id=event_id))
    Producer(env.kinesis, env.stream).put(events)
    return [e.event_id for e in events if e.event_id is not None]


def sink_update_request(table: str, record: Record) -> dict[str, Any]:
    """The sink write as a low-level ``UpdateItem`` request (the cases that write it themselves)."""
    return {
        "TableName": table,
        "Key": {"id": {"S": str(record.event_id)}},
        "UpdateExpression": SINK_UPDATE,
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":p": {"S": record.data.decode()}},
    }


@dataclass
class PassCounters:
    """What a case counts itself during a pass (the bench counts AWS calls)."""

    handler_calls: int = 0
    sink_calls: int = 0  # DynamoDB calls the handler made to the sink table itself


@dataclass
class Case:
    """One way of processing the stream. Subclasses say how; :meth:`run_pass` is shared."""

    name: str
    title: str
    env: Env
    counters: PassCounters = field(default_factory=PassCounters)
    applies_effects: ClassVar[bool] = True

    @property
    def sink_table(self) -> str:
        return f"{self.name}-sink"

    def setup(self) -> None:
        """Create what the case needs (not timed)."""
        if self.applies_effects:
            create_effects_table(self.env.dynamodb, self.sink_table)
        for number in (1, 2):
            create_checkpoint_table(self.env.dynamodb, self.checkpoint_table(number))

    def checkpoint_table(self, number: int) -> str:
        return f"{self.name}-checkpoints-{number}"

    def consumer(self, number: int) -> Consumer:
        raise NotImplementedError

    def run_pass(self, number: int) -> ConsumerStats:
        """Consume the whole stream; ``number`` 1 is the first pass, 2 the replay."""
        self.counters = PassCounters()
        return self.consumer(number).run()

    def effects(self) -> dict[str, int]:
        return applied_counts(self.env.dynamodb, self.sink_table) if self.applies_effects else {}


# --- kinesis_eo ---------------------------------------------------------------------------------


class TransactionalCase(Case):
    mode: LedgerMode = LedgerMode.WATERMARK

    @property
    def ledger_table(self) -> str:
        return f"{self.name}-ledger"

    def setup(self) -> None:
        super().setup()
        create_ledger_table(self.env.dynamodb, self.ledger_table)

    def ledger(self) -> Ledger:
        # A new Ledger object per pass: the replay is a restarted process that
        # knows nothing but what the table holds.
        return Ledger(
            DynamoDBLedgerStore(self.ledger_table),
            LedgerConfig(consumer_group="bench", mode=self.mode),
        )

    def handle(self, record: Record, ctx: EffectContext) -> list[Any]:
        with _COUNTING:  # a Worker runs shards in threads of their own
            self.counters.handler_calls += 1
        return [
            update(
                self.sink_table,
                {"id": record.event_id},
                SINK_UPDATE,
                values={":one": 1, ":p": record.data.decode()},
            )
        ]

    def consumer(self, number: int) -> Consumer:
        env = self.env
        sink = TransactionalSink(self.ledger(), self.handle)
        checkpoints = DynamoDBCheckpointStore(self.checkpoint_table(number))
        return Consumer(
            env.kinesis, env.dynamodb, env.stream, sink, checkpoints, env.consumer_config()
        )


class WatermarkCase(TransactionalCase):
    mode = LedgerMode.WATERMARK


class PerRecordCase(TransactionalCase):
    mode = LedgerMode.PER_RECORD


class KeyedWatermarkCase(TransactionalCase):
    """The idempotent-key sink on a watermark ledger: the handler's own conditional write."""

    mode = LedgerMode.WATERMARK

    lanes: ClassVar[int] = 1

    def act(self, record: Record, ctx: EffectContext) -> None:
        with _COUNTING:  # lanes run this from several threads
            self.counters.handler_calls += 1
            self.counters.sink_calls += 1
        request = sink_update_request(self.sink_table, record)
        # The sink deduplicates by the idempotency key: a repeated call changes nothing.
        request["UpdateExpression"] += ", idempotency_key = :k"
        request["ExpressionAttributeValues"][":k"] = {"S": ctx.idempotency_key}
        request["ConditionExpression"] = "attribute_not_exists(idempotency_key)"
        # Done before, under this key: nothing changes.
        with contextlib.suppress(self.env.dynamodb.exceptions.ConditionalCheckFailedException):
            self.env.dynamodb.update_item(**request)

    def sink(self) -> Any:
        return IdempotentKeySink(self.ledger(), self.act)

    def consumer(self, number: int) -> Consumer:
        env = self.env
        sink = self.sink()
        checkpoints = DynamoDBCheckpointStore(self.checkpoint_table(number))
        config = env.consumer_config(lanes=self.lanes)
        return Consumer(env.kinesis, env.dynamodb, env.stream, sink, checkpoints, config)


class KeyedWatermarkLanesCase(KeyedWatermarkCase):
    """The same, with ``lanes=LANES``: a batch's partition keys applied 16 at once."""

    lanes = LANES


class ClaimCase(KeyedWatermarkCase):
    mode = LedgerMode.PER_RECORD

    def sink(self) -> Any:
        return ClaimSink(self.ledger(), self.act)


class WorkerWatermarkCase(WatermarkCase):
    """The watermark case run by :class:`Worker` on its defaults: leases, and read-ahead.

    Leases are taken every 0.1 s so that a pass is not mostly a cold start; the
    worker stops once every record of the stream came through a commit.
    """

    read_ahead: ClassVar[bool] = True

    def lease_table(self, number: int) -> str:
        return f"{self.name}-leases-{number}"

    def setup(self) -> None:
        super().setup()
        for number in (1, 2):
            create_lease_table(self.env.dynamodb, self.lease_table(number))

    def lease_store(self, table: str) -> LeaseStore:
        return DynamoDBLeaseStore(table)

    def committed(self, records: int) -> None:
        """Called under a lock after each commit of ``records`` records (a hook for timing)."""

    def run_pass(self, number: int) -> ConsumerStats:
        self.counters = PassCounters()
        env = self.env
        # The default failover (10 s): a loaded machine renews late, and a lease lost in the
        # middle of a pass costs a take; takes every 0.1 s so the cold start is short.
        leases = LeaseConfig(self.lease_table(number), take_interval_s=0.1)
        config = WorkerConfig(leases=leases, reader=env.reader_config(), read_ahead=self.read_ahead)
        seen = [0]

        def after_commit(batch: Any, report: BatchReport) -> None:
            with _COUNTING:
                seen[0] += len(batch.records)
                self.committed(len(batch.records))
                if seen[0] >= env.records:
                    worker.stop()

        sink = TransactionalSink(self.ledger(), self.handle)
        manager = LeaseManager(self.lease_store(leases.table_name), leases, f"bench-{number}")
        worker = Worker(
            env.kinesis, env.dynamodb, env.stream, sink, manager, config, after_commit=after_commit
        )
        return worker.run()


class WorkerNoReadAheadCase(WorkerWatermarkCase):
    """The Worker with ``read_ahead=False`` (``--no-read-ahead``): what read-ahead adds."""

    read_ahead = False


# --- peers ------------------------------------------------------------------------------------


BatchFunction = Callable[[list[Record]], tuple[list[Record], list[Record]]]


class FunctionSink:
    """Hands each batch to a plain function (applied, duplicates): how the peers plug in."""

    def __init__(self, function: BatchFunction) -> None:
        self.function = function

    def bind(self, run_flow: FlowRunner) -> None:
        """Nothing to bind: the function runs inside :meth:`process`."""

    def process(
        self, records: Sequence[Record], guards: Sequence[Any] = (), gate: Gate | None = None
    ) -> Generator[Any, Any, BatchReport]:
        applied, duplicates = yield Invoke(self.function, (list(records),))
        return BatchReport(applied=applied, duplicates=duplicates)


class ReadOnlyCase(Case):
    """Reads the stream and drops the records: no dedup, no effect, no checkpoint."""

    applies_effects = False

    def setup(self) -> None:
        pass

    def consumer(self, number: int) -> Consumer:
        env = self.env
        sink = FunctionSink(lambda records: ([], []))
        return Consumer(
            env.kinesis,
            env.dynamodb,
            env.stream,
            sink,
            MemoryCheckpointStore(),
            env.consumer_config(),
        )


class NaiveCase(Case):
    """A conditional PutItem ledger item, then the sink write, per record; checkpoint per batch.

    Marks before the effect: a crash between the two loses the effect
    (at most once). Nothing batches, nothing is atomic.
    """

    @property
    def ledger_table(self) -> str:
        return f"{self.name}-ledger"

    def setup(self) -> None:
        super().setup()
        create_effects_table(self.env.dynamodb, self.ledger_table, key="pk")

    def process(self, records: list[Record]) -> tuple[list[Record], list[Record]]:
        dynamodb = self.env.dynamodb
        applied, duplicates = [], []
        for record in records:
            try:
                dynamodb.put_item(
                    TableName=self.ledger_table,
                    Item={"pk": {"S": str(record.event_id)}},
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except dynamodb.exceptions.ConditionalCheckFailedException:
                duplicates.append(record)
                continue
            self.counters.handler_calls += 1
            self.counters.sink_calls += 1
            dynamodb.update_item(**sink_update_request(self.sink_table, record))
            applied.append(record)
        return applied, duplicates

    def consumer(self, number: int) -> Consumer:
        env = self.env
        checkpoints: CheckpointStore = DynamoDBCheckpointStore(self.checkpoint_table(number))
        return Consumer(
            env.kinesis,
            env.dynamodb,
            env.stream,
            FunctionSink(self.process),
            checkpoints,
            env.consumer_config(checkpoint_interval_s=0.0),
        )


def lambda_event(records: Sequence[Record], arn: str) -> dict[str, Any]:
    """A Kinesis event as the event source mapping hands it to a Lambda function.

    ``data`` is the payload as its producer wrote it (a Powertools user's
    producer writes no kinesis_eo envelope).
    """
    now = datetime.now(UTC)
    stored = [
        StreamRecord(r.shard_id, r.sequence_number, r.partition_key, r.data, r.arrival_time or now)
        for r in records
    ]
    return kinesis_event(stored, arn)


class PowertoolsCase(Case):
    """Powertools for AWS Lambda: ``idempotent_function`` inside ``process_partial_response``."""

    @property
    def idempotency_table(self) -> str:
        return f"{self.name}-idempotency"

    def setup(self) -> None:
        create_effects_table(self.env.dynamodb, self.idempotency_table)
        create_effects_table(self.env.dynamodb, self.sink_table)
        summary = self.env.kinesis.describe_stream_summary(StreamName=self.env.stream)
        self.stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]

    def consumer(self, number: int) -> Consumer:
        from aws_lambda_powertools.utilities.batch import (
            BatchProcessor,
            EventType,
            process_partial_response,
        )
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        env = self.env
        # As a Lambda function sets them up: once per container, at import.
        persistence = DynamoDBPersistenceLayer(
            table_name=self.idempotency_table, boto3_client=env.dynamodb
        )
        config = IdempotencyConfig(event_key_jmespath=POWERTOOLS_KEY)
        processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
        ran: list[str] = []

        @idempotent_function(
            data_keyword_argument="record", persistence_store=persistence, config=config
        )
        def record_handler(record: Any) -> None:
            self.counters.handler_calls += 1
            self.counters.sink_calls += 1
            order = json.loads(record.kinesis.data_as_text())
            env.dynamodb.update_item(
                TableName=self.sink_table,
                Key={"id": {"S": order["id"]}},
                UpdateExpression=SINK_UPDATE,
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":p": {"S": record.kinesis.data_as_text()},
                },
            )
            ran.append(order["id"])

        # As Lambda gives it: 15 minutes left, the longest a function may run.
        context = FakeContext(timedelta(minutes=15), function_name="kinesis-eo-bench")

        def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            config.register_lambda_context(context)
            return process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )

        def invoke(records: list[Record]) -> tuple[list[Record], list[Record]]:
            ran.clear()
            response = lambda_handler(lambda_event(records, self.stream_arn), context)
            if response.get("batchItemFailures"):
                raise RuntimeError(f"Powertools reported failures: {response}")
            done = set(ran)
            applied = [r for r in records if r.event_id in done]
            return applied, [r for r in records if r.event_id not in done]

        return Consumer(
            env.kinesis,
            env.dynamodb,
            env.stream,
            FunctionSink(invoke),
            MemoryCheckpointStore(),
            env.consumer_config(),
        )


# name -> (class, title), in the order they run.
CASES: dict[str, tuple[type[Case], str]] = {
    "read_only": (ReadOnlyCase, "read only, no dedup (baseline)"),
    "watermark": (WatermarkCase, "kinesis_eo watermark, transactional sink"),
    "watermark_worker": (
        WorkerWatermarkCase,
        "kinesis_eo watermark, Worker (leases, read-ahead)",
    ),
    "watermark_worker_no_read_ahead": (
        WorkerNoReadAheadCase,
        "kinesis_eo watermark, Worker, --no-read-ahead",
    ),
    "per_record": (PerRecordCase, "kinesis_eo per-record (event ids), transactional"),
    "keyed_watermark": (KeyedWatermarkCase, "kinesis_eo watermark, idempotent-key sink"),
    "keyed_watermark_lanes": (
        KeyedWatermarkLanesCase,
        "kinesis_eo watermark, idempotent-key, 16 lanes",
    ),
    "claim": (ClaimCase, "kinesis_eo claim/act/complete, idempotent-key sink"),
    "powertools": (PowertoolsCase, "Powertools idempotent_function + BatchProcessor"),
    "naive": (NaiveCase, "naive: conditional PutItem ledger + sink put"),
}
