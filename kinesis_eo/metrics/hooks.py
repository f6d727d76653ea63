"""Throttles and retries per AWS service, counted from a client's botocore events.

botocore retries inside one API call (its own retry handler) and kinesis_eo
retries API calls (tenacity, then outage pauses), so neither layer alone
sees every failed attempt. The client's events do:

- ``response-received`` fires for every HTTP attempt botocore makes, with
  the parsed response or the exception (a lost connection);
- ``after-call`` fires once per API call, also when a ``before-call`` hook
  answered it without sending (fault injection, stubs): an attempt that
  ``response-received`` did not see is counted there.

An attempt answered with a throttling error code counts ``throttles`` and
``retries``; any other retryable failure (a 5xx, a transient error code, a
transaction canceled for conflicts or throttling, a connection that failed)
counts ``retries``. The ``service`` dimension is the client's service name
(``kinesis``, ``dynamodb``). The hooks work on boto3 and aiobotocore clients
alike: aiobotocore calls plain functions as botocore does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from kinesis_eo.errors import THROTTLING_CODES, TRANSIENT_CANCELLATION_CODES, TRANSIENT_CODES
from kinesis_eo.metrics import catalogue as names
from kinesis_eo.metrics.model import Metrics

__all__ = ["attach_call_metrics", "classify_attempt", "detach_call_metrics"]

# The key under which an attempt seen by response-received is remembered for after-call:
# botocore hands the same per-call ``context`` dict to both.
_SEEN = "kinesis_eo_metrics_seen"
_CONNECTION_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ReadTimeoutError,
    ConnectTimeoutError,
    HTTPClientError,
)
_THROTTLED_CANCELLATIONS = frozenset(TRANSIENT_CANCELLATION_CODES - {"TransactionConflict"})


def classify_attempt(
    status: int | None, parsed: Mapping[str, Any] | None, exception: BaseException | None
) -> tuple[bool, bool]:
    """(throttled, retryable) for one attempt's HTTP status, parsed body or exception."""
    if exception is not None:
        return False, isinstance(exception, _CONNECTION_ERRORS)
    if status is None or status < 300 or parsed is None:
        return False, False
    code = str((parsed.get("Error") or {}).get("Code") or "")
    if code in THROTTLING_CODES:
        return True, True
    if code == "TransactionCanceledException":
        reasons = {str(r.get("Code", "None")) for r in parsed.get("CancellationReasons") or ()}
        reasons.discard("None")
        throttled = bool(reasons & _THROTTLED_CANCELLATIONS)
        return throttled, bool(reasons) and reasons <= TRANSIENT_CANCELLATION_CODES
    return False, code in TRANSIENT_CODES or status >= 500


class _CallCounter:
    def __init__(self, metrics: Metrics, service: str) -> None:
        self.metrics = metrics
        self.service = service

    def _count(self, throttled: bool, retryable: bool) -> None:
        if throttled:
            self.metrics.count(names.THROTTLES, service=self.service)
        if retryable:
            self.metrics.count(names.RETRIES, service=self.service)

    def on_response(
        self,
        response_dict: Mapping[str, Any] | None = None,
        parsed_response: Mapping[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        if context is not None:
            context[_SEEN] = True
        status = response_dict.get("status_code") if response_dict else None
        self._count(*classify_attempt(status, parsed_response, exception))

    def on_after_call(
        self,
        http_response: Any = None,
        parsed: Mapping[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        if context is not None and context.pop(_SEEN, False):
            return  # every attempt of this call was counted as it came back
        status = getattr(http_response, "status_code", None)
        self._count(*classify_attempt(status, parsed, None))


_EVENTS = ("response-received", "after-call")


def _unique_id(client: Any, event_name: str) -> str:
    return f"kinesis_eo.metrics.{id(client)}.{event_name}"


def attach_call_metrics(client: Any, metrics: Metrics) -> None:
    """Count ``client``'s throttled and retried attempts into ``metrics`` (idempotent: a
    client already attached keeps its first ``metrics``)."""
    counter = _CallCounter(metrics, str(client.meta.service_model.service_name))
    handlers = (counter.on_response, counter.on_after_call)
    for event_name, handler in zip(_EVENTS, handlers, strict=True):
        client.meta.events.register(event_name, handler, unique_id=_unique_id(client, event_name))


def detach_call_metrics(client: Any) -> None:
    """Stop counting ``client``'s attempts."""
    for event_name in _EVENTS:
        client.meta.events.unregister(event_name, unique_id=_unique_id(client, event_name))
