"""The ledger protocol, written once over a store's two primitives.

Every method that touches the store is a flow (see :mod:`kinesis_eo.flow`):
sinks and consumers run it with :func:`~kinesis_eo.flow.run_sync` or
:func:`~kinesis_eo.flow.run_async`, whichever their client needs.

The commit is the heart of exactly-once: a batch's sink writes and the ledger
mark that says "done" go into one atomic write, in chunks that fit a DynamoDB
transaction. When a condition fails, the store says which one and returns the
item as it was, and the ledger sorts the batch into what was already done
(skipped), what clashes (reported), and what is left (retried), without a read.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from kinesis_eo.errors import ConfigurationError, InvalidWriteError, KinesisEOError
from kinesis_eo.ledger.model import (
    CLAIM_EXPIRES_AT,
    DONE_STATUSES,
    EXPIRES_AT,
    FAILURES,
    OWNER,
    PAYLOAD_HASH,
    POSITION,
    SHARD,
    STATUS,
    STREAM,
    UPDATED_AT,
    Absent,
    AbsentOrClaimExpired,
    ClaimExpiredFor,
    Delete,
    HeldBy,
    Increment,
    Item,
    LedgerConfig,
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
from kinesis_eo.ledger.store import LedgerStore
from kinesis_eo.records import Record

Flow = Generator[Any, Any, Any]


class FencedError(KinesisEOError):
    """A commit's fencing check failed: the shard has another owner; nothing was written."""


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
    ACQUIRED = "acquired"
    DONE = "done"
    HELD = "held"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Entry:
    """A record to mark done, with the sink writes that must commit with the mark."""

    record: Record
    writes: Sequence[Any] = ()
    status: MarkStatus = MarkStatus.COMPLETED


@dataclass(frozen=True, slots=True)
class Screened:
    """A batch sorted before any effect: new records, known ones, and clashing ones."""

    new: list[Record]
    duplicates: list[Record]
    mismatched: list[PayloadMismatchError]


@dataclass
class CommitResult:
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


class Ledger:
    """The idempotent sink ledger of one consumer group, over any :class:`LedgerStore`."""

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
        return f"rec#{self.config.consumer_group}#{self.config.key_of(record)}"

    def failure_key(self, record: Record) -> str:
        return f"fail#{self.config.consumer_group}#{self.config.key_of(record)}"

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- screening -------------------------------------------------------------------------------

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
        for record in records:
            if read:
                mark = yield from self.watermark(record.stream, record.shard_id)
            else:
                mark = self._watermarks.get((record.stream, record.shard_id))
            if mark is not None and record.position.key() <= mark:
                duplicates.append(record)
            else:
                new.append(record)
        return Screened(new, duplicates, [])

    def _screen_per_record(self, records: Sequence[Record]) -> Generator[Any, Any, Screened]:
        first, duplicates, mismatched = self._first_of_each_key(records)
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
        return Screened(new, duplicates, mismatched)

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

    # --- the commit ----------------------------------------------------------------------------

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
                retry, held_back = yield from self._resolve(
                    chunk, ops, len(writes), conflict, result
                )
                if held_back:
                    result.held_back = held_back + [e for c in queue for e in c]
                    queue.clear()
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

    def _resolve(
        self,
        chunk: list[Entry],
        ops: list[Op],
        write_count: int,
        conflict: LedgerConflict,
        result: CommitResult,
    ) -> Generator[Any, Any, tuple[list[Entry], list[Entry]]]:
        """Split a chunk whose conditions failed into (retry now, hold back)."""
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
            return [e for i, e in enumerate(chunk) if i not in drop], []
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
            return [e for i, e in enumerate(chunk) if i not in drop], []
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
        else:
            result.duplicates.append(record)

    # --- failed deliveries ---------------------------------------------------------------------

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

    # --- claim, act, complete ------------------------------------------------------------------

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
