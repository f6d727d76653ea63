"""The orders function, proved exactly-once with kinesis_eo's pytest plugin."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import orders
import pytest

from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, LedgerMode
from kinesis_eo.producer import Event, Producer
from kinesis_eo.records import Record
from kinesis_eo.sinks import EffectContext
from kinesis_eo.testing.proof import Fault, NotExactlyOnceError, assert_exactly_once


@pytest.fixture
def orders_env(
    monkeypatch: pytest.MonkeyPatch, sink_table: Any, ledger_table: Any, dead_letter_queue: Any
) -> None:
    """The function's environment, as its template sets it, on the plugin's tables."""
    monkeypatch.setenv("ORDERS_TABLE", sink_table.name)
    monkeypatch.setenv("LEDGER_TABLE", ledger_table.name)
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", dead_letter_queue.url)
    # A cold start in each test: the clients a warm handler kept belong to the last test's moto.
    orders._handler.cache_clear()


def order_events(count: int) -> list[Event]:
    return [
        Event(
            json.dumps({"id": f"order-{i}", "account": f"acct-{i % 3}", "amount": 10}).encode(),
            partition_key=f"acct-{i % 3}",
            event_id=f"order-{i}",
        )
        for i in range(count)
    ]


def balances(sink_table: Any) -> dict[str, int]:
    items = sink_table.dynamodb.scan(TableName=sink_table.name)["Items"]
    return {
        item["id"]["S"].removeprefix("balance#"): int(item["balance"]["N"])
        for item in items
        if item["id"]["S"].startswith("balance#")
    }


def test_each_order_moves_its_balance_once_through_every_fault(
    orders_env: None, kinesis_stream: Any, ledger_table: Any, sink_table: Any
) -> None:
    handler = orders.build_handler(ledger_table.name, dynamodb=sink_table.dynamodb)

    report = assert_exactly_once(
        handler, order_events(12), stream=kinesis_stream, applied=sink_table.applied
    )

    assert report.applied == {f"order-{i}": 1 for i in range(12)}
    assert report.crashes > 0
    assert report.zombies > 0
    assert balances(sink_table) == {"acct-0": 40, "acct-1": 40, "acct-2": 40}


def test_the_entry_point_applies_each_order_once_and_dead_letters_a_bad_one(
    orders_env: None,
    kinesis_stream: Any,
    sink_table: Any,
    dead_letter_queue: Any,
    event_source_mapping: Any,
) -> None:
    bad = Event(b"not an order", partition_key="acct-1", event_id="order-bad")
    Producer(kinesis_stream.kinesis, kinesis_stream.name).put([*order_events(6), bad])

    for _ in range(2):  # the second run delivers everything again: nothing changes
        event_source_mapping(orders.handler).run()

    assert [sink_table.applied(f"order-{i}") for i in range(6)] == [1] * 6
    assert balances(sink_table) == {"acct-0": 20, "acct-1": 20, "acct-2": 20}
    assert [letter.record.data for letter in dead_letter_queue.letters()] == [b"not an order"]


def handle_writing_directly(record: Record, ctx: EffectContext) -> list[Any]:
    """Not exactly once: the order is counted by a write of its own, outside the transaction."""
    order = json.loads(record.data)
    boto3.client("dynamodb").update_item(
        TableName=os.environ["ORDERS_TABLE"],
        Key={"id": {"S": order["id"]}},
        UpdateExpression="ADD applied :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    return []


def test_a_handler_that_writes_outside_its_returned_writes_is_caught(
    orders_env: None, kinesis_stream: Any, ledger_table: Any, sink_table: Any
) -> None:
    # A record handler, as the worker runs it: given ledger=, it runs over that ledger.
    ledger = Ledger(
        DynamoDBLedgerStore(ledger_table.name), LedgerConfig("orders", LedgerMode.PER_RECORD)
    )
    events = order_events(6)

    with pytest.raises(AssertionError) as caught:
        assert_exactly_once(
            handle_writing_directly,
            events,
            stream=kinesis_stream,
            applied=sink_table.applied,
            ledger=ledger,
        )

    # Events are shared out among the first-delivery faults in turn: the zombie has every
    # third from the second on, and only the zombie runs the handler twice.
    message = str(caught.value)
    zombies = [e.event_id for e in events[1::3]]
    for event_id in zombies:
        assert f"{event_id}: applied 2 times, after zombie" in message
    assert isinstance(caught.value, NotExactlyOnceError)
    assert sorted(caught.value.report.wrong) == sorted(zombies)
    assert {caught.value.report.faults[e] for e in zombies} == {Fault.ZOMBIE}
