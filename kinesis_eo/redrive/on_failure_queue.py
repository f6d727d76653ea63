"""Redriving what an event source mapping sent to its on-failure destination.

The messages hold no payload, only where a batch lay: its records are read
again from the stream, while it still holds them, and applied.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from kinesis_eo.on_failure import BatchInfo, fetch_batch_flow, parse_on_failure
from kinesis_eo.redrive.applying import Applied, apply_flow, outcome_of
from kinesis_eo.redrive.options import RedriveOptions
from kinesis_eo.redrive.report import Outcome, RedriveItem, RedriveReport
from kinesis_eo.redrive.sqs import delete_flow, receive_flow, release_flow

__all__ = ["on_failure_flow"]


def on_failure_flow(
    sink: Any, options: RedriveOptions, report: RedriveReport
) -> Generator[Any, Any, None]:
    """Apply the records of each on-failure message's range; remove a message once all are done."""
    queue_url = options.source.where
    batches: list[tuple[BatchInfo, str]] = []
    keep: list[str] = []

    def take(message: Mapping[str, Any]) -> None:
        handle = str(message["ReceiptHandle"])
        try:
            batches.append((parse_on_failure(str(message.get("Body"))), handle))
        except ValueError as exc:
            keep.append(handle)
            label = f"message {message.get('MessageId')}"
            report.items.append(RedriveItem(label, Outcome.LEFT, str(exc)))

    def enough() -> bool:
        return options.max_items is not None and len(batches) >= options.max_items

    yield from receive_flow(queue_url, options, take, enough)
    for info, handle in batches:
        if options.dry_run:
            keep.append(handle)
            detail = f"{info.batch_size} record(s), {info.condition or 'no condition given'}"
            report.items.append(RedriveItem(info.label, Outcome.WOULD_REDRIVE, detail))
            continue
        records, gone = yield from fetch_batch_flow(info)
        applied = (yield from apply_flow(sink, records)) if records else Applied()
        detail = (
            f"{applied.done} applied, {applied.already} already applied, "
            f"{applied.dead_lettered} dead-lettered, {len(applied.failed)} failed"
        )
        if gone or applied.failed:
            keep.append(handle)
            outcome = Outcome.GONE if gone else Outcome.FAILED_AGAIN
            why = gone or applied.failed[0]
            report.items.append(RedriveItem(info.label, outcome, f"{why}; {detail}"))
            continue
        problem = yield from delete_flow(queue_url, [handle])
        item = RedriveItem(info.label, outcome_of(applied), problem or detail, not problem)
        report.items.append(item)
    yield from release_flow(queue_url, keep)
