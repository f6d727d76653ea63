"""DynamoDB capacity units from the requests a client really sends, and what they cost.

:class:`UnitMeter` hooks a boto3 DynamoDB client (botocore's
``before-parameter-build`` and ``after-call`` events) and charges every request
as DynamoDB bills it on an on-demand table:

- a write unit covers 1 KB of item, rounded up per item; an item of a
  ``TransactWriteItems`` costs twice as much (``ConditionCheck`` included, charged
  like a write of the checked item); a write is charged for the larger of the
  item before and after it, and a write whose condition fails is still charged;
- a read unit covers 4 KB of an item read strongly consistent, half a unit
  eventually consistent, rounded up per item for ``GetItem``/``BatchGetItem``
  (a key with no item still costs the minimum), over the whole page for
  ``Query``/``Scan``; a transactional read costs twice.

Item sizes follow DynamoDB's rules (attribute names plus values; a number is
about one byte per two significant digits plus one). The size of an item before
an update is what the meter saw written to it earlier in the run (a shadow of
each item's attribute sizes), so a ``SET`` on an existing item is charged on the
merged item, as DynamoDB does.

Sources, read 2026-12 (the prices are the list prices since the on-demand price
cut of 2024-11-01):

- units: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html
  and https://aws.amazon.com/dynamodb/pricing/on-demand/ ("Key terms");
- prices: us-east-1, on-demand, $0.625 per million write request units and
  $0.125 per million read request units (the on-demand pricing page; AWS's
  announcement of the 50 % cut of November 2024).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The size and unit rules live with the worker-side meter, so both bill alike.
from kinesis_eo.harness.capacity import (
    READ_UNIT_BYTES,
    WRITE_UNIT_BYTES,
    item_size,
    read_units,
    value_size,
    write_units,
)

USD_PER_MILLION_WRITE_UNITS = 0.625
USD_PER_MILLION_READ_UNITS = 0.125
PRICES_AS_OF = "2024-11-01 (us-east-1, on-demand list prices)"

__all__ = [
    "READ_UNIT_BYTES",
    "WRITE_UNIT_BYTES",
    "UnitMeter",
    "Units",
    "item_size",
    "read_units",
    "usd_per_million_records",
    "value_size",
    "write_units",
]


def usd_per_million_records(write_units_per_record: float, read_units_per_record: float) -> float:
    """On-demand list price of a million records at these units per record."""
    return (
        write_units_per_record * USD_PER_MILLION_WRITE_UNITS
        + read_units_per_record * USD_PER_MILLION_READ_UNITS
    )


# --- update expressions ----------------------------------------------------------------------

_CLAUSE = re.compile(r"\b(SET|ADD|REMOVE|DELETE)\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r":[A-Za-z0-9_]+")


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _name(path: str, names: Mapping[str, str]) -> str:
    top = re.split(r"[.\[]", path.strip(), maxsplit=1)[0]
    return names.get(top, top)


def updated_attributes(
    expression: str, names: Mapping[str, str], values: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, int], set[str]]:
    """(attribute -> new value size, attributes removed) of an ``UpdateExpression``."""
    sizes: dict[str, int] = {}
    removed: set[str] = set()
    pieces = _CLAUSE.split(expression)
    for keyword, body in zip(pieces[1::2], pieces[2::2], strict=True):
        for action in _split_top(body):
            keyword_upper = keyword.upper()
            if keyword_upper == "REMOVE":
                removed.add(_name(action, names))
                continue
            if keyword_upper == "SET":
                path, _, expr = action.partition("=")
            else:  # ADD / DELETE: "path :value"
                path, _, expr = action.partition(" ")
            placeholders = _PLACEHOLDER.findall(expr)
            size = max((value_size(values[p]) for p in placeholders if p in values), default=1)
            sizes[_name(path, names)] = size
    return sizes, removed


# --- the meter -------------------------------------------------------------------------------


@dataclass
class Units:
    """Units charged so far, by kind."""

    write: float = 0.0
    read: float = 0.0
    by_operation: dict[str, float] = field(default_factory=dict)

    def charge(self, operation: str, *, write: float = 0.0, read: float = 0.0) -> None:
        self.write += write
        self.read += read
        self.by_operation[operation] = self.by_operation.get(operation, 0.0) + write + read


class UnitMeter:
    """Charges the capacity units of every DynamoDB request a hooked client sends.

    The hooks only note each request and its outcome; the charging happens when
    :attr:`units` is read, after the timed pass, so the meter costs the measured
    client next to nothing.
    """

    def __init__(self) -> None:
        self._units = Units()
        # table -> key attribute names, learned from CreateTable requests (or guessed).
        self.key_schemas: dict[str, tuple[str, ...]] = {}
        # (table, key) -> attribute sizes, as this meter last saw the item written.
        self.items: dict[tuple[str, str], dict[str, int]] = {}
        self._pending: list[tuple[str, str, dict[str, int] | None]] = []
        # The request in flight on each thread (lanes and read-ahead call from several).
        self._thread = threading.local()
        self._log: list[tuple[str, dict[str, Any], bool, Mapping[str, Any]]] = []

    def attach(self, client: Any) -> Any:
        events = client.meta.events
        events.register("before-parameter-build.dynamodb", self._before)
        events.register("after-call.dynamodb", self._after)
        return client

    @property
    def units(self) -> Units:
        """Units of every request noted since the last :meth:`reset`."""
        log, self._log = self._log, []
        for operation, params, ok, parsed in log:
            self._charge(operation, params, ok, parsed)
        return self._units

    def reset(self) -> None:
        _ = self.units  # what came before still shapes the items' sizes
        self._units = Units()

    # --- hooks ---------------------------------------------------------------------------------

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self._thread.request = (model.name, params)

    def _after(self, http_response: Any, parsed: Mapping[str, Any], model: Any, **_: Any) -> None:
        request = getattr(self._thread, "request", None)
        if request is None or request[0] != model.name:
            return
        ok = not parsed.get("Error") and getattr(http_response, "status_code", 200) < 300
        operation, params = request
        self._log.append((operation, params, ok, parsed))
        self._thread.request = None

    def _charge(
        self, operation: str, params: Mapping[str, Any], ok: bool, parsed: Mapping[str, Any]
    ) -> None:
        self._pending = []
        if operation == "CreateTable":
            schema = params.get("KeySchema", [])
            self.key_schemas[params["TableName"]] = tuple(k["AttributeName"] for k in schema)
            return
        if operation == "TransactWriteItems":
            for item in params.get("TransactItems", []):
                ((kind, request),) = item.items()
                self._charge_write(operation, kind, request, transactional=True)
        elif operation == "BatchWriteItem":
            for table, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    ((kind, inner),) = request.items()
                    kind = "Put" if kind == "PutRequest" else "Delete"
                    self._charge_write(operation, kind, {"TableName": table, **inner})
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            self._charge_write(operation, operation.removesuffix("Item"), params)
        elif ok:
            self._charge_read(operation, params, parsed)
        if ok:
            for table, key, after in self._pending:
                if after is None:
                    self.items.pop((table, key), None)
                else:
                    self.items[(table, key)] = after
        self._pending = []

    # --- writes ------------------------------------------------------------------------------

    def _key(self, table: str, attributes: Mapping[str, Any]) -> str:
        names = self.key_schemas.get(table)
        if names is None or not all(n in attributes for n in names):
            names = tuple(n for n in ("pk", "id", "leaseKey") if n in attributes)[:1]
        return json.dumps({n: attributes[n] for n in names}, sort_keys=True, default=str)

    def _charge_write(
        self, operation: str, kind: str, request: Mapping[str, Any], *, transactional: bool = False
    ) -> None:
        table = request["TableName"]
        if kind == "Put":
            item = request["Item"]
            key = self._key(table, item)
            after: dict[str, int] | None = {
                name: len(name.encode()) + value_size(v) for name, v in item.items()
            }
        else:
            attributes = request["Key"]
            key = self._key(table, attributes)
            after = None
        before = self.items.get((table, key))
        if kind == "Update":
            after = dict(before) if before else {}
            for name, value in request["Key"].items():
                after[name] = len(name.encode()) + value_size(value)
            sizes, removed = updated_attributes(
                request.get("UpdateExpression", ""),
                request.get("ExpressionAttributeNames", {}),
                request.get("ExpressionAttributeValues", {}),
            )
            for name, size in sizes.items():
                after[name] = len(name.encode()) + size
            for name in removed:
                after.pop(name, None)
        elif kind == "ConditionCheck":
            after = before
        size = max(sum(before.values()) if before else 0, sum(after.values()) if after else 0)
        self._units.charge(operation, write=write_units(size, transactional=transactional))
        if kind != "ConditionCheck":
            self._pending.append((table, key, after))

    # --- reads -------------------------------------------------------------------------------

    def _charge_read(
        self, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]
    ) -> None:
        if operation == "GetItem":
            item = parsed.get("Item")
            size = item_size(item) if item else 0
            consistent = bool(params.get("ConsistentRead"))
            self._units.charge(operation, read=read_units(size, consistent=consistent))
        elif operation == "BatchGetItem":
            for table, request in params.get("RequestItems", {}).items():
                consistent = bool(request.get("ConsistentRead"))
                found = parsed.get("Responses", {}).get(table, [])
                unprocessed = parsed.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                missing = len(request.get("Keys", [])) - len(found) - len(unprocessed)
                for item in found:
                    self._units.charge(
                        operation, read=read_units(item_size(item), consistent=consistent)
                    )
                for _ in range(max(0, missing)):
                    self._units.charge(operation, read=read_units(0, consistent=consistent))
        elif operation in ("Query", "Scan"):
            size = sum(item_size(item) for item in parsed.get("Items", []))
            consistent = bool(params.get("ConsistentRead"))
            self._units.charge(operation, read=read_units(size, consistent=consistent))
        elif operation == "TransactGetItems":
            for response in parsed.get("Responses", []):
                item = response.get("Item")
                size = item_size(item) if item else 0
                self._units.charge(
                    operation, read=read_units(size, consistent=True, transactional=True)
                )
