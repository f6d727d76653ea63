"""The dead letter: a record that will not be processed, why, and its JSON document.

Both targets store a letter as the fields of :meth:`DeadLetter.to_document`
(SQS as JSON, DynamoDB as item attributes) and cut a payload too large for one
message or item into parts at fixed places (:func:`payload_chunks`), with the
whole payload's size and SHA-256 so that the reader can check the parts it
joins (:func:`joins_to`). :class:`DeadLetterAssembler` and :func:`reassemble`
put letters back together from their documents, each letter once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from kinesis_eo.errors import InvalidRecordError
from kinesis_eo.records import Position, Record

__all__ = [
    "DOCUMENT_VERSION",
    "MAX_ERROR_CHARS",
    "DeadLetter",
    "DeadLetterAssembler",
    "DeadLetterReason",
    "IncompleteDeadLetterError",
    "describe_error",
    "document_field",
    "iso_time",
    "joins_to",
    "letter_from_fields",
    "payload_chunks",
    "payload_digest",
    "reassemble",
]

DOCUMENT_VERSION = 1
# Error texts are for people; a message that repr()s a 1 MiB payload would
# otherwise crowd the payload itself out of an SQS message or DynamoDB item.
# 4096 characters outside the BMP are 48 KiB as JSON escapes, which leaves the
# quarter of a 256 KiB message kept for a letter's other fields room to spare.
MAX_ERROR_CHARS = 4096


class DeadLetterReason(Enum):
    """Why a record was dead-lettered; redrive picks letters by it (``PROCESSING_FAILED`` by
    default).
    """

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


class IncompleteDeadLetterError(InvalidRecordError):
    """Parts of split letters are missing; ``missing`` maps each letter id to part numbers."""

    def __init__(self, message: str, *, missing: Mapping[str, Sequence[int]]) -> None:
        super().__init__(message)
        self.missing = {k: list(v) for k, v in missing.items()}


# --- the letter and its document --------------------------------------------------------------


def iso_time(value: datetime | None) -> str | None:
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


def document_field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """The field ``name`` of a dead-letter document, checked to be of type ``kind``;
    `InvalidRecordError` otherwise.
    """
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
            "arrival_time": iso_time(record.arrival_time),
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
        data_text = document_field(doc, "data_base64", str)
        try:
            data = base64.b64decode(data_text.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise InvalidRecordError("dead-letter document: 'data_base64' is not base64") from None
        return letter_from_fields(doc, data)


def letter_from_fields(doc: Mapping[str, Any], data: bytes) -> DeadLetter:
    """A letter from a document's fields (or a table item's), with its data already decoded."""
    version = doc.get("version", DOCUMENT_VERSION)
    if version != DOCUMENT_VERSION:
        raise InvalidRecordError(
            f"dead-letter document version {version!r} is not one this kinesis_eo reads "
            f"({DOCUMENT_VERSION})"
        )
    reason_text = document_field(doc, "reason", str)
    try:
        reason = DeadLetterReason(reason_text)
    except ValueError:
        raise InvalidRecordError(f"dead-letter document: unknown reason {reason_text!r}") from None
    failed_at = _parse_time(doc, "failed_at")
    if failed_at is None:
        raise InvalidRecordError("not a dead-letter document: no 'failed_at'")
    try:
        record = Record(
            stream=document_field(doc, "stream", str),
            shard_id=document_field(doc, "shard_id", str),
            sequence_number=document_field(doc, "sequence_number", str),
            partition_key=document_field(doc, "partition_key", str),
            data=data,
            arrival_time=_parse_time(doc, "arrival_time"),
            sub_sequence_number=document_field(doc, "sub_sequence_number", int),
            explicit_hash_key=_optional_text(doc, "explicit_hash_key"),
            aggregated=document_field(doc, "aggregated", bool) if "aggregated" in doc else False,
            deaggregation_error=_optional_text(doc, "deaggregation_error"),
            encryption_type=_optional_text(doc, "encryption_type"),
            event_id=_optional_text(doc, "event_id"),
            event_namespace=_optional_text(doc, "event_namespace"),
        )
        _ = record.position  # checks the sequence numbers here, not at the first use
        return DeadLetter(
            record=record,
            reason=reason,
            error=document_field(doc, "error", str),
            attempts=document_field(doc, "attempts", int),
            consumer_group=document_field(doc, "consumer_group", str),
            failed_at=failed_at,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"dead-letter document: {exc}") from None


# --- a payload in parts -----------------------------------------------------------------------


def payload_chunks(data: bytes, part_size: int) -> list[bytes]:
    """``data`` cut every ``part_size`` bytes (one empty chunk for no data).

    The places depend on the size alone, so that two sends of one letter cut
    its payload alike and a resend overwrites or duplicates, never mixes.
    """
    parts = max(1, -(-len(data) // part_size))
    return [data[index * part_size : (index + 1) * part_size] for index in range(parts)]


def payload_digest(data: bytes) -> str:
    """The SHA-256 (hex) a split letter carries to check its parts when joined."""
    return hashlib.sha256(data).hexdigest()


def joins_to(data: bytes, size: object, digest: object) -> bool:
    """Whether joined parts are the payload of this size and digest."""
    return len(data) == size and payload_digest(data) == digest


# --- joining the documents of split letters (SQS message bodies) ------------------------------


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
        letter_id = document_field(doc, "letter_id", str)
        part = document_field(doc, "part", int)
        parts = document_field(doc, "parts", int)
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
        expected_size = document_field(first, "data_bytes", int)
        expected_digest = document_field(first, "data_sha256", str)
        if not joins_to(data, expected_size, expected_digest):
            raise InvalidRecordError(
                f"dead letter {letter_id}: its {len(docs)} parts join to {len(data)} bytes "
                f"that do not match the {expected_size} bytes it was sent with"
            )
        return letter_from_fields(first, data)

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
