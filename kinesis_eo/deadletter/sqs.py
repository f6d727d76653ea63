"""Dead letters to an SQS queue: one JSON message per letter, or ordered parts.

A letter whose document does not fit one message goes as parts, each a whole
document with a slice of the payload; :func:`~kinesis_eo.deadletter.reassemble`
puts them back together and recognises copies (a resend to a standard queue).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kinesis_eo.deadletter.base import (
    AsyncDeadLetterSender,
    DeadLetterSender,
    DeadLetterSendError,
    LetterBatches,
    TargetBase,
    failure_list,
    send_letters_flow,
)
from kinesis_eo.deadletter.letter import (
    MAX_ERROR_CHARS,
    DeadLetter,
    payload_chunks,
    payload_digest,
)
from kinesis_eo.errors import InvalidRecordError
from kinesis_eo.flow import Call
from kinesis_eo.retry import RetryConfig

__all__ = [
    "AsyncSqsDeadLetterQueue",
    "SqsDeadLetterConfig",
    "SqsDeadLetterQueue",
    "SqsMessage",
    "send_to_sqs_flow",
    "sqs_messages",
]

KIB = 1024
SQS_MAX_BATCH_ENTRIES = 10
# What the SQS API allows for MaximumMessageSize (and moto 5.2 checks).
SQS_MIN_MESSAGE_BYTES = KIB
SQS_MAX_MESSAGE_BYTES = 1024 * KIB


@dataclass(frozen=True, slots=True)
class SqsDeadLetterConfig:
    """Size limits and retry policy for an SQS dead-letter queue.

    ``max_message_bytes`` must not exceed the queue's ``MaximumMessageSize``.
    The default, 256 KiB, is what queues made before 2025 have; SQS accepts up
    to 1 MiB since then (and moto 5.2 makes new queues with 1 MiB): set it to
    the queue's attribute to send fewer parts. ``max_batch_bytes`` bounds the
    sum of the bodies in one ``SendMessageBatch`` (256 KiB on older SQS, 1 MiB
    now and in moto). ``entry_retry`` governs entries a batch reported failed
    (``max_attempts`` counts the first send); ``call_retry`` calls that failed
    as a whole. With aiobotocore, a request over 1 MiB (a batch of 1 MiB
    messages) makes aiohttp warn that copying it blocks the event loop.
    """

    max_message_bytes: int = 256 * KIB
    max_batch_bytes: int = 256 * KIB
    max_batch_entries: int = SQS_MAX_BATCH_ENTRIES
    entry_retry: RetryConfig = field(default_factory=lambda: RetryConfig(max_attempts=10))
    call_retry: RetryConfig = field(default_factory=RetryConfig)

    def __post_init__(self) -> None:
        if not SQS_MIN_MESSAGE_BYTES <= self.max_message_bytes <= SQS_MAX_MESSAGE_BYTES:
            raise ValueError(
                f"max_message_bytes must be between {SQS_MIN_MESSAGE_BYTES} and "
                f"{SQS_MAX_MESSAGE_BYTES}, got {self.max_message_bytes}"
            )
        if self.max_batch_bytes < self.max_message_bytes:
            raise ValueError("max_batch_bytes cannot be smaller than max_message_bytes")
        if not 1 <= self.max_batch_entries <= SQS_MAX_BATCH_ENTRIES:
            raise ValueError(f"max_batch_entries must be 1 to {SQS_MAX_BATCH_ENTRIES}")

    @property
    def part_data_bytes(self) -> int:
        """Payload bytes per part message, as base64 in three quarters of a message.

        Fixed by the limit alone, never by the letter's other fields, so that the
        parts of two sends of one letter (a resend after a crash, with a
        different error text) cut the payload at the same places.
        """
        return (self.max_message_bytes * 3 // 4) // 4 * 3


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """One message of a letter: its JSON body and the FIFO ids that make a resend harmless."""

    letter_id: str
    part: int
    parts: int
    body: str
    group_id: str
    deduplication_id: str
    where: str

    @property
    def label(self) -> str:
        return f"{self.where} (letter {self.letter_id}, part {self.part}/{self.parts})"


def _json(value: Mapping[str, Any]) -> str:
    # ASCII only: every character is one byte, so len() is the size SQS counts,
    # and no lone surrogate in a partition key can make the body unencodable.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def sqs_messages(letter: DeadLetter, config: SqsDeadLetterConfig) -> list[SqsMessage]:
    """The message bodies for ``letter``: one if it fits, else its payload in ordered parts.

    Every body is a dead-letter document plus ``letter_id``, ``part`` and
    ``parts``; the parts of a split letter each carry every other field, a
    slice of the payload in ``data_base64``, and the whole payload's
    ``data_bytes`` and ``data_sha256`` so that :func:`reassemble` can check it.
    """
    letter_id = letter.letter_id
    where = letter.describe()
    doc = letter.to_document()
    group_id = letter.record.shard_id

    def message(part: int, parts: int, body: str) -> SqsMessage:
        # The part count is in the id: a resend cut differently (another config)
        # is then a separate set of parts, not a mix of two layouts.
        dedup = f"{letter_id}-{part}-{parts}"
        return SqsMessage(letter_id, part, parts, body, group_id, dedup, where)

    whole = _json({"letter_id": letter_id, "part": 1, "parts": 1, **doc})
    if len(whole) <= config.max_message_bytes:
        return [message(1, 1, whole)]
    data = letter.record.data
    chunks = payload_chunks(data, config.part_data_bytes)
    parts = len(chunks)
    digest = payload_digest(data)
    messages = []
    for index, chunk in enumerate(chunks):
        body = _json(
            {
                "letter_id": letter_id,
                "part": index + 1,
                "parts": parts,
                "data_bytes": len(data),
                "data_sha256": digest,
                **doc,
                "data_base64": base64.b64encode(chunk).decode("ascii"),
            }
        )
        if len(body) > config.max_message_bytes:
            others = len(body) - len(chunk) * 4 // 3
            raise InvalidRecordError(
                f"the dead letter for {where} cannot be sent to SQS: its fields other than "
                f"the payload take {others} bytes, over the quarter of max_message_bytes "
                f"({config.max_message_bytes}) kept for them; the error text is "
                f"{len(letter.error)} characters (DeadLetter.from_exception cuts it to "
                f"{MAX_ERROR_CHARS})"
            )
        messages.append(message(index + 1, parts, body))
    return messages


class _SqsBatches(LetterBatches[SqsMessage]):
    noun = "message"
    stored = "stored in"

    def __init__(self, queue_url: str, config: SqsDeadLetterConfig) -> None:
        self.queue_url = queue_url
        self.config = config
        self.fifo = queue_url.endswith(".fifo")
        self.resource = f"queue {queue_url!r}"
        self.max_batch_entries = config.max_batch_entries
        self.max_batch_bytes = config.max_batch_bytes
        self.entry_retry = config.entry_retry

    def phases(self, letters: Sequence[DeadLetter]) -> list[list[SqsMessage]]:
        # One letter given twice in a call would be two entries with one label: the last copy wins.
        unique = {letter.letter_id: letter for letter in letters}
        return [[m for letter in unique.values() for m in sqs_messages(letter, self.config)]]

    def size(self, entry: SqsMessage) -> int:
        return len(entry.body)

    def call(self, entries: Sequence[SqsMessage]) -> Call:
        batch: list[dict[str, Any]] = []
        for number, msg in enumerate(entries):
            entry: dict[str, Any] = {"Id": f"m{number}", "MessageBody": msg.body}
            if self.fifo:
                entry["MessageGroupId"] = msg.group_id
                entry["MessageDeduplicationId"] = msg.deduplication_id
            batch.append(entry)
        params = {"QueueUrl": self.queue_url, "Entries": batch}
        # A missing queue comes back from the driver as ResourceNotFoundError naming it.
        return Call("send_message_batch", params, self.resource, "SendMessageBatch", "sqs")

    def unsent(
        self, entries: Sequence[SqsMessage], response: Mapping[str, Any]
    ) -> tuple[list[SqsMessage], dict[str, str]]:
        by_id = {f"m{number}": msg for number, msg in enumerate(entries)}
        confirmed = {str(s.get("Id")) for s in response.get("Successful") or []}
        refused: dict[str, str] = {}
        failed: dict[str, str] = {}
        for failure in response.get("Failed") or []:
            msg_or_none = by_id.get(str(failure.get("Id")))
            if msg_or_none is None:
                continue
            why = f"{failure.get('Code')}: {failure.get('Message', '')}".rstrip(": ")
            target = refused if failure.get("SenderFault") else failed
            target[msg_or_none.label] = why
        # An entry in neither list has an unknown fate; sending it again is
        # safe (deduplicated on FIFO, recognised as a copy by reassemble).
        for entry_id, msg in by_id.items():
            if entry_id not in confirmed and msg.label not in refused:
                failed.setdefault(msg.label, "not in the response")
        if refused:
            raise DeadLetterSendError(
                f"{self.resource} refused {len(refused)} dead-letter message(s) as invalid: "
                f"{failure_list(refused)}",
                failures=refused,
                retryable=False,
            )
        return [msg for msg in entries if msg.label in failed], failed


def send_to_sqs_flow(
    letters: Sequence[DeadLetter],
    queue_url: str,
    config: SqsDeadLetterConfig,
    rng: random.Random | None = None,
) -> Generator[Any, Any, int]:
    """Send every letter to the queue; returns the number of SendMessageBatch calls.

    Entries a batch reports failed are sent again, alone, with back-off, until
    ``config.entry_retry.max_attempts``; an entry refused as the sender's fault
    raises at once. A FIFO queue (URL ending in ``.fifo``) gets the shard id as
    message group and a deduplication id per letter part, so a resend within
    SQS's five-minute window is dropped by SQS, and any later copy by
    :func:`~kinesis_eo.deadletter.reassemble`.
    """
    return send_letters_flow(_SqsBatches(queue_url, config), letters, rng)


class _SqsTarget(TargetBase[SqsDeadLetterConfig]):
    def __init__(
        self,
        client: Any,
        queue_url: str,
        config: SqsDeadLetterConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not queue_url:
            raise ValueError("a queue URL is needed")
        super().__init__(client, config or SqsDeadLetterConfig(), rng)
        self.queue_url = queue_url

    def _batches(self) -> _SqsBatches:
        return _SqsBatches(self.queue_url, self.config)


class SqsDeadLetterQueue(DeadLetterSender[SqsDeadLetterConfig], _SqsTarget):
    """Dead letters to an SQS queue, with a boto3 SQS client."""


class AsyncSqsDeadLetterQueue(AsyncDeadLetterSender[SqsDeadLetterConfig], _SqsTarget):
    """Dead letters to an SQS queue, with an aiobotocore (or aioboto3) SQS client."""
