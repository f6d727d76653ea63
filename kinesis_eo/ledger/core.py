"""What every part of the ledger shares: its store, its config, and how its items are keyed."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from kinesis_eo.ledger.model import (
    EXPIRES_AT,
    PAYLOAD_HASH,
    POSITION,
    SHARD,
    STATUS,
    STREAM,
    UPDATED_AT,
    LedgerConfig,
    MarkStatus,
    PayloadMismatchError,
    Value,
    payload_hash,
)
from kinesis_eo.ledger.store import LedgerStore
from kinesis_eo.records import Record

__all__ = ["LedgerCore"]


class LedgerCore:
    """The state of one consumer group's ledger and the keys and items of its marks.

    :class:`~kinesis_eo.ledger.Ledger` adds the protocol to it, one concern per
    part: screening, the commit, and claims.
    """

    def __init__(
        self,
        store: LedgerStore,
        config: LedgerConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        # Highest committed position key per (stream, shard), as this process last saw it.
        self._watermarks: dict[tuple[str, str], str | None] = {}

    # --- keys ----------------------------------------------------------------------------------

    def watermark_key(self, stream: str, shard_id: str) -> str:
        return f"wm#{self.config.consumer_group}#{stream}#{shard_id}"

    def record_key(self, record: Record) -> str:
        config = self.config
        cached = record._ledger_key
        if cached is not None and cached[0] is config:
            return cached[1]
        key = f"rec#{config.consumer_group}#{config.key_of(record)}"
        object.__setattr__(record, "_ledger_key", (config, key))
        return key

    def failure_key(self, record: Record) -> str:
        return f"fail#{self.config.consumer_group}#{self.config.key_of(record)}"

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _record_item(self, record: Record, status: MarkStatus, now_ms: int) -> dict[str, Value]:
        return {
            STATUS: status.value,
            PAYLOAD_HASH: payload_hash(record.data),
            POSITION: record.position.key(),
            STREAM: record.stream,
            SHARD: record.shard_id,
            UPDATED_AT: now_ms,
            EXPIRES_AT: now_ms // 1000 + int(self.config.record_ttl.total_seconds()),
        }

    @staticmethod
    def committed_at(item: Mapping[str, Value] | None, record: Record) -> bool:
        """Whether a per-record mark was committed for this very record (its shard and
        position), so that seeing it again is a redelivery, not an inbound duplicate.

        Without the stored item there is no evidence of another position: a redelivery.
        """
        if item is None or POSITION not in item:
            return True
        return item[POSITION] == record.position.key() and item.get(SHARD) == record.shard_id

    def _first_of_each_key(
        self, records: Sequence[Record]
    ) -> tuple[list[Record], list[Record], list[PayloadMismatchError]]:
        """Keep the first record of every key; later ones are duplicates or clashes."""
        seen: dict[str, Record] = {}
        first: list[Record] = []
        duplicates: list[Record] = []
        mismatched: list[PayloadMismatchError] = []
        for record in records:
            key = self.record_key(record)
            earlier = seen.get(key)
            if earlier is None:
                seen[key] = record
                first.append(record)
            elif earlier.data == record.data:
                duplicates.append(record)
            else:
                mismatched.append(PayloadMismatchError(key, record, payload_hash(earlier.data)))
        return first, duplicates, mismatched
