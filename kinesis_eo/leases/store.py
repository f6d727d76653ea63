"""Lease stores: list, create, and conditionally update leases, in DynamoDB or in memory.

As with the ledger, the protocol (taking, renewing, stealing, checkpointing)
lives once in :mod:`kinesis_eo.leases.manager`; a store fills in these
primitives, as flows, and both stores pass the same contract tests. A store
also builds the *fence*: the check a ledger commit carries so that it only
succeeds while the lease is still held by the same acquisition.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kinesis_eo.errors import ConditionFailedError, KinesisEOError
from kinesis_eo.flow import Call
from kinesis_eo.leases.model import (
    CHECKPOINT,
    CHILDREN,
    COUNTER,
    ENDING_HASH_KEY,
    LEASE_KEY,
    MILLIS_BEHIND,
    OWNER,
    OWNER_SWITCHES,
    PARENTS,
    RECORDS_PROCESSED,
    STARTING_HASH_KEY,
    SUB_SEQUENCE,
    TOKEN,
    Lease,
)
from kinesis_eo.ledger.store import MemoryWrite
from kinesis_eo.records import HashKeyRange
from kinesis_eo.tables import create_table, create_table_flow

__all__ = [
    "Change",
    "DynamoDBLeaseStore",
    "Held",
    "LeaseCondition",
    "LeaseConflict",
    "LeaseConflictError",
    "LeaseStore",
    "LeaseValue",
    "MemoryLeaseStore",
    "Unchanged",
    "create_lease_table",
    "item_from_lease",
    "lease_from_item",
    "lease_table_flow",
]

LeaseValue = str | int | frozenset[str]


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The lease is as last seen: same counter, same owner (None: free).

    With ``checkpoint``, the checkpoint must be that too: a checkpoint write
    does not bump the counter, so the counter alone does not prove it unchanged.
    """

    counter: int
    owner: str | None
    checkpoint: str | None = None

    def holds(self, lease: Lease | None) -> bool:
        return (
            lease is not None
            and lease.counter == self.counter
            and lease.owner == self.owner
            and (self.checkpoint is None or lease.checkpoint == self.checkpoint)
        )


@dataclass(frozen=True, slots=True)
class Held:
    """The lease is still held by this acquisition (owner and token)."""

    owner: str
    token: str

    def holds(self, lease: Lease | None) -> bool:
        return lease is not None and lease.owner == self.owner and lease.token == self.token


LeaseCondition = Unchanged | Held


@dataclass(frozen=True, slots=True)
class Change:
    """What a lease write sets, removes, and whether it bumps the counter."""

    set: Mapping[str, LeaseValue] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    bump_counter: bool = False


class LeaseConflictError(KinesisEOError):
    """The condition of a lease write failed; ``current`` is the lease as it is (if known)."""

    def __init__(self, shard_id: str, current: Lease | None) -> None:
        super().__init__(f"the lease of {shard_id} changed hands or was never there")
        self.current = current


# The name before errors took the Error suffix; kept for existing imports.
LeaseConflict = LeaseConflictError


class LeaseStore(ABC):
    """Where leases live; every write is conditional, and ``fence`` gives the commit guard for a
    held lease.
    """

    @abstractmethod
    def list_leases(self) -> Generator[Any, Any, list[Lease]]:
        """Every lease (strongly consistent)."""

    @abstractmethod
    def create(self, lease: Lease) -> Generator[Any, Any, bool]:
        """Create ``lease`` unless one exists for the shard; True if it was created."""

    @abstractmethod
    def update(
        self, shard_id: str, change: Change, condition: LeaseCondition
    ) -> Generator[Any, Any, Lease]:
        """Apply ``change`` if ``condition`` holds; the lease as written, or LeaseConflict."""

    @abstractmethod
    def delete(self, shard_id: str, condition: LeaseCondition) -> Generator[Any, Any, None]:
        """Delete the lease if ``condition`` holds; LeaseConflict if not (or if it is gone)."""

    @abstractmethod
    def fence(self, shard_id: str, owner: str, token: str) -> Any:
        """A check for the ledger's commit: holds while ``owner``'s acquisition holds the lease."""


