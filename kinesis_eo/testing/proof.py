"""``assert_exactly_once``: your Lambda handler under the faults that deliver records twice.

It puts your events on a stream, delivers them to the handler through the
event source mapping simulator (:mod:`kinesis_eo.testing.lambda_esm`), with the
faults switched on, and then asks your ``applied(event_id)`` how many times each
event's effect reached the sink. Any event applied other than once fails the
test, named with the fault it went through::

    assert_exactly_once(handler, events, stream=kinesis_stream, applied=sink_table.applied)

The events are shared out, one fault each in turn, so that a failure names
the fault that caused it; each of them is then delivered through the fault:

- :attr:`Fault.CRASH_AFTER_COMMIT`: the invocation dies after the handler
  returned (its effects and marks committed) and before the mapping got the
  answer; the mapping delivers the batch again, bisected.
- :attr:`Fault.ZOMBIE`: the invocation stops at its first DynamoDB write, with
  the handler's effects in hand, while another invocation gets the same batch
  and runs in full; then the stale one wakes up and commits, as a function
  instance that timed out but went on running does.
- :attr:`Fault.INBOUND_DUPLICATE`: each event is produced twice, as a producer
  that retried a send the stream had stored does: one event id, two sequence
  numbers.

and with :attr:`Fault.REDELIVERY` the whole stream is delivered once more at
the end, as after a lost checkpoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

from kinesis_eo.envelope import unwrap
from kinesis_eo.errors import KinesisEOError
from kinesis_eo.ledger import Ledger
from kinesis_eo.producer import Event, Producer
from kinesis_eo.sinks.base import RecordHandler
from kinesis_eo.testing.lambda_esm import (
    EsmConfig,
    EventSourceMapping,
    FakeContext,
    StreamRecord,
)
from kinesis_eo.testing.resources import KinesisStream

__all__ = [
    "ALL_FAULTS",
    "ExactlyOnceReport",
    "Fault",
    "NotExactlyOnceError",
    "assert_exactly_once",
]

Handler = Callable[[dict[str, Any], Any], Any]

# The DynamoDB calls that write: a zombie stops at the first of them.
_WRITES = frozenset({"TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"})
_zombie_ids = itertools.count()


class Fault(Enum):
    """A way a record reaches the handler more than once (see the module's docstring)."""

    CRASH_AFTER_COMMIT = "crash_after_commit"
    ZOMBIE = "zombie"
    INBOUND_DUPLICATE = "inbound_duplicate"
    REDELIVERY = "redelivery"


ALL_FAULTS: frozenset[Fault] = frozenset(Fault)
# The faults that need an event's first delivery; events are shared out among them.
_FIRST_DELIVERY = (Fault.CRASH_AFTER_COMMIT, Fault.ZOMBIE, Fault.INBOUND_DUPLICATE)


class _SimulatedCrash(Exception):
    """The invocation dying before it answered; only the mapping simulator sees it."""


@dataclass
class ExactlyOnceReport:
    """What :func:`assert_exactly_once` did, and what it found.

    ``applied``: event id -> times applied at the end. ``faults``: event id ->
    the fault its first delivery went through (None: a plain delivery).
    ``wrong``: event id -> (times applied, the fault after which it went wrong).
    """

    applied: dict[str, int] = field(default_factory=dict)
    faults: dict[str, Fault | None] = field(default_factory=dict)
    wrong: dict[str, tuple[int, Fault | None]] = field(default_factory=dict)
    invocations: int = 0
    crashes: int = 0
    zombies: int = 0

    def message(self) -> str:
        """The failure, one line per event applied other than once."""
        doubled = sorted(e for e, (n, _) in self.wrong.items() if n > 1)
        lost = sorted(e for e, (n, _) in self.wrong.items() if n == 0)
        lines = [
            f"not exactly once: {len(doubled)} of {len(self.applied)} events applied more "
            f"than once, {len(lost)} lost"
        ]
        for event_id in doubled + lost:
            count, fault = self.wrong[event_id]
            what = "lost" if count == 0 else f"applied {count} times"
            under = fault.value if fault else "a plain delivery"
            lines.append(f"  {event_id}: {what}, after {under}")
        return "\n".join(lines)


class _FirstDeliveries:
    """Tells the invocations that bring a record for the first time from redeliveries."""

    def __init__(self) -> None:
        self.delivered: set[str] = set()

    def first(self, event: dict[str, Any]) -> bool:
        # eventID is shard:sequence number (moto numbers each shard from 1).
        records = {r["eventID"] for r in event.get("Records", [])}
        new = bool(records - self.delivered)
        self.delivered |= records
        return new


class _CrashAfterCommit(_FirstDeliveries):
    """Each record's first delivery: the handler runs in full, then the invocation dies."""

    def __init__(self, handler: Handler, report: ExactlyOnceReport) -> None:
        super().__init__()
        self.handler, self.report = handler, report

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        first = self.first(event)
        response = self.handler(event, context)
        if first:
            self.report.crashes += 1
            raise _SimulatedCrash("the invocation died after its commit, before it answered")
        return response


class _Zombie(_FirstDeliveries):
    """Each record's first delivery stops at its first write while a rival delivery runs."""

    def __init__(self, handler: Handler, dynamodb: Any, report: ExactlyOnceReport) -> None:
        super().__init__()
        self.handler, self.dynamodb, self.report = handler, dynamodb, report

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        if not self.first(event):
            return self.handler(event, context)
        emitter = self.dynamodb.meta.events
        hook_id = f"kinesis_eo.zombie.{next(_zombie_ids)}"

        def rival(model: Any = None, **_: Any) -> None:
            if model is None or model.name not in _WRITES:
                return
            # Once: the rival's own calls, and the zombie's next ones, go straight through.
            emitter.unregister("before-call.dynamodb", unique_id=hook_id)
            self.report.zombies += 1
            self.handler(event, FakeContext())

        emitter.register("before-call.dynamodb", rival, unique_id=hook_id)
        try:
            return self.handler(event, context)
        finally:
            emitter.unregister("before-call.dynamodb", unique_id=hook_id)


class NotExactlyOnceError(KinesisEOError, AssertionError):
    """Events were lost or applied more than once; ``report`` says which, under what fault."""

    def __init__(self, report: ExactlyOnceReport) -> None:
        super().__init__(report.message())
        self.report = report


def _handler_client(handler: Handler, dynamodb: Any) -> Any:
    if dynamodb is not None:
        return dynamodb
    clients = getattr(handler, "clients", None)
    if isinstance(clients, Mapping) and clients.get("dynamodb") is not None:
        return clients["dynamodb"]
    raise TypeError(
        "Fault.ZOMBIE stops the handler at its first DynamoDB write: pass dynamodb= (the "
        "boto3 client the handler commits with), give a KinesisHandler, or leave the fault out"
    )


def _share_out(events: Sequence[Event], faults: Collection[Fault]) -> dict[str, Fault | None]:
    ids = [event.event_id for event in events]
    if any(event_id is None for event_id in ids) or len(set(ids)) != len(ids):
        raise ValueError("every event needs an event_id of its own: the sink is read by it")
    unknown = set(faults) - set(Fault)
    if unknown:
        raise ValueError(f"not faults: {sorted(map(str, unknown))}")
    firsts: list[Fault | None] = [f for f in _FIRST_DELIVERY if f in faults] or [None]
    if len(events) < len(firsts):
        raise ValueError(
            f"give at least {len(firsts)} events, one for each of "
            f"{', '.join(f.value for f in firsts if f)}"
        )
    return {str(event_id): firsts[i % len(firsts)] for i, event_id in enumerate(ids)}


def _produce(stream: KinesisStream, events: Sequence[Event], twice: set[str]) -> None:
    producer = Producer(stream.kinesis, stream.name)
    producer.put(events)
    # Sent again with the same event id, as a producer retrying a stored send.
    again = [event for event in events if event.event_id in twice]
    if again:
        producer.put(again)


def _deliver(
    handler: Handler, records: list[StreamRecord], stream: KinesisStream, config: EsmConfig
) -> int:
    if not records:
        return 0
    esm = EventSourceMapping(
        handler, records, stream=stream.name, config=config, region=stream.region
    )
    limit = 20 * len(records) + 100
    try:
        return len(esm.run(max_invocations=limit))
    except RuntimeError as exc:
        errors = [i.error for i in esm.invocations[-3:] if i.error is not None]
        raise AssertionError(
            f"the handler never got past its records: {exc}"
            + (f"; last error: {errors[-1]!r}" if errors else "")
        ) from exc


def assert_exactly_once(
    handler: Handler | RecordHandler,
    events: Sequence[Event],
    *,
    stream: KinesisStream,
    applied: Callable[[str], int],
    faults: Collection[Fault] = ALL_FAULTS,
    ledger: Ledger | None = None,
    dynamodb: Any = None,
    esm: EsmConfig | None = None,
) -> ExactlyOnceReport:
    """Deliver ``events`` to ``handler`` under ``faults``; fail unless each is applied once.

    ``handler`` is a Lambda entry point, ``handler(event, context)``: a
    :class:`~lambda_handlers.KinesisHandler`, a function made with
    :func:`~lambda_handlers.exactly_once`, or your own function that calls one.
    Given ``ledger``, it is a record handler instead, ``handler(record, ctx)``
    returning its writes, as ``kinesis-eo run --handler`` takes: it runs in a
    ``KinesisHandler`` over that ledger, through the transactional sink the
    worker uses.
    ``events`` each need an ``event_id``; they are put on ``stream`` (an empty
    one: records already in it are left alone).
    ``applied(event_id)`` says how many times that event's effect is in your
    sink. ``dynamodb`` is the client the handler commits with, where a zombie
    stops (by default a KinesisHandler's own). ``esm``: the mapping's batch
    size, bisection and retries (by default batches of 10, bisected).

    Raises :class:`NotExactlyOnceError` (an AssertionError) naming each event
    lost or applied more than once, with the fault it went through; returns
    the report otherwise.
    """
    shares = _share_out(events, faults)
    entry = cast(Handler, handler)
    if ledger is not None:
        from lambda_handlers import KinesisHandler

        entry = KinesisHandler(cast(RecordHandler, handler), ledger=ledger, dynamodb=dynamodb)
    zombie_client = _handler_client(entry, dynamodb) if Fault.ZOMBIE in faults else None
    config = esm or EsmConfig(batch_size=10)
    report = ExactlyOnceReport(faults=shares)
    _produce(stream, events, {e for e, f in shares.items() if f is Fault.INBOUND_DUPLICATE})
    records: list[StreamRecord] = []
    by_fault: dict[Fault | None, list[StreamRecord]] = {}
    for record in stream.records():
        event_id = unwrap(record.data)[0]
        if event_id is not None and event_id in shares:
            records.append(record)
            by_fault.setdefault(shares[event_id], []).append(record)
    wrappers: dict[Fault | None, Handler] = {
        None: entry,
        Fault.INBOUND_DUPLICATE: entry,
        Fault.CRASH_AFTER_COMMIT: _CrashAfterCommit(entry, report),
    }
    if zombie_client is not None:
        wrappers[Fault.ZOMBIE] = _Zombie(entry, zombie_client, report)
    for fault in dict.fromkeys(shares.values()):
        report.invocations += _deliver(wrappers[fault], by_fault.get(fault, []), stream, config)
        for event_id in {e for e, f in shares.items() if f is fault}:
            count = applied(event_id)
            if count != 1:
                report.wrong[event_id] = (count, fault)
    if Fault.REDELIVERY in faults:
        report.invocations += _deliver(entry, records, stream, config)
    for event_id in shares:
        report.applied[event_id] = count = applied(event_id)
        if event_id in report.wrong:
            report.wrong[event_id] = (count, report.wrong[event_id][1])
        elif count != 1:
            report.wrong[event_id] = (count, Fault.REDELIVERY)
    if report.wrong:
        raise NotExactlyOnceError(report)
    return report
