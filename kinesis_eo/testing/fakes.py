"""In-memory stand-ins for kinesis_eo's targets, for users' tests.

They keep what they are given in plain lists, so that a test can assert on
exactly what a consumer dead-lettered, and they can be told to fail, so that a
test can check that a record that could not be dead-lettered stops the shard
instead of vanishing.
"""

from __future__ import annotations

from collections.abc import Sequence

from kinesis_eo.deadletter import DeadLetter

__all__ = ["AsyncMemoryDeadLetters", "MemoryDeadLetters"]


class _MemoryDeadLetterStore:
    """What the sync and async fakes share; only ``send`` differs in colour."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.sends = 0
        self.fail_with: BaseException | None = None
        """When set, every ``send`` raises it and stores nothing, like a target that is down."""

    def _store(self, letters: Sequence[DeadLetter]) -> None:
        self.sends += 1
        if self.fail_with is not None:
            raise self.fail_with
        self.letters.extend(letters)

    def clear(self) -> None:
        self.letters.clear()
        self.sends = 0


class MemoryDeadLetters(_MemoryDeadLetterStore):
    """A :class:`~kinesis_eo.deadletter.DeadLetterTarget` that appends to ``letters``."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        self._store(letters)


class AsyncMemoryDeadLetters(_MemoryDeadLetterStore):
    """An :class:`~kinesis_eo.deadletter.AsyncDeadLetterTarget` that appends to ``letters``.

    A separate class rather than an ``asend`` on :class:`MemoryDeadLetters`:
    the async protocol's method is ``send``, and one class cannot have both.
    """

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self._store(letters)
