"""What ``kinesis-eo run`` assembles: the user's handler, a sink, the ledger, leases and a Worker.

Kept out of the CLI so that a program can start the same worker from its own
``main`` (``RunOptions`` plus :func:`build_worker`), and so that each piece
fails with one sentence before any shard is touched: a handler that cannot
be imported, a table that is not there.

A program (the project's chaos harness is one) may hand :func:`build_worker`
what the command line cannot: the handler object itself, boto3 clients of its
own making (with a :class:`~kinesis_eo.testing.faults.FaultInjector` attached,
say), a dead-letter target object, and an ``after_commit`` hook called after
each batch's sink commit and before its checkpoint; and set in
:class:`RunOptions` the failure policy, the ledger's retries and any other
:class:`~kinesis_eo.worker.WorkerConfig` field (``worker``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from kinesis_eo import preflight
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.flow import run_sync
from kinesis_eo.leases import DynamoDBLeaseStore, LeaseConfig, LeaseManager, Sentinel
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    ExpiredClaimPolicy,
    Ledger,
    LedgerConfig,
    LedgerMode,
)
from kinesis_eo.loading import load_handler
from kinesis_eo.metrics import build_metrics
from kinesis_eo.metrics.model import Metrics, MetricsBackend
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import ClaimSink, FailurePolicy, IdempotentKeySink, TransactionalSink
from kinesis_eo.sinks.base import DeadLetterSink
from kinesis_eo.worker import AfterCommit, Worker, WorkerConfig, WorkerMetrics

__all__ = [
    "DEFAULT_FAILOVER_S",
    "EXPIRED_CLAIMS",
    "INITIAL_POSITIONS",
    "METRICS",
    "MISSING_TABLE_HINT",
    "MODES",
    "SINKS",
    "RunOptions",
    "build_sink",
    "build_worker",
    "check_health_file",
    "check_options",
    "dead_letter_target",
    "default_worker_id",
    "failure_policy",
    "fit_mark_ttl",
    "lease_config",
    "ledger_config",
    "load_handler",
    "metrics_backend",
    "prepare_tables",
    "run",
    "worker_config",
]

log = logging.getLogger(__name__)

SINKS = ("transactional", "keyed", "claim")
METRICS = ("emf", "prometheus", "none")
MODES = {"watermark": LedgerMode.WATERMARK, "per-record": LedgerMode.PER_RECORD}
INITIAL_POSITIONS = {"trim-horizon": Sentinel.TRIM_HORIZON, "latest": Sentinel.LATEST}
EXPIRED_CLAIMS = {
    "quarantine": ExpiredClaimPolicy.QUARANTINE,
    "run-again": ExpiredClaimPolicy.RUN_AGAIN,
}
DEFAULT_FAILOVER_S = 10.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything ``kinesis-eo run`` takes, with its defaults."""

    stream: str
    app: str
    handler: str
    sink: str = "transactional"
    mode: str = "watermark"
    lease_table: str | None = None
    ledger_table: str | None = None
    dead_letter_table: str | None = None
    dead_letter_queue: str | None = None
    expired_claims: str = "quarantine"
    failover_s: float = DEFAULT_FAILOVER_S
    initial_position: str = "trim-horizon"
    worker_id: str | None = None
    health_file: str | None = None
    create_tables: bool = False
    # Hours a per-record mark lives; None: the ledger's default, raised to the
    # stream's retention plus a margin where that is longer (see kinesis_eo.preflight).
    mark_ttl_hours: float | None = None
    # Tries of a failing record before it is dead-lettered; None: FailurePolicy's default.
    handler_attempts: int | None = None
    # Longest pause between retries of a shard's batch during an outage; None: WorkerConfig's.
    outage_max_backoff_s: float | None = None
    # Partition keys of a batch applied at once (WorkerConfig.lanes).
    lanes: int = 1
    # Read a shard's next batch while its current one commits (WorkerConfig.read_ahead).
    read_ahead: bool = True
    # Extra WorkerConfig fields (reader pacing, checkpoint interval), for programs and tests.
    worker: Mapping[str, Any] = field(default_factory=dict)
    # How a failing record is retried, back-off included; None: FailurePolicy's defaults.
    # handler_attempts, when given too, sets its max_attempts.
    failure_policy: FailurePolicy | None = None
    # Retries of the ledger's own DynamoDB calls; None: the ledger store's defaults.
    ledger_retry: RetryConfig | None = None
    # Where the worker's metrics go: "emf" (stdout), "prometheus" (served on metrics_port),
    # or "none" (the library's default; the CLI's is emf).
    metrics: str = "none"
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    metrics_namespace: str = "KinesisEO"
    # Read by enhanced fan-out through this consumer (name or ARN; "": the app's name),
    # registered at start if absent; None: read by polling.
    efo: str | None = None

    @property
    def lease_table_name(self) -> str:
        return self.lease_table or f"{self.app}-leases"

    @property
    def ledger_table_name(self) -> str:
        return self.ledger_table or f"{self.app}-ledger"


