"""Sinks: how an effect and its ledger mark become exactly-once, by kind of effect."""

from kinesis_eo.sinks.base import PoisonRecordError, idempotency_key
from kinesis_eo.sinks.claim import ClaimSink
from kinesis_eo.sinks.dynamodb import (
    TransactionalSink,
    condition_check,
    delete,
    put,
    update,
)
from kinesis_eo.sinks.keyed import IdempotentKeySink
from kinesis_eo.sinks.outages import OutageBackoff, process_through_outages
from kinesis_eo.sinks.policy import FailurePolicy
from kinesis_eo.sinks.protocols import DeadLetterSink, EffectContext, Gate, Sink
from kinesis_eo.sinks.report import BatchReport

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
