"""The ``kinesis-eo`` command.

One module per subcommand (``demo``, ``run``, ``status``, ``health``,
``chaos``, ``redrive``, ``efo``), each with ``add(subcommands)``, which registers it,
and ``_cmd_<name>``, which runs it; this module holds what they share (exit
codes, argument types, the AWS client options), :func:`build_parser` and
:func:`main`. Subcommands import what they need when they run:
``kinesis-eo --version`` should not pay for boto3 and moto.

Exit codes: 0 success, 1 the command ran and found a failure (the demo saw a
lost or doubled effect), 2 a usage or kinesis_eo error (one line on stderr,
no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from kinesis_eo import __version__
from kinesis_eo.errors import ConfigurationError, KinesisEOError

PROG = "kinesis-eo"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]
# A string: argparse's class is generic only to type checkers.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


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


def _epoch_or_text_timestamp(value: Any) -> Any:
    """An epoch number as an aware UTC datetime at once; anything else as botocore parses it."""
    from datetime import UTC, datetime

    from botocore.utils import parse_timestamp

    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return parse_timestamp(value)


class _NotPlainJson(Exception):
    pass


def _refuse(value: Any) -> Any:
    raise _NotPlainJson


def _cheaper_transactions(client: Any) -> Any:
    """``client`` with two cheaper steps for ``TransactWriteItems``, sent as boto3 would send it.

    - botocore resolves DynamoDB's endpoint with a ``ResourceArnList`` of every
      item's table, a JMESPath walk over the whole request, yet DynamoDB's
      endpoint rules read only its first element: the walk over the first
      item alone gives the same endpoint.
    - botocore's JSON serializer walks the request's shape to copy it into the
      body; DynamoDB's request is already its wire form unless it holds bytes
      (binary attributes, base64 on the wire), so one ``json.dumps`` gives the
      same body, and a request with bytes goes the serializer's way.

    Each was about a tenth of the client CPU of committing a 100-item
    transaction (bench/_cpu.py). And the User-Agent header is built once.
    """
    model = client.meta.service_model
    for name in model.operation_names:
        operation = model.operation_model(name)
        params = operation.operation_context_parameters or {}
        arns = params.get("ResourceArnList", {}).get("path", "")
        if arns.startswith("TransactItems[*]"):
            narrowed = {**params, "ResourceArnList": {"path": "TransactItems[:1]" + arns[16:]}}
            # A cached property: this operation model (the client's own) keeps the value set.
            operation.operation_context_parameters = narrowed
    serializer: Any = getattr(client, "_serializer", None)
    if model.service_name == "dynamodb" and hasattr(serializer, "serialize_to_request"):
        serialize = serializer.serialize_to_request

        def plain(parameters: Any, operation_model: Any) -> Any:
            if operation_model.name != "TransactWriteItems":
                return serialize(parameters, operation_model)
            try:
                body = json.dumps(parameters, default=_refuse).encode()
            except _NotPlainJson:
                return serialize(parameters, operation_model)
            request = serialize({}, operation_model)
            request["body"] = body
            return request

        serializer.serialize_to_request = plain
    _user_agent_built_once(client)
    return client


def _user_agent_built_once(client: Any) -> None:
    """``client`` building its User-Agent header once per set of features it names.

    botocore rebuilds the header for every request, twice, sanitizing it
    character by character: a fifth of the client CPU of a single ``UpdateItem``.
    What changes between requests is only the set of features in use (retry
    mode, paginator, ...), so the header is kept per set.
    """
    from botocore.context import get_context

    creator: Any = getattr(client, "_user_agent_creator", None)
    if creator is None or not callable(getattr(creator, "to_string", None)):
        return
    build = creator.to_string
    built: dict[tuple[frozenset[str], frozenset[str]], str] = {}

    def to_string() -> str:
        context = get_context()
        key = (
            frozenset(getattr(creator, "_client_features", None) or ()),
            frozenset(context.features) if context is not None else frozenset(),
        )
        header = built.get(key)
        if header is None:
            header = build()
            if len(built) < 64:
                built[key] = header
        return header

    creator.to_string = to_string


def _aws_clients(args: argparse.Namespace, *services: str) -> list[Any]:
    """boto3 clients from the user's own credential chain: nothing is invented here."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, NoRegionError

    # A worker shares each client among its shard threads; past the default pool of
    # 10 connections urllib3 would drop and reopen connections on every round.
    # Client-side parameter validation walks every item of every 100-item transaction
    # (a quarter of the client's CPU per record, bench/run.py); DynamoDB validates
    # the same requests, and a write it refuses is dead-lettered as invalid.
    config = Config(max_pool_connections=64, parameter_validation=False)
    try:
        session = boto3.session.Session(region_name=args.region)
        # Kinesis sends arrival times as epoch numbers; botocore's default parser turns
        # each into a datetime in the local zone, the dearest step of parsing GetRecords.
        session._session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_epoch_or_text_timestamp
        )
        return [
            _cheaper_transactions(
                session.client(service, endpoint_url=args.endpoint_url, config=config)
            )
            for service in services
        ]
    except NoRegionError:
        raise ConfigurationError(
            "no AWS region is configured: pass --region or set AWS_REGION"
        ) from None
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create AWS clients: {exc}") from exc


# The subcommands import the helpers above, so they come after them.
from kinesis_eo.cli import chaos, demo, efo, health, redrive, run, status  # noqa: E402
from kinesis_eo.cli.health import DEFAULT_HEALTH_MAX_AGE_S as DEFAULT_HEALTH_MAX_AGE_S  # noqa: E402
from kinesis_eo.cli.health import _cmd_health as _cmd_health  # noqa: E402
from kinesis_eo.cli.run import DEFAULT_HANDLER_ATTEMPTS as DEFAULT_HANDLER_ATTEMPTS  # noqa: E402
from kinesis_eo.cli.run import DEFAULT_OUTAGE_MAX_BACKOFF_S as DEFAULT_OUTAGE_MAX_BACKOFF_S  # noqa: E402
from kinesis_eo.cli.run import _cmd_run as _cmd_run  # noqa: E402

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "PROG",
    "Command",
    "Subcommands",
    "build_parser",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``kinesis-eo`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Exactly-once effects for Amazon Kinesis consumers."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for subcommand in (demo, run, status, health, chaos, redrive, efo):
        subcommand.add(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command of ``argv`` (default: ``sys.argv``); returns the exit code."""
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
