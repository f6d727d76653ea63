"""Retry policy for AWS calls: which errors are retried and how long to wait.

Calls are retried with jittered exponential back-off (tenacity) when the
translated error says it is retryable. An expired shard iterator is retryable
in general but never by repeating the same call, so the reader handles it
itself and the call-level retry leaves it alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from kinesis_eo.errors import IteratorExpiredError, KinesisEOError

__all__ = [
    "RetryConfig",
    "async_retrying",
    "backoff_delay",
    "is_call_retryable",
    "sync_retrying",
]


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """How hard to retry a transient AWS failure before giving up.

    ``max_attempts`` counts the first try. Waits grow from ``initial_backoff_s``
    by powers of two up to ``max_backoff_s``, each drawn at random below that
    bound ("full jitter"), so that many workers throttled together spread out.
    """

    max_attempts: int = 8
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")


def is_call_retryable(exc: BaseException) -> bool:
    """Whether an error is worth repeating the same call for (an expired iterator is not: the reader
    replaces it).
    """
    return (
        isinstance(exc, KinesisEOError)
        and exc.retryable
        and not isinstance(exc, IteratorExpiredError)
    )


def backoff_delay(attempt: int, config: RetryConfig, rng: random.Random | None = None) -> float:
    """Full-jitter delay before retry number ``attempt`` (1 for the first retry)."""
    cap = min(config.max_backoff_s, config.initial_backoff_s * (2 ** max(attempt - 1, 0)))
    return (rng or random).uniform(0, cap)


def _tenacity_kwargs(config: RetryConfig) -> dict[str, object]:
    return {
        "retry": retry_if_exception(is_call_retryable),
        "stop": stop_after_attempt(config.max_attempts),
        "wait": wait_random_exponential(
            multiplier=config.initial_backoff_s, max=config.max_backoff_s
        ),
        "reraise": True,
    }


def sync_retrying(config: RetryConfig) -> Retrying:
    """A tenacity ``Retrying`` with the back-off and stop rules of ``config``."""
    return Retrying(**_tenacity_kwargs(config))  # type: ignore[arg-type]


def async_retrying(config: RetryConfig) -> AsyncRetrying:
    """A tenacity ``AsyncRetrying`` with the back-off and stop rules of ``config``."""
    return AsyncRetrying(**_tenacity_kwargs(config))  # type: ignore[arg-type]
