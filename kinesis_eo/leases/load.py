"""How busy a lease is: records per second, measured by its holder from its own checkpoints.

The holder knows the shard's running count of processed records (it writes it
with each checkpoint); the rate over the last ``window_s`` seconds of those
counts is what it reports in the lease (``eoRecordsPerSecond``) for the
coordinator to balance on.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RateMeter"]


class RateMeter:
    """Records per second of one lease over a sliding window of (time, running count) samples.

    Unknown (None) until the samples span a sixth of the window: a rate over a
    few seconds of a new holder would be noise the coordinator acts on.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        samples = self._samples
        if samples and count < samples[-1][1]:
            samples.clear()  # a count that goes back is another holder's: start over
        samples.append((now, count))
        # Keep one sample at or before the window's start, as the anchor of the rate.
        while len(samples) >= 2 and samples[1][0] <= now - self.window_s:
            samples.popleft()

    def rate(self, now: float) -> float | None:
        if not self._samples:
            return None
        start, first = self._samples[0]
        span = now - start
        if span < self.window_s / 6:
            return None
        return (self._samples[-1][1] - first) / span
