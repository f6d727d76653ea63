"""The one metrics model every runtime updates, and the in-memory recorder behind the back-ends.

Runtimes see only :class:`Metrics` (three methods). The library's default is
:class:`NullMetrics`, which records nothing. :class:`Recorder` aggregates per
(name, dimensions) in memory; back-ends read it without doing any I/O on the
record path: EMF drains it per batch or invocation (:meth:`Recorder.drain`),
Prometheus reads cumulative totals on each scrape (:meth:`Recorder.snapshot`).

Recording is meant to be called per *batch*, not per record: a batch of N
records is ``count(RECORDS_READ, N, shard=...)``, so the cost per record is a
fraction of one dictionary update under a lock.

Timings keep **fixed log-scale buckets**, four per doubling (each bucket
spans a factor of 2**(1/4), so a percentile read from a bucket's geometric
middle is within 9.1% of the true value), stored sparsely. Not a reservoir:
buckets cost the same memory whatever the rate, give exact counts and sums,
subtract and merge exactly (what drain-and-fold needs), and line up with
Prometheus histogram bounds at every power of two; a reservoir's percentiles
are random and two reservoirs cannot be merged without bias.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "BUCKETS_PER_DOUBLING",
    "HIGHEST_BUCKET",
    "LOWEST_BUCKET",
    "Dimensions",
    "Metrics",
    "MetricsBackend",
    "NullMetrics",
    "Recorder",
    "Series",
    "Snapshot",
    "TimingStats",
    "bucket_middle",
    "bucket_of",
    "bucket_upper_bound",
]

BUCKETS_PER_DOUBLING = 4
LOWEST_BUCKET = -20 * BUCKETS_PER_DOUBLING
"""Bucket (2**-20.25, 2**-20] s, about 1 µs: shorter timings are counted here."""
HIGHEST_BUCKET = 14 * BUCKETS_PER_DOUBLING
"""Bucket above 2**14 s (4.5 h): longer timings are counted here."""


def bucket_of(seconds: float) -> int:
    """The bucket holding ``seconds``: bucket ``i`` holds (2**(i/4), 2**((i+1)/4)]."""
    if seconds <= 0.0:
        return LOWEST_BUCKET
    index = math.ceil(math.log2(seconds) * BUCKETS_PER_DOUBLING) - 1
    return min(max(index, LOWEST_BUCKET), HIGHEST_BUCKET)


def bucket_upper_bound(index: int) -> float:
    """The largest value bucket ``index`` holds."""
    return float(2.0 ** ((index + 1) / BUCKETS_PER_DOUBLING))


def bucket_middle(index: int) -> float:
    """The geometric middle of bucket ``index``: what a value in it is reported as."""
    return float(2.0 ** ((index + 0.5) / BUCKETS_PER_DOUBLING))


@runtime_checkable
class Metrics(Protocol):
    """What runtimes record into. Dimensions are keyword arguments with string values."""

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        """Add ``value`` to a counter."""

    def timing(self, name: str, seconds: float, **dimensions: str) -> None:
        """Record one duration."""

    def gauge(self, name: str, value: float, **dimensions: str) -> None:
        """Set a gauge to its current value."""


@runtime_checkable
class MetricsBackend(Metrics, Protocol):
    """A :class:`Metrics` that a process owns: it flushes what it holds, and closes at exit."""

    def flush(self) -> int:
        """Publish what accumulated since the last flush; returns how many documents it wrote."""

    def close(self) -> None:
        """Flush what is left and release what the back-end holds (a server, a stream)."""


class NullMetrics:
    """Records nothing: the library's default, at the cost of one empty call."""

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        """Do nothing."""

    def timing(self, name: str, seconds: float, **dimensions: str) -> None:
        """Do nothing."""

    def gauge(self, name: str, value: float, **dimensions: str) -> None:
        """Do nothing."""

    def flush(self) -> int:
        """Nothing to publish."""
        return 0

    def close(self) -> None:
        """Nothing to release."""


Dimensions = tuple[tuple[str, str], ...]
"""Dimension (name, value) pairs, sorted by name."""


class Series(NamedTuple):
    """One aggregated series: a metric name and its dimensions."""

    name: str
    dimensions: Dimensions

    @property
    def labels(self) -> dict[str, str]:
        """The dimensions as a dictionary."""
        return dict(self.dimensions)


