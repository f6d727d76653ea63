"""``kinesis-eo health``: a container health check on a worker's health file."""

from __future__ import annotations

import argparse
import sys

from kinesis_eo.cli import EXIT_FAILED, EXIT_OK, PROG, Subcommands, _positive_seconds

DEFAULT_HEALTH_MAX_AGE_S = 30.0


def add(subcommands: Subcommands) -> None:
    """Register ``kinesis-eo health``."""
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
