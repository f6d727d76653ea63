"""What the demo and the chaos run share: names, emulator clients, events with poison, the verdict.

Both make records arrive more than once, then read the sink, whose effect is
deliberately not idempotent (``ADD applied 1`` on an item per event id), and
the dead-letter table, and judge every produced event: applied once, applied
more than once, dead-lettered with its payload whole, or missing.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kinesis_eo.deadletter import DeadLetter
from kinesis_eo.producer import Event
from kinesis_eo.testing.backends import FAKE_CREDENTIALS, REGION
from kinesis_eo.testing.effects import applied_counts, create_effects_table
from kinesis_eo.testing.effects import scan_table as scan

__all__ = [
    "POISON_PREFIX",
    "EventPlan",
    "Names",
    "Verdict",
    "applied_counts",
    "client",
    "create_effects_table",
    "numbered_events",
    "orders",
    "scan",
    "verify",
]

# The chaos run's poison events start with this; its handler refuses them.
POISON_PREFIX = b"POISON"


class _SimulatedCrash(Exception):
    """A process dying where the scenario says: after a sink commit, before what follows it.

    Raised from an ``after_commit`` hook (or a Lambda invocation) and caught by
    the scenario itself; never raised out of the harness.
    """


@dataclass(frozen=True, slots=True)
class Names:
    """The stream and tables of one run, unique to it.

    Unique per run: moto's state is process-wide, and a test session may run
    a scenario next to other users of the same emulator.
    """

    stream: str
    leases: str
    ledger: str
    checkpoints: str
    effects: str
    dead_letters: str
    group: str

    @classmethod
    def fresh(cls, prefix: str, group: str) -> Names:
        run = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return cls(
            stream=f"{run}-stream",
            leases=f"{run}-leases",
            ledger=f"{run}-ledger",
            checkpoints=f"{run}-checkpoints",
            effects=f"{run}-effects",
            dead_letters=f"{run}-dead-letters",
            group=group,
        )


def client(service: str, endpoint: str, **config: Any) -> Any:
    """A boto3 client for an emulator: fake credentials, no proxy; ``config`` goes to ``Config``.

    The session ignores ``AWS_PROFILE``: a profile that does not exist on this
    machine would make the client fail, though it never needs one.
    """
    import boto3.session
    import botocore.session
    from botocore.config import Config

    core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
    return boto3.session.Session(botocore_session=core).client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(proxies={}, **config),
        **FAKE_CREDENTIALS,
    )


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventPlan:
    """The events a run produces, and the poison ones among them (event id -> payload)."""

    events: list[Event]
    poison: dict[str, bytes]

    @property
    def event_ids(self) -> list[str]:
        return [str(event.event_id) for event in self.events]


def orders(count: int, rng: random.Random, poison_every: int) -> EventPlan:
    """Orders with stable ids; at least one is poison, with an amount no handler takes."""
    poison_at = set(rng.sample(range(count), max(1, count // poison_every)))
    events: list[Event] = []
    poison: dict[str, bytes] = {}
    for i in range(count):
        event_id = f"order-{i:06d}"
        order: dict[str, Any] = {
            "order": i,
            "customer": f"customer-{rng.randrange(97):02d}",
            "amount_cents": rng.randrange(100, 100_000),
        }
        if i in poison_at:
            order["amount_cents"] = "12,50 EUR"
        data = json.dumps(order, separators=(",", ":")).encode()
        if i in poison_at:
            poison[event_id] = data
        events.append(Event(data=data, partition_key=str(order["customer"]), event_id=event_id))
    return EventPlan(events, poison)


def numbered_events(count: int, seed: int, poison_every: int) -> EventPlan:
    """Opaque numbered events of the seed; every ``poison_every``-th (0: none) is poison."""
    rng = random.Random(seed)
    events: list[Event] = []
    poison: dict[str, bytes] = {}
    for i in range(count):
        is_poison = poison_every > 0 and i % poison_every == poison_every // 2
        body = (POISON_PREFIX if is_poison else b"event") + b"-%d-%d" % (i, rng.getrandbits(32))
        event_id = f"ev-{seed}-{i:07d}"
        if is_poison:
            poison[event_id] = body
        events.append(Event(body, f"key-{rng.randrange(10_000)}", event_id))
    return EventPlan(events, poison)


# --- the verdict ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """Per event: applied once (``ok``), more than once, or neither applied nor dead-lettered."""

    ok: int
    duplicated: list[str]
    missing: list[str]
    effects: int
    letters: int
    stray_letters: int


def verify(
    applied: Mapping[str, int],
    letters: Sequence[DeadLetter],
    event_ids: Iterable[str],
    poison: Mapping[str, bytes],
) -> Verdict:
    """Judge ``event_ids`` by the sink's counts and the letters; ``poison`` may be dead-lettered.

    A letter only saves a poison event if it holds the payload whole: a letter
    without it is as lost as no letter. Any item applied more than once is
    doubled, whichever event it belongs to.
    """
    preserved: set[str] = set()
    for letter in letters:
        event_id = letter.record.event_id
        if event_id is not None and poison.get(event_id) == letter.record.data:
            preserved.add(event_id)
    ok, missing = 0, []
    for event_id in event_ids:
        count = applied.get(event_id, 0)
        if count == 1:
            ok += 1
        elif count == 0 and event_id not in preserved:
            missing.append(event_id)
    duplicated = sorted(event_id for event_id, count in applied.items() if count > 1)
    stray = sum(1 for letter in letters if letter.record.event_id not in poison)
    return Verdict(ok, duplicated, missing, sum(applied.values()), len(letters), stray)
