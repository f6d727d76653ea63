"""The Lambda adapter on moto: DynamoDB ledger and sink with real conditions and transactions.

Deliveries come from :mod:`kinesis_eo.testing.lambda_esm`, which redelivers as
the event source mapping does (from the lowest reported sequence number of
each shard). The sink's effect is not idempotent (``ADD applied 1``), so an
effect applied twice shows up as ``applied == 2``.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest

from kinesis_eo.aggregation import MAGIC, UserRecord, aggregate
from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.envelope import wrap
from kinesis_eo.errors import ConfigurationError, InvalidRecordError
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import EffectContext, FailurePolicy, update
from kinesis_eo.testing.effects import create_effects_table
from kinesis_eo.testing.lambda_esm import (
    EsmConfig,
    EventSourceMapping,
    FakeContext,
    InvocationOutcome,
    StreamRecord,
    kinesis_event,
    read_stream,
    stream_arn,
)
from lambda_handlers import (
    KinesisHandler,
    LambdaConfig,
    MalformedEventError,
    Ordering,
    SinkKind,
)
from tests import helpers
from tests.helpers import DeadLetterQueue
from tests.streams import make_stream

QUICK = RetryConfig(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.01)
ONE_TRY = FailurePolicy(max_attempts=1)
MODES = [LedgerMode.WATERMARK, LedgerMode.PER_RECORD]


@pytest.fixture
def tables(dynamodb: Any) -> Any:
    create_ledger_table(dynamodb, "ledger")
    create_effects_table(dynamodb, "effects")
    return dynamodb


def effect_id(record: Record) -> str:
    return record.event_id or f"{record.shard_id}/{record.sequence_number}"


def apply_once(record: Record, ctx: EffectContext) -> list[Any]:
    if record.data.startswith(b"POISON"):
        raise ValueError("this record can never be processed")
    return [
        update(
            "effects",
            {"id": effect_id(record)},
            "ADD applied :one SET payload = :p",
            values={":one": 1, ":p": record.data.decode()},
        )
    ]


def ledger(mode: LedgerMode, group: str = "billing") -> Ledger:
    return Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig(group, mode=mode))


def lambda_handler(
    dynamodb: Any,
    mode: LedgerMode,
    handler: Any = apply_once,
    dead_letters: Any = None,
    **config: Any,
) -> KinesisHandler:
    config.setdefault("policy", ONE_TRY)
    return KinesisHandler(
        handler,
        ledger=ledger(mode),
        dead_letters=dead_letters,
        config=LambdaConfig(retry=QUICK, **config),
        dynamodb=dynamodb,
    )


def built(count: int, shard: str = "shardId-000000000000", first: int = 1) -> list[StreamRecord]:
    """Records as a shard holds them, each in an envelope with the event id e-<n>."""
    return [
        StreamRecord(shard, str(n), f"key-{n % 3}", wrap(f"e-{n}", b"event-%d" % n))
        for n in range(first, first + count)
    ]


def produce(kinesis: Any, count: int, poison: frozenset[int] = frozenset()) -> list[str]:
    make_stream(kinesis, "orders", 2)
    return helpers.produce(
        kinesis, "orders", count, ids="e-{i:04d}", data="event-{i}", keys=7, poison=poison
    )


def failures(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


# --- redelivery ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_same_event_delivered_three_times_applies_each_effect_once(
    tables: Any, mode: LedgerMode
) -> None:
    event = kinesis_event(built(30), stream_arn("orders"))
    handler = lambda_handler(tables, mode)

    responses = []
    applied, duplicates = [], []
    for _ in range(3):
        responses.append(handler(event, FakeContext()))
        assert handler.last_invocation is not None
        applied.append(len(handler.last_invocation.report.applied))
        duplicates.append(len(handler.last_invocation.report.duplicates))

    assert helpers.applied(tables) == {f"e-{n}": 1 for n in range(1, 31)}
    assert responses == [{"batchItemFailures": []}] * 3
    assert applied == [30, 0, 0]
    assert duplicates == [0, 30, 30]


@pytest.mark.parametrize("mode", MODES)
def test_partial_retries_after_reported_failures_apply_each_effect_once(
    kinesis: Any, tables: Any, mode: LedgerMode
) -> None:
    ids = produce(kinesis, 120)
    flaky = {"e-0005", "e-0031", "e-0032", "e-0077"}
    flaky_payloads = {b"event-5", b"event-31", b"event-32", b"event-77"}
    failed_once: set[str] = set()

    def fails_on_first_delivery(record: Record, ctx: EffectContext) -> list[Any]:
        if record.event_id in flaky and record.event_id not in failed_once:
            failed_once.add(record.event_id)
            raise ConnectionError("the downstream service hiccuped")
        return apply_once(record, ctx)

    stored = read_stream(kinesis, "orders")
    esm = EventSourceMapping(
        lambda_handler(tables, mode, fails_on_first_delivery),
        stored,
        stream="orders",
        config=EsmConfig(batch_size=25),
    )
    invocations = esm.run()

    assert helpers.applied(tables) == dict.fromkeys(ids, 1)
    partial = [i for i in invocations if i.outcome is InvocationOutcome.PARTIAL_FAILURE]
    flaky_positions = {
        (r.shard_id, r.sequence_number) for r in stored if r.data.endswith(tuple(flaky_payloads))
    }
    assert {(i.shard_id, i.reported[0]) for i in partial} == flaky_positions
    # Each reported from the failed record on: it and the rest of its batch came again.
    assert all(i.reported == i.sequence_numbers[-len(i.reported) :] for i in partial)
    assert all(esm.deliveries[position] >= 2 for position in flaky_positions)
    assert all(i.error is None for i in invocations)


# --- poison records -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_poison_record_is_reported_then_dead_lettered_with_its_payload_and_the_rest_applied(
    kinesis: Any, tables: Any, mode: LedgerMode
) -> None:
    ids = produce(kinesis, 60, poison=frozenset({9}))
    stored = read_stream(kinesis, "orders")
    poison = next(r for r in stored if r.data.endswith(b"POISON-9"))
    dead = DeadLetterQueue()

    esm = EventSourceMapping(
        lambda_handler(tables, mode, dead_letters=dead, max_failed_deliveries=3),
        stored,
        stream="orders",
        config=EsmConfig(batch_size=10),
    )
    invocations = esm.run()

    reporting = [i for i in invocations if poison.sequence_number in i.reported]
    assert len(reporting) == 2  # two deliveries reported it; the third dead-lettered it
    assert all(i.reported[0] == poison.sequence_number for i in reporting)
    assert esm.deliveries[(poison.shard_id, poison.sequence_number)] == 3
    (letter,) = dead.letters
    assert letter.record.data == b"POISON-9"
    assert letter.record.event_id == "e-0009"
    assert letter.reason is DeadLetterReason.PROCESSING_FAILED
    assert helpers.applied(tables) == {i: 1 for i in ids if i != "e-0009"}
    # Delivered again (a replay of the whole stream), it is a duplicate, not a new letter.
    replay = EventSourceMapping(
        lambda_handler(tables, mode, dead_letters=dead), stored, stream="orders"
    )
    assert all(not i.reported for i in replay.run())
    assert len(dead.letters) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_record_whose_data_is_not_base64_is_dead_lettered_and_the_batch_goes_on(
    tables: Any, mode: LedgerMode
) -> None:
    event = kinesis_event(built(5), stream_arn("orders"))
    event["Records"][2]["kinesis"]["data"] = "not base64!"
    dead = DeadLetterQueue()
    handler = lambda_handler(tables, mode, dead_letters=dead)

    first = handler(event, FakeContext())
    again = handler(event, FakeContext())

    assert failures(first) == failures(again) == []
    (letter,) = dead.letters
    assert letter.reason is DeadLetterReason.UNDECODABLE
    assert letter.record.data == b"not base64!"
    assert letter.record.sequence_number == "3"
    assert helpers.applied(tables) == {"e-1": 1, "e-2": 1, "e-4": 1, "e-5": 1}


@pytest.mark.parametrize("mode", MODES)
def test_a_corrupt_kpl_aggregate_is_dead_lettered_in_its_turn_and_once(
    tables: Any, mode: LedgerMode
) -> None:
    shard = "shardId-000000000000"
    corrupt = MAGIC + b"\x0a\xff not a protobuf" + bytes(16)
    records = [
        StreamRecord(shard, "1", "p", wrap("e-1", b"one")),
        StreamRecord(shard, "2", "p", wrap("e-2", b"two")),
        StreamRecord(shard, "3", "p", corrupt),
        StreamRecord(shard, "4", "p", wrap("e-4", b"four")),
    ]
    flaky = {"e-2"}

    def fails_once(record: Record, ctx: EffectContext) -> list[Any]:
        if record.event_id in flaky:
            flaky.clear()
            raise ConnectionError("try again")
        return apply_once(record, ctx)

    dead = DeadLetterQueue()
    handler = lambda_handler(tables, mode, fails_once, dead_letters=dead)
    first = handler(kinesis_event(records, stream_arn("orders")), FakeContext())
    letters_after_first = len(dead.letters)
    again = handler(kinesis_event(records[1:], stream_arn("orders")), FakeContext())
    replay = handler(kinesis_event(records, stream_arn("orders")), FakeContext())

    # Record 2 failed first: the corrupt record after it waits its turn.
    assert failures(first) == ["2", "3", "4"]
    assert letters_after_first == 0
    assert failures(again) == failures(replay) == []
    (letter,) = dead.letters
    assert letter.reason is DeadLetterReason.UNDECODABLE
    assert letter.record.data == corrupt
    assert helpers.applied(tables) == {"e-1": 1, "e-2": 1, "e-4": 1}


# --- deadline ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("mode", MODES)
def test_a_context_with_little_remaining_time_stops_early_and_reports_the_rest(
    tables: Any, mode: LedgerMode
) -> None:
    clock = Clock()
    records = built(20)
    event = kinesis_event(records, stream_arn("orders"))

    def takes_a_second(record: Record, ctx: EffectContext) -> list[Any]:
        clock.now += 1.0
        return apply_once(record, ctx)

    handler = lambda_handler(tables, mode, takes_a_second, deadline_margin=timedelta(seconds=3))
    # 10 s left, 3 s kept: eight records start, the ninth would start with 2 s left.
    response = handler(event, FakeContext(timedelta(seconds=10), clock))

    assert failures(response) == [str(n) for n in range(9, 21)]
    assert handler.last_invocation is not None
    assert handler.last_invocation.stopped_for_deadline
    assert helpers.applied(tables) == {f"e-{n}": 1 for n in range(1, 9)}
    # The ESM's next delivery starts at the first reported record, with a fresh deadline.
    rest = kinesis_event(records[8:], stream_arn("orders"))
    assert failures(handler(rest, FakeContext(timedelta(seconds=60), clock))) == []
    assert helpers.applied(tables) == {f"e-{n}": 1 for n in range(1, 21)}


def test_an_invocation_that_starts_inside_the_margin_is_a_clear_error(tables: Any) -> None:
    handler = lambda_handler(tables, LedgerMode.WATERMARK, deadline_margin=timedelta(seconds=5))

    with pytest.raises(ConfigurationError, match=r"deadline_margin .* Timeout"):
        handler(kinesis_event(built(2), stream_arn("orders")), FakeContext(timedelta(seconds=3)))

    assert helpers.applied(tables) == {}


# --- KPL aggregates ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_kpl_aggregate_in_an_event_is_deaggregated_and_each_user_record_applied_once(
    tables: Any, mode: LedgerMode
) -> None:
    users = [UserRecord(f"key-{i}", wrap(f"u-{i}", b"user-%d" % i)) for i in range(6)]
    packed = aggregate(users)
    records = [
        StreamRecord("shardId-000000000000", "1", "plain", wrap("p-1", b"plain-1")),
        StreamRecord("shardId-000000000000", "2", packed.partition_key, packed.data),
        StreamRecord("shardId-000000000000", "3", "plain", wrap("p-3", b"plain-3")),
    ]
    fail_u3 = {"u-3"}

    def fails_once_inside_the_aggregate(record: Record, ctx: EffectContext) -> list[Any]:
        if record.event_id in fail_u3:
            fail_u3.clear()
            raise ConnectionError("try again")
        return apply_once(record, ctx)

    handler = lambda_handler(tables, mode, fails_once_inside_the_aggregate)
    first = handler(kinesis_event(records, stream_arn("orders")), FakeContext())
    # The aggregate's sequence number is reported: the ESM delivers it whole again.
    assert failures(first) == ["2", "3"]
    again = handler(kinesis_event(records[1:], stream_arn("orders")), FakeContext())
    third = handler(kinesis_event(records, stream_arn("orders")), FakeContext())

    assert failures(again) == failures(third) == []
    assert handler.last_invocation is not None
    assert len(handler.last_invocation.report.duplicates) == 8
    assert helpers.applied(tables) == {"p-1": 1, "p-3": 1, **{f"u-{i}": 1 for i in range(6)}}


# --- order by partition key, parallelization ---------------------------------------------------


def test_partition_key_ordering_keeps_order_within_a_key_while_other_keys_go_on(
    tables: Any,
) -> None:
    shard = "shardId-000000000000"
    records = [
        StreamRecord(shard, str(n), key, wrap(f"{key}-{n}", b"%s-%d" % (key.encode(), n)))
        for n, key in enumerate(["a", "b", "a", "c", "b", "a", "c", "b", "a", "d"], start=1)
    ]
    done: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()
    a3_failures = [1]

    def external(record: Record, ctx: EffectContext) -> None:
        if record.event_id == "a-3" and a3_failures:
            a3_failures.pop()
            raise RuntimeError("a-3 cannot be applied yet")  # the record's fault, not an outage
        with lock:
            done[record.partition_key].append(int(record.sequence_number))

    handler = KinesisHandler(
        external,
        ledger=ledger(LedgerMode.PER_RECORD),
        config=LambdaConfig(
            sink=SinkKind.IDEMPOTENT_KEY,
            ordering=Ordering.PARTITION_KEY,
            max_concurrency=4,
            policy=ONE_TRY,
            retry=QUICK,
        ),
        dynamodb=tables,
    )
    esm = EventSourceMapping(handler, records, stream="orders")
    invocations = esm.run()

    # Key "a" stopped at record 3 and reported it and its later records only.
    assert invocations[0].reported == ["3", "6", "9"]
    assert [i.outcome for i in invocations] == [
        InvocationOutcome.PARTIAL_FAILURE,
        InvocationOutcome.SUCCESS,
    ]
    assert dict(done) == {"a": [1, 3, 6, 9], "b": [2, 5, 8], "c": [4, 7], "d": [10]}


def test_parallelization_factor_above_one_refuses_a_watermark_ledger(tables: Any) -> None:
    with pytest.raises(ConfigurationError) as refused:
        KinesisHandler(
            apply_once,
            ledger=ledger(LedgerMode.WATERMARK),
            config=LambdaConfig(parallelization_factor=2),
            dynamodb=tables,
        )

    message = str(refused.value)
    assert "parallelization_factor=2" in message
    assert "ParallelizationFactor" in message
    assert "LedgerMode.PER_RECORD" in message
    KinesisHandler(
        apply_once,
        ledger=ledger(LedgerMode.PER_RECORD),
        config=LambdaConfig(parallelization_factor=2),
        dynamodb=tables,
    )


def test_partition_key_ordering_refuses_a_watermark_ledger(tables: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"Ordering\.PARTITION_KEY"):
        KinesisHandler(
            apply_once,
            ledger=ledger(LedgerMode.WATERMARK),
            config=LambdaConfig(ordering=Ordering.PARTITION_KEY),
            dynamodb=tables,
        )


def test_with_parallelization_factor_three_a_per_record_ledger_applies_each_effect_once(
    kinesis: Any, tables: Any
) -> None:
    ids = produce(kinesis, 90, poison=frozenset({40}))
    dead = DeadLetterQueue()
    flaky = {"e-0003", "e-0050"}

    def flaky_apply(record: Record, ctx: EffectContext) -> list[Any]:
        if record.event_id in flaky:
            flaky.discard(record.event_id)
            raise ConnectionError("try again")
        return apply_once(record, ctx)

    esm = EventSourceMapping(
        lambda_handler(
            tables,
            LedgerMode.PER_RECORD,
            flaky_apply,
            dead_letters=dead,
            parallelization_factor=3,
            max_failed_deliveries=2,
        ),
        read_stream(kinesis, "orders"),
        stream="orders",
        config=EsmConfig(batch_size=7, parallelization_factor=3),
    )
    esm.run()

    assert helpers.applied(tables) == {i: 1 for i in ids if i != "e-0040"}
    assert [letter.record.event_id for letter in dead.letters] == ["e-0040"]


# --- the event itself ----------------------------------------------------------------------------


def _event_with(change: Any) -> Any:
    event = kinesis_event(built(2), stream_arn("orders"))
    change(event)
    return event


@pytest.mark.parametrize(
    ("event", "says"),
    [
        (["not", "an", "object"], "an object with a 'Records' list"),
        ({"records": []}, "no 'Records' list"),
        (
            _event_with(lambda e: e["Records"][1].update(eventSource="aws:sqs")),
            "record 1 of the event comes from 'aws:sqs'",
        ),
        (_event_with(lambda e: e["Records"][0].pop("kinesis")), "no 'kinesis' object"),
        (
            _event_with(lambda e: e["Records"][0]["kinesis"].update(sequenceNumber="12a")),
            "decimal digits",
        ),
        (
            _event_with(lambda e: e["Records"][1].update(eventSourceARN="arn:aws:sqs:x:1:q")),
            "not a Kinesis stream ARN",
        ),
        (_event_with(lambda e: e["Records"][0].update(eventID="no-colon")), "eventID"),
        (
            _event_with(lambda e: e["Records"][1]["kinesis"].update(sequenceNumber="1")),
            "sequence number 1 of shardId-000000000000 twice",
        ),
    ],
)
def test_a_malformed_event_is_a_clear_error(tables: Any, event: Any, says: str) -> None:
    handler = lambda_handler(tables, LedgerMode.WATERMARK)

    with pytest.raises(MalformedEventError, match=says) as raised:
        handler(event, FakeContext())

    assert isinstance(raised.value, InvalidRecordError)
    assert helpers.applied(tables) == {}


def test_an_empty_event_reports_nothing(tables: Any) -> None:
    handler = lambda_handler(tables, LedgerMode.WATERMARK)

    assert handler({"Records": []}, FakeContext()) == {"batchItemFailures": []}


# --- claims ---------------------------------------------------------------------------------------


class ProcessDied(BaseException):
    """Not an Exception: the Lambda runtime killing the invocation mid-effect."""


def test_a_claim_left_by_a_dead_invocation_expires_after_the_configured_time(
    tables: Any,
) -> None:
    sent: list[str] = []
    die = [True]

    def charge(record: Record, ctx: EffectContext) -> None:
        sent.append(str(record.event_id))
        if die:
            die.pop()
            raise ProcessDied  # after the effect, before "complete"

    dead = DeadLetterQueue()
    event = kinesis_event(built(2), stream_arn("orders"))

    def handler() -> KinesisHandler:
        return KinesisHandler(
            charge,
            ledger=ledger(LedgerMode.PER_RECORD),
            dead_letters=dead,
            config=LambdaConfig(sink=SinkKind.CLAIM, claim_for=timedelta(seconds=0.3), retry=QUICK),
            dynamodb=tables,
        )

    with pytest.raises(ProcessDied):
        handler()(event, FakeContext())
    # The next invocation waits out the dead one's claim, then quarantines the record:
    # whether its charge happened nobody can tell, so it is not charged again.
    response = handler()(event, FakeContext())

    assert failures(response) == []
    assert sent == ["e-1", "e-2"]
    (letter,) = dead.letters
    assert letter.reason is DeadLetterReason.CLAIM_EXPIRED
    assert letter.record.event_id == "e-1"
