"""``kinesis-eo chaos``: the fault-injection harness, from the command line."""

from __future__ import annotations

import argparse
import time

from kinesis_eo.cli import EXIT_FAILED, EXIT_OK, Subcommands, _positive, _positive_seconds
from kinesis_eo.errors import ConfigurationError

__all__ = [
    "add",
]


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


def add(subcommands: Subcommands) -> None:
    """Register ``kinesis-eo chaos``."""
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
    _add_backend_flags(parser)
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


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """What runs under the chaos: the Kinesis emulator, how it is read, and by what."""
    parser.add_argument(
        "--kinesis",
        choices=["moto", "kinesis-mock"],
        default=None,
        help="Kinesis emulator; kinesis-mock (needs `npm ci`) also splits and merges the stream "
        "(default: moto, or kinesis-mock with --read efo)",
    )
    parser.add_argument(
        "--read",
        choices=["polling", "efo"],
        default="polling",
        help="how the workers read: GetRecords, or a subscription through an enhanced fan-out "
        "consumer they register as `kinesis-eo run --efo` does (needs kinesis-mock)",
    )
    parser.add_argument(
        "--sever-every",
        type=_seconds_or_none,
        default=4.0,
        metavar="SECONDS",
        help="with --read efo, mean time between cuts of every open subscription's connection "
        "(0: none)",
    )
    parser.add_argument(
        "--adapter",
        choices=["worker", "lambda"],
        default="worker",
        help="worker processes sharing leases, or the Lambda handler under a simulated "
        "event source mapping (crashed invocations, retries, bisection, zombie replays)",
    )


def _cmd_chaos(args: argparse.Namespace) -> int:
    from kinesis_eo.harness.chaos import Adapter, ChaosConfig, KinesisBackend, ReadMode, run_chaos

    read = ReadMode(args.read)
    kinesis = args.kinesis or ("kinesis-mock" if read is ReadMode.EFO else "moto")
    if read is ReadMode.EFO and kinesis != "kinesis-mock":
        raise ConfigurationError(
            "--read efo needs --kinesis kinesis-mock: moto has no SubscribeToShard"
        )
    if read is ReadMode.EFO and args.adapter != "worker":
        raise ConfigurationError(
            "--read efo reads with worker processes: the --adapter lambda mapping polls"
        )
    config = ChaosConfig(
        events=args.events,
        workers=args.workers,
        shards=args.shards,
        seed=args.seed,
        kinesis=KinesisBackend(kinesis),
        adapter=Adapter(args.adapter),
        read=read,
        sever_every_s=args.sever_every,
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
        ("GetRecords calls", report.get_records_calls),
        ("SubscribeToShard calls", report.subscribe_calls),
        ("subscriptions severed", report.subscriptions_severed),
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
    print(f"  read by: {report.read}")
    if args.report_path:
        with open(args.report_path, "w", encoding="utf-8") as handle:
            handle.write(report.to_json())
    print("\nexactly once" if report.ok else f"\nFAILED: {report.failure()}")
    return EXIT_OK if report.ok else EXIT_FAILED
