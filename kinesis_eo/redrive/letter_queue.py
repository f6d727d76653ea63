"""Redriving the dead letters of an SQS queue.

The whole queue (up to ``max_items`` letters) is received before anything is
applied, because a large letter comes in parts that may arrive in any order.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from typing import Any

from kinesis_eo.deadletter import DeadLetter, DeadLetterAssembler, describe_error
from kinesis_eo.errors import KinesisEOError
from kinesis_eo.redrive.applying import apply_flow, outcome_of
from kinesis_eo.redrive.options import RedriveOptions
from kinesis_eo.redrive.report import (
    Outcome,
    RedriveItem,
    RedriveReport,
    letter_detail,
    letter_label,
)
from kinesis_eo.redrive.sqs import delete_flow, receive_flow, release_flow

__all__ = ["QueueLetters", "queue_letters_flow"]


class QueueLetters:
    """Letters assembled from a queue's messages, with every receipt handle of each."""

    def __init__(self, app: str, options: RedriveOptions) -> None:
        self.app = app
        self.options = options
        self.assembler = DeadLetterAssembler()
        self.handles: dict[str, list[str]] = {}
        self.letters: list[DeadLetter] = []
        self.left: list[RedriveItem] = []
        self.stray: list[str] = []

    def enough(self) -> bool:
        limit = self.options.max_items
        return limit is not None and len(self.letters) >= limit

    def take(self, message: Mapping[str, Any]) -> None:
        handle = str(message["ReceiptHandle"])
        try:
            letter_id = json.loads(message.get("Body") or "")["letter_id"]
            letter = self.assembler.add(message)
        except (ValueError, KeyError, TypeError, KinesisEOError) as exc:
            self.stray.append(handle)
            why = describe_error(exc, 200)
            self.left.append(RedriveItem(f"message {message.get('MessageId')}", Outcome.LEFT, why))
            return
        self.handles.setdefault(str(letter_id), []).append(handle)
        if letter is None:
            return
        if letter.consumer_group != self.app:
            why = f"a letter of consumer group {letter.consumer_group!r}"
            self.left.append(RedriveItem(letter_label(letter), Outcome.LEFT, why))
        elif letter.reason not in self.options.reasons:
            why = f"reason {letter.reason.value} was not asked for"
            self.left.append(RedriveItem(letter_label(letter), Outcome.LEFT, why))
        elif not self.enough():
            self.letters.append(letter)

    def unchosen_handles(self) -> list[str]:
        chosen = {letter.letter_id for letter in self.letters}
        rest = [h for lid, hs in self.handles.items() if lid not in chosen for h in hs]
        return rest + self.stray


def queue_letters_flow(
    sink: Any, app: str, options: RedriveOptions, report: RedriveReport
) -> Generator[Any, Any, None]:
    """Apply the chosen letters of the queue; remove those applied, make the rest visible again."""
    queue_url = options.source.where
    found = QueueLetters(app, options)
    yield from receive_flow(queue_url, options, found.take, found.enough)
    report.items += found.left
    for letter_id, missing in found.assembler.incomplete().items():
        why = f"parts {missing} were not received"
        report.items.append(RedriveItem(f"letter {letter_id}", Outcome.LEFT, why))
    keep = found.unchosen_handles()
    for letter in found.letters:
        handles = found.handles[letter.letter_id]
        if options.dry_run:
            keep += handles
            item = RedriveItem(letter_label(letter), Outcome.WOULD_REDRIVE, letter_detail(letter))
            report.items.append(item)
            continue
        applied = yield from apply_flow(sink, [letter.record])
        outcome = outcome_of(applied)
        if outcome is Outcome.FAILED_AGAIN:
            keep += handles
            report.items.append(RedriveItem(letter_label(letter), outcome, applied.failed[0]))
            continue
        problem = yield from delete_flow(queue_url, handles)
        report.items.append(RedriveItem(letter_label(letter), outcome, problem, not problem))
    yield from release_flow(queue_url, keep)
