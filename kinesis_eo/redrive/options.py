"""What to redrive: the source, and how far; the consumer group letters are redriven under."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.errors import ConfigurationError

__all__ = ["REDRIVE_SUFFIX", "RedriveOptions", "RedriveSource", "SourceKind", "redrive_group"]

REDRIVE_SUFFIX = "-redrive"


def redrive_group(app: str) -> str:
    """The consumer group under which the letters of ``app`` are redriven."""
    return f"{app}{REDRIVE_SUFFIX}"


class SourceKind(Enum):
    """Where redrive reads from: an SQS dead-letter queue, a DynamoDB dead-letter table, or an
    on-failure queue.
    """

    QUEUE = "sqs"
    TABLE = "dynamodb"
    ON_FAILURE = "on-failure"


@dataclass(frozen=True, slots=True)
class RedriveSource:
    """Where the records to redrive are: a letter queue or table, or an on-failure queue."""

    kind: SourceKind
    where: str

    @classmethod
    def parse(cls, text: str) -> RedriveSource:
        """``sqs:QUEUE_URL``, ``dynamodb:TABLE`` or ``on-failure:QUEUE_URL``."""
        kind, colon, where = text.partition(":")
        kinds = {k.value: k for k in SourceKind}
        if not colon or kind not in kinds or not where:
            raise ConfigurationError(
                f"source {text!r} is not one kinesis-eo redrive reads: give sqs:QUEUE_URL, "
                "dynamodb:TABLE or on-failure:QUEUE_URL"
            )
        return cls(kinds[kind], where)

    @property
    def label(self) -> str:
        return f"table {self.where!r}" if self.kind is SourceKind.TABLE else f"queue {self.where!r}"


@dataclass(frozen=True, slots=True)
class RedriveOptions:
    """What to redrive and how far.

    ``reasons`` picks the letters (not on-failure records) to redrive: by default
    only ``PROCESSING_FAILED``, the records a fixed handler can apply. A
    ``CLAIM_EXPIRED`` letter's effect may have happened already and a
    ``PAYLOAD_MISMATCH`` letter shares its event id with another payload: redrive
    those only after a person decided to. ``visibility_timeout_s`` hides received
    messages from other readers while the redrive runs; those not removed are
    made visible again at the end. ``wait_s`` is the long poll of each receive.
    """

    source: RedriveSource
    dry_run: bool = False
    max_items: int | None = None
    reasons: frozenset[DeadLetterReason] = frozenset({DeadLetterReason.PROCESSING_FAILED})
    visibility_timeout_s: int = 300
    wait_s: int = 1

    def __post_init__(self) -> None:
        if self.max_items is not None and self.max_items < 1:
            raise ConfigurationError(f"--max must be at least 1, not {self.max_items}")
        if not 1 <= self.visibility_timeout_s <= 43_200:
            raise ConfigurationError("the visibility timeout must be 1 to 43200 seconds")
