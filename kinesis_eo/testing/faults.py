"""Fault injection on botocore clients, for the failures that no emulator produces.

moto, kinesis-mock and kinesalite never throttle, never fail part of a
``PutRecords`` call and never drop a connection, yet those are exactly the
failures that make records arrive twice. A :class:`FaultInjector` produces them
on the *client* side, through botocore's event hooks, so the same code works
with a boto3 client and with an aiobotocore client (whose emitter awaits
coroutine handlers and calls plain ones), in front of any back-end::

    faults = FaultInjector(seed=7)
    faults.fail("PutRecords", "ProvisionedThroughputExceededException", schedule=NextCalls(2))
    faults.fail_stored_entries(entries=0.1, schedule=Probability(0.5))
    faults.attach(kinesis_client)

How each fault is made:

- error responses and refused connections: a ``before-call`` handler answers
  instead of the endpoint (a ``(response, parsed)`` tuple) or raises, so the
  request is never sent and botocore's own retries never see it;
- a connection lost *after* the request was processed: an ``after-call``
  handler raises once the real response is in (the call took effect, the
  caller cannot know);
- ``PutRecords`` entries *not stored*: a ``before-parameter-build`` handler
  removes them from the request, the ``after-call`` handler puts failure
  entries back at their original indexes;
- ``PutRecords`` entries *stored but reported failed*: the request goes
  through whole and the ``after-call`` handler turns chosen successes into
  failures; a producer that retries them stores them twice.

Every random choice is drawn from one ``random.Random(seed)`` while the call's
parameters are built, in call order, so the same seed and the same sequence
of calls give the same faults.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

__all__ = [
    "ANY_OPERATION",
    "Always",
    "FaultInjector",
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

# The key under which a call's plan travels from one hook to the next: botocore
# hands the same per-call ``context`` dict to every hook of one API call.
_CONTEXT_KEY = "kinesis_eo_fault"

_SERVER_ERROR_STATUS = {
    "InternalFailure": 500,
    "InternalServerError": 500,
    "InternalError": 500,
    "ServiceUnavailable": 503,
    "ServiceUnavailableException": 503,
}

_ENTRY_MESSAGES = {
    "ProvisionedThroughputExceededException": "Rate exceeded for shard in stream (injected).",
    "InternalFailure": "Internal service failure (injected).",
}


class FaultKind(Enum):
    ERROR_RESPONSE = "error_response"
    CONNECTION_REFUSED = "connection_refused"
    """The request never reached the service: safe to repeat."""
    CONNECTION_LOST = "connection_lost"
    """The service processed the request but the response was lost: repeating may duplicate."""
    ENTRY_NOT_STORED = "entry_not_stored"
    ENTRY_STORED_REPORTED_FAILED = "entry_stored_reported_failed"


_ENTRY_KINDS = frozenset({FaultKind.ENTRY_NOT_STORED, FaultKind.ENTRY_STORED_REPORTED_FAILED})


# --- schedules: which calls of an operation a rule hits ---------------------------------------


@dataclass(frozen=True, slots=True)
class Always:
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


@dataclass(frozen=True, slots=True)
class _InjectedResponse:
    """What botocore's ``_make_api_call`` reads from the HTTP response of a short-circuited call."""

    url: str
    status_code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""


@dataclass
class _CallPlan:
    rule: Rule
    operation: str
    call_number: int
    indexes: tuple[int, ...] = ()
    records: tuple[Mapping[str, Any], ...] = ()
    request_size: int = 0
    all_dropped: bool = False
    url: str = ""


class _EventEmitter(Protocol):
    def register(self, event_name: str, handler: Any, unique_id: Any = ...) -> None: ...
    def unregister(self, event_name: str, handler: Any = ..., unique_id: Any = ...) -> None: ...


