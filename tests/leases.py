"""What the lease tests on a simulated clock share: the clock, their timings, no retries."""

from __future__ import annotations

from kinesis_eo.leases import LeaseConfig
from kinesis_eo.retry import RetryConfig

CONFIG = LeaseConfig(table_name="leases", failover_s=9.0, renew_interval_s=3.0)
RETRY = RetryConfig(max_attempts=1)


class Clock:
    """Time that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
