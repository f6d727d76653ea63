"""The effects table that tests, the demo, the chaos harness and the bench count with.

Their sinks are deliberately not idempotent: each application of an event's
effect runs ``ADD applied :one`` on the item keyed by the event's id, so an
effect applied twice reads ``applied == 2``. These helpers create such a table
and read it back whole.
"""

from __future__ import annotations

from typing import Any

from kinesis_eo.tables import create_table, create_table_flow

__all__ = ["applied_counts", "create_effects_table", "scan_table"]


def create_effects_table(dynamodb: Any, table: str, key: str = "id") -> None:
    """Create ``table`` keyed by the string ``key`` (on-demand; harmless if it exists)."""
    create_table(dynamodb, create_table_flow(table, [(key, "HASH")]))


def scan_table(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    """Every item of ``table``, page after page, read consistently (boto3 client)."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**params)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def applied_counts(dynamodb: Any, table: str) -> dict[str, int]:
    """Event id -> how many times its effect was applied, from an effects table."""
    return {item["id"]["S"]: int(item["applied"]["N"]) for item in scan_table(dynamodb, table)}
