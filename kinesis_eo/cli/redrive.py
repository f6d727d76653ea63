"""``kinesis-eo redrive``: apply dead-lettered or discarded records again, exactly once."""

from __future__ import annotations

import argparse

from kinesis_eo.cli import (
    EXIT_FAILED,
    EXIT_OK,
    Subcommands,
    _add_aws_options,
    _aws_clients,
    _positive,
)


def add(subcommands: Subcommands) -> None:
    """Register ``kinesis-eo redrive``."""
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
    _add_selection_flags(parser)
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


def _add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """Which letters or messages are redriven, how many, and whether for real."""
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
