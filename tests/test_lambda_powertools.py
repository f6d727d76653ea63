"""Powertools and the ledger in one function: BatchProcessor, Logger and Metrics keep working.

Ledger and effects on moto; deliveries from the event source mapping
simulator. The effect is ``ADD applied 1``: applied twice shows as 2.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kinesis_eo.envelope import wrap
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.metrics import catalogue as names
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import EffectContext, FailurePolicy, update
from kinesis_eo.testing.effects import applied_counts, create_effects_table
from kinesis_eo.testing.lambda_esm import EsmConfig, EventSourceMapping, StreamRecord
from lambda_handlers import KinesisHandler, LambdaConfig, powertools_record_handler

batch = pytest.importorskip("aws_lambda_powertools.utilities.batch")
powertools = pytest.importorskip("aws_lambda_powertools")

QUICK = RetryConfig(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.01)
SHARD = "shardId-000000000000"


@pytest.fixture
def tables(dynamodb: Any) -> Any:
    create_ledger_table(dynamodb, "ledger")
    create_effects_table(dynamodb, "effects")
    return dynamodb


def records(count: int) -> list[StreamRecord]:
    """Records with event ids; the producer re-sent event 5 (an inbound duplicate)."""
    made = [
        StreamRecord(SHARD, str(n), f"k{n % 3}", wrap(f"e-{n}", b"event-%d" % n))
        for n in range(1, count + 1)
    ]
    return [*made, StreamRecord(SHARD, str(count + 1), "k5", wrap("e-5", b"event-5"))]


def kinesis_handler(dynamodb: Any, fails_first: set[str], **options: Any) -> KinesisHandler:
    failed: set[str] = set()

    def apply(record: Record, ctx: EffectContext) -> list[Any]:
        event_id = str(record.event_id)
        if event_id in fails_first and event_id not in failed:
            failed.add(event_id)
            raise ConnectionError(f"{event_id}: the downstream was busy")
        return [update("effects", {"id": event_id}, "ADD applied :one", values={":one": 1})]

    ledger = Ledger(
        DynamoDBLedgerStore("ledger", QUICK), LedgerConfig("orders", mode=LedgerMode.PER_RECORD)
    )
    config = LambdaConfig(retry=QUICK, policy=FailurePolicy(max_attempts=1))
    return KinesisHandler(apply, ledger=ledger, config=config, dynamodb=dynamodb, **options)


def test_a_powertools_batch_processor_with_the_ledger_applies_each_event_once(
    tables: Any,
) -> None:
    processor = batch.BatchProcessor(event_type=batch.EventType.KinesisDataStreams)
    record_handler = powertools_record_handler(kinesis_handler(tables, fails_first={"e-4"}))

    def handler(event: dict[str, Any], context: Any) -> Any:
        return batch.process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    esm = EventSourceMapping(handler, records(12), config=EsmConfig(batch_size=6))
    esm.run()
    # The mapping delivers the whole stream again (a replay after a redeploy, say).
    EventSourceMapping(handler, records(12), config=EsmConfig(batch_size=5)).run()

    # Powertools reported e-4 alone; the mapping delivered e-4..e-6 again, which
    # Powertools' own handler had already applied the first time.
    assert esm.deliveries[(SHARD, "5")] == 2
    assert applied_counts(tables, "effects") == {f"e-{n}": 1 for n in range(1, 13)}


def test_a_handler_under_powertools_logger_and_metrics_logs_and_publishes_once(
    tables: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    logger = powertools.Logger(service="orders")
    metrics = powertools.Metrics(namespace="Orders", service="orders")
    metrics.clear_metrics()
    inner = kinesis_handler(tables, fails_first=set(), powertools_metrics=metrics)

    @logger.inject_lambda_context
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> Any:
        logger.info("batch", extra={"records": len(event["Records"])})
        return inner(event, context)

    EventSourceMapping(handler, records(8), config=EsmConfig(batch_size=100)).run()

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    logged = [line for line in lines if line.get("message") == "batch"]
    assert [(line["records"], line["function_name"]) for line in logged] == [(9, "kinesis-eo-test")]
    (document,) = [line for line in lines if "_aws" in line]
    assert document[names.RECORDS_APPLIED] == [8.0]
    assert document[names.DUPLICATES_INBOUND] == [1.0]
    assert applied_counts(tables, "effects") == {f"e-{n}": 1 for n in range(1, 9)}
