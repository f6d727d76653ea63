"""Record faults and world faults for the chaos harness: invalid writes and a sink outage.

A record fault is the record's own: here, a handler result DynamoDB refuses
(a malformed update expression, a key of the wrong type, an item over
400 KB). Which events carry one is a pure function of the run's seed and the
event id (:func:`invalid_write_kind`), so every worker, every incarnation and
every redelivery agrees, and the harness knows them without asking anyone.
Each must end up dead-lettered with reason ``INVALID_WRITE``, never applied.

A world fault is nobody's record: for a window of the run the sink is down.
The harness declares it in a marker file that every worker process reads
before each handler call (:class:`SinkOutage`): while the file says
``sink-down`` the handler raises what an unreachable sink raises (a
``SinkUnavailableError``, a throttled AWS call, a timeout, a refused
connection); while it says ``table-throttled`` the handler returns its writes
but the commit's ``TransactWriteItems`` is throttled. Either must pause the
shard and dead-letter nothing: :func:`outage_letters` finds the letters that
say otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

from kinesis_eo.deadletter import DeadLetter, DeadLetterReason
from kinesis_eo.errors import SinkUnavailableError
from kinesis_eo.records import Record
from kinesis_eo.sinks import update
from kinesis_eo.sinks.dynamodb import TransactItem
from kinesis_eo.testing.faults import Rule

__all__ = [
    "OUTAGE_TAG",
    "InvalidWrite",
    "OutagePhase",
    "OutageSwitch",
    "SinkOutage",
    "distinct_events",
    "invalid_write",
    "invalid_write_kind",
    "outage_letters",
]

# In every error the outage raises, so that a letter written for it is recognised anywhere.
OUTAGE_TAG = "chaos sink outage"
# DynamoDB's item limit is 400 KB: one attribute a little over it is refused whatever the rest.
OVERSIZED_ATTRIBUTE_BYTES = 401 * 1024


class InvalidWrite(Enum):
    """The kinds of handler result DynamoDB refuses with a ValidationException."""

    MALFORMED_EXPRESSION = "malformed-expression"
    WRONG_KEY_TYPE = "wrong-key-type"
    OVERSIZED_ITEM = "oversized-item"


_KINDS = tuple(InvalidWrite)


def _digest(seed: int, event_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x1f{event_id}".encode("utf-8", "surrogatepass")).digest()


def invalid_write_kind(seed: int, rate: float, event_id: str | None) -> InvalidWrite | None:
    """Whether (and how) the event's handler result is one DynamoDB refuses.

    A share ``rate`` of event ids is chosen, from the seed and the id alone.
    """
    if rate <= 0 or not event_id:
        return None
    digest = _digest(seed, event_id)
    if int.from_bytes(digest[:8], "big") / 2**64 >= rate:
        return None
    return _KINDS[digest[8] % len(_KINDS)]


def invalid_write(kind: InvalidWrite, table: str, key: str) -> TransactItem:
    """One write of ``kind`` for the effects item ``key``: DynamoDB refuses it whole."""
    one = {":one": 1}
    if kind is InvalidWrite.MALFORMED_EXPRESSION:
        return update(table, {"id": key}, "ADD applied :one :one", values=one)
    if kind is InvalidWrite.WRONG_KEY_TYPE:
        # The table's key is a string; a number with the same digits is refused.
        number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:6], "big")
        return update(table, {"id": number}, "ADD applied :one", values=one)
    ballast = "x" * OVERSIZED_ATTRIBUTE_BYTES
    return update(
        table,
        {"id": key},
        "ADD applied :one SET ballast = :ballast",
        values={**one, ":ballast": ballast},
    )


class OutagePhase(Enum):
    """What is down while the marker file holds this text."""

    SINK_DOWN = "sink-down"
    """The handler's own sink is unreachable: the handler raises."""
    TABLE_THROTTLED = "table-throttled"
    """The handler returns its writes, and the commit's TransactWriteItems is throttled."""


def _outage_error(choice: int) -> Exception:
    """What a handler meets when its sink is down, by ``choice``: each must pause the shard."""
    from botocore.exceptions import ClientError

    message = f"the effects store is unreachable ({OUTAGE_TAG})"
    choice %= 4
    if choice == 0:
        return SinkUnavailableError(message)
    if choice == 1:
        throttled: Exception = ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": message}}, "UpdateItem"
        )
        return throttled
    if choice == 2:
        return TimeoutError(message)
    return ConnectionRefusedError(message)


