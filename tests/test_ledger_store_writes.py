"""The DynamoDB ledger store refuses a malformed sink write as that record's fault.

Clients made by ``kinesis-eo run`` skip botocore's parameter validation, so the
store itself checks that every sink write is one transaction action; a wrong
value inside a valid action goes to DynamoDB, which refuses it as invalid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from kinesis_eo.errors import InvalidWriteError
from kinesis_eo.flow import run_sync
from kinesis_eo.ledger import DynamoDBLedgerStore, create_ledger_table
from kinesis_eo.ledger.model import PositionBelow, Update
from kinesis_eo.retry import RetryConfig
from kinesis_eo.testing.effects import create_effects_table

ONCE = RetryConfig(max_attempts=1)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        dynamodb = boto3.client(
            "dynamodb", region_name="us-east-1", config=Config(parameter_validation=False)
        )
        create_ledger_table(dynamodb, "ledger")
        create_effects_table(dynamodb, "sink")
        yield dynamodb


def mark() -> Update:
    return Update("wm#g#s#shard-0", {"position": "2"}, PositionBelow("1"))


def test_a_sink_write_that_is_no_transaction_action_is_refused_naming_its_index(
    client: Any,
) -> None:
    store = DynamoDBLedgerStore("ledger")
    good = {"Put": {"TableName": "sink", "Item": {"id": {"S": "a"}}}}
    bad = {"Updte": {"TableName": "sink", "Key": {"id": {"S": "b"}}}}

    with pytest.raises(InvalidWriteError, match="ledger table 'ledger'") as refused:
        run_sync(store.apply([mark()], [good, bad]), client, ONCE)

    assert refused.value.indexes == [2]
    assert client.scan(TableName="ledger")["Items"] == []


def test_a_wrong_value_in_a_sink_write_is_refused_by_dynamodb_as_invalid(client: Any) -> None:
    store = DynamoDBLedgerStore("ledger")
    bad = {
        "Update": {
            "TableName": "sink",
            "Key": {"id": {"S": 5}},
            "UpdateExpression": "SET a = :a",
            "ExpressionAttributeValues": {":a": {"S": "x"}},
        }
    }

    with pytest.raises(InvalidWriteError):
        run_sync(store.apply([mark()], [bad]), client, ONCE)

    assert client.scan(TableName="sink")["Items"] == []
