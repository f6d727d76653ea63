"""Runtimes record the metrics catalogue: what documents and scrapes say is what the run did.

On moto: a worker, a consumer and the Lambda handler run with a metrics
back-end, and the sums over everything the back-end published are compared
with what was produced, redelivered, dead-lettered and throttled.
"""

from __future__ import annotations

import importlib
import io
import re
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from kinesis_eo.checkpoint import MemoryCheckpointStore
from kinesis_eo.consumer import AsyncConsumer, Consumer, ConsumerConfig, ConsumerStats
from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.metrics import EmfBackend, NullMetrics, Recorder, build_metrics
from kinesis_eo.metrics import catalogue as names
from kinesis_eo.metrics.hooks import attach_call_metrics, classify_attempt
from kinesis_eo.metrics.totals import RunTotals
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.sinks import EffectContext, FailurePolicy, TransactionalSink, update
from kinesis_eo.testing.effects import create_effects_table
from kinesis_eo.testing.fakes import MemoryDeadLetters
from kinesis_eo.testing.faults import FaultInjector, NextCalls
from kinesis_eo.testing.lambda_esm import FakeContext, kinesis_event, read_stream, stream_arn
from kinesis_eo.worker import Worker, WorkerMetrics
from lambda_handlers import KinesisHandler, LambdaConfig
from tests import helpers
from tests.streams import make_stream
from tests.test_metrics import FakePowertoolsMetrics, emitted, metric_values
from tests.workers import CONFIG, LEASES, QUICK, create_tables, wait_for

SHARD = "shardId-000000000000"
POLICY = FailurePolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.01)


def apply_once(record: Record, ctx: EffectContext) -> list[Any]:
    if record.data.startswith(b"POISON"):
        raise ValueError("this record can never be processed")
    return [update("effects", {"id": record.event_id}, "ADD applied :one", values={":one": 1})]


def per_record_ledger() -> Ledger:
    config = LedgerConfig("app", LedgerMode.PER_RECORD)
    return Ledger(DynamoDBLedgerStore("ledger", QUICK), config)


def per_record_sink(dead_letters: Any) -> TransactionalSink:
    return TransactionalSink(
        per_record_ledger(), apply_once, policy=POLICY, dead_letters=dead_letters
    )


def emf() -> tuple[EmfBackend, io.StringIO]:
    stream = io.StringIO()
    return EmfBackend(Recorder({"app": "app"}), namespace="KinesisEO", stream=stream), stream


def total(documents: list[dict[str, Any]], name: str, **dimensions: str) -> float:
    """A counter summed over every document (each flush holds what came since the last)."""
    values = metric_values(documents, name, **dimensions)
    assert all(isinstance(v, int | float) for v in values), values
    return float(sum(values))


def timings(documents: list[dict[str, Any]], name: str) -> int:
    """How many durations of ``name`` the documents carry."""
    return sum(len(v) for v in metric_values(documents, name))


# --- the worker, with EMF ----------------------------------------------------------------------