class SinkOutage:
    """The worker's side of the outage: reads the marker before every handler call.

    ``commit_throttle`` is a fault rule on the commit's ``TransactWriteItems``
    (disabled when made): a thread keeps it on exactly while the marker says
    the table is throttled. Not the handler: a commit retrying under the
    throttle calls no handler, and would never see the table come back.
    """

    def __init__(
        self, marker: str, commit_throttle: Rule | None = None, poll_s: float = 0.05
    ) -> None:
        self.marker = Path(marker) if marker else None
        self.commit_throttle = commit_throttle
        self._closed = threading.Event()
        self._rounds: dict[str, int] = {}
        if commit_throttle is None:
            return
        commit_throttle.disable()
        if self.marker is not None:
            threading.Thread(
                target=self._follow, args=(commit_throttle, poll_s), daemon=True
            ).start()

    def _follow(self, rule: Rule, poll_s: float) -> None:
        while not self._closed.wait(poll_s):
            rule.enabled = self.phase() is OutagePhase.TABLE_THROTTLED
        rule.disable()

    def close(self) -> None:
        """Stop following the marker (the throttle stays off)."""
        self._closed.set()

    def phase(self) -> OutagePhase | None:
        if self.marker is None:
            return None
        try:
            text = self.marker.read_text(encoding="ascii").strip()
        except OSError:
            return None
        with contextlib.suppress(ValueError):
            return OutagePhase(text)
        return None  # no phase this module knows: nothing is down

    def check(self, record: Record, attempt: int) -> None:
        """Raise the outage's error for ``record`` while the sink is down.

        Every attempt of one round of the failure policy meets the same error
        (a wrongly classified one is then dead-lettered, where the verifier
        sees it); each round after a pause meets the next kind.
        """
        if self.phase() is not OutagePhase.SINK_DOWN:
            return
        key = record.event_id or record.sequence_number
        if attempt == 1 or key not in self._rounds:
            self._rounds[key] = self._rounds.get(key, _digest(0, key)[0]) + 1
        raise _outage_error(self._rounds[key])


@dataclass
class OutageSwitch:
    """The harness's side: turns the outage on, through its phases, and off, and remembers when.

    The first half of the window the sink is down, the second half the table
    is throttled.
    """

    marker: Path
    duration_s: float
    started_at: datetime | None = None
    ended_at: datetime | None = None
    _started_mono: float = 0.0
    _phase: OutagePhase = OutagePhase.SINK_DOWN

    def _write(self, phase: OutagePhase) -> None:
        temporary = self.marker.with_suffix(".tmp")
        temporary.write_text(phase.value, encoding="ascii")
        os.replace(temporary, self.marker)

    @property
    def on(self) -> bool:
        return self.started_at is not None and self.ended_at is None

    @property
    def over(self) -> bool:
        """Whether there is no outage still to come or under way."""
        return self.duration_s <= 0 or self.ended_at is not None

    @property
    def window(self) -> tuple[datetime, datetime] | None:
        """When the sink was down (until now, if it still is); None if it never was."""
        if self.started_at is None:
            return None
        return self.started_at, self.ended_at or datetime.now(UTC)

    @property
    def length_s(self) -> float:
        window = self.window
        return 0.0 if window is None else round((window[1] - window[0]).total_seconds(), 1)

    def step(self, now: float, start_at: float) -> None:
        """Move the outage along at monotonic time ``now``; it starts at ``start_at``."""
        if self.duration_s <= 0 or self.ended_at is not None or now < start_at:
            return
        if self.started_at is None:
            self.started_at = datetime.now(UTC)
            self._started_mono = now
            self._write(OutagePhase.SINK_DOWN)
            return
        elapsed = now - self._started_mono
        if elapsed >= self.duration_s:
            self.marker.unlink(missing_ok=True)
            self.ended_at = datetime.now(UTC)
        elif elapsed >= self.duration_s / 2 and self._phase is OutagePhase.SINK_DOWN:
            self._write(OutagePhase.TABLE_THROTTLED)
            self._phase = OutagePhase.TABLE_THROTTLED


def outage_letters(
    letters: Iterable[DeadLetter],
    expected: Mapping[str, DeadLetterReason],
    window: tuple[datetime, datetime] | None,
    grace_s: float = 5.0,
) -> set[str]:
    """The events dead-lettered for the outage: nothing may be.

    A letter counts when its error names the outage, or when it was written
    during the window (or ``grace_s`` after it, for attempts under way) and is
    not the one its event was made to get (``expected``: poison and invalid
    writes, with their reasons).
    """
    found: set[str] = set()
    for letter in letters:
        event = str(letter.record.event_id)
        if OUTAGE_TAG in letter.error:
            found.add(event)
            continue
        if window is None or expected.get(event) is letter.reason:
            continue
        start, end = window
        if start <= letter.failed_at <= end + timedelta(seconds=grace_s):
            found.add(event)
    return found


def distinct_events(letters: Sequence[DeadLetter], reason: DeadLetterReason) -> set[str]:
    """The event ids with at least one letter for ``reason`` (a crash may write one twice)."""
    return {str(letter.record.event_id) for letter in letters if letter.reason is reason}
