"""Tumbling windows, exactly once: a window's records folded once, its aggregate applied once.

With ``TumblingWindowInSeconds`` the event source mapping (ESM) adds ``window``
(``{start, end}``), ``state``, ``shardId``, ``isFinalInvokeForWindow`` and
``isWindowTerminatedEarly`` to each event and expects ``{"state": ...,
"batchItemFailures": [...]}`` back; the state it hands the next invocation of
the shard is the one the last invocation returned. That state is at least
once: records reported, or redelivered after an error, come again, and a plain
fold would count them twice.

:class:`TumblingWindow` makes it exactly once:

- the state the function returns is ``{"kinesis_eo": {...}, "value": <yours>}``:
  beside your value it keeps the shard, the first position folded, and the last;
  a record at or below the last one folded is skipped, however it comes back;
- the fold runs over the new records of the batch; if it raises, the records
  are folded one at a time to find the one that fails, the ones before it stay
  folded, and every new record of the batch is reported. Whether the ESM then
  keeps the returned state or hands back the one before, nothing is lost and
  nothing is counted twice: the skip rule drops what the state already holds.
  A record the fold fails on in ``LambdaConfig.max_failed_deliveries``
  deliveries (counted in the ledger), or one that cannot be decoded, is
  dead-lettered with its payload and passed over. A raised error (which
  the ESM answers with bisection) returns no state at all, so the ESM
  replays the batch into the state before it, which does not hold it;
- the final invocation (``isFinalInvokeForWindow``) hands the value to
  ``close``, whose sink writes commit in one transaction with a ledger mark
  keyed by shard, window start and first position folded (a window the ESM
  ended early goes on with a fresh state, whose aggregate is marked apart);
  a mark already there means the aggregate was applied, and ``close`` is not
  called again.
  ``close`` may instead apply the effect itself with :attr:`WindowInfo.key`
  as its idempotency key and return nothing: the mark then follows it.

A state over :data:`MAX_STATE_BYTES` is refused (:class:`WindowStateTooLargeError`),
rather than left to the ESM, which would end the window early with part of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.flow import Invoke
from kinesis_eo.ledger import Ledger, LedgerConflictError
from kinesis_eo.ledger.model import (
    EXPIRES_AT,
    POSITION,
    SHARD,
    STREAM,
    UPDATED_AT,
    Absent,
    Put,
    Value,
)
from kinesis_eo.records import Record
from kinesis_eo.sinks import DeadLetterSink
from kinesis_eo.sinks.base import send_dead_letter
from lambda_handlers.decisions import (
    Ordering,
    batch_item_failures,
    dead_letter_now,
    items_to_report,
)
from lambda_handlers.events import MalformedEventError, ShardDelivery, stream_name

__all__ = [
    "MAX_STATE_BYTES",
    "STATE_KEY",
    "Folding",
    "TumblingWindow",
    "WindowInfo",
    "WindowStateTooLargeError",
    "is_window_event",
    "window_flow",
]

# Lambda keeps up to 1 MB of state per shard; count it in decimal megabytes to stay under.
MAX_STATE_BYTES = 1_000_000
STATE_KEY = "kinesis_eo"
VALUE_KEY = "value"

Flow = Generator[Any, Any, Any]


class WindowStateTooLargeError(ConfigurationError):
    """A tumbling window's state would exceed what Lambda keeps per shard."""


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """The window an invocation belongs to, as the ESM says, and the shard it is for."""

    stream: str
    shard_id: str
    start: str
    end: str
    final: bool = False
    terminated_early: bool = False
    first: str | None = None

    @property
    def key(self) -> str:
        """Stable for this window's aggregate: the idempotency key of an external sink."""
        return f"{self.stream}/{self.shard_id}/{self.start}/{self.first}"


WindowFold = Callable[[Any, list[Record]], Any]
WindowClose = Callable[[Any, WindowInfo], Any]


