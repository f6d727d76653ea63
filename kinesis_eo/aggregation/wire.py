"""The KPL's framing and the few protobuf wire-format primitives it needs, both ways.

A reader here raises :class:`CorruptAggregateError` for bytes that do not parse;
it never leaves the package: it becomes ``Record.deaggregation_error``.
"""

from __future__ import annotations

from kinesis_eo.errors import InvalidRecordError

__all__ = [
    "DIGEST_SIZE",
    "END_GROUP",
    "FIXED32",
    "FIXED64",
    "LENGTH_DELIMITED",
    "MAGIC",
    "MAX_UINT64",
    "START_GROUP",
    "VARINT",
    "CorruptAggregateError",
    "OverCapError",
    "expect_wire_type",
    "put_bytes",
    "put_varint",
    "read_key",
    "read_length_delimited",
    "read_text",
    "read_varint",
    "skip_field",
]

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
MAX_UINT64 = 2**64 - 1

# Protobuf wire types.
VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
START_GROUP = 3
END_GROUP = 4
FIXED32 = 5


class CorruptAggregateError(InvalidRecordError):
    """Never leaves this package: it becomes ``Record.deaggregation_error``."""


class OverCapError(CorruptAggregateError):
    """Decoding reached a cap; ``batch`` when it was what is left of the batch's."""

    def __init__(self, message: str, *, batch: bool) -> None:
        super().__init__(message)
        self.batch = batch


# --- writing -----------------------------------------------------------------


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` as a protobuf varint."""
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def put_bytes(out: bytearray, tag: int, payload: bytes) -> None:
    """Append a length-delimited field: its key byte ``tag``, the length, the bytes."""
    out.append(tag)
    put_varint(out, len(payload))
    out += payload


# --- reading -----------------------------------------------------------------


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``."""
    if pos >= end:
        raise CorruptAggregateError(f"truncated varint at byte {pos}")
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise CorruptAggregateError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= 70:
            raise CorruptAggregateError(f"varint longer than 10 bytes at byte {pos}")
    if result > MAX_UINT64:
        raise CorruptAggregateError(f"varint above 64 bits at byte {pos}")
    return result, pos


def read_key(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(field number, wire type, position after the key)."""
    key, pos = read_varint(buf, pos, end)
    field_number = key >> 3
    if field_number == 0:
        raise CorruptAggregateError(f"field number 0 at byte {pos}")
    return field_number, key & 7, pos


def read_length_delimited(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of the payload that begins at ``pos``."""
    length, pos = read_varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise CorruptAggregateError(f"field of {length} bytes runs past its message at byte {pos}")
    return pos, stop


def skip_field(buf: bytes, field_number: int, wire_type: int, pos: int, end: int) -> int:
    """Position after the value of a field this package does not read."""
    if wire_type == VARINT:
        return read_varint(buf, pos, end)[1]
    if wire_type == LENGTH_DELIMITED:
        return read_length_delimited(buf, pos, end)[1]
    if wire_type in (FIXED64, FIXED32):
        pos += 8 if wire_type == FIXED64 else 4
        if pos > end:
            raise CorruptAggregateError("truncated fixed-width field")
        return pos
    if wire_type == START_GROUP:
        # Groups nest; a stack rather than recursion so that hostile input
        # cannot exhaust the Python stack.
        open_groups = [field_number]
        while open_groups:
            inner, inner_type, pos = read_key(buf, pos, end)
            if inner_type == END_GROUP:
                if inner != open_groups.pop():
                    raise CorruptAggregateError(f"mismatched end of group {inner}")
            elif inner_type == START_GROUP:
                open_groups.append(inner)
            else:
                pos = skip_field(buf, inner, inner_type, pos, end)
        return pos
    raise CorruptAggregateError(f"wire type {wire_type} for field {field_number}")


def expect_wire_type(field_number: int, wire_type: int, expected: int) -> None:
    """Refuse a known field sent with another wire type than the schema's."""
    if wire_type != expected:
        raise CorruptAggregateError(
            f"field {field_number} has wire type {wire_type}, not {expected}"
        )


def read_text(buf: bytes, start: int, stop: int, what: str) -> str:
    """The UTF-8 text in ``buf[start:stop]``; ``what`` names it in the error."""
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptAggregateError(f"{what} is not UTF-8") from None
