"""Applying records through a sink, singling out those that fail again."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.deadletter import describe_error
from kinesis_eo.records import Record
from kinesis_eo.redrive.report import Outcome
from kinesis_eo.sinks import PoisonRecordError

__all__ = ["Applied", "apply_flow", "outcome_of"]


@dataclass
class Applied:
    """What became of the records of a letter or a batch: applied, already applied, or not."""

    done: int = 0
    already: int = 0
    dead_lettered: int = 0
    failed: list[str] = field(default_factory=list)


def apply_flow(sink: Any, records: Sequence[Record]) -> Generator[Any, Any, Applied]:
    """Records through ``sink``; after a record without a dead-letter target fails, one by one.

    A sink raises :class:`PoisonRecordError` before it commits the batch's marks
    (the claim sink completes each record as it goes: those come back as already
    applied), so the records are applied again alone to single out the failing ones.
    """
    result = Applied()
    try:
        report = yield from sink.process(list(records))
    except PoisonRecordError as exc:
        if len(records) > 1:
            for record in records:
                alone = yield from apply_flow(sink, [record])
                result.done += alone.done
                result.already += alone.already
                result.dead_lettered += alone.dead_lettered
                result.failed += alone.failed
            return result
        result.failed.append(describe_error(exc.__cause__ or exc, 300))
        return result
    dead = {id(letter.record) for letter in report.dead_lettered}
    result.done = len(report.applied)
    result.already = len(report.duplicates)
    result.dead_lettered = len(dead)
    accounted = {id(r) for r in report.applied} | {id(r) for r in report.duplicates} | dead
    result.failed += ["not committed" for r in records if id(r) not in accounted]
    return result


def outcome_of(applied: Applied) -> Outcome:
    """The item's outcome: failed again if any record did, else applied or already applied."""
    if applied.failed:
        return Outcome.FAILED_AGAIN
    return Outcome.APPLIED if applied.done or applied.dead_lettered else Outcome.ALREADY_APPLIED
