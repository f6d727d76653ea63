"""The ledger protocol, written once over a store's two primitives.

Every method that touches the store is a flow (see :mod:`kinesis_eo.flow`):
sinks and consumers run it with :func:`~kinesis_eo.flow.run_sync` or
:func:`~kinesis_eo.flow.run_async`, whichever their client needs.

:class:`Ledger` is assembled from one part per concern: screening
(:mod:`~kinesis_eo.ledger.screening`), the commit, the heart of exactly-once
(:mod:`~kinesis_eo.ledger.commit`), and claims (:mod:`~kinesis_eo.ledger.claims`);
it adds the count of failed deliveries.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from kinesis_eo.ledger.claims import LedgerClaims
from kinesis_eo.ledger.commit import LedgerCommit
from kinesis_eo.ledger.model import (
    EXPIRES_AT,
    FAILURES,
    POSITION,
    SHARD,
    STREAM,
    UPDATED_AT,
    Increment,
    Value,
)
from kinesis_eo.ledger.screening import LedgerScreening
from kinesis_eo.records import Record

__all__ = ["Ledger"]


class Ledger(LedgerScreening, LedgerCommit, LedgerClaims):
    """The idempotent sink ledger of one consumer group, over any :class:`LedgerStore`.

    Its parts: screening (:mod:`kinesis_eo.ledger.screening`), the commit
    (:mod:`kinesis_eo.ledger.commit`) and claims (:mod:`kinesis_eo.ledger.claims`),
    over the keys and state of :mod:`kinesis_eo.ledger.core`.
    """

    def record_failure(self, record: Record) -> Generator[Any, Any, int]:
        """Count one more failed delivery of ``record``; returns the count so far.

        For consumers that cannot keep a count in memory across deliveries (a
        Lambda function is called afresh for each one). The count lives beside
        the marks, keyed like them, and expires with ``record_ttl``; it is not
        a mark: screening still sees the record as new.
        """
        key = self.failure_key(record)
        now_ms = self._now_ms()
        values: dict[str, Value] = {
            POSITION: record.position.key(),
            STREAM: record.stream,
            SHARD: record.shard_id,
            UPDATED_AT: now_ms,
            EXPIRES_AT: now_ms // 1000 + int(self.config.record_ttl.total_seconds()),
        }
        yield from self.store.apply([Increment(key, FAILURES, 1, values)])
        found = yield from self.store.get([key])
        return int(found[key][FAILURES])