@dataclass(frozen=True, slots=True)
class TimingStats:
    """The shape of a set of durations: count, sum, extremes and log-scale bucket counts."""

    count: int
    total: float
    minimum: float
    maximum: float
    buckets: tuple[tuple[int, int], ...]
    """(bucket index, how many values fell in it), by increasing index."""

    def percentile(self, fraction: float) -> float:
        """The value below which ``fraction`` (0 to 1) of the durations fall, within 9.1%."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index, count in self.buckets:
            seen += count
            if seen >= rank:
                return min(max(bucket_middle(index), self.minimum), self.maximum)
        return self.maximum

    def count_up_to(self, index: int) -> int:
        """How many durations fell in buckets up to and including ``index``."""
        return sum(count for bucket, count in self.buckets if bucket <= index)

    def samples(self, limit: int) -> list[float]:
        """Up to ``limit`` representative values with the buckets' proportions, in seconds.

        Exactly ``count`` values when ``count <= limit``; above that, each bucket
        keeps its share (largest remainders first), so percentiles hold and the
        number of values does not.
        """
        if self.count <= limit:
            shares = [(index, count) for index, count in self.buckets]
        else:
            shares = _proportional(self.buckets, self.count, limit)
        values: list[float] = []
        for index, count in shares:
            value = min(max(bucket_middle(index), self.minimum), self.maximum)
            values.extend([value] * count)
        return values

    def merged(self, other: TimingStats) -> TimingStats:
        """Both sets of durations as one."""
        merged = _Timing()
        merged.fold(self)
        merged.fold(other)
        return merged.frozen()


def _proportional(
    buckets: Iterable[tuple[int, int]], total: int, limit: int
) -> list[tuple[int, int]]:
    exact = [(index, count * limit / total) for index, count in buckets]
    shares = {index: math.floor(share) for index, share in exact}
    left = limit - sum(shares.values())
    by_remainder = sorted(exact, key=lambda item: item[1] - math.floor(item[1]), reverse=True)
    for index, _ in by_remainder[:left]:
        shares[index] += 1
    return [(index, count) for index, count in sorted(shares.items()) if count]


class _Timing:
    """A mutable timing aggregate, only ever touched under the recorder's lock."""

    __slots__ = ("buckets", "count", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.buckets: dict[int, int] = {}

    def add(self, seconds: float, index: int) -> None:
        self.count += 1
        self.total += seconds
        self.minimum = min(self.minimum, seconds)
        self.maximum = max(self.maximum, seconds)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def fold(self, other: _Timing | TimingStats) -> None:
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        pairs = other.buckets.items() if isinstance(other.buckets, dict) else other.buckets
        for index, count in pairs:
            self.buckets[index] = self.buckets.get(index, 0) + count

    def frozen(self) -> TimingStats:
        return TimingStats(
            self.count, self.total, self.minimum, self.maximum, tuple(sorted(self.buckets.items()))
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Aggregated values at one moment (or over one drain interval), dimensions included."""

    counters: Mapping[Series, float]
    gauges: Mapping[Series, float]
    timings: Mapping[Series, TimingStats]

    def __bool__(self) -> bool:
        return bool(self.counters or self.gauges or self.timings)

    def total(self, name: str, **dimensions: str) -> float:
        """The sum of counter ``name`` over every series whose dimensions include these."""
        wanted = set(dimensions.items())
        return sum(
            value
            for series, value in self.counters.items()
            if series.name == name and wanted <= set(series.dimensions)
        )

    def collapse(self, keep: Container[str]) -> Snapshot:
        """The same values with only the dimensions in ``keep``: counters add up, timings
        merge, and gauges keep the highest value (the worst shard's lag, say)."""

        def narrow(series: Series) -> Series:
            return Series(series.name, tuple(kv for kv in series.dimensions if kv[0] in keep))

        counters: dict[Series, float] = {}
        for series, value in self.counters.items():
            key = narrow(series)
            counters[key] = counters.get(key, 0) + value
        gauges: dict[Series, float] = {}
        for series, value in self.gauges.items():
            key = narrow(series)
            gauges[key] = max(gauges.get(key, value), value)
        timings: dict[Series, TimingStats] = {}
        for series, stats in self.timings.items():
            key = narrow(series)
            timings[key] = timings[key].merged(stats) if key in timings else stats
        return Snapshot(counters, gauges, timings)


_Key = tuple[str, Dimensions]


class Recorder:
    """Thread-safe in-memory aggregation of counters, gauges and timings per (name, dimensions).

    ``dimensions`` are added to every series when it is read (``app`` for the
    consumer group); a dimension passed at a call wins over them. What was
    recorded since the last :meth:`drain` is kept apart from what was drained
    before, so that :meth:`drain` hands over an interval and :meth:`snapshot`
    still sees everything since the start.
    """

    def __init__(self, dimensions: Mapping[str, str] | None = None) -> None:
        self._fixed = dict(dimensions or {})
        self._lock = threading.Lock()
        self._counters: dict[_Key, float] = {}
        self._gauges: dict[_Key, float] = {}
        self._timings: dict[_Key, _Timing] = {}
        self._drained_counters: dict[_Key, float] = {}
        self._drained_gauges: dict[_Key, float] = {}
        self._drained_timings: dict[_Key, _Timing] = {}

    @property
    def dimensions(self) -> Mapping[str, str]:
        """The dimensions every series carries."""
        return dict(self._fixed)

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        """Add ``value`` to counter ``name``."""
        key = (name, tuple(sorted(dimensions.items())) if dimensions else ())
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + value

    def gauge(self, name: str, value: float, **dimensions: str) -> None:
        """Set gauge ``name``."""
        key = (name, tuple(sorted(dimensions.items())) if dimensions else ())
        with self._lock:
            self._gauges[key] = value

    def timing(self, name: str, seconds: float, **dimensions: str) -> None:
        """Record one duration of ``name``, in seconds."""
        key = (name, tuple(sorted(dimensions.items())) if dimensions else ())
        index = bucket_of(seconds)
        with self._lock:
            aggregate = self._timings.get(key)
            if aggregate is None:
                aggregate = self._timings[key] = _Timing()
            aggregate.add(seconds, index)

    def drain(self) -> Snapshot:
        """What was recorded since the last drain (gauges: those set since then), and reset that."""
        with self._lock:
            counters, self._counters = self._counters, {}
            gauges, self._gauges = self._gauges, {}
            timings, self._timings = self._timings, {}
            for key, value in counters.items():
                self._drained_counters[key] = self._drained_counters.get(key, 0) + value
            self._drained_gauges.update(gauges)
            for key, aggregate in timings.items():
                self._drained_timings.setdefault(key, _Timing()).fold(aggregate)
        return self._snapshot_of(counters, gauges, timings)

    def snapshot(self) -> Snapshot:
        """Everything recorded since the recorder was made (gauges: their last value)."""
        with self._lock:
            counters = dict(self._drained_counters)
            for key, value in self._counters.items():
                counters[key] = counters.get(key, 0) + value
            gauges = {**self._drained_gauges, **self._gauges}
            timings: dict[_Key, _Timing] = {}
            for source in (self._drained_timings, self._timings):
                for key, aggregate in source.items():
                    timings.setdefault(key, _Timing()).fold(aggregate)
        return self._snapshot_of(counters, gauges, timings)

    def _snapshot_of(
        self,
        counters: Mapping[_Key, float],
        gauges: Mapping[_Key, float],
        timings: Mapping[_Key, _Timing],
    ) -> Snapshot:
        # Two keys name one series when a call passed a fixed dimension's own value.
        counter_series: dict[Series, float] = {}
        for key, value in counters.items():
            series = self._series(key)
            counter_series[series] = counter_series.get(series, 0) + value
        timing_series: dict[Series, _Timing] = {}
        for key, aggregate in timings.items():
            timing_series.setdefault(self._series(key), _Timing()).fold(aggregate)
        return Snapshot(
            counters=counter_series,
            gauges={self._series(key): value for key, value in gauges.items()},
            timings={series: value.frozen() for series, value in timing_series.items()},
        )

    def _series(self, key: _Key) -> Series:
        name, dimensions = key
        if not self._fixed:
            return Series(name, dimensions)
        return Series(name, tuple(sorted({**self._fixed, **dict(dimensions)}.items())))
