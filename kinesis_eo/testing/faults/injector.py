"""The fault injector: rules to add, and the client to attach them to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kinesis_eo.testing.faults.hooks import EventEmitter, FaultHooks
from kinesis_eo.testing.faults.rules import PUT_RECORDS, Always, FaultKind, Rule, Schedule

__all__ = ["FaultInjector"]

_SERVER_ERROR_STATUS = {
    "InternalFailure": 500,
    "InternalServerError": 500,
    "InternalError": 500,
    "ServiceUnavailable": 503,
    "ServiceUnavailableException": 503,
}


class FaultInjector(FaultHooks):
    """Injects throttling, errors, lost connections and partial PutRecords failures.

    Rules are checked in the order they were added; the first one whose
    schedule fires hits the call, so a call suffers at most one fault.
    ``calls`` counts the calls seen per operation, ``injected`` the faults per
    kind (calls for call faults, entries for entry faults), ``log`` lists them.
    """

    def attach(self, client: Any) -> FaultInjector:
        """Hook into a boto3 or aiobotocore client (idempotent); returns the injector."""
        events: EventEmitter = client.meta.events
        for event_name, handler, unique_id in self._handlers():
            events.register(event_name, handler, unique_id=unique_id)
        return self

    def detach(self, client: Any) -> None:
        events: EventEmitter = client.meta.events
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
