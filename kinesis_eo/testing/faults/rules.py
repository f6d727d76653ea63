"""What to inject: kinds of fault, schedules, rules, and the log of what was injected."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "ANY_OPERATION",
    "ENTRY_KINDS",
    "PUT_RECORDS",
    "Always",
    "FaultKind",
    "Injection",
    "NextCalls",
    "NthCall",
    "Probability",
    "Rule",
    "Schedule",
    "injected_entries",
]

ANY_OPERATION = "*"
PUT_RECORDS = "PutRecords"


class FaultKind(Enum):
    """What a fault rule does to a call: an error response, a lost connection, or a `PutRecords`
    entry failure.
    """

    ERROR_RESPONSE = "error_response"
    CONNECTION_REFUSED = "connection_refused"
    """The request never reached the service: safe to repeat."""
    CONNECTION_LOST = "connection_lost"
    """The service processed the request but the response was lost: repeating may duplicate."""
    ENTRY_NOT_STORED = "entry_not_stored"
    ENTRY_STORED_REPORTED_FAILED = "entry_stored_reported_failed"


ENTRY_KINDS = frozenset({FaultKind.ENTRY_NOT_STORED, FaultKind.ENTRY_STORED_REPORTED_FAILED})


# --- schedules: which calls of an operation a rule hits ---------------------------------------


@dataclass(frozen=True, slots=True)
class Always:
    """A schedule that fires on every call of the operation."""

    def fires(self, seen: int, applied: int, rng: random.Random) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Probability:
    """Each call independently, with probability ``p``, drawn from the injector's seeded RNG."""

    p: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"a probability is between 0 and 1, got {self.p}")

    def fires(self, seen: int, applied: int, rng: random.Random) -> bool:
        return rng.random() < self.p


@dataclass(frozen=True, slots=True, init=False)
class NthCall:
    """The given calls of the operation, counted from 1 since the rule was added."""

    numbers: frozenset[int]

    def __init__(self, *numbers: int) -> None:
        if not numbers or any(n < 1 for n in numbers):
            raise ValueError(f"call numbers start at 1, got {numbers}")
        object.__setattr__(self, "numbers", frozenset(numbers))

    def fires(self, seen: int, applied: int, rng: random.Random) -> bool:
        return seen in self.numbers


@dataclass(frozen=True, slots=True)
class NextCalls:
    """The next ``count`` calls of the operation that no earlier rule took."""

    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")

    def fires(self, seen: int, applied: int, rng: random.Random) -> bool:
        return applied < self.count


Schedule = Always | Probability | NthCall | NextCalls


@dataclass(eq=False)
class Rule:
    """One kind of fault on one operation. Returned by the injector so that a test can turn it off.

    ``seen`` counts the calls of the operation since the rule was added,
    ``applied`` the calls it hit.
    """

    operation: str
    kind: FaultKind
    schedule: Schedule
    error_code: str | None = None
    message: str | None = None
    status_code: int = 400
    entries: tuple[int, ...] | float | None = None
    enabled: bool = True
    seen: int = 0
    applied: int = 0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def matches(self, operation: str) -> bool:
        return self.operation in (operation, ANY_OPERATION)


@dataclass(frozen=True, slots=True)
class Injection:
    """A fault the client really saw, for the test to assert on.

    For entry faults, ``indexes`` are positions in the request the caller made
    and ``records`` those entries as the caller sent them.
    """

    operation: str
    call_number: int
    kind: FaultKind
    error_code: str | None = None
    indexes: tuple[int, ...] = ()
    records: tuple[Mapping[str, Any], ...] = ()


def injected_entries(log: Sequence[Injection], kind: FaultKind) -> list[Mapping[str, Any]]:
    """Every PutRecords entry that suffered ``kind``, in the order it happened."""
    return [record for injection in log if injection.kind is kind for record in injection.records]