def default_worker_id() -> str:
    """Host, process and a random part: a restarted process must never reuse an id.

    A worker counts every lease recorded under its id as its own, so a new
    process under an old id would neither read nor take back the leases its
    predecessor left behind (see the notes on LeaseManager).
    """
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _choice(table: Mapping[str, Any], value: str, what: str) -> Any:
    try:
        return table[value]
    except KeyError:
        raise ConfigurationError(
            f"{what} must be one of {', '.join(table)}, not {value!r}"
        ) from None


# --- settings, checked before any AWS call ---------------------------------------------------


def _flag_error(flag: str, value: Any, exc: Exception) -> ConfigurationError:
    return ConfigurationError(f"{flag} {value}: {exc}")


def lease_config(options: RunOptions) -> LeaseConfig:
    """The lease timing of ``options``; a bad ``--failover-seconds`` is one sentence."""
    try:
        return LeaseConfig(options.lease_table_name, failover_s=options.failover_s)
    except ValueError as exc:
        raise _flag_error("--failover-seconds", f"{options.failover_s:g}", exc) from exc


def ledger_config(options: RunOptions) -> LedgerConfig:
    """The ledger settings of ``options`` (before the mark TTL is fitted to the stream)."""
    mode = _choice(MODES, options.mode, "--mode")
    extra: dict[str, Any] = {}
    if options.mark_ttl_hours is not None:
        hours = options.mark_ttl_hours
        try:
            extra["record_ttl"] = timedelta(hours=hours)
        except (ValueError, OverflowError) as exc:
            raise _flag_error("--mark-ttl-hours", f"{hours:g}", exc) from exc
    try:
        return LedgerConfig(consumer_group=options.app, mode=mode, **extra)
    except ValueError as exc:
        if "record_ttl" in str(exc):
            raise _flag_error("--mark-ttl-hours", f"{options.mark_ttl_hours:g}", exc) from exc
        raise ConfigurationError(
            f"--app {options.app!r} cannot name a consumer group: {exc}"
        ) from exc


def failure_policy(options: RunOptions) -> FailurePolicy:
    """How often a failing record is tried (``--handler-attempts``) before it is dead-lettered."""
    policy = options.failure_policy or FailurePolicy()
    if options.handler_attempts is None:
        return policy
    try:
        return dataclasses.replace(policy, max_attempts=options.handler_attempts)
    except ValueError as exc:
        raise _flag_error("--handler-attempts", options.handler_attempts, exc) from exc


def worker_config(options: RunOptions, leases: LeaseConfig) -> WorkerConfig:
    """The :class:`WorkerConfig` of ``options``; a bad setting is one sentence naming its flag."""
    named: dict[str, Any] = {}
    if options.lanes < 1:
        raise ConfigurationError(f"--lanes must be 1 or more, not {options.lanes}")
    if options.lanes != 1:
        named["lanes"] = options.lanes
    if not options.read_ahead:
        named["read_ahead"] = False
    if options.outage_max_backoff_s is not None:
        named["outage_max_backoff_s"] = options.outage_max_backoff_s
    if options.efo is not None:
        named["efo_consumer"] = options.efo or options.app
    try:
        return WorkerConfig(
            leases=leases,
            initial_position=_choice(
                INITIAL_POSITIONS, options.initial_position, "--initial-position"
            ),
            health_file=options.health_file,
            **{**options.worker, **named},
        )
    except ValueError as exc:
        if "outage_max_backoff_s" in str(exc) and "outage_max_backoff_s" in named:
            value = f"{options.outage_max_backoff_s:g}"
            raise _flag_error("--outage-max-backoff", value, exc) from exc
        raise ConfigurationError(f"worker settings: {exc}") from exc


def check_health_file(path: str) -> None:
    """Refuse a health file the worker could not write: it would look dead to its health check.

    The folder need not exist yet (the worker makes it), but the nearest
    existing folder above the file must be one this process can write in.
    """
    target = Path(path).absolute()
    if target.is_dir():
        raise ConfigurationError(f"--health-file '{path}' is a directory, not a file")
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigurationError(
            f"--health-file '{path}' cannot be written: '{existing}' is a file, "
            "so the folder cannot be created"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"--health-file '{path}' cannot be written: this user may not write in '{existing}'"
        )
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigurationError(f"--health-file '{path}' exists and this user may not write it")


