"""DynamoDB capacity units: item sizes by DynamoDB's rules, and a meter of one table's requests.

The size and unit rules are the ones the benchmarks bill by (``bench/_units.py``,
``bench/scale_sim.py``); :class:`TableMeter` applies them inside a worker
process, on its own client, to the requests it sends one table:

- a read unit covers 4 KB, rounded up per item for ``GetItem`` and over the whole
  page for ``Query``/``Scan``; an eventually consistent read costs half;
- a write unit covers 1 KB of the item written, rounded up (at least one): the
  item ``UpdateItem`` returns (``ALL_NEW``), the item ``PutItem`` sends, the old
  item a failed condition returns (``ALL_OLD``); a failed conditional write is
  billed as a write.

Sources: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html
and .../CapacityUnitCalculations.html (item sizes), read 2026-12.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

__all__ = [
    "READ_UNIT_BYTES",
    "WRITE_UNIT_BYTES",
    "TableMeter",
    "item_size",
    "read_units",
    "value_size",
    "write_units",
]

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096

_WRITES = ("PutItem", "UpdateItem", "DeleteItem")
_READS = ("GetItem", "Query", "Scan")
# Where the request's parameters wait, in botocore's per-request context, for its response.
_PARAMS = "kinesis_eo_table_meter_params"


def _number_size(text: str) -> int:
    """DynamoDB's size of a number: about a byte per two significant digits, plus one."""
    digits = text.lstrip("-").replace(".", "").lstrip("0").rstrip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value in the low-level form ({"S": ...}, {"N": ...}, ...)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return _number_size(str(inner))
    if kind == "B":
        return len(inner) if isinstance(inner, bytes | bytearray) else len(str(inner).encode())
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(_number_size(str(n)) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes of an item: every attribute's name and value."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def write_units(size: int, *, transactional: bool = False) -> int:
    """Write units of one item of ``size`` bytes: 1 KB each, rounded up (at least one)."""
    units = max(1, math.ceil(size / WRITE_UNIT_BYTES))
    return 2 * units if transactional else units


def read_units(size: int, *, consistent: bool, transactional: bool = False) -> float:
    """Read units of one item (or one Query/Scan page) of ``size`` bytes: 4 KB each, rounded up."""
    units = float(max(1, math.ceil(size / READ_UNIT_BYTES)))
    if transactional:
        return 2 * units
    return units if consistent else units / 2


class TableMeter:
    """Bills the requests a client sends one table (and its indexes), from each response.

    A botocore ``after-call.dynamodb`` hook: the request's parameters (kept in the
    request's context by a ``before-parameter-build`` hook) and its parsed response
    (or error) are all it reads. Requests naming no table (transactions)
    are not its table's alone, and are left out. Thread-safe: a worker's flows call
    from several threads.
    """

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self.read_units = 0.0
        self.write_units = 0.0
        self.requests = 0
        self._lock = threading.Lock()

    def attach(self, client: Any) -> Any:
        """Hook ``client``; returns it."""
        client.meta.events.register("before-parameter-build.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)
        return client

    def totals(self) -> dict[str, float]:
        """Units and requests billed so far."""
        with self._lock:
            return {
                "read_units": self.read_units,
                "write_units": self.write_units,
                "requests": self.requests,
            }

    def _before(self, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == self.table_name:
            context[_PARAMS] = params

    def _after(
        self, model: Any, parsed: Mapping[str, Any], context: Mapping[str, Any], **_: Any
    ) -> None:
        params = context.get(_PARAMS)
        if params is None:
            return
        read, write = self.bill(model.name, params, parsed)
        if not read and not write:
            return
        with self._lock:
            self.read_units += read
            self.write_units += write
            self.requests += 1

    @staticmethod
    def bill(
        operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]
    ) -> tuple[float, float]:
        """(read units, write units) of one request and its parsed response."""
        failed = bool(parsed.get("Error"))
        if operation in _WRITES:
            if failed and parsed["Error"].get("Code") != "ConditionalCheckFailedException":
                return 0.0, 0.0  # refused before any write: throttled, invalid, ...
            item = parsed.get("Attributes") or parsed.get("Item") or params.get("Item") or {}
            return 0.0, float(write_units(item_size(item)))
        if operation in _READS and not failed:
            consistent = bool(params.get("ConsistentRead"))
            if operation == "GetItem":
                item = parsed.get("Item")
                return read_units(item_size(item) if item else 0, consistent=consistent), 0.0
            size = sum(item_size(item) for item in parsed.get("Items", []))
            return read_units(size, consistent=consistent), 0.0
        return 0.0, 0.0
