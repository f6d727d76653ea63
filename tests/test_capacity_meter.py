"""The lease-table meter bills moto's real responses by DynamoDB's unit rules."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from kinesis_eo.harness.capacity import TableMeter, item_size
from kinesis_eo.leases import create_lease_table
from kinesis_eo.leases.model import OWNER_INDEX

TABLE = "meter-leases"
# leaseKey "shard-1" (8 + 7), leaseOwner "w1" (10 + 2), pad (3 + 4972): 5002 bytes.
ITEM = {
    "leaseKey": {"S": "shard-1"},
    "leaseOwner": {"S": "w1"},
    "pad": {"S": "x" * 4972},
}


@pytest.fixture
def metered(dynamodb: Any) -> tuple[Any, TableMeter]:
    create_lease_table(dynamodb, TABLE)
    create_lease_table(dynamodb, "other-table")
    dynamodb.put_item(TableName=TABLE, Item=ITEM)
    meter = TableMeter(TABLE)
    meter.attach(dynamodb)
    return dynamodb, meter


def test_the_item_is_5002_bytes_by_dynamodbs_size_rules() -> None:
    assert item_size(ITEM) == 5002


def test_get_item_costs_a_read_unit_per_4_kb_rounded_up_and_half_eventually_consistent(
    metered: tuple[Any, TableMeter],
) -> None:
    client, meter = metered
    client.get_item(TableName=TABLE, Key={"leaseKey": {"S": "shard-1"}}, ConsistentRead=True)
    assert meter.totals() == {"read_units": 2.0, "write_units": 0.0, "requests": 1}
    client.get_item(TableName=TABLE, Key={"leaseKey": {"S": "shard-1"}})
    assert meter.totals()["read_units"] == 3.0
    # No item still costs the minimum.
    client.get_item(TableName=TABLE, Key={"leaseKey": {"S": "none"}}, ConsistentRead=True)
    assert meter.totals()["read_units"] == 4.0


def test_update_item_costs_a_write_unit_per_kb_of_the_item_returned(
    metered: tuple[Any, TableMeter],
) -> None:
    client, meter = metered
    client.update_item(
        TableName=TABLE,
        Key={"leaseKey": {"S": "shard-1"}},
        UpdateExpression="SET leaseCounter = :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="ALL_NEW",
    )
    # 5002 + leaseCounter (12 + 2) = 5016 bytes: 5 units.
    assert meter.totals() == {"read_units": 0.0, "write_units": 5.0, "requests": 1}


def test_a_failed_conditional_update_is_billed_as_a_write_of_the_item(
    metered: tuple[Any, TableMeter],
) -> None:
    client, meter = metered
    with pytest.raises(ClientError):
        client.update_item(
            TableName=TABLE,
            Key={"leaseKey": {"S": "shard-1"}},
            UpdateExpression="SET leaseOwner = :me",
            ConditionExpression="leaseOwner = :other",
            ExpressionAttributeValues={":me": {"S": "w2"}, ":other": {"S": "w3"}},
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert meter.totals() == {"read_units": 0.0, "write_units": 5.0, "requests": 1}


def test_query_costs_read_units_over_the_whole_page_and_the_index_reads_eventually(
    metered: tuple[Any, TableMeter],
) -> None:
    client, meter = metered
    client.put_item(TableName=TABLE, Item={**ITEM, "leaseKey": {"S": "shard-2"}})
    # Two 5002-byte items on the base table's scan: 10004 bytes, 3 units consistent.
    client.scan(TableName=TABLE, ConsistentRead=True)
    assert meter.totals()["read_units"] == 3.0
    # The owner index holds keys only: two tiny items, one unit, halved (never consistent).
    client.query(
        TableName=TABLE,
        IndexName=OWNER_INDEX,
        KeyConditionExpression="leaseOwner = :w",
        ExpressionAttributeValues={":w": {"S": "w1"}},
    )
    totals = meter.totals()
    assert totals["read_units"] == 3.5
    # The put of shard-2 was billed too (5 units); the other table's requests are not.
    assert totals["write_units"] == 5.0
    client.put_item(TableName="other-table", Item=ITEM)
    client.get_item(TableName="other-table", Key={"leaseKey": {"S": "shard-1"}})
    assert meter.totals() == {**totals}
