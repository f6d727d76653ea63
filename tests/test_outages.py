"""An outage pauses the shard and dead-letters nothing; only a record's own failure is a letter.

"The world is down" (the sink's table throttled, an endpoint unreachable, a
handler's call timing out) and "this record is bad" must not be confused: a
brief outage used to dead-letter every record in flight after three tries in
about three seconds. Each runtime is shown here on moto: the consumer with each
sink, the worker with its health file, the Lambda handler.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kinesis_eo import cli
from kinesis_eo.checkpoint import MemoryCheckpointStore
from kinesis_eo.consumer import Consumer, ConsumerConfig, ConsumerStats
from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.errors import AccessDeniedError, SinkUnavailableError
from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    ExpiredClaimPolicy,
    Ledger,
    LedgerConfig,
    LedgerMode,
)
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.sinks import (
    ClaimSink,
    EffectContext,
    FailurePolicy,
    IdempotentKeySink,
    OutageBackoff,
    TransactionalSink,
    update,
)
from kinesis_eo.testing.fakes import MemoryDeadLetters
from kinesis_eo.testing.faults import FaultInjector, NextCalls
from kinesis_eo.testing.lambda_esm import EventSourceMapping, read_stream
from kinesis_eo.worker import Worker
from lambda_handlers import KinesisHandler, LambdaConfig, SinkKind
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import CONFIG, LEASES, QUICK, create_tables, wait_for

POLICY = FailurePolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.01)
BACKOFF = OutageBackoff(initial_s=0.01, max_s=0.05)


def ledger(mode: LedgerMode = LedgerMode.WATERMARK) -> Ledger:
    return Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig("app", mode))


def bump(record: Record, ctx: EffectContext) -> list[Any]:
    return [update("effects", {"id": record.event_id}, "ADD applied :one", values={":one": 1})]


def consume(kinesis: Any, dynamodb: Any, sink: Any) -> ConsumerStats:
    config = ConsumerConfig(
        reader=ReaderConfig(max_records=50, min_read_interval_s=0.0, idle_interval_s=0.0),
        retry=QUICK,
        stop_when_caught_up=True,
        outage_backoff=BACKOFF,
    )
    return Consumer(kinesis, dynamodb, "orders", sink, MemoryCheckpointStore(), config).run()


class Outage:
    """A handler's downstream that is down for the first ``calls`` calls from ``first_id`` on."""

    def __init__(self, error: BaseException, first_id: str, calls: int) -> None:
        self.error = error
        self.first_id = first_id
        self.left = calls
        self.calls: dict[str, int] = {}

    def down(self, record: Record) -> bool:
        return str(record.event_id) >= self.first_id and self.left > 0

    def __call__(self, record: Record, ctx: EffectContext) -> None:
        key = str(record.event_id)
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.down(record):
            self.left -= 1
            raise self.error


@pytest.fixture
def stream(kinesis: Any, dynamodb: Any) -> list[str]:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    return produce(kinesis, "orders", 40)


def test_a_throttled_sink_table_pauses_the_shard_and_dead_letters_nothing(
    kinesis: Any, dynamodb: Any, stream: list[str]
) -> None:
    dead = MemoryDeadLetters()
    faults = FaultInjector().attach(dynamodb)
    # Far more throttled transactions than one call's retries: an outage, not a blip.
    faults.throttle("TransactWriteItems", schedule=NextCalls(4 * QUICK.max_attempts))

    stats = consume(kinesis, dynamodb, TransactionalSink(ledger(), bump, dead_letters=dead))

    assert dead.letters == []
    assert applied(dynamodb) == dict.fromkeys(stream, 1)
    assert stats.outage_pauses >= 4
    assert stats.dead_lettered == 0


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("the service reset the connection"),
        TimeoutError("the service did not answer"),
        ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Put"),
        SinkUnavailableError("the search cluster is red"),
    ],
    ids=["connection", "timeout", "throttled-aws-call", "sink-unavailable"],
)
def test_a_keyed_handlers_outage_pauses_at_its_record_and_keeps_what_came_before(
    kinesis: Any, dynamodb: Any, stream: list[str], error: BaseException
) -> None:
    dead = MemoryDeadLetters()
    outage = Outage(error, "e-00010", calls=7)
    sink = IdempotentKeySink(ledger(), outage, policy=POLICY, dead_letters=dead)

    stats = consume(kinesis, dynamodb, sink)

    assert dead.letters == []
    assert stats.applied == 40
    assert stats.outage_pauses == 7
    # What came before the outage was marked, so it was not called again.
    assert all(outage.calls[i] == 1 for i in stream[:10])
    assert outage.calls["e-00010"] == 8


def test_a_record_that_fails_for_itself_is_still_dead_lettered_after_its_tries(
    kinesis: Any, dynamodb: Any, stream: list[str]
) -> None:
    dead = MemoryDeadLetters()
    outage = Outage(ValueError("no such customer"), "e-00010", calls=POLICY.max_attempts)

    stats = consume(
        kinesis, dynamodb, IdempotentKeySink(ledger(), outage, policy=POLICY, dead_letters=dead)
    )

    ((letter),) = dead.letters
    assert letter.reason is DeadLetterReason.PROCESSING_FAILED
    assert letter.record.event_id == "e-00010"
    assert (stats.applied, stats.outage_pauses) == (39, 0)


