"""A small binary envelope that carries an event id next to the user's payload.

A producer that retries a ``PutRecords`` entry which the stream in fact stored
creates a second record with a new sequence number. Nothing in the record
tells the two apart, unless the bytes carry an id chosen once per event; the
envelope does that without touching the payload::

    magic "\\x00KEO" | version (1 byte) | id length n (1 byte) | id (n bytes, UTF-8) | payload

The magic starts with a zero byte, which neither JSON nor text payloads start
with, and differs from the KPL aggregation magic ``f3 89 9a c2``, so readers
can tell the three apart by the first bytes. Anything that does not parse as a
complete envelope is treated as a plain payload, so records written by other
producers pass through unchanged.
"""

from __future__ import annotations

from kinesis_eo.errors import InvalidRecordError

MAGIC = b"\x00KEO"
VERSION = 1
MAX_ID_BYTES = 255
HEADER_BYTES = len(MAGIC) + 2
"""Bytes the envelope adds besides the id itself."""

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "MAX_ID_BYTES",
    "VERSION",
    "encode_event_id",
    "envelope_size",
    "unwrap",
    "wrap",
]


def encode_event_id(event_id: str) -> bytes:
    """The id as the envelope stores it; raises ``InvalidRecordError`` if it cannot hold it."""
    if not isinstance(event_id, str):
        raise InvalidRecordError(f"an event id is a string, got {type(event_id).__name__}")
    try:
        encoded = event_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Lone surrogates: representable in a Python str, not in UTF-8.
        raise InvalidRecordError(f"event id {event_id!r} is not valid unicode: {exc}") from None
    if not 1 <= len(encoded) <= MAX_ID_BYTES:
        raise InvalidRecordError(
            f"an event id is 1 to {MAX_ID_BYTES} bytes of UTF-8, "
            f"got {len(encoded)} bytes: {event_id[:40]!r}"
        )
    return encoded


def envelope_size(event_id: str, payload_size: int) -> int:
    """Size in bytes of ``wrap(event_id, payload)`` for a payload of ``payload_size`` bytes."""
    return HEADER_BYTES + len(encode_event_id(event_id)) + payload_size


def wrap(event_id: str, payload: bytes) -> bytes:
    encoded = encode_event_id(event_id)
    return MAGIC + bytes((VERSION, len(encoded))) + encoded + bytes(payload)


def unwrap(data: bytes) -> tuple[str | None, bytes]:
    """``(event id, payload)``, or ``(None, data)`` when ``data`` is not a whole envelope."""
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        return None, data
    version, id_length = data[len(MAGIC)], data[len(MAGIC) + 1]
    end = HEADER_BYTES + id_length
    # A version we do not know may lay its fields out differently: do not guess at them.
    if version != VERSION or id_length == 0 or len(data) < end:
        return None, data
    try:
        event_id = bytes(data[HEADER_BYTES:end]).decode("utf-8")
    except UnicodeDecodeError:
        return None, data
    return event_id, bytes(data[end:])
