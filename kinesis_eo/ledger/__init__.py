"""The idempotent sink ledger: what is done, marked atomically with the effect."""

from kinesis_eo.ledger.claims import ClaimLostError, ClaimOutcome, ExpiredClaimPolicy
from kinesis_eo.ledger.commit import CommitResult, Entry, FencedError
from kinesis_eo.ledger.ledger import Ledger
from kinesis_eo.ledger.model import (
    LedgerConfig,
    LedgerConflict,
    LedgerConflictError,
    LedgerMode,
    MarkStatus,
    PayloadMismatchError,
    event_id_or_position,
    payload_hash,
)
from kinesis_eo.ledger.screening import Screened
from kinesis_eo.ledger.store import (
    DynamoDBLedgerStore,
    LedgerStore,
    MemoryLedgerStore,
    MemoryWrite,
    create_ledger_table,
)

__all__ = [
    "ClaimLostError",
    "ClaimOutcome",
    "CommitResult",
    "DynamoDBLedgerStore",
    "Entry",
    "ExpiredClaimPolicy",
    "FencedError",
    "Ledger",
    "LedgerConfig",
    "LedgerConflict",
    "LedgerConflictError",
    "LedgerMode",
    "LedgerStore",
    "MarkStatus",
    "MemoryLedgerStore",
    "MemoryWrite",
    "PayloadMismatchError",
    "Screened",
    "create_ledger_table",
    "event_id_or_position",
    "payload_hash",
]