def check_options(options: RunOptions) -> None:
    """Every setting of ``options`` that can be judged without AWS, each named by its flag."""
    leases = lease_config(options)
    ledger_config(options)
    failure_policy(options)
    worker_config(options, leases)
    _choice(EXPIRED_CLAIMS, options.expired_claims, "--expired-claims")
    if options.sink not in SINKS:
        raise ConfigurationError(f"--sink must be one of {', '.join(SINKS)}, not {options.sink!r}")
    if options.health_file is not None:
        check_health_file(options.health_file)
    if options.metrics not in METRICS:
        raise ConfigurationError(
            f"--metrics must be one of {', '.join(METRICS)}, not {options.metrics!r}"
        )
    if options.metrics == "prometheus" and options.metrics_port is None:
        raise ConfigurationError("--metrics prometheus needs --metrics-port (0: any free port)")
    if options.metrics_port is not None and not 0 <= options.metrics_port <= 65535:
        raise ConfigurationError(f"--metrics-port must be 0 to 65535, not {options.metrics_port}")


# --- tables and the stream -------------------------------------------------------------------

MISSING_TABLE_HINT = ": deploy infra/worker.yaml or pass --create-tables"


def _tables(options: RunOptions) -> list[tuple[preflight.TableSchema, str]]:
    tables = [
        (preflight.LEASE_TABLE, options.lease_table_name),
        (preflight.LEDGER_TABLE, options.ledger_table_name),
    ]
    if options.dead_letter_table:
        tables.append((preflight.DEAD_LETTER_TABLE, options.dead_letter_table))
    return tables


def _create_table(dynamodb: Any, schema: preflight.TableSchema, name: str) -> None:
    from kinesis_eo.deadletter import create_dead_letter_table
    from kinesis_eo.leases import create_lease_table
    from kinesis_eo.ledger import create_ledger_table

    create = {
        preflight.LEASE_TABLE.kind: create_lease_table,
        preflight.LEDGER_TABLE.kind: create_ledger_table,
        preflight.DEAD_LETTER_TABLE.kind: create_dead_letter_table,
    }[schema.kind]
    create(dynamodb, name)


def prepare_tables(dynamodb: Any, options: RunOptions) -> list[str]:
    """Create the toolkit's tables (``create_tables``), then check their keys and TTL.

    Raises :class:`ConfigurationError` for a missing table or one with the
    wrong keys; returns (and logs) the warnings, such as a ledger without TTL.
    """
    tables = _tables(options)
    if options.create_tables:
        for schema, name in tables:
            # An existing table's keys are checked before anything touches it: the
            # create flow would enable TTL on a table that is not the toolkit's.
            with contextlib.suppress(preflight.MissingTableError):
                run_sync(preflight.check_table_flow(schema, name), dynamodb, RetryConfig())
            _create_table(dynamodb, schema, name)
    return preflight.check_tables(dynamodb, tables, missing_hint=MISSING_TABLE_HINT)


def fit_mark_ttl(kinesis: Any, options: RunOptions) -> RunOptions:
    """``options`` with a mark TTL that outlives the stream's records (per-record mode).

    A ``mark_ttl_hours`` the user gave that is too short is refused; the
    default one is raised to the retention plus a margin (logged at INFO).
    Watermark mode keeps no per-record marks to guard replays: nothing to check.
    """
    config = ledger_config(options)
    fitted = preflight.fit_ledger_config(
        kinesis,
        options.stream,
        config,
        ttl_requested=options.mark_ttl_hours is not None,
        setting="--mark-ttl-hours",
    )
    if fitted.record_ttl == config.record_ttl:
        return options
    hours = fitted.record_ttl.total_seconds() / 3600
    return dataclasses.replace(options, mark_ttl_hours=hours)


# --- the worker ------------------------------------------------------------------------------


def dead_letter_target(options: RunOptions, dynamodb: Any, sqs: Any = None) -> Any:
    """The dead-letter table or queue ``options`` names, or None."""
    if options.dead_letter_table and options.dead_letter_queue:
        raise ConfigurationError("give --dead-letter-table or --dead-letter-queue, not both")
    if options.dead_letter_table:
        from kinesis_eo.deadletter import DynamoDBDeadLetterTable

        return DynamoDBDeadLetterTable(dynamodb, options.dead_letter_table)
    if options.dead_letter_queue:
        from kinesis_eo.deadletter import SqsDeadLetterQueue

        if sqs is None:
            raise ConfigurationError("a dead-letter queue needs an SQS client")
        return SqsDeadLetterQueue(sqs, options.dead_letter_queue)
    return None


