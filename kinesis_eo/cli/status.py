"""``kinesis-eo status``: who owns each shard, its checkpoint and lag."""

from __future__ import annotations

import argparse

from kinesis_eo.cli import EXIT_OK, Subcommands, _add_aws_options, _aws_clients


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
