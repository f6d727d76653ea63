"""The ``kinesis-eo`` command.

One function per subcommand (``_cmd_<name>``), each registered by its own
``_add_<name>`` next to it, so that ``run``, ``status`` and ``chaos`` slot in
the same way as ``demo``. Subcommands import what they need when they run:
``kinesis-eo --version`` should not pay for boto3 and moto.

Exit codes: 0 success, 1 the command ran and found a failure (the demo saw a
lost or doubled effect), 2 a usage or kinesis_eo error (one line on stderr,
no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kinesis_eo import __version__
from kinesis_eo.errors import ConfigurationError, KinesisEOError

PROG = "kinesis-eo"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _one_line(exc: BaseException) -> str:
    # Some messages quote a log tail or a list over several lines; the
    # contract is one line, so the lines are joined, not dropped.
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


# --- demo -------------------------------------------------------------------------------------


def _add_demo(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "demo",
        help="show exactly-once effects on an embedded moto (no AWS account needed)",
        description=(
            "Produce events with injected producer retries and throttling, consume them "
            "with a crash between the sink commit and the checkpoint, replay the stream, "
            "and count what the sink applied. Runs on moto's server inside this process "
            "with fake credentials; nothing reaches AWS. Exits 1 if an effect was lost "
            "or applied twice."
        ),
    )
    # SUPPRESS: options not given are left to run_demo's own defaults, which
    # the help repeats (tests/test_demo.py checks that the two agree).
    parser.add_argument(
        "--events",
        type=_positive,
        default=argparse.SUPPRESS,
        metavar="N",
        help="events to produce (default: 2000)",
    )
    parser.add_argument(
        "--shards",
        type=_positive,
        default=argparse.SUPPRESS,
        metavar="N",
        help="shards of the stream (default: 4)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="seed of the injected faults and the data (default: 7)",
    )
    parser.add_argument(
        "--report",
        dest="report_path",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="also write the result as JSON to PATH",
    )
    parser.set_defaults(command=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from kinesis_eo.harness import demo

    options = {
        name: getattr(args, name)
        for name in ("events", "shards", "seed", "report_path")
        if hasattr(args, name)
    }
    report = demo.run_demo(**options)
    return EXIT_OK if report.ok else EXIT_FAILED


# --- AWS clients for run and status ----------------------------------------------------------


def _add_aws_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS")
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="send every AWS call here instead of AWS (an emulator such as moto); "
        "default: the usual endpoints",
    )
    group.add_argument(
        "--region",
        metavar="R",
        help="AWS region (default: from AWS_REGION, AWS_DEFAULT_REGION or the profile)",
    )


def _aws_clients(args: argparse.Namespace, *services: str) -> list[Any]:
    """boto3 clients from the user's own credential chain: nothing is invented here."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, NoRegionError

    # A worker shares each client among its shard threads; past the default pool of
    # 10 connections urllib3 would drop and reopen connections on every round.
    config = Config(max_pool_connections=64)
    try:
        session = boto3.session.Session(region_name=args.region)
        return [
            session.client(service, endpoint_url=args.endpoint_url, config=config)
            for service in services
        ]
    except NoRegionError:
        raise ConfigurationError(
            "no AWS region is configured: pass --region or set AWS_REGION"
        ) from None
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create AWS clients: {exc}") from exc


# --- run --------------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


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


def _add_run(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from kinesis_eo.logs import FORMATS

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
        "--initial-position",
        choices=("trim-horizon", "latest"),
        default="trim-horizon",
        help="where a shard with no checkpoint starts (default: trim-horizon)",
    )
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
    )
    # Bad settings and a handler that cannot be loaded are reported before any
    # AWS client is made.
    runner.check_options(options)
    runner.load_handler(options.handler)
    services = ["kinesis", "dynamodb"] + (["sqs"] if options.dead_letter_queue else [])
    clients = _aws_clients(args, *services)
    runner.run(options, *clients)
    return EXIT_OK


# --- status -----------------------------------------------------------------------------------


