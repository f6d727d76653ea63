"""CloudWatch Embedded Metric Format: metrics as JSON log lines that CloudWatch turns into metrics.

In AWS Lambda (and on ECS with the awslogs driver, or with the CloudWatch agent)
a JSON object on stdout that follows the EMF specification becomes CloudWatch
metrics, with no PutMetricData call and no extra permission. :class:`EmfBackend`
records into a :class:`~kinesis_eo.metrics.model.Recorder` and, on each
:meth:`EmfBackend.flush` (per batch, per invocation, or on a timer), drains it
and writes one line per document. Nothing is written between flushes.

The specification's limits, and how they are kept:

- at most 100 metric definitions per document: a larger set is split over
  several documents;
- a document's dimension values are top-level members, so it holds one
  combination of dimension values: one document (or more) per distinct set;
- at most 30 dimension keys per dimension set: more is a configuration error;
- an array value holds at most 100 numbers: a timing with more values is
  spread over several documents, each with the next 100.

Timings are written as value arrays (the specification has no statistic
sets), in milliseconds, one value per recorded duration, each reported as the
middle of its log-scale bucket (within 9.1%). Above ``max_timing_values``
durations per series and flush, the values keep the buckets' proportions, so
percentiles hold but the sample count is smaller than the recorded count.

``aws-embedded-metrics`` was not used: it requires aiohttp, probes the EC2
metadata endpoint to find out where it runs, adds its own default dimensions,
writes one dimension set per logger, and does not aggregate (a counter becomes
a list of ones); Powertools' ``Metrics`` shares one dimension set over all its
metrics. Both would need this recorder in front of them anyway.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.metrics.catalogue import MetricKind, spec_for
from kinesis_eo.metrics.model import Dimensions, Recorder, Snapshot, TimingStats

__all__ = [
    "MAX_DIMENSIONS_PER_SET",
    "MAX_DIMENSION_VALUE_LENGTH",
    "MAX_METRICS_PER_DOCUMENT",
    "MAX_NAMESPACE_LENGTH",
    "MAX_VALUES_PER_ARRAY",
    "TIMING_UNIT",
    "EmfBackend",
    "PowertoolsMetrics",
    "emf_documents",
    "validate_namespace",
]

MAX_METRICS_PER_DOCUMENT = 100
MAX_DIMENSIONS_PER_SET = 30
MAX_VALUES_PER_ARRAY = 100
MAX_NAMESPACE_LENGTH = 255
MAX_DIMENSION_VALUE_LENGTH = 1024
TIMING_UNIT = "Milliseconds"
# Powertools writes a document of its own when one metric reaches 100 values.
_POWERTOOLS_VALUES_PER_METRIC = MAX_VALUES_PER_ARRAY - 1

_Entry = tuple[str, str, list[Any]]
"""(metric name, unit, the value for each document round: a number or an array)."""


def validate_namespace(namespace: str) -> str:
    """``namespace`` if CloudWatch accepts it as a custom namespace, else a ConfigurationError."""
    if not namespace or not namespace.strip():
        raise ConfigurationError("the CloudWatch metrics namespace is empty")
    if len(namespace) > MAX_NAMESPACE_LENGTH or not namespace.isascii():
        raise ConfigurationError(
            f"the CloudWatch metrics namespace {namespace!r} must be at most "
            f"{MAX_NAMESPACE_LENGTH} ASCII characters"
        )
    if namespace.startswith("AWS/"):
        raise ConfigurationError(
            f"the CloudWatch metrics namespace {namespace!r} is reserved for AWS services"
        )
    return namespace


def _check_dimensions(name: str, dimensions: Dimensions) -> None:
    if len(dimensions) > MAX_DIMENSIONS_PER_SET:
        raise ConfigurationError(
            f"metric {name} has {len(dimensions)} dimensions; an EMF dimension set takes at "
            f"most {MAX_DIMENSIONS_PER_SET}"
        )
    for key, value in dimensions:
        if not value.strip() or len(value) > MAX_DIMENSION_VALUE_LENGTH:
            raise ConfigurationError(
                f"metric {name} has dimension {key}={value!r}; CloudWatch takes 1 to "
                f"{MAX_DIMENSION_VALUE_LENGTH} characters"
            )


def _timing_rounds(stats: TimingStats, max_values: int) -> list[Any]:
    milliseconds = [round(value * 1000.0, 6) for value in stats.samples(max_values)]
    return [
        milliseconds[start : start + MAX_VALUES_PER_ARRAY]
        for start in range(0, len(milliseconds), MAX_VALUES_PER_ARRAY)
    ]


def _entries_by_dimensions(
    snapshot: Snapshot, max_timing_values: int
) -> dict[Dimensions, list[_Entry]]:
    groups: dict[Dimensions, list[_Entry]] = {}
    for series, value in snapshot.counters.items():
        unit = spec_for(series.name, MetricKind.COUNTER).unit
        groups.setdefault(series.dimensions, []).append((series.name, unit, [value]))
    for series, value in snapshot.gauges.items():
        unit = spec_for(series.name, MetricKind.GAUGE).unit
        groups.setdefault(series.dimensions, []).append((series.name, unit, [value]))
    for series, stats in snapshot.timings.items():
        rounds = _timing_rounds(stats, max_timing_values)
        groups.setdefault(series.dimensions, []).append((series.name, TIMING_UNIT, rounds))
    return groups


def _document(
    namespace: str, timestamp_ms: int, dimensions: Dimensions, metrics: list[tuple[str, str, Any]]
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [[key for key, _ in dimensions]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit, _ in metrics],
                }
            ],
        }
    }
    document.update(dimensions)
    for name, _, value in metrics:
        if name in document:
            raise ConfigurationError(
                f"metric {name} clashes with a dimension or another metric of that name"
            )
        document[name] = value
    return document


def emf_documents(
    snapshot: Snapshot, *, namespace: str, timestamp_ms: int, max_timing_values: int = 1000
) -> list[dict[str, Any]]:
    """The EMF documents that publish ``snapshot``, within the specification's limits."""
    documents: list[dict[str, Any]] = []
    groups = _entries_by_dimensions(snapshot, max_timing_values)
    for dimensions in sorted(groups):
        entries = sorted(groups[dimensions], key=lambda entry: entry[0])
        for name, _, _ in entries:
            _check_dimensions(name, dimensions)
        rounds = max(len(values) for _, _, values in entries)
        # A metric appears at most once per document: its n-th array goes in round n.
        for round_number in range(rounds):
            batch = [
                (name, unit, values[round_number])
                for name, unit, values in entries
                if round_number < len(values)
            ]
            for start in range(0, len(batch), MAX_METRICS_PER_DOCUMENT):
                chunk = batch[start : start + MAX_METRICS_PER_DOCUMENT]
                documents.append(_document(namespace, timestamp_ms, dimensions, chunk))
    return documents


