"""What the Lambda handler decides, as plain functions: testable without Lambda or AWS.

- which records must keep their order (:class:`Ordering`, :func:`order_scope`);
- how an event's records are split into lanes that may run at once (:func:`lanes`);
- when to stop for the deadline (:func:`deadline_reached`);
- when a failing record is dead-lettered rather than delivered again
  (:func:`dead_letter_now`);
- which sequence numbers go into ``batchItemFailures`` (:func:`items_to_report`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from enum import Enum

from kinesis_eo.records import Position, Record, parse_sequence_number

__all__ = [
    "Ordering",
    "batch_item_failures",
    "dead_letter_now",
    "deadline_reached",
    "items_to_report",
    "lanes",
    "order_scope",
    "segments",
]


class Ordering(Enum):
    """Which records of a shard keep their order when one of them fails.

    SHARD: all of them. The first failure stops the shard's batch; it and
    every record after it are reported and come again in the next delivery.
    PARTITION_KEY: only records with the same partition key (what Kinesis
    itself promises per key). A failure stops its key only; other keys go on,
    and may run at once (``LambdaConfig.max_concurrency``). Needs a per-record
    ledger: records of one shard are then committed out of order.
    """

    SHARD = "shard"
    PARTITION_KEY = "partition_key"


def order_scope(record: Record, ordering: Ordering) -> Hashable:
    """The records that must stay in order with ``record`` share this value (per shard)."""
    return record.partition_key if ordering is Ordering.PARTITION_KEY else None


def lanes(records: Sequence[Record], ordering: Ordering, concurrency: int) -> list[list[Record]]:
    """The records split into at most ``concurrency`` lanes that keep order within a lane.

    Each partition key stays in one lane (a stable hash of the key picks it),
    so a lane keeps the order of every key in it. With SHARD ordering there is
    one lane.
    """
    if ordering is Ordering.SHARD or concurrency <= 1:
        return [list(records)] if records else []
    split: dict[int, list[Record]] = {}
    for record in records:
        digest = hashlib.md5(record.partition_key.encode("utf-8", "surrogatepass")).digest()
        split.setdefault(int.from_bytes(digest[:8], "big") % concurrency, []).append(record)
    return [split[lane] for lane in sorted(split)]


def segments(records: Sequence[Record]) -> list[list[Record]]:
    """Runs of decodable records, with each undecodable record alone between them.

    A sink dead-letters undecodable records as soon as it sees a batch; alone,
    one is dead-lettered in its turn, after the records before it.
    """
    result: list[list[Record]] = []
    for record in records:
        alone = record.deaggregation_error is not None
        if alone or not result or result[-1][-1].deaggregation_error is not None:
            result.append([record])
        else:
            result[-1].append(record)
    return result


def deadline_reached(remaining_ms: int | None, margin_ms: int) -> bool:
    """Whether to stop taking records: less than ``margin_ms`` left (None: no deadline)."""
    return remaining_ms is not None and remaining_ms < margin_ms


def dead_letter_now(failed_deliveries: int, max_failed_deliveries: int) -> bool:
    """Whether a record that failed in ``failed_deliveries`` deliveries so far is given up."""
    return failed_deliveries >= max_failed_deliveries


def items_to_report(
    records: Iterable[Record], deferred: Iterable[Record], ordering: Ordering
) -> list[str]:
    """The sequence numbers to report: from each scope's first deferred record on.

    The event source mapping restarts the shard at the lowest sequence number
    reported, so the first deferred record is the one that matters; the ones
    after it in its scope are reported too, because none of them is done.
    Records of a KPL aggregate share one sequence number: reporting it brings
    the whole aggregate back, and the ledger drops the user records of it that
    were already done. Sorted numerically, each once.
    """
    first: dict[tuple[str, str, Hashable], Position] = {}
    for record in deferred:
        scope = (record.stream, record.shard_id, order_scope(record, ordering))
        if scope not in first or record.position < first[scope]:
            first[scope] = record.position
    if not first:
        return []
    reported: set[str] = set()
    for record in records:
        start = first.get((record.stream, record.shard_id, order_scope(record, ordering)))
        if start is not None and record.position >= start:
            reported.add(record.sequence_number)
    return sorted(reported, key=parse_sequence_number)


def batch_item_failures(sequence_numbers: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """The response of the ``ReportBatchItemFailures`` contract."""
    return {"batchItemFailures": [{"itemIdentifier": s} for s in sequence_numbers]}
