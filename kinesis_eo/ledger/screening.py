"""Screening: a batch sorted into new, already done, and clashing records, before any effect."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.ledger.core import LedgerCore
from kinesis_eo.ledger.model import (
    PAYLOAD_HASH,
    POSITION,
    STATUS,
    LedgerMode,
    MarkStatus,
    PayloadMismatchError,
    payload_hash,
)
from kinesis_eo.records import Position, Record

__all__ = ["LedgerScreening", "Screened"]


@dataclass(frozen=True, slots=True)
class Screened:
    """A batch sorted before any effect: new records, known ones, and clashing ones."""

    new: list[Record]
    duplicates: list[Record]
    mismatched: list[PayloadMismatchError]
    # The duplicates that are inbound ones: the event was committed under another
    # position (a producer's retry), not this record read again.
    inbound: list[Record] = field(default_factory=list)


class LedgerScreening(LedgerCore):
    """The ledger's screening of a batch against its marks."""

    def screen(
        self, records: Sequence[Record], *, read: bool = True
    ) -> Generator[Any, Any, Screened]:
        """Sort records into new, already done, and clashing, before any effect runs.

        With ``read=False`` a watermark ledger screens only against what this
        process already knows and makes no call: right for sinks whose commit
        condition finds the rest (the transactional sink), saving a read.
        """
        if self.config.mode is LedgerMode.WATERMARK:
            return (yield from self._screen_watermark(records, read))
        return (yield from self._screen_per_record(records))

    def watermark(self, stream: str, shard_id: str) -> Generator[Any, Any, str | None]:
        """The committed position key of a shard (read once, then kept current by commits)."""
        shard = (stream, shard_id)
        if shard not in self._watermarks:
            key = self.watermark_key(stream, shard_id)
            found = yield from self.store.get([key])
            stored = found.get(key)
            self._watermarks[shard] = str(stored[POSITION]) if stored else None
        return self._watermarks[shard]

    def already_done(self, record: Record) -> Generator[Any, Any, bool]:
        """Whether the ledger holds ``record`` as done (reads the store if it must)."""
        screened = yield from self.screen([record])
        return not screened.new

    def _screen_watermark(
        self, records: Sequence[Record], read: bool
    ) -> Generator[Any, Any, Screened]:
        new: list[Record] = []
        duplicates: list[Record] = []
        # Each shard's mark parsed once, so that records compare as numbers, not keys built.
        marks: dict[tuple[str, str], Position | None] = {}
        for record in records:
            shard = (record.stream, record.shard_id)
            if shard not in marks:
                if read:
                    mark = yield from self.watermark(record.stream, record.shard_id)
                else:
                    mark = self._watermarks.get(shard)
                marks[shard] = Position.from_key(mark) if mark is not None else None
            stored = marks[shard]
            if stored is not None and not stored < record.position:
                duplicates.append(record)
            else:
                new.append(record)
        return Screened(new, duplicates, [])

    def _screen_per_record(self, records: Sequence[Record]) -> Generator[Any, Any, Screened]:
        first, duplicates, mismatched = self._first_of_each_key(records)
        # A batch holds each position once: a key seen twice in it is an inbound duplicate.
        inbound = list(duplicates)
        stored = yield from self.store.get([self.record_key(r) for r in first])
        new: list[Record] = []
        for record in first:
            key = self.record_key(record)
            item = stored.get(key)
            if item is None or item.get(STATUS) == MarkStatus.IN_PROGRESS.value:
                new.append(record)
            elif item.get(PAYLOAD_HASH) != payload_hash(record.data):
                mismatched.append(PayloadMismatchError(key, record, str(item.get(PAYLOAD_HASH))))
            else:
                duplicates.append(record)
                if not self.committed_at(item, record):
                    inbound.append(record)
        return Screened(new, duplicates, mismatched, inbound)
