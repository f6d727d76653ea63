"""``kinesis-eo efo register|deregister|list``: the stream's enhanced fan-out consumers."""

from __future__ import annotations

import argparse

from kinesis_eo.cli import EXIT_FAILED, EXIT_OK, Subcommands, _add_aws_options, _aws_clients

__all__ = ["add"]


def add(subcommands: Subcommands) -> None:
    """Register ``kinesis-eo efo`` and its three actions."""
    parser = subcommands.add_parser(
        "efo",
        help="register, deregister or list a stream's enhanced fan-out consumers",
        description=(
            "Manage the enhanced fan-out consumers `kinesis-eo run --efo` reads through. "
            "Each consumer gets 2 MiB/s per shard of its own and is billed per "
            "consumer-shard-hour and per GB read; AWS allows 20 per stream."
        ),
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    for name, text in (
        (
            "register",
            "register consumer NAME (if absent) and wait until it is ACTIVE; print its ARN",
        ),
        ("deregister", "deregister consumer NAME (exit 1 if there was none)"),
        ("list", "list the stream's consumers: name, status, ARN"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--stream", required=True, metavar="S", help="stream name or ARN")
        if name != "list":
            action.add_argument("--name", required=True, metavar="N", help="consumer name")
        _add_aws_options(action)
        action.set_defaults(command=_cmd_efo, action=name)


def _cmd_efo(args: argparse.Namespace) -> int:
    from kinesis_eo.retrieval.consumers import deregister_consumer, ensure_consumer, list_consumers

    (kinesis,) = _aws_clients(args, "kinesis")
    if args.action == "register":
        print(ensure_consumer(kinesis, args.stream, args.name))
        return EXIT_OK
    if args.action == "deregister":
        if deregister_consumer(kinesis, args.stream, args.name):
            print(f"deregistered consumer '{args.name}' of stream '{args.stream}'")
            return EXIT_OK
        print(f"stream '{args.stream}' has no consumer '{args.name}'")
        return EXIT_FAILED
    for consumer in list_consumers(kinesis, args.stream):
        print(f"{consumer.name}\t{consumer.status}\t{consumer.arn}")
    return EXIT_OK
