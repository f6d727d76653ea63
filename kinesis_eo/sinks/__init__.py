"""Sinks: how an effect and its ledger mark become exactly-once, by kind of effect."""

from kinesis_eo.sinks.base import (
    BatchReport,
    DeadLetterSink,
    EffectContext,
    FailurePolicy,
    Gate,
    OutageBackoff,
    PoisonRecordError,
    Sink,
    idempotency_key,
    process_through_outages,
)
from kinesis_eo.sinks.claim import ClaimSink
from kinesis_eo.sinks.dynamodb import (
    TransactionalSink,
    condition_check,
    delete,
    put,
    update,
)
from kinesis_eo.sinks.keyed import IdempotentKeySink

__all__ = [
    "BatchReport",
    "ClaimSink",
    "DeadLetterSink",
    "EffectContext",
    "FailurePolicy",
    "Gate",
    "IdempotentKeySink",
    "OutageBackoff",
    "PoisonRecordError",
    "Sink",
    "TransactionalSink",
    "condition_check",
    "delete",
    "idempotency_key",
    "process_through_outages",
    "put",
    "update",
]
