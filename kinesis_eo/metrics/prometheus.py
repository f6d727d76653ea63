"""Prometheus: the recorder's cumulative totals served over HTTP in the exposition format.

:class:`PrometheusBackend` records into a :class:`~kinesis_eo.metrics.model.Recorder`
and serves ``/metrics`` with ``prometheus_client`` (the ``metrics-prometheus``
extra). Each scrape reads :meth:`Recorder.snapshot`, so scrapes and EMF-style
drains do not disturb each other. Counters are ``<prefix>_<name>_total``,
gauges ``<prefix>_<name>``, and timings histograms ``<prefix>_<name>_seconds``
with bounds at the powers of two from 2**-12 s (0.24 ms) to 64 s, where they
coincide with the recorder's own buckets, so the bucket counts are exact.
Dimensions become labels.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.metrics.catalogue import MetricKind, spec_for
from kinesis_eo.metrics.model import (
    BUCKETS_PER_DOUBLING,
    Recorder,
    Series,
    TimingStats,
)

__all__ = [
    "HISTOGRAM_POWERS_OF_TWO",
    "PrometheusBackend",
    "RecorderCollector",
    "metric_prefix",
]

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

HISTOGRAM_POWERS_OF_TWO = tuple(range(-12, 7))
"""Histogram bounds are 2**k seconds for these k."""

_INVALID_NAME_CHARACTERS = re.compile(r"[^a-zA-Z0-9_]")
_MISSING = (
    "the prometheus metrics back-end needs the prometheus-client package: "
    "pip install 'kinesis-eo[metrics-prometheus]'"
)


def metric_prefix(namespace: str) -> str:
    """A Prometheus metric name prefix made from a namespace (``KinesisEO/orders`` ->
    ``kinesis_eo_orders``)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", namespace)
    prefix = _INVALID_NAME_CHARACTERS.sub("_", spaced).strip("_").lower()
    prefix = re.sub("_+", "_", prefix)
    if not prefix or prefix[0].isdigit():
        raise ConfigurationError(
            f"the metrics namespace {namespace!r} does not make a Prometheus metric name"
        )
    return prefix


def _histogram_buckets(stats: TimingStats) -> list[tuple[str, float]]:
    buckets = [
        # Bucket i ends at 2**((i+1)/4): the bucket that ends at 2**k is 4k - 1.
        (repr(2.0**power), float(stats.count_up_to(power * BUCKETS_PER_DOUBLING - 1)))
        for power in HISTOGRAM_POWERS_OF_TWO
    ]
    buckets.append(("+Inf", float(stats.count)))
    return buckets


def _by_name(series: Mapping[Series, Any]) -> dict[str, list[tuple[Series, Any]]]:
    grouped: dict[str, list[tuple[Series, Any]]] = {}
    for key, value in sorted(series.items()):
        grouped.setdefault(key.name, []).append((key, value))
    return grouped


def _label_names(members: list[tuple[Series, Any]]) -> list[str]:
    return sorted({key for series, _ in members for key, _ in series.dimensions})


def _label_values(series: Series, names: list[str]) -> list[str]:
    labels = series.labels
    return [labels.get(name, "") for name in names]


def _valid_labels(names: list[str]) -> list[str]:
    return [_INVALID_NAME_CHARACTERS.sub("_", name) for name in names]


class RecorderCollector:
    """A ``prometheus_client`` collector that reads a recorder's snapshot at each scrape."""

    def __init__(self, recorder: Recorder, prefix: str) -> None:
        self._recorder = recorder
        self._prefix = prefix

    def _name(self, name: str) -> str:
        return f"{self._prefix}_{_INVALID_NAME_CHARACTERS.sub('_', name)}"

    def collect(self) -> Iterator[Metric]:
        """The recorder's series as metric families."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snapshot = self._recorder.snapshot()
        for name, members in _by_name(snapshot.counters).items():
            labels = _label_names(members)
            doc = spec_for(name, MetricKind.COUNTER).description
            counter = CounterMetricFamily(self._name(name), doc, labels=_valid_labels(labels))
            for series, value in members:
                counter.add_metric(_label_values(series, labels), value)
            yield counter
        for name, members in _by_name(snapshot.gauges).items():
            labels = _label_names(members)
            doc = spec_for(name, MetricKind.GAUGE).description
            gauge = GaugeMetricFamily(self._name(name), doc, labels=_valid_labels(labels))
            for series, value in members:
                gauge.add_metric(_label_values(series, labels), value)
            yield gauge
        for name, members in _by_name(snapshot.timings).items():
            labels = _label_names(members)
            doc = spec_for(name, MetricKind.TIMING).description
            histogram = HistogramMetricFamily(
                self._name(name) + "_seconds", doc, labels=_valid_labels(labels)
            )
            for series, stats in members:
                histogram.add_metric(
                    _label_values(series, labels),
                    _histogram_buckets(stats),
                    sum_value=stats.total,
                )
            yield histogram


class PrometheusBackend:
    """Records into a :class:`Recorder` and serves it on ``address:port`` at ``/metrics``.

    ``port=0`` takes a free port; :attr:`port` says which one.
    """

    def __init__(
        self,
        recorder: Recorder | None = None,
        *,
        prefix: str,
        port: int,
        address: str = "127.0.0.1",
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ConfigurationError(_MISSING) from None
        self.recorder = recorder if recorder is not None else Recorder()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RecorderCollector(self.recorder, prefix))
        try:
            self._server, self._thread = start_http_server(
                port, addr=address, registry=self.registry
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve Prometheus metrics on {address}:{port}: {exc.strerror or exc}"
            ) from exc
        self.address = address
        self.port: int = self._server.server_port
        self._closed = threading.Event()

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        """Add ``value`` to a counter."""
        self.recorder.count(name, value, **dimensions)

    def timing(self, name: str, seconds: float, **dimensions: str) -> None:
        """Record one duration."""
        self.recorder.timing(name, seconds, **dimensions)

    def gauge(self, name: str, value: float, **dimensions: str) -> None:
        """Set a gauge."""
        self.recorder.gauge(name, value, **dimensions)

    def flush(self) -> int:
        """Nothing to write: Prometheus pulls."""
        return 0

    def close(self) -> None:
        """Stop serving."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
