"""Creating the toolkit's DynamoDB tables: on-demand, harmless if they exist, waited for.

One flow serves every table (ledger, checkpoints, dead letters), so each
helper states only its key schema; run it with ``run_sync`` or ``run_async``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from kinesis_eo.errors import AwsCallError
from kinesis_eo.flow import Call, Sleep, run_sync
from kinesis_eo.retry import RetryConfig

__all__ = [
    "KeysOnlyIndex",
    "create_table",
    "create_table_flow",
]


@dataclass(frozen=True, slots=True)
class KeysOnlyIndex:
    """A global secondary index hashed on one string attribute, projecting only the keys."""

    name: str
    hash_key: str

    def definition(self) -> dict[str, Any]:
        return {
            "IndexName": self.name,
            "KeySchema": [{"AttributeName": self.hash_key, "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }


def create_table_flow(
    table_name: str,
    keys: Sequence[tuple[str, str]],
    *,
    ttl_attribute: str | None = None,
    indexes: Sequence[KeysOnlyIndex] = (),
    wait_s: float = 300.0,
    poll_s: float = 1.0,
) -> Generator[Any, Any, None]:
    """Create a table keyed by ``keys`` (attribute name, HASH or RANGE; all strings).

    ``indexes`` are created with the table; an existing table is left as it is.
    """
    resource = f"table '{table_name}'"
    attributes = dict.fromkeys([name for name, _ in keys] + [i.hash_key for i in indexes])
    params: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": [{"AttributeName": name, "KeyType": kind} for name, kind in keys],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in attributes
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        params["GlobalSecondaryIndexes"] = [index.definition() for index in indexes]
    try:
        yield Call("create_table", params, resource, "CreateTable", "dynamodb")
    except AwsCallError as exc:
        if exc.code != "ResourceInUseException":
            raise
    waited = 0.0
    while True:
        response = yield Call(
            "describe_table", {"TableName": table_name}, resource, "DescribeTable", "dynamodb"
        )
        status = response.get("Table", {}).get("TableStatus")
        if status == "ACTIVE":
            break
        if waited >= wait_s:
            raise AwsCallError(
                f"{resource} is still {status} after {wait_s:.0f} s", code="TableNotActive"
            )
        yield Sleep(poll_s)
        waited += poll_s
    if ttl_attribute is not None:
        ttl = {"Enabled": True, "AttributeName": ttl_attribute}
        try:
            yield Call(
                "update_time_to_live",
                {"TableName": table_name, "TimeToLiveSpecification": ttl},
                resource,
                "UpdateTimeToLive",
                "dynamodb",
            )
        except AwsCallError as exc:
            # Already enabled (a second run): DynamoDB refuses to set it again.
            if exc.code != "ValidationException":
                raise


def create_table(client: Any, flow: Generator[Any, Any, None]) -> None:
    """Run a table-creating flow (such as `ledger_table_flow`) with a boto3 DynamoDB client."""
    run_sync(flow, client, RetryConfig())
