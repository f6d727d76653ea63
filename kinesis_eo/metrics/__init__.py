"""Metrics: one model that every runtime updates, and thin back-ends at the edge.

Runtimes take a :class:`Metrics` (``NullMetrics`` unless told otherwise) and
record per batch with the names in :mod:`kinesis_eo.metrics.catalogue`, through
:class:`~kinesis_eo.metrics.run.RunMetrics`, which also keeps the run's totals
(:class:`~kinesis_eo.metrics.totals.RunTotals`). Throttles and retries are
counted by hooks on the runtime's clients (:mod:`kinesis_eo.metrics.hooks`).
A process picks its back-end once with :func:`build_metrics`:

- ``"emf"``: CloudWatch Embedded Metric Format lines on stdout, written at each
  ``flush()`` (once per round of a worker's coordinator, at each checkpoint of a
  consumer, once per invocation in AWS Lambda);
- ``"prometheus"``: ``/metrics`` served over HTTP (``metrics-prometheus`` extra);
- ``"none"``: nothing recorded.

The Prometheus module is imported only when asked for, so ``prometheus_client``
stays optional.
"""

from __future__ import annotations

from typing import Literal, TextIO

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.metrics.catalogue import (
    APP,
    CATALOGUE,
    MetricKind,
    MetricSpec,
)
from kinesis_eo.metrics.emf import EmfBackend, emf_documents
from kinesis_eo.metrics.model import (
    Metrics,
    MetricsBackend,
    NullMetrics,
    Recorder,
    Series,
    Snapshot,
    TimingStats,
)

__all__ = [
    "CATALOGUE",
    "BackendKind",
    "EmfBackend",
    "MetricKind",
    "MetricSpec",
    "Metrics",
    "MetricsBackend",
    "NullMetrics",
    "Recorder",
    "Series",
    "Snapshot",
    "TimingStats",
    "build_metrics",
    "emf_documents",
]

BackendKind = Literal["emf", "prometheus", "none"]
KINDS: tuple[BackendKind, ...] = ("emf", "prometheus", "none")


def build_metrics(
    kind: BackendKind | str,
    *,
    namespace: str,
    app: str,
    port: int | None = None,
    stream: TextIO | None = None,
    address: str = "127.0.0.1",
) -> MetricsBackend:
    """The back-end a process records into: every series carries ``app`` (the consumer group).

    ``namespace`` is the CloudWatch namespace for EMF, and the metric name prefix
    for Prometheus (``KinesisEO`` -> ``kinesis_eo_records_read_total``).
    ``port`` is required for Prometheus (0 takes a free one); ``stream`` is where
    EMF writes (stdout when not given). Bad settings raise ConfigurationError.
    """
    if kind == "none":
        return NullMetrics()
    if not app:
        raise ConfigurationError("metrics need the consumer group's name (app)")
    recorder = Recorder({APP: app})
    if kind == "emf":
        return EmfBackend(recorder, namespace=namespace, stream=stream)
    if kind == "prometheus":
        if port is None:
            raise ConfigurationError("the prometheus metrics back-end needs a port to serve on")
        from kinesis_eo.metrics.prometheus import PrometheusBackend, metric_prefix

        return PrometheusBackend(
            recorder, prefix=metric_prefix(namespace), port=port, address=address
        )
    raise ConfigurationError(f"unknown metrics back-end {kind!r}: choose one of {', '.join(KINDS)}")
