"""The commit: a batch's sink writes and its ledger mark in one atomic write.

The commit is the heart of exactly-once: a batch's sink writes and the ledger
mark that says "done" go into one atomic write, in chunks that fit a DynamoDB
transaction. When a condition fails, the store says which one and returns the
item as it was, and the ledger sorts the batch into what was already done
(skipped), what clashes (reported), and what is left (retried), without a read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.errors import ConfigurationError, InvalidWriteError, KinesisEOError
from kinesis_eo.ledger.core import LedgerCore
from kinesis_eo.ledger.model import (
    PAYLOAD_HASH,
    POSITION,
    SHARD,
    STREAM,
    UPDATED_AT,
    Absent,
    Item,
    LedgerConflict,
    LedgerMode,
    MarkStatus,
    Op,
    PayloadMismatchError,
    PositionBelow,
    Put,
    Update,
    Value,
    payload_hash,
)
from kinesis_eo.records import Record

__all__ = ["CommitResult", "Entry", "FencedError", "LedgerCommit"]


class FencedError(KinesisEOError):
    """A commit's fencing check failed: the shard has another owner; nothing was written."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A record to mark done, with the sink writes that must commit with the mark."""

    record: Record
    writes: Sequence[Any] = ()
    status: MarkStatus = MarkStatus.COMPLETED


@dataclass
class CommitResult:
    """What `Ledger.commit` did with each entry: committed, duplicate, mismatched, rejected, held
    back or invalid.
    """

    committed: list[Record] = field(default_factory=list)
    duplicates: list[Record] = field(default_factory=list)
    mismatched: list[PayloadMismatchError] = field(default_factory=list)
    # Records whose own sink writes were refused (their condition failed, or
    # they need more items than one transaction holds), with the reason.
    rejected: list[tuple[Record, str]] = field(default_factory=list)
    # Watermark mode only: entries after a rejected record, not committed, so
    # that the watermark does not pass the rejected record; commit them again
    # once it is retried or dead-lettered.
    held_back: list[Entry] = field(default_factory=list)
    # Records whose sink writes DynamoDB refuses for what they are (a bad
    # expression, a wrong key type, an item over 400 KB, too many writes):
    # no retry mends them, so they are for the dead-letter target at once.
    invalid: list[tuple[Record, str]] = field(default_factory=list)
    writes: int = 0
    # The duplicates that are inbound ones (the event committed under another position).
    inbound: list[Record] = field(default_factory=list)
    # Ledger conditions that failed: marks someone else had written first.
    conflicts: int = 0