@dataclass(frozen=True, slots=True)
class TumblingWindow:
    """What the user gives: how records fold into a value, and what the final value does.

    ``fold(value, records) -> value``: pure over its arguments (it may be
    called again with fewer records after it raised); the value must be JSON.
    ``close(value, window) -> writes``: the sink writes of the aggregate (see
    :mod:`kinesis_eo.sinks`), committed once with the window's ledger mark.
    ``initial()``: the value of a window before its first record.
    """

    fold: WindowFold
    close: WindowClose
    initial: Callable[[], Any] = field(default=dict)


def is_window_event(event: Any) -> bool:
    """Whether the ESM sent a tumbling-window event."""
    return isinstance(event, Mapping) and isinstance(event.get("window"), Mapping)


@dataclass
class _State:
    stream: str
    shard_id: str
    value: Any
    first: str | None = None
    folded: str | None = None

    def dump(self) -> dict[str, Any]:
        bookkeeping = {"stream": self.stream, "shard": self.shard_id}
        positions = {"first": self.first, "folded": self.folded}
        return {STATE_KEY: {**bookkeeping, **positions}, VALUE_KEY: self.value}


def _info(event: Mapping[str, Any], deliveries: Sequence[ShardDelivery]) -> WindowInfo:
    window = event["window"]
    start, end = window.get("start"), window.get("end")
    if not isinstance(start, str) or not isinstance(end, str):
        raise MalformedEventError(f"the event's window {dict(window)!r} has no start and end")
    state = event.get("state") or {}
    ours = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    if deliveries:
        stream, shard_id = deliveries[0].stream, deliveries[0].shard_id
    elif isinstance(event.get("shardId"), str) and isinstance(event.get("eventSourceARN"), str):
        shard_id = event["shardId"]
        stream = stream_name(event["eventSourceARN"], "the window event")
    elif isinstance(ours, Mapping):
        stream, shard_id = str(ours["stream"]), str(ours["shard"])
    else:
        stream, shard_id = "", ""
    return WindowInfo(
        stream,
        shard_id,
        start,
        end,
        final=bool(event.get("isFinalInvokeForWindow")),
        terminated_early=bool(event.get("isWindowTerminatedEarly")),
    )


def _load(event: Mapping[str, Any], info: WindowInfo, window: TumblingWindow) -> _State:
    state = event.get("state") or {}
    ours = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    if not isinstance(ours, Mapping):
        # The window's first invocation (or a state this handler did not write).
        return _State(info.stream, info.shard_id, window.initial())
    if ours.get("shard") != info.shard_id:
        raise MalformedEventError(
            f"the window state belongs to shard {ours.get('shard')!r}, the event to "
            f"{info.shard_id!r}"
        )
    first, folded = ours.get("first"), ours.get("folded")
    return _State(
        info.stream,
        info.shard_id,
        state.get(VALUE_KEY),
        first if isinstance(first, str) else None,
        folded if isinstance(folded, str) else None,
    )


def _copy(value: Any, info: WindowInfo) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"the tumbling-window value of {info.shard_id} is not JSON, which Lambda needs "
            f"to keep it between invocations: {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class Folding:
    """What folding a window needs beside the event: the user's window, ledger, dead letters."""

    window: TumblingWindow
    ledger: Ledger
    dead_letters: DeadLetterSink | None = None
    max_failed_deliveries: int = 3


def _dead_letter_flow(
    folding: Folding, record: Record, reason: DeadLetterReason, error: BaseException, attempts: int
) -> Flow:
    yield from send_dead_letter(
        folding.ledger, folding.dead_letters, record, reason, error, attempts, "cannot be folded"
    )