def _add_status(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "status",
        help="show who owns each shard, its checkpoint and lag",
        description=(
            "Read the lease table of APP and print one line per shard: owner, checkpoint "
            "(sequence number abbreviated, or SHARD_END / TRIM_HORIZON / LATEST), the "
            "owner's last reported lag, state (owned, free, finished, waiting for "
            "parents) and parents. With --stream, shards that have no lease yet are "
            "listed too."
        ),
    )
    parser.add_argument("--app", required=True, metavar="A", help="application name")
    parser.add_argument("--lease-table", metavar="T", help="lease table (default: APP-leases)")
    parser.add_argument(
        "--stream", metavar="S", help="also list the stream's shards that have no lease yet"
    )
    parser.add_argument("--json", action="store_true", help="print the same as one JSON document")
    _add_aws_options(parser)
    parser.set_defaults(command=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from kinesis_eo.flow import run_sync
    from kinesis_eo.leases import DynamoDBLeaseStore
    from kinesis_eo.retrieval.shards import StreamRef, list_shards_flow
    from kinesis_eo.retry import RetryConfig
    from kinesis_eo.status import format_table, shard_statuses

    table = args.lease_table or f"{args.app}-leases"
    services = ["dynamodb"] + (["kinesis"] if args.stream else [])
    clients = dict(zip(services, _aws_clients(args, *services), strict=True))
    leases = run_sync(DynamoDBLeaseStore(table).list_leases(), clients, RetryConfig())
    graph = None
    if args.stream:
        graph = run_sync(list_shards_flow(StreamRef.of(args.stream)), clients, RetryConfig())
    rows = shard_statuses(leases, graph)
    if args.json:
        document = {
            "app": args.app,
            "lease_table": table,
            "stream": args.stream,
            "shards": [row.as_dict() for row in rows],
        }
        print(json.dumps(document, indent=2))
    else:
        print(format_table(rows))
    return EXIT_OK


# --- health -----------------------------------------------------------------------------------

DEFAULT_HEALTH_MAX_AGE_S = 30.0


def _add_health(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "health",
        help="exit 0 if a worker's health file is fresh, 1 if not (a container health check)",
        description=(
            "Judge the health file that `kinesis-eo run --health-file PATH` rewrites on "
            "every coordinator round (at least every failover/3 seconds). Exit 0 if it was "
            "written within --max-age seconds; 1, with one line saying why, if it is "
            "stale, missing or unreadable."
        ),
    )
    parser.add_argument("--file", required=True, metavar="PATH", help="the worker's health file")
    parser.add_argument(
        "--max-age",
        type=_positive_seconds,
        default=DEFAULT_HEALTH_MAX_AGE_S,
        metavar="SECONDS",
        help="oldest acceptable report; keep it a few times the renewal interval "
        f"(default: {DEFAULT_HEALTH_MAX_AGE_S:g})",
    )
    parser.set_defaults(command=_cmd_health)


def _cmd_health(args: argparse.Namespace) -> int:
    from kinesis_eo.status import check_health

    problem = check_health(args.file, args.max_age)
    if problem is not None:
        print(f"{PROG}: unhealthy: {problem}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --- the command ------------------------------------------------------------------------------


# --- chaos ------------------------------------------------------------------------------------


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a share from 0 to below 1, got {text}")
    return value


def _seconds_or_none(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _add_chaos(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "chaos",
        help="prove it: worker processes under kills, zombies, throttling and reshards",
        description=(
            "Start the emulators and a fleet of worker processes, produce events (some sent "
            "twice by the producer, some poison), and meanwhile SIGKILL workers, SIGSTOP one "
            "past its lease and wake it, throttle and drop calls, and (on kinesis-mock) split "
            "and merge the stream; with --invalid-writes and --sink-outage, also refused writes "
            "and a sink outage. Then count, per event, what the sink applied and what was "
            "dead-lettered. Exits 1 if an effect was lost or applied twice, an invalid write "
            "was not dead-lettered, or anything was dead-lettered for the outage."
        ),
    )
    parser.add_argument("--events", type=_positive, default=2000, metavar="N")
    parser.add_argument("--workers", type=_positive, default=3, metavar="W")
    parser.add_argument("--shards", type=_positive, default=4, metavar="N")
    parser.add_argument("--seed", type=int, default=1, metavar="S")
    parser.add_argument(
        "--kinesis",
        choices=["moto", "kinesis-mock"],
        default="moto",
        help="Kinesis emulator; kinesis-mock (needs `npm ci`) also splits and merges the stream",
    )
    parser.add_argument(
        "--adapter",
        choices=["worker", "lambda"],
        default="worker",
        help="worker processes sharing leases, or the Lambda handler under a simulated "
        "event source mapping (crashed invocations, retries, bisection, zombie replays)",
    )
    parser.add_argument(
        "--produce-seconds",
        type=_positive_seconds,
        default=20.0,
        help="spread production over this long, so that faults land while it runs",
    )
    parser.add_argument(
        "--kill-every",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="mean time between SIGKILLs of a worker",
    )
    parser.add_argument(
        "--zombie-every",
        type=_positive_seconds,
        default=12.0,
        metavar="SECONDS",
        help="mean time between SIGSTOPs of a worker past its lease",
    )
    parser.add_argument(
        "--invalid-writes",
        type=_share,
        default=0.0,
        metavar="RATE",
        help="share of events whose handler returns a write DynamoDB refuses (a malformed "
        "expression, a key of the wrong type, an item over 400 KB): each must be "
        "dead-lettered as INVALID_WRITE and never applied",
    )
    parser.add_argument(
        "--sink-outage",
        type=_seconds_or_none,
        default=0.0,
        metavar="SECONDS",
        help="take the sink down this long while events are produced (the handler fails, then "
        "the commit is throttled): the shards must pause and dead-letter nothing",
    )
    parser.add_argument("--timeout", type=_positive_seconds, default=1800.0, metavar="SECONDS")
    parser.add_argument(
        "--report", dest="report_path", metavar="PATH", help="write the report as JSON"
    )
    parser.set_defaults(command=_cmd_chaos)


def _cmd_chaos(args: argparse.Namespace) -> int:
    from kinesis_eo.harness.chaos import Adapter, ChaosConfig, KinesisBackend, run_chaos

    config = ChaosConfig(
        events=args.events,
        workers=args.workers,
        shards=args.shards,
        seed=args.seed,
        kinesis=KinesisBackend(args.kinesis),
        adapter=Adapter(args.adapter),
        produce_s=args.produce_seconds,
        kill_every_s=args.kill_every,
        zombie_every_s=args.zombie_every,
        invalid_write_rate=args.invalid_writes,
        sink_outage_s=args.sink_outage,
        timeout_s=args.timeout,
    )
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {message}", flush=True)

    report = run_chaos(config, progress)
    rows = [
        ("produced", report.produced),
        ("effects applied", report.effects),
        ("missing", report.missing),
        ("applied twice", report.duplicated),
        ("dead-lettered", report.dead_lettered),
        ("poison", report.poison),
        ("kills", report.kills),
        ("zombies", report.zombies),
        ("zombie commits fenced", report.zombies_fenced),
        ("reshards", report.reshards),
        ("throttles injected", report.throttles_injected),
        ("connection faults injected", report.connection_faults_injected),
        ("producer duplicates", report.producer_duplicates),
        ("invalid writes injected", report.invalid_writes_injected),
        ("invalid writes dead-lettered", report.invalid_writes_dead_lettered),
        ("outage pauses", report.outage_pauses),
        ("dead-lettered for the outage", report.outage_dead_lettered),
    ]
    print()
    for name, value in rows:
        print(f"  {name:<28}{value:>10}")
    print(f"  {'sink outage':<28}{report.outage_s:>8.1f} s")
    print(f"  {'wall time':<28}{report.wall_s:>8.1f} s")
    print(f"  emulator: {report.emulator}")
    if args.report_path:
        with open(args.report_path, "w", encoding="utf-8") as handle:
            handle.write(report.to_json())
    print("\nexactly once" if report.ok else f"\nFAILED: {report.failure()}")
    return EXIT_OK if report.ok else EXIT_FAILED


# --- redrive ----------------------------------------------------------------------------------


def _add_redrive(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "redrive",
        help="apply dead-lettered or discarded records again, exactly once",
        description=(
            "Apply again, through the same exactly-once sink as `kinesis-eo run`, the records "
            "of one SOURCE: sqs:QUEUE_URL or dynamodb:TABLE, dead letters written by a "
            "kinesis_eo dead-letter target (large letters are joined from their parts); or "
            "on-failure:QUEUE_URL, the records of a Lambda event source mapping's on-failure "
            "destination, which name a shard's sequence-number range and are read again from "
            "the stream while it still holds them. Guarantees: letters are applied under the "
            "consumer group APP-redrive, a per-record ledger keyed by event id or position, so "
            "redriving a letter twice applies it once; on-failure records go through APP's "
            "own ledger (needs --mode per-record), which knows what the mapping applied. A "
            "letter or message leaves its source only after its effects and marks are "
            "committed; one whose handler fails again stays where it is (an on-failure record "
            "is dead-lettered with its payload if a dead-letter target is given). Exits 1 "
            "if anything failed again or is gone from the stream."
        ),
    )
    parser.add_argument(
        "--source",
        required=True,
        metavar="KIND:WHERE",
        help="sqs:QUEUE_URL, dynamodb:TABLE or on-failure:QUEUE_URL",
    )
    parser.add_argument("--app", required=True, metavar="A", help="application name, as for run")
    parser.add_argument(
        "--handler",
        required=True,
        metavar="MODULE:FUNCTION",
        help="the effect, called as handler(record, ctx), as for run",
    )
    parser.add_argument(
        "--sink",
        choices=("transactional", "keyed", "claim"),
        default="transactional",
        help="as for run; the keyed and claim handlers get the idempotency key of APP "
        "(default: transactional)",
    )
    parser.add_argument(
        "--mode",
        choices=("watermark", "per-record"),
        default="watermark",
        help="the app's ledger mode; letters are redriven through a per-record ledger "
        "whatever it is, on-failure records need per-record (default: watermark)",
    )
    parser.add_argument(
        "--expired-claims",
        choices=("quarantine", "run-again"),
        default="quarantine",
        help="--sink claim: as for run (default: quarantine)",
    )
    parser.add_argument("--ledger-table", metavar="T", help="ledger table (default: APP-ledger)")
    dead = parser.add_mutually_exclusive_group()
    dead.add_argument(
        "--dead-letter-table",
        metavar="T",
        help="on-failure sources: where a record that fails again goes (default: its "
        "message stays in the queue)",
    )
    dead.add_argument("--dead-letter-queue", metavar="URL", help="the same, an SQS queue")
    parser.add_argument(
        "--reason",
        action="append",
        # DeadLetterReason's values, spelled out: building the parser imports no botocore.
        choices=("PROCESSING_FAILED", "UNDECODABLE", "PAYLOAD_MISMATCH", "CLAIM_EXPIRED"),
        help="redrive letters of this reason; repeat for more (default: PROCESSING_FAILED; "
        "CLAIM_EXPIRED effects may have happened already)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be redriven and change nothing"
    )
    parser.add_argument(
        "--max", type=_positive, metavar="N", help="redrive at most N letters or messages"
    )
    parser.add_argument(
        "--visibility-timeout",
        type=_positive,
        default=300,
        metavar="SECONDS",
        help="hide received messages from other readers this long while redriving; "
        "those left are made visible again at the end (default: 300)",
    )
    _add_aws_options(parser)
    parser.set_defaults(command=_cmd_redrive)


def _cmd_redrive(args: argparse.Namespace) -> int:
    from kinesis_eo import redrive, runner
    from kinesis_eo.deadletter import DeadLetterReason

    source = redrive.RedriveSource.parse(args.source)
    run = runner.RunOptions(
        stream="",
        app=args.app,
        handler=args.handler,
        sink=args.sink,
        mode=args.mode,
        ledger_table=args.ledger_table,
        dead_letter_table=args.dead_letter_table,
        dead_letter_queue=args.dead_letter_queue,
        expired_claims=args.expired_claims,
    )
    reasons = frozenset(DeadLetterReason(r) for r in args.reason or ["PROCESSING_FAILED"])
    options = redrive.RedriveOptions(
        source, args.dry_run, args.max, reasons, args.visibility_timeout
    )
    handler = runner.load_handler(run.handler)
    services = ("dynamodb", "sqs", "kinesis")
    clients = dict(zip(services, _aws_clients(args, *services), strict=True))
    report = redrive.redrive(run, options, clients, handler)
    for item in report.items:
        print(item.line())
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Exactly-once effects for Amazon Kinesis consumers."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_demo(subcommands)
    _add_run(subcommands)
    _add_status(subcommands)
    _add_health(subcommands)
    _add_chaos(subcommands)
    _add_redrive(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return command(args)
    except KinesisEOError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
