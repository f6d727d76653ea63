"""Claim, act, complete: the ledger's side of effects that cannot be made idempotent.

A claim is a record's mark in ``IN_PROGRESS`` with an owner token and an
expiry; it becomes ``COMPLETED`` only while the token is still the owner's.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from enum import Enum
from typing import Any

from kinesis_eo.errors import KinesisEOError
from kinesis_eo.ledger.core import LedgerCore
from kinesis_eo.ledger.model import (
    CLAIM_EXPIRES_AT,
    DONE_STATUSES,
    OWNER,
    PAYLOAD_HASH,
    STATUS,
    UPDATED_AT,
    Absent,
    AbsentOrClaimExpired,
    ClaimExpiredFor,
    Delete,
    HeldBy,
    LedgerConflict,
    MarkStatus,
    Op,
    PayloadMismatchError,
    Put,
    Update,
    Value,
    payload_hash,
)
from kinesis_eo.records import Record

__all__ = ["ClaimLostError", "ClaimOutcome", "ExpiredClaimPolicy", "LedgerClaims"]


class ClaimLostError(KinesisEOError):
    """A claim this worker held was taken over or is gone."""


class ExpiredClaimPolicy(Enum):
    """What to do with a claim whose owner vanished between "act" and "complete".

    RUN_AGAIN: take the claim and run the effect again: the effect happens at
    least once (twice if the first run got through before the crash).
    QUARANTINE: never run it again; dead-letter the record for a person to
    check: the effect happens at most once (zero times if the crash came
    before the effect). No system can do better for an effect that cannot be
    made idempotent.
    """

    RUN_AGAIN = "run_again"
    QUARANTINE = "quarantine"


class ClaimOutcome(Enum):
    """What taking a claim found: ours to act on, already done, held by another owner, or
    quarantined.
    """

    ACQUIRED = "acquired"
    DONE = "done"
    HELD = "held"
    QUARANTINED = "quarantined"


class LedgerClaims(LedgerCore):
    """The ledger's claims: take, extend, complete and give back."""

    def claim(
        self,
        record: Record,
        owner: str,
        claim_for: timedelta,
        policy: ExpiredClaimPolicy,
    ) -> Generator[Any, Any, ClaimOutcome]:
        """Take the record's claim before a non-idempotent effect.

        ``claim_for`` is how long the claim holds without a heartbeat; claim
        expiry compares wall clocks of the hosts involved, so keep it well above
        their skew.
        """
        key = self.record_key(record)
        while True:
            now_ms = self._now_ms()
            item = self._record_item(record, MarkStatus.IN_PROGRESS, now_ms)
            item[OWNER] = owner
            item[CLAIM_EXPIRES_AT] = now_ms + int(claim_for.total_seconds() * 1000)
            condition = (
                AbsentOrClaimExpired(now_ms) if policy is ExpiredClaimPolicy.RUN_AGAIN else Absent()
            )
            try:
                yield from self.store.apply([Put(key, item, condition)])
                return ClaimOutcome.ACQUIRED
            except LedgerConflict as conflict:
                current = conflict.failed.get(0)
            if current is None:
                found = yield from self.store.get([key])
                current = found.get(key)
                if current is None:
                    continue  # released between our write and our read: try again
            if current.get(PAYLOAD_HASH) != payload_hash(record.data):
                raise PayloadMismatchError(key, record, str(current.get(PAYLOAD_HASH)))
            if MarkStatus(current.get(STATUS)) in DONE_STATUSES:
                return ClaimOutcome.DONE
            if int(current.get(CLAIM_EXPIRES_AT, 0)) >= now_ms:
                return ClaimOutcome.HELD
            if policy is ExpiredClaimPolicy.RUN_AGAIN:
                continue  # expired since our write was evaluated
            quarantine = Update(
                key,
                {STATUS: MarkStatus.QUARANTINED.value, UPDATED_AT: now_ms},
                ClaimExpiredFor(str(current.get(OWNER)), now_ms),
            )
            try:
                yield from self.store.apply([quarantine])
                return ClaimOutcome.QUARANTINED
            except LedgerConflict:
                continue  # its owner came back or someone else acted: look again

    def heartbeat(
        self, record: Record, owner: str, claim_for: timedelta
    ) -> Generator[Any, Any, None]:
        """Extend a claim during a long effect."""
        expires = self._now_ms() + int(claim_for.total_seconds() * 1000)
        yield from self._owned_write(
            Update(self.record_key(record), {CLAIM_EXPIRES_AT: expires}, HeldBy(owner)), record
        )

    def complete(self, record: Record, owner: str) -> Generator[Any, Any, None]:
        """Mark a claimed record done, only if the claim is still ours."""
        values: dict[str, Value] = {
            STATUS: MarkStatus.COMPLETED.value,
            UPDATED_AT: self._now_ms(),
        }
        yield from self._owned_write(Update(self.record_key(record), values, HeldBy(owner)), record)

    def release(self, record: Record, owner: str) -> Generator[Any, Any, None]:
        """Give a claim back after a failed effect, so the record can be tried again."""
        yield from self._owned_write(Delete(self.record_key(record), HeldBy(owner)), record)

    def _owned_write(self, op: Op, record: Record) -> Generator[Any, Any, None]:
        try:
            yield from self.store.apply([op])
        except LedgerConflict as conflict:
            holder = conflict.failed.get(0)
            raise ClaimLostError(
                f"the claim on {record.shard_id} {record.position} is no longer ours "
                f"(now: {dict(holder) if holder else 'absent'})"
            ) from conflict
