"""An order service's Lambda function: each order moves its account's balance once.

The handler *returns* its writes, so they commit in one transaction with the
ledger's mark (exactly once); the function's entry point is ``orders.handler``.
``tests/test_orders.py`` proves it with kinesis_eo's pytest plugin.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from kinesis_eo.deadletter import SqsDeadLetterQueue
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, LedgerMode
from kinesis_eo.records import Record
from kinesis_eo.sinks import DeadLetterSink, EffectContext, FailurePolicy, update
from lambda_handlers import KinesisHandler, LambdaConfig


def handle(record: Record, ctx: EffectContext) -> list[Any]:
    """One order: count it on its own item and add its amount to the account's balance."""
    order = json.loads(record.data)
    orders_table = os.environ.get("ORDERS_TABLE", "orders")
    return [
        # One item per order: `applied` says how many times this order took effect.
        update(
            orders_table,
            {"id": order["id"]},
            "ADD applied :one SET amount = :amount",
            values={":one": 1, ":amount": order["amount"]},
        ),
        update(
            orders_table,
            {"id": f"balance#{order['account']}"},
            "ADD balance :amount",
            values={":amount": order["amount"]},
        ),
    ]


def build_handler(
    ledger_table: str, dynamodb: Any = None, dead_letters: DeadLetterSink | None = None
) -> KinesisHandler:
    """The function's handler on ``ledger_table``, keyed by the producer's event ids.

    An order that cannot be read goes to ``dead_letters`` with its payload.
    """
    ledger = Ledger(
        DynamoDBLedgerStore(ledger_table),
        # Per-record: marks keyed by event id also drop an order the producer sent twice.
        LedgerConfig(consumer_group="orders", mode=LedgerMode.PER_RECORD),
    )
    config = LambdaConfig(policy=FailurePolicy(max_attempts=1), max_failed_deliveries=2)
    return KinesisHandler(
        handle, ledger=ledger, dynamodb=dynamodb, dead_letters=dead_letters, config=config
    )


@functools.cache
def _handler() -> KinesisHandler:
    import boto3

    queue = SqsDeadLetterQueue(boto3.client("sqs"), os.environ["DEAD_LETTER_QUEUE_URL"])
    return build_handler(os.environ.get("LEDGER_TABLE", "ledger"), dead_letters=queue)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (built on the first invocation, kept while warm)."""
    return _handler()(event, context)
