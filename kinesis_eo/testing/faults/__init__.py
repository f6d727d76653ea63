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

from kinesis_eo.testing.faults.injector import FaultInjector
from kinesis_eo.testing.faults.rules import (
    ANY_OPERATION,
    Always,
    FaultKind,
    Injection,
    NextCalls,
    NthCall,
    Probability,
    Rule,
    Schedule,
    injected_entries,
)

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
