"""Dead-letter targets: where a poison record goes, whole, before the shard moves on.

A record that keeps failing (or cannot be decoded, or collides with another
payload under the same event id, or has a quarantined claim) is written to a
dead-letter target with its full payload, the error and its position, and only
after the target confirmed the write is the record marked done. A record that
cannot be dead-lettered is an error that stops the shard; it is never dropped.

Every letter has a stable id (:attr:`DeadLetter.letter_id`) derived from the
consumer group and the record's position, so that sending the same letter again
after a crash overwrites (DynamoDB), is deduplicated (SQS FIFO) or is
recognised as a copy by the reader (:func:`reassemble` on a standard queue).

Targets, each a sync and an async class over one flow (:mod:`kinesis_eo.flow`):

- :class:`SqsDeadLetterQueue` / :class:`AsyncSqsDeadLetterQueue`: one JSON
  message per letter, or ordered parts when the payload does not fit one
  message; :func:`reassemble` puts them back together.
- :class:`DynamoDBDeadLetterTable` / :class:`AsyncDynamoDBDeadLetterTable`:
  one item per letter sorted by position within its shard, with part items for
  payloads over the item limit; :func:`read_dead_letters` reads them back.
- :mod:`kinesis_eo.testing.fakes` holds in-memory targets for tests.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol, cast

from kinesis_eo.errors import (
    InvalidRecordError,
    KinesisEOError,
)
from kinesis_eo.flow import Call, Sleep, run_async, run_sync
from kinesis_eo.records import Position, Record
from kinesis_eo.retry import RetryConfig, backoff_delay
from kinesis_eo.tables import create_table_flow

__all__ = [
    "DOCUMENT_VERSION",
    "MAX_ERROR_CHARS",
    "AsyncDeadLetterTarget",
    "AsyncDynamoDBDeadLetterTable",
    "AsyncSqsDeadLetterQueue",
    "DeadLetter",
    "DeadLetterAssembler",
    "DeadLetterReason",
    "DeadLetterSendError",
    "DeadLetterTarget",
    "DynamoDBDeadLetterConfig",
    "DynamoDBDeadLetterTable",
    "IncompleteDeadLetterError",
    "SqsDeadLetterConfig",
    "SqsDeadLetterQueue",
    "SqsMessage",
    "acreate_dead_letter_table",
    "aread_dead_letters",
    "create_dead_letter_table",
    "create_dead_letter_table_flow",
    "describe_error",
    "read_dead_letters",
    "read_dead_letters_flow",
    "reassemble",
    "send_to_sqs_flow",
    "sqs_messages",
    "table_items",
    "write_to_table_flow",
]

DOCUMENT_VERSION = 1
# Error texts are for people; a message that repr()s a 1 MiB payload would
# otherwise crowd the payload itself out of an SQS message or DynamoDB item.
# 4096 characters outside the BMP are 48 KiB as JSON escapes, which leaves the
# quarter of a 256 KiB message kept for a letter's other fields room to spare.
MAX_ERROR_CHARS = 4096
KIB = 1024


class DeadLetterReason(Enum):
    PROCESSING_FAILED = "PROCESSING_FAILED"
    UNDECODABLE = "UNDECODABLE"
    """A corrupt KPL aggregate or a payload the consumer cannot parse."""
    PAYLOAD_MISMATCH = "PAYLOAD_MISMATCH"
    """The same event id arrived with a different payload."""
    CLAIM_EXPIRED = "CLAIM_EXPIRED"
    """A claim/act/complete effect whose claim expired and was quarantined."""
    INVALID_WRITE = "INVALID_WRITE"
    """The handler returned writes that DynamoDB refuses (ValidationException): a bad
    expression, a key of the wrong type, an item over 400 KB, too many writes."""


def describe_error(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """``"ExceptionType: message"``, cut to ``limit`` characters with a note saying how much."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if len(text) <= limit:
        return text
    note = f" ... [{len(text) - limit} more characters cut]"
    return text[: max(limit - len(note), 0)] + note


