"""``kinesis-eo run``: a long-running worker, as :mod:`kinesis_eo.runner` assembles it."""

from __future__ import annotations

import argparse
import gc

from kinesis_eo.cli import EXIT_OK, Subcommands, _add_aws_options, _aws_clients

__all__ = [
    "DEFAULT_HANDLER_ATTEMPTS",
    "DEFAULT_OUTAGE_MAX_BACKOFF_S",
    "GC_FIRST_GENERATION_THRESHOLD",
    "add",
    "fewer_collections",
]


def _number(text: str) -> float:
    # Only the form is judged here; the range is the config's to judge, so that
    # `run` reports it in one line naming the flag (argparse would print its usage).
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


# Shown in `run --help`; tests/test_cli_worker.py checks them against the dataclasses.
DEFAULT_HANDLER_ATTEMPTS = 3
DEFAULT_OUTAGE_MAX_BACKOFF_S = 30.0


def add(subcommands: Subcommands) -> None:
    """Register ``kinesis-eo run``."""
    parser = subcommands.add_parser(
        "run",
        help="run a long-running worker that applies a handler's effects exactly once",
        description=(
            "Read a stream with every other worker of the same --app, sharing its shards "
            "through the lease table, and apply HANDLER's effects through an exactly-once "
            "sink. SIGTERM or SIGINT stops it gracefully: the batches in flight finish, "
            "each shard is checkpointed and its lease released, so other workers take "
            "over at once; it then exits 0. Credentials come from the usual AWS chain "
            "(environment, profile, task or instance role)."
        ),
    )
    _add_effect_flags(parser)
    _add_table_flags(parser)
    _add_timing_flags(parser)
    _add_start_flags(parser)
    _add_log_flags(parser)
    _add_metrics_flags(parser)
    _add_aws_options(parser)
    parser.set_defaults(command=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from kinesis_eo import runner
    from kinesis_eo.logs import configure_logging

    configure_logging(
        args.log_format,
        args.log_level,
        debug_loggers=args.debug_logger,
        log_payloads=args.log_payloads,
    )
    options = runner.RunOptions(
        stream=args.stream,
        app=args.app,
        handler=args.handler,
        sink=args.sink,
        mode=args.mode,
        lease_table=args.lease_table,
        ledger_table=args.ledger_table,
        dead_letter_table=args.dead_letter_table,
        dead_letter_queue=args.dead_letter_queue,
        expired_claims=args.expired_claims,
        failover_s=args.failover_seconds,
        initial_position=args.initial_position,
        worker_id=args.worker_id,
        health_file=args.health_file,
        create_tables=args.create_tables,
        mark_ttl_hours=args.mark_ttl_hours,
        handler_attempts=args.handler_attempts,
        outage_max_backoff_s=args.outage_max_backoff,
        lanes=args.lanes,
        read_ahead=args.read_ahead,
        metrics=args.metrics,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        metrics_namespace=args.metrics_namespace,
        efo=args.efo,
    )
    # Bad settings and a handler that cannot be loaded are reported before any
    # AWS client is made.
    runner.check_options(options)
    runner.load_handler(options.handler)
    services = ["kinesis", "dynamodb"] + (["sqs"] if options.dead_letter_queue else [])
    clients = _aws_clients(args, *services)
    fewer_collections()
    runner.run(options, *clients)
    return EXIT_OK


# With CPython's default (700 allocations) the cyclic collector walks a worker's live
# batches, parsed responses and sink writes every few hundred records: about a tenth of the
# client CPU per record on the watermark path (bench/_cpu.py). Reference counting frees
# nearly all of that garbage anyway; the collector is only for cycles.
GC_FIRST_GENERATION_THRESHOLD = 50_000


def fewer_collections() -> None:
    """Run the cyclic garbage collector less often, as ``kinesis-eo run`` does in its process."""
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD, second, third)


def _add_effect_flags(parser: argparse.ArgumentParser) -> None:
    """What is read and how its effects are applied: stream, app, handler, sink."""
    parser.add_argument("--stream", required=True, metavar="S", help="stream name or ARN")
    parser.add_argument(
        "--app",
        required=True,
        metavar="A",
        help="application name: the consumer group of the ledger, and the prefix of "
        "the default table names",
    )
    parser.add_argument(
        "--handler",
        required=True,
        metavar="MODULE:FUNCTION",
        help="the effect, called as handler(record, ctx); MODULE is imported from the "
        "current directory or sys.path. For --sink transactional it returns the "
        "DynamoDB writes (kinesis_eo.sinks.put/update/delete/condition_check)",
    )
    parser.add_argument(
        "--sink",
        choices=("transactional", "keyed", "claim"),
        default="transactional",
        help="transactional: writes committed with the ledger mark in one DynamoDB "
        "transaction; keyed: the handler uses ctx.idempotency_key with a target that "
        "deduplicates; claim: claim, act, complete for effects that can do neither "
        "(default: transactional)",
    )
    parser.add_argument(
        "--mode",
        choices=("watermark", "per-record"),
        default="watermark",
        help="ledger mode: one watermark per shard (fast), or one item per event id, "
        "which also drops duplicates the producer sent (default: watermark)",
    )
    parser.add_argument(
        "--expired-claims",
        choices=("quarantine", "run-again"),
        default="quarantine",
        help="--sink claim: what to do with a claim whose worker died mid-effect: "
        "dead-letter it for a person (at most once) or run it again (at least once) "
        "(default: quarantine)",
    )