def test_a_worker_s_emf_documents_add_up_to_exactly_what_its_run_did(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    produced = helpers.produce(kinesis, "orders", 30, poison={25})
    backend, stream = emf()
    dead = MemoryDeadLetters()
    crashed = threading.Event()

    def crash_after_the_first_commit(batch: Any, report: Any) -> None:
        # Dies between the commit and the checkpoint: the shard is read again from the start.
        if not crashed.is_set():
            crashed.set()
            raise RuntimeError("the shard loop died before its checkpoint")

    manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, "w0")
    worker = Worker(
        kinesis,
        dynamodb,
        "orders",
        per_record_sink(dead),
        manager,
        CONFIG,
        after_commit=crash_after_the_first_commit,
        metrics=backend,
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: worker.metrics.duplicates >= 30, timeout=30, what="the redelivery")
        # The producer sends ten events again: the same ids under new sequence numbers.
        helpers.produce(kinesis, "orders", 10)
        wait_for(lambda: worker.metrics.duplicates >= 40, timeout=30, what="the ten re-sent")
    finally:
        worker.stop()
        thread.join(timeout=30)
    documents = emitted(stream)

    assert helpers.applied(dynamodb) == {i: 1 for i in produced if i != "e-00025"}
    assert total(documents, names.RECORDS_READ, shard=SHARD) == 30 + 30 + 10
    assert total(documents, names.RECORDS_APPLIED, shard=SHARD) == 29  # the distinct good events
    assert total(documents, names.DUPLICATES_REDELIVERED, shard=SHARD) == 30
    assert total(documents, names.DUPLICATES_INBOUND, shard=SHARD) == 10
    assert total(documents, names.DEAD_LETTERED, reason="PROCESSING_FAILED") == 1
    assert total(documents, names.DEAD_LETTERED) == 1
    assert total(documents, names.HANDLER_ERRORS) == POLICY.max_attempts
    assert total(documents, names.PAYLOAD_MISMATCHES) == 0
    # Payloads without their envelopes: "e-000NN", and "POISON-25" (read twice) two longer.
    assert total(documents, names.BYTES_READ, shard=SHARD) == 70 * 7 + 2 * 2
    # Every handler call is timed: 29 good ones and the poison record's three.
    assert timings(documents, names.HANDLER_LATENCY) == 29 + POLICY.max_attempts
    assert timings(documents, names.COMMIT_LATENCY) >= 1
    assert total(documents, names.LEASES_TAKEN) == 2  # again after the loop died
    assert total(documents, names.LEASES_RELEASED) == 2  # given up, then at the stop
    assert metric_values(documents, names.LEASES_HELD)[-1] == 0
    assert metric_values(documents, names.MILLIS_BEHIND_LATEST, shard=SHARD)[-1] >= 0
    assert [letter.reason for letter in dead.letters] == [DeadLetterReason.PROCESSING_FAILED]
    # The run's totals are the same numbers.
    totals = worker.metrics
    assert (totals.applied, totals.duplicates, totals.duplicates_inbound) == (29, 40, 10)
    assert (totals.dead_lettered, totals.handler_errors, totals.loop_failures) == (1, 3, 1)


# --- the worker, scraped by Prometheus while it runs -------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def sample(text: str, metric: str) -> float:
    """The value of one sample line (labels included in ``metric``, as exposed)."""
    for line in text.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{metric} is not in the scrape:\n{text}")


def test_a_prometheus_scrape_of_a_running_worker_shows_what_it_did(
    kinesis: Any, dynamodb: Any
) -> None:
    pytest.importorskip("prometheus_client")
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    helpers.produce(kinesis, "orders", 20)
    backend = build_metrics("prometheus", namespace="KinesisEO", app="app", port=0)
    manager = LeaseManager(DynamoDBLeaseStore("leases"), LEASES, "w0")
    worker = Worker(
        kinesis,
        dynamodb,
        "orders",
        per_record_sink(MemoryDeadLetters()),
        manager,
        CONFIG,
        metrics=backend,
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: worker.metrics.applied == 20, timeout=30, what="20 effects")
        helpers.produce(kinesis, "orders", 5)  # the same five ids again: inbound duplicates
        wait_for(lambda: worker.metrics.duplicates == 5, timeout=30, what="5 duplicates")
        wait_for(lambda: bool(manager.held), timeout=10, what="the lease")
        text = scrape(backend.port)  # type: ignore[attr-defined]
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(timeout=30)
        backend.close()

    labels = f'{{app="app",shard="{SHARD}"}}'
    assert sample(text, f"kinesis_eo_records_applied_total{labels}") == 20
    assert sample(text, f"kinesis_eo_records_read_total{labels}") == 25
    assert sample(text, f"kinesis_eo_duplicates_inbound_total{labels}") == 5
    assert sample(text, 'kinesis_eo_leases_held{app="app"}') == 1
    assert sample(text, 'kinesis_eo_leases_taken_total{app="app"}') == 1
    assert sample(text, f"kinesis_eo_handler_latency_seconds_count{labels}") == 20
    assert re.search(r"^kinesis_eo_commit_latency_seconds_count\{.*\} [1-9]", text, re.M)


# --- throttling, counted from the client's events ----------------------------------------------


