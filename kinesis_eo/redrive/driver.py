"""The whole redrive: the sink scoped for it, and the source read through it."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import replace
from typing import Any

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.flow import run_sync
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig
from kinesis_eo.redrive.letter_queue import queue_letters_flow
from kinesis_eo.redrive.letter_table import table_letters_flow
from kinesis_eo.redrive.on_failure_queue import on_failure_flow
from kinesis_eo.redrive.options import RedriveOptions, RedriveSource, SourceKind, redrive_group
from kinesis_eo.redrive.report import RedriveReport
from kinesis_eo.retry import RetryConfig
from kinesis_eo.runner import RunOptions, build_sink, load_handler
from kinesis_eo.sinks import idempotency_key

__all__ = ["build_redrive_sink", "redrive", "redrive_flow"]


def redrive_flow(
    run: RunOptions, options: RedriveOptions, sink: Any
) -> Generator[Any, Any, RedriveReport]:
    """Redrive ``options.source`` through ``sink`` (see :func:`build_redrive_sink`)."""
    kind = options.source.kind
    scope = run.app if kind is SourceKind.ON_FAILURE else redrive_group(run.app)
    report = RedriveReport(options.source, scope, options.dry_run)
    if kind is SourceKind.QUEUE:
        yield from queue_letters_flow(sink, run.app, options, report)
    elif kind is SourceKind.TABLE:
        yield from table_letters_flow(sink, run.app, options, report)
    else:
        yield from on_failure_flow(sink, options, report)
    return report


def build_redrive_sink(
    run: RunOptions,
    source: RedriveSource,
    handler: Callable[..., Any],
    clients: Mapping[str, Any],
    retry: RetryConfig | None = None,
) -> Any:
    """The sink ``kinesis-eo run`` would build, scoped for a redrive of ``source``."""
    if source.kind is SourceKind.ON_FAILURE:
        if run.mode != "per-record":
            raise ConfigurationError(
                f"on-failure records of {run.app!r} can only be redriven through its "
                "per-record ledger (--mode per-record): a watermark cannot tell which "
                "records below it were applied"
            )
        return _with_flow_runner(build_sink(run, handler, clients["dynamodb"], clients.get("sqs")))
    if run.dead_letter_table or run.dead_letter_queue:
        raise ConfigurationError(
            f"a dead-letter target is for on-failure sources only: a letter from "
            f"{source.label} that fails again stays there"
        )
    scoped = replace(
        run, app=redrive_group(run.app), mode="per-record", ledger_table=run.ledger_table_name
    )
    sink = build_sink(scoped, handler, clients["dynamodb"])
    # The handler sees the key it saw when the record failed, so that a target that
    # deduplicates by it recognises whatever those attempts left behind.
    original = Ledger(DynamoDBLedgerStore(run.ledger_table_name), LedgerConfig(run.app))
    sink.key_of = lambda record: idempotency_key(original, record)
    return _with_flow_runner(sink, clients, retry)


def _with_flow_runner(
    sink: Any, clients: Mapping[str, Any] | None = None, retry: RetryConfig | None = None
) -> Any:
    if clients is not None:
        sink.bind(lambda flow: run_sync(flow, clients, retry or RetryConfig()))
    return sink


def redrive(
    run: RunOptions,
    options: RedriveOptions,
    clients: Mapping[str, Any],
    handler: Callable[..., Any] | None = None,
    retry: RetryConfig | None = None,
) -> RedriveReport:
    """Redrive with boto3 ``clients`` (``{"dynamodb", "sqs", "kinesis"}``, as the source needs).

    ``run`` names the handler, ``--app``, ledger table, sink and mode as for
    ``kinesis-eo run``; ``handler`` overrides ``run.handler`` (for programs and tests).
    """
    handler = handler if handler is not None else load_handler(run.handler)
    sink = build_redrive_sink(run, options.source, handler, clients, retry)
    flow = redrive_flow(run, options, sink)
    report: RedriveReport = run_sync(flow, clients, retry or RetryConfig())
    return report