class PowertoolsMetrics(Protocol):
    """The part of Powertools for AWS Lambda's ``Metrics`` that :meth:`EmfBackend.into_powertools`
    uses (``aws_lambda_powertools.metrics.Metrics.add_metric``)."""

    def add_metric(self, name: str, unit: Any, value: float, resolution: Any = 60) -> None:
        """Add one value of a metric to the document Powertools writes at its flush."""


class EmfBackend:
    """Records into a :class:`Recorder` and writes EMF documents to a text stream on flush.

    ``stream`` is looked up at each flush when not given (``sys.stdout`` then),
    so that a redirected stdout is honoured. A flush is a few small writes,
    fine to call from asyncio code too.
    """

    def __init__(
        self,
        recorder: Recorder | None = None,
        *,
        namespace: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
        max_timing_values: int = 1000,
    ) -> None:
        self.recorder = recorder if recorder is not None else Recorder()
        self.namespace = validate_namespace(namespace)
        self._stream = stream
        self._clock = clock
        self._max_timing_values = max_timing_values
        self._flush_lock = threading.Lock()

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        """Add ``value`` to a counter."""
        self.recorder.count(name, value, **dimensions)

    def timing(self, name: str, seconds: float, **dimensions: str) -> None:
        """Record one duration."""
        self.recorder.timing(name, seconds, **dimensions)

    def gauge(self, name: str, value: float, **dimensions: str) -> None:
        """Set a gauge."""
        self.recorder.gauge(name, value, **dimensions)

    def documents(self) -> list[dict[str, Any]]:
        """Drain the recorder into EMF documents, without writing them."""
        return emf_documents(
            self.recorder.drain(),
            namespace=self.namespace,
            timestamp_ms=int(self._clock() * 1000),
            max_timing_values=self._max_timing_values,
        )

    def flush(self) -> int:
        """Write what accumulated since the last flush, one document per line; returns how many."""
        with self._flush_lock:
            documents = self.documents()
            if not documents:
                return 0
            stream = self._stream if self._stream is not None else sys.stdout
            stream.write(
                "".join(json.dumps(doc, separators=(",", ":")) + "\n" for doc in documents)
            )
            stream.flush()
            return len(documents)

    def close(self) -> None:
        """Write what is left."""
        self.flush()

    def into_powertools(self, metrics: PowertoolsMetrics) -> int:
        """Hand what accumulated since the last flush to a Powertools ``Metrics`` object instead
        of writing documents of our own; returns how many values it added.

        A Powertools document has one dimension set for all its metrics, so the
        values go in summed over shards, reasons and services (gauges: the highest,
        timings: merged, in milliseconds), under the Powertools object's namespace
        and dimensions. They are written when Powertools flushes (``log_metrics``).
        """
        with self._flush_lock:
            snapshot = self.recorder.drain().collapse(keep=())
        added = 0
        for kind, values in (
            (MetricKind.COUNTER, snapshot.counters),
            (MetricKind.GAUGE, snapshot.gauges),
        ):
            for series, value in sorted(values.items()):
                metrics.add_metric(
                    name=series.name, unit=spec_for(series.name, kind).unit, value=value
                )
                added += 1
        for series, stats in sorted(snapshot.timings.items()):
            for seconds in stats.samples(_POWERTOOLS_VALUES_PER_METRIC):
                metrics.add_metric(name=series.name, unit=TIMING_UNIT, value=seconds * 1000.0)
                added += 1
        return added
