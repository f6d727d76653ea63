"""``kinesis-eo status``: who owns each shard, its checkpoint and lag; ``--watch`` refreshes it."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kinesis_eo.cli import (
    EXIT_OK,
    Subcommands,
    _add_aws_options,
    _aws_clients,
    _positive,
    _positive_seconds,
)
from kinesis_eo.errors import ConfigurationError

__all__ = [
    "DEFAULT_WATCH_INTERVAL_S",
    "add",
    "watch",
]

if TYPE_CHECKING:
    from kinesis_eo.status import ShardChange, ShardStatus

DEFAULT_WATCH_INTERVAL_S = 2.0
# Cursor home, then erase the screen: each refresh replaces the last on a terminal.
_CLEAR_SCREEN = "\x1b[H\x1b[2J"


def add(subcommands: Subcommands) -> None:
    """Register ``kinesis-eo status``."""
    parser = subcommands.add_parser(
        "status",
        help="show who owns each shard, its checkpoint and lag",
        description=(
            "Read the lease table of APP and print one line per shard: owner, checkpoint "
            "(sequence number abbreviated, or SHARD_END / TRIM_HORIZON / LATEST), the "
            "owner's last reported lag, state (owned, free, finished, waiting for "
            "parents) and parents. With --stream, shards that have no lease yet are "
            "listed too. With --watch, the table is read again every --interval seconds "
            "and each shard also shows whether its checkpoint advanced since the last "
            "read, whether the owner changed, and the trend of its reported lag."
        ),
    )
    parser.add_argument("--app", required=True, metavar="A", help="application name")
    parser.add_argument("--lease-table", metavar="T", help="lease table (default: APP-leases)")
    parser.add_argument(
        "--stream", metavar="S", help="also list the stream's shards that have no lease yet"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the same as one JSON document (with --watch: one a line per refresh)",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="refresh until interrupted, with each shard's progress since the last read",
    )
    parser.add_argument(
        "--interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help=f"seconds between refreshes with --watch (default: {DEFAULT_WATCH_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--count", type=_positive, metavar="N", help="with --watch: stop after N refreshes"
    )
    _add_aws_options(parser)
    parser.set_defaults(command=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from kinesis_eo.flow import run_sync
    from kinesis_eo.leases import DynamoDBLeaseStore
    from kinesis_eo.retrieval.shards import StreamRef, list_shards_flow
    from kinesis_eo.retry import RetryConfig
    from kinesis_eo.status import format_table, format_watch_table, shard_statuses

    if not args.watch and (args.interval is not None or args.count is not None):
        raise ConfigurationError("--interval and --count apply only with --watch")
    table = args.lease_table or f"{args.app}-leases"
    services = ["dynamodb"] + (["kinesis"] if args.stream else [])
    clients = dict(zip(services, _aws_clients(args, *services), strict=True))

    def read() -> list[ShardStatus]:
        leases = run_sync(DynamoDBLeaseStore(table).list_leases(), clients, RetryConfig())
        graph = None
        if args.stream:
            graph = run_sync(list_shards_flow(StreamRef.of(args.stream)), clients, RetryConfig())
        return shard_statuses(leases, graph)

    def document(rows: list[ShardStatus]) -> dict[str, Any]:
        return {
            "app": args.app,
            "lease_table": table,
            "stream": args.stream,
            "shards": [row.as_dict() for row in rows],
        }

    if not args.watch:
        rows = read()
        print(json.dumps(document(rows), indent=2) if args.json else format_table(rows))
        return EXIT_OK

    clear = not args.json and sys.stdout.isatty()

    def show(
        rows: list[ShardStatus], changes: list[ShardChange] | None, elapsed_s: float | None
    ) -> None:
        if args.json:
            line = document(rows)
            by_shard = {change.shard_id: change for change in changes or ()}
            for shard in line["shards"]:
                change = by_shard.get(shard["shard_id"])
                shard["change"] = change.as_dict() if change else None
            line["elapsed_s"] = None if elapsed_s is None else round(elapsed_s, 3)
            text = json.dumps(line)
        else:
            text = format_watch_table(rows, changes, elapsed_s)
            text = _CLEAR_SCREEN + text if clear else text + "\n"
        print(text, flush=True)

    interval = args.interval or DEFAULT_WATCH_INTERVAL_S
    return watch(read, show, interval, args.count)


def watch(
    read: Callable[[], list[ShardStatus]],
    show: Callable[[list[ShardStatus], list[ShardChange] | None, float | None], None],
    interval_s: float,
    count: int | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Read, compare with the last read, show; every ``interval_s`` until ``count`` or Ctrl-C.

    Ctrl-C is how a watch ends, so it exits 0.
    """
    from kinesis_eo.status import shard_changes

    previous: tuple[list[ShardStatus], float] | None = None
    shown = 0
    try:
        while True:
            at = clock()
            rows = read()
            if previous is None:
                show(rows, None, None)
            else:
                show(rows, shard_changes(previous[0], rows), at - previous[1])
            shown += 1
            if count is not None and shown >= count:
                return EXIT_OK
            previous = (rows, at)
            sleep(interval_s)
    except KeyboardInterrupt:
        return EXIT_OK
