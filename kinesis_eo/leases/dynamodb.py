"""The lease table in DynamoDB: items, conditional writes, the owner index, the whole-table scan.

A worker reads its own leases through ``LeaseOwnerToLeaseKeyIndex`` (keys
only, eventually consistent, as the Java KCL 3.x does); only the coordinator
scans the whole table. A table made before the index existed still works: the
first query that finds no index logs one warning and the store scans instead,
trying the index again now and then (it may be created while workers run).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from typing import Any

from kinesis_eo.errors import AwsCallError, ConditionFailedError, ResourceNotFoundError
from kinesis_eo.flow import Call
from kinesis_eo.leases.model import (
    CAPACITY,
    CHECKPOINT,
    CHILDREN,
    COUNTER,
    ENDING_HASH_KEY,
    HANDOFF,
    LEASE_KEY,
    MAX_LEASES,
    MILLIS_BEHIND,
    OWNER,
    OWNER_INDEX,
    OWNER_SWITCHES,
    PARENTS,
    RECORDS_PROCESSED,
    STARTING_HASH_KEY,
    SUB_SEQUENCE,
    THROUGHPUT,
    TOKEN,
    WORKER_PREFIX,
    Lease,
    WorkerReport,
    is_entity_key,
)
from kinesis_eo.leases.store import (
    Change,
    Held,
    LeaseCondition,
    LeaseConflict,
    LeaseStore,
    LeaseValue,
    TableSnapshot,
)
from kinesis_eo.records import HashKeyRange
from kinesis_eo.tables import KeysOnlyIndex, create_table, create_table_flow

__all__ = [
    "OWNER_INDEX_SCHEMA",
    "DynamoDBLeaseStore",
    "create_lease_table",
    "item_from_lease",
    "lease_from_item",
    "lease_table_flow",
    "report_from_item",
]

log = logging.getLogger(__name__)

OWNER_INDEX_SCHEMA = KeysOnlyIndex(OWNER_INDEX, OWNER)
# Without the index, try it again every so many queries (it may have been added since).
_INDEX_RETRY_EVERY = 100


def _attribute(value: LeaseValue) -> dict[str, Any]:
    if isinstance(value, frozenset):
        return {"SS": sorted(value)}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": f"{value:.6g}"}
    return {"S": value}


def lease_from_item(item: Mapping[str, Mapping[str, Any]]) -> Lease:
    """The ``Lease`` a lease table item holds."""

    def text(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value["S"])

    def number(name: str) -> int | None:
        value = item.get(name)
        return None if value is None else int(value["N"])

    start, end = text(STARTING_HASH_KEY), text(ENDING_HASH_KEY)
    rate = item.get(THROUGHPUT)
    return Lease(
        shard_id=str(item[LEASE_KEY]["S"]),
        counter=number(COUNTER) or 0,
        owner=text(OWNER),
        token=text(TOKEN),
        checkpoint=text(CHECKPOINT) or "TRIM_HORIZON",
        checkpoint_sub_sequence=number(SUB_SEQUENCE) or 0,
        owner_switches=number(OWNER_SWITCHES) or 0,
        parents=frozenset(item.get(PARENTS, {}).get("SS", ())),
        children=frozenset(item.get(CHILDREN, {}).get("SS", ())),
        hash_range=HashKeyRange(int(start), int(end)) if start and end else None,
        millis_behind_latest=number(MILLIS_BEHIND),
        records_processed=number(RECORDS_PROCESSED),
        throughput=None if rate is None else float(rate["N"]),
        handoff_to=text(HANDOFF),
    )


def item_from_lease(lease: Lease) -> dict[str, Any]:
    """The DynamoDB item (the KCL's attribute names) that stores ``lease``."""
    item: dict[str, Any] = {
        LEASE_KEY: {"S": lease.shard_id},
        COUNTER: {"N": str(lease.counter)},
        CHECKPOINT: {"S": lease.checkpoint},
        SUB_SEQUENCE: {"N": str(lease.checkpoint_sub_sequence)},
        OWNER_SWITCHES: {"N": str(lease.owner_switches)},
    }
    if lease.owner:
        item[OWNER] = {"S": lease.owner}
    if lease.token:
        item[TOKEN] = {"S": lease.token}
    # DynamoDB refuses empty string sets: leave the attribute out instead.
    if lease.parents:
        item[PARENTS] = {"SS": sorted(lease.parents)}
    if lease.children:
        item[CHILDREN] = {"SS": sorted(lease.children)}
    if lease.hash_range is not None:
        item[STARTING_HASH_KEY] = {"S": str(lease.hash_range.start)}
        item[ENDING_HASH_KEY] = {"S": str(lease.hash_range.end)}
    return item


def report_from_item(item: Mapping[str, Mapping[str, Any]]) -> WorkerReport:
    """The ``WorkerReport`` a worker's ``eo#worker#`` item holds."""
    limit = item.get(MAX_LEASES)
    return WorkerReport(
        worker_id=str(item[LEASE_KEY]["S"])[len(WORKER_PREFIX) :],
        counter=int(item.get(COUNTER, {}).get("N", "0")),
        capacity=float(item.get(CAPACITY, {}).get("N", "1")),
        max_leases=None if limit is None else int(limit["N"]),
    )


class _Expression:
    """Placeholders for one request's attribute names and values, and its lease condition."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attribute: str) -> str:
        self.names[f"#{attribute}"] = attribute
        return f"#{attribute}"

    def value(self, v: LeaseValue) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _attribute(v)
        return placeholder

    def condition(self, condition: LeaseCondition) -> str:
        name, value = self.name, self.value
        if isinstance(condition, Held):
            owned = f"{name(OWNER)} = {value(condition.owner)}"
            test = f"{owned} AND {name(TOKEN)} = {value(condition.token)}"
        else:
            owner = (
                f"attribute_not_exists({name(OWNER)})"
                if condition.owner is None
                else f"{name(OWNER)} = {value(condition.owner)}"
            )
            test = f"{name(COUNTER)} = {value(condition.counter)} AND {owner}"
            if condition.checkpoint is not None:
                test += f" AND {name(CHECKPOINT)} = {value(condition.checkpoint)}"
        return f"attribute_exists({name(LEASE_KEY)}) AND {test}"

    def attributes(self) -> dict[str, Any]:
        return {"ExpressionAttributeNames": self.names, "ExpressionAttributeValues": self.values}


def _missing_index(error: Exception) -> bool:
    # DynamoDB answers a query on a missing (or still backfilling) index with a
    # ValidationException, moto with ResourceNotFoundException; both name the index.
    return isinstance(error, AwsCallError | ResourceNotFoundError) and "index" in str(error).lower()


class DynamoDBLeaseStore(LeaseStore):
    """The lease table in DynamoDB: conditional writes, own leases read through the owner index."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._resource = f"lease table '{table_name}'"
        # Queries since the index was found missing (None: it is there, as far as we know).
        self._without_index: int | None = None

    def _call(self, method: str, params: dict[str, Any], action: str) -> Call:
        return Call(
            method, {"TableName": self.table_name, **params}, self._resource, action, "dynamodb"
        )

    def _scan(self, params: dict[str, Any]) -> Generator[Any, Any, list[dict[str, Any]]]:
        items: list[dict[str, Any]] = []
        while True:
            response = yield self._call("scan", params, "Scan")
            items += response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return items
            params = {**params, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    def list_leases(self) -> Generator[Any, Any, list[Lease]]:
        snapshot = yield from self.snapshot()
        return snapshot.leases

    def snapshot(self, consistent: bool = True) -> Generator[Any, Any, TableSnapshot]:
        items = yield from self._scan({"ConsistentRead": consistent})
        leases, workers, coordinator = [], [], None
        for item in items:
            key = str(item[LEASE_KEY]["S"])
            if key.startswith(WORKER_PREFIX):
                workers.append(report_from_item(item))
            elif is_entity_key(key):
                coordinator = lease_from_item(item)
            else:
                leases.append(lease_from_item(item))
        leases.sort(key=lambda lease: lease.shard_id)
        return TableSnapshot(leases, workers, coordinator)

    def owned_keys(self, owner: str) -> Generator[Any, Any, list[str]]:
        if self._without_index is not None:
            self._without_index += 1
        if self._without_index is None or self._without_index % _INDEX_RETRY_EVERY == 0:
            try:
                keys = yield from self._query_owner(owner)
            except (AwsCallError, ResourceNotFoundError) as exc:
                if not _missing_index(exc):
                    raise
                if self._without_index is None:
                    log.warning(
                        "the %s has no index %s on %s: every worker scans the whole table "
                        "to find its leases, which costs read units in proportion to shards "
                        "times workers; add the index (infra/worker.yaml has it)",
                        self._resource,
                        OWNER_INDEX,
                        OWNER,
                    )
                    self._without_index = 0
            else:
                self._without_index = None
                return keys
        items = yield from self._scan(
            {
                "ConsistentRead": True,
                "FilterExpression": "#owner = :owner",
                "ProjectionExpression": "#key",
                "ExpressionAttributeNames": {"#owner": OWNER, "#key": LEASE_KEY},
                "ExpressionAttributeValues": {":owner": {"S": owner}},
            }
        )
        return sorted(str(item[LEASE_KEY]["S"]) for item in items)

    def _query_owner(self, owner: str) -> Generator[Any, Any, list[str]]:
        params: dict[str, Any] = {
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": OWNER},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
        }
        keys: list[str] = []
        while True:
            response = yield self._call("query", params, "Query")
            keys += [str(item[LEASE_KEY]["S"]) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                return sorted(keys)
            params = {**params, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    def get(self, key: str, consistent: bool = True) -> Generator[Any, Any, Lease | None]:
        response = yield self._call(
            "get_item", {"Key": {LEASE_KEY: {"S": key}}, "ConsistentRead": consistent}, "GetItem"
        )
        item = response.get("Item")
        return None if item is None else lease_from_item(item)

    def report(self, report: WorkerReport) -> Generator[Any, Any, None]:
        values: dict[str, Any] = {":one": {"N": "1"}, ":capacity": _attribute(report.capacity)}
        update = "SET #capacity = :capacity"
        if report.max_leases is not None:
            values[":max"] = {"N": str(report.max_leases)}
            update += ", #max = :max"
        yield self._call(
            "update_item",
            {
                "Key": {LEASE_KEY: {"S": WORKER_PREFIX + report.worker_id}},
                "UpdateExpression": update + " ADD #counter :one",
                "ExpressionAttributeNames": {
                    "#capacity": CAPACITY,
                    "#counter": COUNTER,
                    **({"#max": MAX_LEASES} if report.max_leases is not None else {}),
                },
                "ExpressionAttributeValues": values,
            },
            "UpdateItem",
        )

    def remove_report(self, worker_id: str) -> Generator[Any, Any, None]:
        yield self._call(
            "delete_item", {"Key": {LEASE_KEY: {"S": WORKER_PREFIX + worker_id}}}, "DeleteItem"
        )

    def create(self, lease: Lease) -> Generator[Any, Any, bool]:
        try:
            yield self._call(
                "put_item",
                {
                    "Item": item_from_lease(lease),
                    "ConditionExpression": "attribute_not_exists(#key)",
                    "ExpressionAttributeNames": {"#key": LEASE_KEY},
                },
                "PutItem",
            )
        except ConditionFailedError:
            return False
        return True

    def update(
        self, shard_id: str, change: Change, condition: LeaseCondition
    ) -> Generator[Any, Any, Lease]:
        expression = _Expression()
        name, value = expression.name, expression.value
        assignments = [f"{name(k)} = {value(v)}" for k, v in change.set.items()]
        if change.bump_counter:
            assignments.append(f"{name(COUNTER)} = {name(COUNTER)} + {value(1)}")
        update = "SET " + ", ".join(assignments) if assignments else ""
        if change.remove:
            update += " REMOVE " + ", ".join(name(k) for k in change.remove)
        try:
            response = yield self._call(
                "update_item",
                {
                    "Key": {LEASE_KEY: {"S": shard_id}},
                    "UpdateExpression": update.strip(),
                    "ConditionExpression": expression.condition(condition),
                    **expression.attributes(),
                    "ReturnValues": "ALL_NEW",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
                "UpdateItem",
            )
        except ConditionFailedError as failed:
            current = lease_from_item(failed.item) if failed.item else None
            raise LeaseConflict(shard_id, current) from failed
        return lease_from_item(response["Attributes"])

    def delete(self, shard_id: str, condition: LeaseCondition) -> Generator[Any, Any, None]:
        expression = _Expression()
        try:
            yield self._call(
                "delete_item",
                {
                    "Key": {LEASE_KEY: {"S": shard_id}},
                    "ConditionExpression": expression.condition(condition),
                    **expression.attributes(),
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
                "DeleteItem",
            )
        except ConditionFailedError as failed:
            current = lease_from_item(failed.item) if failed.item else None
            raise LeaseConflict(shard_id, current) from failed

    def fence(self, shard_id: str, owner: str, token: str) -> Any:
        return {
            "ConditionCheck": {
                "TableName": self.table_name,
                "Key": {LEASE_KEY: {"S": shard_id}},
                "ConditionExpression": "#owner = :owner AND #token = :token",
                "ExpressionAttributeNames": {"#owner": OWNER, "#token": TOKEN},
                "ExpressionAttributeValues": {":owner": {"S": owner}, ":token": {"S": token}},
            }
        }


def lease_table_flow(table_name: str) -> Generator[Any, Any, None]:
    """Create the lease table with its owner index (``LeaseOwnerToLeaseKeyIndex``)."""
    return create_table_flow(table_name, [(LEASE_KEY, "HASH")], indexes=[OWNER_INDEX_SCHEMA])


def create_lease_table(client: Any, table_name: str) -> None:
    """Create a lease table (the KCL's key schema and owner index, on-demand); harmless if it
    exists."""
    create_table(client, lease_table_flow(table_name))
