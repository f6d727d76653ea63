"""The botocore side of fault injection: three event hooks and what they do to a call.

How each fault is made is described in :mod:`kinesis_eo.testing.faults`.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

from kinesis_eo.testing.faults.rules import ENTRY_KINDS, FaultKind, Injection, Rule

__all__ = ["EventEmitter", "FaultHooks"]

# The key under which a call's plan travels from one hook to the next: botocore
# hands the same per-call ``context`` dict to every hook of one API call.
_CONTEXT_KEY = "kinesis_eo_fault"

_ENTRY_MESSAGES = {
    "ProvisionedThroughputExceededException": "Rate exceeded for shard in stream (injected).",
    "InternalFailure": "Internal service failure (injected).",
}


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


class EventEmitter(Protocol):
    """The part of a botocore client's event emitter that attaching uses."""

    def register(self, event_name: str, handler: Any, unique_id: Any = ...) -> None: ...
    def unregister(self, event_name: str, handler: Any = ..., unique_id: Any = ...) -> None: ...


class FaultHooks:
    """An injector's state, and the hooks that choose a rule per call and apply its fault.

    :class:`~kinesis_eo.testing.faults.FaultInjector` adds the rules and attaches the hooks.
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
            if rule.kind in ENTRY_KINDS:
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
