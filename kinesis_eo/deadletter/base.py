"""What every dead-letter target shares: the protocols, the send flow, and the sync/async shells.

Both targets send letters the same way: the letters become entries (messages,
items), in one or more phases sent one after the other; each phase goes out in
batch calls within a count and a size limit; the entries a call reports not
stored are sent again, with back-off, until the target's entry retry policy
gives up. :func:`send_letters_flow` is that protocol, written once; a target
fills in the few primitives of :class:`LetterBatches`. :class:`DeadLetterSender`
and :class:`AsyncDeadLetterSender` run it with a boto3 or an aiobotocore client
for any target.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from kinesis_eo.batching import plan_batches
from kinesis_eo.deadletter.letter import DeadLetter
from kinesis_eo.errors import KinesisEOError
from kinesis_eo.flow import Call, Sleep, run_async, run_sync
from kinesis_eo.retry import RetryConfig, backoff_delay

__all__ = [
    "AsyncDeadLetterSender",
    "AsyncDeadLetterTarget",
    "DeadLetterSendError",
    "DeadLetterSender",
    "DeadLetterTarget",
    "LetterBatches",
    "TargetBase",
    "failure_list",
    "send_letters_flow",
]


class DeadLetterSendError(KinesisEOError):
    """A target did not confirm every letter; ``failures`` maps each letter part to why.

    ``retryable`` is False when the target refused an entry as invalid
    (``SenderFault``), True when it only did not get to it in time.
    """

    def __init__(self, message: str, *, failures: Mapping[str, str], retryable: bool) -> None:
        super().__init__(message)
        self.failures = dict(failures)
        self.retryable = retryable


# --- the protocols users implement ------------------------------------------------------------


class DeadLetterTarget(Protocol):
    """Where poison records go. ``send`` returns only once every letter is stored durably.

    It raises rather than return if any letter was not stored; sending the same
    letters again must be harmless (the caller retries after a crash).
    """

    def send(self, letters: Sequence[DeadLetter]) -> None: ...


class AsyncDeadLetterTarget(Protocol):
    """:class:`DeadLetterTarget` for asyncio consumers."""

    async def send(self, letters: Sequence[DeadLetter]) -> None: ...


# --- the send protocol, written once ----------------------------------------------------------

EntryT = TypeVar("EntryT")


def failure_list(failures: Mapping[str, str]) -> str:
    """The first five failures as ``label: why``, and how many more, for an error message."""
    shown = "; ".join(f"{label}: {why}" for label, why in list(failures.items())[:5])
    more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
    return shown + more


class LetterBatches(ABC, Generic[EntryT]):
    """The primitives a target fills in for :func:`send_letters_flow`.

    ``resource`` names the target in errors; ``noun`` and ``stored`` finish the
    sentence "N dead-letter <noun>(s) were not <stored> <resource>".
    """

    noun: ClassVar[str]
    stored: ClassVar[str]
    resource: str
    max_batch_entries: int
    max_batch_bytes: int
    entry_retry: RetryConfig

    @abstractmethod
    def phases(self, letters: Sequence[DeadLetter]) -> list[list[EntryT]]:
        """The entries for ``letters``, in phases: a phase is sent only after the one before."""

    @abstractmethod
    def size(self, entry: EntryT) -> int:
        """What ``entry`` counts against ``max_batch_bytes``."""

    @abstractmethod
    def call(self, entries: Sequence[EntryT]) -> Call:
        """The batch call that sends ``entries``."""

    @abstractmethod
    def unsent(
        self, entries: Sequence[EntryT], response: Mapping[str, Any]
    ) -> tuple[list[EntryT], dict[str, str]]:
        """The entries to send again, and each one's label and why it was not stored.

        Raises :class:`DeadLetterSendError` for entries that sending again cannot help.
        """


def send_letters_flow(
    batches: LetterBatches[EntryT],
    letters: Sequence[DeadLetter],
    rng: random.Random | None = None,
) -> Generator[Any, Any, int]:
    """Send every letter through ``batches``; returns the number of batch calls."""
    calls = 0
    for phase in batches.phases(letters):
        sizes = [batches.size(entry) for entry in phase]
        for batch in plan_batches(sizes, batches.max_batch_entries, batches.max_batch_bytes):
            pending = [phase[i] for i in batch]
            attempt = 1
            while True:
                calls += 1
                response = yield batches.call(pending)
                pending, failures = batches.unsent(pending, response)
                if not pending:
                    break
                if attempt >= batches.entry_retry.max_attempts:
                    raise DeadLetterSendError(
                        f"{len(pending)} dead-letter {batches.noun}(s) were not {batches.stored} "
                        f"{batches.resource} after {attempt} attempts: {failure_list(failures)}",
                        failures=failures,
                        retryable=True,
                    )
                yield Sleep(backoff_delay(attempt, batches.entry_retry, rng))
                attempt += 1
    return calls


# --- one sync and one async shell for every target --------------------------------------------


class _HasCallRetry(Protocol):
    @property
    def call_retry(self) -> RetryConfig: ...


ConfigT = TypeVar("ConfigT", bound=_HasCallRetry)


class TargetBase(ABC, Generic[ConfigT]):
    """A target's client, config and random source (for back-off), and its batches."""

    def __init__(self, client: Any, config: ConfigT, rng: random.Random | None) -> None:
        self.client = client
        self.config = config
        self._rng = rng

    @abstractmethod
    def _batches(self) -> LetterBatches[Any]: ...

    def _flow(self, letters: Sequence[DeadLetter]) -> Generator[Any, Any, int]:
        return send_letters_flow(self._batches(), letters, self._rng)


class DeadLetterSender(TargetBase[ConfigT]):
    """Sends with a boto3 client: mixed into each target's sync class."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        run_sync(self._flow(letters), self.client, self.config.call_retry)


class AsyncDeadLetterSender(TargetBase[ConfigT]):
    """Sends with an aiobotocore (or aioboto3) client: mixed into each target's async class."""

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        await run_async(self._flow(letters), self.client, self.config.call_retry)
