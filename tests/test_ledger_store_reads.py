"""The DynamoDB ledger store reads a screening's pages at once, and finds every stored key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kinesis_eo.flow import Call, Together, run_sync
from kinesis_eo.ledger import DynamoDBLedgerStore, create_ledger_table
from kinesis_eo.retry import RetryConfig
from kinesis_eo.testing.backends import serialize_moto_requests

KEYS = [f"bench#evt-{i:04d}" for i in range(250)]


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    serialize_moto_requests()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_ledger_table(dynamodb, "ledger")
        yield dynamodb


def test_a_read_of_250_keys_sends_its_three_pages_at_once() -> None:
    flow = DynamoDBLedgerStore("ledger").get(KEYS)

    step = next(flow)

    assert isinstance(step, Together)
    pages = []
    for page in step.flows:
        call = next(page)
        assert isinstance(call, Call)
        assert call.method == "batch_get_item"
        pages.append([k["pk"]["S"] for k in call.params["RequestItems"]["ledger"]["Keys"]])
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [k for p in pages for k in p] == KEYS


def test_a_read_of_100_keys_or_fewer_is_one_call() -> None:
    step = next(DynamoDBLedgerStore("ledger").get(KEYS[:100]))

    assert isinstance(step, Call)


def test_every_stored_key_of_a_read_over_many_pages_is_found(client: Any) -> None:
    stored = KEYS[::3]
    for key in stored:
        client.put_item(TableName="ledger", Item={"pk": {"S": key}, "n": {"N": "1"}})

    reading = DynamoDBLedgerStore("ledger").get(KEYS + KEYS[:10])
    found = run_sync(reading, {"dynamodb": client}, RetryConfig())

    assert sorted(found) == sorted(stored)
    assert all(found[key]["n"] == 1 for key in stored)
