"""``kinesis-eo demo``: the exactly-once demo on an embedded moto."""

from __future__ import annotations

import argparse

from kinesis_eo.cli import EXIT_FAILED, EXIT_OK, Subcommands, _positive


def add(subcommands: Subcommands) -> None:
    """Register ``kinesis-eo demo``."""
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
