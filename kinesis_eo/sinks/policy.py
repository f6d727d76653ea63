"""The failure policy, and running a handler under it: retries, the world's faults told apart."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.errors import (
    KinesisEOError,
    SinkUnavailableError,
    is_outage,
    is_setup_fault,
    translate_aws_error,
)
from kinesis_eo.flow import Invoke, Sleep
from kinesis_eo.retry import RetryConfig, backoff_delay

__all__ = ["Attempted", "FailurePolicy", "attempt"]


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """How often a failing record is tried before it is dead-lettered.

    ``max_attempts`` counts the first try; waits between tries grow from
    ``initial_backoff_s`` up to ``max_backoff_s`` (jittered exponential).
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        RetryConfig(self.max_attempts, self.initial_backoff_s, self.max_backoff_s)  # validates

    @property
    def backoff(self) -> RetryConfig:
        """The policy's tries and waits as a ``RetryConfig``."""
        return RetryConfig(self.max_attempts, self.initial_backoff_s, self.max_backoff_s)


@dataclass
class Attempted:
    """The result of running a handler under the failure policy."""

    value: Any = None
    error: BaseException | None = None
    attempts: int = 0
    # A gate left the record for a later delivery (before or after running it).
    deferred: bool = False
    # How long each call of the handler took (seconds), and how many of them raised.
    durations: list[float] = field(default_factory=list)
    failures: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def attempt(
    function: Callable[..., Any],
    args: Callable[[int], tuple[Any, ...]],
    policy: FailurePolicy,
    first_attempt: int = 1,
) -> Generator[Any, Any, Attempted]:
    """Call ``function(*args(n))`` until it returns, at most up to the policy's limit."""
    outcome = Attempted()
    for number in range(first_attempt, policy.max_attempts + 1):
        if number > first_attempt:
            yield Sleep(backoff_delay(number - 1, policy.backoff))
        outcome.attempts = number
        started = time.perf_counter()
        try:
            outcome.value = yield Invoke(function, args(number))
        except KinesisEOError:
            # Retryable ones are outages (the caller pauses the shard); the others
            # (lost lease, missing table) are not the record's fault either.
            raise
        except Exception as exc:
            outcome.durations.append(time.perf_counter() - started)
            if is_outage(exc):
                # The world is down, not the record bad: the caller pauses the shard.
                raise SinkUnavailableError(
                    f"the handler's sink is unavailable: {type(exc).__name__}: {exc}"
                ) from exc
            if is_setup_fault(exc):
                # Denied or missing: no record causes that, and none is dead-lettered.
                raise translate_aws_error(
                    exc, resource="the handler's sink", action="a call"
                ) from exc
            outcome.error = exc  # the handler's own failure: the record may be poison
            outcome.failures += 1
            continue
        outcome.durations.append(time.perf_counter() - started)
        outcome.error = None
        return outcome
    return outcome
