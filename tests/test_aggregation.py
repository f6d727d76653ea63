"""KPL aggregation: reading aggregates built by an independent encoder, round trips,
corrupt aggregates, and the hash-range filter for records left on the wrong shard."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinesis_eo.aggregation import (
    MAGIC,
    UserRecord,
    aggregate,
    deaggregate,
    deaggregate_all,
)
from kinesis_eo.records import MAX_HASH_KEY, HashKeyRange, Record

KPL_MAGIC = b"\xf3\x89\x9a\xc2"
# A sequence number of the length AWS hands out (56 digits).
SEQUENCE = "49590338271490256608559692538361571095921575989136588898"
ARRIVAL = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)

# --- an encoder written from the protobuf wire format, not from the module ----


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def uint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def fixed64(number: int, value: int) -> bytes:
    return key(number, 1) + value.to_bytes(8, "little")


def fixed32(number: int, value: int) -> bytes:
    return key(number, 5) + value.to_bytes(4, "little")


def length_delimited(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    return key(number, 2) + varint(len(raw)) + raw


def group(number: int, body: bytes) -> bytes:
    return key(number, 3) + body + key(number, 4)


def pb_tag(tag_key: str, value: str | None = None) -> bytes:
    body = length_delimited(1, tag_key)
    if value is not None:
        body += length_delimited(2, value)
    return length_delimited(4, body)


def pb_record(
    partition_key_index: int, data: bytes, explicit_hash_key_index: int | None = None
) -> bytes:
    body = uint(1, partition_key_index)
    if explicit_hash_key_index is not None:
        body += uint(2, explicit_hash_key_index)
    return body + length_delimited(3, data)


def kpl(message: bytes) -> bytes:
    return KPL_MAGIC + message + hashlib.md5(message).digest()


def decode_top_level(message: bytes) -> list[tuple[int, bytes]]:
    """(field number, payload) of a message made only of length-delimited fields."""
    fields = []
    pos = 0
    while pos < len(message):
        tag = message[pos]
        assert tag & 7 == 2, "aggregate() wrote a field that is not length-delimited"
        length, shift, pos = 0, 0, pos + 1
        while True:
            byte = message[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        fields.append((tag >> 3, message[pos : pos + length]))
        pos += length
    return fields


def md5_hash_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def kinesis_record(data: bytes, partition_key: str = "outer-key") -> Record:
    return Record(
        stream="orders",
        shard_id="shardId-000000000003",
        sequence_number=SEQUENCE,
        partition_key=partition_key,
        data=data,
        arrival_time=ARRIVAL,
        encryption_type="KMS",
    )


# --- reading aggregates --------------------------------------------------------


def test_magic_is_the_kpl_prefix() -> None:
    assert MAGIC == KPL_MAGIC


def test_deaggregate_reads_user_records_tags_and_unknown_fields_of_a_kpl_aggregate() -> None:
    message = (
        length_delimited(1, "user-a")
        + length_delimited(1, "user-b")
        + uint(15, 2**63)  # unknown varint
        + fixed64(9, 7)  # unknown fixed64
        + length_delimited(2, "170141183460469231731687303715884105728")
        + fixed32(10, 7)  # unknown fixed32
        + length_delimited(11, b"\x03\x1a\x01unknown")  # unknown, looks like a record inside
        + group(12, uint(1, 5) + group(13, length_delimited(3, b"x")))  # unknown nested group
        + length_delimited(3, pb_record(0, b"first") + pb_tag("env", "prod") + pb_tag("bare"))
        + length_delimited(3, pb_record(1, b"", explicit_hash_key_index=0) + uint(7, 99))
        + length_delimited(
            3,
            uint(9, 1)
            + pb_record(0, b"\x00\xff third")
            + group(8, fixed32(1, 1))
            + length_delimited(4, length_delimited(1, "k") + uint(3, 4)),
        )
    )
    record = kinesis_record(kpl(message))

    result = deaggregate(record)

    assert result.outside_hash_range == []
    assert [r.data for r in result.records] == [b"first", b"", b"\x00\xff third"]
    assert [r.partition_key for r in result.records] == ["user-a", "user-b", "user-a"]
    assert [r.explicit_hash_key for r in result.records] == [
        None,
        "170141183460469231731687303715884105728",
        None,
    ]
    assert [r.sub_sequence_number for r in result.records] == [0, 1, 2]
    positions = [r.position for r in result.records]
    assert all(a < b for a, b in itertools.pairwise(positions))
    for user_record in result.records:
        assert user_record.aggregated is True
        assert user_record.deaggregation_error is None
        assert (
            user_record.stream,
            user_record.shard_id,
            user_record.sequence_number,
            user_record.arrival_time,
            user_record.encryption_type,
        ) == ("orders", "shardId-000000000003", SEQUENCE, ARRIVAL, "KMS")


def test_deaggregate_accepts_tables_written_after_the_records() -> None:
    # Protobuf fields may come in any order; indexes must resolve against the whole table.
    message = (
        length_delimited(3, pb_record(1, b"one", explicit_hash_key_index=0))
        + length_delimited(3, pb_record(0, b"two"))
        + length_delimited(1, "p0")
        + length_delimited(2, "42")
        + length_delimited(1, "p1")
    )

    records = deaggregate(kinesis_record(kpl(message))).records

    assert [(r.partition_key, r.explicit_hash_key, r.data) for r in records] == [
        ("p1", "42", b"one"),
        ("p0", None, b"two"),
    ]


def test_deaggregate_reads_multi_byte_varints_and_long_data() -> None:
    keys = [f"key-{i}" for i in range(200)]
    data = bytes(range(256)) * 40  # needs a 2-byte length
    message = b"".join(length_delimited(1, k) for k in keys) + length_delimited(
        3, pb_record(199, data)
    )

    (record,) = deaggregate(kinesis_record(kpl(message))).records

    assert (record.partition_key, record.data) == ("key-199", data)


# --- aggregate() ---------------------------------------------------------------

explicit_hash_keys = st.none() | st.integers(0, MAX_HASH_KEY).map(str)
partition_keys = st.sampled_from(["a", "b", "ключ-☃"]) | st.text(min_size=1, max_size=256)
user_records = st.lists(
    st.builds(
        UserRecord,
        partition_key=partition_keys,
        data=st.binary(max_size=300),
        explicit_hash_key=explicit_hash_keys,
    ),
    min_size=1,
    max_size=30,
)


@given(user_records)
def test_deaggregate_of_aggregate_gives_back_every_user_record_in_order(
    originals: list[UserRecord],
) -> None:
    aggregated = aggregate(originals)

    result = deaggregate(kinesis_record(aggregated.data, aggregated.partition_key))

    assert result.outside_hash_range == []
    assert [
        UserRecord(r.partition_key, r.data, r.explicit_hash_key) for r in result.records
    ] == originals
    assert [r.sub_sequence_number for r in result.records] == list(range(len(originals)))
    assert all(r.aggregated and r.deaggregation_error is None for r in result.records)


@given(user_records, st.integers(0, MAX_HASH_KEY), st.integers(0, MAX_HASH_KEY))
def test_hash_range_filter_splits_user_records_by_their_effective_hash_key(
    originals: list[UserRecord], bound_a: int, bound_b: int
) -> None:
    hash_range = HashKeyRange(min(bound_a, bound_b), max(bound_a, bound_b))
    aggregated = aggregate(originals)

    result = deaggregate(kinesis_record(aggregated.data), hash_range)

    def effective(r: UserRecord | Record) -> int:
        if r.explicit_hash_key is not None:
            return int(r.explicit_hash_key)
        return md5_hash_key(r.partition_key)

    expected_inside = [i for i, u in enumerate(originals) if effective(u) in hash_range]
    expected_outside = [i for i, u in enumerate(originals) if effective(u) not in hash_range]
    assert [r.sub_sequence_number for r in result.records] == expected_inside
    assert [r.sub_sequence_number for r in result.outside_hash_range] == expected_outside


@given(user_records)
def test_aggregate_routes_to_the_shard_of_its_first_user_record(
    originals: list[UserRecord],
) -> None:
    first = originals[0]
    aggregated = aggregate(originals)

    assert aggregated.partition_key == first.partition_key
    expected = (
        int(first.explicit_hash_key)
        if first.explicit_hash_key is not None
        else md5_hash_key(first.partition_key)
    )
    assert aggregated.explicit_hash_key == str(expected)


def test_aggregate_writes_magic_md5_and_tables_without_duplicates() -> None:
    aggregated = aggregate(
        [
            UserRecord("a", b"1"),
            UserRecord("b", b"2"),
            UserRecord("a", b"3", explicit_hash_key="5"),
            UserRecord("b", b"4", explicit_hash_key="5"),
            UserRecord("c", b"5", explicit_hash_key="6"),
        ]
    )
    data = aggregated.data
    message = data[4:-16]

    assert data[:4] == KPL_MAGIC
    assert data[-16:] == hashlib.md5(message).digest()
    fields = decode_top_level(message)
    assert [v.decode() for n, v in fields if n == 1] == ["a", "b", "c"]
    assert [v.decode() for n, v in fields if n == 2] == ["5", "6"]
    assert [
        pb_record(0, b"1"),
        pb_record(1, b"2"),
        pb_record(0, b"3", explicit_hash_key_index=0),
        pb_record(1, b"4", explicit_hash_key_index=0),
        pb_record(2, b"5", explicit_hash_key_index=1),
    ] == [v for n, v in fields if n == 3]


def test_aggregate_refuses_an_empty_list() -> None:
    with pytest.raises(ValueError, match="empty"):
        aggregate([])


@pytest.mark.parametrize("explicit_hash_key", ["", "abc", "-1", " 1", "1.0", str(2**128), "\u0661"])
def test_aggregate_refuses_an_explicit_hash_key_that_is_not_a_128_bit_decimal(
    explicit_hash_key: str,
) -> None:
    with pytest.raises(ValueError, match="explicit hash key"):
        aggregate([UserRecord("a", b"1"), UserRecord("b", b"2", explicit_hash_key)])


@pytest.mark.parametrize("partition_key", ["", "x" * 257])
def test_aggregate_refuses_a_partition_key_kinesis_would_refuse(partition_key: str) -> None:
    with pytest.raises(ValueError, match="partition key"):
        aggregate([UserRecord("a", b"1"), UserRecord(partition_key, b"2")])


# --- corrupt aggregates ----------------------------------------------------------

GOOD_MESSAGE = (
    length_delimited(1, "k0")
    + length_delimited(2, "12345")
    + length_delimited(3, pb_record(0, b"payload-0"))
    + length_delimited(3, pb_record(0, b"payload-1", explicit_hash_key_index=0))
)


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


CORRUPT = {
    "md5-byte-flipped": (flip_last_byte(kpl(GOOD_MESSAGE)), "MD5"),
    "protobuf-truncated-with-valid-md5": (kpl(GOOD_MESSAGE[:-3]), "past its message"),
    "partition-key-index-out-of-range": (
        kpl(length_delimited(1, "k0") + length_delimited(3, pb_record(1, b"x"))),
        "partition key index 1",
    ),
    "explicit-hash-key-index-out-of-range": (
        kpl(
            length_delimited(1, "k0")
            + length_delimited(3, pb_record(0, b"x", explicit_hash_key_index=0))
        ),
        "explicit hash key index 0",
    ),
    "explicit-hash-key-not-decimal": (
        kpl(
            length_delimited(1, "k0")
            + length_delimited(2, "12a")
            + length_delimited(3, pb_record(0, b"x", explicit_hash_key_index=0))
        ),
        "not a 128-bit decimal",
    ),
    "explicit-hash-key-above-128-bits": (
        kpl(
            length_delimited(1, "k0")
            + length_delimited(2, str(2**128))
            + length_delimited(3, pb_record(0, b"x", explicit_hash_key_index=0))
        ),
        "not a 128-bit decimal",
    ),
    "partition-key-not-utf8": (
        kpl(length_delimited(1, b"\xff\xfe") + length_delimited(3, pb_record(0, b"x"))),
        "UTF-8",
    ),
    "user-record-without-data": (
        kpl(length_delimited(1, "k0") + length_delimited(3, uint(1, 0))),
        "without data",
    ),
    "user-record-without-partition-key-index": (
        kpl(length_delimited(1, "k0") + length_delimited(3, length_delimited(3, b"x"))),
        "without a partition key index",
    ),
    "tag-without-key": (
        kpl(
            length_delimited(1, "k0")
            + length_delimited(3, pb_record(0, b"x") + length_delimited(4, b""))
        ),
        "tag without a key",
    ),
    "data-with-varint-wire-type": (
        kpl(length_delimited(1, "k0") + length_delimited(3, uint(1, 0) + uint(3, 5))),
        "wire type",
    ),
    "varint-longer-than-10-bytes": (kpl(b"\x78" + b"\xff" * 10 + b"\x01"), "10 bytes"),
    "varint-above-64-bits": (kpl(b"\x78" + b"\xff" * 9 + b"\x02"), "64 bits"),
    "group-never-closed": (kpl(group(12, b"")[:-1]), "truncated"),
    "group-closed-by-another-field": (kpl(key(12, 3) + key(13, 4)), "end of group"),
    "reserved-wire-type": (kpl(key(12, 6)), "wire type 6"),
    "no-user-records": (kpl(length_delimited(1, "k0")), "no user records"),
    "magic-only": (KPL_MAGIC, "too short"),
    "shorter-than-digest": (KPL_MAGIC + b"\x00" * 15, "too short"),
}


@pytest.mark.parametrize(("data", "reason"), CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_aggregate_is_delivered_whole_with_a_deaggregation_error(
    data: bytes, reason: str
) -> None:
    record = kinesis_record(data)

    result = deaggregate(record)

    (delivered,) = result.records
    assert result.outside_hash_range == []
    assert delivered.deaggregation_error is not None
    assert reason in delivered.deaggregation_error
    assert delivered == dataclasses.replace(
        record, deaggregation_error=delivered.deaggregation_error
    )
    assert delivered.data == data


def test_corrupt_aggregate_is_not_filtered_by_hash_range() -> None:
    record = kinesis_record(flip_last_byte(kpl(GOOD_MESSAGE)))
    nowhere_near = HashKeyRange(0, 0)  # no partition key here hashes to 0

    result = deaggregate(record, nowhere_near)

    assert [r.data for r in result.records] == [record.data]
    assert result.outside_hash_range == []


# --- records that are not aggregates ---------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"plain payload", KPL_MAGIC[:3], KPL_MAGIC[:3] + b"\x00" + b"\x00" * 40]
)
def test_record_without_the_magic_is_delivered_unchanged(data: bytes) -> None:
    record = kinesis_record(data)

    result = deaggregate(record)

    assert result.records == [record]
    assert result.records[0] is record
    assert result.outside_hash_range == []


def test_record_without_the_magic_is_never_filtered_by_hash_range() -> None:
    record = kinesis_record(b"plain", partition_key="pk")
    excluding = HashKeyRange(0, md5_hash_key("pk") - 1)

    result = deaggregate(record, excluding)

    assert result.records == [record]
    assert result.outside_hash_range == []


def test_user_record_whose_payload_is_itself_an_aggregate_is_not_unpacked_again() -> None:
    inner = aggregate([UserRecord("x", b"1"), UserRecord("y", b"2")])
    outer = aggregate([UserRecord("z", inner.data)])

    (user_record,) = deaggregate(kinesis_record(outer.data)).records
    again = deaggregate(user_record)

    assert user_record.data == inner.data
    assert again.records == [user_record]


# --- hash-range filter and batches -----------------------------------------------


def test_hash_range_filter_keeps_in_range_user_records_and_returns_the_others() -> None:
    pk_inside = next(k for k in (f"k{i}" for i in range(1000)) if md5_hash_key(k) < 2**127)
    pk_outside = next(k for k in (f"k{i}" for i in range(1000)) if md5_hash_key(k) >= 2**127)
    hash_range = HashKeyRange(1000, 2**127 - 1)
    aggregated = aggregate(
        [
            UserRecord("any", b"below", explicit_hash_key="999"),
            UserRecord("any", b"start", explicit_hash_key="1000"),
            UserRecord(pk_inside, b"md5 inside"),
            UserRecord(pk_outside, b"md5 outside"),
            UserRecord(pk_outside, b"end", explicit_hash_key=str(2**127 - 1)),
            UserRecord(pk_inside, b"above", explicit_hash_key=str(2**127)),
        ]
    )

    result = deaggregate(kinesis_record(aggregated.data), hash_range)

    assert [(r.sub_sequence_number, r.data) for r in result.records] == [
        (1, b"start"),
        (2, b"md5 inside"),
        (4, b"end"),
    ]
    assert [(r.sub_sequence_number, r.data) for r in result.outside_hash_range] == [
        (0, b"below"),
        (3, b"md5 outside"),
        (5, b"above"),
    ]
    assert all(r.aggregated for r in result.outside_hash_range)


def test_deaggregate_all_keeps_batch_order_and_collects_records_outside_the_range() -> None:
    hash_range = HashKeyRange(0, 100)
    first = kinesis_record(b"plain", partition_key="pk")
    second = dataclasses.replace(
        kinesis_record(
            aggregate(
                [
                    UserRecord("a", b"in", explicit_hash_key="5"),
                    UserRecord("a", b"out", explicit_hash_key="500"),
                    UserRecord("a", b"in too", explicit_hash_key="100"),
                ]
            ).data
        ),
        sequence_number=str(int(SEQUENCE) + 1),
    )
    third = dataclasses.replace(
        kinesis_record(flip_last_byte(kpl(GOOD_MESSAGE))), sequence_number=str(int(SEQUENCE) + 2)
    )

    result = deaggregate_all(iter([first, second, third]), hash_range)

    assert [(r.data, r.sub_sequence_number) for r in result.records] == [
        (b"plain", 0),
        (b"in", 0),
        (b"in too", 2),
        (third.data, 0),
    ]
    assert result.records[-1].deaggregation_error is not None
    assert [r.data for r in result.outside_hash_range] == [b"out"]
    positions = [r.position for r in result.records]
    assert positions == sorted(positions)


def test_deaggregate_all_of_nothing_is_empty() -> None:
    result = deaggregate_all([])

    assert (result.records, result.outside_hash_range) == ([], [])
