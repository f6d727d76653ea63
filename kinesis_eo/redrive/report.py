"""What became of every letter or on-failure message a redrive saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from kinesis_eo.deadletter import DeadLetter
from kinesis_eo.redrive.options import RedriveSource

__all__ = ["Outcome", "RedriveItem", "RedriveReport", "letter_detail", "letter_label"]


class Outcome(Enum):
    """What redrive did with one letter or on-failure record."""

    APPLIED = "applied"
    ALREADY_APPLIED = "already applied"
    WOULD_REDRIVE = "would redrive"
    FAILED_AGAIN = "failed again, left in place"
    GONE = "gone from the stream"
    LEFT = "left in place"


@dataclass(frozen=True, slots=True)
class RedriveItem:
    """One letter or on-failure message, what became of it, and whether it left its source."""

    label: str
    outcome: Outcome
    detail: str = ""
    removed: bool = False

    def line(self) -> str:
        text = f"{self.label}: {self.outcome.value}"
        text += f" ({self.detail})" if self.detail else ""
        return text + ("; removed" if self.removed else "")


@dataclass
class RedriveReport:
    """Every item seen, in order; ``ok`` unless something failed again or is gone."""

    source: RedriveSource
    scope: str
    dry_run: bool
    items: list[RedriveItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(i.outcome in (Outcome.FAILED_AGAIN, Outcome.GONE) for i in self.items)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for i in self.items if i.outcome is outcome)

    def summary(self) -> str:
        counts = ", ".join(
            f"{self.count(o)} {o.value}"
            for o in Outcome
            if self.count(o) or (o is Outcome.APPLIED and not self.dry_run)
        )
        verb = "dry run of redrive" if self.dry_run else "redrive"
        return f"{verb} from {self.source.label} through consumer group {self.scope!r}: {counts}"


def letter_label(letter: DeadLetter) -> str:
    """How a report names a letter: its id and its record."""
    return f"letter {letter.letter_id} {letter.describe()}"


def letter_detail(letter: DeadLetter) -> str:
    """Why a letter was written, for a dry run's report."""
    return f"{letter.reason.value} after {letter.attempts} attempt(s): {letter.error[:200]}"