# --- in memory ----------------------------------------------------------------------------------

_FIELDS = {
    OWNER: "owner",
    TOKEN: "token",
    CHECKPOINT: "checkpoint",
    SUB_SEQUENCE: "checkpoint_sub_sequence",
    OWNER_SWITCHES: "owner_switches",
    PARENTS: "parents",
    CHILDREN: "children",
    MILLIS_BEHIND: "millis_behind_latest",
    RECORDS_PROCESSED: "records_processed",
}


class MemoryLeaseStore(LeaseStore):
    """Leases in a dict; fences are :class:`~kinesis_eo.ledger.MemoryWrite` checks."""

    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def list_leases(self) -> Generator[Any, Any, list[Lease]]:
        with self._lock:
            return sorted(self.leases.values(), key=lambda lease: lease.shard_id)
        yield  # a flow that makes no calls

    def create(self, lease: Lease) -> Generator[Any, Any, bool]:
        with self._lock:
            if lease.shard_id in self.leases:
                return False
            self.leases[lease.shard_id] = lease
            return True
        yield  # a flow that makes no calls

    def update(
        self, shard_id: str, change: Change, condition: LeaseCondition
    ) -> Generator[Any, Any, Lease]:
        with self._lock:
            current = self.leases.get(shard_id)
            if current is None or not condition.holds(current):
                raise LeaseConflict(shard_id, current)
            values: dict[str, Any] = {_FIELDS[k]: v for k, v in change.set.items()}
            values.update({_FIELDS[k]: None for k in change.remove})
            if change.bump_counter:
                values["counter"] = current.counter + 1
            updated = replace(current, **values)
            self.leases[shard_id] = updated
            return updated
        yield  # a flow that makes no calls

    def delete(self, shard_id: str, condition: LeaseCondition) -> Generator[Any, Any, None]:
        with self._lock:
            current = self.leases.get(shard_id)
            if current is None or not condition.holds(current):
                raise LeaseConflict(shard_id, current)
            del self.leases[shard_id]
            return
        yield  # a flow that makes no calls

    def fence(self, shard_id: str, owner: str, token: str) -> Any:
        held = Held(owner, token)

        def check() -> bool:
            with self._lock:
                return held.holds(self.leases.get(shard_id))

        return MemoryWrite(lambda: None, check=check)


# --- DynamoDB -----------------------------------------------------------------------------------


def _attribute(value: LeaseValue) -> dict[str, Any]:
    if isinstance(value, frozenset):
        return {"SS": sorted(value)}
    if isinstance(value, int):
        return {"N": str(value)}
    return {"S": value}


def lease_from_item(item: Mapping[str, Mapping[str, Any]]) -> Lease:
    """The `Lease` a lease table item holds."""

    def text(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value["S"])

    def number(name: str) -> int | None:
        value = item.get(name)
        return None if value is None else int(value["N"])

    start, end = text(STARTING_HASH_KEY), text(ENDING_HASH_KEY)
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


class DynamoDBLeaseStore(LeaseStore):
    """The lease table in DynamoDB: conditional writes on the counter for takes, on owner and token
    for the holder.
    """

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._resource = f"lease table '{table_name}'"

    def _call(self, method: str, params: dict[str, Any], action: str) -> Call:
        return Call(
            method, {"TableName": self.table_name, **params}, self._resource, action, "dynamodb"
        )

    def list_leases(self) -> Generator[Any, Any, list[Lease]]:
        leases: list[Lease] = []
        params: dict[str, Any] = {"ConsistentRead": True}
        while True:
            response = yield self._call("scan", params, "Scan")
            leases += [lease_from_item(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                return sorted(leases, key=lambda lease: lease.shard_id)
            params = {**params, "ExclusiveStartKey": response["LastEvaluatedKey"]}

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
    """A flow that creates a lease table (key ``leaseKey``) and waits until it is active."""
    return create_table_flow(table_name, [(LEASE_KEY, "HASH")])


def create_lease_table(client: Any, table_name: str) -> None:
    """Create a lease table (the KCL's key schema, on-demand); harmless if it exists."""
    create_table(client, lease_table_flow(table_name))
