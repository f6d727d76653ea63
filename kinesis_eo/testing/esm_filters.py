"""An event source mapping's ``FilterCriteria`` for Kinesis, as the simulator applies it.

A Kinesis mapping filters on the ``data`` key only: each filter's pattern is
``{"data": {...}}`` over the record's data decoded as JSON. A record matches
when any filter matches; one that matches none is dropped and counts as
processed (the mapping moves past it without invoking the function). A
record whose data is not JSON (a KPL aggregate, plain text) matches no
pattern. The pattern syntax is the documented one:

- a field's list of values: the field equals one of them (strings, numbers,
  ``null``; for a list field, any element does);
- ``{"prefix": "ab"}``, ``{"suffix": ".png"}``, ``{"equals-ignore-case": "x"}``;
- ``{"numeric": [">", 0, "<=", 5]}`` (``=``, ``<``, ``<=``, ``>``, ``>=``);
- ``{"exists": true}`` / ``{"exists": false}``;
- ``{"anything-but": v}`` or ``{"anything-but": [v, ...]}``, and
  ``{"anything-but": {"prefix": "x"}}``;
- nested objects match nested fields.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["FilterCriteria", "matches"]

_MISSING = object()
_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _equal(rule: Any, value: Any) -> bool:
    if isinstance(rule, bool) or isinstance(value, bool) or rule is None or value is None:
        return rule is value
    left, right = _number(rule), _number(value)
    if left is not None and right is not None:
        return left == right
    return type(rule) is type(value) and bool(rule == value)


def _numeric(rule: Sequence[Any], value: Any) -> bool:
    number = _number(value)
    if number is None:
        return False
    pairs = zip(rule[0::2], rule[1::2], strict=True)
    return all(_NUMERIC[op](number, float(bound)) for op, bound in pairs)


def _anything_but(rule: Any, value: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(rule, Mapping) and "prefix" in rule:
        return not (isinstance(value, str) and value.startswith(rule["prefix"]))
    excluded = rule if isinstance(rule, list) else [rule]
    return value not in excluded


def _one(rule: Any, value: Any) -> bool:
    """Whether ``value`` (``_MISSING`` if the field is absent) satisfies one rule of a list."""
    if not isinstance(rule, Mapping):
        if value is _MISSING:
            return False
        if isinstance(value, list):
            return any(_one(rule, v) for v in value)
        return _equal(rule, value)
    if "exists" in rule:
        return (value is not _MISSING) == bool(rule["exists"])
    if value is _MISSING:
        return False
    if isinstance(value, list):
        return any(_one(rule, v) for v in value)
    if "prefix" in rule:
        return isinstance(value, str) and value.startswith(rule["prefix"])
    if "suffix" in rule:
        return isinstance(value, str) and value.endswith(rule["suffix"])
    if "equals-ignore-case" in rule:
        wanted = str(rule["equals-ignore-case"])
        return isinstance(value, str) and value.lower() == wanted.lower()
    if "numeric" in rule:
        return _numeric(rule["numeric"], value)
    if "anything-but" in rule:
        return _anything_but(rule["anything-but"], value)
    raise ValueError(f"filter rule {dict(rule)!r} is not one the event source mapping knows")


def matches(pattern: Mapping[str, Any], document: Any) -> bool:
    """Whether ``document`` satisfies ``pattern`` (every field of it)."""
    for name, rule in pattern.items():
        value = document.get(name, _MISSING) if isinstance(document, Mapping) else _MISSING
        if isinstance(rule, Mapping):
            if not matches(rule, value if isinstance(value, Mapping) else {}):
                return False
        elif isinstance(rule, list):
            if not any(_one(r, value) for r in rule):
                return False
        else:
            raise ValueError(f"filter field {name!r} must hold a list of rules or an object")
    return True


class FilterCriteria:
    """The mapping's ``FilterCriteria``: patterns (JSON text or objects), any of which admits.

    Patterns are checked when the criteria are made: a Kinesis pattern may
    only name ``data``.
    """

    def __init__(self, patterns: Sequence[str | Mapping[str, Any]]) -> None:
        self.patterns: list[Mapping[str, Any]] = []
        for pattern in patterns:
            parsed = json.loads(pattern) if isinstance(pattern, str) else pattern
            if not isinstance(parsed, Mapping) or set(parsed) - {"data"}:
                raise ValueError(
                    f"a Kinesis event source mapping filters on 'data' only, got {pattern!r}"
                )
            self.patterns.append(parsed)

    def admits(self, data: bytes) -> bool:
        """Whether a record with this data reaches the function."""
        if not self.patterns:
            return True
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            return False
        return any(matches(p, {"data": document}) for p in self.patterns)
