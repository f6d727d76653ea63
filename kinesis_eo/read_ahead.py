"""Read-ahead: a shard's next read runs while its current batch is applied and committed.

Like the KCL's prefetching, bounded to one batch per shard: while the sink
applies batch *n* (handlers, ledger commit), the next GetRecords for the
shard is already on its way, so a shard's pace is about the slower of
reading and committing instead of their sum. Both go through
:class:`~kinesis_eo.flow.Together`, so the sync and asyncio workers share it.

What stays as without read-ahead:

- commits stay in order: batch *n + 1* is only handed out after batch *n*
  was applied, and only one read is ever in flight;
- a batch that ends the shard (``shard_end``) starts no read after it;
- a read is never applied by itself: the caller takes the prefetched batch
  at the top of its loop, after checking that it still holds the lease, and
  its commit is fenced by the lease anyway; a lease lost while a read was in
  flight ends the loop and the prefetched batch is dropped (read again by
  the next owner from the checkpoint);
- the read is the shard's own step (iterator expiry, throttling and pacing
  included), and an error it raises is raised by the next :meth:`ReadAhead.next`,
  where it would have come from without read-ahead, rather than hiding the
  outcome of the commit that ran beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

from kinesis_eo.flow import Together

__all__ = ["ReadAhead"]

B = TypeVar("B")
R = TypeVar("R")

Step = Callable[[], Generator[Any, Any, Any]]


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


class ReadAhead(Generic[B]):
    """A shard's reads with at most one batch read ahead of the one being applied.

    ``step`` makes the flow of one read (a batch, or None when the call read
    nothing to hand out). With ``enabled`` false, :meth:`alongside` applies
    and reads nothing ahead, and :meth:`next` simply reads.
    """

    def __init__(self, step: Step, enabled: bool = True) -> None:
        self.step = step
        self.enabled = enabled
        self._ahead: list[Any] = []  # holds at most one read's outcome
        self.overlapped = 0  # reads that ran beside an apply

    def next(self) -> Generator[Any, Any, B | None]:
        """The next batch: the one read ahead if there is one, else read now."""
        if self._ahead:
            outcome = self._ahead.pop()
            if isinstance(outcome, _Failed):
                raise outcome.error
            batch: B | None = outcome
            return batch
        batch = yield from self.step()
        return batch

    def alongside(self, batch: Any, apply: Generator[Any, Any, R]) -> Generator[Any, Any, R]:
        """Run ``apply`` (the flow applying ``batch``) while the next batch is read.

        Nothing is read ahead of a batch that ends its shard. An error of
        ``apply`` is raised after the read finished; the read's batch is kept
        for :meth:`next` all the same, so a caller that goes on skips nothing.
        """
        if not self.enabled or getattr(batch, "shard_end", False):
            return (yield from apply)
        self.overlapped += 1
        result, outcome = yield Together((_captured(apply), _captured(self.step())))
        self._ahead.append(outcome)
        if isinstance(result, _Failed):
            raise result.error
        applied: R = result
        return applied


def _captured(flow: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """``flow``'s value, or its error wrapped, so that one side's error does not hide the other's
    outcome."""
    try:
        return (yield from flow)
    except Exception as exc:
        return _Failed(exc)