def _fold_flow(
    folding: Folding, state: _State, records: list[Record], info: WindowInfo
) -> Generator[Any, Any, BaseException | None]:
    """Fold ``records`` into ``state`` (as far as they go); the error that stopped it, if any.

    A record the fold failed on in ``max_failed_deliveries`` deliveries, or one
    that cannot be decoded, is dead-lettered and passed over: the position
    moves past it, the value does not change.
    """
    fold = folding.window.fold
    if not any(r.deaggregation_error is not None for r in records):
        try:
            value = yield Invoke(fold, (_copy(state.value, info), list(records)))
        except Exception:  # which record fails is found one at a time below
            pass
        else:
            _advance(state, _copy(value, info), records)
            return None
    for record in records:
        if record.deaggregation_error is not None:
            error = ValueError(record.deaggregation_error)
            yield from _dead_letter_flow(folding, record, DeadLetterReason.UNDECODABLE, error, 0)
            _advance(state, state.value, [record])
            continue
        try:
            value = yield Invoke(fold, (_copy(state.value, info), [record]))
        except Exception as exc:  # the user's fold: counted, reported or dead-lettered
            failed = yield from folding.ledger.record_failure(record)
            if not dead_letter_now(failed, folding.max_failed_deliveries):
                return exc
            reason = DeadLetterReason.PROCESSING_FAILED
            yield from _dead_letter_flow(folding, record, reason, exc, failed)
            value = state.value
        _advance(state, _copy(value, info), [record])
    return None


def _advance(state: _State, value: Any, records: Sequence[Record]) -> None:
    state.value = value
    if records:
        state.first = state.first or records[0].position.key()
        state.folded = records[-1].position.key()


def _checked(state: _State, info: WindowInfo) -> dict[str, Any]:
    dumped = state.dump()
    size = len(json.dumps(dumped).encode("utf-8"))
    if size > MAX_STATE_BYTES:
        raise WindowStateTooLargeError(
            f"the tumbling-window state of {info.stream}/{info.shard_id} for the window from "
            f"{info.start} would be {size} bytes, over the {MAX_STATE_BYTES} bytes Lambda "
            "keeps per shard: fold into a smaller value or shorten TumblingWindowInSeconds"
        )
    return dumped


def _close_flow(folding: Folding, state: _State, info: WindowInfo) -> Generator[Any, Any, bool]:
    """Apply the window's aggregate once; False when its mark was already there."""
    window, ledger = folding.window, folding.ledger
    if state.first is None:
        return False  # nothing was folded: a window without records has no aggregate
    group = ledger.config.consumer_group
    key = f"win#{group}#{info.stream}#{info.shard_id}#{info.start}#{state.first}"
    found = yield from ledger.store.get([key])
    if key in found:
        return False
    writes = yield Invoke(window.close, (_copy(state.value, info), info))
    now_ms = int(ledger.clock() * 1000)
    item: dict[str, Value] = {
        POSITION: str(state.folded),
        STREAM: info.stream,
        SHARD: info.shard_id,
        UPDATED_AT: now_ms,
        EXPIRES_AT: now_ms // 1000 + int(ledger.config.record_ttl.total_seconds()),
    }
    try:
        yield from ledger.store.apply([Put(key, item, Absent())], list(writes or ()))
    except LedgerConflictError as conflict:
        if 0 in conflict.failed:
            return False  # another invocation applied it between our read and our write
        raise ConfigurationError(
            f"a sink write of the aggregate of {info.stream}/{info.shard_id} for the window "
            f"from {info.start} failed its condition: close() must return writes that apply"
        ) from None
    return True


def window_flow(
    folding: Folding, event: Mapping[str, Any], deliveries: list[ShardDelivery]
) -> Generator[Any, Any, dict[str, Any]]:
    """One invocation of a tumbling window: the response with the state to keep."""
    if len(deliveries) > 1:
        raise MalformedEventError("a tumbling-window event holds one shard's records")
    info = _info(event, deliveries)
    state = _load(event, info, folding.window)
    records = deliveries[0].records if deliveries else []
    new = [r for r in records if state.folded is None or r.position.key() > state.folded]
    error = (yield from _fold_flow(folding, state, new, info)) if new else None
    if error is not None:
        reported = items_to_report(records, new, Ordering.SHARD)
        return {"state": _checked(state, info), **batch_item_failures(reported)}
    if info.final:
        yield from _close_flow(folding, state, replace(info, first=state.first))
        return {"state": {}, "batchItemFailures": []}
    return {"state": _checked(state, info), "batchItemFailures": []}
