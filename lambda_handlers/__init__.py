"""AWS Lambda adapter: a Kinesis event source mapping's events through kinesis_eo's core.

::

    from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, LedgerMode
    from lambda_handlers import LambdaConfig, exactly_once

    ledger = Ledger(
        DynamoDBLedgerStore("ledger"),
        LedgerConfig(consumer_group="billing", mode=LedgerMode.PER_RECORD),
    )

    @exactly_once(ledger=ledger, dead_letters=dead_letter_queue)
    def handler(record, ctx):  # the function's entry point: handler(event, context)
        return [update("balances", ...)]

The event source mapping must have ``FunctionResponseTypes:
[ReportBatchItemFailures]``; ``infra/lambda.yaml`` is a complete template.
"""

from lambda_handlers.decisions import Ordering
from lambda_handlers.events import MalformedEventError, ShardDelivery, parse_event
from lambda_handlers.handler import (
    AsyncKinesisHandler,
    DeliveryGate,
    InvocationReport,
    KinesisHandler,
    LambdaConfig,
    SinkKind,
    check_ledger_mode,
    exactly_once,
)
from lambda_handlers.powertools import RecordDeferredError, powertools_record_handler
from lambda_handlers.windows import TumblingWindow, WindowInfo, WindowStateTooLargeError

__all__ = [
    "AsyncKinesisHandler",
    "DeliveryGate",
    "InvocationReport",
    "KinesisHandler",
    "LambdaConfig",
    "MalformedEventError",
    "Ordering",
    "RecordDeferredError",
    "ShardDelivery",
    "SinkKind",
    "TumblingWindow",
    "WindowInfo",
    "WindowStateTooLargeError",
    "check_ledger_mode",
    "exactly_once",
    "parse_event",
    "powertools_record_handler",
]
