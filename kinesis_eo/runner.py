"""What ``kinesis-eo run`` assembles: the user's handler, a sink, the ledger, leases and a Worker.

Kept out of the CLI so that a program can start the same worker from its own
``main`` (``RunOptions`` plus :func:`build_worker`), and so that each piece
fails with one sentence before any shard is touched: a handler that cannot
be imported, a table that is not there.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import socket
import sys
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.errors import ConfigurationError, ResourceNotFoundError
from kinesis_eo.flow import Call, run_sync
from kinesis_eo.leases import DynamoDBLeaseStore, LeaseConfig, LeaseManager, Sentinel
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    ExpiredClaimPolicy,
    Ledger,
    LedgerConfig,
    LedgerMode,
)
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import ClaimSink, IdempotentKeySink, TransactionalSink
from kinesis_eo.worker import Worker, WorkerConfig, WorkerMetrics

log = logging.getLogger(__name__)

SINKS = ("transactional", "keyed", "claim")
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
    # Extra WorkerConfig fields (reader pacing, checkpoint interval), for programs and tests.
    worker: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lease_table_name(self) -> str:
        return self.lease_table or f"{self.app}-leases"

    @property
    def ledger_table_name(self) -> str:
        return self.ledger_table or f"{self.app}-ledger"


def load_handler(spec: str) -> Callable[..., Any]:
    """The function named by ``module:function`` (``module:Class.method`` too).

    The current directory is searched first, as ``python -m`` would: the
    ``kinesis-eo`` script's own directory is the venv's ``bin``, where no
    user module lives.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigurationError(f"--handler must look like module:function, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ConfigurationError(
                f"handler module {module_name!r} was not found "
                "(searched the current directory and sys.path)"
            ) from exc
        raise ConfigurationError(f"handler module {module_name!r} failed to import: {exc}") from exc
    except Exception as exc:
        raise ConfigurationError(
            f"handler module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"handler module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigurationError(
            f"handler {spec!r} is a {type(target).__name__}, not a function: "
            "it must be callable as handler(record, ctx)"
        )
    if inspect.iscoroutinefunction(target):
        # The threaded worker cannot await it: every record would fail and be dead-lettered.
        raise ConfigurationError(
            f"handler {spec!r} is async; kinesis-eo run uses the threaded worker, "
            "so give it a plain def (or run AsyncWorker from your own program)"
        )
    return target  # type: ignore[no-any-return]


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


def _tables(options: RunOptions) -> dict[str, str]:
    tables = {
        "lease": options.lease_table_name,
        "ledger": options.ledger_table_name,
    }
    if options.dead_letter_table:
        tables["dead-letter"] = options.dead_letter_table
    return tables


def prepare_tables(dynamodb: Any, options: RunOptions) -> None:
    """Create the toolkit's tables (``create_tables``), or check that they exist."""
    from kinesis_eo.deadletter import create_dead_letter_table
    from kinesis_eo.leases import create_lease_table
    from kinesis_eo.ledger import create_ledger_table

    tables = _tables(options)
    if options.create_tables:
        create_lease_table(dynamodb, tables["lease"])
        create_ledger_table(dynamodb, tables["ledger"])
        if "dead-letter" in tables:
            create_dead_letter_table(dynamodb, tables["dead-letter"])
        return
    for kind, name in tables.items():
        call = Call(
            "describe_table",
            {"TableName": name},
            f"{kind} table '{name}'",
            "DescribeTable",
            "dynamodb",
        )
        try:
            run_sync(_one(call), dynamodb, RetryConfig())
        except ResourceNotFoundError as exc:
            raise ConfigurationError(
                f"the {kind} table '{name}' does not exist: deploy infra/worker.yaml "
                "or pass --create-tables"
            ) from exc


def _one(call: Call) -> Generator[Call, Any, Any]:
    return (yield call)


def build_sink(
    options: RunOptions, handler: Callable[..., Any], dynamodb: Any, sqs: Any = None
) -> Any:
    """The sink of ``options.sink`` around ``handler``, with its ledger and dead-letter target."""
    mode = _choice(MODES, options.mode, "--mode")
    try:
        config = LedgerConfig(consumer_group=options.app, mode=mode)
    except ValueError as exc:
        raise ConfigurationError(
            f"--app {options.app!r} cannot name a consumer group: {exc}"
        ) from exc
    ledger = Ledger(DynamoDBLedgerStore(options.ledger_table_name), config)
    dead_letters: Any = None
    if options.dead_letter_table and options.dead_letter_queue:
        raise ConfigurationError("give --dead-letter-table or --dead-letter-queue, not both")
    if options.dead_letter_table:
        from kinesis_eo.deadletter import DynamoDBDeadLetterTable

        dead_letters = DynamoDBDeadLetterTable(dynamodb, options.dead_letter_table)
    elif options.dead_letter_queue:
        from kinesis_eo.deadletter import SqsDeadLetterQueue

        if sqs is None:
            raise ConfigurationError("a dead-letter queue needs an SQS client")
        dead_letters = SqsDeadLetterQueue(sqs, options.dead_letter_queue)
    kind = options.sink
    if kind == "transactional":
        return TransactionalSink(ledger, handler, dead_letters=dead_letters)
    if kind == "keyed":
        return IdempotentKeySink(ledger, handler, dead_letters=dead_letters)
    if kind == "claim":
        policy = _choice(EXPIRED_CLAIMS, options.expired_claims, "--expired-claims")
        return ClaimSink(ledger, handler, expired_claims=policy, dead_letters=dead_letters)
    raise ConfigurationError(f"--sink must be one of {', '.join(SINKS)}, not {kind!r}")


def build_worker(
    options: RunOptions,
    kinesis: Any,
    dynamodb: Any,
    sqs: Any = None,
    handler: Callable[..., Any] | None = None,
) -> Worker:
    """A :class:`Worker` for ``options``; the tables must exist (see :func:`prepare_tables`)."""
    handler = handler if handler is not None else load_handler(options.handler)
    sink = build_sink(options, handler, dynamodb, sqs)
    try:
        leases = LeaseConfig(options.lease_table_name, failover_s=options.failover_s)
    except ValueError as exc:
        raise ConfigurationError(f"--failover-seconds: {exc}") from exc
    manager = LeaseManager(
        DynamoDBLeaseStore(options.lease_table_name),
        leases,
        options.worker_id or default_worker_id(),
    )
    config = WorkerConfig(
        leases=leases,
        initial_position=_choice(INITIAL_POSITIONS, options.initial_position, "--initial-position"),
        health_file=options.health_file,
        **options.worker,
    )
    return Worker(kinesis, dynamodb, options.stream, sink, manager, config)


def run(options: RunOptions, kinesis: Any, dynamodb: Any, sqs: Any = None) -> WorkerMetrics:
    """Run a worker until SIGTERM or SIGINT, then drain, checkpoint and hand its leases over."""
    handler = load_handler(options.handler)
    prepare_tables(dynamodb, options)
    worker = build_worker(options, kinesis, dynamodb, sqs, handler)
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
    metrics = worker.run(handle_signals=True)
    log.info(
        "worker %s stopped and released its leases",
        worker.worker_id,
        extra={"worker_id": worker.worker_id, "metrics": metrics.as_dict()},
    )
    return metrics