def test_throttled_reads_are_counted_by_service_and_the_consumer_flushes_at_the_end(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_ledger_table(dynamodb, "ledger")
    create_effects_table(dynamodb, "effects")
    ids = helpers.produce(kinesis, "orders", 12)
    faults = FaultInjector(seed=3)
    faults.throttle("GetRecords", schedule=NextCalls(3))
    faults.attach(kinesis)
    backend, stream = emf()
    config = ConsumerConfig(
        reader=ReaderConfig(min_read_interval_s=0.0, idle_interval_s=0.0, retry=QUICK),
        retry=QUICK,
        stop_when_caught_up=True,
    )

    stats = Consumer(
        kinesis,
        dynamodb,
        "orders",
        per_record_sink(MemoryDeadLetters()),
        MemoryCheckpointStore(),
        config,
        metrics=backend,
    ).run()
    documents = emitted(stream)

    assert sum(faults.injected.values()) == 3
    assert total(documents, names.THROTTLES, service="kinesis") == 3
    assert total(documents, names.RETRIES, service="kinesis") == 3
    assert total(documents, names.THROTTLES, service="dynamodb") == 0
    assert total(documents, names.RECORDS_APPLIED, shard=SHARD) == len(ids) == stats.applied
    assert stats.checkpoints >= 1


@pytest.mark.asyncio
async def test_an_async_consumer_counts_throttles_of_its_aiobotocore_clients(
    moto_server_reset: Any, async_clients: tuple[Any, Any]
) -> None:
    sync_kinesis = moto_server_reset.client("kinesis")
    sync_dynamodb = moto_server_reset.client("dynamodb")
    make_stream(sync_kinesis, "orders", 1)
    create_ledger_table(sync_dynamodb, "ledger")
    create_effects_table(sync_dynamodb, "effects")
    ids = helpers.produce(sync_kinesis, "orders", 6)
    kinesis, dynamodb = async_clients
    faults = FaultInjector(seed=5)
    faults.throttle("GetRecords", schedule=NextCalls(2))
    faults.throttle("TransactWriteItems", schedule=NextCalls(1), code="ThrottlingException")
    faults.attach(kinesis)
    faults.attach(dynamodb)
    backend, stream = emf()

    stats = await AsyncConsumer(
        kinesis,
        dynamodb,
        "orders",
        per_record_sink(MemoryDeadLetters()),
        MemoryCheckpointStore(),
        ConsumerConfig(
            reader=ReaderConfig(min_read_interval_s=0.0, idle_interval_s=0.0, retry=QUICK),
            retry=QUICK,
            stop_when_caught_up=True,
        ),
        metrics=backend,
    ).run()
    documents = emitted(stream)

    assert stats.applied == len(ids)
    assert total(documents, names.THROTTLES, service="kinesis") == 2
    assert total(documents, names.THROTTLES, service="dynamodb") == 1
    assert total(documents, names.RETRIES) == 3


class _ThrottlingDynamoDB(BaseHTTPRequestHandler):
    """Answers the first two requests with a throttling error, then lists no tables."""

    answered = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).answered += 1
        throttled = type(self).answered <= 2
        body = (
            b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
            b'"message":"Rate of requests exceeds the allowed throughput."}'
            if throttled
            else b'{"TableNames":[]}'
        )
        self.send_response(400 if throttled else 200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_botocore_s_own_retries_are_counted_once_per_attempt() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ThrottlingDynamoDB)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{server.server_port}",
            config=BotoConfig(retries={"mode": "legacy", "max_attempts": 3}),
        )
        recorder = Recorder()
        attach_call_metrics(client, recorder)
        attach_call_metrics(client, recorder)  # attaching twice counts once

        assert client.list_tables()["TableNames"] == []
    finally:
        server.shutdown()
        server.server_close()

    snapshot = recorder.snapshot()
    assert _ThrottlingDynamoDB.answered == 3  # botocore retried twice inside one call
    assert snapshot.total(names.THROTTLES, service="dynamodb") == 2
    assert snapshot.total(names.RETRIES, service="dynamodb") == 2


def test_retryable_attempts_are_told_from_throttles_and_from_the_record_s_own_errors() -> None:
    def error(code: str, **extra: Any) -> dict[str, Any]:
        return {"Error": {"Code": code}, **extra}

    assert classify_attempt(400, error("ProvisionedThroughputExceededException"), None) == (
        True,
        True,
    )
    assert classify_attempt(500, error("InternalFailure"), None) == (False, True)
    assert classify_attempt(400, error("ValidationException"), None) == (False, False)
    assert classify_attempt(400, error("ConditionalCheckFailedException"), None) == (False, False)
    throttled = error(
        "TransactionCanceledException",
        CancellationReasons=[{"Code": "None"}, {"Code": "ThrottlingError"}],
    )
    conflict = error(
        "TransactionCanceledException",
        CancellationReasons=[{"Code": "TransactionConflict"}, {"Code": "None"}],
    )
    refused = error(
        "TransactionCanceledException", CancellationReasons=[{"Code": "ConditionalCheckFailed"}]
    )
    assert classify_attempt(400, throttled, None) == (True, True)
    assert classify_attempt(400, conflict, None) == (False, True)
    assert classify_attempt(400, refused, None) == (False, False)
    assert classify_attempt(200, {}, None) == (False, False)


# --- the Lambda handler ------------------------------------------------------------------------


