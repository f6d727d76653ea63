"""A small binary envelope that carries an event id next to the user's payload.

A producer that retries a ``PutRecords`` entry which the stream in fact stored
creates a second record with a new sequence number. Nothing in the record
tells the two apart, unless the bytes carry an id chosen once per event; the
envelope does that without touching the payload::

    magic "\\x00KEO" | version (1 byte) | id length n (1 byte) | id (n bytes, UTF-8) | payload

A producer with a namespace writes version 2, which carries it before the id::

    magic | 2 | namespace length m | namespace (m bytes) | id length n | id (n bytes) | payload

The namespace scopes the id: two producers that each call an event "42" are
told apart by their namespaces, while one producer's retries (and its sends
after a restart, with the same namespace) keep the same scope and id.

The magic starts with a zero byte, which neither JSON nor text payloads start
with, and differs from the KPL aggregation magic ``f3 89 9a c2``, so readers
can tell the three apart by the first bytes. Anything that does not parse as a
complete envelope is treated as a plain payload, so records written by other
producers pass through unchanged.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from kinesis_eo.errors import InvalidRecordError

MAGIC = b"\x00KEO"
VERSION = 1
VERSION_WITH_NAMESPACE = 2
MAX_ID_BYTES = 255
MAX_NAMESPACE_CHARS = 64
# Letters, digits, '_', '.', '-': no ':' so that ledger keys built from it stay unambiguous.
_NAMESPACE = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_NAMESPACE_CHARS}}}")
HEADER_BYTES = len(MAGIC) + 2
"""Bytes the envelope adds besides the id itself."""

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "MAX_ID_BYTES",
    "MAX_NAMESPACE_CHARS",
    "VERSION",
    "VERSION_WITH_NAMESPACE",
    "Unwrapped",
    "check_namespace",
    "encode_event_id",
    "envelope_size",
    "unwrap",
    "unwrap_event",
    "wrap",
]


class Unwrapped(NamedTuple):
    """What an envelope holds; ``event_id`` is None when the data is not one."""

    event_id: str | None
    namespace: str | None
    payload: bytes


def check_namespace(namespace: str) -> str:
    """``namespace`` if an envelope can carry it, else ``InvalidRecordError``."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidRecordError(
            f"a producer namespace is 1 to {MAX_NAMESPACE_CHARS} letters, digits, '_', '.' "
            f"or '-', got {namespace!r:.80}"
        )
    return namespace


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


def envelope_size(event_id: str, payload_size: int, namespace: str | None = None) -> int:
    """Size in bytes of ``wrap(event_id, payload, namespace)`` for ``payload_size`` bytes."""
    extra = 0 if namespace is None else 1 + len(check_namespace(namespace))
    return HEADER_BYTES + extra + len(encode_event_id(event_id)) + payload_size


def wrap(event_id: str, payload: bytes, namespace: str | None = None) -> bytes:
    """``payload`` in an envelope with ``event_id`` (and ``namespace``, in version 2)."""
    encoded = encode_event_id(event_id)
    if namespace is None:
        return MAGIC + bytes((VERSION, len(encoded))) + encoded + bytes(payload)
    scope = check_namespace(namespace).encode("ascii")
    header = MAGIC + bytes((VERSION_WITH_NAMESPACE, len(scope))) + scope
    return header + bytes((len(encoded),)) + encoded + bytes(payload)


def _text(data: bytes, start: int, length: int) -> str | None:
    if length == 0 or len(data) < start + length:
        return None
    try:
        return bytes(data[start : start + length]).decode("utf-8")
    except UnicodeDecodeError:
        return None


def unwrap_event(data: bytes) -> Unwrapped:
    """The envelope's id, namespace and payload; ``(None, None, data)`` if not a whole one."""
    plain = Unwrapped(None, None, data)
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        return plain
    version, length = data[len(MAGIC)], data[len(MAGIC) + 1]
    namespace = None
    start = HEADER_BYTES
    if version == VERSION_WITH_NAMESPACE:
        namespace = _text(data, start, length)
        start += length
        if namespace is None or not _NAMESPACE.fullmatch(namespace) or len(data) <= start:
            return plain
        length = data[start]
        start += 1
    # A version we do not know may lay its fields out differently: do not guess at them.
    elif version != VERSION:
        return plain
    event_id = _text(data, start, length)
    if event_id is None:
        return plain
    return Unwrapped(event_id, namespace, bytes(data[start + length :]))


def unwrap(data: bytes) -> tuple[str | None, bytes]:
    """``(event id, payload)``, or ``(None, data)`` when ``data`` is not a whole envelope."""
    event_id, _, payload = unwrap_event(data)
    return event_id, payload
