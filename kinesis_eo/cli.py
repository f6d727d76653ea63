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
from collections.abc import Callable, Sequence

from kinesis_eo import __version__
from kinesis_eo.errors import KinesisEOError

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
    from kinesis_eo import demo

    options = {
        name: getattr(args, name)
        for name in ("events", "shards", "seed", "report_path")
        if hasattr(args, name)
    }
    report = demo.run_demo(**options)
    return EXIT_OK if report.ok else EXIT_FAILED


# --- the command ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Exactly-once effects for Amazon Kinesis consumers."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_demo(subcommands)
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
