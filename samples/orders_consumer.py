"""A complete exactly-once consumer: orders in a stream move account balances once each.

Run it against the embedded emulator (no AWS account):

    python samples/orders_consumer.py

The same ``consume`` function runs against AWS when given real clients.
"""

from __future__ import annotations

import json
from typing import Any

from kinesis_eo.checkpoint import DynamoDBCheckpointStore, create_checkpoint_table
from kinesis_eo.consumer import Consumer, ConsumerConfig, ConsumerStats
from kinesis_eo.deadletter import DynamoDBDeadLetterTable, create_dead_letter_table
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.producer import Event, Producer
from kinesis_eo.records import Record
from kinesis_eo.sinks import EffectContext, TransactionalSink, update


def handle(record: Record, ctx: EffectContext) -> list[Any]:
    """One order: add its amount to the account's balance (not idempotent on its own)."""
    order = json.loads(record.data)
    return [
        update(
            "balances",
            {"account": order["account"]},
            "ADD balance :amount, orders :one",
            values={":amount": order["amount"], ":one": 1},
        )
    ]


def consume(kinesis: Any, dynamodb: Any, stream: str) -> ConsumerStats:
    ledger = Ledger(
        DynamoDBLedgerStore("ledger"),
        LedgerConfig(consumer_group="billing", mode=LedgerMode.PER_RECORD),
    )
    sink = TransactionalSink(
        ledger, handle, dead_letters=DynamoDBDeadLetterTable(dynamodb, "dead-letters")
    )
    config = ConsumerConfig(stop_when_caught_up=True)
    return Consumer(
        kinesis, dynamodb, stream, sink, DynamoDBCheckpointStore("checkpoints"), config
    ).run()


def create_resources(kinesis: Any, dynamodb: Any, stream: str) -> None:
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream)
    create_ledger_table(dynamodb, "ledger")
    create_checkpoint_table(dynamodb, "checkpoints")
    create_dead_letter_table(dynamodb, "dead-letters")
    dynamodb.create_table(
        TableName="balances",
        KeySchema=[{"AttributeName": "account", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "account", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def produce_orders(kinesis: Any, stream: str) -> None:
    orders = [{"account": f"acct-{i % 3}", "amount": 10} for i in range(30)]
    Producer(kinesis, stream).put(
        Event(json.dumps(o).encode(), o["account"], f"order-{i}") for i, o in enumerate(orders)
    )


def balances(dynamodb: Any) -> dict[str, int]:
    items = dynamodb.scan(TableName="balances")["Items"]
    return {i["account"]["S"]: int(i["balance"]["N"]) for i in items}


def main() -> None:
    from kinesis_eo.testing.backends import MotoServer

    with MotoServer() as server:
        kinesis, dynamodb = server.client("kinesis"), server.client("dynamodb")
        create_resources(kinesis, dynamodb, "orders")
        produce_orders(kinesis, "orders")
        consume(kinesis, dynamodb, "orders")
        consume(kinesis, dynamodb, "orders")  # a second run changes nothing
        print(json.dumps(balances(dynamodb), sort_keys=True))


if __name__ == "__main__":
    main()