def _add_table_flags(parser: argparse.ArgumentParser) -> None:
    """The lease, ledger and dead-letter tables (or queue)."""
    parser.add_argument(
        "--lease-table", metavar="T", help="lease table (KCL schema; default: APP-leases)"
    )
    parser.add_argument("--ledger-table", metavar="T", help="ledger table (default: APP-ledger)")
    dead = parser.add_mutually_exclusive_group()
    dead.add_argument(
        "--dead-letter-table",
        metavar="T",
        help="DynamoDB table for records that keep failing (default: none, a failing "
        "record stops its shard until fixed)",
    )
    dead.add_argument(
        "--dead-letter-queue", metavar="URL", help="SQS queue URL for records that keep failing"
    )


def _add_timing_flags(parser: argparse.ArgumentParser) -> None:
    """Failover, mark lifetime, handler tries and outage pauses."""
    parser.add_argument(
        "--failover-seconds",
        type=_number,
        default=10.0,
        metavar="N",
        help="a lease whose owner has not renewed it for N seconds is taken by another "
        "worker; owners renew every N/3; at least 1 (default: 10)",
    )
    parser.add_argument(
        "--mark-ttl-hours",
        type=_number,
        metavar="H",
        help="--mode per-record: hours a ledger mark lives, which must outlast the "
        "stream's retention plus 24 h (checked at start), or a replay of an older "
        "record would apply it twice (default: 192, raised to the retention plus 24 h "
        "where that is longer). Watermark mode keeps no per-record marks",
    )
    parser.add_argument(
        "--handler-attempts",
        type=_whole_number,
        metavar="N",
        help="tries of a record whose handler fails (the first included) before it is "
        "dead-lettered; at least 1 "
        f"(default: {DEFAULT_HANDLER_ATTEMPTS})",
    )
    parser.add_argument(
        "--outage-max-backoff",
        type=_number,
        metavar="SECONDS",
        help="during an outage (throttling, a table or endpoint down) a shard pauses and "
        "retries its batch, dead-lettering nothing, with waits growing from 0.5 s up to "
        f"SECONDS (default: {DEFAULT_OUTAGE_MAX_BACKOFF_S:g})",
    )
    parser.add_argument(
        "--efo",
        nargs="?",
        const="",
        metavar="CONSUMER_NAME",
        help="read every leased shard by enhanced fan-out (SubscribeToShard) through the "
        "consumer CONSUMER_NAME (default: the --app name), registered at start if absent; "
        "billed per consumer-shard-hour and per GB (default: polling with GetRecords)",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=1,
        metavar="N",
        help="apply the records of up to N partition keys of a batch at once, each key in "
        "order (idempotent-key and claim sinks; handlers must be thread-safe) (default: 1)",
    )
    parser.add_argument(
        "--no-read-ahead",
        dest="read_ahead",
        action="store_false",
        help="read a shard's next batch only after its current one is committed (by default "
        "the next GetRecords runs while the batch commits, one batch ahead per shard)",
    )
    parser.add_argument(
        "--initial-position",
        choices=("trim-horizon", "latest"),
        default="trim-horizon",
        help="where a shard with no checkpoint starts (default: trim-horizon)",
    )


def _add_start_flags(parser: argparse.ArgumentParser) -> None:
    """Where a worker starts, its name, its health file, its tables."""
    parser.add_argument(
        "--worker-id",
        metavar="ID",
        help="this worker's name in the lease table; must be unique per process "
        "(default: host-pid-random)",
    )
    parser.add_argument(
        "--health-file",
        metavar="PATH",
        help="rewrite PATH (JSON with 'time') on every coordinator round, for "
        "`kinesis-eo health`; its folder is made if missing and must be writable "
        "(default: none)",
    )
    parser.add_argument(
        "--create-tables",
        action="store_true",
        help="create the lease, ledger and dead-letter tables if missing (on-demand "
        "billing) instead of failing; for development: production tables come from "
        "infra/worker.yaml",
    )


def _add_metrics_flags(parser: argparse.ArgumentParser) -> None:
    """Where the worker's metrics go (kinesis_eo.metrics.catalogue names them)."""
    group = parser.add_argument_group("metrics")
    group.add_argument(
        "--metrics",
        choices=("emf", "prometheus", "none"),
        default="emf",
        help="emf: CloudWatch Embedded Metric Format documents on stdout, once per "
        "coordinator round; prometheus: served on --metrics-port; none (default: emf)",
    )
    group.add_argument(
        "--metrics-port",
        type=_whole_number,
        metavar="PORT",
        help="--metrics prometheus: the port /metrics is served on (0: any free one)",
    )
    group.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="--metrics prometheus: the address to serve on (default: 0.0.0.0, so that a "
        "scraper outside the container reaches it)",
    )
    group.add_argument(
        "--metrics-namespace",
        default="KinesisEO",
        metavar="NS",
        help="CloudWatch namespace (EMF) or metric name prefix (Prometheus) (default: KinesisEO)",
    )


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    """Log format, levels and what log lines may hold."""
    from kinesis_eo.logs import FORMATS

    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text, or json: one JSON object per line (default: text)",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        type=str.upper,
        help="lowest level logged (default: INFO); the AWS SDK's loggers (botocore, boto3, "
        "urllib3, aiobotocore, s3transfer) stay at WARNING, since at DEBUG they write "
        "credentials and payloads, unless named with --debug-logger",
    )
    parser.add_argument(
        "--debug-logger",
        action="append",
        default=[],
        metavar="NAME",
        help="also log DEBUG records of the logger NAME and its children (e.g. botocore, "
        "urllib3); may repeat. Credentials are scrubbed; request and response bodies "
        "print as <omitted> unless --log-payloads",
    )
    parser.add_argument(
        "--log-payloads",
        action="store_true",
        help="let log lines include record payloads (bytes, records, and the bodies of "
        "loggers named with --debug-logger); off by default because payloads may hold "
        "personal data",
    )
