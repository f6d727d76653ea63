"""What sinks and their callers agree on: handlers, gates, dead-letter targets, the Sink itself.

Handlers are plain callables, sync or async; a sink's flow calls them through
:class:`~kinesis_eo.flow.Invoke`, so one sink serves the sync and the asyncio consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kinesis_eo.deadletter import DeadLetter
from kinesis_eo.records import Record
from kinesis_eo.sinks.report import BatchReport

__all__ = [
    "BatchHandler",
    "DeadLetterSink",
    "EffectContext",
    "FlowRunner",
    "Gate",
    "RecordHandler",
    "Sink",
]


@dataclass(frozen=True, slots=True)
class EffectContext:
    """What a handler gets beside its record.

    ``idempotency_key`` is stable for the record in this consumer group: hand
    it to the sink (S3 object key, SQS deduplication id, HTTP
    ``Idempotency-Key``) so that a repeated call changes nothing.
    """

    idempotency_key: str
    attempt: int
    heartbeat: Callable[[], Any] | None = None


class RecordHandler(Protocol):
    """What users implement per record: ``handler(record, ctx)``, sync or ``async def``.

    What it returns depends on the sink: the writes for a transactional sink,
    nothing for the others.
    """

    def __call__(self, record: Record, ctx: EffectContext, /) -> Any: ...


class BatchHandler(Protocol):
    """What users implement per batch: ``handler(records, contexts)``, sync or ``async def``.

    Returns one result per record, in order (or None where the sink wants no
    results). If it raises, the sink calls it again one record at a time, so
    that only a poison record is dead-lettered.
    """

    def __call__(self, records: list[Record], contexts: list[EffectContext], /) -> Any: ...


class Gate(Protocol):
    """Lets the caller of a sink stop a batch part-way, to finish it in a later delivery.

    A Lambda function uses it to stop before its deadline and to leave a failed
    record to the event source mapping's next delivery instead of
    dead-lettering it at once. Both methods are flows. ``admit`` is asked
    before each handler call (and before waiting on another owner's claim);
    ``on_failure`` after a record failed every attempt of the policy, and says
    whether to dead-letter it now (True) or defer it (False). Records refused
    or deferred are not committed and come back in :attr:`BatchReport.deferred`.
    A gate that refused or deferred one record must refuse every later record
    that has to stay in order after it.
    """

    def admit(self, record: Record) -> Generator[Any, Any, bool]: ...

    def on_failure(
        self, record: Record, error: BaseException, attempts: int
    ) -> Generator[Any, Any, bool]: ...


class DeadLetterSink(Protocol):
    """A dead-letter target: sync (``send`` returns None) or async (``send`` is awaitable)."""

    def send(self, letters: Sequence[DeadLetter]) -> Any: ...


FlowRunner = Callable[[Generator[Any, Any, Any]], Any]
"""Runs a flow to its end with the runtime's clients: a function (sync) or a coroutine function."""


class Sink(Protocol):
    """What every runtime (consumer, worker, Lambda handler, redrive) needs of a sink.

    ``bind`` is called once with the runtime's way of running a flow;
    ``process`` is the flow that applies one shard's batch. ``guards`` are
    checks committed with it (the lease's fencing check); ``gate`` lets the
    caller stop part-way (see :class:`Gate`).
    """

    def bind(self, run_flow: FlowRunner) -> None: ...

    def process(
        self, records: Sequence[Record], guards: Sequence[Any] = (), gate: Gate | None = None
    ) -> Generator[Any, Any, BatchReport]: ...
