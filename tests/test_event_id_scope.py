"""Event ids are scoped by stream and producer namespace, not global.

Two producers that give the same id to different events on one stream must
both be applied; one producer's retry (or its send after a restart, under the
same namespace) must still be dropped as a duplicate.
"""

from __future__ import annotations

from typing import Any

import pytest

from kinesis_eo.envelope import unwrap, unwrap_event, wrap
from kinesis_eo.errors import InvalidRecordError
from kinesis_eo.ledger import LedgerMode, event_id_or_position
from kinesis_eo.producer import Event, Producer, ProducerConfig
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ShardReader
from kinesis_eo.sinks import EffectContext, update
from kinesis_eo.testing.effects import scan_table
from kinesis_eo.testing.lambda_esm import FakeContext, kinesis_event, read_stream, stream_arn
from tests.helpers import DeadLetterQueue
from tests.streams import make_stream, read_until
from tests.test_lambda_handler import lambda_handler, tables  # noqa: F401


def scoped_effect(record: Record, ctx: EffectContext) -> list[Any]:
    return [
        update(
            "effects",
            {"id": f"{record.event_namespace}/{record.event_id}"},
            "ADD applied :one SET payload = :p",
            values={":one": 1, ":p": record.data.decode()},
        )
    ]


def applied(dynamodb: Any) -> dict[str, tuple[int, str]]:
    items = scan_table(dynamodb, "effects")
    return {i["id"]["S"]: (int(i["applied"]["N"]), i["payload"]["S"]) for i in items}


def test_two_producers_with_the_same_id_both_apply_and_a_retry_is_still_dropped(
    kinesis: Any,
    tables: Any,  # noqa: F811
) -> None:
    make_stream(kinesis, "orders", 1)
    billing = ProducerConfig(namespace="billing")
    shipping = ProducerConfig(namespace="shipping")
    Producer(kinesis, "orders", billing).put([Event(b"charge 10", "k", "42")])
    Producer(kinesis, "orders", shipping).put([Event(b"ship parcel", "k", "42")])
    # The billing producer restarted and sent its event again: an inbound duplicate.
    Producer(kinesis, "orders", billing).put([Event(b"charge 10", "k", "42")])
    dead = DeadLetterQueue()
    handler = lambda_handler(tables, LedgerMode.PER_RECORD, scoped_effect, dead_letters=dead)

    response = handler(
        kinesis_event(read_stream(kinesis, "orders"), stream_arn("orders")), FakeContext()
    )

    assert response == {"batchItemFailures": []}
    assert applied(tables) == {
        "billing/42": (1, "charge 10"),
        "shipping/42": (1, "ship parcel"),
    }
    assert handler.last_invocation is not None
    assert len(handler.last_invocation.report.duplicates) == 1
    assert dead.letters == []


def test_the_reader_hands_out_the_namespace_with_the_event_id(kinesis: Any) -> None:
    make_stream(kinesis, "orders", 1)
    Producer(kinesis, "orders", ProducerConfig(namespace="billing")).put([Event(b"x", "k", "7")])
    Producer(kinesis, "orders").put([Event(b"y", "k", "7")])

    records = read_until(ShardReader(kinesis, "orders", "shardId-000000000000"), 2)

    assert [(r.event_namespace, r.event_id, r.data) for r in records] == [
        ("billing", "7", b"x"),
        (None, "7", b"y"),
    ]
    assert [event_id_or_position(r) for r in records] == [
        "event:orders:billing:7",
        "event:orders::7",
    ]


def test_the_same_id_on_two_streams_has_two_keys() -> None:
    one = Record("orders", "s", "1", "k", b"", event_id="7")
    other = Record("arn:aws:kinesis:us-east-1:1:stream/refunds", "s", "1", "k", b"", event_id="7")
    assert event_id_or_position(one) == "event:orders::7"
    assert event_id_or_position(other) == "event:refunds::7"


def test_an_envelope_without_a_namespace_is_read_as_before() -> None:
    assert unwrap_event(wrap("7", b"data")) == ("7", None, b"data")
    assert unwrap(wrap("7", b"data", "billing")) == ("7", b"data")


@pytest.mark.parametrize("namespace", ["", "has:colon", "x" * 65, "naïve"])
def test_a_namespace_a_key_could_not_hold_is_refused(namespace: str) -> None:
    with pytest.raises(InvalidRecordError, match="namespace"):
        ProducerConfig(namespace=namespace)