class FaultInjector:
    """Injects throttling, errors, lost connections and partial PutRecords failures.

    Rules are checked in the order they were added; the first one whose
    schedule fires hits the call, so a call suffers at most one fault.
    ``calls`` counts the calls seen per operation, ``injected`` the faults per
    kind (calls for call faults, entries for entry faults), ``log`` lists them.
    """

    def __init__(self, seed: int | None = 0) -> None:
        self.rng = random.Random(seed)
        self.rules: list[Rule] = []
        self.calls: Counter[str] = Counter()
        self.injected: Counter[FaultKind] = Counter()
        self.log: list[Injection] = []
        # Sync workers may share one injector between threads; the RNG and counters must not tear.
        self._lock = threading.Lock()

    # --- attaching ---------------------------------------------------------------------------

    def _handlers(self) -> list[tuple[str, Any, str]]:
        prefix = f"kinesis_eo.faults.{id(self)}"
        return [
            ("before-parameter-build", self._on_before_parameter_build, f"{prefix}.build"),
            ("before-call", self._on_before_call, f"{prefix}.call"),
            ("after-call", self._on_after_call, f"{prefix}.after"),
        ]

    def attach(self, client: Any) -> FaultInjector:
        """Hook into a boto3 or aiobotocore client (idempotent); returns the injector."""
        events: _EventEmitter = client.meta.events
        for event_name, handler, unique_id in self._handlers():
            events.register(event_name, handler, unique_id=unique_id)
        return self

    def detach(self, client: Any) -> None:
        events: _EventEmitter = client.meta.events
        for event_name, _handler, unique_id in self._handlers():
            events.unregister(event_name, unique_id=unique_id)

    # --- rules -------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            self.rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def fail(
        self,
        operation: str,
        code: str,
        *,
        schedule: Schedule | None = None,
        message: str | None = None,
        status_code: int | None = None,
    ) -> Rule:
        """Answer calls with an AWS error response instead of sending them.

        The client raises the modeled exception class for ``code`` when the
        service has one (``client.exceptions.ProvisionedThroughputExceededException``),
        else a plain ``ClientError``.
        """
        status = status_code if status_code is not None else _SERVER_ERROR_STATUS.get(code, 400)
        if status < 400:
            raise ValueError(f"an error response needs a status of 400 or more, got {status}")
        return self.add(
            Rule(
                operation,
                FaultKind.ERROR_RESPONSE,
                schedule or Always(),
                error_code=code,
                message=message,
                status_code=status,
            )
        )

    def throttle(
        self,
        operation: str,
        *,
        schedule: Schedule | None = None,
        code: str = "ProvisionedThroughputExceededException",
    ) -> Rule:
        return self.fail(operation, code, schedule=schedule)

    def disconnect(
        self, operation: str, *, schedule: Schedule | None = None, after_send: bool = False
    ) -> Rule:
        """Fail calls with a connection error.

        ``after_send=False``: ``EndpointConnectionError``, nothing reached the
        service. ``after_send=True``: the call is processed for real, then
        ``ConnectionClosedError`` is raised, as when a response is lost.
        """
        kind = FaultKind.CONNECTION_LOST if after_send else FaultKind.CONNECTION_REFUSED
        return self.add(Rule(operation, kind, schedule or Always()))

    def drop_entries(
        self,
        *,
        entries: Iterable[int] | float,
        schedule: Schedule | None = None,
        code: str = "ProvisionedThroughputExceededException",
    ) -> Rule:
        """PutRecords entries that are *not stored* and reported failed with ``code``.

        ``entries`` is either the indexes to hit in each chosen call (those past
        the end of the request are ignored) or a probability per entry.
        """
        return self._entry_rule(FaultKind.ENTRY_NOT_STORED, entries, schedule, code)

    def fail_stored_entries(
        self,
        *,
        entries: Iterable[int] | float,
        schedule: Schedule | None = None,
        code: str = "ProvisionedThroughputExceededException",
    ) -> Rule:
        """PutRecords entries that *are stored* but reported failed with ``code``.

        Only entries that the service stored are flipped; a retrying producer
        then stores them a second time.
        """
        return self._entry_rule(FaultKind.ENTRY_STORED_REPORTED_FAILED, entries, schedule, code)

    def _entry_rule(
        self,
        kind: FaultKind,
        entries: Iterable[int] | float,
        schedule: Schedule | None,
        code: str,
    ) -> Rule:
        choice: tuple[int, ...] | float
        if isinstance(entries, int):
            # Ambiguous: index 1 or probability 1? Make the caller say which.
            raise TypeError("give entry indexes as a sequence ([1]) or a probability as a float")
        if isinstance(entries, float):
            choice = entries
            if not 0.0 <= choice <= 1.0:
                raise ValueError(f"an entry probability is between 0 and 1, got {entries}")
        else:
            choice = tuple(sorted(set(entries)))
            if not choice or choice[0] < 0:
                raise ValueError(f"entry indexes must be non-negative and not empty: {choice}")
        return self.add(
            Rule(PUT_RECORDS, kind, schedule or Always(), error_code=code, entries=choice)
        )

    # --- hooks -------------------------------------------------------------------------------

    def _choose(self, operation: str) -> Rule | None:
        chosen: Rule | None = None
        for rule in self.rules:
            if not rule.matches(operation):
                continue
            rule.seen += 1
            if (
                chosen is None
                and rule.enabled
                and rule.schedule.fires(rule.seen, rule.applied, self.rng)
            ):
                rule.applied += 1
                chosen = rule
        return chosen

    def _pick_entries(self, rule: Rule, size: int) -> tuple[int, ...]:
        if isinstance(rule.entries, float):
            # One draw per entry, always, so that the RNG stream does not depend on earlier picks.
            draws = [self.rng.random() for _ in range(size)]
            return tuple(i for i, draw in enumerate(draws) if draw < rule.entries)
        return tuple(i for i in rule.entries or () if i < size)

    def _record(self, plan: _CallPlan, kind: FaultKind, count: int = 1, **details: Any) -> None:
        with self._lock:
            self.injected[kind] += count
            self.log.append(
                Injection(plan.operation, plan.call_number, kind, plan.rule.error_code, **details)
            )

    def _on_before_parameter_build(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        operation: str = model.name
        records: list[Mapping[str, Any]] = list(params.get("Records") or ())
        with self._lock:
            self.calls[operation] += 1
            rule = self._choose(operation)
            if rule is None:
                return
            plan = _CallPlan(rule, operation, self.calls[operation])
            if rule.kind in _ENTRY_KINDS:
                plan.request_size = len(records)
                plan.indexes = self._pick_entries(rule, len(records))
                plan.records = tuple(records[i] for i in plan.indexes)
                if not plan.indexes:
                    return
        if rule.kind is FaultKind.ENTRY_NOT_STORED:
            if len(plan.indexes) == len(records):
                # PutRecords needs at least one entry, so an all-dropped request is not sent at all.
                plan.all_dropped = True
            else:
                dropped = set(plan.indexes)
                # A new list: the caller's list is shared with ``params`` and must stay intact.
                params["Records"] = [r for i, r in enumerate(records) if i not in dropped]
        context[_CONTEXT_KEY] = plan

    def _on_before_call(
        self, params: Mapping[str, Any], context: dict[str, Any], **_: Any
    ) -> tuple[_InjectedResponse, dict[str, Any]] | None:
        plan: _CallPlan | None = context.get(_CONTEXT_KEY)
        if plan is None:
            return None
        plan.url = str(params.get("url", ""))
        kind = plan.rule.kind
        if kind is FaultKind.CONNECTION_REFUSED:
            self._record(plan, kind)
            raise EndpointConnectionError(endpoint_url=plan.url)
        if kind is FaultKind.ERROR_RESPONSE:
            self._record(plan, kind)
            return self._error_response(plan)
        if plan.all_dropped:
            return _InjectedResponse(plan.url, 200), {
                "FailedRecordCount": 0,
                "Records": [],
                "ResponseMetadata": self._metadata(plan, 200),
            }
        return None

    def _on_after_call(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        plan: _CallPlan | None = context.get(_CONTEXT_KEY)
        if plan is None or plan.rule.kind is FaultKind.ERROR_RESPONSE:
            return
        if http_response.status_code >= 300:
            # The service refused the call itself; the caller sees that error, not our fault.
            return
        kind = plan.rule.kind
        if kind is FaultKind.CONNECTION_LOST:
            self._record(plan, kind)
            raise ConnectionClosedError(endpoint_url=plan.url)
        if kind is FaultKind.ENTRY_NOT_STORED:
            self._reinsert_dropped(plan, parsed)
        elif kind is FaultKind.ENTRY_STORED_REPORTED_FAILED:
            self._flip_stored(plan, parsed)

    def _entry_failure(self, rule: Rule) -> dict[str, str]:
        code = rule.error_code or "InternalFailure"
        return {"ErrorCode": code, "ErrorMessage": _ENTRY_MESSAGES.get(code, f"{code} (injected)")}

    def _reinsert_dropped(self, plan: _CallPlan, parsed: dict[str, Any]) -> None:
        sent = iter(parsed.get("Records", []))
        dropped = set(plan.indexes)
        merged = [
            self._entry_failure(plan.rule) if i in dropped else next(sent)
            for i in range(plan.request_size)
        ]
        parsed["Records"] = merged
        parsed["FailedRecordCount"] = sum(1 for entry in merged if "ErrorCode" in entry)
        self._record(
            plan,
            FaultKind.ENTRY_NOT_STORED,
            len(plan.indexes),
            indexes=plan.indexes,
            records=plan.records,
        )

    def _flip_stored(self, plan: _CallPlan, parsed: dict[str, Any]) -> None:
        entries: list[dict[str, Any]] = parsed.get("Records", [])
        flipped = tuple(
            i for i in plan.indexes if i < len(entries) and "ErrorCode" not in entries[i]
        )
        if not flipped:
            return
        for i in flipped:
            entries[i] = self._entry_failure(plan.rule)
        parsed["FailedRecordCount"] = sum(1 for entry in entries if "ErrorCode" in entry)
        position = {index: n for n, index in enumerate(plan.indexes)}
        self._record(
            plan,
            FaultKind.ENTRY_STORED_REPORTED_FAILED,
            len(flipped),
            indexes=flipped,
            records=tuple(plan.records[position[i]] for i in flipped),
        )

    def _metadata(self, plan: _CallPlan, status: int) -> dict[str, Any]:
        return {
            "RequestId": f"injected-{plan.operation}-{plan.call_number}",
            "HTTPStatusCode": status,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        }

    def _error_response(self, plan: _CallPlan) -> tuple[_InjectedResponse, dict[str, Any]]:
        rule = plan.rule
        code = rule.error_code or "InternalFailure"
        message = rule.message or f"{code} (injected)"
        return _InjectedResponse(plan.url, rule.status_code), {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": self._metadata(plan, rule.status_code),
        }


def injected_entries(log: Sequence[Injection], kind: FaultKind) -> list[Mapping[str, Any]]:
    """Every PutRecords entry that suffered ``kind``, in the order it happened."""
    return [record for injection in log if injection.kind is kind for record in injection.records]
