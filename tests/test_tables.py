"""The table helpers: on-demand, TTL where it belongs, harmless when run twice."""

from __future__ import annotations

from typing import Any

import pytest

from kinesis_eo.checkpoint import create_checkpoint_table
from kinesis_eo.deadletter import create_dead_letter_table
from kinesis_eo.errors import AccessDeniedError
from kinesis_eo.ledger import create_ledger_table
from kinesis_eo.testing.faults import FaultInjector


def test_creating_the_tables_twice_is_harmless_and_sets_ttl_on_the_ledger(dynamodb: Any) -> None:
    for _ in range(2):
        create_ledger_table(dynamodb, "ledger")
        create_checkpoint_table(dynamodb, "checkpoints")
        create_dead_letter_table(dynamodb, "dead")

    ttl = dynamodb.describe_time_to_live(TableName="ledger")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    for name in ("ledger", "checkpoints", "dead"):
        table = dynamodb.describe_table(TableName=name)["Table"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert dynamodb.describe_table(TableName="checkpoints")["Table"]["KeySchema"] == [
        {"AttributeName": "leaseKey", "KeyType": "HASH"}
    ]


def test_a_table_that_may_not_be_created_is_one_clear_error_naming_it(dynamodb: Any) -> None:
    faults = FaultInjector().attach(dynamodb)
    faults.fail("CreateTable", "AccessDeniedException", message="not allowed")

    with pytest.raises(
        AccessDeniedError, match="access to table 'ledger' was denied for CreateTable"
    ):
        create_ledger_table(dynamodb, "ledger")
