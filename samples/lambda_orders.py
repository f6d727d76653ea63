"""A Lambda function that moves account balances once per order, fed by a Kinesis stream.

Deploy it with ``infra/lambda.yaml`` (handler ``lambda_orders.handler``); the
template sets the environment it reads:

- ``LEDGER_TABLE``, ``BALANCES_TABLE``: the ledger and the sink table;
- ``DEAD_LETTER_QUEUE_URL``: where a poison order goes, payload and all;
- ``CONSUMER_GROUP``: names this consumer's marks in the ledger;
- ``PARALLELIZATION_FACTOR``: the event source mapping's, set from the same
  template parameter, so the two cannot drift apart;
- ``MAX_FAILED_DELIVERIES``: deliveries an order may fail before it is
  dead-lettered;
- ``MARK_TTL_HOURS`` (optional): how long a ledger mark lives. At a cold start
  the function reads the stream's retention and refuses marks that would
  expire before the stream drops the order they guard (a replay would move the
  balance twice); without it, marks live for the retention plus a day, or the
  ledger's default if that is longer.

Run it here, with no AWS account::

    python samples/lambda_orders.py

starts an embedded moto server, puts orders (one of them not JSON) in a
stream, and lets the event source mapping simulator deliver them to
``handler`` twice over; prints the balances and the dead letters as JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from datetime import timedelta
from typing import Any

import boto3

from kinesis_eo.deadletter import SqsDeadLetterQueue
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, LedgerMode
from kinesis_eo.metrics import build_metrics
from kinesis_eo.preflight import fit_ledger_config
from kinesis_eo.records import Record
from kinesis_eo.sinks import EffectContext, FailurePolicy, update
from lambda_handlers import KinesisHandler, LambdaConfig
from lambda_handlers.events import stream_name


def handle(record: Record, ctx: EffectContext) -> list[Any]:
    """One order: add its amount to the account's balance (not idempotent on its own)."""
    order = json.loads(record.data)
    return [
        update(
            os.environ.get("BALANCES_TABLE", "balances"),
            {"account": order["account"]},
            "ADD balance :amount, orders :one",
            values={":amount": int(order["amount"]), ":one": 1},
        )
    ]


# Built on the first invocation and kept: a warm function reuses its clients
# and the ledger's caches, and the module imports without the environment.
@functools.cache
def _entry_point(stream: str) -> KinesisHandler:
    env = os.environ
    # Per-record: keyed by the producer's event id, it also drops inbound
    # duplicates, and it allows a ParallelizationFactor above 1.
    group = env.get("CONSUMER_GROUP", "billing")
    ledger_config = LedgerConfig(consumer_group=group, mode=LedgerMode.PER_RECORD)
    if "MARK_TTL_HOURS" in env:
        ttl = timedelta(hours=float(env["MARK_TTL_HOURS"]))
        ledger_config = dataclasses.replace(ledger_config, record_ttl=ttl)
    # Marks must outlive the records they guard: one DescribeStreamSummary per cold start.
    ledger_config = fit_ledger_config(
        boto3.client("kinesis"),
        stream,
        ledger_config,
        ttl_requested="MARK_TTL_HOURS" in env,
        setting="MARK_TTL_HOURS",
    )
    ledger = Ledger(DynamoDBLedgerStore(env["LEDGER_TABLE"]), ledger_config)
    config = LambdaConfig(
        parallelization_factor=int(env.get("PARALLELIZATION_FACTOR", "1")),
        max_failed_deliveries=int(env.get("MAX_FAILED_DELIVERIES", "3")),
        policy=FailurePolicy(max_attempts=2),
    )
    dead_letters = SqsDeadLetterQueue(boto3.client("sqs"), env["DEAD_LETTER_QUEUE_URL"])
    # EMF documents on stdout, one flush per invocation: Lambda turns them into the
    # KinesisEO metrics that infra/lambda.yaml's dashboard and alarms read.
    metrics = build_metrics("emf", namespace="KinesisEO", app=group)
    return KinesisHandler(
        handle, ledger=ledger, dead_letters=dead_letters, config=config, metrics=metrics
    )


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The function's entry point."""
    records = event.get("Records") or []
    if not records:
        return {"batchItemFailures": []}
    # One function reads one stream; its name comes with every record.
    stream = stream_name(str(records[0].get("eventSourceARN")), "the event's first record")
    return _entry_point(stream)(event, context)


# --- running it locally -------------------------------------------------------------------------


def main() -> None:
    from kinesis_eo.deadletter import reassemble
    from kinesis_eo.ledger import create_ledger_table
    from kinesis_eo.producer import Event, Producer
    from kinesis_eo.testing.backends import FAKE_CREDENTIALS, REGION, MotoServer
    from kinesis_eo.testing.lambda_esm import EsmConfig, EventSourceMapping, read_stream

    with MotoServer() as server:
        # The handler makes its clients as a function would, from the environment.
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": server.endpoint_url,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
                "AWS_SESSION_TOKEN": FAKE_CREDENTIALS["aws_session_token"],
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        os.environ.pop("AWS_PROFILE", None)
        kinesis, dynamodb, sqs = (server.client(s) for s in ("kinesis", "dynamodb", "sqs"))
        kinesis.create_stream(StreamName="orders", ShardCount=2)
        kinesis.get_waiter("stream_exists").wait(StreamName="orders")
        create_ledger_table(dynamodb, "ledger")
        dynamodb.create_table(
            TableName="balances",
            KeySchema=[{"AttributeName": "account", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "account", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        queue_url = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
        os.environ.update(
            {
                "LEDGER_TABLE": "ledger",
                "BALANCES_TABLE": "balances",
                "DEAD_LETTER_QUEUE_URL": queue_url,
            }
        )

        orders = [
            Event(
                json.dumps({"account": f"acct-{i % 3}", "amount": 10}).encode(),
                f"acct-{i % 3}",
                f"order-{i}",
            )
            for i in range(30)
        ]
        orders.insert(12, Event(b"not an order", "acct-1", "order-bad"))
        Producer(kinesis, "orders").put(orders)
        stored = read_stream(kinesis, "orders")
        for _ in range(2):  # the second pass is a full redelivery: it changes nothing
            EventSourceMapping(
                handler, stored, stream="orders", config=EsmConfig(batch_size=10)
            ).run()

        balances = {
            i["account"]["S"]: int(i["balance"]["N"])
            for i in dynamodb.scan(TableName="balances")["Items"]
        }
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        dead = [letter.record.data.decode() for letter in reassemble(messages)]
        print(json.dumps({"balances": balances, "dead_letters": dead}, sort_keys=True))


if __name__ == "__main__":
    main()