def test_a_denied_call_in_a_handler_stops_the_shard_without_a_letter(
    kinesis: Any, dynamodb: Any, stream: list[str]
) -> None:
    dead = MemoryDeadLetters()
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Put")
    outage = Outage(denied, "e-00000", calls=1)

    with pytest.raises(AccessDeniedError, match="the handler's sink"):
        consume(kinesis, dynamodb, IdempotentKeySink(ledger(), outage, dead_letters=dead))
    assert dead.letters == []


def test_a_claim_sink_gives_its_claim_back_in_an_outage_instead_of_quarantining_it(
    kinesis: Any, dynamodb: Any, stream: list[str]
) -> None:
    dead = MemoryDeadLetters()
    outage = Outage(TimeoutError("the mail server timed out"), "e-00005", calls=5)
    sink = ClaimSink(
        ledger(LedgerMode.PER_RECORD),
        outage,
        claim_for=timedelta(minutes=10),
        expired_claims=ExpiredClaimPolicy.QUARANTINE,
        policy=POLICY,
        dead_letters=dead,
    )

    stats = consume(kinesis, dynamodb, sink)

    assert dead.letters == []
    assert stats.applied == 40
    assert outage.calls["e-00005"] == 6


def test_the_lambda_handler_reports_an_outage_without_counting_a_failed_delivery(
    kinesis: Any, dynamodb: Any, stream: list[str]
) -> None:
    dead = MemoryDeadLetters()
    outage = Outage(ConnectionError("the sink is down"), "e-00020", calls=10)
    handler = KinesisHandler(
        outage,
        ledger=ledger(LedgerMode.PER_RECORD),
        dead_letters=dead,
        # One failed delivery would dead-letter a record that failed for itself.
        config=LambdaConfig(
            sink=SinkKind.IDEMPOTENT_KEY, policy=POLICY, max_failed_deliveries=1, retry=QUICK
        ),
        dynamodb=dynamodb,
    )
    stored = read_stream(kinesis, "orders")
    at_outage = next(r.sequence_number for r in stored if r.data.endswith(b"e-00020"))
    esm = EventSourceMapping(handler, stored, stream="orders")

    invocations = esm.run()

    assert dead.letters == []
    assert sorted(outage.calls) == stream
    assert all(outage.calls[i] == 1 for i in stream[:20])
    # Ten deliveries met the outage at e-00020 and reported from it on; the next got through.
    assert [i.reported[:1] for i in invocations] == [[at_outage]] * 10 + [[]]


def test_a_worker_paused_by_a_long_outage_turns_unhealthy_and_recovers_with_nothing_lost(
    kinesis: Any, dynamodb: Any, stream: list[str], tmp_path: Any
) -> None:
    dead = MemoryDeadLetters()
    down = threading.Event()
    down.set()

    def effect(record: Record, ctx: EffectContext) -> list[Any]:
        if down.is_set():
            raise SinkUnavailableError("the effects table is being restored")
        return bump(record, ctx)

    health = tmp_path / "health.json"
    config = replace(
        CONFIG,
        health_file=str(health),
        outage_initial_backoff_s=0.05,
        outage_max_backoff_s=0.1,
        stall_timeout_s=0.5,
    )
    manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, "patient")
    sink = TransactionalSink(ledger(), effect, dead_letters=dead)
    worker = Worker(kinesis, dynamodb, "orders", sink, manager, config)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: worker.metrics.outage_pauses >= 3, 20, "the outage to pause the shard")
        wait_for(lambda: health_code(health) == 1, 20, "the health file to turn unhealthy")
        report = json.loads(health.read_text())
        (unhealthy,) = report["unhealthy"]
        assert "while records wait" in unhealthy["reason"]
        assert "the effects table is being restored" in unhealthy["reason"]
        down.clear()
        wait_for(lambda: len(applied(dynamodb)) == 40, 20, "the effects after the outage")
        wait_for(lambda: health_code(health) == 0, 20, "the health file to recover")
    finally:
        worker.stop()
        thread.join()

    assert dead.letters == []
    assert applied(dynamodb) == dict.fromkeys(stream, 1)
    assert worker.metrics.loop_failures == 0


def health_code(path: Any) -> int:
    return cli.main(["health", "--file", str(path), "--max-age", "30"]) if path.exists() else -1


def test_a_worker_whose_every_shard_loop_fails_is_unhealthy_naming_the_shard_and_the_reason(
    kinesis: Any, dynamodb: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    produce(kinesis, "orders", 5)
    # A ledger table keyed by a number: every commit is refused by DynamoDB.
    dynamodb.create_table(
        TableName="wrong-ledger",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    wrong = Ledger(DynamoDBLedgerStore("wrong-ledger", QUICK), LedgerConfig("app"))
    health = tmp_path / "health.json"
    config = replace(CONFIG, health_file=str(health), unhealthy_after_failures=2)
    manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, "doomed")
    worker = Worker(kinesis, dynamodb, "orders", TransactionalSink(wrong, bump), manager, config)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        started = time.monotonic()
        wait_for(lambda: health_code(health) == 1, 30, "the health file to turn unhealthy")
        assert time.monotonic() - started < 30
    finally:
        worker.stop()
        thread.join()

    capsys.readouterr()
    assert cli.main(["health", "--file", str(health), "--max-age", "600"]) == 1
    err = capsys.readouterr().err
    assert "shard shardId-000000000000" in err
    assert "failed 2 times in a row" in err
    assert "ledger" in err
    assert applied(dynamodb) == {}