class DeadLetterSendError(KinesisEOError):
    """A target did not confirm every letter; ``failures`` maps each letter part to why.

    ``retryable`` is False when the target refused an entry as invalid
    (``SenderFault``), True when it only did not get to it in time.
    """

    def __init__(self, message: str, *, failures: Mapping[str, str], retryable: bool) -> None:
        super().__init__(message)
        self.failures = dict(failures)
        self.retryable = retryable


class IncompleteDeadLetterError(InvalidRecordError):
    """Parts of split letters are missing; ``missing`` maps each letter id to part numbers."""

    def __init__(self, message: str, *, missing: Mapping[str, Sequence[int]]) -> None:
        super().__init__(message)
        self.missing = {k: list(v) for k, v in missing.items()}


# --- the letter and its document --------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    """ISO text, in UTC when the time has a zone: letters from many hosts read alike.

    Also the only exact form: Python 3.11 reads an offset of a few microseconds
    back as UTC itself, dropping them.
    """
    if value is None:
        return None
    if value.utcoffset() is not None:
        # Only a time within a day of datetime.min/max cannot move to UTC; keep its offset.
        with contextlib.suppress(OverflowError):
            value = value.astimezone(UTC)
    return value.isoformat()


def _parse_time(doc: Mapping[str, Any], name: str) -> datetime | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRecordError(f"dead-letter document: {name!r} is not an ISO time: {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecordError(
            f"dead-letter document: {name!r} is not an ISO time: {value!r}"
        ) from None


def _optional_text(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRecordError(
            f"dead-letter document: {name!r} has the wrong type ({type(value).__name__})"
        )
    return value


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in doc:
        raise InvalidRecordError(f"not a dead-letter document: no {name!r}")
    value = doc[name]
    # bool is an int in Python; a document with "attempts": true is malformed all the same.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRecordError(
            f"dead-letter document: {name!r} has the wrong type ({type(value).__name__})"
        )
    return value


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that will not be processed, with why, for a person or a re-drive tool.

    ``error`` is ``"ExceptionType: message"`` (see :meth:`from_exception`);
    ``failed_at`` must carry a time zone and is kept in UTC.
    """

    record: Record
    reason: DeadLetterReason
    error: str
    attempts: int
    consumer_group: str
    failed_at: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.record, Record):
            raise TypeError(f"record must be a Record, got {type(self.record).__name__}")
        if not isinstance(self.reason, DeadLetterReason):
            raise TypeError(f"reason must be a DeadLetterReason, got {self.reason!r}")
        if not isinstance(self.attempts, int) or self.attempts < 0:
            raise ValueError(f"attempts must be an integer >= 0, got {self.attempts!r}")
        if not isinstance(self.consumer_group, str) or not self.consumer_group:
            raise ValueError("a dead letter needs the consumer group's name")
        if self.failed_at.tzinfo is None or self.failed_at.utcoffset() is None:
            raise ValueError("failed_at must be timezone-aware (UTC)")
        object.__setattr__(self, "failed_at", self.failed_at.astimezone(UTC))

    @classmethod
    def from_exception(
        cls,
        record: Record,
        reason: DeadLetterReason,
        exc: BaseException,
        *,
        attempts: int,
        consumer_group: str,
        failed_at: datetime | None = None,
    ) -> DeadLetter:
        """A letter for ``exc``, its text cut to :data:`MAX_ERROR_CHARS`, stamped now."""
        return cls(
            record,
            reason,
            describe_error(exc),
            attempts,
            consumer_group,
            failed_at or datetime.now(UTC),
        )

    @property
    def position(self) -> Position:
        return self.record.position

    @property
    def letter_id(self) -> str:
        """Stable for a record in a consumer group: every resend of this letter has this id."""
        parts = (
            self.consumer_group,
            self.record.stream,
            self.record.shard_id,
            self.position.key(),
        )
        digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:32]

    def describe(self) -> str:
        """Where the record was, for error messages: ``stream/shard@position``."""
        return f"{self.record.stream}/{self.record.shard_id}@{self.position}"

    def to_document(self) -> dict[str, Any]:
        """Everything in the letter as JSON-able values; :meth:`from_document` reverses it."""
        record = self.record
        return {
            "version": DOCUMENT_VERSION,
            "stream": record.stream,
            "shard_id": record.shard_id,
            "sequence_number": record.sequence_number,
            "sub_sequence_number": record.sub_sequence_number,
            "position_key": self.position.key(),
            "partition_key": record.partition_key,
            "explicit_hash_key": record.explicit_hash_key,
            "event_id": record.event_id,
            "event_namespace": record.event_namespace,
            "arrival_time": _iso(record.arrival_time),
            "aggregated": record.aggregated,
            "deaggregation_error": record.deaggregation_error,
            "encryption_type": record.encryption_type,
            "reason": self.reason.value,
            "error": self.error,
            "attempts": self.attempts,
            "consumer_group": self.consumer_group,
            "failed_at": self.failed_at.isoformat(),
            "data_base64": base64.b64encode(record.data).decode("ascii"),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> DeadLetter:
        data_text = _field(doc, "data_base64", str)
        try:
            data = base64.b64decode(data_text.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise InvalidRecordError("dead-letter document: 'data_base64' is not base64") from None
        return _letter_from_fields(doc, data)


def _letter_from_fields(doc: Mapping[str, Any], data: bytes) -> DeadLetter:
    """A letter from a document's fields (or a table item's), with its data already decoded."""
    version = doc.get("version", DOCUMENT_VERSION)
    if version != DOCUMENT_VERSION:
        raise InvalidRecordError(
            f"dead-letter document version {version!r} is not one this kinesis_eo reads "
            f"({DOCUMENT_VERSION})"
        )
    reason_text = _field(doc, "reason", str)
    try:
        reason = DeadLetterReason(reason_text)
    except ValueError:
        raise InvalidRecordError(f"dead-letter document: unknown reason {reason_text!r}") from None
    failed_at = _parse_time(doc, "failed_at")
    if failed_at is None:
        raise InvalidRecordError("not a dead-letter document: no 'failed_at'")
    try:
        record = Record(
            stream=_field(doc, "stream", str),
            shard_id=_field(doc, "shard_id", str),
            sequence_number=_field(doc, "sequence_number", str),
            partition_key=_field(doc, "partition_key", str),
            data=data,
            arrival_time=_parse_time(doc, "arrival_time"),
            sub_sequence_number=_field(doc, "sub_sequence_number", int),
            explicit_hash_key=_optional_text(doc, "explicit_hash_key"),
            aggregated=_field(doc, "aggregated", bool) if "aggregated" in doc else False,
            deaggregation_error=_optional_text(doc, "deaggregation_error"),
            encryption_type=_optional_text(doc, "encryption_type"),
            event_id=_optional_text(doc, "event_id"),
            event_namespace=_optional_text(doc, "event_namespace"),
        )
        _ = record.position  # checks the sequence numbers here, not at the first use
        return DeadLetter(
            record=record,
            reason=reason,
            error=_field(doc, "error", str),
            attempts=_field(doc, "attempts", int),
            consumer_group=_field(doc, "consumer_group", str),
            failed_at=failed_at,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"dead-letter document: {exc}") from None


# --- the protocols users implement ------------------------------------------------------------


class DeadLetterTarget(Protocol):
    """Where poison records go. ``send`` returns only once every letter is stored durably.

    It raises rather than return if any letter was not stored; sending the same
    letters again must be harmless (the caller retries after a crash).
    """

    def send(self, letters: Sequence[DeadLetter]) -> None: ...


class AsyncDeadLetterTarget(Protocol):
    """:class:`DeadLetterTarget` for asyncio consumers."""

    async def send(self, letters: Sequence[DeadLetter]) -> None: ...


def _parts_needed(size: int, part_size: int) -> int:
    return max(1, -(-size // part_size))


# --- SQS --------------------------------------------------------------------------------------

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
    size = config.part_data_bytes
    parts = _parts_needed(len(data), size)
    digest = hashlib.sha256(data).hexdigest()
    messages = []
    for index in range(parts):
        chunk = data[index * size : (index + 1) * size]
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


def _plan_sqs_batches(messages: Sequence[SqsMessage], config: SqsDeadLetterConfig) -> list[range]:
    batches: list[range] = []
    start = total = 0
    for index, msg in enumerate(messages):
        size = len(msg.body)
        count = index - start
        if count and (count == config.max_batch_entries or total + size > config.max_batch_bytes):
            batches.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(messages):
        batches.append(range(start, len(messages)))
    return batches


def _failure_list(failures: Mapping[str, str]) -> str:
    shown = "; ".join(f"{label}: {why}" for label, why in list(failures.items())[:5])
    more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
    return shown + more


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
    :func:`reassemble`.
    """
    fifo = queue_url.endswith(".fifo")
    resource = f"queue {queue_url!r}"
    # One letter given twice in a call would be two entries with one label: the last copy wins.
    unique = {letter.letter_id: letter for letter in letters}
    messages = [m for letter in unique.values() for m in sqs_messages(letter, config)]
    calls = 0
    for batch in _plan_sqs_batches(messages, config):
        pending = [messages[i] for i in batch]
        attempt = 1
        while True:
            entries: list[dict[str, Any]] = []
            for number, msg in enumerate(pending):
                entry: dict[str, Any] = {"Id": f"m{number}", "MessageBody": msg.body}
                if fifo:
                    entry["MessageGroupId"] = msg.group_id
                    entry["MessageDeduplicationId"] = msg.deduplication_id
                entries.append(entry)
            params = {"QueueUrl": queue_url, "Entries": entries}
            calls += 1
            # A missing queue comes back from the driver as ResourceNotFoundError naming it.
            response = yield Call("send_message_batch", params, resource, "SendMessageBatch", "sqs")
            by_id = {f"m{number}": msg for number, msg in enumerate(pending)}
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
                    f"{resource} refused {len(refused)} dead-letter message(s) as invalid: "
                    f"{_failure_list(refused)}",
                    failures=refused,
                    retryable=False,
                )
            if not failed:
                break
            if attempt >= config.entry_retry.max_attempts:
                raise DeadLetterSendError(
                    f"{len(failed)} dead-letter message(s) were not stored in {resource} after "
                    f"{attempt} attempts: {_failure_list(failed)}",
                    failures=failed,
                    retryable=True,
                )
            yield Sleep(backoff_delay(attempt, config.entry_retry, rng))
            attempt += 1
            pending = [msg for msg in pending if msg.label in failed]
    return calls


class _SqsTarget:
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
        self.client = client
        self.queue_url = queue_url
        self.config = config or SqsDeadLetterConfig()
        self._rng = rng

    def _flow(self, letters: Sequence[DeadLetter]) -> Generator[Any, Any, Any]:
        return send_to_sqs_flow(letters, self.queue_url, self.config, self._rng)


class SqsDeadLetterQueue(_SqsTarget):
    """Dead letters to an SQS queue, with a boto3 SQS client."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        run_sync(self._flow(letters), self.client, self.config.call_retry)


class AsyncSqsDeadLetterQueue(_SqsTarget):
    """Dead letters to an SQS queue, with an aiobotocore (or aioboto3) SQS client."""

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        await run_async(self._flow(letters), self.client, self.config.call_retry)


# --- reading SQS messages back ----------------------------------------------------------------


def _body_of(message: Mapping[str, Any] | str) -> dict[str, Any]:
    body = message if isinstance(message, str) else message.get("Body")
    if not isinstance(body, str):
        raise InvalidRecordError("an SQS message without a Body is not a dead letter")
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidRecordError(f"an SQS message body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRecordError("an SQS message body is not a dead-letter document")
    return doc


class DeadLetterAssembler:
    """Puts dead letters together from SQS messages that arrive in any order, with copies.

    :meth:`add` takes a message (a ``ReceiveMessage`` entry or its body) and
    returns a letter when the message completes one, else None. Copies of a
    letter (a resend to a standard queue, a redelivery) are recognised by
    letter id and yield the letter once.
    """

    def __init__(self) -> None:
        self._done: set[str] = set()
        # (letter id, parts) -> part number -> body: two layouts of one letter never mix.
        self._pending: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}

    def add(self, message: Mapping[str, Any] | str) -> DeadLetter | None:
        doc = _body_of(message)
        letter_id = _field(doc, "letter_id", str)
        part = _field(doc, "part", int)
        parts = _field(doc, "parts", int)
        if not 1 <= part <= parts:
            raise InvalidRecordError(f"dead letter {letter_id}: part {part} of {parts}")
        if letter_id in self._done:
            return None
        if parts == 1:
            self._done.add(letter_id)
            self._drop_pending(letter_id)
            return DeadLetter.from_document(doc)
        received = self._pending.setdefault((letter_id, parts), {})
        received.setdefault(part, doc)
        if len(received) < parts:
            return None
        letter = self._join(letter_id, [received[n] for n in range(1, parts + 1)])
        self._done.add(letter_id)
        self._drop_pending(letter_id)
        return letter

    def _drop_pending(self, letter_id: str) -> None:
        for key in [k for k in self._pending if k[0] == letter_id]:
            del self._pending[key]

    @staticmethod
    def _join(letter_id: str, docs: Sequence[dict[str, Any]]) -> DeadLetter:
        chunks = [DeadLetter.from_document(d).record.data for d in docs]
        data = b"".join(chunks)
        first = docs[0]
        expected_size = _field(first, "data_bytes", int)
        expected_digest = _field(first, "data_sha256", str)
        if len(data) != expected_size or hashlib.sha256(data).hexdigest() != expected_digest:
            raise InvalidRecordError(
                f"dead letter {letter_id}: its {len(docs)} parts join to {len(data)} bytes "
                f"that do not match the {expected_size} bytes it was sent with"
            )
        return _letter_from_fields(first, data)

    def incomplete(self) -> dict[str, list[int]]:
        """The missing part numbers of every letter seen in part but never completed."""
        missing: dict[str, list[int]] = {}
        for (letter_id, parts), received in self._pending.items():
            gaps = [n for n in range(1, parts + 1) if n not in received]
            if letter_id not in missing or len(gaps) < len(missing[letter_id]):
                missing[letter_id] = gaps
        return missing


def reassemble(messages: Iterable[Mapping[str, Any] | str]) -> list[DeadLetter]:
    """The dead letters in SQS messages (``ReceiveMessage`` entries or bodies), each once.

    Letters come in the order their last missing message appears. Raises
    :class:`IncompleteDeadLetterError` if any letter lacks parts, rather than
    leave it out: receive more messages and call again with all of them.
    """
    assembler = DeadLetterAssembler()
    letters = [letter for m in messages if (letter := assembler.add(m)) is not None]
    missing = assembler.incomplete()
    if missing:
        shown = ", ".join(f"{k} lacks parts {v}" for k, v in list(missing.items())[:5])
        raise IncompleteDeadLetterError(
            f"{len(missing)} dead letter(s) are incomplete: {shown}", missing=missing
        )
    return letters


# --- DynamoDB ---------------------------------------------------------------------------------

DYNAMODB_MAX_BATCH_ITEMS = 25


@dataclass(frozen=True, slots=True)
class DynamoDBDeadLetterConfig:
    """Size limits and retry policy for a DynamoDB dead-letter table.

    DynamoDB allows 400 KB per item, names included (AWS accepts 409,600
    bytes, moto 5.2 405,000); ``max_item_bytes`` stays under both.
    ``part_data_bytes`` is the payload per part item, fixed so that a resend
    cuts the payload at the same places. ``max_request_bytes`` bounds the JSON
    of one BatchWriteItem request (binary travels as base64): aiohttp, under
    aiobotocore, copies a larger body on the event loop and warns about it
    above 1 MiB. ``item_retry`` governs items a batch returned unprocessed;
    ``call_retry`` calls that failed as a whole.
    """

    max_item_bytes: int = 400_000
    part_data_bytes: int = 380_000
    max_request_bytes: int = 1_040_000
    item_retry: RetryConfig = field(default_factory=lambda: RetryConfig(max_attempts=10))
    call_retry: RetryConfig = field(default_factory=RetryConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.part_data_bytes < self.max_item_bytes:
            raise ValueError("need 1 <= part_data_bytes < max_item_bytes")
        if self.max_request_bytes < 1:
            raise ValueError("max_request_bytes must be at least 1")


def _table_pk(letter: DeadLetter) -> str:
    return f"{letter.consumer_group}#{letter.record.stream}#{letter.record.shard_id}"


def _part_sk(head_sk: str, part: int) -> str:
    return f"{head_sk}#part-{part:04d}"


def _attribute_size(value: Mapping[str, Any]) -> int:
    ((kind, content),) = value.items()
    if kind == "S":
        return len(str(content).encode("utf-8", "surrogatepass"))
    if kind == "B":
        return len(content)
    if kind == "N":
        # DynamoDB stores about two digits a byte plus one; the text length bounds it.
        return len(str(content)) + 1
    return 1


def _item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(len(name.encode("utf-8")) + _attribute_size(v) for name, v in item.items())


def _wire_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """About how many bytes ``item`` takes in a BatchWriteItem request's JSON."""
    total = 40  # {"PutRequest":{"Item":{...}}} and separators
    for name, value in item.items():
        ((kind, content),) = value.items()
        if kind == "B":
            size = -(-len(content) // 3) * 4
        elif kind == "S":
            size = len(json.dumps(content))
        else:
            size = len(str(content)) + 2
        total += len(json.dumps(name)) + len(kind) + size + 10
    return total


def _plan_table_batches(
    items: Sequence[Mapping[str, Mapping[str, Any]]], config: DynamoDBDeadLetterConfig
) -> list[range]:
    batches: list[range] = []
    start = total = 0
    for index, item in enumerate(items):
        size = _wire_size(item)
        count = index - start
        if count and (count == DYNAMODB_MAX_BATCH_ITEMS or total + size > config.max_request_bytes):
            batches.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(items):
        batches.append(range(start, len(items)))
    return batches


def table_items(letter: DeadLetter, config: DynamoDBDeadLetterConfig) -> list[dict[str, Any]]:
    """The items for ``letter``: its part items (if any) first, its head item last.

    The head item (``sk`` = position key) holds every field; the payload is in
    its ``data`` when the item fits, else in ``parts`` part items whose ``sk``
    extends the head's with ``#part-0001``..., and the head holds the payload's
    ``data_bytes`` and ``data_sha256``.
    """
    record = letter.record
    pk = _table_pk(letter)
    sk = letter.position.key()
    head: dict[str, Any] = {
        "pk": {"S": pk},
        "sk": {"S": sk},
        "letter_id": {"S": letter.letter_id},
        "version": {"N": str(DOCUMENT_VERSION)},
        "consumer_group": {"S": letter.consumer_group},
        "stream": {"S": record.stream},
        "shard_id": {"S": record.shard_id},
        "sequence_number": {"S": record.sequence_number},
        "sub_sequence_number": {"N": str(record.sub_sequence_number)},
        "partition_key": {"S": record.partition_key},
        "aggregated": {"BOOL": record.aggregated},
        "reason": {"S": letter.reason.value},
        "error": {"S": letter.error},
        "attempts": {"N": str(letter.attempts)},
        "failed_at": {"S": letter.failed_at.isoformat()},
    }
    optional = {
        "explicit_hash_key": record.explicit_hash_key,
        "event_id": record.event_id,
        "event_namespace": record.event_namespace,
        "arrival_time": _iso(record.arrival_time),
        "deaggregation_error": record.deaggregation_error,
        "encryption_type": record.encryption_type,
    }
    head.update({name: {"S": value} for name, value in optional.items() if value is not None})
    inline = {**head, "parts": {"N": "0"}, "data": {"B": record.data}}
    if _item_size(inline) <= config.max_item_bytes:
        return [inline]
    data = record.data
    size = config.part_data_bytes
    parts = _parts_needed(len(data), size)
    head.update(
        parts={"N": str(parts)},
        data_bytes={"N": str(len(data))},
        data_sha256={"S": hashlib.sha256(data).hexdigest()},
    )
    items: list[dict[str, Any]] = []
    for index in range(parts):
        items.append(
            {
                "pk": {"S": pk},
                "sk": {"S": _part_sk(sk, index + 1)},
                "letter_id": {"S": letter.letter_id},
                "consumer_group": {"S": letter.consumer_group},
                "part": {"N": str(index + 1)},
                "parts": {"N": str(parts)},
                "data": {"B": data[index * size : (index + 1) * size]},
            }
        )
    items.append(head)
    for item in items:
        if _item_size(item) > config.max_item_bytes:
            raise InvalidRecordError(
                f"the dead letter for {letter.describe()} cannot be written to DynamoDB: an "
                f"item of it takes {_item_size(item)} bytes without the payload, over "
                f"max_item_bytes ({config.max_item_bytes}); the error text is "
                f"{len(letter.error)} characters (DeadLetter.from_exception cuts it to "
                f"{MAX_ERROR_CHARS})"
            )
    return items


def write_to_table_flow(
    letters: Sequence[DeadLetter],
    table_name: str,
    config: DynamoDBDeadLetterConfig,
    rng: random.Random | None = None,
) -> Generator[Any, Any, int]:
    """Write every letter to the table; returns the number of BatchWriteItem calls.

    Why BatchWriteItem and not TransactWriteItems: the head item is written
    only after every part item of every letter in the call is stored, so it
    acts as the commit mark (the reader ignores parts without a head), which
    gives the atomic appearance a transaction would at half the write cost,
    for any number of parts (a transaction stops at 100 items and 4 MB), and
    with up to 25 items of several letters per call. A crash between the two
    phases leaves parts without a head, which the resend overwrites.
    Every key is a function of the letter, so a resend overwrites, never adds.
    """
    resource = f"table {table_name!r}"
    # BatchWriteItem refuses two writes to one key in a call: the last copy wins.
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for letter in letters:
        by_key[(_table_pk(letter), letter.position.key())] = table_items(letter, config)
    parts = [item for items in by_key.values() for item in items[:-1]]
    heads = [items[-1] for items in by_key.values()]
    calls = 0
    for phase in (parts, heads):
        for batch in _plan_table_batches(phase, config):
            pending = [phase[i] for i in batch]
            attempt = 1
            while True:
                calls += 1
                requests = [{"PutRequest": {"Item": item}} for item in pending]
                params = {"RequestItems": {table_name: requests}}
                response = yield Call(
                    "batch_write_item", params, resource, "BatchWriteItem", "dynamodb"
                )
                unprocessed = (response.get("UnprocessedItems") or {}).get(table_name) or []
                if not unprocessed:
                    break
                pending = [r["PutRequest"]["Item"] for r in unprocessed]
                if attempt >= config.item_retry.max_attempts:
                    failures = {f"{i['pk']['S']} {i['sk']['S']}": "unprocessed" for i in pending}
                    raise DeadLetterSendError(
                        f"{len(pending)} dead-letter item(s) were not written to {resource} "
                        f"after {attempt} attempts: {_failure_list(failures)}",
                        failures=failures,
                        retryable=True,
                    )
                yield Sleep(backoff_delay(attempt, config.item_retry, rng))
                attempt += 1
    return calls


class _TableTarget:
    def __init__(
        self,
        client: Any,
        table_name: str,
        config: DynamoDBDeadLetterConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not table_name:
            raise ValueError("a table name is needed")
        self.client = client
        self.table_name = table_name
        self.config = config or DynamoDBDeadLetterConfig()
        self._rng = rng

    def _flow(self, letters: Sequence[DeadLetter]) -> Generator[Any, Any, Any]:
        return write_to_table_flow(letters, self.table_name, self.config, self._rng)


class DynamoDBDeadLetterTable(_TableTarget):
    """Dead letters to a DynamoDB table (see :func:`create_dead_letter_table`), boto3 client."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        run_sync(self._flow(letters), self.client, self.config.call_retry)


class AsyncDynamoDBDeadLetterTable(_TableTarget):
    """Dead letters to a DynamoDB table, with an aiobotocore (or aioboto3) client."""

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        await run_async(self._flow(letters), self.client, self.config.call_retry)


# --- reading the table and creating it --------------------------------------------------------


def _plain(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for name, value in item.items():
        ((kind, content),) = value.items()
        plain[name] = int(content) if kind == "N" else content
    return plain


def _letters_from_items(items: Sequence[Mapping[str, Any]], table_name: str) -> list[DeadLetter]:
    heads: list[dict[str, Any]] = []
    chunks: dict[tuple[str, str], bytes] = {}
    for raw in items:
        item = _plain(raw)
        if "part" in item:
            chunks[(item["pk"], item["sk"])] = bytes(item["data"])
        else:
            heads.append(item)
    heads.sort(key=lambda h: (h["pk"], h["sk"]))
    letters = []
    for head in heads:
        parts = int(head.get("parts", 0))
        if parts == 0:
            data = bytes(head["data"])
        else:
            keys = [(head["pk"], _part_sk(head["sk"], n)) for n in range(1, parts + 1)]
            missing = [n for n, key in enumerate(keys, 1) if key not in chunks]
            if missing:
                raise IncompleteDeadLetterError(
                    f"dead letter {head['pk']} {head['sk']} in table {table_name!r} lacks "
                    f"parts {missing} of {parts}",
                    missing={str(head.get("letter_id", head["sk"])): missing},
                )
            data = b"".join(chunks[key] for key in keys)
            if len(data) != head.get("data_bytes") or hashlib.sha256(data).hexdigest() != head.get(
                "data_sha256"
            ):
                raise InvalidRecordError(
                    f"dead letter {head['pk']} {head['sk']} in table {table_name!r}: its "
                    f"parts do not join to the payload it was written with"
                )
        letters.append(_letter_from_fields(head, data))
    return letters


def read_dead_letters_flow(
    table_name: str, consumer_group: str | None = None
) -> Generator[Any, Any, list[DeadLetter]]:
    """Every letter in the table (of one consumer group), by group, stream, shard, position.

    A Scan: a dead-letter table is small and read by people and re-drive
    tools, and a group's letters span one partition key per shard.
    """
    resource = f"table {table_name!r}"
    params: dict[str, Any] = {"TableName": table_name, "ConsistentRead": True}
    if consumer_group is not None:
        params["FilterExpression"] = "consumer_group = :group"
        params["ExpressionAttributeValues"] = {":group": {"S": consumer_group}}
    items: list[Mapping[str, Any]] = []
    while True:
        response = yield Call("scan", params, resource, "Scan", "dynamodb")
        items.extend(response.get("Items") or [])
        last = response.get("LastEvaluatedKey")
        if not last:
            break
        params = {**params, "ExclusiveStartKey": last}
    return _letters_from_items(items, table_name)


def read_dead_letters(
    client: Any,
    table_name: str,
    consumer_group: str | None = None,
    *,
    retry: RetryConfig | None = None,
) -> list[DeadLetter]:
    """The dead letters in a table, payloads whole, with a boto3 client."""
    flow = read_dead_letters_flow(table_name, consumer_group)
    return cast(list[DeadLetter], run_sync(flow, client, retry or RetryConfig()))


async def aread_dead_letters(
    client: Any,
    table_name: str,
    consumer_group: str | None = None,
    *,
    retry: RetryConfig | None = None,
) -> list[DeadLetter]:
    """:func:`read_dead_letters` with an aiobotocore client."""
    flow = read_dead_letters_flow(table_name, consumer_group)
    return cast(list[DeadLetter], await run_async(flow, client, retry or RetryConfig()))


def create_dead_letter_table_flow(
    table_name: str, *, wait_s: float = 300.0, poll_s: float = 2.0
) -> Generator[Any, Any, None]:
    """Create the table (on-demand billing) unless it exists, then wait until it is ACTIVE."""
    return create_table_flow(
        table_name, [("pk", "HASH"), ("sk", "RANGE")], wait_s=wait_s, poll_s=poll_s
    )


def create_dead_letter_table(client: Any, table_name: str, *, wait_s: float = 300.0) -> None:
    """Create a dead-letter table with a boto3 client; harmless if it exists."""
    run_sync(create_dead_letter_table_flow(table_name, wait_s=wait_s), client, RetryConfig())


async def acreate_dead_letter_table(client: Any, table_name: str, *, wait_s: float = 300.0) -> None:
    """:func:`create_dead_letter_table` with an aiobotocore client."""
    await run_async(create_dead_letter_table_flow(table_name, wait_s=wait_s), client, RetryConfig())
