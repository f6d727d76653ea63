"""kinesis_eo: exactly-once side effects for Amazon Kinesis Data Streams consumers.

The names a program needs are importable from here::

    from kinesis_eo import Consumer, Ledger, LedgerConfig, TransactionalSink, update

They are loaded on first use, so that ``import kinesis_eo`` (and the
``kinesis-eo`` command's start) does not pay for boto3 until something needs it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = importlib.metadata.version("kinesis-eo")
except importlib.metadata.PackageNotFoundError:
    # Imported from a source tree that was never installed: there is no metadata to read,
    # and a made-up release number would be worse than one that says so.
    __version__ = "0+unknown"

# Public name -> the module that defines it.
_EXPORTS = {
    "AsyncConsumer": "kinesis_eo.consumer",
    "AsyncWorker": "kinesis_eo.worker",
    "ClaimSink": "kinesis_eo.sinks",
    "Consumer": "kinesis_eo.consumer",
    "ConsumerConfig": "kinesis_eo.consumer",
    "DeadLetterReason": "kinesis_eo.deadletter",
    "DynamoDBCheckpointStore": "kinesis_eo.checkpoint",
    "DynamoDBDeadLetterTable": "kinesis_eo.deadletter",
    "DynamoDBLedgerStore": "kinesis_eo.ledger",
    "EffectContext": "kinesis_eo.sinks",
    "Event": "kinesis_eo.producer",
    "ExpiredClaimPolicy": "kinesis_eo.ledger",
    "FailurePolicy": "kinesis_eo.sinks",
    "HashKeyRange": "kinesis_eo.records",
    "IdempotentKeySink": "kinesis_eo.sinks",
    "KinesisEOError": "kinesis_eo.errors",
    "Ledger": "kinesis_eo.ledger",
    "LedgerConfig": "kinesis_eo.ledger",
    "LedgerMode": "kinesis_eo.ledger",
    "MemoryLedgerStore": "kinesis_eo.ledger",
    "OutageBackoff": "kinesis_eo.sinks",
    "Position": "kinesis_eo.records",
    "Producer": "kinesis_eo.producer",
    "ProducerConfig": "kinesis_eo.producer",
    "ReaderConfig": "kinesis_eo.retrieval",
    "Record": "kinesis_eo.records",
    "SinkUnavailableError": "kinesis_eo.errors",
    "SqsDeadLetterQueue": "kinesis_eo.deadletter",
    "TransactionalSink": "kinesis_eo.sinks",
    "Worker": "kinesis_eo.worker",
    "WorkerConfig": "kinesis_eo.worker",
    "condition_check": "kinesis_eo.sinks",
    "delete": "kinesis_eo.sinks",
    "put": "kinesis_eo.sinks",
    "update": "kinesis_eo.sinks",
}

__all__ = [
    "AsyncConsumer",
    "AsyncWorker",
    "ClaimSink",
    "Consumer",
    "ConsumerConfig",
    "DeadLetterReason",
    "DynamoDBCheckpointStore",
    "DynamoDBDeadLetterTable",
    "DynamoDBLedgerStore",
    "EffectContext",
    "Event",
    "ExpiredClaimPolicy",
    "FailurePolicy",
    "HashKeyRange",
    "IdempotentKeySink",
    "KinesisEOError",
    "Ledger",
    "LedgerConfig",
    "LedgerMode",
    "MemoryLedgerStore",
    "OutageBackoff",
    "Position",
    "Producer",
    "ProducerConfig",
    "ReaderConfig",
    "Record",
    "SinkUnavailableError",
    "SqsDeadLetterQueue",
    "TransactionalSink",
    "Worker",
    "WorkerConfig",
    "condition_check",
    "delete",
    "put",
    "update",
]

if TYPE_CHECKING:
    from kinesis_eo.checkpoint import DynamoDBCheckpointStore
    from kinesis_eo.consumer import AsyncConsumer, Consumer, ConsumerConfig
    from kinesis_eo.deadletter import DeadLetterReason, DynamoDBDeadLetterTable, SqsDeadLetterQueue
    from kinesis_eo.errors import KinesisEOError, SinkUnavailableError
    from kinesis_eo.ledger import (
        DynamoDBLedgerStore,
        ExpiredClaimPolicy,
        Ledger,
        LedgerConfig,
        LedgerMode,
        MemoryLedgerStore,
    )
    from kinesis_eo.producer import Event, Producer, ProducerConfig
    from kinesis_eo.records import HashKeyRange, Position, Record
    from kinesis_eo.retrieval import ReaderConfig
    from kinesis_eo.sinks import (
        ClaimSink,
        EffectContext,
        FailurePolicy,
        IdempotentKeySink,
        OutageBackoff,
        TransactionalSink,
        condition_check,
        delete,
        put,
        update,
    )
    from kinesis_eo.worker import AsyncWorker, Worker, WorkerConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kinesis_eo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