class LedgerCommit(LedgerCore):
    """The ledger's commit: chunks, conflict resolution, and refused writes singled out."""

    def commit(
        self, entries: Sequence[Entry], guards: Sequence[Any] = ()
    ) -> Generator[Any, Any, CommitResult]:
        """Mark ``entries`` done together with their sink writes, in as few atomic writes as fit.

        ``guards`` are extra checks added to every write (the lease's fencing
        check); if one fails, :class:`FencedError` is raised and nothing of
        the failing chunk was written.
        """
        result = CommitResult()
        pending = list(entries)
        if self.config.mode is LedgerMode.PER_RECORD:
            first, duplicates, mismatched = self._first_of_each_key([e.record for e in pending])
            result.duplicates += duplicates
            # A batch holds each position once: a key seen twice in it is an inbound duplicate.
            result.inbound += duplicates
            result.mismatched += mismatched
            keep = {id(r) for r in first}
            pending = [e for e in pending if id(e.record) in keep]
        else:
            self._require_one_shard(pending)
        budget = self.config.max_transaction_items - max(
            self.config.reserved_transaction_items, len(guards)
        )
        queue = deque((yield from self._chunks(pending, budget, result)))
        while queue:
            chunk = queue.popleft()
            ops = self._mark_ops(chunk)
            writes = [write for entry in chunk for write in entry.writes]
            try:
                yield from self.store.apply(ops, [*writes, *guards])
            except LedgerConflict as conflict:
                result.conflicts += sum(1 for index in conflict.failed if index < len(ops))
                retry, held_back = yield from self._resolve(
                    chunk, ops, len(writes), conflict, result
                )
                if held_back is not None:
                    # Even with nothing after it in this chunk, the chunks queued behind a
                    # refused record wait: the watermark must not pass it.
                    result.held_back = held_back + [e for c in queue for e in c]
                    queue.clear()
                if self.config.mode is LedgerMode.WATERMARK:
                    self._drop_covered(queue, chunk[-1].record, result)
                if retry:
                    queue.appendleft(retry)
                continue
            except InvalidWriteError as refused:
                self._isolate_invalid(chunk, len(ops), refused, queue, result)
                continue
            result.writes += 1
            result.committed += [entry.record for entry in chunk]
            if self.config.mode is LedgerMode.WATERMARK:
                last = chunk[-1].record
                self._watermarks[(last.stream, last.shard_id)] = last.position.key()
        return result

    def _drop_covered(
        self, queue: deque[list[Entry]], record: Record, result: CommitResult
    ) -> None:
        """After a watermark conflict, drop the queued entries the stored watermark covers.

        Another writer committed them: sending their chunks would only fail the
        same condition again, one transaction each.
        """
        mark = self._watermarks.get((record.stream, record.shard_id))
        if mark is None or not queue:
            return
        kept: list[list[Entry]] = []
        for chunk in queue:
            rest = []
            for entry in chunk:
                if entry.record.position.key() <= mark:
                    result.duplicates.append(entry.record)
                else:
                    rest.append(entry)
            if rest:
                kept.append(rest)
        queue.clear()
        queue.extend(kept)

    @staticmethod
    def _require_one_shard(entries: Sequence[Entry]) -> None:
        shards = {(e.record.stream, e.record.shard_id) for e in entries}
        if len(shards) > 1:
            raise ValueError("a watermark commit covers one shard; commit each shard's batch alone")
        positions = [e.record.position for e in entries]
        if positions != sorted(positions) or len(set(positions)) != len(positions):
            raise ValueError("a watermark commit needs its records in shard order, each once")

    def _chunks(
        self, entries: Sequence[Entry], budget: int, result: CommitResult
    ) -> Generator[Any, Any, list[list[Entry]]]:
        """Cut entries into transactions: within the item budget, and never two
        operations on one item in a transaction (DynamoDB refuses that)."""
        per_record = self.config.mode is LedgerMode.PER_RECORD
        base = 0 if per_record else 1
        touched = yield from self.store.items_touched([e.writes for e in entries])
        chunks: list[list[Entry]] = []
        chunk: list[Entry] = []
        chunk_items: set[Hashable] = set()
        used = 0
        for index, (entry, items) in enumerate(zip(entries, touched, strict=True)):
            cost = len(entry.writes) + (1 if per_record else 0)
            problem = None
            if cost + base > budget:
                problem = f"{len(entry.writes)} sink writes do not fit one transaction"
            elif len(set(items)) < len(items):
                problem = "two of the record's sink writes change the same item"
            if problem is not None:
                result.invalid.append((entry.record, problem))
                if not per_record:
                    # The watermark must not pass the refused record: hold the rest back.
                    result.held_back = list(entries[index + 1 :])
                    break
                continue
            if chunk and (used + cost > budget or not chunk_items.isdisjoint(items)):
                chunks.append(chunk)
                chunk, chunk_items, used = [], set(), 0
            if not chunk:
                used = base
            chunk.append(entry)
            chunk_items.update(items)
            used += cost
        if chunk:
            chunks.append(chunk)
        return chunks

    def _isolate_invalid(
        self,
        chunk: list[Entry],
        op_count: int,
        refused: InvalidWriteError,
        queue: deque[list[Entry]],
        result: CommitResult,
    ) -> None:
        """Find the record whose writes made DynamoDB refuse a chunk, and commit the rest.

        Where DynamoDB names the refused item, its record is the culprit; where
        it refused the request whole, the chunk is halved until one record is
        left (a few more transactions, once per invalid record). What comes
        before the culprit is committed; in watermark mode what comes after it
        waits until it is dead-lettered, so the watermark never passes it.
        """
        write_owner = [i for i, entry in enumerate(chunk) for _ in entry.writes]
        culprit: int | None = None
        if refused.indexes is not None:
            offsets = [i - op_count for i in refused.indexes]
            if any(not 0 <= offset < len(write_owner) for offset in offsets):
                raise ConfigurationError(
                    f"the ledger's own write was refused, so no record is at fault: {refused}"
                ) from refused
            culprit = write_owner[offsets[0]]
        elif len(chunk) > 1:
            middle = len(chunk) // 2
            queue.appendleft(chunk[middle:])
            queue.appendleft(chunk[:middle])
            return
        elif chunk[0].writes:
            culprit = 0
        if culprit is None:
            raise ConfigurationError(
                f"the ledger's own write was refused, so no record is at fault: {refused}"
            ) from refused
        result.invalid.append((chunk[culprit].record, str(refused)))
        before, after = chunk[:culprit], chunk[culprit + 1 :]
        if self.config.mode is LedgerMode.WATERMARK:
            result.held_back = after + [e for c in queue for e in c]
            queue.clear()
        elif after:
            queue.appendleft(after)
        if before:
            queue.appendleft(before)

    def _mark_ops(self, chunk: Sequence[Entry]) -> list[Op]:
        now_ms = self._now_ms()
        if self.config.mode is LedgerMode.WATERMARK:
            first, last = chunk[0].record, chunk[-1].record
            values: dict[str, Value] = {
                POSITION: last.position.key(),
                STREAM: last.stream,
                SHARD: last.shard_id,
                UPDATED_AT: now_ms,
            }
            key = self.watermark_key(last.stream, last.shard_id)
            # "Stored watermark below this chunk's first record": the chunk before it
            # committed, this one did not, whoever runs it.
            return [Update(key, values, PositionBelow(first.position.key()))]
        return [
            Put(self.record_key(e.record), self._record_item(e.record, e.status, now_ms), Absent())
            for e in chunk
        ]

    def _resolve(
        self,
        chunk: list[Entry],
        ops: list[Op],
        write_count: int,
        conflict: LedgerConflict,
        result: CommitResult,
    ) -> Generator[Any, Any, tuple[list[Entry], list[Entry] | None]]:
        """Split a chunk whose conditions failed into (retry now, hold back).

        Hold back is None when the commit goes on; a list (maybe empty) when a
        refused record stops a watermark commit here.
        """
        if any(index >= len(ops) + write_count for index in conflict.failed):
            raise FencedError("the fencing check failed: another worker owns this shard now")
        # Sink writes that failed their own condition reject their record.
        write_owner = [i for i, entry in enumerate(chunk) for _ in entry.writes]
        refused = sorted(
            {
                write_owner[i - len(ops)]
                for i in conflict.failed
                if len(ops) <= i < len(ops) + write_count
            }
        )
        drop: set[int] = set()
        if self.config.mode is LedgerMode.PER_RECORD:
            for index, item in conflict.failed.items():
                if index < len(ops):
                    self._classify_existing(chunk[index].record, ops[index].key, item, result)
                    drop.add(index)
            for index in refused:
                if index not in drop:
                    drop.add(index)
                    result.rejected.append((chunk[index].record, "a sink write's condition failed"))
            return [e for i, e in enumerate(chunk) if i not in drop], None
        if 0 in conflict.failed:
            mark = yield from self._stored_watermark(
                chunk[-1].record, ops[0].key, conflict.failed[0]
            )
            for i, entry in enumerate(chunk):
                if mark is not None and entry.record.position.key() <= mark:
                    drop.add(i)
                    result.duplicates.append(entry.record)
        refused = [i for i in refused if i not in drop]
        if not refused:
            return [e for i, e in enumerate(chunk) if i not in drop], None
        # The watermark must not pass a refused record before the caller has
        # dealt with it (retried or dead-lettered it): commit what comes before
        # it, hold back what comes after.
        stop = refused[0]
        result.rejected.append((chunk[stop].record, "a sink write's condition failed"))
        before = [e for i, e in enumerate(chunk[:stop]) if i not in drop]
        return before, [e for i, e in enumerate(chunk) if i > stop and i not in drop]

    def _stored_watermark(
        self, record: Record, key: str, stored: Item | None
    ) -> Generator[Any, Any, str | None]:
        if stored is None:
            # Not every store returns the old item with a failed condition.
            found = yield from self.store.get([key])
            stored = found.get(key)
        mark = str(stored[POSITION]) if stored else None
        self._watermarks[(record.stream, record.shard_id)] = mark
        return mark

    @staticmethod
    def _classify_existing(
        record: Record, key: str, item: Item | None, result: CommitResult
    ) -> None:
        if item is not None and item.get(PAYLOAD_HASH) != payload_hash(record.data):
            result.mismatched.append(PayloadMismatchError(key, record, str(item.get(PAYLOAD_HASH))))
            return
        result.duplicates.append(record)
        if not LedgerCore.committed_at(item, record):
            result.inbound.append(record)
