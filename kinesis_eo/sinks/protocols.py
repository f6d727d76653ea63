"""What sinks and their callers agree on: handlers, gates, dead-letter targets, the Sink itself.

Handlers are plain callables, sync or async; a sink's flow calls them through
:class:`~kinesis_eo.flow.Invoke`, so one sink serves the sync and the asyncio consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
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


class EffectContext:
    """What a handler gets beside its record.

    ``idempotency_key`` is stable for the record in this consumer group: hand
    it to the sink (S3 object key, SQS deduplication id, HTTP
    ``Idempotency-Key``) so that a repeated call changes nothing. Sinks pass
    ``key_of`` instead of the key, and it is worked out the first time it is
    read: most transactional handlers never read it, and hashing it for every
    record was a fifth of the toolkit's own CPU per record (bench/_inmemory.py).
    Immutable, and equal to another context with the same key, attempt and
    heartbeat.
    """

    __slots__ = ("_key", "_key_of", "attempt", "heartbeat")

    _key: str | None
    _key_of: Callable[[], str] | None
    attempt: int
    heartbeat: Callable[[], Any] | None

    def __init__(
        self,
        idempotency_key: str | None,
        attempt: int,
        heartbeat: Callable[[], Any] | None = None,
        *,
        key_of: Callable[[], str] | None = None,
    ) -> None:
        if (idempotency_key is None) == (key_of is None):
            raise TypeError("give an EffectContext either its idempotency_key or key_of")
        set_once = object.__setattr__
        set_once(self, "_key", idempotency_key)
        set_once(self, "_key_of", key_of)
        set_once(self, "attempt", attempt)
        set_once(self, "heartbeat", heartbeat)

    @property
    def idempotency_key(self) -> str:
        key: str | None = self._key
        if key is None:
            assert self._key_of is not None
            key = self._key_of()
            object.__setattr__(self, "_key", key)
        return key

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"an EffectContext is immutable: cannot set {name!r}")

    def _fields(self) -> tuple[str, int, Callable[[], Any] | None]:
        return (self.idempotency_key, self.attempt, self.heartbeat)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EffectContext):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"EffectContext(idempotency_key={self.idempotency_key!r}, attempt={self.attempt!r}, "
            f"heartbeat={self.heartbeat!r})"
        )


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
