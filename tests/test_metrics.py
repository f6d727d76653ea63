"""The metrics model, the recorder, and its EMF and Prometheus back-ends."""

from __future__ import annotations

import io
import json
import math
import random
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.metrics import (
    CATALOGUE,
    EmfBackend,
    Metrics,
    MetricsBackend,
    NullMetrics,
    Recorder,
    build_metrics,
    emf_documents,
)
from kinesis_eo.metrics import catalogue as names
from kinesis_eo.metrics.model import HIGHEST_BUCKET, LOWEST_BUCKET, bucket_of

SCHEMA = json.loads((Path(__file__).parent / "emf_schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def assert_valid_emf(document: dict[str, Any]) -> None:
    """The published schema, plus the references a schema cannot express."""
    VALIDATOR.validate(document)
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(document[key], str), key
        for definition in directive["Metrics"]:
            value = document[definition["Name"]]
            if isinstance(value, list):
                assert 1 <= len(value) <= 100
                assert all(isinstance(v, int | float) for v in value)
            else:
                assert isinstance(value, int | float), definition


def emitted(stream: io.StringIO) -> list[dict[str, Any]]:
    documents = [json.loads(line) for line in stream.getvalue().splitlines()]
    for document in documents:
        assert_valid_emf(document)
    return documents


def metric_values(documents: list[dict[str, Any]], name: str, **dimensions: str) -> list[Any]:
    """Every value of metric ``name`` in documents whose dimensions include these."""
    found = []
    for document in documents:
        declared = {m["Name"] for d in document["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
        if name in declared and all(document.get(k) == v for k, v in dimensions.items()):
            found.append(document[name])
    return found


# The recorder


def test_counters_add_up_per_name_and_dimensions() -> None:
    recorder = Recorder({"app": "orders"})
    recorder.count(names.RECORDS_READ, 100, shard="shard-0")
    recorder.count(names.RECORDS_READ, 50, shard="shard-0")
    recorder.count(names.RECORDS_READ, 7, shard="shard-1")
    recorder.count(names.LEASES_TAKEN)
    snapshot = recorder.snapshot()
    assert snapshot.total(names.RECORDS_READ, shard="shard-0") == 150
    assert snapshot.total(names.RECORDS_READ, shard="shard-1") == 7
    assert snapshot.total(names.RECORDS_READ, app="orders") == 157
    assert snapshot.total(names.LEASES_TAKEN) == 1
    assert {series.labels["app"] for series in snapshot.counters} == {"orders"}


def test_a_drain_hands_over_the_interval_and_the_snapshot_keeps_every_count() -> None:
    recorder = Recorder()
    recorder.count(names.RECORDS_APPLIED, 10, shard="s")
    first = recorder.drain()
    recorder.count(names.RECORDS_APPLIED, 3, shard="s")
    second = recorder.drain()
    third = recorder.drain()
    assert first.total(names.RECORDS_APPLIED) == 10
    assert second.total(names.RECORDS_APPLIED) == 3
    assert not third
    assert recorder.snapshot().total(names.RECORDS_APPLIED) == 13


def test_gauges_keep_the_last_value_and_a_drain_reports_only_those_set_since() -> None:
    recorder = Recorder()
    recorder.gauge(names.MILLIS_BEHIND_LATEST, 5000, shard="a")
    recorder.gauge(names.MILLIS_BEHIND_LATEST, 20, shard="a")
    recorder.gauge(names.LEASES_HELD, 4)
    drained = recorder.drain()
    assert sorted(drained.gauges.values()) == [4, 20]
    recorder.gauge(names.LEASES_HELD, 3)
    assert list(recorder.drain().gauges.values()) == [3]
    snapshot = recorder.snapshot()
    assert sorted(snapshot.gauges.values()) == [3, 20]


def test_counts_from_many_threads_are_all_kept_while_another_thread_drains() -> None:
    recorder = Recorder({"app": "a"})
    threads_n, per_thread = 8, 5000
    drained: list[float] = []
    stop = threading.Event()

    def record(shard: str) -> None:
        for _ in range(per_thread):
            recorder.count(names.DUPLICATES_INBOUND, 2, shard=shard)
            recorder.timing(names.COMMIT_LATENCY, 0.01, shard=shard)

    def drain() -> None:
        while not stop.is_set():
            drained.append(recorder.drain().total(names.DUPLICATES_INBOUND))

    drainer = threading.Thread(target=drain)
    drainer.start()
    workers = [threading.Thread(target=record, args=(f"s{i % 3}",)) for i in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    drainer.join()
    final = recorder.drain()
    expected = threads_n * per_thread * 2
    assert sum(drained) + final.total(names.DUPLICATES_INBOUND) == expected
    snapshot = recorder.snapshot()
    assert snapshot.total(names.DUPLICATES_INBOUND) == expected
    assert sum(stats.count for stats in snapshot.timings.values()) == threads_n * per_thread


def test_timing_percentiles_are_within_the_bucket_error() -> None:
    recorder = Recorder()
    rng = random.Random(7)
    values = [rng.lognormvariate(math.log(0.02), 1.0) for _ in range(20_000)]
    for value in values:
        recorder.timing(names.HANDLER_LATENCY, value)
    (stats,) = recorder.snapshot().timings.values()
    ordered = sorted(values)
    for fraction in (0.5, 0.9, 0.99):
        exact = ordered[math.ceil(fraction * len(ordered)) - 1]
        assert stats.percentile(fraction) == pytest.approx(exact, rel=0.092)
    assert stats.count == len(values)
    assert stats.total == pytest.approx(sum(values))
    assert (stats.minimum, stats.maximum) == (min(values), max(values))


def test_timing_memory_is_bounded_whatever_the_values() -> None:
    recorder = Recorder()
    rng = random.Random(1)
    for _ in range(50_000):
        recorder.timing(names.COMMIT_LATENCY, 10 ** rng.uniform(-9, 6))
    recorder.timing(names.COMMIT_LATENCY, 0.0)
    (stats,) = recorder.snapshot().timings.values()
    assert len(stats.buckets) <= HIGHEST_BUCKET - LOWEST_BUCKET + 1
    assert bucket_of(0.0) == LOWEST_BUCKET
    assert bucket_of(1e9) == HIGHEST_BUCKET


def test_a_power_of_two_falls_in_the_bucket_it_ends() -> None:
    # Prometheus bounds are inclusive: 1 s must count under le="1.0".
    recorder = Recorder()
    recorder.timing(names.COMMIT_LATENCY, 1.0)
    (stats,) = recorder.snapshot().timings.values()
    assert stats.count_up_to(bucket_of(1.0)) == 1
    assert stats.count_up_to(bucket_of(1.0) - 1) == 0
    assert stats.percentile(0.5) == 1.0  # clamped to what was seen


def test_collapse_sums_counters_over_shards_and_keeps_the_worst_gauge() -> None:
    recorder = Recorder({"app": "a"})
    recorder.count(names.RECORDS_READ, 5, shard="x")
    recorder.count(names.RECORDS_READ, 6, shard="y")
    recorder.gauge(names.MILLIS_BEHIND_LATEST, 10, shard="x")
    recorder.gauge(names.MILLIS_BEHIND_LATEST, 900, shard="y")
    recorder.timing(names.COMMIT_LATENCY, 0.1, shard="x")
    recorder.timing(names.COMMIT_LATENCY, 0.2, shard="y")
    collapsed = recorder.snapshot().collapse(keep={"app"})
    assert [(s.name, s.labels, v) for s, v in collapsed.counters.items()] == [
        (names.RECORDS_READ, {"app": "a"}, 11)
    ]
    assert list(collapsed.gauges.values()) == [900]
    assert [stats.count for stats in collapsed.timings.values()] == [2]


def test_null_metrics_and_every_back_end_are_metrics() -> None:
    null = NullMetrics()
    null.count(names.RECORDS_READ, 10, shard="s")
    null.timing(names.COMMIT_LATENCY, 0.1)
    null.gauge(names.LEASES_HELD, 1)
    assert null.flush() == 0
    assert isinstance(null, MetricsBackend)
    assert isinstance(Recorder(), Metrics)
    assert isinstance(EmfBackend(namespace="KinesisEO", stream=io.StringIO()), MetricsBackend)


def test_the_catalogue_names_every_metric_once_with_a_cloudwatch_unit() -> None:
    constants = {
        value
        for key, value in vars(names).items()
        if key.isupper() and not key.startswith("_") and isinstance(value, str)
    }
    dimension_names = {names.APP, names.SHARD, names.REASON, names.SERVICE}
    assert constants - dimension_names == set(CATALOGUE)
    assert len(CATALOGUE) == 22
    units = set(SCHEMA["$defs"]["MetricDefinition"]["properties"]["Unit"]["enum"])
    for spec in CATALOGUE.values():
        assert spec.unit in units, spec.name
        assert set(spec.dimensions) <= dimension_names - {names.APP}
    assert CATALOGUE[names.DEAD_LETTERED].dimensions == (names.SHARD, names.REASON)
    assert CATALOGUE[names.THROTTLES].dimensions == (names.SERVICE,)
    assert CATALOGUE[names.LEASES_HELD].dimensions == ()


# EMF


def emf_backend(stream: io.StringIO, app: str = "orders") -> EmfBackend:
    return EmfBackend(
        Recorder({"app": app}), namespace="KinesisEO", stream=stream, clock=lambda: 1.5
    )


def test_ten_recorded_inbound_duplicates_are_exactly_ten_in_the_document() -> None:
    stream = io.StringIO()
    backend = emf_backend(stream)
    for _ in range(10):
        backend.count(names.DUPLICATES_INBOUND, shard="shardId-000")
    backend.count(names.RECORDS_READ, 250, shard="shardId-000")
    backend.count(names.BYTES_READ, 4096, shard="shardId-000")
    assert backend.flush() == 1
    (document,) = emitted(stream)
    assert document[names.DUPLICATES_INBOUND] == 10
    assert document[names.RECORDS_READ] == 250
    assert document["app"] == "orders"
    assert document["shard"] == "shardId-000"
    assert document["_aws"]["Timestamp"] == 1500
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "KinesisEO"
    assert directive["Dimensions"] == [["app", "shard"]]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units[names.BYTES_READ] == "Bytes"
    assert units[names.DUPLICATES_INBOUND] == "Count"


def test_one_document_per_distinct_dimension_set() -> None:
    stream = io.StringIO()
    backend = emf_backend(stream)
    backend.count(names.DEAD_LETTERED, 2, shard="s0", reason="PAYLOAD_MISMATCH")
    backend.count(names.DEAD_LETTERED, 1, shard="s0", reason="UNDECODABLE")
    backend.count(names.RECORDS_APPLIED, 9, shard="s0")
    backend.count(names.THROTTLES, 4, service="dynamodb")
    backend.gauge(names.LEASES_HELD, 3)
    assert backend.flush() == 5
    documents = emitted(stream)
    assert metric_values(documents, names.DEAD_LETTERED, reason="PAYLOAD_MISMATCH") == [2]
    assert metric_values(documents, names.DEAD_LETTERED, reason="UNDECODABLE") == [1]
    assert metric_values(documents, names.THROTTLES, service="dynamodb") == [4]
    assert metric_values(documents, names.LEASES_HELD) == [3]
    dimension_sets = sorted(
        tuple(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) for d in documents
    )
    assert dimension_sets == [
        ("app",),
        ("app", "reason", "shard"),
        ("app", "reason", "shard"),
        ("app", "service"),
        ("app", "shard"),
    ]


def test_more_than_100_metrics_are_split_over_documents_each_value_once() -> None:
    stream = io.StringIO()
    backend = emf_backend(stream)
    for i in range(250):
        backend.count(f"custom_{i:03d}", i + 1, shard="s")
    assert backend.flush() == 3
    documents = emitted(stream)
    sizes = [len(d["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for d in documents]
    assert sizes == [100, 100, 50]
    for i in range(250):
        assert metric_values(documents, f"custom_{i:03d}") == [i + 1]


def test_timings_are_value_arrays_of_at_most_100_spread_over_documents() -> None:
    stream = io.StringIO()
    backend = emf_backend(stream)
    for i in range(250):
        backend.timing(names.COMMIT_LATENCY, 0.010 + i * 0.0001, shard="s")
    backend.count(names.RECORDS_APPLIED, 1, shard="s")
    assert backend.flush() == 3
    documents = emitted(stream)
    arrays = metric_values(documents, names.COMMIT_LATENCY)
    assert [len(a) for a in arrays] == [100, 100, 50]
    assert metric_values(documents, names.RECORDS_APPLIED) == [1]  # once, not per document
    unit = {
        m["Name"]: m["Unit"]
        for d in documents
        for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }
    assert unit[names.COMMIT_LATENCY] == "Milliseconds"
    all_values = sorted(v for a in arrays for v in a)
    assert all_values[0] == pytest.approx(10.0, rel=0.092)
    assert all_values[-1] == pytest.approx(34.9, rel=0.092)


def test_timing_values_above_the_cap_keep_the_distribution() -> None:
    recorder = Recorder()
    for _ in range(900):
        recorder.timing(names.HANDLER_LATENCY, 0.001)
    for _ in range(100):
        recorder.timing(names.HANDLER_LATENCY, 1.0)
    documents = emf_documents(
        recorder.drain(), namespace="KinesisEO", timestamp_ms=0, max_timing_values=200
    )
    for document in documents:
        assert_valid_emf(document)
    values = [v for a in metric_values(documents, names.HANDLER_LATENCY) for v in a]
    assert len(values) == 200
    assert sum(1 for v in values if v > 500) == 20  # one in ten, as recorded


def test_each_flush_writes_once_and_an_empty_flush_writes_nothing() -> None:
    class CountingStream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = CountingStream()
    backend = emf_backend(stream)
    backend.count(names.RECORDS_READ, 5, shard="a")
    backend.count(names.RECORDS_READ, 5, shard="b")
    assert backend.flush() == 2
    assert stream.flushes == 1
    assert backend.flush() == 0
    assert stream.flushes == 1
    backend.count(names.RECORDS_READ, 1, shard="a")
    backend.close()
    documents = emitted(stream)
    assert [d[names.RECORDS_READ] for d in documents] == [5, 5, 1]


def test_emf_writes_to_stdout_when_no_stream_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    backend = build_metrics("emf", namespace="KinesisEO", app="orders")
    backend.count(names.SHARDS_ENDED)
    backend.flush()
    (line,) = capsys.readouterr().out.splitlines()
    document = json.loads(line)
    assert_valid_emf(document)
    assert document[names.SHARDS_ENDED] == 1
    assert document["app"] == "orders"


def test_more_than_30_dimensions_is_a_configuration_error_naming_the_metric() -> None:
    backend = emf_backend(io.StringIO())
    backend.count("wide", **{f"d{i:02d}": "v" for i in range(30)})
    with pytest.raises(ConfigurationError, match="metric wide has 31 dimensions"):
        backend.flush()


def test_a_counter_and_a_timing_of_one_name_is_a_configuration_error() -> None:
    backend = emf_backend(io.StringIO())
    backend.count("same", 1, shard="s")
    backend.timing("same", 0.1, shard="s")
    with pytest.raises(ConfigurationError, match="metric same clashes"):
        backend.flush()


@pytest.mark.parametrize("namespace", ["", "AWS/Kinesis", "x" * 256, "caf\u00e9"])
def test_a_namespace_cloudwatch_refuses_is_a_configuration_error(namespace: str) -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        EmfBackend(namespace=namespace)


# Powertools cooperation


class FakePowertoolsMetrics:
    """Follows aws_lambda_powertools.metrics.Metrics.add_metric's signature."""

    def __init__(self) -> None:
        self.added: list[tuple[str, str, float]] = []

    def add_metric(self, name: str, unit: Any, value: float, resolution: Any = 60) -> None:
        self.added.append((name, unit, value))


def test_into_powertools_adds_totals_over_shards_instead_of_writing_documents() -> None:
    stream = io.StringIO()
    backend = emf_backend(stream)
    backend.count(names.DUPLICATES_INBOUND, 4, shard="a")
    backend.count(names.DUPLICATES_INBOUND, 6, shard="b")
    backend.gauge(names.MILLIS_BEHIND_LATEST, 70, shard="a")
    backend.gauge(names.MILLIS_BEHIND_LATEST, 30, shard="b")
    for _ in range(150):
        backend.timing(names.HANDLER_LATENCY, 0.002, shard="a")
    fake = FakePowertoolsMetrics()
    added = backend.into_powertools(fake)
    assert stream.getvalue() == ""
    assert backend.flush() == 0  # handed over, so nothing left to write
    assert (names.DUPLICATES_INBOUND, "Count", 10) in fake.added
    assert (names.MILLIS_BEHIND_LATEST, "Milliseconds", 70) in fake.added
    latencies = [v for n, u, v in fake.added if n == names.HANDLER_LATENCY and u == "Milliseconds"]
    assert len(latencies) == 99  # below the 100 values at which Powertools writes on its own
    assert latencies[0] == pytest.approx(2.0, rel=0.092)
    assert added == len(fake.added)


def test_into_powertools_with_the_real_powertools_metrics(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    powertools = pytest.importorskip(
        "aws_lambda_powertools.metrics",
        reason="Powertools is in the bench extra (pip install -e '.[bench]')",
    )
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    metrics = powertools.Metrics(namespace="OrdersFunction", service="orders")
    metrics.clear_metrics()
    backend = emf_backend(io.StringIO())
    for _ in range(10):
        backend.count(names.DUPLICATES_INBOUND, shard="shardId-000")
    backend.timing(names.COMMIT_LATENCY, 0.025, shard="shardId-000")
    backend.into_powertools(metrics)
    metrics.add_metric(name="orders_placed", unit="Count", value=3)
    metrics.flush_metrics()
    (line,) = capsys.readouterr().out.splitlines()
    document = json.loads(line)
    assert_valid_emf(document)
    assert document[names.DUPLICATES_INBOUND] == [10.0]
    assert document[names.COMMIT_LATENCY] == [pytest.approx(25.0, rel=0.092)]
    assert document["orders_placed"] == [3.0]
    assert document["service"] == "orders"


# Prometheus


@pytest.fixture
def prometheus() -> Iterator[MetricsBackend]:
    backend = build_metrics("prometheus", namespace="KinesisEO", app="orders", port=0)
    yield backend
    backend.close()


def scrape(backend: MetricsBackend) -> str:
    port = backend.port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_a_prometheus_scrape_shows_the_recorded_counters(prometheus: MetricsBackend) -> None:
    for _ in range(10):
        prometheus.count(names.DUPLICATES_INBOUND, shard="shardId-000")
    prometheus.count(names.RECORDS_READ, 250, shard="shardId-000")
    prometheus.count(names.DEAD_LETTERED, 2, shard="shardId-000", reason="UNDECODABLE")
    prometheus.gauge(names.LEASES_HELD, 3)
    body = scrape(prometheus)
    lines = set(body.splitlines())
    assert 'kinesis_eo_duplicates_inbound_total{app="orders",shard="shardId-000"} 10.0' in lines
    assert 'kinesis_eo_records_read_total{app="orders",shard="shardId-000"} 250.0' in lines
    assert (
        'kinesis_eo_dead_lettered_total{app="orders",reason="UNDECODABLE",shard="shardId-000"} 2.0'
        in lines
    )
    assert 'kinesis_eo_leases_held{app="orders"} 3.0' in lines
    # A scrape reads, it does not drain: the next one shows the same totals plus new ones.
    prometheus.count(names.DUPLICATES_INBOUND, shard="shardId-000")
    assert 'kinesis_eo_duplicates_inbound_total{app="orders",shard="shardId-000"} 11.0' in set(
        scrape(prometheus).splitlines()
    )


def test_prometheus_timings_are_histograms_in_seconds(prometheus: MetricsBackend) -> None:
    for _ in range(3):
        prometheus.timing(names.COMMIT_LATENCY, 0.003, shard="s")
    prometheus.timing(names.COMMIT_LATENCY, 1.0, shard="s")
    lines = set(scrape(prometheus).splitlines())
    prefix = 'kinesis_eo_commit_latency_seconds_bucket{app="orders",le='
    assert prefix + '"0.001953125",shard="s"} 0.0' in lines
    assert prefix + '"0.00390625",shard="s"} 3.0' in lines
    assert prefix + '"0.5",shard="s"} 3.0' in lines
    assert prefix + '"1.0",shard="s"} 4.0' in lines
    assert prefix + '"+Inf",shard="s"} 4.0' in lines
    assert 'kinesis_eo_commit_latency_seconds_count{app="orders",shard="s"} 4.0' in lines


def test_a_dimension_that_is_no_prometheus_label_name_is_made_one(
    prometheus: MetricsBackend,
) -> None:
    prometheus.count("custom", 2, **{"event-source": "orders"})
    assert 'kinesis_eo_custom_total{app="orders",event_source="orders"} 2.0' in set(
        scrape(prometheus).splitlines()
    )


def test_prometheus_without_its_package_is_one_sentence_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError) as raised:
        build_metrics("prometheus", namespace="KinesisEO", app="orders", port=0)
    assert str(raised.value) == (
        "the prometheus metrics back-end needs the prometheus-client package: "
        "pip install 'kinesis-eo[metrics-prometheus]'"
    )


def test_a_port_in_use_is_a_configuration_error(prometheus: MetricsBackend) -> None:
    port = prometheus.port  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
        build_metrics("prometheus", namespace="KinesisEO", app="orders", port=port)


# The factory


def test_build_metrics_none_records_nothing() -> None:
    assert isinstance(build_metrics("none", namespace="KinesisEO", app="orders"), NullMetrics)


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("statsd", {}, "unknown metrics back-end 'statsd': choose one of emf, prometheus, none"),
        ("prometheus", {}, "needs a port"),
        ("emf", {"app": ""}, "consumer group"),
    ],
)
def test_build_metrics_refuses_bad_settings_in_one_sentence(
    kind: str, kwargs: dict[str, Any], message: str
) -> None:
    settings: dict[str, Any] = {"namespace": "KinesisEO", "app": "orders", **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        build_metrics(kind, **settings)


def test_the_overhead_bench_runs_and_reports_each_case() -> None:
    # The figures are not asserted (a shared machine's timings vary); the script must keep working.
    script = Path(__file__).resolve().parents[1] / "bench" / "metrics_overhead.py"
    out = subprocess.run(
        [sys.executable, str(script), "--batch", "10", "--batches", "20"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for label in ("NullMetrics, per batch", "Recorder, per batch", "EmfBackend, per batch"):
        assert re.search(rf"{label}\s+\d+\.\d+ µs/record", out), out