def lambda_event(kinesis: Any) -> dict[str, Any]:
    make_stream(kinesis, "orders", 1)
    helpers.produce(kinesis, "orders", 8, poison={3})
    helpers.produce(kinesis, "orders", 2)  # e-00000 and e-00001 again, new sequence numbers
    return kinesis_event(read_stream(kinesis, "orders"), stream_arn("orders"))


def lambda_handler(dynamodb: Any, **metrics: Any) -> KinesisHandler:
    create_ledger_table(dynamodb, "ledger")
    create_effects_table(dynamodb, "effects")
    return KinesisHandler(
        apply_once,
        ledger=per_record_ledger(),
        dead_letters=MemoryDeadLetters(),
        config=LambdaConfig(retry=QUICK, policy=POLICY, max_failed_deliveries=1),
        dynamodb=dynamodb,
        **metrics,
    )


def test_a_lambda_invocation_writes_its_emf_documents_once_at_its_end(
    kinesis: Any, dynamodb: Any
) -> None:
    event = lambda_event(kinesis)
    backend, stream = emf()
    handler = lambda_handler(dynamodb, metrics=backend)

    handler(event, FakeContext())
    first = emitted(stream)
    handler(event, FakeContext())  # the same batch again: every record a redelivery
    second = emitted(stream)[len(first) :]

    assert total(first, names.RECORDS_READ, shard=SHARD) == 10
    assert total(first, names.RECORDS_APPLIED, shard=SHARD) == 7
    assert total(first, names.DUPLICATES_INBOUND, shard=SHARD) == 2
    assert total(first, names.DUPLICATES_REDELIVERED, shard=SHARD) == 0
    assert total(first, names.DEAD_LETTERED, reason="PROCESSING_FAILED") == 1
    assert timings(first, names.HANDLER_LATENCY) == 7 + POLICY.max_attempts
    assert total(second, names.RECORDS_APPLIED) == 0
    # The two re-sent records are still inbound duplicates: their own positions were never marked.
    assert total(second, names.DUPLICATES_REDELIVERED, shard=SHARD) == 8
    assert total(second, names.DUPLICATES_INBOUND, shard=SHARD) == 2
    assert len({doc["_aws"]["Timestamp"] for doc in first}) == 1  # one flush per invocation


def test_a_lambda_invocation_hands_its_metrics_to_powertools_instead_of_writing_them(
    kinesis: Any,
    dynamodb: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = lambda_event(kinesis)
    try:
        real = importlib.import_module("aws_lambda_powertools.metrics")
    except ImportError:
        real = None  # Powertools is in the bench extra; the fake has its method's signature
    if real is None:
        powertools: Any = FakePowertoolsMetrics()
    else:
        monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
        powertools = real.Metrics(namespace="OrdersFunction", service="orders")
        powertools.clear_metrics()
    handler = lambda_handler(dynamodb, powertools_metrics=powertools)

    handler(event, FakeContext())

    assert capsys.readouterr().out == ""  # no document of our own
    wanted = (names.RECORDS_APPLIED, names.DUPLICATES_INBOUND, names.DEAD_LETTERED)
    if real is None:
        added = {name: value for name, unit, value in powertools.added if unit == "Count"}
    else:
        powertools.flush_metrics()  # what Powertools' log_metrics does after the handler
        (line,) = capsys.readouterr().out.splitlines()
        (document,) = emitted(io.StringIO(line + "\n"))
        added = {name: document[name][0] for name in wanted}
    assert {name: added[name] for name in wanted} == {
        names.RECORDS_APPLIED: 7,
        names.DUPLICATES_INBOUND: 2,
        names.DEAD_LETTERED: 1,
    }


def test_powertools_cooperation_needs_an_emf_back_end() -> None:
    with pytest.raises(ConfigurationError, match="powertools_metrics needs an EMF"):
        KinesisHandler(
            apply_once,
            ledger=per_record_ledger(),
            dynamodb=object(),
            metrics=NullMetrics(),
            powertools_metrics=FakePowertoolsMetrics(),
        )


# --- one counting model ------------------------------------------------------------------------


def test_consumer_and_worker_totals_are_one_model_with_both_spellings_of_shards_ended() -> None:
    assert ConsumerStats is WorkerMetrics is RunTotals
    totals = RunTotals()
    totals.count(shards_finished=1)
    totals.count(shards_ended=2, applied=5)
    assert (totals.shards_finished, totals.shards_ended, totals.applied) == (3, 3, 5)
    assert totals.as_dict()["shards_ended"] == 3