def build_sink(
    options: RunOptions,
    handler: Callable[..., Any],
    dynamodb: Any,
    sqs: Any = None,
    *,
    dead_letters: DeadLetterSink | None = None,
) -> Any:
    """The sink of ``options.sink`` around ``handler``, with its ledger and dead-letter target.

    ``dead_letters``, a target object, takes the place of the options' table or queue.
    """
    store = DynamoDBLedgerStore(options.ledger_table_name, options.ledger_retry)
    ledger = Ledger(store, ledger_config(options))
    policy = failure_policy(options)
    named = dead_letter_target(options, dynamodb, sqs)
    dead_letters = dead_letters if dead_letters is not None else named
    kind = options.sink
    if kind == "transactional":
        return TransactionalSink(ledger, handler, policy=policy, dead_letters=dead_letters)
    if kind == "keyed":
        return IdempotentKeySink(ledger, handler, policy=policy, dead_letters=dead_letters)
    if kind == "claim":
        expired = _choice(EXPIRED_CLAIMS, options.expired_claims, "--expired-claims")
        return ClaimSink(
            ledger, handler, expired_claims=expired, policy=policy, dead_letters=dead_letters
        )
    raise ConfigurationError(f"--sink must be one of {', '.join(SINKS)}, not {kind!r}")


def build_worker(
    options: RunOptions,
    kinesis: Any,
    dynamodb: Any,
    sqs: Any = None,
    handler: Callable[..., Any] | None = None,
    *,
    after_commit: AfterCommit | None = None,
    dead_letters: DeadLetterSink | None = None,
    metrics: Metrics | None = None,
) -> Worker:
    """A :class:`Worker` for ``options``; the tables must exist (see :func:`prepare_tables`).

    The worker makes every AWS call through the clients given, so faults
    attached to them reach the lease, ledger, sink and reader alike.
    ``handler`` is the effect itself (default: ``options.handler`` loaded);
    ``dead_letters`` a target object in place of the options' table or queue;
    ``after_commit(batch, report)`` runs after each batch's sink commit and
    before its checkpoint; ``metrics`` a back-end in place of the options' one.
    """
    handler = handler if handler is not None else load_handler(options.handler)
    sink = build_sink(options, handler, dynamodb, sqs, dead_letters=dead_letters)
    leases = lease_config(options)
    manager = LeaseManager(
        DynamoDBLeaseStore(options.lease_table_name),
        leases,
        options.worker_id or default_worker_id(),
    )
    config = worker_config(options, leases)
    if metrics is None:
        metrics = metrics_backend(options)
    return Worker(
        kinesis,
        dynamodb,
        options.stream,
        sink,
        manager,
        config,
        after_commit=after_commit,
        metrics=metrics,
    )


def metrics_backend(options: RunOptions) -> MetricsBackend:
    """The back-end ``options.metrics`` names (a Prometheus one starts serving at once)."""
    return build_metrics(
        options.metrics,
        namespace=options.metrics_namespace,
        app=options.app,
        port=options.metrics_port,
        address=options.metrics_address,
    )


def run(options: RunOptions, kinesis: Any, dynamodb: Any, sqs: Any = None) -> WorkerMetrics:
    """Run a worker until SIGTERM or SIGINT, then drain, checkpoint and hand its leases over.

    Before any shard is read: the settings, the handler, the tables' keys and
    TTL, and the mark TTL against the stream's retention are checked.
    """
    check_options(options)
    handler = load_handler(options.handler)
    prepare_tables(dynamodb, options)
    options = fit_mark_ttl(kinesis, options)
    backend = metrics_backend(options)
    try:
        worker = build_worker(options, kinesis, dynamodb, sqs, handler, metrics=backend)
        metrics = _run_worker(worker, options)
    finally:
        # The Prometheus back-end serves from a thread of its own; EMF has flushed at stop.
        backend.close()
    log.info(
        "worker %s stopped and released its leases",
        worker.worker_id,
        extra={"worker_id": worker.worker_id, "metrics": metrics.as_dict()},
    )
    return metrics


def _run_worker(worker: Worker, options: RunOptions) -> WorkerMetrics:
    log.info(
        "worker %s starting on stream %s as %s",
        worker.worker_id,
        options.stream,
        options.app,
        extra={
            "worker_id": worker.worker_id,
            "stream": options.stream,
            "app": options.app,
            "sink": options.sink,
            "mode": options.mode,
            "lease_table": options.lease_table_name,
            "ledger_table": options.ledger_table_name,
        },
    )
    return worker.run(handle_signals=True)
