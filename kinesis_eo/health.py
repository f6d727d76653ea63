"""A worker's health: what each shard loop last did, judged into "healthy" or a reason.

A coordinator that keeps going round is not enough: a worker whose every
shard loop fails (a ledger table with the wrong keys, a denied call) or
whose shards sit paused by an outage renews its leases happily and would
look alive. The shard loops report here what they do; the coordinator
writes the judgement into the health file on every round, and
``kinesis-eo health`` turns it into an exit code for the container.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kinesis_eo.errors import ConfigurationError

__all__ = [
    "HealthBook",
    "HealthLimits",
    "ShardHealth",
    "prepare_health_file",
    "write_health_file",
]


@dataclass
class ShardHealth:
    """The last news of one shard loop: progress, failures in a row, records waiting and the outage
    pausing it.
    """

    # Monotonic times, on the worker's own clock.
    progress_at: float
    failures_in_row: int = 0
    last_error: str | None = None
    failed_at: float | None = None
    # Records were read and are not committed yet, since this time.
    waiting_since: float | None = None
    # The outage that pauses the shard now, if any.
    paused_by: str | None = None


@dataclass(frozen=True, slots=True)
class HealthLimits:
    """When a shard makes its worker unhealthy.

    ``failures``: its loop failed this many times in a row (the last within
    ``stall_s``, so that a shard another worker has since taken is forgotten);
    ``stall_s``: records have waited this long with no batch committed.
    """

    failures: int = 3
    stall_s: float = 300.0


class HealthBook:
    """Each shard loop's last news, shared by the loops and the coordinator (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._shards: dict[str, ShardHealth] = {}

    def _entry(self, shard_id: str) -> ShardHealth:
        entry = self._shards.get(shard_id)
        if entry is None:
            entry = self._shards[shard_id] = ShardHealth(progress_at=self._clock())
        return entry

    def started(self, shard_id: str) -> None:
        """A loop starts on the shard; failures of earlier loops stay counted."""
        with self._lock:
            entry = self._entry(shard_id)
            entry.waiting_since = None
            entry.paused_by = None

    def waiting(self, shard_id: str) -> None:
        with self._lock:
            entry = self._entry(shard_id)
            if entry.waiting_since is None:
                entry.waiting_since = self._clock()

    def progressed(self, shard_id: str) -> None:
        """A batch was committed: the shard is well, whatever came before."""
        with self._lock:
            self._shards[shard_id] = ShardHealth(progress_at=self._clock())

    def paused(self, shard_id: str, reason: str) -> None:
        with self._lock:
            self._entry(shard_id).paused_by = reason

    def failed(self, shard_id: str, error: BaseException) -> None:
        with self._lock:
            entry = self._entry(shard_id)
            entry.failures_in_row += 1
            entry.last_error = f"{type(error).__name__}: {error}"
            entry.failed_at = self._clock()
            entry.waiting_since = None
            entry.paused_by = None

    def left(self, shard_id: str) -> None:
        """The loop ended without failing (lease gone, shard ended, worker stopping)."""
        with self._lock:
            self._shards.pop(shard_id, None)

    def problems(self, limits: HealthLimits) -> dict[str, str]:
        """Each unhealthy shard with the reason, in one sentence."""
        now = self._clock()
        found: dict[str, str] = {}
        with self._lock:
            for shard_id, entry in sorted(self._shards.items()):
                recent = entry.failed_at is not None and now - entry.failed_at <= limits.stall_s
                if entry.failures_in_row >= limits.failures and recent:
                    found[shard_id] = (
                        f"its loop failed {entry.failures_in_row} times in a row, "
                        f"last: {entry.last_error}"
                    )
                    continue
                if entry.waiting_since is None:
                    continue
                stalled = now - max(entry.waiting_since, entry.progress_at)
                if stalled > limits.stall_s:
                    reason = f"no batch committed for {stalled:.0f} s while records wait"
                    if entry.paused_by:
                        reason += f" (paused by an outage: {entry.paused_by})"
                    found[shard_id] = reason
        return found


def prepare_health_file(path: str) -> None:
    """Create the health file's folder and prove it writable, before any shard is touched.

    A container image need not have the folder; a path that cannot be written
    would otherwise kill the worker at its first round, with a traceback.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = f"{path}.tmp"
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise ConfigurationError(
            f"the health file {path} cannot be written ({exc.strerror or exc}): "
            "choose a --health-file in a folder this user may create and write"
        ) from exc


def write_health_file(path: str, report: Mapping[str, Any]) -> None:
    """Write ``report`` with the time, whole and renamed, so a reader never sees half a file."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({**report, "time": time.time()}, handle)
    os.replace(temporary, path)
