"""Lanes: a batch's records of different partition keys applied concurrently, in order per key.

Kinesis orders records per partition key only, and so do lanes: a batch is
split into groups by partition key, each group runs one record after the
other, and up to ``lanes`` groups run at once (:class:`~kinesis_eo.flow.Together`:
threads under the sync driver, tasks under asyncio, where only async handlers
overlap). The ledger commit for the batch comes after every lane finished,
as without lanes, so a watermark moves only past a batch that is wholly done.

Why that stays exactly-once:

- the idempotent-key sink marks after its handler returned; a crash while
  lanes run leaves effects done but not marked, and the batch is read
  again: the target deduplicates by the record's key, so running them
  again is harmless, whichever lanes had got how far;
- the claim sink claims and completes each record on its own ledger item
  before and after the effect, so a record's claim, not the batch's
  order, guards it: a replay finds completed claims done;
- the transactional sink's handlers only return writes, committed in the
  batch's one transaction; lanes are allowed there too (they overlap
  handlers that read elsewhere to build their writes) but help little.

A failure in one lane is that record's: the failure policy retries it and
dead-letters it, and the other keys go on. An outage in a lane stops every
lane before its next record; what did not run is deferred and processed
again after the pause, as without lanes. Handlers must be safe to call from
several threads at once (sync) or tasks (asyncio) when ``lanes`` > 1.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from kinesis_eo.flow import Flow, Together
from kinesis_eo.records import Record
from kinesis_eo.sinks.report import BatchReport

__all__ = ["by_partition_key", "in_lanes", "set_lanes"]

Step = Callable[[Record, BatchReport], Generator[Any, Any, Any]]


def by_partition_key(records: Sequence[Record]) -> list[list[int]]:
    """The records' indexes grouped by partition key, each in order, groups by first record."""
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(record.partition_key, []).append(index)
    return list(groups.values())


def in_lanes(
    records: Sequence[Record], lanes: int, step: Step, report: BatchReport
) -> Generator[Any, Any, list[Any]]:
    """Run ``step(record, lane_report)`` for every record, a lane per partition key, at most
    ``lanes`` at once; the steps' results in the records' order, the lanes' reports merged
    into ``report``.

    A step sees the lane's report: it holds the outage of any lane once one was
    met, so the step defers its record as it would after an outage of its own.
    """
    groups = by_partition_key(records)
    reports = [BatchReport() for _ in groups]

    def lane(group: list[int], own: BatchReport) -> Flow:
        results = []
        for index in group:
            own.outage = own.outage or next((r.outage for r in reports if r.outage), None)
            results.append((yield from step(records[index], own)))
        return results

    values = yield Together(tuple(lane(g, r) for g, r in zip(groups, reports, strict=True)), lanes)
    ordered: list[Any] = [None] * len(records)
    for group, results in zip(groups, values, strict=True):
        for index, result in zip(group, results, strict=True):
            ordered[index] = result
    for own in reports:
        report.merge(own)
    return ordered


def set_lanes(sink: Any, lanes: int) -> None:
    """Give a sink built on :class:`~kinesis_eo.sinks.base.SinkBase` the runtime's lanes."""
    if lanes < 1:
        raise ValueError(f"lanes must be 1 or more, got {lanes}")
    if hasattr(sink, "lanes"):
        sink.lanes = lanes
