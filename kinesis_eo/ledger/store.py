"""Ledger stores: the few primitives the ledger protocol needs, for DynamoDB and in memory.

A store reads items by key and applies a list of operations atomically. Both
primitives are flows (see :mod:`kinesis_eo.flow`): the DynamoDB store yields
AWS calls, so one store serves boto3 and aiobotocore alike; the in-memory
store yields nothing. Every store passes the same contract tests.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kinesis_eo.errors import (
    AwsCallError,
    ConditionFailedError,
    InvalidWriteError,
    ResourceNotFoundError,
    TransactionCanceledError,
)
from kinesis_eo.flow import Call, Sleep, Together
from kinesis_eo.ledger.model import (
    CLAIM_EXPIRES_AT,
    EXPIRES_AT,
    KEY,
    OWNER,
    POSITION,
    STATUS,
    Absent,
    AbsentOrClaimExpired,
    Condition,
    HeldBy,
    Increment,
    Item,
    LedgerConflict,
    MarkStatus,
    Op,
    PositionBelow,
    Put,
    Update,
    Value,
)
from kinesis_eo.retry import RetryConfig, backoff_delay
from kinesis_eo.tables import create_table, create_table_flow

__all__ = [
    "DynamoDBLedgerStore",
    "LedgerStore",
    "MemoryLedgerStore",
    "MemoryWrite",
    "StoreFlow",
    "create_ledger_table",
    "from_attribute",
    "from_item",
    "ledger_table_flow",
    "to_attribute",
]

StoreFlow = Generator[Any, Any, Any]

# BatchGetItem reads at most 100 keys per call.
_BATCH_GET_LIMIT = 100
# Pages of one screening read at once (100 keys each; a 10,000-record batch has 100).
_PAGES_AT_ONCE = 16
_ACTIONS = frozenset({"Put", "Update", "Delete", "ConditionCheck"})


class LedgerStore(ABC):
    """The primitives: read items, and apply operations all-or-none."""

    @abstractmethod
    def get(self, keys: Sequence[str]) -> Generator[Any, Any, dict[str, Item]]:
        """The items that exist under ``keys`` (strongly consistent)."""

    def items_touched(
        self, writes: Sequence[Sequence[Any]]
    ) -> Generator[Any, Any, list[list[Hashable]]]:
        """For each entry's sink writes, the identities of the items they change.

        A transaction may not hold two operations on one item; the ledger cuts
        chunks so that it never does.
        """
        return [[w.item for w in entry if getattr(w, "item", None) is not None] for entry in writes]
        yield  # a flow that makes no calls

    @abstractmethod
    def apply(self, ops: Sequence[Op], extra: Sequence[Any] = ()) -> Generator[Any, Any, None]:
        """Apply ``ops`` and the store-specific ``extra`` writes atomically.

        Raises :class:`LedgerConflict` naming every failed condition (index
        into ``ops`` followed by ``extra``) when any of them fails; then
        nothing is written.
        """


@dataclass(frozen=True, slots=True)
class MemoryWrite:
    """A write of an in-memory sink, committed atomically with ledger marks.

    ``check`` plays the part of a DynamoDB condition on the sink's own item.
    """

    apply: Callable[[], None]
    check: Callable[[], bool] | None = None
    # The sink item this write changes, if it matters that two writes of one
    # transaction do not change the same item (as DynamoDB requires).
    item: Hashable | None = None
    # Why the store refuses this write whole, as DynamoDB refuses an invalid
    # request (ValidationException) without saying which item was at fault.
    invalid: str | None = None


class MemoryLedgerStore(LedgerStore):
    """A ledger store in a dict, for tests and for the toolkit's own CPU measurements.

    ``extra`` writes are :class:`MemoryWrite`, run under the store's lock after
    every condition held, so an in-memory sink commits atomically with its marks.
    """

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Value]] = {}
        self._lock = threading.Lock()
        self.applies = 0

    def get(self, keys: Sequence[str]) -> Generator[Any, Any, dict[str, Item]]:
        with self._lock:
            found: dict[str, Item] = {k: dict(self.items[k]) for k in keys if k in self.items}
        return found
        yield  # a flow that makes no calls

    def apply(self, ops: Sequence[Op], extra: Sequence[Any] = ()) -> Generator[Any, Any, None]:
        with self._lock:
            self.applies += 1
            failed: dict[int, Item | None] = {}
            touched: set[str] = set()
            for index, op in enumerate(ops):
                if op.key in touched:
                    raise ValueError(f"two operations on ledger key {op.key!r} in one write")
                touched.add(op.key)
                current = self.items.get(op.key)
                if op.condition is not None and not op.condition.holds(current):
                    failed[index] = dict(current) if current is not None else None
            for write in extra:
                if not isinstance(write, MemoryWrite):
                    raise TypeError(f"the in-memory store takes MemoryWrite extras, not {write!r}")
                if write.invalid is not None:
                    raise InvalidWriteError(f"the in-memory store refused a write: {write.invalid}")
            for offset, write in enumerate(extra):
                if write.check is not None and not write.check():
                    failed[len(ops) + offset] = None
            if failed:
                raise LedgerConflict(failed)
            for op in ops:
                if isinstance(op, Put):
                    self.items[op.key] = {KEY: op.key, **op.item}
                elif isinstance(op, Update):
                    self.items.setdefault(op.key, {KEY: op.key}).update(op.values)
                elif isinstance(op, Increment):
                    item = self.items.setdefault(op.key, {KEY: op.key})
                    item[op.attribute] = int(item.get(op.attribute, 0)) + op.by
                    item.update(op.values)
                else:
                    self.items.pop(op.key, None)
            for write in extra:
                write.apply()
        return
        yield  # a flow that makes no calls


# --- DynamoDB --------------------------------------------------------------------------------


def to_attribute(value: Value) -> dict[str, Any]:
    """The DynamoDB attribute value of a ledger value (str, int or bytes; anything else is a
    ``TypeError``).
    """
    if isinstance(value, bool):
        raise TypeError("ledger values are str, int or bytes")
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, bytes):
        return {"B": value}
    raise TypeError(f"ledger values are str, int or bytes, not {type(value).__name__}")


def from_attribute(attribute: Mapping[str, Any]) -> Value:
    """The Python value (str, int or bytes) of one DynamoDB attribute value."""
    if "S" in attribute:
        return str(attribute["S"])
    if "N" in attribute:
        return int(attribute["N"])
    if "B" in attribute:
        return bytes(attribute["B"])
    raise TypeError(f"unexpected ledger attribute {attribute!r}")


def from_item(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Value]:
    """A ledger item with its DynamoDB attribute values turned into Python values."""
    return {name: from_attribute(value) for name, value in item.items()}


class _Expression:
    """Collects placeholder names and values while expressions are built."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, dict[str, Any]] = {}

    def name(self, attribute: str) -> str:
        placeholder = f"#{attribute}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Value) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = to_attribute(value)
        return placeholder

    def condition(self, condition: Condition) -> str:
        in_progress = MarkStatus.IN_PROGRESS.value
        if isinstance(condition, Absent):
            return f"attribute_not_exists({self.name(KEY)})"
        if isinstance(condition, PositionBelow):
            return (
                f"attribute_not_exists({self.name(KEY)}) OR "
                f"{self.name(POSITION)} < {self.value(condition.position)}"
            )
        if isinstance(condition, HeldBy):
            return (
                f"{self.name(STATUS)} = {self.value(in_progress)} AND "
                f"{self.name(OWNER)} = {self.value(condition.owner)}"
            )
        if isinstance(condition, AbsentOrClaimExpired):
            return (
                f"attribute_not_exists({self.name(KEY)}) OR "
                f"({self.name(STATUS)} = {self.value(in_progress)} AND "
                f"{self.name(CLAIM_EXPIRES_AT)} < {self.value(condition.now_ms)})"
            )
        return (
            f"{self.name(STATUS)} = {self.value(in_progress)} AND "
            f"{self.name(OWNER)} = {self.value(condition.owner)} AND "
            f"{self.name(CLAIM_EXPIRES_AT)} < {self.value(condition.now_ms)}"
        )

    def add_to(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.names:
            request["ExpressionAttributeNames"] = self.names
        if self.values:
            request["ExpressionAttributeValues"] = self.values
        return request


class DynamoDBLedgerStore(LedgerStore):
    """The ledger in one DynamoDB table keyed by ``pk`` (string), TTL on ``expires_at``.

    A lone operation is a single conditional write; several go in one
    ``TransactWriteItems`` with the store's ``extra`` items (already in the
    low-level transaction format) after them. Failed conditions come back with
    the old item (``ALL_OLD``), so a conflict costs no extra read.
    """

    def __init__(self, table_name: str, retry: RetryConfig | None = None) -> None:
        self.table_name = table_name
        self.retry = retry or RetryConfig()
        self._resource = f"ledger table '{table_name}'"
        # Key attribute names per sink table, learned once with DescribeTable: a
        # Put names its item only through the table's key schema.
        self._key_schemas: dict[str, tuple[str, ...]] = {}

    def items_touched(
        self, writes: Sequence[Sequence[Any]]
    ) -> Generator[Any, Any, list[list[Hashable]]]:
        touched: list[list[Hashable]] = []
        for entry in writes:
            items: list[Hashable] = []
            for write in entry:
                (request,) = write.values()
                table = request["TableName"]
                key = request.get("Key")
                if key is None:
                    if table not in self._key_schemas:
                        described = yield Call(
                            "describe_table",
                            {"TableName": table},
                            f"sink table '{table}'",
                            "DescribeTable",
                            "dynamodb",
                        )
                        schema = described["Table"]["KeySchema"]
                        self._key_schemas[table] = tuple(k["AttributeName"] for k in schema)
                    key = {name: request["Item"][name] for name in self._key_schemas[table]}
                items.append((table, *(_key_of_one(key) or sorted(_key_parts(key)))))
            touched.append(items)
        return touched

    def get(self, keys: Sequence[str]) -> Generator[Any, Any, dict[str, Item]]:
        unique = list(dict.fromkeys(keys))
        pages = [unique[i : i + _BATCH_GET_LIMIT] for i in range(0, len(unique), _BATCH_GET_LIMIT)]
        if len(pages) <= 1:
            return (yield from self._get_page(unique))
        # A batch's pages are read at once: one round trip for the whole screening, not one
        # per 100 keys one after the other.
        found: dict[str, Item] = {}
        for page in (yield Together(tuple(self._get_page(p) for p in pages), _PAGES_AT_ONCE)):
            found.update(page)
        return found

    def _get_page(self, keys: list[str]) -> Generator[Any, Any, dict[str, Item]]:
        found: dict[str, Item] = {}
        pending = keys
        attempt = 0
        while pending:
            chunk, pending = pending[:_BATCH_GET_LIMIT], pending[_BATCH_GET_LIMIT:]
            request = {
                self.table_name: {
                    "Keys": [{KEY: {"S": key}} for key in chunk],
                    "ConsistentRead": True,
                }
            }
            response = yield Call(
                "batch_get_item",
                {"RequestItems": request},
                self._resource,
                "BatchGetItem",
                "dynamodb",
            )
            for item in response.get("Responses", {}).get(self.table_name, []):
                decoded = from_item(item)
                found[str(decoded[KEY])] = decoded
            unprocessed = response.get("UnprocessedKeys", {}).get(self.table_name)
            if unprocessed:
                # DynamoDB hands back what it could not read under load: read it again, later.
                attempt += 1
                pending = [str(k[KEY]["S"]) for k in unprocessed["Keys"]] + pending
                yield Sleep(backoff_delay(attempt, self.retry))
        return found

    def write_item(self, op: Op) -> dict[str, Any]:
        """``op`` as one element of ``TransactWriteItems``."""
        expression = _Expression()
        key = {KEY: {"S": op.key}}
        request: dict[str, Any] = {"TableName": self.table_name}
        if op.condition is not None:
            request["ConditionExpression"] = expression.condition(op.condition)
            request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        if isinstance(op, Put):
            request["Item"] = {**key, **{k: to_attribute(v) for k, v in op.item.items()}}
            return {"Put": expression.add_to(request)}
        request["Key"] = key
        if isinstance(op, Increment):
            # ADD treats a missing attribute (or item) as 0: atomic without a read.
            expression_text = f"ADD {expression.name(op.attribute)} {expression.value(op.by)}"
            assignments = [
                f"{expression.name(k)} = {expression.value(v)}" for k, v in op.values.items()
            ]
            if assignments:
                expression_text += " SET " + ", ".join(assignments)
            request["UpdateExpression"] = expression_text
            return {"Update": expression.add_to(request)}
        if isinstance(op, Update):
            assignments = [
                f"{expression.name(k)} = {expression.value(v)}" for k, v in op.values.items()
            ]
            request["UpdateExpression"] = "SET " + ", ".join(assignments)
            return {"Update": expression.add_to(request)}
        return {"Delete": expression.add_to(request)}

    def apply(self, ops: Sequence[Op], extra: Sequence[Any] = ()) -> Generator[Any, Any, None]:
        # Clients may skip botocore's own validation (the CLI's do): a write that is not
        # one action would then fail inside botocore, not as the record's fault.
        for index, write in enumerate(extra, start=len(ops)):
            if not (isinstance(write, Mapping) and len(write) == 1 and set(write) <= _ACTIONS):
                raise InvalidWriteError(
                    f"a sink write for ledger table '{self.table_name}' must be one of "
                    f"{', '.join(sorted(_ACTIONS))}, got {str(write)[:120]}",
                    indexes=[index],
                )
        items = [self.write_item(op) for op in ops] + list(extra)
        if not items:
            return
        try:
            yield from self._write(items, lone=len(items) == 1 and bool(ops))
        except AwsCallError as exc:
            if exc.code == "ValidationException":
                raise InvalidWriteError(str(exc)) from exc
            raise
        except ResourceNotFoundError:
            # The transaction names the ledger table as its resource; say which table is missing.
            yield from self._name_missing_table(items)
            raise

    def _write(self, items: list[dict[str, Any]], lone: bool) -> Generator[Any, Any, None]:
        if lone:
            kind, request = next(iter(items[0].items()))
            method = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}[kind]
            try:
                yield Call(method, request, self._resource, f"{kind}Item", "dynamodb")
            except ConditionFailedError as failed:
                raise LedgerConflict({0: _decoded(failed.item)}) from failed
            return
        try:
            yield Call(
                "transact_write_items",
                {"TransactItems": items},
                self._resource,
                "TransactWriteItems",
                "dynamodb",
            )
        except TransactionCanceledError as canceled:
            invalid = canceled.invalid_indexes()
            if invalid:
                raise InvalidWriteError(str(canceled), indexes=invalid) from canceled
            failed_at = canceled.failed_indexes()
            if not failed_at:
                raise
            raise LedgerConflict(
                {i: _decoded(canceled.reasons[i].get("Item")) for i in failed_at}
            ) from canceled

    def _name_missing_table(self, items: list[dict[str, Any]]) -> Generator[Any, Any, None]:
        tables = dict.fromkeys(request["TableName"] for item in items for request in item.values())
        for table in tables:
            kind = "ledger" if table == self.table_name else "sink"
            try:
                yield Call(
                    "describe_table",
                    {"TableName": table},
                    f"{kind} table '{table}'",
                    "DescribeTable",
                    "dynamodb",
                )
            except ResourceNotFoundError as missing:
                raise ResourceNotFoundError(
                    f"the {kind} table '{table}' does not exist (or is not visible to these "
                    "credentials): a commit writes to it",
                    resource=f"{kind} table '{table}'",
                ) from missing


def _key_of_one(key: Mapping[str, Mapping[str, Any]]) -> tuple[tuple[str, str, Any]] | None:
    """The (name, type, value) of a key of one attribute, the usual sink key, with no sort."""
    if len(key) == 1:
        ((name, attribute),) = key.items()
        if len(attribute) == 1:
            ((kind, value),) = attribute.items()
            return ((name, kind, value),)
    return None


def _key_parts(key: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, str, Any]]:
    """A key's (name, type, value) triples: hashable (key values are strings, numbers, bytes)."""
    for name, attribute in key.items():
        for kind, value in attribute.items():
            yield name, kind, value


def _decoded(item: Mapping[str, Any] | None) -> Item | None:
    return from_item(item) if item else None


def create_ledger_table(client: Any, table_name: str) -> None:
    """Create the ledger table (on-demand, TTL on ``expires_at``); harmless if it exists."""
    create_table(client, ledger_table_flow(table_name))


def ledger_table_flow(table_name: str) -> Generator[Any, Any, None]:
    """A flow that creates a ledger table (key ``pk``, TTL on ``expires_at``) and waits until it is
    active.
    """
    return create_table_flow(table_name, [(KEY, "HASH")], ttl_attribute=EXPIRES_AT)
